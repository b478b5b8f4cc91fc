//! A named network namespace (`/run/netns/NAME`) that kills its processes and is deleted when dropped.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// How long dropping a namespace keeps killing processes that are still in it before giving up.
const KILL_PATIENCE: Duration = Duration::from_secs(3);

/// A named network namespace made by `ip netns add`; dropping it SIGKILLs every process in it and
/// deletes it. Errors while dropping are reported on stderr, never as a panic.
pub struct Netns {
    name: String,
    /// `/run/netns/NAME`, opened once: what [`Netns::command`] enters (so the child needs no path
    /// lookup after fork) and the identity processes are matched against.
    file: Arc<File>,
}

impl Netns {
    /// Creates the namespace `name` (`ip netns add`); `name` should come from [`crate::unique`].
    pub fn create(name: &str) -> Result<Netns> {
        run_ip(&["netns", "add", name]).with_context(|| format!("creating network namespace {name}"))?;
        let path = netns_path(name);
        match File::open(&path) {
            Ok(file) => Ok(Netns { name: name.to_owned(), file: Arc::new(file) }),
            Err(err) => {
                delete_by_name(name);
                Err(err).with_context(|| format!("opening {}", path.display()))
            }
        }
    }

    /// The namespace's name, as `ip netns` and `ip -n` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for tools that take a namespace path (`nsenter --net=`).
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// A command that runs `program` inside this namespace (network only: the mount namespace, `/sys`
    /// and cgroups stay the caller's, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let file = Arc::clone(&self.file);
        // SAFETY: the closure runs in the child between fork and exec. It only calls setns(2), which
        // is async-signal-safe, on a descriptor opened before the fork, and it neither allocates nor
        // takes locks (turning an errno into io::Error stores the number inline).
        unsafe {
            cmd.pre_exec(move || setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
        }
        cmd
    }

    /// Runs `ip -n NAME ARGS...`, failing with ip's own message.
    pub fn ip<I, S>(&self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut all = vec!["-n".to_owned(), self.name.clone()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_ip(&all)
    }

    /// Runs `f` on a thread that has entered this namespace, so that sockets it creates live here.
    /// A socket keeps its namespace, so it may be returned and used from any thread.
    pub fn run<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        thread::scope(|scope| {
            let worker = scope
                .spawn(|| setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from).map(|()| f()));
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// What puts the calling thread into this namespace, for a thread of its own that lives on (the namespace
    /// must outlive it).
    pub fn enterer(&self) -> impl Fn() -> io::Result<()> + Send + 'static {
        let file = Arc::clone(&self.file);
        move || setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }

    /// Whether `addr` answers one ping within a second (busybox `ping -c1 -W1` via `ip netns exec`).
    pub fn ping(&self, addr: Ipv4Addr) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "busybox", "ping", "-c1", "-W1"])
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The processes whose network namespace is this one (what `ip netns pids` lists).
    pub fn pids(&self) -> Vec<Pid> {
        match self.file.metadata() {
            Ok(meta) => pids_with_netns(meta.dev(), meta.ino()),
            Err(_) => Vec::new(),
        }
    }

    /// SIGKILLs every process in this namespace until none is left (or a few seconds pass);
    /// returns how many were killed.
    pub fn kill_all(&self) -> usize {
        match self.file.metadata() {
            Ok(meta) => kill_netns_processes(meta.dev(), meta.ino(), &self.name),
            Err(_) => 0,
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Netns").field(&self.name).finish()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        delete_by_name(&self.name);
    }
}

/// `/run/netns/NAME`.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Kills every process in the namespace called `name` and deletes it; for namespaces made by a
/// script rather than by [`Netns::create`]. A namespace that does not exist is not an error.
pub(crate) fn destroy_by_name(name: &str) {
    if let Ok(meta) = fs::metadata(netns_path(name)) {
        kill_netns_processes(meta.dev(), meta.ino(), name);
        delete_by_name(name);
    }
}

/// Deletes the named namespace, by `ip netns del` or, failing that, by hand.
fn delete_by_name(name: &str) {
    let path = netns_path(name);
    if run_ip(&["netns", "del", name]).is_ok() || !path.exists() {
        return;
    }
    // `ip` may be gone or confused; do what it does: detach the bind mount, remove the file.
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    if let Err(err) = fs::remove_file(&path) {
        eprintln!("vserver-lab: could not delete network namespace {name}: {err}");
    }
}

/// SIGKILLs the processes in the namespace with this (device, inode) until none is left.
fn kill_netns_processes(dev: u64, ino: u64, name: &str) -> usize {
    let started = Instant::now();
    let mut killed = 0;
    loop {
        let pids = pids_with_netns(dev, ino);
        if pids.is_empty() {
            return killed;
        }
        if started.elapsed() > KILL_PATIENCE {
            eprintln!("vserver-lab: processes {pids:?} survive SIGKILL in network namespace {name}");
            return killed;
        }
        for pid in pids {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Every process (but this one) whose `/proc/PID/ns/net` is the namespace (device, inode). Zombies
/// have no namespaces left, so they are not listed.
fn pids_with_netns(dev: u64, ino: u64) -> Vec<Pid> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.dev() == dev && m.ino() == ino).unwrap_or(false)
        })
        .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
        .collect()
}

/// Runs `ip ARGS...` and fails with its stderr.
pub(crate) fn run_ip(args: &[&str]) -> Result<()> {
    let output =
        Command::new("ip").args(args).stdin(Stdio::null()).output().context("running ip (is iproute2 installed?)")?;
    if !output.status.success() {
        bail!("`ip {}` failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
