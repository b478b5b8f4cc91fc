//! A migrate's phases, run by the source host (the vserver's primary), over the [`Source`] trait that the agent
//! implements:
//!
//! 1. checks, before anything stops: the target holds its lease (waited for a while), has no such vserver, has
//!    a usable rsync and room for the tree; then syncs are locked out;
//! 2. pre-copies into a replica session while the vserver runs, pass after pass, until a pass moves little or
//!    the pass limit is reached;
//! 3. stops it; a final pass of what changed since the last pre-copy pass started, in which any rsync error
//!    aborts; the commit (carrying the conf) makes the copy the target's current replica;
//! 4. records the target as the owner in the ownership table, from an epoch at which the table gives the
//!    vserver to this host (without a majority nothing moves; nor when a takeover gave it to another host
//!    meanwhile), and asks the target to promote that replica and start it, unless the cluster's event log no
//!    longer means it to run ([`crate::promote::promote_on`]);
//! 5. hands over: the new placement is recorded and spread, and the source keeps its tree as its replica.
//!
//! If a step before the target's start fails, the vserver runs again on the source and nothing is lost: the
//! source's tree and conf were never touched; unless the cluster says otherwise by then (the table gives it
//! to another host, or an operator's stop is the last intent), and then it stays stopped here. When the
//! target's answer to the promote stays lost, the vserver is started nowhere by this migrate: it may run there,
//! and two copies are worse than an outage.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::changes::ClockMark;
use crate::events::meant_to_run;
use crate::ownership::OwnershipError;
use crate::peer::{describe, Peers};
use crate::placement::{DataPath, Placement};
use crate::promote::{promote_on, PromoteOutcome};
use crate::rsync::Moved;
use crate::session::{Commit, Session, SessionPeers};
use crate::table::Table;
use crate::wire::{ConfFile, MigrationStatus, PeerState, PeerStatus, Preflight, PromoteRequest};

/// Pre-copy passes at most, before the stop.
pub const MAX_PRECOPY_PASSES: u32 = 5;
/// A pre-copy pass that moved less than this (or a hundredth of the tree) ends the pre-copy.
pub const SMALL_PASS_BYTES: u64 = 16 << 20;
/// How long a migrate asks the target again what it runs when the answer to its promote was lost.
pub const ASK_AGAIN: Duration = Duration::from_secs(15);
/// How long a migrate waits, before it copies or stops anything, for a target that does not hold its lease
/// yet (a host just back wins it within a second or two; after a takeover of its vservers, once the voters'
/// promise not to acknowledge it has run out).
pub const TARGET_LEASE_WAIT: Duration = Duration::from_secs(10);

/// The source host of one migrate of one vserver, as the phases need it.
pub trait Source: Send + Sync {
    /// The agent-to-agent routes.
    type Peers: Peers + SessionPeers;
    /// The ownership table.
    type Table: Table;
    /// What keeps the vserver's syncs out while it is held.
    type SyncGuard: Send;

