//! This host's vservers under the agent. (Being written: see the interface below.)

use std::path::Path;
use std::sync::Arc;

use isolate::VserverName;

use super::config::AgentConfig;
use super::model::{VserverStatus, VserverSummary};
use super::Agent;

/// A lifecycle request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No such vserver on this host (HTTP 404).
    #[error("vserver {0} is not configured on this host")]
    NotFound(String),
    /// Start of a running vserver (HTTP 409).
    #[error("vserver {0} is already running; nothing changed")]
    AlreadyRunning(String),
    /// Stop of a stopped vserver (HTTP 409).
    #[error("vserver {0} is not running; nothing changed")]
    NotRunning(String),
    /// The `vserver` command failed (HTTP 500); the message is its own.
    #[error("vserver {name}: {message}")]
    Failed {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// The intents could not be kept on disk (HTTP 500).
    #[error("cannot keep the intents in {path}: {source}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// This host's vservers, their intents and restart accounting.
pub struct Supervisor {}

impl Supervisor {
    /// Loads the intents kept on disk.
    pub fn new(_config: &AgentConfig) -> Result<Self, SupervisorError> {
        todo!()
    }
    /// Every vserver with a conf file on this host.
    pub async fn list(&self) -> Vec<VserverStatus> {
        todo!()
    }
    /// One vserver.
    pub async fn get(&self, _name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        todo!()
    }
    /// Records the intent "running", then starts it.
    pub async fn start(&self, _name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        todo!()
    }
    /// Records the intent "stopped", then stops it.
    pub async fn stop(&self, _name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        todo!()
    }
    /// Stops then starts it; the intent ends "running".
    pub async fn restart(&self, _name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        todo!()
    }
    /// Cheap summaries for heartbeats (as of the last check).
    pub fn summaries(&self) -> Vec<VserverSummary> {
        todo!()
    }
}

/// Takes the next incarnation number, kept in `state_dir`.
pub fn next_incarnation(_state_dir: &Path) -> std::io::Result<u64> {
    todo!()
}

/// Writes where the agent listens, for the `vserver` command (`RUN_DIR/agent.json`).
pub fn announce(_agent: &Agent) -> std::io::Result<()> {
    todo!()
}

/// Removes what [`announce`] wrote.
pub fn withdraw(_agent: &Agent) {}

/// Checks the vservers at every `restart.check_interval_ms`: adopts running ones, restarts those meant to
/// run that died, with backoff, up to `restart.max_restarts`. Runs until aborted.
pub async fn run(_agent: Arc<Agent>) {
    todo!()
}
