//! What this host's supervisor asks of the cluster (see [`super::supervisor::Cluster`]), answered from the
//! agent's parts: the ownership table, the lease and the event log.

use std::sync::Arc;

use failover::events::Relocations;
use failover::ownership::Ownership;
use isolate::VserverName;

use super::events::EventLog;
use super::lease::Lease;

/// The supervisor's view of the cluster.
pub struct ClusterLink {
    /// This host's member of the ownership table.
    pub ownership: Ownership,
    /// This host's lease.
    pub lease: Arc<Lease>,
    /// The cluster's event log.
    pub events: EventLog,
    /// The failure window (`failures.window_secs`), in ms: relocations older than it are forgotten.
    pub window_ms: u64,
}

impl super::supervisor::Cluster for ClusterLink {
    fn owner(&self, name: &VserverName) -> Option<String> {
        self.ownership.owner(name.as_str()).map(|(owner, _)| owner)
    }

    fn may_run(&self) -> bool {
        self.lease.may_start()
    }

    fn relocations(&self, name: &VserverName) -> Relocations {
        failover::events::relocations(&self.ownership.events(), name.as_str(), isolate::state::now_ms(), self.window_ms)
    }

    fn report(&self, kind: &str, name: &VserverName, text: String) {
        self.events.log_later(kind, Some(name.as_str()), text);
    }
}
