//! `vserver-lab bench report`: every benchmark of the project in one run, and one table of their figures,
//! targets and ratios; given the JSON of an earlier report, the change of each figure since, so a release
//! can be compared with the last.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{
    run_agent_bench, run_replicate_bench, run_start, run_takeover_bench, AgentBenchOptions, AgentBenchReport, Baseline,
    Interrupted, ReplicateOptions, ReplicateReport, StartOptions, StartReport, TakeoverOptions, TakeoverReport,
    Variant,
};

/// The benchmarks, in the order they run.
pub const BENCHES: [&str; 4] = ["start", "agent", "replicate", "takeover"];

/// How the report runs.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Smaller runs (about 7 minutes instead of about 25): fewer instances, trials, blips and files, shorter
    /// slow-link and agent-restart runs. Its figures are noisier and not comparable with a full report's.
    pub quick: bool,
    /// Only these benchmarks (names from [`BENCHES`]); all when empty.
    pub only: Vec<String>,
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (times, memory, ratios of ours over theirs).
    Lower,
    /// Larger is better (throughput, ratios of theirs over ours).
    Higher,
}

/// One figure of one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The benchmark: one of [`BENCHES`].
    pub bench: String,
    /// What it measures, in a few words.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit (`ms`, `MiB`, `%`, `x` for ratios, empty for counts).
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// The target, when the project set one: the limit, met when the value is on the better side of it
    /// or on it.
    pub target: Option<f64>,
}

impl Figure {
    fn new(bench: &str, name: &str, value: f64, unit: &str, better: Better, target: Option<f64>) -> Self {
        Figure { bench: bench.into(), name: name.into(), value, unit: unit.into(), better, target }
    }

    /// Whether it meets its target (none without one).
    pub fn meets(&self) -> Option<bool> {
        self.target.map(|t| match self.better {
            Better::Lower => self.value <= t,
            Better::Higher => self.value >= t,
        })
    }
}

/// A benchmark that did not finish, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The benchmark.
    pub bench: String,
    /// What went wrong.
    pub error: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The product's version.
    pub version: String,
    /// When it ran, seconds since the Unix epoch.
    pub at_unix: u64,
    /// A quick report (not comparable with a full one).
    pub quick: bool,
    /// Seconds each benchmark took.
    pub seconds: Vec<(String, f64)>,
    /// Every figure.
    pub figures: Vec<Figure>,
    /// Benchmarks that failed (the others still ran).
    pub failures: Vec<Failure>,
}

fn start_figures(r: &StartReport) -> Vec<Figure> {
    let mut f = Vec::new();
    for v in &r.variants {
        if let Some(ms) = v.median_start_ms {
            let name = format!("{} start to answer, median", word(v.variant));
            f.push(Figure::new("start", &name, ms, "ms", Better::Lower, None));
        }
    }
    if let Some(x) = r.vserver_over_lxc {
        f.push(Figure::new("start", "vserver / lxc", x, "x", Better::Lower, Some(1.0)));
    }
    if let Some(x) = r.vserver_over_unhardened {
        let target = Some(super::start::HARDENING_TARGET);
        f.push(Figure::new("start", "vserver / unhardened (interleaved)", x, "x", Better::Lower, target));
    }
    if let Some(x) = r.vserver_over_floor {
        f.push(Figure::new("start", "vserver / bare namespaces", x, "x", Better::Lower, None));
    }
    f
}

fn word(v: Variant) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn agent_figures(r: &AgentBenchReport) -> Vec<Figure> {
    let a = "agent";
    vec![
        Figure::new(a, &format!("GET /v1/status p50 at {}/s", r.rate), r.p50_ms, "ms", Better::Lower, None),
        Figure::new(a, &format!("GET /v1/status p99 at {}/s", r.rate), r.p99_ms, "ms", Better::Lower, Some(5.0)),
        Figure::new(a, "GET /v1/status throughput", r.max_rps, "req/s", Better::Higher, None),
        Figure::new(a, &format!("RSS at rest, {} peers", r.peers), r.idle_rss_mib, "MiB", Better::Lower, Some(20.0)),
        Figure::new(a, "CPU at rest (of one core)", r.idle_cpu_percent, "%", Better::Lower, Some(1.0)),
    ]
}

