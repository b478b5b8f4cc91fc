//! The sync schedule: which of a host's vservers are due a sync now, and to which standbys. The copying
//! itself is the replica session ([`crate::session`]) and rsync ([`crate::rsync`]).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::placement::Placement;

/// One vserver placed in the cluster, as the host that may sync it sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its placement, as this host has it.
    pub placement: &'a Placement,
    /// Its conf is on this host (it was built, or promoted, here).
    pub built: bool,
    /// How long ago its last sync from this host began (`None`: never since this host started).
    pub since_last: Option<Duration>,
    /// Its sync interval.
    pub interval: Duration,
    /// Its owner in the ownership table, if the table knows it.
    pub owner: Option<&'a str>,
}

/// The syncs due on `node` now, each vserver with the standbys to sync it to, in the placement's order:
/// vservers this host is primary of, built here, whose interval has passed, never one the table gives to
/// another host (this host's copy is not the vserver's then), and only to standbys heard from (`alive`): one
/// not heard yet, or silent, is tried at a later round.
pub fn due(node: &str, candidates: &[Candidate<'_>], alive: &BTreeSet<String>) -> Vec<(String, Vec<String>)> {
    candidates
        .iter()
        .filter(|c| c.placement.primary == node && c.built)
        .filter(|c| c.since_last.is_none_or(|t| t >= c.interval))
        .filter(|c| c.owner.is_none_or(|o| o == node))
        .filter_map(|c| {
            let standbys: Vec<String> = c.placement.standbys.iter().filter(|s| alive.contains(*s)).cloned().collect();
            (!standbys.is_empty()).then(|| (c.name.to_string(), standbys))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(primary: &str, standbys: &[&str]) -> Placement {
        Placement { primary: primary.into(), standbys: standbys.iter().map(|s| s.to_string()).collect(), epoch: 0 }
    }

    #[test]
    fn only_what_this_host_runs_is_synced_at_its_interval_to_live_standbys() {
        let (ours, theirs, lonely) = (placement("h0", &["h1", "h2"]), placement("h1", &["h0"]), placement("h0", &[]));
        let minute = Duration::from_secs(60);
        let c = |name, placement, since: Option<u64>, owner| Candidate {
            name,
            placement,
            built: true,
            since_last: since.map(Duration::from_secs),
            interval: minute,
            owner,
        };
        let alive: BTreeSet<String> = ["h1".to_string()].into();
        let candidates = [
            c("never", &ours, None, None),
            c("due", &ours, Some(60), Some("h0")),
            c("recent", &ours, Some(59), None),
            c("elsewhere", &ours, Some(600), Some("h2")),
            c("not-primary", &theirs, None, None),
            c("no-standby", &lonely, None, None),
            Candidate { built: false, ..c("not-built", &ours, None, None) },
        ];
        let due = due("h0", &candidates, &alive);
        assert_eq!(
            due,
            vec![("never".to_string(), vec!["h1".to_string()]), ("due".to_string(), vec!["h1".to_string()])]
        );
        // No live standby: nothing now, tried at a later round.
        assert!(super::due("h0", &candidates, &BTreeSet::new()).is_empty());
    }
}
