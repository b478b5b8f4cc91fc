//! This host's lease, as the agent reads it from the membership's acknowledgements and its copy of the
//! ownership table (the arithmetic is `failover::lease`; the lease itself is described in the watchdog's
//! module), and what the vservers' keepers are told of it (`RUN_DIR/lease`, see `isolate::lease`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use failover::ownership::Ownership;
use isolate::lease::HostLease;

use super::config::AgentConfig;
use super::heartbeat::Membership;

/// How long before the end of this host's lease each vserver's keeper kills it: the time a fence takes, so
/// that it is over when the lease is.
pub const FENCE_LEAD: Duration = Duration::from_millis(150);

/// This host's lease: built from the membership (who acknowledges this host) and the table (who votes).
pub struct Lease {
    node: String,
    quorum_fencing: bool,
    run_dir: PathBuf,
    ownership: Ownership,
    membership: Arc<Membership>,
}

impl Lease {
    /// The lease of `config`'s host, read from `ownership` and `membership`.
    pub fn new(config: &AgentConfig, ownership: Ownership, membership: Arc<Membership>) -> Self {
        Self {
            node: config.node.clone(),
            quorum_fencing: config.quorum_fencing(),
            run_dir: config.run_dir.clone(),
            ownership,
            membership,
        }
    }

    /// What is left of this host's lease now: `None` when it needs none (a single voter), zero when it is
    /// over. Until this host has learnt the table's membership, the voters are those the configured hosts
    /// form the cluster with (see [`Ownership::lease_voters`]).
    pub fn remaining(&self) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        let voters = self.ownership.lease_voters();
        failover::lease::remaining(&voters, &self.node, &self.membership.lease_among(&voters, now), now)
    }

    /// What is left of the lease this host's starts need now: `None` where they need none (no quorum fencing,
    /// maintenance, or see [`Lease::remaining`]), zero while it may start nothing.
    pub fn for_starts(&self) -> Option<Duration> {
        (self.quorum_fencing && !self.in_maintenance()).then(|| self.remaining()).flatten()
    }

    /// Whether this host stands outside fencing now: it, or the whole cluster, is in maintenance (as this
    /// host's copy of the table says).
    pub fn in_maintenance(&self) -> bool {
        self.ownership.maintenance_covers(&self.node)
    }

    /// Whether this host may start vservers now: it holds its lease, or needs none. When it may, the keepers'
    /// file is brought up to date first (see [`Lease::keepers_catch_up`]): the start they guard reads it.
    pub fn may_start(&self) -> bool {
        let may = self.for_starts().is_none_or(|left| !left.is_zero());
        if may {
            self.keepers_catch_up();
        }
        may
    }

    /// What the keepers' file should say, from the lease left (see [`Lease::remaining`]) and whether
    /// maintenance covers this host (`grace`): nothing while the lease is over or about to be.
    pub fn keepers(&self, left: Option<Duration>, grace: bool) -> Option<HostLease> {
        Some(match left {
            _ if !self.quorum_fencing || grace => HostLease::Unguarded,
            None => HostLease::Unguarded,
            Some(left) => HostLease::ending_in(left.checked_sub(FENCE_LEAD).filter(|l| !l.is_zero())?),
        })
    }

    /// Before a start: where the keepers' file says the lease is over while this host holds it again (back
    /// from a blip, within the 50 ms before the lease watch rewrites it), brings the file up to date, so the
    /// start is not refused under the agent. It writes only what the watch would write next, never a longer
    /// lease.
    pub fn keepers_catch_up(&self) {
        if isolate::lease::read(&self.run_dir).left() != Some(Duration::ZERO) {
            return;
        }
        let Some(next) = self.keepers(self.remaining(), self.in_maintenance()) else { return };
        if let Err(e) = isolate::lease::write(&self.run_dir, next) {
            tracing::warn!(error = %e, "cannot tell the vservers' keepers this host's lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use failover::ownership::{Member, OwnershipConfig};

    use super::*;
    use crate::agent::heartbeat::membership_config;

    /// A host of a three-host cluster that has not learnt the table's membership yet (it joins late, or
    /// comes back without its log) holds no lease until a majority acknowledges it: it must not take "no
    /// membership known" for "no cluster", which let it start vservers with no lease at all.
    #[tokio::test]
    async fn a_host_that_has_not_learnt_the_membership_holds_no_lease_yet() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "node = \"h1\"\nlisten = \"127.0.0.1:9\"\nsecret_file = \"/nonexistent\"\nstate_dir = \"{state}\"\n\
             run_dir = \"{state}/run\"\n[[peers]]\nname = \"h2\"\nurl = \"http://127.0.0.1:9\"\n\
             [[peers]]\nname = \"h3\"\nurl = \"http://127.0.0.1:9\"\n",
            state = dir.path().display()
        );
        let config = AgentConfig::parse(Path::new("agent.toml"), &text).unwrap();
        assert!(config.quorum_fencing(), "three hosts: takeover, so quorum fencing, by default");
        let members =
            (1..=3).map(|i| Member { id: i, name: format!("h{i}"), url: "http://127.0.0.1:9".into() }).collect();
        let own = OwnershipConfig::new(1, dir.path().join("raft"), members, "s");
        let ownership = Ownership::open(own).await.unwrap();
        assert!(ownership.metrics().voters.is_empty(), "never joined: no membership known");
        let membership = Arc::new(Membership::new(membership_config(&config, "s", 1)));
        let lease = Lease::new(&config, ownership.clone(), membership);
        assert_eq!(ownership.lease_voters(), ["h1", "h2", "h3"]);
        assert_eq!(lease.remaining(), Some(Duration::ZERO), "no peer vouches for it yet");
        assert!(!lease.may_start());
    }
}
