//! The HTTP API (docs/api.md): JSON under `/v1`, `/healthz`, `/metrics` and a status page at `/`.
//!
//! Every route but `/healthz` needs the cluster secret, as a bearer token (or as the password of HTTP Basic
//! authentication, for browsers), compared in constant time, or a connection certified by the cluster CA.
//! Bodies are limited to [`BODY_LIMIT`]; reads and heartbeats are bounded by [`REQUEST_TIMEOUT`]; every refusal is a
//! JSON [`ErrorBody`] and changes nothing. A lifecycle request runs in its own task: a client that hangs up
//! never cancels a start or stop half way.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use failover::evacuate::{EvacuateError, EvacuateRequest};
use failover::maintenance::MaintenanceError;
use failover::wire::{
    AbortReply, BeginRequest, CommitRequest, ErrorBody, MaintenanceRequest, MigrateRequest, ProbeRequest,
    PromoteRequest, PromoteTimes,
};
use isolate::VserverName;

use super::forward::ForwardError;
use super::heartbeat::HeartbeatReject;
use super::migrate::MigrateError;
use super::node::Agent;
use super::replication::ReplicationError;
use super::serve::Connection;
use super::supervisor::SupervisorError;
use super::tunnel;
use super::{metrics, page};
use crate::model::{MaintenanceView, SignedHeartbeat, VserverStatus};

