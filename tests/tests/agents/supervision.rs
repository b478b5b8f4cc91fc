//! Scenarios: the agent owns its host's vservers: the status shows them, an operator's stop is intent,
//! a restart of the agent leaves them running and adopted, one killed from outside is restarted; one that
//! dies again and again ends in state error after `failures.max_restart` restarts and runs again once cleared.

use std::process::Output;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{text, FAST, PATIENCE};

fn vserver(lab: &Lab, args: &[&str], local: bool) -> Output {
    crate::vserver(lab, 0, args, local)
}

fn vserver_json(agents: &Agents, name: &str) -> Option<serde_json::Value> {
    let status = agents.status(0).ok()?;
    status["vservers"].as_array()?.iter().find(|v| v["name"] == name).cloned()
}

#[test]
fn the_agent_runs_reports_keeps_and_restarts_its_vservers() {
    if skip_unless_root("the_agent_runs_reports_keeps_and_restarts_its_vservers") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("sv");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "supervised").unwrap();
    let mut agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || agents.status(0).is_ok()).is_some(), "log:\n{}", agents.log(0));

    // The operator's start goes through the agent, which records the intent.
    let out = vserver(&lab, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    let t = std::time::Instant::now() + PATIENCE;
    assert!(lab.client.wait_http(addr, 80, t).is_some());
    let v = vserver_json(&agents, &name).expect("the vserver is in the status");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["intent"], "running", "{v}");
    assert!(v["addresses"].as_array().unwrap().iter().any(|a| a.as_str().unwrap().contains(&addr.to_string())), "{v}");
    // Peers learn it from heartbeats.
    assert!(wait_for(PATIENCE, || {
        agents
            .peer(1, 0)
            .is_some_and(|p| p["vservers"].as_array().is_some_and(|vs| vs.iter().any(|x| x["name"] == name.as_str())))
    })
    .is_some());

    // Restarting the agent leaves the vserver running, and it is adopted again.
    agents.kill9(0);
    assert!(vserver(&lab, &[&name, "running"], true).status.success(), "kill -9 of the agent stops nothing");
    agents.spawn(0).unwrap();
    assert!(wait_for(PATIENCE, || vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running")).is_some());
    assert!(lab.client.http_get(addr, 80, std::time::Duration::from_secs(2)).is_ok(), "service kept answering");

    // Killed from outside (every process of its cgroup): the agent restarts it on this host.
    let killed = lab.hosts[0].cgroup_parent.clone();
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let kill = std::path::Path::new(root).join(&killed).join(&name).join("cgroup.kill");
        if kill.exists() {
            std::fs::write(&kill, "1").unwrap();
            break;
        }
    }
    let restarted = wait_for(PATIENCE, || {
        vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running" && v["restarts"].as_u64() >= Some(1))
    });
    assert!(restarted.is_some(), "restarted by the agent: {:?}\nlog:\n{}", vserver_json(&agents, &name), agents.log(0));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());

    // An operator's stop is intent, not a crash: it stays stopped.
    let out = vserver(&lab, &[&name, "stop"], false);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(FAST.dead_ms * 2));
    let v = vserver_json(&agents, &name).unwrap();
    assert_eq!((v["state"].as_str(), v["intent"].as_str()), (Some("stopped"), Some("stopped")), "{v}");
}

/// Kills every process of host 0's vserver `name` at once (its cgroup's `cgroup.kill`), as a crash would.
fn crash(lab: &Lab, name: &str) {
    let parent = lab.hosts[0].cgroup_parent.clone();
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let kill = std::path::Path::new(root).join(&parent).join(name).join("cgroup.kill");
        if kill.exists() {
            std::fs::write(&kill, "1").unwrap();
            return;
        }
    }
    panic!("no cgroup.kill for {name}");
}

