//! Scenarios: the ownership table the agents keep by consensus. Three agents form the cluster by
//! themselves, elect one leader, and record each placed vserver's primary as its owner (epoch 1), the same on
//! every host; a start elsewhere than on the owner is refused; when the leader's agent is killed the other two elect another, and the killed one, started
//! again, has the table back from its own disk and follows the new leader.

use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{give_to, placed_on_h0, text, vserver, PATIENCE};

/// Host `i`'s view: its leader's name and the owner and epoch of `name`, from `GET /v1/status`.
fn view(agents: &Agents, i: usize, name: &str) -> Option<(String, String, u64)> {
    let status = agents.status(i).ok()?;
    let own = &status["ownership"];
    let leader = own["raft"]["leader"].as_str()?.to_string();
    let entry = &own["owners"][name];
    Some((leader, entry["owner"].as_str()?.to_string(), entry["epoch"].as_u64()?))
}

#[test]
fn agents_agree_on_owners_and_survive_the_loss_of_their_leader() {
    if skip_unless_root("agents_agree_on_owners_and_survive_the_loss_of_their_leader") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, name, _addr) = placed_on_h0(&lab, "ow", "", false);

    // One leader, the same table everywhere: h0 owns the vserver, at epoch 1.
    let agreed = |agents: &Agents, hosts: &[usize]| {
        let views: Vec<_> = hosts.iter().map(|&i| view(agents, i, &name)).collect();
        let first = views[0].clone()?;
        (first.1 == "h0" && first.2 == 1 && views.iter().all(|v| v.as_ref() == Some(&first))).then_some(first.0)
    };
    let mut leader = None;
    let formed = wait_for(PATIENCE, || {
        leader = agreed(&agents, &[0, 1, 2]);
        leader.is_some()
    });
    assert!(
        formed.is_some(),
        "no agreement; statuses:\n{:?}",
        (0..3).map(|i| agents.status(i).ok()).collect::<Vec<_>>()
    );
    // What the shell completion offers where a name goes: the vservers configured here, the cluster's hosts.
    let names = |host: usize, kind: &str| {
        let out = crate::vserver(&lab, host, &["--complete-names", kind], false);
        assert!(out.status.success(), "{}", crate::text(&out));
        String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(names(1, "hosts"), ["h0", "h1", "h2"]);
    assert!(names(0, "vservers").contains(&name), "{:?}", names(0, "vservers"));
    let leader = leader.unwrap();
    // A start on another host than the owner is refused, and says where it belongs.
    let out = vserver(&lab, 1, &[&name, "start"], false);
    assert_eq!(out.status.code(), Some(7), "refused: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to h0"), "{}", text(&out));
    let l: usize = leader.trim_start_matches('h').parse().unwrap();
    let raft = &agents.status(l).unwrap()["ownership"]["raft"];
    assert_eq!(raft["voters"].as_array().unwrap().len(), 3, "{raft}");

    // The leader's agent is killed: the other two elect a new leader and keep the table.
    agents.kill9(l);
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut new_leader = None;
    let elected = wait_for(PATIENCE * 3, || {
        new_leader = agreed(&agents, &others).filter(|n| *n != leader);
        new_leader.is_some()
    });
    assert!(
        elected.is_some(),
        "the two remaining agents elect a new leader: {:?}\nlogs:\n{}\n{}",
        others.iter().map(|&i| view(&agents, i, &name)).collect::<Vec<_>>(),
        agents.log(others[0]),
        agents.log(others[1])
    );
    let new_leader = new_leader.unwrap();
    eprintln!("leader {leader} killed; {new_leader} leads now");

    // Started again, it has the table from its own disk and follows the new leader.
    agents.spawn(l).unwrap();
    let back =
        wait_for(PATIENCE, || view(&agents, l, &name).is_some_and(|v| v.0 == new_leader && v.1 == "h0" && v.2 == 1));
    assert!(back.is_some(), "the restarted agent rejoins: {:?}", agents.status(l).ok());
}

