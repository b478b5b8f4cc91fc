//! `bench replicate`: replication and migrate on a tree of at least 1 GiB in many files, in a lab of two hosts
//! with their agents (h0 primary, h1 standby, an interval long enough that only the bench's syncs run after
//! the agent's own first one, which it is left to finish).
//!
//! - **Replication pass** (`vserver NAME sync`, one standby) beside plain `rsync -aHAXS --delete` of the same
//!   change from the same tree into a directory on the standby's side. A sync fills the standby's generation
//!   that is *not* current, which the previous sync left one change behind; a timed sync straight after a
//!   change would then move two changes against plain rsync's one. So each round first syncs untimed (both
//!   generations and the plain copy then hold the same state), then rewrites about `change_pct` % of the
//!   files (same size, new content, new mtime), then times the sync and the plain rsync, in alternating
//!   order. Both move exactly one change, from warm caches. The sync's time is the wall time of the command
//!   (what an operator waits for); the agent's own account is reported beside it.
//! - **Migrate outage** beside the guide's procedure (stop, full copy of tree and conf with plain
//!   `rsync -aHAXS` into a fresh directory on the other host, start there), both seen from the client (see
//!   `outage.rs`); migrate stops and starts through the agents, the guide's procedure runs with the agents
//!   stopped, by hand as the guide does, with plain `vserver NAME stop|start` (an agent would set the copy
//!   aside: the cluster's ownership table gives the vserver to h0). Migrate runs there and back each
//!   round, each time 3 s after the last and with `change_pct` % of the files rewritten just before (the
//!   change since the last sync, which its pre-copy carries; its final pass then copies what changed
//!   during the pre-copy, nothing here, where the vserver's service only answers the probes); the guide's procedure runs from h0 to h1, after which the copy on h1 is removed and the vserver
//!   started on h0 again (untimed), so the agents' placement and the trees agree before the next step.
//! - **No-change pass** over a second vserver of `small_files` small files, beside a no-change plain rsync
//!   between directories in the same state.
//!
//! Every timed step starts with no dirty page left (`sync(2)`, untimed), so none pays for the writeback of
//! the one before: the full copies and removals move gigabytes.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;

use super::outage::while_probing;
use super::stats::median;
use super::Interrupted;
use crate::agents::{wait_for, Agents, Timing};
use crate::lab::Lab;

/// What `bench replicate` measures.
#[derive(Debug, Clone)]
pub struct ReplicateOptions {
    /// Size of the generated data, MiB.
    pub size_mib: u64,
    /// Number of data files.
    pub files: u64,
    /// Percent of the files changed between two syncs.
    pub change_pct: f64,
    /// Timed rounds of each measurement.
    pub rounds: usize,
    /// Files of the no-change tree.
    pub small_files: u64,
}

/// The figures: medians over the rounds, with every sample kept.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicateReport {
    /// Size of the generated data, MiB.
    pub tree_mib: f64,
    /// Data files in the tree.
    pub files: u64,
    /// Files rewritten per round.
    pub changed_files: u64,
    /// Bytes rewritten per round.
    pub changed_bytes: u64,
    /// Wall time of `vserver NAME sync` (one standby), ms.
    pub sync_ms: f64,
    /// The sync's duration as the agent reports it, ms.
    pub sync_agent_ms: f64,
    /// Bytes the sync's rsync sent.
    pub sync_bytes_sent: f64,
    /// Plain `rsync -aHAXS --delete` of the same change, ms.
    pub plain_ms: f64,
    /// `sync_ms / plain_ms`; target at most 1.10.
    pub sync_ratio: f64,
    /// Longest time the client saw no answer during `migrate`, ms.
    pub migrate_outage_ms: f64,
    /// The outage `migrate` printed (stop to confirmed start), ms.
    pub migrate_reported_ms: f64,
    /// Longest time the client saw no answer during the guide's procedure, ms.
    pub guide_outage_ms: f64,
    /// `guide_outage_ms / migrate_outage_ms`; target at least 20.
    pub outage_ratio: f64,
    /// Files in the no-change tree.
    pub small_files: u64,
    /// Wall time of a no-change sync of it, ms.
    pub nochange_sync_ms: f64,
    /// The no-change sync as the agent reports it, ms.
    pub nochange_sync_agent_ms: f64,
    /// A no-change plain rsync between directories in the same state, ms.
    pub nochange_plain_ms: f64,
    /// Every sample, in the order taken.
    pub samples: Samples,
}

