//! Continuous replication (`data = "continuous"`), on the primary: while this host owns and runs such a
//! vserver, a watch of its tree ([`super::treewatch`]) collects the paths that change, and every `batch` (when
//! anything changed) one batch goes to each standby through the replica session of the periodic syncs: a
//! session, an rsync pass of the changed paths alone (`--files-from`), the conf in the commit, the commit. So a
//! standby's replica advances by whole batches only.
//!
//! **Which paths a batch carries.** A standby fills the generation that is not current, which holds the copy
//! of the commit before the current one: one batch behind. So a batch to a standby carries the paths of the
//! batch before it to that standby as well as its own ([`Lane`]). What a lane does not know (at the start of a
//! watch, after lost events, a failed batch, a standby that was dead, or a sync made by someone else) it gets
//! by a full pass of the whole tree (`sync_to`, as the periodic loop runs it), which also runs at the vserver's
//! interval anyway. A full pass leaves the other generation as unknown as before unless the lane knew what
//! changed since the current one, so a lane may need two full passes before batches of paths go again.
//!
//! **Pace.** Rounds of batches start at least `batch` apart, whatever the writers do; a standby whose pass
//! failed is tried again after a growing delay. Rounds hold the vserver's lock (`vserver_lock`), as syncs
//! and migrates do, so none of them overlap; the periodic loop leaves a watched vserver to its watch.
//!
//! **Lag.** Per standby, the time since the oldest change that is not committed there yet was seen (0 when
//! none is pending), and when the last batch committed: in the status, the metrics and the status page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use isolate::VserverName;
use tokio::time::Instant;

use super::lag::LaneView;
use super::replication::{now_ms, Listed, Passes, Replication};
use super::treewatch::{Change, TreeWatch};
use crate::model::PeerState;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// More changed paths than this pending for a standby, and a full pass is cheaper than the list.
pub const MAX_LISTED: usize = 50_000;

/// The first delay before a standby whose pass failed is tried again; it doubles at each failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two tries of a failing standby.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the watch looks again at which standbys are alive when nothing else wakes it.
const RECHECK: Duration = Duration::from_secs(1);

/// How often the agent looks at which vservers to watch, and how long a watch that could not be set up waits
/// before it is tried again.
const FOLLOW: Duration = Duration::from_secs(1);
const SETUP_RETRY: Duration = Duration::from_secs(60);

/// What a standby's replica needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A pass over the whole tree.
    Full,
    /// A pass over these paths (relative to the tree).
    Paths(BTreeSet<PathBuf>),
}

/// One standby's replica of a watched vserver, as the primary knows it. Paths are relative to the tree.
#[derive(Debug, Clone)]
pub struct Lane {
    /// What may differ between the standby's other generation (the one the next session fills) and its current
    /// one: the paths of the last session committed there. `None`: not known.
    other: Option<BTreeSet<PathBuf>>,
    /// What changed in the tree since the copy in the current generation began. `None`: not known.
    unshipped: Option<BTreeSet<PathBuf>>,
    /// When the oldest change not in the current generation was seen, ms since the epoch.
    oldest_ms: Option<u64>,
    /// The session under way: what it carries, and when its oldest change was seen.
    in_flight: Option<(Option<BTreeSet<PathBuf>>, Option<u64>)>,
    /// The generation the next session should fill (the one that is not current), when known.
    expect: Option<String>,
    /// When the last full pass began (the next one is due an interval later).
    last_full: Option<Instant>,
    /// After a failure: not tried again before then; and the failures in a row.
    retry_at: Option<Instant>,
    failures: u32,
    /// Sessions with the standby that ended, as the replication reports counted them after this lane's last
    /// one: a different count means someone else synced it.
    sessions_seen: Option<u64>,
    /// When the last session committed, ms since the epoch, and how many committed.
    last_commit_ms: Option<u64>,
    commits: u64,
}

impl Lane {
    /// A lane that knows nothing of the standby's replica yet; its changes count from `since_ms`.
    pub fn new(since_ms: u64) -> Self {
        Lane {
            other: None,
            unshipped: None,
            oldest_ms: Some(since_ms),
            in_flight: None,
            expect: None,
            last_full: None,
            retry_at: None,
            failures: 0,
            sessions_seen: None,
            last_commit_ms: None,
            commits: 0,
        }
    }

