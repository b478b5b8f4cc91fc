//! Scenarios on the lab network: hosts reach each other and the client reaches them.

use std::path::Path;

use vserver_lab::{skip_unless_root, Lab, CLIENT_ADDR};

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
