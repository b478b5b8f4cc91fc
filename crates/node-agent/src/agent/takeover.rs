//! Automatic takeover: the coordinator (the ownership table's Raft leader) gives a dead host's vservers to
//! their standbys, and a host that comes back learns what it lost.
//!
//! A host is taken over when the coordinator has not heard it for the takeover timeout (the lease length
//! plus the safety margin) and the voters that answer its probe prove that its lease is over: each voter
//! that has not heard the host for the takeover timeout promises to acknowledge none of its beacons for a
//! while, and once the voters still possibly vouching for it (with the host itself) are fewer than a
//! majority, the host's lease is over and cannot come back before the decision (see `watchdog.rs`). Then, for
//! each vserver the table gives to that host: the optional fence hook runs, the first live standby (in the
//! placement's order) holding a complete replica is found, the table records it as the owner (a
//! compare-and-set from the epoch the dead host held, committed by a majority), and that agent promotes its
//! replica and starts the vserver, with the new epoch (it refuses an older one). The event, with each phase's
//! duration, goes into the cluster's event log, so every host shows it.
//!
//! A host that comes back (after a crash, a partition, a pause) finds the table giving some of its vservers
//! to other hosts: it stops any it still runs, keeps its copy aside (never deleted: `REPLICA_DIR/NAME/aside/`),
//! and takes the new placement, as a standby of the new owner, which resyncs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use isolate::VserverName;
use serde::{Deserialize, Serialize};

use super::events::kinds;
use super::Agent;
use crate::model::{HeldReplica, PeerState, VserverState};

/// How often the coordinator looks for dead hosts.
const EVERY: Duration = Duration::from_millis(100);
/// How long a voter's promise not to acknowledge a probed host lasts.
const PROMISE: Duration = Duration::from_secs(5);
/// Longest wait for one voter's answer to a probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// The event log's text prefix of a takeover record.
const RECORD_PREFIX: &str = "takeover ";
/// The event log's text prefix of a vserver put in error by the relocation limit.
const ERROR_PREFIX: &str = "error ";
/// The event log's text prefix of an operator's clear of a vserver's failure accounting.
const CLEAR_PREFIX: &str = "clear ";
/// How long the coordinator waits before it tries again a dead host whose vservers it could not all take
/// over (no standby with a replica, a refused promote); its death is logged once.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A vserver put in error, or cleared, as the event log keeps it (after [`ERROR_PREFIX`] or [`CLEAR_PREFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRecord {
    /// The vserver.
    pub vserver: String,
    /// Why it is in error (`relocated 3 times in 3600 s`), or the host the operator cleared it on.
    pub text: String,
}

/// The event text putting `vserver` in error for `reason`.
pub fn error_event(vserver: &str, reason: &str) -> String {
    let r = FailureRecord { vserver: vserver.into(), text: reason.into() };
    format!("{ERROR_PREFIX}{}", serde_json::to_string(&r).expect("serializes"))
}

/// The event text of an operator's clear of `vserver` on `host`.
pub fn clear_event(vserver: &str, host: &str) -> String {
    let r = FailureRecord { vserver: vserver.into(), text: host.into() };
    format!("{CLEAR_PREFIX}{}", serde_json::to_string(&r).expect("serializes"))
}

/// A vserver's relocations in the event log since its last clear, within `window_ms` of `now_ms`, and its
/// relocation error (which holds, whatever its age, until a clear).
pub fn relocations(
    events: &[failover::ownership::Event],
    vserver: &str,
    now_ms: u64,
    window_ms: u64,
) -> super::supervisor::Relocations {
    let mut out = super::supervisor::Relocations::default();
    let since = now_ms.saturating_sub(window_ms);
    let failure = |prefix: &str, text: &str| {
        serde_json::from_str::<FailureRecord>(text.strip_prefix(prefix)?).ok().filter(|r| r.vserver == vserver)
    };
    for e in events {
        if TakeoverRecord::parse(&e.text).is_some_and(|r| r.vserver == vserver) {
            if e.at_ms >= since {
                out.at_unix_ms.push(e.at_ms);
            }
        } else if let Some(r) = failure(ERROR_PREFIX, &e.text) {
            out.error = Some(r.text);
        } else if failure(CLEAR_PREFIX, &e.text).is_some() {
            out = super::supervisor::Relocations::default();
        }
    }
    out
}

/// The body of `POST /v1/takeover/probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The host the coordinator believes dead.
    pub host: String,
    /// The silence that makes this voter promise.
    pub silent_ms: u64,
    /// How long the promise lasts.
    pub promise_ms: u64,
}