    /// This host's name.
    fn node(&self) -> &str;
    /// The vserver's name.
    fn vserver(&self) -> &str;
    /// Where its tree and conf are: what is copied to the target (the tree and conf, the conf alone, nothing).
    fn data_path(&self) -> DataPath;
    /// The routes to the target.
    fn peers(&self) -> &Self::Peers;
    /// The ownership table, when the cluster has one.
    fn table(&self) -> Option<&Self::Table>;
    /// The migrate's status changed (shown by `GET .../migration`).
    fn update(&self, f: impl FnOnce(&mut MigrationStatus));
    /// The size of the vserver's tree, bytes.
    fn tree_bytes(&self) -> impl Future<Output = Result<u64, String>> + Send;
    /// Waits for the syncs under way and keeps new ones out until the guard is dropped.
    fn lock_out_syncs(&self) -> impl Future<Output = Self::SyncGuard> + Send;
    /// One rsync pass of the whole tree into the session's generation on `target` (`live`: it may run).
    fn copy_tree(
        &self,
        target: &str,
        session: &str,
        live: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> impl Future<Output = Result<Moved, String>> + Send;
    /// A pass of what changed since `mark` (or of the whole tree, and why), the vserver stopped.
    fn copy_changes(
        &self,
        target: &str,
        session: &str,
        mark: ClockMark,
        progress: &(dyn Fn(u64) + Sync),
    ) -> impl Future<Output = Result<(Moved, String), String>> + Send;
    /// The conf files for the commit, or `None` once copied by rsync into the session.
    fn conf_for_commit(
        &self,
        target: &str,
        session: &str,
    ) -> impl Future<Output = Result<Option<Vec<ConfFile>>, String>> + Send;
    /// Stops the vserver here (held: nothing restarts it).
    fn stop(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts it here again.
    fn start(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Records that it is not to run here (its intent), so that nothing here restarts it.
    fn stay_stopped(&self) -> impl Future<Output = ()> + Send;
    /// The placement names this host as primary again (after a refused start on the target).
    fn placement_back(&self);
    /// The target runs it: record and spread the placement that names it primary, keep this host's tree as
    /// its replica, and record that it is not to run here; what did not work.
    fn hand_over(&self, target: &str, started_unix_ms: u64) -> impl Future<Output = Vec<String>> + Send;
}

/// Bytes the target needs free for a tree of `tree_bytes`, given what its staging generation already holds:
/// the tree is mostly rewritten in place, file by file (rsync's temporary copy of a file needs that file's size
/// again), with a tenth as margin.
pub fn room_needed(tree_bytes: u64, staging_bytes: u64) -> u64 {
    (tree_bytes + tree_bytes / 10).saturating_sub(staging_bytes)
}

/// Whether the pre-copy ends after pass `pass`, which transferred `transferred` bytes of a tree of
/// `tree_bytes`.
pub fn precopy_done(pass: u32, transferred: u64, tree_bytes: u64) -> bool {
    transferred < SMALL_PASS_BYTES.max(tree_bytes / 100) || pass >= MAX_PRECOPY_PASSES
}

/// Why the target's preflight answer forbids the migrate, if it does; `rsync`: the migrate copies with rsync.
pub fn refuse(pre: &Preflight, target: &str, name: &str, tree_bytes: u64, rsync: bool) -> Option<String> {
    if pre.present {
        return Some(format!("{target} already has {name} (configured or running); nothing was stopped"));
    }
    if let Some(e) = pre.rsync_error.as_ref().filter(|_| rsync) {
        return Some(format!("{target} has no usable rsync ({e}); nothing was stopped"));
    }
    let needed = room_needed(tree_bytes, pre.staging_bytes);
    if pre.free_bytes < needed {
        return Some(format!(
            "{target} has {} MiB free for replicas, {name} needs about {} MiB; nothing was stopped",
            pre.free_bytes >> 20,
            needed >> 20
        ));
    }
    None
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Why a migrate is refused before anything is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inadmissible {
    /// The target is no host name.
    #[error("target: {reason}")]
    BadTarget {
        /// Why it is no host name.
        reason: String,
    },
    /// The target is this host.
    #[error("{name} already runs on {node}")]
    SameHost {
        /// The vserver.
        name: String,
        /// This host.
        node: String,
    },
    /// The target is not a peer of this host.
    #[error("unknown host {target:?} (the peers of {node}: {})", known.join(", "))]
    UnknownHost {
        /// The target asked for.
        target: String,
        /// This host.
        node: String,
        /// This host's peers.
        known: Vec<String>,
    },
    /// The target is not heard from.
    #[error("target {target} is {state} (no recent heartbeat); nothing was stopped")]
    NotAlive {
        /// The target.
        target: String,
        /// What this host makes of it.
        state: String,
    },
    /// The vserver is not in the cluster configuration.
    #[error("{name} is not in the cluster configuration")]
    NotPlaced {
        /// The vserver.
        name: String,
    },
    /// This host is not the vserver's primary.
    #[error("{name}'s primary is {primary}, not this host")]
    NotPrimary {
        /// The vserver.
        name: String,
        /// Its primary.
        primary: String,
    },
}

impl Inadmissible {
    /// Whether the request itself is malformed (a 400), rather than refused as things stand (a 404 or 409).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::BadTarget { .. })
    }
    /// Whether the vserver or the target is unknown to the cluster (a 404).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::NotPlaced { .. } | Self::UnknownHost { .. })
    }
}

/// The checks before a migrate of `name` from `node` to `target`, given this host's peers as heard and the
/// vserver's placement here: the target is another host, a peer, alive, and this host is the primary. The
/// placement, when admitted.
pub fn admit<'a>(
    node: &str,
    name: &str,
    target: &str,
    peers: &[PeerStatus],
    placement: Option<&'a Placement>,
) -> Result<&'a Placement, Inadmissible> {
    if let Err(e) = isolate::VserverName::parse(target) {
        return Err(Inadmissible::BadTarget { reason: e.to_string().replace("vserver name", "node name") });
    }
    if target == node {
        return Err(Inadmissible::SameHost { name: name.into(), node: node.into() });
    }
    let Some(peer) = peers.iter().find(|p| p.name == target) else {
        let known = peers.iter().map(|p| p.name.clone()).collect();
        return Err(Inadmissible::UnknownHost { target: target.into(), node: node.into(), known });
    };
    if peer.state != PeerState::Alive {
        let state = serde_json::to_value(peer.state).ok().and_then(|v| v.as_str().map(str::to_string));
        return Err(Inadmissible::NotAlive { target: target.into(), state: state.unwrap_or_default() });
    }
    let placement = placement.ok_or_else(|| Inadmissible::NotPlaced { name: name.into() })?;
    if placement.primary != node {
        return Err(Inadmissible::NotPrimary { name: name.into(), primary: placement.primary.clone() });
    }
    Ok(placement)
}

