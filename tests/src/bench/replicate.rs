//! `bench replicate`: replication and migrate on a tree of at least 1 GiB in many files, in a lab of two
//! hosts with their agents.
//!
//! - **Replication pass** beside plain `rsync -aHAXS --delete` of the same change between the same
//!   directories. Fairness: a sync fills the standby's generation that is not current, which is one sync
//!   behind; so each round first syncs untimed (both generations then hold the same state, as does the plain
//!   copy), then changes about `change_pct` % of the files (same size, new content), then times the sync and
//!   the plain rsync, in alternating order. Both move exactly one change.
//! - **Migrate outage** beside the guide's procedure (stop, full copy of the tree and conf, start on the other
//!   host), both seen from the client: the longest run of failed HTTP probes (every 10 ms) at the vserver's
//!   address. `migrate` also prints its own outage (stop to confirmed start), reported beside.
//! - **No-change pass** over a tree of `small_files` files, beside a no-change plain rsync.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

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
    /// Timed rounds of the replication pass.
    pub rounds: usize,
    /// Files of the no-change tree.
    pub small_files: u64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicateReport {
    /// Size of the tree, MiB.
    pub tree_mib: f64,
    /// Files in it.
    pub files: u64,
    /// Files changed per round.
    pub changed_files: u64,
    /// Median time of a replication pass (`vserver NAME sync`, one standby), ms.
    pub sync_ms: f64,
    /// Median time of plain `rsync -aHAXS --delete` of the same change, ms.
    pub plain_ms: f64,
    /// sync / plain.
    pub sync_ratio: f64,
    /// Longest time the client saw no answer during `migrate`, ms.
    pub migrate_outage_ms: f64,
    /// The outage `migrate` printed (stop to confirmed start), ms.
    pub migrate_reported_ms: Option<u64>,
    /// Longest time the client saw no answer during the guide's procedure, ms.
    pub guide_outage_ms: f64,
    /// guide / migrate.
    pub outage_ratio: f64,
    /// Files in the no-change tree.
    pub small_files: u64,
    /// A no-change sync of it, ms.
    pub nochange_sync_ms: f64,
    /// A no-change plain rsync of it, ms.
    pub nochange_plain_ms: f64,
}

impl ReplicateReport {
    /// The report as a table with the targets.
    pub fn table(&self) -> String {
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        format!(
            "tree: {mib:.0} MiB in {files} files; {changed} files changed per round\n\
             figure                                   value        target\n\
             replication pass (vserver sync)      {sync:>9.0} ms\n\
             plain rsync -aHAXS, same change      {plain:>9.0} ms\n\
             replication / plain                  {ratio:>9.2}      <= 1.10  {m1}\n\
             migrate outage (client view)         {mo:>9.0} ms{reported}\n\
             guide's stop, copy, start (client)   {go:>9.0} ms\n\
             guide / migrate                      {oratio:>9.1}      >= 20    {m2}\n\
             no-change sync, {small} files     {ns:>9.0} ms\n\
             no-change plain rsync, same tree     {np:>9.0} ms  (ratio {nr:.2})\n",
            mib = self.tree_mib,
            files = self.files,
            changed = self.changed_files,
            sync = self.sync_ms,
            plain = self.plain_ms,
            ratio = self.sync_ratio,
            m1 = mark(self.sync_ratio <= 1.10),
            mo = self.migrate_outage_ms,
            reported = self.migrate_reported_ms.map(|m| format!("  (migrate says {m} ms)")).unwrap_or_default(),
            go = self.guide_outage_ms,
            oratio = self.outage_ratio,
            m2 = mark(self.outage_ratio >= 20.0),
            small = self.small_files,
            ns = self.nochange_sync_ms,
            np = self.nochange_plain_ms,
            nr = self.nochange_sync_ms / self.nochange_plain_ms.max(0.001),
        )
    }
}

/// A small fast generator of incompressible bytes.
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

/// Writes `files` files of `size` bytes each under `dir/data`, 256 per directory.
fn generate(dir: &Path, files: u64, size: usize, seed: u64) -> Result<Vec<PathBuf>> {
    let mut noise = Noise(seed | 1);
    let mut buf = vec![0u8; size];
    let mut paths = Vec::with_capacity(files as usize);
    for i in 0..files {
        let sub = dir.join("data").join(format!("d{:04}", i / 256));
        if i % 256 == 0 {
            fs::create_dir_all(&sub)?;
        }
        let path = sub.join(format!("f{i:07}"));
        noise.fill(&mut buf);
        fs::File::create(&path)?.write_all(&buf)?;
        paths.push(path);
    }
    Ok(paths)
}

