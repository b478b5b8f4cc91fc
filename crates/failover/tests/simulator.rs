//! The cluster's decisions under a deterministic simulator: N hosts on a virtual clock (tokio's paused time,
//! one thread), a simulated network, and a schedule of faults drawn from a seed (host crashes, agent kills and
//! restarts, partitions, pauses of an agent, message loss, delay, duplication and so reordering, lost answers
//! to table writes, operators' stops and starts, migrates and evacuations). The code under test is the real
//! one: the failure detector and the lease (`failover::membership`, `failover::lease`), the coordinator and the
//! takeover (`failover::takeover`), the promote on both sides (the asker's lost-answer rule and the target's
//! rules, `failover::promote::{promote_on, accept}`), the migrate's
//! phases over a replica session (`failover::migrate`, `failover::session`), the evacuation's rules
//! (`failover::evacuate`), over the same traits the agent implements. The ownership table stands here as a
//! linearizable compare-and-set store (openraft is tested by its authors), with its leader elected as openraft
//! would (a majority, after a timeout).
//!
//! The faults:
//! - a machine crashes and boots again; an agent is killed (-9) and started again, or frozen (SIGSTOP) a while;
//! - a host's links are cut; the network loses or delays messages; beacons are duplicated;
//! - agent-to-agent requests are duplicated for a while (a client's retry, a proxy): the copy is handled again
//!   on the receiving host after an extra delay, possibly after the first one's answer or after later
//!   requests, and its answer is dropped;
//! - the answers to table writes are lost (the write applies);
//! - an operator stops or starts the vserver;
//! - an operator migrates it from the host that runs it to a live standby (`vserver web migrate HOST`): the
//!   real `failover::migrate::run` on the source, its replica session, copies and promote carried by the
//!   simulated network, while the other faults go on;
//! - an operator evacuates the host that owns it: a migrate to the first live standby when that host is up, the
//!   takeover of a dead host (`--fenced`, said only when the machine is really down) otherwise.
//!
//! What stands in for the host (as the agent does it, see `node-agent`): starting and stopping a vserver is
//! a flag; the vservers' keepers kill them when the lease the agent last wrote for them runs out (even when
//! the agent is frozen) and refuse a start once it ran out; the agent fences them when its lease is over and
//! asks the table before it runs them again; a host that finds the table giving one of its vservers to another
//! host stops it, then keeps its copy aside, and its placement follows the table; a migrate holds the vserver
//! on its source (nothing else starts, stops or sets it aside meanwhile). A replica session on the target
//! fills a staging generation that a commit makes the complete replica, and is lost when the agent restarts.
//!
//! After every start, the invariants are checked: at most one copy runs; a start only on the host the table
//! names, from a tree or a complete replica; a returning host never restarts what it lost; a vserver an
//! operator stopped (the last intent the event log records) is not started by anything but an operator.
//!
//! The cluster is three voters, or the hub ([`HUB`]): six hosts of which three vote, the vserver's primary
//! and first standby among those that do not, each host that does not vote watching only the voters and its
//! partners (checked: a beacon from such a host to any other is a violation).
//!
//! `SIM_SEEDS=N` runs N seeds (default 10,000); `SIM_SEED=S` replays one seed and prints its history
//! (`SIM_HUB=1`: a seed of the hub).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use failover::changes::ClockMark;
use failover::evacuate::Mode;
use failover::events::{intent_event, kinds};
use failover::membership::{Membership, MembershipConfig};
use failover::migrate::Source;
use failover::ownership::{Event, Maintenance, OwnerEntry, OwnershipError};
use failover::peer::{Answer, Peers, Refused, Unreachable, CONTROL_TIMEOUT};
use failover::placement::Placement;
use failover::rsync::Moved;
use failover::session::SessionPeers;
use failover::store::GenerationMeta;
use failover::table::Table;
use failover::takeover::{Busy, Host, Limits, PeerView};
use failover::wire::{
    AbortReply, BeginReply, BeginRequest, CommitRequest, ConfFile, HeldReplica, MigrationStatus, PeerState, Preflight,
    ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes, VserverState,
};
use tokio::time::Instant;

/// Seeds that ended with the vserver down everywhere before a takeover's promote was asked again.
const ONCE_DOWN: [u64; 6] = [14, 389, 391, 733, 843, 853];

/// The vserver every simulated cluster protects.
const VS: &str = "web";

/// The hosts of a simulated cluster: how many, and which of them vote (grant leases, elect the coordinator,
/// answer its probes). The others watch only the voters and their partners, as the agent does
/// (`failover::membership::watch_set`).
#[derive(Debug, Clone, Copy)]
struct Layout {
    hosts: usize,
    voters: &'static [usize],
}

/// Three hosts, all voting.
const THREE: Layout = Layout { hosts: 3, voters: &[0, 1, 2] };

/// The hub: six hosts of which h2, h3 and h4 vote. The vserver's primary h0 and its first standby h1 do not
/// vote: they exchange beacons with the voters and with each other (partners) alone, never with h5, which
/// neither votes nor holds anything, and watches only the voters.
const HUB: Layout = Layout { hosts: 6, voters: &[2, 3, 4] };
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
/// The size of the vserver's tree (a migrate's pre-copy passes move less each time: the whole tree, then a
/// sixteenth of the pass before).
const TREE_BYTES: u64 = 1 << 30;
/// A request delivered again arrives up to this long after the first.
const LATE_COPY: Duration = Duration::from_millis(2500);

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
    /// When the agent started.
    agent_started: Instant,
    /// A migrate from this host holds the vserver: nothing else here starts, stops or sets it aside.
    migrating: bool,
    /// Its intent here is "stopped" (a migrate left it, or could not tell whether the target runs it): the
    /// agent does not run it again on its own.
    local_stopped: bool,
    /// The replica session open on this host (the agent's memory: lost when it restarts).
    session: Option<u64>,
    /// The takeovers the agent runs (its coordinator and its evacuations share them).
    busy: Arc<Busy>,
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
    /// An operator's stop is recorded just before the next first promote (not asked again) arrives.
    StopBeforePromote,
    /// The next coordinator elected is this host, when it can be.
    PreferLeader(usize),
    /// An operator stops the vserver where it runs (recorded first as intent), or starts it again.
    Operator(bool),
    /// For the duration, this many per mille of agent-to-agent requests are delivered a second time, up to
    /// [`LATE_COPY`] later; the copy's answer is dropped.
    Duplicates(u64, Duration),
    /// A trap for a scenario: the next promote sent to another host is delivered a second time, this long
    /// after the first.
    DuplicatePromote(Duration),
    /// An operator migrates the vserver from the host that runs it (else the host the table names) to this
    /// host (the next one if it is the source).
    Migrate(usize),
    /// An operator evacuates the host the table names, through this host's agent (the next active one if it
    /// does not answer).
    Evacuate(usize),
    /// From now on the vserver's tree is on a shared block device: it needs a power fence before a takeover,
    /// which a fence hook gives (`true`) or nothing does.
    Block(bool),
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
            | Fault::LostCommits(d)
            | Fault::Duplicates(_, d) => d,
            Fault::KillAfterPromote(..)
            | Fault::KillBeforePromote(..)
            | Fault::StopBeforeAskedAgain
            | Fault::StopBeforePromote
            | Fault::PreferLeader(_)
            | Fault::Operator(_)
            | Fault::DuplicatePromote(_)
            | Fault::Migrate(_)
            | Fault::Evacuate(_)
            | Fault::Block(_) => Duration::ZERO,
        }
    }
}

