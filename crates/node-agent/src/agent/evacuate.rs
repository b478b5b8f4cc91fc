//! Evacuate and restore a host: every vserver the cluster gives to it moves to its best standby, a few at a
//! time; later `restore` moves back those an evacuation moved.
//!
//! - A live host (alive, or this one): each vserver is migrated (copy while it runs, stop, copy the rest,
//!   start) to the first live standby of its placement.
//! - A dead host: each vserver is taken over as the coordinator would (the voters confirm the host's lease is
//!   over, then a compare-and-set of the owner, promote, start). Automatic takeover usually did that already;
//!   this is for vservers it left (ping-pong limit, takeover off). With lease fencing off the cluster cannot
//!   know the host stopped them: the operator must say so (`fenced`), having powered it off.
//!
//! One failure does not stop the others; each vserver's outcome is kept, and the job is shown by
//! `GET /v1/hosts/HOST/evacuation` while it runs and after. The moves of an evacuation go into the cluster's
//! event log, where `restore` finds them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::wire::{MigrateRequest, MigrationStatus};
use isolate::VserverName;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::Agent;
use crate::model::PeerState;

/// How many vservers move at once by default.
pub const DEFAULT_PARALLEL: usize = 2;

/// The prefix of the event that records an evacuation's moves.
const EVENT_PREFIX: &str = "evacuated ";

/// The body of `POST /v1/hosts/HOST/evacuate` and `.../restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuateRequest {
    /// How many vservers move at once (default 2, at most 16).
    #[serde(default)]
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

/// The last job of each host on this agent.
static JOBS: Mutex<BTreeMap<String, Job>> = Mutex::new(BTreeMap::new());

fn jobs() -> std::sync::MutexGuard<'static, BTreeMap<String, Job>> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last evacuation or restore of `host` run through this agent.
pub fn job(host: &str) -> Option<Job> {
    jobs().get(host).cloned()
}

fn update(host: &str, vserver: &str, f: impl FnOnce(&mut Item)) {
    if let Some(item) = jobs().get_mut(host).and_then(|j| j.items.iter_mut().find(|i| i.vserver == vserver)) {
        f(item);
    }
}

fn known_host(agent: &Agent, host: &str) -> Result<(), ApiError> {
    if host == agent.config.node || agent.config.peers.iter().any(|p| p.name == host) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{host:?} is not a host of this cluster")))
    }
}

fn peer_state(agent: &Agent, host: &str) -> Option<PeerState> {
    if host == agent.config.node {
        return Some(PeerState::Alive);
    }
    agent.membership.peers().into_iter().find(|p| p.name == host).map(|p| p.state)
}

fn parallel(req: &EvacuateRequest) -> Result<usize, ApiError> {
    match req.parallel.unwrap_or(DEFAULT_PARALLEL) {
        n @ 1..=16 => Ok(n),
        n => Err(ApiError::BadRequest(format!("parallel must be from 1 to 16, not {n}"))),
    }
}

