//! `vserver NAME migrate HOST` (`POST /v1/vservers/NAME/migrate`) on this host: the checks that need no wait,
//! the migrate's status (`GET .../migration`) and its event, and this host's side of the phases that
//! [`failover::migrate::run`] drives (the source); the target's side (`preflight`, `promote`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use failover::placement::Placement;
use failover::promote::{Present, PromoteError};
use failover::rsync::Moved;
use failover::store::{GenerationMeta, StoreError};
use failover::wire::{ConfFile, Preflight, PromoteRequest, PromoteTimes};
pub use failover::wire::{MigrateRequest, MigrationStatus};
use isolate::VserverName;

use super::node::Agent;
use super::replication::now_ms;
use super::supervisor::SupervisorError;
use crate::model::{VserverState, VserverStatus};

/// Starts a migrate in the background after the checks that need no wait; its progress is in
/// [`Migrations`]. Refused (with nothing changed) if the vserver is unknown here, not primary here, already
/// migrating, or the target is not a live peer.
pub async fn start(
    agent: &Arc<Agent>,
    name: &VserverName,
    req: MigrateRequest,
) -> Result<MigrationStatus, MigrateError> {
    let node = agent.config.node.clone();
    let placed = agent.replication.placement(name);
    let placement =
        failover::migrate::admit(&node, name.as_str(), &req.target, &agent.membership.peers(), placed.as_ref())
            .cloned()
            .map_err(|e| {
                if e.is_bad_request() {
                    MigrateError::BadRequest(e.to_string())
                } else if e.is_unknown() {
                    MigrateError::NotFound(e.to_string())
                } else {
                    MigrateError::Conflict(e.to_string())
                }
            })?;
    let status = agent.supervisor.get(name).await.map_err(MigrateError::Supervisor)?;
    // Held from here (no restart by the check loop, operators told it is moving) until the migrate ends.
    let hold = match agent.supervisor.hold(name).await {
        Ok(h) => h,
        Err(SupervisorError::Busy(_)) => {
            return Err(MigrateError::Conflict(format!("a migrate of {name} is already running")))
        }
        Err(e) => return Err(MigrateError::Supervisor(e)),
    };
    let status_now = MigrationStatus {
        vserver: name.to_string(),
        source: node.clone(),
        target: req.target.clone(),
        phase: "checking".into(),
        started_unix_ms: now_ms(),
        ..Default::default()
    };
    if !agent.migrations.begin(name, status_now) {
        return Err(MigrateError::Conflict(format!("a migrate of {name} is already running")));
    }
    let (agent2, name2) = (Arc::clone(agent), name.clone());
    let was_running = status.state == VserverState::Running;
    // Down but meant to run (killed by its keepers, fenced, waiting for its restart): started on the target.
    let meant_here = status.intent == crate::model::Intent::Running;
    tokio::spawn(async move {
        let url = agent2.peers.url(&req.target).unwrap_or_default();
        let source = AgentSource { agent: Arc::clone(&agent2), name: name2.clone(), url, placement, hold };
        let result = failover::migrate::run(&source, &req.target, was_running, meant_here).await;
        drop(source);
        agent2.migrations.update(&name2, |m| {
            m.finished = true;
            match result {
                Ok(outage) => {
                    m.phase = "done".into();
                    m.outage_ms = outage.map(|o| o.as_millis() as u64);
                }
                Err(e) => {
                    m.phase = "failed".into();
                    m.error = Some(e);
                }
            }
        });
        if let Some(m) = agent2.migrations.get(&name2) {
            match &m.error {
                None => tracing::info!(vserver = %name2, target = %m.target, outage_ms = ?m.outage_ms, "migrate done"),
                Some(e) => tracing::error!(vserver = %name2, target = %m.target, error = %e, "migrate failed"),
            }
            let phases: Vec<String> = m.phases_ms.iter().map(|(p, ms)| format!("{p} {ms} ms")).collect();
            let (kind, text) = if m.phase == "done" {
                let outage =
                    m.outage_ms.map_or("no outage (it was not running)".to_string(), |o| format!("outage {o} ms"));
                let warnings = m.error.as_deref().map(|w| format!("; {w}")).unwrap_or_default();
                (
                    super::events::kinds::MIGRATE,
                    format!(
                        "{name2} migrated from {} to {}: {outage} (phases: {}){warnings}",
                        m.source,
                        m.target,
                        phases.join(", ")
                    ),
                )
            } else {
                (
                    super::events::kinds::MIGRATE_FAILED,
                    format!(
                        "migrate of {name2} from {} to {} failed: {}",
                        m.source,
                        m.target,
                        m.error.as_deref().unwrap_or("unknown error")
                    ),
                )
            };
            agent2.events.log_later(kind, Some(name2.as_str()), text);
        }
    });
    Ok(agent.migrations.get(name).expect("just inserted"))
}

