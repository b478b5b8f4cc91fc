//! The cluster's wire as the README sets it up: `vserver-agent init` on h0, `vserver-agent join TOKEN` on the
//! others, and nothing else; the agents then speak TLS with client certificates, and replication, migrate and
//! takeover run over it.

use std::time::Instant;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::Watchdogs;
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, text, vserver, PATIENCE};

#[test]
fn a_cluster_formed_by_init_and_join_replicates_and_migrates_over_mutual_tls() {
    if skip_unless_root("a_cluster_formed_by_init_and_join_replicates_and_migrates_over_mutual_tls") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _dogs = Watchdogs::start(&lab).unwrap();
    let name = vserver_lab::unique("wi");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "wi").unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    let agents = Agents::form(&lab, crate::FAST, Some(&cluster), |_| String::new()).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "log h1:\n{}", agents.log(1));
    for i in 0..3 {
        let status = agents.status(i).unwrap();
        let wire = &status["node"]["wire"];
        assert_eq!(wire["mode"], "mutual_tls", "h{i}: {wire}");
        assert_eq!(wire["plain_accepted"], false);
        assert!(wire["certificate_not_after_unix_ms"].as_u64().is_some() && wire["ca_not_after_unix_ms"].as_u64().is_some());
        // Each got the cluster file from h0 when it joined.
        assert!(status["replicas"].is_array());
    }
    let started = wait_for(PATIENCE, || vserver(&lab, 0, &[&name, "start"], false).status.success());
    assert!(started.is_some(), "log:\n{}", agents.log(0));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "replicated over the TLS tunnel: {}", text(&out));
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "migrated over TLS: {}\nh0:\n{}", text(&out), agents.log(0));
    assert!(lab.hosts[1].runs(&name) && !lab.hosts[0].runs(&name));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    // Plain HTTP on an agent's port gets no answer.
    let plain = vserver_lab::agents::http(&lab.client.netns, lab.hosts[0].addr, 7070, "GET", "/healthz", None, None);
    assert!(plain.is_err() || plain.unwrap().status != 200);
}
