//! The agent restarts of `bench takeover`: the owner's agent restarted cleanly many times in a row, as
//! `systemctl restart` does it (SIGTERM, the wait for its exit, a new start), each once the cluster is back to
//! normal after the last and a second later. The vserver must keep running: no fence, no stop, no move.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::outage::while_probing;
use super::takeover::check;
use super::takeover_cluster::{now_unix_ms, stops, Cluster};
use crate::agents::wait_for;
use crate::faults::Sampler;

/// How long a stopping agent is given before SIGKILL (the lab's; systemd's default is 90 s).
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Between two restarts, once the cluster is back to normal (an operator's or an upgrade's restarts, not a
/// crash loop).
const PAUSE: Duration = Duration::from_secs(1);

/// The agent restarts.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// Restarts made.
    pub count: usize,
    /// Fences of the vserver (the agents' accounts).
    pub fences: usize,
    /// "lease lost" in the agents' logs.
    pub lease_losses: usize,
    /// Times a host stopped running the vserver.
    pub stops: usize,
    /// Takeovers.
    pub moves: usize,
    /// Agents that left by themselves after SIGTERM (the others were killed after 10 s).
    pub exited_cleanly: usize,
    /// The slowest exit after SIGTERM, ms.
    pub slowest_exit_ms: f64,
    /// The slowest return to normal after a new start (peers alive, lease renewed), ms.
    pub slowest_back_ms: f64,
    /// The client's longest gap over the run, ms.
    pub gap_ms: f64,
    /// The most hosts seen running the vserver at one instant (must be 1).
    pub most_copies_at_once: usize,
}

impl RestartReport {
    /// Its lines of the table.
    pub(super) fn table(&self, out: &mut String) {
        let _ = writeln!(out, "clean restarts of the owner's agent, 3 hosts: {} in a row", self.count);
        let _ =
            writeln!(out, "  fences {}   (target: 0) {}", self.fences, if self.fences == 0 { "ok" } else { "MISSED" });
        let _ = writeln!(
            out,
            "  vserver stops {}, moves {}, lease lost {}; client's longest gap {:.0} ms",
            self.stops, self.moves, self.lease_losses, self.gap_ms
        );
        let _ = writeln!(
            out,
            "  exits after SIGTERM: {} of {} by themselves, slowest {:.0} ms; back to normal within {:.0} ms",
            self.exited_cleanly, self.count, self.slowest_exit_ms, self.slowest_back_ms
        );
        let _ = writeln!(out, "  most hosts running it at once {} (must be 1)", self.most_copies_at_once);
    }
}

/// Waits until every other host has heard host `o`'s new agent (its peers report its new incarnation): until
/// then they may still see it alive from the old one's heartbeats.
fn heard(c: &Cluster, o: usize) -> Result<()> {
    let incarnation = |i: usize| c.agents.status(i).ok().and_then(|s| s["node"]["incarnation"].as_u64());
    let peers_heard = |inc: u64| {
        (0..c.n).filter(|&j| j != o).all(|j| c.agents.peer(j, o).and_then(|p| p["incarnation"].as_u64()) == Some(inc))
    };
    let done = wait_for(Duration::from_secs(30), || incarnation(o).is_some_and(peers_heard));
    anyhow::ensure!(done.is_some(), "the peers did not hear h{o}'s new agent; its log:\n{}", c.log_tail(o));
    Ok(())
}

/// Runs it; the cluster must be at rest.
pub(super) fn run(c: &mut Cluster, count: usize, cancel: &AtomicBool) -> Result<RestartReport> {
    eprintln!("bench takeover: {count} clean restarts of the owner's agent in a row, 3 hosts");
    let (first, epoch) = c.owner().context("no owner in the table")?;
    let pids = c.lab.hosts[first].pids(&c.name);
    let since = now_unix_ms();
    let losses_before = c.lease_losses();
    let sampler = Sampler::start(c.lab, &c.name);
    let (lab, addr) = (c.lab, c.addr);
    let (mut exited_cleanly, mut slowest_exit, mut slowest_back) = (0, 0.0f64, 0.0f64);
    let ((), gap_ms) = while_probing(&lab.client, addr, || {
        for round in 0..count {
            check(cancel)?;
            let (o, _) = c.owner().context("no owner in the table")?;
            let asked = Instant::now();
            let clean = c.agents.stop(o, STOP_PATIENCE);
            let exit = asked.elapsed().as_secs_f64() * 1000.0;
            c.agents.spawn(o)?;
            let started = Instant::now();
            heard(c, o).with_context(|| format!("restart {}", round + 1))?;
            c.settle(started, Duration::ZERO).with_context(|| format!("restart {}", round + 1))?;
            let back = started.elapsed().saturating_sub(super::takeover_cluster::SETTLE_MARGIN).as_secs_f64() * 1000.0;
            exited_cleanly += usize::from(clean);
            slowest_exit = slowest_exit.max(exit);
            slowest_back = slowest_back.max(back);
            eprintln!(
                "  restart {:>2}/{count} of h{o}'s agent: {} after {exit:.0} ms, back to normal {back:.0} ms after the start",
                round + 1,
                if clean { "exited" } else { "KILLED (no exit)" }
            );
            std::thread::sleep(PAUSE);
        }
        // Whatever the last restart was going to cause has happened by the takeover timeout.
        c.settle(Instant::now(), c.hold())
    })?;
    let seen = sampler.finish();
    if seen.most_at_once > 1 {
        eprintln!("bench takeover: RAN TWICE during the agent restarts at (ms, hosts): {:?}", seen.overlaps);
    }
    let (last, _) = c.owner().context("no owner in the table")?;
    let replaced = last == first && !pids.iter().any(|p| c.lab.hosts[last].pids(&c.name).contains(p));
    let moves = c.takeovers_after(epoch).len().max(usize::from(last != first));
    if moves > 0 {
        c.sync_from(last)?;
    }
    Ok(RestartReport {
        count,
        fences: c.counted("fenced_unix_ms", since)?,
        lease_losses: c.lease_losses().saturating_sub(losses_before),
        stops: stops(&seen).max(usize::from(replaced)),
        moves,
        exited_cleanly,
        slowest_exit_ms: slowest_exit,
        slowest_back_ms: slowest_back,
        gap_ms,
        most_copies_at_once: seen.most_at_once,
    })
}
