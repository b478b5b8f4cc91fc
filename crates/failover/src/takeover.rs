//! Automatic takeover: the coordinator (the ownership table's leader) gives a dead host's vservers to their
//! standbys.
//!
//! A host is taken over when the coordinator has not heard it for the takeover timeout (the lease length
//! plus the safety margin) and the voters that answer its probe prove that its lease is over: each voter
//! that has not heard the host for the takeover timeout promises to acknowledge none of its beacons for a
//! while, and once the voters still possibly vouching for it (with the host itself) are fewer than a
//! majority, the host's lease is over and cannot come back before the decision. Then, for each vserver the
//! table gives to that host: the optional fence hook runs, the first live standby (in the placement's order)
//! holding a complete replica is found, the table records it as the owner (a compare-and-set from the epoch
//! the dead host held, committed by a majority), and that host promotes its replica and starts the vserver,
//! with the new epoch (it refuses an older one). The event, with each phase's duration, goes into the
//! cluster's event log, so every host shows it.
//!
//! This module decides and drives; it reaches this host through [`Host`], the other hosts through
//! [`Peers`], and the table through [`Table`], so the same code runs in an agent and in the simulator.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::events::{error_event, kinds, meant_to_run, relocations, TakeoverRecord};
use crate::ownership::OwnershipError;
use crate::peer::Peers;
use crate::placement::Placement;
use crate::promote::PromoteOutcome;
use crate::table::Table;
use crate::wire::{HeldReplica, ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes, VserverState};

/// How often the coordinator looks for dead hosts.
pub const EVERY: Duration = Duration::from_millis(100);
/// How often the coordinator looks for vservers owned by a live host that does not run them (see
/// [`ask_again`]): it asks their promotes again only after [`RETRY_AFTER`], so looking ten times a second, which
/// copied the table and every peer's vservers each time, bought nothing.
const OWED_EVERY: Duration = Duration::from_secs(1);
/// How long a voter's promise not to acknowledge a probed host lasts.
pub const PROMISE: Duration = Duration::from_secs(5);
/// Longest wait for one voter's answer to a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long the coordinator waits before it tries again a dead host whose vservers it could not all take
/// over (no standby with a replica, a refused promote); its death is logged once. Also how long a vserver
/// may be owned by a live host that does not run it, although it is meant to run, before its promote is asked
/// again (see [`ask_again`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long the fence hook may fail before the coordinator tries the host again.
const HOOK_RETRY: Duration = Duration::from_secs(5);

/// What this host tells the coordinator of a peer, from the heartbeats it hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Its name.
    pub name: String,
    /// How long it has not been heard (since this host started, if never).
    pub silence: Duration,
    /// Heard within the suspicion threshold.
    pub alive: bool,
    /// Its last heartbeat said it is in maintenance.
    pub maintenance: bool,
    /// What its last heartbeat said of each of its vservers.
    pub vservers: BTreeMap<String, VserverState>,
}

impl PeerView {
    /// A peer as the membership's status gives it; one never heard is silent for `since_start`, this host's run
    /// so far.
    pub fn from_status(p: crate::wire::PeerStatus, since_start: Duration) -> Self {
        Self {
            silence: p.last_heard_ms.map_or(since_start, Duration::from_millis),
            alive: p.state == crate::wire::PeerState::Alive,
            maintenance: p.maintenance,
            vservers: p.vservers.iter().map(|v| (v.name.clone(), v.state)).collect(),
            name: p.name,
        }
    }
}

/// The failure accounting that limits relocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Relocations within the window after which a vserver is put in error instead of taken over.
    pub max_relocate: u32,
    /// The window, seconds.
    pub window_secs: u64,
}

