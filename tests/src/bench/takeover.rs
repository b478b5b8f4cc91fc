//! `vserver-lab bench takeover`: automatic takeover, and what must not cause one. Four runs, each selectable
//! (`--only`), all with the product's default timing and a watchdog on every host, on a busybox vserver
//! serving HTTP at its own address, placed on h0 with every other host a standby:
//!
//! - **crash** ([`super::takeover_crash`]): host crashes in a lab of 3 and of 5 hosts, each timed from the
//!   kill to the client's first answer at the vserver's address; p50/p90/max per size;
//! - **blip** ([`super::takeover_blip`]): cuts of the owner's link and freezes of its agent of 0.2 to 1.5 s,
//!   counting stops, restarts, moves and fences, and the client's longest gap; none of the first three is
//!   allowed at or under the blip budget;
//! - **slow** ([`super::takeover_slow`]): 200 ms each way and 20% loss on every host's link for 5 minutes,
//!   counting fences, takeovers and the client's failed requests;
//! - **restarts** ([`super::takeover_restart`]): clean restarts of the owner's agent in a row (SIGTERM, the
//!   wait for its exit, a new start, as systemd does), counting fences and the vserver's stops.
//!
//! The crash run has a baseline, measured in the same run before the product's trials when keepalived is
//! installed (`--no-baseline` skips it): keepalived (VRRP, its default timing, `advert_int` 1 s) moving a floating
//! address between two hosts of a lab of its own, each running a plain busybox httpd, crashed as the product's
//! owner is ([`super::takeover_keepalived`]); each cluster size's p50 is printed over keepalived's p50.
//!
//! The blip, slow and restart runs share the 3-host lab (after its crash trials). A sampler checks every 5 ms
//! during each run that the vserver never runs on two hosts. The lab lifts the limits on restarts and
//! relocations (`[failures]`), so that a run goes on whatever happens; what happened is counted instead.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, ensure, Result};
use serde::Serialize;

use super::takeover_blip::BlipReport;
use super::takeover_cluster::{Cluster, DEFAULT_TAKEOVER_TIMEOUT_MS};
use super::takeover_crash::CrashReport;
use super::takeover_keepalived::Baseline;
use super::takeover_restart::RestartReport;
use super::takeover_slow::SlowReport;
use super::Interrupted;
use crate::Lab;

/// The blip budget of the default timing (docs/failover.md, "Failure budgets"): a cut of the owner's link or
/// a freeze of its agent at most this long must stop, restart and move nothing.
pub const BLIP_BUDGET_MS: u64 = 1000;

/// One run of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TakeoverRun {
    /// Host crashes, with each cluster size of `--hosts`.
    Crash,
    /// Cuts of the owner's link and freezes of its agent.
    Blip,
    /// Delay and loss on every host's link.
    Slow,
    /// Clean restarts of the owner's agent.
    Restarts,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct TakeoverOptions {
    /// The runs (all when empty).
    pub only: Vec<TakeoverRun>,
    /// Cluster sizes of the crash trials (3 or more hosts each).
    pub hosts: Vec<usize>,
    /// Host-crash trials per cluster size.
    pub trials: usize,
    /// Lengths of the blips, ms.
    pub blips_ms: Vec<u64>,
    /// Times each blip (each length, cut and freeze) runs.
    pub blip_repeats: usize,
    /// Seconds of the slow-link run (0: none).
    pub slow_secs: u64,
    /// The delay of every frame a host sends during that run, ms.
    pub slow_delay_ms: u64,
    /// The loss during that run, percent of frames each way on every host's link.
    pub loss_pct: u8,
    /// Clean restarts of the owner's agent in a row (0: none).
    pub restarts: usize,
    /// Whether the crash run measures its keepalived baseline (when keepalived is installed).
    pub baseline: bool,
}

