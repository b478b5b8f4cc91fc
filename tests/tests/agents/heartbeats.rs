//! Scenarios: three agents see each other; a killed one goes dead and comes back as a new incarnation; a
//! host cut off goes suspect, then dead, then alive again when its link returns.

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, FAST, PATIENCE};

#[test]
fn three_agents_see_each_other_then_a_killed_one_dies_and_returns_as_a_new_incarnation() {
    if skip_unless_root("three_agents_see_each_other_then_a_killed_one_dies_and_returns_as_a_new_incarnation") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let mut agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "all alive; logs:\n{}", agents.log(0));
    let before = agents.peer(0, 2).unwrap()["incarnation"].as_u64().unwrap();

    agents.kill9(2);
    let took = wait_for(PATIENCE, || {
        agents.peer_state(0, 2).as_deref() == Some("dead") && agents.peer_state(1, 2).as_deref() == Some("dead")
    });
    let took = took.expect("h0 and h1 mark the killed h2 dead");
    eprintln!("kill -9 to dead on both observers: {} ms (dead_after {} ms)", took.as_millis(), FAST.dead_ms);
    assert_eq!(agents.peer_state(0, 1).as_deref(), Some("alive"), "the others stay alive");

    agents.spawn(2).unwrap();
    assert!(wait_for(PATIENCE, || agents.peer_state(0, 2).as_deref() == Some("alive")).is_some());
    let peer = agents.peer(0, 2).unwrap();
    assert!(peer["incarnation"].as_u64().unwrap() > before, "a restart is a new incarnation: {peer}");
    assert_eq!(peer["restarts_seen"].as_u64().unwrap(), 1, "{peer}");
}

#[test]
fn a_host_whose_link_goes_down_is_suspect_then_dead_then_alive_again() {
    if skip_unless_root("a_host_whose_link_goes_down_is_suspect_then_dead_then_alive_again") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let agents = Agents::start(&lab, FAST).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    let port = lab.hosts[1].switch_port.clone();
    lab.switch().ip(["link", "set", &port, "down"]).unwrap();
    let mut seen = Vec::new();
    let dead = wait_for(PATIENCE, || {
        let s = agents.peer_state(0, 1).unwrap_or_default();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        s == "dead"
    });
    assert!(dead.is_some(), "h1 goes dead; states seen: {seen:?}");
    assert!(seen.contains(&"suspect".to_string()), "suspect comes before dead: {seen:?}");
    // The cut-off host sees the others dead too.
    assert!(wait_for(PATIENCE, || agents.peer_state(1, 0).as_deref() == Some("dead")).is_some());
    lab.switch().ip(["link", "set", &port, "up"]).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "back alive when the link returns");
    let peer = agents.peer(0, 1).unwrap();
    assert_eq!(peer["restarts_seen"].as_u64().unwrap(), 0, "a partition is not a restart: {peer}");
}
