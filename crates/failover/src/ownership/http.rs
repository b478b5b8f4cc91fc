//! The server side of the Raft transport: the axum routes peers call, each behind the cluster's bearer
//! secret (compared in constant time; 401 without it).
//!
//! - `POST /v1/raft/append`, `/v1/raft/vote`, `/v1/raft/snapshot`: openraft's RPCs, JSON in, openraft's
//!   `Result` as JSON out. A request carrying another node's id in `x-raft-target` is refused with 409.
//! - `POST /v1/raft/propose`: a [`Command`] forwarded by a follower, written here if this node leads.
//! - `GET /v1/raft/metrics`: this node's [`MetricsSummary`](super::MetricsSummary).
//!
//! Malformed JSON is answered 400 with the parser's message; a stopped node answers 503.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use serde::de::DeserializeOwned;

use super::network::TARGET_HEADER;
use super::types::{Command, NodeId, ProposeReply};
use super::Ownership;

/// Largest request body accepted (snapshot chunks are 256 KiB before JSON).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// An error answer: a status and a message for the operator; internals stay in the logs.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        let body = Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

/// The routes of the ownership cluster, with paths from the root (`/v1/raft/...`): merge them into the
/// agent's router (`Router::merge`), whose server must be reachable at the URL the members list gives.
pub fn router(ownership: Ownership) -> Router {
    Router::new()
        .route("/v1/raft/append", post(append))
        .route("/v1/raft/vote", post(vote))
        .route("/v1/raft/snapshot", post(snapshot))
        .route("/v1/raft/propose", post(propose))
        .route("/v1/raft/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(ownership.clone(), authorize))
        .with_state(ownership)
}

/// Lets through only requests that carry the cluster's secret or come on a certified connection, and Raft RPCs
/// meant for this node.
async fn authorize(State(ownership): State<Ownership>, request: Request, next: Next) -> HttpResponse {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let certified = request.extensions().get::<crate::wire::Certified>().is_some();
    if !certified && !ownership.accepts(given) {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer secret").into_response();
    }
    if let Err(e) = check_target(request.headers(), &ownership) {
        return e.into_response();
    }
    next.run(request).await
}

fn check_target(headers: &HeaderMap, ownership: &Ownership) -> Result<(), ApiError> {
    let Some(value) = headers.get(TARGET_HEADER) else { return Ok(()) };
    let target: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("{TARGET_HEADER} is not a node id")))?;
    if target != ownership.node_id() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "this is node {} ({}), not node {target}: check the members' URLs",
                ownership.node_id(),
                ownership.host()
            ),
        ));
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

/// A stopped node cannot answer for the cluster: 503 rather than an openraft error peers would misread.
fn stopped<E: std::fmt::Debug>(result: &Result<impl Sized, RaftError<NodeId, E>>) -> Option<ApiError> {
    match result {
        Err(RaftError::Fatal(f)) => {
            Some(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("raft has stopped: {f}")))
        }
        _ => None,
    }
}

async fn append(State(ownership): State<Ownership>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let result = ownership.raft().append_entries(parse(&body)?).await;
    if let Some(e) = stopped(&result) {
        return Err(e);
    }
    Ok(Json(result).into_response())
}

async fn vote(State(ownership): State<Ownership>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let result = ownership.raft().vote(parse(&body)?).await;
    if let Some(e) = stopped(&result) {
        return Err(e);
    }
    Ok(Json(result).into_response())
}

async fn snapshot(State(ownership): State<Ownership>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let result = ownership.raft().install_snapshot(parse(&body)?).await;
    if let Some(e) = stopped(&result) {
        return Err(e);
    }
    Ok(Json(result).into_response())
}

async fn propose(State(ownership): State<Ownership>, body: Bytes) -> Result<Json<ProposeReply>, ApiError> {
    let command: Command = parse(&body)?;
    ownership.check_command(&command).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let written = tokio::time::timeout(ownership.propose_timeout(), ownership.raft().client_write(command)).await;
    match written {
        Ok(Ok(w)) => Ok(Json(ProposeReply::Applied(w.data))),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(Json(ProposeReply::NotLeader)),
        Ok(Err(RaftError::APIError(e))) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Ok(Err(RaftError::Fatal(f))) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("raft has stopped: {f}")))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not committed in time: this leader cannot reach a majority",
        )),
    }
}

async fn metrics(State(ownership): State<Ownership>) -> Json<super::MetricsSummary> {
    Json(ownership.metrics())
}
