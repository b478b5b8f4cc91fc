//! The cluster's hosts change while it runs, none of the others restarted: a host no configuration names is
//! taken in by a join token with its address (five hosts: two more voters); a voter lost for good is removed
//! (four hosts: back to three voters); then a majority of the voters is lost for good, and the survivors are
//! forced into a new cluster that keeps the table, as the runbook says (docs/failover.md).

use std::collections::BTreeSet;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{text, vserver, FAST, PATIENCE};

/// Generous: a forced recovery restarts agents, elects, and catches a host up.
const LONG: std::time::Duration = std::time::Duration::from_secs(60);

fn raft(agents: &Agents, i: usize, key: &str) -> Vec<String> {
    let Ok(status) = agents.status(i) else { return Vec::new() };
    let list = status["ownership"]["raft"][key].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    names.sort();
    names
}

fn peers_of(agents: &Agents, i: usize) -> BTreeSet<String> {
    let Ok(status) = agents.status(i) else { return BTreeSet::new() };
    let list = status["peers"].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn ok(out: &std::process::Output) -> bool {
    out.status.success()
}

#[test]
fn hosts_join_and_leave_a_running_cluster_and_survivors_of_a_lost_majority_are_forced_into_a_new_one() {
    if skip_unless_root(
        "hosts_join_and_leave_a_running_cluster_and_survivors_of_a_lost_majority_are_forced_into_a_new_one",
    ) {
        return;
    }
    let lab = Lab::new(5).unwrap();
    let name = vserver_lab::unique("hj");
    let out = vserver(&lab, 3, &[&name, "build", "--busybox"], true);
    assert!(ok(&out), "{}", text(&out));
    // Four hosts form the cluster (h0-h2 vote, h3 runs the vserver with standby h2); h4 is in no configuration.
    let cluster = format!("[vservers.{name}]\nprimary = \"h3\"\nstandbys = [\"h2\"]\ninterval_secs = 3600\n");
    let mut agents = Agents::form_first(&lab, 4, FAST, Some(&cluster), |_| String::new()).unwrap();
    let formed = wait_for(PATIENCE, || raft(&agents, 0, "learners") == ["h3"]);
    assert!(formed.is_some(), "h0:\n{}", agents.log(0));
    let started = wait_for(PATIENCE, || ok(&vserver(&lab, 3, &[&name, "start"], false)));
    assert!(started.is_some(), "h3:\n{}", agents.log(3));
    let pids: Vec<Option<u32>> = (0..4).map(|i| agents.pid(i)).collect();
    let sampler = vserver_lab::faults::Sampler::start(&lab, &name);

    // A token for a host the configuration does not name needs its address.
    let refused = agents.run(0, &["token", "h4"]).unwrap();
    assert!(!ok(&refused) && text(&refused).contains("--address"), "{}", text(&refused));
    let h4 = format!("{}:7070", lab.hosts[4].addr);
    let out = agents.run(0, &["token", "h4", "--address", &h4]).unwrap();
    assert!(ok(&out), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let token = said.lines().find_map(|l| l.strip_prefix("on h4: vserver-agent join ")).expect("a token").to_string();
    let out = agents.run(4, &["join", &token]).unwrap();
    assert!(ok(&out), "{}\nh0:\n{}", text(&out), agents.log(0));
    agents.spawn(4).unwrap();
    // Every host counts h4 within moments, none restarted; the voters hear it; it gets the table.
    let all5 = names(&["h0", "h1", "h2", "h3", "h4"]);
    let known = wait_for(PATIENCE, || {
        let everywhere = (0..5).all(|i| {
            let mut hosts = peers_of(&agents, i);
            hosts.insert(format!("h{i}"));
            hosts == all5
        });
        let heard = (0..3).all(|v| agents.peer_state(v, 4).as_deref() == Some("alive"));
        let table = agents.status(4).is_ok_and(|s| s["ownership"]["owners"][&name]["owner"] == "h3");
        everywhere && heard && table
    });
    assert!(known.is_some(), "h4 taken in\nh0:\n{}\nh4:\n{}", agents.log(0), agents.log(4));
    // Five hosts call for five voters: h3 and h4 vote once caught up.
    let grown = wait_for(PATIENCE, || (0..5).all(|i| raft(&agents, i, "voters") == ["h0", "h1", "h2", "h3", "h4"]));
    assert!(grown.is_some(), "voters {:?}\nh0:\n{}", raft(&agents, 0, "voters"), agents.log(0));

    // h0, a voter, is lost for good and removed through h2: four hosts, three voters, the healthy first by name.
    // Commands about h4 work from a host whose agent.toml does not name it (the cluster does).
    for state in ["on", "off"] {
        let out = agents.run(1, &["maintenance", state, "--host", "h4"]).unwrap();
        assert!(ok(&out), "maintenance {state} for h4 through h1: {}", text(&out));
    }
    // Bad requests change nothing: 400 for a malformed body or name, 404 for a host the cluster does not know.
    for (body, status) in [
        (r#"{"hosts":[]}"#, 400),
        (r#"{"hosts":["a/b"]}"#, 400),
        (r#"{"host":"h0"}"#, 400),
        (r#"{"hosts":["h9"]}"#, 404),
    ] {
        let reply = agents.request(2, 2, "POST", "/v1/hosts/remove", Some(agents.secret()), Some(body)).unwrap();
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    let out = agents.run(2, &["remove", "h3"]).unwrap();
    assert!(!ok(&out) && text(&out).contains(&name), "h3 owns the vserver: {}", text(&out));
    agents.kill9(0);
    let out = agents.run(2, &["remove", "h1"]).unwrap();
    assert!(!ok(&out) && text(&out).contains("h0 do(es) not answer"), "{}", text(&out));
    // (h0 may have led: the first tries may meet the election of the next coordinator.)
    let removed = wait_for(PATIENCE, || ok(&agents.run(2, &["remove", "h0"]).unwrap()));
    assert!(removed.is_some(), "h2:\n{}", agents.log(2));
    let rechosen = wait_for(PATIENCE, || {
        let voters =
            (1..5).all(|i| raft(&agents, i, "voters") == ["h1", "h2", "h3"] && raft(&agents, i, "learners") == ["h4"]);
        let gone = (1..5).all(|i| !peers_of(&agents, i).contains("h0"));
        voters && gone
    });
    assert!(rechosen.is_some(), "voters {:?}\nh1:\n{}", raft(&agents, 1, "voters"), agents.log(1));
    for (i, pid) in pids.iter().enumerate().skip(1) {
        assert_eq!(agents.pid(i), *pid, "h{i}'s agent was never restarted");
    }
    let seen = sampler.finish();
    assert_eq!(seen.changes.len(), 1, "the vserver ran throughout, on h3 alone: {:?}", seen.changes);
    assert!(seen.most_at_once <= 1 && lab.hosts[3].runs(&name));

    // h1 and h2, two of the three voters, are lost for good: h3 cannot keep its lease.
    agents.kill9(1);
    agents.kill9(2);
    let fenced = wait_for(LONG, || !lab.hosts[3].runs(&name));
    assert!(fenced.is_some(), "h3 fences without a majority\nh3:\n{}", agents.log(3));
    // The recovery works on stopped agents' files only.
    let busy = agents.run(3, &["recover"]).unwrap();
    assert!(!ok(&busy) && text(&busy).contains("stop the agent"), "{}", text(&busy));
    assert!(agents.stop(3, PATIENCE) && agents.stop(4, PATIENCE));
    let shown = agents.run(3, &["recover"]).unwrap();
    assert!(ok(&shown) && text(&shown).contains("voters h1, h2, h3"), "{}", text(&shown));
    let forced = agents.run(3, &["recover", "--force-new-cluster"]).unwrap();
    assert!(ok(&forced) && text(&forced).contains("voters h3;"), "{}", text(&forced));
    agents.spawn(3).unwrap();
    let out = agents.run(4, &["recover", "--rejoin"]).unwrap();
    assert!(ok(&out), "{}", text(&out));
    agents.spawn(4).unwrap();
    let removed = wait_for(LONG, || ok(&agents.run(3, &["remove", "h1", "h2"]).unwrap()));
    assert!(removed.is_some(), "h3:\n{}", agents.log(3));
    // Two hosts, two voters; the table kept; the vserver back on its owner.
    let recovered = wait_for(LONG, || {
        let voters = [3, 4].iter().all(|&i| raft(&agents, i, "voters") == ["h3", "h4"]);
        let table = agents.status(4).is_ok_and(|s| s["ownership"]["owners"][&name]["owner"] == "h3");
        voters && table && lab.hosts[3].runs(&name)
    });
    assert!(
        recovered.is_some(),
        "voters {:?}, runs {}\nh3:\n{}\nh4:\n{}",
        raft(&agents, 3, "voters"),
        lab.hosts[3].runs(&name),
        agents.log(3),
        agents.log(4)
    );
    assert_eq!(peers_of(&agents, 3), names(&["h4"]));
}