/// The answer to a probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    /// How long this voter has not heard the host.
    pub silence_ms: u64,
    /// Whether it promised to acknowledge none of the host's beacons for `promise_ms`.
    pub promised: bool,
}

/// One takeover, as the event log keeps it and `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverRecord {
    /// The vserver.
    pub vserver: String,
    /// The host it was taken from.
    pub from: String,
    /// The host it runs on now.
    pub to: String,
    /// The ownership epoch of the new owner.
    pub epoch: u64,
    /// When it was decided, ms since the Unix epoch (the coordinator's clock).
    #[serde(default)]
    pub at_unix_ms: u64,
    /// Each phase and its duration in ms: `detect` (the silence when the coordinator decided), `confirm`
    /// (the voters' probe), `fence_hook`, `commit` (the new owner recorded by a majority), `promote` (the
    /// replica made the running tree), `start` (the vserver started, its addresses announced).
    pub phases_ms: Vec<(String, u64)>,
    /// Whether it was started (it was not when it was stopped on the dead host).
    pub started: bool,
}

impl TakeoverRecord {
    /// From an event's text, if it is a takeover.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text.strip_prefix(RECORD_PREFIX)?).ok()
    }

    /// The sum of the phases.
    pub fn total_ms(&self) -> u64 {
        self.phases_ms.iter().map(|(_, ms)| ms).sum()
    }
}

/// The takeovers in the cluster's event log, oldest first.
pub fn records(agent: &Agent) -> Vec<TakeoverRecord> {
    let Some(own) = agent.ownership.get() else { return Vec::new() };
    own.events()
        .iter()
        .filter_map(|e| {
            let r = TakeoverRecord::parse(&e.text)?;
            // Records written before they carried their time: the event's.
            Some(TakeoverRecord { at_unix_ms: if r.at_unix_ms == 0 { e.at_ms } else { r.at_unix_ms }, ..r })
        })
        .collect()
}

/// A voter's side of the probe.
pub fn probe(agent: &Agent, req: &ProbeRequest) -> Option<ProbeReply> {
    let (silence, promised) = agent.membership.probe(
        &req.host,
        Duration::from_millis(req.silent_ms),
        Duration::from_millis(req.promise_ms.min(60_000)),
    )?;
    if promised {
        tracing::warn!(host = %req.host, silence_ms = silence.as_millis() as u64, "probe: promised to acknowledge \
                       none of its beacons while the coordinator decides");
    }
    Some(ProbeReply { silence_ms: silence.as_millis() as u64, promised })
}

