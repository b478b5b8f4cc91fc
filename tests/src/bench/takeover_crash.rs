//! The crash trials of `bench takeover`: each crashes the host that runs the vserver (its agent, its watchdog
//! and every process of its vservers killed at once, its link set down) and measures, from the kill, until the
//! client gets an answer at the vserver's address (probed every 10 ms); then the crashed host comes back,
//! becomes a standby and takes a replica from the new owner.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::stats::percentile;
use super::takeover::check;
use super::takeover_cluster::Cluster;
use crate::agents::wait_for;
use crate::faults::Sampler;

/// Recovery targets: p50 and max, ms (issue 15).
pub(super) const P50_TARGET_MS: f64 = 3000.0;
/// See [`P50_TARGET_MS`].
pub(super) const MAX_TARGET_MS: f64 = 5000.0;

/// One crash.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// The host crashed.
    pub crashed: String,
    /// The host that took over.
    pub to: String,
    /// From the kill to the client's first answer, ms.
    pub recovery_ms: f64,
    /// The takeover's phases as the coordinator recorded them, ms.
    pub phases_ms: Vec<(String, u64)>,
}

/// The crash trials with one cluster size.
#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    /// Hosts in the cluster.
    pub hosts: usize,
    /// Every crash.
    pub trials: Vec<Trial>,
    /// Recovery p50, ms.
    pub p50_ms: f64,
    /// Recovery p90, ms.
    pub p90_ms: f64,
    /// Recovery max, ms.
    pub max_ms: f64,
    /// The most hosts seen running the vserver at one instant over the trials (must be 1).
    pub most_copies_at_once: usize,
    /// Recovery p50 over the keepalived baseline's, measured in the same run (none without it).
    pub keepalived_ratio: Option<f64>,
}

impl CrashReport {
    /// Its lines of the table.
    pub(super) fn table(&self, out: &mut String) {
        let _ = writeln!(out, "host crashes, {} hosts: {} trials", self.hosts, self.trials.len());
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        let _ = writeln!(
            out,
            "  recovery (kill -> answer)    p50 {:.0} ms   p90 {:.0} ms   max {:.0} ms   (targets: p50 <= {:.0} {}, max <= {:.0} {})",
            self.p50_ms,
            self.p90_ms,
            self.max_ms,
            P50_TARGET_MS,
            verdict(self.p50_ms <= P50_TARGET_MS),
            MAX_TARGET_MS,
            verdict(self.max_ms <= MAX_TARGET_MS)
        );
        let mut names: Vec<String> = Vec::new();
        for t in &self.trials {
            for (p, _) in &t.phases_ms {
                if !names.contains(p) {
                    names.push(p.clone());
                }
            }
        }
        let medians: Vec<String> = names
            .iter()
            .map(|n| {
                let v: Vec<f64> = self
                    .trials
                    .iter()
                    .filter_map(|t| t.phases_ms.iter().find(|(p, _)| p == n).map(|(_, ms)| *ms as f64))
                    .collect();
                format!("{n} {:.0}", percentile(&v, 50.0).unwrap_or(0.0))
            })
            .collect();
        let _ = writeln!(out, "  phases, median ms            {}", medians.join(", "));
        let _ = writeln!(out, "  most hosts running it at once {} (must be 1)", self.most_copies_at_once);
    }
}

fn takeovers(c: &Cluster, i: usize) -> Vec<serde_json::Value> {
    c.agents.status(i).ok().and_then(|s| s["takeovers"].as_array().cloned()).unwrap_or_default()
}

/// Crashes the owner `trials` times; the vserver must be running on its owner, the cluster at rest.
pub(super) fn run(c: &mut Cluster, trials: usize, cancel: &AtomicBool) -> Result<CrashReport> {
    let (n, name, addr) = (c.n, c.name.clone(), c.addr);
    let mut on = c.owner().context("no owner in the table")?.0;
    eprintln!("bench takeover: {trials} host crashes, {n} hosts");
    let sampler = Sampler::start(c.lab, &name);
    let mut done = Vec::new();
    for trial in 0..trials {
        check(cancel)?;
        let next = (on + 1) % n;
        let before = takeovers(c, next).len();
        // The crash.
        let killed = Instant::now();
        c.agents.kill9(on);
        c.dogs.kill9(on);
        c.lab.hosts[on].kill_vservers();
        c.lab.set_link(on, false)?;
        let mut answered = None;
        while killed.elapsed() < Duration::from_secs(30) {
            if c.lab.client.http_get(addr, 80, Duration::from_millis(100)).is_ok() {
                answered = Some(killed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let recovery = answered.ok_or_else(|| {
            anyhow!(
                "trial {}: no answer 30 s after the crash of h{on}; log of h{next}:\n{}",
                trial + 1,
                c.log_tail(next)
            )
        })?;
        let to = (0..n).find(|&i| i != on && c.lab.hosts[i].runs(&name)).context("nobody runs it")?;
        let record = wait_for(Duration::from_secs(10), || takeovers(c, to).len() > before)
            .and_then(|_| takeovers(c, to).last().cloned());
        let phases_ms: Vec<(String, u64)> =
            record.and_then(|r| serde_json::from_value(r["phases_ms"].clone()).ok()).unwrap_or_default();
        eprintln!(
            "  trial {:>2}/{trials}, {n} hosts: h{on} crashed, h{to} answers after {} ms ({})",
            trial + 1,
            recovery.as_millis(),
            phases_ms.iter().map(|(p, ms)| format!("{p} {ms}")).collect::<Vec<_>>().join(", ")
        );
        done.push(Trial {
            crashed: format!("h{on}"),
            to: format!("h{to}"),
            recovery_ms: recovery.as_secs_f64() * 1000.0,
            phases_ms,
        });
        // The crashed host comes back, keeps its copy aside and takes a replica from the new owner.
        c.lab.set_link(on, true)?;
        c.dogs.spawn(on)?;
        c.agents.spawn(on)?;
        let conf = c.lab.hosts[on].conf_dir.join(format!("{name}.conf"));
        if wait_for(Duration::from_secs(30), || c.all_alive() && !conf.exists()).is_none() {
            bail!("h{on} did not come back as a standby; log:\n{}", c.log_tail(on));
        }
        c.sync_from(to)?;
        // Each trial is one crash in a healthy cluster: the host back from the last one holds its lease again.
        if wait_for(Duration::from_secs(30), || c.leases_held()).is_none() {
            bail!("h{on} did not win its lease back; log:\n{}", c.log_tail(on));
        }
        on = to;
    }
    let seen = sampler.finish();
    if seen.most_at_once > 1 {
        eprintln!("bench takeover: RAN TWICE at (ms since the first trial, hosts): {:?}", seen.overlaps);
    }
    // The next run starts from a cluster at rest: every lease renewed.
    c.measure_leases();
    let ms: Vec<f64> = done.iter().map(|t| t.recovery_ms).collect();
    Ok(CrashReport {
        hosts: n,
        p50_ms: percentile(&ms, 50.0).unwrap_or(0.0),
        p90_ms: percentile(&ms, 90.0).unwrap_or(0.0),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
        trials: done,
        most_copies_at_once: seen.most_at_once,
        keepalived_ratio: None,
    })
}