    /// Paths changed, seen at `at_ms`.
    pub fn seen<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathBuf>, at_ms: u64) {
        let mut any = false;
        if let Some(u) = &mut self.unshipped {
            for p in paths {
                any |= u.insert(p.clone());
            }
            if u.len() > MAX_LISTED {
                self.unshipped = None;
            }
        } else {
            any = true;
        }
        if any {
            self.oldest_ms.get_or_insert(at_ms);
        }
    }

    /// Changes were lost (seen at `at_ms`): what differs from the current generation is no longer known.
    pub fn lost(&mut self, at_ms: u64) {
        self.unshipped = None;
        self.oldest_ms.get_or_insert(at_ms);
    }

    /// The standby was not reached (dead, or not heard yet): it gets a full pass when it is back.
    pub fn forget_other(&mut self) {
        self.other = None;
    }

    /// Someone else synced the standby: neither generation is known.
    pub fn forget_all(&mut self) {
        self.other = None;
        self.unshipped = None;
        self.expect = None;
    }

    /// Whether something changed that the standby's current generation does not have (or may not).
    pub fn pending(&self) -> bool {
        self.unshipped.as_ref().is_none_or(|u| !u.is_empty())
    }

    /// When this lane wants a session next: now if something is pending, else when its full pass is due; not
    /// before the delay after a failure.
    pub fn ready_at(&self, now: Instant, interval: Duration) -> Instant {
        let wanted = if self.pending() { now } else { self.last_full.map_or(now, |t| t + interval) };
        self.retry_at.map_or(wanted, |r| r.max(wanted))
    }

    /// What the next session should carry, if one is wanted at `now`.
    pub fn plan(&self, now: Instant, interval: Duration) -> Option<Plan> {
        if self.ready_at(now, interval) > now {
            return None;
        }
        let full_due = self.last_full.is_none_or(|t| now >= t + interval);
        match (&self.other, &self.unshipped) {
            (Some(other), Some(unshipped)) if !full_due => Some(Plan::Paths(other | unshipped)),
            _ => Some(Plan::Full),
        }
    }

    /// A session begins now: what it carries stops being pending (changes from now on are the next
    /// session's).
    pub fn take(&mut self, plan: &Plan, now: Instant) {
        let carried = self.unshipped.replace(BTreeSet::new());
        self.in_flight = Some((carried, self.oldest_ms.take()));
        if *plan == Plan::Full {
            self.last_full = Some(now);
        }
    }

    /// The session committed at `at_ms`, filling `generation`.
    pub fn committed(&mut self, generation: &str, at_ms: u64) {
        let (carried, _) = self.in_flight.take().unwrap_or_default();
        // The generation now other was current: it lacks what this session carried, if the lane knew that and
        // the standby filled the generation expected (else the other one is not what the lane thinks).
        let as_expected = self.expect.as_deref().is_none_or(|g| g == generation);
        self.other = if as_expected { carried } else { None };
        self.expect = Some(if generation == "a" { "b" } else { "a" }.to_string());
        self.retry_at = None;
        self.failures = 0;
        self.last_commit_ms = Some(at_ms);
        self.commits += 1;
    }

    /// The session failed (at `now`): the other generation may hold part of it, and what it carried is pending
    /// again.
    pub fn failed(&mut self, now: Instant) {
        let (carried, oldest) = self.in_flight.take().unwrap_or_default();
        self.other = None;
        self.unshipped = match (carried, self.unshipped.take()) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        self.oldest_ms = [oldest, self.oldest_ms].into_iter().flatten().min();
        let delay = RETRY_FIRST.saturating_mul(1 << self.failures.min(5)).min(RETRY_MAX);
        self.failures += 1;
        self.retry_at = Some(now + delay);
        // A full pass that failed does not count as one.
        self.last_full = None;
    }

    /// Ms since the oldest change not committed on the standby was seen (0 when none is pending).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        let in_flight = self.in_flight.as_ref().and_then(|(_, t)| *t);
        [in_flight, self.oldest_ms].into_iter().flatten().min().map_or(0, |t| now_ms.saturating_sub(t))
    }
}

/// What the status shows of a lane.
fn view(lane: &Lane) -> LaneView {
    let in_flight = lane.in_flight.as_ref().and_then(|(_, t)| *t);
    LaneView {
        oldest_pending_unix_ms: [in_flight, lane.oldest_ms].into_iter().flatten().min(),
        last_commit_unix_ms: lane.last_commit_ms,
        batches: lane.commits,
    }
}

/// What a session with a standby did.
#[derive(Debug, Clone)]
pub struct Shipped {
    /// The generation it filled (current on the standby now).
    pub generation: String,
}

/// Where a watch's changes come from.
pub trait ChangeSource {
    /// Waits for changes (cancel-safe: nothing is lost when the wait is dropped).
    fn next(&mut self) -> impl std::future::Future<Output = std::io::Result<Vec<Change>>> + Send;
}

