//! Scenarios: a vserver's addresses (IPROOT) on a macvlan in its own network namespace.

use std::time::{Duration, Instant};

use crate::fixture::{text, Fixture};

#[test]
fn service_on_any_address_answers_at_iproot_only() {
    let Some(f) = Fixture::new("service_on_any_address_answers_at_iproot_only", "") else { return };
    f.add_httpd();
    f.start();
    f.wait_http();
    let body = f.lab.client.http_get(f.addr, 80, Duration::from_secs(2)).unwrap();
    assert!(body.contains(&f.name), "the vserver's own page: {body}");
    // busybox httpd bound 0.0.0.0 inside; the host's own address does not serve it.
    let host_addr = f.host().addr;
    assert!(
        !f.lab.client.tcp_connect_ok(host_addr, 80, Duration::from_millis(500)),
        "nothing answers at the host's address"
    );
    // Inside, the vserver sees its loopback and its one interface carrying IPROOT, nothing of the host's.
    let addrs = f.exec(&["ip", "-o", "addr"]);
    assert!(addrs.contains(&format!("{}/24", f.addr)), "{addrs}");
    assert!(!addrs.contains(&format!("{host_addr}/")), "the host's address is not visible inside: {addrs}");
    let links = f.exec(&["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");
}

#[test]
fn several_addresses_with_netmasks_all_answer() {
    let Some(f) = Fixture::new("several_addresses_with_netmasks_all_answer", "") else { return };
    let second = f.lab.free_addr(1);
    let conf = std::fs::read_to_string(f.conf()).unwrap().replace(
        &format!("IPROOT=\"eth0:{}/24\"", f.addr),
        &format!("IPROOTDEV=eth0\nIPROOT=\"eth0:{}/255.255.255.0 {second}\"", f.addr),
    );
    std::fs::write(f.conf(), conf).unwrap();
    f.add_httpd();
    f.start();
    f.wait_http();
    let t = Instant::now() + Duration::from_secs(5);
    assert!(f.lab.client.wait_http(second, 80, t).is_some(), "the second address answers too");
    let status = f.vserver(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains(&f.addr.to_string()) && out.contains(&second.to_string()), "{out}");
}

#[test]
fn a_gratuitous_arp_updates_the_clients_neighbour_table() {
    let Some(f) = Fixture::new("a_gratuitous_arp_updates_the_clients_neighbour_table", "") else { return };
    let addr = f.addr.to_string();
    // The client believes the address lives at some old MAC (as after a takeover).
    let old = "02:00:00:00:00:01";
    let st = f
        .lab
        .client
        .command("ip")
        .args(["neigh", "replace", &addr, "lladdr", old, "dev", "eth0", "nud", "stale"])
        .status()
        .unwrap();
    assert!(st.success());
    f.start();
    let links = f.exec(&["ip", "-o", "link", "show", "eth0"]);
    let mac = links.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    // No traffic from the client: only an announcement can have changed its table.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = f.lab.client.command("ip").args(["neigh", "show", &addr]).output().unwrap();
        let neigh = String::from_utf8_lossy(&out.stdout).to_string();
        if neigh.contains(&mac) {
            break;
        }
        assert!(Instant::now() < deadline, "client still has {neigh:?}, expected {mac}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes the client believe the IPv6 address `addr` lives at some old MAC (as after a takeover): a stale
/// entry, which only an advertisement with the override flag replaces while the client sends nothing.
fn stale_ipv6_neighbour(f: &Fixture, addr: &str) {
    let old = "02:00:00:00:00:01";
    let args = ["-6", "neigh", "replace", addr, "lladdr", old, "dev", "eth0", "nud", "stale"];
    assert!(f.lab.client.command("ip").args(args).status().unwrap().success());
}

/// Waits until the client's neighbour entry for the IPv6 address `addr` holds `mac`; panics after a generous
/// deadline.
fn wait_ipv6_neighbour(f: &Fixture, addr: &str, mac: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = f.lab.client.command("ip").args(["-6", "neigh", "show", addr, "dev", "eth0"]).output().unwrap();
        let neigh = String::from_utf8_lossy(&out.stdout).to_string();
        if neigh.contains(mac) {
            return;
        }
        assert!(Instant::now() < deadline, "client still has {neigh:?} for {addr}, expected {mac}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unsolicited_neighbour_advertisement_updates_the_clients_ipv6_neighbour_table() {
    let Some(f) = Fixture::new("an_unsolicited_neighbour_advertisement_updates_the_clients_ipv6_neighbour_table", "")
    else {
        return;
    };
    let v6 = format!("fd00:198:18::{}", f.addr.octets()[3]);
    let conf = std::fs::read_to_string(f.conf())
        .unwrap()
        .replace(&format!("IPROOT=\"eth0:{}/24\"", f.addr), &format!("IPROOT=\"eth0:{}/24 eth0:{v6}/64\"", f.addr));
    std::fs::write(f.conf(), conf).unwrap();
    stale_ipv6_neighbour(&f, &v6);
    f.start();
    let addrs = f.exec(&["ip", "-o", "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("{v6}/64")), "the vserver holds {v6}: {addrs}");
    let links = f.exec(&["ip", "-o", "link", "show", "eth0"]);
    let mac = links.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    wait_ipv6_neighbour(&f, &v6, &mac);
    // Once more on command.
    stale_ipv6_neighbour(&f, &v6);
    let out = f.vserver(&["announce"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("eth0:{v6}")), "{}", text(&out));
    wait_ipv6_neighbour(&f, &v6, &mac);
}

#[test]
fn empty_iproot_gives_a_private_loopback_and_hostnet_is_an_explicit_opt_in() {
    let Some(f) = Fixture::new("empty_iproot_gives_a_private_loopback_and_hostnet_is_an_explicit_opt_in", "") else {
        return;
    };
    let conf =
        std::fs::read_to_string(f.conf()).unwrap().replace(&format!("IPROOT=\"eth0:{}/24\"", f.addr), "IPROOT=\"\"");
    std::fs::write(f.conf(), &conf).unwrap();
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("S_UNSAFE"), "no warning by default: {}", text(&out));
    let links = f.exec(&["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "only a loopback: {links}");
    assert!(links.contains("lo:"), "{links}");
    let addrs = f.exec(&["ip", "-o", "addr"]);
    assert!(!addrs.contains(&format!("{}/", f.host().addr)), "the host's address is not the vserver's: {addrs}");
    // A service on the host's loopback is out of reach (the agent's API would be one).
    let listener = f.host().command("busybox").args(["nc", "-l", "-p", "18391", "-s", "127.0.0.1"]).spawn().unwrap();
    let _kill = vserver_lab::KillOnDrop(listener);
    let reach = f.vserver(&["exec", "sh", "-c", "echo x | nc -w 1 127.0.0.1 18391"]);
    assert!(!reach.status.success(), "the host's loopback is not reachable: {}", text(&reach));
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));

    // The guide's meaning, the host's own network, only when asked, and loudly.
    std::fs::write(f.conf(), format!("{conf}S_UNSAFE=hostnet\n")).unwrap();
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("S_UNSAFE hostnet") && said.contains("host's network namespace"), "warned: {said}");
    let addrs = f.exec(&["ip", "-o", "addr"]);
    assert!(addrs.contains(&format!("{}/", f.host().addr)), "the host's address is the vserver's: {addrs}");
    let status = f.vserver(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("host network"));
}

#[test]
fn a_missing_device_fails_the_start_and_leaves_nothing() {
    let Some(f) = Fixture::new("a_missing_device_fails_the_start_and_leaves_nothing", "") else { return };
    let conf = std::fs::read_to_string(f.conf()).unwrap().replace("IPROOT=\"eth0:", "IPROOT=\"eth9:");
    std::fs::write(f.conf(), conf).unwrap();
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("eth9"), "the error names the device: {}", text(&out));
    assert!(f.cgroup_procs().is_empty(), "no process left");
    let running = f.vserver(&["running"]);
    assert_eq!(running.status.code(), Some(3));
    assert!(!f.host().run_dir.join(format!("{}.json", f.name)).exists(), "no run state left");
}
