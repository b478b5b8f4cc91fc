//! The baseline of `bench takeover`'s crash run: keepalived (VRRP) moving a floating address between two hosts
//! of a lab like the product's, each host running a plain busybox httpd that serves a page naming it.
//!
//! keepalived runs with its default timing (`advert_int 1`: one advertisement a second, so the backup takes
//! over 3 intervals plus its skew, about 3.6 s, after the master's last one), VRRP over unicast between the two
//! hosts' lab addresses (no multicast), one virtual address on the lab interface, `nopreempt` (see
//! [`config`]). Each trial, like the product's: the VIP answers from the master; the master's keepalived and
//! httpd are killed (`kill -9`) and its link set down; timed from the kill until the client gets an answer at
//! the VIP, from the backup (probed every 10 ms); then the crashed host comes back (its link up, no VIP left,
//! keepalived and httpd started again), stays a backup, and the next trial crashes the new master.
//!
//! Every process started here runs in its own process group and is killed when the [`Pair`] drops (on every
//! exit path, Ctrl-C included); the lab's drop then kills whatever is left in its namespaces.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use super::contender::{log_tail, plumb};
use super::service::write_page;
use super::stats::percentile;
use super::takeover::check;
use super::Interrupted;
use crate::lab::{Lab, SUBNET_PREFIX};

/// keepalived's default advertisement interval, seconds (`advert_int`, left at its default).
pub const ADVERT_INT_SECS: u64 = 1;

/// The VRRP router id of the pair.
const VRID: u8 = 51;

/// Priority of the host that starts as master (h0).
const FIRST_MASTER_PRIORITY: u8 = 150;

/// Priority of the other host (h1).
const FIRST_BACKUP_PRIORITY: u8 = 100;

/// After a (re)start of a host's keepalived, the wait before the pair counts as stable: more than the
/// longest master-down interval (3 advertisement intervals and a skew under one), so that a host that
/// hears no advertisement has become master by then, which the check after it sees.
const SETTLE: Duration = Duration::from_millis(3 * ADVERT_INT_SECS * 1000 + 1000 + 500);

/// Longest wait for an answer after a crash (the product's trials give up after as long).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// How to install keepalived, for the line that says the baseline was skipped.
pub const INSTALL_HINT: &str = "apt-get install keepalived";

/// One crash of the keepalived master.
#[derive(Debug, Clone, Serialize)]
pub struct KeepalivedTrial {
    /// The host crashed.
    pub crashed: String,
    /// The host whose page answered at the VIP afterwards.
    pub to: String,
    /// From the kill to the client's first answer at the VIP, ms.
    pub recovery_ms: f64,
}

/// The keepalived baseline's figures.
#[derive(Debug, Clone, Serialize)]
pub struct KeepalivedReport {
    /// Hosts of keepalived (a master and a backup).
    pub hosts: usize,
    /// keepalived's advertisement interval, s (its default).
    pub advert_int_secs: u64,
    /// Whether the instances had `nopreempt` (a host that comes back stays a backup).
    pub nopreempt: bool,
    /// keepalived's version, as `keepalived --version` says it.
    pub version: String,
    /// Every crash.
    pub trials: Vec<KeepalivedTrial>,
    /// Recovery p50, ms.
    pub p50_ms: f64,
    /// Recovery p90, ms.
    pub p90_ms: f64,
    /// Recovery max, ms.
    pub max_ms: f64,
}

