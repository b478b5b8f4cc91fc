//! `vserver-lab bench scale`: what an agent costs at rest as the cluster grows, and how fast a crashed host's
//! vservers come back. For each size, a lab of that many hosts; ten busybox vservers built on the last host
//! (a host that does not vote from six hosts up), each placed there with the host before it as standby; the
//! cluster formed as the README forms one (init, join), agents at the default timing; the ten started and
//! synced once. Once every host sees the peers it watches alive (the voters every host, the others the voters
//! and their partners) and a quiet moment, an idle window in which are measured: each agent's CPU (the
//! non-voters', the voters' and the leader's apart) and resident memory, the frames and bytes per second
//! crossing the switch, and the false suspicions (a peer judged suspect or dead while nothing failed). Then
//! the last host crashes (agent killed, vservers killed, link down) and each vserver's recovery is timed until
//! it runs on its standby. Last, the growth exponent of each figure across the sizes (the slope of
//! log(figure) over log(hosts)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::agent::proc_stat;
use super::takeover_cluster::vserver;
use super::Interrupted;
use crate::agents::{wait_for, Agents, Timing};
use crate::capture::Capture;
use crate::Lab;

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// The cluster sizes, in hosts.
    pub sizes: Vec<usize>,
    /// The idle window measured at each size.
    pub idle: Duration,
    /// Each host's run directory stays on the lab's disk (else a tmpfs of its own, as /run is on real hosts).
    pub run_dirs_on_disk: bool,
    /// The lab delivers each frame in the sender's context, charged to the sending agent (else the switch's
    /// ports receive on kernel threads of their own, as separate machines leave receiving to the receiver).
    pub delivery_in_sender: bool,
}

/// One size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Hosts in the cluster.
    pub hosts: usize,
    /// The non-voters' CPU, % of a core: median and max (none below 4 hosts... every host votes up to 4).
    pub nonvoter_cpu_median: Option<f64>,
    /// The highest non-voter CPU.
    pub nonvoter_cpu_max: Option<f64>,
    /// The voters' (leader excluded) CPU, % of a core, max.
    pub voter_cpu_max: f64,
    /// The leader's CPU, % of a core.
    pub leader_cpu: f64,
    /// The largest resident memory of an agent, MiB.
    pub rss_max_mib: f64,
    /// The largest resident memory of a non-voter, MiB.
    pub rss_nonvoter_max_mib: Option<f64>,
    /// The largest resident memory of a voter (the leader excluded), MiB.
    pub rss_voter_max_mib: f64,
    /// The leader's resident memory, MiB.
    pub rss_leader_mib: f64,
    /// The lab's network: the kernel threads on which the switch's ports receive (the bridge, and the delivery
    /// into the receivers' sockets), % of a core, all hosts together; `None` when the senders deliver.
    pub network_cpu: Option<f64>,
    /// Frames per second on the switch.
    pub frames_per_sec: f64,
    /// Bytes per second on the switch.
    pub bytes_per_sec: f64,
    /// Peers judged suspect or dead during the idle window, all agents together.
    pub false_suspicions: usize,
    /// How long forming the cluster and every agent seeing the peers it watches alive took, seconds; `None`
    /// when they never all did (the figures are then measured all the same, on the cluster as it is).
    pub formed_secs: Option<f64>,
    /// The crashed host's vservers' recovery (from the crash until it runs on its standby), seconds: median.
    pub recovery_p50_secs: Option<f64>,
    /// The slowest recovery, seconds.
    pub recovery_max_secs: Option<f64>,
    /// Of the crashed host's vservers, those that did not come back within the wait.
    pub not_recovered: usize,
    /// The takeovers' phases as the coordinator recorded them (detect, confirm, fence_hook, commit, promote,
    /// start), each the median over the crashed host's vservers, ms.
    pub recovery_phases_ms: Vec<(String, f64)>,
}

