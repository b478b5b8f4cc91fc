//! The blip run of `bench takeover`: short faults of the vserver's owner that no takeover needs. Each blip is a
//! cut of the owner's link (its switch port set down: both ways, no frame passes) or a freeze of its agent
//! (SIGSTOP, then SIGCONT), of a given length; then the run waits until the cluster is back to normal (every
//! host sees every other alive, the owner runs the vserver and holds a renewed lease, and at least the takeover
//! timeout and a second have passed since the blip began, plus a margin). For each blip it counts the
//! vserver's stops (the sampler saw it leave a host, or its processes on the owner were all replaced), restarts
//! and fences (the agents' accounts), moves (takeovers to a new epoch in the ownership table), and the client's
//! longest gap (`GET /` every 10 ms). At or under the blip budget none of the first three may happen; longer
//! blips are reported (they may move the vserver: that is the trade-off, not a failure).

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use super::outage::while_probing;
use super::takeover::{check, BLIP_BUDGET_MS};
use super::takeover_cluster::{now_unix_ms, stops, Cluster};
use crate::faults::Sampler;

/// What a blip does to the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlipKind {
    /// Its link cut, both ways.
    Cut,
    /// Its agent frozen (SIGSTOP, then SIGCONT).
    Freeze,
}

impl BlipKind {
    fn word(self) -> &'static str {
        match self {
            BlipKind::Cut => "cut",
            BlipKind::Freeze => "freeze",
        }
    }
}

/// One blip and what it caused.
#[derive(Debug, Clone, Serialize)]
pub struct Blip {
    /// Cut or freeze.
    pub kind: BlipKind,
    /// Its length as asked, ms.
    pub length_ms: u64,
    /// Its length as held: from the fault's command back to the end's command back, ms.
    pub held_ms: f64,
    /// The owner it hit.
    pub owner: String,
    /// Times a host stopped running the vserver.
    pub stops: usize,
    /// Restarts of the vserver after it died on its own (the agents' accounts).
    pub restarts: usize,
    /// Takeovers (the owner changed in the ownership table).
    pub moves: usize,
    /// Fences of the vserver (the agents' accounts; a host whose copy was then taken over and moved aside may
    /// not account for its fence: its stop is counted all the same).
    pub fences: usize,
    /// The client's longest run of failed probes, ms.
    pub gap_ms: f64,
}

/// The blip run.
#[derive(Debug, Clone, Serialize)]
pub struct BlipReport {
    /// The blip budget, ms: at or under it, no stop, restart or move.
    pub budget_ms: u64,
    /// Every blip, in the order they ran.
    pub blips: Vec<Blip>,
    /// The most hosts seen running the vserver at one instant (must be 1).
    pub most_copies_at_once: usize,
}

/// Sums over some blips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlipSums {
    /// Blips.
    pub blips: usize,
    /// Stops.
    pub stops: usize,
    /// Restarts.
    pub restarts: usize,
    /// Moves.
    pub moves: usize,
    /// Fences.
    pub fences: usize,
}

impl BlipReport {
    /// The sums over the blips at or under the budget (`within`) or over it.
    pub fn sums(&self, within: bool) -> BlipSums {
        let mut s = BlipSums::default();
        for b in self.blips.iter().filter(|b| (b.length_ms <= self.budget_ms) == within) {
            s.blips += 1;
            s.stops += b.stops;
            s.restarts += b.restarts;
            s.moves += b.moves;
            s.fences += b.fences;
        }
        s
    }

    /// The client's longest gap over the blips at or under the budget, ms.
    pub fn longest_gap_within_ms(&self) -> f64 {
        self.blips.iter().filter(|b| b.length_ms <= self.budget_ms).map(|b| b.gap_ms).fold(0.0, f64::max)
    }

    /// Its lines of the table: one row per length and kind (summed over its repeats).
    pub(super) fn table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "blips of the owner, 3 hosts: its link cut both ways, or its agent frozen (target: 0 stops, restarts and \
             moves at or under the blip budget, {:.1} s; longer ones may move it)",
            self.budget_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "  {:>6}  {:<6}  {:>4}  {:>5}  {:>8}  {:>5}  {:>6}  {:>15}",
            "LENGTH", "KIND", "RUNS", "STOPS", "RESTARTS", "MOVES", "FENCES", "LONGEST GAP"
        );
        let mut keys: Vec<(u64, BlipKind)> = Vec::new();
        for b in &self.blips {
            if !keys.contains(&(b.length_ms, b.kind)) {
                keys.push((b.length_ms, b.kind));
            }
        }
        keys.sort_by_key(|&(ms, kind)| (ms, kind == BlipKind::Freeze));
        for (ms, kind) in keys {
            let these: Vec<&Blip> = self.blips.iter().filter(|b| b.length_ms == ms && b.kind == kind).collect();
            let sum = |f: fn(&Blip) -> usize| these.iter().map(|b| f(b)).sum::<usize>();
            let gap = these.iter().map(|b| b.gap_ms).fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "  {:>4.1} s  {:<6}  {:>4}  {:>5}  {:>8}  {:>5}  {:>6}  {:>12.0} ms{}",
                ms as f64 / 1000.0,
                kind.word(),
                these.len(),
                sum(|b| b.stops),
                sum(|b| b.restarts),
                sum(|b| b.moves),
                sum(|b| b.fences),
                gap,
                if ms > self.budget_ms { "  (over the budget)" } else { "" }
            );
        }
        let w = self.sums(true);
        if w.blips > 0 {
            let met = w.stops + w.restarts + w.moves == 0;
            let _ = writeln!(
                out,
                "  at or under the budget ({} blips): stops {}, restarts {}, moves {}, fences {}; longest gap {:.0} ms   \
                 (target: 0 stops, restarts and moves) {}",
                w.blips,
                w.stops,
                w.restarts,
                w.moves,
                w.fences,
                self.longest_gap_within_ms(),
                if met { "ok" } else { "MISSED" }
            );
        }
        let o = self.sums(false);
        if o.blips > 0 {
            let _ = writeln!(
                out,
                "  over the budget ({} blips): stops {}, restarts {}, moves {}, fences {}   (reported, no target)",
                o.blips, o.stops, o.restarts, o.moves, o.fences
            );
        }
        let _ = writeln!(out, "  most hosts running it at once {} (must be 1)", self.most_copies_at_once);
    }
}

