//! The one seam through which the context builder makes privileged calls: [`LinuxSyscall`] makes them for
//! real; [`RecordingSyscall`] records them so the order of mounts and capability drops is unit tested
//! without root.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// A failed privileged call: which one, on what, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {errno}")]
pub struct SysError {
    /// The operation (`mount`, `pivot_root`, `mknod`...).
    pub op: &'static str,
    /// What it was applied to (a path, a capability, a name).
    pub target: String,
    /// The OS error.
    pub errno: nix::Error,
}

/// Result of a call through the seam.
pub type SysResult<T = ()> = Result<T, SysError>;

fn wrap<T>(op: &'static str, target: impl std::fmt::Display, r: nix::Result<T>) -> SysResult<T> {
    r.map_err(|errno| SysError { op, target: target.to_string(), errno })
}

/// The privileged calls made while building a context.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> SysResult;
    /// mkdir(2); an existing directory is not an error.
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult;
    /// mknod(2) of a character device.
    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult;
    /// symlink(2); an existing link is replaced.
    fn symlink(&self, target: &Path, link: &Path) -> SysResult;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> SysResult;
    /// setdomainname(2).
    fn setdomainname(&self, name: &str) -> SysResult;
    /// Drops one capability from the bounding set (irreversible).
    fn drop_bounding(&self, cap: Capability) -> SysResult;
    /// Sets one capability set of the calling thread.
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult;
    /// Clears the ambient set.
    fn clear_ambient(&self) -> SysResult;
    /// statvfs(2): the flags of the mount holding `path`, as mount(2) flags, so it can be remounted keeping
    /// them (a bind remount sets exactly the flags it is given).
    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags>;
    /// bpf(BPF_PROG_LOAD) of a cgroup device program (`BPF_PROG_TYPE_CGROUP_DEVICE`); `insns` are its
    /// instructions, 8 bytes each. The descriptor keeps the program loaded until it is attached.
    fn load_device_program(&self, insns: &[u8]) -> SysResult<OwnedFd>;
    /// bpf(BPF_PROG_ATTACH) of a loaded device program to the cgroup v2 group `cgroup` (`BPF_CGROUP_DEVICE`,
    /// no flags: it replaces an earlier program of that group, and no group below may attach one of its own).
    fn attach_device_program(&self, prog: BorrowedFd<'_>, cgroup: &Path) -> SysResult;
    /// Whether this kernel filters system calls with seccomp programs (`CONFIG_SECCOMP_FILTER`): asks to
    /// install a filter from a null pointer, which a kernel with filters refuses with EFAULT (it went looking
    /// for the program) and one without with EINVAL. Nothing is installed either way.
    fn seccomp_filters_supported(&self) -> SysResult<bool>;
    /// Installs a seccomp filter on the calling thread (and everything it forks and execs) with
    /// prctl(PR_SET_SECCOMP). No no_new_privs: the caller must hold CAP_SYS_ADMIN, which keeps set-uid
    /// programs working under the filter.
    fn install_seccomp_filter(&self, program: &[seccompiler::sock_filter]) -> SysResult;
}

/// The bpf(2) commands, program type and attach type used (`include/uapi/linux/bpf.h`).
mod bpf {
    pub const PROG_LOAD: libc::c_int = 5;
    pub const PROG_ATTACH: libc::c_int = 8;
    pub const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    pub const CGROUP_DEVICE: u32 = 6;
    /// Shown by `bpftool prog`: what the program is for.
    pub const PROG_NAME: &[u8] = b"vserver_devices";

    /// The part of `union bpf_attr` that BPF_PROG_LOAD reads up to the program's name (64 bytes, no padding);
    /// the kernel takes the rest as zero.
    #[repr(C, align(8))]
    pub struct ProgLoad {
        pub prog_type: u32,
        pub insn_cnt: u32,
        pub insns: u64,
        pub license: u64,
        pub log_level: u32,
        pub log_size: u32,
        pub log_buf: u64,
        pub kern_version: u32,
        pub prog_flags: u32,
        pub prog_name: [u8; 16],
    }

