//! Maintenance on this host: the rules and the request's path to the coordinator are
//! [`failover::maintenance`]'s; this is the agent's side of them, and the reminder in the log. A host in
//! maintenance keeps its vservers running whatever happens to its network, never fences (its watchdog is
//! disarmed) and is never taken over. Cluster maintenance does that for every host, and every agent says so in
//! its log every [`NAG_EVERY`] and in its status until it is turned off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::maintenance::{Cluster, MaintenanceError};
use failover::ownership::{Maintenance, Ownership};
use failover::peer::Answer;
pub use failover::wire::MaintenanceRequest;

use super::node::Agent;
use crate::model::PeerState;

/// How often every agent repeats in its log that the cluster is in maintenance.
const NAG_EVERY: Duration = Duration::from_secs(30);

impl Cluster for Agent {
    type Table = Ownership;

    fn node(&self) -> &str {
        &self.config.node
    }
    fn is_host(&self, host: &str) -> bool {
        self.peers.knows(host)
    }
    fn table(&self) -> Option<&Ownership> {
        Some(&self.ownership)
    }
    fn takeovers(&self) -> Vec<(String, String)> {
        self.takeovers.list()
    }
    fn knows(&self, host: &str) -> bool {
        self.peers.knows(host)
    }
    fn heard(&self, host: &str) -> bool {
        self.membership.peers().iter().any(|p| p.name == host && p.state == PeerState::Alive)
    }
    async fn record(&self, host: Option<&str>, on: bool, by: &str) -> Result<(), String> {
        self.ownership.set_maintenance(host, on, by).await.map_err(|e| e.to_string())
    }
    async fn log(&self, text: &str) {
        // The mark is committed; its event follows as a write of its own, which a leader change right after
        // the mark can delay past one proposal's timeout: retried until committed, so the history never lacks
        // it.
        self.events.log_later(super::events::kinds::MAINTENANCE, None, text.to_string());
    }
    async fn forward(&self, leader: &str, req: &MaintenanceRequest, timeout: Duration) -> Answer<serde_json::Value> {
        self.peers.maintenance(leader, req, timeout).await
    }
}

/// Applies a maintenance request here (see [`failover::maintenance::set`]).
pub async fn set(agent: &Arc<Agent>, req: &MaintenanceRequest) -> Result<Maintenance, MaintenanceError> {
    failover::maintenance::set(agent.as_ref(), req).await
}

/// Says in the log, every [`NAG_EVERY`], that the cluster (or this host) is in maintenance, and when it
/// ends. Runs until aborted.
pub async fn nag(agent: Arc<Agent>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut said: Option<(bool, Instant)> = None;
    loop {
        every.tick().await;
        let own = &agent.ownership;
        let m = own.maintenance();
        let cluster = m.cluster.is_some();
        let covered = m.covers(&agent.config.node);
        match (covered, said) {
            (false, None) => {}
            (false, Some(_)) => {
                tracing::warn!("maintenance is over: fencing and takeover are armed again");
                said = None;
            }
            (true, Some((was_cluster, at))) if was_cluster == cluster && at.elapsed() < NAG_EVERY => {}
            (true, _) => {
                if cluster {
                    tracing::warn!(
                        since_unix_ms = m.cluster.as_ref().map(|c| c.since_ms),
                        "CLUSTER MAINTENANCE: fencing and automatic takeover are disarmed on every host until \
                         `vserver-agent maintenance off --cluster`"
                    );
                } else {
                    tracing::warn!(
                        "this host is in maintenance: it does not fence and is not taken over until \
                         `vserver-agent maintenance off`"
                    );
                }
                said = Some((cluster, Instant::now()));
            }
        }
    }
}
