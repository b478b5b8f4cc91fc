//! This host's vservers under the agent: their intents (kept in `STATE_DIR/intents.json`, written before
//! every start or stop), their observed state, and the restart of one that died on its own.
//!
//! Contexts are made by forking, which must never happen inside this multi-threaded process: starts and
//! stops run the `vserver` command as a child with `VSERVER_NO_AGENT=1`. Status is read in-process
//! ([`Host::status`] only reads files), on the blocking pool. Lifecycle operations on one vserver are
//! serialized (one async mutex per name), so an operator's stop and a restart by the check loop never race.
//!
//! Intent is not failure (DESIGN.md, invariant 4): a vserver stopped by intent is never started; one meant to
//! run that is found dead is restarted with backoff. Each restart is counted, with its time, in
//! `STATE_DIR/failures.json` (so the count survives the agent's restarts); a restart counts for
//! `failures.window_secs`. Found dead again after `failures.max_restart` restarts within the window, it is put
//! in state `error` (`restarted 5 times in 3600 s`) and never restarted until an operator clears it
//! ([`Supervisor::clear`]). Relocations are counted cluster-wide from the event log (`takeover.rs`); a
//! vserver the event log puts in error is not restarted either. Restarting the agent never stops a vserver:
//! running vservers with no recorded intent are adopted.

mod advertise;
mod command;
mod error;
mod policy;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use isolate::VserverName;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::config::{AgentConfig, FailuresConfig, RestartConfig};
use crate::dirs::Dirs;
use crate::lifecycle::{Host, LifecycleError, Observed, Status};
use crate::model::{Intent, VserverState, VserverStatus, VserverSummary};
pub use advertise::{announce, withdraw};
use command::VserverCommand;
pub use error::SupervisorError;
use policy::{decide, note_observation, observed_state, Book, Decision, Standing};
use records::{intents_path, load_accounts, load_intents, Accounts, Intents};
pub use records::{next_incarnation, write_atomic};

/// Default time between SIGTERM and SIGKILL for the in-process [`Host`] (only read for status here; the
/// `vserver` child takes `VSERVER_STOP_TIMEOUT` from the agent's environment).
const GRACE: Duration = Duration::from_secs(10);

/// How long a start waits for the host's lease before it is refused: a host whose agent has just started
/// holds it after a heartbeat or two; one cut off from its majority does not get it in that time.
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// This host's vservers, their intents and restart accounting (a handle: clones share them).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

/// What the supervisor's tasks share (the public methods run their work in tasks of their own, so an HTTP
/// client that hangs up never cuts a start or stop in half).
struct Shared {
    host: Host,
    command: VserverCommand,
    restart: RestartConfig,
    failures: FailuresConfig,
    intents: Intents,
    /// Restart times and errors, also on disk.
    accounts: Accounts,
    books: StdMutex<HashMap<VserverName, Book>>,
    locks: StdMutex<HashMap<VserverName, Arc<AsyncMutex<()>>>>,
    cache: StdMutex<BTreeMap<VserverName, VserverState>>,
    /// Vservers held by a migrate: the check loop and operators leave them alone.
    held: StdMutex<std::collections::HashSet<VserverName>>,
    /// Vservers the watchdog killed: not restarted until the cluster confirms this host still owns them.
    fenced: StdMutex<std::collections::BTreeSet<VserverName>>,
    /// When each fenced vserver was fenced, ms since the Unix epoch, until its recovery is accounted.
    fenced_at: StdMutex<HashMap<VserverName, u64>>,
    /// What the supervisor asks of the cluster: owners, lease, relocations, and where it reports.
    cluster: Arc<dyn Cluster>,
    /// This host's node name.
    node: String,
}

/// What the supervisor asks of the cluster. The agent answers it from its parts (the ownership table, the
/// lease, the event log: `super::cluster::ClusterLink`).
pub trait Cluster: Send + Sync {
    /// The host the ownership table gives `name` to, as this host knows it: a vserver the table gives to
    /// another host is not restarted here when it dies (its intent becomes `stopped`).
    fn owner(&self, name: &VserverName) -> Option<String>;
    /// Whether this host may start vservers now: it holds its lease, or needs none (no quorum fencing, no
    /// cluster formed, maintenance). No vserver is started (by an operator, a restart, a recovery) while it
    /// may not, since another host may be taking them over.
    fn may_run(&self) -> bool;
    /// `name`'s relocations within the failure window, and its relocation error, as the cluster's event log
    /// tells them: a vserver it puts in error is shown so and never restarted.
    fn relocations(&self, name: &VserverName) -> Relocations;
    /// Reports an event (kind, vserver, text) to the cluster's event log, without waiting for it.
    fn report(&self, kind: &str, name: &VserverName, text: String);
}

