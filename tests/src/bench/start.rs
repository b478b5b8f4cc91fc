//! `bench start`: time from launching a start command to the service answering HTTP 200 at the
//! instance's address from the client, and the time to stop, for the product, LXC and the floor.
//!
//! Every instance is prepared untimed first; then they are started one after another and left
//! running (the last starts beside `count - 1` running ones), then stopped one after another.
//!
//! `vserver` and `unhardened` (the same vservers with every protection S_UNSAFE can turn off turned off,
//! and no process limit) are measured interleaved, instance by instance in alternating order, so that the
//! cost of the hardening is read from one run on one machine state.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::contender::{log_tail, wait_until, Contender};
use super::floor::Floor;
use super::lxc::LxcContainers;
use super::service::page;
use super::stats::{median, percentile};
use super::vserver::Vservers;
use super::Interrupted;
use crate::lab::Lab;

/// Most instances per variant: one address each from [`Lab::free_addr`].
pub const MAX_COUNT: usize = 150;

/// Most the hardened start may cost over the unhardened one, as a ratio of medians.
pub const HARDENING_TARGET: f64 = 1.10;

/// Port of the benchmark's service.
const PORT: u16 = 80;

/// Longest single HTTP attempt while waiting for an answer.
const ATTEMPT: Duration = Duration::from_millis(200);

/// How long a stopped instance is given to prove it no longer accepts connections.
const GONE_CHECK: Duration = Duration::from_millis(50);

/// A way of running the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The product: `vserver NAME start` / `stop`.
    Vserver,
    /// The product with its hardening turned off (`S_UNSAFE="seccomp userns devices procfs"`,
    /// `LIMIT_PIDS=unlimited`): what the hardening costs.
    Unhardened,
    /// LXC with the busybox template: `lxc-start -d` / `lxc-stop -k`.
    Lxc,
    /// A bare netns + macvlan + `unshare` + `chroot` shell sequence / kill and delete the netns.
    Floor,
    /// The floor with its macvlan made in the host and then moved into the namespace, as first
    /// specified; shows what moving a device costs.
    #[value(name = "floor-move")]
    #[serde(rename = "floor-move")]
    FloorMove,
}

impl Variant {
    /// The variant's name, as `--variants` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Vserver => "vserver",
            Variant::Unhardened => "unhardened",
            Variant::Lxc => "lxc",
            Variant::Floor => "floor",
            Variant::FloorMove => "floor-move",
        }
    }
}

/// What `bench start` measures.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Instances per variant, 1..=150.
    pub count: usize,
    /// Variants, measured in this order.
    pub variants: Vec<Variant>,
    /// Longest wait for one instance to answer.
    pub answer_timeout: Duration,
}

/// Timings of one variant; times in milliseconds, in instance order.
#[derive(Clone, Debug, Serialize)]
pub struct VariantReport {
    /// Which variant.
    pub variant: Variant,
    /// Instances that started and answered.
    pub runs: usize,
    /// Launch of the start command → first HTTP 200 from the client, per instance.
    pub start_ms: Vec<f64>,
    /// Duration of the stop, per instance.
    pub stop_ms: Vec<f64>,
    /// Median of `start_ms`.
    pub median_start_ms: Option<f64>,
    /// 90th percentile (nearest rank) of `start_ms`.
    pub p90_start_ms: Option<f64>,
    /// Median of `stop_ms`.
    pub median_stop_ms: Option<f64>,
    /// Why the variant stopped early, if it did.
    pub error: Option<String>,
}

/// The outcome of `bench start`.
#[derive(Clone, Debug, Serialize)]
pub struct StartReport {
    /// Instances asked for per variant.
    pub count: usize,
    /// One report per variant, in the order measured.
    pub variants: Vec<VariantReport>,
    /// Median start of vserver over median start of lxc.
    pub vserver_over_lxc: Option<f64>,
    /// Median start of vserver over median start of floor.
    pub vserver_over_floor: Option<f64>,
    /// Median start of vserver over median start of unhardened (target: at most [`HARDENING_TARGET`]).
    pub vserver_over_unhardened: Option<f64>,
    /// Whether vserver's median start beats lxc's; `None` unless both were measured in full.
    pub faster_than_lxc: Option<bool>,
}