/// The coordinator's loop: while this host leads the ownership table, takes over the vservers of hosts that
/// are dead. Runs until aborted.
pub async fn run(agent: Arc<Agent>) {
    if !agent.config.takeover_enabled() {
        tracing::info!("automatic takeover is off");
        return;
    }
    let timeout = agent.config.takeover_timeout();
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Why each host was not taken over yet, logged when it changes.
    let mut said: std::collections::BTreeMap<String, String> = Default::default();
    // Each silent host found dead: the vservers the table gave it then, and when it was last tried.
    let mut tried: std::collections::BTreeMap<String, (Vec<(String, u64)>, Instant)> = Default::default();
    loop {
        every.tick().await;
        let Some(own) = agent.ownership.get() else { continue };
        if !own.is_leader() {
            continue;
        }
        let table = own.table();
        for peer in agent.membership.peers() {
            // Never heard since this agent started: silent since then.
            let silence =
                Duration::from_millis(peer.last_heard_ms.unwrap_or(agent.started.elapsed().as_millis() as u64));
            if silence < timeout {
                said.remove(&peer.name);
                tried.remove(&peer.name);
                continue;
            }
            let owned: Vec<(String, u64)> = table
                .iter()
                .filter(|(_, e)| e.owner.as_deref() == Some(peer.name.as_str()))
                .map(|(v, e)| (v.clone(), e.epoch))
                .collect();
            if owned.is_empty() {
                continue;
            }
            let again = tried.get(&peer.name).filter(|(was, _)| *was == owned);
            if again.is_some_and(|(_, at)| at.elapsed() < RETRY_AFTER) {
                continue;
            }
            let again = again.is_some();
            let maintenance = own.maintenance();
            if maintenance.covers(&peer.name) || peer.maintenance {
                let why = if maintenance.cluster.is_some() {
                    "the cluster is in maintenance".to_string()
                } else if maintenance.covers(&peer.name) {
                    "it is in maintenance".to_string()
                } else {
                    // It may not have heard that maintenance ended, and then would not fence itself.
                    "its last heartbeat said it is in maintenance (it has not been heard since it ended)".to_string()
                };
                if said.get(&peer.name) != Some(&why) {
                    tracing::warn!(host = %peer.name, silence_ms = silence.as_millis() as u64, "not taken over: {why}");
                    said.insert(peer.name.clone(), why);
                }
                continue;
            }
            let started = Instant::now();
            match confirm_dead(&agent, &peer.name, timeout).await {
                Ok(()) => {}
                Err(why) => {
                    if said.get(&peer.name) != Some(&why) {
                        tracing::warn!(host = %peer.name, "not taken over: {why}");
                        said.insert(peer.name.clone(), why);
                    }
                    continue;
                }
            }
            let confirm = started.elapsed();
            let decided_unix_ms = super::replication::now_ms();
            said.remove(&peer.name);
            tried.insert(peer.name.clone(), (owned.clone(), Instant::now()));
            let names: Vec<&str> = owned.iter().map(|(v, _)| v.as_str()).collect();
            if again {
                // Its death is in the log already: tried again, quietly.
                tracing::info!(host = %peer.name, vservers = owned.len(), "still dead: trying its vservers again");
            } else {
                tracing::warn!(host = %peer.name, silence_ms = silence.as_millis() as u64, vservers = owned.len(),
                               "host dead: its lease is over; taking its vservers over");
                let text = format!(
                    "{} confirmed dead by {} (silent {} ms, its lease over; confirmed in {} ms): taking over {}",
                    peer.name,
                    agent.config.node,
                    silence.as_millis(),
                    confirm.as_millis(),
                    names.join(", ")
                );
                if let Err(e) = own.log_at(kinds::HOST_DEAD, None, &text, decided_unix_ms).await {
                    tracing::warn!(host = %peer.name, error = %e, "the host's death is not in the event log");
                }
            }
            let hook_started = Instant::now();
            if let Err(why) = fence_hook(&agent, &peer.name).await {
                tracing::error!(host = %peer.name, "fence hook failed, no takeover: {why}");
                let text = format!("fence hook for {} failed, no takeover: {why}", peer.name);
                let _ = own.log("fence_hook_failed", None, &text).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            let hook = hook_started.elapsed();
            let mut tasks = tokio::task::JoinSet::new();
            let _busy = InProgress::mark(&peer.name, owned.iter().map(|(v, _)| v.clone()));
            for (name, epoch) in owned {
                let Ok(name) = VserverName::parse(&name) else { continue };
                let phases = vec![
                    ("detect".to_string(), silence.as_millis() as u64),
                    ("confirm".to_string(), confirm.as_millis() as u64),
                    ("fence_hook".to_string(), hook.as_millis() as u64),
                ];
                let (agent, from, was) = (Arc::clone(&agent), peer.name.clone(), last_state(&peer.vservers, &name));
                tasks.spawn(async move {
                    take_over(&agent, &name, &from, epoch, Decided { phases, at_unix_ms: decided_unix_ms }, was).await;
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// The takeovers this coordinator runs now: (vserver, the host it is taken from).
static IN_PROGRESS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Marks takeovers in progress while it lives.
struct InProgress(Vec<(String, String)>);

impl InProgress {
    fn mark(from: &str, vservers: impl Iterator<Item = String>) -> Self {
        let marked: Vec<(String, String)> = vservers.map(|v| (v, from.to_string())).collect();
        IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner()).extend(marked.iter().cloned());
        InProgress(marked)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner()).retain(|m| !self.0.contains(m));
    }
}

/// The takeovers this host runs now as the coordinator: (vserver, from).
pub fn in_progress() -> Vec<(String, String)> {
    IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What the dead host said last about `name` (from its last heartbeat).
fn last_state(vservers: &[crate::model::VserverSummary], name: &VserverName) -> Option<VserverState> {
    vservers.iter().find(|v| v.name == name.as_str()).map(|v| v.state)
}

/// Asks every voter but `host` (this one too) whether it has not heard `host` for `silent`; `Ok` once those
/// that may still vouch for it, with `host` itself, are fewer than a majority, all within the promise.
pub(super) async fn confirm_dead(agent: &Arc<Agent>, host: &str, silent: Duration) -> Result<(), String> {
    let own = agent.ownership.get().ok_or("no ownership table")?;
    let voters = own.metrics().voters;
    if voters.is_empty() {
        return Err("the cluster has no voters yet".into());
    }
    let majority = voters.len() / 2 + 1;
    let asked = Instant::now();
    let req = ProbeRequest {
        host: host.to_string(),
        silent_ms: silent.as_millis() as u64,
        promise_ms: PROMISE.as_millis() as u64,
    };
    let mut answers = tokio::task::JoinSet::new();
    for voter in voters.iter().filter(|v| *v != host) {
        if *voter == agent.config.node {
            let promised = probe(agent, &req).is_some_and(|r| r.promised);
            answers.spawn(async move { promised });
            continue;
        }
        let Some(p) = agent.config.peers.iter().find(|p| p.name == *voter) else { continue };
        let request = agent
            .peer_client
            .post(format!("{}/v1/takeover/probe", p.url.trim_end_matches('/')))
            .bearer_auth(&agent.secret)
            .json(&req)
            .timeout(PROBE_TIMEOUT);
        answers.spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => r.json::<ProbeReply>().await.is_ok_and(|a| a.promised),
                _ => false,
            }
        });
    }
    let others = voters.iter().filter(|v| *v != host).count();
    let (promised, vouching) = tally(answers, others, voters.iter().any(|v| v == host), majority).await;
    if asked.elapsed() >= PROMISE / 2 {
        return Err("the voters answered too slowly".into());
    }
    if vouching >= majority {
        return Err(format!(
            "{promised} of the {others} other voters have not heard it for {} ms; {vouching} may still vouch for \
             it, a majority is {majority}",
            silent.as_millis()
        ));
    }
    Ok(())
}

/// Counts the voters' answers (`true`: promised) as they come, and stops waiting as soon as those that may
/// still vouch for the host (the `others` that have not promised, and the host itself if `host_votes`) are
/// fewer than `majority`: an unreachable or slow minority is not waited for. The answers left are dropped.
/// Returns (promised, still vouching).
async fn tally(
    mut answers: tokio::task::JoinSet<bool>,
    others: usize,
    host_votes: bool,
    majority: usize,
) -> (usize, usize) {
    let mut promised = 0;
    let vouching = |promised: usize| others - promised + usize::from(host_votes);
    while vouching(promised) >= majority {
        match answers.join_next().await {
            Some(Ok(true)) => promised += 1,
            Some(_) => {}
            None => break,
        }
    }
    answers.abort_all();
    (promised, vouching(promised))
}

/// Runs the fence hook, if one is configured, with the dead host's name.
pub(super) async fn fence_hook(agent: &Agent, host: &str) -> Result<(), String> {
    let Some(hook) = &agent.config.takeover.fence_hook else { return Ok(()) };
    let limit = Duration::from_secs(agent.config.takeover.fence_hook_timeout_secs);
    let mut child = tokio::process::Command::new(hook)
        .arg(host)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", hook.display()))?;
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{} {host}: {status}", hook.display())),
        Ok(Err(e)) => Err(format!("{} {host}: {e}", hook.display())),
        Err(_) => Err(format!("{} {host}: still running after {} s", hook.display(), limit.as_secs())),
    }
}

/// What the coordinator decided a takeover on: the phases so far (`detect`, `confirm`, `fence_hook`) and
/// when (ms since the Unix epoch).
pub(super) struct Decided {
    /// The phases so far, named, in ms.
    pub phases: Vec<(String, u64)>,
    /// When the host was confirmed dead.
    pub at_unix_ms: u64,
}

impl Decided {
    /// Decided now, with no phase timed yet.
    pub fn now() -> Self {
        Self { phases: Vec::new(), at_unix_ms: super::replication::now_ms() }
    }
}

/// Takes one vserver of a dead host over: to the first live standby with a complete replica. Started there
/// if it was meant to run: by the last intent the cluster's event log records for it (an operator's start,
/// stop or clear is logged before it is carried out), else by what the dead host said last (`was`).
pub(super) async fn take_over(
    agent: &Arc<Agent>,
    name: &VserverName,
    from: &str,
    epoch: u64,
    decided: Decided,
    was: Option<VserverState>,
) -> Taken {
    let Decided { mut phases, at_unix_ms } = decided;
    let mut epoch = epoch;
    let own = agent.ownership.get().expect("only run with a table");
    let Some(placement) = agent.replication.placement(name) else {
        tracing::error!(vserver = %name, host = %from, "no placement: it has no standby to be taken over by");
        return Taken::No("no placement: it has no standby".into(), false);
    };
    let failures = &agent.config.failures;
    let events = own.events();
    let counted = relocations(&events, name.as_str(), super::replication::now_ms(), failures.window_ms());
    if let Some(why) = &counted.error {
        tracing::debug!(vserver = %name, %from, "in state error ({why}): not taken over until an operator clears it");
        return Taken::No(format!("in state error ({why}) until an operator clears it"), false);
    }
    let recent = counted.at_unix_ms.len();
    if recent >= failures.max_relocate as usize {
        let why = format!("relocated {recent} times in {} s", failures.window_secs);
        tracing::error!(vserver = %name, %from, "{why} (failures.max_relocate = {}): not taken over again; state \
                        error until an operator clears it (vserver {name} clear)", failures.max_relocate);
        // Recorded once: the next round finds the error in the event log.
        if own.epoch(name.as_str()) == epoch {
            let text = error_event(name.as_str(), &why);
            if let Err(e) = own.log(super::events::kinds::RELOCATION_ERROR, Some(name.as_str()), &text).await {
                tracing::warn!(vserver = %name, error = %e, "the error is not in the event log; retried next round");
            }
        }
        return Taken::No(format!("{why} (failures.max_relocate): state error until an operator clears it"), false);
    }
    let start = meant_to_run(&events, name.as_str(), was);
    let alive: Vec<String> =
        agent.membership.peers().into_iter().filter(|p| p.state == PeerState::Alive).map(|p| p.name).collect();
    let me = agent.config.node.clone();
    // Why the last standby tried did not take it, and whether trying again may help.
    let mut last = ("no live standby holds a complete replica".to_string(), true);
    for standby in placement.standbys.iter().filter(|s| *s != from) {
        if *standby != me && !alive.contains(standby) {
            continue;
        }
        match holds_replica(agent, standby, name).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(vserver = %name, %standby, "no complete replica there; trying the next standby");
                last = (format!("{standby} holds no complete replica"), true);
                continue;
            }
            Err(e) => {
                tracing::warn!(vserver = %name, %standby, "cannot ask for its replicas ({e}); trying the next");
                last = (format!("cannot ask {standby} for its replicas ({e})"), true);
                continue;
            }
        }
        let current = own.epoch(name.as_str());
        if current != epoch {
            tracing::info!(vserver = %name, epoch, current, "its ownership changed meanwhile; no takeover");
            return Taken::No(format!("its ownership changed meanwhile (epoch {current}, not {epoch})"), false);
        }
        let committing = Instant::now();
        let new_epoch = match own.take_over(name.as_str(), standby, epoch, from).await {
            Ok((_, e)) => e,
            Err(e @ failover::ownership::OwnershipError::InMaintenance { .. }) => {
                tracing::warn!(vserver = %name, %standby, "no takeover: {e}");
                return Taken::No(e.to_string(), false);
            }
            Err(e) => {
                tracing::warn!(vserver = %name, %standby, "the cluster did not record the new owner: {e}");
                return Taken::No(format!("the cluster did not record the new owner: {e}"), true);
            }
        };
        phases.push(("commit".into(), committing.elapsed().as_millis() as u64));
        tracing::warn!(vserver = %name, %from, to = %standby, epoch = new_epoch, start, "taking over");
        match promote_on(agent, standby, name, from, start, new_epoch).await {
            super::migrate::PromoteOutcome::Running(times) => {
                phases.extend(times.phases());
                let record = TakeoverRecord {
                    vserver: name.to_string(),
                    from: from.to_string(),
                    to: standby.clone(),
                    epoch: new_epoch,
                    at_unix_ms,
                    phases_ms: phases,
                    started: start,
                };
                let text = format!("{RECORD_PREFIX}{}", serde_json::to_string(&record).expect("serializes"));
                tracing::warn!(vserver = %name, %from, to = %standby, total_ms = record.total_ms(), "taken over: {text}");
                // Logged before the placement is sent around: a dead host's share of that waits for a timeout.
                if let Err(e) = own.log_at(kinds::TAKEOVER, Some(name.as_str()), &text, at_unix_ms).await {
                    tracing::warn!(vserver = %name, error = %e, "the takeover is not in the event log");
                }
                let moved = placement.moved_to(standby);
                let warnings = super::migrate::spread_placement(agent, name, &moved).await;
                if !warnings.is_empty() {
                    tracing::warn!(vserver = %name, "after the takeover: {}", warnings.join("; "));
                }
                return Taken::Running(standby.clone());
            }
            super::migrate::PromoteOutcome::Refused(why) => {
                // It said no and put its replica back: the next standby, from the new epoch.
                tracing::error!(vserver = %name, %standby, "takeover refused there: {why}");
                let text = format!("takeover of {name} by {standby} failed: {why}");
                let _ = own.log(kinds::TAKEOVER_FAILED, Some(name.as_str()), &text).await;
                epoch = new_epoch;
                last = (format!("refused by {standby}: {why}"), false);
                phases.retain(|(p, _)| p != "commit");
            }
            super::migrate::PromoteOutcome::Unknown(why) => {
                // No answer: it may run there. Never a second copy: no other standby is tried. The table gives
                // it to that standby now; if that host is dead, it is taken over from it in turn, once its own
                // lease is over.
                tracing::error!(vserver = %name, %standby, "no answer about the takeover there ({why}): it may run \
                                there; it is left to {standby} (taken over from it if it is dead)");
                let text = format!(
                    "takeover of {name} by {standby}: no answer ({why}); {standby} owns it at epoch {new_epoch} and \
                     may run it; if {standby} is dead it is taken over from it in turn"
                );
                let _ = own.log(kinds::TAKEOVER_FAILED, Some(name.as_str()), &text).await;
                return Taken::Unknown(standby.clone());
            }
        }
    }
    tracing::error!(vserver = %name, %from, "not taken over: {}", last.0);
    Taken::No(last.0, last.1)
}

