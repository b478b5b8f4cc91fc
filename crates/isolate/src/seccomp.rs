//! The system call filters of a context: the default profile of every vserver, and `S_FLAGS lock`.
//!
//! **The default profile** (off only with S_UNSAFE `seccomp`) refuses what reaches the whole machine rather
//! than the vserver, and what widens the kernel's attack surface for no use a vserver has. It is written the
//! other way round from Docker's default profile, which allows a list and refuses the rest: this one refuses
//! a list ([`refused_calls`], plus a few calls for some arguments) and answers every call newer than the
//! list (a number above [`HIGHEST_KNOWN`]) ENOSYS, so that a kernel newer than this build adds no surface.
//! It is at least as strict: every call Docker's profile refuses a default container is refused here too, by
//! the list, by that bound, or by the kernel's own capability check (namespace flags other than
//! CLONE_NEWUSER in `clone` and `unshare` need CAP_SYS_ADMIN; `unshare` without them only changes what the
//! caller shares with its own threads). Beyond Docker's, it refuses io_uring, `process_vm_readv` and
//! `process_vm_writev` without CAP_SYS_PTRACE, TIOCSTI, and with LIMIT_DISK the ioctls that change a file's
//! project.
//!
//! Like Docker's, it follows the capabilities: a call refused because its capability is outside the default
//! set ([`crate::spec::DEFAULT_CAPABILITIES`]) is allowed again when S_CAPS gives that capability (mount and
//! the mount API with CAP_SYS_ADMIN, clock setting with CAP_SYS_TIME...). Some are refused whatever the
//! capabilities: the kernel keyring (not namespaced), `kexec_load` and `kexec_file_load` (CAP_SYS_BOOT stays
//! in the default set for `reboot`, which in a PID namespace ends only the vserver; kexec replaces the host's
//! kernel), io_uring, vsock sockets and TIOCSTI.
//!
//! Refusals answer EPERM, as the kernel answers a caller without the capability; calls that are obsolete or
//! only newer ways to what older calls give answer ENOSYS, as from a kernel without them, so that programs
//! fall back to the older call. User namespaces (`unshare` or `clone` with CLONE_NEWUSER) are refused unless
//! S_UNSAFE `userns`; `clone3` keeps its flags in memory a filter cannot read, so it answers ENOSYS, on which
//! the C library falls back to `clone`. S_UNSAFE `seccomp` turns the whole profile off, the ban on user
//! namespaces with it.
//!
//! **`S_FLAGS lock`**: processes of the context may not make new contexts from inside: `unshare`, `setns`
//! and `clone` with any namespace flag are refused (EPERM), `clone3` answers ENOSYS; on top of the default
//! profile, or alone with S_UNSAFE `seccomp`.
//!
//! Filters are installed while the process still holds CAP_SYS_ADMIN, so no_new_privs is not needed: set-uid
//! programs inside (`su`, `ping`) keep working, which a filter installed the unprivileged way would forbid.
//! The filters know the host's native system calls only: a 32-bit (i386) program is killed by them at its
//! first call (S_UNSAFE `seccomp` runs such a vserver).

use std::collections::BTreeMap;

use caps::Capability as Cap;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::spec::ContextSpec;
use crate::syscall::{SysError, Syscall};

/// The filters could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This CPU architecture has no filter here.
    #[error(
        "system call filters are not supported on this architecture ({0}); S_UNSAFE=seccomp runs a vserver \
         without the default profile (S_FLAGS lock needs them too)"
    )]
    Arch(&'static str),
    /// Building a BPF program failed.
    #[error("cannot build the system call filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The ENOSYS program has more ranges of numbers than its jumps reach.
    #[error("cannot build the system call filter: {0} ranges of numbers to answer ENOSYS are more than it can hold")]
    TooManyRanges(usize),
    /// The kernel refused a filter.
    #[error("cannot install the system call filter: {0}")]
    Install(#[from] SysError),
}

/// The highest system call number this build has decided on (`file_setattr`, Linux 6.17; numbers from 424 on
/// are the same on every architecture). Anything above answers ENOSYS, x32-ABI numbers (bit 30 set, under
/// x86_64's audit architecture) included.
pub const HIGHEST_KNOWN: u32 = 469;

/// Calls newer than the C library's tables, by their number (the same on every architecture). Of those up to
/// [`HIGHEST_KNOWN`] the profile allows `cachestat` 451 (the page cache state of a file it opened),
/// `fchmodat2` 452, `map_shadow_stack` 453 and `futex_wake`, `futex_wait`, `futex_requeue` 454 to 456, as
/// Docker's profile does; the others are listed.
mod newer {
    pub const STATMOUNT: i64 = 457;
    pub const LISTMOUNT: i64 = 458;
    pub const LSM_GET_SELF_ATTR: i64 = 459;
    pub const LSM_SET_SELF_ATTR: i64 = 460;
    pub const LSM_LIST_MODULES: i64 = 461;
    pub const MSEAL: i64 = 462;
    pub const SETXATTRAT: i64 = 463;
    pub const GETXATTRAT: i64 = 464;
    pub const LISTXATTRAT: i64 = 465;
    pub const REMOVEXATTRAT: i64 = 466;
    pub const OPEN_TREE_ATTR: i64 = 467;
    pub const FILE_GETATTR: i64 = 468;
    pub const FILE_SETATTR: i64 = 469;
}

/// How the profile answers a call it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    /// EPERM: refused, as the kernel refuses a caller without the capability.
    Eperm,
    /// ENOSYS: as from a kernel without the call, so that programs fall back to an older one.
    Enosys,
}