/// The migrate of `host.vserver()` to `target`; `Ok(outage)` (none if it was not started there), or what failed
/// and what was done about it. `was_running`: it runs here (it is stopped before the final pass); `meant_here`:
/// its intent here is "running", although it may be down now (killed by its keepers, fenced, or crashed and
/// waiting for its restart). Either way it is started on the target, unless the cluster's event log no longer
/// means it to run.
pub async fn run<S: Source>(
    host: &S,
    target: &str,
    was_running: bool,
    meant_here: bool,
) -> Result<Option<Duration>, String> {
    let name = host.vserver();
    let peers = host.peers();
    let phase_start = Mutex::new(Instant::now());
    let enter = |phase: &str| {
        let elapsed =
            std::mem::replace(&mut *phase_start.lock().unwrap_or_else(|e| e.into_inner()), Instant::now()).elapsed();
        host.update(|m| {
            if !m.phase.is_empty() {
                m.phases_ms.push((m.phase.clone(), elapsed.as_millis() as u64));
            }
            m.phase = phase.to_string();
        });
    };

    // 1. Checks on the target, and room for the tree (a tree on shared storage is not copied).
    let data = host.data_path();
    let tree_bytes = if data.copies_tree() { host.tree_bytes().await? } else { 0 };
    host.update(|m| m.tree_bytes = tree_bytes);
    let ask = async || describe(peers.preflight(target, name).await, "preflight", target);
    let mut pre = ask().await?;
    // A target without its lease would refuse the start after this host stopped the vserver: wait for it
    // before anything is stopped.
    let (waiting, mut said) = (Instant::now(), false);
    while pre.lease_left_ms == Some(0) {
        if waiting.elapsed() >= TARGET_LEASE_WAIT {
            return Err(format!(
                "{target} does not hold its lease (no majority of the cluster acknowledges it) after {} s; it \
                 could start nothing; nothing was stopped",
                TARGET_LEASE_WAIT.as_secs()
            ));
        }
        if !said {
            said = true;
            enter("waiting for the target's lease");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        pre = ask().await?;
    }
    if let Some(why) = refuse(&pre, target, name, tree_bytes, data.shared_dir().is_none()) {
        return Err(why);
    }
    let _syncs_out = host.lock_out_syncs().await;

    // 2. Pre-copy while it runs; on shared storage, no session: the target reaches the tree and conf.
    enter("precopy");
    let mut session = match data.shared_dir() {
        None => Some(Session::begin(peers, target, name, host.node()).await?),
        Some(_) => None,
    };
    let progress = |bytes: u64| host.update(|m| m.pass_bytes = bytes);
    let mut pass = 0;
    let mut mark = ClockMark::now();
    let mut failed = None;
    while let Some(session) = session.as_ref().filter(|_| data.copies_tree()) {
        pass += 1;
        // Whatever changes from here on has a newer inode change time: the final pass looks for that alone.
        mark = ClockMark::now();
        host.update(|m| {
            m.pass = pass;
            m.pass_bytes = 0;
        });
        let moved = match host.copy_tree(target, session.id(), true, &progress).await {
            Ok(moved) => moved,
            Err(e) => {
                failed = Some(format!("pre-copy pass {pass} failed: {e}"));
                break;
            }
        };
        host.update(|m| m.bytes_sent += moved.bytes_sent);
        if precopy_done(pass, moved.transferred_bytes, tree_bytes) {
            break;
        }
    }
    if let Some(why) = failed {
        let why = abort(session.take(), why).await;
        return Err(format!("{why}; {name} kept running here"));
    }

    // 3. Stop, final pass.
    enter("stopping");
    let stopped_at = Instant::now();
    let started_unix_ms = now_ms();
    // `ours_at`: the epoch at which this migrate recorded this host as the owner again, which this host's copy
    // of the table may not have applied yet.
    let restart_here = async |why: String, ours_at: Option<u64>| {
        if !was_running {
            return format!("{why}; {name} was not running, and stays here");
        }
        // Not over the cluster's word: a table write whose answer was lost may have given it to the target,
        // a takeover to another host while this one was cut off or frozen, and an operator's stop recorded
        // meanwhile (refused here while the migrate held it) is the last intent.
        if let Some(why_not) = host.table().and_then(|table| not_here(table, host.node(), name, ours_at)) {
            host.stay_stopped().await;
            return format!("{why}; {name} is not started here again: {why_not}");
        }
        match host.start().await {
            Ok(()) => format!("{why}; {name} runs here again"),
            Err(e) => format!("{why}; and {name} could not be started here again: {e}"),
        }
    };
    if was_running {
        if let Err(e) = host.stop().await {
            let why = abort(session, format!("cannot stop {name} here: {e}")).await;
            return Err(restart_here(why, None).await);
        }
    }
    if let Some(session) = session {
        enter("final");
        let final_pass = async {
            let mut moved = Moved::default();
            if data.copies_tree() {
                let how;
                (moved, how) = host.copy_changes(target, session.id(), mark, &progress).await?;
                host.update(|m| m.final_pass = Some(how));
            } else {
                host.update(|m| m.final_pass = Some("the conf alone: the tree is on the shared device".into()));
            }
            let conf = host.conf_for_commit(target, session.id()).await?;
            Ok::<_, String>((moved, conf))
        };
        let conf = match final_pass.await {
            Ok((moved, conf)) => {
                host.update(|m| m.bytes_sent += moved.bytes_sent);
                conf
            }
            Err(e) => {
                let why = session.abort(format!("final pass failed: {e}")).await;
                return Err(restart_here(why, None).await);
            }
        };
        let commit = Commit { started_unix_ms, consistent: true, kind: "migrate".into(), conf };
        if let Err(e) = session.commit(commit).await {
            return Err(restart_here(format!("final pass failed: {e}"), None).await);
        }
    }

    // 4. Record the new owner, then promote and start on the target.
    enter("starting");
    let mut epoch = None;
    if let Some(table) = host.table() {
        match record_owner(table, host.node(), name, target).await {
            Ok(e) => epoch = Some(e),
            Err(e) => {
                return Err(restart_here(format!("the cluster did not record {target} as the owner: {e}"), None).await)
            }
        }
    }
    // Read once the new owner is recorded, as a takeover does: an operator's stop recorded while the migrate
    // held the vserver (refused here, but the last intent) comes before it in the log, and is seen here.
    let start =
        (was_running || meant_here) && host.table().is_none_or(|table| meant_to_run(&table.events(), name, None));
    let req = PromoteRequest { source: host.node().to_string(), start, epoch, again: false };
    match promote_on(peers, target, name, &req, ASK_AGAIN).await {
        PromoteOutcome::Running(_) => {}
        PromoteOutcome::Refused(why) => {
            let mut ours_at = None;
            if let Some(table) = host.table() {
                // Back from the epoch this migrate recorded, never over an ownership recorded since (a takeover
                // of the target while it was asked): then it is not started here either.
                let recorded = epoch.unwrap_or_else(|| table.epoch(name));
                match table.set_owner(name, host.node(), recorded).await {
                    Ok((_, epoch)) => ours_at = Some(epoch),
                    Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record this host as the owner again"),
                }
                // While the table named the target, the placement here may have followed it: back at once, so
                // that nothing (a new migrate) finds it pointing at the target meanwhile.
                host.placement_back();
            }
            return Err(restart_here(format!("start on {target} failed: {why}"), ours_at).await);
        }
        PromoteOutcome::Unknown(why) => {
            // Never two copies: whether it started there is not known, so it is not started here, and its
            // intent here becomes "stopped" so that nothing here restarts it either.
            host.stay_stopped().await;
            return Err(format!(
                "no answer from {target} about the start ({why}); {name} is stopped here and may be running on \
                 {target}: check there (vserver-stat, GET /v1/status) before starting it anywhere"
            ));
        }
    }
    let outage = start.then(|| stopped_at.elapsed());

    // 5. Hand over.
    enter("recording");
    let warnings = host.hand_over(target, started_unix_ms).await;
    enter("done");
    if !warnings.is_empty() {
        tracing::warn!(vserver = %name, "migrate done with warnings: {}", warnings.join("; "));
        host.update(|m| m.error = Some(format!("done, with warnings: {}", warnings.join("; "))));
    }
    Ok(outage)
}

/// Aborts the migrate's session, if it has one (a vserver on shared storage has none); what went wrong, with
/// what the target said.
async fn abort<P: SessionPeers>(session: Option<Session<'_, P>>, why: String) -> String {
    match session {
        Some(session) => session.abort(why).await,
        None => why,
    }
}

/// Why `name` is not to run on `me` again after a failed migrate, by the cluster: the table gives it to
/// another host, or the event log no longer means it to run. `ours_at`: the cluster committed `me` as its owner
/// at that epoch, which this host's copy of the table, behind the leader's by a heartbeat, may not show yet.
fn not_here(table: &impl Table, me: &str, name: &str, ours_at: Option<u64>) -> Option<String> {
    match table.owner(name) {
        Some((owner, epoch)) if owner != me && ours_at.is_none_or(|ours| epoch > ours) => {
            Some(format!("the cluster gives it to {owner} (epoch {epoch})"))
        }
        _ if !meant_to_run(&table.events(), name, None) => {
            Some("the cluster no longer means it to run (an operator's stop is recorded)".into())
        }
        _ => None,
    }
}

/// Records `target` as the owner of `name` (from `me`); the new epoch. Only from an epoch at which the table
/// gives it to this host: a takeover while this host was cut off or frozen gave it to another host, which may
/// run it. This host's copy of the table may lag the leader's by a Raft heartbeat: when the cluster says this
/// host owns it still, at a newer epoch, asked again from that epoch. A write whose answer was lost may have
/// applied: the table says so.
async fn record_owner(table: &impl Table, me: &str, name: &str, target: &str) -> Result<u64, String> {
    let mut from = match table.owner(name) {
        Some((owner, epoch)) if owner != me => {
            return Err(format!("the cluster gives it to {owner} (epoch {epoch}), no longer to this host"))
        }
        _ => table.epoch(name),
    };
    let mut recorded = table.set_owner(name, target, from).await;
    if let Err(OwnershipError::StaleEpoch { current, owner: Some(owner), .. }) = &recorded {
        if owner == me {
            from = *current;
            recorded = table.set_owner(name, target, from).await;
        }
    }
    match recorded {
        Ok((_, epoch)) => Ok(epoch),
        Err(e) => match table.owner(name) {
            Some((owner, epoch)) if owner == target && epoch == from + 1 => Ok(epoch),
            _ => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use reqwest::StatusCode;

    use super::*;
    use crate::ownership::{Event, Maintenance, OwnerEntry};
    use crate::peer::{Answer, Refused, Unreachable};
    use crate::store::GenerationMeta;
    use crate::wire::{
        AbortReply, BeginReply, BeginRequest, CommitRequest, HeldReplica, ProbeReply, ProbeRequest, PromoteTimes,
        VserverState,
    };

    fn preflight() -> Preflight {
        Preflight {
            free_bytes: 10 << 30,
            rsync: Some("rsync 3.2.7".into()),
            rsync_error: None,
            present: false,
            staging_bytes: 0,
            lease_left_ms: None,
        }
    }

    fn peer(name: &str, state: PeerState) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            url: String::new(),
            state,
            last_heard_ms: None,
            rtt_ms: None,
            incarnation: None,
            restarts_seen: 0,
            maintenance: false,
            vservers: Vec::new(),
            watched: true,
            heartbeats: true,
        }
    }

    #[test]
    fn a_migrate_goes_from_the_primary_to_another_live_peer() {
        let peers = [peer("h1", PeerState::Alive), peer("h2", PeerState::Dead)];
        let ours = Placement { primary: "h0".into(), standbys: vec!["h1".into()], epoch: 0 };
        let theirs = Placement { primary: "h1".into(), ..ours.clone() };
        assert_eq!(admit("h0", "web", "h1", &peers, Some(&ours)), Ok(&ours));
        let e = admit("h0", "web", "h0", &peers, Some(&ours)).unwrap_err();
        assert!(!e.is_bad_request() && !e.is_unknown() && e.to_string() == "web already runs on h0", "{e}");
        let e = admit("h0", "web", "h9", &peers, Some(&ours)).unwrap_err();
        assert!(e.is_unknown(), "{e}");
        assert_eq!(e.to_string(), "unknown host \"h9\" (the peers of h0: h1, h2)");
        let e = admit("h0", "web", "../h1", &peers, Some(&ours)).unwrap_err();
        assert!(e.is_bad_request() && e.to_string().starts_with("target: invalid node name \"../h1\""), "{e}");
        let e = admit("h0", "web", "h2", &peers, Some(&ours)).unwrap_err();
        assert!(!e.is_bad_request() && e.to_string().starts_with("target h2 is dead"), "{e}");
        assert!(admit("h0", "web", "h1", &peers, None).unwrap_err().is_unknown());
        let e = admit("h0", "web", "h1", &peers, Some(&theirs)).unwrap_err();
        assert_eq!(e.to_string(), "web's primary is h1, not this host");
    }

    #[test]
    fn the_precopy_ends_on_a_small_pass_or_at_the_pass_limit() {
        let tree = 10u64 << 30;
        // A hundredth of a 10 GiB tree is over the 16 MiB floor.
        assert!(!precopy_done(1, tree / 50, tree));
        assert!(precopy_done(1, tree / 200, tree));
        assert!(precopy_done(MAX_PRECOPY_PASSES, tree, tree));
        // A small tree: the floor decides.
        assert!(precopy_done(1, 1 << 20, 100 << 20));
        assert!(!precopy_done(1, 32 << 20, 100 << 20));
    }

    #[test]
    fn the_target_needs_room_for_the_tree_less_what_its_staging_copy_holds() {
        assert_eq!(room_needed(1000, 0), 1100);
        assert_eq!(room_needed(1000, 600), 500);
        assert_eq!(room_needed(1000, 5000), 0);
        let mut pre = preflight();
        pre.free_bytes = 100 << 20;
        let why = refuse(&pre, "h1", "web", 200 << 20, true).unwrap();
        assert_eq!(why, "h1 has 100 MiB free for replicas, web needs about 220 MiB; nothing was stopped");
        pre.staging_bytes = 190 << 20;
        assert_eq!(refuse(&pre, "h1", "web", 200 << 20, true), None);
    }

    /// A table whose local copy applied every commit but the last, as a follower's may for a Raft heartbeat.
    #[derive(Default)]
    struct LaggingTable {
        committed: Mutex<BTreeMap<String, OwnerEntry>>,
        seen: Mutex<BTreeMap<String, OwnerEntry>>,
    }

    impl Table for LaggingTable {
        fn is_leader(&self) -> bool {
            false
        }
        fn leader(&self) -> Option<String> {
            None
        }
        fn table(&self) -> BTreeMap<String, OwnerEntry> {
            self.seen.lock().unwrap().clone()
        }
        fn epoch(&self, vserver: &str) -> u64 {
            self.seen.lock().unwrap().get(vserver).map_or(0, |e| e.epoch)
        }
        fn owner(&self, vserver: &str) -> Option<(String, u64)> {
            self.seen.lock().unwrap().get(vserver).and_then(|e| Some((e.owner.clone()?, e.epoch)))
        }
        fn events(&self) -> Vec<Event> {
            Vec::new()
        }
        fn maintenance(&self) -> Maintenance {
            Maintenance::default()
        }
        fn voters(&self) -> Vec<String> {
            Vec::new()
        }
        async fn set_owner(&self, vserver: &str, owner: &str, expected: u64) -> Result<(String, u64), OwnershipError> {
            let mut committed = self.committed.lock().unwrap();
            let before = committed.clone();
            let entry = committed.entry(vserver.to_string()).or_insert(OwnerEntry { owner: None, epoch: 0 });
            if entry.epoch != expected {
                return Err(OwnershipError::StaleEpoch {
                    vserver: vserver.into(),
                    expected,
                    current: entry.epoch,
                    owner: entry.owner.clone(),
                });
            }
            *entry = OwnerEntry { owner: Some(owner.to_string()), epoch: expected + 1 };
            *self.seen.lock().unwrap() = before;
            Ok((owner.to_string(), expected + 1))
        }
        async fn take_over(&self, v: &str, o: &str, e: u64, _: &str) -> Result<(String, u64), OwnershipError> {
            self.set_owner(v, o, e).await
        }
        async fn log_at(&self, _: &str, _: Option<&str>, _: &str, _: u64) -> Result<u64, OwnershipError> {
            Ok(1)
        }
    }

    /// A target that takes the copy and refuses the promote (its start failed).
    struct RefusingTarget;

    impl Peers for RefusingTarget {
        fn knows(&self, _: &str) -> bool {
            true
        }
        async fn probe(&self, _: &str, _: &ProbeRequest, _: Duration) -> Answer<ProbeReply> {
            Err(Unreachable("not asked".into()))
        }
        async fn replicas(&self, _: &str, _: Duration) -> Answer<Vec<HeldReplica>> {
            Err(Unreachable("not asked".into()))
        }
        async fn promote(
            &self,
            _: &str,
            _: &str,
            _: &PromoteRequest,
            _: Duration,
        ) -> Answer<(VserverState, PromoteTimes)> {
            Ok(Err(Refused { status: StatusCode::INTERNAL_SERVER_ERROR, reason: "pre-start hook failed".into() }))
        }
        async fn vserver_state(&self, _: &str, _: &str, _: Duration) -> Answer<VserverState> {
            Err(Unreachable("not asked".into()))
        }
    }

    impl SessionPeers for RefusingTarget {
        async fn preflight(&self, _: &str, _: &str) -> Answer<Preflight> {
            Ok(Ok(preflight()))
        }
        async fn begin(&self, _: &str, _: &str, _: &BeginRequest) -> Answer<BeginReply> {
            Ok(Ok(BeginReply { session: "s1".into(), generation: "a".into() }))
        }
        async fn commit(&self, _: &str, _: &str, req: &CommitRequest) -> Answer<GenerationMeta> {
            Ok(Ok(GenerationMeta {
                source: "h0".into(),
                started_unix_ms: req.started_unix_ms,
                finished_unix_ms: req.started_unix_ms,
                conf_sha256: String::new(),
                consistent: true,
                kind: "migrate".into(),
            }))
        }
        async fn abort(&self, _: &str, _: &str, _: &CommitRequest, _: Duration) -> Answer<AbortReply> {
            Ok(Ok(AbortReply { receiver_errors: None }))
        }
    }

    /// The source's side, recording what it did to the vserver.
    struct FakeSource {
        table: LaggingTable,
        peers: RefusingTarget,
        data: DataPath,
        did: Mutex<Vec<&'static str>>,
    }

    impl Source for FakeSource {
        type Peers = RefusingTarget;
        type Table = LaggingTable;
        type SyncGuard = ();
        fn node(&self) -> &str {
            "h0"
        }
        fn vserver(&self) -> &str {
            "web"
        }
        fn data_path(&self) -> DataPath {
            self.data.clone()
        }
        fn peers(&self) -> &RefusingTarget {
            &self.peers
        }
        fn table(&self) -> Option<&LaggingTable> {
            Some(&self.table)
        }
        fn update(&self, _: impl FnOnce(&mut MigrationStatus)) {}
        async fn tree_bytes(&self) -> Result<u64, String> {
            Ok(1 << 20)
        }
        async fn lock_out_syncs(&self) {}
        async fn copy_tree(&self, _: &str, _: &str, _: bool, _: &(dyn Fn(u64) + Sync)) -> Result<Moved, String> {
            self.did.lock().unwrap().push("copy tree");
            Ok(Moved::default())
        }
        async fn copy_changes(
            &self,
            _: &str,
            _: &str,
            _: ClockMark,
            _: &(dyn Fn(u64) + Sync),
        ) -> Result<(Moved, String), String> {
            self.did.lock().unwrap().push("copy changes");
            Ok((Moved::default(), "changes".into()))
        }
        async fn conf_for_commit(&self, _: &str, _: &str) -> Result<Option<Vec<ConfFile>>, String> {
            self.did.lock().unwrap().push("conf");
            Ok(None)
        }
        async fn stop(&self) -> Result<(), String> {
            self.did.lock().unwrap().push("stop");
            Ok(())
        }
        async fn start(&self) -> Result<(), String> {
            self.did.lock().unwrap().push("start");
            Ok(())
        }
        async fn stay_stopped(&self) {
            self.did.lock().unwrap().push("stay stopped");
        }
        fn placement_back(&self) {
            self.did.lock().unwrap().push("placement back");
        }
        async fn hand_over(&self, _: &str, _: u64) -> Vec<String> {
            self.did.lock().unwrap().push("hand over");
            Vec::new()
        }
    }

    async fn source(data: DataPath) -> FakeSource {
        let table = LaggingTable::default();
        table.set_owner("web", "h0", 0).await.unwrap();
        table.set_owner("web", "h0", 1).await.map(drop).unwrap_or(());
        FakeSource { table, peers: RefusingTarget, data, did: Mutex::new(Vec::new()) }
    }

    #[tokio::test]
    async fn a_refused_start_on_the_target_runs_it_here_again_although_this_hosts_table_lags() {
        let host = source(DataPath::Periodic).await;
        let e = run(&host, "h1", true, true).await.unwrap_err();
        assert!(e.contains("start on h1 failed") && e.contains("web runs here again"), "{e}");
        let did = ["copy tree", "stop", "copy changes", "conf", "placement back", "start"];
        assert_eq!(*host.did.lock().unwrap(), did);
        let committed = host.table.committed.lock().unwrap().get("web").cloned().unwrap();
        assert_eq!((committed.owner.as_deref(), committed.epoch), (Some("h0"), 4));
    }

    #[tokio::test]
    async fn a_migrate_copies_the_conf_alone_of_a_tree_on_a_device_and_nothing_on_shared_storage() {
        let block = source(DataPath::Block { device: "/dev/sdb".into(), fstype: "ext4".into() }).await;
        run(&block, "h1", true, true).await.unwrap_err();
        assert_eq!(*block.did.lock().unwrap(), ["stop", "conf", "placement back", "start"]);
        let shared = source(DataPath::Shared { dir: "/srv/shared".into() }).await;
        run(&shared, "h1", true, true).await.unwrap_err();
        assert_eq!(*shared.did.lock().unwrap(), ["stop", "placement back", "start"]);
    }

    #[test]
    fn a_target_that_has_it_or_no_rsync_is_refused_before_anything_stops() {
        let mut pre = preflight();
        pre.present = true;
        assert!(refuse(&pre, "h1", "web", 1, false).unwrap().contains("already has web"));
        let mut pre = preflight();
        pre.rsync_error = Some("rsync 3.1.0 is too old".into());
        assert!(refuse(&pre, "h1", "web", 1, true).unwrap().contains("no usable rsync (rsync 3.1.0 is too old)"));
        assert_eq!(refuse(&pre, "h1", "web", 1, false), None, "a migrate on shared storage copies nothing");
        assert_eq!(refuse(&preflight(), "h1", "web", 1, true), None);
    }
}
