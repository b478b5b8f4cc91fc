//! The lab of `bench takeover`'s runs: agents with the default timing and a watchdog on every host, the
//! benchmark's vserver, and what the runs ask of them (the owner, takeovers, the agents' accounts of restarts
//! and fences, a wait until all is back to normal).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::agents::{wait_for, Agents, Timing};
use crate::faults::{Sampled, Watchdogs};
use crate::Lab;

/// The takeover timeout when no agent says it (docs/failover.md: lease 1800 ms + margin 600 ms).
pub(super) const DEFAULT_TAKEOVER_TIMEOUT_MS: u64 = 2400;

/// Longest wait for the cluster to be back to normal after a fault.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Kept after the cluster is back to normal, before the next fault: the next one is one fault, not a flap.
pub(super) const SETTLE_MARGIN: Duration = Duration::from_millis(500);

/// The lab's `[failures]`: the same vserver moves and restarts many times on purpose, so neither limit may
/// end a run (the counts are the figures).
const FAILURES: &str = "[failures]\nmax_relocate = 100000\nmax_restart = 100000\n";

/// A lab's agents and watchdogs with the benchmark's vserver running on h0, replicated to every other host.
pub(super) struct Cluster<'lab> {
    /// The lab.
    pub lab: &'lab Lab,
    /// An agent per host, the product's default timing.
    pub agents: Agents<'lab>,
    /// A watchdog per host.
    pub dogs: Watchdogs<'lab>,
    /// Hosts.
    pub n: usize,
    /// The vserver.
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// The takeover timeout the agents report, ms.
    pub takeover_timeout_ms: u64,
    /// What is left of each host's lease while all is well, ms (0: it reports none).
    healthy_lease_ms: Vec<u64>,
}