/// What a takeover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Taken {
    /// It runs (or was meant to stay stopped and is owned) on this standby now.
    Running(String),
    /// This standby owns it and may run it: its answer was lost.
    Unknown(String),
    /// Not taken over: why, and whether trying again may help (a peer or the cluster did not answer in time).
    No(String, bool),
}

/// Whether a vserver taken over is to be started: by the last intent the event log records for it (an
/// operator's start, restart, stop or clear, a halt inside, a restart limit reached, an earlier takeover),
/// else (nothing recorded, or only before the log's oldest line) by the state its host said last.
fn meant_to_run(events: &[failover::ownership::Event], vserver: &str, was: Option<VserverState>) -> bool {
    let about = |e: &failover::ownership::Event| e.vserver.as_deref() == Some(vserver);
    let logged = events.iter().fold(None, |last, e| match e.kind() {
        kinds::INTENT if about(e) => intent_of(&e.text).or(last),
        kinds::HALT | kinds::RESTART_GAVE_UP if about(e) => Some(false),
        _ => {
            if let Some(r) = TakeoverRecord::parse(&e.text).filter(|r| r.vserver == vserver) {
                Some(r.started)
            } else if e.text.starts_with(CLEAR_PREFIX)
                && serde_json::from_str::<FailureRecord>(&e.text[CLEAR_PREFIX.len()..])
                    .is_ok_and(|r| r.vserver == vserver)
            {
                Some(true)
            } else {
                last
            }
        }
    });
    logged.unwrap_or(!matches!(was, Some(VserverState::Stopped | VserverState::Error)))
}

