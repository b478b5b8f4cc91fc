//! Scenarios on the lab network: hosts reach each other and the client reaches them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use vserver_lab::bench::proc_stat;
use vserver_lab::{skip_unless_root, Lab, CLIENT_ADDR, MAX_HOSTS};

#[test]
fn two_hosts_ping_each_other() {
    if skip_unless_root("two_hosts_ping_each_other") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert_eq!(a.addr.to_string(), "198.18.0.10");
    assert_eq!(b.addr.to_string(), "198.18.0.11");
    assert!(a.netns.ping(b.addr), "host 0 cannot ping host 1");
    assert!(b.netns.ping(a.addr), "host 1 cannot ping host 0");
}

#[test]
fn client_reaches_every_host_and_hosts_reach_the_client() {
    if skip_unless_root("client_reaches_every_host_and_hosts_reach_the_client") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    for host in &lab.hosts {
        assert!(lab.client.netns.ping(host.addr), "client cannot ping host {}", host.index);
        assert!(host.netns.ping(CLIENT_ADDR), "host {} cannot ping the client", host.index);
    }
}

/// A lab of more hosts than the first block holds puts the rest in the second, 198.18.1.0/24, and every host
/// and the client reach each other across the two; a lab past the second is refused.
#[test]
fn hosts_past_the_first_block_reach_and_are_reached() {
    if skip_unless_root("hosts_past_the_first_block_reach_and_are_reached") {
        return;
    }
    let lab = Lab::new(92).unwrap();
    assert_eq!(lab.hosts[89].addr.to_string(), "198.18.0.99");
    assert_eq!(lab.hosts[90].addr.to_string(), "198.18.1.10");
    assert_eq!(lab.hosts[91].addr.to_string(), "198.18.1.11");
    let (first, past) = (&lab.hosts[0], &lab.hosts[91]);
    assert!(first.netns.ping(past.addr), "h0 cannot ping h91");
    assert!(past.netns.ping(first.addr), "h91 cannot ping h0");
    assert!(lab.client.netns.ping(past.addr), "the client cannot ping h91");
    assert!(past.netns.ping(CLIENT_ADDR), "h91 cannot ping the client");
    drop(lab);
    let refused = Lab::new(MAX_HOSTS + 1).err().expect("a lab past the second block is refused").to_string();
    assert!(refused.contains(&format!("at most {MAX_HOSTS} hosts")), "{refused}");
}

/// The switch forwards frames without putting them through the machine's IP firewall (bridge netfilter, on by
/// default in a new namespace where the kernel has it): a real switch does not, and in the lab the sender pays.
#[test]
fn the_switch_forwards_frames_without_the_machines_firewall() {
    if skip_unless_root("the_switch_forwards_frames_without_the_machines_firewall") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let read = |family: &str| {
        let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
        lab.switch().run(move || std::fs::read_to_string(path).ok()).unwrap()
    };
    for family in ["iptables", "ip6tables", "arptables"] {
        match read(family) {
            Some(value) => assert_eq!(value.trim(), "0", "bridge-nf-call-{family} in the switch"),
            None => eprintln!("this kernel has no bridge netfilter: nothing to turn off"),
        }
    }
    assert!(lab.hosts[0].netns.ping(lab.hosts[1].addr), "the hosts still reach each other");
}

