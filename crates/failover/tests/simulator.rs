//! The cluster's decisions under a deterministic simulator: N hosts on a virtual clock (tokio's paused time,
//! one thread), a simulated network, and a schedule of faults drawn from a seed (host crashes, agent kills and
//! restarts, partitions, pauses of an agent, message loss, delay, duplication and so reordering, lost answers
//! to table writes, operators' stops and starts). The code under test is the real one: the failure detector
//! and the lease (`failover::membership`, `failover::lease`), the coordinator and the takeover
//! (`failover::takeover`), the promote with its lost-answer rule (`failover::promote`), over the same traits
//! the agent implements. The ownership table stands here as a linearizable compare-and-set store (openraft is
//! tested by its authors), with its leader elected as openraft would (a majority, after a timeout).
//!
//! What stands in for the host (as the agent does it, see `node-agent`): starting and stopping a vserver is
//! a flag; the vservers' keepers kill them when the lease the agent last wrote for them runs out (even when
//! the agent is frozen); the agent fences them when its lease is over and asks the table before it runs them
//! again; a host that finds the table giving one of its vservers to another host stops it.
//!
//! After every start, the invariants are checked: at most one copy runs; a start only on the host the table
//! names, from a tree or a complete replica; a returning host never restarts what it lost; a vserver an
//! operator stopped (the last intent the event log records) is not started by anything but an operator.
//!
//! `SIM_SEEDS=N` runs N seeds (default 10,000); `SIM_SEED=S` replays one seed and prints its history.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use failover::events::{intent_event, kinds, meant_to_run};
use failover::membership::{Membership, MembershipConfig};
use failover::ownership::{Event, Maintenance, OwnerEntry, OwnershipError};
use failover::peer::{Answer, Peers, Refused, Unreachable};
use failover::placement::Placement;
use failover::table::Table;
use failover::takeover::{Busy, Host, Limits, PeerView};
use failover::wire::{HeldReplica, PeerState, ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes, VserverState};
use tokio::time::Instant;

/// Seeds that ended with the vserver down everywhere before a takeover's promote was asked again.
const ONCE_DOWN: [u64; 6] = [14, 389, 391, 733, 843, 853];

/// The vserver every simulated cluster protects.
const VS: &str = "web";
/// Its placement: h0 runs it, h1 then h2 hold replicas.
const STANDBYS: [&str; 2] = ["h1", "h2"];
/// The default timing of the agent: lease length (`fencing.timeout_ms`), takeover margin, beacons.
const LEASE: Duration = Duration::from_millis(1800);
const TAKEOVER_TIMEOUT: Duration = Duration::from_millis(2400);
const BEACON_EVERY: Duration = Duration::from_millis(100);
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long before the lease's end the keepers kill (`FENCE_LEAD` in the agent).
const FENCE_LEAD: Duration = Duration::from_millis(150);
/// How long a table write is tried without a majority before it gives up.
const COMMIT_PATIENCE: Duration = Duration::from_secs(3);
/// Faults happen in this window; then the network heals, hosts come back, and the cluster settles.
const FAULTS_FROM: Duration = Duration::from_secs(3);
const FAULTS_UNTIL: Duration = Duration::from_secs(14);
const RUN_FOR: Duration = Duration::from_secs(24);
/// How long the cluster may take to settle once the last fault has healed, before the liveness check: an
/// election, a takeover, and a promote asked again fit in it. A run ends at [`RUN_FOR`], or later once the
/// faults healed and the vserver runs on its owner (or an operator's stop is the last word), or this long after
/// they healed.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------------
// Randomness: one seeded generator (splitmix64), drawn in a fixed order, so a seed is a history.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

// ---------------------------------------------------------------------------------------------------------
// The world: hosts, links, the table, and what was checked.

/// One host.
struct HostState {
    name: String,
    /// The machine runs (a crash stops everything on it).
    up: bool,
    /// The agent runs (killed: its vservers and their keepers go on).
    agent: bool,
    /// The agent is frozen until then (SIGSTOP).
    frozen_until: Option<Instant>,
    incarnation: u64,
    membership: Arc<Membership>,
    /// The vserver's tree is here (it ran or runs here).
    tree: bool,
    /// A complete replica is here.
    replica: bool,
    running: bool,
    /// Fenced here, to run again only once the table confirms this host owns it.
    fenced: bool,
    /// The lease this host's keepers follow: they kill what runs here at this instant.
    keepers_until: Option<Instant>,
    /// The agent held its lease since it started.
    held: bool,
    /// When the agent started.
    agent_started: Instant,
    tasks: Vec<tokio::task::AbortHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The machine crashes, and boots again after the duration.
    Crash(usize, Duration),
    /// The agent is killed (-9) and started again after the duration; the vserver keeps running meanwhile.
    AgentRestart(usize, Duration),
    /// The agent is frozen for the duration.
    Freeze(usize, Duration),
    /// The host's links are cut for the duration.
    Isolate(usize, Duration),
    /// The network loses this many per mille of messages for the duration.
    Loss(u64, Duration),
    /// Every message takes up to this long more, for the duration.
    Delay(Duration, Duration),
    /// Answers to table writes are lost (the write applies) for the duration.
    LostCommits(Duration),
    /// The agent of this host dies right after it carries out its next promote, before answering, and is
    /// started again after the duration.
    KillAfterPromote(usize, Duration),
    /// The agent of this host dies when its next promote arrives, before it acts on it, and is started again
    /// after the duration.
    KillBeforePromote(usize, Duration),
    /// An operator's stop is recorded just before the next promote asked again arrives.
    StopBeforeAskedAgain,
    /// The next coordinator elected is this host, when it can be.
    PreferLeader(usize),
    /// An operator stops the vserver where it runs (recorded first as intent), or starts it again.
    Operator(bool),
}

impl Fault {
    /// How long it lasts once injected (a trap or a preference: nothing).
    fn lasts(&self) -> Duration {
        match *self {
            Fault::Crash(_, d)
            | Fault::AgentRestart(_, d)
            | Fault::Freeze(_, d)
            | Fault::Isolate(_, d)
            | Fault::Loss(_, d)
            | Fault::Delay(_, d)
            | Fault::LostCommits(d) => d,
            Fault::KillAfterPromote(..)
            | Fault::KillBeforePromote(..)
            | Fault::StopBeforeAskedAgain
            | Fault::PreferLeader(_)
            | Fault::Operator(_) => Duration::ZERO,
        }
    }
}

