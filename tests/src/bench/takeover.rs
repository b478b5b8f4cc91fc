//! `vserver-lab bench takeover`: the time from a host crash to the service answering at its address again,
//! over many crashes, and the number of false takeovers over a long run with lossy links.
//!
//! Three hosts with the product's default timing and a watchdog each; a busybox vserver serving HTTP, placed
//! on h0 with standbys h1 and h2. Each trial crashes the host that runs it (its agent, its watchdog and every
//! process of its vservers killed at once, its link set down) and measures, from the kill, until the client
//! gets an answer at the vserver's address (probed every 10 ms); then the crashed host comes back, becomes a
//! standby and takes a replica. A sampler checks every 5 ms that the vserver never runs on two hosts.
//! The loss run drops 20% of the frames of every host's link, each way, and counts takeovers and fences.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::stats::percentile;
use super::Interrupted;
use crate::agents::{wait_for, Agents, Timing};
use crate::faults::{Sampler, Watchdogs};
use crate::Lab;

/// What to run.
#[derive(Debug, Clone)]
pub struct TakeoverOptions {
    /// Host-crash trials.
    pub trials: usize,
    /// Seconds of the run with 20% loss (0: none).
    pub loss_secs: u64,
    /// The loss, percent of frames each way on every host's link.
    pub loss_pct: u8,
}

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

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct TakeoverReport {
    /// Every crash.
    pub trials: Vec<Trial>,
    /// Recovery p50, ms.
    pub p50_ms: f64,
    /// Recovery p90, ms.
    pub p90_ms: f64,
    /// Recovery max, ms.
    pub max_ms: f64,
    /// The most hosts seen running the vserver at one instant over all trials (must be 1).
    pub most_copies_at_once: usize,
    /// The loss run's length, s.
    pub loss_secs: u64,
    /// The loss, percent each way.
    pub loss_pct: u8,
    /// Takeovers during the loss run (false ones: no host failed).
    pub loss_takeovers: usize,
    /// Self-fences during the loss run.
    pub loss_fences: usize,
    /// Times the vserver stopped or moved during the loss run.
    pub loss_moves: usize,
}

impl TakeoverReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "automatic takeover, 3 hosts, default timing (takeover timeout 2.0 s)");
        let _ = writeln!(out, "  host-crash trials            {}", self.trials.len());
        let _ = writeln!(
            out,
            "  recovery (kill -> answer)    p50 {:.0} ms   p90 {:.0} ms   max {:.0} ms   (targets: p50 <= 3000, max <= 5000)",
            self.p50_ms, self.p90_ms, self.max_ms
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
        if self.loss_secs > 0 {
            let _ = writeln!(
                out,
                "  {}% loss on every link, {} s: false takeovers {}, fences {}, stops or moves {}   (target: 0 false takeovers)",
                self.loss_pct, self.loss_secs, self.loss_takeovers, self.loss_fences, self.loss_moves
            );
        }
        out
    }
}

/// Runs the benchmark; Ctrl-C ends it early with [`Interrupted`] after cleaning up.
pub fn run_takeover_bench(opts: &TakeoverOptions, cancel: &AtomicBool) -> Result<TakeoverReport> {
    if opts.trials == 0 && opts.loss_secs == 0 {
        bail!("nothing to run: --trials and --loss-secs are both 0");
    }
    let result = measure(opts, cancel);
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    result
}

fn check(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    Ok(())
}