fn vserver(lab: &Lab, host: usize, args: &[&str], local: bool) -> Result<Output> {
    let bin = crate::vserver_bin().context("no vserver command beside this executable")?;
    let mut cmd = lab.hosts[host].command(bin);
    cmd.args(args);
    if local {
        cmd.env("VSERVER_NO_AGENT", "1");
    }
    let out = cmd.output().context("running vserver")?;
    Ok(out)
}

fn must(out: Output, what: &str) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "{what} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

fn plain_rsync(from: &Path, to: &Path) -> Result<()> {
    let status = std::process::Command::new("rsync")
        .args(["-aHAXS", "--delete"])
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .status()
        .context("running rsync")?;
    if !status.success() {
        bail!("plain rsync {} -> {} failed: {status}", from.display(), to.display());
    }
    Ok(())
}

/// Runs `f` while probing `addr:80` from the client every 10 ms; returns `f`'s result and the longest run of
/// failed probes, ms (the probing goes on `linger` after `f`, so a service still coming up is counted).
fn probed<T>(lab: &Lab, addr: std::net::Ipv4Addr, linger: Duration, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let stop = AtomicBool::new(false);
    let worst = Mutex::new(0.0f64);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut down_since: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) || down_since.is_some() {
                let ok = lab.client.http_get(addr, 80, Duration::from_millis(200)).is_ok();
                match (ok, down_since) {
                    (false, None) => down_since = Some(Instant::now()),
                    (true, Some(t)) => {
                        let gap = t.elapsed().as_secs_f64() * 1000.0;
                        let mut w = worst.lock().unwrap_or_else(|e| e.into_inner());
                        *w = w.max(gap);
                        down_since = None;
                    }
                    // Still down when told to stop, and for long: give up counting.
                    (false, Some(t)) if stop.load(Ordering::Relaxed) && t.elapsed() > Duration::from_secs(60) => break,
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let result = f();
        std::thread::sleep(linger);
        stop.store(true, Ordering::Relaxed);
        result
    })
    .map(|r| (r, *worst.lock().unwrap_or_else(|e| e.into_inner())))
}

/// Waits until the primary reports no sync running and a complete copy for every row.
fn settle(agents: &Agents, host: usize) -> Result<()> {
    let settled = wait_for(Duration::from_secs(600), || {
        agents.status(host).ok().is_some_and(|s| {
            s["replication"].as_array().is_some_and(|rows| {
                !rows.is_empty()
                    && rows.iter().all(|r| r["syncing"] == false && r["last_complete_unix_ms"].as_u64().is_some())
            })
        })
    });
    settled.map(drop).context("the first automatic syncs did not complete")
}