impl Answer {
    fn errno(self) -> i32 {
        match self {
            Answer::Eperm => libc::EPERM,
            Answer::Enosys => libc::ENOSYS,
        }
    }
}

/// Who may still make a call the profile lists.
#[derive(Debug, Clone, Copy)]
enum Unless {
    /// Nobody.
    Never,
    /// A context holding one of these capabilities (the default set and S_CAPS).
    Cap(&'static [Cap]),
    /// A context holding one of these capabilities, or one allowed user namespaces (S_UNSAFE `userns`).
    CapOrUserns(&'static [Cap]),
}

/// One call of the list.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    name: &'static str,
    nr: i64,
    answer: Answer,
    unless: Unless,
}

const fn eperm(name: &'static str, nr: i64, unless: Unless) -> Refusal {
    Refusal { name, nr, answer: Answer::Eperm, unless }
}

const fn enosys(name: &'static str, nr: i64, unless: Unless) -> Refusal {
    Refusal { name, nr, answer: Answer::Enosys, unless }
}

const ADMIN: Unless = Unless::Cap(&[Cap::CAP_SYS_ADMIN]);
const PTRACE: Unless = Unless::Cap(&[Cap::CAP_SYS_PTRACE]);
const NICE: Unless = Unless::Cap(&[Cap::CAP_SYS_NICE]);
const MODULE: Unless = Unless::Cap(&[Cap::CAP_SYS_MODULE]);
const TIME: Unless = Unless::Cap(&[Cap::CAP_SYS_TIME]);

/// The calls the default profile refuses without looking at their arguments, and who may still make them.
fn table() -> Vec<Refusal> {
    use Unless::Never;
    let mut t = vec![
        // The kernel keyring is not namespaced: the host root's keys would be within reach.
        eperm("keyctl", libc::SYS_keyctl, Never),
        eperm("add_key", libc::SYS_add_key, Never),
        eperm("request_key", libc::SYS_request_key, Never),
        // Replacing the running kernel. CAP_SYS_BOOT stays for reboot, which a PID namespace confines.
        eperm("kexec_load", libc::SYS_kexec_load, Never),
        eperm("kexec_file_load", libc::SYS_kexec_file_load, Never),
        // Operations submitted to a ring run in kernel workers, out of the filter's sight; a long history of
        // kernel bugs, and no service needs it.
        eperm("io_uring_setup", libc::SYS_io_uring_setup, Never),
        eperm("io_uring_enter", libc::SYS_io_uring_enter, Never),
        eperm("io_uring_register", libc::SYS_io_uring_register, Never),
        // Opens any inode of a file system by its handle, around the vserver's root ("shocker").
        eperm("open_by_handle_at", libc::SYS_open_by_handle_at, Unless::Cap(&[Cap::CAP_DAC_READ_SEARCH])),
        // Kernel modules.
        eperm("init_module", libc::SYS_init_module, MODULE),
        eperm("finit_module", libc::SYS_finit_module, MODULE),
        eperm("delete_module", libc::SYS_delete_module, MODULE),
        // Programs and probes in the kernel: attack surface, and a view of the whole machine.
        eperm("bpf", libc::SYS_bpf, Unless::Cap(&[Cap::CAP_BPF, Cap::CAP_SYS_ADMIN])),
        eperm("perf_event_open", libc::SYS_perf_event_open, Unless::Cap(&[Cap::CAP_PERFMON, Cap::CAP_SYS_ADMIN])),
        // Stalls the kernel's copies from user memory at will: a tool of kernel exploits.
        eperm("userfaultfd", libc::SYS_userfaultfd, PTRACE),
        // Mounts, old and new API: the vserver's file system is built for it and stays as built.
        eperm("mount", libc::SYS_mount, ADMIN),
        eperm("umount2", libc::SYS_umount2, ADMIN),
        eperm("pivot_root", libc::SYS_pivot_root, ADMIN),
        eperm("open_tree", libc::SYS_open_tree, ADMIN),
        eperm("move_mount", libc::SYS_move_mount, ADMIN),
        eperm("fsopen", libc::SYS_fsopen, ADMIN),
        eperm("fsconfig", libc::SYS_fsconfig, ADMIN),
        eperm("fsmount", libc::SYS_fsmount, ADMIN),
        eperm("fspick", libc::SYS_fspick, ADMIN),
        eperm("mount_setattr", libc::SYS_mount_setattr, ADMIN),
        eperm("open_tree_attr", newer::OPEN_TREE_ATTR, ADMIN),
        // Reading mounts the new way: ENOSYS, so that programs read /proc/self/mountinfo as before.
        enosys("statmount", newer::STATMOUNT, ADMIN),
        enosys("listmount", newer::LISTMOUNT, ADMIN),
        // The machine's swap, quotas, file system notifications and names.
        eperm("swapon", libc::SYS_swapon, ADMIN),
        eperm("swapoff", libc::SYS_swapoff, ADMIN),
        eperm("quotactl", libc::SYS_quotactl, ADMIN),
        eperm("quotactl_fd", libc::SYS_quotactl_fd, ADMIN),
        eperm("fanotify_init", libc::SYS_fanotify_init, ADMIN),
        eperm("lookup_dcookie", libc::SYS_lookup_dcookie, ADMIN),
        eperm("sethostname", libc::SYS_sethostname, ADMIN),
        eperm("setdomainname", libc::SYS_setdomainname, ADMIN),
        // Joining namespaces (the lock refuses it in all cases).
        eperm("setns", libc::SYS_setns, Unless::CapOrUserns(&[Cap::CAP_SYS_ADMIN])),
        // The clock is the machine's. adjtimex and clock_adjtime stay: the kernel refuses any change without
        // CAP_SYS_TIME before it looks at the values, and reading the clock's state (ntp_gettime, chronyc) is
        // common.
        eperm("settimeofday", libc::SYS_settimeofday, TIME),
        eperm("clock_settime", libc::SYS_clock_settime, TIME),
        // Process accounting to a file of the host's choosing, and the host kernel's log.
        eperm("acct", libc::SYS_acct, Unless::Cap(&[Cap::CAP_SYS_PACCT])),
        eperm("syslog", libc::SYS_syslog, Unless::Cap(&[Cap::CAP_SYSLOG, Cap::CAP_SYS_ADMIN])),
        // Other processes' memory and descriptors. ptrace itself stays (debuggers, strace), as in Docker: it
        // checks the same access, and process 1 is not dumpable.
        eperm("kcmp", libc::SYS_kcmp, PTRACE),
        eperm("pidfd_getfd", libc::SYS_pidfd_getfd, PTRACE),
        eperm("process_madvise", libc::SYS_process_madvise, PTRACE),
        eperm("process_vm_readv", libc::SYS_process_vm_readv, PTRACE),
        eperm("process_vm_writev", libc::SYS_process_vm_writev, PTRACE),
        eperm("vhangup", libc::SYS_vhangup, Unless::Cap(&[Cap::CAP_SYS_TTY_CONFIG])),
        // The machine's memory placement (NUMA).
        eperm("mbind", libc::SYS_mbind, NICE),
        eperm("set_mempolicy", libc::SYS_set_mempolicy, NICE),
        eperm("get_mempolicy", libc::SYS_get_mempolicy, NICE),
        eperm("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node, NICE),
        eperm("migrate_pages", libc::SYS_migrate_pages, NICE),
        eperm("move_pages", libc::SYS_move_pages, NICE),
        // Newer ways to what older calls give: no reach beyond them, but new kernel code that container
        // profiles do not open yet. ENOSYS: programs use the older call (/proc/self/attr, the *xattr calls,
        // the FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR ioctls) or go without sealing their memory.
        enosys("lsm_get_self_attr", newer::LSM_GET_SELF_ATTR, Never),
        enosys("lsm_set_self_attr", newer::LSM_SET_SELF_ATTR, Never),
        enosys("lsm_list_modules", newer::LSM_LIST_MODULES, Never),
        enosys("mseal", newer::MSEAL, Never),
        enosys("setxattrat", newer::SETXATTRAT, Never),
        enosys("getxattrat", newer::GETXATTRAT, Never),
        enosys("listxattrat", newer::LISTXATTRAT, Never),
        enosys("removexattrat", newer::REMOVEXATTRAT, Never),
        enosys("file_getattr", newer::FILE_GETATTR, Never),
        enosys("file_setattr", newer::FILE_SETATTR, Never),
        // Obsolete: the kernel has no use for it any more.
        enosys("nfsservctl", libc::SYS_nfsservctl, Never),
    ];
    #[cfg(target_arch = "x86_64")]
    t.extend([
        // The machine's I/O ports.
        eperm("iopl", libc::SYS_iopl, Unless::Cap(&[Cap::CAP_SYS_RAWIO])),
        eperm("ioperm", libc::SYS_ioperm, Unless::Cap(&[Cap::CAP_SYS_RAWIO])),
        // Obsolete or never implemented.
        enosys("uselib", libc::SYS_uselib, Never),
        enosys("ustat", libc::SYS_ustat, Never),
        enosys("sysfs", libc::SYS_sysfs, Never),
        enosys("_sysctl", libc::SYS__sysctl, Never),
        // Gone from the C library's tables too: x86_64's numbers.
        enosys("create_module", 174, Never),
        enosys("get_kernel_syms", 177, Never),
        enosys("query_module", 178, Never),
        enosys("getpmsg", libc::SYS_getpmsg, Never),
        enosys("putpmsg", libc::SYS_putpmsg, Never),
        enosys("afs_syscall", libc::SYS_afs_syscall, Never),
        enosys("tuxcall", libc::SYS_tuxcall, Never),
        enosys("security", libc::SYS_security, Never),
        enosys("vserver", libc::SYS_vserver, Never),
    ]);
    t
}

/// The personas `personality(2)` may set (Docker's choice): Linux, 32-bit Linux, the 2.6 version number, both,
/// and 0xffffffff, which only asks. The others switch on little-used kernel paths (other systems' emulation).
const PERSONAS: &[u64] = &[0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `TIOCSTI` pushes input into a terminal as if typed there. `vserver enter` and `exec` hand the command the
/// caller's terminal: a process inside could type commands into the operator's shell on the host.
const TIOCSTI: u64 = 0x5412; // asm-generic/ioctls.h: the same on x86_64 and aarch64

/// ioctl requests that change a file's project id or its project-inherit flag: with LIMIT_DISK, root inside
/// could move its files out of the vserver's project quota with them (the kernel lets root of the initial
/// user namespace change the project id). `file_setattr`, which does the same by path, is refused always.
const PROJECT_IOCTLS: &[u64] = &[
    0x401c_5820, // FS_IOC_FSSETXATTR
    0x4008_6602, // FS_IOC_SETFLAGS
    0x4004_6602, // FS_IOC32_SETFLAGS
];

/// Namespace flags of clone(2) that make a new context.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

fn arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH.try_into().map_err(|_| SeccompError::Arch(std::env::consts::ARCH))
}

/// The calls the default profile refuses for `spec` whatever their arguments, by name, with the answer.
/// Calls refused only for some arguments (`clone` and `unshare` with CLONE_NEWUSER, `socket` of AF_VSOCK,
/// `personality`, `ioctl` TIOCSTI and, with LIMIT_DISK, the project ioctls) are not listed.
pub fn refused_calls(spec: &ContextSpec) -> BTreeMap<&'static str, Answer> {
    refusals(spec).into_iter().map(|r| (r.name, r.answer)).collect()
}

fn refusals(spec: &ContextSpec) -> Vec<Refusal> {
    let caps: Vec<Cap> = spec.capabilities().into_iter().map(|c| c.raw()).collect();
    let holds = |allowing: &[Cap]| allowing.iter().any(|c| caps.contains(c));
    let mut out: Vec<Refusal> = table()
        .into_iter()
        .filter(|r| match r.unless {
            Unless::Never => true,
            Unless::Cap(allowing) => !holds(allowing),
            Unless::CapOrUserns(allowing) => !holds(allowing) && !spec.relaxed.userns,
        })
        .collect();
    if !spec.relaxed.userns {
        out.push(enosys("clone3", libc::SYS_clone3, Unless::Never));
    }
    out
}

/// A condition on argument `arg`, compared as `len`.
fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

/// A rule matching calls whose argument `arg` has every bit of `flag` set.
fn flag_rule(arg: u8, flag: u64) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(vec![cond(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?])?)
}

