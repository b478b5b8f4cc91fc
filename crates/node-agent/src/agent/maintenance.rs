//! Maintenance: planned work during which fencing and takeover stand down, for one host or for the whole
//! cluster. Kept in the replicated table, so every host agrees; a takeover's change of owner is refused by the
//! table itself once maintenance covers the host it takes from (log order decides, never a race).
//!
//! A host in maintenance keeps its vservers running whatever happens to its network, never fences (its
//! watchdog is disarmed) and is never taken over. Cluster maintenance does that for every host, and every
//! agent says so in its log every [`NAG_EVERY`] and in its status until it is turned off. Asked while the
//! coordinator runs a takeover, turning maintenance on waits up to [`WAIT_FOR_TAKEOVERS`] for it to end,
//! then refuses (409) naming it.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use failover::wire::MaintenanceRequest;

use super::api::ApiError;
use super::Agent;
use crate::model::PeerState;

/// How long turning maintenance on waits for takeovers in progress.
const WAIT_FOR_TAKEOVERS: Duration = Duration::from_secs(10);

/// How often every agent repeats in its log that the cluster is in maintenance.
const NAG_EVERY: Duration = Duration::from_secs(30);

/// How long a request keeps trying while the cluster has no coordinator (an election after a host came back).
const WAIT_FOR_COORDINATOR: Duration = Duration::from_secs(10);

/// Applies a maintenance request (on the coordinator; another host forwards it there) and answers the
/// maintenance now in force. While the cluster elects a coordinator, it tries again for a while.
pub async fn set(agent: &Arc<Agent>, req: &MaintenanceRequest) -> Result<failover::ownership::Maintenance, ApiError> {
    let began = Instant::now();
    loop {
        match set_once(agent, req).await {
            Err(ApiError::Unavailable(why)) if began.elapsed() < WAIT_FOR_COORDINATOR => {
                tracing::debug!("maintenance request: {why}; trying again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

async fn set_once(agent: &Arc<Agent>, req: &MaintenanceRequest) -> Result<failover::ownership::Maintenance, ApiError> {
    let host = match (&req.host, req.cluster) {
        (Some(_), true) => return Err(ApiError::BadRequest("give a host or the cluster, not both".into())),
        (Some(h), false) => Some(h.clone()),
        (None, true) => None,
        (None, false) => Some(agent.config.node.clone()),
    };
    if let Some(h) = &host {
        let known = *h == agent.config.node || agent.config.peers.iter().any(|p| &p.name == h);
        if !known {
            return Err(ApiError::BadRequest(format!("{h:?} is not a host of this cluster")));
        }
    }
    let own =
        agent.ownership.get().ok_or_else(|| ApiError::Unavailable("the ownership table is not open yet".into()))?;
    if !own.is_leader() {
        return forward(agent, req, host.as_deref()).await;
    }
    if req.on {
        let waited = Instant::now();
        loop {
            let busy: Vec<(String, String)> = agent
                .takeovers
                .list()
                .into_iter()
                .filter(|(_, from)| host.as_deref().is_none_or(|h| h == from))
                .collect();
            if busy.is_empty() {
                break;
            }
            if waited.elapsed() >= WAIT_FOR_TAKEOVERS {
                let list: Vec<String> = busy.iter().map(|(v, from)| format!("{v} from {from}")).collect();
                return Err(ApiError::Conflict(format!(
                    "a takeover is in progress ({}); maintenance not turned on: try again once it ends",
                    list.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let by = req.asked_through.clone().unwrap_or_else(|| agent.config.node.clone());
    own.set_maintenance(host.as_deref(), req.on, &by)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the cluster did not record it: {e}")))?;
    let what = host
        .as_deref()
        .map_or("the whole cluster (fencing and takeover disarmed everywhere)".to_string(), |h| format!("host {h}"));
    let text = format!("maintenance {} for {what}, asked through {by}", if req.on { "on" } else { "off" });
    tracing::warn!("{text}");
    let _ = own.log(super::events::kinds::MAINTENANCE, None, &text).await;
    Ok(own.maintenance())
}

/// Sends the request to the coordinator, whose answer is this one.
async fn forward(
    agent: &Arc<Agent>,
    req: &MaintenanceRequest,
    host: Option<&str>,
) -> Result<failover::ownership::Maintenance, ApiError> {
    let own = agent.ownership.get().expect("checked by the caller");
    let Some(leader) = own.leader() else {
        return Err(ApiError::Unavailable(
            "the cluster has no coordinator now (no majority): maintenance needs one to be recorded".into(),
        ));
    };
    if !agent.peers.knows(&leader) {
        return Err(ApiError::Unavailable(format!("the coordinator {leader} is not among this host's peers")));
    }
    let body = MaintenanceRequest {
        on: req.on,
        host: host.map(str::to_string),
        cluster: host.is_none(),
        asked_through: Some(req.asked_through.clone().unwrap_or_else(|| agent.config.node.clone())),
    };
    let sent =
        agent.peers.maintenance(&leader, &body, WAIT_FOR_TAKEOVERS + WAIT_FOR_COORDINATOR + Duration::from_secs(10));
    // The coordinator may hold the request while its takeovers end, but one that dies or is cut off (its link
    // down: the connection hangs) is given up as soon as it is no longer heard or no longer the coordinator,
    // and the caller asks the next one (setting maintenance again is harmless).
    let gone = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let heard = agent.membership.peers().iter().any(|p| p.name == leader && p.state == PeerState::Alive);
            if !heard || own.leader().as_deref() != Some(leader.as_str()) {
                return;
            }
        }
    };
    let answer = tokio::select! {
        answer = sent => answer
            .map_err(|e| ApiError::Unavailable(format!("cannot reach the coordinator {leader}: {e}")))?,
        () = gone => {
            return Err(ApiError::Unavailable(format!("the coordinator {leader} is no longer heard or no longer leads")))
        }
    };
    match answer {
        Ok(value) => serde_json::from_value(value)
            .map_err(|e| ApiError::Internal(format!("the coordinator's answer is not understood: {e}"))),
        Err(refused) => Err(match refused.status.as_u16() {
            400 => ApiError::BadRequest(refused.reason),
            409 => ApiError::Conflict(refused.reason),
            _ => ApiError::Unavailable(format!("the coordinator {leader} answered {refused}")),
        }),
    }
}

/// Says in the log, every [`NAG_EVERY`], that the cluster (or this host) is in maintenance, and when it
/// ends. Runs until aborted.
pub async fn nag(agent: Arc<Agent>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut said: Option<(bool, Instant)> = None;
    loop {
        every.tick().await;
        let Some(own) = agent.ownership.get() else { continue };
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
