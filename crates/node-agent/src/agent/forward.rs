//! Operators' requests about a vserver that another host owns (`sync`, `clear`, `announce`, `migrate`): this
//! agent passes them on to the owner's agent, as the ownership table names it, and answers with the owner's
//! answer (its status and body, the header [`FORWARDED_TO_HEADER`] naming it), so that the API and the
//! `vserver` command work from any host. The owner runs every check of its own on the request; one passed on
//! carries [`FORWARDED_BY_HEADER`] and is answered where it lands, never passed on again. A migrate passed on
//! is followed here: `GET /v1/vservers/NAME/migration` on this host shows the owner's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use failover::wire::{ErrorBody, MigrationStatus, FORWARDED_BY_HEADER, FORWARDED_TO_HEADER};
use isolate::VserverName;

use super::node::Agent;
use crate::model::PeerState;

/// Longest wait for the owner's answer: a sync copies a tree (the owner's own time limits end it first).
const OWNER_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a migrate passed on is followed without an answer from its owner before this host stops following.
const FOLLOW_SILENCE: Duration = Duration::from_secs(120);
/// How often the owner's state is looked at while its answer is awaited, and a migrate passed on is followed.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The host a request about a vserver goes to: its owner, as this host's copy of the table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's name.
    pub host: String,
    /// The ownership epoch that gives it the vserver.
    pub epoch: u64,
}

/// Why a request for a vserver owned elsewhere was not answered by its owner (503).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The table names an owner this host cannot send to.
    #[error(
        "{name} belongs to {owner} (ownership epoch {epoch}), which is not a peer of this host: ask on {owner}; \
         nothing was done"
    )]
    NotAPeer {
        /// The vserver.
        name: String,
        /// Its owner.
        owner: String,
        /// The epoch.
        epoch: u64,
    },
    /// The owner is dead as this host hears it.
    #[error(
        "{name} belongs to {owner} (ownership epoch {epoch}), which is {state} as this host hears it: the {what} is \
         its owner's to do; nothing was done (see vserver-stat --cluster; ask again once it is back or taken over)"
    )]
    NotHeard {
        /// What was asked (`sync`, `migrate`...).
        what: String,
        /// The vserver.
        name: String,
        /// Its owner.
        owner: String,
        /// The epoch.
        epoch: u64,
        /// How this host hears the owner.
        state: String,
    },
    /// The request went to the owner, and no answer came back.
    #[error(
        "{name} belongs to {owner} (ownership epoch {epoch}): the {what} was forwarded to {owner} but no answer came \
         ({reason}); it may or may not have been done there"
    )]
    NoAnswer {
        /// What was asked.
        what: String,
        /// The vserver.
        name: String,
        /// Its owner.
        owner: String,
        /// The epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
}

/// How this host hears `host` (`None`: not a peer it judges).
fn heard(agent: &Agent, host: &str) -> Option<PeerState> {
    agent.membership.peers().into_iter().find(|p| p.name == host).map(|p| p.state)
}

/// The owner a request (`what`) about `name` goes to; `None` to answer it here: this host owns it, the table
/// names no owner (it was cleared), or the request was passed on already.
pub fn owner_elsewhere(
    agent: &Agent,
    name: &VserverName,
    headers: &HeaderMap,
    what: &str,
) -> Result<Option<Owner>, ForwardError> {
    if headers.contains_key(FORWARDED_BY_HEADER) {
        return Ok(None);
    }
    // Before the table records its first owner (just after the cluster formed), its configured primary.
    let owner = agent.ownership.owner(name.as_str()).or_else(|| {
        let epoch = agent.ownership.epoch(name.as_str());
        agent.replication.placement(name).filter(|_| epoch == 0).map(|p| (p.primary, epoch))
    });
    let Some((owner, epoch)) = owner else { return Ok(None) };
    if owner == agent.config.node {
        return Ok(None);
    }
    if !agent.peers.knows(&owner) {
        return Err(ForwardError::NotAPeer { name: name.to_string(), owner, epoch });
    }
    // A peer this host does not watch is never judged dead: it is tried.
    if let Some(state @ PeerState::Dead) = heard(agent, &owner) {
        let state = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        return Err(ForwardError::NotHeard { what: what.into(), name: name.to_string(), owner, epoch, state });
    }
    Ok(Some(Owner { host: owner, epoch }))
}

