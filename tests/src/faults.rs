//! Faults and witnesses for takeover tests: a host watchdog per host, a host crash (every process of the
//! host gone and its link down), partitions of the switch, and a sampler that checks, every few
//! milliseconds, on which hosts a vserver runs.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::lab::{Host, Lab};

/// `vserver-watchdog`: `$VSERVER_WATCHDOG_BIN`, else beside the agent.
pub fn watchdog_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VSERVER_WATCHDOG_BIN") {
        return Some(PathBuf::from(path));
    }
    crate::agents::agent_bin()?.parent().map(|d| d.join("vserver-watchdog")).filter(|p| p.is_file())
}

/// A `vserver-watchdog` on every host of a lab (listening on its run directory's socket); killed on drop.
pub struct Watchdogs<'lab> {
    lab: &'lab Lab,
    procs: Vec<Option<Child>>,
    bin: Option<PathBuf>,
}

impl<'lab> Watchdogs<'lab> {
    /// Starts one on every host and waits until each listens.
    pub fn start(lab: &'lab Lab) -> Result<Self> {
        Self::start_with(lab, None)
    }

    /// Like [`Watchdogs::start`], with the watchdog `bin` (another release's) instead of this build's.
    pub fn start_with(lab: &'lab Lab, bin: Option<PathBuf>) -> Result<Self> {
        let mut dogs = Watchdogs { lab, procs: (0..lab.hosts.len()).map(|_| None).collect(), bin };
        for i in 0..lab.hosts.len() {
            dogs.spawn(i)?;
        }
        Ok(dogs)
    }

    /// (Re)starts host `i`'s watchdog and waits until it listens.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        self.kill9(i);
        let host = &self.lab.hosts[i];
        let socket = host.run_dir.join("watchdog.sock");
        let _ = std::fs::remove_file(&socket);
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => watchdog_bin().context("no vserver-watchdog beside vserver-agent")?,
        };
        let child = host.command(bin).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        self.procs[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            ensure!(Instant::now() < deadline, "the watchdog never listened on {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Host `i`'s watchdog's process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// `kill -9` of host `i`'s watchdog.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watchdogs<'_> {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }
}

/// The `cgroup.procs` files that would hold the processes of vserver `name` on `host`.
fn procs_files(host: &Host, name: &str) -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    vec![
        root.join("unified").join(&host.cgroup_parent).join(name).join("cgroup.procs"),
        root.join(&host.cgroup_parent).join(name).join("cgroup.procs"),
    ]
}

fn any_process(files: &[PathBuf]) -> bool {
    files.iter().any(|f| std::fs::read_to_string(f).is_ok_and(|t| !t.trim().is_empty()))
}

impl Host {
    /// Whether vserver `name` has a process on this host (its cgroup holds one).
    pub fn runs(&self, name: &str) -> bool {
        any_process(&procs_files(self, name))
    }

    /// The process ids in vserver `name`'s cgroup on this host (empty when it does not run here): a stop and
    /// a start in between leave none of an earlier list.
    pub fn pids(&self, name: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = procs_files(self, name)
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process of every vserver of this host at once (`cgroup.kill` of the host's parent group).
    pub fn kill_vservers(&self) {
        let root = PathBuf::from("/sys/fs/cgroup");
        for dir in [root.join("unified").join(&self.cgroup_parent), root.join(&self.cgroup_parent)] {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
    }
}

impl Lab {
    /// Sets host `i`'s link to the switch down (`false`) or up (`true`).
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        let port = &self.hosts[i].switch_port;
        self.switch().ip(["link", "set", port, if up { "up" } else { "down" }])
    }

    /// Cuts the switch into groups of hosts: frames pass only between hosts of one group (the client is
    /// with the group holding `client_with`). An empty list heals every partition.
    pub fn partition(&self, groups: &[&[usize]], client_with: usize) -> Result<()> {
        let table = "partition";
        let _ = self.switch().command("nft").args(["delete", "table", "bridge", table]).output();
        if groups.is_empty() {
            return Ok(());
        }
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        let mut ports: Vec<(String, Option<usize>)> =
            self.hosts.iter().map(|h| (h.switch_port.clone(), group_of(h.index))).collect();
        ports.push((self.client.switch_port.clone(), group_of(client_with)));
        let mut rules = String::new();
        for (a, ga) in &ports {
            for (b, gb) in &ports {
                if a != b && ga != gb {
                    rules.push_str(&format!("    iifname \"{a}\" oifname \"{b}\" drop\n"));
                }
            }
        }
        let text = format!(
            "table bridge {table} {{\n  chain forward {{\n    type filter hook forward priority -10;\n{rules}  }}\n}}\n"
        );
        let mut child = self
            .switch()
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (is the nftables package installed?)")?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), text.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "nft refused the partition: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// Rounds over every host.
    pub rounds: u64,
    /// The most hosts seen running the vserver in one round.
    pub most_at_once: usize,
    /// For each round where two or more ran it: ms since the sampler started, and the hosts.
    pub overlaps: Vec<(u64, Vec<usize>)>,
    /// Each change of where it runs: ms since the sampler started, and the hosts.
    pub changes: Vec<(u64, Vec<usize>)>,
}

/// Checks every 5 ms on which hosts a vserver has processes, until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Sampled>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling where `name` runs among the lab's hosts.
    pub fn start(lab: &Lab, name: &str) -> Self {
        let files: Vec<Vec<PathBuf>> = lab.hosts.iter().map(|h| procs_files(h, name)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Sampled::default()));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut last: Option<Vec<usize>> = None;
            while !s.load(Ordering::Relaxed) {
                let on: Vec<usize> = (0..files.len()).filter(|&i| any_process(&files[i])).collect();
                let at = began.elapsed().as_millis() as u64;
                let mut seen = w.lock().unwrap();
                seen.rounds += 1;
                seen.most_at_once = seen.most_at_once.max(on.len());
                if on.len() > 1 {
                    seen.overlaps.push((at, on.clone()));
                }
                if last.as_ref() != Some(&on) {
                    seen.changes.push((at, on.clone()));
                    last = Some(on);
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler { stop, seen, thread: Some(thread) }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Sampled {
        self.seen.lock().unwrap().clone()
    }

    /// Stops it; what it saw.
    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
