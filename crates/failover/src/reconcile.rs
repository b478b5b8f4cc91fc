//! Keeping one host in line with the ownership table, every second on every host:
//!
//! - a vserver the table gives to another host is not run here: if it runs, it is stopped (its intent
//!   recorded `stopped` first); its copy here is kept aside (never deleted), and this host takes the new
//!   placement, as a standby of the new owner;
//! - the coordinator records the configured primary as the owner of every placed vserver the table does not
//!   know yet (epoch 0 to 1).
//!
//! The host's side (its placements, its copies, stopping one, keeping a copy aside) is a [`Local`] the agent
//! implements; the table is any [`Table`].

use std::future::Future;

use crate::events::kinds;
use crate::placement::Placement;
use crate::table::Table;

/// What reconciling needs of one host.
pub trait Local: Send + Sync {
    /// The ownership table, as this host sees it.
    type Table: Table;
    /// A hold on one vserver: no migrate or sync of it runs here while it is kept.
    type Held: Send;
    /// This host's name.
    fn node(&self) -> &str;
    /// The ownership table.
    fn table(&self) -> &Self::Table;
    /// The placement this host knows of `name`.
    fn placement(&self, name: &str) -> Option<Placement>;
    /// Records a new placement of `name` here.
    fn record_placement(&self, name: &str, placement: Placement) -> Result<(), String>;
    /// Whether this host has a tree or a conf of `name` in service (not counting replicas).
    fn has_copy(&self, name: &str) -> bool;
    /// Holds `name` if no migrate or sync of it runs here now (`None`: leave it for the next round).
    fn try_hold(&self, name: &str) -> Option<Self::Held>;
    /// Whether `name` runs here.
    fn running(&self, name: &str) -> impl Future<Output = bool> + Send;
    /// Records `name`'s intent as stopped, then stops it here.
    fn stop_here(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Records `name`'s intent as stopped, then moves its tree and conf here aside under `label`; where they
    /// went.
    fn keep_aside(&self, name: &str, label: &str) -> impl Future<Output = Result<String, String>> + Send;
    /// Now, in ms since the Unix epoch (labels and events).
    fn now_unix_ms(&self) -> u64;
}

/// What reconciling did about one vserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// It ran here although the table gives it to `owner`: stopped.
    Stopped {
        /// The vserver.
        name: String,
        /// Its owner.
        owner: String,
    },
    /// Its copy here was kept aside, at this place.
    Aside {
        /// The vserver.
        name: String,
        /// Where it went.
        at: String,
    },
}

/// The placement this host should know of a vserver the table gives to `owner`, when it differs from `known`:
/// the vserver moved to one of its standbys.
pub fn placement_after(known: &Placement, owner: &str) -> Option<Placement> {
    (known.primary != owner && known.standbys.iter().any(|s| s == owner)).then(|| known.moved_to(owner))
}

/// One round for this host over every vserver the table gives to another host; what it did.
pub async fn reconcile<L: Local>(local: &L) -> Vec<Done> {
    let me = local.node().to_string();
    let mut done = Vec::new();
    for (name, entry) in local.table().table() {
        let Some(owner) = entry.owner else { continue };
        if owner == me {
            continue;
        }
        if let Some(moved) = local.placement(&name).and_then(|p| placement_after(&p, &owner)) {
            match local.record_placement(&name, moved) {
                Ok(()) => tracing::info!(vserver = %name, %owner, "placement follows the ownership table"),
                Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record the placement"),
            }
        }
        if !local.has_copy(&name) {
            continue;
        }
        // Not while a migrate or a sync of it runs here (a migrate's source gives it up itself).
        let Some(_held) = local.try_hold(&name) else { continue };
        if local.running(&name).await {
            tracing::error!(vserver = %name, %owner, epoch = entry.epoch, "runs here, but the cluster gives it to \
                            another host: stopping it here");
            match local.stop_here(&name).await {
                Ok(()) => done.push(Done::Stopped { name, owner }),
                Err(e) => tracing::error!(vserver = %name, error = %e, "cannot stop it"),
            }
            continue;
        }
        let label = format!("epoch{}-{}", entry.epoch, local.now_unix_ms());
        match local.keep_aside(&name, &label).await {
            Ok(at) => {
                let text =
                    format!("{me} kept its copy of {name} aside at {at} ({owner} owns it since epoch {})", entry.epoch);
                tracing::warn!("{text}");
                let _ = local.table().log_at(kinds::ASIDE, Some(&name), &text, local.now_unix_ms()).await;
                done.push(Done::Aside { name, at });
            }
            Err(e) => tracing::error!(vserver = %name, error = %e, "cannot keep this host's copy aside"),
        }
    }
    done
}