/// The vservers of the host that crashes.
const CRASHED_VSERVERS: usize = 10;

/// The longest wait for the crashed host's vservers to come back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Each size.
    pub rows: Vec<ScaleRow>,
    /// The growth exponent of each figure across the sizes measured (from 8 hosts up when there are).
    pub exponents: Vec<(String, f64)>,
    /// The switch's frames per second as a straight line in the number of hosts over the same sizes:
    /// (intercept, frames/s each host adds, R²). A cost linear in the hosts with a fixed part (the voters'
    /// traffic among themselves) has a log-log slope above 1 at small sizes that falls toward 1 as it grows.
    pub frames_line: Option<(f64, f64, f64)>,
    /// Where each host's run directory was: `tmpfs` (as /run on real hosts) or `disk` (the lab's).
    pub run_dirs: String,
    /// Who delivered the frames the switch received: `kernel threads` (as on separate machines) or `senders`.
    pub delivery: String,
}

impl ScaleReport {
    /// The table.
    pub fn table(&self) -> String {
        let mut out = format!("run directories on {}; frames delivered by {}\n", self.run_dirs, self.delivery);
        out.push_str(
            "hosts  non-voter CPU (median/max)  voter CPU  leader CPU  RSS non-voter/voter/leader   frames/s     bytes/s  \
             false suspicions  recovery p50/max  network CPU\n",
        );
        let never: Vec<String> =
            self.rows.iter().filter(|r| r.formed_secs.is_none()).map(|r| r.hosts.to_string()).collect();
        for r in &self.rows {
            let nv = match (r.nonvoter_cpu_median, r.nonvoter_cpu_max) {
                (Some(m), Some(x)) => format!("{m:.2}% / {x:.2}%"),
                _ => "-".into(),
            };
            let recovery = match (r.recovery_p50_secs, r.recovery_max_secs) {
                (Some(p), Some(x)) if r.not_recovered == 0 => format!("{p:.2} s / {x:.2} s"),
                (Some(p), Some(x)) => format!("{p:.2} s / {x:.2} s, {} never", r.not_recovered),
                _ => "none came back".into(),
            };
            let rss = format!(
                "{} / {:.1} / {:.1} MiB",
                r.rss_nonvoter_max_mib.map_or("-".to_string(), |m| format!("{m:.1}")),
                r.rss_voter_max_mib,
                r.rss_leader_mib
            );
            out.push_str(&format!(
                "{:>5}  {:>26}  {:>8.2}%  {:>9.2}%  {:>26}  {:>9.0}  {:>10.0}  {:>16}  {:>16}  {:>11}\n",
                r.hosts,
                nv,
                r.voter_cpu_max,
                r.leader_cpu,
                rss,
                r.frames_per_sec,
                r.bytes_per_sec,
                r.false_suspicions,
                recovery,
                r.network_cpu.map_or("-".to_string(), |c| format!("{c:.2}%"))
            ));
        }
        let formed: Vec<String> =
            self.rows.iter().filter_map(|r| r.formed_secs.map(|f| format!("{} hosts {f:.1} s", r.hosts))).collect();
        if !formed.is_empty() {
            out.push_str(&format!(
                "formed (init, joins, every host seeing the peers it watches alive): {}\n",
                formed.join(", ")
            ));
        }
        for r in self.rows.iter().filter(|r| !r.recovery_phases_ms.is_empty()) {
            let phases: Vec<String> = r.recovery_phases_ms.iter().map(|(p, ms)| format!("{p} {ms:.0}")).collect();
            out.push_str(&format!("recovery phases at {} hosts, median ms: {}\n", r.hosts, phases.join(", ")));
        }
        if !never.is_empty() {
            out.push_str(&format!(
                "with {} hosts the agents never all saw the peers they watch alive (measured as they were)\n",
                never.join(", ")
            ));
        }
        out.push_str("growth exponents (log figure over log hosts, the sizes that formed):\n");
        for (name, e) in &self.exponents {
            out.push_str(&format!("  {name:<28} {e:.2}\n"));
        }
        if let Some((a, b, r2)) = self.frames_line {
            out.push_str(&format!(
                "switch frames/s as a line over the same sizes: {a:.0} + {b:.1} x hosts (R^2 {r2:.4}): each host \
                 adds {b:.1} frames/s\n"
            ));
        }
        if self.rows.iter().any(|r| r.network_cpu.is_some()) {
            out.push_str(
                "network CPU: the kernel threads on which the switch's ports receive (the bridge and the delivery \
                 into the receivers' sockets), all hosts together, not charged to any agent\n",
            );
        }
        out.push_str(
            "targets: non-voter CPU <= 1%, voters and leader <= 2%, RSS < 20 MiB, switch traffic exponent <= 1.1, \
             0 false suspicions, recovery p50 <= 3 s\n",
        );
        out
    }
}