pub use failover::events::Relocations;

/// What [`Supervisor::clear`] forgot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Restarts within the window.
    pub restarts: u32,
    /// The local error, if there was one.
    pub error: Option<String>,
}

/// A vserver held by a migrate: no restart by the check loop, no operator operation, until dropped.
pub struct Hold {
    name: VserverName,
    _guard: OwnedMutexGuard<()>,
    _mark: HeldMark,
}

/// The mark that refuses operators; removed when dropped, also when a hold is abandoned while it waits.
struct HeldMark {
    name: VserverName,
    shared: Arc<Shared>,
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        lock(&self.shared.held).remove(&self.name);
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Supervisor {
    /// Loads the intents kept on disk; `cluster` answers what the supervisor asks of the cluster.
    /// `root_devices`: the vservers whose tree is the file system of a block device (device, file system type),
    /// which their starts mount.
    pub fn new(
        config: &AgentConfig,
        cluster: Arc<dyn Cluster>,
        root_devices: BTreeMap<VserverName, (PathBuf, String)>,
    ) -> Result<Self, SupervisorError> {
        let path = intents_path(&config.state_dir);
        let state = |source| SupervisorError::State { path: path.clone(), source };
        std::fs::create_dir_all(&config.state_dir).map_err(state)?;
        let map = load_intents(&path).map_err(state)?;
        tracing::info!(path = %path.display(), vservers = map.len(), "intents loaded");
        let accounts_path = config.state_dir.join("failures.json");
        let accounts = load_accounts(&accounts_path)
            .map_err(|source| SupervisorError::State { path: accounts_path.clone(), source })?;
        let cgroup_root =
            std::env::var_os("VSERVER_CGROUP_ROOT").map_or_else(|| "/sys/fs/cgroup".into(), PathBuf::from);
        let dirs = Dirs {
            vservers_dir: config.vservers_dir.clone(),
            conf_dir: config.conf_dir.clone(),
            run_dir: config.run_dir.clone(),
            cgroup_root,
            cgroup_parent: config.cgroup_parent.clone(),
        };
        let command = VserverCommand::new(config.vserver_bin.clone(), &dirs, root_devices);
        tracing::info!(bin = %command.bin.display(), "lifecycle operations run this vserver command");
        Ok(Self {
            shared: Arc::new(Shared {
                host: Host { dirs, grace: GRACE, start_timeout: Duration::from_secs(300) },
                command,
                restart: config.restart.clone(),
                failures: config.failures.clone(),
                intents: Intents { path, map: StdMutex::new(map), write: AsyncMutex::new(()) },
                accounts: Accounts { path: accounts_path, map: StdMutex::new(accounts), write: AsyncMutex::new(()) },
                books: StdMutex::default(),
                locks: StdMutex::default(),
                cache: StdMutex::default(),
                held: StdMutex::default(),
                fenced: StdMutex::default(),
                fenced_at: StdMutex::default(),
                cluster,
                node: config.node.clone(),
            }),
        })
    }

    /// The vservers whose tree is a block device's file system (device, file system type), as the cluster's
    /// placements now say: their starts are given it.
    pub fn set_root_devices(&self, devices: BTreeMap<VserverName, (PathBuf, String)>) {
        *self.shared.command.root_devices.lock().unwrap_or_else(|p| p.into_inner()) = devices;
    }

    /// Checks the vservers every `every` (`restart.check_interval_ms`): adopts running ones, restarts those
    /// meant to run that died, with backoff, up to `failures.max_restart` times within the window. Runs until
    /// aborted.
    pub async fn run(&self, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.check().await;
        }
    }