fn replicate_figures(r: &ReplicateReport) -> Vec<Figure> {
    let b = "replicate";
    vec![
        Figure::new(b, &format!("sync of {:.0} MiB, 1% changed", r.tree_mib), r.sync_ms, "ms", Better::Lower, None),
        Figure::new(b, "plain rsync of the same change", r.plain_ms, "ms", Better::Lower, None),
        Figure::new(b, "sync / plain rsync", r.sync_ratio, "x", Better::Lower, Some(1.10)),
        Figure::new(b, "migrate outage (client)", r.migrate_outage_ms, "ms", Better::Lower, None),
        Figure::new(
            b,
            "stop-rsync-start outage, copy kept (client)",
            r.guide_incremental_outage_ms,
            "ms",
            Better::Lower,
            None,
        ),
        Figure::new(b, "stop-rsync-start / migrate outage", r.outage_ratio, "x", Better::Higher, None),
        Figure::new(b, "stop-full-copy-start outage (client)", r.guide_full_copy_outage_ms, "ms", Better::Lower, None),
        Figure::new(b, "stop-full-copy-start / migrate outage", r.full_copy_ratio, "x", Better::Higher, Some(20.0)),
        Figure::new(
            b,
            &format!("no-change sync, {} files", r.small_files),
            r.nochange_sync_ms,
            "ms",
            Better::Lower,
            None,
        ),
        Figure::new(b, "no-change plain rsync", r.nochange_plain_ms, "ms", Better::Lower, None),
    ]
}

fn takeover_figures(r: &TakeoverReport) -> Vec<Figure> {
    let t = "takeover";
    let mut f = Vec::new();
    for c in &r.crash {
        let (h, n) = (c.hosts, c.trials.len());
        let p50 = format!("recovery p50, {h} hosts ({n} crashes)");
        f.push(Figure::new(t, &p50, c.p50_ms, "ms", Better::Lower, Some(super::takeover_crash::P50_TARGET_MS)));
        f.push(Figure::new(t, &format!("recovery p90, {h} hosts"), c.p90_ms, "ms", Better::Lower, None));
        let max = format!("recovery max, {h} hosts");
        f.push(Figure::new(t, &max, c.max_ms, "ms", Better::Lower, Some(super::takeover_crash::MAX_TARGET_MS)));
        if let Some(x) = c.keepalived_ratio {
            f.push(Figure::new(t, &format!("recovery p50 / keepalived p50, {h} hosts"), x, "x", Better::Lower, None));
        }
    }
    if let Some(Baseline::Measured(k)) = &r.keepalived {
        let name = format!("keepalived recovery p50, advert_int {} s ({} crashes)", k.advert_int_secs, k.trials.len());
        f.push(Figure::new(t, &name, k.p50_ms, "ms", Better::Lower, None));
    }
    if let Some(b) = &r.blip {
        let budget = b.budget_ms as f64 / 1000.0;
        let within = b.sums(true);
        if within.blips > 0 {
            let name = format!("stops+restarts+moves, {} blips <= {budget:.1} s", within.blips);
            let value = (within.stops + within.restarts + within.moves) as f64;
            f.push(Figure::new(t, &name, value, "", Better::Lower, Some(0.0)));
            f.push(Figure::new(t, "fences in those blips", within.fences as f64, "", Better::Lower, None));
            let gap = b.longest_gap_within_ms();
            f.push(Figure::new(t, "client's longest gap in those blips", gap, "ms", Better::Lower, None));
        }
        let over = b.sums(false);
        if over.blips > 0 {
            let name = format!("stops, {} blips > {budget:.1} s", over.blips);
            f.push(Figure::new(t, &name, over.stops as f64, "", Better::Lower, None));
            f.push(Figure::new(t, "moves in those blips", over.moves as f64, "", Better::Lower, None));
        }
    }
    if let Some(s) = &r.slow {
        let name = format!("fences, {} s of {} ms delay + {}% loss", s.secs, s.delay_ms, s.loss_pct);
        f.push(Figure::new(t, &name, s.fences as f64, "", Better::Lower, Some(0.0)));
        f.push(Figure::new(t, "takeovers in that run", s.takeovers as f64, "", Better::Lower, Some(0.0)));
        let failed = s.failed_requests as f64;
        f.push(Figure::new(t, "client requests failed in that run", failed, "", Better::Lower, None));
    }
    if let Some(x) = &r.restarts {
        let name = format!("fences in {} clean agent restarts", x.count);
        f.push(Figure::new(t, &name, x.fences as f64, "", Better::Lower, Some(0.0)));
        f.push(Figure::new(t, "vserver stops in those restarts", x.stops as f64, "", Better::Lower, None));
    }
    f.push(Figure::new(t, "most copies running at once", r.most_copies_at_once as f64, "", Better::Lower, Some(1.0)));
    f
}

