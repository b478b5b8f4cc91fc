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

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use isolate::VserverName;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::config::{AgentConfig, FailuresConfig, RestartConfig};
use crate::announcement::{Announcement, NO_AGENT_ENV};
use crate::dirs::Dirs;
use crate::exit;
use crate::lifecycle::{Host, LifecycleError, Observed, Status};
use crate::model::{Intent, VserverState, VserverStatus, VserverSummary};

/// A lifecycle request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No such vserver on this host (HTTP 404).
    #[error("vserver {0} is not configured on this host")]
    NotFound(String),
    /// Start of a running vserver (HTTP 409).
    #[error("vserver {0} is already running; nothing changed")]
    AlreadyRunning(String),
    /// Stop of a stopped vserver (HTTP 409).
    #[error("vserver {0} is not running; nothing changed")]
    NotRunning(String),
    /// `NAME.conf` is malformed or holds a bad value (HTTP 422); the message names `file:line`.
    #[error("vserver {name}: {message}")]
    BadConf {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// The vserver may not be acted on (`S_FLAGS private`) (HTTP 403).
    #[error("vserver {name}: {message}")]
    Refused {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// The `vserver` command failed (HTTP 500); the message is its own.
    #[error("vserver {name}: {message}")]
    Failed {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// This host does not hold its lease (HTTP 503): cut off from the majority, it may not start anything.
    #[error(
        "this host does not hold its lease (no majority of the cluster acknowledges it): starting {0} here could \
         run it twice while another host takes it over; nothing changed (retry once the host is back)"
    )]
    NoLease(String),
    /// Held by a migrate (HTTP 423): operators' lifecycle requests are refused until it ends.
    #[error("vserver {0} is being migrated; nothing changed (retry when the migrate ends)")]
    Busy(String),
    /// The intents could not be kept on disk (HTTP 500).
    #[error("cannot keep the intents in {path}: {source}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

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
/// lease, the event log); a host without a cluster answers [`Standalone`].
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

/// A host outside any cluster: it owns what it runs, may always start, and reports to nobody.
pub struct Standalone;

impl Cluster for Standalone {
    fn owner(&self, _: &VserverName) -> Option<String> {
        None
    }
    fn may_run(&self) -> bool {
        true
    }
    fn relocations(&self, _: &VserverName) -> Relocations {
        Relocations::default()
    }
    fn report(&self, _: &str, _: &VserverName, _: String) {}
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

/// Restart bookkeeping of one vserver, since the agent started (its counted restarts are in [`Accounts`]).
#[derive(Debug, Default)]
struct Book {
    /// Restarts since it last ran stably: drives the backoff.
    streak: u32,
    /// An operator's start failed: left alone until an operator starts it.
    failed: bool,
    /// When a restart is due, once it was found dead.
    next_allowed: Option<Instant>,
    /// Since when it has been seen running without a break.
    running_since: Option<Instant>,
    /// The last error starting or stopping it.
    last_error: Option<String>,
    /// The last error observing it, logged once.
    observe_error: Option<String>,
}

impl Book {
    /// An operator's start or restart: a fresh account.
    fn reset(&mut self) {
        *self = Book { running_since: self.running_since, ..Book::default() };
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Supervisor {
    /// Loads the intents kept on disk; `cluster` answers what the supervisor asks of the cluster.
    pub fn new(config: &AgentConfig, cluster: Arc<dyn Cluster>) -> Result<Self, SupervisorError> {
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
        let command = VserverCommand::new(config.vserver_bin.clone(), &dirs);
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

    async fn operate(self: &Arc<Self>, name: &VserverName, op: Op) -> Result<VserverStatus, SupervisorError> {
        // Bad input is refused before anything is recorded.
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
            return Err(SupervisorError::NotFound(name.to_string()));
        }
        if lock(&self.held).contains(name) {
            return Err(SupervisorError::Busy(name.to_string()));
        }
        let _guard = self.op_lock(name).lock_owned().await;
        if op != Op::Stop && !self.lease_within(LEASE_WAIT).await {
            return Err(SupervisorError::NoLease(name.to_string()));
        }
        if op != Op::Stop {
            if let Some(why) = self.error_of(name) {
                return Err(SupervisorError::Refused {
                    name: name.to_string(),
                    message: format!(
                        "it is in state error ({why}) and is not started until an operator clears it: \
                         `vserver {name} clear`; nothing changed"
                    ),
                });
            }
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

/// Keeps the account of one observation: a vserver seen running is no longer due a restart; one running
/// without a break for `backoff_max_ms` has recovered and starts a fresh streak; one seen running after it
/// was marked failed was started by an operator outside the agent, which counts as an operator's start.
fn note_observation(book: &mut Book, running: bool, now: Instant, cfg: &RestartConfig, name: &VserverName) {
    if !running {
        book.running_since = None;
        return;
    }
    book.next_allowed = None;
    if book.failed {
        tracing::info!(vserver = %name, "marked failed but runs again (started outside the agent); watched again");
        book.reset();
    }
    let since = *book.running_since.get_or_insert(now);
    if book.streak > 0 && now.duration_since(since) >= Duration::from_millis(cfg.backoff_max_ms) {
        tracing::info!(vserver = %name, after = book.streak, "runs stably again; restart streak cleared");
        book.streak = 0;
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

fn observed_state(running: bool, failed: bool, error: bool) -> VserverState {
    match (running, error, failed) {
        (true, _, _) => VserverState::Running,
        (false, true, _) => VserverState::Error,
        (false, false, true) => VserverState::Failed,
        (false, false, false) => VserverState::Stopped,
    }
}

/// What the restart policy looks at of one vserver.
#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    /// Restarts since it last ran stably (the backoff).
    streak: u32,
    /// Restarts within the failure window (the limit).
    in_window: u32,
    /// Failed or in error: left alone.
    left_alone: bool,
    /// When a scheduled restart is due.
    next_allowed: Option<Instant>,
}

/// What the check does about one vserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Nothing: as meant, stopped by intent, or failed and left alone.
    Leave,
    /// It runs with no recorded intent (started before the agent, or by hand): record "running".
    Adopt,
    /// Meant to run, just found dead: restart at this instant.
    Schedule(Instant),
    /// A restart is scheduled, not yet due.
    Wait,
    /// A scheduled restart is due.
    Restart,
    /// Found dead after `failures.max_restart` restarts within the window: put it in error.
    GiveUp,
}

/// The restart policy, pure: the streak drives the backoff, the restarts within the window the limit.
fn decide(
    intent: Option<Intent>,
    running: bool,
    s: &Standing,
    now: Instant,
    max_restart: u32,
    cfg: &RestartConfig,
) -> Decision {
    match (intent, running) {
        (None, true) => Decision::Adopt,
        (Some(_), true) => Decision::Leave,
        (None | Some(Intent::Stopped), false) => Decision::Leave,
        (Some(Intent::Running), false) if s.left_alone => Decision::Leave,
        (Some(Intent::Running), false) if s.in_window >= max_restart => Decision::GiveUp,
        (Some(Intent::Running), false) => match s.next_allowed {
            None => Decision::Schedule(now + backoff(s.streak, cfg)),
            Some(at) if now >= at => Decision::Restart,
            Some(_) => Decision::Wait,
        },
    }
}

/// Wait before restart number `n + 1` of a streak: `backoff_initial_ms`, doubled at each restart, at most
/// `backoff_max_ms`.
fn backoff(n: u32, cfg: &RestartConfig) -> Duration {
    let factor = 1u64.checked_shl(n).unwrap_or(u64::MAX);
    Duration::from_millis(cfg.backoff_initial_ms.saturating_mul(factor).min(cfg.backoff_max_ms))
}

/// The `vserver` command as the agent runs it: its binary and the directories of this host.
#[derive(Debug, Clone)]
struct VserverCommand {
    bin: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

impl VserverCommand {
    /// `configured`, else `vserver` beside this executable, else `vserver` on PATH.
    fn new(configured: Option<PathBuf>, dirs: &Dirs) -> Self {
        let beside = || {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join("vserver")).filter(|p| p.is_file())
        };
        let bin = configured.or_else(beside).unwrap_or_else(|| "vserver".into());
        let env = vec![
            (NO_AGENT_ENV, OsString::from("1")),
            ("VSERVER_VSERVERS_DIR", dirs.vservers_dir.clone().into()),
            ("VSERVER_CONF_DIR", dirs.conf_dir.clone().into()),
            ("VSERVER_RUN_DIR", dirs.run_dir.clone().into()),
            ("VSERVER_CGROUP_ROOT", dirs.cgroup_root.clone().into()),
            ("VSERVER_CGROUP_PARENT", dirs.cgroup_parent.clone().into()),
        ];
        Self { bin, env }
    }

    /// Runs `vserver NAME ACTION` and maps its exit code.
    async fn run(&self, name: &VserverName, action: &str) -> Result<(), SupervisorError> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg(name.as_str())
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Its default log level, so that its stderr holds its messages only.
            .env_remove("VSERVER_LOG")
            // The service manager's socket is the agent's alone (systemd's `Type=notify`).
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        tracing::debug!(vserver = %name, bin = %self.bin.display(), action, "running the vserver command");
        let out = cmd.output().await.map_err(|e| SupervisorError::Failed {
            name: name.to_string(),
            message: format!("cannot run {}: {e}", self.bin.display()),
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in stderr.lines().filter_map(|l| l.strip_prefix("vserver: warning: ")) {
            tracing::warn!(vserver = %name, action, "{w}");
        }
        outcome(name, out.status.code(), &stderr)
    }
}

/// The result of a `vserver NAME ACTION` child from its exit code (`None`: killed by a signal) and stderr.
fn outcome(name: &VserverName, code: Option<i32>, stderr: &str) -> Result<(), SupervisorError> {
    let name = name.to_string();
    match code {
        Some(exit::OK) => Ok(()),
        Some(exit::NOT_RUNNING) => Err(SupervisorError::NotRunning(name)),
        Some(exit::ALREADY_RUNNING) => Err(SupervisorError::AlreadyRunning(name)),
        Some(exit::UNKNOWN) => Err(SupervisorError::NotFound(name)),
        other => {
            // Its error lines, without the prefixes our own message adds again.
            let ours = format!("vserver {name}: ");
            let errors: Vec<&str> = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("vserver: error: "))
                .map(|l| l.strip_prefix(ours.as_str()).unwrap_or(l))
                .collect();
            let mut message = if errors.is_empty() { stderr.trim().to_string() } else { errors.join("; ") };
            if message.is_empty() {
                message = match other {
                    Some(c) => format!("the vserver command exited with {c}"),
                    None => "the vserver command was killed by a signal".into(),
                };
            }
            Err(match other {
                Some(exit::CONFIG) => SupervisorError::BadConf { name, message },
                Some(exit::REFUSED) => SupervisorError::Refused { name, message },
                _ => SupervisorError::Failed { name, message },
            })
        }
    }
}

/// The intents, in memory and in `STATE_DIR/intents.json`; writes are serialized and land on disk before
/// memory changes.
struct Intents {
    path: PathBuf,
    map: StdMutex<BTreeMap<String, Intent>>,
    write: AsyncMutex<()>,
}

impl Intents {
    fn get(&self, name: &VserverName) -> Option<Intent> {
        lock(&self.map).get(name.as_str()).copied()
    }

    async fn set(&self, name: &VserverName, intent: Intent) -> Result<(), SupervisorError> {
        let _w = self.write.lock().await;
        let mut next = lock(&self.map).clone();
        if next.insert(name.to_string(), intent) == Some(intent) {
            return Ok(());
        }
        let path = self.path.clone();
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || save_intents(&path, &to_save))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        saved.map_err(|source| SupervisorError::State { path: self.path.clone(), source })?;
        *lock(&self.map) = next;
        Ok(())
    }
}

/// One vserver's failure account on this host, as `STATE_DIR/failures.json` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Account {
    /// When the agent restarted it after it died on its own, ms since the Unix epoch (those older than the
    /// window are dropped at the next restart).
    #[serde(default)]
    restarted_unix_ms: Vec<u64>,
    /// Why it is in error (the restart limit), until an operator clears it.
    #[serde(default)]
    error: Option<String>,
    /// When it was fenced on this host, ms since the Unix epoch (counted apart from restarts; those older
    /// than the window are dropped at the next fence).
    #[serde(default)]
    fenced_unix_ms: Vec<u64>,
    /// The run the last counted fence ended (its process 1's start time), so one fence reported by the
    /// agent, the watchdog and the keeper counts once.
    #[serde(default)]
    last_fenced_run: Option<u64>,
}

/// The failure accounts, in memory and in `STATE_DIR/failures.json`; writes are serialized and land on disk
/// before memory changes.
struct Accounts {
    path: PathBuf,
    map: StdMutex<BTreeMap<String, Account>>,
    write: AsyncMutex<()>,
}

impl Accounts {
    fn get(&self, name: &VserverName) -> Option<Account> {
        lock(&self.map).get(name.as_str()).cloned()
    }

    /// Changes one account (creating it).
    async fn update(&self, name: &VserverName, f: impl FnOnce(&mut Account)) -> Result<(), SupervisorError> {
        let mut account = self.get(name).unwrap_or_default();
        f(&mut account);
        self.set(name, Some(account)).await.map(drop)
    }

    /// Replaces one account (`None` removes it); returns the old one.
    async fn set(&self, name: &VserverName, account: Option<Account>) -> Result<Option<Account>, SupervisorError> {
        let _w = self.write.lock().await;
        let mut next = lock(&self.map).clone();
        let old = match account {
            Some(a) => next.insert(name.to_string(), a),
            None => next.remove(name.as_str()),
        };
        let path = self.path.clone();
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let mut text = serde_json::to_string_pretty(&to_save).map_err(std::io::Error::other)?;
            text.push('\n');
            write_atomic(&path, text.as_bytes(), 0o644)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        saved.map_err(|source| SupervisorError::State { path: self.path.clone(), source })?;
        *lock(&self.map) = next;
        Ok(old)
    }
}

/// Reads `failures.json`; a missing file is no account at all.
fn load_accounts(path: &Path) -> std::io::Result<BTreeMap<String, Account>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn intents_path(state_dir: &Path) -> PathBuf {
    state_dir.join("intents.json")
}

/// Reads `intents.json` (name → "running" | "stopped"); a missing file is no intent at all.
fn load_intents(path: &Path) -> std::io::Result<BTreeMap<String, Intent>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn save_intents(path: &Path, intents: &BTreeMap<String, Intent>) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(intents).map_err(std::io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Writes `path` whole or not at all: a temporary file beside it, synced, then renamed over it.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: makes the rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Takes the next incarnation number, kept in `state_dir`: one more than the last, and at least the wall
/// clock's seconds since the Unix epoch, so a host reinstalled with an empty `state_dir` (the runbook's
/// replacement of a dead host) still starts above every incarnation its peers remember of its name.
pub fn next_incarnation(state_dir: &Path) -> std::io::Result<u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    next_incarnation_at(state_dir, now)
}

fn next_incarnation_at(state_dir: &Path, now_secs: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("incarnation");
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            // Never start over at 0: peers would take our heartbeats for stale ones.
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = (last + 1).max(now_secs);
    write_atomic(&path, format!("{next}\n").as_bytes(), 0o644)?;
    Ok(next)
}

/// The announcement of an agent listening on `listen`: an unspecified address (0.0.0.0, ::) is reached
/// through loopback.
fn announcement(config: &AgentConfig, pid: u32) -> Announcement {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    Announcement {
        url: format!("{scheme}://{addr}"),
        pid: pid as i32,
        node: config.node.clone(),
        secret_file: std::fs::canonicalize(&config.secret_file).unwrap_or_else(|_| config.secret_file.clone()),
        start_ticks: isolate::state::process_start_ticks(pid as i32),
        socket: Some(super::serve::socket_path(&config.run_dir)),
    }
}

/// Writes where the agent listens, for the `vserver` command (`RUN_DIR/agent.json`).
pub fn announce(config: &AgentConfig) -> std::io::Result<()> {
    let ann = announcement(config, std::process::id());
    std::fs::create_dir_all(&config.run_dir)?;
    let path = Announcement::path(&config.run_dir);
    let text = serde_json::to_string_pretty(&ann).map_err(std::io::Error::other)?;
    write_atomic(&path, text.as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), url = %ann.url, "announced to the vserver command");
    Ok(())
}

/// Removes what [`announce`] wrote.
pub fn withdraw(config: &AgentConfig) {
    let path = Announcement::path(&config.run_dir);
    let ours = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Announcement>(&t).ok())
        .is_some_and(|a| a.pid == std::process::id() as i32);
    if ours {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot withdraw the announcement");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RestartConfig {
        RestartConfig { backoff_initial_ms: 200, backoff_max_ms: 1000, check_interval_ms: 100 }
    }

    fn name(n: &str) -> VserverName {
        VserverName::parse(n).unwrap()
    }

    #[test]
    fn intents_round_trip_and_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = intents_path(dir.path());
        assert!(load_intents(&path).unwrap().is_empty(), "no file: no intent");
        let mut m = BTreeMap::new();
        m.insert("web".to_string(), Intent::Running);
        m.insert("db".to_string(), Intent::Stopped);
        save_intents(&path, &m).unwrap();
        assert_eq!(load_intents(&path).unwrap(), m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"web\": \"running\"") && text.contains("\"db\": \"stopped\""), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("intents.json")], "no temporary file left");
        // A failed write leaves the old file as it was.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::create_dir(blocked.join("intents.json")).unwrap();
        assert!(save_intents(&blocked.join("intents.json"), &m).is_err());
        assert_eq!(std::fs::read_dir(&blocked).unwrap().count(), 1, "the temporary file is removed");
        std::fs::write(&path, "{\"web\": \"dancing\"}").unwrap();
        assert_eq!(load_intents(&path).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn an_intent_is_on_disk_before_it_is_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = intents_path(dir.path());
        let intents = Intents { path: path.clone(), map: StdMutex::default(), write: AsyncMutex::new(()) };
        intents.set(&name("web"), Intent::Running).await.unwrap();
        assert_eq!(load_intents(&path).unwrap().get("web"), Some(&Intent::Running));
        assert_eq!(intents.get(&name("web")), Some(Intent::Running));
        // When the file cannot be written, the intent is refused and memory keeps the old one.
        let gone = Intents { path: dir.path().join("no/such/dir/intents.json"), ..intents };
        let err = gone.set(&name("web"), Intent::Stopped).await.unwrap_err();
        assert!(matches!(err, SupervisorError::State { .. }), "{err}");
        assert_eq!(gone.get(&name("web")), Some(Intent::Running));
    }

    #[test]
    fn the_incarnation_grows_at_every_start_and_is_never_reset() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(next_incarnation_at(&state, 0).unwrap(), 1);
        assert_eq!(next_incarnation_at(&state, 0).unwrap(), 2);
        // Several starts within one second of the clock still grow.
        assert_eq!(next_incarnation_at(&state, 1000).unwrap(), 1000);
        assert_eq!(next_incarnation_at(&state, 1000).unwrap(), 1001);
        assert_eq!(std::fs::read_to_string(state.join("incarnation")).unwrap(), "1001\n");
        // A clock set back never takes it down.
        assert_eq!(next_incarnation_at(&state, 5).unwrap(), 1002);
        // A reinstalled host (no state) starts from the clock, above what its peers remember.
        let fresh = dir.path().join("fresh");
        assert!(next_incarnation(&fresh).unwrap() > 1_700_000_000);
        std::fs::write(state.join("incarnation"), "garbage").unwrap();
        assert_eq!(next_incarnation(&state).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let c = cfg();
        let waits: Vec<u64> = (0..6).map(|n| backoff(n, &c).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(200, &c), Duration::from_millis(1000), "no overflow");
        let big = RestartConfig { backoff_initial_ms: u64::MAX / 2, backoff_max_ms: u64::MAX, ..c };
        assert_eq!(backoff(5, &big), Duration::from_millis(u64::MAX));
    }

    fn st(streak: u32, in_window: u32, left_alone: bool, next_allowed: Option<Instant>) -> Standing {
        Standing { streak, in_window, left_alone, next_allowed }
    }

    #[test]
    fn a_stop_by_intent_is_never_taken_for_a_crash() {
        let (c, now) = (cfg(), Instant::now());
        use Intent::*;
        // Stopped by intent or never started: left alone, whatever the restart account says.
        assert_eq!(decide(Some(Stopped), false, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(Some(Stopped), false, &st(0, 9, false, Some(now)), now, 3, &c), Decision::Leave);
        assert_eq!(decide(None, false, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
        // Running by hand while stopped by intent: never stopped, never adopted.
        assert_eq!(decide(Some(Stopped), true, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
    }

    #[test]
    fn running_vservers_are_adopted_and_never_touched() {
        let (c, now) = (cfg(), Instant::now());
        assert_eq!(decide(None, true, &st(0, 0, false, None), now, 3, &c), Decision::Adopt);
        assert_eq!(decide(Some(Intent::Running), true, &st(2, 2, false, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(Some(Intent::Running), true, &st(0, 5, true, None), now, 3, &c), Decision::Leave);
    }

    #[test]
    fn a_crash_is_restarted_after_the_backoff_then_put_in_error() {
        let (c, now) = (cfg(), Instant::now());
        let r = Some(Intent::Running);
        // Found dead: scheduled after the backoff of its streak.
        let sched = |streak, in_window| decide(r, false, &st(streak, in_window, false, None), now, 3, &c);
        assert_eq!(sched(0, 0), Decision::Schedule(now + Duration::from_millis(200)));
        assert_eq!(sched(2, 2), Decision::Schedule(now + Duration::from_millis(800)));
        // A stable run cleared the streak, not the count within the window.
        assert_eq!(sched(0, 2), Decision::Schedule(now + Duration::from_millis(200)));
        // Not yet due, then due.
        let at = now + Duration::from_millis(200);
        assert_eq!(decide(r, false, &st(0, 0, false, Some(at)), now, 3, &c), Decision::Wait);
        assert_eq!(decide(r, false, &st(0, 0, false, Some(at)), at, 3, &c), Decision::Restart);
        // The limit within the window reached: error, however long the runs between were.
        assert_eq!(sched(0, 3), Decision::GiveUp);
        assert_eq!(decide(r, false, &st(3, 3, false, Some(at)), at, 3, &c), Decision::GiveUp);
        // In error or failed: left alone.
        assert_eq!(decide(r, false, &st(3, 3, true, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(r, false, &st(0, 0, true, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(r, false, &st(0, 0, false, None), now, 0, &c), Decision::GiveUp, "max_restart 0");
    }

    #[test]
    fn a_stable_run_clears_the_streak_and_a_start_outside_the_agent_clears_failed() {
        let (c, t0, n) = (cfg(), Instant::now(), name("web"));
        let mut book = Book { streak: 2, next_allowed: Some(t0), ..Book::default() };
        note_observation(&mut book, true, t0, &c, &n);
        assert_eq!((book.streak, book.next_allowed, book.running_since), (2, None, Some(t0)));
        note_observation(&mut book, true, t0 + Duration::from_millis(999), &c, &n);
        assert_eq!(book.streak, 2, "not stable yet");
        note_observation(&mut book, true, t0 + Duration::from_millis(1000), &c, &n);
        assert_eq!(book.streak, 0, "stable: a fresh streak");
        note_observation(&mut book, false, t0, &c, &n);
        assert_eq!(book.running_since, None);
        let mut failed = Book { streak: 3, failed: true, last_error: Some("x".into()), ..Book::default() };
        note_observation(&mut failed, true, t0, &c, &n);
        assert!(!failed.failed && failed.streak == 0 && failed.last_error.is_none());
        assert_eq!(observed_state(false, true, false), VserverState::Failed);
        assert_eq!(observed_state(false, true, true), VserverState::Error);
        assert_eq!(observed_state(false, false, true), VserverState::Error);
        assert_eq!(observed_state(true, true, true), VserverState::Running);
        assert_eq!(observed_state(false, false, false), VserverState::Stopped);
    }

    #[tokio::test]
    async fn the_failure_accounts_land_on_disk_and_a_clear_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failures.json");
        assert!(load_accounts(&path).unwrap().is_empty(), "no file: no account");
        let accounts = Accounts { path: path.clone(), map: StdMutex::default(), write: AsyncMutex::new(()) };
        accounts.update(&name("web"), |a| a.restarted_unix_ms.push(5)).await.unwrap();
        accounts.update(&name("web"), |a| a.error = Some("restarted 1 times in 60 s".into())).await.unwrap();
        let on_disk = load_accounts(&path).unwrap();
        assert_eq!(on_disk["web"].restarted_unix_ms, vec![5]);
        assert_eq!(on_disk["web"].error.as_deref(), Some("restarted 1 times in 60 s"));
        let old = accounts.set(&name("web"), None).await.unwrap().unwrap();
        assert_eq!(old.restarted_unix_ms, vec![5]);
        assert!(load_accounts(&path).unwrap().is_empty() && accounts.get(&name("web")).is_none());
    }

    #[test]
    fn the_commands_exit_codes_map_to_errors() {
        let n = name("web");
        assert!(outcome(&n, Some(0), "vserver: warning: w").is_ok());
        assert!(matches!(outcome(&n, Some(3), ""), Err(SupervisorError::NotRunning(x)) if x == "web"));
        assert!(matches!(outcome(&n, Some(4), ""), Err(SupervisorError::AlreadyRunning(_))));
        assert!(matches!(outcome(&n, Some(5), ""), Err(SupervisorError::NotFound(_))));
        let e = outcome(&n, Some(6), "vserver: warning: w\nvserver: error: /etc/vservers/web.conf:3: bad\n");
        assert!(
            matches!(&e, Err(SupervisorError::BadConf { message, .. }) if message == "/etc/vservers/web.conf:3: bad")
        );
        let e = outcome(&n, Some(1), "vserver: error: vserver web: launcher failed\n");
        assert_eq!(e.unwrap_err().to_string(), "vserver web: launcher failed");
        let e = outcome(&n, Some(1), "  thread panicked\n");
        assert!(matches!(&e, Err(SupervisorError::Failed { message, .. }) if message == "thread panicked"));
        let e = outcome(&n, None, "");
        assert!(matches!(&e, Err(SupervisorError::Failed { message, .. }) if message.contains("signal")));
        let e = outcome(&n, Some(7), "");
        assert!(matches!(&e, Err(SupervisorError::Refused { message, .. }) if message.contains("exited with 7")));
    }

    #[test]
    fn the_announcement_reaches_an_unspecified_listen_address_through_loopback() {
        let text = "node = \"h1\"\nlisten = \"0.0.0.0:7070\"\nsecret_file = \"/nonexistent/secret\"\n";
        let config = AgentConfig::parse(Path::new("agent.toml"), text).unwrap();
        let ann = announcement(&config, std::process::id());
        assert_eq!(ann.url, "http://127.0.0.1:7070");
        assert_eq!((ann.node.as_str(), ann.pid), ("h1", std::process::id() as i32));
        let json = serde_json::to_value(&ann).unwrap();
        assert_eq!(json["secret_file"], "/nonexistent/secret");
        let back: Announcement = serde_json::from_value(json).unwrap();
        assert_eq!(back, ann);
        assert!(back.alive());
    }

    #[test]
    fn the_command_gets_the_hosts_directories_and_no_agent() {
        let dirs = Dirs {
            vservers_dir: "/vs".into(),
            conf_dir: "/conf".into(),
            run_dir: "/run/x".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "h1".into(),
        };
        let c = VserverCommand::new(Some("/opt/vserver".into()), &dirs);
        assert_eq!(c.bin, PathBuf::from("/opt/vserver"));
        let env: HashMap<_, _> = c.env.iter().cloned().collect();
        assert_eq!(env["VSERVER_NO_AGENT"], "1");
        assert_eq!(env["VSERVER_CONF_DIR"], "/conf");
        assert_eq!(env["VSERVER_CGROUP_PARENT"], "h1");
        assert_eq!(env["VSERVER_RUN_DIR"], "/run/x");
        assert_eq!(env["VSERVER_VSERVERS_DIR"], "/vs");
    }

    #[tokio::test]
    async fn the_command_runs_as_a_child_and_its_exit_code_is_read() {
        // A stand-in for the vserver command: a shell script echoing its arguments and environment.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("vserver");
        std::fs::write(
            &bin,
            "#!/bin/sh\n[ \"$VSERVER_NO_AGENT\" = 1 ] || exit 9\n\
             case \"$2\" in start) exit 0;; stop) exit 3;; *) echo \"vserver: error: no $2 for $1\" >&2; exit 1;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // A fork in another test thread may briefly hold the script open for writing (ETXTBSY): wait it out.
        for _ in 0..100 {
            match std::process::Command::new(&bin).env("VSERVER_NO_AGENT", "1").args(["web", "start"]).status() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(10)),
                r => {
                    assert!(r.unwrap().success());
                    break;
                }
            }
        }
        let dirs = Dirs {
            vservers_dir: dir.path().into(),
            conf_dir: dir.path().into(),
            run_dir: dir.path().into(),
            cgroup_root: dir.path().into(),
            cgroup_parent: "x".into(),
        };
        let c = VserverCommand::new(Some(bin), &dirs);
        let n = name("web");
        assert!(c.run(&n, "start").await.is_ok());
        assert!(matches!(c.run(&n, "stop").await, Err(SupervisorError::NotRunning(_))));
        let e = c.run(&n, "restart").await.unwrap_err();
        assert_eq!(e.to_string(), "vserver web: no restart for web");
        let missing = VserverCommand::new(Some(dir.path().join("nope")), &dirs);
        let e = missing.run(&n, "start").await.unwrap_err();
        assert!(e.to_string().contains("cannot run"), "{e}");
    }
}