impl Default for TakeoverOptions {
    /// The full benchmark (`vserver-lab bench takeover` without flags).
    fn default() -> Self {
        TakeoverOptions {
            only: Vec::new(),
            hosts: vec![3, 5],
            trials: 20,
            blips_ms: vec![200, 400, 600, 800, 1000, 1200, 1500],
            blip_repeats: 3,
            slow_secs: 300,
            slow_delay_ms: 200,
            loss_pct: 20,
            restarts: 50,
            baseline: true,
        }
    }
}

impl TakeoverOptions {
    /// The short form of `bench report --quick`: 5 crashes per size, blips of 0.4 and 1.0 s once, 60 s of slow
    /// link, 10 restarts.
    pub fn quick() -> Self {
        TakeoverOptions {
            trials: 5,
            blips_ms: vec![400, 1000],
            blip_repeats: 1,
            slow_secs: 60,
            restarts: 10,
            ..TakeoverOptions::default()
        }
    }

    /// Whether `run` is selected and has something to do.
    pub fn runs(&self, run: TakeoverRun) -> bool {
        let selected = self.only.is_empty() || self.only.contains(&run);
        selected
            && match run {
                TakeoverRun::Crash => self.trials > 0 && !self.hosts.is_empty(),
                TakeoverRun::Blip => self.blip_repeats > 0 && !self.blips_ms.is_empty(),
                TakeoverRun::Slow => self.slow_secs > 0,
                TakeoverRun::Restarts => self.restarts > 0,
            }
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct TakeoverReport {
    /// The takeover timeout the agents reported, ms.
    pub takeover_timeout_ms: u64,
    /// The blip budget the blip run holds the product to, ms.
    pub blip_budget_ms: u64,
    /// The crash trials, one entry per cluster size.
    pub crash: Vec<CrashReport>,
    /// The crash run's baseline, keepalived (none without a crash run).
    pub keepalived: Option<Baseline>,
    /// The blip run.
    pub blip: Option<BlipReport>,
    /// The slow-link run.
    pub slow: Option<SlowReport>,
    /// The agent restarts.
    pub restarts: Option<RestartReport>,
    /// The most hosts seen running the vserver at one instant over every run (must be 1).
    pub most_copies_at_once: usize,
}

impl TakeoverReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "automatic takeover, default timing (takeover timeout {:.1} s, blip budget {:.1} s), a watchdog per host",
            self.takeover_timeout_ms as f64 / 1000.0,
            self.blip_budget_ms as f64 / 1000.0
        );
        for c in &self.crash {
            c.table(&mut out);
            if let Some(k) = &self.keepalived {
                let _ = writeln!(out, "{}", k.vs_line(c.p50_ms));
            }
        }
        if let Some(k) = &self.keepalived {
            k.table(&mut out);
        }
        if let Some(b) = &self.blip {
            b.table(&mut out);
        }
        if let Some(s) = &self.slow {
            s.table(&mut out);
        }
        if let Some(r) = &self.restarts {
            r.table(&mut out);
        }
        let _ = writeln!(out, "most hosts running it at once, every run: {} (must be 1)", self.most_copies_at_once);
        out
    }
}

/// Runs the benchmark; Ctrl-C ends it early with [`Interrupted`] after cleaning up.
pub fn run_takeover_bench(opts: &TakeoverOptions, cancel: &AtomicBool) -> Result<TakeoverReport> {
    let any = [TakeoverRun::Crash, TakeoverRun::Blip, TakeoverRun::Slow, TakeoverRun::Restarts]
        .into_iter()
        .any(|r| opts.runs(r));
    if !any {
        bail!("nothing to run: the selected runs have no trials, blips, seconds or restarts");
    }
    for &n in &opts.hosts {
        ensure!((3..=15).contains(&n), "a crash trial needs 3 to 15 hosts, not {n}");
    }
    let result = measure(opts, cancel);
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    result
}

/// Fails with [`Interrupted`] once Ctrl-C was pressed.
pub(super) fn check(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    Ok(())
}