    /// The part of `union bpf_attr` that BPF_PROG_ATTACH reads. No padding: every byte passed is set (the
    /// kernel reads the word after `replace_bpf_fd` as `relative_fd` when it has one).
    #[repr(C)]
    pub struct ProgAttach {
        pub target_fd: u32,
        pub attach_bpf_fd: u32,
        pub attach_type: u32,
        pub attach_flags: u32,
        pub replace_bpf_fd: u32,
    }

    // Padding would pass uninitialised bytes to the kernel.
    const _: () = assert!(size_of::<ProgLoad>() == 64 && size_of::<ProgAttach>() == 20);
}

// seccompiler's instruction is passed to the kernel as its own `struct sock_filter`.
const _: () = assert!(
    size_of::<seccompiler::sock_filter>() == size_of::<libc::sock_filter>()
        && align_of::<seccompiler::sock_filter>() == align_of::<libc::sock_filter>()
);

/// statvfs(2) flags and the mount(2) flags that keep them on a remount.
const STATVFS_TO_MS: [(nix::sys::statvfs::FsFlags, MsFlags); 9] = {
    use nix::sys::statvfs::FsFlags as F;
    [
        (F::ST_RDONLY, MsFlags::MS_RDONLY),
        (F::ST_NOSUID, MsFlags::MS_NOSUID),
        (F::ST_NODEV, MsFlags::MS_NODEV),
        (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (F::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
        (F::ST_MANDLOCK, MsFlags::MS_MANDLOCK),
        (F::ST_NOATIME, MsFlags::MS_NOATIME),
        (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (F::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
};

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        wrap("mount", target.display(), nix::mount::mount(source, target, fstype, flags, data))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult {
        wrap("umount", target.display(), nix::mount::umount2(target, flags))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        wrap("pivot_root", new_root.display(), nix::unistd::pivot_root(new_root, put_old))
    }

    fn chdir(&self, path: &Path) -> SysResult {
        wrap("chdir", path.display(), nix::unistd::chdir(path))
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult {
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
            Err(nix::Error::EEXIST) => Ok(()),
            r => wrap("mkdir", path.display(), r),
        }
    }

    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult {
        let dev = nix::sys::stat::makedev(major, minor);
        wrap(
            "mknod",
            path.display(),
            nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), dev),
        )?;
        // mknod is subject to the umask; devices must be usable by everyone, as on the host.
        wrap(
            "chmod",
            path.display(),
            nix::sys::stat::fchmodat(
                None,
                path,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
        )
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        let _ = std::fs::remove_file(link);
        wrap("symlink", link.display(), nix::unistd::symlinkat(target, None, link))
    }

    fn sethostname(&self, name: &str) -> SysResult {
        wrap("sethostname", name, nix::unistd::sethostname(name))
    }

    fn setdomainname(&self, name: &str) -> SysResult {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        wrap("setdomainname", name, nix::errno::Errno::result(rc).map(drop))
    }

    fn drop_bounding(&self, cap: Capability) -> SysResult {
        caps::drop(None, CapSet::Bounding, cap).map_err(|e| SysError {
            op: "drop capability",
            target: format!("{cap} ({e})"),
            errno: nix::Error::last(),
        })
    }

    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult {
        caps::set(None, set, caps).map_err(|e| SysError {
            op: "set capabilities",
            target: format!("{set:?} ({e})"),
            errno: nix::Error::last(),
        })
    }

    fn clear_ambient(&self) -> SysResult {
        caps::clear(None, CapSet::Ambient).map_err(|e| SysError {
            op: "clear capabilities",
            target: format!("ambient ({e})"),
            errno: nix::Error::last(),
        })
    }

    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        let st = wrap("statvfs", path.display(), nix::sys::statvfs::statvfs(path))?;
        let flags = st.flags();
        Ok(STATVFS_TO_MS.iter().filter(|(st, _)| flags.contains(*st)).fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
    }

    fn load_device_program(&self, insns: &[u8]) -> SysResult<OwnedFd> {
        let target = "cgroup device program";
        if insns.is_empty() || !insns.len().is_multiple_of(8) {
            return wrap("bpf(BPF_PROG_LOAD)", target, Err(nix::Error::EINVAL));
        }
        let license = c"GPL";
        let mut prog_name = [0u8; 16];
        prog_name[..bpf::PROG_NAME.len()].copy_from_slice(bpf::PROG_NAME);
        let attr = bpf::ProgLoad {
            prog_type: bpf::PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        };
        // SAFETY: `attr` is a valid prefix of `union bpf_attr` for BPF_PROG_LOAD, its size is passed with it;
        // the instructions and the license it points to outlive the call, and the kernel only reads them.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, bpf::PROG_LOAD, &attr as *const bpf::ProgLoad, size_of::<bpf::ProgLoad>())
        };
        let fd = wrap("bpf(BPF_PROG_LOAD)", target, nix::errno::Errno::result(rc))?;
        // SAFETY: on success BPF_PROG_LOAD returns a new descriptor that nothing else owns.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
    }

    fn attach_device_program(&self, prog: BorrowedFd<'_>, cgroup: &Path) -> SysResult {
        use nix::fcntl::OFlag;
        let op = "bpf(BPF_PROG_ATTACH)";
        let dir = wrap(
            op,
            cgroup.display(),
            nix::fcntl::open(cgroup, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()),
        )?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
        let attr = bpf::ProgAttach {
            target_fd: dir.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: bpf::CGROUP_DEVICE,
            attach_flags: 0,
            replace_bpf_fd: 0,
        };
        // SAFETY: `attr` is a valid prefix of `union bpf_attr` for BPF_PROG_ATTACH, its size is passed with
        // it; both descriptors it names stay open for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf::PROG_ATTACH,
                &attr as *const bpf::ProgAttach,
                size_of::<bpf::ProgAttach>(),
            )
        };
        wrap(op, cgroup.display(), nix::errno::Errno::result(rc).map(drop))
    }

    fn seccomp_filters_supported(&self) -> SysResult<bool> {
        // SAFETY: a null program pointer is never dereferenced by the caller; the kernel checks it (EFAULT).
        let rc = unsafe {
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, std::ptr::null::<libc::sock_fprog>())
        };
        match nix::errno::Errno::result(rc) {
            Err(nix::Error::EFAULT) => Ok(true),
            Err(nix::Error::EINVAL) => Ok(false),
            // No kernel installs a filter from nothing; if one did, it would not be filtering.
            Ok(_) => Ok(false),
            Err(errno) => Err(SysError { op: "prctl(PR_SET_SECCOMP)", target: "probe".into(), errno }),
        }
    }

    fn install_seccomp_filter(&self, program: &[seccompiler::sock_filter]) -> SysResult {
        let target = format!("program of {} instructions", program.len());
        let Ok(len) = u16::try_from(program.len()) else {
            return wrap("prctl(PR_SET_SECCOMP)", target, Err(nix::Error::E2BIG));
        };
        // seccompiler's instruction has the kernel's layout (u16 code, u8 jt, u8 jf, u32 k), repr(C).
        let fprog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
        // SAFETY: `fprog` points into `program`, which outlives the call; the kernel copies the program.
        let rc =
            unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) };
        wrap("prctl(PR_SET_SECCOMP)", target, nix::errno::Errno::result(rc).map(drop))
    }
}

