//! Scenario: the agents' logs as the journal keeps them. A follower's agent is killed and stays down a few
//! seconds while the other two run: the survivors write plain text (no terminal colour codes, stderr being a
//! file), say what happened to the dead host in a handful of lines that name it (the leader: Raft cannot reach
//! it, then reaches it again), and never show a Raft node id.

use std::time::Duration;

use sha2::Digest;
use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, FAST, PATIENCE};

/// How long the follower stays down: an outage of a few seconds, the scale of an agent's restart.
const OUTAGE: Duration = Duration::from_secs(5);

/// The most lines a survivor may write about the dead host during the outage: its state changes (suspect,
/// dead, restarted, alive; unreachable and reachable again for Raft), never a line per retry.
const HANDFUL: usize = 8;

/// The Raft node id the agents give host `name` (the first 8 bytes of the SHA-256 of its name), as logs
/// would print it.
fn node_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap()).to_string()
}

/// Host `i`'s Raft leader, from its status.
fn leader(agents: &Agents, i: usize) -> Option<String> {
    agents.status(i).ok()?["ownership"]["raft"]["leader"].as_str().map(str::to_string)
}

#[test]
fn a_dead_peer_costs_the_survivors_logs_a_few_plain_lines_naming_it() {
    if skip_unless_root("a_dead_peer_costs_the_survivors_logs_a_few_plain_lines_naming_it") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let mut agents = Agents::start(&lab, FAST).unwrap();
    let mut coordinator = None;
    let ready = wait_for(PATIENCE * 2, || {
        let leaders: Vec<_> = (0..3).map(|i| leader(&agents, i)).collect();
        coordinator = leaders[0].clone().filter(|l| leaders.iter().all(|o| o.as_ref() == Some(l)));
        coordinator.is_some() && all_alive(&agents, 3)
    });
    assert!(ready.is_some(), "three agents, one leader; logs:\n{}\n{}", agents.log(0), agents.log(1));
    let coordinator: usize = coordinator.unwrap().trim_start_matches('h').parse().unwrap();
    // A follower dies: the leader keeps trying to replicate to it, the other follower only sees its silence.
    let dead = (0..3).find(|&i| i != coordinator).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let name = format!("h{dead}");
    let address = format!("{}:", lab.hosts[dead].addr);
    let before: Vec<usize> = survivors.iter().map(|&i| agents.log(i).len()).collect();

    agents.kill9(dead);
    let seen = wait_for(PATIENCE, || survivors.iter().all(|&i| agents.peer_state(i, dead).as_deref() == Some("dead")));
    assert!(seen.is_some(), "the survivors see {name} dead");
    std::thread::sleep(OUTAGE);
    agents.spawn(dead).unwrap();
    let back = wait_for(PATIENCE * 2, || all_alive(&agents, 3) && leader(&agents, dead).is_some());
    assert!(back.is_some(), "{name} is back and follows a leader");
    // The leader says that Raft reaches the host again (this waits for the line; the checks are below). A
    // survivor that led for a while during the outage (after an election on a busy machine) says it too.
    let raft_says = |log: &str, what: &str| log.lines().any(|l| l.contains(&name) && l.contains(what));
    wait_for(PATIENCE, || survivors.iter().any(|&i| raft_says(&agents.log(i), "Raft: peer reachable again")));

    let ids: Vec<String> = ["h0", "h1", "h2"].iter().map(|h| node_id(h)).collect();
    // Each survivor's lines with colour codes, with a node id, and about the dead host (by name, node id or
    // address) during the outage.
    let mut found = Vec::new();
    for (&i, &from) in survivors.iter().zip(&before) {
        let log = agents.log(i);
        let coloured: Vec<String> = log.lines().filter(|l| l.contains('\x1b')).map(str::to_string).collect();
        let by_id: Vec<String> =
            log.lines().filter(|l| ids.iter().any(|id| l.contains(id))).map(str::to_string).collect();
        let outage = &log[from..];
        let about: Vec<String> = outage
            .lines()
            .filter(|l| l.contains(&name) || l.contains(&ids[dead]) || l.contains(&address))
            .map(str::to_string)
            .collect();
        eprintln!(
            "h{i}: {} lines, {} with colour codes, {} with a node id; {} lines during the outage, {} about {name}",
            log.lines().count(),
            coloured.len(),
            by_id.len(),
            outage.lines().count(),
            about.len()
        );
        found.push((i, coloured, by_id, about));
    }
    for (i, coloured, by_id, about) in found {
        assert!(coloured.is_empty(), "h{i} writes terminal colour codes to a file: {:?}", coloured[0]);
        assert!(by_id.is_empty(), "h{i} names a host by its Raft node id: {}", by_id[0]);
        assert!(
            about.len() <= HANDFUL,
            "h{i} writes {} lines about the dead {name}, more than its state changes:\n{}",
            about.len(),
            about.join("\n")
        );
    }
    let outages: Vec<String> =
        survivors.iter().zip(&before).map(|(&i, &from)| agents.log(i)[from..].to_string()).collect();
    for what in ["Raft: peer unreachable", "Raft: peer reachable again"] {
        assert!(
            outages.iter().any(|o| raft_says(o, what)),
            "a survivor (the leader, h{coordinator}) says \"{what}\" about {name}, by name:\n{}",
            outages.join("\n")
        );
    }
}
