//! Running a command inside a running context (`enter`, `exec`, `suexec`, services, start scripts).
//!
//! A helper process joins the context's cgroup and namespaces (`setns` on process 1's namespace files),
//! then forks so the command is born inside the PID namespace; the command gets the very ceiling the
//! context's own processes have (limits, nice floor, system call filters, capabilities), read from the run state.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Uid};

use crate::cgroup::Cgroups;
use crate::context::{apply_limits, exec_program, reset_signals, ContextError, BASE_PATH};
use crate::state::RunState;
use crate::syscall::LinuxSyscall;
use crate::{capabilities, seccomp};

/// How a command is run inside.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Run as this user of the vserver (name or numeric uid from its `/etc/passwd`); root when `None`.
    pub user: Option<String>,
    /// Set by the lifecycle for its own start and stop scripts, which `private` does not forbid.
    pub internal: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Give the command /dev/null as stdin instead of the caller's.
    pub null_stdin: bool,
    /// Append the command's stdout and stderr to this host file instead of the caller's. Start scripts use
    /// the console log: daemons they leave running must not hold the caller's terminal or pipe open.
    pub output: Option<std::path::PathBuf>,
    /// Give up waiting after this long (the command is left to the context's stop, which kills it).
    pub timeout: Option<std::time::Duration>,
}

/// Entering was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// S_FLAGS private forbids entering.
    #[error("vserver {0} is private (S_FLAGS private): nobody may enter it or run commands in it")]
    Private(String),
    /// The context is not running.
    #[error("vserver {0} is not running")]
    NotRunning(String),
    /// Joining the context failed on the host side.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The command could not be started inside (no such program, unknown user...).
    #[error("{0}")]
    Inside(String),
    /// The command did not finish in time.
    #[error("{command} did not finish within {secs} s")]
    Timeout {
        /// The command.
        command: String,
        /// The limit.
        secs: u64,
    },
}

/// Runs `argv` inside the context of `state` and returns its exit code (128 + signal when killed).
/// Must be called from a single-threaded process.
pub fn exec(state: &RunState, argv: &[String], opts: &ExecOptions) -> Result<i32, ExecError> {
    let name = state.spec.name.to_string();
    if state.spec.flags.private && !opts.internal {
        return Err(ExecError::Private(name));
    }
    if !state.init_alive() {
        return Err(ExecError::NotRunning(name));
    }
    if argv.is_empty() {
        return Err(ExecError::Inside("no command given".into()));
    }
    let pid = state.init_pid;
    let mut namespaces = Vec::new();
    for (ns, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|_| ExecError::NotRunning(name.clone()))?;
        namespaces.push((f, flag));
    }
    let cg = Cgroups::new(&state.spec.cgroup, &state.spec.name).map_err(ContextError::from)?;
    let output = match &opts.output {
        None => None,
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ContextError::Console { path: path.clone(), source })?,
        ),
    };
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| ContextError::Sys { op: "pipe", errno })?;
    // SAFETY: callers are single-threaded (documented); the child runs ordinary code until exec or _exit.
    match unsafe { nix::unistd::fork() }.map_err(|errno| ContextError::Sys { op: "fork", errno })? {
        ForkResult::Child => {
            drop(err_r);
            let mut err = File::from(err_w);
            let code = match join(state, &cg, &namespaces, argv, opts, output.as_ref(), &mut err) {
                Ok(code) => code,
                Err(msg) => {
                    let _ = err.write_all(msg.as_bytes());
                    127
                }
            };
            // SAFETY: _exit ends the forked helper without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            // The namespace descriptors are the helper's to use: here they would keep the vserver's namespaces
            // alive (and the root device mounted in its mount namespace) as long as this command waits, even
            // after the vserver is killed.
            drop(namespaces);
            let status = match opts.timeout {
                None => {
                    nix::sys::wait::waitpid(child, None).map_err(|errno| ContextError::Sys { op: "wait", errno })?
                }
                Some(limit) => wait_with_timeout(child, limit)
                    .ok_or_else(|| ExecError::Timeout { command: argv.join(" "), secs: limit.as_secs() })?,
            };
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                return Err(ExecError::Inside(msg));
            }
            Ok(exit_code(status))
        }
    }
}

/// Waits for `child` up to `limit`; on timeout kills it (the helper outside; the command inside stays for
/// the context's stop to end) and returns `None`. Sleeps on a pidfd, so it wakes the moment the child exits.
fn wait_with_timeout(child: nix::unistd::Pid, limit: std::time::Duration) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = std::time::Instant::now() + limit;
    // SAFETY: pidfd_open(2) with a pid we own (our unreaped child) and no flags; the result is checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    let pidfd = (raw >= 0).then(|| {
        // SAFETY: `raw` is a new descriptor returned by the kernel and owned by nothing else.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) }
    });
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(s) => return Some(s),
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            return None;
        }
        match &pidfd {
            Some(fd) => {
                let mut pfd =
                    libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(fd), events: libc::POLLIN, revents: 0 };
                let ms = left.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
            }
            // Kernels before 5.3 have no pidfd: poll with a growing pause.
            None => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn exit_code(status: nix::sys::wait::WaitStatus) -> i32 {
    match status {
        nix::sys::wait::WaitStatus::Exited(_, c) => c,
        nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 1,
    }
}