/// One recorded call, with its arguments in a form easy to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A mount: source, target, file system type, flags, data.
    Mount(Option<PathBuf>, PathBuf, Option<String>, MsFlags, Option<String>),
    /// An unmount.
    Umount(PathBuf),
    /// pivot_root(new_root, put_old).
    PivotRoot(PathBuf, PathBuf),
    /// chdir.
    Chdir(PathBuf),
    /// mkdir.
    Mkdir(PathBuf),
    /// mknod of a character device: path, mode, major, minor.
    Mknod(PathBuf, u32, u64, u64),
    /// symlink(target, link).
    Symlink(PathBuf, PathBuf),
    /// sethostname.
    Hostname(String),
    /// setdomainname.
    Domainname(String),
    /// A capability dropped from the bounding set.
    DropBounding(Capability),
    /// A capability set assigned: the set's name (`Permitted`...) and its capabilities by number.
    SetCaps(String, Vec<Capability>),
    /// The ambient set cleared.
    ClearAmbient,
    /// The flags of the mount holding a path read (statvfs).
    MountFlags(PathBuf),
    /// A device program loaded: its instructions.
    LoadDeviceProgram(Vec<u8>),
    /// A device program attached to a cgroup v2 group.
    AttachDeviceProgram(PathBuf),
    /// The kernel asked whether it has seccomp filters.
    ProbeSeccompFilters,
    /// A seccomp filter installed: its instructions.
    InstallSeccompFilter(Vec<seccompiler::sock_filter>),
}