/// Holds the fault on `owner` for `length`; how long it was held, ms. The fault is lifted whatever happens.
fn inflict(c: &Cluster, kind: BlipKind, owner: usize, length: Duration) -> Result<f64> {
    match kind {
        BlipKind::Cut => {
            c.lab.set_link(owner, false)?;
            let held = Instant::now();
            std::thread::sleep(length);
            let mut lifted = c.lab.set_link(owner, true);
            if lifted.is_err() {
                lifted = c.lab.set_link(owner, true);
            }
            lifted.with_context(|| format!("setting h{owner}'s link up again"))?;
            Ok(held.elapsed().as_secs_f64() * 1000.0)
        }
        BlipKind::Freeze => {
            let pid = Pid::from_raw(c.agents.pid(owner).context("the owner's agent does not run")? as i32);
            kill(pid, Signal::SIGSTOP).context("freezing the owner's agent")?;
            let held = Instant::now();
            std::thread::sleep(length);
            kill(pid, Signal::SIGCONT).context("thawing the owner's agent")?;
            Ok(held.elapsed().as_secs_f64() * 1000.0)
        }
    }
}

/// One blip of `kind` and `length_ms` on the owner: what it caused, and the most hosts seen running the vserver
/// at once meanwhile.
fn blip(c: &Cluster, kind: BlipKind, length_ms: u64) -> Result<(Blip, usize)> {
    let (owner, epoch) = c.owner().context("no owner in the table")?;
    let pids = c.lab.hosts[owner].pids(&c.name);
    anyhow::ensure!(!pids.is_empty(), "h{owner}, the owner, does not run {}", c.name);
    let since = now_unix_ms();
    let sampler = Sampler::start(c.lab, &c.name);
    let began = Instant::now();
    let (held_ms, gap_ms) = while_probing(&c.lab.client, c.addr, || {
        let held = inflict(c, kind, owner, Duration::from_millis(length_ms))?;
        c.settle(began, c.hold())?;
        Ok(held)
    })?;
    let seen = sampler.finish();
    if seen.most_at_once > 1 {
        eprintln!("bench takeover: RAN TWICE during a blip at (ms, hosts): {:?}", seen.overlaps);
    }
    let after = c.lab.hosts[owner].pids(&c.name);
    let replaced = !pids.iter().any(|p| after.contains(p));
    let (now, _) = c.owner().context("no owner in the table")?;
    let b = Blip {
        kind,
        length_ms,
        held_ms,
        owner: format!("h{owner}"),
        stops: stops(&seen).max(usize::from(replaced)),
        restarts: c.counted("restarted_unix_ms", since)?,
        moves: c.takeovers_after(epoch).len().max(usize::from(now != owner)),
        fences: c.counted("fenced_unix_ms", since)?,
        gap_ms,
    };
    Ok((b, seen.most_at_once))
}

/// Runs each blip of `lengths_ms`, cut and freeze, `repeats` times (interleaved: every length and kind once,
/// then again); the cluster must be at rest.
pub(super) fn run(c: &Cluster, lengths_ms: &[u64], repeats: usize, cancel: &AtomicBool) -> Result<BlipReport> {
    let total = lengths_ms.len() * 2 * repeats;
    eprintln!(
        "bench takeover: {total} blips of the owner (cuts of its link, freezes of its agent), 3 hosts, blip budget {:.1} s",
        BLIP_BUDGET_MS as f64 / 1000.0
    );
    let mut blips = Vec::new();
    let mut most = 0;
    for _ in 0..repeats {
        for &ms in lengths_ms {
            for kind in [BlipKind::Cut, BlipKind::Freeze] {
                check(cancel)?;
                let (b, copies) = match blip(c, kind, ms) {
                    Ok(done) => done,
                    Err(e) => {
                        // What the blips before it showed is worth keeping.
                        if !blips.is_empty() {
                            let partial = BlipReport { budget_ms: BLIP_BUDGET_MS, blips, most_copies_at_once: most };
                            let mut table = String::new();
                            partial.table(&mut table);
                            eprint!("bench takeover: the blips before the failure:\n{table}");
                        }
                        let what = format!("{} of the owner, {:.1} s", kind.word(), ms as f64 / 1000.0);
                        return Err(e.context(what));
                    }
                };
                most = most.max(copies);
                eprintln!(
                    "  blip {:>3}/{total}: {} of {} {:.1} s (held {:.0} ms): stops {}, restarts {}, moves {}, fences {}, client gap {:.0} ms",
                    blips.len() + 1,
                    kind.word(),
                    b.owner,
                    ms as f64 / 1000.0,
                    b.held_ms,
                    b.stops,
                    b.restarts,
                    b.moves,
                    b.fences,
                    b.gap_ms
                );
                if b.moves > 0 {
                    // The new owner's standbys (the old owner among them) take a replica before the next blip.
                    let (to, _) = c.owner().context("no owner in the table")?;
                    c.sync_from(to)?;
                }
                blips.push(b);
            }
        }
    }
    Ok(BlipReport { budget_ms: BLIP_BUDGET_MS, blips, most_copies_at_once: most })
}
