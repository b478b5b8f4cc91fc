//! The ownership table as the cluster's protocols use it: who owns each vserver at which epoch, a
//! compare-and-set to change it, maintenance, the voters and the event log. [`crate::ownership::Ownership`]
//! (Raft) is the real one; any linearizable compare-and-set store with the same answers can stand in for it
//! (the simulator's does).

use std::collections::BTreeMap;
use std::future::Future;

use crate::ownership::{Event, Maintenance, OwnerEntry, Ownership, OwnershipError};

/// The replicated table, one host's view of it.
pub trait Table: Send + Sync + 'static {
    /// Whether this host leads (is the coordinator) now.
    fn is_leader(&self) -> bool;
    /// The coordinator, as this host knows it.
    fn leader(&self) -> Option<String>;
    /// Every vserver's owner and epoch.
    fn table(&self) -> BTreeMap<String, OwnerEntry>;
    /// `vserver`'s epoch (0: never owned).
    fn epoch(&self, vserver: &str) -> u64;
    /// `vserver`'s owner and epoch.
    fn owner(&self, vserver: &str) -> Option<(String, u64)>;
    /// The event log, oldest first.
    fn events(&self) -> Vec<Event>;
    /// What maintenance is on.
    fn maintenance(&self) -> Maintenance;
    /// The voters, by host name.
    fn voters(&self) -> Vec<String>;
    /// Makes `owner` the owner of `vserver` if its epoch is still `expected`; the new (owner, epoch) once a
    /// majority committed it.
    fn set_owner(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send;
    /// A takeover's [`Table::set_owner`], refused while `from` or the cluster is in maintenance.
    fn take_over(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
        from: &str,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send;
    /// Appends an event stamped `at_ms` (ms since the Unix epoch); its sequence number once committed.
    fn log_at(
        &self,
        kind: &str,
        vserver: Option<&str>,
        text: &str,
        at_ms: u64,
    ) -> impl Future<Output = Result<u64, OwnershipError>> + Send;
}

impl Table for Ownership {
    fn is_leader(&self) -> bool {
        Ownership::is_leader(self)
    }
    fn leader(&self) -> Option<String> {
        Ownership::leader(self)
    }
    fn table(&self) -> BTreeMap<String, OwnerEntry> {
        Ownership::table(self)
    }
    fn epoch(&self, vserver: &str) -> u64 {
        Ownership::epoch(self, vserver)
    }
    fn owner(&self, vserver: &str) -> Option<(String, u64)> {
        Ownership::owner(self, vserver)
    }
    fn events(&self) -> Vec<Event> {
        Ownership::events(self)
    }
    fn maintenance(&self) -> Maintenance {
        Ownership::maintenance(self)
    }
    fn voters(&self) -> Vec<String> {
        self.metrics().voters
    }
    fn set_owner(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send {
        Ownership::set_owner(self, vserver, owner, expected)
    }
    fn take_over(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
        from: &str,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send {
        Ownership::take_over(self, vserver, owner, expected, from)
    }
    fn log_at(
        &self,
        kind: &str,
        vserver: Option<&str>,
        text: &str,
        at_ms: u64,
    ) -> impl Future<Output = Result<u64, OwnershipError>> + Send {
        Ownership::log_at(self, kind, vserver, text, at_ms)
    }
}