/// Largest request body read.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest time for a request, body included, but the long ones: start, stop, restart, sync, migrate, promote,
/// commit and the replication tunnel (bounded by their own timeouts).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A refused or failed request: its status and a sentence for [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, a wrong one, or no certified connection (401).
    #[error(
        "this endpoint needs the cluster secret (Authorization: Bearer SECRET, or as the HTTP Basic password) \
         or a client certificate signed by the cluster CA"
    )]
    Unauthorized,
    /// A join refused.
    #[error(transparent)]
    Join(#[from] super::join::AdmitError),
    /// A monitoring token on a request that is not a read (403); names the request.
    #[error("{0}: a monitoring token (monitor_secret_file) only reads (GET); this needs the cluster secret")]
    ReadOnly(String),
    /// An invalid vserver name (400); the message names it and says why.
    #[error("{0}")]
    BadName(String),
    /// Not a route of the API (404).
    #[error("no such endpoint: {0} (see docs/api.md)")]
    NoRoute(String),
    /// A body over [`BODY_LIMIT`] (413), or one that could not be read (400).
    #[error("{message}")]
    Body {
        /// The status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// The request took longer than [`REQUEST_TIMEOUT`] (503).
    #[error("the request took longer than {0:?}")]
    Timeout(Duration),
    /// A refused heartbeat.
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatReject),
    /// A lifecycle request that could not be carried out.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// A replication request that could not be carried out.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// A migrate that could not start.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// An evacuation or a restore that could not start.
    #[error(transparent)]
    Evacuate(#[from] EvacuateError),
    /// A maintenance request not carried out.
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    /// A request for a vserver owned elsewhere that its owner did not answer (503).
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// A request that is malformed for its endpoint (400).
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Refused as things stand (409); the message says what is in the way.
    #[error("{0}")]
    Conflict(String),
    /// The cluster cannot do it now (503): no majority, no coordinator.
    #[error("{0}")]
    Unavailable(String),
    /// A bug: a task that panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ReadOnly(_) => StatusCode::FORBIDDEN,
            Self::Join(super::join::AdmitError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Self::Join(super::join::AdmitError::Token(_)) => StatusCode::FORBIDDEN,
            Self::Join(super::join::AdmitError::Cannot(_)) => StatusCode::CONFLICT,
            Self::BadName(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Migrate(MigrateError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Self::Migrate(MigrateError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Migrate(MigrateError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Migrate(MigrateError::Supervisor(e)) => ApiError::Supervisor(clone_supervisor_error(e)).status(),
            Self::Evacuate(e) if e.is_bad_request() => StatusCode::BAD_REQUEST,
            Self::Evacuate(e) if e.is_unknown() => StatusCode::NOT_FOUND,
            Self::Evacuate(_) => StatusCode::CONFLICT,
            Self::Maintenance(MaintenanceError::HostAndCluster | MaintenanceError::HostName { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Self::Maintenance(MaintenanceError::UnknownHost(_)) => StatusCode::NOT_FOUND,
            Self::Maintenance(MaintenanceError::TakeoverInProgress(_)) => StatusCode::CONFLICT,
            Self::Maintenance(MaintenanceError::RefusedThere { status, .. }) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::CONFLICT)
            }
            Self::Maintenance(MaintenanceError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Maintenance(MaintenanceError::BadAnswer(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Replication(e) if e.is_bad_request() => StatusCode::BAD_REQUEST,
            Self::Replication(e) if e.is_unknown() => StatusCode::NOT_FOUND,
            Self::Replication(e) if e.is_failure() => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Replication(_) => StatusCode::CONFLICT,
            Self::NoRoute(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::Forward(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Body { status, .. } => *status,
            Self::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Heartbeat(HeartbeatReject::Malformed(_)) => StatusCode::BAD_REQUEST,
            Self::Heartbeat(
                HeartbeatReject::UnknownNode(_)
                | HeartbeatReject::BadSignature(_)
                | HeartbeatReject::BadSignatureOnGarbage,
            ) => StatusCode::FORBIDDEN,
            Self::Heartbeat(HeartbeatReject::Stale { .. }) => StatusCode::CONFLICT,
            Self::Supervisor(SupervisorError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Supervisor(SupervisorError::BadConf { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Supervisor(SupervisorError::Refused { .. }) => StatusCode::FORBIDDEN,
            Self::Supervisor(SupervisorError::Busy(_)) => StatusCode::LOCKED,
            Self::Supervisor(SupervisorError::NoLease(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Supervisor(SupervisorError::AlreadyRunning(_) | SupervisorError::NotRunning(_)) => {
                StatusCode::CONFLICT
            }
            Self::Supervisor(SupervisorError::Failed { .. } | SupervisorError::State { .. }) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(ErrorBody { error: self.to_string() })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenges = response.headers_mut();
            challenges.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vserver-agent\""));
            challenges.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"vserver-agent (any user, the cluster secret)\""),
            );
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is over the limit of {BODY_LIMIT} bytes")
        } else {
            format!("cannot read the body: {}", rejection.body_text())
        };
        Self::Body { status, message }
    }
}

/// The agent's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    let quick = Router::new()
        .route("/", get(status_page))
        .route("/v1/status", get(status))
        .route("/v1/cluster", get(cluster))
        .route("/v1/vservers/{name}", get(vserver))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/metrics", get(metrics_text))
        .route("/v1/replicas", get(replicas))
        .route("/v1/replicas/{name}/begin", post(replica_begin))
        .route("/v1/replicas/{name}/preflight", get(replica_preflight))
        .route("/v1/placements/{name}", post(placement_record))
        .route("/v1/vservers/{name}/migration", get(migrate_status))
        .route("/v1/replicas/{name}/abort", post(replica_abort))
        .route("/v1/takeover/probe", post(takeover_probe))
        .route("/v1/maintenance", get(maintenance_get))
        .route("/v1/hosts/{host}/evacuate", post(evacuate_start))
        .route("/v1/hosts/{host}/restore", post(restore_start))
        .route("/v1/hosts/{host}/evacuation", get(evacuation_status))
        .route("/v1/events", get(events))
        .route("/v1/pki", get(pki_get))
        .route("/v1/cluster/seed", get(seed_get))
        .route_layer(middleware::from_fn(bounded));
    // Long by nature (a start runs its scripts, a sync copies a tree): bounded by their own timeouts.
    let lifecycle = Router::new()
        .route("/v1/vservers/{name}/{action}", post(lifecycle))
        .route("/v1/replicas/{name}/commit", post(replica_commit))
        .route("/v1/vservers/{name}/promote", post(promote))
        .route("/v1/vservers/{name}/migrate", post(migrate_start))
        // Waits for takeovers in progress, and goes through the coordinator.
        .route("/v1/maintenance", post(maintenance_set))
        .route("/v1/hosts/remove", post(hosts_remove))
        .route("/v1/cluster/placements", get(placements_get))
        .route("/v1/cluster/placements/{name}", axum::routing::put(placement_set).delete(placement_remove))
        .route("/v1/replicas/{name}/rsync", post(replica_rsync));
    let authenticated =
        quick.merge(lifecycle).route_layer(middleware::from_fn_with_state(Arc::clone(&agent), authenticate));
    // A joining host has no credentials but its one-time token.
    let joining = Router::new().route("/v1/join", post(join_host)).route_layer(middleware::from_fn(bounded));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(joining)
        .merge(authenticated)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_oversized))
        .with_state(agent)
}

/// Admits a request carrying the cluster secret, or one on a connection certified by the cluster CA; a read
/// (GET, HEAD) carrying a monitoring token too, anything else with one being refused (403).
async fn authenticate(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    use failover::credential::matches_any;
    let certified = request.extensions().get::<Connection>().is_some_and(|c| c.certified);
    if certified {
        return next.run(request).await;
    }
    let Some(token) = presented_secret(request.headers()) else { return ApiError::Unauthorized.into_response() };
    if matches_any(agent.accepted_secrets.iter().map(|s| &**s), &token) {
        return next.run(request).await;
    }
    if matches_any(agent.monitor_secrets.iter().map(|s| &**s), &token) {
        let method = request.method();
        if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
            return next.run(request).await;
        }
        return ApiError::ReadOnly(format!("{method} {}", request.uri().path())).into_response();
    }
    ApiError::Unauthorized.into_response()
}

/// The secret a request presents: a bearer token, or the password of HTTP Basic authentication.
fn presented_secret(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(credentials.trim().to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':').map(|(_, password)| password.to_string())
    } else {
        None
    }
}

/// Refuses a body announced over [`BODY_LIMIT`] from its `Content-Length`, before a byte of it is read (a
/// client sending `Expect: 100-continue` is told at once). Bodies without a length are cut at the limit by
/// [`DefaultBodyLimit`].
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > BODY_LIMIT as u64) {
        let message = format!("the body is over the limit of {BODY_LIMIT} bytes");
        return ApiError::Body { status: StatusCode::PAYLOAD_TOO_LARGE, message }.into_response();
    }
    next.run(request).await
}

/// Bounds a request's whole handling, body included, by [`REQUEST_TIMEOUT`].
async fn bounded(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(REQUEST_TIMEOUT).into_response(),
    }
}

fn parse_name(name: &str) -> Result<VserverName, ApiError> {
    VserverName::parse(name).map_err(|e| ApiError::BadName(e.to_string()))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /v1/pki`: the CA bundle this host trusts and the CA key that signs, for a peer's `vserver-agent ca
/// sync` during a CA rotation; to a connection certified by the cluster CA alone (never to a token).
async fn pki_get(State(agent): State<Arc<Agent>>, request: Request) -> Result<Response, ApiError> {
    let certified = request.extensions().get::<Connection>().is_some_and(|c| c.certified);
    if !certified {
        return Err(ApiError::Conflict(
            "the cluster CA's key is given only to a peer presenting its certificate (vserver-agent ca sync)".into(),
        ));
    }
    let reply = super::rotate::pki_reply(&agent.config).map_err(|e| ApiError::Conflict(format!("{e:#}")))?;
    Ok(Json(reply).into_response())
}

/// `POST /v1/join`: signs a joining host's certificate for its one-time token and gives it what it needs to
/// belong to the cluster (see `join.rs`).
async fn join_host(State(agent): State<Arc<Agent>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
    let req: super::join::JoinRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let reply = super::join::admit(&agent, req).await?;
    Ok(Json(reply).into_response())
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    Json(agent.status().await).into_response()
}

async fn vserver(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Result<Json<VserverStatus>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(agent.supervisor.get(&name).await?))
}

/// `GET /v1/events[?since=SEQ][&limit=N]`: the cluster's events, oldest first.
async fn events(
    State(agent): State<Arc<Agent>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<crate::model::EventView>>, ApiError> {
    let (since, limit) = events_query(query.as_deref().unwrap_or(""))?;
    Ok(Json(agent.events.list(since, limit)))
}

/// `since` and `limit` from the query of `GET /v1/events`, or a sentence saying what is wrong.
fn events_query(query: &str) -> Result<(u64, Option<usize>), ApiError> {
    let (mut since, mut limit) = (0, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |what: &str| {
            failover::whole::parse(value).ok_or_else(|| {
                ApiError::BadRequest(format!("{key} must be {what} (a whole number, 0 or more), not {value:?}"))
            })
        };
        match key {
            "since" => since = number("a sequence number")?,
            "limit" => match number("a count of events")? {
                0 => return Err(ApiError::BadRequest("limit must be at least 1".into())),
                n => limit = Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?} of GET /v1/events (since and limit are known)"
                )))
            }
        }
    }
    Ok((since, limit))
}

