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
    /// The vservers `host` owns, with their epochs, by name.
    fn owned_by(&self, host: &str) -> Vec<(String, u64)> {
        let table = self.table();
        table.into_iter().filter(|(_, e)| e.owner.as_deref() == Some(host)).map(|(v, e)| (v, e.epoch)).collect()
    }
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
    fn owned_by(&self, host: &str) -> Vec<(String, u64)> {
        Ownership::owned_by(self, host)
    }
    fn events(&self) -> Vec<Event> {
        Ownership::events(self)
    }
    fn maintenance(&self) -> Maintenance {
        Ownership::maintenance(self)
    }
    fn voters(&self) -> Vec<String> {
        Ownership::voters(self)
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

/// A table in memory for unit tests: a compare-and-set that asserts it is asked from the epoch it holds.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::Table;
    use crate::ownership::{Event, Maintenance, OwnerEntry, OwnershipError};

    #[derive(Default)]
    pub struct FakeTable {
        /// Every vserver's owner and epoch.
        pub owners: Mutex<BTreeMap<String, OwnerEntry>>,
        /// The texts logged.
        pub log: Mutex<Vec<String>>,
        /// The event log [`Table::events`] answers.
        pub events: Mutex<Vec<Event>>,
        /// Whether it leads.
        pub leader: bool,
    }

    impl Table for FakeTable {
        fn is_leader(&self) -> bool {
            self.leader
        }
        fn leader(&self) -> Option<String> {
            None
        }
        fn table(&self) -> BTreeMap<String, OwnerEntry> {
            self.owners.lock().unwrap().clone()
        }
        fn epoch(&self, vserver: &str) -> u64 {
            self.owners.lock().unwrap().get(vserver).map_or(0, |e| e.epoch)
        }
        fn owner(&self, vserver: &str) -> Option<(String, u64)> {
            let owners = self.owners.lock().unwrap();
            owners.get(vserver).and_then(|e| Some((e.owner.clone()?, e.epoch)))
        }
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().clone()
        }
        fn maintenance(&self) -> Maintenance {
            Maintenance::default()
        }
        fn voters(&self) -> Vec<String> {
            Vec::new()
        }
        async fn set_owner(&self, vserver: &str, owner: &str, expected: u64) -> Result<(String, u64), OwnershipError> {
            let mut owners = self.owners.lock().unwrap();
            let entry = owners.entry(vserver.to_string()).or_insert(OwnerEntry { owner: None, epoch: 0 });
            assert_eq!(entry.epoch, expected, "a compare-and-set from the epoch it read");
            *entry = OwnerEntry { owner: Some(owner.to_string()), epoch: expected + 1 };
            Ok((owner.to_string(), expected + 1))
        }
        async fn take_over(
            &self,
            vserver: &str,
            owner: &str,
            expected: u64,
            _: &str,
        ) -> Result<(String, u64), OwnershipError> {
            self.set_owner(vserver, owner, expected).await
        }
        async fn log_at(&self, _: &str, _: Option<&str>, text: &str, _: u64) -> Result<u64, OwnershipError> {
            let mut log = self.log.lock().unwrap();
            log.push(text.to_string());
            Ok(log.len() as u64)
        }
    }
}
