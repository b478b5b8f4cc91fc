//! The cluster view this agent serves (`GET /v1/cluster`, the top of the status page): assembled from its
//! own status report and every other host's, asked at once and each given [`ASK_TIMEOUT`]; the coordinator's
//! report judges the hosts' states (see [`crate::cluster_view`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::node::Agent;
use crate::cluster_view::{ClusterView, Reports};
use crate::model::{PeerState, StatusReport};

/// How long each host's report may take: a host that does not answer within it is shown without its own
/// word (its lease, certificate and copies), not waited for.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

/// The cluster as this agent and the hosts that answer it see it now.
pub async fn cluster(agent: &Arc<Agent>) -> ClusterView {
    let me = agent.status().await;
    let mut reports = Reports::default();
    let mut asks = JoinSet::new();
    for name in agent.peers.names() {
        // A host this one judges dead is not waited for; one it does not watch is asked all the same.
        let dead = me.peers.iter().any(|p| p.name == name && p.watched && p.state == PeerState::Dead);
        if dead {
            reports.hosts.insert(name, Err("judged dead here: not asked".into()));
            continue;
        }
        let peers = agent.peers.clone();
        asks.spawn(async move {
            let answer = peers.status::<StatusReport>(&name, ASK_TIMEOUT).await;
            let report = failover::peer::describe(answer, "the status report", &name);
            (name, report)
        });
    }
    while let Some(done) = asks.join_next().await {
        if let Ok((name, report)) = done {
            reports.hosts.insert(name, report);
        }
    }
    reports.events = agent.events.list(0, None);
    ClusterView::assemble(&me, &reports)
}