/// What became of the baseline in a crash run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Baseline {
    /// It ran: its figures.
    Measured(KeepalivedReport),
    /// It did not run (keepalived is not installed, or `--no-baseline`).
    Skipped {
        /// Why.
        reason: String,
    },
    /// It failed; the product's figures stand, without a ratio.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl Baseline {
    /// The baseline's recovery p50, ms, when it was measured.
    pub fn p50_ms(&self) -> Option<f64> {
        match self {
            Baseline::Measured(k) => Some(k.p50_ms),
            _ => None,
        }
    }

    /// The line under each cluster size of the crash run: the baseline's p50 and the product's p50 over it.
    pub(super) fn vs_line(&self, product_p50_ms: f64) -> String {
        match self {
            Baseline::Measured(k) => match ratio(product_p50_ms, k.p50_ms) {
                Some(r) => format!(
                    "  vs keepalived (advert_int {} s, same lab): p50 {:.0} ms -> ratio {r:.2}",
                    k.advert_int_secs, k.p50_ms
                ),
                None => {
                    format!("  vs keepalived (advert_int {} s, same lab): p50 {:.0} ms", k.advert_int_secs, k.p50_ms)
                }
            },
            Baseline::Skipped { reason } => format!("  vs keepalived: skipped ({reason})"),
            // The first line: the whole error (with a log) is in the JSON report and was printed when it failed.
            Baseline::Failed { error } => {
                format!("  vs keepalived: the baseline failed ({})", error.lines().next().unwrap_or_default())
            }
        }
    }

    /// Its own lines of the table (none unless measured).
    pub(super) fn table(&self, out: &mut String) {
        let Baseline::Measured(k) = self else {
            return;
        };
        let _ = writeln!(
            out,
            "keepalived {} baseline, {} hosts (VRRP over unicast, advert_int {} s: its default timing{}, busybox \
             httpd on each): {} master crashes",
            k.version,
            k.hosts,
            k.advert_int_secs,
            if k.nopreempt { ", nopreempt" } else { "" },
            k.trials.len()
        );
        let _ = writeln!(
            out,
            "  recovery (kill -> answer)    p50 {:.0} ms   p90 {:.0} ms   max {:.0} ms",
            k.p50_ms, k.p90_ms, k.max_ms
        );
    }
}

/// `ours / theirs`, when both are positive.
pub(super) fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (ours > 0.0 && theirs > 0.0).then(|| ours / theirs)
}

/// The first executable file called `name` in the directories of `path` (a `PATH` value).
pub(super) fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The baseline of a crash run of `trials` crashes: skipped (with the reason) when keepalived is not on `PATH`,
/// failed (with the error) when it does not work; an error only when Ctrl-C stopped it.
pub(super) fn baseline(trials: usize, cancel: &AtomicBool) -> Result<Baseline> {
    let Some(bin) = find_on_path("keepalived", std::env::var_os("PATH").as_deref()) else {
        let reason = format!("keepalived is not installed: {INSTALL_HINT}");
        eprintln!("bench takeover: keepalived baseline skipped: {reason}");
        return Ok(Baseline::Skipped { reason });
    };
    match run(&bin, trials, cancel) {
        Ok(report) => Ok(Baseline::Measured(report)),
        Err(e) if e.is::<Interrupted>() => Err(e),
        Err(e) => {
            eprintln!("bench takeover: the keepalived baseline failed: {e:#}");
            Ok(Baseline::Failed { error: format!("{e:#}") })
        }
    }
}

