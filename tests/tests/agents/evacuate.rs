//! Evacuate and restore, on a lab of three hosts: a live host emptied by migrates (three vservers, two at a
//! time) and filled again by `restore`; a dead host emptied by takeovers when automatic takeover is off, which
//! needs the operator's word that it is down.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vserver_lab::agents::{agent_bin, wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, owner, text, vserver, FAST, PATIENCE};

/// Three busybox vservers on h0 (standbys h1, h2), each at its own address, agents started with `extra`, each
/// started and synced once.
fn three_on_h0<'lab>(lab: &'lab Lab, prefix: &str, extra: &str) -> (Agents<'lab>, Vec<(String, Ipv4Addr)>) {
    let mut cluster = String::new();
    let mut vservers = Vec::new();
    for n in 0..3 {
        let name = vserver_lab::unique(&format!("{prefix}{n}"));
        let addr = lab.free_addr(n);
        let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
        assert!(out.status.success(), "{}", text(&out));
        vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), &name).unwrap();
        cluster.push_str(&format!(
            "[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n\n"
        ));
        vservers.push((name, addr));
    }
    let agents = Agents::start_full(lab, FAST, Some(&cluster), extra).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    for (name, addr) in &vservers {
        let out = vserver(lab, 0, &[name, "start"], false);
        assert!(out.status.success(), "{}", text(&out));
        assert!(lab.client.wait_http(*addr, 80, Instant::now() + PATIENCE).is_some());
        assert!(wait_for(PATIENCE, || owner(&agents, 0, name).is_some_and(|o| o.0 == "h0")).is_some());
        let out = vserver(lab, 0, &[name, "sync"], false);
        assert!(out.status.success(), "{}", text(&out));
    }
    (agents, vservers)
}

/// `vserver-agent ARGS` on host `i`.
fn agent_cmd(lab: &Lab, agents: &Agents, i: usize, args: &[&str]) -> std::process::Output {
    lab.hosts[i].command(agent_bin().unwrap()).arg("--config").arg(agents.config(i)).args(args).output().unwrap()
}

/// Every vserver answers at its address with its own page, from host `on`.
fn all_served_from(lab: &Lab, agents: &Agents, vservers: &[(String, Ipv4Addr)], on: usize) {
    for (name, addr) in vservers {
        let served = wait_for(PATIENCE, || {
            lab.hosts[on].runs(name)
                && lab.client.http_get(*addr, 80, Duration::from_millis(500)).is_ok_and(|b| b.contains(name.as_str()))
        });
        assert!(served.is_some(), "{name} answers at {addr} from h{on}; log:\n{}", agents.log(on));
    }
}

#[test]
fn evacuating_a_live_host_empties_it_and_restore_fills_it_again() {
    if skip_unless_root("evacuating_a_live_host_empties_it_and_restore_fills_it_again") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, vservers) = three_on_h0(&lab, "ev", "");
    // Asked through h2: any host takes it.
    let out = agent_cmd(&lab, &agents, 2, &["evacuate", "h0", "--parallel", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("evacuate h0: 3 of 3 moved"), "{}", text(&out));
    for (name, _) in &vservers {
        assert!(text(&out).contains(&format!("{name} -> h1: done: migrated, outage")), "{}", text(&out));
        assert!(!lab.hosts[0].runs(name), "h0 is empty");
        assert_eq!(owner(&agents, 2, name).map(|o| o.0).as_deref(), Some("h1"));
    }
    all_served_from(&lab, &agents, &vservers, 1);

    let out = agent_cmd(&lab, &agents, 1, &["restore", "h0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["mode"], "restore");
    assert!(job["items"].as_array().unwrap().iter().all(|i| i["state"] == "done" && i["to"] == "h0"), "{job}");
    all_served_from(&lab, &agents, &vservers, 0);
}

#[test]
fn evacuating_a_dead_host_without_fencing_needs_the_operators_word_then_takes_each_over() {
    if skip_unless_root("evacuating_a_dead_host_without_fencing_needs_the_operators_word_then_takes_each_over") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, vservers) = three_on_h0(&lab, "ed", "[takeover]\nenabled = false\n");
    agents.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    assert!(wait_for(PATIENCE, || agents.peer_state(1, 0).as_deref() == Some("dead")).is_some());
    let out = agent_cmd(&lab, &agents, 1, &["evacuate", "h0"]);
    assert!(!out.status.success(), "refused without the operator's word");
    assert!(text(&out).contains("power it off"), "{}", text(&out));
    assert!(vservers.iter().all(|(n, _)| owner(&agents, 1, n).is_some_and(|o| o.0 == "h0")), "nothing moved");

    let out = agent_cmd(&lab, &agents, 1, &["evacuate", "h0", "--fenced", "--parallel", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("by takeover"), "{}", text(&out));
    all_served_from(&lab, &agents, &vservers, 1);
}

#[test]
fn evacuate_refuses_bad_input_and_moves_nothing() {
    if skip_unless_root("evacuate_refuses_bad_input_and_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, _addr) = crate::placed_on_h0(&lab, "eb", "", true);
    let out = agent_cmd(&lab, &agents, 1, &["evacuate", "h7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = agent_cmd(&lab, &agents, 1, &["evacuate", "h0", "--parallel", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("parallel must be from 1 to 16"), "{}", text(&out));
    let out = agent_cmd(&lab, &agents, 1, &["restore", "h0"]);
    assert!(!out.status.success() && text(&out).contains("no evacuation of h0"), "{}", text(&out));
    let reply =
        agents.request(1, 1, "POST", "/v1/hosts/h0/evacuate", Some(agents.secret()), Some("{\"x\":1}")).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(lab.hosts[0].runs(&name), "it still runs on h0");
}