#[test]
fn a_vserver_that_dies_where_the_cluster_no_longer_puts_it_is_not_restarted() {
    if skip_unless_root("a_vserver_that_dies_where_the_cluster_no_longer_puts_it_is_not_restarted") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, _addr) = placed_on_h0(&lab, "od", "", true);
    assert!(wait_for(PATIENCE, || view(&agents, 0, &name).is_some_and(|v| v.1 == "h0")).is_some());
    // The cluster gives it to h1 (as a takeover would); h0 learns it a heartbeat later.
    give_to(&agents, &name, "h1", usize::MAX).expect("the ownership moves to h1");
    assert!(wait_for(PATIENCE, || view(&agents, 0, &name).is_some_and(|v| v.1 == "h1")).is_some());
    // It dies on h0 (stopped behind the agent's back): h0 does not restart it, and gives it up. h0's own check
    // (every second) may stop it first, as a copy the cluster no longer puts here, or, finding it stopped, keep
    // its copy aside (its intent recorded stopped first, then its conf and tree moved, so that h0 lists it no
    // more) before the supervisor's next look at it: either way it stays down.
    let out = vserver(&lab, 0, &[&name, "stop"], true);
    assert!(out.status.success() || text(&out).contains("not running"), "{}", text(&out));
    let aside = format!("kept its copy of {name} aside");
    let intent_stopped = || {
        agents.log(0).contains(&aside)
            || agents.status(0).ok().is_some_and(|s| {
                s["vservers"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["name"] == name.as_str() && v["intent"] == "stopped"))
            })
    };
    assert!(wait_for(PATIENCE, intent_stopped).is_some(), "intent stopped; log:\n{}", agents.log(0));
    let given_up = || {
        let log = agents.log(0);
        log.contains("not restarted")
            || log.contains("gives it to another host: stopping it here")
            || log.contains(&aside)
    };
    assert!(wait_for(PATIENCE, given_up).is_some(), "{}", agents.log(0));
    let out = vserver(&lab, 0, &[&name, "running"], true);
    assert!(!out.status.success(), "not restarted on h0: {}", text(&out));
    assert!(!agents.log(0).contains("restarting: it died on its own"), "{}", agents.log(0));
}

/// The runbook's replacement of a dead host: the same name and address, an empty state directory and no
/// replicas. Its peers take it back (its incarnation starts above what they remember), the leader refills its
/// copy of the table, and the next sync gives it a complete replica again.
#[test]
fn a_dead_host_reinstalled_under_its_name_rejoins_with_the_table_and_a_replica() {
    if skip_unless_root("a_dead_host_reinstalled_under_its_name_rejoins_with_the_table_and_a_replica") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, name, _addr) = placed_on_h0(&lab, "or", "", true);
    assert!(wait_for(PATIENCE, || view(&agents, 2, &name).is_some_and(|v| v.1 == "h0")).is_some());
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));

    let before = agents.peer(0, 2).unwrap()["incarnation"].as_u64().unwrap();
    // h2 dies and comes back as a new machine: nothing of its state or replicas survives.
    agents.kill9(2);
    let h2 = &lab.hosts[2];
    std::fs::remove_dir_all(h2.dir.join("agent-state")).unwrap();
    std::fs::remove_dir_all(h2.vservers_dir.join(".replicas")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    agents.spawn(2).unwrap();

    assert!(wait_for(PATIENCE, || crate::all_alive(&agents, 3)).is_some(), "h2 is heard again:\n{}", agents.log(2));
    // At once, not once its new numbering overtakes the old one (after months of running, it never would).
    let now = agents.peer(0, 2).unwrap();
    assert!(now["incarnation"].as_u64().unwrap() > before, "h2 starts above what h0 remembers: {now}");
    let seen = wait_for(PATIENCE, || view(&agents, 2, &name).is_some_and(|v| v.1 == "h0"));
    assert!(seen.is_some(), "h2 has the table back: {:?}\n{}", view(&agents, 2, &name), agents.log(2));
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "a sync to the new h2 completes: {}", text(&out));
    let replicas = agents.get(2, 2, "/v1/replicas").unwrap().json().unwrap();
    assert!(replicas.to_string().contains(&name), "h2 holds a replica again: {replicas}");
}
