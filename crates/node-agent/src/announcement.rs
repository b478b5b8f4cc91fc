//! How the agent of a host announces itself to the commands run on that host: the file
//! `RUN_DIR/agent.json`, written by the agent as it starts and removed as it stops, says where it listens (its
//! local Unix socket and its URL), its process and where its secret is. The `vserver` command reads it to go
//! through the agent ([`crate::agent_client`]). `VSERVER_NO_AGENT=1` makes the command act alone; the agent
//! sets it on the commands it runs itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable that makes the `vserver` command act locally, without the agent.
pub const NO_AGENT_ENV: &str = "VSERVER_NO_AGENT";

/// What `RUN_DIR/agent.json` holds: where this host's agent listens and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Base URL of its HTTP API, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// Its process id: the file is trusted only while this process lives.
    pub pid: i32,
    /// Its node name.
    pub node: String,
    /// The file holding the cluster secret (the bearer token).
    pub secret_file: PathBuf,
    /// The process's start time (clock ticks since boot), so a recycled pid is not taken for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// Its local Unix socket (plain HTTP, root only), preferred over `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl Announcement {
    /// Where the agent of a host announces itself.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("agent.json")
    }

    /// Whether the announcing process still runs (same pid and, when recorded, same start time).
    pub fn alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None) {
            Ok(()) | Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        };
        // A process whose start time cannot be read is given the benefit of the doubt (kill said it exists).
        let same_process = match (self.start_ticks, isolate::state::process_start_ticks(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        };
        exists && same_process
    }
}