    /// Every vserver with a conf file on this host.
    pub async fn list(&self) -> Vec<VserverStatus> {
        let host = self.shared.host.clone();
        let found = tokio::task::spawn_blocking(move || {
            let names = match host.dirs.configured() {
                Ok((names, _)) => names,
                Err(e) => {
                    tracing::warn!(dir = %host.dirs.conf_dir.display(), error = %e, "cannot list the vservers");
                    Vec::new()
                }
            };
            names.into_iter().map(|n| (observe(&host, &n), n)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        found.into_iter().map(|((st, running), name)| self.shared.compose(&name, st, running)).collect()
    }

    /// One vserver.
    pub async fn get(&self, name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        self.shared.status(name).await
    }

    /// Records the intent "running", then starts it.
    pub async fn start(&self, name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        self.operate(name, Op::Start).await
    }

    /// Records the intent "stopped", then stops it.
    pub async fn stop(&self, name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        self.operate(name, Op::Stop).await
    }

    /// Stops then starts it; the intent ends "running".
    pub async fn restart(&self, name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        self.operate(name, Op::Restart).await
    }

    /// Why an operator's `action` (`start`, `stop` or `restart`) of `name` would be refused now, before its
    /// intent is recorded in the cluster (a refused operation must not leave an intent there): unknown here,
    /// held by a migrate, or in error.
    pub async fn refusal(&self, name: &VserverName, action: &str) -> Option<SupervisorError> {
        let op = match action {
            "start" => Op::Start,
            "stop" => Op::Stop,
            _ => Op::Restart,
        };
        self.shared.refusal(name, op).await
    }

    /// Holds a vserver for a migrate: waits for an operation under way, then keeps the check loop and
    /// operators off it until the hold is dropped. Refused if another migrate holds it.
    pub async fn hold(&self, name: &VserverName) -> Result<Hold, SupervisorError> {
        if !lock(&self.shared.held).insert(name.clone()) {
            return Err(SupervisorError::Busy(name.to_string()));
        }
        let mark = HeldMark { name: name.clone(), shared: Arc::clone(&self.shared) };
        let guard = self.shared.op_lock(name).lock_owned().await;
        Ok(Hold { name: name.clone(), _guard: guard, _mark: mark })
    }

    /// Starts or stops a held vserver (`start` or `stop`), without changing its intent.
    pub async fn run_held(&self, hold: &Hold, action: &str) -> Result<(), SupervisorError> {
        let result = self.shared.command.run(&hold.name, action).await;
        if result.is_ok() && action == "start" {
            let mut books = lock(&self.shared.books);
            books.entry(hold.name.clone()).or_default().running_since = Some(Instant::now());
        }
        self.shared.refresh(&hold.name).await;
        result
    }

    /// Records an intent without acting (after a migrate: `stopped` on the host the vserver left).
    pub async fn record_intent(&self, name: &VserverName, intent: Intent) -> Result<(), SupervisorError> {
        self.shared.intents.set(name, intent).await
    }

    /// The lifecycle settings and directories of this host.
    pub fn host(&self) -> &Host {
        &self.shared.host
    }

    /// Cheap summaries for heartbeats (as of the last check).
    pub fn summaries(&self) -> Vec<VserverSummary> {
        lock(&self.shared.cache).iter().map(|(n, s)| VserverSummary { name: n.to_string(), state: *s }).collect()
    }

    /// Looks at every vserver once and acts on what it finds (adopt, schedule or make a restart, give up).
    pub async fn check(&self) {
        Arc::clone(&self.shared).check().await;
    }

    /// Marks every vserver meant to run here as fenced (the watchdog killed them): the check loop restarts
    /// none of them until [`Supervisor::unfence`]. Returns them.
    pub fn fence(&self) -> Vec<VserverName> {
        let names: Vec<VserverName> = lock(&self.shared.intents.map)
            .iter()
            .filter(|(_, i)| **i == Intent::Running)
            .filter_map(|(n, _)| VserverName::parse(n).ok())
            .collect();
        self.fence_only(&names);
        names
    }

    /// Fences the given vservers only (see [`fence`](Self::fence)).
    pub fn fence_only(&self, names: &[VserverName]) {
        lock(&self.shared.fenced).extend(names.iter().cloned());
        let now = isolate::state::now_ms();
        let mut at = lock(&self.shared.fenced_at);
        for n in names {
            at.entry(n.clone()).or_insert(now);
        }
    }

    /// A fenced vserver the cluster confirmed this host still owns: the fence is lifted, counted (apart from
    /// crashes, once per run it ended: the agent, the watchdog and the keeper may all report the same fence),
    /// and the vserver started again at once if it is meant to run, with no backoff: a fence is not a crash.
    pub async fn recover_from_fence(&self, name: &VserverName) {
        let shared = Arc::clone(&self.shared);
        // Held across the whole recovery, so the check loop never sees it half done.
        let guard = shared.op_lock(name).lock_owned().await;
        lock(&shared.fenced).remove(name);
        let at = lock(&shared.fenced_at).remove(name);
        let (host, n) = (shared.host.clone(), name.clone());
        let seen = tokio::task::spawn_blocking(move || {
            let running = matches!(host.running(&n), Ok(Some(_)));
            let ended = isolate::RunState::load(&host.dirs.run_dir, &n).ok().flatten().map(|s| s.init_start_ticks);
            (running, ended)
        })
        .await;
        let Ok((false, ended)) = seen else { return };
        let counted = shared.accounts.get(name).and_then(|a| a.last_fenced_run);
        if let Some(at) = at.filter(|_| ended.is_none() || ended != counted) {
            let since = isolate::state::now_ms().saturating_sub(shared.failures.window_ms());
            let kept = shared
                .accounts
                .update(name, |a| {
                    a.fenced_unix_ms.retain(|t| *t >= since);
                    a.fenced_unix_ms.push(at);
                    a.last_fenced_run = ended;
                })
                .await;
            if let Err(e) = kept {
                tracing::warn!(vserver = %name, error = %e, "cannot keep its fence count on disk");
            }
        }
        if shared.intents.get(name) != Some(Intent::Running) {
            return;
        }
        // Confirmed through a majority, but this host starts nothing before it holds its lease again.
        while !shared.may_run() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match shared.command.run(name, "start").await {
            Ok(()) | Err(SupervisorError::AlreadyRunning(_)) => {
                tracing::info!(vserver = %name, "started again after its fence (not counted as a crash)");
            }
            // Left to the check loop, which restarts it as usual.
            Err(e) => tracing::warn!(vserver = %name, error = %e, "its start after the fence failed"),
        }
        drop(guard);
        shared.refresh(name).await;
    }

    /// Clears a vserver's failure accounting on this host: its restarts are forgotten, its error lifted,
    /// and the agent acts on its intent again: a vserver meant to run (and owned here) is started now, as
    /// by an operator, with a fresh account. Refused while a migrate holds it.
    pub async fn clear(&self, name: &VserverName) -> Result<Cleared, SupervisorError> {
        if lock(&self.shared.held).contains(name) {
            return Err(SupervisorError::Busy(name.to_string()));
        }
        let _guard = self.shared.op_lock(name).lock_owned().await;
        let restarts = self.shared.restarts_in_window(name).len() as u32;
        let old = self.shared.accounts.set(name, None).await?;
        {
            let mut books = lock(&self.shared.books);
            let book = books.entry(name.clone()).or_default();
            book.reset();
            book.last_error = None;
        }
        let error = old.and_then(|a| a.error);
        tracing::warn!(vserver = %name, restarts, error = error.as_deref().unwrap_or("none"), "failure accounting \
                       cleared by an operator; its intent rules again");
        // Meant to run and not running: started now, as by an operator (not counted as a restart).
        let host = self.shared.host.clone();
        let n = name.clone();
        let running = tokio::task::spawn_blocking(move || host.running(&n).map(|s| s.is_some())).await;
        let owned_here = self.shared.owned_elsewhere(name).is_none();
        if self.shared.intents.get(name) == Some(Intent::Running) && matches!(running, Ok(Ok(false))) && owned_here {
            let result = self.shared.command.run(name, "start").await;
            let mut books = lock(&self.shared.books);
            let book = books.entry(name.clone()).or_default();
            match result {
                Ok(()) | Err(SupervisorError::AlreadyRunning(_)) => {
                    book.running_since = Some(Instant::now());
                    tracing::info!(vserver = %name, "started after the clear (its intent is running)");
                }
                Err(e) => {
                    tracing::warn!(vserver = %name, error = %e, "start after the clear failed");
                    book.failed = true;
                    book.last_error = Some(e.to_string());
                }
            }
        }
        self.shared.refresh(name).await;
        Ok(Cleared { restarts, error })
    }

    /// Lifts the fence of one vserver without starting it: the check loop treats it as usual again.
    pub fn unfence(&self, name: &VserverName) {
        lock(&self.shared.fenced).remove(name);
        lock(&self.shared.fenced_at).remove(name);
    }

    /// The vservers fenced and not yet confirmed.
    pub fn fenced(&self) -> Vec<VserverName> {
        lock(&self.shared.fenced).iter().cloned().collect()
    }

    async fn operate(&self, name: &VserverName, op: Op) -> Result<VserverStatus, SupervisorError> {
        let shared = Arc::clone(&self.shared);
        let n = name.clone();
        let task = tokio::spawn(async move { shared.operate(&n, op).await });
        task.await.unwrap_or_else(|e| {
            Err(SupervisorError::Failed {
                name: name.to_string(),
                message: format!("the operation's task failed: {e}"),
            })
        })
    }
}

/// An operator's lifecycle request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    Restart,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
        }
    }
}