/// keepalived's configuration for one host of the pair.
///
/// `nopreempt`: a careful operator sets it. Without it, a crashed master that comes back takes the address
/// back as soon as it runs again, a second outage for the clients that buys nothing (both hosts serve the
/// same page); with it, the host that took over keeps the address until it fails in turn, as the product
/// does (a crashed owner comes back as a standby). keepalived only honours `nopreempt` with `state BACKUP`,
/// so both hosts start as backups and h0 becomes the first master by its higher priority.
pub(super) fn config(router_id: &str, priority: u8, dev: &str, src: Ipv4Addr, peer: Ipv4Addr, vip: Ipv4Addr) -> String {
    format!(
        "global_defs {{\n\
         \x20   router_id {router_id}\n\
         }}\n\
         \n\
         vrrp_instance VI_1 {{\n\
         \x20   state BACKUP\n\
         \x20   nopreempt\n\
         \x20   interface {dev}\n\
         \x20   virtual_router_id {VRID}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {ADVERT_INT_SECS}\n\
         \x20   unicast_src_ip {src}\n\
         \x20   unicast_peer {{\n\
         \x20       {peer}\n\
         \x20   }}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip}/{SUBNET_PREFIX} dev {dev}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// The VRRP state keepalived logged last (`MASTER`, `BACKUP`, `FAULT`), in a log of its console output.
pub(super) fn last_state(log: &str) -> Option<&str> {
    log.lines().rev().find_map(|line| {
        let rest = &line[line.find("Entering ")? + "Entering ".len()..];
        rest.strip_suffix(" STATE").or_else(|| rest.split_once(" STATE ").map(|(s, _)| s))
    })
}

/// The host a page names (`h0`, `h1`), from the body the client got.
fn host_of(body: &str) -> Option<usize> {
    let start = body.find("<body>")? + "<body>".len();
    let name = &body[start..start + body[start..].find('<')?];
    name.strip_prefix('h')?.parse().ok()
}

/// The two hosts' keepalived and httpd; every process is killed when it drops.
struct Pair<'lab> {
    lab: &'lab Lab,
    bin: PathBuf,
    vip: Ipv4Addr,
    /// Per host: its keepalived (the parent; its VRRP child shares its process group) and its httpd.
    procs: Vec<(Option<Child>, Option<Child>)>,
}

impl<'lab> Pair<'lab> {
    fn new(lab: &'lab Lab, bin: PathBuf, vip: Ipv4Addr) -> Result<Self> {
        let pair = Pair { lab, bin, vip, procs: (0..lab.hosts.len()).map(|_| (None, None)).collect() };
        for i in 0..lab.hosts.len() {
            let dir = pair.dir(i);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write_page(&dir, &format!("h{i}"))?;
            let peer = lab.hosts[1 - i].addr;
            let priority = if i == 0 { FIRST_MASTER_PRIORITY } else { FIRST_BACKUP_PRIORITY };
            let host = &lab.hosts[i];
            let text = config(&format!("h{i}"), priority, &host.dev, host.addr, peer, vip);
            fs::write(dir.join("keepalived.conf"), text).context("writing keepalived.conf")?;
        }
        Ok(pair)
    }

    /// Host `i`'s files: the page (`www/index.html`), the configuration, the pid files and the log.
    fn dir(&self, i: usize) -> PathBuf {
        self.lab.hosts[i].dir.join("keepalived")
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir(i).join("keepalived.log")
    }

    fn log_text(&self, i: usize) -> String {
        fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    /// Starts host `i`'s httpd and keepalived (in the foreground, its own files); both killed first.
    fn spawn(&mut self, i: usize) -> Result<()> {
        self.kill9(i);
        let dir = self.dir(i);
        let host = &self.lab.hosts[i];
        let mut httpd = host.command("busybox");
        httpd.args(["httpd", "-f", "-p", "80", "-h"]).arg(dir.join("www"));
        plumb(&mut httpd, &dir.join("httpd.log"))?;
        self.procs[i].1 = Some(httpd.spawn().context("starting busybox httpd")?);
        for f in ["keepalived.pid", "vrrp.pid"] {
            let _ = fs::remove_file(dir.join(f));
        }
        let mut k = host.command(&self.bin);
        // -n: in the foreground; -l -D: a detailed log on the console (to the log file), -G: none to syslog;
        // -P: VRRP only (no health checkers); -p/-r: this instance's own pid files, so that two run on one
        // machine.
        k.args(["-n", "-l", "-D", "-G", "-P", "-f"])
            .arg(dir.join("keepalived.conf"))
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"));
        plumb(&mut k, &self.log(i))?;
        self.procs[i].0 = Some(k.spawn().context("starting keepalived")?);
        Ok(())
    }

    /// `kill -9` of host `i`'s keepalived (its whole process group: the parent and its VRRP child at once)
    /// and httpd; each waited for.
    fn kill9(&mut self, i: usize) {
        let (k, h) = &mut self.procs[i];
        for child in [k.take(), h.take()].into_iter().flatten() {
            kill_group(child);
        }
    }

    /// Fails when host `i`'s keepalived or httpd is no longer running (it exited on its own), with its log.
    fn ensure_running(&mut self, i: usize) -> Result<()> {
        let logs = [self.log(i), self.dir(i).join("httpd.log")];
        let (k, h) = &mut self.procs[i];
        for ((what, child), log) in [("keepalived", k), ("httpd", h)].into_iter().zip(logs) {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("h{i}'s {what} exited ({status}); its log:\n{}", log_tail(&log));
            }
        }
        Ok(())
    }

    /// Host `i` holds the VIP on its lab interface.
    fn holds_vip(&self, i: usize) -> bool {
        let host = &self.lab.hosts[i];
        let out = host.command("ip").args(["-4", "-o", "addr", "show", "dev", &host.dev]).output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {}/", self.vip)))
    }

    /// Removes the VIP from host `i`'s lab interface, if there: a crashed host that boots again has no
    /// address left from before.
    fn drop_vip(&self, i: usize) {
        let host = &self.lab.hosts[i];
        let cidr = format!("{}/{SUBNET_PREFIX}", self.vip);
        let _ = host.command("ip").args(["addr", "del", &cidr, "dev", &host.dev]).output();
    }

    /// Which host's page the VIP serves now.
    fn answering(&self) -> Option<usize> {
        self.lab.client.http_get(self.vip, 80, Duration::from_millis(250)).ok().and_then(|b| host_of(&b))
    }

    /// Waits until the VIP answers from host `master`; its log on failure.
    fn wait_answer_from(&mut self, master: usize, limit: Duration, cancel: &AtomicBool) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            check(cancel)?;
            self.ensure_running(master)?;
            if self.answering() == Some(master) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the VIP {} did not answer from h{master} within {} s; keepalived log of h{master}:\n{}",
                self.vip,
                limit.as_secs(),
                log_tail(&self.log(master))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After host `backup`'s keepalived (re)started at `since` (its log then `from` bytes long): waits
    /// [`SETTLE`], then checks that `backup` stayed a backup without the VIP and the VIP answers from `master`.
    fn wait_stable(
        &mut self,
        master: usize,
        backup: usize,
        since: Instant,
        from: usize,
        cancel: &AtomicBool,
    ) -> Result<()> {
        pause(SETTLE.saturating_sub(since.elapsed()).as_millis() as u64, cancel)?;
        self.ensure_running(backup)?;
        let log = self.log_text(backup);
        let state = last_state(log.get(from..).unwrap_or(""));
        ensure!(
            state == Some("BACKUP") && !self.holds_vip(backup),
            "h{backup}'s keepalived is not a backup {} s after its start (state {state:?}); its log:\n{}",
            SETTLE.as_secs(),
            log_tail(&self.log(backup))
        );
        self.wait_answer_from(master, Duration::from_secs(5), cancel)
    }
}

impl Drop for Pair<'_> {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }
}

