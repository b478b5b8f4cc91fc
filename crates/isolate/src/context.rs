//! Starting and stopping a context.
//!
//! Start forks a launcher that joins the vserver's cgroups and unshares the mount, PID, IPC, UTS (and, with
//! IPROOT, network) namespaces. The host side then lends the launcher's network namespace its interfaces,
//! and the launcher forks process 1 of the new PID namespace and exits, so the context is re-parented away
//! from the command that started it. Before anything is built, `preflight` checks that the kernel offers what
//! the spec needs. Process 1 builds the file system (`rootfs`), names, limits, the system call filters
//! (`seccomp`) and the capability ceiling, then either execs the vserver's `/sbin/init` (`fakeinit`) or stays as
//! a minimal reaper (`vinit`) that adopts orphans. Progress travels back on a pipe as text lines, so every
//! failure inside reaches the operator as a sentence and nothing is left half built.
//!
//! Stop sends SIGTERM to every process of the cgroup, waits for the grace period, then kills whatever is
//! left with `cgroup.kill` (or freeze-and-kill where the kernel lacks it), and removes the cgroups.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

use crate::cgroup::{CgroupError, CgroupLimits, Cgroups};
use crate::devices::{self, DevicesError};
use crate::mounts::DeviceNumber;
use crate::network::{self, NetworkError};
use crate::preflight::{self, PreflightError};
use crate::spec::{ContextSpec, Network, Resource, Rlimit, RootDevice, VserverName};
use crate::state::{self, Ending, ExitRecord, RunState, StateError};
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
    /// The kernel lacks what the spec needs.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The device allow-list could not be put in place.
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// Setting up the addresses failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The tree's disk quota (LIMIT_DISK) could not be set.
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaError),
    /// The root device cannot be the tree, or was not released after a stop.
    #[error(transparent)]
    RootDevice(#[from] crate::root_device::RootDeviceError),
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
    /// For a vserver on a root device: how long to wait, once its processes are gone, for the device to be
    /// mounted nowhere on the host ([`crate::root_device::RELEASE_TIMEOUT`] is a generous default).
    pub release: Duration,
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
    preflight::check(&LinuxSyscall, spec)?;
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
    // The disk quota, or the root device's checks, first: a tree that cannot be had refuses before any group
    // exists.
    let root_device_number = match &spec.root_device {
        None => {
            crate::quota::apply(&spec.root, spec.limits.disk)?;
            None
        }
        Some(device) => Some(crate::root_device::check(spec, device)?),
    };
    let prepared = cg.create(&CgroupLimits::from(spec)).map_err(ContextError::from).and_then(|()| {
        // Before any process of the vserver runs: the launcher joins the groups next.
        if spec.relaxed.devices {
            return Ok(());
        }
        devices::restrict(&LinuxSyscall, &cg).map_err(ContextError::from)
    });
    if let Err(e) = prepared {
        // A limit the host cannot enforce refuses the start: leave no group behind.
        let _ = cg.remove();
        return Err(e);
    }
    match launch(spec, &cg, opts, root_device_number) {
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

fn launch(
    spec: &ContextSpec,
    cg: &Cgroups,
    opts: &StartOptions,
    root_device_number: Option<DeviceNumber>,
) -> Result<RunState, ContextError> {
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(|source| ContextError::Console { path: opts.run_dir.clone(), source })?;
    ExitRecord::remove(&opts.run_dir, &spec.name)?;
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
            // A new session, then the keeper is forked off and this process leaves at once: the keeper belongs
            // to no command (init adopts it), and the starter's wait below returns right away.
            let forked = step("setsid", nix::unistd::setsid())
                // SAFETY: still single-threaded (a fork of a single-threaded process).
                .and_then(|_| step("fork the keeper", unsafe { nix::unistd::fork() }));
            let code = match forked {
                Ok(ForkResult::Child) => keeper(spec, cg, &opts.run_dir, &mut up, File::from(down_r), console),
                Ok(ForkResult::Parent { .. }) => 0,
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
            let _ = nix::sys::wait::waitpid(child, None);
            let started = supervise(spec, up_r, down_w)?;
            let gone = || ContextError::Setup {
                name: spec.name.clone(),
                step: "process 1".into(),
                reason: format!("exited right after start; see {}", console_file.display()),
            };
            let st = RunState {
                spec: spec.clone(),
                init_pid: started.init,
                init_start_ticks: state::process_start_ticks(started.init).ok_or_else(gone)?,
                started_unix_ms: state::now_ms(),
                keeper: Some((started.keeper, state::process_start_ticks(started.keeper).ok_or_else(gone)?)),
                root_device_number,
                mount_ns: crate::mounts::mount_namespace(started.init),
            };
            st.save(&opts.run_dir)?;
            Ok(st)
        }
    }
}

/// The processes a start made, by host pid.
struct Started {
    keeper: i32,
    init: i32,
}

/// Host side of the start: learns the keeper and process 1, configures the network once process 1 has its
/// namespaces, then waits until process 1 is ready (the pipe closes) or says why it failed.
fn supervise(spec: &ContextSpec, up_r: OwnedFd, down_w: OwnedFd) -> Result<Started, ContextError> {
    let setup_err =
        |step: &str, reason: String| ContextError::Setup { name: spec.name.clone(), step: step.to_string(), reason };
    let failed =
        |l: &str| parse_error(l).map_or_else(|| setup_err("launcher", l.to_string()), |(s, r)| setup_err(&s, r));
    let mut lines = BufReader::new(File::from(up_r)).lines();
    let mut down = Some(File::from(down_w));
    let (mut keeper, mut init, mut unshared) = (None, None, false);
    // The keeper's lines and process 1's arrive in either order.
    while keeper.is_none() || init.is_none() || !unshared {
        match lines.next() {
            Some(Ok(l)) if l == "unshared" => unshared = true,
            Some(Ok(l)) if l.starts_with("keeper ") => keeper = l["keeper ".len()..].parse().ok(),
            Some(Ok(l)) if l.starts_with("pid ") => init = l["pid ".len()..].parse().ok(),
            Some(Ok(l)) => return Err(failed(&l)),
            _ => return Err(setup_err("launcher", "ended before process 1 had its namespaces".into())),
        }
    }
    let (Some(keeper), Some(init)) = (keeper, init) else { unreachable!("the loop waits for both") };
    if let Some(device) = &spec.root_device {
        // Dropping `down` without "go" makes process 1 give up.
        mount_root_device_for(spec, device, init).map_err(|reason| setup_err("root device", reason))?;
    }
    if let Network::Private(ifaces) = &spec.network {
        // Dropping `down` without "go" makes process 1 give up.
        network::configure(ifaces, init)?;
    }
    if let Some(mut d) = down.take() {
        d.write_all(b"go\n").map_err(|e| setup_err("launcher", e.to_string()))?;
    }
    let mut failure = None;
    for line in lines.map_while(Result::ok) {
        if let Some((step, reason)) = parse_error(&line) {
            failure.get_or_insert((step, reason));
        }
    }
    if let Some((step, reason)) = failure {
        return Err(setup_err(&step, reason));
    }
    Ok(Started { keeper, init })
}

/// Mounts `device` on the tree's directory inside the mount namespace of process 1 (`init`, which has made
/// every mount there private and waits for the host's "go"), from a child of the host side that enters that
/// namespace and leaves. Process 1 cannot mount it itself: it is in the vserver's cgroups, whose device
/// allow-list refuses it the block device, as it refuses every process of the vserver. The mount lives in
/// the vserver's namespace only, and the child, gone at once, holds nothing of it. The reason when it fails.
fn mount_root_device_for(spec: &ContextSpec, device: &RootDevice, init: i32) -> Result<(), String> {
    use std::io::Read;
    let ns =
        File::open(format!("/proc/{init}/ns/mnt")).map_err(|e| format!("open the mount namespace of {init}: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the starter is single-threaded (checked by `start`); the child runs ordinary code and _exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_r);
            let mounted = nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("enter the mount namespace of process 1: {e}"))
                .and_then(|()| {
                    rootfs::mount_root_device(&LinuxSyscall, device, &spec.root, spec.relaxed.devices)
                        .map_err(|e| e.to_string())
                });
            let code = match mounted {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = File::from(err_w).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(ns);
            let status = nix::sys::wait::waitpid(child, None).map_err(|e| format!("wait: {e}"))?;
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !msg.is_empty() => Err(msg),
                other => Err(format!("the mounting child ended with {other:?}")),
            }
        }
    }
}