/// Lets the kernel's neighbour table (shared by every namespace) hold every host's entries for every other.
fn raise_neighbour_limits(hosts: usize) -> Result<()> {
    let needed = (hosts * hosts * 2).max(1024);
    for (i, name) in ["gc_thresh1", "gc_thresh2", "gc_thresh3"].iter().enumerate() {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let now: usize = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
        let want = needed * (i + 1);
        if now < want {
            std::fs::write(&path, want.to_string()).with_context(|| format!("raising {path}"))?;
        }
    }
    Ok(())
}

/// The voters, as h0 knows them (empty until it does).
fn voters_of(agents: &Agents) -> Vec<String> {
    agents
        .status(0)
        .ok()
        .and_then(|s| {
            s["ownership"]["raft"]["voters"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        })
        .unwrap_or_default()
}

/// Crashes `victim` (its agent and vservers killed, its link down) and times each of `names` until it runs
/// on `standby`: the row with the recovery figures.
fn recover(
    lab: &Lab,
    agents: &mut Agents,
    names: &[String],
    victim: usize,
    standby: usize,
    mut row: ScaleRow,
    check: &dyn Fn() -> Result<()>,
) -> Result<ScaleRow> {
    let n = lab.hosts.len();
    eprintln!("bench scale: {n} hosts: crashing h{victim}");
    let crashed = Instant::now();
    agents.kill9(victim);
    lab.hosts[victim].kill_vservers();
    lab.set_link(victim, false)?;
    let mut back: Vec<Option<f64>> = vec![None; names.len()];
    while crashed.elapsed() < RECOVERY_LIMIT && back.iter().any(Option::is_none) {
        check()?;
        for (k, name) in names.iter().enumerate() {
            if back[k].is_none() && lab.hosts[standby].runs(name) {
                back[k] = Some(crashed.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let times: Vec<f64> = back.iter().flatten().copied().collect();
    row.recovery_phases_ms = phases(agents, victim, times.len());
    row.not_recovered = names.len() - times.len();
    row.recovery_max_secs = times.iter().copied().reduce(f64::max);
    row.recovery_p50_secs = median(times);
    Ok(row)
}

/// The phases of the takeovers of `victim`'s vservers as the coordinator recorded them (in the cluster's event
/// log, shown by any surviving host's status), each phase's median, ms, in the order recorded. A record reaches
/// the log a moment after its vserver runs: waited for until there are `expected` of them (or 30 s went by).
fn phases(agents: &Agents, victim: usize, expected: usize) -> Vec<(String, f64)> {
    let witness = if victim == 0 { 1 } else { 0 };
    let from = format!("h{victim}");
    let read = || -> Vec<Vec<(String, u64)>> {
        let Ok(status) = agents.status(witness) else { return Vec::new() };
        status["takeovers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["from"] == from.as_str())
            .filter_map(|t| serde_json::from_value(t["phases_ms"].clone()).ok())
            .collect()
    };
    let _ = wait_for(Duration::from_secs(30), || read().len() >= expected);
    let records = read();
    let Some(first) = records.first() else { return Vec::new() };
    first
        .iter()
        .filter_map(|(phase, _)| {
            let all = records.iter().filter_map(|r| r.iter().find(|(p, _)| p == phase).map(|(_, ms)| *ms as f64));
            median(all.collect()).map(|m| (phase.clone(), m))
        })
        .collect()
}

/// The straight line through the points, least squares: (intercept, slope, R²).
fn line(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = points.iter().map(|(_, y)| (y - my) * (y - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 { sxy * sxy / (sxx * syy) } else { 1.0 };
    Some((my - slope * mx, slope, r2))
}

/// The slope of log(y) over log(x), least squares.
fn exponent(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> =
        points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).map(|(x, y)| (x.ln(), y.ln())).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    (den > 0.0).then(|| num / den)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Runs the benchmark (`cancel`: Ctrl-C).
pub fn run_scale_bench(opts: &ScaleOptions, cancel: &AtomicBool) -> Result<ScaleReport> {
    let check = || if cancel.load(Ordering::Relaxed) { Err(anyhow::anyhow!(Interrupted)) } else { Ok(()) };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as f64;
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        check()?;
        raise_neighbour_limits(n)?;
        let lab = Lab::new(n)?;
        let network_threads = match opts.delivery_in_sender {
            true => Vec::new(),
            false => lab.receive_on_kernel_threads()?,
        };
        // Each host's run directory on a tmpfs of its own, as /run is on real hosts: the agent writes its lease
        // file there ten times a second. Unmounted (lazily) when the size is done.
        let _run_dirs: Vec<crate::Tmpfs> = match opts.run_dirs_on_disk {
            true => Vec::new(),
            false => lab.hosts.iter().map(|h| crate::Tmpfs::mount(&h.run_dir, "64m")).collect::<Result<_>>()?,
        };
        let (victim, standby) = (n - 1, n - 2);
        eprintln!("bench scale: {n} hosts: building {CRASHED_VSERVERS} vservers on h{victim}");
        let names: Vec<String> = (0..CRASHED_VSERVERS).map(|k| format!("s{k}")).collect();
        let mut cluster = String::new();
        for name in &names {
            check()?;
            vserver(&lab, victim, &[name, "build", "--busybox"], true)?;
            crate::bench::install_httpd_service(&lab.hosts[victim].vservers_dir.join(name), name)?;
            cluster.push_str(&format!(
                "[vservers.{name}]\nprimary = \"h{victim}\"\nstandbys = [\"h{standby}\"]\ninterval_secs = 3600\n\n"
            ));
        }
        eprintln!("bench scale: {n} hosts: forming the cluster (init, join)");
        let t0 = Instant::now();
        let mut agents = Agents::form(&lab, Timing::default(), Some(&cluster), |_| String::new())?;
        // Every host sees alive the peers it watches (its own account), and the voters see every host alive. Each
        // host's status is asked once a round (asking it again for each of its peers made the check itself take
        // minutes at 128 hosts).
        let formed = || {
            let voters = voters_of(&agents);
            !voters.is_empty()
                && (0..n).all(|o| {
                    let votes = voters.contains(&format!("h{o}"));
                    let Ok(status) = agents.status(o) else { return false };
                    let peers = status["peers"].as_array().cloned().unwrap_or_default();
                    (0..n).filter(|p| *p != o).all(|p| {
                        match peers.iter().find(|peer| peer["name"] == format!("h{p}").as_str()) {
                            Some(peer) if votes || peer["watched"].as_bool() != Some(false) => peer["state"] == "alive",
                            Some(_) => true,
                            None => false,
                        }
                    })
                })
        };
        let formed_secs = wait_for(Duration::from_secs(60 + n as u64), formed).map(|_| t0.elapsed().as_secs_f64());
        if formed_secs.is_none() {
            eprintln!(
                "bench scale: {n} hosts: the agents never all saw the peers they watch alive; measuring the \
                 cluster as it is"
            );
        }
        for name in &names {
            check()?;
            vserver(&lab, victim, &[name, "start"], false)?;
        }
        let all_run = wait_for(Duration::from_secs(60), || names.iter().all(|v| lab.hosts[victim].runs(v)));
        anyhow::ensure!(all_run.is_some(), "the vservers do not all run on h{victim}:\n{}", agents.log(victim));
        for name in &names {
            check()?;
            vserver(&lab, victim, &[name, "sync"], false)?;
        }
        // A quiet moment: the leader elected, the learners added.
        std::thread::sleep(Duration::from_secs(3));
        let status = agents.status(0)?;
        let leader = status["ownership"]["raft"]["leader"].as_str().unwrap_or("").to_string();
        let voters = voters_of(&agents);
        let pids: Vec<u32> = (0..n).map(|i| agents.pid(i).context("an agent is not running")).collect::<Result<_>>()?;
        let logs_before: Vec<usize> = (0..n).map(|i| agents.log(i).len()).collect();
        let cpu0: Vec<u64> = pids.iter().map(|p| proc_stat(*p).map(|s| s.0)).collect::<Result<_>>()?;
        let network_cpu = || network_threads.iter().map(|p| proc_stat(*p).map_or(0, |s| s.0)).sum::<u64>();
        let network0 = network_cpu();
        let capture = Capture::start(lab.switch())?;
        eprintln!("bench scale: {n} hosts: idle for {} s", opts.idle.as_secs());
        let t1 = Instant::now();
        while t1.elapsed() < opts.idle {
            check()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        let frames = capture.finish();
        let secs = t1.elapsed().as_secs_f64();
        let network = (network_cpu() - network0) as f64 / ticks / secs * 100.0;
        let stats: Vec<(u64, u64)> = pids.iter().map(|p| proc_stat(*p)).collect::<Result<_>>()?;
        let cpu: Vec<f64> =
            stats.iter().zip(&cpu0).map(|((c, _), c0)| (c - c0) as f64 / ticks / secs * 100.0).collect();
        let rss: Vec<f64> = stats.iter().map(|(_, r)| *r as f64 * page / (1024.0 * 1024.0)).collect();
        let rss_max_mib = rss.iter().copied().fold(0.0, f64::max);
        let false_suspicions = (0..n)
            .map(|i| {
                let log = agents.log(i);
                let new = log.get(logs_before[i]..).unwrap_or("");
                new.lines().filter(|l| l.contains("peer suspect") || l.contains("peer dead")).count()
            })
            .sum();
        let name = |i: usize| format!("h{i}");
        let leader_cpu = (0..n).find(|&i| name(i) == leader).map_or(0.0, |i| cpu[i]);
        let rss_leader_mib = (0..n).find(|&i| name(i) == leader).map_or(0.0, |i| rss[i]);
        let rss_voter_max_mib =
            (0..n).filter(|&i| name(i) != leader && voters.contains(&name(i))).map(|i| rss[i]).fold(0.0, f64::max);
        let rss_nonvoter_max_mib = (0..n).filter(|&i| !voters.contains(&name(i))).map(|i| rss[i]).reduce(f64::max);
        let voter_cpu_max =
            (0..n).filter(|&i| name(i) != leader && voters.contains(&name(i))).map(|i| cpu[i]).fold(0.0, f64::max);
        let nonvoters: Vec<f64> = (0..n).filter(|&i| !voters.contains(&name(i))).map(|i| cpu[i]).collect();
        let row = ScaleRow {
            hosts: n,
            nonvoter_cpu_median: median(nonvoters.clone()),
            nonvoter_cpu_max: nonvoters.iter().copied().reduce(f64::max),
            voter_cpu_max,
            leader_cpu,
            rss_max_mib,
            rss_nonvoter_max_mib,
            rss_voter_max_mib,
            rss_leader_mib,
            network_cpu: (!opts.delivery_in_sender).then_some(network),
            frames_per_sec: frames.len() as f64 / secs,
            bytes_per_sec: frames.iter().map(Vec::len).sum::<usize>() as f64 / secs,
            false_suspicions,
            formed_secs,
            recovery_p50_secs: None,
            recovery_max_secs: None,
            not_recovered: CRASHED_VSERVERS,
            recovery_phases_ms: Vec::new(),
        };
        let row = recover(&lab, &mut agents, &names, victim, standby, row, &check)?;
        eprintln!("bench scale: {row:?}");
        rows.push(row);
    }
    // Fitted over the sizes whose agents all saw each other alive, from 8 hosts up when there are two such.
    let from8: Vec<&ScaleRow> = {
        let formed: Vec<&ScaleRow> = rows.iter().filter(|r| r.formed_secs.is_some()).collect();
        let big: Vec<&ScaleRow> = formed.iter().copied().filter(|r| r.hosts >= 8).collect();
        if big.len() >= 2 {
            big
        } else {
            formed
        }
    };
    let fit = |f: fn(&ScaleRow) -> f64| exponent(&from8.iter().map(|r| (r.hosts as f64, f(r))).collect::<Vec<_>>());
    let mut exponents = Vec::new();
    for (label, f) in [
        ("switch frames/s", (|r: &ScaleRow| r.frames_per_sec) as fn(&ScaleRow) -> f64),
        ("switch bytes/s", |r: &ScaleRow| r.bytes_per_sec),
        ("leader CPU", |r: &ScaleRow| r.leader_cpu),
        ("voter CPU (max)", |r: &ScaleRow| r.voter_cpu_max),
        ("non-voter CPU (median)", |r: &ScaleRow| r.nonvoter_cpu_median.unwrap_or(0.0)),
        ("RSS (max)", |r: &ScaleRow| r.rss_max_mib),
        ("recovery p50", |r: &ScaleRow| r.recovery_p50_secs.unwrap_or(0.0)),
    ] {
        if let Some(e) = fit(f) {
            exponents.push((label.to_string(), e));
        }
    }
    let frames_line = line(&from8.iter().map(|r| (r.hosts as f64, r.frames_per_sec)).collect::<Vec<_>>());
    let run_dirs = if opts.run_dirs_on_disk { "disk" } else { "tmpfs" }.to_string();
    let delivery = if opts.delivery_in_sender { "senders" } else { "kernel threads" }.to_string();
    Ok(ScaleReport { rows, exponents, frames_line, run_dirs, delivery })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponent_is_the_slope_in_log_log() {
        let square: Vec<(f64, f64)> = [3.0, 8.0, 16.0, 32.0].iter().map(|n| (*n, 5.0 * n * n)).collect();
        assert!((exponent(&square).unwrap() - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = [3.0, 8.0, 16.0].iter().map(|n| (*n, 7.0)).collect();
        assert!(exponent(&flat).unwrap().abs() < 1e-9);
        assert_eq!(exponent(&[(3.0, 1.0)]), None);
    }

    #[test]
    fn a_line_with_a_fixed_part_fits_exactly_though_its_exponent_is_above_one() {
        let pts: Vec<(f64, f64)> = [8.0, 16.0, 32.0, 64.0].iter().map(|n| (*n, 110.0 * n - 240.0)).collect();
        let (a, b, r2) = line(&pts).unwrap();
        assert!((a + 240.0).abs() < 1e-6 && (b - 110.0).abs() < 1e-9 && (r2 - 1.0).abs() < 1e-12, "{a} {b} {r2}");
        assert!(exponent(&pts).unwrap() > 1.1, "the slope in log-log is above 1 at small sizes");
        assert_eq!(line(&[(3.0, 1.0)]), None);
    }
}