struct World {
    rng: Rng,
    hosts: Vec<HostState>,
    /// Cut links (both ways), as pairs (low, high).
    cut: BTreeSet<(usize, usize)>,
    loss_per_mille: u64,
    extra_delay: Duration,
    lost_commits: bool,
    owners: BTreeMap<String, OwnerEntry>,
    events: Vec<Event>,
    leader: Option<usize>,
    /// When the leader was lost: a new one is elected after the election timeout.
    leaderless_since: Option<Instant>,
    election_after: Duration,
    /// A trap for a scenario: this host's agent dies right after it carried out a promote, before its answer
    /// leaves, and is back after the duration.
    kill_after_promote: Option<(usize, Duration)>,
    /// A trap for a scenario: this host's agent dies when a promote arrives, before it acts on it, and is back
    /// after the duration.
    kill_before_promote: Option<(usize, Duration)>,
    /// A trap for a scenario: an operator's stop is recorded just before the next promote asked again arrives.
    stop_before_asked_again: bool,
    /// A scenario's choice of the next coordinator, when it can be.
    preferred_leader: Option<usize>,
    placement: Placement,
    started: Instant,
    history: Vec<String>,
    violations: Vec<String>,
    stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    starts: u32,
    takeovers: u32,
    fences: u32,
}

impl World {
    fn t(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
    fn note(&mut self, what: String) {
        let line = format!("{:>6} ms  {what}", self.t());
        self.history.push(line);
    }
    fn violation(&mut self, what: String) {
        let line = format!("{:>6} ms  VIOLATION: {what}", self.t());
        self.history.push(line.clone());
        self.violations.push(line);
    }
    fn linked(&self, a: usize, b: usize) -> bool {
        a == b || !self.cut.contains(&(a.min(b), a.max(b)))
    }
    fn frozen(&self, h: usize) -> bool {
        self.hosts[h].frozen_until.is_some_and(|t| Instant::now() < t)
    }
    /// The agent of `h` runs and is not frozen.
    fn active(&self, h: usize) -> bool {
        self.hosts[h].up && self.hosts[h].agent && !self.frozen(h)
    }
    /// The machine runs but not the agent.
    fn agent_down(&self, h: usize) -> bool {
        self.hosts[h].up && !self.hosts[h].agent
    }
    fn index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
    fn majority(&self) -> usize {
        self.hosts.len() / 2 + 1
    }
    /// `h` reaches a majority of the voters (itself included).
    fn reaches_majority(&self, h: usize) -> bool {
        (0..self.hosts.len()).filter(|&o| self.active(o) && self.linked(h, o)).count() >= self.majority()
    }
    /// A message's delay, or `None` when it is lost.
    fn transit(&mut self, from: usize, to: usize) -> Option<Duration> {
        if !self.linked(from, to) || self.rng.chance(self.loss_per_mille) {
            return None;
        }
        let extra = self.extra_delay.as_millis() as u64;
        Some(Duration::from_micros(200 + self.rng.below(1800)) + Duration::from_millis(self.rng.below(extra + 1)))
    }
    fn unix_ms(&self) -> u64 {
        1_800_000_000_000 + self.t()
    }
    /// The operator's last word about the vserver, as the event log records it (the order of the log decides
    /// between two operators' words): stopped.
    fn intent_stopped(&self) -> bool {
        let last = self.events.iter().rev().find(|e| e.kind == kinds::INTENT && e.vserver.as_deref() == Some(VS));
        last.is_some_and(|e| e.text.starts_with("stopped"))
    }
    /// The vserver runs on the host the table names, or an operator's stop is the last word.
    fn settled(&self) -> bool {
        let owner = self.owner().map(|(o, _)| o);
        self.intent_stopped() || self.hosts.iter().any(|h| h.running && Some(&h.name) == owner.as_ref())
    }
    fn owner(&self) -> Option<(String, u64)> {
        self.owners.get(VS).and_then(|e| Some((e.owner.clone()?, e.epoch)))
    }

    /// Starts the vserver on `h` (`why`: takeover, recovery, operator), checking the invariants first.
    fn start(&mut self, h: usize, why: &str) {
        let name = self.hosts[h].name.clone();
        if let Some(other) = self.hosts.iter().find(|o| o.running && o.name != name) {
            let other = other.name.clone();
            self.violation(format!("{why}: started on {name} while it runs on {other}"));
        }
        if self.owner().map(|(o, _)| o) != Some(name.clone()) {
            let owner = self.owner();
            self.violation(format!("{why}: started on {name}, but the table gives it to {owner:?}"));
        }
        if !self.hosts[h].tree && !self.hosts[h].replica {
            self.violation(format!("{why}: started on {name} with neither its tree nor a complete replica"));
        }
        if self.intent_stopped() && why != "operator start" {
            self.violation(format!("{why}: started on {name} although an operator stopped it"));
        }
        let host = &mut self.hosts[h];
        host.tree = true;
        host.running = true;
        host.fenced = false;
        self.stats.starts += 1;
        self.note(format!("{name}: started ({why})"));
    }

    fn stop(&mut self, h: usize, why: &str) {
        if self.hosts[h].running {
            self.hosts[h].running = false;
            let name = self.hosts[h].name.clone();
            self.note(format!("{name}: stopped ({why})"));
        }
    }

    /// The remaining lease of `h`'s agent now, by the real arithmetic.
    fn lease_left(&self, h: usize) -> Option<Duration> {
        let now = Instant::now();
        let voters: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        failover::lease::remaining(&voters, &self.hosts[h].name, &self.hosts[h].membership.lease(now), now)
    }
}

#[derive(Clone)]
struct Sim(Arc<Mutex<World>>);

impl Sim {
    fn w(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `h`'s agent is not frozen; false if the agent or the machine is gone meanwhile.
    async fn unfrozen(&self, h: usize) -> bool {
        loop {
            let until = {
                let w = self.w();
                if !w.hosts[h].up || !w.hosts[h].agent {
                    return false;
                }
                w.hosts[h].frozen_until.filter(|t| Instant::now() < *t)
            };
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => return true,
            }
        }
    }

