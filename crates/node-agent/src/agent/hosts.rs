//! The cluster's hosts changed while it runs: `POST /v1/hosts/remove` (a host gone for good, or retired), on
//! any host; and the `vserver-agent recover` steps for a cluster that lost a majority of its voters for good,
//! on a host whose agent is stopped. Adding a host goes through the join (`vserver-agent token HOST --address`,
//! then `vserver-agent join`), see `join.rs`.

use std::path::Path;

use anyhow::Context;
use failover::ownership::{recover, OwnershipError};
use serde::{Deserialize, Serialize};

use super::config::AgentConfig;
use super::node::Agent;

/// The body of `POST /v1/hosts/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The hosts to take out of the cluster for good (1 to 16).
    pub hosts: Vec<String>,
}

/// The answer of `POST /v1/hosts/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveReply {
    /// The hosts taken out.
    pub removed: Vec<String>,
    /// The cluster's hosts now (this one's view).
    pub hosts: Vec<String>,
}

/// Why a change of the cluster (its hosts, its placements) was not made; nothing changed (or, for
/// `Unavailable`, the change may still commit).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// A host the cluster does not know (404).
    #[error("{0}")]
    NotFound(String),
    /// Refused as things stand (409).
    #[error("{0}")]
    Conflict(String),
    /// Not committed (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<OwnershipError> for ChangeError {
    /// A refusal of the table as the API answers it: a bad name 400, an unknown host 404, what the cluster's
    /// state refuses 409, anything else (no majority) 503.
    fn from(e: OwnershipError) -> Self {
        match e {
            OwnershipError::InvalidName { .. } | OwnershipError::Config { .. } => Self::BadRequest(e.to_string()),
            OwnershipError::UnknownHost { .. } => Self::NotFound(e.to_string()),
            OwnershipError::HostOwns { .. }
            | OwnershipError::HostsUnchangeable { .. }
            | OwnershipError::StalePlacement { .. } => Self::Conflict(e.to_string()),
            e => Self::Unavailable(e.to_string()),
        }
    }
}

/// Takes `req.hosts` out of the cluster for good (see `Ownership::remove_hosts`).
pub async fn remove(agent: &Agent, req: &RemoveRequest) -> Result<RemoveReply, ChangeError> {
    if req.hosts.is_empty() || req.hosts.len() > 16 {
        return Err(ChangeError::BadRequest(format!("hosts: give 1 to 16 host names, not {}", req.hosts.len())));
    }
    for host in &req.hosts {
        super::config::check_node_name(host).map_err(|e| ChangeError::BadRequest(format!("hosts: {e}")))?;
    }
    agent.ownership.remove_hosts(&req.hosts).await?;
    for host in &req.hosts {
        let text = format!("{host} was removed from the cluster for good (asked through {})", agent.config.node);
        let _ = agent.ownership.log("host_removed", None, &text).await;
    }
    let hosts = agent.ownership.hosts().into_keys().collect();
    Ok(RemoveReply { removed: req.hosts.clone(), hosts })
}

/// What `vserver-agent recover` does on a host whose agent is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverStep {
    /// Print what this host's copy of the table holds.
    Show,
    /// Make this host the only voter of the cluster, keeping its table.
    ForceNewCluster,
    /// Set this host's copy aside, so that it joins the recovered cluster afresh.
    Rejoin,
}

/// Carries out `step` on the files of this host's stopped agent; the lines to print.
pub fn recover(config_path: &Path, step: RecoverStep) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let dir = config.state_dir.join("raft");
    let show = |s: &recover::LocalState| {
        let last = s.last_log.map_or("none".to_string(), |(term, index)| format!("term {term}, index {index}"));
        format!(
            "{}: last entry {last}; committed up to {}; voters {}; other members {}",
            dir.display(),
            s.committed.map_or("none".into(), |c| c.to_string()),
            s.voters.join(", "),
            if s.learners.is_empty() { "none".into() } else { s.learners.join(", ") }
        )
    };
    match step {
        RecoverStep::Show => Ok(format!(
            "{}\nCompare the last entry on every surviving host: force the new cluster on the one with the \
             largest (term first, then index).",
            show(&recover::local_state(&dir)?)
        )),
        RecoverStep::ForceNewCluster => {
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            let node = failover::ownership::HostNode {
                name: config.node.clone(),
                url: format!("{scheme}://{}", config.listen),
            };
            let now = recover::force_new_cluster(&dir, super::node::raft_node_id(&config.node), node)
                .context("forcing a new cluster")?;
            Ok(format!(
                "{}\n{} is now the only voter, with the table it held. Start its agent; then on each other \
                 surviving host `vserver-agent recover --rejoin` and start its agent (each is taken in as a \
                 learner, and voters are chosen again as they catch up); then `vserver-agent remove HOST...` for \
                 the hosts lost for good.",
                show(&now),
                config.node
            ))
        }
        RecoverStep::Rejoin => {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let to = recover::set_aside(&dir, stamp).context("setting this host's copy of the table aside")?;
            Ok(format!(
                "this host's copy of the table was moved to {}: start its agent, and the recovered cluster takes it \
                 in as a learner",
                to.display()
            ))
        }
    }
}
