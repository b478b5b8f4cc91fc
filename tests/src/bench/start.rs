//! `bench start`: time from launching a start command to the service answering HTTP 200 at the
//! instance's address from the client, and the time to stop, for the product, LXC and the floor.
//!
//! Every instance is prepared untimed first; then they are started one after another and left
//! running (the last starts beside `count - 1` running ones), then stopped one after another.

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
    let own_addresses = options.count * options.variants.len() <= MAX_COUNT + 5;
    for (index, &variant) in options.variants.iter().enumerate() {
        let base = if own_addresses { index * options.count } else { 0 };
        eprintln!("bench start: {} × {}", variant.name(), options.count);
        let mut report = VariantReport {
            variant,
            runs: 0,
            start_ms: Vec::new(),
            stop_ms: Vec::new(),
            median_start_ms: None,
            p90_start_ms: None,
            median_stop_ms: None,
            error: None,
        };
        let outcome = measure_variant(&lab, variant, base, options, cancel, &mut report);
        if cancel.load(Ordering::Relaxed) {
            return Err(anyhow!(Interrupted));
        }
        if let Err(err) = outcome {
            eprintln!("bench start: {} failed: {err:#}", variant.name());
            report.error = Some(format!("{err:#}"));
        }
        report.runs = report.start_ms.len();
        report.median_start_ms = median(&report.start_ms);
        report.p90_start_ms = percentile(&report.start_ms, 90.0);
        report.median_stop_ms = median(&report.stop_ms);
        reports.push(report);
    }
    Ok(StartReport::new(options.count, reports))
}

/// Prepares, starts and stops `options.count` instances of `variant` at the lab's free addresses from
/// `base` on, filling `report` as it goes.
fn measure_variant(
    lab: &Lab,
    variant: Variant,
    base: usize,
    options: &StartOptions,
    cancel: &AtomicBool,
    report: &mut VariantReport,
) -> Result<()> {
    let host = &lab.hosts[0];
    let mut contender: Box<dyn Contender + '_> = match variant {
        Variant::Vserver => Box::new(Vservers::new(host)?),
        Variant::Lxc => Box::new(LxcContainers::new(host)?),
        Variant::Floor => Box::new(Floor::new(host, false)?),
        Variant::FloorMove => Box::new(Floor::new(host, true)?),
    };
    let count = options.count;
    let marker = |i: usize| format!("vserver-lab {} {i}", variant.name());

    for i in 0..count {
        check(cancel)?;
        contender
            .prepare(i, lab.free_addr(base + i), &marker(i))
            .with_context(|| format!("preparing {} instance {i}", variant.name()))?;
    }
    eprintln!("bench start: {} × {count} prepared", variant.name());

    for i in 0..count {
        check(cancel)?;
        let addr = lab.free_addr(base + i);
        // Untimed: forget neighbours, so that an address reused from the previous variant is
        // resolved afresh instead of sent to a MAC address that is gone.
        lab.client.netns.ip(["neigh", "flush", "dev", &lab.client.dev])?;
        let launched = Instant::now();
        let child = contender.launch(i)?;
        let deadline = launched + options.answer_timeout;
        let answered = wait_for_answer(lab, addr, &page(&marker(i)), child, deadline, cancel).with_context(|| {
            format!(
                "{} instance {i} at {addr}; log {}:\n{}",
                variant.name(),
                contender.log_path(i).display(),
                log_tail(&contender.log_path(i))
            )
        })?;
        let ms = millis(answered.duration_since(launched));
        report.start_ms.push(ms);
        eprintln!("[{}] {}/{count} start→answer {ms:.1} ms", variant.name(), i + 1);
    }

    for i in 0..count {
        check(cancel)?;
        let began = Instant::now();
        contender.stop(i).with_context(|| format!("stopping {} instance {i}", variant.name()))?;
        let ms = millis(began.elapsed());
        let addr = lab.free_addr(base + i);
        if lab.client.tcp_connect_ok(addr, PORT, GONE_CHECK) {
            bail!("{} instance {i} still accepts connections at {addr} after its stop", variant.name());
        }
        report.stop_ms.push(ms);
        eprintln!("[{}] {}/{count} stop {ms:.1} ms", variant.name(), i + 1);
    }
    Ok(())
}

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
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        StartReport {
            count,
            vserver_over_lxc: ratio(ours, lxc),
            vserver_over_floor: ratio(ours, floor),
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
            "{:<10} {:>5} {:>22} {:>8} {:>15}",
            "variant", "runs", "median start→answer ms", "p90 ms", "median stop ms"
        );
        for r in &self.variants {
            let _ = writeln!(
                out,
                "{:<10} {:>5} {:>22} {:>8} {:>15}",
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