impl Shared {
    /// The per-vserver lock of lifecycle operations.
    fn op_lock(&self, name: &VserverName) -> Arc<AsyncMutex<()>> {
        Arc::clone(lock(&self.locks).entry(name.clone()).or_default())
    }

    /// Why `op` of `name` would be refused now, whatever the lease: unknown here, held by a migrate, or (a
    /// start) in error. Checked before anything is recorded, here or in the cluster.
    async fn refusal(&self, name: &VserverName, op: Op) -> Option<SupervisorError> {
        let host = self.host.clone();
        let n = name.clone();
        let known = tokio::task::spawn_blocking(move || match op {
            // A start needs its conf and its tree.
            Op::Start | Op::Restart => host.dirs.conf(&n).is_file() && host.dirs.root(&n).is_dir(),
            // A stop needs its conf, or a record of it running (its conf may have been removed meanwhile).
            Op::Stop => host.dirs.conf(&n).is_file() || matches!(host.running(&n), Ok(Some(_))),
        })
        .await
        .unwrap_or(false);
        if !known {
            return Some(SupervisorError::NotFound(name.to_string()));
        }
        if lock(&self.held).contains(name) {
            return Some(SupervisorError::Busy(name.to_string()));
        }
        if op != Op::Stop {
            if let Some(why) = self.error_of(name) {
                return Some(SupervisorError::Refused {
                    name: name.to_string(),
                    message: format!(
                        "it is in state error ({why}) and is not started until an operator clears it: \
                         `vserver {name} clear`; nothing changed"
                    ),
                });
            }
        }
        None
    }