/// Why a migrate was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Bad input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Unknown vserver (404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the state (409).
    #[error("{0}")]
    Conflict(String),
    /// From the supervisor (its own status).
    #[error(transparent)]
    Supervisor(SupervisorError),
}

/// The source's side of one migrate, for [`failover::migrate::run`]: the vserver held (no restart by the
/// check loop, operators told it is moving) until it is dropped.
struct AgentSource {
    agent: Arc<Agent>,
    name: VserverName,
    url: String,
    placement: Placement,
    hold: super::supervisor::Hold,
}

impl failover::migrate::Source for AgentSource {
    type Peers = failover::peer::PeerClient;
    type Table = failover::ownership::Ownership;
    type SyncGuard = tokio::sync::OwnedMutexGuard<()>;

    fn node(&self) -> &str {
        &self.agent.config.node
    }
    fn vserver(&self) -> &str {
        self.name.as_str()
    }
    fn data_path(&self) -> failover::placement::DataPath {
        self.agent.replication.data_path(&self.name)
    }
    fn peers(&self) -> &Self::Peers {
        &self.agent.peers
    }
    fn table(&self) -> Option<&Self::Table> {
        Some(&self.agent.ownership)
    }
    fn update(&self, f: impl FnOnce(&mut MigrationStatus)) {
        self.agent.migrations.update(&self.name, f);
    }
    async fn tree_bytes(&self) -> Result<u64, String> {
        let tree = self.agent.supervisor.host().dirs.root(&self.name);
        tokio::task::spawn_blocking(move || failover::store::disk_usage(&tree)).await.map_err(|e| e.to_string())
    }
    async fn lock_out_syncs(&self) -> Self::SyncGuard {
        self.agent.replication.vserver_lock(&self.name).lock_owned().await
    }
    async fn copy_tree(
        &self,
        target: &str,
        session: &str,
        live: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Moved, String> {
        self.agent.replication.copy_tree(&self.name, target, &self.url, session, live, progress).await
    }
    async fn copy_changes(
        &self,
        target: &str,
        session: &str,
        mark: failover::changes::ClockMark,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Moved, String), String> {
        let agent = &self.agent;
        let moved = agent.replication.copy_changes(&self.name, target, &self.url, session, mark, progress).await;
        if let Ok((_, how)) = &moved {
            tracing::info!(vserver = %self.name, target, "final pass: {how}");
        }
        moved
    }
    async fn conf_for_commit(&self, target: &str, session: &str) -> Result<Option<Vec<ConfFile>>, String> {
        self.agent.replication.conf_for_commit(&self.name, target, &self.url, session).await
    }
    async fn stop(&self) -> Result<(), String> {
        self.agent.supervisor.run_held(&self.hold, "stop").await.map_err(|e| e.to_string())
    }
    async fn start(&self) -> Result<(), String> {
        self.agent.supervisor.run_held(&self.hold, "start").await.map_err(|e| e.to_string())
    }
    async fn stay_stopped(&self) {
        let _ = self.agent.supervisor.record_intent(&self.name, crate::model::Intent::Stopped).await;
    }
    fn placement_back(&self) {
        let (agent, here) = (&self.agent, &self.agent.config.node);
        if let Some(p) = agent.replication.placement(&self.name).filter(|p| p.primary != *here) {
            if let Err(e) = agent.replication.record_placement(&self.name, p.moved_to(here)) {
                tracing::warn!(vserver = %self.name, error = %e, "cannot record the placement here again");
            }
        }
    }
    async fn hand_over(&self, target: &str, started_unix_ms: u64) -> Vec<String> {
        let (agent, name) = (&self.agent, &self.name);
        let moved = self.placement.moved_to(target);
        let mut warnings = spread_placement(agent, name, &moved).await;
        let meta = GenerationMeta {
            source: agent.config.node.clone(),
            started_unix_ms,
            finished_unix_ms: now_ms(),
            conf_sha256: String::new(),
            consistent: true,
            kind: "kept".into(),
        };
        let dirs = agent.supervisor.host().dirs.clone();
        if let Some(shared) = agent.replication.data_path(name).shared_dir().map(Path::to_path_buf) {
            // Nothing of it is here but the links to the shared directory, which the target has now.
            let n = name.clone();
            match tokio::task::spawn_blocking(move || super::shared::unlink(&dirs, &shared, &n)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warnings.push(format!("cannot remove this host's links to the shared directory: {e}")),
                Err(e) => warnings.push(e.to_string()),
            }
        } else {
            let (store, vdir, cdir, n) =
                (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
            match tokio::task::spawn_blocking(move || store.keep(&n, &vdir, &cdir, meta)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warnings.push(format!("cannot keep this host's copy as a replica: {e}")),
                Err(e) => warnings.push(e.to_string()),
            }
        }
        if let Err(e) = agent.supervisor.record_intent(name, crate::model::Intent::Stopped).await {
            warnings.push(e.to_string());
        }
        warnings
    }
}

/// Records a new placement here and sends it to every other host it names; what did not work.
pub async fn spread_placement(agent: &Agent, name: &VserverName, moved: &Placement) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = agent.replication.record_placement(name, moved.clone()) {
        warnings.push(format!("cannot record the placement here: {e}"));
    }
    warnings.extend(agent.peers.spread_placement(&agent.config.node, name.as_str(), moved).await);
    warnings
}

/// The target's side: promote the current replica to the running tree and start it (if asked), by the rules
/// of [`failover::promote::accept`] (this host's side of them is [`Target`]); its status after.
pub async fn promote(
    agent: &Arc<Agent>,
    name: &VserverName,
    req: PromoteRequest,
) -> Result<(VserverStatus, PromoteTimes), MigrateError> {
    use failover::promote::Refusal;
    let times =
        failover::promote::accept(&Target { agent: Arc::clone(agent), name: name.clone() }, name.as_str(), &req)
            .await
            .map_err(|e| match e {
                Refusal::NoReplica(_) => MigrateError::NotFound(e.to_string()),
                Refusal::Failed(message) => {
                    MigrateError::Supervisor(SupervisorError::Failed { name: name.to_string(), message })
                }
                Refusal::Start(e) => MigrateError::Supervisor(e),
                Refusal::Witness | Refusal::Epoch(_) | Refusal::Exists(_) | Refusal::NotMeant(_) => {
                    MigrateError::Conflict(e.to_string())
                }
            })?;
    if times.start_ms.is_some() {
        agent.announce_after_move(name);
    }
    let st = agent.supervisor.get(name).await.map_err(MigrateError::Supervisor)?;
    Ok((st, times))
}

/// This host as the target of a promote of one vserver ([`failover::promote::accept`]): the `name` the
/// trait's methods are given is that vserver's.
struct Target {
    agent: Arc<Agent>,
    name: VserverName,
}

/// What a promote made the running tree here, for putting it back.
pub enum Promoted {
    /// A replica of the store, with its record.
    Replica(GenerationMeta),
    /// Links to the shared directory.
    Shared(PathBuf),
}

impl failover::promote::Target for Target {
    type Table = failover::ownership::Ownership;
    type Serial = tokio::sync::OwnedMutexGuard<()>;
    type Promoted = Promoted;
    type StartError = SupervisorError;

