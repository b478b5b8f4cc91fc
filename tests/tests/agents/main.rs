//! Agents in a lab of network namespaces, for real: heartbeats and the failure detector under `kill -9`
//! and a link set down, the HTTP API and its security, the supervision of a host's vservers, replication,
//! migrate, and the host's watchdog.
//! Root only; each scenario builds and removes its own lab (`cargo nextest run -E 'binary(agents)'`).

mod api;
mod heartbeats;
mod migrate;
mod ownership;
mod replication;
mod supervision;
mod watchdog;

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
