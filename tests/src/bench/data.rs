//! `bench data`: each data path under a steady writer, in a lab of three hosts with their agents and watchdogs
//! (a cluster formed as the README forms one, TLS and all): how far behind the primary a standby's copy is
//! (the replica's lag, sampled every 100 ms), what a crash of the primary loses, and what the data path costs
//! the writer.
//!
//! The writer runs inside the vserver, in rounds: each round writes 20 files of 4 KiB (so 200 files a second
//! at 10 rounds a second), appends 1 MiB to one file (10 MiB a second), appends the round's number to
//! `/data/log`, makes it all durable (`sync`), then publishes the number at `/www/ack`, which the vserver's
//! httpd serves: a round the client saw acknowledged is one the writer saw made durable. Rounds start every
//! 100 ms; a round that takes longer delays the next, so the rounds a second are the writer's throughput, as a
//! ratio to the same writer on a vserver with no replication (`none`: no standby).
//!
//! - **Lag**: every 100 ms the bench reads the highest number in the first standby's current copy of
//!   `/data/log` (its replica's current generation; for `shared` and `block` the copy a takeover starts from is
//!   the running tree itself: 0) and takes the lag as the age of the oldest acknowledged round missing from it (0
//!   when none is). p50 and p99 over the window.
//! - **Crash**: at the end of the window the primary crashes (agent, watchdog and vservers killed, link
//!   down); the writer goes on from the last number its new owner's tree holds, and says so at `/www/resumed`
//!   (its start count and that number). The rounds acknowledged before the crash and missing after it are the
//!   data lost, in rounds and MiB.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::stats::percentile;
use super::Interrupted;
use crate::agents::{wait_for, Agents, Timing};
use crate::faults::Watchdogs;
use crate::lab::Lab;

/// The writer's rounds a second, when nothing slows it.
const ROUNDS_PER_SEC: f64 = 10.0;
/// Bytes one round writes: 20 files of 4 KiB and 1 MiB appended.
const ROUND_BYTES: u64 = 20 * 4096 + (1 << 20);

/// The writer, `/etc/init.d/writer` (runlevel 3, after the web service).
const WRITER: &str = r#"#!/bin/sh
# The benchmark's writer: rounds of 20 small files and 1 MiB appended, each made durable, then acknowledged.
case "$1" in
  start)
    mkdir -p /data/small
    setsid sh -c '
      n=$(tail -n 1 /data/log 2>/dev/null); n=${n:-0}
      s=$(cat /data/starts 2>/dev/null); s=$(( ${s:-0} + 1 ))
      echo "$s" > /data/starts
      echo "$s $n" > /www/resumed
      while :; do
        n=$((n + 1))
        i=0
        while [ $i -lt 20 ]; do
          head -c 4096 /dev/urandom > /data/small/f$((n % 50))_$i
          i=$((i + 1))
        done
        head -c 1048576 /dev/zero >> /data/big
        echo "$n" >> /data/log
        sync
        echo "$n" > /www/ack.new && mv /www/ack.new /www/ack
        # The append file is cut back now and then, so that a long run does not fill the disk.
        [ $((n % 100)) -eq 0 ] && : > /data/big
        sleep 0.1
      done
    ' </dev/null >/dev/null 2>&1 &
    ;;
  stop) ;;
esac
"#;

/// A data path the bench runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No standby: the writer's baseline.
    None,
    /// Copies at each interval.
    Periodic,
    /// Changes shipped in batches.
    Continuous,
    /// A directory every host reaches.
    Shared,
    /// A block device every host reaches (a loop device here), behind the lab's power fence.
    Block,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Periodic => "periodic",
            Mode::Continuous => "continuous",
            Mode::Shared => "shared",
            Mode::Block => "block",
        }
    }
}

/// What `bench data` measures.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// The data paths, in this order (`none` is always run first, as the writer's baseline).
    pub modes: Vec<Mode>,
    /// Seconds of writing measured in each mode before the crash.
    pub secs: u64,
    /// The periodic path's interval, seconds.
    pub interval_secs: u64,
}