    /// Carries a request from `from` to `to` and its answer back: `Unreachable` when either is lost or late.
    /// A request that arrives is carried out, even when its answer is lost afterwards.
    async fn rpc<T>(&self, from: usize, to: usize, timeout: Duration, handle: impl AsyncHandler<T>) -> Answer<T> {
        let deadline = Instant::now() + timeout;
        let lost = || async move {
            tokio::time::sleep_until(deadline).await;
            Err(Unreachable("no answer (simulated)".into()))
        };
        let Some(there) = self.w().transit(from, to) else { return lost().await };
        tokio::time::sleep(there).await;
        if !self.unfrozen(to).await {
            return lost().await;
        }
        let answer = handle.call(self.clone(), to).await;
        let back = {
            let mut w = self.w();
            if !w.hosts[to].up || !w.hosts[to].agent {
                // The connection is reset: an error at once, not a wait.
                return Err(Unreachable("connection reset (simulated)".into()));
            }
            w.transit(to, from)
        };
        match back {
            Some(d) if Instant::now() + d <= deadline => {
                tokio::time::sleep(d).await;
                Ok(answer)
            }
            _ => lost().await,
        }
    }
}

/// A request's handling on the receiving host.
trait AsyncHandler<T>: Send {
    fn call(self, sim: Sim, at: usize) -> impl Future<Output = Result<T, Refused>> + Send;
}

impl<T, F, Fut> AsyncHandler<T> for F
where
    F: FnOnce(Sim, usize) -> Fut + Send,
    Fut: Future<Output = Result<T, Refused>> + Send,
{
    fn call(self, sim: Sim, at: usize) -> impl Future<Output = Result<T, Refused>> + Send {
        self(sim, at)
    }
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused { status: reqwest::StatusCode::from_u16(status).expect("a status"), reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------------------
// The traits the agent implements, here.

/// One host's view of the table.
#[derive(Clone)]
struct SimTable {
    sim: Sim,
    me: usize,
}

impl SimTable {
    /// A write: applied once the leader, reached from this host, has a majority; else tried until
    /// [`COMMIT_PATIENCE`]. Its answer may be lost after it applied.
    async fn commit<T: Send>(
        &self,
        what: &str,
        apply: impl FnOnce(&mut World) -> Result<T, OwnershipError> + Send,
    ) -> Result<T, OwnershipError> {
        let started = Instant::now();
        let not_committed = |leader: Option<String>| OwnershipError::NotCommitted {
            what: what.to_string(),
            waited: COMMIT_PATIENCE,
            leader,
        };
        let mut apply = Some(apply);
        loop {
            tokio::time::sleep(Duration::from_millis(3)).await;
            // Tried with the world locked, never across an await.
            let tried = {
                let mut w = self.sim.w();
                let leader = w.leader;
                let leader_name = leader.map(|l| w.hosts[l].name.clone());
                let can = w.active(self.me)
                    && leader.is_some_and(|l| w.active(l) && w.linked(self.me, l) && w.reaches_majority(l));
                if can {
                    let result = (apply.take().expect("applied once"))(&mut w);
                    let lose = w.lost_commits && w.rng.chance(500);
                    Some((result, lose, leader_name))
                } else {
                    if started.elapsed() >= COMMIT_PATIENCE {
                        return Err(not_committed(leader_name));
                    }
                    None
                }
            };
            match tried {
                Some((_, true, leader)) => {
                    tokio::time::sleep(COMMIT_PATIENCE).await;
                    return Err(not_committed(leader));
                }
                Some((result, false, _)) => return result,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn compare_and_set(
        w: &mut World,
        vserver: &str,
        owner: &str,
        expected: u64,
        from: Option<&str>,
    ) -> Result<(String, u64), OwnershipError> {
        let entry = w.owners.entry(vserver.to_string()).or_insert(OwnerEntry { owner: None, epoch: 0 });
        if entry.epoch == expected + 1 && entry.owner.as_deref() == Some(owner) {
            return Ok((owner.to_string(), entry.epoch));
        }
        if entry.epoch != expected {
            return Err(OwnershipError::StaleEpoch {
                vserver: vserver.into(),
                expected,
                current: entry.epoch,
                owner: entry.owner.clone(),
            });
        }
        entry.owner = Some(owner.to_string());
        entry.epoch += 1;
        let epoch = entry.epoch;
        if from.is_some() {
            w.stats.takeovers += 1;
        }
        w.note(format!("table: {vserver} -> {owner} at epoch {epoch}"));
        Ok((owner.to_string(), epoch))
    }
}

impl Table for SimTable {
    fn is_leader(&self) -> bool {
        self.sim.w().leader == Some(self.me)
    }
    fn leader(&self) -> Option<String> {
        let w = self.sim.w();
        w.leader.map(|l| w.hosts[l].name.clone())
    }
    fn table(&self) -> BTreeMap<String, OwnerEntry> {
        self.sim.w().owners.clone()
    }
    fn epoch(&self, vserver: &str) -> u64 {
        self.sim.w().owners.get(vserver).map_or(0, |e| e.epoch)
    }
    fn owner(&self, vserver: &str) -> Option<(String, u64)> {
        self.sim.w().owners.get(vserver).and_then(|e| Some((e.owner.clone()?, e.epoch)))
    }
    fn events(&self) -> Vec<Event> {
        self.sim.w().events.clone()
    }
    fn maintenance(&self) -> Maintenance {
        Maintenance::default()
    }
    fn voters(&self) -> Vec<String> {
        self.sim.w().hosts.iter().map(|h| h.name.clone()).collect()
    }
    fn set_owner(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send {
        let (vserver, owner) = (vserver.to_string(), owner.to_string());
        async move {
            self.commit("set owner", move |w| SimTable::compare_and_set(w, &vserver, &owner, expected, None)).await
        }
    }
    fn take_over(
        &self,
        vserver: &str,
        owner: &str,
        expected: u64,
        from: &str,
    ) -> impl Future<Output = Result<(String, u64), OwnershipError>> + Send {
        let (vserver, owner, from) = (vserver.to_string(), owner.to_string(), from.to_string());
        async move {
            self.commit("take over", move |w| SimTable::compare_and_set(w, &vserver, &owner, expected, Some(&from)))
                .await
        }
    }
    fn log_at(
        &self,
        kind: &str,
        vserver: Option<&str>,
        text: &str,
        at_ms: u64,
    ) -> impl Future<Output = Result<u64, OwnershipError>> + Send {
        let (kind, vserver, text) = (kind.to_string(), vserver.map(str::to_string), text.to_string());
        let host = self.sim.w().hosts[self.me].name.clone();
        async move {
            self.commit("event", move |w| {
                let seq = w.events.len() as u64 + 1;
                w.note(format!("event {seq} ({kind}): {text}"));
                w.events.push(Event { seq, at_ms, host, text, kind, vserver });
                Ok(seq)
            })
            .await
        }
    }
}

/// One host's client of the others.
#[derive(Clone)]
struct SimPeers {
    sim: Sim,
    me: usize,
}

impl SimPeers {
    fn to(&self, host: &str) -> Result<usize, Unreachable> {
        self.sim.w().index(host).ok_or_else(|| Unreachable(format!("{host} is not a peer")))
    }
}

impl Peers for SimPeers {
    fn knows(&self, host: &str) -> bool {
        self.sim.w().index(host).is_some()
    }
    fn probe(
        &self,
        voter: &str,
        req: &ProbeRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<ProbeReply>> + Send {
        let (to, req, sim, me) = (self.to(voter), req.clone(), self.sim.clone(), self.me);
        async move {
            let handle = move |sim: Sim, at: usize| async move {
                let m = Arc::clone(&sim.w().hosts[at].membership);
                probe(&m, &req).ok_or_else(|| refused(404, "not a peer"))
            };
            sim.rpc(me, to?, timeout, handle).await
        }
    }
    fn replicas(&self, host: &str, timeout: Duration) -> impl Future<Output = Answer<Vec<HeldReplica>>> + Send {
        let (to, sim, me) = (self.to(host), self.sim.clone(), self.me);
        async move {
            let handle = |sim: Sim, at: usize| async move { Ok(held(&sim.w(), at)) };
            sim.rpc(me, to?, timeout, handle).await
        }
    }
    fn promote(
        &self,
        host: &str,
        name: &str,
        req: &PromoteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<(VserverState, PromoteTimes)>> + Send {
        let (to, sim, me, req, name) = (self.to(host), self.sim.clone(), self.me, req.clone(), name.to_string());
        async move {
            let handle = move |sim: Sim, at: usize| async move {
                promote_here(&sim, at, &name, &req).map(|times| (VserverState::Running, times))
            };
            sim.rpc(me, to?, timeout, handle).await
        }
    }
    fn vserver_state(
        &self,
        host: &str,
        _name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Answer<VserverState>> + Send {
        let (to, sim, me) = (self.to(host), self.sim.clone(), self.me);
        async move {
            let handle = |sim: Sim, at: usize| async move {
                let w = sim.w();
                let h = &w.hosts[at];
                match (h.running, h.tree) {
                    (true, _) => Ok(VserverState::Running),
                    (false, true) => Ok(VserverState::Stopped),
                    (false, false) => Err(refused(404, "no such vserver")),
                }
            };
            sim.rpc(me, to?, timeout, handle).await
        }
    }
}

/// The voter's side of a probe (the agent's `takeover::probe`).
fn probe(m: &Membership, req: &ProbeRequest) -> Option<ProbeReply> {
    let (silence, promised) =
        m.probe(&req.host, Duration::from_millis(req.silent_ms), Duration::from_millis(req.promise_ms.min(60_000)))?;
    Some(ProbeReply { silence_ms: silence.as_millis() as u64, promised })
}

fn held(w: &World, at: usize) -> Vec<HeldReplica> {
    let h = &w.hosts[at];
    if !h.replica {
        return Vec::new();
    }
    vec![HeldReplica {
        vserver: VS.into(),
        source: "h0".into(),
        generation: "a".into(),
        started_unix_ms: 0,
        finished_unix_ms: 0,
        age_secs: 0,
        consistent: true,
        kind: "sync".into(),
    }]
}

/// The receiving host's side of a promote (the agent's `migrate::promote`): refused unless the table gives it
/// the vserver at that epoch, it holds its lease, has a complete replica and runs nothing of that name.
fn promote_here(sim: &Sim, at: usize, name: &str, req: &PromoteRequest) -> Result<PromoteTimes, Refused> {
    let mut w = sim.w();
    let me = w.hosts[at].name.clone();
    if w.kill_before_promote.is_some_and(|(h, _)| h == at) {
        let (_, back) = w.kill_before_promote.take().expect("armed");
        w.note(format!("{me}: agent killed as the promote arrived, before it acted on it"));
        stop_agent(&mut w, at);
        restart_agent_after(sim, at, back);
        return Err(refused(503, "the agent died"));
    }
    if req.again && std::mem::take(&mut w.stop_before_asked_again) {
        let text = intent_event(VS, false, &format!("stop on {me}"));
        let (seq, at_ms) = (w.events.len() as u64 + 1, w.unix_ms());
        w.note(format!("event {seq} ({}): {text}", kinds::INTENT));
        w.events.push(Event {
            seq,
            at_ms,
            host: me.clone(),
            text,
            kind: kinds::INTENT.into(),
            vserver: Some(VS.into()),
        });
    }
    let (owner, epoch) = w.owner().unwrap_or_default();
    if req.epoch.is_some_and(|e| e < epoch) || owner != me {
        return Err(refused(409, format!("the table gives {name} to {owner} at epoch {epoch}")));
    }
    if w.lease_left(at).is_some_and(|l| l.is_zero()) {
        return Err(refused(403, "this host holds no lease"));
    }
    // Asked again at the epoch it runs at here: done (the agent's promote, under the vserver's lock).
    if w.hosts[at].running && req.epoch == Some(epoch) {
        return Ok(PromoteTimes::default());
    }
    if w.hosts[at].running || w.hosts[at].tree {
        return Err(refused(409, format!("{name} already exists on this host")));
    }
    if req.again && !meant_to_run(&w.events, VS, None) {
        let text = format!("the cluster no longer means {name} to run");
        w.note(format!("{me}: promote asked again refused: {text}"));
        return Err(refused(409, text));
    }
    if !w.hosts[at].replica {
        return Err(refused(404, "no complete replica"));
    }
    w.hosts[at].replica = false;
    w.hosts[at].tree = true;
    if req.start {
        w.start(at, "takeover");
    }
    if w.kill_after_promote.is_some_and(|(h, _)| h == at) {
        let (_, back) = w.kill_after_promote.take().expect("armed");
        let name = w.hosts[at].name.clone();
        w.note(format!("{name}: agent killed right after the promote, before its answer"));
        stop_agent(&mut w, at);
        restart_agent_after(sim, at, back);
    }
    Ok(PromoteTimes::default())
}

/// Starts `h`'s agent again after `back`, if it is still down then.
fn restart_agent_after(sim: &Sim, h: usize, back: Duration) {
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(back).await;
        if sim.w().agent_down(h) {
            start_agent(&sim, h);
        }
    });
}

/// One host as the coordinator sees it.
#[derive(Clone)]
struct SimHost {
    sim: Sim,
    me: usize,
    node: String,
    table: SimTable,
    peers: SimPeers,
    busy: Arc<Busy>,
}

impl Host for SimHost {
    type Table = SimTable;
    type Peers = SimPeers;

    fn node(&self) -> &str {
        &self.node
    }
    fn table(&self) -> Option<&SimTable> {
        Some(&self.table)
    }
    fn peers(&self) -> &SimPeers {
        &self.peers
    }
    fn takeover_timeout(&self) -> Option<Duration> {
        Some(TAKEOVER_TIMEOUT)
    }
    fn limits(&self) -> Limits {
        Limits { max_relocate: 1000, window_secs: 3600 }
    }
    fn membership(&self) -> Vec<PeerView> {
        let (m, since_start) = {
            let w = self.sim.w();
            (Arc::clone(&w.hosts[self.me].membership), w.hosts[self.me].agent_started.elapsed())
        };
        m.peers()
            .into_iter()
            .map(|p| PeerView {
                // Never heard since this agent started: silent since then.
                silence: p.last_heard_ms.map_or(since_start, Duration::from_millis),
                alive: p.state == PeerState::Alive,
                maintenance: p.maintenance,
                vservers: BTreeMap::new(),
                name: p.name,
            })
            .collect()
    }
    fn probe(&self, req: &ProbeRequest) -> Option<ProbeReply> {
        let m = Arc::clone(&self.sim.w().hosts[self.me].membership);
        probe(&m, req)
    }
    fn held(&self) -> Vec<HeldReplica> {
        held(&self.sim.w(), self.me)
    }
    fn placement(&self, _name: &str) -> Option<Placement> {
        Some(self.sim.w().placement.clone())
    }
    fn vserver_state(&self, _name: &str) -> Option<VserverState> {
        let w = self.sim.w();
        let h = &w.hosts[self.me];
        match (h.running, h.tree) {
            (true, _) => Some(VserverState::Running),
            (false, true) => Some(VserverState::Stopped),
            (false, false) => None,
        }
    }
    fn promote(&self, name: &str, req: PromoteRequest) -> impl Future<Output = Result<PromoteTimes, String>> + Send {
        let r = promote_here(&self.sim, self.me, name, &req).map_err(|e| e.to_string());
        async move { r }
    }
    async fn fence_hook(&self, _host: &str) -> Result<(), String> {
        Ok(())
    }
    fn spread_placement(&self, _name: &str, placement: &Placement) -> impl Future<Output = Vec<String>> + Send {
        self.sim.w().placement = placement.clone();
        async { Vec::new() }
    }
    fn busy(&self) -> &Busy {
        &self.busy
    }
    fn now_unix_ms(&self) -> u64 {
        self.sim.w().unix_ms()
    }
}

// ---------------------------------------------------------------------------------------------------------
// The agent's loops on a host (what `node-agent` runs around the failover code).

/// Starts `h`'s agent: a new incarnation of its failure detector, its beacons, its lease watch, the
/// coordinator's loop and the check that gives up what the table gives to another host.
fn start_agent(sim: &Sim, h: usize) {
    let mut w = sim.w();
    let host = &mut w.hosts[h];
    host.agent = true;
    host.incarnation += 1;
    host.held = false;
    host.agent_started = Instant::now();
    let names: Vec<String> = (0..3).map(|i| format!("h{i}")).collect();
    let peers = names.iter().filter(|n| **n != host.name).map(|n| (n.clone(), format!("sim://{n}"))).collect();
    host.membership = Arc::new(Membership::new(MembershipConfig {
        node: host.name.clone(),
        peers,
        secret: "simulated-cluster-secret".into(),
        incarnation: host.incarnation,
        suspect_after: Duration::from_millis(750),
        dead_after: Duration::from_millis(1500),
        lease_len: LEASE,
    }));
    // Down at start although meant to run (this host crashed): held until the table confirms it is ours.
    if host.tree && !host.running && !w.intent_stopped() {
        w.hosts[h].fenced = true;
    }
    let name = w.hosts[h].name.clone();
    let line = format!("{name}: agent started, incarnation {}", w.hosts[h].incarnation);
    w.note(line);
    let coordinator = SimHost {
        sim: sim.clone(),
        me: h,
        node: name,
        table: SimTable { sim: sim.clone(), me: h },
        peers: SimPeers { sim: sim.clone(), me: h },
        busy: Arc::default(),
    };
    let tasks = vec![
        tokio::spawn(beacons(sim.clone(), h)).abort_handle(),
        tokio::spawn(watch(sim.clone(), h)).abort_handle(),
        tokio::spawn(failover::takeover::run(coordinator)).abort_handle(),
        tokio::spawn(reconcile(sim.clone(), h)).abort_handle(),
    ];
    w.hosts[h].tasks = tasks;
}

fn stop_agent(w: &mut World, h: usize) {
    w.hosts[h].agent = false;
    for t in w.hosts[h].tasks.drain(..) {
        t.abort();
    }
}

/// Beacons out, every [`BEACON_EVERY`]; each arrives after its delay (or not), possibly twice.
async fn beacons(sim: Sim, h: usize) {
    let mut every = tokio::time::interval(BEACON_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !sim.unfrozen(h).await {
            return;
        }
        let mut w = sim.w();
        let m = Arc::clone(&w.hosts[h].membership);
        for to in (0..w.hosts.len()).filter(|&to| to != h) {
            let datagram = m.next_beacon();
            let copies = if w.rng.chance(20) { 2 } else { 1 };
            for _ in 0..copies {
                let Some(delay) = w.transit(h, to) else { continue };
                let (sim, datagram) = (sim.clone(), datagram.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // Waits in the socket's buffer while the agent is frozen.
                    if sim.unfrozen(to).await {
                        let m = Arc::clone(&sim.w().hosts[to].membership);
                        let _ = m.receive_beacon(&datagram);
                    }
                });
            }
        }
    }
}

/// The agent's lease watch (every [`WATCH_EVERY`]): tells the keepers how long the lease lasts, fences when it
/// is over, and once it is back asks the table before running what it fenced.
async fn watch(sim: Sim, h: usize) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    loop {
        every.tick().await;
        if !sim.unfrozen(h).await {
            return;
        }
        let recover = {
            let mut w = sim.w();
            let left = w.lease_left(h).unwrap_or(Duration::MAX);
            if !left.is_zero() {
                w.hosts[h].held = true;
                w.hosts[h].keepers_until = left.checked_sub(FENCE_LEAD).map(|l| Instant::now() + l);
                w.hosts[h].fenced && !w.intent_stopped()
            } else {
                if w.hosts[h].running && (w.hosts[h].held || started.elapsed() >= LEASE) {
                    w.stop(h, "lease over: fenced by the agent");
                    w.hosts[h].fenced = true;
                    w.stats.fences += 1;
                }
                false
            }
        };
        if recover {
            let table = SimTable { sim: sim.clone(), me: h };
            let me = sim.w().hosts[h].name.clone();
            match failover::lease::still_ours(&table, &me, VS).await {
                Some(true) => {
                    let mut w = sim.w();
                    let lease = w.lease_left(h).is_none_or(|l| !l.is_zero());
                    if w.active(h) && w.hosts[h].fenced && !w.hosts[h].running && lease && !w.intent_stopped() {
                        w.start(h, "recovered after a fence");
                    }
                }
                Some(false) => {
                    let mut w = sim.w();
                    w.hosts[h].fenced = false;
                    w.note(format!("{me}: after the fence, it belongs to another host: stays stopped"));
                }
                None => {}
            }
        }
    }
}

/// The keepers of a host's vservers: they kill what runs when the lease last written runs out, whatever the
/// agent does (frozen, killed). Runs while the machine is up.
async fn keepers(sim: Sim, h: usize) {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut w = sim.w();
        if !w.hosts[h].up {
            return;
        }
        if w.hosts[h].running && w.hosts[h].keepers_until.is_none_or(|t| Instant::now() >= t) {
            w.stop(h, "its keepers: the lease ran out");
            w.hosts[h].fenced = true;
            w.stats.fences += 1;
        }
    }
}

/// Every second: a vserver the table gives to another host is not run here (the agent's `reconcile`).
async fn reconcile(sim: Sim, h: usize) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !sim.unfrozen(h).await {
            return;
        }
        let mut w = sim.w();
        let me = w.hosts[h].name.clone();
        if let Some((owner, _)) = w.owner().filter(|(o, _)| *o != me) {
            if w.hosts[h].running {
                w.stop(h, &format!("the table gives it to {owner}"));
            }
            w.hosts[h].fenced = false;
        }
    }
}

/// The elected coordinator: kept while it reaches a majority; else, after the election timeout, the first
/// host that does.
async fn elections(sim: Sim) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut w = sim.w();
        match w.leader {
            Some(l) if w.active(l) && w.reaches_majority(l) => continue,
            Some(l) => {
                let name = w.hosts[l].name.clone();
                w.note(format!("table: leader {name} lost"));
                w.leader = None;
                w.leaderless_since = Some(Instant::now());
                w.election_after = w.rng.ms(2400, 2800);
            }
            None => {}
        }
        let since = *w.leaderless_since.get_or_insert_with(Instant::now);
        if since.elapsed() < w.election_after {
            continue;
        }
        let eligible: Vec<usize> = (0..w.hosts.len()).filter(|&h| w.active(h) && w.reaches_majority(h)).collect();
        let pick = match w.preferred_leader.filter(|p| eligible.contains(p)) {
            Some(p) => Some(p),
            None if eligible.is_empty() => None,
            None => Some(eligible[w.rng.below(eligible.len() as u64) as usize]),
        };
        if let Some(l) = pick {
            let name = w.hosts[l].name.clone();
            w.note(format!("table: {name} elected"));
            w.leader = Some(l);
            w.leaderless_since = None;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// One run.

/// What a run found.
#[derive(Debug)]
struct Outcome {
    violations: Vec<String>,
    history: Vec<String>,
    stats: Stats,
    /// Where it runs at the end.
    running_on: Vec<String>,
    /// An operator's stop is the last word at the end.
    operator_stopped: bool,
}

impl Outcome {
    /// Meant to run (no operator's stop is the last word), yet it runs nowhere at the end, once the faults
    /// healed and the cluster had [`SETTLE`] to act.
    fn down(&self) -> bool {
        self.running_on.is_empty() && !self.operator_stopped
    }
}

fn schedule(rng: &mut Rng) -> Vec<(Duration, Fault)> {
    let mut at = FAULTS_FROM;
    let mut out = Vec::new();
    while at < FAULTS_UNTIL {
        let host = rng.below(3) as usize;
        let fault = match rng.below(9) {
            0 => Fault::Crash(host, rng.ms(300, 6000)),
            1 => Fault::AgentRestart(host, rng.ms(50, 4000)),
            2 => Fault::Freeze(host, rng.ms(100, 4000)),
            3 | 4 => Fault::Isolate(host, rng.ms(100, 5000)),
            5 => Fault::Loss(100 + rng.below(500), rng.ms(500, 5000)),
            6 => Fault::Delay(rng.ms(10, 300), rng.ms(500, 5000)),
            7 => Fault::LostCommits(rng.ms(500, 5000)),
            _ => Fault::Operator(rng.chance(500)),
        };
        out.push((at, fault));
        at += rng.ms(300, 3000);
    }
    out
}

/// Runs the cluster with `faults`, from a seed, for [`RUN_FOR`].
fn run(seed: u64, faults: Option<Vec<(Duration, Fault)>>) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async move {
        let mut rng = Rng(seed);
        let faults = faults.unwrap_or_else(|| schedule(&mut rng));
        // The liveness check waits until every fault has healed, then until the vserver runs on its owner (or
        // an operator's stop is the last word), for at most SETTLE.
        let healed = faults.iter().map(|(at, f)| *at + f.lasts()).max().unwrap_or_default();
        let hosts = (0..3)
            .map(|i| HostState {
                name: format!("h{i}"),
                up: true,
                agent: false,
                frozen_until: None,
                incarnation: 0,
                membership: Arc::new(Membership::new(MembershipConfig {
                    node: String::new(),
                    peers: Vec::new(),
                    secret: String::new(),
                    incarnation: 0,
                    suspect_after: Duration::ZERO,
                    dead_after: Duration::ZERO,
                    lease_len: Duration::ZERO,
                })),
                tree: i == 0,
                replica: i > 0,
                running: false,
                fenced: false,
                keepers_until: None,
                held: false,
                agent_started: Instant::now(),
                tasks: Vec::new(),
            })
            .collect();
        let mut owners = BTreeMap::new();
        owners.insert(VS.to_string(), OwnerEntry { owner: Some("h0".into()), epoch: 1 });
        let sim = Sim(Arc::new(Mutex::new(World {
            rng,
            hosts,
            cut: BTreeSet::new(),
            loss_per_mille: 0,
            extra_delay: Duration::ZERO,
            lost_commits: false,
            owners,
            events: Vec::new(),
            leader: Some(0),
            leaderless_since: None,
            election_after: Duration::ZERO,
            kill_after_promote: None,
            kill_before_promote: None,
            stop_before_asked_again: false,
            preferred_leader: None,
            placement: Placement { primary: "h0".into(), standbys: STANDBYS.map(String::from).to_vec(), epoch: 0 },
            started: Instant::now(),
            history: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
        })));
        for h in 0..3 {
            start_agent(&sim, h);
            tokio::spawn(keepers(sim.clone(), h));
        }
        tokio::spawn(elections(sim.clone()));
        // The vserver starts on h0 once it holds its lease.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut w = sim.w();
            if w.lease_left(0).is_some_and(|l| !l.is_zero()) {
                w.start(0, "first start");
                break;
            }
        }
        for (at, fault) in faults {
            let started = sim.w().started;
            tokio::time::sleep_until(started + at).await;
            inject(&sim, fault);
        }
        let started = sim.w().started;
        tokio::time::sleep_until(started + RUN_FOR.max(healed)).await;
        while started.elapsed() < healed + SETTLE && !sim.w().settled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut w = sim.w();
        for h in 0..3 {
            stop_agent(&mut w, h);
        }
        let running_on = w.hosts.iter().filter(|h| h.running).map(|h| h.name.clone()).collect();
        Outcome {
            violations: std::mem::take(&mut w.violations),
            history: std::mem::take(&mut w.history),
            stats: w.stats,
            running_on,
            operator_stopped: w.intent_stopped(),
        }
    })
}

/// Carries out one fault now, and its end later.
fn inject(sim: &Sim, fault: Fault) {
    let mut w = sim.w();
    w.note(format!("fault: {fault:?}"));
    let after = |d: Duration, f: Box<dyn FnOnce(&Sim) + Send>| {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            f(&sim);
        });
    };
    match fault {
        Fault::Crash(h, d) if w.hosts[h].up => {
            stop_agent(&mut w, h);
            w.stop(h, "the machine crashed");
            let host = &mut w.hosts[h];
            host.up = false;
            host.keepers_until = None;
            after(
                d,
                Box::new(move |sim| {
                    {
                        let mut w = sim.w();
                        w.hosts[h].up = true;
                        w.hosts[h].frozen_until = None;
                        let name = w.hosts[h].name.clone();
                        w.note(format!("{name}: machine back"));
                    }
                    tokio::spawn(keepers(sim.clone(), h));
                    start_agent(sim, h);
                }),
            );
        }
        Fault::AgentRestart(h, d) if w.hosts[h].up && w.hosts[h].agent => {
            stop_agent(&mut w, h);
            after(
                d,
                Box::new(move |sim| {
                    if sim.w().agent_down(h) {
                        start_agent(sim, h);
                    }
                }),
            );
        }
        Fault::Freeze(h, d) => {
            let until = Instant::now() + d;
            let host = &mut w.hosts[h];
            host.frozen_until = Some(host.frozen_until.map_or(until, |t| t.max(until)));
        }
        Fault::Isolate(h, d) => {
            let pairs: Vec<(usize, usize)> = (0..3).filter(|&o| o != h).map(|o| (o.min(h), o.max(h))).collect();
            w.cut.extend(pairs.iter().copied());
            after(
                d,
                Box::new(move |sim| {
                    let mut w = sim.w();
                    for p in &pairs {
                        w.cut.remove(p);
                    }
                }),
            );
        }
        Fault::Loss(per_mille, d) => {
            w.loss_per_mille = per_mille;
            after(d, Box::new(|sim| sim.w().loss_per_mille = 0));
        }
        Fault::Delay(extra, d) => {
            w.extra_delay = extra;
            after(d, Box::new(|sim| sim.w().extra_delay = Duration::ZERO));
        }
        Fault::LostCommits(d) => {
            w.lost_commits = true;
            after(d, Box::new(|sim| sim.w().lost_commits = false));
        }
        Fault::KillAfterPromote(h, d) => w.kill_after_promote = Some((h, d)),
        Fault::KillBeforePromote(h, d) => w.kill_before_promote = Some((h, d)),
        Fault::StopBeforeAskedAgain => w.stop_before_asked_again = true,
        Fault::PreferLeader(h) => w.preferred_leader = Some(h),
        Fault::Operator(stop) => {
            drop(w);
            tokio::spawn(operator(sim.clone(), stop));
        }
        _ => {}
    }
}

