//! Scenarios: the host's watchdog (`vserver-watchdog`), driven over its socket as the agent drives it.
//! Petted, it leaves the vservers alone, also across a reconnect (an agent restarted in time); once the
//! petting stops for the armed timeout it sets their interfaces down and kills them, so that their address
//! answers nothing, not even ping; bad requests are refused with a reason. With its agent: an agent paused
//! past the fence timeout has its vservers killed by the watchdog, and once resumed restarts only those the
//! cluster confirms it still owns.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vserver_lab::{skip_unless_root, Lab};

use vserver_lab::agents::wait_for;

use crate::{give_to, owner, placed_on_h0, signal, text, vserver, PATIENCE};

/// The watchdog process, killed when dropped (also when the test fails).
struct Watchdog {
    child: Child,
    socket: PathBuf,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watchdog_bin() -> PathBuf {
    vserver_lab::faults::watchdog_bin().expect("vserver-watchdog beside vserver-agent")
}

fn start_watchdog(lab: &Lab, host: usize) -> Watchdog {
    let socket = lab.hosts[host].run_dir.join("watchdog.sock");
    let child = lab.hosts[host]
        .command(watchdog_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("vserver-watchdog runs");
    let dog = Watchdog { child, socket };
    let deadline = Instant::now() + PATIENCE;
    while UnixStream::connect(&dog.socket).is_err() {
        assert!(Instant::now() < deadline, "the watchdog never listened on {}", dog.socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    dog
}

/// A connection to the watchdog, as the agent holds one.
struct Conn(BufReader<UnixStream>);

impl Conn {
    fn open(socket: &Path) -> Self {
        Self(BufReader::new(UnixStream::connect(socket).expect("connect to the watchdog")))
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.0.get_mut(), "{line}").expect("send");
        let mut answer = String::new();
        self.0.read_line(&mut answer).expect("answer");
        answer.trim().to_string()
    }
}

/// Builds and starts (without an agent) a busybox vserver serving HTTP at its own address on host 0.
fn running_vserver(lab: &Lab, name: &str) -> Ipv4Addr {
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(name), "guarded").unwrap();
    let out = vserver(lab, 0, &[name, "start"], true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some(), "it serves");
    addr
}

#[test]
fn a_watchdog_no_longer_petted_kills_the_vservers_and_takes_their_address_down() {
    if skip_unless_root("a_watchdog_no_longer_petted_kills_the_vservers_and_takes_their_address_down") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let name = vserver_lab::unique("wd");
    let addr = running_vserver(&lab, &name);
    let dog = start_watchdog(&lab, 0);

    // Armed and petted for three timeouts, across a reconnect (an agent restarted in time): nothing happens.
    let mut conn = Conn::open(&dog.socket);
    assert_eq!(conn.ask("arm 500"), "ok armed 500");
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(conn.ask("pet"), "ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = Conn::open(&dog.socket);
    assert_eq!(conn.ask("pet"), "ok", "still armed after the first connection went away");
    assert!(conn.ask("status").starts_with("armed "));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok(), "still serving while petted");

    // The petting stops: fenced within the timeout (and some scheduling), the vserver dead, its address gone.
    let stopped = Instant::now();
    let fenced = loop {
        let status = conn.ask("status");
        if status.starts_with("fenced ") {
            break status;
        }
        assert!(stopped.elapsed() < PATIENCE, "not fenced after {:?}: {status}", stopped.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("fenced {:?} after the last pet: {fenced}", stopped.elapsed());
    assert!(fenced.ends_with(" 1"), "one vserver found and killed: {fenced}");
    let out = vserver(&lab, 0, &[&name, "running"], true);
    assert!(!out.status.success(), "the vserver is dead: {}", text(&out));
    assert!(!lab.client.netns.ping(addr), "nothing answers at {addr} any more, not even the kernel");
    // A pet no longer revives anything; re-arming guards what starts afterwards.
    assert!(conn.ask("pet").starts_with("error fenced at "));
    assert_eq!(conn.ask("arm 1000"), "ok armed 1000");
    assert_eq!(conn.ask("disarm"), "ok disarmed");
}

#[test]
fn the_watchdog_refuses_bad_requests_and_a_second_watchdog() {
    if skip_unless_root("the_watchdog_refuses_bad_requests_and_a_second_watchdog") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let dog = start_watchdog(&lab, 0);
    let mut conn = Conn::open(&dog.socket);
    assert_eq!(conn.ask("pet"), "error not armed");
    let short = conn.ask("arm 5");
    assert!(short.starts_with("error the timeout must be a number of ms from 100 to 600000"), "{short}");
    assert!(conn.ask("arm soon").starts_with("error the timeout"));
    assert!(conn.ask("bark").starts_with("error unknown request \"bark\""));
    assert_eq!(conn.ask("status"), "disarmed", "nothing above armed it");
    let second = lab.hosts[0].command(watchdog_bin()).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another watchdog already listens"), "{}", text(&second));
    assert_eq!(conn.ask("status"), "disarmed", "the first one is unaffected");
}

/// The owner and epoch of `name` in host `i`'s view of the ownership table.

#[test]
fn a_paused_agent_is_fenced_and_resumes_only_what_the_cluster_still_gives_it() {
    if skip_unless_root("a_paused_agent_is_fenced_and_resumes_only_what_the_cluster_still_gives_it") {
        return;
    }
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let lab = Lab::new(3).unwrap();
    let _dog = start_watchdog(&lab, 0);
    let (agents, name, addr) =
        placed_on_h0(&lab, "wf", "[fencing]\nwatchdog = true\ntimeout_ms = 600\n[takeover]\nenabled = false\n", true);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());

    // Paused past the fence timeout: the watchdog kills the vserver; nothing answers at its address.
    signal(&agents, 0, SIGSTOP);
    let fenced = wait_for(PATIENCE, || !lab.client.netns.ping(addr));
    signal(&agents, 0, SIGCONT);
    assert!(fenced.is_some(), "the watchdog fenced the paused agent's vserver");
    // Resumed: nobody took it, the cluster confirms h0 (a new epoch), and the agent starts it again.
    assert!(
        lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some(),
        "restarted after the confirmation; log:\n{}",
        agents.log(0)
    );
    // The confirmation is a write: a new epoch (which h0, a follower, applies a heartbeat later).
    let confirmed = wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|(o, e)| o == "h0" && e >= 2));
    assert!(confirmed.is_some(), "confirmed at a new epoch: {:?}", owner(&agents, 0, &name));

    // Paused again; meanwhile the cluster gives the vserver to h1. Resumed, h0 must not start it.
    signal(&agents, 0, SIGSTOP);
    let fenced = wait_for(PATIENCE, || !lab.client.netns.ping(addr));
    let moved = give_to(&agents, &name, "h1", 0);
    signal(&agents, 0, SIGCONT);
    assert!(fenced.is_some(), "fenced the second time");
    let moved = moved.expect("the cluster moved the ownership to h1 while h0 was paused");
    eprintln!("moved: {moved}");
    // Given up: its intent stopped, and its copy kept aside (it is no longer one of h0's vservers).
    let gave_up = wait_for(PATIENCE, || {
        agents.status(0).ok().is_some_and(|s| {
            s["vservers"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v["name"] != name.as_str() || v["intent"] == "stopped"))
        })
    });
    assert!(gave_up.is_some(), "h0 gives it up; log:\n{}", agents.log(0));
    std::thread::sleep(Duration::from_millis(1500));
    let out = vserver(&lab, 0, &[&name, "running"], true);
    assert!(!out.status.success(), "h0 did not start it again: {}", text(&out));
    assert!(!lab.client.netns.ping(addr));
}