/// Runs the benchmarks one after the other (a failure is recorded and the next one runs; Ctrl-C stops it
/// all); progress on stderr.
pub fn run_report(opts: &ReportOptions, cancel: &AtomicBool) -> Result<Report> {
    for name in &opts.only {
        anyhow::ensure!(BENCHES.contains(&name.as_str()), "no benchmark {name:?}: there are {}", BENCHES.join(", "));
    }
    let quick = opts.quick;
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION").to_string(),
        at_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        quick,
        seconds: Vec::new(),
        figures: Vec::new(),
        failures: Vec::new(),
    };
    for bench in BENCHES.iter().filter(|b| opts.only.is_empty() || opts.only.iter().any(|o| o == *b)) {
        eprintln!("bench report: {bench}{}", if quick { " (quick)" } else { "" });
        let began = Instant::now();
        let figures = match *bench {
            "start" => {
                let o = StartOptions {
                    count: if quick { 10 } else { 50 },
                    variants: vec![Variant::Vserver, Variant::Unhardened, Variant::Lxc, Variant::Floor],
                    answer_timeout: Duration::from_secs(20),
                };
                run_start(&o, cancel).map(|r| start_figures(&r))
            }
            "agent" => {
                let o = AgentBenchOptions {
                    rate: 1000,
                    duration: Duration::from_secs(if quick { 2 } else { 5 }),
                    idle: Duration::from_secs(if quick { 4 } else { 10 }),
                    connections: 4,
                };
                run_agent_bench(&o, cancel).map(|r| agent_figures(&r))
            }
            "replicate" => {
                let o = if quick {
                    ReplicateOptions { size_mib: 256, files: 4096, change_pct: 1.0, rounds: 1, small_files: 20_000 }
                } else {
                    ReplicateOptions { size_mib: 1024, files: 16_384, change_pct: 1.0, rounds: 3, small_files: 100_000 }
                };
                run_replicate_bench(&o, cancel).map(|r| replicate_figures(&r))
            }
            _ => {
                let o = if quick { TakeoverOptions::quick() } else { TakeoverOptions::default() };
                run_takeover_bench(&o, cancel).map(|r| takeover_figures(&r))
            }
        };
        report.seconds.push((bench.to_string(), began.elapsed().as_secs_f64()));
        match figures {
            Ok(f) => report.figures.extend(f),
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => {
                eprintln!("bench report: {bench} failed: {e:#}");
                report.failures.push(Failure { bench: bench.to_string(), error: format!("{e:#}") });
            }
        }
    }
    Ok(report)
}

/// Reads a report saved with `--json`.
pub fn load(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a report of `bench report --json`", path.display()))
}

fn show(value: f64, unit: &str) -> String {
    let digits = if value.abs() >= 100.0 || value.fract() == 0.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    match unit {
        "" => format!("{value:.digits$}"),
        "x" => format!("{value:.digits$}x"),
        u => format!("{value:.digits$} {u}"),
    }
}

