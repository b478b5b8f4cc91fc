//! The cluster's ownership table, replicated with Raft (openraft): for each vserver, the host that owns it
//! and the epoch of that decision. A change is a compare-and-set on the epoch, committed by a majority of
//! the voters before [`Ownership::set_owner`] returns; so a host starts a vserver only after the cluster
//! has recorded it as the owner, and a decision taken against an old epoch is refused (DESIGN.md, invariant
//! 1).
//!
//! Parts: [`types`] (commands, responses, the table), `log_store` (the durable log in redb), `state_machine`
//! (the table and its snapshots), `network` (Raft RPCs over HTTP with reqwest), [`router`] (the matching
//! axum routes, which the agent merges into its server), and [`Ownership`], the handle the agent uses.
//!
//! Writes made on a follower are forwarded to the leader over HTTP (`POST /v1/raft/propose`), so the
//! caller never has to find the leader itself.

pub mod http;
mod log_store;
mod network;
pub mod recover;
mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use isolate::spec::SpecError;
use isolate::VserverName;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use types::{
    Command, Event, HostNode, Maintenance, MaintenanceMark, NodeId, OwnerEntry, Response, TableState, TypeConfig,
};

use network::{route_url, HttpNetwork};
use state_machine::{Applied, StateMachine};
use types::{OwnershipRaft, MAX_EVENT_TEXT};

/// The file, in the data directory, that holds the Raft log, vote and committed index.
pub const LOG_FILE: &str = "raft.redb";

/// Why the ownership table could not be opened, read or changed.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The configuration cannot work (a member twice, this node missing, a timing out of order...).
    #[error("invalid ownership configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// openraft refused the timing.
    #[error("invalid raft timing: {source}")]
    Timing {
        /// openraft's reason.
        source: Box<openraft::ConfigError>,
    },
    /// A vserver or host name that is not a valid name; nothing was proposed.
    #[error("invalid {what}: {source}")]
    InvalidName {
        /// `vserver name` or `host name`.
        what: &'static str,
        /// Why the name was refused.
        source: SpecError,
    },
    /// The new owner is not a member of the cluster; nothing was proposed.
    #[error("host {host:?} is not a member of the cluster (members: {members})")]
    UnknownHost {
        /// The host asked for.
        host: String,
        /// The members known here, comma separated.
        members: String,
    },
    /// An event text over [`types::MAX_EVENT_TEXT`] bytes; nothing was proposed.
    #[error("event text is {len} bytes, more than the {max} allowed")]
    EventTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The data directory could not be created.
    #[error("cannot create the raft data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log database could not be opened (another process has it, or it is damaged).
    #[error("cannot open the raft log {path}: {source}")]
    OpenLog {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// The last snapshot could not be read.
    #[error("cannot read the raft snapshot in {path}: {source}")]
    LoadSnapshot {
        /// The data directory.
        path: PathBuf,
        /// The OS or JSON error.
        source: std::io::Error,
    },
    /// openraft could not start on the stores (it checks them at start).
    #[error("cannot start raft node {node_id}: {source}")]
    Start {
        /// This node.
        node_id: NodeId,
        /// openraft's error.
        source: Box<Fatal<NodeId>>,
    },
    /// Forming the cluster failed for another reason than "already formed".
    #[error("cannot initialize the cluster from node {node_id}: {source}")]
    Initialize {
        /// This node.
        node_id: NodeId,
        /// openraft's error.
        source: Box<RaftError<NodeId, InitializeError<NodeId, HostNode>>>,
    },
    /// The change was refused: the vserver's epoch is no longer the one expected. Nothing changed.
    #[error("vserver {vserver}: epoch {expected} is stale, the current epoch is {current} (owner {owner:?}); read the table again")]
    StaleEpoch {
        /// The vserver.
        vserver: String,
        /// The epoch the caller expected.
        expected: u64,
        /// The vserver's epoch.
        current: u64,
        /// The vserver's owner.
        owner: Option<String>,
    },
    /// A takeover was refused: the cluster (`host` none) or the host it takes from is in maintenance.
    #[error("vserver {vserver}: not taken over, {} is in maintenance", host.as_deref().map_or("the cluster".to_string(), |h| format!("host {h}")))]
    InMaintenance {
        /// The vserver.
        vserver: String,
        /// The host in maintenance; none for the whole cluster.
        host: Option<String>,
    },
    /// No majority committed the change in time (no leader, or the leader cannot reach a majority). The
    /// change may still commit later: read the table before retrying; a retry with the same expected epoch
    /// is safe (it either applies once or finds the change already made).
    #[error("{what} was not committed within {waited:?}: no majority of the cluster answered (leader: {})", leader.as_deref().unwrap_or("none"))]
    NotCommitted {
        /// The change, in words.
        what: String,
        /// How long it was tried.
        waited: Duration,
        /// The leader last known here.
        leader: Option<String>,
    },
    /// A host to take out of the cluster still owns vservers; nothing changed.
    #[error("{host} still owns {}: migrate them away (or evacuate it) first", vservers.join(", "))]
    HostOwns {
        /// The host.
        host: String,
        /// The vservers it owns.
        vservers: Vec<String>,
    },
    /// A placement's change was refused: its revision is no longer the one expected. Nothing changed.
    #[error("vserver {vserver}: placement revision {expected} is stale, the current one is {current}; read the placements again")]
    StalePlacement {
        /// The vserver.
        vserver: String,
        /// The revision the caller expected.
        expected: u64,
        /// Its revision (0: not placed).
        current: u64,
    },
    /// A change of the cluster's hosts (or placements) cannot be made now; nothing was proposed.
    #[error("{reason}")]
    HostsUnchangeable {
        /// Why.
        reason: String,
    },
    /// This node's Raft has stopped (shut down, or a storage failure).
    #[error("raft on node {node_id} has stopped: {source}")]
    Stopped {
        /// This node.
        node_id: NodeId,
        /// openraft's reason.
        source: Box<Fatal<NodeId>>,
    },
}

/// One host of the cluster, as every host's configuration lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its Raft node id: unique, stable for the host's life, never reused for another host.
    pub id: NodeId,
    /// Its host name (a valid vserver-style name: letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The base URL of its agent (`http://10.0.0.2:7070`), under which `/v1/raft/*` is served.
    pub url: String,
}

/// Raft timing, in milliseconds.
///
/// The defaults suit hosts on one LAN (round trips well under a millisecond, an fsync of a few) and a
/// takeover of about 2-3 s from crash to service: a leader sends a heartbeat every 100 ms, and a follower
/// that hears nothing for a random 400-800 ms stands for election. So a dead leader is replaced within
/// about 0.5-1 s (the timeout plus one vote round trip), leaving the rest of the budget to fencing, the
/// replica's promotion and the vserver's start; yet 4-8 missed heartbeats in a row are needed before a
/// follower acts, so a scheduling hiccup or a lost packet does not depose a healthy leader. The random
/// spread (as wide as the minimum) makes split votes rare. openraft bounds an append by the heartbeat
/// interval and a vote by the minimum election timeout; `rpc_timeout_ms` bounds everything else (snapshot
/// chunks, forwarded proposals, probes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Interval between a leader's heartbeats (default 500). openraft also cancels an append at this limit,
    /// so it must exceed the slowest round trip the cluster has (500 ms supports about 450 ms).
    pub heartbeat_ms: u64,
    /// Shortest time without a leader before a follower stands for election (default 1000); openraft also
    /// cancels a vote at this limit. Several heartbeats fit in it, so a lossy link does not lose the leader.
    /// A follower stands only once `election_max_ms` (the leader's lease) and then its own random timeout
    /// have passed since it last heard the leader: so a crashed coordinator is replaced 2.4 to 2.8 s after
    /// its last heartbeat by default, about the takeover timeout, and the takeovers it was due start at once.
    pub election_min_ms: u64,
    /// Longest such time (default 1400), also the leader's lease.
    pub election_max_ms: u64,
    /// Limit of one HTTP request to a peer (default 1000).
    pub rpc_timeout_ms: u64,
    /// How long a change is tried (leader changes included) before `NotCommitted` (default 3000).
    pub propose_timeout_ms: u64,
    /// Log entries applied between two snapshots (default 1000).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a briefly absent peer catches up without one (default 1000).
    pub logs_kept_after_snapshot: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 500,
            election_min_ms: 1000,
            election_max_ms: 1400,
            rpc_timeout_ms: 1000,
            propose_timeout_ms: 3000,
            snapshot_every: 1000,
            logs_kept_after_snapshot: 1000,
        }
    }
}