/// This host, as the coordinator and a takeover use it. The agent implements it; so does the simulator.
pub trait Host: Send + Sync + 'static {
    /// The ownership table.
    type Table: Table;
    /// The other hosts.
    type Peers: Peers + Clone;
    /// This host's name.
    fn node(&self) -> &str;
    /// Its member of the ownership table, once open.
    fn table(&self) -> Option<&Self::Table>;
    /// The client of the other hosts.
    fn peers(&self) -> &Self::Peers;
    /// The silence after which a host may be taken over (the lease length plus the safety margin); `None`
    /// when automatic takeover is off.
    fn takeover_timeout(&self) -> Option<Duration>;
    /// The relocation limit.
    fn limits(&self) -> Limits;
    /// The peers, as heard.
    fn membership(&self) -> Vec<PeerView>;
    /// The peers not heard for at least `at_least`, as [`Host::membership`] gives them: the coordinator looks
    /// for them every [`EVERY`], so only they are copied.
    fn silent(&self, at_least: Duration) -> Vec<PeerView>;
    /// The voter's side of a probe, on this host.
    fn probe(&self, req: &ProbeRequest) -> Option<ProbeReply>;
    /// The complete replicas this host holds.
    fn held(&self) -> Vec<HeldReplica>;
    /// `name`'s placement, as this host has it.
    fn placement(&self, name: &str) -> Option<Placement>;
    /// What `name` is on this host, `None` when it has no such vserver (it may hold a replica of it).
    fn vserver_state(&self, name: &str) -> Option<VserverState>;
    /// Promotes this host's replica of `name` and starts it if asked (the receiving side of a takeover).
    fn promote(&self, name: &str, req: PromoteRequest) -> impl Future<Output = Result<PromoteTimes, String>> + Send;
    /// Runs the fence hook, if one is configured, against `host`.
    fn fence_hook(&self, host: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether a fence hook is configured: once it ran, the dead host is certainly stopped (powered off).
    fn has_fence_hook(&self) -> bool;
    /// Whether `name` may be started elsewhere only once its old owner is certainly stopped (its tree is on a
    /// shared block device, which a host that only lost its lease may still write to).
    fn needs_power_fence(&self, name: &str) -> bool;
    /// Records `name`'s new placement here and sends it to the hosts it names; what did not work.
    fn spread_placement(&self, name: &str, placement: &Placement) -> impl Future<Output = Vec<String>> + Send;
    /// The takeovers this host runs now as the coordinator.
    fn busy(&self) -> &Busy;
    /// The wall clock, ms since the Unix epoch (event stamps and the failure window).
    fn now_unix_ms(&self) -> u64;
}

/// The takeovers a coordinator runs now: (vserver, the host it is taken from).
#[derive(Debug, Default)]
pub struct Busy(Mutex<Vec<(String, String)>>);

impl Busy {
    /// The takeovers under way.
    pub fn list(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn mark<'a>(&'a self, from: &str, vservers: impl Iterator<Item = String>) -> Marked<'a> {
        let marked: Vec<(String, String)> = vservers.map(|v| (v, from.to_string())).collect();
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(marked.iter().cloned());
        Marked(self, marked)
    }
}

/// Takeovers marked in progress while it lives.
struct Marked<'a>(&'a Busy, Vec<(String, String)>);

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        self.0 .0.lock().unwrap_or_else(PoisonError::into_inner).retain(|m| !self.1.contains(m));
    }
}