/// The helper: joins cgroup and namespaces, forks the command inside, waits for it.
fn join(
    state: &RunState,
    cg: &Cgroups,
    namespaces: &[(File, CloneFlags)],
    argv: &[String],
    opts: &ExecOptions,
    output: Option<&File>,
    err: &mut File,
) -> Result<i32, String> {
    cg.add_process(std::process::id() as i32).map_err(|e| format!("join cgroup: {e}"))?;
    for (f, flag) in namespaces {
        nix::sched::setns(f.as_fd(), *flag).map_err(|e| format!("enter {flag:?} namespace: {e}"))?;
    }
    // SAFETY: this helper is single-threaded (a fork of a single-threaded process).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let msg = match command(state, argv, opts, output) {
                Err(m) => m,
                Ok(never) => match never {},
            };
            let _ = err.write_all(msg.as_bytes());
            // SAFETY: _exit ends the forked child without running destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            // Signals meant for the command (Ctrl-C at an `enter` shell) must not end this helper first.
            // SAFETY: ignoring signals installs no handler code.
            unsafe {
                let _ =
                    nix::sys::signal::signal(nix::sys::signal::Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn);
                let _ =
                    nix::sys::signal::signal(nix::sys::signal::Signal::SIGQUIT, nix::sys::signal::SigHandler::SigIgn);
            }
            let status = nix::sys::wait::waitpid(child, None).map_err(|e| format!("wait: {e}"))?;
            Ok(exit_code(status))
        }
    }
}

/// A user of the vserver as its `/etc/passwd` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// Finds `user` (a name or a numeric uid) in passwd-format text.
pub fn lookup_user(passwd: &str, user: &str) -> Option<PasswdEntry> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let matches = f[0] == user || user.parse::<u32>().ok() == Some(uid);
        matches.then(|| PasswdEntry {
            name: f[0].to_string(),
            uid,
            gid: f[3].parse().unwrap_or(uid),
            home: f[5].to_string(),
            shell: f[6].to_string(),
        })
    })
}

/// Supplementary groups of `user` in group-format text.
pub fn supplementary_groups(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user)).then(|| f[2].parse().ok()).flatten()
        })
        .collect()
}

/// The command's process, now inside the PID namespace: same ceiling as the context, then exec.
fn command(
    state: &RunState,
    argv: &[String],
    opts: &ExecOptions,
    output: Option<&File>,
) -> Result<std::convert::Infallible, String> {
    let spec = &state.spec;
    crate::context::undumpable();
    // Nothing the caller had open goes in: a descriptor of a host directory or file inherited by `vserver
    // exec` would reach the host from inside. Marked close-on-exec, so failures before the exec can still
    // be reported on the error pipe.
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let user = match &opts.user {
        None => None,
        Some(u) => {
            let passwd =
                std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd of the vserver: {e}"))?;
            Some(lookup_user(&passwd, u).ok_or_else(|| format!("no user {u:?} in the vserver's /etc/passwd"))?)
        }
    };
    if opts.null_stdin {
        let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0).map_err(|e| format!("stdin: {e}"))?;
    }
    if let Some(out) = output {
        use std::os::fd::AsRawFd;
        nix::unistd::dup2(out.as_raw_fd(), 1).map_err(|e| format!("stdout: {e}"))?;
        nix::unistd::dup2(out.as_raw_fd(), 2).map_err(|e| format!("stderr: {e}"))?;
    }
    apply_limits(spec)?;
    reset_signals();
    seccomp::apply(&LinuxSyscall, spec).map_err(|e| format!("system call filter: {e}"))?;
    capabilities::restrict_to(&LinuxSyscall, &spec.capabilities()).map_err(|e| format!("capabilities: {e}"))?;
    let mut env =
        vec![format!("PATH={BASE_PATH}"), format!("TERM={}", std::env::var("TERM").unwrap_or_else(|_| "dumb".into()))];
    match &user {
        Some(u) => {
            let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let groups: Vec<Gid> = supplementary_groups(&group, &u.name).into_iter().map(Gid::from_raw).collect();
            nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
            nix::unistd::setgid(Gid::from_raw(u.gid)).map_err(|e| format!("setgid {}: {e}", u.gid))?;
            nix::unistd::setuid(Uid::from_raw(u.uid)).map_err(|e| format!("setuid {}: {e}", u.uid))?;
            let _ = nix::unistd::chdir(u.home.as_str());
            env.extend([
                format!("HOME={}", u.home),
                format!("USER={}", u.name),
                format!("LOGNAME={}", u.name),
                format!("SHELL={}", u.shell),
            ]);
        }
        None => env.extend(["HOME=/root".to_string(), "USER=root".to_string(), "LOGNAME=root".to_string()]),
    }
    env.extend(opts.env.iter().map(|(k, v)| format!("{k}={v}")));
    let program = resolve(&argv[0]).ok_or_else(|| format!("{}: command not found in the vserver", argv[0]))?;
    let e = exec_program(&program, argv, &env);
    Err(format!("exec {}: {e}", argv[0]))
}

/// Finds a program on the vserver's PATH.
fn resolve(program: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    BASE_PATH
        .split(':')
        .map(|d| format!("{d}/{program}"))
        .find(|p| nix::unistd::access(p.as_str(), nix::unistd::AccessFlags::X_OK).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name_or_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:web:/var/www:/bin/false\nbad line\n";
        let u = lookup_user(passwd, "www").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        assert_eq!(lookup_user(passwd, "33").unwrap().name, "www");
        assert!(lookup_user(passwd, "nobody").is_none());
        let group = "wheel:x:10:root,www\nstaff:x:50:\nweb:x:33:www\n";
        assert_eq!(supplementary_groups(group, "www"), vec![10, 33]);
    }
}
