//! What continuous replication shows of itself (`continuous.rs` keeps it up to date, the replication status
//! reads it): the vservers this host watches, and per standby the oldest change not committed there yet and
//! the last commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use isolate::VserverName;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the status shows of one standby's lane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneView {
    /// When the oldest change not committed on the standby was seen, ms since the epoch.
    pub oldest_pending_unix_ms: Option<u64>,
    /// When the last session committed, ms since the epoch.
    pub last_commit_unix_ms: Option<u64>,
    /// Sessions committed since the watch began.
    pub batches: u64,
}

impl LaneView {
    /// Ms since the oldest pending change was seen, at `now_ms` (0 when none is pending).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.oldest_pending_unix_ms.map_or(0, |t| now_ms.saturating_sub(t))
    }
}

/// Continuous replication's state on this host, for the status: the vservers watched and their lanes.
#[derive(Debug, Default)]
pub struct Board {
    lanes: Mutex<BTreeMap<(VserverName, String), LaneView>>,
    watched: Mutex<BTreeSet<VserverName>>,
}

impl Board {
    /// Whether this host watches `name` now (its watch then runs its syncs).
    pub fn watched(&self, name: &VserverName) -> bool {
        lock(&self.watched).contains(name)
    }

    /// The lane of `name` to `standby`, while watched.
    pub fn lane(&self, name: &VserverName, standby: &str) -> Option<LaneView> {
        lock(&self.lanes).get(&(name.clone(), standby.to_string())).cloned()
    }

    /// Shows the lane of `name` to `standby`.
    pub fn publish(&self, name: &VserverName, standby: &str, view: LaneView) {
        lock(&self.lanes).insert((name.clone(), standby.to_string()), view);
    }

    /// `name` is watched from now on.
    pub fn start(&self, name: &VserverName) {
        lock(&self.watched).insert(name.clone());
    }

    /// `name` is watched no more: its lanes go.
    pub fn stop(&self, name: &VserverName) {
        lock(&self.watched).remove(name);
        lock(&self.lanes).retain(|(n, _), _| n != name);
    }
}
