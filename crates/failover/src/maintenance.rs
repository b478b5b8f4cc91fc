//! The rules of maintenance: planned work during which fencing and takeover stand down, for one host or for
//! the whole cluster. Kept in the replicated table, so every host agrees; a takeover's change of owner is
//! refused by the table itself once maintenance covers the host it takes from (log order decides, never a
//! race).
//!
//! A request is applied by the coordinator (the table's leader); another host forwards it there, and gives the
//! coordinator up as soon as it is no longer heard or no longer leads (the caller then asks the next one:
//! setting maintenance again is harmless). Turning maintenance on while the coordinator runs a takeover of the
//! host waits up to [`WAIT_FOR_TAKEOVERS`] for it to end, then refuses naming it. While the cluster has no
//! coordinator (an election after a host came back), the request is tried again for
//! [`WAIT_FOR_COORDINATOR`].

use std::future::Future;
use std::time::{Duration, Instant};

use crate::ownership::Maintenance;
use crate::peer::Answer;
use crate::table::Table;
use crate::wire::{MaintenanceRequest, MaintenanceView};

/// How long turning maintenance on waits for takeovers in progress.
pub const WAIT_FOR_TAKEOVERS: Duration = Duration::from_secs(10);
/// How long a request keeps trying while the cluster has no coordinator.
pub const WAIT_FOR_COORDINATOR: Duration = Duration::from_secs(10);

/// Why a maintenance request was not carried out (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    /// Both a host and the cluster named.
    #[error("give a host or the cluster, not both")]
    HostAndCluster,
    /// A field that is not a host name (`host`, `asked_through`): the field, and why.
    #[error("{field}: {reason}")]
    HostName {
        /// The field.
        field: &'static str,
        /// Why it is no host name.
        reason: String,
    },
    /// A host that is not the cluster's.
    #[error("{0:?} is not a host of this cluster")]
    UnknownHost(String),
    /// A takeover of the host (or any, for the cluster) runs on the coordinator.
    #[error("a takeover is in progress ({}); maintenance not turned on: try again once it ends", list(.0))]
    TakeoverInProgress(Vec<(String, String)>),
    /// The coordinator refused it: as malformed (400), for a host it does not know (404), or as things stand
    /// (409).
    #[error("{reason}")]
    RefusedThere {
        /// The coordinator's status: 400, 404 or 409.
        status: u16,
        /// The coordinator's words.
        reason: String,
    },
    /// The cluster cannot record it now: no table, no coordinator, none reachable, no majority.
    #[error("{0}")]
    Unavailable(String),
    /// The coordinator's answer is not a maintenance state.
    #[error("the coordinator's answer is not understood: {0}")]
    BadAnswer(String),
}

fn list(busy: &[(String, String)]) -> String {
    busy.iter().map(|(v, from)| format!("{v} from {from}")).collect::<Vec<_>>().join(", ")
}

/// The host a request is about (`None`: the whole cluster); `me` is the host asked. Checked before anything
/// waits: a malformed request is refused at once.
pub fn scope(
    req: &MaintenanceRequest,
    me: &str,
    is_host: impl Fn(&str) -> bool,
) -> Result<Option<String>, MaintenanceError> {
    for (field, value) in [("host", &req.host), ("asked_through", &req.asked_through)] {
        if let Some(Err(e)) = value.as_deref().map(isolate::VserverName::parse) {
            let reason = e.to_string().replace("vserver name", "node name");
            return Err(MaintenanceError::HostName { field, reason });
        }
    }
    let host = match (&req.host, req.cluster) {
        (Some(_), true) => return Err(MaintenanceError::HostAndCluster),
        (Some(h), false) => Some(h.clone()),
        (None, true) => None,
        (None, false) => Some(me.to_string()),
    };
    match host {
        Some(h) if h != me && !is_host(&h) => Err(MaintenanceError::UnknownHost(h)),
        host => Ok(host),
    }
}