#[test]
fn a_vserver_that_keeps_crashing_ends_in_error_and_clear_brings_it_back() {
    if skip_unless_root("a_vserver_that_keeps_crashing_ends_in_error_and_clear_brings_it_back") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("se");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "crashing").unwrap();
    // The lab's agents allow 3 restarts within the failure window (`[failures] max_restart = 3`).
    let agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || agents.status(0).is_ok()).is_some(), "log:\n{}", agents.log(0));
    let out = vserver(&lab, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());

    // Crash it each time the agent has restarted it, until the agent gives up.
    let mut crashes = 0;
    loop {
        let v = vserver_json(&agents, &name).unwrap();
        if v["state"] == "error" {
            break;
        }
        assert!(crashes <= 3, "still not in error after {crashes} crashes: {v}\nlog:\n{}", agents.log(0));
        let before = v["restarts"].as_u64().unwrap();
        crash(&lab, &name);
        crashes += 1;
        let next = wait_for(PATIENCE, || {
            vserver_json(&agents, &name).is_some_and(|v| {
                v["state"] == "error" || (v["state"] == "running" && v["restarts"].as_u64() > Some(before))
            })
        });
        assert!(next.is_some(), "{:?}\nlog:\n{}", vserver_json(&agents, &name), agents.log(0));
    }
    assert_eq!(crashes, 4, "three restarts, then error at the fourth crash");
    let v = vserver_json(&agents, &name).unwrap();
    assert_eq!(v["state"], "error", "{v}");
    assert_eq!(v["intent"], "running", "{v}");
    assert_eq!(v["restarts"], 3, "{v}");
    assert_eq!(v["restarted_unix_ms"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["relocations"], 0, "{v}");
    assert_eq!(v["error"], "restarted 3 times in 3600 s", "{v}");
    // GET /v1/vservers/NAME says the same.
    let one = agents.get(0, 0, &format!("/v1/vservers/{name}")).unwrap().json().unwrap();
    assert_eq!((one["state"].clone(), one["error"].clone()), (v["state"].clone(), v["error"].clone()), "{one}");

    // Left alone: several checks later it still does not run, and an operator's start is refused.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!vserver(&lab, &[&name, "running"], true).status.success(), "never restarted while in error");
    assert_eq!(vserver_json(&agents, &name).unwrap()["state"], "error");
    let out = vserver(&lab, &[&name, "start"], false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("vserver {name} clear")), "{}", text(&out));
    // `vserver NAME status` shows the state and the reason, as text and JSON.
    let out = vserver(&lab, &[&name, "status"], false);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("vserver {name}: error (restarted 3 times in 3600 s")), "{stdout}");
    assert!(stdout.contains("restarts:  3"), "{stdout}");
    let out = vserver(&lab, &[&name, "status", "--json"], false);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((json["state"].as_str(), json["restarts"].as_u64()), (Some("error"), Some(3)), "{json}");

    // Cleared: the counts are zeroed and its intent (running) rules again.
    let out = vserver(&lab, &[&name, "clear"], false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 restart(s) and 0 relocation(s) forgotten"), "{stdout}");
    assert!(stdout.contains("was in error: restarted 3 times in 3600 s"), "{stdout}");
    assert!(stdout.contains("now running (intent running)"), "started at once, as its intent says: {stdout}");
    let back = wait_for(PATIENCE, || {
        vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running" && v["error"].is_null())
    });
    assert!(back.is_some(), "{:?}\nlog:\n{}", vserver_json(&agents, &name), agents.log(0));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    let v = vserver_json(&agents, &name).unwrap();
    assert_eq!(v["restarts"], 0, "{v}");
    // Its account starts afresh: a crash is restarted again.
    crash(&lab, &name);
    let again = wait_for(PATIENCE, || {
        vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running" && v["restarts"] == 1)
    });
    assert!(again.is_some(), "{:?}", vserver_json(&agents, &name));
    let out = vserver(&lab, &[&name, "stop"], false);
    assert!(out.status.success(), "{}", text(&out));
}

/// The vserver's history on host 0 (`GET /v1/events`), the kinds about `name` in order.
fn event_kinds(agents: &Agents, name: &str) -> Vec<String> {
    let Ok(reply) = agents.get(0, 0, "/v1/events") else { return Vec::new() };
    let Ok(events) = reply.json() else { return Vec::new() };
    events
        .as_array()
        .map(|a| {
            a.iter().filter(|e| e["vserver"] == name).filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

/// Host pid of process 1 of host 0's vserver `name`, from its run state.
fn init_pid(lab: &Lab, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(lab.hosts[0].run_dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["init_pid"].as_u64()
}

#[test]
fn reboot_inside_restarts_in_place_and_halt_stops_also_after_an_agent_restart() {
    if skip_unless_root("reboot_inside_restarts_in_place_and_halt_stops_also_after_an_agent_restart") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("rb");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "rebooting").unwrap();
    let mut agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || agents.status(0).is_ok()).is_some(), "log:\n{}", agents.log(0));
    let out = vserver(&lab, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());

    // The agent restarts and adopts it: only the parent of its process 1 saw how it ends, and that is its
    // keeper, not this agent.
    agents.kill9(0);
    agents.spawn(0).unwrap();
    assert!(wait_for(PATIENCE, || vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running")).is_some());
    let pid_before = init_pid(&lab, &name);

    // `reboot` inside: started again here, its own intent, no failure counted.
    let _ = vserver(&lab, &[&name, "exec", "reboot"], true);
    let rebooted = wait_for(PATIENCE, || {
        init_pid(&lab, &name).is_some_and(|p| Some(p) != pid_before)
            && vserver_json(&agents, &name).is_some_and(|v| v["state"] == "running")
    });
    assert!(rebooted.is_some(), "started again: {:?}\nlog:\n{}", vserver_json(&agents, &name), agents.log(0));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some(), "it serves again");
    let v = vserver_json(&agents, &name).unwrap();
    assert_eq!((v["intent"].as_str(), v["restarts"].as_u64()), (Some("running"), Some(0)), "not a failure: {v}");
    assert!(
        wait_for(PATIENCE, || event_kinds(&agents, &name).contains(&"reboot".to_string())).is_some(),
        "a reboot event: {:?}",
        event_kinds(&agents, &name)
    );
    assert!(!event_kinds(&agents, &name).contains(&"restart".to_string()), "not a restart after a crash");

    // `halt` inside: it stays down, by its own intent.
    let _ = vserver(&lab, &[&name, "exec", "halt"], true);
    let halted = wait_for(PATIENCE, || {
        vserver_json(&agents, &name).is_some_and(|v| v["state"] == "stopped" && v["intent"] == "stopped")
    });
    assert!(halted.is_some(), "halted: {:?}\nlog:\n{}", vserver_json(&agents, &name), agents.log(0));
    std::thread::sleep(std::time::Duration::from_millis(FAST.dead_ms * 2));
    let v = vserver_json(&agents, &name).unwrap();
    assert_eq!((v["state"].as_str(), v["restarts"].as_u64()), (Some("stopped"), Some(0)), "{v}");
    assert!(event_kinds(&agents, &name).contains(&"halt".to_string()), "{:?}", event_kinds(&agents, &name));
}
