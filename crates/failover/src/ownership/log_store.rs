//! The durable Raft log, vote and committed index, in one redb file (`DATA_DIR/raft.redb`). Every write is a
//! redb transaction committed with fsync before openraft is told it is done, so what a node acknowledged
//! survives a crash. redb's calls block, so they run on tokio's blocking threads, a few at a time: the leader's
//! replication streams (one per other host) all read the log at once, and each thread the pool starts for such a
//! burst stays (an idle thread is handed the next call before it times out), so without the bound a leader of 64
//! hosts kept 50 threads and 30 MiB for good.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::types::{NodeId, TypeConfig};

/// Log entries by index, each as JSON.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// `vote`, `committed` and `last_purged`, each as JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// How long `open` waits for a previous instance in this process to release the file (its replication
/// tasks may still hold a reader for a moment after a shutdown).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How many database calls run at once. redb runs one write at a time anyway, and reads are short.
const CALLS_AT_ONCE: usize = 2;

/// The log store openraft writes to; clones share the database and the bound on calls at once.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    calls: Arc<tokio::sync::Semaphore>,
}

/// Opens (or creates) the database and its tables.
pub(crate) fn open(path: &Path) -> Result<LogStore, Box<redb::Error>> {
    let started = Instant::now();
    let db = loop {
        match Database::create(path) {
            Ok(db) => break db,
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(Box::new(e.into())),
        }
    };
    let boxed = |e: redb::Error| Box::new(e);
    let txn = db.begin_write().map_err(|e| boxed(e.into()))?;
    txn.open_table(LOGS).map_err(|e| boxed(e.into()))?;
    txn.open_table(META).map_err(|e| boxed(e.into()))?;
    txn.commit().map_err(|e| boxed(e.into()))?;
    Ok(LogStore { db: Arc::new(db), calls: Arc::new(tokio::sync::Semaphore::new(CALLS_AT_ONCE)) })
}

/// A failure inside a blocking database call, small enough to pass around.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// redb failed.
    #[error("{0}")]
    Redb(Box<redb::Error>),
    /// A stored value is not the JSON written.
    #[error("stored value is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn db(e: impl Into<redb::Error>) -> DbError {
    DbError::Redb(Box::new(e.into()))
}

/// Which way a database call goes, for openraft's error report.
#[derive(Clone, Copy)]
enum Io {
    Read,
    Write,
}

impl LogStore {
    /// Runs `f` on a blocking thread with the database, once fewer than [`CALLS_AT_ONCE`] calls run.
    async fn blocking<T, F>(&self, io: Io, f: F) -> Result<T, StorageError<NodeId>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        let report = |e: &(dyn std::error::Error + 'static)| -> StorageError<NodeId> {
            let e = openraft::AnyError::from_dyn(e, None);
            match io {
                Io::Read => StorageIOError::read_logs(e).into(),
                Io::Write => StorageIOError::write_logs(e).into(),
            }
        };
        // Never closed, so always granted in the end.
        let Ok(_permit) = self.calls.acquire().await else { unreachable!("the semaphore is never closed") };
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(report(&e)),
            Err(join) => Err(report(&join)),
        }
    }

    async fn read_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        self.blocking(Io::Read, move |d| {
            let txn = d.begin_read().map_err(db)?;
            let table = txn.open_table(META).map_err(db)?;
            match table.get(key).map_err(db)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn write_meta<T: serde::Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?;
        self.blocking(Io::Write, move |d| {
            let txn = d.begin_write().map_err(db)?;
            txn.open_table(META).map_err(db)?.insert(key, bytes.as_slice()).map_err(db)?;
            txn.commit().map_err(db)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(Io::Read, move |d| {
            let txn = d.begin_read().map_err(db)?;
            let table = txn.open_table(LOGS).map_err(db)?;
            let mut entries = Vec::new();
            for item in table.range(bounds).map_err(db)? {
                let (_, v) = item.map_err(db)?;
                entries.push(serde_json::from_slice(v.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED).await?;
        let last: Option<Entry<TypeConfig>> = self
            .blocking(Io::Read, |d| {
                let txn = d.begin_read().map_err(db)?;
                let table = txn.open_table(LOGS).map_err(db)?;
                if table.is_empty().map_err(db)? {
                    return Ok(None);
                }
                let last = table.last().map_err(db)?;
                match last {
                    Some((_, v)) => Ok(Some(serde_json::from_slice(v.value())?)),
                    None => Ok(None),
                }
            })
            .await?;
        let last_log_id = last.map(|e| e.log_id).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId<NodeId>>>(COMMITTED).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self
            .blocking(Io::Write, move |d| {
                let txn = d.begin_write().map_err(db)?;
                {
                    let mut table = txn.open_table(LOGS).map_err(db)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(db)?;
                    }
                }
                txn.commit().map_err(db)
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(Io::Write, move |d| {
            let txn = d.begin_write().map_err(db)?;
            txn.open_table(LOGS).map_err(db)?.retain_in(log_id.index.., |_, _| false).map_err(db)?;
            txn.commit().map_err(db)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?;
        self.blocking(Io::Write, move |d| {
            let txn = d.begin_write().map_err(db)?;
            txn.open_table(META).map_err(db)?.insert(LAST_PURGED, bytes.as_slice()).map_err(db)?;
            txn.open_table(LOGS).map_err(db)?.retain_in(..=log_id.index, |_, _| false).map_err(db)?;
            txn.commit().map_err(db)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A burst of calls (a leader's replication streams reading the log together) runs a few at a time, so the
    /// blocking pool does not grow a thread per stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_calls_runs_a_few_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("raft.redb")).unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls: Vec<_> = (0..24)
            .map(|_| {
                let (store, running, most) = (store.clone(), Arc::clone(&running), Arc::clone(&most));
                tokio::spawn(async move {
                    store
                        .blocking(Io::Read, move |d| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            // Long enough for the other calls to pile up behind this one.
                            std::thread::sleep(Duration::from_millis(20));
                            let _ = d.begin_read().map_err(db)?;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=CALLS_AT_ONCE).contains(&most), "{most} calls ran at once");
    }
}