fn measure(opts: &TakeoverOptions, cancel: &AtomicBool) -> Result<TakeoverReport> {
    let others = opts.runs(TakeoverRun::Blip) || opts.runs(TakeoverRun::Slow) || opts.runs(TakeoverRun::Restarts);
    let mut sizes: Vec<usize> = Vec::new();
    if opts.runs(TakeoverRun::Crash) {
        for &n in &opts.hosts {
            if !sizes.contains(&n) {
                sizes.push(n);
            }
        }
    }
    // The other runs go in the 3-host lab, after its crash trials; in a lab of their own without them.
    if others && !sizes.contains(&3) {
        sizes.push(3);
    }
    let mut report = TakeoverReport {
        takeover_timeout_ms: DEFAULT_TAKEOVER_TIMEOUT_MS,
        blip_budget_ms: BLIP_BUDGET_MS,
        crash: Vec::new(),
        keepalived: None,
        blip: None,
        slow: None,
        restarts: None,
        most_copies_at_once: 0,
    };
    // The baseline first, in a lab of its own (dropped before the product's labs are built).
    if opts.runs(TakeoverRun::Crash) {
        report.keepalived = Some(if opts.baseline {
            super::takeover_keepalived::baseline(opts.trials, cancel)?
        } else {
            Baseline::Skipped { reason: "--no-baseline".to_string() }
        });
    }
    for n in sizes {
        check(cancel)?;
        let lab = Lab::new(n)?;
        let mut c = Cluster::build(&lab)?;
        report.takeover_timeout_ms = c.takeover_timeout_ms;
        if opts.runs(TakeoverRun::Crash) && opts.hosts.contains(&n) {
            let mut r = super::takeover_crash::run(&mut c, opts.trials, cancel)?;
            let theirs = report.keepalived.as_ref().and_then(Baseline::p50_ms);
            r.keepalived_ratio = theirs.and_then(|k| super::takeover_keepalived::ratio(r.p50_ms, k));
            report.most_copies_at_once = report.most_copies_at_once.max(r.most_copies_at_once);
            report.crash.push(r);
        }
        if n != 3 {
            continue;
        }
        if opts.runs(TakeoverRun::Blip) {
            let r = super::takeover_blip::run(&c, &opts.blips_ms, opts.blip_repeats, cancel)?;
            report.most_copies_at_once = report.most_copies_at_once.max(r.most_copies_at_once);
            report.blip = Some(r);
        }
        if opts.runs(TakeoverRun::Slow) {
            let r = super::takeover_slow::run(&c, opts, cancel)?;
            report.most_copies_at_once = report.most_copies_at_once.max(r.most_copies_at_once);
            report.slow = Some(r);
        }
        if opts.runs(TakeoverRun::Restarts) {
            let r = super::takeover_restart::run(&mut c, opts.restarts, cancel)?;
            report.most_copies_at_once = report.most_copies_at_once.max(r.most_copies_at_once);
            report.restarts = Some(r);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_form_is_the_short_one_and_selection_skips_empty_runs() {
        let q = TakeoverOptions::quick();
        assert_eq!(
            (q.trials, q.blips_ms.clone(), q.blip_repeats, q.slow_secs, q.restarts),
            (5, vec![400, 1000], 1, 60, 10)
        );
        assert_eq!(q.hosts, vec![3, 5]);
        assert!(q.baseline, "the crash run measures its keepalived baseline unless told not to");
        let only = TakeoverOptions { only: vec![TakeoverRun::Blip], ..TakeoverOptions::default() };
        assert!(only.runs(TakeoverRun::Blip) && !only.runs(TakeoverRun::Crash));
        let none = TakeoverOptions { slow_secs: 0, ..TakeoverOptions::default() };
        assert!(!none.runs(TakeoverRun::Slow) && none.runs(TakeoverRun::Restarts));
    }
}
