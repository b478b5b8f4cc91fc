//! The rules of evacuating and restoring a host: every vserver the cluster gives to the host moves to its best
//! standby, a few at a time; later a restore moves back those the evacuation moved.
//!
//! - A live host: each vserver is migrated to the first live standby of its placement other than the host.
//! - A dead host: each vserver is taken over as the coordinator would ([`take_over_dead`]): the voters confirm
//!   the host's lease is over, the fence hook runs, then the ownership compare-and-set and the promote. With
//!   lease fencing off (and no fence hook) the cluster cannot know the host stopped them: the operator must say
//!   so (`fenced`), having powered it off.
//! - A restore takes, from the cluster's event log, the last evacuation of the host, and moves back what is
//!   still where it put it.
//!
//! One failure does not stop the others; each vserver's outcome is kept in [`Jobs`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::events::kinds;
use crate::ownership::{Event, OwnerEntry};
use crate::peer::{Answer, PeerClient};
use crate::placement::Placement;
use crate::table::Table;
use crate::takeover::{confirm_dead, take_over, Decided, Host, Taken};
use crate::wire::{MigrateRequest, MigrationStatus, PeerState};

/// How many vservers move at once by default.
pub const DEFAULT_PARALLEL: usize = 2;
/// The most that may move at once.
pub const MAX_PARALLEL: usize = 16;
/// How long an evacuation tries again a takeover that failed for want of an answer.
pub const TAKEOVER_RETRIES: Duration = Duration::from_secs(30);
/// The prefix of the event that records an evacuation's moves.
const EVENT_PREFIX: &str = "evacuated ";

/// The body of `POST /v1/hosts/HOST/evacuate` and `.../restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuateRequest {
    /// How many vservers move at once (default 2, at most 16).
    #[serde(default, deserialize_with = "crate::whole::optional")]
    pub parallel: Option<usize>,
    /// For a dead host when lease fencing is off: the operator confirms it is down (powered off).
    #[serde(default)]
    pub fenced: bool,
}

/// One vserver of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The vserver.
    pub vserver: String,
    /// Where it goes (once chosen).
    pub to: Option<String>,
    /// `waiting`, `moving`, `done` or `failed`.
    pub state: String,
    /// What happened, in words (the error of a failure; the outage of a migrate).
    pub detail: Option<String>,
}

/// An evacuation or a restore, running or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The host evacuated or restored.
    pub host: String,
    /// `migrate` (a live host), `takeover` (a dead one) or `restore`.
    pub mode: String,
    /// How many move at once.
    pub parallel: usize,
    /// Each vserver.
    pub items: Vec<Item>,
    /// Whether every item has ended.
    pub finished: bool,
}

/// How the vservers of a job move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Migrated off a live host.
    Migrate,
    /// Taken over from a dead host.
    Takeover,
    /// Migrated back onto the host.
    Restore,
}

impl Mode {
    /// Its name in a [`Job`].
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Migrate => "migrate",
            Mode::Takeover => "takeover",
            Mode::Restore => "restore",
        }
    }
}

/// Why an evacuation or a restore was refused (nothing moved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvacuateError {
    /// The host is no host name: it, and why.
    #[error("{0}")]
    HostName(String),
    /// The host is not one of the cluster's.
    #[error("{0:?} is not a host of this cluster")]
    UnknownHost(String),
    /// `parallel` out of its bounds.
    #[error("parallel must be from 1 to {MAX_PARALLEL}, not {0}")]
    Parallel(usize),
    /// A job of that host runs.
    #[error("an evacuation or restore of {0} is already running")]
    Running(String),
    /// A dead host whose last heartbeat said maintenance.
    #[error(
        "{0}'s last heartbeat said it is in maintenance: it may not have heard that it ended and then does not \
         fence itself; make sure it is down (power it off), then ask again with fenced"
    )]
    MaybeUnfenced(String),
    /// A dead host, without lease fencing or a fence hook, and the operator did not say it is down.
    #[error(
        "{0} is silent, but without lease fencing (or a fence hook) the cluster cannot know it stopped its \
         vservers: make sure it is down (power it off), then ask again with fenced"
    )]
    CannotKnowFenced(String),
    /// The host is neither alive nor dead (suspect, unknown).
    #[error("{0} is {1}: wait until it is alive (to migrate) or dead (to take over)")]
    Undecided(String, String),
    /// This host neither votes nor shares a vserver with the host, so does not hear its heartbeats and cannot
    /// say whether it is alive or dead, or in maintenance: the voters can.
    #[error(
        "this host does not watch {0} (it neither votes nor shares a vserver with it) and cannot tell whether \
         it is alive or dead: ask on a voter ({})",
        .1.join(", ")
    )]
    NotWatched(String, Vec<String>),
    /// A restore onto a host that is not alive.
    #[error("{0} is not alive: a restore moves vservers back onto it")]
    NotAlive(String),
    /// A restore of a host never evacuated.
    #[error("no evacuation of {0} in the cluster's event log")]
    NeverEvacuated(String),
}

