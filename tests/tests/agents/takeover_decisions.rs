//! What the coordinator decides a takeover on, under real faults: the intent an operator gave just before
//! the owner was cut off (which no heartbeat carried), a promote whose answer is lost (never a second
//! standby), a dead host's death logged once, and the history's times (when it happened, not when it was
//! written down).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vserver_lab::agents::{wait_for, Agents, Timing};
use vserver_lab::faults::Sampler;
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, placed_on_h0_timed, text, vserver, PATIENCE};

/// Now, ms since the Unix epoch (the lab's hosts share this clock).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `GET /v1/events` of host `i`.
fn events(agents: &Agents, i: usize) -> Vec<Value> {
    agents
        .get(i, i, "/v1/events")
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|v: Value| v.as_array().cloned())
        .unwrap_or_default()
}

/// The leader's index, as host `asked` sees it.
fn leader(agents: &Agents, asked: usize) -> Option<usize> {
    let status = agents.status(asked).ok()?;
    status["ownership"]["raft"]["leader"].as_str()?.trim_start_matches('h').parse().ok()
}

/// Heartbeats every 4 s (beacons still renew leases and liveness every 100 ms): what a host says of its
/// vservers is seconds old when it is cut off.
const SLOW_HEARTBEATS: Timing = Timing { interval_ms: 4000, suspect_ms: 8000, dead_ms: 12000 };