impl ChangeSource for TreeWatch {
    async fn next(&mut self) -> std::io::Result<Vec<Change>> {
        TreeWatch::next(self).await
    }
}

/// Where a watch's sessions go.
pub trait Shipper {
    /// The standbys, in order, and whether each is alive now.
    fn standbys(&self) -> Vec<(String, bool)>;
    /// Sessions with `standby` that ended so far (any kind, by anyone on this host).
    fn sessions_ended(&self, standby: &str) -> u64;
    /// Held for a round: no other sync or migrate of the vserver meanwhile.
    fn lock(&self) -> impl std::future::Future<Output = tokio::sync::OwnedMutexGuard<()>> + Send;
    /// Whether this host should still be watching (it owns and runs the vserver); checked under the lock.
    fn still_ours(&self) -> impl std::future::Future<Output = bool> + Send;
    /// One session with `standby`: the whole tree, or the paths given; `expect`: the generation the paths are
    /// meant for (another one gets the whole tree).
    fn ship(
        &self,
        standby: &str,
        plan: &Plan,
        expect: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Shipped, String>> + Send;
    /// Shows a lane's state.
    fn publish(&self, standby: &str, view: LaneView);
}

/// How a watch ended.
#[derive(Debug)]
pub enum Ended {
    /// Asked to stop, or the vserver is no longer this host's to replicate.
    Stopped,
    /// The watch failed (no inotify watch left for a new directory...): it can no longer see every change.
    Failed(std::io::Error),
}

/// Runs a vserver's watch: feeds the changes to each standby's lane and ships rounds of sessions, at most one
/// round every `batch`, a full pass at least every `interval`. Ends when `stop` turns true (between rounds),
/// when the vserver is no longer this host's, or when the changes can no longer be followed.
pub async fn drive<C: ChangeSource, S: Shipper>(
    source: &mut C,
    shipper: &S,
    batch: Duration,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    let started_ms = now_ms();
    let mut next_round = Instant::now();
    loop {
        if *stop.borrow() {
            return Ended::Stopped;
        }
        let now = Instant::now();
        let standbys = shipper.standbys();
        let ready = standbys
            .iter()
            .filter(|(_, alive)| *alive)
            .map(|(s, _)| lanes.get(s).map_or(now, |l| l.ready_at(now, interval)))
            .min();
        // A round when a lane is ready and the last round is `batch` old; meanwhile, a look at the standbys
        // every RECHECK.
        let wake = ready.map_or(now + RECHECK, |t| t.max(next_round).min(now + RECHECK));
        tokio::select! {
            biased;
            // Asked to stop, or the agent's loop that asks is gone.
            changed = stop.changed() => if changed.is_ok() { continue } else { return Ended::Stopped },
            got = source.next() => {
                let at = now_ms();
                match got {
                    Ok(changes) => {
                        let mut paths = Vec::new();
                        let mut lost = false;
                        for c in changes {
                            match c {
                                Change::Path(p) => paths.push(p),
                                Change::Lost => lost = true,
                            }
                        }
                        for lane in lanes.values_mut() {
                            lane.seen(&paths, at);
                            if lost {
                                lane.lost(at);
                            }
                        }
                        for (s, lane) in &lanes {
                            shipper.publish(s, view(lane));
                        }
                    }
                    Err(e) => return Ended::Failed(e),
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if ready.is_none_or(|t| t.max(next_round) > now) {
            continue;
        }
        next_round = now + batch;
        let _held = shipper.lock().await;
        if !shipper.still_ours().await {
            return Ended::Stopped;
        }
        for (standby, alive) in shipper.standbys() {
            let lane = lanes.entry(standby.clone()).or_insert_with(|| Lane::new(started_ms));
            if !alive {
                lane.forget_other();
                shipper.publish(&standby, view(lane));
                continue;
            }
            let ended = shipper.sessions_ended(&standby);
            if lane.sessions_seen.is_some_and(|n| n != ended) {
                lane.forget_all();
            }
            let now = Instant::now();
            let Some(plan) = lane.plan(now, interval) else { continue };
            lane.take(&plan, now);
            shipper.publish(&standby, view(lane));
            match shipper.ship(&standby, &plan, lane.expect.as_deref()).await {
                Ok(shipped) => lane.committed(&shipped.generation, now_ms()),
                Err(e) => {
                    tracing::warn!(standby, error = %e, "continuous replication: a pass failed; the standby gets a \
                                   full pass next");
                    lane.failed(Instant::now());
                }
            }
            lane.sessions_seen = Some(shipper.sessions_ended(&standby));
            shipper.publish(&standby, view(lane));
        }
    }
}

/// The agent's side of a watch of one vserver.
struct AgentShipper {
    repl: Arc<Replication>,
    name: VserverName,
}

impl Shipper for AgentShipper {
    fn standbys(&self) -> Vec<(String, bool)> {
        let Some(p) = self.repl.placement(&self.name) else { return Vec::new() };
        let peers = self.repl.links().membership.peers();
        p.standbys
            .into_iter()
            .map(|s| {
                let alive = peers.iter().any(|p| p.name == s && p.state == PeerState::Alive);
                (s, alive)
            })
            .collect()
    }

    fn sessions_ended(&self, standby: &str) -> u64 {
        self.repl.sessions_ended(&self.name, standby).0
    }

    async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.repl.vserver_lock(&self.name).lock_owned().await
    }

    async fn still_ours(&self) -> bool {
        should_watch(&self.repl, &self.name).await
    }

    async fn ship(&self, standby: &str, plan: &Plan, expect: Option<&str>) -> Result<Shipped, String> {
        let outcome = match plan {
            Plan::Full => {
                self.repl.mark_run(&self.name);
                self.repl.sync_to(&self.name, standby, "sync").await
            }
            Plan::Paths(paths) => {
                let steps =
                    |started_unix_ms| batch_steps(&self.repl, &self.name, standby, paths, expect, started_unix_ms);
                self.repl.reported(&self.name, standby, "batch", steps).await
            }
        };
        if !outcome.ok {
            return Err(outcome.error.unwrap_or_else(|| "failed".into()));
        }
        let (_, generation) = self.repl.sessions_ended(&self.name, standby);
        generation.map(|generation| Shipped { generation }).ok_or_else(|| "no generation recorded".into())
    }

    fn publish(&self, standby: &str, view: LaneView) {
        self.repl.continuous.publish(&self.name, standby, view);
    }
}

/// One batch to `standby`: a session, an rsync pass of `paths` (of the whole tree if the standby fills another
/// generation than `expect`), the conf, the commit.
async fn batch_steps(
    repl: &Arc<Replication>,
    name: &VserverName,
    standby: &str,
    paths: &BTreeSet<PathBuf>,
    expect: Option<&str>,
    started_unix_ms: u64,
) -> Result<Passes, String> {
    let links = repl.links();
    let url = links.peers.url(standby).ok_or_else(|| format!("standby {standby} is not a peer of this host"))?;
    let begun = std::time::Instant::now();
    let session = failover::session::Session::begin(&links.peers, standby, name.as_str(), repl.node()).await?;
    let mut phases = vec![("begin".to_string(), begun.elapsed().as_millis() as u64)];
    let generation = session.generation().to_string();
    let step = std::time::Instant::now();
    let moved = if expect.is_some_and(|g| g != generation) {
        tracing::info!(vserver = %name, standby, generation, "the standby fills another generation than expected: \
                       the batch compares the whole tree");
        repl.copy_tree(name, standby, &url, session.id(), true, &|_| {}).await
    } else {
        let mut list = Vec::new();
        for p in paths {
            list.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
            list.push(0);
        }
        let how = Listed { what: "tree (batch of changes)", live: true, gone_removed: true };
        repl.copy_listed(name, standby, &url, session.id(), &list, how, &|_| {}).await
    };
    let moved = match moved {
        Ok(m) => m,
        Err(e) => return Err(session.abort(e).await),
    };
    phases.push(("tree".into(), step.elapsed().as_millis() as u64));
    let conf = match repl.conf_for_commit(name, standby, &url, session.id()).await {
        Ok(conf) => conf,
        Err(e) => return Err(session.abort(e).await),
    };
    let committing = std::time::Instant::now();
    let commit = failover::session::Commit { started_unix_ms, consistent: false, kind: "batch".into(), conf };
    session.commit(commit).await?;
    phases.push(("commit".into(), committing.elapsed().as_millis() as u64));
    Ok(Passes::new(&moved, &generation, phases))
}

/// Whether this host should watch `name`: continuous, placed here as primary, built here, given to no other
/// host by the ownership table, and running here.
async fn should_watch(repl: &Replication, name: &VserverName) -> bool {
    if repl.data_path(name).batch().is_none() || !repl.built(name) {
        return false;
    }
    let node = repl.node();
    let placed = repl.placement(name).is_some_and(|p| p.primary == node);
    let owned = repl.links().ownership.owner(name.as_str()).is_none_or(|(o, _)| o == node);
    let running = repl.links().supervisor.get(name).await.is_ok_and(|v| v.state == crate::model::VserverState::Running);
    placed && owned && running
}

/// Follows which vservers this host watches: starts a watch for each continuous vserver it owns and runs,
/// stops the watch of one it no longer does. Runs until aborted.
pub async fn run(repl: Arc<Replication>) {
    struct Running {
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }
    // The agent stopping (this loop aborted) ends the watches too.
    impl Drop for Running {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
    let mut running: BTreeMap<VserverName, Running> = BTreeMap::new();
    let not_before: Arc<Mutex<BTreeMap<VserverName, Instant>>> = Arc::default();
    let mut tick = tokio::time::interval(FOLLOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        running.retain(|name, r| {
            let alive = !r.task.is_finished();
            if !alive {
                repl.continuous.stop(name);
            }
            alive
        });
        for name in repl.placements().into_keys() {
            let wanted = should_watch(&repl, &name).await;
            match (wanted, running.get(&name)) {
                (true, None) => {
                    if lock(&not_before).get(&name).is_some_and(|t| Instant::now() < *t) {
                        continue;
                    }
                    let (stop, stopped) = tokio::sync::watch::channel(false);
                    let task = tokio::spawn(watch(Arc::clone(&repl), name.clone(), stopped, Arc::clone(&not_before)));
                    running.insert(name, Running { stop, task });
                }
                (false, Some(r)) => {
                    let _ = r.stop.send(true);
                }
                _ => {}
            }
        }
    }
}

/// The watch of one vserver, from its set-up to its end.
async fn watch(
    repl: Arc<Replication>,
    name: VserverName,
    stop: tokio::sync::watch::Receiver<bool>,
    not_before: Arc<Mutex<BTreeMap<VserverName, Instant>>>,
) {
    let settings = repl.settings(&name);
    let Some(batch) = settings.data.batch() else { return };
    let tree = repl.tree(&name);
    let made = tokio::task::spawn_blocking(move || TreeWatch::new(&tree)).await;
    let mut source = match made {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return setup_failed(&name, &e.to_string(), &not_before),
        Err(e) => return setup_failed(&name, &e.to_string(), &not_before),
    };
    tracing::info!(vserver = %name, directories = source.watched(), batch_ms = batch.as_millis() as u64,
                   "continuous replication: watching the tree");
    repl.continuous.start(&name);
    let shipper = AgentShipper { repl: Arc::clone(&repl), name: name.clone() };
    let ended = drive(&mut source, &shipper, batch, settings.interval, stop).await;
    repl.continuous.stop(&name);
    match ended {
        Ended::Stopped => tracing::info!(vserver = %name, "continuous replication: the watch ends"),
        Ended::Failed(e) => setup_failed(&name, &e.to_string(), &not_before),
    }
}

fn setup_failed(name: &VserverName, why: &str, not_before: &Mutex<BTreeMap<VserverName, Instant>>) {
    tracing::warn!(vserver = %name, error = why, "continuous replication: cannot watch the tree; it is synced at its \
                   interval meanwhile, and the watch is tried again in {} s", SETUP_RETRY.as_secs());
    lock(not_before).insert(name.clone(), Instant::now() + SETUP_RETRY);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A lane through its first two full passes, after which it knows both generations.
    fn known_lane(now: Instant) -> Lane {
        let mut lane = Lane::new(0);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full), "nothing known at the start");
        lane.take(&Plan::Full, now);
        lane.seen(&set(&["during-first"]), 1);
        lane.committed("a", 2);
        // The other generation (b) is still unknown: the next change needs a second full pass.
        lane.seen(&set(&["x"]), 3);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));
        lane.take(&Plan::Full, now);
        lane.committed("b", 4);
        lane
    }

