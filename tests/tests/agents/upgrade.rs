//! A rolling upgrade of a running cluster from the previous release (plain HTTP, the bearer secret on the wire)
//! to this one over TLS, host by host, as docs/failover.md's runbook says: the vserver never stops nor moves,
//! and versions mixed during the move work together.

use std::path::Path;
use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::{Sampler, Watchdogs};
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, owner, text, PATIENCE};

/// `vserver ARGS` on host `i` with the `vserver` command of `bin`.
fn vserver_of(lab: &Lab, bin: &Path, i: usize, args: &[&str]) -> std::process::Output {
    lab.hosts[i].command(bin.join("vserver")).args(args).output().unwrap()
}

/// Restarts host `i`'s agent as `systemctl restart` does (SIGTERM, its exit, a new start), then waits until
/// every host sees every other alive and h0 holds its lease again.
pub(crate) fn restart(agents: &mut Agents, i: usize) {
    assert!(agents.stop(i, Duration::from_secs(10)), "h{i}'s agent left by itself");
    agents.spawn(i).unwrap();
    let back = wait_for(PATIENCE, || {
        all_alive(agents, 3)
            && agents.status(0).ok().and_then(|s| s["failover"]["lease_remaining_ms"].as_u64()).is_some_and(|l| l > 0)
    });
    assert!(back.is_some(), "h{i} is back and h0 holds its lease; h{i}:\n{}\nh1:\n{}", agents.log(i), agents.log(1));
}

/// `vserver-agent --config CONFIG ARGS` of this build, from host `i`'s namespace.
pub(crate) fn agent_cmd(lab: &Lab, agents: &Agents, i: usize, args: &[&str]) -> String {
    let bin = vserver_lab::agents::agent_bin().unwrap();
    let out = lab.hosts[i].command(bin).arg("--config").arg(agents.config(i)).args(args).output().unwrap();
    assert!(out.status.success(), "h{i}: vserver-agent {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_running_cluster_of_the_previous_release_moves_to_tls_host_by_host_without_a_stop() {
    if skip_unless_root("a_running_cluster_of_the_previous_release_moves_to_tls_host_by_host_without_a_stop") {
        return;
    }
    let old = vserver_lab::previous::binaries().unwrap();
    let new_vserver = vserver_lab::vserver_bin().unwrap();
    let lab = Lab::new(3).unwrap();
    let _dogs = Watchdogs::start_with(&lab, Some(old.join("vserver-watchdog"))).unwrap();
    let name = vserver_lab::unique("up");
    let addr = lab.free_addr(0);
    let out = vserver_of(&lab, &old, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")]);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "up").unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    // The previous release's cluster: its configuration knows no insecure_plain_http, its agents run its
    // `vserver` command.
    let mut agents = Agents::prepare_each(&lab, crate::FAST, Some(&cluster), |_| String::new()).unwrap();
    agents.use_agent_bin(old.join("vserver-agent"));
    let new_vserver_line = format!("vserver_bin = \"{}\"", new_vserver.display());
    let old_vserver_line = format!("vserver_bin = \"{}\"", old.join("vserver").display());
    for i in 0..3 {
        agents
            .edit_config(i, |t| {
                t.replace("insecure_plain_http = true\n", "").replace(&new_vserver_line, &old_vserver_line)
            })
            .unwrap();
        agents.spawn(i).unwrap();
    }
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "h0:\n{}", agents.log(0));
    let started = wait_for(PATIENCE, || vserver_of(&lab, &old, 0, &[&name, "start"]).status.success());
    assert!(started.is_some(), "h0:\n{}", agents.log(0));
    assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    assert!(vserver_of(&lab, &old, 0, &[&name, "sync"]).status.success());
    assert!(wait_for(PATIENCE, || owner(&agents, 1, &name).is_some_and(|o| o.0 == "h0")).is_some());
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);

    // 1. The new binaries, host by host, the standbys first: each says plain HTTP knowingly.
    agents.use_agent_bin(vserver_lab::agents::agent_bin().unwrap());
    for i in [2, 1, 0] {
        agents
            .edit_config(i, |t| {
                format!("insecure_plain_http = true\n{}", t.replace(&old_vserver_line, &new_vserver_line))
            })
            .unwrap();
        restart(&mut agents, i);
        assert!(agents.log(i).contains("insecure_plain_http"), "it warns at start:\n{}", agents.log(i));
    }
    // 2. The cluster's certificates: init on h0 (its configuration and peers as they are), join on the others;
    //    each restarted. They serve TLS and plain HTTP, and still call each other over plain HTTP.
    let said = agent_cmd(&lab, &agents, 0, &["init"]);
    assert!(said.contains("moving from plain HTTP"), "{said}");
    restart(&mut agents, 0);
    for i in [1, 2] {
        let prefix = format!("on h{i}: vserver-agent join ");
        let token = said.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().to_string();
        agent_cmd(&lab, &agents, i, &["join", &token]);
        restart(&mut agents, i);
    }
    // 3. Every host reaches the others over TLS, then 4. refuses plain HTTP.
    for args in [&["secure"][..], &["secure", "--refuse-plain"][..]] {
        for i in [2, 1, 0] {
            agent_cmd(&lab, &agents, i, args);
            if args.len() == 2 && i == 2 {
                // From now on, at least one agent answers over TLS alone.
                let ca = std::fs::read_to_string(lab.hosts[0].dir.join("pki/ca.pem")).unwrap();
                agents.use_tls(Some(ca));
            }
            restart(&mut agents, i);
        }
    }
    for i in 0..3 {
        let wire = agents.status(i).unwrap()["node"]["wire"].clone();
        assert_eq!(wire["mode"], "mutual_tls", "h{i}: {wire}");
        assert_eq!(wire["plain_accepted"], false, "h{i}: {wire}");
    }
    let plain = vserver_lab::agents::http(&lab.client.netns, lab.hosts[0].addr, 7070, "GET", "/healthz", None, None);
    assert!(plain.is_err() || plain.unwrap().status != 200, "plain HTTP is refused at the end");

    // Never stopped, never moved.
    let seen = sampler.finish();
    assert!(seen.most_at_once <= 1 && seen.rounds > 100);
    assert_eq!(seen.changes.len(), 1, "it never stopped nor moved: {:?}\nh0:\n{}", seen.changes, agents.log(0));
    assert!(lab.hosts[0].runs(&name));
    assert_eq!(owner(&agents, 1, &name), Some(("h0".to_string(), epoch)), "the table did not move");
    for i in 0..3 {
        assert!(!agents.log(i).contains("lease lost"), "h{i} never fenced:\n{}", agents.log(i));
    }
    // Replication works on the new wire.
    let out = lab.hosts[0].command(&new_vserver).args([&name, "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
