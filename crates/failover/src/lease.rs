//! A host's lease, added up: the host holds it while a majority of the ownership table's voters (itself
//! included, when it votes) vouch for it, each until a lease length after the sending of the last beacon of
//! this host it acknowledged ([`crate::membership::Membership::lease`]). A voter vouches at most a lease
//! length after it last heard the host; so once the voters that make a majority have not heard the host for
//! the takeover timeout (the lease length plus the safety margin), the host's lease has been over for at least
//! the margin, whatever the network did between them. That is what the coordinator's probe
//! ([`crate::takeover::confirm_dead`]) relies on.

use std::time::Duration;

use tokio::time::Instant;

use crate::ownership::OwnershipError;
use crate::table::Table;

/// What is left of `me`'s lease at `now`, given the voters and the peers vouching for it (each with when its
/// word runs out): `None` when it needs none (a single voter, or none), zero when it is over.
pub fn remaining(voters: &[String], me: &str, vouching: &[(String, Instant)], now: Instant) -> Option<Duration> {
    if voters.len() <= 1 {
        return None;
    }
    let majority = voters.len() / 2 + 1;
    let need = majority - usize::from(voters.iter().any(|v| v == me));
    let mut ends: Vec<Instant> = vouching
        .iter()
        .filter(|(peer, until)| peer != me && *until > now && voters.contains(peer))
        .map(|(_, until)| *until)
        .collect();
    if ends.len() < need {
        return Some(Duration::ZERO);
    }
    ends.sort_unstable_by(|a, b| b.cmp(a));
    Some(ends[need - 1].saturating_duration_since(now))
}

/// After a fence, or at a start that finds a vserver meant to run down: whether `me` may run `vserver` again.
/// `Some(true)` once the cluster confirms, by a write through a majority (the table's compare-and-set from the
/// epoch `me` knows, to itself), that `me` still owns it, or when the table does not know it (it is this
/// host's alone); `Some(false)` when the table gives it to another host (someone took it over meanwhile);
/// `None` while that cannot be told (no majority, or the epoch moved on since it was read: ask again).
pub async fn still_ours<T: Table>(table: &T, me: &str, vserver: &str) -> Option<bool> {
    match table.owner(vserver) {
        None => Some(true),
        Some((owner, _)) if owner != me => Some(false),
        Some((_, epoch)) => match table.set_owner(vserver, me, epoch).await {
            Ok(_) => Some(true),
            Err(OwnershipError::StaleEpoch { .. }) => None,
            Err(e) => {
                tracing::warn!(vserver, error = %e, "after the fence: ownership not confirmed yet");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_the_majoritys_weakest_word() {
        let now = Instant::now();
        let s = |n: &str| n.to_string();
        let voters = [s("h1"), s("h2"), s("h3"), s("h4"), s("h5")];
        let at = |ms| now + Duration::from_millis(ms);
        // h1 votes: it needs two more of the four others; the second longest word decides.
        let vouching = [(s("h2"), at(300)), (s("h3"), at(900)), (s("h4"), at(600))];
        assert_eq!(remaining(&voters, "h1", &vouching, now), Some(Duration::from_millis(600)));
        // One word only: over.
        assert_eq!(remaining(&voters, "h1", &vouching[..1], now), Some(Duration::ZERO));
        // A word that ran out, a non-voter's, and the host's own do not count.
        let stale = [(s("h2"), now), (s("h9"), at(900)), (s("h1"), at(900)), (s("h3"), at(900))];
        assert_eq!(remaining(&voters, "h1", &stale, now), Some(Duration::ZERO));
        // A host that does not vote needs a majority of the voters itself.
        let three = [s("h2"), s("h3"), s("h4")];
        let two = [(s("h2"), at(300)), (s("h3"), at(900))];
        assert_eq!(remaining(&three, "h1", &two, now), Some(Duration::from_millis(300)));
        // No cluster to speak of: no lease needed.
        assert_eq!(remaining(&[s("h1")], "h1", &[], now), None);
        assert_eq!(remaining(&[], "h1", &[], now), None);
    }
}
