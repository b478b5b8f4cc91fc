//! Continuous replication (`data = "continuous"` in `cluster.toml`): the primary's agent watches the tree and
//! ships each batch of changes to the standbys, so a standby's replica follows a writer within a few batches;
//! a crash of the primary loses at most the changes not yet committed there, and the takeover starts from
//! whole batches (a prefix of the writer's log, no torn line). Standbys also keep points in time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::{Sampler, Watchdogs};
use vserver_lab::skip_unless_root;
use vserver_lab::Lab;

use crate::takeover::assert_one_copy;
use crate::writer::{install_writer, Acks};
use crate::{all_alive, owner, text, vserver, PATIENCE};

/// Generous bound for a replica to catch up (batches run on a shared, busy machine).
const CATCH_UP: Duration = Duration::from_secs(60);

/// A lab's h0 with a busybox vserver serving HTTP and running the writer, placed on h0 (standbys h1, h2) with
/// `data = "continuous"` and `extra` in its cluster entry, started through h0's agent: the agents, the
/// vserver's name and the acknowledgements the client sees.
fn continuous_on_h0<'lab>(lab: &'lab Lab, prefix: &str, extra: &str) -> (Agents<'lab>, String, Acks) {
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    let tree = lab.hosts[0].vservers_dir.join(&name);
    vserver_lab::bench::install_httpd_service(&tree, prefix).unwrap();
    install_writer(&tree);
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/seed"), "before\n").unwrap();
    // A long interval: what the standbys get comes from the watch (its full passes and its batches).
    let cluster = format!(
        "[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n\
         data = \"continuous\"\n{extra}"
    );
    let agents = Agents::start_full(lab, crate::FAST, Some(&cluster), "").unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    let out = vserver(lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    let acks = Acks::start(lab, addr);
    assert!(acks.wait_past(0), "the writer runs on h0; log:\n{}", agents.log(0));
    (agents, name, acks)
}

/// Polls `check` until it gives a value, at most `timeout`.
fn wait_some<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let mut found = None;
    wait_for(timeout, || {
        found = check();
        found.is_some()
    });
    found
}

/// Host `i`'s current replica of `name` (its tree), if it has one.
fn replica_tree(lab: &Lab, i: usize, name: &str) -> PathBuf {
    lab.hosts[i].vservers_dir.join(".replicas").join(name).join("current").join("tree")
}

/// The numbers of a writer's log at `path`: every line whole and the numbers 1, 2, 3... in order, or why not.
fn log_numbers(path: &Path) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!("{}: its last line is torn: {:?}", path.display(), text.lines().last()));
    }
    let numbers: Vec<u64> = text
        .lines()
        .map(|l| l.parse().map_err(|_| format!("{}: a line that is no number: {l:?}", path.display())))
        .collect::<Result<_, _>>()?;
    match numbers.iter().enumerate().find(|(i, n)| **n != *i as u64 + 1) {
        Some((i, n)) => Err(format!("{}: line {} is {n}: not a prefix of the writer's log", path.display(), i + 1)),
        None => Ok(numbers),
    }
}

/// The last number of host `i`'s current replica of the writer's log (0 when it has none yet). A replica's
/// log is always whole batches of the writer's: a prefix, with whole lines.
fn replica_high(lab: &Lab, i: usize, name: &str) -> u64 {
    let log = replica_tree(lab, i, name).join("data/log");
    if !log.exists() {
        return 0;
    }
    // The link may move to the other generation while the file is read: read again then.
    for _ in 0..5 {
        match log_numbers(&log) {
            Ok(numbers) => return numbers.last().copied().unwrap_or(0),
            Err(e) if log.exists() && e.contains("No such file") => continue,
            Err(e) => panic!("h{i}'s replica: {e}"),
        }
    }
    0
}

/// The continuous lag of `name` to standby `standby` in h0's status, ms, and the batches committed there.
fn lag(agents: &Agents, name: &str, standby: &str) -> Option<(u64, u64)> {
    let status = agents.status(0).ok()?;
    let r = status["replication"].as_array()?.iter().find(|r| r["vserver"] == name && r["standby"] == standby)?.clone();
    Some((r["change_lag_ms"].as_u64()?, r["batches"].as_u64()?))
}