/// Rules matching calls whose argument `arg`, an `int` (its low 32 bits are what the kernel reads), is one of
/// `values`.
fn int_is_one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SeccompError> {
    values
        .iter()
        .map(|&v| Ok(SeccompRule::new(vec![cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?])?))
        .collect()
}

/// A rule matching calls whose `int` argument `arg` is none of `values`.
fn int_is_none_of(arg: u8, values: &[u64]) -> Result<SeccompRule, SeccompError> {
    let conds = values
        .iter()
        .map(|&v| cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SeccompRule::new(conds)?)
}

/// Compiles `rules` (no rule for a call: always matched) into a program answering `answer` when one matches
/// and allowing everything else.
fn program(rules: BTreeMap<i64, Vec<SeccompRule>>, answer: Answer) -> Result<BpfProgram, SeccompError> {
    let errno = SeccompAction::Errno(answer.errno() as u32);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, errno, arch()?)?;
    Ok(BpfProgram::try_from(filter)?)
}

/// The programs of the default profile for `spec`, in installation order: the EPERM refusals, then the ENOSYS
/// ones with every call newer than [`HIGHEST_KNOWN`].
pub fn default_programs(spec: &ContextSpec) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut enosys = Vec::new();
    for r in refusals(spec) {
        match r.answer {
            Answer::Eperm => {
                eperm.insert(r.nr, Vec::new());
            }
            Answer::Enosys => enosys.push(r.nr as u32),
        }
    }
    if !spec.relaxed.userns {
        let newuser = libc::CLONE_NEWUSER as u64;
        eperm.insert(libc::SYS_unshare, vec![flag_rule(0, newuser)?]);
        eperm.insert(libc::SYS_clone, vec![flag_rule(0, newuser)?]);
    }
    // vsock reaches the hypervisor's and the host's vsock services, which no namespace separates.
    eperm.insert(libc::SYS_socket, int_is_one_of(0, &[libc::AF_VSOCK as u64])?);
    eperm.insert(libc::SYS_personality, vec![int_is_none_of(0, PERSONAS)?]);
    let mut ioctls = vec![TIOCSTI];
    if spec.limits.disk.is_some() {
        ioctls.extend_from_slice(PROJECT_IOCTLS);
    }
    eperm.insert(libc::SYS_ioctl, int_is_one_of(1, &ioctls)?);
    Ok(vec![program(eperm, Answer::Eperm)?, enosys_program(&enosys)?])
}

