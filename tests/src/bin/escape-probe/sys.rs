//! The probe's system-call seam: every raw call it makes, each with the deliberately harmless arguments its
//! row needs, returning the kernel's answer. Nothing outside this module holds `unsafe`.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An error number the kernel (or a filter in front of it) answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The error of the last failed call of this thread.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// Its symbolic name (`EPERM`), or `errno N` for the rare ones.
    pub fn name(self) -> String {
        let known = [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::ESRCH, "ESRCH"),
            (libc::EINTR, "EINTR"),
            (libc::EIO, "EIO"),
            (libc::ENXIO, "ENXIO"),
            (libc::E2BIG, "E2BIG"),
            (libc::ENOEXEC, "ENOEXEC"),
            (libc::EBADF, "EBADF"),
            (libc::ECHILD, "ECHILD"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMEM, "ENOMEM"),
            (libc::EACCES, "EACCES"),
            (libc::EFAULT, "EFAULT"),
            (libc::ENOTBLK, "ENOTBLK"),
            (libc::EBUSY, "EBUSY"),
            (libc::EEXIST, "EEXIST"),
            (libc::ENODEV, "ENODEV"),
            (libc::ENOTDIR, "ENOTDIR"),
            (libc::EISDIR, "EISDIR"),
            (libc::EINVAL, "EINVAL"),
            (libc::ENFILE, "ENFILE"),
            (libc::EMFILE, "EMFILE"),
            (libc::ENOTTY, "ENOTTY"),
            (libc::ETXTBSY, "ETXTBSY"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::EROFS, "EROFS"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
            (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
            (libc::ENETUNREACH, "ENETUNREACH"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
            (libc::ETIMEDOUT, "ETIMEDOUT"),
            (libc::ESTALE, "ESTALE"),
            (libc::ENOKEY, "ENOKEY"),
            (libc::EKEYREVOKED, "EKEYREVOKED"),
            (libc::EUSERS, "EUSERS"),
            (libc::ENOSPC, "ENOSPC"),
        ];
        known.iter().find(|(n, _)| *n == self.0).map_or_else(|| format!("errno {}", self.0), |(_, s)| s.to_string())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A call's return value, or its error.
pub type SysResult = Result<i64, Errno>;

fn check(rc: i64) -> SysResult {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

fn check_fd(rc: i64) -> Result<OwnedFd, Errno> {
    let fd = check(rc)?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// open(2).
pub fn open(path: &str, flags: i32) -> Result<OwnedFd, Errno> {
    let p = c(path);
    // SAFETY: `p` is a NUL-terminated string alive for the call.
    check_fd(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) } as i64)
}

/// read(2) into `buf`; the number of bytes read.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is writable for its length.
    check(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } as i64).map(|n| n as usize)
}

/// write(2) of `buf`; the number of bytes written.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is readable for its length.
    check(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) } as i64).map(|n| n as usize)
}

/// The file-system magic number of an open file (fstatfs(2) `f_type`).
pub fn fs_type(fd: &OwnedFd) -> Result<i64, Errno> {
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } as i64)?;
    Ok(st.f_type)
}

/// mknod(2) of a block (`block`) or character device node, mode 0600.
pub fn mknod(path: &str, block: bool, major: u32, minor: u32) -> SysResult {
    let p = c(path);
    let kind = if block { libc::S_IFBLK } else { libc::S_IFCHR };
    // SAFETY: `p` is a NUL-terminated string alive for the call.
    check(unsafe { libc::mknod(p.as_ptr(), kind | 0o600, libc::makedev(major, minor)) } as i64)
}

/// A file handle as name_to_handle_at(2) fills it, with room for the largest (MAX_HANDLE_SZ, 128 bytes).
#[repr(C)]
pub struct FileHandle {
    /// Bytes used in `f_handle`.
    pub handle_bytes: u32,
    /// The file system's handle type (ext4: 1 = 32-bit inode and generation).
    pub handle_type: i32,
    /// The opaque handle.
    pub f_handle: [u8; 128],
}

impl FileHandle {
    /// An empty handle ready for name_to_handle_at.
    pub fn empty() -> FileHandle {
        FileHandle { handle_bytes: 128, handle_type: 0, f_handle: [0; 128] }
    }
}