    async fn operate(self: &Arc<Self>, name: &VserverName, op: Op) -> Result<VserverStatus, SupervisorError> {
        // Bad input is refused before anything is recorded.
        if let Some(refused) = self.refusal(name, op).await {
            return Err(refused);
        }
        let _guard = self.op_lock(name).lock_owned().await;
        if op != Op::Stop && !self.lease_within(LEASE_WAIT).await {
            return Err(SupervisorError::NoLease(name.to_string()));
        }
        let intent = if op == Op::Stop { Intent::Stopped } else { Intent::Running };
        self.intents.set(name, intent).await?;
        {
            let mut books = lock(&self.books);
            let book = books.entry(name.clone()).or_default();
            match op {
                Op::Start | Op::Restart => book.reset(),
                Op::Stop => {
                    book.failed = false;
                    book.next_allowed = None;
                    book.streak = 0;
                }
            }
        }
        tracing::info!(vserver = %name, ?intent, "{} requested by an operator: intent recorded", op.verb());
        let result = self.command.run(name, op.verb()).await;
        {
            let mut books = lock(&self.books);
            let book = books.entry(name.clone()).or_default();
            match &result {
                Ok(()) => {
                    book.last_error = None;
                    book.running_since = (op != Op::Stop).then(Instant::now);
                    tracing::info!(vserver = %name, "{} done", op.verb());
                }
                Err(SupervisorError::AlreadyRunning(_) | SupervisorError::NotRunning(_)) => {
                    tracing::info!(vserver = %name, "{}: nothing to do", op.verb());
                }
                Err(e) => {
                    book.last_error = Some(e.to_string());
                    if op != Op::Stop {
                        // Not a crash: the operator's own start failed. Leave it to the operator.
                        book.failed = true;
                    }
                    tracing::warn!(vserver = %name, error = %e, "{} failed", op.verb());
                }
            }
        }
        self.refresh(name).await;
        result?;
        self.status(name).await
    }

    /// Re-observes one vserver for the heartbeat cache.
    async fn refresh(&self, name: &VserverName) {
        let host = self.host.clone();
        let n = name.clone();
        let running = tokio::task::spawn_blocking(move || host.running(&n).map(|s| s.is_some())).await;
        if let Ok(Ok(running)) = running {
            let state = self.state_of(name, running);
            lock(&self.cache).insert(name.clone(), state);
        }
    }

    async fn status(&self, name: &VserverName) -> Result<VserverStatus, SupervisorError> {
        let host = self.host.clone();
        let n = name.clone();
        let (st, running) = tokio::task::spawn_blocking(move || observe(&host, &n))
            .await
            .map_err(|e| SupervisorError::Failed { name: name.to_string(), message: e.to_string() })?;
        if let Err(LifecycleError::NoConf { .. }) = st {
            return Err(SupervisorError::NotFound(name.to_string()));
        }
        Ok(self.compose(name, st, running))
    }