struct World {
    /// The voters, by index (see [`Layout`]).
    voters: Vec<usize>,
    rng: Rng,
    /// The draws of the migrates, evacuations and duplicated requests: apart, so that a seed's other faults
    /// are drawn as they were before these existed.
    xrng: Rng,
    hosts: Vec<HostState>,
    /// Cut links (both ways), as pairs (low, high).
    cut: BTreeSet<(usize, usize)>,
    loss_per_mille: u64,
    extra_delay: Duration,
    lost_commits: bool,
    /// Per mille of agent-to-agent requests delivered twice.
    duplicate_per_mille: u64,
    /// A trap for a scenario: the next promote to another host is delivered again this long after.
    duplicate_promote: Option<Duration>,
    /// The last replica session's number.
    sessions: u64,
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
    /// The vserver's tree is on a shared block device, and whether the hosts have a fence hook.
    block: Option<bool>,
    /// A trap for a scenario: an operator's stop is recorded just before the next promote asked again arrives.
    stop_before_asked_again: bool,
    /// A trap for a scenario: an operator's stop is recorded just before the next first promote arrives (after
    /// its sender read the log).
    stop_before_promote: bool,
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
    /// Migrates begun (an operator's, or an evacuation's), and those that ended with it on the target.
    migrates: u32,
    migrated: u32,
    /// Evacuations of a dead host that took it over.
    evacuated_dead: u32,
    /// Requests delivered twice.
    duplicates: u32,
}

