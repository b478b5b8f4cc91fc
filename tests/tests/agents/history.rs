//! Scenarios: the cluster's history (`GET /v1/events`, `vserver-stat --history`). After a host crash and
//! its takeover every host lists the same events, the returning host too; a partitioned host's fence is in
//! it once the host is back; a migrate and a local restart are in it; bad parameters are refused with a
//! sentence.

use std::time::{Duration, Instant};

use serde_json::Value;
use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::takeover::{synced_on_h0, wait_page};
use crate::{placed_on_h0, text, vserver, PATIENCE};

/// `GET /v1/events` of host `i` (asked from inside its namespace).
fn events(agents: &Agents, i: usize) -> Vec<Value> {
    agents
        .get(i, i, "/v1/events")
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The first event of `kind` about `vserver` (any vserver when `None`) in `list`.
fn find<'a>(list: &'a [Value], kind: &str, vserver: Option<&str>) -> Option<&'a Value> {
    list.iter().find(|e| e["kind"] == kind && vserver.is_none_or(|v| e["vserver"] == v))
}

/// `vserver-stat ARGS` on host `i`.
fn stat(lab: &Lab, i: usize, args: &[&str]) -> std::process::Output {
    let bin = vserver_lab::vserver_bin().expect("vserver binary").with_file_name("vserver-stat");
    lab.hosts[i].command(bin).args(args).output().unwrap()
}

#[test]
fn after_a_host_crash_every_host_lists_the_same_history() {
    if skip_unless_root("after_a_host_crash_every_host_lists_the_same_history") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "hi", "");

    // The crash: every process of h0 gone at once, and its link down.
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "taken over; h1:\n{}", agents.log(1));

    // h1 and h2 list the same events, with the host's death and the takeover and its phases.
    let complete = |list: &[Value]| {
        find(list, "host_dead", None).is_some_and(|e| e["text"].as_str().unwrap_or("").starts_with("h0 confirmed dead"))
            && find(list, "takeover", Some(&name)).is_some()
    };
    let same = wait_for(PATIENCE, || {
        let (a, b) = (events(&agents, 1), events(&agents, 2));
        complete(&a) && a == b
    });
    assert!(same.is_some(), "h1: {:?}\nh2: {:?}", events(&agents, 1), events(&agents, 2));
    let list = events(&agents, 1);
    let dead = find(&list, "host_dead", None).unwrap();
    let takeover = find(&list, "takeover", Some(&name)).unwrap();
    assert!(dead["seq"].as_u64() < takeover["seq"].as_u64(), "the death comes before the takeover: {list:?}");
    assert!(dead["text"].as_str().unwrap().contains(&name), "{dead}");
    let record = takeover["text"].as_str().unwrap().strip_prefix("takeover ").expect("a takeover record");
    let record: Value = serde_json::from_str(record).unwrap();
    assert_eq!((record["from"].as_str(), record["to"].as_str()), (Some("h0"), Some("h1")), "{record}");
    let phases: Vec<&str> = record["phases_ms"].as_array().unwrap().iter().filter_map(|p| p[0].as_str()).collect();
    for phase in ["detect", "confirm", "commit", "promote", "start"] {
        assert!(phases.contains(&phase), "phase {phase} in {record}");
    }
    let seqs: Vec<u64> = list.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");

    // The command shows the same, as a table and as JSON.
    let out = stat(&lab, 2, &["--history"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.contains("host_dead") && l.contains("h0 confirmed dead")), "{table}");
    assert!(
        table.lines().any(|l| l.contains("takeover") && l.contains(&name) && l.contains("taken over from h0 by h1")),
        "{table}"
    );
    let out = stat(&lab, 2, &["--history", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(find(&json, "takeover", Some(&name)).is_some(), "{json:?}");

    // `since` and `limit`.
    let first = seqs[0];
    let after: Vec<Value> = agents
        .get(1, 1, &format!("/v1/events?since={first}&limit=1"))
        .unwrap()
        .json()
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["seq"].as_u64(), Some(seqs[1]), "{after:?}");

    // h0 comes back: it catches up from the log and lists the same events.
    lab.set_link(0, true).unwrap();
    dogs.spawn(0).unwrap();
    agents.spawn(0).unwrap();
    let caught_up = wait_for(PATIENCE, || {
        let (a, b, c) = (events(&agents, 0), events(&agents, 1), events(&agents, 2));
        complete(&a) && a == b && b == c
    });
    assert!(
        caught_up.is_some(),
        "h0: {:?}\nh1: {:?}\nlog h0:\n{}",
        events(&agents, 0),
        events(&agents, 1),
        agents.log(0)
    );
}