    /// A vserver's status: the observation, its intent and its restart account.
    fn compose(&self, name: &VserverName, st: Result<Status, LifecycleError>, running: bool) -> VserverStatus {
        let restarted = self.restarts_in_window(name);
        let since = isolate::state::now_ms().saturating_sub(self.failures.window_ms());
        let fenced: Vec<u64> = self
            .accounts
            .get(name)
            .map(|a| a.fenced_unix_ms.into_iter().filter(|t| *t >= since).collect())
            .unwrap_or_default();
        let relocated = self.relocations_of(name);
        let in_error = self.error_of(name);
        let state = self.state_of(name, running);
        let books = lock(&self.books);
        let book = books.get(name);
        let (uptime_secs, addresses, host_network, processes, resources, error) = match st {
            Ok(s) => (s.uptime_secs, s.addresses, s.host_network, s.processes, s.resources, None),
            Err(e) => (None, Vec::new(), false, 0, Default::default(), Some(format!("cannot read its state: {e}"))),
        };
        let intent = self.intents.get(name).unwrap_or(if running { Intent::Running } else { Intent::Stopped });
        VserverStatus {
            name: name.to_string(),
            state,
            intent,
            uptime_secs,
            addresses,
            host_network,
            processes,
            resources,
            restarts: restarted.len() as u32,
            restarted_unix_ms: restarted,
            fences: fenced.len() as u32,
            fenced_unix_ms: fenced,
            relocations: relocated.at_unix_ms.len() as u32,
            relocated_unix_ms: relocated.at_unix_ms,
            error: in_error,
            last_error: book.and_then(|b| b.last_error.clone()).or(error),
        }
    }