    #[test]
    fn a_batch_carries_its_own_paths_and_those_of_the_batch_before_it() {
        let now = Instant::now();
        let mut lane = known_lane(now);
        // a (now other) lacks what changed during and after the first pass: "during-first" and "x".
        assert!(!lane.pending(), "b is current and nothing changed since");
        assert_eq!(lane.plan(now, MINUTE), None);
        lane.seen(&set(&["one"]), 5);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Paths(set(&["during-first", "one", "x"]))));
        lane.take(&Plan::Paths(set(&[])), now);
        // Seen while the batch runs: the next batch's.
        lane.seen(&set(&["two"]), 6);
        lane.committed("a", 7);
        // b (now other) lacks "one" (the batch into a) and "two" (pending).
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Paths(set(&["one", "two"]))));
        lane.take(&Plan::Paths(set(&[])), now);
        lane.committed("b", 8);
        lane.seen(&set(&["three"]), 9);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Paths(set(&["three", "two"]))));
        assert_eq!(lane.lag_ms(10), 1, "the oldest pending change was seen at 9");
    }

    #[test]
    fn what_the_lane_cannot_know_gets_a_full_pass() {
        let now = Instant::now();
        // Lost events: a full pass, then another (the other generation is as unknown).
        let mut lane = known_lane(now);
        lane.seen(&set(&["one"]), 5);
        lane.lost(6);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));
        lane.take(&Plan::Full, now);
        lane.committed("a", 7);
        lane.seen(&set(&["two"]), 8);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));

        // A failed batch: its paths stay pending, a full pass follows after the retry delay, and then batches
        // again (the lane knew what the current generation lacked).
        let mut lane = known_lane(now);
        lane.seen(&set(&["one"]), 5);
        lane.take(&Plan::Paths(set(&["one"])), now);
        lane.seen(&set(&["two"]), 6);
        lane.failed(now);
        assert_eq!(lane.lag_ms(10), 5, "the failed batch's change is still the oldest pending");
        assert_eq!(lane.plan(now, MINUTE), None, "not before the retry delay");
        let later = now + RETRY_FIRST;
        assert_eq!(lane.plan(later, MINUTE), Some(Plan::Full));
        lane.take(&Plan::Full, later);
        lane.committed("a", 11);
        lane.seen(&set(&["three"]), 12);
        assert_eq!(lane.plan(later, MINUTE), Some(Plan::Paths(set(&["one", "three", "two"]))));

        // A standby filling another generation than expected: its other one is not known.
        let mut lane = known_lane(now);
        lane.seen(&set(&["one"]), 5);
        lane.take(&Plan::Paths(set(&["one"])), now);
        lane.committed("b", 6);
        lane.seen(&set(&["two"]), 7);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));

        // A standby that was not reached, or synced by someone else.
        let mut lane = known_lane(now);
        lane.forget_other();
        lane.seen(&set(&["one"]), 5);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));
        let mut lane = known_lane(now);
        lane.forget_all();
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full), "the current generation may lack anything");

        // The interval's full pass, even with nothing changed; and too many paths make one too.
        let lane = known_lane(now);
        assert_eq!(lane.plan(now + MINUTE, MINUTE), Some(Plan::Full));
        let mut lane = known_lane(now);
        let many: Vec<PathBuf> = (0..=MAX_LISTED).map(|i| PathBuf::from(i.to_string())).collect();
        lane.seen(&many, 5);
        assert_eq!(lane.plan(now, MINUTE), Some(Plan::Full));
    }

    /// Changes fed by the test.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>);

    impl ChangeSource for Fed {
        async fn next(&mut self) -> std::io::Result<Vec<Change>> {
            match self.0.recv().await {
                Some(c) => Ok(c),
                None => std::future::pending().await,
            }
        }
    }

    /// A standby that only records what it is sent, when.
    #[derive(Default)]
    struct Recorder {
        shipped: Mutex<Vec<(Instant, Plan)>>,
        lock: Arc<tokio::sync::Mutex<()>>,
        generation: Mutex<String>,
        ended: AtomicU64,
    }

    impl Shipper for Recorder {
        fn standbys(&self) -> Vec<(String, bool)> {
            vec![("h1".into(), true)]
        }
        fn sessions_ended(&self, _: &str) -> u64 {
            self.ended.load(Ordering::SeqCst)
        }
        async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
            Arc::clone(&self.lock).lock_owned().await
        }
        async fn still_ours(&self) -> bool {
            true
        }
        async fn ship(&self, _: &str, plan: &Plan, _: Option<&str>) -> Result<Shipped, String> {
            lock(&self.shipped).push((Instant::now(), plan.clone()));
            // A batch takes a while.
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.ended.fetch_add(1, Ordering::SeqCst);
            let mut g = lock(&self.generation);
            *g = if *g == "a" { "b".into() } else { "a".into() };
            Ok(Shipped { generation: g.clone() })
        }
        fn publish(&self, _: &str, _: LaneView) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_never_stops_gets_a_batch_every_batch_and_no_more() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let batch = Duration::from_millis(250);
        let interval = Duration::from_secs(5);
        let recorder = Arc::new(Recorder::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let driving = tokio::spawn({
            let recorder = Arc::clone(&recorder);
            async move { drive(&mut Fed(rx), &*recorder, batch, interval, stop).await }
        });
        let start = Instant::now();
        // A change every 5 ms for 10 s, and one lost event at 6 s.
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(10) {
            let mut changes = vec![Change::Path(PathBuf::from(format!("f{}", i % 7)))];
            if i == 1200 {
                changes.push(Change::Lost);
            }
            tx.send(changes).unwrap();
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        assert!(matches!(driving.await.unwrap(), Ended::Stopped));
        let shipped = lock(&recorder.shipped).clone();
        for pair in shipped.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= batch, "two rounds closer than a batch: {:?}", pair);
        }
        // 10 s at a round every 250 ms at most.
        assert!((38..=41).contains(&shipped.len()), "{} rounds", shipped.len());
        let fulls: Vec<Duration> = shipped.iter().filter(|(_, p)| *p == Plan::Full).map(|(t, _)| *t - start).collect();
        // Two at the start, one an interval after the second, two after the lost event (6 s).
        assert_eq!(fulls.len(), 5, "{fulls:?}");
        assert!(fulls[2] >= fulls[1] + interval && fulls[2] < fulls[1] + interval + batch, "{fulls:?}");
        assert!(fulls[3] >= Duration::from_secs(6), "{fulls:?}");
        assert!(matches!(&shipped[2].1, Plan::Paths(p) if !p.is_empty()), "batches after the two full passes");
    }

    /// A standby that is dead for a while, among changes.
    struct Flaky {
        recorder: Recorder,
        alive: std::sync::atomic::AtomicBool,
    }

    impl Shipper for Flaky {
        fn standbys(&self) -> Vec<(String, bool)> {
            vec![("h1".into(), self.alive.load(Ordering::SeqCst))]
        }
        fn sessions_ended(&self, s: &str) -> u64 {
            self.recorder.sessions_ended(s)
        }
        async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
            self.recorder.lock().await
        }
        async fn still_ours(&self) -> bool {
            true
        }
        async fn ship(&self, s: &str, plan: &Plan, expect: Option<&str>) -> Result<Shipped, String> {
            assert!(self.alive.load(Ordering::SeqCst), "a dead standby is skipped");
            self.recorder.ship(s, plan, expect).await
        }
        fn publish(&self, _: &str, _: LaneView) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_standby_is_skipped_and_gets_a_full_pass_when_back() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let flaky = Arc::new(Flaky { recorder: Recorder::default(), alive: true.into() });
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let driving = tokio::spawn({
            let flaky = Arc::clone(&flaky);
            async move { drive(&mut Fed(rx), &*flaky, Duration::from_millis(250), MINUTE, stop).await }
        });
        let change = |i: u32| vec![Change::Path(PathBuf::from(format!("f{i}")))];
        // Two full passes, then batches.
        for i in 0..12 {
            tx.send(change(i)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shipped = || lock(&flaky.recorder.shipped).iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
        assert!(matches!(shipped().last(), Some(Plan::Paths(_))), "{:?}", shipped());
        flaky.alive.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = shipped().len();
        for i in 12..40 {
            tx.send(change(i)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(shipped().len(), before, "nothing shipped while dead");
        flaky.alive.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(shipped().get(before), Some(&Plan::Full), "{:?}", shipped());
        stop_tx.send(true).unwrap();
        driving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tree_gets_its_full_pass_at_the_interval_only() {
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let driving = tokio::spawn({
            let recorder = Arc::clone(&recorder);
            async move { drive(&mut Fed(rx), &*recorder, Duration::from_millis(250), MINUTE, stop).await }
        });
        tokio::time::sleep(Duration::from_secs(150)).await;
        stop_tx.send(true).unwrap();
        driving.await.unwrap();
        let shipped = lock(&recorder.shipped).clone();
        let at: Vec<u64> = shipped.iter().map(|(t, _)| t.elapsed().as_secs()).collect();
        // At the start, then at 60 s and 120 s (the elapsed times are read at the end, 150 s in).
        assert_eq!(at, [150, 90, 30], "{shipped:?}");
        assert!(shipped.iter().all(|(_, p)| *p == Plan::Full));
    }

    /// A standby on this machine: two generations filled in turn by local rsync runs with the flags and the
    /// lists of the real passes, the current one switched at each commit.
    struct LocalStandby {
        source: PathBuf,
        dir: PathBuf,
        current: Mutex<Option<String>>,
        lock: Arc<tokio::sync::Mutex<()>>,
        ended: AtomicU64,
        commits: tokio::sync::watch::Sender<u64>,
    }

    impl Shipper for LocalStandby {
        fn standbys(&self) -> Vec<(String, bool)> {
            vec![("h1".into(), true)]
        }
        fn sessions_ended(&self, _: &str) -> u64 {
            self.ended.load(Ordering::SeqCst)
        }
        async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
            Arc::clone(&self.lock).lock_owned().await
        }
        async fn still_ours(&self) -> bool {
            true
        }
        async fn ship(&self, _: &str, plan: &Plan, _: Option<&str>) -> Result<Shipped, String> {
            let next = match lock(&self.current).as_deref() {
                Some("a") => "b",
                _ => "a",
            };
            let target = self.dir.join(next);
            std::fs::create_dir_all(&target).unwrap();
            let mut source = self.source.clone().into_os_string();
            source.push("/");
            let mut job = failover::rsync::Job::new(vec![source.into()], format!("{}/", target.display()));
            job.live = true;
            if let Plan::Paths(paths) = plan {
                let list = self.dir.join("list");
                let mut bytes = Vec::new();
                for p in paths {
                    bytes.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
                    bytes.push(0);
                }
                std::fs::write(&list, bytes).unwrap();
                job.extra_args = vec![
                    "-r".into(),
                    "--from0".into(),
                    format!("--files-from={}", list.display()),
                    "--delete-missing-args".into(),
                ];
            }
            let outcome = tokio::task::spawn_blocking(move || job.run(|_| {})).await.unwrap();
            self.ended.fetch_add(1, Ordering::SeqCst);
            let outcome = outcome.map_err(|e| e.to_string())?;
            if !outcome.accepted() {
                return Err(format!("rsync exit {}: {}", outcome.exit_code, outcome.stderr_tail));
            }
            *lock(&self.current) = Some(next.to_string());
            self.commits.send_modify(|n| *n += 1);
            Ok(Shipped { generation: next.to_string() })
        }
        fn publish(&self, _: &str, _: LaneView) {}
    }

    /// Every entry under `root` with its kind and content (files) or target (links).
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                let t = e.file_type().unwrap();
                let what = if t.is_dir() {
                    stack.push(e.path());
                    "dir".to_string()
                } else if t.is_symlink() {
                    format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
                } else {
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                };
                out.insert(rel, what);
            }
        }
        out
    }

    /// Each step changes the tree; the standby's current generation must then become the tree. A step's paths
    /// go into one generation with its batch and into the other with the next one, so each generation is
    /// checked in turn: a batch carrying only its own paths fails here (the generation it fills lacks the
    /// step before).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_standby_current_generation_follows_the_tree_batch_by_batch() {
        if std::process::Command::new("rsync").arg("--version").output().is_err() {
            eprintln!("skipped: no rsync");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("data/old/deep")).unwrap();
        std::fs::write(tree.join("data/old/deep/f"), "0").unwrap();
        std::fs::write(tree.join("data/log"), "").unwrap();
        let (commits, mut committed) = tokio::sync::watch::channel(0u64);
        let standby = Arc::new(LocalStandby {
            source: tree.clone(),
            dir: dir.path().join("standby"),
            current: Mutex::new(None),
            lock: Arc::default(),
            ended: AtomicU64::new(0),
            commits,
        });
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut watch = TreeWatch::new(&tree).unwrap();
        let driving = tokio::spawn({
            let standby = Arc::clone(&standby);
            async move { drive(&mut watch, &*standby, Duration::from_millis(50), MINUTE, stop).await }
        });
        type Step = Box<dyn Fn(&Path)>;
        let steps: Vec<Step> = vec![
            Box::new(|t| std::fs::write(t.join("data/log"), "1\n").unwrap()),
            Box::new(|t| std::fs::write(t.join("data/log"), "1\n2\n").unwrap()),
            Box::new(|t| std::fs::create_dir_all(t.join("data/new/a/b")).unwrap()),
            Box::new(|t| std::fs::write(t.join("data/new/a/b/file"), "x").unwrap()),
            Box::new(|t| std::fs::rename(t.join("data/new"), t.join("moved")).unwrap()),
            Box::new(|t| std::fs::remove_dir_all(t.join("data/old")).unwrap()),
            Box::new(|t| std::os::unix::fs::symlink("data/log", t.join("link")).unwrap()),
            Box::new(|t| std::fs::write(t.join("moved/a/b/file"), "y").unwrap()),
            Box::new(|t| std::fs::remove_file(t.join("link")).unwrap()),
            Box::new(|t| std::fs::write(t.join("data/log"), "1\n2\n3\n").unwrap()),
        ];
        let current = |standby: &LocalStandby| {
            let g = lock(&standby.current).clone();
            g.map(|g| snapshot(&standby.dir.join(g)))
        };
        for (i, step) in steps.iter().enumerate() {
            step(&tree);
            let want = snapshot(&tree);
            let deadline = Instant::now() + Duration::from_secs(30);
            while current(&standby).as_ref() != Some(&want) {
                assert!(Instant::now() < deadline, "step {i}: the standby does not follow {want:?}");
                let _ = tokio::time::timeout(Duration::from_secs(1), committed.changed()).await;
            }
        }
        stop_tx.send(true).unwrap();
        driving.await.unwrap();
        assert!(standby.ended.load(Ordering::SeqCst) >= 2);
    }
}