/// One data path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// The data path.
    pub mode: Mode,
    /// The writer's rounds a second over the window.
    pub rounds_per_sec: f64,
    /// As a ratio to `none`'s (target at least 0.9).
    pub throughput_ratio: Option<f64>,
    /// The replica's lag, ms: median and 99th percentile of the samples (none for `none`).
    pub lag_p50_ms: Option<f64>,
    /// 99th percentile.
    pub lag_p99_ms: Option<f64>,
    /// Acknowledged rounds a crash of the primary lost (none for `none`).
    pub lost_rounds: Option<u64>,
    /// The same, as bytes the writer had made durable.
    pub lost_bytes: Option<u64>,
    /// From the crash to the writer acknowledging again on the new owner, ms.
    pub recovery_ms: Option<f64>,
    /// Every lag sample, ms.
    pub lag_samples_ms: Vec<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    /// Seconds of writing measured per mode.
    pub secs: u64,
    /// The periodic path's interval.
    pub interval_secs: u64,
    /// Each mode.
    pub modes: Vec<ModeReport>,
}

impl DataReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "writer: rounds of 20 files of 4 KiB and 1 MiB appended, each made durable, {ROUNDS_PER_SEC} a second at \
             most; {} s per data path; periodic every {} s\n",
            self.secs, self.interval_secs
        );
        out.push_str(&format!(
            "{:<11} {:>9} {:>11} {:>9} {:>9} {:>10} {:>10} {:>10}\n",
            "path", "rounds/s", "vs none", "lag p50", "lag p99", "lost", "lost MiB", "recovery"
        ));
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        for m in &self.modes {
            let ratio =
                m.throughput_ratio.map_or("-".into(), |r| format!("{r:.2} {}", if r >= 0.9 { "ok" } else { "MISSED" }));
            out.push_str(&format!(
                "{:<11} {:>9.1} {:>11} {:>9} {:>9} {:>10} {:>10} {:>10}\n",
                m.mode.as_str(),
                m.rounds_per_sec,
                ratio,
                ms(m.lag_p50_ms),
                ms(m.lag_p99_ms),
                m.lost_rounds.map_or("-".into(), |r| format!("{r} rounds")),
                m.lost_bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / (1u64 << 20) as f64)),
                ms(m.recovery_ms),
            ));
        }
        out.push_str(
            "targets: continuous lag p99 under 1000 ms; shared and block 0 lost; each path's writer at least 0.9 of none's\n",
        );
        out
    }
}

/// Runs every mode asked, `none` first.
pub fn run_data_bench(opts: &DataOptions, cancel: &AtomicBool) -> Result<DataReport> {
    let mut modes = vec![Mode::None];
    modes.extend(opts.modes.iter().copied().filter(|m| *m != Mode::None));
    let mut reports: Vec<ModeReport> = Vec::new();
    for mode in modes {
        check(cancel)?;
        eprintln!("bench data: {}", mode.as_str());
        let mut report = run_mode(mode, opts, cancel).with_context(|| format!("the {} path", mode.as_str()))?;
        let none = reports.iter().find(|r| r.mode == Mode::None).map(|r| r.rounds_per_sec);
        report.throughput_ratio = none.filter(|n| *n > 0.0 && mode != Mode::None).map(|n| report.rounds_per_sec / n);
        eprintln!(
            "  {:.1} rounds/s, lag p50 {:?} ms p99 {:?} ms, lost {:?} rounds",
            report.rounds_per_sec, report.lag_p50_ms, report.lag_p99_ms, report.lost_rounds
        );
        reports.push(report);
    }
    Ok(DataReport { secs: opts.secs, interval_secs: opts.interval_secs, modes: reports })
}

fn check(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    Ok(())
}