    async fn check(self: Arc<Self>) {
        let host = self.host.clone();
        let observed = tokio::task::spawn_blocking(move || {
            let (names, bad) = host.dirs.configured()?;
            for b in bad {
                tracing::debug!(file = %b.display(), "not a valid vserver name; ignored");
            }
            Ok::<_, std::io::Error>(
                names
                    .into_iter()
                    .map(|n| {
                        let r = host.observe(&n).map_err(|e| e.to_string());
                        (n, r)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        let observed = match observed {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.host.dirs.conf_dir.display(), error = %e, "cannot list the vservers");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the check's observation task failed");
                return;
            }
        };
        let mut cache = BTreeMap::new();
        for (name, running) in observed {
            let state = self.check_one(&name, running).await;
            if let Some(s) = state.or_else(|| lock(&self.cache).get(&name).copied()) {
                cache.insert(name, s);
            }
        }
        *lock(&self.cache) = cache;
    }

    /// Acts on one vserver's observation; returns its state for the cache (`None`: keep the last known).
    async fn check_one(self: &Arc<Self>, name: &VserverName, seen: Result<Observed, String>) -> Option<VserverState> {
        // An operator's operation or a restart is under way: leave it be this round.
        let Ok(guard) = self.op_lock(name).try_lock_owned() else { return None };
        let running = match seen {
            // Its keeper is still writing down how it ended: look again next round.
            Ok(Observed::Ending) => return None,
            // Its keeper fenced it (this host's lease ended while the agent was away): as after any fence,
            // it waits for the cluster to confirm this host still owns it; never a crash.
            Ok(Observed::Down(Some(isolate::state::Ending::Fenced))) if !lock(&self.fenced).contains(name) => {
                if self.intents.get(name) == Some(Intent::Running) {
                    tracing::warn!(vserver = %name, "fenced by its keeper (this host's lease ended)");
                    lock(&self.fenced).insert(name.clone());
                    lock(&self.fenced_at).entry(name.clone()).or_insert_with(isolate::state::now_ms);
                }
                return Some(self.state_of(name, false));
            }
            Ok(Observed::Down(Some(how))) if how.is_intent() && !lock(&self.fenced).contains(name) => {
                if self.intents.get(name) == Some(Intent::Running) {
                    return self.own_ending(name, how, guard).await;
                }
                Ok(false)
            }
            Ok(o) => Ok(o == Observed::Running),
            Err(e) => Err(e),
        };
        // Killed by the watchdog: nothing is done until the cluster confirms this host still owns it.
        if lock(&self.fenced).contains(name) {
            return running.ok().map(|r| observed_state(r, false, self.error_of(name).is_some()));
        }
        let running = match running {
            Ok(r) => r,
            Err(e) => {
                let mut books = lock(&self.books);
                let book = books.entry(name.clone()).or_default();
                if book.observe_error.as_ref() != Some(&e) {
                    tracing::warn!(vserver = %name, error = %e, "cannot tell whether it runs; nothing done");
                    book.observe_error = Some(e);
                }
                return None;
            }
        };
        let now = Instant::now();
        let intent = self.intents.get(name);
        let in_window = self.restarts_in_window(name).len() as u32;
        let in_error = self.error_of(name).is_some();
        let mut error = None;
        let decision = {
            let mut books = lock(&self.books);
            let book = books.entry(name.clone()).or_default();
            book.observe_error = None;
            note_observation(book, running, now, &self.restart, name);
            let standing = Standing {
                streak: book.streak,
                in_window,
                left_alone: book.failed || in_error,
                next_allowed: book.next_allowed,
            };
            let d = decide(intent, running, &standing, now, self.failures.max_restart, &self.restart);
            match d {
                Decision::Schedule(at) => {
                    book.next_allowed = Some(at);
                    tracing::warn!(
                        vserver = %name,
                        wait_ms = at.saturating_duration_since(now).as_millis() as u64,
                        restart = in_window + 1,
                        max_restart = self.failures.max_restart,
                        "died on its own while meant to run; restart scheduled"
                    );
                }
                Decision::GiveUp => {
                    book.next_allowed = None;
                    let why = format!("restarted {in_window} times in {} s", self.failures.window_secs);
                    let mut msg = format!(
                        "died on its own again: {why} (failures.max_restart = {}); state error: not restarted until \
                         an operator clears it (vserver {name} clear)",
                        self.failures.max_restart
                    );
                    if let Some(last) = &book.last_error {
                        msg.push_str(&format!(" (last restart error: {last})"));
                    }
                    tracing::error!(vserver = %name, "{msg}");
                    let text = format!("{name} on {}: {msg}", self.node);
                    self.cluster.report(super::events::kinds::RESTART_GAVE_UP, name, text);
                    error = Some(why);
                }
                Decision::Leave | Decision::Wait | Decision::Adopt | Decision::Restart => {}
            }
            d
        };
        if let Some(why) = error {
            if let Err(e) = self.accounts.update(name, |a| a.error = Some(why)).await {
                tracing::warn!(vserver = %name, error = %e, "cannot keep its error on disk (it holds until the agent \
                               restarts)");
            }
        }
        match decision {
            Decision::Adopt => match self.intents.set(name, Intent::Running).await {
                Ok(()) => tracing::info!(vserver = %name, "adopted: it runs with no recorded intent; intent running"),
                Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record its adoption; retried next check"),
            },
            Decision::Restart if self.owned_elsewhere(name).is_some() => {
                let owner = self.owned_elsewhere(name).unwrap_or_default();
                tracing::warn!(vserver = %name, %owner, "died here, but the cluster gives it to {owner}: not restarted; \
                               intent stopped");
                drop(guard);
                if let Err(e) = self.intents.set(name, Intent::Stopped).await {
                    tracing::warn!(vserver = %name, error = %e, "cannot record the intent; retried next check");
                }
            }
            Decision::Restart if !self.may_run() => {
                tracing::debug!(vserver = %name, "due a restart, but this host holds no lease now: later");
            }
            Decision::Restart => {
                tracing::warn!(vserver = %name, "restarting: it died on its own while meant to run");
                tokio::spawn(Arc::clone(self).restart_after_death(name.clone(), guard));
                return None;
            }
            _ => {}
        }
        Some(self.state_of(name, running))
    }

    /// A vserver that ended itself while meant to run: `reboot` inside starts it again here (its own intent,
    /// never counted as a failure, never a reason to move it), `halt` makes its intent stopped.
    async fn own_ending(
        self: &Arc<Self>,
        name: &VserverName,
        how: isolate::state::Ending,
        guard: OwnedMutexGuard<()>,
    ) -> Option<VserverState> {
        if how == isolate::state::Ending::Halt {
            drop(guard);
            if let Err(e) = self.intents.set(name, Intent::Stopped).await {
                tracing::warn!(vserver = %name, error = %e, "cannot record the intent; retried next check");
                return None;
            }
            tracing::info!(vserver = %name, "halted itself (halt or poweroff inside); intent stopped");
            let text = format!("{name} halted itself on {}; intent stopped", self.node);
            self.cluster.report(super::events::kinds::HALT, name, text);
            return Some(self.state_of(name, false));
        }
        if let Some(owner) = self.owned_elsewhere(name) {
            tracing::warn!(vserver = %name, %owner, "rebooted itself here, but the cluster gives it to {owner}: not \
                           started; intent stopped");
            drop(guard);
            let _ = self.intents.set(name, Intent::Stopped).await;
            return Some(self.state_of(name, false));
        }
        tracing::info!(vserver = %name, "rebooted itself (reboot inside); starting it again here");
        let this = Arc::clone(self);
        let name = name.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let text = match this.command.run(&name, "start").await {
                Ok(()) | Err(SupervisorError::AlreadyRunning(_)) => format!("{name} rebooted itself on {}", this.node),
                Err(e) => {
                    // Forget the reboot: the next check sees a vserver down while meant to run, and restarts it
                    // with backoff and failure accounting, as any other.
                    let _ = isolate::state::ExitRecord::remove(&this.host.dirs.run_dir, &name);
                    tracing::warn!(vserver = %name, error = %e, "start after its reboot failed; retried as a restart");
                    format!("{name} rebooted itself on {} but did not start again: {e}", this.node)
                }
            };
            this.cluster.report(super::events::kinds::REBOOT, &name, text);
            this.refresh(&name).await;
        });
        None
    }

    /// Whether this host may start vservers now (see [`Cluster::may_run`]).
    fn may_run(&self) -> bool {
        self.cluster.may_run()
    }

    /// Whether this host may start vservers now or comes to within `wait` (a host that has just started, or
    /// is back from a short blip, gets its lease within a heartbeat or two).
    async fn lease_within(&self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if self.may_run() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A vserver's state from whether it runs and its accounts.
    fn state_of(&self, name: &VserverName, running: bool) -> VserverState {
        let failed = lock(&self.books).get(name).is_some_and(|b| b.failed);
        observed_state(running, failed, self.error_of(name).is_some())
    }

    /// Why a vserver is in error: its local restarts, else its relocations.
    fn error_of(&self, name: &VserverName) -> Option<String> {
        self.accounts.get(name).and_then(|a| a.error).or_else(|| self.relocations_of(name).error)
    }

    /// The times of its restarts within the failure window, oldest first.
    fn restarts_in_window(&self, name: &VserverName) -> Vec<u64> {
        let since = isolate::state::now_ms().saturating_sub(self.failures.window_ms());
        self.accounts
            .get(name)
            .map(|a| a.restarted_unix_ms.into_iter().filter(|t| *t >= since).collect())
            .unwrap_or_default()
    }

    /// Its relocations, as the cluster's event log tells them.
    fn relocations_of(&self, name: &VserverName) -> Relocations {
        self.cluster.relocations(name)
    }

    /// The host the ownership table gives `name` to, when that is not this host.
    fn owned_elsewhere(&self, name: &VserverName) -> Option<String> {
        let owner = self.cluster.owner(name)?;
        (owner != self.node).then_some(owner)
    }

    /// Starts a vserver that died on its own, holding its operation lock.
    async fn restart_after_death(self: Arc<Self>, name: VserverName, _guard: OwnedMutexGuard<()>) {
        let result = self.command.run(&name, "start").await;
        let counted = {
            let mut books = lock(&self.books);
            let book = books.entry(name.clone()).or_default();
            book.next_allowed = None;
            match result {
                Ok(()) => {
                    book.streak += 1;
                    book.running_since = Some(Instant::now());
                    book.last_error = None;
                    tracing::info!(vserver = %name, streak = book.streak, "restarted after it died on its own");
                    let text = format!(
                        "{name} died on its own on {} and was restarted there (restart {} in a row)",
                        self.node, book.streak
                    );
                    self.cluster.report("restart", &name, text);
                    true
                }
                // Started meanwhile by someone else: nothing to count.
                Err(SupervisorError::AlreadyRunning(_)) => {
                    tracing::info!(vserver = %name, "found running again before the restart; nothing done");
                    false
                }
                Err(e) => {
                    book.streak += 1;
                    tracing::warn!(vserver = %name, error = %e, attempt = book.streak, "restart failed");
                    let text = format!("{name} died on its own on {} and its restart failed: {e}", self.node);
                    self.cluster.report("restart_failed", &name, text);
                    book.last_error = Some(e.to_string());
                    true
                }
            }
        };
        if counted {
            let (now, since) = {
                let now = isolate::state::now_ms();
                (now, now.saturating_sub(self.failures.window_ms()))
            };
            let kept = self
                .accounts
                .update(&name, |a| {
                    a.restarted_unix_ms.retain(|t| *t >= since);
                    a.restarted_unix_ms.push(now);
                })
                .await;
            if let Err(e) = kept {
                tracing::warn!(vserver = %name, error = %e, "cannot keep its restart count on disk");
            }
        }
        self.refresh(&name).await;
    }
}

/// Reads a vserver's status (blocking); when that fails (a broken conf), whether it runs all the same, from
/// the spec it was started with.
fn observe(host: &Host, name: &VserverName) -> (Result<Status, LifecycleError>, bool) {
    let st = host.status(name);
    let running = match &st {
        Ok(s) => s.state == "running",
        Err(_) => matches!(host.running(name), Ok(Some(_))),
    };
    (st, running)
}