#[test]
fn a_local_restart_and_a_migrate_are_in_the_history() {
    if skip_unless_root("a_local_restart_and_a_migrate_are_in_the_history") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, addr) = placed_on_h0(&lab, "hm", "", true);

    // Killed from outside: the supervisor restarts it on h0, and says so in the event log.
    lab.hosts[0].kill_vservers();
    let restarted = wait_for(PATIENCE, || find(&events(&agents, 2), "restart", Some(&name)).is_some());
    assert!(restarted.is_some(), "{:?}\nlog h0:\n{}", events(&agents, 2), agents.log(0));
    let list = events(&agents, 2);
    let restart = find(&list, "restart", Some(&name)).unwrap();
    assert_eq!(restart["host"], "h0", "{restart}");
    assert!(restart["text"].as_str().unwrap().contains("restarted"), "{restart}");
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());

    // Migrated: the source logs it, with the outage.
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}", text(&out), agents.log(0));
    let migrated = wait_for(PATIENCE, || find(&events(&agents, 1), "migrate", Some(&name)).is_some());
    assert!(migrated.is_some(), "{:?}", events(&agents, 1));
    let list = events(&agents, 1);
    let migrate = find(&list, "migrate", Some(&name)).unwrap();
    assert_eq!(migrate["host"], "h0", "{migrate}");
    let said = migrate["text"].as_str().unwrap();
    assert!(said.contains("from h0 to h1") && said.contains("outage"), "{migrate}");

    // Bad parameters: 400 with a sentence, nothing else.
    for (query, says) in
        [("since=abc", "sequence number"), ("limit=0", "at least 1"), ("color=red", "unknown parameter")]
    {
        let reply = agents.get(1, 1, &format!("/v1/events?{query}")).unwrap();
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        let error = reply.json().unwrap()["error"].as_str().unwrap_or("").to_string();
        assert!(error.contains(says), "{query}: {error}");
    }
}

#[test]
fn a_partitioned_host_logs_its_fence_once_it_can_commit_again() {
    if skip_unless_root("a_partitioned_host_logs_its_fence_once_it_can_commit_again") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, "hf", "");

    // h0 alone: it loses its lease and fences the vserver; h1 takes it over.
    lab.partition(&[&[0], &[1, 2]], 1).unwrap();
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "taken over; h1:\n{}", agents.log(1));
    assert!(find(&events(&agents, 1), "fenced", None).is_none(), "h0 cannot commit while cut off");

    // Healed: h0's fence is in everyone's history, with when it happened.
    lab.partition(&[], 0).unwrap();
    let logged = wait_for(PATIENCE, || {
        (0..3).all(|i| find(&events(&agents, i), "fenced", None).is_some_and(|e| e["host"] == "h0"))
    });
    assert!(logged.is_some(), "{:?}\nlog h0:\n{}", events(&agents, 1), agents.log(0));
    let list = events(&agents, 1);
    let fenced = find(&list, "fenced", None).unwrap();
    let said = fenced["text"].as_str().unwrap();
    // The agent and its watchdog both act when the lease ends: whichever came first is logged.
    let why = said.starts_with("h0 lost its lease") || said.starts_with("h0 was fenced by its host watchdog");
    assert!(why && said.contains(" at ") && said.contains(&name), "{fenced}");
    // The takeover's record is written once its start is done, which may be after the client's answer.
    let recorded = wait_for(PATIENCE, || find(&events(&agents, 1), "takeover", Some(&name)).is_some());
    assert!(recorded.is_some(), "the takeover is there too: {:?}", events(&agents, 1));
}