/// An operator starts a vserver on its owner, and the owner is cut off at once: its peers' last heartbeat
/// from it still says "stopped". The takeover starts it all the same (the start was recorded in the
/// cluster before it was carried out), and the history has the takeover and the owner's fence at the time
/// they happened, not when they were written down.
#[test]
fn a_vserver_started_just_before_its_owner_is_cut_off_is_started_by_the_takeover() {
    if skip_unless_root("a_vserver_started_just_before_its_owner_is_cut_off_is_started_by_the_takeover") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _dogs = vserver_lab::faults::Watchdogs::start(&lab).unwrap();
    let (agents, name, addr) = placed_on_h0_timed(&lab, "ti", "", false, SLOW_HEARTBEATS);
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    let said_stopped = || {
        agents.peer(1, 0).is_some_and(|p| {
            p["vservers"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["name"] == name.as_str() && v["state"] == "stopped"))
        })
    };
    assert!(wait_for(PATIENCE, said_stopped).is_some(), "h1 heard h0 say it is stopped: {:?}", agents.peer(1, 0));

    let out = vserver(&lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    // The start's intent is in the cluster's log before the start is carried out: the coordinator will read it.
    // (h0's copy of the log may lag the leader's by a heartbeat.)
    let logged = || events(&agents, 0).into_iter().any(|e| e["kind"] == "intent" && e["vserver"] == name.as_str());
    assert!(wait_for(Duration::from_secs(5), logged).is_some(), "the intent is recorded: {:?}", events(&agents, 0));
    let cut = now_ms();
    lab.set_link(0, false).unwrap();
    let answered = lab.client.wait_http(addr, 80, std::time::Instant::now() + Duration::from_secs(30));
    let answered_ms = now_ms();
    assert!(answered.is_some(), "taken over and started; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));
    assert!(lab.hosts[1].runs(&name) && !lab.hosts[0].runs(&name));

    // The takeover is in the history, timed when it was decided: between the cut and the first answer.
    let record = wait_for(PATIENCE, || events(&agents, 1).iter().any(|e| e["kind"] == "takeover"));
    assert!(record.is_some(), "the takeover is logged: {:?}", events(&agents, 1));
    let takeover = events(&agents, 1).into_iter().find(|e| e["kind"] == "takeover").unwrap();
    let at = takeover["at_unix_ms"].as_u64().unwrap();
    assert_eq!(takeover["at_ms"], at, "the deprecated name, kept for the previous release: {takeover}");
    assert!(cut <= at && at <= answered_ms, "takeover at {at}, cut at {cut}, answered at {answered_ms}: {takeover}");
    let shown = agents.status(1).unwrap()["takeovers"].as_array().cloned().unwrap_or_default();
    let shown = shown.iter().find(|t| t["vserver"] == name.as_str()).expect("in the status").clone();
    let at = shown["at_unix_ms"].as_u64().unwrap();
    assert!(cut <= at && at <= answered_ms, "the record's time {at}: {shown}");

    // h0 fenced itself while cut off; its fence is logged once it is back, at the time it happened.
    let healed = now_ms();
    lab.set_link(0, true).unwrap();
    let fenced = || events(&agents, 1).into_iter().find(|e| e["kind"] == "fenced" && e["host"] == "h0");
    assert!(wait_for(PATIENCE, || fenced().is_some()).is_some(), "h0's fence is logged; h0:\n{}", agents.log(0));
    let at = fenced().unwrap()["at_unix_ms"].as_u64().unwrap();
    assert!(cut <= at && at < healed, "fenced at {at}, while cut off ({cut}..{healed}): {:?}", fenced());
}

/// The first standby starts the vserver, but its agent dies before it answers (its post-start hook kills
/// it): whether it runs there is unknown, so the coordinator never tries the next standby while that copy
/// may run. The first standby's own fence ends its copy, and the vserver is taken over from it in turn (five
/// hosts: a majority is left with two of them gone).
#[test]
fn a_takeover_whose_answer_is_lost_never_starts_a_second_copy() {
    if skip_unless_root("a_takeover_whose_answer_is_lost_never_starts_a_second_copy") {
        return;
    }
    let lab = Lab::new(5).unwrap();
    let mut dogs = vserver_lab::faults::Watchdogs::start(&lab).unwrap();
    let name = vserver_lab::unique("tl");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "tl").unwrap();
    // The hook, synced to the standbys with the conf: on h1 only, a start kills h1's agent.
    let marker = lab.hosts[1].dir.join("kill-agent-on-start");
    let h1_conf = lab.hosts[1].conf_dir.display().to_string();
    let hook = format!(
        "#!/bin/sh\n[ \"$1\" = post-start ] || exit 0\ncase \"$0\" in {h1_conf}/*) [ -f {m} ] && kill -9 \"$(cat {m})\";; \
         esac\nexit 0\n",
        m = marker.display()
    );
    let script = lab.hosts[0].conf_dir.join(format!("{name}.sh"));
    std::fs::write(&script, hook).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    let mut agents = Agents::start_full(&lab, crate::FAST, Some(&cluster), "").unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 5)).is_some());
    // The coordinator must survive h0's crash and h1's agent: h0 and h1 do not lead. A leader among them is
    // stopped until the others elect another (restarted at once, it may take the leadership back), then
    // started again. The vserver starts after that: h0 stopped that long with it running would have it
    // taken over before the scenario begins (seen in CI).
    let deadline = std::time::Instant::now() + PATIENCE * 4;
    while std::time::Instant::now() < deadline {
        match leader(&agents, 2) {
            Some(l) if l >= 2 => break,
            Some(l) => {
                assert!(agents.stop(l, PATIENCE), "h{l}'s agent stops");
                let moved = wait_for(PATIENCE * 2, || leader(&agents, 2).is_some_and(|n| n != l));
                agents.spawn(l).unwrap();
                assert!(moved.is_some(), "the others elect a leader while h{l} is down");
                assert!(wait_for(PATIENCE, || all_alive(&agents, 5) && leader(&agents, 2).is_some()).is_some());
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert!(leader(&agents, 2).is_some_and(|l| l >= 2), "neither h0 nor h1 leads");
    let out = vserver(&lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&marker, agents.pid(1).unwrap().to_string()).unwrap();
    let sampler = Sampler::start(&lab, &name);

    // h0 crashes.
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    let on_h2 = wait_for(Duration::from_secs(60), || lab.hosts[2].runs(&name));
    assert!(
        on_h2.is_some(),
        "taken over from h1 by h2 in the end; h1 (its agent ran: {}):\n{}\nh2:\n{}\nh0:\n{}",
        agents.running(1),
        agents.log(1),
        agents.log(2),
        agents.log(0)
    );
    assert!(!agents.running(1), "the hook killed h1's agent; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    std::thread::sleep(Duration::from_secs(2));
    crate::takeover::assert_one_copy(&sampler.finish(), &agents);
    let lost = (2..5)
        .flat_map(|i| events(&agents, i))
        .any(|e| e["kind"] == "takeover_failed" && e["text"].as_str().is_some_and(|t| t.contains("no answer")));
    assert!(lost, "the lost answer is logged as such: {:?}", events(&agents, 2));
}

/// A host whose agent is gone for good, owning a vserver no standby holds a replica of: its death is logged
/// once, not at every round of the coordinator (which tries again, quietly, now and then).
#[test]
fn a_dead_host_that_cannot_be_taken_over_is_logged_dead_once() {
    if skip_unless_root("a_dead_host_that_cannot_be_taken_over_is_logged_dead_once") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let name = vserver_lab::unique("tn");
    let cluster = format!("[vservers.{name}]\nprimary = \"h2\"\nstandbys = [\"h0\", \"h1\"]\ninterval_secs = 3600\n");
    let mut agents = Agents::start_full(&lab, crate::FAST, Some(&cluster), "").unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    let owned = || crate::owner(&agents, 0, &name).is_some_and(|o| o.0 == "h2");
    assert!(wait_for(PATIENCE, owned).is_some(), "the table gives it to h2: {:?}", agents.status(0).ok());
    assert!(agents.stop(2, PATIENCE), "h2's agent stops");
    let dead = |agents: &Agents| {
        events(agents, 0)
            .into_iter()
            .filter(|e| e["kind"] == "host_dead" && e["text"].as_str().is_some_and(|t| t.starts_with("h2 ")))
            .count()
    };
    assert!(wait_for(PATIENCE, || dead(&agents) > 0).is_some(), "h2 found dead; h0:\n{}", agents.log(0));
    // The coordinator goes on looking (every 100 ms) and trying (every few seconds) meanwhile.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(dead(&agents), 1, "{:?}", events(&agents, 0));
}

/// The agent's start and the keepers' lease file agree: an agent that holds its lease but has not yet
/// rewritten the file its vservers' keepers read (just back from a blip, when a takeover asks it to start)
/// waits for the file instead of having the start refused under it. The file is made stale by hand here,
/// then a start asked at once.
#[test]
fn a_start_waits_for_the_keepers_lease_file_to_catch_up() {
    if skip_unless_root("a_start_waits_for_the_keepers_lease_file_to_catch_up") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _dogs = vserver_lab::faults::Watchdogs::start(&lab).unwrap();
    let (agents, name, addr) = placed_on_h0_timed(&lab, "tk", "", true, crate::FAST);
    let run_dir = &lab.hosts[0].run_dir;
    let held = || matches!(isolate::lease::read(run_dir), isolate::lease::HostLease::Until(_));
    assert!(wait_for(PATIENCE, held).is_some(), "h0 tells its keepers its lease");
    for round in 0..5 {
        let out = vserver(&lab, 0, &[&name, "stop"], false);
        assert!(out.status.success(), "{}", text(&out));
        let ended = isolate::lease::boottime_ms().saturating_sub(5_000);
        isolate::lease::write(run_dir, isolate::lease::HostLease::Until(ended)).unwrap();
        let out = vserver(&lab, 0, &[&name, "start"], false);
        assert!(out.status.success(), "round {round}: {}\nlog:\n{}", text(&out), agents.log(0));
    }
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
}

/// An operator's start the agent refuses (here: its conf is gone) leaves no intent in the cluster's event log:
/// the log would say "meant to run" of a vserver nothing runs, and a takeover would start it elsewhere.
#[test]
fn a_refused_start_records_no_intent_in_the_cluster() {
    if skip_unless_root("a_refused_start_records_no_intent_in_the_cluster") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, _addr) = placed_on_h0_timed(&lab, "ri", "", false, crate::FAST);
    let owned = wait_for(PATIENCE, || crate::owner(&agents, 0, &name).is_some_and(|(o, _)| o == "h0"));
    assert!(owned.is_some(), "the table gives it to h0: {:?}", crate::owner(&agents, 0, &name));
    let intents = |agents: &Agents| {
        events(agents, 0).into_iter().filter(|e| e["kind"] == "intent" && e["vserver"] == name.as_str()).count()
    };
    let before = intents(&agents);
    let conf = lab.hosts[0].conf_dir.join(format!("{name}.conf"));
    let aside = lab.hosts[0].conf_dir.join(format!("{name}.conf.aside"));
    std::fs::rename(&conf, &aside).unwrap();
    let path = format!("/v1/vservers/{name}/start");
    let reply = agents.request(0, 0, "POST", &path, Some(agents.secret()), None).unwrap();
    assert_eq!(reply.status, 404, "refused: {}", reply.body);
    std::fs::rename(&aside, &conf).unwrap();
    // Anything the refused start had sent to the log is committed by the time a real start's is.
    let reply = agents.request(0, 0, "POST", &path, Some(agents.secret()), None).unwrap();
    assert_eq!(reply.status, 200, "started once its conf is back: {}", reply.body);
    let logged = wait_for(PATIENCE, || intents(&agents) > before);
    assert!(logged.is_some(), "the accepted start is recorded");
    let texts: Vec<Value> = events(&agents, 0).into_iter().filter(|e| e["kind"] == "intent").collect();
    assert_eq!(intents(&agents), before + 1, "only the accepted start is recorded: {texts:?}");
}
