//! Agents in a lab of network namespaces, for real: heartbeats and the failure detector under `kill -9`
//! and a link set down, the HTTP API, its security and its schema, the supervision of a host's vservers,
//! replication, migrate, the host's watchdog, alerts, the logs as the journal keeps them, and the status page as
//! a browser renders it.
//! Root only; each scenario builds and removes its own lab (`cargo nextest run -E 'binary(agents)'`).

mod alerts;
mod announce;
mod anyhost;
mod api;
mod block;
mod conf_fs;
mod continuous;
mod evacuate;
mod heartbeats;
mod history;
mod hosts;
mod hub;
mod logs;
mod migrate;
mod ownership;
mod page;
mod placements;
mod replication;
mod schema;
mod shared;
mod supervision;
mod takeover;
mod takeover_decisions;
pub(crate) mod upgrade;
mod watchdog;
mod wire;
mod writer;

use std::time::Duration;

/// Fast timing for tests: the detector's logic is the same at any scale.
pub const FAST: vserver_lab::agents::Timing =
    vserver_lab::agents::Timing { interval_ms: 100, suspect_ms: 300, dead_ms: 600 };

/// Generous bound for anything the tests wait for (never a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(15);

/// `vserver ARGS` on host `host` (through its agent unless `local`), with a short stop timeout.
pub fn vserver(lab: &vserver_lab::Lab, host: usize, args: &[&str], local: bool) -> std::process::Output {
    let bin = vserver_lab::vserver_bin().expect("vserver binary");
    let mut cmd = lab.hosts[host].command(bin);
    cmd.args(args).env("VSERVER_STOP_TIMEOUT", "2");
    if local {
        cmd.env("VSERVER_NO_AGENT", "1");
    }
    cmd.output().unwrap()
}

/// A command's exit code, stdout and stderr, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every agent of the first `hosts` hosts sees every other alive.
pub fn all_alive(agents: &vserver_lab::agents::Agents, hosts: usize) -> bool {
    (0..hosts).all(|o| (0..hosts).filter(|p| *p != o).all(|p| agents.peer_state(o, p).as_deref() == Some("alive")))
}

/// A busybox vserver built on h0 of a 3-host lab, serving HTTP (`marker`) at its own address, placed on h0
/// with standbys h1 and h2, and the agents started with `extra` in their agent.toml; when `start`, it is
/// started through h0's agent and answers. Its name begins with `prefix`.
pub fn placed_on_h0<'lab>(
    lab: &'lab vserver_lab::Lab,
    prefix: &str,
    extra: &str,
    start: bool,
) -> (vserver_lab::agents::Agents<'lab>, String, std::net::Ipv4Addr) {
    placed_on_h0_timed(lab, prefix, extra, start, FAST)
}

/// [`placed_on_h0`] with the agents' heartbeat timing `timing`.
pub fn placed_on_h0_timed<'lab>(
    lab: &'lab vserver_lab::Lab,
    prefix: &str,
    extra: &str,
    start: bool,
    timing: vserver_lab::agents::Timing,
) -> (vserver_lab::agents::Agents<'lab>, String, std::net::Ipv4Addr) {
    use vserver_lab::agents::{wait_for, Agents};
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), prefix).unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    let agents = Agents::start_full(lab, timing, Some(&cluster), extra).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    if start {
        let out = vserver(lab, 0, &[&name, "start"], false);
        assert!(out.status.success(), "{}", text(&out));
        assert!(lab.client.wait_http(addr, 80, std::time::Instant::now() + PATIENCE).is_some());
    }
    (agents, name, addr)
}

/// Gives `name` to host `to` in the cluster's ownership table, as a takeover would: a compare-and-set
/// proposed to the leader (found from any host but `avoid`, which may be paused). The leader's answer.
pub fn give_to(agents: &vserver_lab::agents::Agents, name: &str, to: &str, avoid: usize) -> Option<String> {
    for _ in 0..50 {
        let asked = (0..3).find(|&i| i != avoid)?;
        let leader =
            agents.status(asked).ok().and_then(|s| s["ownership"]["raft"]["leader"].as_str().map(str::to_string));
        if let Some(l) = leader.and_then(|l| l.trim_start_matches('h').parse::<usize>().ok()).filter(|&l| l != avoid) {
            let epoch = agents.status(l).ok()?["ownership"]["owners"][name]["epoch"].as_u64().unwrap_or(0);
            let body = format!(r#"{{"op":"set_owner","vserver":"{name}","owner":"{to}","expected_epoch":{epoch}}}"#);
            if let Ok(reply) = agents.request(l, l, "POST", "/v1/raft/propose", Some(agents.secret()), Some(&body)) {
                if reply.status == 200 && reply.body.contains("\"applied\"") {
                    return Some(reply.body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Sends `sig` to host `i`'s agent.
pub fn signal(agents: &vserver_lab::agents::Agents, i: usize, sig: nix::sys::signal::Signal) {
    let pid = agents.pid(i).expect("the agent runs") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal the agent");
}

/// The owner and epoch of `name` in host `i`'s copy of the ownership table.
pub fn owner(agents: &vserver_lab::agents::Agents, i: usize, name: &str) -> Option<(String, u64)> {
    let status = agents.status(i).ok()?;
    let entry = &status["ownership"]["owners"][name];
    Some((entry["owner"].as_str()?.to_string(), entry["epoch"].as_u64()?))
}