/// An operator's stop (or start) on the host the table names, recorded in the event log first as the agent
/// does; nothing is done when it cannot be recorded.
async fn operator(sim: Sim, stop: bool) {
    let Some(h) = ({
        let w = sim.w();
        w.owner().and_then(|(o, _)| w.index(&o)).filter(|&h| w.active(h))
    }) else {
        return;
    };
    let table = SimTable { sim: sim.clone(), me: h };
    let name = sim.w().hosts[h].name.clone();
    let text = intent_event(VS, !stop, &format!("{} on {name}", if stop { "stop" } else { "start" }));
    let at = sim.w().unix_ms();
    let recorded = table.log_at(kinds::INTENT, Some(VS), &text, at).await;
    let mut w = sim.w();
    if recorded.is_err() {
        w.note(format!("operator: {text} not recorded; nothing done"));
        return;
    }
    if stop {
        w.stop(h, "operator stop");
        w.hosts[h].fenced = false;
    } else if w.owner().is_some_and(|(o, _)| o == name)
        && w.active(h)
        && !w.hosts[h].running
        && w.lease_left(h).is_none_or(|l| !l.is_zero())
        && w.hosts[h].tree
    {
        w.start(h, "operator start");
    }
}

// ---------------------------------------------------------------------------------------------------------
// The tests.

