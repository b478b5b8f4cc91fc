//! Scenarios for the client's probes against a real busybox httpd in a host.

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vserver_lab::{skip_unless_root, Host, Lab};

/// busybox httpd in the foreground on `port` in `host`, serving `body` as `/`.
fn serve(host: &Host, port: u16, body: &str) -> Child {
    let www = host.dir.join(format!("www{port}"));
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("index.html"), body).unwrap();
    host.command("busybox")
        .args(["httpd", "-f", "-p", &port.to_string(), "-h"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn client_gets_a_page_from_a_host_service() {
    if skip_unless_root("client_gets_a_page_from_a_host_service") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let host = &lab.hosts[0];
    let mut httpd = serve(host, 8080, "hello from host 0\n");
    let waited = lab.client.wait_http(host.addr, 8080, Instant::now() + Duration::from_secs(5));
    assert!(waited.is_some(), "httpd never answered");
    let body = lab.client.http_get(host.addr, 8080, Duration::from_secs(1)).unwrap();
    assert_eq!(body, "hello from host 0\n");
    assert!(lab.client.tcp_connect_ok(host.addr, 8080, Duration::from_secs(1)));
    let missing = lab.client.http_get_path(host.addr, 8080, "/missing", Duration::from_secs(1));
    assert!(missing.unwrap_err().to_string().contains("404"));
    drop(lab);
    // The service ran in the host's namespace: the lab killed it as it dropped.
    let status = httpd.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn nothing_answers_where_nothing_listens() {
    if skip_unless_root("nothing_answers_where_nothing_listens") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let host = &lab.hosts[0];
    assert!(!lab.client.tcp_connect_ok(host.addr, 8081, Duration::from_millis(500)));
    assert!(lab.client.http_get(lab.free_addr(3), 80, Duration::from_millis(300)).is_err());
    let begun = Instant::now();
    let waited = lab.client.wait_http(lab.free_addr(3), 80, begun + Duration::from_millis(300));
    assert!(waited.is_none());
    assert!(begun.elapsed() < Duration::from_secs(2), "wait_http overran its deadline");
}

#[test]
fn the_client_notices_a_new_address_within_a_few_milliseconds() {
    if skip_unless_root("the_client_notices_a_new_address_within_a_few_milliseconds") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let host = &lab.hosts[0];
    let addr = lab.free_addr(7);
    // The client asks for the address before it exists, as a benchmark does.
    assert!(!lab.client.tcp_connect_ok(addr, 8082, Duration::from_millis(100)));
    let mut httpd = serve(host, 8082, "late\n");
    assert!(lab.client.wait_http(host.addr, 8082, Instant::now() + Duration::from_secs(5)).is_some());
    host.netns.ip(["addr", "add", &format!("{addr}/24"), "dev", &host.dev]).unwrap();
    let waited = lab
        .client
        .wait_http(addr, 8082, Instant::now() + Duration::from_secs(5))
        .expect("the new address never answered");
    assert!(waited < Duration::from_millis(500), "took {waited:?}");
    let _ = httpd.kill();
    let _ = httpd.wait();
}

#[test]
fn a_delayed_link_holds_what_the_host_sends_and_carries_large_transfers() {
    if skip_unless_root("a_delayed_link_holds_what_the_host_sends_and_carries_large_transfers") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let host = &lab.hosts[1];
    // 512 KiB: TCP segments far larger than a frame cross the relay (the veths offload segmentation).
    let big = "0123456789abcdef".repeat(32 * 1024);
    let mut httpd = serve(host, 8082, &big);
    assert!(lab.client.wait_http(host.addr, 8082, Instant::now() + Duration::from_secs(5)).is_some());
    {
        let _delay = lab.delay(1, Duration::from_millis(200)).unwrap();
        let begun = Instant::now();
        let body = lab.client.http_get(host.addr, 8082, Duration::from_secs(20)).unwrap();
        // A connect and a request each wait for one answer from the host: at least two delays.
        assert!(begun.elapsed() >= Duration::from_millis(400), "answered in {:?}: no delay", begun.elapsed());
        assert_eq!(body.len(), big.len(), "the transfer through the relay lost or added bytes");
        assert!(body == big, "the transfer through the relay changed bytes");
        assert!(lab.client.netns.ping(lab.hosts[0].addr), "the other host's link is untouched");
    }
    let master = lab.switch().command("ip").args(["-o", "link", "show", &host.switch_port]).output().unwrap();
    assert!(String::from_utf8_lossy(&master.stdout).contains("master br0"), "the port is back on the bridge");
    assert!(lab.client.netns.ping(host.addr), "the host is reachable after the delay is removed");
    let _ = httpd.kill();
    let _ = httpd.wait();
}