/// name_to_handle_at(2) of `path`.
pub fn name_to_handle(path: &str) -> Result<FileHandle, Errno> {
    let p = c(path);
    let mut h = FileHandle::empty();
    let mut mount_id: i32 = 0;
    // SAFETY: `h` has room for handle_bytes (128) bytes of handle; `mount_id` is writable.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            p.as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id,
            0,
        )
    };
    check(rc)?;
    Ok(h)
}

/// open_by_handle_at(2) of `h` on the file system of `mount_fd`, read-only.
pub fn open_by_handle(mount_fd: &OwnedFd, h: &FileHandle, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: `h` is a valid file_handle with `handle_bytes` bytes of payload, alive for the call.
    check_fd(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            h as *const FileHandle,
            flags | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })
}

/// keyctl(2) with up to four numeric arguments.
pub fn keyctl(op: i32, a2: i64, a3: i64, a4: i64, a5: i64) -> SysResult {
    // SAFETY: the operations used pass numbers only, or (describe) a buffer given by keyctl_describe.
    check(unsafe { libc::syscall(libc::SYS_keyctl, op, a2, a3, a4, a5) })
}

/// KEYCTL_DESCRIBE of key `id`: `type;uid;gid;perm;description`.
pub fn keyctl_describe(id: i64) -> Result<String, Errno> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for the length given.
    let n = check(unsafe { libc::syscall(libc::SYS_keyctl, 6, id, buf.as_mut_ptr(), buf.len(), 0) })? as usize;
    let end = buf[..n.min(buf.len())].iter().position(|&b| b == 0).unwrap_or(n.min(buf.len()));
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// add_key(2) of a `user` key holding `payload` to `keyring`.
pub fn add_user_key(description: &str, payload: &[u8], keyring: i64) -> SysResult {
    let (t, d) = (c("user"), c(description));
    // SAFETY: strings are NUL-terminated, the payload readable for its length, all alive for the call.
    check(unsafe { libc::syscall(libc::SYS_add_key, t.as_ptr(), d.as_ptr(), payload.as_ptr(), payload.len(), keyring) })
}

/// request_key(2) of a `user` key, without a call-out (so no helper runs on the host).
pub fn request_user_key(description: &str) -> SysResult {
    let (t, d) = (c("user"), c(description));
    // SAFETY: strings are NUL-terminated and alive; a NULL call-out info is allowed and asks for no upcall.
    check(unsafe { libc::syscall(libc::SYS_request_key, t.as_ptr(), d.as_ptr(), std::ptr::null::<u8>(), 0) })
}

/// unshare(2).
pub fn unshare(flags: i32) -> SysResult {
    // SAFETY: plain call; it only changes the calling process (always a forked child here).
    check(unsafe { libc::unshare(flags) } as i64)
}

/// setns(2) into the namespace `fd` refers to.
pub fn setns(fd: &OwnedFd) -> SysResult {
    // SAFETY: plain call on a valid descriptor; it only changes the calling process (a forked child).
    check(unsafe { libc::setns(fd.as_raw_fd(), 0) } as i64)
}

/// What fork-like calls return.
pub enum Forked {
    /// In the new child.
    Child,
    /// In the parent, with the child's pid.
    Parent(i32),
}

/// fork(2). The probe is single-threaded, so the child may run ordinary code.
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: the probe never starts threads, so the child inherits a consistent address space.
    match check(unsafe { libc::fork() } as i64)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// The raw clone(2) system call with `flags` and no new stack: fork-like, the child continues on a copy of
/// the parent's stack.
pub fn clone_flags(flags: i64) -> Result<Forked, Errno> {
    // SAFETY: with a NULL stack the child gets a copy-on-write copy of the caller's stack, as with fork; the
    // probe is single-threaded, and the child only calls exit_now.
    match check(unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as i64, 0, 0, 0, 0) })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// clone3(2) with `flags`, no new stack (fork-like).
pub fn clone3_flags(flags: u64) -> Result<Forked, Errno> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let args = CloneArgs {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: `args` is a clone_args of the first version's size; no stack means a copy of the caller's, as
    // with fork; the probe is single-threaded and the child only calls exit_now.
    match check(unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// Ends the calling process at once (no destructors, no atexit): for forked children.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and runs no user-space cleanup.
    unsafe { libc::_exit(code) }
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signalled(i32),
}

/// waitpid(2) for `pid` (or any child with -1), blocking; `None` when there is none.
pub fn wait(pid: i32) -> Option<(i32, Ended)> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is writable.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return None;
        }
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signalled(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        };
        return Some((rc, ended));
    }
}