/// The query of `POST /v1/vservers/NAME/ACTION`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleQuery {
    /// The ownership epoch the caller acts at: refused (409) if the table is past it.
    epoch: Option<u64>,
}

async fn lifecycle(
    State(agent): State<Arc<Agent>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<LifecycleQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if agent.config.witness && matches!(action.as_str(), "start" | "restart") {
        return Err(ApiError::Supervisor(SupervisorError::Refused {
            name: name.to_string(),
            message: format!("{} is a witness: it runs no vservers", agent.config.node),
        }));
    }
    if let Some(epoch) = query.epoch {
        let current = agent.ownership.epoch(name.as_str());
        if epoch < current {
            return Err(ApiError::Migrate(MigrateError::Conflict(format!(
                "stale ownership epoch {epoch}: {name} is at epoch {current}; nothing was done"
            ))));
        }
    }
    // Its owner's to do, when another host owns it: passed on there. A clear whose owner is not heard is done
    // here (its relocations are forgotten cluster-wide, so that a refused takeover of it can happen).
    if matches!(action.as_str(), "sync" | "clear" | "announce") {
        match super::forward::owner_elsewhere(&agent, &name, &headers, &action) {
            Ok(Some(owner)) => {
                let epoch = query.epoch.map(|e| format!("?epoch={e}")).unwrap_or_default();
                let path = format!("/v1/vservers/{name}/{action}{epoch}");
                let task =
                    tokio::spawn(
                        async move { super::forward::relay(&agent, &name, &owner, &action, &path, None).await },
                    );
                return Ok(task.await.map_err(|e| ApiError::Internal(e.to_string()))??);
            }
            Ok(None) => {}
            Err(e) if action == "clear" => tracing::info!(vserver = %name, "clear done here: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    if action == "clear" {
        let task = tokio::spawn(async move { agent.clear(&name).await });
        let report = task.await.map_err(|e| ApiError::Internal(e.to_string()))??;
        return Ok(Json(report).into_response());
    }
    if action == "sync" {
        let replication = Arc::clone(&agent.replication);
        let task = tokio::spawn(async move { replication.sync_now(&name).await });
        let outcomes = task.await.map_err(|e| ApiError::Internal(e.to_string()))??;
        return Ok(Json(outcomes).into_response());
    }
    if action == "announce" {
        let addrs = agent.announce_now(&name).await?;
        return Ok(Json(serde_json::json!({ "vserver": name.as_str(), "announced": addrs })).into_response());
    }
    if !matches!(action.as_str(), "start" | "stop" | "restart") {
        return Err(ApiError::NoRoute(format!(
            "POST /v1/vservers/{name}/{action} (start, stop, restart, sync, clear or announce)"
        )));
    }
    // The cluster decides where a vserver runs: a start here of one the ownership table gives to another host
    // is refused (a stop is always allowed).
    if action != "stop" {
        if let Some((owner, epoch)) = agent.ownership.owner(name.as_str()) {
            if owner != agent.config.node {
                return Err(ApiError::Supervisor(SupervisorError::Refused {
                    name: name.to_string(),
                    message: format!(
                        "it belongs to {owner} (ownership epoch {epoch}) and is not started here: start it on \
                         {owner}, or move it here with `vserver {name} migrate {}` on {owner}",
                        agent.config.node
                    ),
                }));
            }
        }
    }
    // In its own task, so that a client hanging up does not cancel the operation half way.
    let task = tokio::spawn(async move {
        if let Some(refused) = agent.supervisor.refusal(&name, &action).await {
            return Err(refused);
        }
        agent.record_intent_in_cluster(&name, action != "stop", &action).await?;
        match action.as_str() {
            "start" => agent.supervisor.start(&name).await,
            "stop" => agent.supervisor.stop(&name).await,
            _ => agent.supervisor.restart(&name).await,
        }
    });
    let status: VserverStatus = task.await.map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(status).into_response())
}

fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

async fn replicas(State(agent): State<Arc<Agent>>) -> Response {
    Json(agent.replication.held()).into_response()
}

async fn replica_begin(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: BeginRequest = json_body(body)?;
    Ok(Json(agent.replication.begin(&name, req).await?).into_response())
}

async fn replica_commit(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: CommitRequest = json_body(body)?;
    Ok(Json(agent.replication.commit(&name, req).await?).into_response())
}

async fn replica_abort(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: CommitRequest = json_body(body)?;
    let receiver_errors = agent.replication.abort(&name, &req.session).await;
    Ok(Json(AbortReply { receiver_errors }).into_response())
}

/// The same error again, for its status (the supervisor's errors hold no clonable OS error but `State`).
fn clone_supervisor_error(e: &SupervisorError) -> SupervisorError {
    match e {
        SupervisorError::NotFound(n) => SupervisorError::NotFound(n.clone()),
        SupervisorError::AlreadyRunning(n) => SupervisorError::AlreadyRunning(n.clone()),
        SupervisorError::NotRunning(n) => SupervisorError::NotRunning(n.clone()),
        SupervisorError::Busy(n) => SupervisorError::Busy(n.clone()),
        SupervisorError::BadConf { name, message } => {
            SupervisorError::BadConf { name: name.clone(), message: message.clone() }
        }
        SupervisorError::Refused { name, message } => {
            SupervisorError::Refused { name: name.clone(), message: message.clone() }
        }
        other => SupervisorError::Failed { name: String::new(), message: other.to_string() },
    }
}

async fn replica_preflight(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(super::migrate::preflight(&agent, &name).await).into_response())
}