/// The event text recording an operator's intent for `vserver`: `running` or `stopped`, and what asked it.
pub fn intent_event(vserver: &str, running: bool, what: &str) -> String {
    format!("{}: {what} of {vserver}", if running { "running" } else { "stopped" })
}

/// The intent an `intent` event's text records.
fn intent_of(text: &str) -> Option<bool> {
    match text.split(':').next()? {
        "running" => Some(true),
        "stopped" => Some(false),
        _ => None,
    }
}

/// Whether `host` (this one or a peer) holds a complete replica of `name`.
async fn holds_replica(agent: &Agent, host: &str, name: &VserverName) -> Result<bool, String> {
    let held: Vec<HeldReplica> = if host == agent.config.node {
        agent.replication.held()
    } else {
        let p = agent.config.peers.iter().find(|p| p.name == host).ok_or("not a peer")?;
        let reply = agent
            .peer_client
            .get(format!("{}/v1/replicas", p.url.trim_end_matches('/')))
            .bearer_auth(&agent.secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !reply.status().is_success() {
            return Err(format!("answered {}", reply.status()));
        }
        reply.json().await.map_err(|e| e.to_string())?
    };
    Ok(held.iter().any(|h| h.vserver == name.as_str()))
}

/// Asks `host` to promote its replica of `name` (and start it) at `epoch`. A lost answer is asked again, and
/// if still lost is `Unknown`, never taken for a refusal.
async fn promote_on(
    agent: &Arc<Agent>,
    host: &str,
    name: &VserverName,
    from: &str,
    start: bool,
    epoch: u64,
) -> super::migrate::PromoteOutcome {
    use super::migrate::PromoteOutcome;
    if host == agent.config.node {
        let req = super::migrate::PromoteRequest { source: from.to_string(), start, epoch: Some(epoch) };
        return match super::migrate::promote(agent, name, req).await {
            Ok((_, times)) => PromoteOutcome::Running(times),
            Err(e) => PromoteOutcome::Refused(e.to_string()),
        };
    }
    let Some(p) = agent.config.peers.iter().find(|p| p.name == host) else {
        return PromoteOutcome::Refused(format!("{host} is not a peer"));
    };
    let base = p.url.trim_end_matches('/');
    // Asked again while a live host would answer: past the takeover timeout, a silent standby is itself
    // taken over once its lease is over.
    let ask_for = agent.config.takeover_timeout();
    super::migrate::promote_on_target(agent, base, name, host, from, (start, Some(epoch)), ask_for).await
}

/// On every host, every second: a vserver the table gives to another host is not run here, its copy here is
/// kept aside, and this host takes the new placement (as a standby of the new owner).
pub async fn reconcile(agent: &Arc<Agent>) {
    let Some(own) = agent.ownership.get() else { return };
    let me = &agent.config.node;
    for (name, entry) in own.table() {
        let Some(owner) = entry.owner else { continue };
        if owner == *me {
            continue;
        }
        let Ok(name) = VserverName::parse(&name) else { continue };
        // The placement follows the table.
        if let Some(p) = agent.replication.placement(&name) {
            if p.primary != owner && (p.standbys.contains(&owner)) {
                let moved = p.moved_to(&owner);
                match agent.replication.record_placement(&name, moved) {
                    Ok(_) => tracing::info!(vserver = %name, %owner, "placement follows the ownership table"),
                    Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record the placement"),
                }
            }
        }
        let dirs = agent.supervisor.host().dirs.clone();
        if !dirs.conf(&name).exists() && !dirs.root(&name).exists() {
            continue;
        }
        // Not while a migrate or a sync of it runs here (a migrate's source gives it up itself).
        let Ok(_held) = agent.replication.vserver_lock(&name).try_lock_owned() else { continue };
        let running = agent.supervisor.get(&name).await.is_ok_and(|v| v.state == VserverState::Running);
        if running {
            tracing::error!(vserver = %name, %owner, epoch = entry.epoch, "runs here, but the cluster gives it to \
                            another host: stopping it here");
            let _ = agent.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
            if let Err(e) = agent.supervisor.stop(&name).await {
                tracing::error!(vserver = %name, error = %e, "cannot stop it");
            }
            continue;
        }
        let _ = agent.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
        let (store, vdir, cdir, n) =
            (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
        let label = format!("epoch{}-{}", entry.epoch, super::replication::now_ms());
        match tokio::task::spawn_blocking(move || store.set_aside(&n, &vdir, &cdir, &label)).await {
            Ok(Ok(path)) => {
                let text = format!(
                    "{me} kept its copy of {name} aside at {} ({owner} owns it since epoch {})",
                    path.display(),
                    entry.epoch
                );
                tracing::warn!("{text}");
                let _ = own.log(kinds::ASIDE, Some(name.as_str()), &text).await;
            }
            Ok(Err(e)) => tracing::error!(vserver = %name, error = %e, "cannot keep this host's copy aside"),
            Err(e) => tracing::error!(vserver = %name, error = %e, "cannot keep this host's copy aside"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, at_ms: u64, text: String) -> failover::ownership::Event {
        serde_json::from_value(serde_json::json!({"seq": seq, "at_ms": at_ms, "host": "h0", "text": text})).unwrap()
    }

    fn takeover(vserver: &str) -> String {
        let r = TakeoverRecord {
            vserver: vserver.into(),
            from: "h0".into(),
            to: "h1".into(),
            epoch: 2,
            at_unix_ms: 0,
            phases_ms: vec![],
            started: true,
        };
        format!("{RECORD_PREFIX}{}", serde_json::to_string(&r).unwrap())
    }

    fn about(seq: u64, kind: &str, vserver: &str, text: String) -> failover::ownership::Event {
        serde_json::from_value(serde_json::json!({
            "seq": seq, "at_ms": seq, "host": "h0", "text": text, "kind": kind, "vserver": vserver
        }))
        .unwrap()
    }

    #[test]
    fn the_last_recorded_intent_decides_whether_a_takeover_starts_it() {
        let running = Some(VserverState::Running);
        let stopped = Some(VserverState::Stopped);
        // Nothing recorded: what the host said last.
        assert!(meant_to_run(&[], "web", running));
        assert!(!meant_to_run(&[], "web", stopped));
        assert!(!meant_to_run(&[], "web", Some(VserverState::Error)));
        assert!(meant_to_run(&[], "web", None));
        // An operator's start just before the host died, which no heartbeat carried: started.
        let started = vec![about(1, kinds::INTENT, "web", intent_event("web", true, "start on h0"))];
        assert!(meant_to_run(&started, "web", stopped));
        // And a stop: not started, whatever the last heartbeat said.
        let mut stop = started.clone();
        stop.push(about(2, kinds::INTENT, "web", intent_event("web", false, "stop on h0")));
        assert!(!meant_to_run(&stop, "web", running));
        assert!(meant_to_run(&stop, "db", running), "another vserver's intent");
        // A restart limit reached, then an operator's clear (an event that names no vserver).
        let mut failed = started.clone();
        failed.push(about(2, kinds::RESTART_GAVE_UP, "web", "web died too often".into()));
        assert!(!meant_to_run(&failed, "web", running));
        failed.push(event(3, 3, clear_event("web", "h0")));
        assert!(meant_to_run(&failed, "web", Some(VserverState::Error)));
        // A halt inside, then an earlier takeover that did not start it, then one that did.
        let mut halted = vec![about(1, kinds::HALT, "web", "web halted itself".into())];
        assert!(!meant_to_run(&halted, "web", running));
        halted.push(event(2, 2, takeover("web")));
        assert!(meant_to_run(&halted, "web", stopped), "the last takeover started it");
        assert_eq!(intent_of("garbage"), None);
    }

    /// The coordinator's probe stops waiting once a majority has promised: a minority voter that never
    /// answers (frozen, or its link cut) costs nothing. Virtual time: the wait for it would show.
    #[tokio::test(start_paused = true)]
    async fn the_probe_does_not_wait_for_a_minority_that_does_not_answer() {
        // Five voters, the dead host among them: three others promise at once, one never answers.
        let mut answers = tokio::task::JoinSet::new();
        for _ in 0..3 {
            answers.spawn(async { true });
        }
        answers.spawn(async {
            tokio::time::sleep(PROBE_TIMEOUT).await;
            false
        });
        let asked = tokio::time::Instant::now();
        let (promised, vouching) = tally(answers, 4, true, 3).await;
        assert_eq!((promised, vouching), (3, 2));
        assert!(asked.elapsed() < PROBE_TIMEOUT, "waited {:?} for the silent voter", asked.elapsed());
        // Too few promise: every answer is waited for, and the host may still be vouched for.
        let mut answers = tokio::task::JoinSet::new();
        answers.spawn(async { true });
        answers.spawn(async { false });
        assert_eq!(tally(answers, 2, true, 2).await, (1, 2));
    }

    #[test]
    fn relocations_count_within_the_window_since_the_last_clear() {
        let events = vec![
            event(1, 1_000, takeover("web")),
            event(2, 50_000, takeover("web")),
            event(3, 60_000, takeover("db")),
            event(4, 70_000, takeover("web")),
            event(5, 80_000, "takeover of web by h2 failed: no".into()),
        ];
        // The window is 40 s back from 90 s: the first is too old.
        let r = relocations(&events, "web", 90_000, 40_000);
        assert_eq!(r.at_unix_ms, vec![50_000, 70_000]);
        assert_eq!(r.error, None);
        assert_eq!(relocations(&events, "db", 90_000, 40_000).at_unix_ms, vec![60_000]);
        // An error holds whatever its age; a clear forgets all before it.
        let mut more = events.clone();
        more.push(event(6, 81_000, error_event("web", "relocated 2 times in 40 s")));
        let r = relocations(&more, "web", 1_000_000, 40_000);
        assert_eq!((r.at_unix_ms.len(), r.error.as_deref()), (0, Some("relocated 2 times in 40 s")));
        assert_eq!(relocations(&more, "db", 90_000, 40_000).error, None, "another vserver's error");
        more.push(event(7, 82_000, clear_event("web", "h1")));
        assert_eq!(relocations(&more, "web", 90_000, 40_000), Default::default());
        more.push(event(8, 83_000, takeover("web")));
        assert_eq!(relocations(&more, "web", 90_000, 40_000).at_unix_ms, vec![83_000]);
    }
}