/// Runs `bench start` in a fresh one-host lab. A variant that fails is reported with its error and
/// the others still run; Ctrl-C (`cancel`) ends the run with [`Interrupted`] once everything made
/// so far has been stopped and removed.
pub fn run_start(options: &StartOptions, cancel: &AtomicBool) -> Result<StartReport> {
    if options.count == 0 || options.count > MAX_COUNT {
        bail!("--count must be 1..={MAX_COUNT}, not {}", options.count);
    }
    eprintln!("bench start: building a one-host lab");
    let lab = Lab::new(1).context("building the lab")?;
    let mut reports = Vec::new();
    // Each variant gets addresses of its own when they fit: a stopped instance's network namespace is
    // dismantled by the kernel in the background, and until it is gone its interface may still answer
    // ARP for the address, which would send the next variant's first requests to a dead MAC.
    // vserver and unhardened run as one interleaved group; every other variant alone.
    let mut groups: Vec<Vec<Variant>> = Vec::new();
    for &v in &options.variants {
        let paired = matches!(v, Variant::Vserver | Variant::Unhardened);
        match groups
            .iter_mut()
            .find(|g| paired && g.iter().all(|w| matches!(w, Variant::Vserver | Variant::Unhardened)))
        {
            Some(g) if !g.contains(&v) => g.push(v),
            Some(_) => {}
            None => groups.push(vec![v]),
        }
    }
    let widest = groups.iter().map(Vec::len).max().unwrap_or(1);
    if options.count * widest > MAX_COUNT {
        bail!("--count must be at most {} when vserver and unhardened are measured together", MAX_COUNT / widest);
    }
    let own_addresses = options.count * options.variants.len() <= MAX_COUNT + 5;
    let mut next_base = 0;
    for group in groups {
        let base = if own_addresses { next_base } else { 0 };
        next_base += options.count * group.len();
        let names: Vec<&str> = group.iter().map(|v| v.name()).collect();
        eprintln!("bench start: {} × {}", names.join(" + "), options.count);
        let mut group_reports: Vec<VariantReport> = group
            .iter()
            .map(|&variant| VariantReport {
                variant,
                runs: 0,
                start_ms: Vec::new(),
                stop_ms: Vec::new(),
                median_start_ms: None,
                p90_start_ms: None,
                median_stop_ms: None,
                error: None,
            })
            .collect();
        let outcome = measure_group(&lab, &group, base, options, cancel, &mut group_reports);
        if cancel.load(Ordering::Relaxed) {
            return Err(anyhow!(Interrupted));
        }
        for mut report in group_reports {
            if let Err(err) = &outcome {
                eprintln!("bench start: {} failed: {err:#}", names.join(" + "));
                report.error = Some(format!("{err:#}"));
            }
            report.runs = report.start_ms.len();
            report.median_start_ms = median(&report.start_ms);
            report.p90_start_ms = percentile(&report.start_ms, 90.0);
            report.median_stop_ms = median(&report.stop_ms);
            reports.push(report);
        }
    }
    Ok(StartReport::new(options.count, reports))
}