async fn placement_record(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let placement: failover::placement::Placement = json_body(body)?;
    let hosts = || placement.standbys.iter().chain([&placement.primary]);
    for host in hosts() {
        super::config::check_node_name(host).map_err(|e| ApiError::BadRequest(format!("in the placement: {e}")))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = hosts().find(|h| !seen.insert(*h)) {
        return Err(ApiError::BadRequest(format!("host {twice:?} is listed twice in the placement")));
    }
    let known = |h: &String| *h == agent.config.node || agent.peers.knows(h);
    if let Some(bad) = hosts().find(|h| !known(h)) {
        return Err(ApiError::NotFound(format!("unknown host {bad:?} in the placement")));
    }
    let newer = agent
        .replication
        .record_placement(&name, placement)
        .map_err(|e| ApiError::Internal(format!("cannot keep the placement: {e}")))?;
    Ok(Json(serde_json::json!({ "recorded": newer })).into_response())
}

async fn migrate_start(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: MigrateRequest = json_body(body)?;
    // Run by the owner: from another host, the request is passed on to it.
    if let Some(owner) = super::forward::owner_elsewhere(&agent, &name, &headers, "migrate")? {
        let body = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
        let path = format!("/v1/vservers/{name}/migrate");
        let task =
            tokio::spawn(
                async move { super::forward::relay(&agent, &name, &owner, "migrate", &path, Some(body)).await },
            );
        return Ok(task.await.map_err(|e| ApiError::Internal(e.to_string()))??);
    }
    let status = super::migrate::start(&agent, &name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn migrate_status(State(agent): State<Arc<Agent>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    match agent.migrations.get(&name) {
        Some(m) => Ok(Json(m).into_response()),
        None => {
            Err(ApiError::Migrate(MigrateError::NotFound(format!("no migrate of {name} since this agent started"))))
        }
    }
}

async fn evacuate_start(
    State(agent): State<Arc<Agent>>,
    Path(host): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EvacuateRequest = json_body(body)?;
    let job = super::evacuate::evacuate(&agent, &host, &req)?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn restore_start(
    State(agent): State<Arc<Agent>>,
    Path(host): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EvacuateRequest = json_body(body)?;
    let job = super::evacuate::restore(&agent, &host, &req)?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn evacuation_status(State(agent): State<Arc<Agent>>, Path(host): Path<String>) -> Result<Response, ApiError> {
    super::config::check_node_name(&host).map_err(ApiError::BadRequest)?;
    match agent.evacuations.get(&host) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::NoRoute(format!("no evacuation or restore of {host:?} through this agent"))),
    }
}

async fn maintenance_get(State(agent): State<Arc<Agent>>) -> Result<Response, ApiError> {
    Ok(Json(MaintenanceView::from(&agent.ownership.maintenance())).into_response())
}

async fn maintenance_set(
    State(agent): State<Arc<Agent>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: MaintenanceRequest = json_body(body)?;
    let now = super::maintenance::set(&agent, &req).await?;
    Ok(Json(MaintenanceView::from(&now)).into_response())
}

/// `GET /v1/cluster/seed` (internal): this host's cluster file, which the coordinator takes into the table.
async fn seed_get(State(agent): State<Arc<Agent>>) -> Result<Response, ApiError> {
    Ok(Json(super::placements::seed_reply(&agent)).into_response())
}

/// `GET /v1/cluster/placements`: the placements the cluster's table holds.
async fn placements_get(State(agent): State<Arc<Agent>>) -> Result<Response, ApiError> {
    Ok(Json(agent.ownership.placements()).into_response())
}

impl From<super::hosts::ChangeError> for ApiError {
    fn from(e: super::hosts::ChangeError) -> Self {
        use super::hosts::ChangeError;
        match e {
            ChangeError::BadRequest(e) => ApiError::BadRequest(e),
            ChangeError::NotFound(e) => ApiError::NotFound(e),
            ChangeError::Conflict(e) => ApiError::Conflict(e),
            ChangeError::Unavailable(e) => ApiError::Unavailable(e),
        }
    }
}

/// `PUT /v1/cluster/placements/NAME`: records or changes a protected vserver's placement, on any host.
async fn placement_set(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: super::placements::PlaceRequest = json_body(body)?;
    let reply = super::placements::set(&agent, &name, req).await?;
    Ok(Json(reply).into_response())
}

/// The query of `DELETE /v1/cluster/placements/NAME`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovePlacementQuery {
    expected_revision: Option<u64>,
}

/// `DELETE /v1/cluster/placements/NAME`: takes a vserver out of the cluster's placements, on any host.
async fn placement_remove(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    query: Result<Query<RemovePlacementQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let reply = super::placements::remove(&agent, &name, query.expected_revision).await?;
    Ok(Json(reply).into_response())
}

async fn hosts_remove(
    State(agent): State<Arc<Agent>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: super::hosts::RemoveRequest = json_body(body)?;
    Ok(Json(super::hosts::remove(&agent, &req).await?).into_response())
}

async fn takeover_probe(
    State(agent): State<Arc<Agent>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ProbeRequest = json_body(body)?;
    super::config::check_node_name(&req.host).map_err(|e| ApiError::BadRequest(format!("host: {e}")))?;
    match super::takeover::probe(&agent, &req) {
        Some(reply) => Ok(Json(reply).into_response()),
        None => Err(ApiError::NotFound(format!("{:?} is not a peer of this host", req.host))),
    }
}

async fn promote(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let req: PromoteRequest = json_body(body)?;
    let task = tokio::spawn(async move { super::migrate::promote(&agent, &name, req).await });
    let (status, times) = task.await.map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut response = Json(status).into_response();
    for (header, value) in
        [(PromoteTimes::PROMOTE_HEADER, times.promote_ms), (PromoteTimes::START_HEADER, times.start_ms)]
    {
        if let Some(v) = value {
            response.headers_mut().insert(header, v.into());
        }
    }
    Ok(response)
}

/// The receiving end of the replication tunnel (see `tunnel.rs`): checks the request, answers 101, then runs
/// the receiving rsync in the session's generation with its stdio on the connection.
async fn replica_rsync(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let headers = request.headers();
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    if !text(header::UPGRADE.as_str()).is_some_and(|u| u.eq_ignore_ascii_case(tunnel::UPGRADE)) {
        return Err(ApiError::BadRequest(format!("this endpoint needs `Upgrade: {}`", tunnel::UPGRADE)));
    }
    let session = text(tunnel::SESSION_HEADER)
        .ok_or_else(|| ApiError::BadRequest(format!("no {} header", tunnel::SESSION_HEADER)))?;
    // The session first: the command is judged only for a session this host has open.
    let (dir, active, cancel) = agent.replication.tunnel_target(&name, &session)?;
    let argv: Vec<String> = text(tunnel::ARGV_HEADER)
        .and_then(|a| serde_json::from_str(&a).ok())
        .ok_or_else(|| ApiError::BadRequest(format!("no {} header with a JSON array", tunnel::ARGV_HEADER)))?;
    let command = tunnel::check_server_argv(&argv).map_err(|reason| {
        tracing::warn!(vserver = %name, ?argv, %reason, "tunnel refused");
        ApiError::BadRequest(format!("tunnel refused: {reason}"))
    })?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let rsync_bin = agent.config.rsync_bin.clone().unwrap_or_else(|| "rsync".into());
    tokio::spawn(tunnel::receive(on_upgrade, command, dir, rsync_bin, active, cancel, name.to_string()));
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static(tunnel::UPGRADE)),
        ],
    )
        .into_response())
}