/// The coordinator's loop: while this host leads the ownership table, takes over the vservers of hosts that
/// are dead. Runs until aborted.
pub async fn run<H: Host + Clone>(host: H) {
    let Some(timeout) = host.takeover_timeout() else {
        tracing::info!("automatic takeover is off");
        return;
    };
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Why each host was not taken over yet, logged when it changes.
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    // Each silent host found dead: the vservers the table gave it then, and when it was last tried.
    let mut tried: BTreeMap<String, (Vec<(String, u64)>, Instant)> = BTreeMap::new();
    // The vservers owned by a live host that does not run them, and their promotes asked again.
    let mut owed = Owed::default();
    // When those were last looked for.
    let mut owed_looked: Option<Instant> = None;
    loop {
        every.tick().await;
        let Some(own) = host.table() else { continue };
        if !own.is_leader() {
            owed = Owed::default();
            owed_looked = None;
            continue;
        }
        let silent = host.silent(timeout);
        // A host heard again is news again when it falls silent the next time.
        said.retain(|name, _| silent.iter().any(|p| p.name == *name));
        tried.retain(|name, _| silent.iter().any(|p| p.name == *name));
        if owed_looked.is_none_or(|at| at.elapsed() >= OWED_EVERY) {
            owed_looked = Some(Instant::now());
            ask_again(&host, &own.table(), &host.membership(), &mut owed);
        }
        for peer in silent {
            let silence = peer.silence;
            // Only its entries: a host that stays silent owning nothing (powered off for a repair, its vservers
            // moved) costs no copy of the table ten times a second.
            let owned = own.owned_by(&peer.name);
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
            if let Err(why) = confirm_dead(&host, &peer.name, timeout).await {
                if said.get(&peer.name) != Some(&why) {
                    tracing::warn!(host = %peer.name, "not taken over: {why}");
                    said.insert(peer.name.clone(), why);
                }
                continue;
            }
            let confirm = started.elapsed();
            let decided_unix_ms = host.now_unix_ms();
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
                    host.node(),
                    silence.as_millis(),
                    confirm.as_millis(),
                    names.join(", ")
                );
                if let Err(e) = own.log_at(kinds::HOST_DEAD, None, &text, decided_unix_ms).await {
                    tracing::warn!(host = %peer.name, error = %e, "the host's death is not in the event log");
                }
            }
            let hook_started = Instant::now();
            if let Err(why) = host.fence_hook(&peer.name).await {
                tracing::error!(host = %peer.name, "fence hook failed, no takeover: {why}");
                let text = format!("fence hook for {} failed, no takeover: {why}", peer.name);
                let _ = own.log_at("fence_hook_failed", None, &text, host.now_unix_ms()).await;
                tokio::time::sleep(HOOK_RETRY).await;
                continue;
            }
            let hook = hook_started.elapsed();
            let power_fenced = host.has_fence_hook();
            let (owned, waiting): (Vec<_>, Vec<_>) =
                owned.into_iter().partition(|(v, _)| power_fenced || !host.needs_power_fence(v));
            for (name, _) in waiting.iter().filter(|_| !again) {
                let text = unfenced_block(name, &peer.name);
                tracing::error!(vserver = %name, host = %peer.name, "not taken over: {text}");
                let _ = own.log_at(kinds::TAKEOVER_FAILED, Some(name), &text, host.now_unix_ms()).await;
            }
            let _busy = host.busy().mark(&peer.name, owned.iter().map(|(v, _)| v.clone()));
            let mut tasks = tokio::task::JoinSet::new();
            for (name, epoch) in owned {
                let phases = vec![
                    ("detect".to_string(), silence.as_millis() as u64),
                    ("confirm".to_string(), confirm.as_millis() as u64),
                    ("fence_hook".to_string(), hook.as_millis() as u64),
                ];
                let (host, from, was) = (host.clone(), peer.name.clone(), peer.vservers.get(&name).copied());
                tasks.spawn(async move {
                    take_over(
                        &host,
                        &name,
                        &from,
                        epoch,
                        Decided { phases, at_unix_ms: decided_unix_ms, by_coordinator: true, power_fenced },
                        was,
                    )
                    .await;
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// Asks every voter but `dead` (this one too) whether it has not heard `dead` for `silent`; `Ok` once those
/// that may still vouch for it, with `dead` itself, are fewer than a majority, all within the promise.
pub async fn confirm_dead<H: Host>(host: &H, dead: &str, silent: Duration) -> Result<(), String> {
    let own = host.table().ok_or("no ownership table")?;
    let voters = own.voters();
    if voters.is_empty() {
        return Err("the cluster has no voters yet".into());
    }
    let majority = voters.len() / 2 + 1;
    let asked = Instant::now();
    let req = ProbeRequest {
        host: dead.to_string(),
        silent_ms: silent.as_millis() as u64,
        promise_ms: PROMISE.as_millis() as u64,
    };
    let mut answers = tokio::task::JoinSet::new();
    for voter in voters.iter().filter(|v| *v != dead) {
        if voter == host.node() {
            let promised = host.probe(&req).is_some_and(|r| r.promised);
            answers.spawn(async move { promised });
            continue;
        }
        if !host.peers().knows(voter) {
            continue;
        }
        let (peers, voter, req) = (host.peers().clone(), voter.clone(), req.clone());
        answers.spawn(async move {
            // A voter that said no, or did not answer, may still vouch for the host.
            matches!(peers.probe(&voter, &req, PROBE_TIMEOUT).await, Ok(Ok(ProbeReply { promised: true, .. })))
        });
    }
    let others = voters.iter().filter(|v| *v != dead).count();
    let (promised, vouching) = tally(answers, others, voters.iter().any(|v| v == dead), majority).await;
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

/// Why a vserver on a shared block device is not taken over from `from` yet.
pub fn unfenced_block(name: &str, from: &str) -> String {
    format!(
        "{name} is on a shared block device and no fence hook is configured: it is started elsewhere only once \
         {from} is certainly stopped; power {from} off, then `vserver-agent evacuate {from} --fenced`"
    )
}

/// What the coordinator decided a takeover on: the phases so far (`detect`, `confirm`, `fence_hook`) and
/// when (ms since the Unix epoch).
#[derive(Debug, Clone)]
pub struct Decided {
    /// The phases so far, named, in ms.
    pub phases: Vec<(String, u64)>,
    /// When the host was confirmed dead.
    pub at_unix_ms: u64,
    /// Decided by the coordinator's own watch: once deposed it records nothing (the new coordinator decides
    /// again). An operator's evacuation, run from any host, is not.
    pub by_coordinator: bool,
    /// The dead host is certainly stopped: the fence hook ran against it, or an operator said it is down.
    /// Without it, a vserver that needs that ([`Host::needs_power_fence`]) is not taken over.
    pub power_fenced: bool,
}

/// What a takeover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// It runs (or was meant to stay stopped and is owned) on this standby now.
    Running(String),
    /// This standby owns it and may run it: its answer was lost.
    Unknown(String),
    /// Not taken over: why, and whether trying again may help (a peer or the cluster did not answer in time).
    No(String, bool),
}

/// Takes one vserver of a dead host over: to the first live standby with a complete replica. Started there
/// if it was meant to run: by the last intent the cluster's event log records for it (an operator's start,
/// stop or clear is logged before it is carried out), else by what the dead host said last (`was`).
pub async fn take_over<H: Host>(
    host: &H,
    name: &str,
    from: &str,
    epoch: u64,
    decided: Decided,
    was: Option<VserverState>,
) -> Taken {
    let Decided { mut phases, at_unix_ms, by_coordinator, power_fenced } = decided;
    let mut epoch = epoch;
    let Some(own) = host.table() else { return Taken::No("no ownership table".into(), true) };
    if host.needs_power_fence(name) && !power_fenced {
        return Taken::No(unfenced_block(name, from), false);
    }
    let Some(placement) = host.placement(name) else {
        tracing::error!(vserver = %name, host = %from, "no placement: it has no standby to be taken over by");
        return Taken::No("no placement: it has no standby".into(), false);
    };
    let limits = host.limits();
    let events = own.events();
    let counted = relocations(&events, name, host.now_unix_ms(), limits.window_secs * 1000);
    if let Some(why) = &counted.error {
        tracing::debug!(vserver = %name, %from, "in state error ({why}): not taken over until an operator clears it");
        return Taken::No(format!("in state error ({why}) until an operator clears it"), false);
    }
    let recent = counted.at_unix_ms.len();
    if recent >= limits.max_relocate as usize {
        let why = format!("relocated {recent} times in {} s", limits.window_secs);
        tracing::error!(vserver = %name, %from, "{why} (failures.max_relocate = {}): not taken over again; state \
                        error until an operator clears it (vserver {name} clear)", limits.max_relocate);
        // Recorded once: the next round finds the error in the event log.
        if own.epoch(name) == epoch {
            let text = error_event(name, &why);
            if let Err(e) = own.log_at(kinds::RELOCATION_ERROR, Some(name), &text, host.now_unix_ms()).await {
                tracing::warn!(vserver = %name, error = %e, "the error is not in the event log; retried next round");
            }
        }
        return Taken::No(format!("{why} (failures.max_relocate): state error until an operator clears it"), false);
    }
    let alive: Vec<String> = host.membership().into_iter().filter(|p| p.alive).map(|p| p.name).collect();
    let me = host.node().to_string();
    // Why the last standby tried did not take it, and whether trying again may help.
    let mut last = ("no live standby holds a complete replica".to_string(), true);
    for standby in placement.standbys.iter().filter(|s| *s != from) {
        if *standby != me && !alive.contains(standby) {
            continue;
        }
        match holds_replica(host, standby, name).await {
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
        let current = own.epoch(name);
        if current != epoch {
            tracing::info!(vserver = %name, epoch, current, "its ownership changed meanwhile; no takeover");
            return Taken::No(format!("its ownership changed meanwhile (epoch {current}, not {epoch})"), false);
        }
        // A coordinator deposed while it decided records nothing: the new one decides again.
        if by_coordinator && !own.is_leader() {
            tracing::info!(vserver = %name, "no longer the coordinator; no takeover");
            return Taken::No("this host is no longer the coordinator".into(), true);
        }
        let committing = Instant::now();
        let new_epoch = match own.take_over(name, standby, epoch, from).await {
            Ok((_, e)) => e,
            Err(e @ OwnershipError::InMaintenance { .. }) => {
                tracing::warn!(vserver = %name, %standby, "no takeover: {e}");
                return Taken::No(e.to_string(), false);
            }
            Err(e) => {
                tracing::warn!(vserver = %name, %standby, "the cluster did not record the new owner: {e}");
                return Taken::No(format!("the cluster did not record the new owner: {e}"), true);
            }
        };
        phases.push(("commit".into(), committing.elapsed().as_millis() as u64));
        // Read once the new owner is committed, not before: an operator's stop recorded while the coordinator
        // was deciding comes before it in the log, and is seen here.
        let start = meant_to_run(&own.events(), name, was);
        tracing::warn!(vserver = %name, %from, to = %standby, epoch = new_epoch, start, "taking over");
        match promote_on(host, standby, name, from, start, new_epoch).await {
            PromoteOutcome::Running(times) => {
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
                let text = record.event_text();
                tracing::warn!(vserver = %name, %from, to = %standby, total_ms = record.total_ms(), "taken over: {text}");
                // Logged before the placement is sent around: a dead host's share of that waits for a timeout.
                if let Err(e) = own.log_at(kinds::TAKEOVER, Some(name), &text, at_unix_ms).await {
                    tracing::warn!(vserver = %name, error = %e, "the takeover is not in the event log");
                }
                let moved = placement.moved_to(standby);
                let warnings = host.spread_placement(name, &moved).await;
                if !warnings.is_empty() {
                    tracing::warn!(vserver = %name, "after the takeover: {}", warnings.join("; "));
                }
                return Taken::Running(standby.clone());
            }
            PromoteOutcome::Refused(why) => {
                // It said no and put its replica back: the next standby, from the new epoch.
                tracing::error!(vserver = %name, %standby, "takeover refused there: {why}");
                let text = format!("takeover of {name} by {standby} failed: {why}");
                let _ = own.log_at(kinds::TAKEOVER_FAILED, Some(name), &text, host.now_unix_ms()).await;
                epoch = new_epoch;
                last = (format!("refused by {standby}: {why}"), false);
                phases.retain(|(p, _)| p != "commit");
            }
            PromoteOutcome::Unknown(why) => {
                // No answer: it may run there. Never a second copy: no other standby is tried. The table gives
                // it to that standby now; if that host is dead, it is taken over from it in turn, once its own
                // lease is over.
                tracing::error!(vserver = %name, %standby, "no answer about the takeover there ({why}): it may run \
                                there; it is left to {standby} (taken over from it if it is dead)");
                let text = format!(
                    "takeover of {name} by {standby}: no answer ({why}); {standby} owns it at epoch {new_epoch} and \
                     may run it; if {standby} is dead it is taken over from it in turn"
                );
                let _ = own.log_at(kinds::TAKEOVER_FAILED, Some(name), &text, host.now_unix_ms()).await;
                return Taken::Unknown(standby.clone());
            }
        }
    }
    tracing::error!(vserver = %name, %from, "not taken over: {}", last.0);
    Taken::No(last.0, last.1)
}

/// Whether `standby` (this host or a peer) holds a complete replica of `name`.
async fn holds_replica<H: Host>(host: &H, standby: &str, name: &str) -> Result<bool, String> {
    let held = if standby == host.node() {
        host.held()
    } else {
        match host.peers().replicas(standby, Duration::from_secs(2)).await {
            Ok(Ok(held)) => held,
            Ok(Err(refused)) => return Err(format!("answered {}", refused.status)),
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok(held.iter().any(|h| h.vserver == name))
}

/// Asks `standby` to promote its replica of `name` (and start it) at `epoch`. A lost answer is asked again,
/// for as long as a live host would answer (past the takeover timeout, a silent standby is itself taken over
/// once its lease is over), and if still lost is `Unknown`, never taken for a refusal.
async fn promote_on<H: Host>(
    host: &H,
    standby: &str,
    name: &str,
    from: &str,
    start: bool,
    epoch: u64,
) -> PromoteOutcome {
    let req = PromoteRequest { source: from.to_string(), start, epoch: Some(epoch), again: false };
    send_promote(host, standby, name, req).await
}

/// Sends `req` to `standby` (this host or a peer); a lost answer is asked again (see [`promote_on`]).
async fn send_promote<H: Host>(host: &H, standby: &str, name: &str, req: PromoteRequest) -> PromoteOutcome {
    if standby == host.node() {
        return match host.promote(name, req).await {
            Ok(times) => PromoteOutcome::Running(times),
            Err(e) => PromoteOutcome::Refused(e),
        };
    }
    let ask_for = host.takeover_timeout().unwrap_or(PROMISE);
    crate::promote::promote_on(host.peers(), standby, name, &req, ask_for).await
}

/// The vservers a coordinator finds owned by a live host that does not run them: since when, at which epoch,
/// and the promotes it asks again (aborted with it).
#[derive(Default)]
struct Owed {
    /// Each such vserver: its epoch, and since when it is seen so (or its promote was last asked again).
    seen: BTreeMap<String, (u64, Instant)>,
    /// The promotes asked again, under way.
    asking: tokio::task::JoinSet<()>,
}

/// A takeover's promote that never ran (the new owner restarted before it acted on it, the request or the
/// owner's lease was lost after the table recorded the new owner) leaves the vserver to a live host that does
/// not run it. Every round, the coordinator notes the vservers the table gives to a live host (itself or a
/// peer heard, not in maintenance) that does not run them (as it says: its heartbeat, or this host's
/// supervisor) and that no takeover of this coordinator handles now; one seen so for [`RETRY_AFTER`] at the
/// same epoch has its promote asked again, at that epoch (see [`promote_owed`]).
fn ask_again<H: Host + Clone>(
    host: &H,
    table: &BTreeMap<String, crate::ownership::OwnerEntry>,
    peers: &[PeerView],
    owed: &mut Owed,
) {
    while owed.asking.try_join_next().is_some() {}
    let Some(own) = host.table() else { return };
    let maintenance = own.maintenance();
    let busy = host.busy().list();
    let me = host.node();
    let down_there = |name: &str, owner: &str| -> bool {
        let state = if owner == me {
            host.vserver_state(name)
        } else {
            match peers.iter().find(|p| p.name == owner) {
                Some(p) if p.alive && !p.maintenance => p.vservers.get(name).copied(),
                _ => return false,
            }
        };
        !matches!(state, Some(VserverState::Running | VserverState::Error | VserverState::Failed))
    };
    let now = Instant::now();
    let mut due = Vec::new();
    let mut seen = BTreeMap::new();
    for (name, entry) in table {
        let Some(owner) = entry.owner.as_deref() else { continue };
        if maintenance.covers(owner) || busy.iter().any(|(v, _)| v == name) || !down_there(name, owner) {
            continue;
        }
        let since = match owed.seen.get(name) {
            Some((epoch, since)) if *epoch == entry.epoch => *since,
            _ => now,
        };
        if now.duration_since(since) >= RETRY_AFTER {
            due.push((name.clone(), owner.to_string(), entry.epoch));
            seen.insert(name.clone(), (entry.epoch, now));
        } else {
            seen.insert(name.clone(), (entry.epoch, since));
        }
    }
    owed.seen = seen;
    if due.is_empty() {
        return;
    }
    // Meant to run, by the cluster's event log: no operator's stop, halt or error since.
    let events = own.events();
    let now_ms = host.now_unix_ms();
    let window_ms = host.limits().window_secs * 1000;
    due.retain(|(name, _, _)| {
        relocations(&events, name, now_ms, window_ms).error.is_none() && meant_to_run(&events, name, None)
    });
    for (name, owner, epoch) in due {
        let host = host.clone();
        owed.asking.spawn(async move {
            promote_owed(&host, &name, &owner, epoch).await;
        });
    }
}

/// Asks `owner` again to promote its replica of `name` and start it, at `epoch`, when it still holds the
/// epoch, holds a complete replica and does not run it (the vserver is meant to run: [`ask_again`] checked).
/// The owner refuses it if an operator's stop is recorded before it acts on it. Once it runs, the takeover is
/// logged and the placement follows, as after a first promote.
async fn promote_owed<H: Host>(host: &H, name: &str, owner: &str, epoch: u64) {
    let Some(own) = host.table() else { return };
    if own.owner(name) != Some((owner.to_string(), epoch)) {
        return;
    }
    match holds_replica(host, owner, name).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(vserver = %name, %owner, "cannot ask for its replicas ({e}); asked again later");
            return;
        }
    }
    if owner != host.node() {
        // Its heartbeat may be late: asked.
        match host.peers().vserver_state(owner, name, Duration::from_secs(3)).await {
            Ok(Ok(VserverState::Stopped)) => {}
            Ok(Err(refused)) if refused.status == reqwest::StatusCode::NOT_FOUND => {}
            _ => return,
        }
    }
    let busy = host.busy();
    if busy.list().iter().any(|(v, _)| v == name)
        || !own.is_leader()
        || own.owner(name) != Some((owner.to_string(), epoch))
    {
        return;
    }
    let from = host.placement(name).map(|p| p.primary).filter(|p| p != owner).unwrap_or_else(|| owner.to_string());
    let _busy = busy.mark(&from, std::iter::once(name.to_string()));
    tracing::warn!(vserver = %name, %owner, epoch, "owned by a live host that does not run it although it is meant \
                   to: its promote asked again");
    let at_unix_ms = host.now_unix_ms();
    let req = PromoteRequest { source: from.clone(), start: true, epoch: Some(epoch), again: true };
    match send_promote(host, owner, name, req).await {
        PromoteOutcome::Running(times) => {
            let record = TakeoverRecord {
                vserver: name.to_string(),
                from: from.clone(),
                to: owner.to_string(),
                epoch,
                at_unix_ms,
                phases_ms: times.phases(),
                started: true,
            };
            let text = record.event_text();
            tracing::warn!(vserver = %name, %owner, "runs after its promote was asked again: {text}");
            if let Err(e) = own.log_at(kinds::TAKEOVER, Some(name), &text, at_unix_ms).await {
                tracing::warn!(vserver = %name, error = %e, "the takeover is not in the event log");
            }
            if let Some(placement) = host.placement(name).filter(|p| p.primary != owner) {
                let warnings = host.spread_placement(name, &placement.moved_to(owner)).await;
                if !warnings.is_empty() {
                    tracing::warn!(vserver = %name, "after the takeover: {}", warnings.join("; "));
                }
            }
        }
        PromoteOutcome::Refused(why) => {
            tracing::warn!(vserver = %name, %owner, "its promote asked again was refused: {why}");
        }
        PromoteOutcome::Unknown(why) => {
            tracing::warn!(vserver = %name, %owner, "no answer to its promote asked again: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