/// The program answering ENOSYS for the calls `numbers` and every number above [`HIGHEST_KNOWN`], allowing
/// the rest. Written here because seccompiler compiles calls one by one and has no ranges; it looks at the
/// number only, so the kernel caches its answer per call. The numbers are merged into ranges, checked in
/// ascending order: a number below a range is below all that follow, and allowed at once (the calls made most
/// often have low numbers, and seccompiler's list would walk every entry for them).
///
/// ```text
/// 0      ld  arch
/// 1      jeq native     ; skip the kill
/// 2      ret KILL_PROCESS (another architecture, as seccompiler's programs do)
/// 3      ld  nr
/// 4      jgt HIGHEST_KNOWN ? next : skip one
/// 5      ret ERRNO(ENOSYS)
///        for each range lo..=hi, ascending (three instructions):
///        jge lo ? next : jump to the final ret ALLOW
///        jgt hi ? skip one (the next range) : next
///        ret ERRNO(ENOSYS)
/// last   ret ALLOW
/// ```
fn enosys_program(numbers: &[u32]) -> Result<BpfProgram, SeccompError> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    // Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    // AUDIT_ARCH_* of linux/audit.h: the ELF machine, 64-bit, little-endian.
    const AUDIT_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;
    let audit_arch = match arch()? {
        TargetArch::x86_64 => 62 | AUDIT_64BIT_LE,
        TargetArch::aarch64 => 183 | AUDIT_64BIT_LE,
    };
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for n in sorted {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => ranges.push((n, n)),
        }
    }
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, audit_arch),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
        insn(JGT_K, 0, 1, HIGHEST_KNOWN),
        insn(RET_K, 0, 0, ENOSYS),
    ];
    let n = ranges.len();
    for (i, (lo, hi)) in ranges.into_iter().enumerate() {
        // From the instruction after this jge to the final ret ALLOW: the rest of this range's three, and
        // three for each later range.
        let to_allow = u8::try_from(2 + 3 * (n - i - 1)).map_err(|_| SeccompError::TooManyRanges(n))?;
        p.push(insn(JGE_K, 0, to_allow, lo));
        p.push(insn(JGT_K, 1, 0, hi));
        p.push(insn(RET_K, 0, 0, ENOSYS));
    }
    p.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    Ok(p)
}