/// SIGKILL to `child`'s process group (it leads one: see [`plumb`]), then waits for it.
fn kill_group(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A number in `0..n` (`n` > 0), different at each call.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() % n
}

/// Sleeps `ms` milliseconds, or less when Ctrl-C is pressed (then [`Interrupted`]).
fn pause(ms: u64, cancel: &AtomicBool) -> Result<()> {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        check(cancel)?;
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// keepalived's version line (`Keepalived v2.2.7 (...)`: `v2.2.7`).
fn version(bin: &Path) -> String {
    let out = std::process::Command::new(bin).arg("--version").output();
    let text = out.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
    text.ok()
        .and_then(|t| {
            t.split_whitespace()
                .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(unknown version)".to_string())
}

/// The baseline's trials in a lab of its own, 2 hosts.
fn run(bin: &Path, trials: usize, cancel: &AtomicBool) -> Result<KeepalivedReport> {
    let version = version(bin);
    eprintln!(
        "bench takeover: keepalived {version} baseline, 2 hosts, advert_int {ADVERT_INT_SECS} s (its default), \
         {trials} master crashes"
    );
    let lab = Lab::new(2)?;
    let vip = lab.free_addr(0);
    let mut pair = Pair::new(&lab, bin.to_path_buf(), vip)?;
    // h0 first, alone: it becomes master once it hears nobody (the master-down interval); then h1, which must
    // stay a backup.
    pair.spawn(0)?;
    pair.wait_answer_from(0, Duration::from_secs(20), cancel)?;
    let from = pair.log_text(1).len();
    let since = Instant::now();
    pair.spawn(1)?;
    pair.wait_stable(0, 1, since, from, cancel)?;
    let mut on = 0;
    let mut done = Vec::new();
    for trial in 0..trials {
        check(cancel)?;
        let other = 1 - on;
        // A crash comes at any point of the master's advertisement cycle: without this pause, each trial's
        // kill would come at the same point of it (the trials' waits are alike), every recovery the same.
        pause(random_below(ADVERT_INT_SECS * 1000), cancel)?;
        let killed = Instant::now();
        pair.kill9(on);
        lab.set_link(on, false)?;
        let mut answered = None;
        while killed.elapsed() < ANSWER_LIMIT {
            check(cancel)?;
            if let Ok(body) = lab.client.http_get(vip, 80, Duration::from_millis(100)) {
                answered = Some((killed.elapsed(), host_of(&body)));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (recovery, to) = answered.ok_or_else(|| {
            anyhow!(
                "trial {}: no answer at {vip} 30 s after the crash of h{on}; keepalived log of h{other}:\n{}",
                trial + 1,
                log_tail(&pair.log(other))
            )
        })?;
        if to != Some(other) {
            bail!("trial {}: after the crash of h{on}, the VIP answered with the page of {to:?}", trial + 1);
        }
        eprintln!(
            "  keepalived trial {:>2}/{trials}: h{on} crashed, h{other} answers after {} ms",
            trial + 1,
            recovery.as_millis()
        );
        done.push(KeepalivedTrial {
            crashed: format!("h{on}"),
            to: format!("h{other}"),
            recovery_ms: recovery.as_secs_f64() * 1000.0,
        });
        // The crashed host comes back (no VIP left from before it crashed) and stays a backup (nopreempt).
        pair.drop_vip(on);
        lab.set_link(on, true)?;
        let from = pair.log_text(on).len();
        let since = Instant::now();
        pair.spawn(on)?;
        pair.wait_stable(other, on, since, from, cancel)?;
        on = other;
    }
    drop(pair);
    let ms: Vec<f64> = done.iter().map(|t| t.recovery_ms).collect();
    Ok(KeepalivedReport {
        hosts: 2,
        advert_int_secs: ADVERT_INT_SECS,
        nopreempt: true,
        version,
        p50_ms: percentile(&ms, 50.0).unwrap_or(0.0),
        p90_ms: percentile(&ms, 90.0).unwrap_or(0.0),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
        trials: done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_uses_unicast_the_default_interval_and_nopreempt() {
        let a = |d| Ipv4Addr::new(198, 18, 0, d);
        let c = config("h0", 150, "eth0", a(10), a(11), a(100));
        for want in [
            "router_id h0",
            "state BACKUP",
            "nopreempt",
            "interface eth0",
            "virtual_router_id 51",
            "priority 150",
            "advert_int 1\n",
            "unicast_src_ip 198.18.0.10",
            "unicast_peer {\n        198.18.0.11\n    }",
            "198.18.0.100/24 dev eth0",
        ] {
            assert!(c.contains(want), "{want:?} missing from:\n{c}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count(), "{c}");
    }

    #[test]
    fn the_last_state_is_read_from_the_log() {
        let log = "Sat Dec  5 08:39:02 2026: (VI_1) Entering BACKUP STATE (init)\n\
                   Sat Dec  5 08:39:02 2026: Startup complete\n";
        assert_eq!(last_state(log), Some("BACKUP"));
        let log = format!("{log}Sat Dec  5 08:39:06 2026: (VI_1) Entering MASTER STATE\nSending gratuitous ARP\n");
        assert_eq!(last_state(&log), Some("MASTER"));
        assert_eq!(last_state("Starting Keepalived v2.2.7\n"), None);
    }

    #[test]
    fn random_numbers_stay_below_the_bound_and_vary() {
        let draws: Vec<u64> = (0..50).map(|_| random_below(1000)).collect();
        assert!(draws.iter().all(|&d| d < 1000));
        assert!(draws.iter().any(|&d| d != draws[0]), "{draws:?}");
    }

    #[test]
    fn a_page_names_its_host() {
        assert_eq!(host_of(&crate::bench::service::page("h1")), Some(1));
        assert_eq!(host_of("<html><body>web</body></html>"), None);
        assert_eq!(host_of("nothing"), None);
    }

    #[test]
    fn the_vs_line_gives_the_ratio_of_the_p50s_or_why_there_is_none() {
        let k = KeepalivedReport {
            hosts: 2,
            advert_int_secs: 1,
            nopreempt: true,
            version: "v2.2.7".into(),
            trials: vec![],
            p50_ms: 3650.0,
            p90_ms: 3700.0,
            max_ms: 3720.0,
        };
        let b = Baseline::Measured(k);
        assert_eq!(b.vs_line(2555.0), "  vs keepalived (advert_int 1 s, same lab): p50 3650 ms -> ratio 0.70");
        let s = Baseline::Skipped { reason: format!("keepalived is not installed: {INSTALL_HINT}") };
        assert_eq!(
            s.vs_line(2555.0),
            "  vs keepalived: skipped (keepalived is not installed: apt-get install keepalived)"
        );
        assert_eq!(ratio(1.0, 0.0), None);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!((json["status"].as_str(), json["p50_ms"].as_f64()), (Some("measured"), Some(3650.0)));
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], "skipped");
    }

    #[test]
    fn keepalived_is_found_on_path_only_as_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("keepalived"), "").unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_on_path("keepalived", Some(&path)), None, "not executable");
        fs::write(b.join("keepalived"), "").unwrap();
        fs::set_permissions(b.join("keepalived"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("keepalived", Some(&path)), Some(b.join("keepalived")));
        assert_eq!(find_on_path("keepalived", None), None);
    }
}