impl EvacuateError {
    /// Whether the request itself is malformed (a 400), rather than refused as things stand (a 404 or 409).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, EvacuateError::HostName(_) | EvacuateError::Parallel(_))
    }

    /// Whether the host is not one of the cluster's (a 404).
    pub fn is_unknown(&self) -> bool {
        matches!(self, EvacuateError::UnknownHost(_))
    }
}

/// How many move at once, as asked.
pub fn parallel(req: &EvacuateRequest) -> Result<usize, EvacuateError> {
    match req.parallel.unwrap_or(DEFAULT_PARALLEL) {
        n @ 1..=MAX_PARALLEL => Ok(n),
        n => Err(EvacuateError::Parallel(n)),
    }
}

/// How the vservers of `host` leave it, by what this host knows of it: `state` (this host itself is alive),
/// whether its last heartbeat said maintenance, whether the operator said it is down, and whether the cluster
/// can know a silent host stopped its vservers (lease fencing, or a fence hook).
pub fn mode(
    host: &str,
    state: Option<PeerState>,
    said_maintenance: bool,
    fenced: bool,
    fencing_known: bool,
) -> Result<Mode, EvacuateError> {
    match state {
        Some(PeerState::Alive) => Ok(Mode::Migrate),
        Some(PeerState::Dead) if said_maintenance && !fenced => Err(EvacuateError::MaybeUnfenced(host.into())),
        Some(PeerState::Dead) if !fencing_known && !fenced => Err(EvacuateError::CannotKnowFenced(host.into())),
        Some(PeerState::Dead) => Ok(Mode::Takeover),
        state => {
            let word = serde_json::to_value(state.unwrap_or(PeerState::Unknown)).unwrap_or_default();
            Err(EvacuateError::Undecided(host.into(), word.to_string()))
        }
    }
}

/// What an evacuation of `host` moves: each vserver the table gives it, with its epoch.
pub fn evacuation_items(table: &BTreeMap<String, OwnerEntry>, host: &str) -> Vec<(String, Option<String>, u64)> {
    table.iter().filter(|(_, e)| e.owner.as_deref() == Some(host)).map(|(v, e)| (v.clone(), None, e.epoch)).collect()
}

/// What an evacuation moved, as its event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    host: String,
    moved: Vec<(String, String)>,
}

/// The text of the event that records what an evacuation of `host` moved (vserver, where to).
pub fn record(host: &str, moved: Vec<(String, String)>) -> String {
    let json = serde_json::to_string(&Recorded { host: host.to_string(), moved }).unwrap_or_default();
    format!("{EVENT_PREFIX}{json}")
}

/// An evacuation's event text in words (`None` for any other text): the log keeps it as JSON.
pub fn describe(text: &str) -> Option<String> {
    let r = serde_json::from_str::<Recorded>(text.strip_prefix(EVENT_PREFIX)?).ok()?;
    let moved: Vec<String> = r.moved.iter().map(|(v, to)| format!("{v} to {to}")).collect();
    Some(format!("evacuated {}: {}", r.host, if moved.is_empty() { "nothing moved".into() } else { moved.join(", ") }))
}