impl<'lab> Cluster<'lab> {
    /// Builds the vserver on h0 (standbys: every other host), starts the agents with the default timing and
    /// a watchdog on every host, starts the vserver, waits for the table to give it to h0, and syncs it once.
    pub fn build(lab: &'lab Lab) -> Result<Self> {
        let n = lab.hosts.len();
        let dogs = Watchdogs::start(lab)?;
        let name = "web".to_string();
        let addr = lab.free_addr(0);
        eprintln!("bench takeover: {n} hosts; building {name} on h0, agents with the default timing");
        vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true)?;
        crate::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "bench")?;
        let standbys: Vec<String> = (1..n).map(|i| format!("\"h{i}\"")).collect();
        let cluster = format!(
            "[vservers.{name}]\nprimary = \"h0\"\nstandbys = [{}]\ninterval_secs = 3600\n",
            standbys.join(", ")
        );
        // The cluster formed as the README forms one (init, join): the agents speak TLS with certificates.
        let agents = Agents::form(lab, Timing::default(), Some(&cluster), |_| FAILURES.to_string())?;
        let mut c = Cluster {
            lab,
            agents,
            dogs,
            n,
            name,
            addr,
            takeover_timeout_ms: DEFAULT_TAKEOVER_TIMEOUT_MS,
            healthy_lease_ms: vec![0; n],
        };
        if wait_for(Duration::from_secs(30), || c.all_alive()).is_none() {
            bail!("the agents did not see each other alive; log of h0:\n{}", c.log_tail(0));
        }
        vserver(lab, 0, &[&c.name, "start"], false)?;
        if lab.client.wait_http(addr, 80, Instant::now() + Duration::from_secs(20)).is_none() {
            bail!("{} does not answer at {addr}", c.name);
        }
        if wait_for(Duration::from_secs(20), || c.owner().is_some_and(|(o, _)| o == 0)).is_none() {
            bail!("the cluster did not record h0 as the owner; log:\n{}", c.log_tail(0));
        }
        vserver(lab, 0, &[&c.name, "sync"], false)?;
        if let Some(ms) = c.agents.status(0).ok().and_then(|s| s["failover"]["takeover_timeout_ms"].as_u64()) {
            c.takeover_timeout_ms = ms;
        }
        c.measure_leases();
        Ok(c)
    }

    /// Notes what is left of each host's lease while all is well (the most seen over a second).
    pub fn measure_leases(&mut self) {
        let mut most = vec![0u64; self.n];
        let _ = wait_for(Duration::from_secs(1), || {
            for (i, m) in most.iter_mut().enumerate() {
                *m = (*m).max(self.lease_left(i).unwrap_or(0));
            }
            false
        });
        self.healthy_lease_ms = most;
    }

    /// What is left of host `i`'s lease, as its status says.
    fn lease_left(&self, i: usize) -> Option<u64> {
        self.agents.status(i).ok().and_then(|s| s["failover"]["lease_remaining_ms"].as_u64())
    }

    /// Every host holds its lease (a host back from a crash wins it once the voters' promise not to
    /// acknowledge it, made for the takeover of its vservers, has run out: up to 5 s).
    pub fn leases_held(&self) -> bool {
        (0..self.n).all(|i| self.lease_left(i).is_some_and(|ms| ms > 0))
    }

    /// Every host sees every other alive.
    pub fn all_alive(&self) -> bool {
        let n = self.n;
        (0..n).all(|o| (0..n).filter(|p| *p != o).all(|p| self.agents.peer_state(o, p).as_deref() == Some("alive")))
    }

    /// The vserver's owner and epoch in the ownership table: the newest entry among the hosts that answer.
    pub fn owner(&self) -> Option<(usize, u64)> {
        (0..self.n)
            .filter_map(|i| {
                let status = self.agents.status(i).ok()?;
                let entry = &status["ownership"]["owners"][self.name.as_str()];
                let host = entry["owner"].as_str()?.strip_prefix('h')?.parse().ok()?;
                Some((host, entry["epoch"].as_u64()?))
            })
            .max_by_key(|&(_, epoch)| epoch)
    }

    /// The vserver's takeovers to an epoch above `epoch`, as the host that knows most of them says.
    pub fn takeovers_after(&self, epoch: u64) -> Vec<serde_json::Value> {
        (0..self.n)
            .map(|i| {
                let records = self.agents.status(i).ok().and_then(|s| s["takeovers"].as_array().cloned());
                records
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t["vserver"] == self.name.as_str() && t["epoch"].as_u64().is_some_and(|e| e > epoch))
                    .collect::<Vec<_>>()
            })
            .max_by_key(Vec::len)
            .unwrap_or_default()
    }

    /// The vserver's events of one kind (`field`: `restarted_unix_ms` or `fenced_unix_ms`) at or after
    /// `since_unix_ms`, summed over every host (each counts its own). Each host's count is the larger of its
    /// status and its `STATE_DIR/failures.json`: a host whose copy was moved aside no longer lists the vserver
    /// in its status, but its account keeps the fence.
    pub fn counted(&self, field: &str, since_unix_ms: u64) -> Result<usize> {
        let recent = |times: Option<&Vec<serde_json::Value>>| {
            times.map_or(0, |t| t.iter().filter(|t| t.as_u64().is_some_and(|t| t >= since_unix_ms)).count())
        };
        let mut total = 0;
        for i in 0..self.n {
            let mut listed = 0;
            let asked = wait_for(Duration::from_secs(10), || match self.agents.status(i) {
                Ok(s) => {
                    let v = s["vservers"].as_array().and_then(|a| a.iter().find(|v| v["name"] == self.name.as_str()));
                    listed = recent(v.and_then(|v| v[field].as_array()));
                    true
                }
                Err(_) => false,
            });
            ensure!(asked.is_some(), "h{i}'s agent does not answer; log:\n{}", self.log_tail(i));
            let file = self.lab.hosts[i].dir.join("agent-state").join("failures.json");
            let accounts: serde_json::Value = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(serde_json::Value::Null);
            total += listed.max(recent(accounts[self.name.as_str()][field].as_array()));
        }
        Ok(total)
    }

    /// Times every agent logged "lease lost" so far.
    pub fn lease_losses(&self) -> usize {
        (0..self.n).map(|i| self.agents.log(i).matches("lease lost").count()).sum()
    }

    /// Whether host `i` holds a lease renewed to about what it is while all is well.
    fn lease_renewed(&self, i: usize) -> bool {
        self.healthy_lease_ms[i] == 0 || self.lease_left(i).is_some_and(|left| left + 250 >= self.healthy_lease_ms[i])
    }

    /// Waits until the cluster is back to normal after a fault that began at `began`: at least `hold` has
    /// passed since (whatever the fault was going to cause has happened by then), every host sees every other
    /// alive and holds a lease renewed to about what it is while all is well (a standby without one could not
    /// take the vserver over at the next fault), and the table's owner runs the vserver; then
    /// [`SETTLE_MARGIN`].
    pub fn settle(&self, began: Instant, hold: Duration) -> Result<()> {
        std::thread::sleep(hold.saturating_sub(began.elapsed()));
        let normal = wait_for(SETTLE_LIMIT, || {
            self.all_alive()
                && (0..self.n).all(|i| self.lease_renewed(i))
                && self.owner().is_some_and(|(o, _)| self.lab.hosts[o].runs(&self.name))
        });
        if normal.is_none() {
            let o = self.owner().map_or(0, |(o, _)| o);
            let leases: Vec<String> = (0..self.n).map(|i| format!("h{i} {:?} ms", self.lease_left(i))).collect();
            bail!(
                "the cluster was not back to normal {} s after a fault (owner h{o}, runs it: {}, all alive: {}, \
                 leases left: {}); log of h{o}:\n{}",
                SETTLE_LIMIT.as_secs(),
                self.lab.hosts[o].runs(&self.name),
                self.all_alive(),
                leases.join(", "),
                self.log_tail(o)
            );
        }
        std::thread::sleep(SETTLE_MARGIN);
        Ok(())
    }

    /// The time after a fault's start by which whatever it causes has happened: the takeover timeout and a
    /// second for the takeover itself.
    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.takeover_timeout_ms + 1000)
    }

    /// `vserver NAME sync` on host `i`, through its agent.
    pub fn sync_from(&self, i: usize) -> Result<()> {
        vserver(self.lab, i, &[&self.name, "sync"], false)
    }

    /// The last lines of host `i`'s agent log.
    pub fn log_tail(&self, i: usize) -> String {
        let log = self.agents.log(i);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// `vserver ARGS` on host `host` (without its agent when `local`); an error with its stderr when it fails.
pub(super) fn vserver(lab: &Lab, host: usize, args: &[&str], local: bool) -> Result<()> {
    let bin = crate::vserver_bin().context("no vserver command beside this executable")?;
    let mut cmd = lab.hosts[host].command(bin);
    cmd.args(args);
    if local {
        cmd.env("VSERVER_NO_AGENT", "1");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("vserver {} on h{host}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// How many times a host stopped running the vserver, as a sampler saw it (a move counts once: it stopped on
/// the old owner).
pub(super) fn stops(seen: &Sampled) -> usize {
    seen.changes.windows(2).filter(|w| w[0].1.iter().any(|h| !w[1].1.contains(h))).count()
}

/// Now, ms since the Unix epoch (the clock the agents stamp their events with: the same machine's).
pub(super) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_a_host_leaving_the_set_a_move_counts_once() {
        let seen = |changes: Vec<Vec<usize>>| Sampled {
            changes: changes.into_iter().enumerate().map(|(t, on)| (t as u64, on)).collect(),
            ..Sampled::default()
        };
        assert_eq!(stops(&seen(vec![vec![0]])), 0);
        assert_eq!(stops(&seen(vec![vec![0], vec![], vec![0]])), 1, "a fence and a restart in place");
        assert_eq!(stops(&seen(vec![vec![0], vec![], vec![1]])), 1, "a move");
        assert_eq!(stops(&seen(vec![vec![0], vec![], vec![0], vec![], vec![1]])), 2);
    }
}
