//! Starting and stopping a context.
//!
//! Start forks a launcher that joins the vserver's cgroups and unshares the mount, PID, IPC, UTS (and, with
//! IPROOT, network) namespaces. The host side then lends the launcher's network namespace its interfaces,
//! and the launcher forks process 1 of the new PID namespace and exits, so the context is re-parented away
//! from the command that started it. Process 1 builds the file system (`rootfs`), names, limits, the lock
//! filter and the capability ceiling, then either execs the vserver's `/sbin/init` (`fakeinit`) or stays as
//! a minimal reaper (`vinit`) that adopts orphans. Progress travels back on a pipe as text lines, so every
//! failure inside reaches the operator as a sentence and nothing is left half built.
//!
//! Stop sends SIGTERM to every process of the cgroup, waits for the grace period, then kills whatever is
//! left with `cgroup.kill` (or freeze-and-kill where the kernel lacks it), and removes the cgroups.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

use crate::cgroup::{CgroupError, CgroupLimits, Cgroups};
use crate::network::{self, NetworkError};
use crate::spec::{ContextSpec, Network, Resource, Rlimit, VserverName};
use crate::state::{self, RunState, StateError};
use crate::syscall::LinuxSyscall;
use crate::{capabilities, rootfs, seccomp};

/// Environment given to the vserver's init and to commands run inside.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starting, stopping or entering a context failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The vserver already runs.
    #[error("vserver {0} is already running")]
    AlreadyRunning(VserverName),
    /// Processes of the vserver run without a record of their start (left over from a crash).
    #[error("vserver {name} has {count} processes in its cgroup but no run state; `vserver {name} stop` ends them")]
    Stray {
        /// The vserver.
        name: VserverName,
        /// How many processes.
        count: usize,
    },
    /// The vserver does not run.
    #[error("vserver {0} is not running")]
    NotRunning(VserverName),
    /// Contexts are built by forking; that is only safe from a single-threaded process.
    #[error("contexts must be started from a single-threaded process (this one has {0} threads)")]
    MultiThreaded(usize),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Setting up the addresses failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The tree's disk quota (LIMIT_DISK) could not be set.
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaError),
    /// The run state could not be kept.
    #[error(transparent)]
    State(#[from] StateError),
    /// A system call of the launcher failed on the host side.
    #[error("{op}: {errno}")]
    Sys {
        /// The failing call.
        op: &'static str,
        /// The OS error.
        errno: nix::Error,
    },
    /// The console log could not be opened.
    #[error("cannot open console log {path}: {source}")]
    Console {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step inside the new context failed; the message comes from inside.
    #[error("vserver {name}: {step} failed: {reason}")]
    Setup {
        /// The vserver.
        name: VserverName,
        /// Which step.
        step: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where a start keeps its records.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Run-state directory (`/run/vservers`): state files and console logs.
    pub run_dir: PathBuf,
}

/// How a stop proceeds.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Processes that got SIGTERM.
    pub signalled: usize,
    /// Processes still there after the grace period and killed.
    pub killed: usize,
}

fn sys(op: &'static str) -> impl Fn(nix::Error) -> ContextError {
    move |errno| ContextError::Sys { op, errno }
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().unwrap_or(1))))
        .unwrap_or(1)
}

/// Path of the console log of a vserver: what its process 1 and daemons print.
pub fn console_path(run_dir: &std::path::Path, name: &VserverName) -> PathBuf {
    run_dir.join(format!("{name}.console"))
}

/// Starts a context for `spec` and records it. Must be called from a single-threaded process.
pub fn start(spec: &ContextSpec, opts: &StartOptions) -> Result<RunState, ContextError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(ContextError::MultiThreaded(threads));
    }
    if let Some(st) = RunState::load(&opts.run_dir, &spec.name)? {
        if st.init_alive() {
            return Err(ContextError::AlreadyRunning(spec.name.clone()));
        }
        RunState::remove(&opts.run_dir, &spec.name)?;
    }
    let cg = Cgroups::new(&spec.cgroup, &spec.name)?;
    let stray = cg.procs()?.len();
    if stray > 0 {
        return Err(ContextError::Stray { name: spec.name.clone(), count: stray });
    }
    // The disk quota first: a tree whose file system cannot have one refuses before any group exists.
    crate::quota::apply(&spec.root, spec.limits.disk)?;
    if let Err(e) = cg.create(&CgroupLimits::from(spec)) {
        // A limit the host cannot enforce refuses the start: leave no group behind.
        let _ = cg.remove();
        return Err(e.into());
    }
    match launch(spec, &cg, opts) {
        Ok(st) => Ok(st),
        Err(e) => {
            let _ = cg.kill();
            let _ = cg.wait_empty(Duration::from_secs(5));
            let _ = cg.remove();
            let _ = RunState::remove(&opts.run_dir, &spec.name);
            Err(e)
        }
    }
}