/// One mode in a lab of its own.
fn run_mode(mode: Mode, opts: &DataOptions, cancel: &AtomicBool) -> Result<ModeReport> {
    let lab = Lab::new(3)?;
    let mut dogs = Watchdogs::start(&lab)?;
    let name = crate::unique("bd");
    let addr = lab.free_addr(0);
    let shared = lab.dir().join("shared");
    let (vservers_dir, conf_dir) = match mode {
        Mode::Shared => (shared.clone(), shared.clone()),
        _ => (lab.hosts[0].vservers_dir.clone(), lab.hosts[0].conf_dir.clone()),
    };
    std::fs::create_dir_all(&vservers_dir)?;
    let bin = crate::vserver_bin().context("no vserver binary")?;
    let out = lab.hosts[0]
        .command(&bin)
        .args([&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")])
        .env("VSERVER_VSERVERS_DIR", &vservers_dir)
        .env("VSERVER_CONF_DIR", &conf_dir)
        .env("VSERVER_NO_AGENT", "1")
        .output()?;
    if !out.status.success() {
        bail!("building the vserver: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tree = vservers_dir.join(&name);
    crate::bench::install_httpd_service(&tree, "data")?;
    install_writer(&tree)?;
    // The block path: the tree moved onto a loop device, h0 keeping an empty mount point.
    let device = match mode {
        Mode::Block => Some(onto_device(&lab, &tree)?),
        _ => None,
    };
    let data = match mode {
        Mode::None => String::new(),
        Mode::Periodic => format!("interval_secs = {}\n", opts.interval_secs),
        Mode::Continuous => format!("data = \"continuous\"\ninterval_secs = {}\n", opts.interval_secs.max(60)),
        Mode::Shared => format!("data = \"shared\"\nshared_dir = \"{}\"\n", shared.display()),
        Mode::Block => {
            let path = &device.as_ref().expect("made above").path;
            format!("data = \"block\"\ndevice = \"{}\"\ninterval_secs = {}\n", path.display(), opts.interval_secs)
        }
    };
    let standbys = if mode == Mode::None { "" } else { "\"h1\", \"h2\"" };
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [{standbys}]\n{data}");
    let hook = match mode {
        Mode::Block => {
            let script = crate::blockdev::power_fence(&lab, &lab.dir().join("fenced.log"))?;
            format!("[takeover]\nfence_hook = \"{}\"\n", script.display())
        }
        _ => String::new(),
    };
    let mut agents = Agents::form(&lab, Timing::default(), Some(&cluster), |_| hook.clone())?;
    let alive = || (1..3).all(|i| agents.peer_state(0, i).as_deref() == Some("alive"));
    if wait_for(Duration::from_secs(30), alive).is_none() {
        bail!("the agents did not see each other alive; log of h0:\n{}", agents.log(0));
    }
    if mode == Mode::Shared {
        let linked = || lab.hosts[0].conf_dir.join(format!("{name}.conf")).is_file();
        if wait_for(Duration::from_secs(30), linked).is_none() {
            bail!("h0 did not link the shared vserver; log:\n{}", agents.log(0));
        }
    }
    let out = lab.hosts[0].command(&bin).args([&name, "start"]).output()?;
    if !out.status.success() {
        bail!("starting the vserver: {}", String::from_utf8_lossy(&out.stderr));
    }
    let acks = Acks::start(&lab, addr);
    if !acks.wait_past(0, Duration::from_secs(30)) {
        bail!("the writer does not acknowledge; log of h0:\n{}", agents.log(0));
    }
    if mode == Mode::Periodic || mode == Mode::Continuous {
        // The first complete copy (a full pass) before the window.
        let first = || replica_high(&replica_log(&lab, 1, &name)).is_some();
        if wait_for(Duration::from_secs(60 + opts.interval_secs), first).is_none() {
            bail!("h1 got no complete copy; log of h0:\n{}", agents.log(0));
        }
    }
    if mode == Mode::Block {
        // The standbys need the conf to take it over.
        let out = lab.hosts[0].command(&bin).args([&name, "sync"]).output()?;
        if !out.status.success() {
            bail!("syncing the conf: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // The window: the writer's rounds, and the lag sampled every 100 ms.
    let began = (Instant::now(), acks.high());
    let mut lags = Vec::new();
    while began.0.elapsed() < Duration::from_secs(opts.secs) {
        check(cancel)?;
        match mode {
            Mode::None => {}
            // The copy a takeover starts from is the running tree itself.
            Mode::Shared | Mode::Block => lags.push(0.0),
            Mode::Periodic | Mode::Continuous => {
                let high = replica_high(&replica_log(&lab, 1, &name)).unwrap_or(0);
                lags.push(acks.lag(high).as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rounds_per_sec = (acks.high() - began.1) as f64 / began.0.elapsed().as_secs_f64();
    let mut report = ModeReport {
        mode,
        rounds_per_sec,
        throughput_ratio: None,
        lag_p50_ms: percentile(&lags, 50.0),
        lag_p99_ms: percentile(&lags, 99.0),
        lost_rounds: None,
        lost_bytes: None,
        recovery_ms: None,
        lag_samples_ms: lags,
    };
    if mode == Mode::None {
        return Ok(report);
    }
    // The crash.
    let crashed = Instant::now();
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false)?;
    let acked = acks.high();
    let resumed = || {
        let said = lab.client.http_get_path(addr, 80, "/resumed", Duration::from_millis(300)).ok()?;
        let mut words = said.split_whitespace().map(|w| w.parse::<u64>().ok());
        match (words.next()??, words.next()??) {
            (start, from) if start >= 2 => Some(from),
            _ => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let from = loop {
        check(cancel)?;
        if let Some(from) = resumed() {
            break from;
        }
        if Instant::now() > deadline {
            bail!("the writer did not resume after the crash; log of h1:\n{}", agents.log(1));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    report.recovery_ms = Some(crashed.elapsed().as_secs_f64() * 1000.0);
    let lost = acked.saturating_sub(from);
    report.lost_rounds = Some(lost);
    report.lost_bytes = Some(lost * ROUND_BYTES);
    Ok(report)
}

/// Moves the tree at `tree` onto a new ext4 loop device under the lab's directory; `tree` stays, empty, as the
/// mount point.
fn onto_device(lab: &Lab, tree: &Path) -> Result<crate::blockdev::LoopDevice> {
    let device = crate::blockdev::LoopDevice::ext4(lab.dir(), 2048)?;
    device.with_mounted(&lab.dir().join("fill"), |mnt| {
        let out = std::process::Command::new("cp").arg("-a").arg(tree.join(".")).arg(mnt).output()?;
        anyhow::ensure!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    })?;
    std::fs::remove_dir_all(tree)?;
    std::fs::create_dir(tree)?;
    Ok(device)
}

/// Installs the writer into the tree at `root`.
fn install_writer(root: &Path) -> Result<()> {
    let script = root.join("etc/init.d/writer");
    std::fs::write(&script, WRITER).with_context(|| format!("writing {}", script.display()))?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::os::unix::fs::symlink("../init.d/writer", root.join("etc/rc3.d/S60writer"))?;
    Ok(())
}

/// `/data/log` in host `i`'s current replica of `name`.
fn replica_log(lab: &Lab, i: usize, name: &str) -> PathBuf {
    lab.hosts[i].vservers_dir.join(".replicas").join(name).join("current/tree/data/log")
}

/// The highest number in a copy of `/data/log` (its last whole line), if it has one.
fn replica_high(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().filter_map(|l| l.trim().parse().ok()).max()
}

/// The writer's acknowledgements as the client sees them: each number and when it was first seen, read every
/// 20 ms until dropped.
struct Acks {
    seen: Arc<Mutex<BTreeMap<u64, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acks {
    fn start(lab: &Lab, addr: Ipv4Addr) -> Acks {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, w) = (Arc::clone(&stop), Arc::clone(&seen));
        let enter = lab.client.netns.enterer();
        let thread = std::thread::spawn(move || {
            if enter().is_err() {
                return;
            }
            while !s.load(Ordering::Relaxed) {
                if let Some(n) = get_ack(addr) {
                    let mut seen = w.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    // Rounds acknowledged between two reads are taken as seen now.
                    let from = seen.keys().next_back().map_or(n, |h| h + 1);
                    for k in from..=n {
                        seen.entry(k).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Acks { seen, stop, thread: Some(thread) }
    }

    fn high(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).keys().next_back().copied().unwrap_or(0)
    }

    fn wait_past(&self, than: u64, within: Duration) -> bool {
        wait_for(within, || self.high() > than).is_some()
    }

    /// How old the oldest acknowledged round missing from a copy holding rounds up to `copy` is.
    fn lag(&self, copy: u64) -> Duration {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(copy + 1)).map_or(Duration::ZERO, Instant::elapsed)
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /ack` from this thread's network namespace (a thread of the client's: see `Netns::enterer`): the
/// number the writer published there.
pub fn get_ack(addr: Ipv4Addr) -> Option<u64> {
    let timeout = Duration::from_millis(300);
    let mut stream = std::net::TcpStream::connect_timeout(&(addr, 80).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET /ack HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.take(4096).read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then_some(())?;
    body.trim().parse().ok()
}
