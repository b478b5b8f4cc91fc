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
//! - **Migrate outage** beside two ways of moving the vserver by hand, all seen from the client (see
//!   `outage.rs`). Migrate stops and starts through the agents; it runs there and back each round, each time
//!   3 s after the last and with `change_pct` % of the files rewritten just before (the change since the last
//!   sync, which its pre-copy carries; its final pass then copies what changed during the pre-copy, nothing
//!   here, where the vserver's service only answers the probes). The ways by hand run after it, from h0 to
//!   h1, with the agents stopped and plain `vserver NAME stop|start`, as the guide does it (an agent would
//!   set a copy on h1 aside: the cluster's ownership table gives the vserver to h0); after each round the
//!   vserver is stopped on h1 and started on h0 again (untimed), so the placement and the trees agree before
//!   the next one:
//!   - **Stop, rsync onto the copy, start**: the baseline (`outage_ratio`), what a user of the guide who
//!     keeps a copy on the other host with a periodic rsync would do. Before each round, untimed and with the
//!     vserver running, the copy on h1 is brought up to date (that user's last periodic run; the first round
//!     makes it), then the same `change_pct` % of the files as in a migrate round are rewritten; the timed
//!     step is the stop on h0, `rsync -aHAXS --delete --numeric-ids --whole-file` of the tree and of the conf
//!     files onto h1's copy, the start on h1, until the client gets an answer. The copy stays on h1 for the
//!     next round, and each round checks that the rewritten files arrived. `--whole-file` because every
//!     changed file is rewritten whole: the delta algorithm would read the old file on h1 and checksum both
//!     sides to find nothing in common, which costs more than sending the bytes over a LAN (it cost the
//!     agent's sync 15-20%, see docs/failover.md); between two local paths, as here, rsync chooses it
//!     anyway.
//!   - **Stop, full copy, start**: the guide's procedure taken literally (`full_copy_ratio`): the stop, a
//!     full copy of tree and conf with plain `rsync -aHAXS` into a fresh directory on h1, the start there.
//!     The copy is removed after each round.
//!
//!   Both rsyncs by hand run between the two hosts' directories on this one machine (no remote shell, no
//!   link), which favours them: migrate's copies go through the agents' tunnel over the lab's network.
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
    /// Longest time the client saw no answer during the stop, rsync of the change onto h1's copy, start, ms.
    pub guide_incremental_outage_ms: f64,
    /// `guide_incremental_outage_ms / migrate_outage_ms`: the baseline's ratio (no target: the old one of 20
    /// was set against the full copy, and stays on that line).
    pub outage_ratio: f64,
    /// Longest time the client saw no answer during the stop, full copy into an empty directory, start, ms.
    pub guide_full_copy_outage_ms: f64,
    /// `guide_full_copy_outage_ms / migrate_outage_ms`.
    pub full_copy_ratio: f64,
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
    /// Client-seen outages of the stop, rsync onto h1's copy, start.
    pub guide_incremental_outage_ms: Vec<f64>,
    /// Client-seen outages of the stop, full copy, start.
    pub guide_full_copy_outage_ms: Vec<f64>,
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
            t.push_str(&format!("{figure:<50}{value:>11}  {target}\n"));
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
        let incremental = format!("{:.0} ms", self.guide_incremental_outage_ms);
        row("stop, rsync onto h1's copy, start, client view", incremental, "");
        row("stop-rsync-start / migrate", format!("{:.1}", self.outage_ratio), "");
        let full_copy = format!("{:.0} ms", self.guide_full_copy_outage_ms);
        row("stop, full copy to empty dir, start, client view", full_copy, "");
        let ok = mark(self.full_copy_ratio >= 20.0);
        row("stop-full-copy-start / migrate", format!("{:.1}", self.full_copy_ratio), &format!(">= 20     {ok}"));
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