/// Starts evacuating `host`; answers the job as it begins.
pub fn evacuate(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, ApiError> {
    known_host(agent, host)?;
    let parallel = parallel(req)?;
    let own =
        agent.ownership.get().ok_or_else(|| ApiError::Unavailable("the ownership table is not open yet".into()))?;
    let mode = match peer_state(agent, host) {
        Some(PeerState::Alive) => "migrate",
        Some(PeerState::Dead) => {
            let said_covered = agent.membership.peers().iter().any(|p| p.name == host && p.maintenance);
            if said_covered && !req.fenced {
                return Err(ApiError::Conflict(format!(
                    "{host}'s last heartbeat said it is in maintenance: it may not have heard that it ended and then \
                     does not fence itself; make sure it is down (power it off), then ask again with fenced"
                )));
            }
            if !agent.config.quorum_fencing() && !req.fenced && agent.config.takeover.fence_hook.is_none() {
                return Err(ApiError::Conflict(format!(
                    "{host} is silent, but without lease fencing (or a fence hook) the cluster cannot know it \
                     stopped its vservers: make sure it is down (power it off), then ask again with fenced"
                )));
            }
            "takeover"
        }
        state => {
            return Err(ApiError::Conflict(format!(
                "{host} is {}: wait until it is alive (to migrate) or dead (to take over)",
                serde_json::to_value(state.unwrap_or(PeerState::Unknown)).unwrap_or_default()
            )))
        }
    };
    let items: Vec<(String, u64)> =
        own.table().into_iter().filter(|(_, e)| e.owner.as_deref() == Some(host)).map(|(v, e)| (v, e.epoch)).collect();
    begin(agent, host, mode, parallel, items.into_iter().map(|(v, e)| (v, None, e)).collect())
}

/// Starts moving back to `host` what its last evacuation moved away (those still where it put them).
pub fn restore(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, ApiError> {
    known_host(agent, host)?;
    let parallel = parallel(req)?;
    let own =
        agent.ownership.get().ok_or_else(|| ApiError::Unavailable("the ownership table is not open yet".into()))?;
    if peer_state(agent, host) != Some(PeerState::Alive) {
        return Err(ApiError::Conflict(format!("{host} is not alive: a restore moves vservers back onto it")));
    }
    let last = own
        .events()
        .iter()
        .rev()
        .filter_map(|e| serde_json::from_str::<Recorded>(e.text.strip_prefix(EVENT_PREFIX)?).ok())
        .find(|r| r.host == host)
        .ok_or_else(|| ApiError::Conflict(format!("no evacuation of {host} in the cluster's event log")))?;
    let table = own.table();
    let items: Vec<(String, Option<String>, u64)> = last
        .moved
        .into_iter()
        .filter_map(|(v, to)| {
            let entry = table.get(&v)?;
            // Only what is still where the evacuation put it.
            let epoch = entry.epoch;
            (entry.owner.as_deref() == Some(to.as_str())).then_some((v, Some(to), epoch))
        })
        .collect();
    begin(agent, host, "restore", parallel, items)
}

/// What an evacuation moved, as its event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    host: String,
    moved: Vec<(String, String)>,
}

fn begin(
    agent: &Arc<Agent>,
    host: &str,
    mode: &str,
    parallel: usize,
    items: Vec<(String, Option<String>, u64)>,
) -> Result<Job, ApiError> {
    let job = Job {
        host: host.to_string(),
        mode: mode.to_string(),
        parallel,
        items: items
            .iter()
            .map(|(v, _, _)| Item { vserver: v.clone(), to: None, state: "waiting".into(), detail: None })
            .collect(),
        finished: items.is_empty(),
    };
    {
        let mut all = jobs();
        if all.get(host).is_some_and(|j| !j.finished) {
            return Err(ApiError::Conflict(format!("an evacuation or restore of {host} is already running")));
        }
        all.insert(host.to_string(), job.clone());
    }
    tracing::warn!(host, mode, vservers = items.len(), parallel, "evacuation begins");
    let (agent, host, mode) = (Arc::clone(agent), host.to_string(), mode.to_string());
    tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for (vserver, from, epoch) in items {
            let (agent, host, mode, gate) = (Arc::clone(&agent), host.clone(), mode.clone(), Arc::clone(&gate));
            tasks.spawn(async move {
                let _turn = gate.acquire_owned().await;
                update(&host, &vserver, |i| i.state = "moving".into());
                let result = match mode.as_str() {
                    "restore" => {
                        let from = from.expect("a restore knows where each vserver is");
                        move_live(&agent, &vserver, &from, &host).await.map(|d| (host.clone(), d))
                    }
                    "takeover" => take_over(&agent, &vserver, &host, epoch).await,
                    _ => match target(&agent, &vserver, &host) {
                        Ok(to) => move_live(&agent, &vserver, &host, &to).await.map(|d| (to, d)),
                        Err(e) => Err(e),
                    },
                };
                match &result {
                    Ok((to, detail)) => update(&host, &vserver, |i| {
                        i.state = "done".into();
                        i.to = Some(to.clone());
                        i.detail = Some(detail.clone());
                    }),
                    Err(e) => update(&host, &vserver, |i| {
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
        if mode != "restore" && !moved.is_empty() {
            let record = Recorded { host: host.clone(), moved };
            if let (Some(own), Ok(json)) = (agent.ownership.get(), serde_json::to_string(&record)) {
                let _ = own.log(super::events::kinds::EVACUATE, None, &format!("{EVENT_PREFIX}{json}")).await;
            }
        }
        if let Some(j) = jobs().get_mut(&host) {
            j.finished = true;
        }
        tracing::warn!(host, mode, "evacuation ended");
    });
    Ok(job)
}

/// The first live standby of the vserver's placement other than `host`.
fn target(agent: &Agent, vserver: &str, host: &str) -> Result<String, String> {
    let name = VserverName::parse(vserver).map_err(|e| e.to_string())?;
    let placement = agent.replication.placement(&name).ok_or("not in the cluster configuration")?;
    placement
        .standbys
        .iter()
        .find(|s| s.as_str() != host && peer_state(agent, s) == Some(PeerState::Alive))
        .cloned()
        .ok_or_else(|| format!("no live standby other than {host} (standbys: {})", placement.standbys.join(", ")))
}

/// Migrates `vserver` from `from` to `to` through `from`'s agent, and waits for the end; the outage in words.
async fn move_live(agent: &Arc<Agent>, vserver: &str, from: &str, to: &str) -> Result<String, String> {
    let name = VserverName::parse(vserver).map_err(|e| e.to_string())?;
    if from == agent.config.node {
        super::migrate::start(agent, &name, MigrateRequest { target: to.to_string() })
            .await
            .map_err(|e| e.to_string())?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(m) = agent.migrations.get(&name).filter(|m| m.finished) {
                return outcome(&m);
            }
        }
    }
    let req = MigrateRequest { target: to.to_string() };
    match agent.peers.migrate(from, vserver, &req, Duration::from_secs(30)).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return Err(format!("{from} refused the migrate ({}): {}", refused.status, refused.reason)),
        Err(e) => return Err(format!("cannot ask {from} to migrate it: {e}")),
    }
    let mut unanswered = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match agent.peers.migration(from, vserver, Duration::from_secs(5)).await {
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

fn outcome(m: &MigrationStatus) -> Result<String, String> {
    match (&m.error, m.outage_ms) {
        (Some(e), _) => Err(e.clone()),
        (None, Some(ms)) => Ok(format!("migrated, outage {ms} ms")),
        (None, None) => Ok("migrated".into()),
    }
}

/// How long an evacuation tries again a takeover that failed for want of an answer.
const TAKEOVER_RETRIES: Duration = Duration::from_secs(30);

/// Takes `vserver` over from the dead `host` as the coordinator would, and says where it went.
async fn take_over(agent: &Arc<Agent>, vserver: &str, host: &str, epoch: u64) -> Result<(String, String), String> {
    use failover::takeover::{confirm_dead, take_over, Decided, Host, Taken};
    let coordinator = super::takeover::AgentHost(Arc::clone(agent));
    VserverName::parse(vserver).map_err(|e| e.to_string())?;
    let own = agent.ownership.get().ok_or("no ownership table")?;
    // A host just found dead may not have been silent for the takeover timeout yet: wait for that, a while.
    let timeout = agent.config.takeover_timeout();
    let waited = std::time::Instant::now();
    loop {
        match confirm_dead(&coordinator, host, timeout).await {
            Ok(()) => break,
            Err(why) if waited.elapsed() > timeout * 2 + Duration::from_secs(5) => {
                return Err(format!("{host} is not confirmed dead: {why}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    coordinator.fence_hook(host).await.map_err(|why| format!("fence hook failed: {why}"))?;
    // A peer or the cluster that does not answer in time (a busy host) is tried again, for a while, as long as
    // the table still gives the vserver to the dead host at the same epoch.
    let tried = std::time::Instant::now();
    loop {
        let decided = Decided { phases: Vec::new(), at_unix_ms: coordinator.now_unix_ms() };
        let taken = take_over(&coordinator, vserver, host, epoch, decided, None).await;
        match taken {
            Taken::Running(to) => return Ok((to, "taken over".into())),
            Taken::Unknown(to) => {
                return Ok((to.clone(), format!("taken over: {to} owns it, its answer was lost (it may run there)")))
            }
            Taken::No(why, again) => {
                let same = own.owner(vserver).is_some_and(|(owner, e)| owner == host && e == epoch);
                if !again || !same || tried.elapsed() > TAKEOVER_RETRIES {
                    return Err(format!("not taken over: {why} (see the agent's log)"));
                }
                tracing::warn!(vserver, host, "not taken over yet ({why}); trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