/// Runs the benchmark (`cancel`: Ctrl-C).
pub fn run_replicate_bench(opts: &ReplicateOptions, cancel: &AtomicBool) -> Result<ReplicateReport> {
    let check = || if cancel.load(Ordering::Relaxed) { Err(anyhow::anyhow!(Interrupted)) } else { Ok(()) };
    if opts.files == 0 || opts.size_mib == 0 || opts.rounds == 0 || opts.small_files == 0 {
        bail!("--size-mib, --files, --rounds and --small-files must be above 0");
    }
    let lab = Lab::new(2)?;
    let (big, small) = ("bigsv", "smallsv");
    let addr = lab.free_addr(0);
    eprintln!(
        "bench replicate: building {big} ({} MiB in {} files) and {small} ({} files)",
        opts.size_mib, opts.files, opts.small_files
    );
    must(vserver(&lab, 0, &[big, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true)?, "build")?;
    must(vserver(&lab, 0, &[small, "build", "--busybox"], true)?, "build")?;
    let tree = lab.hosts[0].vservers_dir.join(big);
    crate::bench::install_httpd_service(&tree, "replicated")?;
    let size = ((opts.size_mib << 20) / opts.files).max(1) as usize;
    let files = generate(&tree, opts.files, size, 0x9e37_79b9_7f4a_7c15)?;
    let small_tree = lab.hosts[0].vservers_dir.join(small);
    generate(&small_tree, opts.small_files, 100, 7)?;
    check()?;
    let cluster = format!(
        "[vservers.{big}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 86400\n\
         [vservers.{small}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 86400\n"
    );
    let agents = Agents::start_with(&lab, Timing::default(), Some(&cluster))?;
    let alive =
        || agents.peer_state(0, 1).as_deref() == Some("alive") && agents.peer_state(1, 0).as_deref() == Some("alive");
    if wait_for(Duration::from_secs(20), alive).is_none() {
        bail!("the agents did not see each other; log of h0:\n{}", agents.log(0));
    }
    eprintln!("bench replicate: first syncs (automatic)");
    settle(&agents, 0)?;
    check()?;

    // (b) replication pass beside plain rsync, same change.
    let plain = lab.hosts[1].dir.join("plain");
    let changed = ((opts.files as f64 * opts.change_pct / 100.0).round() as u64).max(1);
    let (mut sync_ms, mut plain_ms) = (Vec::new(), Vec::new());
    let mut noise = Noise(42);
    let mut buf = vec![0u8; size];
    for round in 0..opts.rounds {
        check()?;
        eprintln!("bench replicate: round {}/{}", round + 1, opts.rounds);
        must(vserver(&lab, 0, &[big, "sync"], false)?, "untimed sync")?;
        plain_rsync(&tree, &plain)?;
        let stride = (opts.files / changed).max(1) as usize;
        for path in files.iter().skip(round).step_by(stride).take(changed as usize) {
            noise.fill(&mut buf);
            fs::write(path, &buf)?;
        }
        let sync = || {
            let (out, ms) = timed(|| must(vserver(&lab, 0, &[big, "sync"], false)?, "sync"))?;
            // The sync's own account of its steps, to see where the time goes.
            eprint!("  {}", String::from_utf8_lossy(&out.stdout));
            Ok::<_, anyhow::Error>(((), ms))
        };
        let copy = || timed(|| plain_rsync(&tree, &plain));
        if round % 2 == 0 {
            sync_ms.push(sync()?.1);
            plain_ms.push(copy()?.1);
        } else {
            plain_ms.push(copy()?.1);
            sync_ms.push(sync()?.1);
        }
    }
    let _ = fs::remove_dir_all(&plain);

    // (c) no-change pass over the small-file tree.
    check()?;
    eprintln!("bench replicate: no-change pass over {} files", opts.small_files);
    must(vserver(&lab, 0, &[small, "sync"], false)?, "untimed sync")?;
    let plain_small = lab.hosts[1].dir.join("plain-small");
    plain_rsync(&small_tree, &plain_small)?;
    let (_, nochange_sync_ms) = timed(|| must(vserver(&lab, 0, &[small, "sync"], false)?, "no-change sync"))?;
    let ((), nochange_plain_ms) = timed(|| plain_rsync(&small_tree, &plain_small))?;
    let _ = fs::remove_dir_all(&plain_small);

    // (a) migrate beside the guide's procedure, from the client.
    check()?;
    eprintln!("bench replicate: migrate h0 -> h1");
    must(vserver(&lab, 0, &[big, "start"], false)?, "start")?;
    if lab.client.wait_http(addr, 80, Instant::now() + Duration::from_secs(20)).is_none() {
        bail!("{big} does not answer at {addr}");
    }
    let (out, migrate_outage_ms) = probed(&lab, addr, Duration::from_millis(300), || {
        must(vserver(&lab, 0, &[big, "migrate", "h1"], false)?, "migrate")
    })?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let migrate_reported_ms = said.split("outage ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok());

    check()?;
    eprintln!("bench replicate: the guide's procedure h1 -> h0 (stop, full copy, start)");
    let target = lab.hosts[0].vservers_dir.join(big);
    if target.exists() {
        bail!("{} exists before the guide's copy", target.display());
    }
    let ((), guide_outage_ms) = probed(&lab, addr, Duration::from_millis(300), || {
        must(vserver(&lab, 1, &[big, "stop"], false)?, "stop")?;
        plain_rsync(&lab.hosts[1].vservers_dir.join(big), &target)?;
        for ext in ["conf", "sh"] {
            let from = lab.hosts[1].conf_dir.join(format!("{big}.{ext}"));
            if from.exists() {
                fs::copy(&from, lab.hosts[0].conf_dir.join(format!("{big}.{ext}")))?;
            }
        }
        must(vserver(&lab, 0, &[big, "start"], false)?, "start on h0")?;
        if lab.client.wait_http(addr, 80, Instant::now() + Duration::from_secs(20)).is_none() {
            bail!("{big} does not answer at {addr} after the guide's procedure");
        }
        Ok(())
    })?;
    let _ = vserver(&lab, 0, &[big, "stop"], false);

    let tree_mib = (opts.files * size as u64) as f64 / (1u64 << 20) as f64;
    let (s, p) = (median(&sync_ms).unwrap_or(0.0), median(&plain_ms).unwrap_or(0.0));
    Ok(ReplicateReport {
        tree_mib,
        files: opts.files,
        changed_files: changed,
        sync_ms: s,
        plain_ms: p,
        sync_ratio: s / p.max(0.001),
        migrate_outage_ms,
        migrate_reported_ms,
        guide_outage_ms,
        outage_ratio: guide_outage_ms / migrate_outage_ms.max(0.001),
        small_files: opts.small_files,
        nochange_sync_ms,
        nochange_plain_ms,
    })
}