fn vserver(lab: &Lab, host: usize, args: &[&str], local: bool) -> Result<()> {
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

fn owner(agents: &Agents, i: usize, name: &str) -> Option<String> {
    let status = agents.status(i).ok()?;
    status["ownership"]["owners"][name]["owner"].as_str().map(str::to_string)
}

fn takeovers(agents: &Agents, i: usize) -> Vec<serde_json::Value> {
    agents.status(i).ok().and_then(|s| s["takeovers"].as_array().cloned()).unwrap_or_default()
}

fn all_alive(agents: &Agents, n: usize) -> bool {
    (0..n).all(|o| (0..n).filter(|p| *p != o).all(|p| agents.peer_state(o, p).as_deref() == Some("alive")))
}

fn measure(opts: &TakeoverOptions, cancel: &AtomicBool) -> Result<TakeoverReport> {
    let lab = Lab::new(3)?;
    let mut dogs = Watchdogs::start(&lab)?;
    let name = "web";
    let addr = lab.free_addr(0);
    eprintln!("bench takeover: building {name} on h0, agents with the default timing");
    vserver(&lab, 0, &[name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true)?;
    crate::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(name), "bench")?;
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    // The same vserver moves many times on purpose: the ping-pong limit is lifted.
    let extra = "[failures]\nmax_relocate = 100000\n";
    let mut agents = Agents::start_full(&lab, Timing::default(), Some(&cluster), extra)?;
    if wait_for(Duration::from_secs(20), || all_alive(&agents, 3)).is_none() {
        bail!("the agents did not see each other alive; log of h0:\n{}", agents.log(0));
    }
    vserver(&lab, 0, &[name, "start"], false)?;
    if lab.client.wait_http(addr, 80, Instant::now() + Duration::from_secs(20)).is_none() {
        bail!("{name} does not answer at {addr}");
    }
    if wait_for(Duration::from_secs(20), || owner(&agents, 0, name).as_deref() == Some("h0")).is_none() {
        bail!("the cluster did not record h0 as the owner; log:\n{}", agents.log(0));
    }
    vserver(&lab, 0, &[name, "sync"], false)?;

    let sampler = Sampler::start(&lab, name);
    let mut trials = Vec::new();
    let mut on = 0usize;
    for trial in 0..opts.trials {
        check(cancel)?;
        let before = takeovers(&agents, (on + 1) % 3).len();
        // The crash.
        let killed = Instant::now();
        agents.kill9(on);
        dogs.kill9(on);
        lab.hosts[on].kill_vservers();
        lab.set_link(on, false)?;
        let mut answered = None;
        while killed.elapsed() < Duration::from_secs(30) {
            if lab.client.http_get(addr, 80, Duration::from_millis(100)).is_ok() {
                answered = Some(killed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let recovery = answered.ok_or_else(|| {
            anyhow!(
                "trial {}: no answer 30 s after the crash of h{on}; log of h{}:\n{}",
                trial + 1,
                (on + 1) % 3,
                agents.log((on + 1) % 3)
            )
        })?;
        let to = (0..3).find(|&i| i != on && lab.hosts[i].runs(name)).context("nobody runs it")?;
        let record = wait_for(Duration::from_secs(10), || takeovers(&agents, to).len() > before)
            .and_then(|_| takeovers(&agents, to).last().cloned());
        let phases_ms: Vec<(String, u64)> =
            record.and_then(|r| serde_json::from_value(r["phases_ms"].clone()).ok()).unwrap_or_default();
        eprintln!(
            "  trial {:>2}/{}: h{on} crashed, h{to} answers after {} ms ({})",
            trial + 1,
            opts.trials,
            recovery.as_millis(),
            phases_ms.iter().map(|(p, ms)| format!("{p} {ms}")).collect::<Vec<_>>().join(", ")
        );
        trials.push(Trial {
            crashed: format!("h{on}"),
            to: format!("h{to}"),
            recovery_ms: recovery.as_secs_f64() * 1000.0,
            phases_ms,
        });
        // The crashed host comes back, keeps its copy aside and takes a replica from the new owner.
        lab.set_link(on, true)?;
        dogs.spawn(on)?;
        agents.spawn(on)?;
        let conf = lab.hosts[on].conf_dir.join(format!("{name}.conf"));
        if wait_for(Duration::from_secs(20), || all_alive(&agents, 3) && !conf.exists()).is_none() {
            bail!("h{on} did not come back as a standby; log:\n{}", agents.log(on));
        }
        vserver(&lab, to, &[name, "sync"], false)?;
        on = to;
    }
    let seen = sampler.finish();
    if seen.most_at_once > 1 {
        eprintln!("bench takeover: RAN TWICE at (ms since the first trial, hosts): {:?}", seen.overlaps);
    }

    // The loss run.
    let (mut loss_takeovers, mut loss_fences, mut loss_moves) = (0, 0, 0);
    if opts.loss_secs > 0 {
        check(cancel)?;
        eprintln!("bench takeover: {}% loss on every link for {} s", opts.loss_pct, opts.loss_secs);
        let before: usize = takeovers(&agents, on).len();
        let fences_before: usize = (0..3).map(|i| agents.log(i).matches("lease lost").count()).sum();
        let sampler = Sampler::start(&lab, name);
        for i in 0..3 {
            lab.set_loss(i, opts.loss_pct)?;
        }
        let began = Instant::now();
        let mut result = Ok(());
        while began.elapsed() < Duration::from_secs(opts.loss_secs) {
            if let Err(e) = check(cancel) {
                result = Err(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for i in 0..3 {
            lab.set_loss(i, 0)?;
        }
        result?;
        let loss_seen = sampler.finish();
        std::thread::sleep(Duration::from_secs(2));
        loss_takeovers = (0..3).map(|i| takeovers(&agents, i).len()).max().unwrap_or(0).saturating_sub(before);
        loss_fences = (0..3).map(|i| agents.log(i).matches("lease lost").count()).sum::<usize>() - fences_before;
        loss_moves = loss_seen.changes.len().saturating_sub(1);
        if loss_seen.most_at_once > 1 {
            bail!("during the loss run the vserver ran on two hosts at once: {:?}", loss_seen.overlaps);
        }
    }
    let ms: Vec<f64> = trials.iter().map(|t| t.recovery_ms).collect();
    Ok(TakeoverReport {
        p50_ms: percentile(&ms, 50.0).unwrap_or(0.0),
        p90_ms: percentile(&ms, 90.0).unwrap_or(0.0),
        max_ms: ms.iter().cloned().fold(0.0, f64::max),
        trials,
        most_copies_at_once: seen.most_at_once,
        loss_secs: opts.loss_secs,
        loss_pct: opts.loss_pct,
        loss_takeovers,
        loss_fences,
        loss_moves,
    })
}