/// On the coordinator: records each placed vserver's configured primary as its owner where the table does not
/// know the vserver yet (epoch 0). Nothing on another host.
pub async fn record_primaries<T: Table>(table: &T, placements: impl IntoIterator<Item = (String, Placement)>) {
    if !table.is_leader() {
        return;
    }
    for (name, placement) in placements {
        if table.epoch(&name) != 0 {
            continue;
        }
        match table.set_owner(&name, &placement.primary, 0).await {
            Ok((owner, epoch)) => tracing::info!(vserver = %name, %owner, epoch, "ownership recorded"),
            Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record the ownership"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use super::*;
    use crate::ownership::OwnerEntry;
    use crate::table::fake::FakeTable;

    #[derive(Default)]
    struct FakeHost {
        table: FakeTable,
        placements: Mutex<BTreeMap<String, Placement>>,
        copies: Mutex<BTreeSet<String>>,
        running: Mutex<BTreeSet<String>>,
        busy: BTreeSet<String>,
        aside: Mutex<Vec<String>>,
    }

    impl Local for FakeHost {
        type Table = FakeTable;
        type Held = ();
        fn node(&self) -> &str {
            "h0"
        }
        fn table(&self) -> &FakeTable {
            &self.table
        }
        fn placement(&self, name: &str) -> Option<Placement> {
            self.placements.lock().unwrap().get(name).cloned()
        }
        fn record_placement(&self, name: &str, placement: Placement) -> Result<(), String> {
            self.placements.lock().unwrap().insert(name.to_string(), placement);
            Ok(())
        }
        fn has_copy(&self, name: &str) -> bool {
            self.copies.lock().unwrap().contains(name)
        }
        fn try_hold(&self, name: &str) -> Option<()> {
            (!self.busy.contains(name)).then_some(())
        }
        async fn running(&self, name: &str) -> bool {
            self.running.lock().unwrap().contains(name)
        }
        async fn stop_here(&self, name: &str) -> Result<(), String> {
            self.running.lock().unwrap().remove(name);
            Ok(())
        }
        async fn keep_aside(&self, name: &str, label: &str) -> Result<String, String> {
            self.copies.lock().unwrap().remove(name);
            self.aside.lock().unwrap().push(format!("{name}/{label}"));
            Ok(format!("aside/{name}/{label}"))
        }
        fn now_unix_ms(&self) -> u64 {
            1000
        }
    }

    fn placement(primary: &str, standbys: &[&str]) -> Placement {
        Placement { primary: primary.into(), standbys: standbys.iter().map(|s| s.to_string()).collect(), epoch: 1 }
    }

    fn own(host: &FakeHost, name: &str, owner: &str, epoch: u64) {
        let entry = OwnerEntry { owner: Some(owner.into()), epoch };
        host.table.owners.lock().unwrap().insert(name.into(), entry);
    }

    #[tokio::test]
    async fn a_copy_the_table_gives_elsewhere_is_stopped_then_kept_aside_never_deleted() {
        let host = FakeHost::default();
        own(&host, "web", "h1", 2);
        host.placements.lock().unwrap().insert("web".into(), placement("h0", &["h1", "h2"]));
        host.copies.lock().unwrap().insert("web".into());
        host.running.lock().unwrap().insert("web".into());
        let first = reconcile(&host).await;
        assert_eq!(first, [Done::Stopped { name: "web".into(), owner: "h1".into() }]);
        assert!(!host.running.lock().unwrap().contains("web"), "stopped here");
        assert_eq!(host.placement("web"), Some(placement("h0", &["h1", "h2"]).moved_to("h1")), "placement follows");
        // Next round: not running any more, so its copy goes aside, and the log says where.
        let second = reconcile(&host).await;
        assert_eq!(second, [Done::Aside { name: "web".into(), at: "aside/web/epoch2-1000".into() }]);
        assert!(host.table.log.lock().unwrap()[0].contains("kept its copy of web aside"));
        assert!(reconcile(&host).await.is_empty(), "nothing left to do");
    }

    #[tokio::test]
    async fn what_this_host_owns_or_is_busy_with_is_left_alone() {
        let mut host = FakeHost::default();
        own(&host, "mine", "h0", 1);
        own(&host, "moving", "h1", 3);
        for n in ["mine", "moving"] {
            host.copies.lock().unwrap().insert(n.into());
            host.running.lock().unwrap().insert(n.into());
        }
        host.busy.insert("moving".into());
        assert!(reconcile(&host).await.is_empty(), "its own, and one a migrate holds");
        assert!(host.running.lock().unwrap().contains("mine") && host.running.lock().unwrap().contains("moving"));
    }

    #[test]
    fn the_placement_follows_only_to_a_standby() {
        let p = placement("h0", &["h1"]);
        assert_eq!(placement_after(&p, "h1"), Some(p.moved_to("h1")));
        assert_eq!(placement_after(&p, "h0"), None, "already there");
        assert_eq!(placement_after(&p, "h9"), None, "not one of its standbys: the placement is not guessed");
    }

    #[tokio::test]
    async fn only_the_coordinator_records_the_configured_primaries_and_only_once() {
        let follower = FakeTable::default();
        record_primaries(&follower, [("web".to_string(), placement("h0", &["h1"]))]).await;
        assert_eq!(follower.epoch("web"), 0);
        let leader = FakeTable { leader: true, ..Default::default() };
        record_primaries(&leader, [("web".to_string(), placement("h0", &["h1"]))]).await;
        assert_eq!(leader.owner("web"), Some(("h0".into(), 1)));
        record_primaries(&leader, [("web".to_string(), placement("h2", &["h1"]))]).await;
        assert_eq!(leader.owner("web"), Some(("h0".into(), 1)), "a known vserver keeps its owner");
    }
}