fn launch(spec: &ContextSpec, cg: &Cgroups, opts: &StartOptions) -> Result<RunState, ContextError> {
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(|source| ContextError::Console { path: opts.run_dir.clone(), source })?;
    let console_file = console_path(&opts.run_dir, &spec.name);
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&console_file)
        .map_err(|source| ContextError::Console { path: console_file.clone(), source })?;
    let (up_r, up_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (down_r, down_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;

    // SAFETY: the process is single-threaded (checked by `start`), so the child may run ordinary code.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(up_r);
            drop(down_w);
            let mut up = File::from(up_w);
            let code = match launcher(spec, cg, &mut up, File::from(down_r), console) {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = report(&mut up, &format!("error {msg}"));
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(up_w);
            drop(down_r);
            let result = supervise(spec, child, up_r, down_w);
            let _ = nix::sys::wait::waitpid(child, None);
            let init_pid = result?;
            let st = RunState {
                spec: spec.clone(),
                init_pid,
                init_start_ticks: state::process_start_ticks(init_pid).ok_or_else(|| ContextError::Setup {
                    name: spec.name.clone(),
                    step: "process 1".into(),
                    reason: format!("exited right after start; see {}", console_file.display()),
                })?,
                started_unix_ms: state::now_ms(),
            };
            st.save(&opts.run_dir)?;
            Ok(st)
        }
    }
}

/// Host side of the start: answers the launcher, configures the network, collects process 1's pid.
fn supervise(spec: &ContextSpec, launcher: Pid, up_r: OwnedFd, down_w: OwnedFd) -> Result<i32, ContextError> {
    let setup_err =
        |step: &str, reason: String| ContextError::Setup { name: spec.name.clone(), step: step.to_string(), reason };
    let mut lines = BufReader::new(File::from(up_r)).lines();
    let mut down = File::from(down_w);
    match lines.next() {
        Some(Ok(l)) if l == "unshared" => {}
        Some(Ok(l)) => {
            return Err(parse_error(&l).map_or_else(|| setup_err("launcher", l.clone()), |(s, r)| setup_err(&s, r)))
        }
        _ => return Err(setup_err("launcher", "ended before creating the namespaces".into())),
    }
    if let Network::Private(ifaces) = &spec.network {
        // Dropping `down` without "go" makes the launcher give up.
        network::configure(ifaces, launcher.as_raw())?;
    }
    down.write_all(b"go\n").map_err(|e| setup_err("launcher", e.to_string()))?;
    drop(down);
    let mut init_pid = None;
    let mut failure = None;
    for line in lines.map_while(Result::ok) {
        if let Some(pid) = line.strip_prefix("pid ") {
            init_pid = pid.parse().ok();
        } else if let Some((step, reason)) = parse_error(&line) {
            failure.get_or_insert((step, reason));
        }
    }
    if let Some((step, reason)) = failure {
        return Err(setup_err(&step, reason));
    }
    init_pid.ok_or_else(|| setup_err("launcher", "ended without starting process 1".into()))
}

/// Lines `error STEP: REASON` sent by the launcher or process 1.
fn parse_error(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("error ")?;
    Some(match rest.split_once(": ") {
        Some((s, r)) => (s.to_string(), r.to_string()),
        None => ("setup".to_string(), rest.to_string()),
    })
}

/// Sends one line to the host in a single write(2): the launcher and process 1 share the pipe, and lines
/// written in pieces would interleave.
fn report(up: &mut File, line: &str) -> std::io::Result<()> {
    up.write_all(format!("{line}\n").as_bytes())
}

fn step<T, E: std::fmt::Display>(name: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{name}: {e}"))
}