/// Lines `error STEP: REASON` sent by the keeper or process 1.
fn parse_error(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("error ")?;
    Some(match rest.split_once(": ") {
        Some((s, r)) => (s.to_string(), r.to_string()),
        None => ("setup".to_string(), rest.to_string()),
    })
}

/// Sends one line to the host in a single write(2): the keeper and process 1 share the pipe, and lines
/// written in pieces would interleave.
fn report(up: &mut File, line: &str) -> std::io::Result<()> {
    up.write_all(format!("{line}\n").as_bytes())
}

fn step<T, E: std::fmt::Display>(name: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{name}: {e}"))
}

/// The name the keeper shows in the host's `ps`.
pub const KEEPER_NAME: &str = "vkeeper";

/// The keeper: the parent of the context's process 1, in the host's namespaces but the vserver's cgroups
/// (so stopping or killing the vserver kills it too). Only the parent of a PID namespace's init sees how that
/// init ended; the keeper waits for it, whoever started the vserver and whatever happened to that command or
/// to the agent since, and records it in `RUN_DIR/NAME.exit`. Process 1 dies with it (parent-death signal),
/// so the keeper is never killed apart from the vserver. Nothing inside can see or signal it: it lives in
/// the host's PID namespace. Returns the exit code of a failed start; otherwise ends the process itself.
fn keeper(spec: &ContextSpec, cg: &Cgroups, run_dir: &Path, up: &mut File, down: File, console: File) -> i32 {
    let me = std::process::id() as i32;
    let forked = (|| {
        step("join cgroup", cg.add_process(me))?;
        // The OOM killer of a memory-limited vserver must take the vserver's processes, never its keeper.
        let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
        step("unshare", nix::sched::unshare(CloneFlags::CLONE_NEWPID))?;
        step("report", report(up, &format!("keeper {me}")))?;
        // SAFETY: still single-threaded (a fork of a single-threaded process).
        step("fork process 1", unsafe { nix::unistd::fork() })
    })();
    let init = match forked {
        Ok(ForkResult::Child) => {
            let err = match process_one(spec, up, down, console) {
                Err(msg) => msg,
                Ok(never) => match never {},
            };
            let _ = report(up, &format!("error {err}"));
            // SAFETY: _exit ends the forked child without running destructors.
            unsafe { libc::_exit(1) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(msg) => {
            let _ = report(up, &format!("error {msg}"));
            return 1;
        }
    };
    let init_ticks = state::process_start_ticks(init.as_raw()).unwrap_or(0);
    if report(up, &format!("pid {init}")).is_err() {
        return 1;
    }
    // The host reads until every writer of the pipe has closed it: the keeper's copy goes now.
    drop(down);
    drop(console);
    undumpable();
    ignore_signals();
    // `ps` on the host shows `vkeeper NAME`; its command name is `vkeeper` (for pgrep and the like).
    set_cmdline(&format!("{KEEPER_NAME} {}", spec.name));
    let comm = std::ffi::CString::new(KEEPER_NAME).expect("no NUL");
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
    // Nothing of the starter's is kept: its stdio (an agent reads the starter's output to its end) and every
    // other descriptor, the pipe to the host included.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    // SAFETY: close_range(2) only closes descriptors; none above 2 is used afterwards (`up` is never written
    // or dropped again: this function ends the process).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let ending = guard(init, run_dir);
    if let Some(ending) = ending {
        let record =
            ExitRecord { init_pid: init.as_raw(), init_start_ticks: init_ticks, ending, at_unix_ms: state::now_ms() };
        let _ = record.save(run_dir, &spec.name);
    }
    // SAFETY: _exit ends the keeper without running destructors of state shared with the starter.
    unsafe { libc::_exit(0) }
}

/// Waits for process 1 to end and says how, guarding the host's lease meanwhile (`RUN_DIR/lease`, see
/// [`crate::lease`]): once the lease written there is over while the vserver still runs (its agent and watchdog
/// are gone, frozen or hung), it kills process 1, and with it the whole vserver, and says it was fenced.
/// Sleeps on a pidfd until process 1 ends or the lease may be over, reading the lease file at most about once
/// a lease length while it keeps moving.
fn guard(init: Pid, run_dir: &Path) -> Option<Ending> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    const IDLE: Duration = Duration::from_secs(1);
    // SAFETY: pidfd_open(2) of our own child, no flags; the result is checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, init.as_raw(), 0) };
    let pidfd = (raw >= 0).then(|| {
        // SAFETY: `raw` is a new descriptor returned by the kernel and owned by nothing else.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) }
    });
    let mut fenced = false;
    loop {
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if let Some(ending) = Ending::from_wait(status) {
                    return Some(if fenced { Ending::Fenced } else { ending });
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
        let wait = if fenced {
            Duration::from_millis(20)
        } else {
            match crate::lease::read(run_dir).left() {
                Some(left) if left.is_zero() => {
                    let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                    fenced = true;
                    continue;
                }
                Some(left) => left.min(IDLE),
                None => IDLE,
            }
        };
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            // Kernels before 5.3 have no pidfd.
            None => std::thread::sleep(wait.min(Duration::from_millis(100))),
        }
    }
}

/// The keeper ignores what a stop sends the vserver's cgroup (SIGTERM) and terminal signals; only SIGKILL,
/// with the rest of the vserver, ends it.
fn ignore_signals() {
    use nix::sys::signal::{signal, SigHandler};
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGPIPE, Signal::SIGUSR1] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Process 1 of the new PID namespace before it is the vserver: dies with its keeper, takes its own mount,
/// IPC, UTS (and network) namespaces, waits for the host to give the network namespace its interfaces, then
/// builds the context. Returns only on failure.
fn process_one(
    spec: &ContextSpec,
    up: &mut File,
    down: File,
    console: File,
) -> Result<std::convert::Infallible, String> {
    // SAFETY: plain prctl(2) on the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    step("parent-death signal", nix::errno::Errno::result(rc))?;
    // A cgroup namespace too, made here, inside the vserver's cgroups: its own group is its `/`, so nothing
    // inside learns the host's cgroup paths.
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWCGROUP;
    if matches!(spec.network, Network::Private(_)) {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    step("unshare", nix::sched::unshare(flags))?;
    // Before the host side may mount a root device in this namespace: nothing mounted here reaches the host's.
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    step("make mounts private", nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>))?;
    step("report", report(up, "unshared"))?;
    let mut go = String::new();
    let _ = BufReader::new(down).read_line(&mut go);
    if go.trim() != "go" {
        // The host side failed (and says why); leave quietly.
        // SAFETY: _exit ends the forked child without running destructors.
        unsafe { libc::_exit(1) }
    }
    init(spec, up, console)
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
    step("mount", rootfs::enter_root(&LinuxSyscall, spec))?;
    let hostname = spec.hostname.clone().unwrap_or_else(|| spec.name.to_string());
    step("sethostname", nix::unistd::sethostname(&hostname))?;
    if let Some(d) = &spec.domainname {
        step("setdomainname", crate::syscall::Syscall::setdomainname(&LinuxSyscall, d))?;
    }
    apply_limits(spec)?;
    set_stdio(&console)?;
    drop(console);
    reset_signals();
    step("system call filter", seccomp::apply(&LinuxSyscall, spec))?;
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

/// How long `vinit` lets the vserver's processes end after SIGTERM when the vserver reboots or halts itself.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Process 1 when the vserver has no init of its own: adopts and reaps orphans. It answers what `reboot`,
/// `halt` and `poweroff` ask of an init (busybox's signals: SIGTERM or SIGINT to reboot, SIGUSR1 to halt,
/// SIGUSR2 to power off; SIGPWR halts): it asks every process to end, waits a little, and calls `reboot(2)`,
/// which in a PID namespace ends only this namespace, with the status its keeper reads as reboot or halt.
fn reaper() -> ! {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    set_cmdline(INIT_NAME);
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPWR,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
        let act = SigAction::new(SigHandler::Handler(noop), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler does nothing; signals are consumed by sigwait below while blocked.
        let _ = unsafe { sigaction(s, &act) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                reap_all();
            }
            Ok(Signal::SIGTERM | Signal::SIGINT) => shut_down(libc::RB_AUTOBOOT),
            Ok(Signal::SIGUSR1 | Signal::SIGPWR) => shut_down(libc::RB_HALT_SYSTEM),
            Ok(Signal::SIGUSR2) => shut_down(libc::RB_POWER_OFF),
            _ => {}
        }
    }
}

/// Reaps every child that has exited; returns whether children remain.
fn reap_all() -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// The vserver's own shutdown: SIGTERM to every process of the namespace, up to [`SHUTDOWN_GRACE`] for them
/// to go, SIGKILL to the rest, then `reboot(2)` with `how`.
fn shut_down(how: libc::c_int) -> ! {
    // SAFETY: kill(2) of every process of this PID namespace but process 1 itself.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while reap_all() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above, with SIGKILL.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // SAFETY: reboot(2) in a PID namespace other than the host's ends that namespace only.
    unsafe { libc::reboot(how) };
    // Refused (no CAP_SYS_BOOT): ending process 1 still ends the vserver.
    // SAFETY: _exit ends process 1, and with it the context.
    unsafe { libc::_exit(0) }
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
/// that ignore SIGTERM or forked away from their parents. Removes the cgroups. For a vserver on a root
/// device, then waits up to `release` until the device is mounted nowhere on the host (the kernel unmounts it
/// as the vserver's mount namespace ends), and fails naming what still holds it, keeping the run state so a
/// later stop waits again. Removes the run state.
pub fn stop(spec: &ContextSpec, run_dir: &std::path::Path, opts: &StopOptions) -> Result<StopReport, ContextError> {
    let cg = Cgroups::new(&spec.cgroup, &spec.name)?;
    let state = RunState::load(run_dir, &spec.name)?;
    let reaper_pid = state.as_ref().filter(|s| !s.spec.flags.fakeinit && s.init_alive()).map(|s| s.init_pid);
    // Neither vinit nor the keeper is asked to leave: both go with the final kill.
    let keeper_pid = state.as_ref().filter(|s| s.keeper_alive()).and_then(|s| s.keeper).map(|(pid, _)| pid);
    let except: Vec<i32> = reaper_pid.into_iter().chain(keeper_pid).collect();
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
    // The device and number recorded at start: the path may name nothing (or another device) by now.
    let recorded = state.as_ref().and_then(|st| Some((st.spec.root_device.as_ref()?, st.root_device_number?, st)));
    if let Some((device, number, st)) = recorded {
        crate::root_device::wait_released(&spec.name, &device.path, number, st.mount_ns, opts.release)?;
    }
    RunState::remove(run_dir, &spec.name)?;
    Ok(report)
}