/// Prepares, starts and stops `options.count` instances of each variant of `group` (variant `k` at the
/// lab's free addresses from `base + k * count` on), instance by instance, the variants' order alternating
/// from one instance to the next; fills `reports` (one per variant) as it goes.
fn measure_group(
    lab: &Lab,
    group: &[Variant],
    base: usize,
    options: &StartOptions,
    cancel: &AtomicBool,
    reports: &mut [VariantReport],
) -> Result<()> {
    let host = &lab.hosts[0];
    let mut contenders: Vec<Box<dyn Contender + '_>> = Vec::new();
    for &variant in group {
        contenders.push(match variant {
            Variant::Vserver => Box::new(Vservers::new(host, "vb", "")?),
            Variant::Unhardened => Box::new(Vservers::new(host, "vu", UNHARDENED_CONF)?),
            Variant::Lxc => Box::new(LxcContainers::new(host)?),
            Variant::Floor => Box::new(Floor::new(host, false)?),
            Variant::FloorMove => Box::new(Floor::new(host, true)?),
        });
    }
    let count = options.count;
    let marker = |k: usize, i: usize| format!("vserver-lab {} {i}", group[k].name());
    let addr = |k: usize, i: usize| lab.free_addr(base + k * count + i);
    // Instance `i` of each variant, in an order that alternates with `i`.
    let order = |i: usize| -> Vec<usize> {
        let mut ks: Vec<usize> = (0..group.len()).collect();
        ks.rotate_left(i % group.len());
        ks
    };

    for i in 0..count {
        for (k, contender) in contenders.iter_mut().enumerate() {
            check(cancel)?;
            contender
                .prepare(i, addr(k, i), &marker(k, i))
                .with_context(|| format!("preparing {} instance {i}", group[k].name()))?;
        }
    }
    eprintln!("bench start: {count} of each prepared");

    for i in 0..count {
        for k in order(i) {
            check(cancel)?;
            let name = group[k].name();
            let contender = &mut contenders[k];
            // Untimed: forget neighbours, so that an address reused from the previous variant is
            // resolved afresh instead of sent to a MAC address that is gone.
            lab.client.netns.ip(["neigh", "flush", "dev", &lab.client.dev])?;
            let launched = Instant::now();
            let child = contender.launch(i)?;
            let deadline = launched + options.answer_timeout;
            let answered = wait_for_answer(lab, addr(k, i), &page(&marker(k, i)), child, deadline, cancel)
                .with_context(|| {
                    format!(
                        "{name} instance {i} at {}; log {}:\n{}",
                        addr(k, i),
                        contender.log_path(i).display(),
                        log_tail(&contender.log_path(i))
                    )
                })?;
            let ms = millis(answered.duration_since(launched));
            reports[k].start_ms.push(ms);
            eprintln!("[{name}] {}/{count} start→answer {ms:.1} ms", i + 1);
        }
    }

    for i in 0..count {
        for k in order(i) {
            check(cancel)?;
            let name = group[k].name();
            let began = Instant::now();
            contenders[k].stop(i).with_context(|| format!("stopping {name} instance {i}"))?;
            let ms = millis(began.elapsed());
            if lab.client.tcp_connect_ok(addr(k, i), PORT, GONE_CHECK) {
                bail!("{name} instance {i} still accepts connections at {} after its stop", addr(k, i));
            }
            reports[k].stop_ms.push(ms);
            eprintln!("[{name}] {}/{count} stop {ms:.1} ms", i + 1);
        }
    }
    Ok(())
}

/// What `unhardened` vservers add to their conf: every protection S_UNSAFE names, off, and no process limit.
const UNHARDENED_CONF: &str = "S_UNSAFE=\"seccomp userns devices procfs\"\nLIMIT_PIDS=unlimited\n";