/// The programs of `S_FLAGS lock`: EPERM for namespace calls, ENOSYS for clone3.
pub fn lock_programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let clone_rules = NAMESPACE_FLAGS.iter().map(|&flag| flag_rule(0, flag)).collect::<Result<Vec<_>, _>>()?;
    let mut deny = BTreeMap::new();
    deny.insert(libc::SYS_unshare, vec![]);
    deny.insert(libc::SYS_setns, vec![]);
    deny.insert(libc::SYS_clone, clone_rules);
    let mut nosys = BTreeMap::new();
    nosys.insert(libc::SYS_clone3, vec![]);
    Ok(vec![program(deny, Answer::Eperm)?, program(nosys, Answer::Enosys)?])
}

/// The programs `spec` asks for, in installation order: the default profile unless S_UNSAFE `seccomp`, then
/// those of `S_FLAGS lock`.
pub fn programs(spec: &ContextSpec) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut out = Vec::new();
    if !spec.relaxed.seccomp {
        out.extend(default_programs(spec)?);
    }
    if spec.flags.lock {
        out.extend(lock_programs()?);
    }
    Ok(out)
}

/// Installs the filters of `spec` on the calling process, which must still hold CAP_SYS_ADMIN: process 1 of
/// the context and every command run inside, before they drop their capabilities. All are built before the
/// first is installed.
pub fn apply(sys: &dyn Syscall, spec: &ContextSpec) -> Result<(), SeccompError> {
    for program in programs(spec)? {
        sys.install_seccomp_filter(&program)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_capability, Relaxed};
    use crate::syscall::{Call, LinuxSyscall, RecordingSyscall};

    fn spec() -> ContextSpec {
        ContextSpec::sample()
    }

    fn with_caps(names: &[&str]) -> ContextSpec {
        let mut s = spec();
        s.extra_caps = names.iter().map(|n| parse_capability(n).unwrap()).collect();
        s
    }

    fn relaxed(f: impl FnOnce(&mut Relaxed)) -> ContextSpec {
        let mut s = spec();
        f(&mut s.relaxed);
        s
    }

    /// What the kernel does with a call, all filters considered.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(i32),
        Kill,
    }

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

    fn native_arch() -> u32 {
        if cfg!(target_arch = "aarch64") {
            AUDIT_ARCH_AARCH64
        } else {
            AUDIT_ARCH_X86_64
        }
    }

    /// Runs one classic BPF program on `struct seccomp_data` (nr, arch, instruction pointer, six arguments),
    /// knowing the instructions seccompiler and [`enosys_program`] use; any other one fails the test.
    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let code = |c: u32| c as u16;
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                c if c == code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) => {
                    let k = i.k as usize;
                    assert!(k.is_multiple_of(4) && k + 4 <= data.len(), "load out of seccomp_data at {k}");
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                c if c == code(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) => a &= i.k,
                c if c == code(libc::BPF_JMP | libc::BPF_JA) => pc += i.k as usize,
                c if c == code(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) => pc += jump(a == i.k),
                c if c == code(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) => pc += jump(a > i.k),
                c if c == code(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) => pc += jump(a >= i.k),
                c if c == code(libc::BPF_RET | libc::BPF_K) => return i.k,
                other => panic!("instruction code {other:#x} unknown to the test's interpreter"),
            }
        }
    }

    /// The kernel's rule for a stack of filters: every one runs; the action of highest precedence wins
    /// (kill before errno before allow), and among equals the filter installed last.
    fn verdict_of(programs: &[BpfProgram], nr: u32, arch: u32, args: [u64; 6]) -> Verdict {
        let action_only = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
        let mut best = libc::SECCOMP_RET_ALLOW;
        for p in programs.iter().rev() {
            let r = run(p, nr, arch, args);
            if action_only(r) < action_only(best) {
                best = r;
            }
        }
        match best & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_ALLOW => Verdict::Allow,
            libc::SECCOMP_RET_ERRNO => Verdict::Errno((best & libc::SECCOMP_RET_DATA) as i32),
            libc::SECCOMP_RET_KILL_PROCESS => Verdict::Kill,
            other => panic!("unexpected action {other:#x}"),
        }
    }

    fn verdict(spec: &ContextSpec, nr: i64, args: &[u64]) -> Verdict {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        verdict_of(&programs(spec).unwrap(), nr as u32, native_arch(), all)
    }

    const EPERM: Verdict = Verdict::Errno(libc::EPERM);
    const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS);

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_default_profile_refuses_exactly_these_calls() {
        let eperm = [
            "acct",
            "add_key",
            "bpf",
            "clock_settime",
            "delete_module",
            "fanotify_init",
            "finit_module",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "get_mempolicy",
            "init_module",
            "io_uring_enter",
            "io_uring_register",
            "io_uring_setup",
            "ioperm",
            "iopl",
            "kcmp",
            "kexec_file_load",
            "kexec_load",
            "keyctl",
            "lookup_dcookie",
            "mbind",
            "migrate_pages",
            "mount",
            "mount_setattr",
            "move_mount",
            "move_pages",
            "open_by_handle_at",
            "open_tree",
            "open_tree_attr",
            "perf_event_open",
            "pidfd_getfd",
            "pivot_root",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "quotactl",
            "quotactl_fd",
            "request_key",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "setdomainname",
            "sethostname",
            "setns",
            "settimeofday",
            "swapoff",
            "swapon",
            "syslog",
            "umount2",
            "userfaultfd",
            "vhangup",
        ];
        let enosys = [
            "_sysctl",
            "afs_syscall",
            "clone3",
            "create_module",
            "file_getattr",
            "file_setattr",
            "get_kernel_syms",
            "getpmsg",
            "getxattrat",
            "listmount",
            "listxattrat",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mseal",
            "nfsservctl",
            "putpmsg",
            "query_module",
            "removexattrat",
            "security",
            "setxattrat",
            "statmount",
            "sysfs",
            "tuxcall",
            "uselib",
            "ustat",
            "vserver",
        ];
        let expected: BTreeMap<&str, Answer> =
            eperm.iter().map(|n| (*n, Answer::Eperm)).chain(enosys.iter().map(|n| (*n, Answer::Enosys))).collect();
        assert_eq!(refused_calls(&spec()), expected);
        // The calls Docker's profile lets a default container make that the kernel itself allows, and which
        // stay allowed here (reboot: CAP_SYS_BOOT is in the default set, and a PID namespace confines it).
        for (name, nr) in [
            ("reboot", libc::SYS_reboot),
            ("ptrace", libc::SYS_ptrace),
            ("chroot", libc::SYS_chroot),
            ("adjtimex", libc::SYS_adjtimex),
            ("clock_adjtime", libc::SYS_clock_adjtime),
            ("name_to_handle_at", libc::SYS_name_to_handle_at),
            ("seccomp", libc::SYS_seccomp),
        ] {
            assert_eq!(verdict(&spec(), nr, &[]), Verdict::Allow, "{name}");
        }
    }

    #[test]
    fn the_programs_answer_what_the_list_says_for_every_number() {
        let disk = {
            let mut s = spec();
            s.limits.disk = Some(1 << 30);
            s
        };
        let all_caps = {
            let mut s = spec();
            s.extra_caps = caps::all().into_iter().map(crate::spec::Capability).collect();
            s
        };
        for s in [spec(), all_caps, relaxed(|r| r.userns = true), disk] {
            let programs = programs(&s).unwrap();
            let listed: BTreeMap<i64, Answer> = refusals(&s).into_iter().map(|r| (r.nr, r.answer)).collect();
            for nr in 0..=HIGHEST_KNOWN + 64 {
                let expected = match listed.get(&(nr as i64)) {
                    Some(answer) => Verdict::Errno(answer.errno()),
                    None if nr > HIGHEST_KNOWN => ENOSYS,
                    None => Verdict::Allow,
                };
                assert_eq!(verdict_of(&programs, nr, native_arch(), [0; 6]), expected, "call {nr}");
            }
        }
    }

    #[test]
    fn calls_follow_the_capabilities_but_kexec_the_keyring_and_io_uring_never() {
        let cases: &[(&str, &[(&str, i64)])] = &[
            ("CAP_SYS_TIME", &[("settimeofday", libc::SYS_settimeofday), ("clock_settime", libc::SYS_clock_settime)]),
            (
                "CAP_SYS_ADMIN",
                &[
                    ("mount", libc::SYS_mount),
                    ("umount2", libc::SYS_umount2),
                    ("pivot_root", libc::SYS_pivot_root),
                    ("fsopen", libc::SYS_fsopen),
                    ("open_tree_attr", newer::OPEN_TREE_ATTR),
                    ("statmount", newer::STATMOUNT),
                    ("bpf", libc::SYS_bpf),
                    ("perf_event_open", libc::SYS_perf_event_open),
                    ("syslog", libc::SYS_syslog),
                    ("setns", libc::SYS_setns),
                    ("swapon", libc::SYS_swapon),
                ],
            ),
            (
                "CAP_SYS_MODULE",
                &[
                    ("init_module", libc::SYS_init_module),
                    ("finit_module", libc::SYS_finit_module),
                    ("delete_module", libc::SYS_delete_module),
                ],
            ),
            ("CAP_DAC_READ_SEARCH", &[("open_by_handle_at", libc::SYS_open_by_handle_at)]),
            ("CAP_SYSLOG", &[("syslog", libc::SYS_syslog)]),
            ("CAP_BPF", &[("bpf", libc::SYS_bpf)]),
            ("CAP_PERFMON", &[("perf_event_open", libc::SYS_perf_event_open)]),
            (
                "CAP_SYS_PTRACE",
                &[
                    ("process_vm_readv", libc::SYS_process_vm_readv),
                    ("process_vm_writev", libc::SYS_process_vm_writev),
                    ("kcmp", libc::SYS_kcmp),
                    ("pidfd_getfd", libc::SYS_pidfd_getfd),
                    ("userfaultfd", libc::SYS_userfaultfd),
                ],
            ),
            ("CAP_SYS_PACCT", &[("acct", libc::SYS_acct)]),
            ("CAP_SYS_NICE", &[("mbind", libc::SYS_mbind), ("move_pages", libc::SYS_move_pages)]),
            ("CAP_SYS_TTY_CONFIG", &[("vhangup", libc::SYS_vhangup)]),
        ];
        for (cap, calls) in cases {
            for (name, nr) in *calls {
                assert_ne!(verdict(&spec(), *nr, &[]), Verdict::Allow, "{name} is refused by default");
                assert_eq!(verdict(&with_caps(&[cap]), *nr, &[]), Verdict::Allow, "{name} is allowed with {cap}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [libc::SYS_iopl, libc::SYS_ioperm] {
            assert_eq!(verdict(&spec(), nr, &[]), EPERM);
            assert_eq!(verdict(&with_caps(&["CAP_SYS_RAWIO"]), nr, &[]), Verdict::Allow);
        }
        // Another capability opens nothing of the kind.
        assert_eq!(verdict(&with_caps(&["CAP_NET_RAW"]), libc::SYS_mount, &[]), EPERM);
        let mut everything = spec();
        everything.extra_caps = caps::all().into_iter().map(crate::spec::Capability).collect();
        for nr in [
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            assert_eq!(verdict(&everything, nr, &[]), EPERM, "call {nr} with every capability");
        }
    }

    #[test]
    fn user_namespaces_are_refused_unless_s_unsafe_userns() {
        let newuser = libc::CLONE_NEWUSER as u64;
        let newns = libc::CLONE_NEWNS as u64;
        let sigchld = libc::SIGCHLD as u64;
        let default = spec();
        assert_eq!(verdict(&default, libc::SYS_unshare, &[newuser]), EPERM);
        assert_eq!(verdict(&default, libc::SYS_unshare, &[newuser | newns]), EPERM);
        assert_eq!(verdict(&default, libc::SYS_clone, &[newuser | sigchld]), EPERM);
        assert_eq!(verdict(&default, libc::SYS_clone3, &[]), ENOSYS, "the C library falls back to clone");
        assert_eq!(verdict(&default, libc::SYS_setns, &[]), EPERM);
        // Other namespaces need CAP_SYS_ADMIN, which the kernel checks: fork and threads go through.
        assert_eq!(verdict(&default, libc::SYS_unshare, &[newns]), Verdict::Allow);
        assert_eq!(verdict(&default, libc::SYS_clone, &[sigchld]), Verdict::Allow);
        assert_eq!(verdict(&default, libc::SYS_clone, &[0x003d_0f00]), Verdict::Allow, "a thread");

        let userns = relaxed(|r| r.userns = true);
        for (nr, args) in [
            (libc::SYS_unshare, vec![newuser]),
            (libc::SYS_clone, vec![newuser | sigchld]),
            (libc::SYS_clone3, vec![]),
            (libc::SYS_setns, vec![]),
        ] {
            assert_eq!(verdict(&userns, nr, &args), Verdict::Allow, "call {nr} with S_UNSAFE userns");
        }
        // The rest of the profile stays.
        assert_eq!(verdict(&userns, libc::SYS_mount, &[]), EPERM);
    }

    #[test]
    fn calls_newer_than_the_profile_answer_enosys_and_other_architectures_are_killed() {
        // The hand-written program alone, for a few sets of numbers: each number answers as it should.
        for set in [vec![], vec![7], vec![5, 6, 7, 10, 12, 13, HIGHEST_KNOWN], vec![0, 1, 2, 300, 302, 9, 8]] {
            let program = [enosys_program(&set).unwrap()];
            for nr in (0..=HIGHEST_KNOWN + 40).chain([u32::MAX, 0x4000_0000 | 39]) {
                let want = if set.contains(&nr) || nr > HIGHEST_KNOWN { ENOSYS } else { Verdict::Allow };
                assert_eq!(verdict_of(&program, nr, native_arch(), [0; 6]), want, "call {nr} with {set:?}");
            }
            assert_eq!(verdict_of(&program, 20, AUDIT_ARCH_I386, [0; 6]), Verdict::Kill, "i386 with {set:?}");
        }
        // 85 separate ranges fit the jumps; 86 do not, and say so.
        let every_other = |n: u32| (0..n).map(|i| 2 * i).collect::<Vec<u32>>();
        let program = [enosys_program(&every_other(85)).unwrap()];
        assert_eq!(verdict_of(&program, 168, native_arch(), [0; 6]), ENOSYS);
        assert_eq!(verdict_of(&program, 169, native_arch(), [0; 6]), Verdict::Allow);
        assert!(matches!(enosys_program(&every_other(86)), Err(SeccompError::TooManyRanges(86))));

        let default = spec();
        assert_eq!(verdict(&default, HIGHEST_KNOWN as i64 + 1, &[]), ENOSYS);
        assert_eq!(verdict(&default, 1000, &[]), ENOSYS);
        // x32 numbers carry bit 30 under x86_64's own audit architecture: above every known call.
        const X32: i64 = 0x4000_0000;
        assert_eq!(verdict(&default, X32 | libc::SYS_keyctl, &[]), ENOSYS);
        assert_eq!(verdict(&default, X32 | libc::SYS_getpid, &[]), ENOSYS);
        // The newer calls Docker's profile allows stay allowed.
        for nr in [451, 452, 453, 454, 455, 456] {
            assert_eq!(verdict(&default, nr, &[]), Verdict::Allow, "call {nr}");
        }
        let programs = programs(&default).unwrap();
        assert_eq!(verdict_of(&programs, libc::SYS_getpid as u32, AUDIT_ARCH_I386, [0; 6]), Verdict::Kill);
    }

    #[test]
    fn arguments_are_read_as_the_kernel_reads_them() {
        let default = spec();
        let vsock = libc::AF_VSOCK as u64;
        assert_eq!(verdict(&default, libc::SYS_socket, &[vsock, libc::SOCK_STREAM as u64]), EPERM);
        // socket takes an int: the kernel never sees the high bits.
        assert_eq!(verdict(&default, libc::SYS_socket, &[(1 << 32) | vsock]), EPERM);
        for family in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX, libc::AF_NETLINK, libc::AF_PACKET] {
            assert_eq!(verdict(&default, libc::SYS_socket, &[family as u64]), Verdict::Allow, "family {family}");
        }

        for persona in PERSONAS {
            assert_eq!(verdict(&default, libc::SYS_personality, &[*persona]), Verdict::Allow, "{persona:#x}");
        }
        assert_eq!(verdict(&default, libc::SYS_personality, &[1 << 32]), Verdict::Allow, "the kernel reads 0");
        const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
        assert_eq!(verdict(&default, libc::SYS_personality, &[ADDR_NO_RANDOMIZE]), EPERM);

        assert_eq!(verdict(&default, libc::SYS_ioctl, &[0, TIOCSTI]), EPERM);
        assert_eq!(verdict(&default, libc::SYS_ioctl, &[0, (0xffff_ffff << 32) | TIOCSTI]), EPERM);
        assert_eq!(verdict(&default, libc::SYS_ioctl, &[0, 0x5401]), Verdict::Allow, "TCGETS");
        for req in PROJECT_IOCTLS {
            assert_eq!(verdict(&default, libc::SYS_ioctl, &[3, *req]), Verdict::Allow, "{req:#x} without LIMIT_DISK");
        }
        assert_eq!(verdict(&default, newer::FILE_SETATTR, &[]), ENOSYS, "the ioctls serve");

        let mut disk = spec();
        disk.limits.disk = Some(1 << 30);
        for req in PROJECT_IOCTLS {
            assert_eq!(verdict(&disk, libc::SYS_ioctl, &[3, *req]), EPERM, "{req:#x} with LIMIT_DISK");
        }
        assert_eq!(verdict(&disk, libc::SYS_ioctl, &[3, 0x801c_581f]), Verdict::Allow, "FS_IOC_FSGETXATTR reads");
    }

    #[test]
    fn lock_installs_its_own_programs_on_top_of_the_profile_or_alone() {
        let newnet = libc::CLONE_NEWNET as u64;
        let mut locked = spec();
        locked.flags.lock = true;
        assert_eq!(programs(&spec()).unwrap().len(), 2);
        assert_eq!(programs(&locked).unwrap().len(), 4);
        assert_eq!(verdict(&locked, libc::SYS_clone, &[newnet]), EPERM);
        assert_eq!(verdict(&locked, libc::SYS_keyctl, &[]), EPERM);

        let mut unfiltered = relaxed(|r| r.seccomp = true);
        assert!(programs(&unfiltered).unwrap().is_empty(), "S_UNSAFE seccomp: no filter at all");
        unfiltered.flags.lock = true;
        assert_eq!(programs(&unfiltered).unwrap().len(), 2);
        assert_eq!(verdict(&unfiltered, libc::SYS_setns, &[]), EPERM);
        assert_eq!(verdict(&unfiltered, libc::SYS_unshare, &[newnet]), EPERM);
        assert_eq!(verdict(&unfiltered, libc::SYS_clone3, &[]), ENOSYS);
        assert_eq!(verdict(&unfiltered, libc::SYS_keyctl, &[]), Verdict::Allow, "only the lock");
        assert_eq!(verdict(&unfiltered, libc::SYS_clone, &[libc::SIGCHLD as u64]), Verdict::Allow);
    }

    #[test]
    fn apply_installs_every_program_in_order() {
        let mut locked = spec();
        locked.flags.lock = true;
        for s in [spec(), locked, relaxed(|r| r.seccomp = true)] {
            let sys = RecordingSyscall::default();
            apply(&sys, &s).unwrap();
            let expected: Vec<Call> = programs(&s).unwrap().into_iter().map(Call::InstallSeccompFilter).collect();
            assert_eq!(sys.calls(), expected);
        }
    }

    /// The kernel takes the programs (one is written by hand) and answers as the interpreter says: in a
    /// forked child, with no_new_privs so that no privilege is needed.
    #[test]
    fn the_kernel_accepts_the_profile_and_answers_as_it_says() {
        let programs = default_programs(&spec()).unwrap();
        // SAFETY: the child only makes system calls and leaves with _exit; glibc's malloc stays usable after fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let errno = |rc: libc::c_long| if rc < 0 { nix::errno::Errno::last_raw() } else { 0 };
                let code = (|| {
                    // SAFETY: plain prctl(2) on the calling process.
                    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                        return 10;
                    }
                    for p in &programs {
                        if LinuxSyscall.install_seccomp_filter(p).is_err() {
                            return 11;
                        }
                    }
                    let checks: [(libc::c_long, [libc::c_long; 2], i32); 5] = [
                        (libc::SYS_keyctl, [0, -4], libc::EPERM),
                        (libc::SYS_unshare, [libc::CLONE_NEWUSER as libc::c_long, 0], libc::EPERM),
                        (libc::SYS_clone3, [0, 0], libc::ENOSYS),
                        (HIGHEST_KNOWN as libc::c_long + 1, [0, 0], libc::ENOSYS),
                        (libc::SYS_getppid, [0, 0], 0),
                    ];
                    for (i, (nr, [a, b], want)) in checks.into_iter().enumerate() {
                        // SAFETY: every call is refused by the filter or, getppid, takes no argument.
                        let rc = unsafe { libc::syscall(nr, a, b) };
                        if errno(rc) != want {
                            return 20 + i as i32;
                        }
                    }
                    0
                })();
                // SAFETY: _exit ends the forked child without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "see the codes in the child");
            }
        }
    }
}