/// Every sample of a run, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// Wall times of the timed syncs.
    pub sync_ms: Vec<f64>,
    /// The same syncs as the agent reports them.
    pub sync_agent_ms: Vec<f64>,
    /// The plain rsyncs of the same changes.
    pub plain_ms: Vec<f64>,
    /// Client-seen outages of the migrates (there and back each round).
    pub migrate_outage_ms: Vec<f64>,
    /// Outages the migrates printed.
    pub migrate_reported_ms: Vec<f64>,
    /// Client-seen outages of the guide's procedure.
    pub guide_outage_ms: Vec<f64>,
    /// Wall times of the no-change syncs.
    pub nochange_sync_ms: Vec<f64>,
    /// The no-change plain rsyncs.
    pub nochange_plain_ms: Vec<f64>,
}

impl ReplicateReport {
    /// The report as a table with the targets beside the figures.
    pub fn table(&self) -> String {
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        let mut t = format!(
            "tree: {:.0} MiB in {} files; {} files ({:.1} MiB) rewritten per round; {} rounds\n",
            self.tree_mib,
            self.files,
            self.changed_files,
            self.changed_bytes as f64 / (1u64 << 20) as f64,
            self.samples.plain_ms.len(),
        );
        let mut row = |figure: &str, value: String, target: &str| {
            t.push_str(&format!("{figure:<46}{value:>11}  {target}\n"));
        };
        row("figure", "value".into(), "target");
        row("replication pass: vserver sync (wall)", format!("{:.0} ms", self.sync_ms), "");
        row("  the same, as the agent reports it", format!("{:.0} ms", self.sync_agent_ms), "");
        row("  bytes it sent", format!("{:.1} MiB", self.sync_bytes_sent / (1u64 << 20) as f64), "");
        row("plain rsync -aHAXS --delete, same change", format!("{:.0} ms", self.plain_ms), "");
        let ok = mark(self.sync_ratio <= 1.10);
        row("replication / plain rsync", format!("{:.2}", self.sync_ratio), &format!("<= 1.10   {ok}"));
        row("migrate outage, client view", format!("{:.0} ms", self.migrate_outage_ms), "");
        row("  as migrate prints it (stop to started)", format!("{:.0} ms", self.migrate_reported_ms), "");
        row("guide's stop, full copy, start, client view", format!("{:.0} ms", self.guide_outage_ms), "");
        let ok = mark(self.outage_ratio >= 20.0);
        row("guide / migrate", format!("{:.1}", self.outage_ratio), &format!(">= 20     {ok}"));
        row(
            &format!("no-change sync, {} files (wall)", self.small_files),
            format!("{:.0} ms", self.nochange_sync_ms),
            "",
        );
        row("  the same, as the agent reports it", format!("{:.0} ms", self.nochange_sync_agent_ms), "");
        row("no-change plain rsync, same tree", format!("{:.0} ms", self.nochange_plain_ms), "");
        let ratio = self.nochange_sync_ms / self.nochange_plain_ms.max(0.001);
        row("no-change sync / plain rsync", format!("{ratio:.2}"), "");
        t
    }
}

/// A small fast generator of incompressible bytes (xorshift64).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The vserver commands of the run, and its Ctrl-C flag.
struct Run<'a> {
    lab: &'a Lab,
    bin: PathBuf,
    cancel: &'a AtomicBool,
}

/// What one sync did, as the agent reports it.
struct Synced {
    wall_ms: f64,
    agent_ms: f64,
    bytes_sent: u64,
    /// The agent's steps and their durations, for the progress lines.
    phases: String,
}