/// Polls until `addr` serves `expected`; the instant it did. Meanwhile the start command must not
/// fail, and once answered it must finish successfully before the deadline.
fn wait_for_answer(
    lab: &Lab,
    addr: Ipv4Addr,
    expected: &str,
    mut child: Child,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Instant> {
    let mut exited = None;
    let mut last_error = anyhow!("no attempt made");
    let answered = loop {
        check(cancel).inspect_err(|_| {
            let _ = child.kill();
            let _ = child.wait();
        })?;
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within the timeout; last attempt: {last_error:#}");
        }
        match lab.client.http_get(addr, PORT, ATTEMPT.min(deadline - now)) {
            Ok(body) if body == expected => break Instant::now(),
            Ok(body) => last_error = anyhow!("answered {body:?} instead of {expected:?}"),
            Err(err) => last_error = err,
        }
        if exited.is_none() {
            if let Some(status) = child.try_wait().context("waiting for the start command")? {
                if !status.success() {
                    bail!("the start command failed ({status})");
                }
                exited = Some(status);
            }
        }
        thread::sleep(Duration::from_millis(2));
    };
    if exited.is_none() {
        let status = wait_until(&mut child, deadline).context("the start command")?;
        if !status.success() {
            bail!("the service answered but the start command failed ({status})");
        }
    }
    Ok(answered)
}

fn check(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    Ok(())
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl StartReport {
    fn new(count: usize, variants: Vec<VariantReport>) -> StartReport {
        let complete_median =
            |v: Variant| variants.iter().find(|r| r.variant == v && r.error.is_none()).and_then(|r| r.median_start_ms);
        let ours = complete_median(Variant::Vserver);
        let lxc = complete_median(Variant::Lxc);
        let floor = complete_median(Variant::Floor);
        let open = complete_median(Variant::Unhardened);
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        StartReport {
            count,
            vserver_over_lxc: ratio(ours, lxc),
            vserver_over_floor: ratio(ours, floor),
            vserver_over_unhardened: ratio(ours, open),
            faster_than_lxc: ours.zip(lxc).map(|(a, b)| a < b),
            variants,
        }
    }

    /// The report as a table for people, with the ratios and the verdict.
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<11} {:>5} {:>22} {:>8} {:>15}",
            "variant", "runs", "median start→answer ms", "p90 ms", "median stop ms"
        );
        for r in &self.variants {
            let _ = writeln!(
                out,
                "{:<11} {:>5} {:>22} {:>8} {:>15}",
                r.variant.name(),
                r.runs,
                ms(r.median_start_ms),
                ms(r.p90_start_ms),
                ms(r.median_stop_ms)
            );
        }
        for r in self.variants.iter().filter(|r| r.error.is_some()) {
            let first_line = r.error.as_deref().unwrap_or("").lines().next().unwrap_or("");
            let _ = writeln!(out, "{} failed: {first_line}", r.variant.name());
        }
        let ratio = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(out, "vserver/lxc   (median over median): {}", ratio(self.vserver_over_lxc));
        let _ = writeln!(out, "vserver/floor (median over median): {}", ratio(self.vserver_over_floor));
        let _ = writeln!(
            out,
            "vserver/unhardened (median over median, interleaved): {} (target at most {HARDENING_TARGET:.2})",
            ratio(self.vserver_over_unhardened)
        );
        let verdict = match self.faster_than_lxc {
            Some(true) => "yes",
            Some(false) => "no",
            None => "n/a (vserver and lxc were not both measured)",
        };
        let _ = writeln!(out, "faster than LXC: {verdict}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(variant: Variant, median: f64) -> VariantReport {
        VariantReport {
            variant,
            runs: 1,
            start_ms: vec![median],
            stop_ms: vec![1.0],
            median_start_ms: Some(median),
            p90_start_ms: Some(median),
            median_stop_ms: Some(1.0),
            error: None,
        }
    }

    #[test]
    fn ratios_and_verdict_compare_medians() {
        let r = StartReport::new(
            1,
            vec![report(Variant::Vserver, 20.0), report(Variant::Lxc, 80.0), report(Variant::Floor, 10.0)],
        );
        assert_eq!(r.vserver_over_lxc, Some(0.25));
        assert_eq!(r.vserver_over_floor, Some(2.0));
        assert_eq!(r.faster_than_lxc, Some(true));
        assert!(r.table().contains("faster than LXC: yes"));
    }

    #[test]
    fn a_failed_variant_gives_no_verdict() {
        let mut lxc = report(Variant::Lxc, 80.0);
        lxc.error = Some("lxc-create failed".to_owned());
        let r = StartReport::new(1, vec![report(Variant::Vserver, 20.0), lxc]);
        assert_eq!(r.faster_than_lxc, None);
        assert!(r.table().contains("lxc failed: lxc-create failed"));
    }
}
