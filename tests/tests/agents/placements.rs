//! Scenarios: placement managed through the cluster. A vserver built and started on h0 of a cluster whose
//! cluster.toml places nothing is placed, changed and removed with `vserver-agent placement` asked of other
//! hosts: every host applies each change (replication to the standbys named, and only those), no agent
//! restarted. Then a reload of agent.toml (SIGHUP) applies what it can and names what needs a restart.

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, signal, text, vserver, FAST, PATIENCE};

/// The standbys h0 replicates `name` to, as its status says, with their data path.
fn replicated_to(agents: &Agents, name: &str) -> Vec<(String, String)> {
    let Ok(status) = agents.status(0) else { return Vec::new() };
    status["replication"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["vserver"] == name)
        .map(|r| (r["standby"].as_str().unwrap_or("").to_string(), r["data"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Whether host `i` holds a complete copy of `name`.
fn holds(agents: &Agents, i: usize, name: &str) -> bool {
    agents.status(i).is_ok_and(|s| s["replicas"].as_array().is_some_and(|r| r.iter().any(|r| r["vserver"] == name)))
}

/// `vserver-agent placement ARGS` asked of host `i`: its output (stdout and stderr), and its exit code.
fn placement(agents: &Agents, i: usize, args: &[&str]) -> (String, Option<i32>) {
    let mut all = vec!["placement"];
    all.extend_from_slice(args);
    let out = agents.run(i, &all).unwrap();
    (text(&out), out.status.code())
}

#[test]
fn a_vserver_is_placed_changed_and_removed_from_any_host_and_every_host_applies_it_without_a_restart() {
    if skip_unless_root(
        "a_vserver_is_placed_changed_and_removed_from_any_host_and_every_host_applies_it_without_a_restart",
    ) {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let name = vserver_lab::unique("pl");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    // A cluster file that places nothing.
    let mut agents = Agents::start_with(&lab, FAST, Some("")).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "h0:\n{}", agents.log(0));
    let out = vserver(&lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    // Every host's (empty) file is taken into the table once every host reads placements.
    let taken = wait_for(PATIENCE, || {
        let (said, code) = placement(&agents, 1, &[]);
        code == Some(0) && ["h0", "h1", "h2"].iter().all(|h| said.contains(h)) && said.contains("taken in from")
    });
    assert!(taken.is_some(), "{:?}\nh1:\n{}", placement(&agents, 1, &[]), agents.log(1));
    let pids: Vec<Option<u32>> = (0..3).map(|i| agents.pid(i)).collect();
    assert!(replicated_to(&agents, &name).is_empty());

    // Bad input, refused with the key named; nothing recorded.
    let (said, code) = placement(&agents, 2, &["set", &name, "--primary", "h0", "--standbys", "h9"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("standbys") && said.contains("\"h9\""), "{said}");
    let (said, code) = placement(&agents, 2, &["set", &name, "--primary", "h0", "--standbys", "h1,h1"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("listed twice"), "{said}");
    let (said, code) = placement(&agents, 2, &["set", &name, "--standbys", "h1"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("primary"), "neither placed nor owned: its primary is needed ({said})");
    let (said, code) = placement(&agents, 2, &[]);
    assert!(code == Some(0) && said.contains("places no vserver"), "{said}");

    // Placed through h2, which does not run it: h0 replicates it to h1.
    let (said, code) =
        placement(&agents, 2, &["set", &name, "--primary", "h0", "--standbys", "h1", "--interval-secs", "3600"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("placed (revision") && said.contains("standbys h1"), "{said}");
    let applied = wait_for(PATIENCE, || replicated_to(&agents, &name) == [("h1".to_string(), "periodic".to_string())]);
    assert!(applied.is_some(), "{:?}\nh0:\n{}", replicated_to(&agents, &name), agents.log(0));
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}\nh0:\n{}", text(&out), agents.log(0));
    assert!(wait_for(PATIENCE, || holds(&agents, 1, &name)).is_some(), "h1 holds a copy");
    assert!(!holds(&agents, 2, &name));

    // Changed through h1: h2 instead of h1, continuous. A stale revision is refused first.
    let (said, code) = placement(&agents, 1, &["set", &name, "--standbys", "h2", "--expected-revision", "0"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("stale"), "{said}");
    let (said, code) = placement(&agents, 1, &["set", &name, "--standbys", "h2", "--data", "continuous"]);
    assert_eq!(code, Some(0), "{said}");
    let applied =
        wait_for(PATIENCE, || replicated_to(&agents, &name) == [("h2".to_string(), "continuous".to_string())]);
    assert!(applied.is_some(), "{:?}\nh0:\n{}", replicated_to(&agents, &name), agents.log(0));
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}\nh0:\n{}", text(&out), agents.log(0));
    assert!(wait_for(PATIENCE, || holds(&agents, 2, &name)).is_some(), "h2 holds a copy");
    // A placed vserver cannot move its tree onto shared storage by a placement.
    let (said, code) = placement(&agents, 1, &["set", &name, "--data", "shared", "--shared-dir", "/srv/x"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("remove its placement"), "{said}");
    // Every host lists the same placement, and its history says who asked.
    for i in 0..3 {
        let (said, _) = placement(&agents, i, &[]);
        assert!(said.contains(&format!("{name}: primary h0, standbys h2, continuous")), "h{i}: {said}");
    }
    let history = vserver_lab::agents::http(
        &lab.client.netns,
        lab.hosts[0].addr,
        7070,
        "GET",
        "/v1/events",
        Some(agents.secret()),
        None,
    )
    .unwrap()
    .body;
    assert!(history.contains("placed (revision") && history.contains("asked through h1"), "{history}");

    // Removed through h2: no longer replicated; it keeps running on h0.
    let (said, code) = placement(&agents, 2, &["remove", &name]);
    assert_eq!(code, Some(0), "{said}");
    assert!(wait_for(PATIENCE, || replicated_to(&agents, &name).is_empty()).is_some(), "h0:\n{}", agents.log(0));
    assert!(lab.hosts[0].runs(&name));
    let (said, code) = placement(&agents, 2, &["remove", &name]);
    assert_eq!(code, Some(2), "not placed: {said}");
    assert_eq!((0..3).map(|i| agents.pid(i)).collect::<Vec<_>>(), pids, "no agent restarted");

    // A reload (SIGHUP): [alerts] applied at once, a new listen address named as needing a restart; a file that
    // no longer loads changes nothing. The agent runs on.
    agents.edit_config(0, |t| format!("{}\n[alerts]\nall = \"/bin/true\"\n", t.replace(":7070", ":7071"))).unwrap();
    signal(&agents, 0, nix::sys::signal::Signal::SIGHUP);
    let said = wait_for(PATIENCE, || agents.log(0).contains("reloaded: applied alerts"));
    assert!(said.is_some(), "h0:\n{}", agents.log(0));
    assert!(agents.log(0).contains("applied at the next restart only: listen"), "h0:\n{}", agents.log(0));
    agents.edit_config(0, |t| format!("{t}\nno_such_key = 1\n")).unwrap();
    signal(&agents, 0, nix::sys::signal::Signal::SIGHUP);
    let said = wait_for(PATIENCE, || agents.log(0).contains("not reloaded, nothing changed"));
    assert!(said.is_some(), "h0:\n{}", agents.log(0));
    assert!(agents.running(0) && agents.status(0).is_ok(), "h0 runs on:\n{}", agents.log(0));
    assert_eq!(agents.pid(0), pids[0]);
    let out = vserver(&lab, 0, &[&name, "stop"], false);
    assert!(out.status.success(), "{}", text(&out));
}