/// The launcher: first child, still in the host's PID namespace.
fn launcher(spec: &ContextSpec, cg: &Cgroups, up: &mut File, down: File, console: File) -> Result<(), String> {
    step("setsid", nix::unistd::setsid())?;
    step("join cgroup", cg.add_process(std::process::id() as i32))?;
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if matches!(spec.network, Network::Private(_)) {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    step("unshare", nix::sched::unshare(flags))?;
    step("report", report(up, "unshared"))?;
    let mut go = String::new();
    let _ = BufReader::new(down).read_line(&mut go);
    if go.trim() != "go" {
        // The host side failed (and says why); leave quietly.
        // SAFETY: _exit ends the forked child without running destructors.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: still single-threaded (a fork of a single-threaded process).
    match step("fork process 1", unsafe { nix::unistd::fork() })? {
        ForkResult::Child => {
            let err = match init(spec, up, console) {
                Err(msg) => msg,
                Ok(never) => match never {},
            };
            let _ = report(up, &format!("error {err}"));
            // SAFETY: _exit ends the forked child without running destructors.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            step("report", report(up, &format!("pid {child}")))?;
            Ok(())
        }
    }
}

/// The name process 1 of a context shows in `ps` when the vserver has no init of its own.
pub const INIT_NAME: &str = "vinit";

/// Makes the calling process non-dumpable, so processes of the context (which lack CAP_SYS_PTRACE) cannot
/// open its `/proc/PID/exe`, the host binary, and write to it once nothing runs it.
pub(crate) fn undumpable() {
    // SAFETY: plain prctl(2) on the calling process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Process 1 of the context. Returns only on failure.
fn init(spec: &ContextSpec, up: &mut File, console: File) -> Result<std::convert::Infallible, String> {
    undumpable();
    step("mount", rootfs::enter_root(&LinuxSyscall, &spec.root))?;
    let hostname = spec.hostname.clone().unwrap_or_else(|| spec.name.to_string());
    step("sethostname", nix::unistd::sethostname(&hostname))?;
    if let Some(d) = &spec.domainname {
        step("setdomainname", crate::syscall::Syscall::setdomainname(&LinuxSyscall, d))?;
    }
    apply_limits(spec)?;
    set_stdio(&console)?;
    drop(console);
    reset_signals();
    if spec.flags.lock {
        step("lock", seccomp::apply_lock())?;
    }
    step("capabilities", capabilities::restrict_to(&LinuxSyscall, &spec.capabilities()))?;
    let env = [format!("PATH={BASE_PATH}"), "TERM=linux".to_string(), "container=vserver".to_string()];
    if spec.flags.fakeinit {
        close_other_fds(up.as_raw_fd());
        let err = exec_program("/sbin/init", &["init".to_string()], &env);
        return Err(format!("exec /sbin/init: {err}"));
    }
    close_other_fds(up.as_raw_fd());
    step("report", report(up, "ready"))?;
    // Closing the pipe tells the host that process 1 is ready.
    // SAFETY: the descriptor belongs to `up`, which is never used or dropped again (reaper never returns).
    unsafe { libc::close(up.as_raw_fd()) };
    reaper()
}

/// Applies ULIMIT and the nice floor to the calling process (inherited by all it starts).
pub(crate) fn apply_limits(spec: &ContextSpec) -> Result<(), String> {
    for l in &spec.rlimits {
        step("setrlimit", set_rlimit(l))?;
    }
    if let Some(n) = spec.nice {
        // SAFETY: plain setpriority(2) on the calling process.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
        step("setpriority", nix::errno::Errno::result(rc))?;
        // RLIMIT_NICE makes 20 - limit the best (lowest) nice reachable: the floor S_NICE. Only ever lower
        // it (raising needs CAP_SYS_RESOURCE); a lower limit is a stricter floor, never a weaker one.
        use nix::sys::resource::{getrlimit, setrlimit, Resource::RLIMIT_NICE};
        let floor = (20 - n) as u64;
        let (soft, hard) = step("getrlimit nice", getrlimit(RLIMIT_NICE))?;
        step("setrlimit nice", setrlimit(RLIMIT_NICE, soft.min(floor), hard.min(floor)))?;
    }
    Ok(())
}

fn set_rlimit(l: &Rlimit) -> nix::Result<()> {
    use nix::sys::resource::Resource as R;
    let r = match l.resource {
        Resource::Core => R::RLIMIT_CORE,
        Resource::Data => R::RLIMIT_DATA,
        Resource::Nice => R::RLIMIT_NICE,
        Resource::FileSize => R::RLIMIT_FSIZE,
        Resource::SigPending => R::RLIMIT_SIGPENDING,
        Resource::MemLock => R::RLIMIT_MEMLOCK,
        Resource::Rss => R::RLIMIT_RSS,
        Resource::NoFile => R::RLIMIT_NOFILE,
        Resource::MsgQueue => R::RLIMIT_MSGQUEUE,
        Resource::RtPrio => R::RLIMIT_RTPRIO,
        Resource::Stack => R::RLIMIT_STACK,
        Resource::Cpu => R::RLIMIT_CPU,
        Resource::NProc => R::RLIMIT_NPROC,
        Resource::As => R::RLIMIT_AS,
        Resource::Locks => R::RLIMIT_LOCKS,
    };
    let (cur_soft, cur_hard) = nix::sys::resource::getrlimit(r)?;
    let val = |v: Option<u64>| v.unwrap_or(libc::RLIM_INFINITY);
    let hard = l.hard.map_or(cur_hard, val);
    let soft = l.soft.map_or(cur_soft, val).min(hard);
    nix::sys::resource::setrlimit(r, soft, hard)
}

/// stdin from the context's /dev/null, stdout and stderr to the console log.
fn set_stdio(console: &File) -> Result<(), String> {
    let null = step("open /dev/null", File::open("/dev/null"))?;
    step("stdin", nix::unistd::dup2(null.as_raw_fd(), 0))?;
    step("stdout", nix::unistd::dup2(console.as_raw_fd(), 1))?;
    step("stderr", nix::unistd::dup2(console.as_raw_fd(), 2))?;
    Ok(())
}

/// Restores default dispositions and an empty mask (the Rust runtime ignores SIGPIPE, which would
/// otherwise be inherited by every program of the vserver).
pub(crate) fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing the default disposition has no handler code to be unsafe.
            let _ = unsafe { sigaction(sig, &dfl) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Closes every descriptor above 2 except `keep`.
fn close_other_fds(keep: i32) {
    for (lo, hi) in [(3, keep - 1), (keep + 1, i32::MAX)] {
        if lo <= hi {
            // SAFETY: close_range(2) only closes descriptors; none of them is used afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32) };
        }
    }
}

/// execve with an explicit environment; returns the error when it fails.
pub(crate) fn exec_program(path: &str, argv: &[String], env: &[String]) -> nix::Error {
    use std::ffi::CString;
    let cs = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = argv.iter().map(|a| cs(a)).collect();
    let env: Vec<CString> = env.iter().map(|a| cs(a)).collect();
    match nix::unistd::execve(&cs(path), &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

extern "C" fn noop(_: libc::c_int) {}

/// Process 1 when the vserver has no init of its own: adopts and reaps orphans, exits on SIGTERM.
fn reaper() -> ! {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    set_cmdline(INIT_NAME);
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGPWR] {
        set.add(s);
        let act = SigAction::new(SigHandler::Handler(noop), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler does nothing; signals are consumed by sigwait below while blocked.
        let _ = unsafe { sigaction(s, &act) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR) => {
                // SAFETY: process 1 leaving ends the context, which is what was asked.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

/// Rewrites the calling process's argument area so `ps` inside shows `name` rather than the command line
/// of the host program that started the context (which may name host paths). The area's bounds come from
/// fields 48 and 49 of /proc/self/stat; changing them instead would need CAP_SYS_RESOURCE.
fn set_cmdline(name: &str) {
    let name_c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, name_c.as_ptr()) };
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    let Some(close) = stat.rfind(')') else { return };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Fields after the command name start at field 3; arg_start is field 48, arg_end field 49.
    let (Some(start), Some(end)) =
        (fields.get(45).and_then(|v| v.parse::<usize>().ok()), fields.get(46).and_then(|v| v.parse::<usize>().ok()))
    else {
        return;
    };
    if end <= start || name.len() >= end - start {
        return;
    }
    // SAFETY: [start, end) is this process's argument area on its own stack, mapped writable for the life
    // of the process; nothing in this process reads the arguments again.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        area.fill(0);
        area[..name.len()].copy_from_slice(name.as_bytes());
    }
}

/// Stops the context of `spec`: SIGTERM to all (process 1 too when it is the vserver's own init), up to
/// `grace` for them to leave, then SIGKILL of the rest through the cgroup, which also catches processes
/// that ignore SIGTERM or forked away from their parents. Removes the cgroups and the run state.
pub fn stop(spec: &ContextSpec, run_dir: &std::path::Path, opts: &StopOptions) -> Result<StopReport, ContextError> {
    let cg = Cgroups::new(&spec.cgroup, &spec.name)?;
    let state = RunState::load(run_dir, &spec.name)?;
    let reaper_pid = state.as_ref().filter(|s| !s.spec.flags.fakeinit && s.init_alive()).map(|s| s.init_pid);
    let except: Vec<i32> = reaper_pid.into_iter().collect();
    let mut report = StopReport::default();
    if cg.exists() {
        report.signalled = cg.signal(Signal::SIGTERM, &except)?;
        let _ = cg.signal(Signal::SIGCONT, &except);
        let deadline = Instant::now() + opts.grace;
        loop {
            let left: Vec<i32> = cg.procs()?.into_iter().filter(|p| !except.contains(p)).collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                report.killed = left.len();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cg.kill()?;
        if !cg.wait_empty(Duration::from_secs(10))? {
            return Err(ContextError::Setup {
                name: spec.name.clone(),
                step: "stop".into(),
                reason: format!("processes remain in {:?} after SIGKILL", cg.paths()),
            });
        }
        cg.remove()?;
    }
    RunState::remove(run_dir, &spec.name)?;
    Ok(report)
}
