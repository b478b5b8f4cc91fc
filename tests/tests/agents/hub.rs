//! The hub: in a cluster of more hosts than voters, a host that does not vote exchanges heartbeats and
//! beacons with the voters and its partners alone, so that its work does not grow with the cluster. Eight
//! hosts: h0–h4 vote, h5 runs a vserver whose standby is h6, h7 shares nothing. What crosses the switch is
//! captured (the voters send beacons to every host, heartbeats only to the voters and their partners); then
//! h5 crashes and h6 takes its vserver over, while h7 keeps its lease. And such a cluster of the last release
//! upgrades host by host without a stop, then retires h7 through the cluster.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::capture::{contains, packets, Capture};
use vserver_lab::faults::Sampler;
use vserver_lab::{skip_unless_root, Lab};

use crate::takeover::assert_one_copy;
use crate::{text, vserver, FAST, PATIENCE};

const HOSTS: usize = 8;
const VOTERS: [usize; 5] = [0, 1, 2, 3, 4];

fn watched(agents: &Agents, observer: usize, peer: usize) -> Option<bool> {
    agents.peer(observer, peer).and_then(|p| p["watched"].as_bool())
}

#[test]
fn a_host_that_does_not_vote_talks_to_the_voters_and_its_partners_alone_and_still_fails_over() {
    if skip_unless_root("a_host_that_does_not_vote_talks_to_the_voters_and_its_partners_alone_and_still_fails_over") {
        return;
    }
    let lab = Lab::new(HOSTS).unwrap();
    let name = vserver_lab::unique("hub");
    let addr = lab.free_addr(5);
    let out = vserver(&lab, 5, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[5].vservers_dir.join(&name), "hub").unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h5\"\nstandbys = [\"h6\"]\ninterval_secs = 3600\n");
    // The product's timing, not the lab's fast one: the test asserts that no live host is ever judged dead, and
    // eight agents on a busy machine can stall longer than the fast timing's 600 ms.
    let mut agents = Agents::start_with(&lab, vserver_lab::agents::Timing::default(), Some(&cluster)).unwrap();

    // The voters see every host alive; every other host sees the voters and its partners alive, and does
    // not watch the rest.
    let alive = |o: usize, p: usize| agents.peer_state(o, p).as_deref() == Some("alive");
    let formed = wait_for(Duration::from_secs(60), || {
        VOTERS.iter().all(|&v| (0..HOSTS).filter(|&p| p != v).all(|p| alive(v, p)))
            && [5, 6, 7].iter().all(|&o| VOTERS.iter().all(|&v| alive(o, v)))
            && alive(5, 6)
            && alive(6, 5)
            && watched(&agents, 7, 5) == Some(false)
            && watched(&agents, 5, 7) == Some(false)
            && watched(&agents, 6, 7) == Some(false)
    });
    assert!(
        formed.is_some(),
        "the hub formed; h7's peers: {:?}\nh7:\n{}",
        (0..HOSTS).filter(|&p| p != 7).map(|p| (p, agents.peer(7, p))).collect::<Vec<_>>(),
        agents.log(7)
    );
    // The table formed with the five voters the rule chooses.
    let expected: BTreeSet<String> = VOTERS.iter().map(|v| format!("h{v}")).collect();
    let voters = || -> BTreeSet<String> {
        let status = agents.status(0).unwrap_or_default();
        let listed = status["ownership"]["raft"]["voters"].as_array().cloned().unwrap_or_default();
        listed.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
    };
    assert!(wait_for(PATIENCE, || voters() == expected).is_some(), "voters: {:?}", voters());

    let out = vserver(&lab, 5, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    let out = vserver(&lab, 5, &[&name, "sync"], false);
    assert!(out.status.success(), "a non-voter syncs to its partner: {}", text(&out));

    // Six seconds of traffic (a heartbeat that says nothing new goes every 5 s): nothing at all between h7 and
    // h5 or h6; h5 and h6 talk; h7 talks only to the voters.
    let capture = Capture::start(lab.switch()).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let seen = packets(&capture.finish());
    let ip = |i: usize| lab.hosts[i].addr;
    let between = |a: Ipv4Addr, b: Ipv4Addr| {
        seen.iter().filter(|p| (*p.src.ip() == a && *p.dst.ip() == b) || (*p.src.ip() == b && *p.dst.ip() == a)).count()
    };
    assert_eq!(between(ip(7), ip(5)), 0, "h7 and h5 share nothing and exchange nothing");
    assert_eq!(between(ip(7), ip(6)), 0, "h7 and h6 share nothing and exchange nothing");
    assert!(between(ip(5), ip(6)) > 0, "partners exchange heartbeats");
    let voter_ips: BTreeSet<Ipv4Addr> = VOTERS.iter().map(|&v| ip(v)).collect();
    let from_h7: BTreeSet<Ipv4Addr> = seen.iter().filter(|p| *p.src.ip() == ip(7)).map(|p| *p.dst.ip()).collect();
    assert!(from_h7.iter().all(|d| voter_ips.contains(d)), "h7 sends to the voters alone: {from_h7:?}");
    assert_eq!(from_h7.len(), VOTERS.len(), "h7 sends to every voter: {from_h7:?}");
    // Heartbeats (HTTP, plain in this lab): h7 sends them to the voters; a voter sends h7 beacons alone (h7
    // is not its partner), and h5 and h6, partners, send each other heartbeats.
    let heartbeats = |from: usize, to: usize| {
        seen.iter()
            .filter(|p| *p.src.ip() == ip(from) && *p.dst.ip() == ip(to) && p.tcp_seq.is_some())
            .any(|p| contains(&p.payload, b"POST /v1/heartbeat"))
    };
    for &v in &VOTERS {
        assert!(heartbeats(7, v), "h7 sends h{v} heartbeats");
        assert!(!heartbeats(v, 7), "h{v} sends h7 no heartbeat");
    }
    assert!(heartbeats(5, 6) && heartbeats(6, 5), "partners send each other heartbeats");
    assert_eq!(agents.peer(0, 7).map(|p| p["heartbeats"].clone()), Some(serde_json::json!(false)));
    assert_eq!(agents.peer(0, 5).map(|p| p["heartbeats"].clone()), Some(serde_json::json!(false)));

    // h5 crashes: its standby h6, which does not vote either, takes the vserver over through the voters.
    let sampler = Sampler::start(&lab, &name);
    agents.kill9(5);
    lab.hosts[5].kill_vservers();
    lab.set_link(5, false).unwrap();
    let back = wait_for(Duration::from_secs(30), || lab.hosts[6].runs(&name))
        .and_then(|_| lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE));
    assert!(back.is_some(), "h6 took over; h6:\n{}\nh0:\n{}", agents.log(6), agents.log(0));
    // The voters judged h5 dead; h7, which never watched it, did not judge it at all, and kept its lease.
    assert!(wait_for(PATIENCE, || agents.peer_state(0, 5).as_deref() == Some("dead")).is_some());
    assert_ne!(agents.peer_state(7, 5).as_deref(), Some("dead"));
    let lease = agents.status(7).unwrap()["failover"]["lease_remaining_ms"].as_u64();
    assert!(lease.is_some_and(|l| l > 0), "h7 holds its lease: {lease:?}");
    assert!(!agents.log(7).contains("lease lost"), "h7 never lost its lease:\n{}", agents.log(7));
    for i in (0..HOSTS).filter(|&i| i != 5) {
        let log = agents.log(i);
        let false_verdicts: Vec<&str> =
            log.lines().filter(|l| l.contains("peer dead") && !l.contains("\"h5\"") && !l.contains("h5")).collect();
        assert!(false_verdicts.is_empty(), "h{i} judged a live host dead: {false_verdicts:?}");
    }
    // Asked on h7 about h5, which it does not watch, an evacuation names the voters to ask instead.
    let reply = agents.request(7, 7, "POST", "/v1/hosts/h5/evacuate", Some(agents.secret()), Some("{}")).unwrap();
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("does not watch h5") && reply.body.contains("h0, h1, h2, h3, h4"), "{}", reply.body);
    assert_one_copy(&sampler.finish(), &agents);
}