/// A double that records every call and succeeds (unless told otherwise), for unit tests.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    /// What [`Syscall::mount_flags`] answers (none when unset).
    mount_flags: Option<MsFlags>,
    /// The error [`Syscall::load_device_program`] answers, as a kernel without device programs would.
    refuse_device_program: Option<nix::Error>,
    /// [`Syscall::seccomp_filters_supported`] answers no, as a kernel built without seccomp filters would.
    no_seccomp_filters: bool,
}

impl RecordingSyscall {
    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// A double whose mounts all carry `flags` (what [`Syscall::mount_flags`] answers).
    pub fn with_mount_flags(flags: MsFlags) -> Self {
        Self { mount_flags: Some(flags), ..Self::default() }
    }

    /// A double whose kernel refuses to load device programs with `errno` (EINVAL: a kernel built without
    /// cgroup BPF; ENOSYS: without bpf(2)). The load is still recorded.
    pub fn refusing_device_programs(errno: nix::Error) -> Self {
        Self { refuse_device_program: Some(errno), ..Self::default() }
    }

    /// A double whose kernel has no seccomp filters (`CONFIG_SECCOMP_FILTER` off). The probe is still recorded.
    pub fn without_seccomp_filters() -> Self {
        Self { no_seccomp_filters: true, ..Self::default() }
    }

    fn push(&self, c: Call) -> SysResult {
        self.calls.borrow_mut().push(c);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.push(Call::Mount(
            source.map(Path::to_path_buf),
            target.to_path_buf(),
            fstype.map(str::to_string),
            flags,
            data.map(str::to_string),
        ))
    }
    fn umount2(&self, target: &Path, _flags: MntFlags) -> SysResult {
        self.push(Call::Umount(target.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.push(Call::PivotRoot(new_root.to_path_buf(), put_old.to_path_buf()))
    }
    fn chdir(&self, path: &Path) -> SysResult {
        self.push(Call::Chdir(path.to_path_buf()))
    }
    fn mkdir(&self, path: &Path, _mode: u32) -> SysResult {
        self.push(Call::Mkdir(path.to_path_buf()))
    }
    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult {
        self.push(Call::Mknod(path.to_path_buf(), mode, major, minor))
    }
    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        self.push(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
    }
    fn sethostname(&self, name: &str) -> SysResult {
        self.push(Call::Hostname(name.to_string()))
    }
    fn setdomainname(&self, name: &str) -> SysResult {
        self.push(Call::Domainname(name.to_string()))
    }
    fn drop_bounding(&self, cap: Capability) -> SysResult {
        self.push(Call::DropBounding(cap))
    }
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult {
        let mut v: Vec<Capability> = caps.iter().copied().collect();
        v.sort_by_key(|c| c.index());
        self.push(Call::SetCaps(format!("{set:?}"), v))
    }
    fn clear_ambient(&self) -> SysResult {
        self.push(Call::ClearAmbient)
    }
    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        self.push(Call::MountFlags(path.to_path_buf()))?;
        Ok(self.mount_flags.unwrap_or(MsFlags::empty()))
    }
    fn load_device_program(&self, insns: &[u8]) -> SysResult<OwnedFd> {
        self.push(Call::LoadDeviceProgram(insns.to_vec()))?;
        let fail = |errno| SysError { op: "bpf(BPF_PROG_LOAD)", target: "cgroup device program".into(), errno };
        if let Some(errno) = self.refuse_device_program {
            return Err(fail(errno));
        }
        // Any descriptor stands for the program.
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| fail(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))
    }
    fn attach_device_program(&self, _prog: BorrowedFd<'_>, cgroup: &Path) -> SysResult {
        self.push(Call::AttachDeviceProgram(cgroup.to_path_buf()))
    }
    fn seccomp_filters_supported(&self) -> SysResult<bool> {
        self.push(Call::ProbeSeccompFilters)?;
        Ok(!self.no_seccomp_filters)
    }
    fn install_seccomp_filter(&self, program: &[seccompiler::sock_filter]) -> SysResult {
        self.push(Call::InstallSeccompFilter(program.to_vec()))
    }
}