#[test]
fn a_host_cut_off_from_the_majority_fences_itself_and_resumes_once_back() {
    if skip_unless_root("a_host_cut_off_from_the_majority_fences_itself_and_resumes_once_back") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, addr) =
        placed_on_h0(&lab, "wq", "[fencing]\nquorum = true\ntimeout_ms = 800\n[takeover]\nenabled = false\n", true);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());

    // Cut off: h0 hears no majority, and within the fence timeout stops its vserver itself.
    let port = lab.hosts[0].switch_port.clone();
    lab.switch().ip(["link", "set", &port, "down"]).unwrap();
    let running = || vserver(&lab, 0, &[&name, "running"], true).status.success();
    let fenced = wait_for(PATIENCE, || !running());
    lab.switch().ip(["link", "set", &port, "up"]).unwrap();
    assert!(fenced.is_some(), "h0 fenced itself; log:\n{}", agents.log(0));
    // Its keeper may kill it a moment before the agent, which fences at the lease's very end.
    let said = wait_for(PATIENCE, || agents.log(0).contains("lease lost"));
    assert!(said.is_some(), "{}", agents.log(0));
    // Back, and nobody took the vserver meanwhile: the cluster confirms h0, which starts it again.
    assert!(
        lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some(),
        "restarted once the majority confirmed; log:\n{}",
        agents.log(0)
    );
    let confirmed = wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|(o, e)| o == "h0" && e >= 2));
    assert!(confirmed.is_some(), "confirmed at a new epoch: {:?}", owner(&agents, 0, &name));
}

#[test]
fn a_host_without_its_lease_refuses_to_start_anything() {
    if skip_unless_root("a_host_without_its_lease_refuses_to_start_anything") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, _addr) =
        placed_on_h0(&lab, "wn", "[fencing]\nquorum = true\n[takeover]\nenabled = false\n", true);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());
    let out = vserver(&lab, 0, &[&name, "stop"], false);
    assert!(out.status.success(), "{}", text(&out));

    // Cut off from the majority, h0's lease ends: nothing may start there, through the agent or around it.
    let port = lab.hosts[0].switch_port.clone();
    lab.switch().ip(["link", "set", &port, "down"]).unwrap();
    let lost = wait_for(PATIENCE, || agents.log(0).contains("lease lost"));
    assert!(lost.is_some(), "{}", agents.log(0));
    let out = vserver(&lab, 0, &[&name, "start"], false);
    let said = text(&out);
    // Without the agent, the lease it last wrote for the keepers (which ends before the lease) is over too.
    let standalone = vserver(&lab, 0, &[&name, "start"], true);
    let running = vserver(&lab, 0, &[&name, "running"], true).status.success();
    lab.switch().ip(["link", "set", &port, "up"]).unwrap();
    assert_eq!(out.status.code(), Some(7), "refused through the agent: {said}");
    assert!(said.contains("lease"), "{said}");
    assert_eq!(standalone.status.code(), Some(7), "refused without the agent: {}", text(&standalone));
    assert!(text(&standalone).contains("lease is over"), "{}", text(&standalone));
    assert!(!running, "nothing started");
    // Back with the majority, it starts as asked.
    let started = wait_for(PATIENCE, || vserver(&lab, 0, &[&name, "start"], false).status.success());
    assert!(started.is_some(), "{}", agents.log(0));
}