/// Everything [`Ownership::open`] needs.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// This host's node id (it must be one of `members`).
    pub node_id: NodeId,
    /// Where the log and snapshots live (the agent passes `STATE_DIR/raft`); created if missing.
    pub data_dir: PathBuf,
    /// Every host of the cluster, this one included; the same list on every host.
    pub members: Vec<Member>,
    /// The bearer secret every cluster member sends and checks.
    pub secret: String,
    /// Further secrets accepted from members (a rotation under way); this member sends `secret`.
    pub also_accepted: Vec<String>,
    /// Whether this member's client presents a certificate the cluster CA signed, which the others admit
    /// instead of the secret over https (the secret then never travels there).
    pub certified: bool,
    /// The HTTP client for peers (the agent passes its own, configured with TLS).
    pub client: reqwest::Client,
    /// Raft timing.
    pub timing: Timing,
}

impl OwnershipConfig {
    /// A configuration with a default client and default timing.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>, members: Vec<Member>, secret: impl Into<String>) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            members,
            secret: secret.into(),
            also_accepted: Vec::new(),
            certified: false,
            client: reqwest::Client::new(),
            timing: Timing::default(),
        }
    }

    /// Checks what openraft would not: unique ids and names, valid names, this node listed, timing in order.
    fn check(&self) -> Result<(), OwnershipError> {
        let bad = |reason: String| Err(OwnershipError::Config { reason });
        if self.secret.is_empty() {
            return bad("the secret is empty".into());
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for m in &self.members {
            VserverName::parse(&m.name).map_err(|source| OwnershipError::InvalidName { what: "host name", source })?;
            if !ids.insert(m.id) {
                return bad(format!("node id {} is given to two members", m.id));
            }
            if !names.insert(m.name.as_str()) {
                return bad(format!("host {} is listed twice", m.name));
            }
            if !(m.url.starts_with("http://") || m.url.starts_with("https://")) {
                return bad(format!("member {}: url {:?} does not start with http:// or https://", m.name, m.url));
            }
        }
        if !ids.contains(&self.node_id) {
            return bad(format!("this node's id {} is not among the members", self.node_id));
        }
        let t = &self.timing;
        if !(t.heartbeat_ms > 0 && t.heartbeat_ms < t.election_min_ms && t.election_min_ms < t.election_max_ms) {
            return bad(format!(
                "timing must satisfy 0 < heartbeat_ms ({}) < election_min_ms ({}) < election_max_ms ({})",
                t.heartbeat_ms, t.election_min_ms, t.election_max_ms
            ));
        }
        if t.rpc_timeout_ms == 0 || t.propose_timeout_ms == 0 || t.snapshot_every == 0 {
            return bad("rpc_timeout_ms, propose_timeout_ms and snapshot_every must be above 0".into());
        }
        Ok(())
    }
}

/// Which hosts vote and which only follow, for a cluster of `hosts`: returns (voters, learners), each
/// sorted by name, duplicates removed. The rule is deterministic, so every host computes the same.
///
/// - 1 or 2 hosts: all vote (2 hosts tolerate no failure: add a third host for automatic takeover).
/// - 3 or 4 hosts: 3 voters. For 4 hosts, 3 voters and 1 learner tolerate one failure, exactly as 4
///   voters would (a majority of 4 is 3), with one replica fewer to wait for on each commit.
/// - 5 hosts or more: 5 voters (tolerating two failures); the rest are learners, which receive the table
///   but do not vote, so commits do not slow down as the cluster grows.
pub fn voters_for(hosts: &[String]) -> (Vec<String>, Vec<String>) {
    let mut sorted: Vec<String> = hosts.to_vec();
    sorted.sort();
    sorted.dedup();
    let voters = match sorted.len() {
        0..=2 => sorted.len(),
        3..=4 => 3,
        _ => 5,
    };
    let learners = sorted.split_off(voters);
    (sorted, learners)
}

/// A host's Raft node id: the first 8 bytes of the SHA-256 of its name, so every host computes the same ids
/// from the same names, and an id is never reused for another name.
pub fn node_id_of(name: &str) -> NodeId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The voters the cluster should have once `removed` are gone, when that differs from `voters`: as many as
/// [`voters_for`] gives the remaining `hosts`, keeping the voters that remain (when there are too many, the
/// `healthy` ones first, each group by name), then adding learners that are `caught_up` (by name) when there
/// are too few. `None` when nothing should change, or when no voter would remain.
pub fn next_voters(
    voters: &BTreeSet<String>,
    hosts: &BTreeSet<String>,
    removed: &BTreeSet<String>,
    caught_up: &BTreeSet<String>,
    healthy: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    let remaining: Vec<String> = hosts.iter().filter(|h| !removed.contains(*h)).cloned().collect();
    let target = voters_for(&remaining).0.len();
    let mut staying: Vec<&String> = voters.iter().filter(|v| !removed.contains(*v)).collect();
    staying.sort_by_key(|v| (!healthy.contains(*v), (*v).clone()));
    let mut next: BTreeSet<String> = staying.into_iter().take(target).cloned().collect();
    for learner in caught_up.iter().filter(|l| !removed.contains(*l) && !voters.contains(*l)) {
        if next.len() >= target {
            break;
        }
        next.insert(learner.clone());
    }
    (!next.is_empty() && next != *voters).then_some(next)
}

/// A summary of this node's Raft state, for status pages and for fencing decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's host name.
    pub host: String,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    /// The current term.
    pub term: u64,
    /// The leader's host name, if one is known.
    pub leader: Option<String>,
    /// The index of the last log entry.
    pub last_log_index: Option<u64>,
    /// The index of the last entry applied to the table.
    pub last_applied: Option<u64>,
    /// The index of the last entry the last snapshot holds.
    pub snapshot_index: Option<u64>,
    /// The index of the last entry removed from the log (it lives on in the snapshot).
    pub purged_index: Option<u64>,
    /// The voters' host names.
    pub voters: Vec<String>,
    /// The learners' host names.
    pub learners: Vec<String>,
    /// On the leader: milliseconds since a majority last acknowledged it (a leader that sees this grow past
    /// the election timeout has lost its majority).
    pub millis_since_quorum_ack: Option<u64>,
    /// Whether the cluster has been formed (this node knows a membership).
    pub initialized: bool,
    /// This node reads the entries that add and remove hosts ([`Command::AddHost`], [`Command::RemoveHost`]):
    /// absent (false) from a node of an earlier release, which would stop on them.
    #[serde(default)]
    pub reads_host_changes: bool,
    /// This node reads the entries that place vservers ([`Command::Place`], [`Command::SeedPlacements`]):
    /// absent (false) from a node of an earlier release.
    #[serde(default)]
    pub reads_placements: bool,
}

