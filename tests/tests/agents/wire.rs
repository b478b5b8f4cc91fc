//! The cluster's wire as the README sets it up: `vserver-agent init` on h0, `vserver-agent join TOKEN` on the
//! others, and nothing else; the agents then speak TLS with client certificates, and replication, migrate and
//! takeover run over it.

use std::time::Instant;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::Watchdogs;
use vserver_lab::{skip_unless_root, Lab};

use crate::{all_alive, text, vserver, PATIENCE};

/// A busybox vserver built on h0 (standbys h1, h2), and the cluster formed around it as the README forms one
/// (init on h0, join on the others); every host sees the others alive.
fn formed_with_one_on_h0<'lab>(lab: &'lab Lab, prefix: &str) -> (Agents<'lab>, String, std::net::Ipv4Addr) {
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), prefix).unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    let agents = Agents::form(lab, crate::FAST, Some(&cluster), |_| String::new()).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some(), "log h1:\n{}", agents.log(1));
    (agents, name, addr)
}

#[test]
fn a_cluster_formed_by_init_and_join_replicates_and_migrates_over_mutual_tls() {
    if skip_unless_root("a_cluster_formed_by_init_and_join_replicates_and_migrates_over_mutual_tls") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _dogs = Watchdogs::start(&lab).unwrap();
    let (agents, name, addr) = formed_with_one_on_h0(&lab, "wi");
    for i in 0..3 {
        let status = agents.status(i).unwrap();
        let wire = &status["node"]["wire"];
        assert_eq!(wire["mode"], "mutual_tls", "h{i}: {wire}");
        assert_eq!(wire["plain_accepted"], false);
        assert!(
            wire["certificate_not_after_unix_ms"].as_u64().is_some() && wire["ca_not_after_unix_ms"].as_u64().is_some()
        );
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

/// What a replay must not change: each live host's event log (but the crashed host's own fences), owners and
/// epochs, and where the vserver runs.
fn state(lab: &Lab, agents: &Agents, hosts: &[usize], name: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for &i in hosts {
        let events = agents.get(i, i, "/v1/events").unwrap().json().unwrap();
        let status = agents.status(i).unwrap();
        // The crashed host logs its own fences once it can commit again, whenever that is: not counted.
        let counted = events.as_array().into_iter().flatten().filter(|e| e["kind"] != "fenced").count();
        seen.push(format!(
            "h{i}: {counted} events, owners {}, runs {}",
            status["ownership"]["owners"],
            lab.hosts[i].runs(name)
        ));
    }
    seen
}

/// A sniffer on the switch during a whole run (the cluster formed by init and join, a start, a sync, a
/// migrate, a crash and its takeover, the crashed host's return) sees neither the cluster secret (raw, base64
/// or hex) nor anything that replays: every captured TCP stream and UDP datagram to an agent, sent again from
/// its sender's own address, is refused, and nothing changes.
#[test]
fn a_sniffer_on_the_cluster_network_finds_no_secret_and_nothing_it_replays_is_taken() {
    if skip_unless_root("a_sniffer_on_the_cluster_network_finds_no_secret_and_nothing_it_replays_is_taken") {
        return;
    }
    use base64::Engine;
    use std::io::{Read, Write};
    use vserver_lab::capture::{self, Capture};
    let lab = Lab::new(3).unwrap();
    let capture = Capture::start(lab.switch()).unwrap();
    let mut dogs = Watchdogs::start(&lab).unwrap();
    let (mut agents, name, _addr) = formed_with_one_on_h0(&lab, "ws");
    assert!(wait_for(PATIENCE, || vserver(&lab, 0, &[&name, "start"], false).status.success()).is_some());
    assert!(vserver(&lab, 0, &[&name, "sync"], false).status.success());
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}", text(&out));
    // h1 crashes: taken over by another host.
    agents.kill9(1);
    dogs.kill9(1);
    lab.hosts[1].kill_vservers();
    lab.set_link(1, false).unwrap();
    let moved = wait_for(std::time::Duration::from_secs(30), || lab.hosts[0].runs(&name) || lab.hosts[2].runs(&name));
    assert!(moved.is_some(), "taken over; h0:\n{}", agents.log(0));
    lab.set_link(1, true).unwrap();
    dogs.spawn(1).unwrap();
    agents.spawn(1).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    let frames = capture.finish();

    // No secret in any frame, in any of its usual spellings.
    let secret = agents.secret().to_string();
    let spellings = [
        secret.clone().into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(&secret).into_bytes(),
        hex_of(secret.as_bytes()).into_bytes(),
    ];
    let packets = capture::packets(&frames);
    let to_agents: Vec<_> = packets.iter().filter(|p| p.dst.port() == vserver_lab::agents::AGENT_PORT).collect();
    assert!(to_agents.len() > 200, "the capture saw the cluster's traffic ({} packets to agents)", to_agents.len());
    for f in &frames {
        for s in &spellings {
            assert!(!capture::contains(f, s), "a frame holds the secret: {:?}", String::from_utf8_lossy(f));
        }
    }

    // Replays, once the cluster has settled (the returning host logs its fence and keeps its copy aside when it
    // can commit again): the same state twice, 2 s apart.
    let live = [0, 1, 2];
    let mut before = state(&lab, &agents, &live, &name);
    let settled = wait_for(std::time::Duration::from_secs(60), || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = state(&lab, &agents, &live, &name);
        std::mem::replace(&mut before, now) == before
    });
    assert!(settled.is_some(), "the cluster settled: {before:?}");
    let host_of = |ip: std::net::Ipv4Addr| lab.hosts.iter().position(|h| h.addr == ip);
    let streams: Vec<_> = capture::tcp_streams(&packets)
        .into_iter()
        .filter(|((_, dst), _)| dst.port() == vserver_lab::agents::AGENT_PORT)
        .collect();
    assert!(streams.len() >= 6, "streams between the agents: {}", streams.len());
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .filter_map(|((src, dst), bytes)| {
                let enter = lab.hosts[host_of(*src.ip())?].netns.enterer();
                Some(scope.spawn(move || {
                    enter().unwrap();
                    let Ok(mut conn) =
                        std::net::TcpStream::connect_timeout(&(*dst).into(), std::time::Duration::from_secs(2))
                    else {
                        return String::new();
                    };
                    conn.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
                    let _ = conn.write_all(bytes);
                    let mut back = Vec::new();
                    let _ = conn.read_to_end(&mut back);
                    String::from_utf8_lossy(&back).to_string()
                }))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    for a in &answers {
        assert!(!a.contains("HTTP/1.1 2") && !a.contains("HTTP/1.1 101"), "a replayed stream was answered: {a:?}");
    }
    let datagrams: Vec<_> =
        packets.iter().filter(|p| p.tcp_seq.is_none() && p.dst.port() == vserver_lab::agents::AGENT_PORT).collect();
    assert!(datagrams.len() > 100, "beacons captured: {}", datagrams.len());
    for d in &datagrams {
        let Some(k) = host_of(*d.src.ip()) else { continue };
        lab.hosts[k]
            .netns
            .run(|| {
                let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                let _ = socket.send_to(&d.payload, d.dst);
            })
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = state(&lab, &agents, &live, &name);
    let events = agents.get(0, 0, "/v1/events").unwrap().body;
    assert_eq!(after, before, "a replay changed something; events:\n{events}\nh0:\n{}", agents.log(0));
    eprintln!(
        "{} frames, {} packets to agents, {} TCP streams and {} datagrams replayed",
        frames.len(),
        to_agents.len(),
        streams.len(),
        datagrams.len()
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A host certificate renewed and the cluster CA rotated, host by host with the agents restarted after each
/// step, as the runbook says: the vserver never stops nor moves, and at the end only the new CA is trusted.
#[test]
fn the_cluster_ca_is_rotated_host_by_host_without_a_stop() {
    if skip_unless_root("the_cluster_ca_is_rotated_host_by_host_without_a_stop") {
        return;
    }
    use crate::upgrade::{agent_cmd, restart};
    let lab = Lab::new(3).unwrap();
    let _dogs = Watchdogs::start(&lab).unwrap();
    let (mut agents, name, _addr) = formed_with_one_on_h0(&lab, "wr");
    assert!(wait_for(PATIENCE, || vserver(&lab, 0, &[&name, "start"], false).status.success()).is_some());
    assert!(vserver(&lab, 0, &[&name, "sync"], false).status.success());
    assert!(wait_for(PATIENCE, || crate::owner(&agents, 1, &name).is_some_and(|o| o.0 == "h0")).is_some());
    let epoch = crate::owner(&agents, 1, &name).unwrap().1;
    let ca_of = |i: usize| std::fs::read_to_string(lab.hosts[i].dir.join("pki/ca.pem")).unwrap();
    let first_ca = ca_of(0);
    let sampler = vserver_lab::faults::Sampler::start(&lab, &name);

    // A renewal alone first.
    agent_cmd(&lab, &agents, 2, &["renew"]);
    restart(&mut agents, 2);
    // The rotation.
    agent_cmd(&lab, &agents, 0, &["ca", "new"]);
    agents.use_tls(Some(ca_of(0)));
    restart(&mut agents, 0);
    for i in [1, 2] {
        agent_cmd(&lab, &agents, i, &["ca", "sync", "--from", "h0"]);
        restart(&mut agents, i);
    }
    for i in [0, 1, 2] {
        agent_cmd(&lab, &agents, i, &["renew"]);
        restart(&mut agents, i);
    }
    let new_ca = ca_of(0).split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().to_string();
    agents.use_tls(Some(new_ca.clone()));
    for i in [0, 1, 2] {
        agent_cmd(&lab, &agents, i, &["ca", "retire"]);
        restart(&mut agents, i);
    }
    for i in 0..3 {
        assert_eq!(ca_of(i), new_ca, "h{i} trusts the new CA alone");
        assert_eq!(agents.status(i).unwrap()["node"]["wire"]["mode"], "mutual_tls");
    }
    assert_ne!(new_ca, first_ca);
    let seen = sampler.finish();
    assert_eq!(seen.changes.len(), 1, "it never stopped nor moved: {:?}\nh0:\n{}", seen.changes, agents.log(0));
    assert_eq!(crate::owner(&agents, 1, &name), Some(("h0".to_string(), epoch)));
    for i in 0..3 {
        assert!(!agents.log(i).contains("lease lost"), "h{i} never fenced:\n{}", agents.log(i));
    }
    assert!(vserver(&lab, 0, &[&name, "sync"], false).status.success(), "replication on the new certificates");
}