async fn heartbeat(State(agent): State<Arc<Agent>>, body: Result<Bytes, BytesRejection>) -> Result<(), ApiError> {
    let body = body?;
    let signed: SignedHeartbeat = serde_json::from_slice(&body)
        .map_err(|e| agent.membership.refuse_malformed(format!("not a signed heartbeat: {e}")))?;
    agent.membership.receive(&signed)?;
    Ok(())
}

async fn metrics_text(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = metrics::Format::from_accept(accept);
    let text = metrics::render(&agent.status().await, &agent.events.counts(), format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "accept")], text).into_response()
}

async fn status_page(State(agent): State<Arc<Agent>>) -> Html<String> {
    let view = super::overview::cluster(&agent).await;
    Html(page::render(&agent.status().await, Some(&view)))
}

/// `GET /v1/cluster`: the cluster, the same from every host (see [`crate::cluster_view`]).
async fn cluster(State(agent): State<Arc<Agent>>) -> Json<crate::cluster_view::ClusterView> {
    Json(super::overview::cluster(&agent).await)
}

async fn wrong_method(request: Request) -> Response {
    let message = format!("{} is not allowed on {}", request.method(), request.uri().path());
    (StatusCode::METHOD_NOT_ALLOWED, Json(ErrorBody { error: message })).into_response()
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", request.method(), request.uri().path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_taken_from_bearer_or_basic_and_compared_whole() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_secret(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret-s3cret-s3cret"));
        assert_eq!(presented_secret(&h).as_deref(), Some("s3cret-s3cret-s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:pa:ss");
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
        assert_eq!(presented_secret(&h).as_deref(), Some("pa:ss"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(presented_secret(&h), None);
    }

    #[test]
    fn every_error_has_its_status() {
        let name = |n: &str| parse_name(n).unwrap_err();
        assert_eq!(name("a..b").status(), StatusCode::BAD_REQUEST);
        assert!(name("../etc").to_string().contains("../etc"));
        assert_eq!(name("a..b").to_string().matches("a..b").count(), 1, "the name is said once");
        assert_eq!(ApiError::from(SupervisorError::NotFound("x".into())).status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(SupervisorError::NotRunning("x".into())).status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::from(HeartbeatReject::BadSignature("x".into())).status(), StatusCode::FORBIDDEN);
        assert_eq!(ApiError::from(HeartbeatReject::Malformed("x".into())).status(), StatusCode::BAD_REQUEST);
        let unauthorized = ApiError::Unauthorized.into_response();
        assert_eq!(unauthorized.headers().get_all(header::WWW_AUTHENTICATE).iter().count(), 2);
    }

    #[test]
    fn the_events_query_takes_since_and_limit_and_says_what_is_wrong() {
        assert_eq!(events_query("").unwrap(), (0, None));
        assert_eq!(events_query("since=7&limit=3").unwrap(), (7, Some(3)));
        for (bad, says) in
            [("since=x", "sequence number"), ("limit=0", "at least 1"), ("limit=-1", "count"), ("to=3", "unknown")]
        {
            let e = events_query(bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