    fn node(&self) -> &str {
        &self.agent.config.node
    }
    fn witness(&self) -> bool {
        self.agent.config.witness
    }
    fn table(&self) -> &Self::Table {
        &self.agent.ownership
    }
    async fn serialize(&self, _: &str) -> Self::Serial {
        self.agent.replication.vserver_lock(&self.name).lock_owned().await
    }
    async fn present(&self, _: &str) -> Present {
        let name = &self.name;
        let dirs = &self.agent.supervisor.host().dirs;
        if !dirs.conf(name).exists() && !dirs.root(name).exists() {
            return Present::Absent;
        }
        match self.agent.supervisor.get(name).await {
            Ok(st) if st.state == VserverState::Running => Present::Running,
            _ => Present::Stopped,
        }
    }
    async fn promote_replica(&self, _: &str) -> Result<Promoted, PromoteError> {
        let dirs = self.agent.supervisor.host().dirs.clone();
        let n = self.name.clone();
        if let Some(shared) = self.agent.replication.data_path(&n).shared_dir().map(Path::to_path_buf) {
            let linked = shared.clone();
            return tokio::task::spawn_blocking(move || super::shared::link(&dirs, &linked, &n))
                .await
                .map_err(|e| PromoteError::Failed(e.to_string()))?
                .map(|()| Promoted::Shared(shared))
                .map_err(|e| match e {
                    super::shared::LinkError::Missing(e) => PromoteError::NoReplica(e),
                    super::shared::LinkError::Exists(e) => PromoteError::Exists(e),
                    super::shared::LinkError::Failed(e) => PromoteError::Failed(e),
                });
        }
        let store = self.agent.replication.store().clone();
        tokio::task::spawn_blocking(move || store.promote(&n, &dirs.vservers_dir, &dirs.conf_dir))
            .await
            .map_err(|e| PromoteError::Failed(e.to_string()))?
            .map(Promoted::Replica)
            .map_err(|e| match e {
                StoreError::NoReplica(_) => PromoteError::NoReplica(e.to_string()),
                StoreError::Exists(_) => PromoteError::Exists(e.to_string()),
                other => PromoteError::Failed(other.to_string()),
            })
    }
    async fn start(&self, _: &str) -> Result<(), SupervisorError> {
        self.agent.supervisor.start(&self.name).await.map(|_| ())
    }
    async fn put_back(&self, _: &str, promoted: Promoted) {
        let name = &self.name;
        let _ = self.agent.supervisor.record_intent(name, crate::model::Intent::Stopped).await;
        let dirs = self.agent.supervisor.host().dirs.clone();
        let (store, n) = (self.agent.replication.store().clone(), name.clone());
        let back = tokio::task::spawn_blocking(move || match promoted {
            Promoted::Replica(meta) => {
                store.keep(&n, &dirs.vservers_dir, &dirs.conf_dir, meta).map(drop).map_err(|e| e.to_string())
            }
            Promoted::Shared(shared) => super::shared::unlink(&dirs, &shared, &n).map_err(|e| e.to_string()),
        })
        .await;
        if !matches!(back, Ok(Ok(()))) {
            tracing::error!(vserver = %name, "cannot put the replica back after a failed start: {back:?}");
        }
    }
}

/// What the target says before a migrate.
pub async fn preflight(agent: &Arc<Agent>, name: &VserverName) -> Preflight {
    let dirs = agent.supervisor.host().dirs.clone();
    let present = dirs.conf(name).exists() || dirs.root(name).exists();
    let root = agent.replication.store().root().to_path_buf();
    let staging = agent.replication.store().staging_tree(name).ok();
    let rsync_bin = agent.config.rsync_bin.clone().unwrap_or_else(|| "rsync".into());
    let (free_bytes, staging_bytes, rsync) = tokio::task::spawn_blocking(move || {
        let _ = std::fs::create_dir_all(&root);
        let free = nix::sys::statvfs::statvfs(&root).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0);
        let staging_bytes = staging.map_or(0, |t| failover::store::disk_usage(&t));
        // Recent enough for every flag a sync uses (the nanosecond comparison needs it on this side too).
        let rsync = failover::rsync::check_version(&rsync_bin)
            .map(|(a, b, c)| format!("rsync {a}.{b}.{c}"))
            .map_err(|e| e.to_string());
        (free, staging_bytes, rsync)
    })
    .await
    .unwrap_or((0, 0, Err("the check failed".into())));
    let (rsync, rsync_error) = match rsync {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let lease_left_ms = agent.lease.for_starts().map(|d| d.as_millis() as u64);
    Preflight { free_bytes, rsync, rsync_error, present, staging_bytes, lease_left_ms }
}
