//! The migrates this host runs as source: the running one and the last of each vserver
//! (`GET /v1/vservers/NAME/migration`).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use failover::wire::MigrationStatus;
use isolate::VserverName;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The migrates of this host (as source), the running one and the last of each vserver.
#[derive(Default)]
pub struct Migrations {
    table: Mutex<BTreeMap<VserverName, MigrationStatus>>,
}

impl Migrations {
    /// The last (or running) migrate of `name`.
    pub fn get(&self, name: &VserverName) -> Option<MigrationStatus> {
        lock(&self.table).get(name).cloned()
    }

    /// Records `status` as `name`'s migrate, now running; `false` (nothing recorded) while another one runs.
    pub fn begin(&self, name: &VserverName, status: MigrationStatus) -> bool {
        let mut table = lock(&self.table);
        if table.get(name).is_some_and(|m| !m.finished) {
            return false;
        }
        table.insert(name.clone(), status);
        true
    }

    /// Changes `name`'s migrate, if there is one.
    pub fn update(&self, name: &VserverName, f: impl FnOnce(&mut MigrationStatus)) {
        if let Some(m) = lock(&self.table).get_mut(name) {
            f(m);
        }
    }
}