/// The takeovers (vserver, from) that keep maintenance of `host` (`None`: the cluster) from being turned on.
pub fn in_the_way(running: Vec<(String, String)>, host: Option<&str>) -> Vec<(String, String)> {
    running.into_iter().filter(|(_, from)| host.is_none_or(|h| h == from)).collect()
}

/// The host's side of a maintenance request.
pub trait Cluster: Send + Sync {
    /// The ownership table.
    type Table: Table;
    /// This host's name.
    fn node(&self) -> &str;
    /// Whether `host` is one of the cluster's (this one aside).
    fn is_host(&self, host: &str) -> bool;
    /// The ownership table, once open.
    fn table(&self) -> Option<&Self::Table>;
    /// The takeovers this host runs now as the coordinator: (vserver, the host it is taken from).
    fn takeovers(&self) -> Vec<(String, String)>;
    /// Whether `host` is a peer this host can send to.
    fn knows(&self, host: &str) -> bool;
    /// Whether `host` is heard (alive) now.
    fn heard(&self, host: &str) -> bool;
    /// Records the maintenance in the table (the leader only).
    fn record(&self, host: Option<&str>, on: bool, by: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Logs `text` in the cluster's event log: now, or once the cluster can commit it (never dropped).
    fn log(&self, text: &str) -> impl Future<Output = ()> + Send;
    /// Sends the request to the coordinator `leader`.
    fn forward(
        &self,
        leader: &str,
        req: &MaintenanceRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<serde_json::Value>> + Send;
}

/// Applies a maintenance request (on the coordinator; another host forwards it there) and answers the
/// maintenance now in force. While the cluster elects a coordinator, it tries again for a while.
pub async fn set<C: Cluster>(cluster: &C, req: &MaintenanceRequest) -> Result<Maintenance, MaintenanceError> {
    let began = Instant::now();
    loop {
        match set_once(cluster, req).await {
            Err(MaintenanceError::Unavailable(why)) if began.elapsed() < WAIT_FOR_COORDINATOR => {
                tracing::debug!("maintenance request: {why}; trying again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

async fn set_once<C: Cluster>(cluster: &C, req: &MaintenanceRequest) -> Result<Maintenance, MaintenanceError> {
    let me = cluster.node();
    let host = scope(req, me, |h| cluster.is_host(h))?;
    let table =
        cluster.table().ok_or_else(|| MaintenanceError::Unavailable("the ownership table is not open yet".into()))?;
    if !table.is_leader() {
        return forward(cluster, table, req, host.as_deref()).await;
    }
    if req.on {
        let waited = Instant::now();
        loop {
            let busy = in_the_way(cluster.takeovers(), host.as_deref());
            if busy.is_empty() {
                break;
            }
            if waited.elapsed() >= WAIT_FOR_TAKEOVERS {
                return Err(MaintenanceError::TakeoverInProgress(busy));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let by = req.asked_through.clone().unwrap_or_else(|| me.to_string());
    cluster
        .record(host.as_deref(), req.on, &by)
        .await
        .map_err(|e| MaintenanceError::Unavailable(format!("the cluster did not record it: {e}")))?;
    let what = host
        .as_deref()
        .map_or("the whole cluster (fencing and takeover disarmed everywhere)".to_string(), |h| format!("host {h}"));
    let text = format!("maintenance {} for {what}, asked through {by}", if req.on { "on" } else { "off" });
    tracing::warn!("{text}");
    cluster.log(&text).await;
    Ok(table.maintenance())
}

/// Sends the request to the coordinator, whose answer is this one.
async fn forward<C: Cluster>(
    cluster: &C,
    table: &C::Table,
    req: &MaintenanceRequest,
    host: Option<&str>,
) -> Result<Maintenance, MaintenanceError> {
    let Some(leader) = table.leader() else {
        return Err(MaintenanceError::Unavailable(
            "the cluster has no coordinator now (no majority): maintenance needs one to be recorded".into(),
        ));
    };
    if !cluster.knows(&leader) {
        return Err(MaintenanceError::Unavailable(format!("the coordinator {leader} is not among this host's peers")));
    }
    let body = MaintenanceRequest {
        on: req.on,
        host: host.map(str::to_string),
        cluster: host.is_none(),
        asked_through: Some(req.asked_through.clone().unwrap_or_else(|| cluster.node().to_string())),
    };
    let sent = cluster.forward(&leader, &body, WAIT_FOR_TAKEOVERS + WAIT_FOR_COORDINATOR + Duration::from_secs(10));
    // The coordinator may hold the request while its takeovers end, but one that dies or is cut off (its link
    // down: the connection hangs) is given up as soon as it is no longer heard or no longer the coordinator.
    let gone = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !cluster.heard(&leader) || table.leader().as_deref() != Some(leader.as_str()) {
                return;
            }
        }
    };
    let answer = tokio::select! {
        answer = sent => answer
            .map_err(|e| MaintenanceError::Unavailable(format!("cannot reach the coordinator {leader}: {e}")))?,
        () = gone => {
            return Err(MaintenanceError::Unavailable(format!(
                "the coordinator {leader} is no longer heard or no longer leads"
            )))
        }
    };
    match answer {
        // The API's names (`since_unix_ms`), or a coordinator of the previous release's (`since_ms`).
        Ok(value) => serde_json::from_value::<MaintenanceView>(value)
            .map(Maintenance::from)
            .map_err(|e| MaintenanceError::BadAnswer(e.to_string())),
        Err(refused) => Err(match refused.status.as_u16() {
            status @ (400 | 404 | 409) => MaintenanceError::RefusedThere { status, reason: refused.reason },
            _ => MaintenanceError::Unavailable(format!("the coordinator {leader} answered {refused}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, cluster: bool) -> MaintenanceRequest {
        MaintenanceRequest { on: true, host: host.map(str::to_string), cluster, asked_through: None }
    }

    #[test]
    fn a_request_is_about_the_host_asked_another_host_or_the_cluster() {
        let known = |h: &str| h == "h2";
        assert_eq!(scope(&req(None, false), "h1", known), Ok(Some("h1".into())));
        assert_eq!(scope(&req(Some("h2"), false), "h1", known), Ok(Some("h2".into())));
        assert_eq!(scope(&req(None, true), "h1", known), Ok(None));
        assert_eq!(scope(&req(Some("h2"), true), "h1", known), Err(MaintenanceError::HostAndCluster));
        let e = scope(&req(Some("h9"), false), "h1", known).unwrap_err();
        assert_eq!(e.to_string(), "\"h9\" is not a host of this cluster");
    }

    #[test]
    fn a_field_that_is_no_host_name_is_refused_naming_it() {
        let known = |h: &str| h == "h2";
        let e = scope(&req(Some("a..b"), false), "h1", known).unwrap_err();
        assert!(matches!(e, MaintenanceError::HostName { field: "host", .. }), "{e}");
        assert!(e.to_string().starts_with("host: ") && e.to_string().contains("a..b"), "{e}");
        let through = |a: &str| MaintenanceRequest { asked_through: Some(a.to_string()), ..req(None, false) };
        let e = scope(&through(""), "h1", known).unwrap_err();
        assert!(matches!(e, MaintenanceError::HostName { field: "asked_through", .. }), "{e}");
        assert_eq!(e.to_string(), "asked_through: invalid node name \"\": it is empty");
        assert_eq!(scope(&through("h2"), "h1", known), Ok(Some("h1".into())));
    }

    #[test]
    fn only_takeovers_from_the_host_stand_in_the_way_of_its_maintenance() {
        let running = vec![("web".to_string(), "h1".to_string()), ("db".to_string(), "h2".to_string())];
        assert_eq!(in_the_way(running.clone(), Some("h2")), vec![("db".to_string(), "h2".to_string())]);
        assert!(in_the_way(running.clone(), Some("h3")).is_empty());
        assert_eq!(in_the_way(running.clone(), None).len(), 2);
        let e = MaintenanceError::TakeoverInProgress(running);
        assert_eq!(
            e.to_string(),
            "a takeover is in progress (web from h1, db from h2); maintenance not turned on: try again once it ends"
        );
    }
}
