//! Recovering a cluster that lost a majority of its voters for good, on the files of a stopped agent: what
//! this host's copy of the table holds ([`local_state`]), making this host the only voter of a cluster that
//! keeps its table ([`force_new_cluster`]), and setting this host's copy aside so that it joins the recovered
//! cluster afresh ([`set_aside`]). The steps, and why each host takes the one it takes, are in
//! docs/failover.md ("A majority of the voters lost for good").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use serde::Serialize;

use super::types::{HostNode, NodeId, TypeConfig};
use super::LOG_FILE;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT_FILE: &str = "snapshot.json";

/// Why a recovery step could not be taken; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The agent still runs (it holds the log).
    #[error("{0} is in use: stop the agent first (systemctl stop vserver-agent)")]
    InUse(PathBuf),
    /// There is no copy of the table here.
    #[error("{0} holds no copy of the cluster's table: nothing to recover from on this host")]
    Empty(PathBuf),
    /// The files cannot be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// What this host's copy of the table holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalState {
    /// The term and index of its last log entry (a larger pair is a more recent copy).
    pub last_log: Option<(u64, u64)>,
    /// The index of the last entry it knows committed.
    pub committed: Option<u64>,
    /// The term of its vote.
    pub vote_term: u64,
    /// The voters of its last membership, by name.
    pub voters: Vec<String>,
    /// The other members of its last membership, by name.
    pub learners: Vec<String>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> RecoverError {
    RecoverError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn open(dir: &Path) -> Result<Database, RecoverError> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        return Err(RecoverError::Empty(dir.to_path_buf()));
    }
    match Database::open(&path) {
        Ok(db) => Ok(db),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(RecoverError::InUse(path)),
        Err(e) => Err(io(&path, e)),
    }
}

fn meta<T: serde::de::DeserializeOwned>(db: &Database, path: &Path, key: &str) -> Result<Option<T>, RecoverError> {
    let txn = db.begin_read().map_err(|e| io(path, e))?;
    let table = txn.open_table(META).map_err(|e| io(path, e))?;
    let value = table.get(key).map_err(|e| io(path, e))?;
    value.map(|v| serde_json::from_slice(v.value()).map_err(|e| io(path, e))).transpose()
}

/// The last membership a copy holds.
type HostMembership = Membership<NodeId, HostNode>;

/// The log's last entry id, and the last membership it or the snapshot holds.
fn read(dir: &Path, db: &Database) -> Result<(Option<LogId<NodeId>>, HostMembership), RecoverError> {
    let path = dir.join(LOG_FILE);
    let txn = db.begin_read().map_err(|e| io(&path, e))?;
    let logs = txn.open_table(LOGS).map_err(|e| io(&path, e))?;
    let mut last: Option<LogId<NodeId>> = meta(db, &path, "last_purged")?;
    let mut membership: Option<HostMembership> = None;
    for item in logs.iter().map_err(|e| io(&path, e))? {
        let (_, v) = item.map_err(|e| io(&path, e))?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(|e| io(&path, e))?;
        if let EntryPayload::Membership(m) = entry.payload {
            membership = Some(m);
        }
        last = Some(entry.log_id);
    }
    let snapshot = dir.join(SNAPSHOT_FILE);
    if let Ok(bytes) = std::fs::read(&snapshot) {
        let stored: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| io(&snapshot, e))?;
        let meta: openraft::SnapshotMeta<NodeId, HostNode> =
            serde_json::from_value(stored["meta"].clone()).map_err(|e| io(&snapshot, e))?;
        if last.is_none() || meta.last_log_id > last {
            last = meta.last_log_id;
        }
        if membership.is_none() {
            membership = Some(meta.last_membership.membership().clone());
        }
    }
    Ok((last, membership.unwrap_or_else(|| Membership::new(vec![], ()))))
}

fn state(dir: &Path, db: &Database) -> Result<LocalState, RecoverError> {
    let path = dir.join(LOG_FILE);
    let (last, membership) = read(dir, db)?;
    let vote: Option<Vote<NodeId>> = meta(db, &path, "vote")?;
    let committed: Option<Option<LogId<NodeId>>> = meta(db, &path, "committed")?;
    let name = |id: NodeId| membership.get_node(&id).map_or_else(|| format!("node-{id}"), |n| n.name.clone());
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    Ok(LocalState {
        last_log: last.map(|l| (l.leader_id.term, l.index)),
        committed: committed.flatten().map(|l| l.index),
        vote_term: vote.map_or(0, |v| v.leader_id().term),
        voters: sorted(membership.voter_ids().map(name).collect()),
        learners: sorted(membership.learner_ids().map(name).collect()),
    })
}

/// What the copy of the table in `dir` (the agent's `STATE_DIR/raft`) holds; the agent must be stopped.
pub fn local_state(dir: &Path) -> Result<LocalState, RecoverError> {
    let db = open(dir)?;
    state(dir, &db)
}

/// Makes this host (`node_id`, reached at `node`) the only voter of the cluster, keeping its table: appends to
/// its log, under a term above any it has seen, a membership of this host alone. Once its agent starts, it
/// elects itself at once, commits what its log holds, and the others join it as learners (their copies set
/// aside first, see [`set_aside`]), the voters being chosen again among them as they catch up. The agent must
/// be stopped. What the copy holds now.
pub fn force_new_cluster(dir: &Path, node_id: NodeId, node: HostNode) -> Result<LocalState, RecoverError> {
    let db = open(dir)?;
    let path = dir.join(LOG_FILE);
    let (last, _) = read(dir, &db)?;
    let Some(last) = last else { return Err(RecoverError::Empty(dir.to_path_buf())) };
    let vote: Option<Vote<NodeId>> = meta(&db, &path, "vote")?;
    let term = vote.map_or(0, |v| v.leader_id().term).max(last.leader_id.term) + 1;
    let membership = Membership::new(vec![[node_id].into()], BTreeMap::from([(node_id, node)]));
    let entry: Entry<TypeConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node_id), last.index + 1),
        payload: EntryPayload::Membership(membership),
    };
    let encoded = serde_json::to_vec(&entry).map_err(|e| io(&path, e))?;
    let vote = serde_json::to_vec(&Vote::new(term, node_id)).map_err(|e| io(&path, e))?;
    let txn = db.begin_write().map_err(|e| io(&path, e))?;
    {
        let mut logs = txn.open_table(LOGS).map_err(|e| io(&path, e))?;
        logs.insert(last.index + 1, encoded.as_slice()).map_err(|e| io(&path, e))?;
        let mut meta = txn.open_table(META).map_err(|e| io(&path, e))?;
        meta.insert("vote", vote.as_slice()).map_err(|e| io(&path, e))?;
    }
    txn.commit().map_err(|e| io(&path, e))?;
    state(dir, &db)
}

/// Moves this host's copy of the table (`dir`) aside, beside it, so that its agent starts with none and is
/// taken into the cluster as a new learner; where it went. The agent must be stopped.
pub fn set_aside(dir: &Path, stamp: u64) -> Result<PathBuf, RecoverError> {
    drop(open(dir)?);
    let name = dir.file_name().map_or("raft".into(), |n| n.to_string_lossy().into_owned());
    let to = dir.with_file_name(format!("{name}.before-recovery-{stamp}"));
    std::fs::rename(dir, &to).map_err(|e| io(dir, e))?;
    Ok(to)
}