/// What a restore of `host` moves back: from its last evacuation in `events`, each vserver still where the
/// evacuation put it (vserver, where it is, its epoch).
pub fn restore_items(
    events: &[Event],
    table: &BTreeMap<String, OwnerEntry>,
    host: &str,
) -> Result<Vec<(String, Option<String>, u64)>, EvacuateError> {
    let last = events
        .iter()
        .rev()
        .filter_map(|e| serde_json::from_str::<Recorded>(e.text.strip_prefix(EVENT_PREFIX)?).ok())
        .find(|r| r.host == host)
        .ok_or_else(|| EvacuateError::NeverEvacuated(host.into()))?;
    Ok(last
        .moved
        .into_iter()
        .filter_map(|(v, to)| {
            let entry = table.get(&v)?;
            (entry.owner.as_deref() == Some(to.as_str())).then_some((v, Some(to), entry.epoch))
        })
        .collect())
}

/// Where a vserver evacuated from `host` goes: the first standby of its placement, other than `host`, that
/// is alive.
pub fn target(placement: &Placement, host: &str, alive: impl Fn(&str) -> bool) -> Result<String, String> {
    placement
        .standbys
        .iter()
        .find(|s| s.as_str() != host && alive(s))
        .cloned()
        .ok_or_else(|| format!("no live standby other than {host} (standbys: {})", placement.standbys.join(", ")))
}

/// A finished migrate's outcome, in the words of a job's item.
pub fn outcome(m: &MigrationStatus) -> Result<String, String> {
    match (&m.error, m.outage_ms) {
        (Some(e), _) => Err(e.clone()),
        (None, Some(ms)) => Ok(format!("migrated, outage {ms} ms")),
        (None, None) => Ok("migrated".into()),
    }
}

