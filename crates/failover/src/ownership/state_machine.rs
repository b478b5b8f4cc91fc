//! The state machine: the ownership table in memory, readable at any time by the handle, and its snapshots.
//! A snapshot (the whole table as JSON, with its Raft metadata) is written to `DATA_DIR/snapshot.json` with
//! fsync and an atomic rename before openraft may purge the log it covers; at start the table is loaded
//! from it and openraft re-applies the committed log that follows.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::types::{HostNode, NodeId, Response, TableState, TypeConfig};

/// The snapshot's file name in the data directory.
const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the handle reads and the state machine writes.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The last log entry applied.
    pub(crate) last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<NodeId, HostNode>,
    /// The table.
    pub(crate) table: TableState,
}

/// The snapshot as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, HostNode>,
    table: TableState,
}

/// The state machine openraft drives; clones share everything.
#[derive(Clone)]
pub(crate) struct StateMachine {
    applied: Arc<RwLock<Applied>>,
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Loads the last snapshot of `dir`, if any.
    pub(crate) fn open(dir: &Path) -> Result<StateMachine, std::io::Error> {
        let path = dir.join(SNAPSHOT_FILE);
        let (applied, current) = match fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let applied = Applied {
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership.clone(),
                    table: stored.table.clone(),
                };
                (applied, Some(stored))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(e),
        };
        Ok(StateMachine {
            applied: Arc::new(RwLock::new(applied)),
            dir: dir.to_path_buf(),
            current: Arc::new(Mutex::new(current)),
        })
    }

    /// The applied state, shared with the handle.
    pub(crate) fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    /// Writes `stored` as the current snapshot: temporary file, fsync, rename, fsync of the directory.
    async fn persist(&self, stored: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let dir = self.dir.clone();
        let bytes = serde_json::to_vec(&stored).map_err(sm_write_err)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
            fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(sm_write_err)?
        .map_err(sm_write_err)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        Ok(())
    }

    fn to_snapshot(stored: &StoredSnapshot) -> Result<Snapshot<TypeConfig>, serde_json::Error> {
        let data = serde_json::to_vec(&stored.table)?;
        Ok(Snapshot { meta: stored.meta.clone(), snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let stored = {
            let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
            let snapshot_id = match &applied.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "empty".to_string(),
            };
            StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership.clone(),
                    snapshot_id,
                },
                table: applied.table.clone(),
            }
        };
        let snapshot = Self::to_snapshot(&stored).map_err(sm_write_err)?;
        self.persist(stored).await?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, HostNode>), StorageError<NodeId>> {
        let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Normal(command) => applied.table.apply(&command),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Nothing
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, HostNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let table: TableState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e)))?;
        let stored = StoredSnapshot { meta: meta.clone(), table: table.clone() };
        self.persist(stored).await?;
        let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.table = table;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        stored.as_ref().map(Self::to_snapshot).transpose().map_err(sm_write_err)
    }
}