impl Stats {
    fn add(self, o: Stats) -> Stats {
        Stats {
            starts: self.starts + o.starts,
            takeovers: self.takeovers + o.takeovers,
            fences: self.fences + o.fences,
            migrates: self.migrates + o.migrates,
            migrated: self.migrated + o.migrated,
            evacuated_dead: self.evacuated_dead + o.evacuated_dead,
            duplicates: self.duplicates + o.duplicates,
        }
    }
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
        self.voters.len() / 2 + 1
    }
    /// `h` reaches a majority of the voters (itself included, when it votes).
    fn reaches_majority(&self, h: usize) -> bool {
        self.voters.iter().filter(|&&o| self.active(o) && self.linked(h, o)).count() >= self.majority()
    }
    /// The voters' names.
    fn voter_names(&self) -> Vec<String> {
        self.voters.iter().map(|&v| self.hosts[v].name.clone()).collect()
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
        host.local_stopped = false;
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
        failover::lease::remaining(&self.voter_names(), &self.hosts[h].name, &self.hosts[h].membership.lease(now), now)
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

    /// Carries a request (`what`) from `from` to `to` and its answer back: `Unreachable` when either is lost
    /// or late. A request that arrives is carried out, even when its answer is lost afterwards. A frozen agent
    /// sends nothing until it is thawed. While requests are duplicated, a copy may be delivered again later
    /// (see [`Sim::deliver_again`]).
    async fn rpc<T, H>(&self, from: usize, to: usize, timeout: Duration, what: &'static str, handle: H) -> Answer<T>
    where
        T: Send + 'static,
        H: AsyncHandler<T> + Clone + 'static,
    {
        self.rpc_copied(from, to, timeout, what, handle, None).await
    }

    /// [`Sim::rpc`], the request delivered again `copy` after the first when given.
    async fn rpc_copied<T, H>(
        &self,
        from: usize,
        to: usize,
        timeout: Duration,
        what: &'static str,
        handle: H,
        copy: Option<Duration>,
    ) -> Answer<T>
    where
        T: Send + 'static,
        H: AsyncHandler<T> + Clone + 'static,
    {
        if !self.unfrozen(from).await {
            return Err(Unreachable("this agent stopped (simulated)".into()));
        }
        let deadline = Instant::now() + timeout;
        let lost = || async move {
            tokio::time::sleep_until(deadline).await;
            Err(Unreachable("no answer (simulated)".into()))
        };
        let copy = {
            let mut w = self.w();
            let per_mille = w.duplicate_per_mille;
            copy.or_else(|| {
                (per_mille > 0 && w.xrng.chance(per_mille)).then(|| w.xrng.ms(0, LATE_COPY.as_millis() as u64))
            })
        };
        let there = self.w().transit(from, to);
        if let Some(late) = copy {
            let (sim, again) = (self.clone(), handle.clone());
            let after = there.unwrap_or_default() + late;
            tokio::spawn(sim.deliver_again(from, to, after, what, again));
        }
        let Some(there) = there else { return lost().await };
        tokio::time::sleep(there).await;
        if !self.unfrozen(to).await {
            // A machine that runs but not its agent refuses the connection at once; a crashed one is silent.
            if self.w().hosts[to].up {
                return Err(Unreachable("connection refused (simulated)".into()));
            }
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

    /// A request delivered a second time (a client's retry, a proxy), `after` the first was sent: carried out
    /// again on `to` if it gets there, its answer dropped. It may come after the first one's answer, or after
    /// later requests.
    async fn deliver_again<T, H: AsyncHandler<T>>(
        self,
        from: usize,
        to: usize,
        after: Duration,
        what: &str,
        handle: H,
    ) {
        tokio::time::sleep(after).await;
        {
            let mut w = self.w();
            let per_mille = w.loss_per_mille;
            if !w.linked(from, to) || w.xrng.chance(per_mille) {
                return;
            }
        }
        if !self.unfrozen(to).await {
            return;
        }
        {
            let mut w = self.w();
            w.stats.duplicates += 1;
            let (a, b) = (w.hosts[from].name.clone(), w.hosts[to].name.clone());
            w.note(format!("{b}: {what} from {a} delivered again"));
        }
        if let Err(why) = handle.call(self.clone(), to).await {
            let mut w = self.w();
            let b = w.hosts[to].name.clone();
            w.note(format!("{b}: {what} delivered again refused: {why}"));
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
        self.sim.w().voter_names()
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
            sim.rpc(me, to?, timeout, "probe", handle).await
        }
    }
    fn replicas(&self, host: &str, timeout: Duration) -> impl Future<Output = Answer<Vec<HeldReplica>>> + Send {
        let (to, sim, me) = (self.to(host), self.sim.clone(), self.me);
        async move {
            let handle = |sim: Sim, at: usize| async move { Ok(held(&sim.w(), at)) };
            sim.rpc(me, to?, timeout, "replicas", handle).await
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
                let state = if req.start { VserverState::Running } else { VserverState::Stopped };
                promote_here(&sim, at, &name, &req).await.map(|times| (state, times))
            };
            let copy = sim.w().duplicate_promote.take();
            sim.rpc_copied(me, to?, timeout, "promote", handle, copy).await
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
            sim.rpc(me, to?, timeout, "vserver state", handle).await
        }
    }
}

/// The replica session's routes, on the target (the agent's `replication::{begin, commit, abort}` and
/// `migrate::preflight`).
impl SessionPeers for SimPeers {
    fn preflight(&self, host: &str, _name: &str) -> impl Future<Output = Answer<Preflight>> + Send {
        let (to, sim, me) = (self.to(host), self.sim.clone(), self.me);
        async move {
            let handle = |sim: Sim, at: usize| async move {
                let w = sim.w();
                let h = &w.hosts[at];
                Ok(Preflight {
                    free_bytes: 1 << 40,
                    rsync: Some("rsync 3.2.7".into()),
                    rsync_error: None,
                    present: h.tree || h.running,
                    staging_bytes: 0,
                    lease_left_ms: w.lease_left(at).map(|l| l.as_millis() as u64),
                })
            };
            sim.rpc(me, to?, CONTROL_TIMEOUT, "preflight", handle).await
        }
    }
    fn begin(&self, host: &str, _name: &str, req: &BeginRequest) -> impl Future<Output = Answer<BeginReply>> + Send {
        let (to, sim, me, source) = (self.to(host), self.sim.clone(), self.me, req.source.clone());
        async move {
            let handle = move |sim: Sim, at: usize| async move {
                let mut w = sim.w();
                if w.hosts[at].running {
                    return Err(refused(409, format!("{VS} runs on this host; it takes no copy from {source}")));
                }
                // A session still open (a copy that died on the way) is replaced.
                w.sessions += 1;
                let id = w.sessions;
                w.hosts[at].session = Some(id);
                let me = w.hosts[at].name.clone();
                w.note(format!("{me}: replica session s{id} begins (from {source})"));
                Ok(BeginReply { session: format!("s{id}"), generation: "b".into() })
            };
            sim.rpc(me, to?, CONTROL_TIMEOUT, "begin", handle).await
        }
    }
    fn commit(
        &self,
        host: &str,
        _name: &str,
        req: &CommitRequest,
    ) -> impl Future<Output = Answer<GenerationMeta>> + Send {
        let (to, sim, me, req) = (self.to(host), self.sim.clone(), self.me, req.clone());
        async move {
            let handle = move |sim: Sim, at: usize| async move {
                let mut w = sim.w();
                match w.hosts[at].session {
                    Some(id) if format!("s{id}") == req.session => {}
                    Some(_) => return Err(refused(409, format!("session {} was replaced", req.session))),
                    None => return Err(refused(404, format!("no sync session {} open", req.session))),
                }
                let (me, source) = (w.hosts[at].name.clone(), w.hosts[me].name.clone());
                w.hosts[at].session = None;
                w.hosts[at].replica = true;
                w.note(format!("{me}: replica session {} committed: its replica is complete", req.session));
                Ok(GenerationMeta {
                    source,
                    started_unix_ms: req.started_unix_ms,
                    finished_unix_ms: w.unix_ms(),
                    conf_sha256: String::new(),
                    consistent: req.consistent,
                    kind: req.kind.clone().unwrap_or_default(),
                })
            };
            sim.rpc(me, to?, CONTROL_TIMEOUT, "commit", handle).await
        }
    }
    fn abort(
        &self,
        host: &str,
        _name: &str,
        req: &CommitRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<AbortReply>> + Send {
        let (to, sim, me, session) = (self.to(host), self.sim.clone(), self.me, req.session.clone());
        async move {
            let handle = move |sim: Sim, at: usize| async move {
                let mut w = sim.w();
                if w.hosts[at].session.is_some_and(|id| format!("s{id}") == session) {
                    w.hosts[at].session = None;
                    let me = w.hosts[at].name.clone();
                    w.note(format!("{me}: replica session {session} aborted; the replica it had stays"));
                }
                Ok(AbortReply::default())
            };
            sim.rpc(me, to?, timeout, "abort", handle).await
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
        points: Vec::new(),
    }]
}

/// The receiving host's side of a promote: the agent's rules themselves ([`failover::promote::accept`]) over
/// this host's state ([`SimTarget`]), with the traps of the scenarios around them (the agent killed as the
/// promote arrives, or right after it; an operator's stop recorded just before it arrives).
async fn promote_here(sim: &Sim, at: usize, name: &str, req: &PromoteRequest) -> Result<PromoteTimes, Refused> {
    let me = {
        let mut w = sim.w();
        let me = w.hosts[at].name.clone();
        if w.kill_before_promote.is_some_and(|(h, _)| h == at) {
            let (_, back) = w.kill_before_promote.take().expect("armed");
            w.note(format!("{me}: agent killed as the promote arrived, before it acted on it"));
            stop_agent(&mut w, at);
            restart_agent_after(sim, at, back);
            return Err(refused(503, "the agent died"));
        }
        let stop_now = if req.again { &mut w.stop_before_asked_again } else { &mut w.stop_before_promote };
        if std::mem::take(stop_now) {
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
        me
    };
    let target = SimTarget {
        sim: sim.clone(),
        at,
        me: me.clone(),
        table: SimTable { sim: sim.clone(), me: at },
        again: req.again,
    };
    let times = failover::promote::accept(&target, name, req).await.map_err(|e| {
        use failover::promote::Refusal;
        let what = if req.again { "promote asked again" } else { "promote" };
        sim.w().note(format!("{me}: {what} refused: {e}"));
        let status = match e {
            Refusal::NoReplica(_) => 404,
            Refusal::Start(_) => 503,
            _ => 409,
        };
        refused(status, e.to_string())
    })?;
    let mut w = sim.w();
    if w.kill_after_promote.is_some_and(|(h, _)| h == at) {
        let (_, back) = w.kill_after_promote.take().expect("armed");
        w.note(format!("{me}: agent killed right after the promote, before its answer"));
        stop_agent(&mut w, at);
        restart_agent_after(sim, at, back);
    }
    Ok(times)
}

/// A simulated host as the target of a promote (the agent's `migrate::Target`): its tree, replica and
/// vserver are the world's flags; a start needs the host's lease, as the agent's supervisor's does.
struct SimTarget {
    sim: Sim,
    at: usize,
    me: String,
    table: SimTable,
    again: bool,
}

/// Why a simulated start was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartRefused(String);

impl failover::promote::Target for SimTarget {
    type Table = SimTable;
    type Serial = ();
    type Promoted = ();
    type StartError = StartRefused;
    fn node(&self) -> &str {
        &self.me
    }
    fn witness(&self) -> bool {
        false
    }
    fn table(&self) -> &SimTable {
        &self.table
    }
    async fn serialize(&self, _: &str) {}
    async fn present(&self, _: &str) -> failover::promote::Present {
        use failover::promote::Present;
        let w = self.sim.w();
        match (w.hosts[self.at].running, w.hosts[self.at].tree) {
            (true, _) => Present::Running,
            (false, true) => Present::Stopped,
            (false, false) => Present::Absent,
        }
    }
    async fn promote_replica(&self, _: &str) -> Result<(), failover::promote::PromoteError> {
        let mut w = self.sim.w();
        let host = &mut w.hosts[self.at];
        if !host.replica {
            return Err(failover::promote::PromoteError::NoReplica("no complete replica".into()));
        }
        host.replica = false;
        host.tree = true;
        Ok(())
    }
    async fn start(&self, _: &str) -> Result<(), StartRefused> {
        let mut w = self.sim.w();
        if w.lease_left(self.at).is_some_and(|l| l.is_zero()) {
            return Err(StartRefused("this host holds no lease".into()));
        }
        w.start(self.at, if self.again { "promote asked again" } else { "promote" });
        Ok(())
    }
    async fn put_back(&self, _: &str, (): ()) {
        let mut w = self.sim.w();
        let host = &mut w.hosts[self.at];
        host.tree = false;
        host.replica = true;
        host.local_stopped = true;
    }
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

impl SimHost {
    /// This host's membership, and how long its agent has run (a peer never heard is silent since then).
    fn heard(&self) -> (Arc<Membership>, Duration) {
        let w = self.sim.w();
        (Arc::clone(&w.hosts[self.me].membership), w.hosts[self.me].agent_started.elapsed())
    }
}

/// What the coordinator is told of a peer: as an agent's, without the vservers (the simulated heartbeats
/// carry none).
fn sim_view(p: failover::wire::PeerStatus, since_start: Duration) -> PeerView {
    PeerView { vservers: BTreeMap::new(), ..PeerView::from_status(p, since_start) }
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
        let (m, since_start) = self.heard();
        m.peers().into_iter().map(|p| sim_view(p, since_start)).collect()
    }
    fn silent(&self, at_least: Duration) -> Vec<PeerView> {
        let (m, since_start) = self.heard();
        m.silent_peers(at_least, since_start).into_iter().map(|p| sim_view(p, since_start)).collect()
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
    async fn promote(&self, name: &str, req: PromoteRequest) -> Result<PromoteTimes, String> {
        promote_here(&self.sim, self.me, name, &req).await.map_err(|e| e.to_string())
    }
    async fn fence_hook(&self, _host: &str) -> Result<(), String> {
        Ok(())
    }
    fn has_fence_hook(&self) -> bool {
        self.sim.w().block == Some(true)
    }
    fn needs_power_fence(&self, _name: &str) -> bool {
        self.sim.w().block.is_some()
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

/// The coordinator's side of host `h` (its agent's takeovers shared with its evacuations).
fn sim_host(sim: &Sim, h: usize) -> SimHost {
    let (node, busy) = {
        let w = sim.w();
        (w.hosts[h].name.clone(), Arc::clone(&w.hosts[h].busy))
    };
    SimHost {
        sim: sim.clone(),
        me: h,
        node,
        table: SimTable { sim: sim.clone(), me: h },
        peers: SimPeers { sim: sim.clone(), me: h },
        busy,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Migrates and evacuations (what the agent's `migrate` and `evacuate` run around the failover code).

/// The source host of one migrate, as `failover::migrate::run` drives it (the agent's `AgentSource`).
struct SimSource {
    sim: Sim,
    me: usize,
    node: String,
    peers: SimPeers,
    table: SimTable,
    /// The placement when the migrate began (what the hand-over moves).
    placement: Placement,
    status: Mutex<MigrationStatus>,
    /// Pre-copy passes made.
    passes: Mutex<u32>,
}

impl SimSource {
    /// One rsync pass into `session` on `target`, `lo`..`hi` ms long (and the network's delay): it fails when
    /// the target cannot be reached at its start or its end, or its session is gone (replaced, aborted, the
    /// agent restarted). The tunnel on the target is its agent's: it waits while that agent is frozen.
    async fn copy(&self, target: &str, session: &str, lo: u64, hi: u64) -> Result<(), String> {
        if !self.sim.unfrozen(self.me).await {
            return Err("this agent stopped".into());
        }
        let reachable = |w: &World, t: usize| -> Result<(), String> {
            if !w.linked(self.me, t) || !w.hosts[t].up || !w.hosts[t].agent {
                return Err(format!("rsync: cannot reach {target} (simulated)"));
            }
            Ok(())
        };
        let (t, took) = {
            let mut w = self.sim.w();
            let t = w.index(target).ok_or_else(|| format!("{target} is not a host"))?;
            reachable(&w, t)?;
            let extra = w.extra_delay;
            (t, w.xrng.ms(lo, hi) + extra)
        };
        tokio::time::sleep(took).await;
        if !self.sim.unfrozen(t).await {
            return Err(format!("rsync: connection to {target} reset (simulated)"));
        }
        let w = self.sim.w();
        reachable(&w, t)?;
        match w.hosts[t].session {
            Some(id) if format!("s{id}") == session => Ok(()),
            _ => Err(format!("rsync: {target} has no session {session} open (replaced or gone)")),
        }
    }
}

impl Source for SimSource {
    type Peers = SimPeers;
    type Table = SimTable;
    type SyncGuard = ();

    fn node(&self) -> &str {
        &self.node
    }
    fn vserver(&self) -> &str {
        VS
    }
    fn data_path(&self) -> failover::placement::DataPath {
        failover::placement::DataPath::Periodic
    }
    fn peers(&self) -> &SimPeers {
        &self.peers
    }
    fn table(&self) -> Option<&SimTable> {
        Some(&self.table)
    }
    fn update(&self, f: impl FnOnce(&mut MigrationStatus)) {
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let was = status.phase.clone();
        f(&mut status);
        if status.phase != was {
            let line = format!("{}: migrate to {}: {}", self.node, status.target, status.phase);
            self.sim.w().note(line);
        }
    }
    async fn tree_bytes(&self) -> Result<u64, String> {
        Ok(TREE_BYTES)
    }
    async fn lock_out_syncs(&self) {}
    async fn copy_tree(
        &self,
        target: &str,
        session: &str,
        _live: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Moved, String> {
        let pass = {
            let mut passes = self.passes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *passes += 1;
            *passes
        };
        self.copy(target, session, 150, 900).await?;
        let moved = TREE_BYTES >> (4 * (pass - 1)).min(60);
        progress(moved);
        Ok(Moved { bytes_sent: moved, files_transferred: 1 + moved / (1 << 20), transferred_bytes: moved })
    }
    async fn copy_changes(
        &self,
        target: &str,
        session: &str,
        _mark: ClockMark,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Moved, String), String> {
        self.copy(target, session, 50, 300).await?;
        progress(1 << 20);
        let moved = Moved { bytes_sent: 1 << 20, files_transferred: 12, transferred_bytes: 1 << 20 };
        Ok((moved, "12 paths changed since the last pre-copy pass".into()))
    }
    async fn conf_for_commit(&self, _target: &str, _session: &str) -> Result<Option<Vec<ConfFile>>, String> {
        // Small: carried in the commit.
        Ok(Some(Vec::new()))
    }
    async fn stop(&self) -> Result<(), String> {
        if !self.sim.unfrozen(self.me).await {
            return Err("this agent stopped".into());
        }
        self.sim.w().stop(self.me, "migrate: stopped for the final pass");
        Ok(())
    }
    async fn start(&self) -> Result<(), String> {
        if !self.sim.unfrozen(self.me).await {
            return Err("this agent stopped".into());
        }
        let mut w = self.sim.w();
        // `vserver NAME start` reads the lease the agent wrote for the keepers: none, no start.
        if w.hosts[self.me].keepers_until.is_none_or(|t| Instant::now() >= t) {
            let line = format!("{}: migrate: the start here refused: this host's lease is over", self.node);
            w.note(line);
            return Err("this host does not hold its lease: the start is refused".into());
        }
        if !w.hosts[self.me].running {
            w.start(self.me, "migrate: runs here again");
        }
        Ok(())
    }
    async fn stay_stopped(&self) {
        let mut w = self.sim.w();
        w.hosts[self.me].local_stopped = true;
        let line = format!("{}: its intent here is now stopped", self.node);
        w.note(line);
    }
    fn placement_back(&self) {
        let mut w = self.sim.w();
        if w.placement.primary != self.node {
            w.placement = w.placement.moved_to(&self.node);
        }
    }
    async fn hand_over(&self, target: &str, _started_unix_ms: u64) -> Vec<String> {
        let mut w = self.sim.w();
        w.placement = self.placement.moved_to(target);
        let host = &mut w.hosts[self.me];
        host.tree = false;
        host.replica = true;
        host.local_stopped = true;
        let line = format!("{}: hands {VS} over to {target}; its tree kept as its replica", self.node);
        w.note(line);
        Vec::new()
    }
}

/// The agent's `migrate::start` on `src`: the checks that need no wait, the vserver held, then the migrate to
/// `target` in a task of the agent; refused with nothing changed.
fn begin_migrate(sim: &Sim, src: usize, target: &str) -> Result<(), String> {
    let mut w = sim.w();
    let node = w.hosts[src].name.clone();
    if target == node {
        return Err(format!("{VS} already runs on {node}"));
    }
    let Some(peer) = w.hosts[src].membership.peers().into_iter().find(|p| p.name == target) else {
        return Err(format!("unknown host {target:?}"));
    };
    if peer.state != PeerState::Alive {
        return Err(format!("target {target} is {:?} (no recent heartbeat); nothing was stopped", peer.state));
    }
    if !w.hosts[src].tree {
        return Err(format!("no vserver {VS} on {node}"));
    }
    if w.placement.primary != node {
        return Err(format!("{VS}'s primary is {}, not this host", w.placement.primary));
    }
    if w.hosts[src].migrating {
        return Err(format!("a migrate of {VS} is already running"));
    }
    w.hosts[src].migrating = true;
    let was_running = w.hosts[src].running;
    // Its intent here (the agent's): running unless a migrate or the table left it stopped here; fenced, or
    // killed by its keepers, it is down but still meant to run.
    let meant_here = !w.hosts[src].local_stopped && (was_running || w.hosts[src].fenced);
    w.stats.migrates += 1;
    w.note(format!("{node}: migrate of {VS} to {target} begins ({})", if was_running { "running" } else { "stopped" }));
    let source = SimSource {
        sim: sim.clone(),
        me: src,
        node,
        peers: SimPeers { sim: sim.clone(), me: src },
        table: SimTable { sim: sim.clone(), me: src },
        placement: w.placement.clone(),
        status: Mutex::new(MigrationStatus {
            phase: "checking".into(),
            target: target.to_string(),
            ..Default::default()
        }),
        passes: Mutex::new(0),
    };
    let (sim, target) = (sim.clone(), target.to_string());
    let task = tokio::spawn(async move {
        let result = failover::migrate::run(&source, &target, was_running, meant_here).await;
        let mut w = sim.w();
        w.hosts[src].migrating = false;
        let node = source.node;
        match result {
            Ok(outage) => {
                w.stats.migrated += 1;
                w.note(format!("{node}: MIGRATE DONE: {VS} on {target}, outage {outage:?}"));
            }
            Err(e) => {
                w.note(format!("{node}: MIGRATE FAILED: {e}"));
                // Stopped by the migrate, its intent here still "running" (its start here again was refused):
                // once the hold is gone, the agent's check loop starts it again, here as after a fence (once
                // the table confirms this host owns it).
                let host = &mut w.hosts[src];
                if was_running && host.tree && !host.running && !host.local_stopped {
                    host.fenced = true;
                }
            }
        }
    });
    w.hosts[src].tasks.push(task.abort_handle());
    Ok(())
}

/// An operator's `vserver web migrate HOST` on the host that runs it (else the host the table names).
fn operator_migrate(sim: &Sim, to: usize) {
    let (src, target) = {
        let mut w = sim.w();
        let owner = w.owner().and_then(|(o, _)| w.index(&o));
        let Some(src) = w.hosts.iter().position(|h| h.running).or(owner) else { return };
        if !w.active(src) {
            let name = w.hosts[src].name.clone();
            w.note(format!("operator: migrate: {name} does not answer"));
            return;
        }
        let to = if to == src { (to + 1) % w.hosts.len() } else { to };
        (src, w.hosts[to].name.clone())
    };
    if let Err(e) = begin_migrate(sim, src, &target) {
        let mut w = sim.w();
        let name = w.hosts[src].name.clone();
        w.note(format!("operator: migrate of {VS} from {name} to {target} refused: {e}"));
    }
}

/// What host `x` knows of `host`: itself alive, a peer as its failure detector says.
fn peer_state(w: &World, x: usize, host: &str) -> Option<PeerState> {
    if w.hosts[x].name == host {
        return Some(PeerState::Alive);
    }
    w.hosts[x].membership.peers().into_iter().find(|p| p.name == host).map(|p| p.state)
}

/// An operator evacuates the host the table names, through the agent of `via` (the next active host if it
/// does not answer), as the agent's `evacuate` does: the mode by what that agent knows of the host (asked
/// again a few times while the host is neither alive nor dead), then a migrate to the first live standby, or
/// the takeover of a dead host. The operator says `--fenced` only when the machine is down.
async fn evacuate(sim: Sim, via: usize) {
    let (host, fenced) = {
        let w = sim.w();
        let Some((owner, _)) = w.owner() else { return };
        let fenced = w.index(&owner).is_some_and(|h| !w.hosts[h].up);
        (owner, fenced)
    };
    let mut asked = 0;
    let (x, mode) = loop {
        asked += 1;
        let decided = {
            let mut w = sim.w();
            let n = w.hosts.len();
            let Some(x) = (0..n).map(|i| (via + i) % n).find(|&i| w.active(i)) else { return };
            let xname = w.hosts[x].name.clone();
            match failover::evacuate::mode(&host, peer_state(&w, x, &host), false, fenced, true) {
                Ok(mode) => {
                    let line = format!("operator: evacuate {host} (fenced: {fenced}) through {xname}: {mode:?}");
                    w.note(line);
                    Some((x, mode))
                }
                Err(e) => {
                    w.note(format!("operator: evacuate {host} through {xname} refused: {e}"));
                    if asked >= 5 || !matches!(e, failover::evacuate::EvacuateError::Undecided(..)) {
                        return;
                    }
                    None
                }
            }
        };
        match decided {
            Some(d) => break d,
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let job = {
        let sim = sim.clone();
        async move {
            let table = SimTable { sim: sim.clone(), me: x };
            for (vserver, _, epoch) in failover::evacuate::evacuation_items(&table.table(), &host) {
                match mode {
                    Mode::Migrate => evacuate_live(&sim, x, &host).await,
                    Mode::Takeover | Mode::Restore => {
                        let coordinator = sim_host(&sim, x);
                        let done = failover::evacuate::take_over_dead(
                            &coordinator,
                            &vserver,
                            &host,
                            epoch,
                            TAKEOVER_TIMEOUT,
                            false,
                        )
                        .await;
                        let mut w = sim.w();
                        let xname = w.hosts[x].name.clone();
                        match done {
                            Ok((to, how)) => {
                                w.stats.evacuated_dead += 1;
                                w.note(format!("{xname}: EVACUATED {vserver} of {host} to {to}: {how}"));
                            }
                            Err(e) => w.note(format!("{xname}: EVACUATION of {vserver} of {host} FAILED: {e}")),
                        }
                    }
                }
            }
        }
    };
    let task = tokio::spawn(job);
    sim.w().hosts[x].tasks.push(task.abort_handle());
}

/// The evacuation of a live host, run by `x`'s agent: the target is the first live standby (as `x` knows
/// them), and the host's agent is asked to migrate the vserver there.
async fn evacuate_live(sim: &Sim, x: usize, host: &str) {
    let (to, src) = {
        let w = sim.w();
        let alive = |h: &str| peer_state(&w, x, h) == Some(PeerState::Alive);
        (failover::evacuate::target(&w.placement, host, alive), w.index(host).expect("a host"))
    };
    let to = match to {
        Ok(to) => to,
        Err(e) => {
            sim.w().note(format!("evacuation of {host}: {e}"));
            return;
        }
    };
    let answer = if src == x {
        begin_migrate(sim, src, &to)
    } else {
        let target = to.clone();
        let handle =
            move |sim: Sim, at: usize| async move { begin_migrate(&sim, at, &target).map_err(|e| refused(409, e)) };
        match sim.rpc(x, src, Duration::from_secs(30), "migrate", handle).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(format!("{host} refused the migrate: {}", refused.reason)),
            Err(e) => Err(format!("cannot ask {host} to migrate it: {e}")),
        }
    };
    if let Err(e) = answer {
        sim.w().note(format!("evacuation of {host}: {e}"));
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
    host.agent_started = Instant::now();
    host.migrating = false;
    host.session = None;
    host.busy = Arc::default();
    let names: Vec<String> = (0..w.hosts.len()).map(|i| format!("h{i}")).collect();
    let host = &mut w.hosts[h];
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
    // Whom it watches and sends heartbeats to: the voters and, if it is one of the vserver's hosts, its
    // partners (every peer, on a voter).
    let voters = w.voter_names();
    let me = w.hosts[h].name.clone();
    let placed: Vec<String> =
        std::iter::once(w.placement.primary.clone()).chain(w.placement.standbys.clone()).collect();
    let partners: Vec<&str> =
        if placed.contains(&me) { placed.iter().map(String::as_str).collect() } else { Vec::new() };
    let watched = failover::membership::watch_set(&me, &voters, partners.iter().copied());
    let heartbeats = failover::membership::heartbeat_set(&me, &voters, partners.iter().copied());
    w.hosts[h].membership.watch(watched.as_ref(), Some(&heartbeats));
    // Down at start although meant to run (this host crashed): held until the table confirms it is ours.
    let host = &w.hosts[h];
    if host.tree && !host.running && !host.local_stopped && !w.intent_stopped() {
        w.hosts[h].fenced = true;
    }
    let name = w.hosts[h].name.clone();
    let line = format!("{name}: agent started, incarnation {}", w.hosts[h].incarnation);
    w.note(line);
    drop(w);
    let coordinator = sim_host(sim, h);
    let mut w = sim.w();
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
    // Its migrate dies with it (the hold with it), and the replica session it kept in memory.
    w.hosts[h].migrating = false;
    w.hosts[h].session = None;
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
        let watched: Vec<usize> = m.watched().iter().filter_map(|(name, _)| w.index(name)).collect();
        let placed = |x: usize| {
            let name = &w.hosts[x].name;
            w.placement.primary == *name || w.placement.standbys.contains(name)
        };
        let strays: Vec<usize> = if w.voters.contains(&h) {
            Vec::new()
        } else {
            watched.iter().copied().filter(|&to| !(w.voters.contains(&to) || placed(h) && placed(to))).collect()
        };
        for to in strays {
            let line = format!(
                "{} sent a beacon to {}: it neither votes nor shares the vserver",
                w.hosts[h].name, w.hosts[to].name
            );
            w.violation(line);
        }
        for to in watched {
            let datagram = m.next_beacon(&w.hosts[to].name);
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
    use failover::lease::{Verdict, Watch};
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The agent's own watch: when it fences, waits (a fresh start has a lease length to win its lease) and
    // recovers. No maintenance here.
    let mut watch = Watch::new(LEASE, true, Instant::now());
    loop {
        every.tick().await;
        if !sim.unfrozen(h).await {
            return;
        }
        let recover = {
            let mut w = sim.w();
            let left = w.lease_left(h);
            match watch.look(left, false, Instant::now()) {
                Verdict::Holds | Verdict::Recover => {
                    // Needing none (a lone voter) is written "unguarded": the keepers never kill.
                    let left = left.unwrap_or(RUN_FOR + SETTLE);
                    w.hosts[h].keepers_until = left.checked_sub(FENCE_LEAD).map(|l| Instant::now() + l);
                    let host = &w.hosts[h];
                    host.fenced && !host.migrating && !host.local_stopped && !w.intent_stopped()
                }
                Verdict::Fence => {
                    if w.hosts[h].running {
                        w.stop(h, "lease over: fenced by the agent");
                        w.hosts[h].fenced = true;
                        w.stats.fences += 1;
                    }
                    false
                }
                Verdict::Wait | Verdict::Covered => false,
            }
        };
        if recover {
            let table = SimTable { sim: sim.clone(), me: h };
            let me = sim.w().hosts[h].name.clone();
            match failover::lease::still_ours(&table, &me, VS).await {
                Some(true) => {
                    let mut w = sim.w();
                    let lease = w.lease_left(h).is_none_or(|l| !l.is_zero());
                    let host = &w.hosts[h];
                    let idle = host.fenced && !host.running && !host.migrating && !host.local_stopped;
                    if w.active(h) && idle && lease && !w.intent_stopped() {
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

/// Every second: a vserver the table gives to another host is not run here, then its copy here is kept aside,
/// and the placement follows the table (the agent's `failover::reconcile`); not while a migrate holds it.
async fn reconcile(sim: Sim, h: usize) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !sim.unfrozen(h).await {
            return;
        }
        let mut w = sim.w();
        let me = w.hosts[h].name.clone();
        if let Some((owner, epoch)) = w.owner().filter(|(o, _)| *o != me) {
            if let Some(moved) = failover::reconcile::placement_after(&w.placement, &owner) {
                w.placement = moved;
            }
            if w.hosts[h].migrating {
                continue;
            }
            if w.hosts[h].running {
                w.stop(h, &format!("the table gives it to {owner}"));
                w.hosts[h].local_stopped = true;
            } else if w.hosts[h].tree {
                let host = &mut w.hosts[h];
                host.tree = false;
                host.local_stopped = true;
                w.note(format!("{me}: its copy kept aside ({owner} owns it since epoch {epoch})"));
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
    /// A migrate holds the vserver at the end (it waits for an answer, or out a time limit).
    migrating: bool,
}

impl Outcome {
    /// Meant to run (no operator's stop is the last word), yet it runs nowhere at the end, once the faults
    /// healed and the cluster had [`SETTLE`] to act.
    fn down(&self) -> bool {
        self.running_on.is_empty() && !self.operator_stopped
    }
}

fn schedule(rng: &mut Rng, hosts: usize) -> Vec<(Duration, Fault)> {
    let mut at = FAULTS_FROM;
    let mut out = Vec::new();
    while at < FAULTS_UNTIL {
        let host = rng.below(hosts as u64) as usize;
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

/// The migrates, evacuations and duplicated requests of a seed, drawn from their own stream (see
/// [`World::xrng`]).
fn schedule_more(rng: &mut Rng, hosts: usize) -> Vec<(Duration, Fault)> {
    let mut at = FAULTS_FROM + rng.ms(0, 3000);
    let mut out = Vec::new();
    while at < FAULTS_UNTIL {
        let fault = match rng.below(3) {
            0 => Fault::Duplicates(100 + rng.below(500), rng.ms(500, 5000)),
            1 => Fault::Migrate(rng.below(hosts as u64) as usize),
            _ => Fault::Evacuate(rng.below(hosts as u64) as usize),
        };
        out.push((at, fault));
        at += rng.ms(1000, 5000);
    }
    out
}

/// The second stream of a seed.
fn xrng(seed: u64) -> Rng {
    Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x6A09_E667_F3BC_C909)
}

/// Runs the cluster of three voters with `faults`, from a seed, for [`RUN_FOR`].
fn run(seed: u64, faults: Option<Vec<(Duration, Fault)>>) -> Outcome {
    run_in(THREE, seed, faults)
}

/// Runs the cluster of `layout` with `faults`, from a seed, for [`RUN_FOR`].
fn run_in(layout: Layout, seed: u64, faults: Option<Vec<(Duration, Fault)>>) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async move {
        let mut rng = Rng(seed);
        let mut xrng = xrng(seed);
        let faults = faults.unwrap_or_else(|| {
            let mut faults = schedule(&mut rng, layout.hosts);
            faults.extend(schedule_more(&mut xrng, layout.hosts));
            faults.sort_by_key(|(at, _)| *at);
            faults
        });
        // The liveness check waits until every fault has healed, then until the vserver runs on its owner (or
        // an operator's stop is the last word), for at most SETTLE.
        let healed = faults.iter().map(|(at, f)| *at + f.lasts()).max().unwrap_or_default();
        let hosts = (0..layout.hosts)
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
                replica: STANDBYS.contains(&format!("h{i}").as_str()),
                running: false,
                fenced: false,
                keepers_until: None,
                agent_started: Instant::now(),
                migrating: false,
                local_stopped: false,
                session: None,
                busy: Arc::default(),
                tasks: Vec::new(),
            })
            .collect();
        let mut owners = BTreeMap::new();
        owners.insert(VS.to_string(), OwnerEntry { owner: Some("h0".into()), epoch: 1 });
        let sim = Sim(Arc::new(Mutex::new(World {
            voters: layout.voters.to_vec(),
            rng,
            xrng,
            hosts,
            cut: BTreeSet::new(),
            loss_per_mille: 0,
            extra_delay: Duration::ZERO,
            lost_commits: false,
            duplicate_per_mille: 0,
            duplicate_promote: None,
            block: None,
            sessions: 0,
            owners,
            events: Vec::new(),
            leader: Some(0),
            leaderless_since: None,
            election_after: Duration::ZERO,
            kill_after_promote: None,
            kill_before_promote: None,
            stop_before_asked_again: false,
            stop_before_promote: false,
            preferred_leader: None,
            placement: Placement { primary: "h0".into(), standbys: STANDBYS.map(String::from).to_vec(), epoch: 0 },
            started: Instant::now(),
            history: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
        })));
        for h in 0..layout.hosts {
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
        let migrating = w.hosts.iter().any(|h| h.migrating);
        for h in 0..layout.hosts {
            stop_agent(&mut w, h);
        }
        let running_on: Vec<String> = w.hosts.iter().filter(|h| h.running).map(|h| h.name.clone()).collect();
        Outcome {
            violations: std::mem::take(&mut w.violations),
            history: std::mem::take(&mut w.history),
            stats: w.stats,
            running_on,
            operator_stopped: w.intent_stopped(),
            migrating,
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
            let pairs: Vec<(usize, usize)> =
                (0..w.hosts.len()).filter(|&o| o != h).map(|o| (o.min(h), o.max(h))).collect();
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
        Fault::StopBeforePromote => w.stop_before_promote = true,
        Fault::PreferLeader(h) => w.preferred_leader = Some(h),
        Fault::Block(hook) => w.block = Some(hook),
        Fault::Operator(stop) => {
            drop(w);
            tokio::spawn(operator(sim.clone(), stop));
        }
        Fault::Duplicates(per_mille, d) => {
            w.duplicate_per_mille = per_mille;
            after(d, Box::new(|sim| sim.w().duplicate_per_mille = 0));
        }
        Fault::DuplicatePromote(late) => w.duplicate_promote = Some(late),
        Fault::Migrate(to) => {
            drop(w);
            operator_migrate(sim, to);
        }
        Fault::Evacuate(via) => {
            drop(w);
            tokio::spawn(evacuate(sim.clone(), via));
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
    // The agent records the intent first, then its supervisor refuses a vserver a migrate holds.
    if w.hosts[h].migrating {
        w.note(format!("operator: {text} refused by {name}: a migrate of {VS} is running"));
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

/// Seeds `first..first + seeds` of `layout`, spread over the machine's cores (at most 8): the stats added up,
/// how many ended running (or stopped by an operator), and how many of the others with a migrate still holding
/// the vserver. Any violation fails with the seed to replay (`replay` says how).
fn run_seeds(layout: Layout, first: u64, seeds: u64, replay: &str) -> (Stats, u64, u64) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut totals = Stats::default();
                    let (mut running_at_end, mut down_migrating) = (0u64, 0u64);
                    for seed in (first + t..first + seeds).step_by(threads as usize) {
                        let o = run_in(layout, seed, None);
                        assert!(o.violations.is_empty(), "{replay}{}", report(seed, &o));
                        totals = totals.add(o.stats);
                        running_at_end += u64::from(!o.down());
                        down_migrating += u64::from(o.down() && o.migrating);
                        if o.down() && std::env::var_os("SIM_DOWN").is_some() {
                            eprintln!(
                                "seed {seed}: down at the end{}",
                                if o.migrating { " (a migrate holds it)" } else { "" }
                            );
                        }
                    }
                    (totals, running_at_end, down_migrating)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker"))
            .fold((Stats::default(), 0, 0), |(a, n, d), (b, m, e)| (a.add(b), n + m, d + e))
    })
}

/// Many seeds, each its own history; any violation fails with the seed to replay.
#[test]
fn the_invariants_hold_under_seeded_faults() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let first: u64 = std::env::var("SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    let started = std::time::Instant::now();
    let totals = run_seeds(THREE, first, seeds, "");
    let (t, running, down_migrating) = totals;
    eprintln!(
        "{seeds} seeds in {:.1} s on {threads} threads: {} starts, {} takeovers, {} fences, {} migrates ({} done), {} \
         evacuations of a dead host, {} requests delivered twice; running (or stopped by an operator) at the end in \
         {running} of {seeds}; of the others, {down_migrating} with a migrate still holding it",
        started.elapsed().as_secs_f64(),
        t.starts,
        t.takeovers,
        t.fences,
        t.migrates,
        t.migrated,
        t.evacuated_dead,
        t.duplicates,
    );
}

/// `SIM_SEED=N`: one seed again, its history printed (the same every time).
#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
        eprintln!("set SIM_SEED=N to replay seed N (SIM_HUB=1: in the hub's six hosts)");
        return;
    };
    let layout = if std::env::var_os("SIM_HUB").is_some() { HUB } else { THREE };
    let o = run_in(layout, seed, None);
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

/// The hub: the owner, a host that does not vote, crashes; its partner h1, which does not vote either, takes it
/// over through the voters (h2, h3, h4), once.
#[test]
fn in_the_hub_a_crashed_owner_that_does_not_vote_is_taken_over_by_its_partner() {
    let o = run_in(HUB, 1, Some(vec![(Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30)))]));
    assert!(o.violations.is_empty(), "{}", report(1, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(1, &o));
    assert_eq!(o.stats.takeovers, 1, "{}", report(1, &o));
}

/// The hub under seeded faults (every fault, on any of its six hosts, voters and not): the invariants hold.
/// `SIM_HUB_SEEDS=N` runs N seeds (default 2,000).
#[test]
fn the_invariants_hold_in_the_hub_under_seeded_faults() {
    let seeds: u64 = std::env::var("SIM_HUB_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let started = std::time::Instant::now();
    let (totals, running, _) = run_seeds(HUB, 1, seeds, "in the hub (replay with SIM_HUB=1): ");
    eprintln!(
        "hub: {seeds} seeds in {:.1} s: {} starts, {} takeovers, {} fences, {} migrates; running (or stopped by an \
         operator) at the end in {running} of {seeds}",
        started.elapsed().as_secs_f64(),
        totals.starts,
        totals.takeovers,
        totals.fences,
        totals.migrates,
    );
    assert!(totals.takeovers > 0, "the hub's seeds take vservers over");
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

/// A vserver on a shared block device: a crash of its host is taken over once the fence hook ran; without a
/// fence hook, never automatically (the old host's kernel may still write to the device).
#[test]
fn a_vserver_on_a_shared_device_is_taken_over_only_behind_a_power_fence() {
    for (hook, seed) in [(true, 21), (false, 22)] {
        let faults = vec![
            (Duration::ZERO, Fault::Block(hook)),
            (Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(60))),
        ];
        let o = run(seed, Some(faults));
        assert!(o.violations.is_empty(), "{}", report(seed, &o));
        if hook {
            assert_eq!(o.running_on, ["h1"], "{}", report(seed, &o));
        } else {
            let said = o.history.iter().any(|l| l.contains("no fence hook is configured"));
            assert!(said, "the coordinator says why it waits: {}", report(seed, &o));
            let elsewhere = |l: &String| ["(takeover)", "h1: started", "h2: started"].iter().any(|w| l.contains(w));
            assert!(!o.history.iter().any(elsewhere), "never started elsewhere: {}", report(seed, &o));
        }
    }
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

/// Whether the history says `what` at or after `from` (virtual ms).
fn said_after(o: &Outcome, from: u64, what: &str) -> bool {
    o.history
        .iter()
        .any(|l| l.contains(what) && l.split_whitespace().next().and_then(|t| t.parse::<u64>().ok()) >= Some(from))
}

/// The first virtual ms at which the history says `what`.
fn when(o: &Outcome, what: &str) -> Option<u64> {
    o.history.iter().find(|l| l.contains(what)).and_then(|l| l.split_whitespace().next()?.parse().ok())
}

/// A migrate whose promote answer is lost: the target started the vserver, but its agent died before the
/// answer left and stays away past the migrate's questions (15 s). The source cannot know whether it runs
/// there: it keeps it stopped (its intent there "stopped"), never a second copy; the target's keepers stop it
/// once its lease is over, and the coordinator takes it over from the silent target.
#[test]
fn a_migrate_whose_promote_answer_is_lost_leaves_the_source_stopped() {
    let faults = vec![
        (Duration::from_secs(3), Fault::KillAfterPromote(1, Duration::from_secs(20))),
        (Duration::from_secs(4), Fault::Migrate(1)),
    ];
    let o = run(21, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(21, &o));
    assert!(o.history.iter().any(|l| l.contains("agent killed right after the promote")), "{}", report(21, &o));
    assert!(
        o.history.iter().any(|l| l.contains("MIGRATE FAILED: no answer from h1 about the start")),
        "{}",
        report(21, &o)
    );
    let stopped = when(&o, "h0: stopped (migrate").expect("the source stopped it");
    assert!(!said_after(&o, stopped, "h0: started"), "{}", report(21, &o));
    assert_eq!(o.running_on, ["h2"], "{}", report(21, &o));
}

/// A migrate's promote delivered a second time long after (a client's retry, a proxy): by then the vserver
/// has moved on (migrated again, from h1 to h2), and h1 holds a complete replica again (its tree, kept). The
/// late copy names an older epoch: h1 refuses it, and no second copy starts.
#[test]
fn a_duplicated_promote_after_the_vserver_moved_on_starts_nothing() {
    let faults = vec![
        (Duration::from_secs(3), Fault::DuplicatePromote(Duration::from_secs(9))),
        (Duration::from_secs(4), Fault::Migrate(1)),
        (Duration::from_secs(8), Fault::Migrate(2)),
    ];
    let o = run(23, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(23, &o));
    let moved_on = when(&o, "MIGRATE DONE: web on h2").expect("migrated on to h2");
    assert!(said_after(&o, moved_on, "h1: promote from h0 delivered again"), "{}", report(23, &o));
    assert_eq!(o.running_on, ["h2"], "{}", report(23, &o));
}

/// The source frozen during its migrate's pre-copy, long enough for its lease to end and the coordinator to
/// take the vserver over (to h1, the first standby). Thawed, the migrate goes on: it must neither record its
/// target (h2) as the owner over h1's ownership and start it there, nor start it again on the source.
#[test]
fn a_migrate_whose_source_was_taken_over_meanwhile_starts_nothing() {
    let faults = vec![
        (Duration::from_secs(4), Fault::Migrate(2)),
        (Duration::from_millis(4300), Fault::Freeze(0, Duration::from_secs(6))),
    ];
    let o = run(25, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(25, &o));
    assert!(o.history.iter().any(|l| l.contains("table: web -> h1 at epoch 2")), "{}", report(25, &o));
    assert!(o.history.iter().any(|l| l.contains("MIGRATE FAILED")), "{}", report(25, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(25, &o));
}

/// The target's agent dies as the migrate's promote arrives, before it acts on it, and is back 5 s later:
/// meanwhile the coordinator takes the vserver over from the silent target (to h2). Asked again, the target
/// says it does not have it: the source records itself as the owner again only from the epoch it recorded
/// (not over h2's), and does not start it again.
#[test]
fn a_refused_migrate_never_takes_back_what_was_taken_over_meanwhile() {
    let faults = vec![
        (Duration::from_secs(3), Fault::KillBeforePromote(1, Duration::from_secs(5))),
        (Duration::from_secs(4), Fault::Migrate(1)),
    ];
    let o = run(27, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(27, &o));
    assert!(o.history.iter().any(|l| l.contains("table: web -> h2 at epoch 3")), "{}", report(27, &o));
    assert!(o.history.iter().any(|l| l.contains("MIGRATE FAILED: start on h1 failed")), "{}", report(27, &o));
    assert_eq!(o.running_on, ["h2"], "{}", report(27, &o));
}

/// An operator's stop while a migrate holds the vserver: the agent records it, then refuses it (the migrate
/// holds the vserver). The migrate reads the log once the target owns it, and leaves it stopped there.
#[test]
fn an_operators_stop_during_a_migrate_is_the_last_word() {
    let faults =
        vec![(Duration::from_secs(4), Fault::Migrate(1)), (Duration::from_millis(4300), Fault::Operator(true))];
    let o = run(29, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(29, &o));
    assert!(o.history.iter().any(|l| l.contains("refused by h0: a migrate of web is running")), "{}", report(29, &o));
    assert!(o.history.iter().any(|l| l.contains("MIGRATE DONE: web on h1, outage None")), "{}", report(29, &o));
    assert!(o.running_on.is_empty() && o.operator_stopped, "{}", report(29, &o));
}

/// An operator's stop recorded after the migrate read the log, before its promote arrives: the target
/// refuses to start it, and the source does not start it again either.
#[test]
fn an_operators_stop_outweighs_a_migrates_promote_on_its_way() {
    let faults = vec![(Duration::from_secs(3), Fault::StopBeforePromote), (Duration::from_secs(4), Fault::Migrate(1))];
    let o = run(31, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(31, &o));
    assert!(o.history.iter().any(|l| l.contains("h1: promote refused")), "{}", report(31, &o));
    assert!(o.running_on.is_empty() && o.operator_stopped, "{}", report(31, &o));
}

/// An evacuation of a host whose machine is down (the operator says it is fenced, and it is): the takeover
/// of a dead host, as the coordinator would, once; it runs on the first standby.
#[test]
fn an_evacuation_of_a_crashed_host_takes_it_over_once() {
    let faults = vec![
        (Duration::from_secs(4), Fault::Crash(0, Duration::from_secs(30))),
        (Duration::from_millis(4500), Fault::Evacuate(2)),
    ];
    let o = run(33, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(33, &o));
    assert!(o.history.iter().any(|l| l.contains("evacuate h0 (fenced: true)")), "{}", report(33, &o));
    assert_eq!(o.stats.takeovers, 1, "{}", report(33, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(33, &o));
}

/// A migrate asked while the vserver is down but meant to run on its owner (its keepers killed it when the
/// owner's lease ran out in a 2 s cut, too short for a takeover): it is started on the target, not moved
/// stopped and left down there.
#[test]
fn a_migrate_of_a_fenced_vserver_starts_it_on_the_target() {
    let faults = vec![
        (Duration::from_secs(4), Fault::Isolate(0, Duration::from_millis(2000))),
        (Duration::from_millis(6300), Fault::Migrate(1)),
    ];
    let o = run(41, Some(faults));
    assert!(o.violations.is_empty(), "{}", report(41, &o));
    assert!(o.history.iter().any(|l| l.contains("begins (stopped)")), "moved while down: {}", report(41, &o));
    assert_eq!(o.stats.takeovers, 0, "{}", report(41, &o));
    assert_eq!(o.running_on, ["h1"], "{}", report(41, &o));
}