/// Takes `vserver` over from the dead `host` as the coordinator would, and says where it went. A host just
/// found dead may not have been silent for the takeover timeout yet: waited for, a while. A peer or the table
/// that does not answer in time (a busy host) is tried again, for [`TAKEOVER_RETRIES`], as long as the table
/// still gives the vserver to the dead host at `epoch`.
pub async fn take_over_dead<H: Host>(
    coordinator: &H,
    vserver: &str,
    host: &str,
    epoch: u64,
    timeout: Duration,
    fenced: bool,
) -> Result<(String, String), String> {
    let table = coordinator.table().ok_or("no ownership table")?;
    let waited = Instant::now();
    loop {
        match confirm_dead(coordinator, host, timeout).await {
            Ok(()) => break,
            Err(why) if waited.elapsed() > timeout * 2 + Duration::from_secs(5) => {
                return Err(format!("{host} is not confirmed dead: {why}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    coordinator.fence_hook(host).await.map_err(|why| format!("fence hook failed: {why}"))?;
    let tried = Instant::now();
    loop {
        let decided = Decided {
            phases: Vec::new(),
            at_unix_ms: coordinator.now_unix_ms(),
            by_coordinator: false,
            power_fenced: fenced || coordinator.has_fence_hook(),
        };
        match take_over(coordinator, vserver, host, epoch, decided, None).await {
            Taken::Running(to) => return Ok((to, "taken over".into())),
            Taken::Unknown(to) => {
                return Ok((to.clone(), format!("taken over: {to} owns it, its answer was lost (it may run there)")))
            }
            Taken::No(why, again) => {
                let same = table.owner(vserver).is_some_and(|(owner, e)| owner == host && e == epoch);
                if !again || !same || tried.elapsed() > TAKEOVER_RETRIES {
                    return Err(format!("not taken over: {why} (see the agent's log)"));
                }
                tracing::warn!(vserver, host, "not taken over yet ({why}); trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The host an evacuation or a restore runs on: the coordinator's view of the cluster ([`Host`]: the table,
/// the placements, the peers as heard, a takeover), its jobs, and its migrates. The agent implements it.
pub trait Runner: Host + Clone {
    /// The routes that ask another host to migrate one of its vservers, and where that migrate is.
    type Migrates: MigratePeers;
    /// The jobs of this host.
    fn jobs(&self) -> &Jobs;
    /// The routes to the other hosts' migrates.
    fn migrates(&self) -> &Self::Migrates;
    /// The silence after which a dead host's vservers may be taken over (the lease length plus the margin),
    /// also when automatic takeover is off.
    fn dead_after(&self) -> Duration;
    /// Starts a migrate of `vserver` from this host to `to` (refused with nothing changed, in words).
    fn migrate_here(&self, vserver: &str, to: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Where this host's migrate of `vserver` is.
    fn migration_here(&self, vserver: &str) -> Option<MigrationStatus>;
}

/// The routes that ask another host to migrate one of its vservers (`POST /v1/vservers/NAME/migrate`) and
/// where that migrate is (`GET .../migration`).
pub trait MigratePeers: Send + Sync {
    /// Asks `host` to migrate `name` to `req.target`.
    fn migrate(
        &self,
        host: &str,
        name: &str,
        req: &MigrateRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<()>> + Send;
    /// Where `host`'s migrate of `name` is.
    fn migration(
        &self,
        host: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Answer<MigrationStatus>> + Send;
}

impl MigratePeers for PeerClient {
    fn migrate(
        &self,
        host: &str,
        name: &str,
        req: &MigrateRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<()>> + Send {
        PeerClient::migrate(self, host, name, req, timeout)
    }
    fn migration(
        &self,
        host: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Answer<MigrationStatus>> + Send {
        PeerClient::migration(self, host, name, timeout)
    }
}

/// Whether `host` is alive as `runner` hears it (itself always is).
fn alive<R: Runner>(runner: &R, host: &str) -> bool {
    host == runner.node() || runner.membership().iter().any(|p| p.name == host && p.alive)
}

/// Runs `host`'s job, begun in [`Jobs::begin`] with `items` (each vserver, where it is for a restore, and its
/// epoch): at most `parallel` at a time, each migrated or taken over by `mode`; an evacuation's moves go to the
/// cluster's event log (where a restore finds them). `fenced`: the operator said the host is down (powered
/// off). Returns once every item has ended.
pub async fn run<R: Runner>(
    runner: R,
    host: String,
    mode: Mode,
    parallel: usize,
    fenced: bool,
    items: Vec<(String, Option<String>, u64)>,
) {
    tracing::warn!(host, mode = mode.as_str(), vservers = items.len(), parallel, "evacuation begins");
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for (vserver, from, epoch) in items {
        let (runner, host, gate) = (runner.clone(), host.clone(), std::sync::Arc::clone(&gate));
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await;
            let jobs = runner.jobs();
            jobs.update(&host, &vserver, |i| i.state = "moving".into());
            let result = match (mode, from) {
                (Mode::Restore, Some(from)) => {
                    move_live(&runner, &vserver, &from, &host).await.map(|d| (host.clone(), d))
                }
                (Mode::Restore, None) => Err("where it is now is not known".to_string()),
                (Mode::Takeover, _) => {
                    take_over_dead(&runner, &vserver, &host, epoch, runner.dead_after(), fenced).await
                }
                (Mode::Migrate, _) => match runner.placement(&vserver) {
                    None => Err("not in the cluster configuration".to_string()),
                    Some(placement) => match target(&placement, &host, |h| alive(&runner, h)) {
                        Ok(to) => move_live(&runner, &vserver, &host, &to).await.map(|d| (to, d)),
                        Err(e) => Err(e),
                    },
                },
            };
            match &result {
                Ok((to, detail)) => jobs.update(&host, &vserver, |i| {
                    i.state = "done".into();
                    i.to = Some(to.clone());
                    i.detail = Some(detail.clone());
                }),
                Err(e) => jobs.update(&host, &vserver, |i| {
                    i.state = "failed".into();
                    i.detail = Some(e.clone());
                }),
            }
            result.ok().map(|(to, _)| (vserver, to))
        });
    }
    let mut moved = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(m)) = done {
            moved.push(m);
        }
    }
    if mode != Mode::Restore && !moved.is_empty() {
        if let Some(table) = runner.table() {
            let text = record(&host, moved);
            if let Err(e) = table.log_at(kinds::EVACUATE, None, &text, runner.now_unix_ms()).await {
                tracing::warn!(host, error = %e, "the evacuation's moves are not in the event log");
            }
        }
    }
    runner.jobs().finish(&host);
    tracing::warn!(host, mode = mode.as_str(), "evacuation ended");
}

/// Migrates `vserver` from `from` to `to` through `from`'s agent (this one's, or a peer's), and waits for the
/// end; the outage in words.
async fn move_live<R: Runner>(runner: &R, vserver: &str, from: &str, to: &str) -> Result<String, String> {
    if from == runner.node() {
        runner.migrate_here(vserver, to).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(m) = runner.migration_here(vserver).filter(|m| m.finished) {
                return outcome(&m);
            }
        }
    }
    let req = MigrateRequest { target: to.to_string() };
    match runner.migrates().migrate(from, vserver, &req, Duration::from_secs(30)).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return Err(format!("{from} refused the migrate ({}): {}", refused.status, refused.reason)),
        Err(e) => return Err(format!("cannot ask {from} to migrate it: {e}")),
    }
    let mut unanswered = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match runner.migrates().migration(from, vserver, Duration::from_secs(5)).await {
            Ok(Ok(m)) => {
                unanswered = 0;
                if m.finished {
                    return outcome(&m);
                }
            }
            _ => {
                unanswered += 1;
                if unanswered > 100 {
                    return Err(format!("{from} stopped answering about the migrate"));
                }
            }
        }
    }
}

/// The last job of each host run through this host.
#[derive(Debug, Default)]
pub struct Jobs(Mutex<BTreeMap<String, Job>>);

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Job>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last evacuation or restore of `host`.
    pub fn get(&self, host: &str) -> Option<Job> {
        self.lock().get(host).cloned()
    }

    /// Records a new job of `host` moving `items` (each waiting); refused while one of that host runs.
    pub fn begin(&self, host: &str, mode: Mode, parallel: usize, items: &[String]) -> Result<Job, EvacuateError> {
        let job = Job {
            host: host.to_string(),
            mode: mode.as_str().to_string(),
            parallel,
            items: items
                .iter()
                .map(|v| Item { vserver: v.clone(), to: None, state: "waiting".into(), detail: None })
                .collect(),
            finished: items.is_empty(),
        };
        let mut all = self.lock();
        if all.get(host).is_some_and(|j| !j.finished) {
            return Err(EvacuateError::Running(host.into()));
        }
        all.insert(host.to_string(), job.clone());
        Ok(job)
    }

    /// Changes one item of `host`'s job.
    pub fn update(&self, host: &str, vserver: &str, f: impl FnOnce(&mut Item)) {
        if let Some(item) = self.lock().get_mut(host).and_then(|j| j.items.iter_mut().find(|i| i.vserver == vserver)) {
            f(item);
        }
    }

    /// Marks `host`'s job ended.
    pub fn finish(&self, host: &str) {
        if let Some(j) = self.lock().get_mut(host) {
            j.finished = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evacuation_is_described_in_words() {
        let text = record("h0", vec![("web".into(), "h1".into()), ("db".into(), "h2".into())]);
        assert_eq!(describe(&text).unwrap(), "evacuated h0: web to h1, db to h2");
        assert_eq!(describe(&record("h0", vec![])).unwrap(), "evacuated h0: nothing moved");
        assert_eq!(describe("evacuated nothing"), None);
    }

    fn entry(owner: &str, epoch: u64) -> OwnerEntry {
        OwnerEntry { owner: Some(owner.into()), epoch }
    }

    fn event(text: String) -> Event {
        Event { seq: 1, at_ms: 0, host: "h9".into(), text, kind: "evacuate".into(), vserver: None }
    }

    #[test]
    fn a_live_host_is_migrated_off_and_a_dead_one_taken_over_only_when_its_fence_is_known() {
        assert_eq!(mode("h1", Some(PeerState::Alive), false, false, false), Ok(Mode::Migrate));
        assert_eq!(mode("h1", Some(PeerState::Dead), false, false, true), Ok(Mode::Takeover));
        assert_eq!(
            mode("h1", Some(PeerState::Dead), false, false, false),
            Err(EvacuateError::CannotKnowFenced("h1".into()))
        );
        assert_eq!(mode("h1", Some(PeerState::Dead), false, true, false), Ok(Mode::Takeover));
        // Its last word was maintenance: it may not fence itself, whatever the cluster's fencing.
        assert_eq!(
            mode("h1", Some(PeerState::Dead), true, false, true),
            Err(EvacuateError::MaybeUnfenced("h1".into()))
        );
        assert_eq!(mode("h1", Some(PeerState::Dead), true, true, true), Ok(Mode::Takeover));
        let undecided = mode("h1", Some(PeerState::Suspect), false, true, true).unwrap_err();
        assert_eq!(
            undecided.to_string(),
            "h1 is \"suspect\": wait until it is alive (to migrate) or dead (to take over)"
        );
        assert!(matches!(mode("h1", None, false, true, true), Err(EvacuateError::Undecided(..))));
    }

    #[test]
    fn parallel_is_bounded() {
        assert_eq!(parallel(&EvacuateRequest::default()), Ok(DEFAULT_PARALLEL));
        assert_eq!(parallel(&EvacuateRequest { parallel: Some(16), fenced: false }), Ok(16));
        for n in [0, 17] {
            let e = parallel(&EvacuateRequest { parallel: Some(n), fenced: false }).unwrap_err();
            assert!(e.is_bad_request());
            assert_eq!(e.to_string(), format!("parallel must be from 1 to 16, not {n}"));
        }
    }

    #[test]
    fn a_restore_moves_back_only_what_is_still_where_the_last_evacuation_put_it() {
        let table: BTreeMap<String, OwnerEntry> =
            [("a".to_string(), entry("h2", 4)), ("b".to_string(), entry("h3", 7)), ("c".to_string(), entry("h2", 2))]
                .into();
        assert_eq!(evacuation_items(&table, "h2"), vec![("a".into(), None, 4), ("c".into(), None, 2)]);
        let events = vec![
            event(record("h1", vec![("a".into(), "h3".into())])),
            // The last evacuation of h1: b has moved on since (to h3, not h2).
            event(record("h1", vec![("a".into(), "h2".into()), ("b".into(), "h2".into())])),
            event(record("h5", vec![("c".into(), "h2".into())])),
        ];
        assert_eq!(restore_items(&events, &table, "h1"), Ok(vec![("a".into(), Some("h2".into()), 4)]));
        assert_eq!(restore_items(&events, &table, "h4"), Err(EvacuateError::NeverEvacuated("h4".into())));
    }

    #[test]
    fn the_target_is_the_first_live_standby_other_than_the_host() {
        let p = Placement { primary: "h1".into(), standbys: vec!["h1".into(), "h2".into(), "h3".into()], epoch: 0 };
        assert_eq!(target(&p, "h1", |h| h != "h2"), Ok("h3".into()));
        assert_eq!(target(&p, "h1", |_| false), Err("no live standby other than h1 (standbys: h1, h2, h3)".into()));
    }

    #[test]
    fn a_second_job_of_a_host_waits_for_the_first_to_end() {
        let jobs = Jobs::default();
        let job = jobs.begin("h1", Mode::Migrate, 2, &["a".into(), "b".into()]).unwrap();
        assert_eq!((job.mode.as_str(), job.items.len(), job.finished), ("migrate", 2, false));
        assert_eq!(jobs.begin("h1", Mode::Migrate, 2, &[]), Err(EvacuateError::Running("h1".into())));
        jobs.update("h1", "b", |i| i.state = "done".into());
        assert_eq!(jobs.get("h1").unwrap().items[1].state, "done");
        jobs.finish("h1");
        assert!(jobs.begin("h1", Mode::Restore, 1, &[]).unwrap().finished);
    }
}