/// Sends `POST path` (with `body`, JSON) about `name` to its owner and answers with the owner's answer: a
/// refusal's sentence says where it was forwarded. Given up, as unanswered, once the owner is no longer heard.
/// A migrate the owner started is followed here.
pub async fn relay(
    agent: &Arc<Agent>,
    name: &VserverName,
    owner: &Owner,
    what: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ForwardError> {
    let no_answer = |reason: String| ForwardError::NoAnswer {
        what: what.into(),
        name: name.to_string(),
        owner: owner.host.clone(),
        epoch: owner.epoch,
        reason,
    };
    tracing::info!(vserver = %name, owner = %owner.host, epoch = owner.epoch, "{what} forwarded to the owner");
    let sent = agent.peers.relay(&owner.host, reqwest::Method::POST, path, body, OWNER_TIMEOUT);
    let gone = async {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            if heard(agent, &owner.host) == Some(PeerState::Dead) {
                return;
            }
        }
    };
    let (status, body) = tokio::select! {
        answer = sent => answer.map_err(|e| no_answer(e.0))?,
        () = gone => return Err(no_answer(format!("{} is no longer heard", owner.host))),
    };
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = if status.is_success() {
        if what == "migrate" {
            follow(agent, name, &owner.host, &body);
        }
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        let reason = serde_json::from_str::<ErrorBody>(&body).map(|b| b.error).unwrap_or(body);
        let error = format!(
            "{what} of {name} forwarded to {}, its owner (ownership epoch {}), which answered: {reason}",
            owner.host, owner.epoch
        );
        Json(ErrorBody { error }).into_response()
    };
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&owner.host) {
        response.headers_mut().insert(FORWARDED_TO_HEADER, value);
    }
    Ok(response)
}

/// Follows the migrate of `name` that `owner` started at this host's request (`started`: its first status),
/// keeping this host's record of it (`GET /v1/vservers/NAME/migration`) the owner's, until it ends. A migrate
/// of this host's own that runs is left alone.
fn follow(agent: &Arc<Agent>, name: &VserverName, owner: &str, started: &str) {
    let Ok(first) = serde_json::from_str::<MigrationStatus>(started) else { return };
    if !agent.migrations.begin(name, first) {
        return;
    }
    let (agent, name, owner) = (Arc::clone(agent), name.clone(), owner.to_string());
    tokio::spawn(async move {
        let stop = |why: String| {
            tracing::warn!(vserver = %name, %owner, "stopped following the migrate: {why}");
            agent.migrations.update(&name, |m| {
                m.finished = true;
                m.phase = "unknown".into();
                m.error = Some(why);
            });
        };
        let mut answered = Instant::now();
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            match agent.peers.migration(&owner, name.as_str(), Duration::from_secs(10)).await {
                Ok(Ok(now)) => {
                    answered = Instant::now();
                    let finished = now.finished;
                    agent.migrations.update(&name, |m| *m = now);
                    if finished {
                        return;
                    }
                }
                Ok(Err(refused)) => {
                    return stop(format!(
                        "{owner} no longer knows the migrate ({refused}): its agent restarted? Its outcome is in \
                         vserver-stat --history"
                    ))
                }
                Err(e) if answered.elapsed() >= FOLLOW_SILENCE || heard(&agent, &owner) == Some(PeerState::Dead) => {
                    return stop(format!(
                        "no answer from {owner} about the migrate for {} s ({e}): its outcome is not known here; \
                         see vserver-stat --cluster and --history",
                        answered.elapsed().as_secs()
                    ))
                }
                Err(_) => {}
            }
        }
    });
}