/// An entry kind an earlier release cannot read: proposed only once every host answers that it reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// [`Command::AddHost`] and [`Command::RemoveHost`].
    HostChanges,
    /// [`Command::Place`] and [`Command::SeedPlacements`].
    Placements,
}

impl Readers {
    fn reads(self, m: &MetricsSummary) -> bool {
        match self {
            Readers::HostChanges => m.reads_host_changes,
            Readers::Placements => m.reads_placements,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Readers::HostChanges => "a change of the cluster's hosts",
            Readers::Placements => "a placement recorded in the cluster's table",
        }
    }
}

/// The placements the cluster's table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTable {
    /// Each protected vserver's placement and revision.
    pub placements: BTreeMap<String, types::PlacedEntry>,
    /// The hosts whose cluster file was taken in.
    pub taken_from: BTreeSet<String>,
    /// The revision of the last change.
    pub revision: u64,
    /// The vservers an operator took out, which no cluster file brings back (not shown by the API).
    #[serde(skip)]
    pub unplaced: BTreeSet<String>,
}

/// The handle on this host's member of the ownership cluster; clones share it.
#[derive(Clone)]
pub struct Ownership {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    host: String,
    members: Vec<Member>,
    timing: Timing,
    secret: Arc<str>,
    also_accepted: Vec<String>,
    /// How this member authenticates its requests.
    credentials: crate::peer::Credentials,
    client: reqwest::Client,
    raft: OwnershipRaft,
    applied: Arc<RwLock<Applied>>,
    /// The hosts heard alive lately (see [`Ownership::set_alive`]); `None`: every host counts as alive.
    alive: Arc<RwLock<Option<BTreeSet<String>>>>,
    reconciler: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// What one attempt at a proposal came to.
enum Attempt {
    Done(Response),
    Retry,
    Failed(OwnershipError),
}

impl Ownership {
    /// Opens this node: checks the configuration, opens (or creates) the log and the last snapshot in
    /// `data_dir`, and starts Raft. The node takes part in the cluster once its routes are served (see
    /// [`router`]); a new cluster also needs [`Ownership::initialize_if_first`].
    pub async fn open(config: OwnershipConfig) -> Result<Ownership, OwnershipError> {
        config.check()?;
        let dir = config.data_dir.clone();
        let (log_store, state_machine) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|source| OwnershipError::CreateDir { path: dir.clone(), source })?;
                let path = dir.join(LOG_FILE);
                let log = log_store::open(&path).map_err(|source| OwnershipError::OpenLog { path, source })?;
                let sm =
                    StateMachine::open(&dir).map_err(|source| OwnershipError::LoadSnapshot { path: dir, source })?;
                Ok::<_, OwnershipError>((log, sm))
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
        };
        let t = &config.timing;
        let raft_config = openraft::Config {
            cluster_name: "vserver-ownership".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: t.rpc_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
            // Chunks travel as JSON arrays of numbers (about 4 bytes per byte): keep them well under the
            // routes' body limit.
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|source| OwnershipError::Timing { source: Box::new(source) })?;
        let secret: Arc<str> = Arc::from(config.secret.as_str());
        let credentials = crate::peer::Credentials::new(&secret, config.certified);
        let network = HttpNetwork {
            client: config.client.clone(),
            credentials: credentials.clone(),
            timeout: Duration::from_millis(t.rpc_timeout_ms),
            urls: Arc::new(config.members.iter().map(|m| (m.id, m.url.clone())).collect()),
            reach: Arc::default(),
            metrics: Arc::default(),
        };
        let metrics = Arc::clone(&network.metrics);
        let applied = state_machine.applied();
        let raft = OwnershipRaft::new(config.node_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|source| OwnershipError::Start { node_id: config.node_id, source: Box::new(source) })?;
        let _ = metrics.set(raft.metrics());
        let host = config.members.iter().find(|m| m.id == config.node_id).map(|m| m.name.clone()).unwrap_or_default();
        let alive = Arc::new(RwLock::new(None));
        let reconciler = tokio::spawn(reconcile_membership(
            raft.clone(),
            config.members.clone(),
            Arc::clone(&applied),
            Arc::clone(&alive),
        ));
        tracing::info!(host = %host, dir = %dir.display(), "ownership raft started");
        Ok(Ownership {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                host,
                members: config.members,
                timing: config.timing,
                secret,
                also_accepted: config.also_accepted,
                credentials,
                client: config.client,
                raft,
                applied,
                alive,
                reconciler: Mutex::new(Some(reconciler)),
            }),
        })
    }

    /// Forms the cluster if nobody has: safe to call on every host at every start. It does nothing (and
    /// returns false) when this node already has a log, when this host is not one of the voters chosen by
    /// [`voters_for`] (the leader adds it as a learner), or when a peer that answers already has a
    /// membership. Otherwise it initializes Raft with the voters (every host computes the same set, and
    /// openraft accepts the same initialization from several nodes) and returns true; the leader then adds
    /// the learners.
    pub async fn initialize_if_first(&self) -> Result<bool, OwnershipError> {
        let inner = &self.inner;
        let initialized = inner
            .raft
            .is_initialized()
            .await
            .map_err(|source| OwnershipError::Stopped { node_id: inner.node_id, source: Box::new(source) })?;
        if initialized {
            return Ok(false);
        }
        let names: Vec<String> = inner.members.iter().map(|m| m.name.clone()).collect();
        let (voters, _) = voters_for(&names);
        if !voters.contains(&inner.host) {
            return Ok(false);
        }
        if self.a_peer_is_initialized().await {
            tracing::info!(host = %inner.host, "a peer already has the cluster: not initializing");
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, HostNode> = inner
            .members
            .iter()
            .filter(|m| voters.contains(&m.name))
            .map(|m| (m.id, HostNode { name: m.name.clone(), url: m.url.clone() }))
            .collect();
        match inner.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(host = %inner.host, voters = ?voters, "ownership cluster initialized");
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(source) => Err(OwnershipError::Initialize { node_id: inner.node_id, source: Box::new(source) }),
        }
    }

    /// Asks every peer, at once and briefly, whether it knows a membership.
    async fn a_peer_is_initialized(&self) -> bool {
        let inner = &self.inner;
        let probes = inner.members.iter().filter(|m| m.id != inner.node_id).map(|m| {
            let url = route_url(&m.url, "metrics");
            let request = inner
                .credentials
                .apply(inner.client.get(&url), &url)
                .timeout(Duration::from_millis(inner.timing.rpc_timeout_ms));
            async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => r.json::<MetricsSummary>().await.is_ok_and(|m| m.initialized),
                    _ => false,
                }
            }
        });
        let handles: Vec<_> = probes.map(tokio::spawn).collect();
        let mut any = false;
        for h in handles {
            any |= h.await.unwrap_or(false);
        }
        any
    }

    /// Makes `owner` the owner of `vserver`, if the vserver's epoch is still `expected_epoch` (0 for a
    /// vserver never owned); returns the new (owner, epoch). When it returns Ok, a majority has committed
    /// the change. If the change is found already made (the epoch is `expected_epoch + 1` with this very
    /// owner, e.g. a retry of a write whose first answer was lost), it returns Ok too. A follower forwards
    /// the proposal to the leader; leader changes are retried until `propose_timeout_ms`.
    pub async fn set_owner(
        &self,
        vserver: &str,
        owner: &str,
        expected_epoch: u64,
    ) -> Result<(String, u64), OwnershipError> {
        let vserver = parse_name("vserver name", vserver)?;
        let owner = parse_name("host name", owner)?;
        self.check_member(owner.as_str())?;
        let command = Command::SetOwner { vserver: vserver.to_string(), owner: owner.to_string(), expected_epoch };
        let (owner, epoch) =
            self.compare_and_set(command, vserver.as_str(), Some(owner.as_str()), expected_epoch).await?;
        Ok((owner.unwrap_or_default(), epoch))
    }

    /// A takeover's [`Ownership::set_owner`]: refused ([`OwnershipError::InMaintenance`]) when the cluster or
    /// `from` is in maintenance as the log stands when it applies.
    pub async fn take_over(
        &self,
        vserver: &str,
        owner: &str,
        expected_epoch: u64,
        from: &str,
    ) -> Result<(String, u64), OwnershipError> {
        let vserver = parse_name("vserver name", vserver)?;
        let owner = parse_name("host name", owner)?;
        self.check_member(owner.as_str())?;
        let command = Command::TakeOver {
            vserver: vserver.to_string(),
            owner: owner.to_string(),
            expected_epoch,
            from: from.to_string(),
        };
        let (owner, epoch) =
            self.compare_and_set(command, vserver.as_str(), Some(owner.as_str()), expected_epoch).await?;
        Ok((owner.unwrap_or_default(), epoch))
    }

    /// Turns maintenance on or off for `host`, or (none) for the whole cluster, once a majority committed it;
    /// `by` is the host through which an operator asked.
    pub async fn set_maintenance(&self, host: Option<&str>, on: bool, by: &str) -> Result<(), OwnershipError> {
        if let Some(h) = host {
            self.check_member(h)?;
        }
        parse_name("host name", by)?;
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let command = Command::Maintenance { host: host.map(str::to_string), on, at_ms, by: by.to_string() };
        self.propose(command).await.map(drop)
    }

    /// Maintenance as applied on this node.
    pub fn maintenance(&self) -> Maintenance {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.maintenance.clone()
    }

    /// Whether maintenance covers `host` (it, or the whole cluster), without a copy of the marks: the lease
    /// watch asks 20 times a second.
    pub fn maintenance_covers(&self, host: &str) -> bool {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.maintenance.covers(host)
    }

    /// Leaves `vserver` without owner, if its epoch is still `expected_epoch`; returns the new epoch (the
    /// epoch keeps growing, so no older command can apply again).
    pub async fn clear(&self, vserver: &str, expected_epoch: u64) -> Result<u64, OwnershipError> {
        let vserver = parse_name("vserver name", vserver)?;
        let command = Command::Clear { vserver: vserver.to_string(), expected_epoch };
        let (_, epoch) = self.compare_and_set(command, vserver.as_str(), None, expected_epoch).await?;
        Ok(epoch)
    }

    async fn compare_and_set(
        &self,
        command: Command,
        vserver: &str,
        owner: Option<&str>,
        expected_epoch: u64,
    ) -> Result<(Option<String>, u64), OwnershipError> {
        match self.propose(command).await? {
            Response::Applied { owner, epoch, .. } => Ok((owner, epoch)),
            Response::StaleEpoch { current, owner: now, .. }
                if current == expected_epoch + 1 && now.as_deref() == owner =>
            {
                Ok((now, current))
            }
            Response::StaleEpoch { vserver, expected, current, owner } => {
                Err(OwnershipError::StaleEpoch { vserver, expected, current, owner })
            }
            Response::InMaintenance { vserver, host } => Err(OwnershipError::InMaintenance { vserver, host }),
            other => {
                // The state machine answers every command with Applied or StaleEpoch; anything else
                // would be a bug, reported as a refusal at the current state.
                tracing::error!(vserver, response = ?other, "unexpected answer to a compare-and-set");
                let current = self.epoch(vserver);
                Err(OwnershipError::StaleEpoch {
                    vserver: vserver.to_string(),
                    expected: expected_epoch,
                    current,
                    owner: self.owner(vserver).map(|(o, _)| o),
                })
            }
        }
    }

    /// Appends `text` to the cluster's event log, stamped with this host and the current time; returns its
    /// sequence number once committed.
    /// Its kind is derived from the text (`takeover` for a takeover record, else `note`); see
    /// [`Ownership::log`].
    pub async fn log_event(&self, text: &str) -> Result<u64, OwnershipError> {
        self.log("", None, text).await
    }

    /// Appends an event of `kind` (a short stable word: letters, digits, `_`), about `vserver` if given, to
    /// the cluster's event log, stamped with this host and the current time; returns its sequence number once
    /// committed.
    pub async fn log(&self, kind: &str, vserver: Option<&str>, text: &str) -> Result<u64, OwnershipError> {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.log_at(kind, vserver, text, at_ms).await
    }

    /// As [`Ownership::log`], stamped with `at_ms` (ms since the Unix epoch, by this host's clock): when it
    /// happened, for what is logged after the fact (a fence logged once the host can commit again).
    pub async fn log_at(
        &self,
        kind: &str,
        vserver: Option<&str>,
        text: &str,
        at_ms: u64,
    ) -> Result<u64, OwnershipError> {
        let command = Command::Event {
            at_ms,
            host: self.inner.host.clone(),
            text: text.to_string(),
            kind: kind.to_string(),
            vserver: vserver.map(str::to_string),
        };
        self.check_command(&command)?;
        match self.propose(command).await? {
            Response::EventLogged { seq } => Ok(seq),
            other => {
                tracing::error!(response = ?other, "unexpected answer to an event");
                Ok(0)
            }
        }
    }

    /// Proposes `command` (already checked) through the leader, retrying across leader changes until the
    /// proposal timeout.
    async fn propose(&self, command: Command) -> Result<Response, OwnershipError> {
        let waited = Duration::from_millis(self.inner.timing.propose_timeout_ms);
        let deadline = Instant::now() + waited;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(OwnershipError::NotCommitted { what: describe(&command), waited, leader: self.leader() });
            }
            let attempt = match self.leader_node() {
                Some((id, _)) if id == self.inner.node_id => self.write_here(&command, remaining).await,
                Some((_, node)) => self.forward(&node, &command, remaining).await,
                None => Attempt::Retry,
            };
            match attempt {
                Attempt::Done(response) => return Ok(response),
                Attempt::Failed(e) => return Err(e),
                Attempt::Retry => {
                    let pause =
                        Duration::from_millis(self.inner.timing.heartbeat_ms / 2).max(Duration::from_millis(10));
                    tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }

    /// Writes through this node's Raft, which believed itself the leader.
    async fn write_here(&self, command: &Command, limit: Duration) -> Attempt {
        match tokio::time::timeout(limit, self.inner.raft.client_write(command.clone())).await {
            Ok(Ok(written)) => Attempt::Done(written.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Attempt::Retry,
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                // Only membership changes answer this; an application write never does.
                tracing::error!(error = %e, "membership error on an application write");
                Attempt::Retry
            }
            Ok(Err(RaftError::Fatal(source))) => {
                Attempt::Failed(OwnershipError::Stopped { node_id: self.inner.node_id, source: Box::new(source) })
            }
            Err(_elapsed) => Attempt::Retry,
        }
    }

    /// Sends the proposal to the leader's `/v1/raft/propose`.
    async fn forward(&self, leader: &HostNode, command: &Command, limit: Duration) -> Attempt {
        let url = route_url(&leader.url, "propose");
        let sent =
            self.inner.credentials.apply(self.inner.client.post(&url), &url).timeout(limit).json(command).send().await;
        let response = match sent {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::warn!(leader = %leader.name, %status, body, "the leader did not take the proposal");
                return Attempt::Retry;
            }
            Err(e) => {
                tracing::debug!(leader = %leader.name, error = %e, "cannot reach the leader");
                return Attempt::Retry;
            }
        };
        match response.json::<types::ProposeReply>().await {
            Ok(types::ProposeReply::Applied(r)) => Attempt::Done(r),
            Ok(types::ProposeReply::NotLeader) => Attempt::Retry,
            Err(e) => {
                tracing::warn!(leader = %leader.name, error = %e, "unreadable answer from the leader");
                Attempt::Retry
            }
        }
    }

    /// Refuses an owner that is neither configured nor in the membership.
    fn check_member(&self, host: &str) -> Result<(), OwnershipError> {
        let mut known: BTreeSet<String> = self.inner.members.iter().map(|m| m.name.clone()).collect();
        {
            let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
            known.extend(applied.membership.nodes().map(|(_, n)| n.name.clone()));
        }
        if known.contains(host) {
            return Ok(());
        }
        let members = known.into_iter().collect::<Vec<_>>().join(", ");
        Err(OwnershipError::UnknownHost { host: host.to_string(), members })
    }

    /// The vserver's owner and epoch, as applied on this node (a follower may lag the leader by a heartbeat
    /// or so); `None` if it was never owned or was cleared.
    pub fn owner(&self, vserver: &str) -> Option<(String, u64)> {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        let entry = applied.table.owners.get(vserver)?;
        entry.owner.clone().map(|o| (o, entry.epoch))
    }

    /// The vservers `host` owns as applied on this node, with their epochs, by name: only those are copied.
    pub fn owned_by(&self, host: &str) -> Vec<(String, u64)> {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        let owners = applied.table.owners.iter();
        owners.filter(|(_, e)| e.owner.as_deref() == Some(host)).map(|(v, e)| (v.clone(), e.epoch)).collect()
    }

    /// The vserver's epoch as applied on this node: 0 if never owned (cleared vservers keep theirs).
    pub fn epoch(&self, vserver: &str) -> u64 {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.epoch(vserver)
    }

    /// The whole table as applied on this node, cleared vservers included.
    pub fn table(&self) -> BTreeMap<String, OwnerEntry> {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.owners.clone()
    }

    /// The sequence number of the last event of the log applied on this node (0: none).
    pub fn last_event_seq(&self) -> u64 {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.events.back().map_or(0, |e| e.seq)
    }

    /// The event log as applied on this node, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.events.iter().cloned().collect()
    }

    /// The events of the log after sequence number `seq`, oldest first (only those are copied).
    pub fn events_after(&self, seq: u64) -> Vec<Event> {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        let events = &applied.table.events;
        events.range(events.partition_point(|e| e.seq <= seq)..).cloned().collect()
    }

    /// The leader's host name, if this node knows one.
    pub fn leader(&self) -> Option<String> {
        self.leader_node().map(|(_, n)| n.name)
    }

    fn leader_node(&self) -> Option<(NodeId, HostNode)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let mut node = m.membership_config.membership().get_node(&id)?.clone();
        // This host's configuration says how to reach a member; the membership records another host's view.
        if let Some(member) = self.inner.members.iter().find(|mb| mb.id == id) {
            node.url.clone_from(&member.url);
        }
        Some((id, node))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This node's host name.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// A summary of this node's Raft state.
    pub fn metrics(&self) -> MetricsSummary {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let name = |id: NodeId| membership.get_node(&id).map_or_else(|| format!("node-{id}"), |n| n.name.clone());
        let voters: Vec<String> = membership.voter_ids().map(name).collect();
        let learners: Vec<String> = membership.learner_ids().map(name).collect();
        MetricsSummary {
            node_id: self.inner.node_id,
            host: self.inner.host.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader.map(name),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            initialized: !voters.is_empty(),
            voters,
            learners,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            reads_host_changes: true,
            reads_placements: true,
        }
    }

    /// The voters of the membership this node knows, by name (none before it has learnt one). What
    /// [`Ownership::metrics`] says of them, without the rest: the lease watch asks 20 times a second, and the
    /// metrics name every learner too (every other host of a large cluster).
    pub fn voters(&self) -> Vec<String> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| membership.get_node(&id).map_or_else(|| format!("node-{id}"), |n| n.name.clone()))
            .collect()
    }

    /// The voters a host's lease is counted against: the table's, or, before this node has learnt the
    /// membership (a host that joins late, or comes back without its log), the voters the configured hosts form
    /// the cluster with ([`voters_for`]). A host configured with peers is never "outside any cluster": treating
    /// an unknown membership as none would let it start vservers with no lease at all.
    pub fn lease_voters(&self) -> Vec<String> {
        let known = self.voters();
        if !known.is_empty() {
            return known;
        }
        let names: Vec<String> = self.inner.members.iter().map(|m| m.name.clone()).collect();
        voters_for(&names).0
    }

    /// Every host of the cluster, this one included, by name with the base URL this host reaches it at: the
    /// configured hosts (at their configured URL), the membership's and those taken in through the cluster
    /// ([`Ownership::add_host`]), less those taken out for good ([`Ownership::remove_hosts`]).
    pub fn hosts(&self) -> BTreeMap<String, String> {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        let mut hosts: BTreeMap<String, String> =
            applied.membership.nodes().map(|(_, n)| (n.name.clone(), n.url.clone())).collect();
        {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            hosts.extend(m.membership_config.membership().nodes().map(|(_, n)| (n.name.clone(), n.url.clone())));
        }
        hosts.extend(applied.table.hosts.iter().map(|(h, u)| (h.clone(), u.clone())));
        hosts.extend(self.inner.members.iter().map(|m| (m.name.clone(), m.url.clone())));
        hosts.retain(|h, _| !applied.table.removed.contains(h));
        hosts
    }

    /// Tells which hosts were heard alive lately (this one included): only those are chosen as new voters.
    /// Until told, every caught-up host counts as alive.
    pub fn set_alive(&self, hosts: BTreeSet<String>) {
        *self.inner.alive.write().unwrap_or_else(|p| p.into_inner()) = Some(hosts);
    }

    /// The hosts taken out of the cluster for good.
    pub fn removed(&self) -> BTreeSet<String> {
        self.inner.applied.read().unwrap_or_else(|p| p.into_inner()).table.removed.clone()
    }

    /// Takes `host` into the cluster, its agent at `url` (or updates its URL): once committed, every host counts
    /// it among its peers and the coordinator adds it to the membership as a learner. Refused (nothing proposed)
    /// while a host does not read such entries yet (see [`Ownership::every_host_reads_host_changes`]).
    pub async fn add_host(&self, host: &str, url: &str) -> Result<(), OwnershipError> {
        let command = Command::AddHost { host: host.to_string(), url: url.to_string() };
        self.check_command(&command)?;
        self.every_host_reads(Readers::HostChanges, &BTreeSet::new()).await?;
        self.propose(command).await.map(drop)
    }

    /// Takes `hosts` out of the cluster for good, in order: once committed, no host counts one among its peers,
    /// and the coordinator removes it from the membership, choosing another voter in its place if it voted
    /// (see [`next_voters`]). Refused (nothing more proposed) at the first that still owns a vserver, and
    /// before anything while a host that stays does not read such entries.
    pub async fn remove_hosts(&self, hosts: &[String]) -> Result<(), OwnershipError> {
        let leaving: BTreeSet<String> = hosts.iter().cloned().collect();
        for host in hosts {
            parse_name("host name", host)?;
            if *host == self.inner.host {
                return Err(OwnershipError::HostsUnchangeable {
                    reason: format!("{host} is this host: ask another host of the cluster to remove it"),
                });
            }
            self.check_member(host)?;
        }
        self.every_host_reads(Readers::HostChanges, &leaving).await?;
        for host in hosts {
            match self.propose(Command::RemoveHost { host: host.clone() }).await? {
                Response::HostOwns { host, vservers } => return Err(OwnershipError::HostOwns { host, vservers }),
                _ => tracing::warn!(%host, "host removed from the cluster"),
            }
        }
        Ok(())
    }

    /// The placements the cluster's table holds.
    pub fn placements(&self) -> PlacementTable {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        PlacementTable {
            placements: applied.table.placements.clone(),
            taken_from: applied.table.placements_from.clone(),
            revision: applied.table.placement_revision,
            unplaced: applied.table.unplaced.clone(),
        }
    }

    /// The revision of the placements, and whether `host`'s cluster file was taken in: what says, without a
    /// copy of the table, that the placements changed.
    pub fn placements_mark(&self, host: &str) -> (u64, bool) {
        let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
        (applied.table.placement_revision, applied.table.placements_from.contains(host))
    }

    /// Records `vserver`'s placement (`entry`, checked by the caller), or removes it (`None`), if its revision is
    /// still `expected` (0: not placed); its new revision. Refused (nothing proposed) while a host does not read
    /// such entries yet.
    pub async fn place(
        &self,
        vserver: &str,
        entry: Option<crate::placement::VserverEntry>,
        expected: u64,
    ) -> Result<u64, OwnershipError> {
        let command = Command::Place { vserver: vserver.to_string(), entry, expected_revision: expected };
        self.check_command(&command)?;
        self.every_host_reads(Readers::Placements, &BTreeSet::new()).await?;
        match self.propose(command).await? {
            Response::Placed { revision, .. } => Ok(revision),
            Response::StaleRevision { vserver, expected, current } => {
                Err(OwnershipError::StalePlacement { vserver, expected, current })
            }
            other => Err(OwnershipError::Config { reason: format!("unexpected answer to a placement: {other:?}") }),
        }
    }

    /// Takes `host`'s cluster file (`entries`, checked) into the table, once: the vservers the table lacks and no
    /// operator removed; the vservers added. The caller made sure that every host reads such entries
    /// ([`Ownership::every_host_reads`]).
    pub async fn seed_placements(
        &self,
        host: &str,
        entries: BTreeMap<String, crate::placement::VserverEntry>,
    ) -> Result<Vec<String>, OwnershipError> {
        let command = Command::SeedPlacements { host: host.to_string(), entries };
        self.check_command(&command)?;
        match self.propose(command).await? {
            Response::Seeded { added } => Ok(added),
            other => Err(OwnershipError::Config { reason: format!("unexpected answer to a seed: {other:?}") }),
        }
    }

    /// Checks that every host of the cluster but `except` answers and reads the entries that change the
    /// cluster's hosts: an agent of an earlier release would stop on them.
    pub async fn every_host_reads_host_changes(&self, except: &BTreeSet<String>) -> Result<(), OwnershipError> {
        self.every_host_reads(Readers::HostChanges, except).await
    }

    /// Checks that every host of the cluster but `except` answers and reads the entries of kind `readers`: an
    /// agent of an earlier release would stop on them.
    pub async fn every_host_reads(&self, readers: Readers, except: &BTreeSet<String>) -> Result<(), OwnershipError> {
        let inner = &self.inner;
        let asked: Vec<(String, String)> =
            self.hosts().into_iter().filter(|(h, _)| *h != inner.host && !except.contains(h)).collect();
        let probes = asked.into_iter().map(|(host, base)| {
            let url = route_url(&base, "metrics");
            let request = inner
                .credentials
                .apply(inner.client.get(&url), &url)
                .timeout(Duration::from_millis(inner.timing.rpc_timeout_ms.max(2000)));
            tokio::spawn(async move {
                let answer = match request.send().await {
                    Ok(r) if r.status().is_success() => r.json::<MetricsSummary>().await.ok(),
                    _ => None,
                };
                (host, answer.map(|m| readers.reads(&m)))
            })
        });
        let mut silent = Vec::new();
        let mut earlier = Vec::new();
        for probe in probes.collect::<Vec<_>>() {
            match probe.await {
                Ok((_, Some(true))) => {}
                Ok((host, Some(false))) => earlier.push(host),
                Ok((host, None)) => silent.push(host),
                Err(_) => {}
            }
        }
        if !earlier.is_empty() {
            return Err(OwnershipError::HostsUnchangeable {
                reason: format!(
                    "{} run(s) an earlier release, which cannot read {}: upgrade every host first",
                    earlier.join(", "),
                    readers.what()
                ),
            });
        }
        if !silent.is_empty() {
            return Err(OwnershipError::HostsUnchangeable {
                reason: format!(
                    "{} do(es) not answer, so its release is unknown: bring it back, or remove it in the same \
                     command if it is gone for good",
                    silent.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Whether this node is the leader right now (by its own view).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops Raft on this node (its routes then answer 503). The log stays on disk; open the same
    /// directory again to rejoin.
    pub async fn shutdown(&self) -> Result<(), OwnershipError> {
        if let Some(task) = self.inner.reconciler.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        if self.inner.raft.metrics().borrow().state == ServerState::Shutdown {
            return Ok(());
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core ended abnormally");
        }
        Ok(())
    }

    pub(crate) fn raft(&self) -> &OwnershipRaft {
        &self.inner.raft
    }

    /// Whether `given` is the secret or one still accepted ([`crate::credential::matches_any`]).
    pub(crate) fn accepts(&self, given: &str) -> bool {
        let accepted = std::iter::once(&*self.inner.secret).chain(self.inner.also_accepted.iter().map(String::as_str));
        crate::credential::matches_any(accepted, given)
    }

    pub(crate) fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.timing.propose_timeout_ms)
    }

    /// Checks a command that came from a peer as the API checks its arguments.
    pub(crate) fn check_command(&self, command: &Command) -> Result<(), OwnershipError> {
        match command {
            Command::SetOwner { vserver, owner, .. } => {
                parse_name("vserver name", vserver)?;
                parse_name("host name", owner)?;
                self.check_member(owner)
            }
            Command::Clear { vserver, .. } => parse_name("vserver name", vserver).map(|_| ()),
            Command::TakeOver { vserver, owner, from, .. } => {
                parse_name("vserver name", vserver)?;
                parse_name("host name", owner)?;
                parse_name("host name", from)?;
                self.check_member(owner)
            }
            Command::Maintenance { host, by, .. } => {
                parse_name("host name", by)?;
                match host {
                    Some(h) => {
                        parse_name("host name", h)?;
                        self.check_member(h)
                    }
                    None => Ok(()),
                }
            }
            Command::Event { host, text, kind, vserver, .. } => {
                parse_name("host name", host)?;
                if text.len() > MAX_EVENT_TEXT {
                    return Err(OwnershipError::EventTooLong { len: text.len(), max: MAX_EVENT_TEXT });
                }
                if kind.len() > 32 || !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                    return Err(OwnershipError::Config {
                        reason: format!("event kind {kind:?}: at most 32 of a-z, 0-9 and _"),
                    });
                }
                if let Some(v) = vserver {
                    parse_name("vserver name", v)?;
                }
                Ok(())
            }
            Command::AddHost { host, url } => {
                parse_name("host name", host)?;
                check_url(host, url)
            }
            Command::RemoveHost { host } => parse_name("host name", host).map(|_| ()),
            Command::Place { vserver, entry, .. } => {
                parse_name("vserver name", vserver)?;
                for host in entry.iter().flat_map(|e| e.hosts()) {
                    parse_name("host name", host)?;
                }
                Ok(())
            }
            Command::SeedPlacements { host, entries } => {
                parse_name("host name", host)?;
                for (vserver, entry) in entries {
                    parse_name("vserver name", vserver)?;
                    for host in entry.hosts() {
                        parse_name("host name", host)?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn check_url(host: &str, url: &str) -> Result<(), OwnershipError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 300 && url.len() > 8;
    if ok {
        Ok(())
    } else {
        Err(OwnershipError::Config { reason: format!("host {host}: url {url:?} is not an http:// or https:// URL") })
    }
}

fn parse_name(what: &'static str, name: &str) -> Result<VserverName, OwnershipError> {
    VserverName::parse(name).map_err(|source| OwnershipError::InvalidName { what, source })
}

fn describe(command: &Command) -> String {
    match command {
        Command::SetOwner { vserver, owner, expected_epoch } => {
            format!("setting the owner of {vserver} to {owner} (expected epoch {expected_epoch})")
        }
        Command::Clear { vserver, expected_epoch } => format!("clearing {vserver} (expected epoch {expected_epoch})"),
        Command::TakeOver { vserver, owner, expected_epoch, from } => {
            format!("taking {vserver} over from {from} to {owner} (expected epoch {expected_epoch})")
        }
        Command::Maintenance { host: Some(h), on, .. } => {
            format!("maintenance {} for {h}", if *on { "on" } else { "off" })
        }
        Command::Maintenance { host: None, on, .. } => {
            format!("maintenance {} for the cluster", if *on { "on" } else { "off" })
        }
        Command::Event { .. } => "an event".to_string(),
        Command::AddHost { host, .. } => format!("adding host {host}"),
        Command::RemoveHost { host } => format!("removing host {host}"),
        Command::Place { vserver, entry: Some(_), .. } => format!("placing {vserver}"),
        Command::Place { vserver, entry: None, .. } => format!("removing the placement of {vserver}"),
        Command::SeedPlacements { host, .. } => format!("taking in {host}'s cluster file"),
    }
}

/// On the leader, every half second, makes the membership follow the cluster's hosts: adds each configured
/// host and each host taken in through the table that it lacks as a learner (the initial membership holds only
/// the voters), removes the hosts taken out for good, and keeps as many voters as [`voters_for`] gives the
/// hosts, choosing learners that are caught up where voters are missing (a voter removed, a cluster grown or
/// recovered, see [`next_voters`]). Runs until the node shuts down.
async fn reconcile_membership(
    raft: OwnershipRaft,
    members: Vec<Member>,
    applied: Arc<RwLock<Applied>>,
    alive: Arc<RwLock<Option<BTreeSet<String>>>>,
) {
    use openraft::ChangeMembers;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // The digest of the inputs of the last round that found nothing to do (see [`reconcile_digest`]).
    let mut settled: Option<u64> = None;
    loop {
        tick.tick().await;
        {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            if m.state == ServerState::Shutdown {
                return;
            }
            if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().next().is_none() {
                settled = None;
                continue;
            }
        }
        let digest = reconcile_digest(&raft, &applied, &alive);
        if settled == Some(digest) {
            continue;
        }
        settled = None;
        let (table_hosts, removed) = {
            let a = applied.read().unwrap_or_else(|p| p.into_inner());
            (a.table.hosts.clone(), a.table.removed.clone())
        };
        let (me, membership, last_log, matched) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().next().is_none() {
                continue;
            }
            let matched: BTreeMap<NodeId, u64> =
                m.replication.iter().flatten().filter_map(|(id, log)| log.map(|l| (*id, l.index))).collect();
            (m.id, m.membership_config.membership().clone(), m.last_log_index.unwrap_or(0), matched)
        };
        let heard = alive.read().unwrap_or_else(|p| p.into_inner()).clone();
        // A host fit to vote: its copy of the table caught up (within 16 entries) and heard alive lately.
        let in_step = |id: &NodeId| {
            let caught_up = *id == me || matched.get(id).is_some_and(|m| m + 16 >= last_log);
            let name = membership.get_node(id).map(|n| n.name.as_str());
            caught_up && name.is_some_and(|n| heard.as_ref().is_none_or(|a| a.contains(n)))
        };
        let name_of = |id: &NodeId| membership.get_node(id).map(|n| n.name.clone());
        // A host's id: as the membership or the configuration has it, else derived from its name (a host taken
        // in through the table derives its own the same way).
        let id_of = |host: &str| {
            membership
                .nodes()
                .find(|(_, n)| n.name == host)
                .map(|(id, _)| *id)
                .or_else(|| members.iter().find(|m| m.name == host).map(|m| m.id))
                .unwrap_or_else(|| node_id_of(host))
        };
        let mut wanted: BTreeMap<String, String> = members.iter().map(|m| (m.name.clone(), m.url.clone())).collect();
        wanted.extend(table_hosts);
        wanted.retain(|h, _| !removed.contains(h));
        let present: BTreeSet<String> = membership.nodes().map(|(_, n)| n.name.clone()).collect();
        // Every host missing from the membership is added as a learner by one change: one entry for the voters
        // to commit and every host to store, however many come at once (a cluster formed from a configuration
        // naming them all, a new leader finding several missing). One change per host made forming a cluster
        // quadratic: each entry went to every host already in.
        let missing: BTreeMap<NodeId, HostNode> = wanted
            .iter()
            .filter(|(h, _)| !present.contains(*h))
            .map(|(host, url)| (id_of(host), HostNode { name: host.clone(), url: url.clone() }))
            .collect();
        let adding = !missing.is_empty();
        if adding {
            let hosts: Vec<String> = missing.values().map(|n| n.name.clone()).collect();
            match raft.change_membership(ChangeMembers::AddNodes(missing), true).await {
                Ok(_) => tracing::info!(?hosts, "added as learners"),
                Err(e) => tracing::debug!(?hosts, error = %e, "cannot add learners yet"),
            }
        }
        let voters: BTreeSet<String> = membership.voter_ids().filter_map(|id| name_of(&id)).collect();
        let caught_up: BTreeSet<String> =
            membership.learner_ids().filter(in_step).filter_map(|id| name_of(&id)).collect();
        let healthy: BTreeSet<String> = membership.voter_ids().filter(in_step).filter_map(|id| name_of(&id)).collect();
        let mut hosts: BTreeSet<String> = wanted.keys().cloned().collect();
        hosts.extend(present.iter().cloned());
        if let Some(next) = next_voters(&voters, &hosts, &removed, &caught_up, &healthy) {
            let ids: BTreeSet<NodeId> = next.iter().map(|h| id_of(h)).collect();
            match raft.change_membership(ChangeMembers::ReplaceAllVoters(ids), true).await {
                Ok(_) => tracing::warn!(before = ?voters, after = ?next, "the voters changed"),
                Err(e) => tracing::info!(error = %e, "cannot change the voters yet"),
            }
            continue;
        }
        let gone: BTreeSet<NodeId> =
            membership.learner_ids().filter(|id| name_of(id).is_some_and(|n| removed.contains(&n))).collect();
        if !gone.is_empty() {
            let names: Vec<String> = gone.iter().filter_map(name_of).collect();
            match raft.change_membership(ChangeMembers::RemoveNodes(gone), true).await {
                Ok(_) => tracing::warn!(hosts = ?names, "removed from the membership"),
                Err(e) => tracing::info!(error = %e, "cannot remove hosts from the membership yet"),
            }
            continue;
        }
        if !adding && reconcile_digest(&raft, &applied, &alive) == digest {
            // Nothing to do, and nothing changed while this round looked: nor will the next round find anything
            // until something does.
            settled = Some(digest);
        }
    }
}

/// A digest of what [`reconcile_membership`] decides from, read where it lives (see [`Inputs::digest`]).
fn reconcile_digest(raft: &OwnershipRaft, applied: &RwLock<Applied>, alive: &RwLock<Option<BTreeSet<String>>>) -> u64 {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let a = applied.read().unwrap_or_else(|p| p.into_inner());
    let heard = alive.read().unwrap_or_else(|p| p.into_inner());
    Inputs {
        nodes: membership.nodes(),
        voters: membership.get_joint_config(),
        me: m.id,
        term: m.current_term,
        last_log: m.last_log_index,
        matched: m.replication.iter().flatten().map(|(id, log)| (*id, log.map(|l| l.index))),
        hosts: &a.table.hosts,
        removed: &a.table.removed,
        alive: &heard,
    }
    .digest()
}

/// What [`reconcile_membership`] decides from: the membership (its members, their addresses and who votes), this
/// node and its term, its last log entry and how far each member's log matches it, the hosts the table takes in
/// and out, and the hosts heard alive.
struct Inputs<'a, N, M> {
    nodes: N,
    voters: &'a [BTreeSet<NodeId>],
    me: NodeId,
    term: u64,
    last_log: Option<u64>,
    matched: M,
    hosts: &'a BTreeMap<String, String>,
    removed: &'a BTreeSet<String>,
    alive: &'a Option<BTreeSet<String>>,
}

impl<'a, N, M> Inputs<'a, N, M>
where
    N: Iterator<Item = (&'a NodeId, &'a HostNode)>,
    M: Iterator<Item = (NodeId, Option<u64>)>,
{
    /// While this stays the same, a round that found nothing to do would find nothing again; so the leader
    /// hashes these twice a second instead of copying them all (every host of the cluster) each time.
    fn digest(self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (id, node) in self.nodes {
            (id, &node.name, &node.url).hash(&mut h);
        }
        self.voters.hash(&mut h);
        (self.me, self.term, self.last_log).hash(&mut h);
        for matched in self.matched {
            matched.hash(&mut h);
        }
        (self.hosts, self.removed, self.alive).hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leader skips its look at the membership while this digest stays: any change of what the look
    /// decides from must change it, or a change would wait for an unrelated one.
    #[test]
    fn the_membership_digest_moves_with_each_thing_the_leader_decides_from() {
        let node = |name: &str| HostNode { name: name.into(), url: format!("https://{name}:7070") };
        let (h1, h2, h3) = (node("h1"), node("h2"), node("h3"));
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<String>>();
        let ids = |list: &[u64]| list.iter().copied().collect::<BTreeSet<NodeId>>();
        struct Case {
            nodes: Vec<(NodeId, HostNode)>,
            voters: Vec<BTreeSet<NodeId>>,
            me: NodeId,
            term: u64,
            last_log: Option<u64>,
            matched: Vec<(NodeId, Option<u64>)>,
            hosts: BTreeMap<String, String>,
            removed: BTreeSet<String>,
            alive: Option<BTreeSet<String>>,
        }
        let digest = |c: &Case| {
            Inputs {
                nodes: c.nodes.iter().map(|(id, n)| (id, n)),
                voters: &c.voters,
                me: c.me,
                term: c.term,
                last_log: c.last_log,
                matched: c.matched.iter().copied(),
                hosts: &c.hosts,
                removed: &c.removed,
                alive: &c.alive,
            }
            .digest()
        };
        let base = || Case {
            nodes: vec![(1, h1.clone()), (2, h2.clone()), (3, h3.clone())],
            voters: vec![ids(&[1, 2])],
            me: 1,
            term: 4,
            last_log: Some(9),
            matched: vec![(1, Some(9)), (2, Some(9)), (3, Some(7))],
            hosts: BTreeMap::from([("h3".to_string(), h3.url.clone())]),
            removed: BTreeSet::new(),
            alive: Some(set(&["h1", "h2", "h3"])),
        };
        let at_rest = digest(&base());
        assert_eq!(digest(&base()), at_rest, "the same inputs, the same digest");
        type Change<'f> = Box<dyn Fn(&mut Case) + 'f>;
        let changes: Vec<(&str, Change)> = vec![
            ("a member's address", Box::new(|c| c.nodes[2].1.url = "https://h3b:7070".into())),
            ("a member more", Box::new(|c| c.nodes.push((4, node("h4"))))),
            ("who votes", Box::new(|c| c.voters = vec![ids(&[1, 2, 3])])),
            ("a joint configuration", Box::new(|c| c.voters.push(ids(&[1, 3])))),
            ("this node", Box::new(|c| c.me = 2)),
            ("the term", Box::new(|c| c.term = 5)),
            ("the last entry", Box::new(|c| c.last_log = Some(10))),
            ("a learner caught up", Box::new(|c| c.matched[2].1 = Some(9))),
            (
                "a host taken in",
                Box::new(|c| {
                    c.hosts.insert("h4".into(), "https://h4:7070".into());
                }),
            ),
            (
                "a host taken out",
                Box::new(|c| {
                    c.removed.insert("h2".into());
                }),
            ),
            ("a host no longer heard", Box::new(|c| c.alive = Some(set(&["h1", "h2"])))),
            ("who is heard not told yet", Box::new(|c| c.alive = None)),
        ];
        for (what, change) in changes {
            let mut c = base();
            change(&mut c);
            assert_ne!(digest(&c), at_rest, "{what} changes nothing");
        }
    }

    #[test]
    fn config_check_names_what_is_wrong() {
        let member = |id, name: &str| Member { id, name: name.into(), url: format!("http://127.0.0.1:{}", 7000 + id) };
        let mut c = OwnershipConfig::new(1, "/nonexistent", vec![member(1, "a"), member(2, "b")], "s");
        assert!(c.check().is_ok());
        c.node_id = 3;
        assert!(c.check().unwrap_err().to_string().contains("id 3 is not among the members"));
        c.node_id = 1;
        c.members.push(member(2, "c"));
        assert!(c.check().unwrap_err().to_string().contains("node id 2 is given to two members"));
        c.members.pop();
        c.members.push(member(4, "bad/name"));
        assert!(matches!(c.check(), Err(OwnershipError::InvalidName { what: "host name", .. })));
        c.members.pop();
        c.timing.election_min_ms = 50;
        assert!(c.check().unwrap_err().to_string().contains("heartbeat_ms (500) < election_min_ms (50)"));
    }
}