/// A pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as i64)?;
    // SAFETY: both descriptors were just made by the kernel and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// init_module(2) of an empty image: refused for want of CAP_SYS_MODULE, else ENOEXEC (too short to be a
/// module), so nothing can ever load.
pub fn init_module_empty() -> SysResult {
    let args = c("");
    // SAFETY: a NULL image of length 0 is never read; the argument string is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0usize, args.as_ptr()) })
}

/// finit_module(2) of descriptor -1: refused, else EBADF.
pub fn finit_module_bad_fd() -> SysResult {
    let args = c("");
    // SAFETY: descriptor -1 refers to nothing; the argument string is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_finit_module, -1, args.as_ptr(), 0) })
}

/// delete_module(2) of `name`, which must not exist: refused, else ENOENT.
pub fn delete_module(name: &str) -> SysResult {
    let n = c(name);
    // SAFETY: NUL-terminated name alive for the call.
    check(unsafe { libc::syscall(libc::SYS_delete_module, n.as_ptr(), libc::O_NONBLOCK) })
}

/// A kexec_load flag bit the kernel does not know (its flags end at 0x8 today; 0xffff0000 is the
/// architecture): the flag check answers EINVAL right after the permission check.
pub const KEXEC_UNKNOWN_FLAG: i64 = 0x8000;

/// One more than KEXEC_SEGMENT_MAX (16): a second, independent reason for EINVAL. With zero segments the
/// call would UNLOAD the loaded kernel (the crash kernel with the crash flag): never zero.
pub const KEXEC_TOO_MANY_SEGMENTS: i64 = 17;

/// kexec_load(2) with an unknown flag and too many segments (NULL list): refused, else EINVAL; never loads
/// or unloads anything.
pub fn kexec_load_invalid() -> SysResult {
    // SAFETY: the segment list is NULL, never read: both argument checks fail first.
    check(unsafe {
        libc::syscall(libc::SYS_kexec_load, 0, KEXEC_TOO_MANY_SEGMENTS, std::ptr::null::<u8>(), KEXEC_UNKNOWN_FLAG)
    })
}

/// kexec_file_load(2) with descriptors -1 and an unknown flag (never KEXEC_FILE_UNLOAD, 0x1): refused,
/// else EINVAL.
pub fn kexec_file_load_invalid() -> SysResult {
    // SAFETY: no memory is passed (NULL command line of length 0).
    check(unsafe {
        libc::syscall(libc::SYS_kexec_file_load, -1, -1, 0usize, std::ptr::null::<u8>(), KEXEC_UNKNOWN_FLAG)
    })
}

/// reboot(2) with a wrong first magic number: refused, else EINVAL. Never reboots anything.
pub fn reboot_bad_magic() -> SysResult {
    // SAFETY: magic1 = 0 fails the kernel's magic check before any action; the argument is never read.
    check(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, std::ptr::null::<u8>()) })
}