fn report(seed: u64, o: &Outcome) -> String {
    format!(
        "seed {seed}: {}\nreplay: SIM_SEED={seed} cargo nextest run -p failover --test simulator -- replay --nocapture\n{}",
        o.violations.join("\n"),
        o.history.join("\n")
    )
}

/// Many seeds, each its own history; any violation fails with the seed to replay.
#[test]
fn the_invariants_hold_under_seeded_faults() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let first: u64 = std::env::var("SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    let started = std::time::Instant::now();
    let totals = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut totals = Stats::default();
                    let mut running_at_end = 0u64;
                    for seed in (first + t..first + seeds).step_by(threads as usize) {
                        let o = run(seed, None);
                        assert!(o.violations.is_empty(), "{}", report(seed, &o));
                        totals.starts += o.stats.starts;
                        totals.takeovers += o.stats.takeovers;
                        totals.fences += o.stats.fences;
                        running_at_end += u64::from(!o.down());
                        if o.down() && std::env::var_os("SIM_DOWN").is_some() {
                            eprintln!("seed {seed}: down at the end");
                        }
                    }
                    (totals, running_at_end)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a worker")).fold((Stats::default(), 0), |(a, n), (b, m)| {
            (
                Stats {
                    starts: a.starts + b.starts,
                    takeovers: a.takeovers + b.takeovers,
                    fences: a.fences + b.fences,
                },
                n + m,
            )
        })
    });
    eprintln!(
        "{seeds} seeds in {:.1} s on {threads} threads: {} starts, {} takeovers, {} fences; running (or stopped by an operator) at the end \
         in {} of {seeds}",
        started.elapsed().as_secs_f64(),
        totals.0.starts,
        totals.0.takeovers,
        totals.0.fences,
        totals.1
    );
}