/// The change between two syncs: some of the tree's data files, every `stride`th from an offset that moves
/// with the round, rewritten whole (same size, new content, new mtime).
struct Change {
    /// The data files, relative to the tree.
    files: Vec<PathBuf>,
    /// Files rewritten per round.
    count: usize,
    stride: usize,
    noise: Noise,
    buf: Vec<u8>,
}

impl Change {
    /// `change_pct` % of `files` (at least one), which are `size` bytes each.
    fn new(files: Vec<PathBuf>, change_pct: f64, size: usize) -> Self {
        let count = ((files.len() as f64 * change_pct / 100.0).round() as usize).clamp(1, files.len());
        Change { stride: files.len() / count, files, count, noise: Noise(42), buf: vec![0u8; size] }
    }

    /// Rewrites round `round`'s files in the tree at `here`; the files rewritten, relative to it.
    fn rewrite(&mut self, here: &Path, round: usize) -> Result<Vec<PathBuf>> {
        let picked = self.files.iter().skip(round % self.stride).step_by(self.stride).take(self.count);
        let mut rewritten = Vec::with_capacity(self.count);
        for file in picked {
            let path = here.join(file);
            self.noise.fill(&mut self.buf);
            fs::write(&path, &self.buf).with_context(|| format!("rewriting {}", path.display()))?;
            rewritten.push(file.clone());
        }
        Ok(rewritten)
    }
}

/// Fails unless each of `files` (relative paths) holds the same bytes under `copy` as under `tree`.
fn ensure_copied(files: &[PathBuf], tree: &Path, copy: &Path) -> Result<()> {
    for file in files {
        let (ours, theirs) = (tree.join(file), copy.join(file));
        let ours = fs::read(&ours).with_context(|| format!("reading {}", ours.display()))?;
        let same = fs::read(&theirs).with_context(|| format!("reading {}", theirs.display()))? == ours;
        ensure!(same, "{} differs from its source after the copy", theirs.display());
    }
    Ok(())
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

/// The flags of the rsync onto an existing copy, beside `-aHAXS`: what a careful user passes (see the
/// module's documentation for `--whole-file`).
const ONTO_COPY: &[&str] = &["--delete", "--numeric-ids", "--whole-file"];

/// The vserver moved from h0 to h1 by hand, as the guide does it: plain `vserver NAME stop|start` with no
/// agent, and plain rsync of its tree and conf files.
struct ByHand<'a> {
    run: &'a Run<'a>,
    name: &'a str,
    /// The vserver's address, where the client probes it.
    addr: Ipv4Addr,
}