/// Host `i`'s agent restarted (SIGTERM, its exit, a new start), then every voter hears it and it hears every
/// voter, and h5 (the vserver's owner) holds its lease.
fn restart_in_hub(agents: &mut Agents, i: usize) {
    assert!(agents.stop(i, Duration::from_secs(10)), "h{i}'s agent left by itself");
    agents.spawn(i).unwrap();
    let back = wait_for(PATIENCE, || {
        VOTERS.iter().filter(|&&v| v != i).all(|&v| {
            agents.peer_state(v, i).as_deref() == Some("alive") && agents.peer_state(i, v).as_deref() == Some("alive")
        }) && agents.status(5).ok().and_then(|s| s["failover"]["lease_remaining_ms"].as_u64()).is_some_and(|l| l > 0)
    });
    assert!(back.is_some(), "h{i} is back and h5 holds its lease; h{i}:\n{}\nh5:\n{}", agents.log(i), agents.log(5));
}

#[test]
fn a_cluster_of_eight_of_the_last_release_upgrades_host_by_host_without_a_stop_then_retires_a_host() {
    if skip_unless_root(
        "a_cluster_of_eight_of_the_last_release_upgrades_host_by_host_without_a_stop_then_retires_a_host",
    ) {
        return;
    }
    let old = vserver_lab::previous::binaries_of(vserver_lab::previous::LAST_RELEASE).unwrap();
    let new_vserver = vserver_lab::vserver_bin().unwrap();
    let lab = Lab::new(HOSTS).unwrap();
    let name = vserver_lab::unique("hubup");
    let addr = lab.free_addr(5);
    let vserver_old = |i: usize, args: &[&str]| lab.hosts[i].command(old.join("vserver")).args(args).output().unwrap();
    let out = vserver_old(5, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")]);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[5].vservers_dir.join(&name), "hubup").unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h5\"\nstandbys = [\"h6\"]\ninterval_secs = 3600\n");
    // The last release's cluster, its agents running its `vserver` command.
    let mut agents = Agents::prepare_each(&lab, FAST, Some(&cluster), |_| String::new()).unwrap();
    agents.use_agent_bin(old.join("vserver-agent"));
    let new_line = format!("vserver_bin = \"{}\"", new_vserver.display());
    let old_line = format!("vserver_bin = \"{}\"", old.join("vserver").display());
    for i in 0..HOSTS {
        agents.edit_config(i, |t| t.replace(&new_line, &old_line)).unwrap();
        agents.spawn(i).unwrap();
    }
    // Formed: the voters hear every host.
    let everyone = || {
        VOTERS
            .iter()
            .all(|&v| (0..HOSTS).filter(|&p| p != v).all(|p| agents.peer_state(v, p).as_deref() == Some("alive")))
    };
    assert!(wait_for(Duration::from_secs(60), everyone).is_some(), "h0:\n{}", agents.log(0));
    let started = wait_for(PATIENCE, || vserver_old(5, &[&name, "start"]).status.success());
    assert!(started.is_some(), "h5:\n{}", agents.log(5));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    assert!(vserver_old(5, &[&name, "sync"]).status.success());
    assert!(wait_for(PATIENCE, || crate::owner(&agents, 0, &name).is_some_and(|o| o.0 == "h5")).is_some());
    let epoch = crate::owner(&agents, 0, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);

    // Host by host, the hosts that do not vote first, then the voters: the new agent and `vserver`.
    agents.use_agent_bin(vserver_lab::agents::agent_bin().unwrap());
    for i in [7, 6, 5, 4, 3, 2, 1, 0] {
        if i == 0 {
            // One host still runs the last release, which would stop on an entry that changes the hosts, or that
            // places a vserver: refused.
            let out = agents.run(1, &["remove", "h7"]).unwrap();
            assert!(!out.status.success() && text(&out).contains("h0 run(s) an earlier release"), "{}", text(&out));
            let out = agents.run(1, &["placement", "set", &name, "--standbys", "h6,h4"]).unwrap();
            assert!(!out.status.success() && text(&out).contains("h0 run(s) an earlier release"), "{}", text(&out));
        }
        agents.edit_config(i, |t| t.replace(&old_line, &new_line)).unwrap();
        restart_in_hub(&mut agents, i);
    }

    // The hub in effect: h7 and h5 no longer watch each other; the voters watch everyone.
    let hub = wait_for(PATIENCE, || {
        watched(&agents, 7, 5) == Some(false)
            && watched(&agents, 5, 7) == Some(false)
            && VOTERS
                .iter()
                .all(|&v| (0..HOSTS).filter(|&p| p != v).all(|p| agents.peer_state(v, p).as_deref() == Some("alive")))
    });
    assert!(
        hub.is_some(),
        "h7's peers: {:?}",
        (0..HOSTS).filter(|&p| p != 7).map(|p| agents.peer(7, p)).collect::<Vec<_>>()
    );
    // Never stopped, never moved, no host fenced; replication works.
    let seen = sampler.finish();
    assert!(seen.most_at_once <= 1 && seen.rounds > 100);
    assert_eq!(seen.changes.len(), 1, "it never stopped nor moved: {:?}\nh5:\n{}", seen.changes, agents.log(5));
    assert!(lab.hosts[5].runs(&name));
    assert_eq!(crate::owner(&agents, 0, &name), Some(("h5".to_string(), epoch)), "the table did not move");
    for i in 0..HOSTS {
        assert!(!agents.log(i).contains("lease lost"), "h{i} never fenced:\n{}", agents.log(i));
    }
    let out = lab.hosts[5].command(&new_vserver).args([&name, "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Every host upgraded: the cluster files are taken into the cluster's table, nothing lost; a change of the
    // standbys asked of h1 applies on h5 at once, and its next sync reaches the new standby.
    let taken = wait_for(Duration::from_secs(60), || {
        agents.run(3, &["placement", "list", "--json"]).ok().is_some_and(|out| {
            let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            t["taken_from"].as_array().is_some_and(|f| f.len() == HOSTS)
                && t["placements"][&name]["entry"]["primary"] == "h5"
                && t["placements"][&name]["entry"]["standbys"] == serde_json::json!(["h6"])
                && t["placements"][&name]["entry"]["interval_secs"] == 3600
        })
    });
    assert!(taken.is_some(), "{}", text(&agents.run(3, &["placement"]).unwrap()));
    let pids: Vec<Option<u32>> = (0..7).map(|i| agents.pid(i)).collect();
    let out = agents.run(1, &["placement", "set", &name, "--standbys", "h6,h4"]).unwrap();
    assert!(out.status.success(), "{}\nh1:\n{}", text(&out), agents.log(1));
    let standbys = || {
        agents.status(5).ok().map(|s| {
            let r = s["replication"].as_array().cloned().unwrap_or_default();
            r.iter().filter(|r| r["vserver"] == name.as_str()).map(|r| r["standby"].to_string()).collect::<Vec<_>>()
        })
    };
    let applied = wait_for(PATIENCE, || standbys() == Some(vec!["\"h6\"".to_string(), "\"h4\"".to_string()]));
    assert!(applied.is_some(), "{:?}\nh5:\n{}", standbys(), agents.log(5));
    let out = lab.hosts[5].command(&new_vserver).args([&name, "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let on_h4 = |s: serde_json::Value| {
        s["replicas"].as_array().is_some_and(|r| r.iter().any(|r| r["vserver"] == name.as_str()))
    };
    assert!(wait_for(PATIENCE, || agents.status(4).is_ok_and(on_h4)).is_some(), "h4 holds a copy");
    assert!(lab.hosts[5].runs(&name));

    // h7, which shares nothing, is retired through h1; every host drops it, none restarted.
    let out = agents.run(1, &["remove", "h5"]).unwrap();
    assert!(!out.status.success() && text(&out).contains(&name), "h5 owns the vserver: {}", text(&out));
    let out = agents.run(1, &["remove", "h7"]).unwrap();
    assert!(out.status.success(), "{}\nh1:\n{}", text(&out), agents.log(1));
    let without_h7 = |o: usize| {
        agents.status(o).is_ok_and(|s| s["peers"].as_array().is_some_and(|p| p.iter().all(|p| p["name"] != "h7")))
    };
    let dropped = wait_for(PATIENCE, || (0..7).all(without_h7));
    assert!(dropped.is_some(), "h7 dropped everywhere; h0's peers: {}", agents.status(0).unwrap()["peers"]);
    assert_eq!((0..7).map(|i| agents.pid(i)).collect::<Vec<_>>(), pids, "no agent restarted");
    assert!(lab.hosts[5].runs(&name));
}