/// `SIM_SEED=N`: one seed again, its history printed (the same every time).
#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
        eprintln!("set SIM_SEED=N to replay seed N");
        return;
    };
    let o = run(seed, None);
    println!("{}", report(seed, &o));
    assert!(o.violations.is_empty(), "seed {seed} broke an invariant (history above)");
    assert!(!o.down(), "seed {seed}: meant to run, it runs nowhere at the end (history above)");
}

/// A seed is a history: the same seed twice, the same events at the same virtual times.
#[test]
fn a_seed_replays_the_same_history() {
    for seed in [7, 4242] {
        let (a, b) = (run(seed, None), run(seed, None));
        assert_eq!(a.history, b.history, "seed {seed}");
    }
}

/// A crash of the owner: the vserver is taken over by the first standby, once, and runs there at the end.
#[test]
fn a_crashed_owner_is_taken_over_once() {
    let o = run(1, Some(vec![(Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30)))]));
    assert!(o.violations.is_empty(), "{}", report(1, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(1, &o));
    assert_eq!(o.stats.takeovers, 1, "{}", report(1, &o));
}

/// Blips shorter than the lease (the owner's links cut, its agent frozen, up to 1 s) stop nothing.
#[test]
fn blips_within_the_budget_stop_nothing() {
    let faults = vec![
        (Duration::from_secs(4), Fault::Isolate(0, Duration::from_millis(1000))),
        (Duration::from_secs(7), Fault::Freeze(0, Duration::from_millis(1000))),
        (Duration::from_secs(10), Fault::AgentRestart(0, Duration::from_millis(500))),
    ];
    let o = run(3, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(3, &o));
    assert_eq!((o.stats.starts, o.stats.fences, o.stats.takeovers), (1, 0, 0), "{}", report(3, &o));
    assert_eq!(o.running_on, ["h0"]);
}