impl ByHand<'_> {
    /// The vserver's tree on `host`.
    fn tree(&self, host: usize) -> PathBuf {
        self.run.lab.hosts[host].vservers_dir.join(self.name)
    }

    /// The vserver's conf files on `host`.
    fn confs(&self, host: usize) -> Vec<PathBuf> {
        let dir = &self.run.lab.hosts[host].conf_dir;
        ["conf", "sh"].iter().map(|ext| dir.join(format!("{}.{ext}", self.name))).filter(|p| p.exists()).collect()
    }

    /// Plain `rsync -aHAXS ARGS` of h0's tree and conf files to h1.
    fn copy_to_h1(&self, args: &[&str]) -> Result<()> {
        plain_rsync(args, &[contents(&self.tree(0))], &self.tree(1))?;
        plain_rsync(args, &self.confs(0), &self.run.lab.hosts[1].conf_dir)?;
        Ok(())
    }

    /// Removes the vserver's tree and conf files from h1, if there.
    fn remove_copy_on_h1(&self) -> Result<()> {
        let copy = self.tree(1);
        if copy.exists() {
            fs::remove_dir_all(&copy).with_context(|| format!("removing {}", copy.display()))?;
        }
        for conf in self.confs(1) {
            fs::remove_file(&conf).with_context(|| format!("removing {}", conf.display()))?;
        }
        Ok(())
    }

    /// The stop on h0, `copy`, the start on h1, until the client gets an answer: the longest time the client
    /// saw none, ms. Prints when each step ended.
    fn move_to_h1(&self, copy: impl FnOnce() -> Result<()>) -> Result<f64> {
        let (steps, gap) = while_probing(&self.run.lab.client, self.addr, || {
            let t = Instant::now();
            self.run.vserver(0, &[self.name, "stop"], true)?;
            let stopped = t.elapsed();
            copy()?;
            let copied = t.elapsed();
            self.run.vserver(1, &[self.name, "start"], true)?;
            let started = t.elapsed();
            self.run.answering(self.addr, "after the start on h1")?;
            Ok([stopped, copied, started, t.elapsed()].map(|d| d.as_millis()))
        })?;
        let [stop, copy, start, answer] = steps;
        eprintln!("  client saw {gap:.0} ms (stopped at {stop} ms, copied at {copy}, started at {start}, answering at {answer})");
        Ok(gap)
    }

    /// The stop on h1 and the start on h0, until the client gets an answer.
    fn back_to_h0(&self) -> Result<()> {
        self.run.vserver(1, &[self.name, "stop"], true)?;
        self.run.vserver(0, &[self.name, "start"], true)?;
        self.run.answering(self.addr, "after the start on h0 again")
    }
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
    let files = files.iter().map(|f| f.strip_prefix(&tree).expect("generated under the tree").to_path_buf());
    let mut change = Change::new(files.collect(), opts.change_pct, size);
    let mut bytes_sent = Vec::new();
    for round in 0..opts.rounds {
        run.check()?;
        eprintln!("bench replicate: replication pass, round {}/{}", round + 1, opts.rounds);
        // Untimed: the generation the timed sync fills, and the plain copy, catch up with the tree.
        run.sync(big)?;
        plain_rsync(&["--delete"], &[contents(&tree)], &plain)?;
        change.rewrite(&tree, round)?;
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

    // (a) Migrate there and back, then the vserver moved by hand two ways, each seen from the client.
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
            change.rewrite(&lab.hosts[from].vservers_dir.join(big), round)?;
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
    // The guide knows no agents: they go (the vserver keeps running on h0), and every command acts alone.
    drop(agents);
    let by_hand = ByHand { run: &run, name: big, addr };
    // Migrate left h1 only its replicas, which this never touches; the first round makes the copy.
    for round in 0..opts.rounds {
        run.check()?;
        eprintln!("bench replicate: stop, rsync onto h1's copy, start h0 -> h1, round {}/{}", round + 1, opts.rounds);
        // Untimed, with the vserver running: the user's last periodic rsync, then the change since.
        by_hand.copy_to_h1(ONTO_COPY)?;
        let rewritten = change.rewrite(&tree, round)?;
        flush();
        let gap = by_hand.move_to_h1(|| by_hand.copy_to_h1(ONTO_COPY))?;
        samples.guide_incremental_outage_ms.push(gap);
        ensure_copied(&rewritten, &tree, &by_hand.tree(1)).context("the rsync onto h1's copy missed the change")?;
        // Untimed: back on h0; h1's copy stays for the next round.
        by_hand.back_to_h0()?;
    }
    for round in 0..opts.rounds {
        run.check()?;
        eprintln!("bench replicate: stop, full copy, start h0 -> h1, round {}/{}", round + 1, opts.rounds);
        // The target gets a fresh directory.
        by_hand.remove_copy_on_h1()?;
        flush();
        let gap = by_hand.move_to_h1(|| by_hand.copy_to_h1(&[]))?;
        samples.guide_full_copy_outage_ms.push(gap);
        // Untimed: back on h0, with no copy left on h1.
        by_hand.back_to_h0()?;
        by_hand.remove_copy_on_h1()?;
    }
    run.vserver(0, &[big, "stop"], true)?;

    let (sync_ms, plain_ms) = (med(&samples.sync_ms), med(&samples.plain_ms));
    let migrate_outage_ms = med(&samples.migrate_outage_ms);
    let guide_incremental_outage_ms = med(&samples.guide_incremental_outage_ms);
    let guide_full_copy_outage_ms = med(&samples.guide_full_copy_outage_ms);
    Ok(ReplicateReport {
        tree_mib: (opts.files * size as u64) as f64 / (1u64 << 20) as f64,
        files: opts.files,
        changed_files: change.count as u64,
        changed_bytes: (change.count * size) as u64,
        sync_ms,
        sync_agent_ms: med(&samples.sync_agent_ms),
        sync_bytes_sent: med(&bytes_sent),
        plain_ms,
        sync_ratio: sync_ms / plain_ms,
        migrate_outage_ms,
        migrate_reported_ms: med(&samples.migrate_reported_ms),
        guide_incremental_outage_ms,
        outage_ratio: guide_incremental_outage_ms / migrate_outage_ms.max(1.0),
        guide_full_copy_outage_ms,
        full_copy_ratio: guide_full_copy_outage_ms / migrate_outage_ms.max(1.0),
        small_files: opts.small_files,
        nochange_sync_ms: med(&samples.nochange_sync_ms),
        nochange_sync_agent_ms: med(&nochange_agent),
        nochange_plain_ms: med(&samples.nochange_plain_ms),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ReplicateReport {
        ReplicateReport {
            tree_mib: 1024.0,
            files: 16384,
            changed_files: 164,
            changed_bytes: 164 << 16,
            sync_ms: 210.0,
            sync_agent_ms: 190.0,
            sync_bytes_sent: 11.0 * (1u64 << 20) as f64,
            plain_ms: 230.0,
            sync_ratio: 210.0 / 230.0,
            migrate_outage_ms: 100.0,
            migrate_reported_ms: 110.0,
            guide_incremental_outage_ms: 500.0,
            outage_ratio: 5.0,
            guide_full_copy_outage_ms: 4000.0,
            full_copy_ratio: 40.0,
            small_files: 100_000,
            nochange_sync_ms: 1500.0,
            nochange_sync_agent_ms: 1400.0,
            nochange_plain_ms: 1450.0,
            samples: Samples::default(),
        }
    }

    #[test]
    fn the_rsync_onto_a_kept_copy_comes_first_and_the_full_copy_keeps_its_old_target_on_a_line_of_its_own() {
        let table = report().table();
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{table}"));
        assert!(line("stop, rsync onto h1's copy, start").contains("500 ms"), "{table}");
        let kept = line("stop-rsync-start / migrate");
        assert!(kept.contains("5.0") && !kept.contains(">="), "{table}");
        assert!(line("stop, full copy to empty dir, start").contains("4000 ms"), "{table}");
        assert!(line("stop-full-copy-start / migrate").contains("40.0  >= 20     ok"), "{table}");
        let rsync = table.find("stop-rsync-start").unwrap();
        assert!(rsync < table.find("stop-full-copy-start").unwrap(), "the honest ratio first: {table}");
    }

    #[test]
    fn a_change_rewrites_its_share_of_the_files_and_moves_with_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..200).map(|i| PathBuf::from(format!("f{i}"))).collect();
        for f in &files {
            fs::write(dir.path().join(f), [0u8; 16]).unwrap();
        }
        let mut change = Change::new(files, 1.0, 16);
        let first = change.rewrite(dir.path(), 0).unwrap();
        let second = change.rewrite(dir.path(), 1).unwrap();
        assert_eq!((first.len(), second.len()), (2, 2));
        assert!(first.iter().all(|f| !second.contains(f)), "{first:?} {second:?}");
        for f in first.iter().chain(&second) {
            assert_ne!(fs::read(dir.path().join(f)).unwrap(), [0u8; 16]);
        }
    }

    #[test]
    fn the_json_has_both_baselines() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["outage_ratio"], 5.0);
        assert_eq!(json["guide_incremental_outage_ms"], 500.0);
        assert_eq!(json["guide_full_copy_outage_ms"], 4000.0);
        assert_eq!(json["full_copy_ratio"], 40.0);
        assert!(
            json["samples"]["guide_incremental_outage_ms"].is_array()
                && json["samples"]["guide_full_copy_outage_ms"].is_array()
        );
    }
}