/// With its ports receiving on kernel threads of their own, the switch still carries datagrams and streams
/// between hosts, and it is those threads that do the receiving: they take CPU while one host sends datagrams
/// to another, which the sender would pay for otherwise.
#[test]
fn the_switch_ports_receive_on_kernel_threads_of_their_own() {
    if skip_unless_root("the_switch_ports_receive_on_kernel_threads_of_their_own") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let threads = lab.receive_on_kernel_threads().unwrap();
    assert_eq!(threads.len(), 3, "one kernel thread for each port (two hosts and the client): {threads:?}");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(a.netns.ping(b.addr), "the hosts still reach each other");

    let listener = b.netns.run(|| TcpListener::bind((b.addr, 0))).unwrap().unwrap();
    let to = listener.local_addr().unwrap();
    let mut stream = a.netns.run(|| TcpStream::connect(to)).unwrap().unwrap();
    stream.write_all(b"over the switch").unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let mut got = [0u8; 15];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over the switch", "a stream crosses the switch");

    let receiver = b.netns.run(|| UdpSocket::bind((b.addr, 0))).unwrap().unwrap();
    let sender = a.netns.run(|| UdpSocket::bind((a.addr, 0))).unwrap().unwrap();
    let to = receiver.local_addr().unwrap();
    let ticks = || -> u64 { threads.iter().filter_map(|pid| proc_stat(*pid).ok()).map(|(cpu, _)| cpu).sum() };
    let before = ticks();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ticks() == before {
        assert!(Instant::now() < deadline, "the switch's kernel threads took no CPU while datagrams crossed it");
        for _ in 0..10_000 {
            sender.send_to(&[0u8; 64], to).unwrap();
        }
    }
    receiver.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(receiver.recv(&mut buf).unwrap(), 64, "a datagram crosses the switch");
}

#[test]
fn a_host_whose_switch_port_is_down_is_cut_off() {
    if skip_unless_root("a_host_whose_switch_port_is_down_is_cut_off") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let cut = &lab.hosts[1];
    lab.switch().ip(["link", "set", &cut.switch_port, "down"]).unwrap();
    assert!(!lab.client.netns.ping(cut.addr), "a cut-off host still answers");
    assert!(lab.client.netns.ping(lab.hosts[0].addr), "the other host is cut off too");
    lab.switch().ip(["link", "set", &cut.switch_port, "up"]).unwrap();
    assert!(lab.client.netns.ping(cut.addr), "the host stays cut off after the port is back up");
}

#[test]
fn a_lossy_link_drops_frames_each_way_until_the_loss_is_removed() {
    if skip_unless_root("a_lossy_link_drops_frames_each_way_until_the_loss_is_removed") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    lab.set_loss(1, 100).unwrap();
    assert!(!lab.client.netns.ping(lab.hosts[1].addr), "nothing crosses a link that loses everything");
    assert!(lab.client.netns.ping(lab.hosts[0].addr), "the other host's link is untouched");
    lab.set_loss(1, 50).unwrap();
    lab.set_loss(1, 0).unwrap();
    assert!(lab.client.netns.ping(lab.hosts[1].addr), "the loss is gone");
    assert!(lab.set_loss(1, 101).is_err());
}

#[test]
fn host_commands_run_in_the_host_with_its_directories() {
    if skip_unless_root("host_commands_run_in_the_host_with_its_directories") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let host = &lab.hosts[1];
    let out = host
        .command("sh")
        .args([
            "-c",
            "ip -4 -o addr show dev eth0; echo \"$VSERVER_VSERVERS_DIR|$VSERVER_CONF_DIR|$VSERVER_RUN_DIR|$VSERVER_CGROUP_PARENT\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("198.18.0.11/24"), "not in host 1's namespace: {text}");
    let expected = format!(
        "{}|{}|{}|{}",
        host.vservers_dir.display(),
        host.conf_dir.display(),
        host.run_dir.display(),
        host.cgroup_parent
    );
    assert!(text.contains(&expected), "environment {text:?} lacks {expected:?}");
    for dir in [&host.vservers_dir, &host.conf_dir, &host.run_dir] {
        assert!(Path::new(dir).is_dir(), "{} missing", dir.display());
        assert!(dir.starts_with(lab.dir()));
    }
    assert_ne!(lab.hosts[0].cgroup_parent, host.cgroup_parent);
    assert_ne!(lab.hosts[0].vservers_dir, host.vservers_dir);
    assert_eq!(lab.free_addr(0).to_string(), "198.18.0.100");
    assert_eq!(lab.free_addr(154).to_string(), "198.18.0.254");
}