/// bpf(2) BPF_PROG_LOAD of a two-instruction socket filter (`r0 = 0; exit`); the program's descriptor.
pub fn bpf_load_trivial() -> Result<OwnedFd, Errno> {
    // r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K = 0xb7), then exit (BPF_JMP | BPF_EXIT = 0x95).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c("GPL");
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
    }
    let attr = ProgLoad {
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` is the leading part of bpf_attr for BPF_PROG_LOAD (the kernel zero-fills the rest);
    // the instructions and license it points to outlive the call.
    check_fd(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, /* BPF_PROG_LOAD */
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    })
}

/// perf_event_open(2) of the software CPU clock, disabled, user space only: of the caller itself
/// (`system_wide` false) or of every process on CPU 0.
pub fn perf_cpu_clock(system_wide: bool) -> Result<OwnedFd, Errno> {
    #[repr(C)]
    struct Attr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }
    let attr = Attr {
        kind: 1,                                  // PERF_TYPE_SOFTWARE
        size: std::mem::size_of::<Attr>() as u32, // PERF_ATTR_SIZE_VER0
        config: 0,                                // PERF_COUNT_SW_CPU_CLOCK
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: 1 | (1 << 5) | (1 << 6), // disabled, exclude_kernel, exclude_hv
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
    };
    const PERF_FLAG_FD_CLOEXEC: u64 = 8;
    let (pid, cpu) = if system_wide { (-1, 0) } else { (0, -1) };
    // SAFETY: `attr` is a perf_event_attr of the first version's size, alive for the call.
    check_fd(unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    })
}

/// userfaultfd(2) for user-space faults only (what an unprivileged process may ask).
pub fn userfaultfd() -> Result<OwnedFd, Errno> {
    const UFFD_USER_MODE_ONLY: i64 = 1;
    // SAFETY: plain call with flags only.
    check_fd(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC as i64 | UFFD_USER_MODE_ONLY) })
}

/// io_uring_setup(2) of a one-entry ring.
pub fn io_uring_setup() -> Result<OwnedFd, Errno> {
    let mut params = [0u8; 120]; // struct io_uring_params, all defaults
                                 // SAFETY: `params` is a writable io_uring_params-sized buffer the kernel fills in.
    check_fd(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) })
}

/// fsopen(2) of tmpfs with an unknown flag: refused, else EINVAL (the permission check comes first).
pub fn fsopen_invalid() -> SysResult {
    let fs = c("tmpfs");
    // SAFETY: NUL-terminated name alive for the call.
    check(unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), 0x8000_0000u32) })
}

/// open_tree(2) cloning `path` (which should not exist): refused, else ENOENT.
pub fn open_tree_clone(path: &str) -> Result<OwnedFd, Errno> {
    let p = c(path);
    const OPEN_TREE_CLONE: u32 = 1;
    // SAFETY: NUL-terminated path alive for the call.
    check_fd(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as u32)
    })
}

/// move_mount(2) between descriptors -1 with an unknown flag: refused, else EINVAL.
pub fn move_mount_invalid() -> SysResult {
    let empty = c("");
    // SAFETY: NUL-terminated empty paths alive for the call; descriptors -1 refer to nothing.
    check(unsafe { libc::syscall(libc::SYS_move_mount, -1, empty.as_ptr(), -1, empty.as_ptr(), 0x8000_0000u32) })
}

/// mount(2).
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> SysResult {
    let (s, t, f, d) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: all strings are NUL-terminated and alive for the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) } as i64)
}

/// mount(2) changing only the propagation of `target` (no source, type or data).
pub fn mount_propagation(target: &str, flags: u64) -> SysResult {
    let t = c(target);
    // SAFETY: NUL-terminated target; NULL source, type and data are allowed for a propagation change.
    check(unsafe { libc::mount(std::ptr::null(), t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) } as i64)
}

/// umount2(2).
pub fn umount2(target: &str, flags: i32) -> SysResult {
    let t = c(target);
    // SAFETY: NUL-terminated path alive for the call.
    check(unsafe { libc::umount2(t.as_ptr(), flags) } as i64)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &str, put_old: &str) -> SysResult {
    let (n, o) = (c(new_root), c(put_old));
    // SAFETY: NUL-terminated paths alive for the call.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) })
}

/// clock_settime(2) of CLOCK_REALTIME to -1 s: always EINVAL when it reaches the kernel (the value is
/// checked before the permission), so it only tells whether a filter stops the call.
pub fn clock_settime_invalid() -> SysResult {
    let ts = libc::timespec { tv_sec: -1, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec alive for the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } as i64)
}

/// settimeofday(2) of a time zone 1000 hours west and no time: refused for want of CAP_SYS_TIME, else
/// EINVAL (the zone is checked after the permission and before anything is set).
pub fn settimeofday_bad_zone() -> SysResult {
    /// struct timezone of settimeofday(2).
    #[repr(C)]
    struct Timezone {
        minutes_west: i32,
        dst_time: i32,
    }
    let tz = Timezone { minutes_west: 60_000, dst_time: 0 };
    // SAFETY: NULL time and a valid timezone alive for the call (raw call: glibc rejects a NULL time).
    check(unsafe { libc::syscall(libc::SYS_settimeofday, std::ptr::null::<libc::timeval>(), &tz as *const Timezone) })
}

/// clock_adjtime(2) of CLOCK_REALTIME setting a tick of 1 µs: refused for want of CAP_SYS_TIME, else EINVAL
/// (a tick off by more than 10 % is rejected after the permission check, before anything changes).
pub fn clock_adjtime_bad_tick() -> SysResult {
    // SAFETY: an all-zero timex is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = libc::ADJ_TICK;
    tx.tick = 1;
    // SAFETY: `tx` is a valid, writable timex alive for the call.
    check(unsafe { libc::syscall(libc::SYS_clock_adjtime, libc::CLOCK_REALTIME, &mut tx) })
}

/// swapon(2) of a path that must not exist: refused, else ENOENT.
pub fn swapon(path: &str) -> SysResult {
    let p = c(path);
    // SAFETY: NUL-terminated path alive for the call.
    check(unsafe { libc::syscall(libc::SYS_swapon, p.as_ptr(), 0) })
}

/// swapoff(2) of a path that must not exist: refused, else ENOENT.
pub fn swapoff(path: &str) -> SysResult {
    let p = c(path);
    // SAFETY: NUL-terminated path alive for the call.
    check(unsafe { libc::syscall(libc::SYS_swapoff, p.as_ptr()) })
}

/// acct(2) to a path that must not exist (acct(NULL) would turn the host's accounting off): refused, else
/// ENOENT.
pub fn acct(path: &str) -> SysResult {
    let p = c(path);
    // SAFETY: NUL-terminated path alive for the call.
    check(unsafe { libc::acct(p.as_ptr()) } as i64)
}

/// syslog(2) SYSLOG_ACTION_SIZE_BUFFER: the size of the kernel's log buffer, nothing read or cleared.
pub fn syslog_size() -> SysResult {
    // SAFETY: this action reads no buffer (NULL, 0).
    check(unsafe { libc::syscall(libc::SYS_syslog, 10, std::ptr::null::<u8>(), 0) })
}

/// iopl(2) level 3 (all I/O ports), for the calling process only (a forked child that then exits without
/// touching a port).
pub fn iopl3() -> SysResult {
    // SAFETY: changes the I/O privilege of the calling process only; no port is accessed.
    check(unsafe { libc::syscall(libc::SYS_iopl, 3) })
}

/// ioperm(2) on port 0x80 (the POST diagnostic port), for the calling process only (a forked child that
/// then exits without touching it).
pub fn ioperm_0x80() -> SysResult {
    // SAFETY: changes the I/O bitmap of the calling process only; no port is accessed.
    check(unsafe { libc::syscall(libc::SYS_ioperm, 0x80, 1, 1) })
}

/// ptrace(2) PTRACE_SEIZE of `pid`: the permission check of PTRACE_ATTACH without stopping the process.
/// The tracer must exit right after: the kernel then detaches it and the tracee never noticed.
pub fn ptrace_seize(pid: i32) -> SysResult {
    // SAFETY: SEIZE with no options stops nothing and touches no memory of ours.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) })
}

/// process_vm_readv(2) of `len` (at most 64) bytes at `addr` in `pid`.
pub fn process_vm_read(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len.min(64)];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: the local iovec points to `buf`, writable for its length; the remote one is only read by the
    // kernel from the other process, which checks it.
    let n = check(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } as i64)?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// kcmp(2) KCMP_FILE of descriptor 0 of `pid1` and of `pid2`.
pub fn kcmp_file0(pid1: i32, pid2: i32) -> SysResult {
    // SAFETY: numbers only.
    check(unsafe {
        libc::syscall(libc::SYS_kcmp, pid1, pid2, 0 /* KCMP_FILE */, 0, 0)
    })
}

/// socket(2).
pub fn socket(domain: i32, kind: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain call with numbers.
    check_fd(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) } as i64)
}

/// msgget(2) of an existing System V message queue `key` (never creates one).
pub fn msgget(key: i32) -> SysResult {
    // SAFETY: plain call with numbers; without IPC_CREAT nothing is made.
    check(unsafe { libc::msgget(key, 0) } as i64)
}

/// ioctl(2) FITHAW on the file system of `fd`: refused for want of CAP_SYS_ADMIN, else EINVAL when it is
/// not frozen. (FIFREEZE, which would freeze the host's file system, is never sent.)
pub fn thaw(fd: &OwnedFd) -> SysResult {
    const FITHAW: libc::c_ulong = 0xc004_5878; // _IOWR('X', 120, int)
                                               // SAFETY: FITHAW takes no argument memory.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FITHAW, 0) } as i64)
}

/// alarm(2): SIGALRM ends the probe after `secs` if it is still running (a hung call must not hang CI).
pub fn alarm(secs: u32) {
    // SAFETY: plain call; SIGALRM's default action ends the process.
    unsafe { libc::alarm(secs) };
}

/// The parent's pid.
pub fn getppid() -> i32 {
    // SAFETY: plain call, cannot fail.
    unsafe { libc::getppid() }
}