/// The lost answer to a takeover's promote: the first standby started the vserver, but its agent died before
/// the answer left (the connection is reset), and is back 1 s later. The coordinator must not take that for a
/// refusal and try the second standby: that would run a second copy while the first still runs under the
/// lease its keepers follow. (h2 coordinates, so the promote to h1 goes over the network.)
#[test]
fn a_lost_promote_answer_never_makes_a_second_copy() {
    let faults = vec![
        (Duration::from_secs(3), Fault::KillAfterPromote(1, Duration::from_secs(1))),
        (Duration::from_secs(3), Fault::PreferLeader(2)),
        (Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30))),
    ];
    let o = run(11, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(11, &o));
    assert!(o.history.iter().any(|l| l.contains("agent killed right after the promote")), "{}", report(11, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(11, &o));
}

/// A takeover whose promote never ran: the coordinator (h1, the first standby) records itself as the new owner,
/// then its agent dies as the promote arrives, before it acts on it, and is back 1 s later (within the lease:
/// nobody takes it over from h1). h1 owns the vserver, is alive, holds its replica and runs nothing: the
/// coordinator elected next asks the promote again, at the same epoch, and it runs on h1.
#[test]
fn a_takeover_whose_promote_never_ran_ends_running_on_the_new_owner() {
    let faults = vec![
        (Duration::from_secs(3), Fault::KillBeforePromote(1, Duration::from_secs(1))),
        (Duration::from_secs(3), Fault::PreferLeader(1)),
        (Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30))),
    ];
    let o = run(5, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(5, &o));
    assert!(o.history.iter().any(|l| l.contains("before it acted on it")), "{}", report(5, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(5, &o));
}

/// Seeds that ended with the vserver down everywhere (a takeover's promote refused or lost, the new owner
/// alive and idle) end with it running once the promote is asked again.
#[test]
fn seeds_once_down_end_running() {
    for seed in ONCE_DOWN {
        let o = run(seed, None);
        assert!(o.violations.is_empty(), "{}", report(seed, &o));
        assert!(!o.down(), "{}", report(seed, &o));
    }
}

/// An operator's stop recorded after the coordinator found the vserver owed, before the promote asked again
/// arrives: the owner refuses it, and the vserver stays stopped.
#[test]
fn an_operators_stop_outweighs_the_promote_asked_again() {
    let faults = vec![
        (Duration::from_secs(3), Fault::KillBeforePromote(1, Duration::from_secs(1))),
        (Duration::from_secs(3), Fault::PreferLeader(1)),
        (Duration::from_secs(3), Fault::StopBeforeAskedAgain),
        (Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30))),
    ];
    let o = run(5, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(5, &o));
    assert!(o.history.iter().any(|l| l.contains("promote asked again refused")), "{}", report(5, &o));
    assert!(o.running_on.is_empty(), "{}", report(5, &o));
    assert!(o.operator_stopped, "{}", report(5, &o));
}
