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

/// What a host does about its lease at one look ([`Watch::look`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It holds its lease (or needs none): its vservers run.
    Holds,
    /// It holds its lease again after it fenced: before it runs anything it fenced, it asks the cluster which
    /// vservers are still its own ([`still_ours`]).
    Recover,
    /// The lease is over but nothing is to be done: lease fencing is off, this host fenced already, or it has
    /// just started and has one lease length to win its lease.
    Wait,
    /// The lease is over, but maintenance covers this host (or did within a lease length): not fenced, and
    /// nobody takes it over.
    Covered,
    /// The lease is over: fence this host's vservers now.
    Fence,
}

/// A host's watch over its own lease, looked at often (every 50 ms in the agent): when it fences, when it
/// recovers. The agent and the simulator drive this same state.
#[derive(Debug, Clone)]
pub struct Watch {
    lease_len: Duration,
    quorum_fencing: bool,
    started: Instant,
    held: bool,
    fenced: bool,
    covered_until: Option<Instant>,
}

impl Watch {
    /// A watch started at `now` over a lease of `lease_len`; with `quorum_fencing` off, it never fences.
    pub fn new(lease_len: Duration, quorum_fencing: bool, now: Instant) -> Self {
        Self { lease_len, quorum_fencing, started: now, held: false, fenced: false, covered_until: None }
    }

    /// Whether maintenance covers this host now or did within the last lease length (`covered`: now): while it
    /// does, a lost lease is not fenced (the host wins it back as it reconnects). Safe: the coordinator takes a
    /// host over only once its heartbeats say it is no longer covered, and then only after the takeover
    /// timeout, longer than this.
    pub fn grace(&mut self, covered: bool, now: Instant) -> bool {
        if covered {
            self.covered_until = Some(now);
        }
        covered || self.covered_until.is_some_and(|t| now.saturating_duration_since(t) < self.lease_len)
    }

    /// Whether this host has held a lease since it started (a lease needed and won, not one needed by none).
    pub fn held(&self) -> bool {
        self.held
    }

    /// One look, at `now`, with `left` as [`remaining`] says (`None`: no lease needed) and whether maintenance
    /// covers this host now.
    pub fn look(&mut self, left: Option<Duration>, covered: bool, now: Instant) -> Verdict {
        let grace = self.grace(covered, now);
        if left.is_none_or(|left| !left.is_zero()) {
            // Needing none (a single voter) is not holding one: a lease is won from the peers.
            self.held |= left.is_some();
            if std::mem::take(&mut self.fenced) {
                return Verdict::Recover;
            }
            return Verdict::Holds;
        }
        let fresh = !self.held && now.saturating_duration_since(self.started) < self.lease_len;
        if !self.quorum_fencing || self.fenced || fresh {
            return Verdict::Wait;
        }
        if grace {
            return Verdict::Covered;
        }
        self.fenced = true;
        Verdict::Fence
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

    const LEN: Duration = Duration::from_millis(1800);

    #[test]
    fn a_lease_lost_is_fenced_once_and_recovered_once_back() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watch::new(LEN, true, t0);
        assert_eq!(w.look(Some(LEN), false, at(0)), Verdict::Holds);
        assert!(w.held());
        assert_eq!(w.look(Some(Duration::ZERO), false, at(100)), Verdict::Fence);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(150)), Verdict::Wait, "fenced once");
        assert_eq!(w.look(Some(LEN), false, at(900)), Verdict::Recover);
        assert_eq!(w.look(Some(LEN), false, at(950)), Verdict::Holds, "recovered once");
    }

    #[test]
    fn a_fresh_start_has_one_lease_length_to_win_its_lease() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watch::new(LEN, true, t0);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(0)), Verdict::Wait);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(1799)), Verdict::Wait);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(1800)), Verdict::Fence, "never won: fenced");
        // Needing none is not holding one: the grace is not spent on it either.
        let mut w = Watch::new(LEN, true, t0);
        assert_eq!(w.look(None, false, at(0)), Verdict::Holds);
        assert!(!w.held());
        assert_eq!(w.look(Some(Duration::ZERO), false, at(100)), Verdict::Wait);
        // Won once, lost: fenced at once, however fresh.
        let mut w = Watch::new(LEN, true, t0);
        assert_eq!(w.look(Some(LEN), false, at(0)), Verdict::Holds);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(100)), Verdict::Fence);
    }

    #[test]
    fn maintenance_and_its_last_lease_length_are_never_fenced() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watch::new(LEN, true, t0);
        assert_eq!(w.look(Some(LEN), true, at(0)), Verdict::Holds);
        assert_eq!(w.look(Some(Duration::ZERO), true, at(2000)), Verdict::Covered);
        // Maintenance ended at 2000 ms: covered for a lease length more, then fenced.
        assert_eq!(w.look(Some(Duration::ZERO), false, at(3799)), Verdict::Covered);
        assert_eq!(w.look(Some(Duration::ZERO), false, at(3800)), Verdict::Fence);
        // Without lease fencing, nothing is ever fenced.
        let mut off = Watch::new(LEN, false, t0);
        assert_eq!(off.look(Some(LEN), false, at(0)), Verdict::Holds);
        assert_eq!(off.look(Some(Duration::ZERO), false, at(5000)), Verdict::Wait);
    }
}