impl Report {
    /// One table: each figure, its target (and whether it is met), and against `last` (an earlier report)
    /// the earlier value and the change, marked better or worse.
    pub fn table(&self, last: Option<&Report>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "vserver {} benchmark report{}{}",
            self.version,
            if self.quick { " (quick: smaller runs, noisier figures)" } else { "" },
            last.map(|l| format!(", against the report of version {} (unix time {})", l.version, l.at_unix))
                .unwrap_or_default()
        );
        if last.is_some_and(|l| l.quick != self.quick) {
            let _ = writeln!(out, "note: one report is quick and the other is not; their figures are not comparable");
        }
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(10).max(10);
        let _ = write!(out, "{:<10} {:<width$} {:>13}  {:<14}", "BENCH", "FIGURE", "VALUE", "TARGET");
        if last.is_some() {
            let _ = write!(out, " {:>13} {:>8}", "LAST", "CHANGE");
        }
        let _ = writeln!(out);
        for f in &self.figures {
            let target = match (f.target, f.meets()) {
                (Some(t), Some(met)) => format!(
                    "{} {} {}",
                    if f.better == Better::Lower { "<=" } else { ">=" },
                    show(t, &f.unit),
                    if met { "ok" } else { "MISSED" }
                ),
                _ => String::new(),
            };
            let _ = write!(out, "{:<10} {:<width$} {:>13}  {:<14}", f.bench, f.name, show(f.value, &f.unit), target);
            if let Some(last) = last {
                match last.figures.iter().find(|l| l.bench == f.bench && l.name == f.name) {
                    Some(l) if l.value != 0.0 => {
                        let change = (f.value - l.value) / l.value.abs() * 100.0;
                        let better = match f.better {
                            Better::Lower => f.value < l.value,
                            Better::Higher => f.value > l.value,
                        };
                        let mark = if change.abs() < 1.0 {
                            ""
                        } else if better {
                            " better"
                        } else {
                            " worse"
                        };
                        let _ = write!(out, " {:>13} {:>+7.1}%{mark}", show(l.value, &l.unit), change);
                    }
                    Some(l) => {
                        let _ = write!(out, " {:>13} {:>8}", show(l.value, &l.unit), "-");
                    }
                    None => {
                        let _ = write!(out, " {:>13} {:>8}", "(new)", "");
                    }
                }
            }
            let _ = writeln!(out);
        }
        for failure in &self.failures {
            let _ = writeln!(out, "{:<10} FAILED: {}", failure.bench, failure.error);
        }
        let missed = self.figures.iter().filter(|f| f.meets() == Some(false)).count();
        let _ = writeln!(
            out,
            "{} figures, {} targets met, {missed} missed; took {}",
            self.figures.len(),
            self.figures.iter().filter(|f| f.meets() == Some(true)).count(),
            self.seconds.iter().map(|(b, s)| format!("{b} {s:.0} s")).collect::<Vec<_>>().join(", ")
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(figures: Vec<Figure>) -> Report {
        Report { version: "0".into(), at_unix: 0, quick: false, seconds: vec![], figures, failures: vec![] }
    }

    #[test]
    fn targets_are_met_on_the_better_side_or_on_the_limit() {
        let f = Figure::new("agent", "p99", 5.0, "ms", Better::Lower, Some(5.0));
        assert_eq!(f.meets(), Some(true));
        let f = Figure::new("agent", "p99", 5.1, "ms", Better::Lower, Some(5.0));
        assert_eq!(f.meets(), Some(false));
        let f = Figure::new("replicate", "ratio", 19.0, "x", Better::Higher, Some(20.0));
        assert_eq!(f.meets(), Some(false));
        assert_eq!(Figure::new("a", "b", 1.0, "", Better::Lower, None).meets(), None);
    }

    #[test]
    fn the_takeover_figures_carry_the_keepalived_baseline_and_the_ratio() {
        let crash = super::super::CrashReport {
            hosts: 3,
            trials: vec![],
            p50_ms: 2500.0,
            p90_ms: 2600.0,
            max_ms: 2700.0,
            most_copies_at_once: 1,
            keepalived_ratio: Some(0.8),
        };
        let keepalived = super::super::KeepalivedReport {
            hosts: 2,
            advert_int_secs: 1,
            nopreempt: true,
            version: "v2.2.7".into(),
            trials: vec![],
            p50_ms: 3125.0,
            p90_ms: 3500.0,
            max_ms: 3600.0,
        };
        let r = TakeoverReport {
            takeover_timeout_ms: 2400,
            blip_budget_ms: 1200,
            crash: vec![crash],
            keepalived: Some(Baseline::Measured(keepalived)),
            blip: None,
            slow: None,
            restarts: None,
            most_copies_at_once: 1,
        };
        let f = takeover_figures(&r);
        let ratio = f.iter().find(|f| f.name == "recovery p50 / keepalived p50, 3 hosts").unwrap();
        assert_eq!((ratio.value, ratio.unit.as_str(), ratio.better), (0.8, "x", Better::Lower));
        assert!(f.iter().any(|f| f.name.starts_with("keepalived recovery p50") && f.value == 3125.0), "{f:?}");
        let mut skipped =
            TakeoverReport { keepalived: Some(Baseline::Skipped { reason: "--no-baseline".into() }), ..r };
        skipped.crash[0].keepalived_ratio = None;
        assert!(!takeover_figures(&skipped).iter().any(|f| f.name.contains("keepalived")));
    }

    #[test]
    fn the_table_compares_with_the_last_report_and_says_which_way() {
        let last = report(vec![
            Figure::new("takeover", "recovery p50", 2000.0, "ms", Better::Lower, Some(3000.0)),
            Figure::new("agent", "throughput", 1000.0, "req/s", Better::Higher, None),
        ]);
        let now = report(vec![
            Figure::new("takeover", "recovery p50", 2200.0, "ms", Better::Lower, Some(3000.0)),
            Figure::new("agent", "throughput", 1500.0, "req/s", Better::Higher, None),
            Figure::new("agent", "new one", 1.0, "", Better::Lower, None),
        ]);
        let table = now.table(Some(&last));
        let p50 = table.lines().find(|l| l.contains("recovery p50")).unwrap();
        assert!(p50.contains("2200 ms") && p50.contains("<= 3000 ms ok") && p50.contains("+10.0% worse"), "{p50}");
        let rps = table.lines().find(|l| l.contains("throughput")).unwrap();
        assert!(rps.contains("+50.0% better"), "{rps}");
        assert!(table.lines().any(|l| l.contains("new one") && l.contains("(new)")), "{table}");
        assert!(table.contains("3 figures, 1 targets met, 0 missed"), "{table}");
        // What --json writes, --compare reads back.
        let back: Report = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
        assert_eq!(back, now);
    }
}