impl Run<'_> {
    fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(anyhow!(Interrupted));
        }
        Ok(())
    }

    /// `vserver ARGS` on `host`, through its agent unless `local`; fails unless it succeeds.
    fn vserver(&self, host: usize, args: &[&str], local: bool) -> Result<Output> {
        let mut cmd = self.lab.hosts[host].command(&self.bin);
        cmd.args(args);
        if local {
            cmd.env("VSERVER_NO_AGENT", "1");
        }
        let out = cmd.output().context("running vserver")?;
        if !out.status.success() {
            bail!(
                "vserver {} on h{host} failed ({:?}): {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// `vserver --json NAME sync` on h0; its one standby must have got a complete copy.
    fn sync(&self, name: &str) -> Result<Synced> {
        let t = Instant::now();
        let out = self.vserver(0, &["--json", name, "sync"], false)?;
        let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
        let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading sync --json")?;
        let [one] = outcomes.as_array().map(Vec::as_slice).unwrap_or_default() else {
            bail!("sync of {name}: one standby expected: {outcomes}");
        };
        ensure!(one["ok"] == true, "sync of {name} to {} failed: {}", one["standby"], one["error"]);
        Ok(Synced {
            wall_ms,
            agent_ms: one["duration_ms"].as_f64().context("duration_ms")?,
            bytes_sent: one["bytes_sent"].as_u64().context("bytes_sent")?,
            phases: one["phases_ms"]
                .as_array()
                .map(|p| p.iter().map(|s| format!("{} {}", s[0].as_str().unwrap_or("?"), s[1])).collect::<Vec<_>>())
                .unwrap_or_default()
                .join(", "),
        })
    }

    /// Waits until h0 reports every sync finished and every standby with a complete copy (the agent syncs
    /// once on its own when it sees its standby alive).
    fn settle(&self, agents: &Agents) -> Result<()> {
        let settled = wait_for(Duration::from_secs(900), || {
            self.cancel.load(Ordering::Relaxed)
                || agents.status(0).ok().is_some_and(|s| {
                    s["replication"].as_array().is_some_and(|rows| {
                        !rows.is_empty()
                            && rows.iter().all(|r| r["syncing"] == false && r["last_complete_unix_ms"].is_u64())
                    })
                })
        });
        self.check()?;
        settled.map(drop).context("the agent's first syncs did not complete")
    }

    /// Waits for the vserver at `addr` to answer the client.
    fn answering(&self, addr: Ipv4Addr, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        if self.lab.client.wait_http_unless(addr, 80, deadline, self.cancel).is_none() {
            self.check()?;
            bail!("{what}: nothing answers at {addr}");
        }
        Ok(())
    }
}

/// Writes `files` files of `size` bytes each under `root/data`, `per_dir` per directory.
fn generate(
    root: &Path,
    files: u64,
    per_dir: u64,
    size: usize,
    seed: u64,
    cancel: &AtomicBool,
) -> Result<Vec<PathBuf>> {
    let mut noise = Noise(seed | 1);
    let mut buf = vec![0u8; size];
    let mut paths = Vec::with_capacity(files as usize);
    for i in 0..files {
        let dir = root.join("data").join(format!("d{:05}", i / per_dir));
        if i % per_dir == 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(anyhow!(Interrupted));
            }
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let path = dir.join(format!("f{i:07}"));
        noise.fill(&mut buf);
        fs::File::create(&path)
            .and_then(|mut f| f.write_all(&buf))
            .with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Plain `rsync -aHAXS ARGS`, timed, ms.
fn plain_rsync(args: &[&str], from: &[PathBuf], to: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = std::process::Command::new("rsync")
        .arg("-aHAXS")
        .args(args)
        .args(from)
        .arg(to)
        .output()
        .context("running rsync")?;
    ensure!(out.status.success(), "rsync into {} failed: {}", to.display(), String::from_utf8_lossy(&out.stderr));
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// The wait before each migrate.
const SETTLE: Duration = Duration::from_secs(3);

/// `dir/` as rsync's source: its contents.
fn contents(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push("/");
    PathBuf::from(s)
}

/// Writes every dirty page out (`sync(2)`), so that a timed step never pays for the writeback of an earlier
/// one (the full copies and removals of 1 GiB are seconds of it).
fn flush() {
    nix::unistd::sync();
}

/// Runs `a` and `b`, `a` first in even rounds and `b` first in odd ones, so neither always runs second; each
/// after a [`flush`].
fn alternate<A, B>(round: usize, a: impl FnOnce() -> Result<A>, b: impl FnOnce() -> Result<B>) -> Result<(A, B)> {
    if round.is_multiple_of(2) {
        flush();
        let a = a()?;
        flush();
        Ok((a, b()?))
    } else {
        flush();
        let b = b()?;
        flush();
        Ok((a()?, b))
    }
}

fn med(values: &[f64]) -> f64 {
    median(values).unwrap_or(f64::NAN)
}

/// Runs the benchmark (`cancel`: Ctrl-C). Everything it made is gone when it returns.
pub fn run_replicate_bench(opts: &ReplicateOptions, cancel: &AtomicBool) -> Result<ReplicateReport> {
    ensure!(
        opts.files > 0 && opts.size_mib > 0 && opts.rounds > 0 && opts.small_files > 0,
        "--size-mib, --files, --rounds and --small-files must be above 0"
    );
    ensure!(opts.change_pct > 0.0 && opts.change_pct <= 100.0, "--change-pct must be in (0, 100]");
    let result = measure(opts, cancel);
    // Ctrl-C at a terminal also reaches the commands the run started: whatever failed then, it was interrupted.
    if cancel.load(Ordering::Relaxed) {
        return Err(anyhow!(Interrupted));
    }
    result
}

fn measure(opts: &ReplicateOptions, cancel: &AtomicBool) -> Result<ReplicateReport> {
    let lab = Lab::new(2)?;
    let run =
        Run { lab: &lab, bin: crate::vserver_bin().context("no vserver command beside this executable")?, cancel };
    let (big, small) = ("bigsv", "smallsv");
    let addr = lab.free_addr(0);
    let size = ((opts.size_mib << 20) / opts.files).max(1) as usize;
    eprintln!(
        "bench replicate: building {big} ({} MiB in {} files) and {small} ({} files of 100 bytes)",
        opts.size_mib, opts.files, opts.small_files
    );
    run.vserver(0, &[big, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true)?;
    run.vserver(0, &[small, "build", "--busybox"], true)?;
    let tree = lab.hosts[0].vservers_dir.join(big);
    crate::bench::install_httpd_service(&tree, "replicated")?;
    let files = generate(&tree, opts.files, 256, size, 0x9e37_79b9_7f4a_7c15, cancel)?;
    let small_tree = lab.hosts[0].vservers_dir.join(small);
    generate(&small_tree, opts.small_files, opts.small_files.div_ceil(1000), 100, 7, cancel)?;
    run.check()?;

    let cluster = format!(
        "[vservers.{big}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 86400\n\n\
         [vservers.{small}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 86400\n"
    );
    // Formed as the README forms a cluster (init, join): the rsync tunnel runs over TLS.
    let agents = Agents::form(&lab, Timing::default(), Some(&cluster), |_| String::new())?;
    let alive =
        || agents.peer_state(0, 1).as_deref() == Some("alive") && agents.peer_state(1, 0).as_deref() == Some("alive");
    if wait_for(Duration::from_secs(20), alive).is_none() {
        bail!("the agents did not see each other alive; log of h0:\n{}", agents.log(0));
    }
    eprintln!("bench replicate: the agent's first syncs (full copies)");
    run.settle(&agents)?;
    let mut samples = Samples::default();

    // (b) A replication pass beside plain rsync of the same change.
    let plain = lab.hosts[1].dir.join("plain");
    fs::create_dir_all(&plain)?;
    let changed = ((opts.files as f64 * opts.change_pct / 100.0).round() as u64).clamp(1, opts.files);
    let stride = (opts.files / changed) as usize;
    let mut noise = Noise(42);
    let mut buf = vec![0u8; size];
    let mut bytes_sent = Vec::new();
    for round in 0..opts.rounds {
        run.check()?;
        eprintln!("bench replicate: replication pass, round {}/{}", round + 1, opts.rounds);
        // Untimed: the generation the timed sync fills, and the plain copy, catch up with the tree.
        run.sync(big)?;
        plain_rsync(&["--delete"], &[contents(&tree)], &plain)?;
        for path in files.iter().skip(round % stride).step_by(stride).take(changed as usize) {
            noise.fill(&mut buf);
            fs::write(path, &buf).with_context(|| format!("rewriting {}", path.display()))?;
        }
        let (synced, plain_ms) =
            alternate(round, || run.sync(big), || plain_rsync(&["--delete"], &[contents(&tree)], &plain))?;
        eprintln!(
            "  sync {:.0} ms (agent {:.0} ms: {}), plain rsync {plain_ms:.0} ms",
            synced.wall_ms, synced.agent_ms, synced.phases
        );
        samples.sync_ms.push(synced.wall_ms);
        samples.sync_agent_ms.push(synced.agent_ms);
        bytes_sent.push(synced.bytes_sent as f64);
        samples.plain_ms.push(plain_ms);
    }
    fs::remove_dir_all(&plain).context("removing the plain copy")?;

    // (c) A no-change pass over many small files.
    run.check()?;
    eprintln!("bench replicate: no-change passes over {} files", opts.small_files);
    let plain_small = lab.hosts[1].dir.join("plain-small");
    fs::create_dir_all(&plain_small)?;
    // Untimed: the second generation and the plain copy get the tree; from then on nothing changes.
    run.sync(small)?;
    plain_rsync(&["--delete"], &[contents(&small_tree)], &plain_small)?;
    let mut nochange_agent = Vec::new();
    for round in 0..opts.rounds {
        run.check()?;
        let (synced, plain_ms) = alternate(
            round,
            || run.sync(small),
            || plain_rsync(&["--delete"], &[contents(&small_tree)], &plain_small),
        )?;
        eprintln!(
            "  no-change sync {:.0} ms (agent {:.0} ms: {}), plain rsync {plain_ms:.0} ms",
            synced.wall_ms, synced.agent_ms, synced.phases
        );
        samples.nochange_sync_ms.push(synced.wall_ms);
        nochange_agent.push(synced.agent_ms);
        samples.nochange_plain_ms.push(plain_ms);
    }
    fs::remove_dir_all(&plain_small).context("removing the plain copy")?;

    // (a) Migrate there and back, then the guide's procedure, each seen from the client.
    run.check()?;
    run.vserver(0, &[big, "start"], false)?;
    run.answering(addr, "after the start on h0")?;
    for round in 0..opts.rounds {
        for (from, to) in [(0, 1), (1, 0)] {
            run.check()?;
            // A tree that arrived less than the final pass's margin (2 s) ago looks changed at its top, and
            // its final pass compares it whole: not the case measured (nobody moves a vserver back at once).
            std::thread::sleep(SETTLE);
            // The change since the last sync, which the pre-copy carries.
            let here = lab.hosts[from].vservers_dir.join(big);
            for path in files.iter().skip(round % stride).step_by(stride).take(changed as usize) {
                let path = here.join(path.strip_prefix(&tree).expect("generated under the tree"));
                noise.fill(&mut buf);
                fs::write(&path, &buf).with_context(|| format!("rewriting {}", path.display()))?;
            }
            eprintln!("bench replicate: migrate h{from} -> h{to}, round {}/{}", round + 1, opts.rounds);
            let target = format!("h{to}");
            flush();
            let (out, gap) = while_probing(&lab.client, addr, || run.vserver(from, &[big, "migrate", &target], false))?;
            let said = String::from_utf8_lossy(&out.stdout);
            let reported: f64 = said
                .split("outage ")
                .nth(1)
                .and_then(|r| r.split(' ').next()?.parse().ok())
                .with_context(|| format!("no outage in migrate's output: {said}"))?;
            let phases = said.lines().find_map(|l| l.trim().strip_prefix("phases: ")).unwrap_or("?");
            let last = said.lines().find_map(|l| l.trim().strip_prefix("final pass: ")).unwrap_or("?");
            eprintln!("  client saw {gap:.0} ms; migrate says {reported} ms ({phases}); final pass: {last}");
            samples.migrate_outage_ms.push(gap);
            samples.migrate_reported_ms.push(reported);
        }
    }
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let confs = |dir: &Path| -> Vec<PathBuf> {
        ["conf", "sh"].iter().map(|ext| dir.join(format!("{big}.{ext}"))).filter(|p| p.exists()).collect()
    };
    let remove_copy_on_h1 = || -> Result<()> {
        let copy = h1.vservers_dir.join(big);
        if copy.exists() {
            fs::remove_dir_all(&copy).with_context(|| format!("removing {}", copy.display()))?;
        }
        for conf in confs(&h1.conf_dir) {
            fs::remove_file(&conf).with_context(|| format!("removing {}", conf.display()))?;
        }
        Ok(())
    };
    // The guide knows no agents: they go (the vserver keeps running on h0), and every command acts alone.
    drop(agents);
    for round in 0..opts.rounds {
        run.check()?;
        eprintln!("bench replicate: the guide's stop, full copy, start h0 -> h1, round {}/{}", round + 1, opts.rounds);
        // The target gets a fresh directory (migrate left h1 only its replicas, which this never touches).
        remove_copy_on_h1()?;
        flush();
        let (steps, gap) = while_probing(&lab.client, addr, || {
            let t = Instant::now();
            run.vserver(0, &[big, "stop"], true)?;
            let stopped = t.elapsed();
            plain_rsync(&[], &[contents(&tree)], &h1.vservers_dir.join(big))?;
            plain_rsync(&[], &confs(&h0.conf_dir), &h1.conf_dir)?;
            let copied = t.elapsed();
            run.vserver(1, &[big, "start"], true)?;
            let started = t.elapsed();
            run.answering(addr, "after the guide's procedure")?;
            Ok([stopped, copied, started, t.elapsed()].map(|d| d.as_millis()))
        })?;
        let [stop, copy, start, answer] = steps;
        eprintln!("  client saw {gap:.0} ms (stopped at {stop} ms, copied at {copy}, started at {start}, answering at {answer})");
        samples.guide_outage_ms.push(gap);
        // Untimed: back on h0, with no copy left on h1.
        run.vserver(1, &[big, "stop"], true)?;
        remove_copy_on_h1()?;
        run.vserver(0, &[big, "start"], true)?;
        run.answering(addr, "after the start on h0 again")?;
    }
    run.vserver(0, &[big, "stop"], true)?;

    let (sync_ms, plain_ms) = (med(&samples.sync_ms), med(&samples.plain_ms));
    let (migrate_outage_ms, guide_outage_ms) = (med(&samples.migrate_outage_ms), med(&samples.guide_outage_ms));
    Ok(ReplicateReport {
        tree_mib: (opts.files * size as u64) as f64 / (1u64 << 20) as f64,
        files: opts.files,
        changed_files: changed,
        changed_bytes: changed * size as u64,
        sync_ms,
        sync_agent_ms: med(&samples.sync_agent_ms),
        sync_bytes_sent: med(&bytes_sent),
        plain_ms,
        sync_ratio: sync_ms / plain_ms,
        migrate_outage_ms,
        migrate_reported_ms: med(&samples.migrate_reported_ms),
        guide_outage_ms,
        outage_ratio: guide_outage_ms / migrate_outage_ms.max(1.0),
        small_files: opts.small_files,
        nochange_sync_ms: med(&samples.nochange_sync_ms),
        nochange_sync_agent_ms: med(&nochange_agent),
        nochange_plain_ms: med(&samples.nochange_plain_ms),
        samples,
    })
}