#[test]
fn a_continuous_replica_follows_its_writer_and_a_crash_loses_at_most_the_lag() {
    if skip_unless_root("a_continuous_replica_follows_its_writer_and_a_crash_loses_at_most_the_lag") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let mut dogs = Watchdogs::start(&lab).unwrap();
    let (mut agents, name, acks) = continuous_on_h0(&lab, "cr", "batch_ms = 250\n");
    let sampler = Sampler::start(&lab, &name);

    // Each standby's current replica follows the writer: what the writer acknowledged at some moment reaches
    // it within a few batches, three times over.
    let mut lags = Vec::new();
    for round in 0..3 {
        let acked = acks.high();
        for standby in [1, 2] {
            let caught = wait_for(CATCH_UP, || {
                if let Some((ms, _)) = lag(&agents, &name, &format!("h{standby}")) {
                    lags.push(ms);
                }
                replica_high(&lab, standby, &name) >= acked
            });
            assert!(
                caught.is_some(),
                "round {round}: h{standby}'s replica reaches {acked} (it has {}); h0's status: {}\nlog:\n{}",
                replica_high(&lab, standby, &name),
                agents.status(0).map(|s| s["replication"].to_string()).unwrap_or_default(),
                agents.log(0)
            );
        }
    }
    let status = agents.status(0).unwrap();
    let entries: Vec<&serde_json::Value> =
        status["replication"].as_array().unwrap().iter().filter(|r| r["vserver"] == name.as_str()).collect();
    assert_eq!(entries.len(), 2, "{status}");
    for r in entries {
        assert_eq!(r["data"], "continuous", "{r}");
        assert!(r["batches"].as_u64().is_some_and(|b| b > 0), "batches were committed: {r}");
        assert!(r["last_batch_unix_ms"].as_u64().is_some(), "{r}");
        assert!(r["rpo_secs"].as_f64().is_some(), "{r}");
    }
    let metrics = agents.request(0, 0, "GET", "/metrics", Some(agents.secret()), None).unwrap();
    assert!(
        metrics.body.contains(&format!("vserver_replication_change_lag_seconds{{vserver=\"{name}\",standby=\"h1\"}}")),
        "{}",
        metrics.body
    );
    lags.sort_unstable();
    let median = lags.get(lags.len() / 2).copied().unwrap_or(0);
    eprintln!(
        "continuous lag seen in h0's status while the writer ran: median {median} ms, max {} ms ({} samples)",
        lags.last().copied().unwrap_or(0),
        lags.len()
    );

    // What both standbys' replicas hold before the crash is certain to survive it (whichever takes over); the
    // writer goes on a while longer.
    let early = acks.high();
    for standby in [1, 2] {
        let held = wait_for(CATCH_UP, || replica_high(&lab, standby, &name) >= early);
        assert!(held.is_some(), "h{standby} holds {early}");
    }
    assert!(acks.wait_past(early + 10), "the writer goes on");

    // h0 crashes: its agent and watchdog killed, its vservers killed, its link pulled.
    let crash_acked = acks.high();
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    let ran = wait_for(Duration::from_secs(30), || lab.hosts[1].runs(&name) || lab.hosts[2].runs(&name));
    assert!(ran.is_some(), "taken over; h1:\n{}", agents.log(1));
    let to = if lab.hosts[1].runs(&name) { 1 } else { 2 };
    let tree = lab.hosts[to].vservers_dir.join(&name);
    // Where the takeover's copy ended: the writer's second start.
    let starts = wait_some(PATIENCE, || {
        let s = std::fs::read_to_string(tree.join("data/starts")).ok()?;
        let numbers: Vec<u64> = s.lines().filter_map(|l| l.parse().ok()).collect();
        (numbers.len() >= 2).then_some(numbers)
    });
    let starts = starts.expect("the writer started again on the new host");
    let from = *starts.last().unwrap();
    // The whole log, read once the writer's line after the copy is written: every line whole, no number
    // missing or repeated (the copy was a prefix, and the writer went on from its last line).
    let numbers = wait_some(PATIENCE, || log_numbers(&tree.join("data/log")).ok().filter(|n| n.len() as u64 > from))
        .unwrap_or_else(|| panic!("{:?}", log_numbers(&tree.join("data/log"))));
    assert!(numbers.len() as u64 > from);
    assert!(
        from >= early,
        "the takeover's copy ends at {from}, before {early}, which both standbys held before the crash"
    );
    eprintln!(
        "takeover on h{to}: the copy ends at {from}; the client had seen {crash_acked} acknowledged at the crash: \
         {} acknowledged writes lost",
        crash_acked.saturating_sub(from)
    );
    assert_eq!(owner(&agents, to, &name).map(|o| o.0), Some(format!("h{to}")));
    drop(acks);
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn a_standby_of_a_continuous_vserver_keeps_points_in_time_and_lists_them() {
    if skip_unless_root("a_standby_of_a_continuous_vserver_keeps_points_in_time_and_lists_them") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, acks) = continuous_on_h0(&lab, "cp", "points_every_secs = 60\npoints_kept = 2\n");
    // The first commit on a standby makes its first point (none was due yet).
    let listed = wait_some(CATCH_UP, || {
        let replicas = agents.status(1).ok()?["replicas"].as_array()?.clone();
        let r = replicas.into_iter().find(|r| r["vserver"] == name.as_str())?;
        let points = r["points"].as_array()?.clone();
        points.first()?["stamp"].as_str().map(str::to_string)
    });
    let stamp = listed.unwrap_or_else(|| panic!("h1 lists a point; its log:\n{}", agents.log(1)));
    let point = lab.hosts[1].vservers_dir.join(".replicas").join(&name).join("points").join(&stamp);
    assert!(point.join("conf").join(format!("{name}.conf")).is_file(), "{}", point.display());
    assert!(point.join("meta.json").is_file());
    assert_eq!(std::fs::read_to_string(point.join("tree/data/seed")).unwrap(), "before\n");
    let log = point.join("tree/data/log");
    let kept = std::fs::read(&log).unwrap_or_default();

    // A mistake on the primary (a file removed, another rewritten) reaches the standby's replica within a few
    // batches; the point in time keeps what was there.
    let tree = lab.hosts[0].vservers_dir.join(&name);
    std::fs::remove_file(tree.join("data/seed")).unwrap();
    let current = replica_tree(&lab, 1, &name);
    let reached = wait_for(CATCH_UP, || !current.join("data/seed").exists() && replica_high(&lab, 1, &name) > 0);
    assert!(reached.is_some(), "the removal reaches h1's replica; h0's log:\n{}", agents.log(0));
    assert_eq!(std::fs::read_to_string(point.join("tree/data/seed")).unwrap(), "before\n", "the point keeps it");
    assert_eq!(std::fs::read(&log).unwrap_or_default(), kept, "the point's log did not change");
    if log.exists() {
        log_numbers(&log).unwrap();
    }
    assert!(acks.high() > 0);
}
