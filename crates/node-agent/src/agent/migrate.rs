//! `vserver NAME migrate HOST` (`POST /v1/vservers/NAME/migrate`) on this host: the checks that need no wait,
//! the migrate's status (`GET .../migration`) and its event, and this host's side of the phases that
//! [`failover::migrate::run`] drives (the source); the target's side (`preflight`, `promote`).

use std::sync::Arc;
use std::time::Instant;

use failover::placement::Placement;
use failover::rsync::Moved;
use failover::store::GenerationMeta;
use failover::wire::{ConfFile, Preflight, PromoteRequest, PromoteTimes};
pub use failover::wire::{MigrateRequest, MigrationStatus};
use isolate::VserverName;

use super::node::Agent;
use super::replication::now_ms;
use super::supervisor::SupervisorError;
use crate::model::{PeerState, VserverState, VserverStatus};

/// Starts a migrate in the background after the checks that need no wait; its progress is in
/// [`Migrations`]. Refused (with nothing changed) if the vserver is unknown here, not primary here, already
/// migrating, or the target is not a live peer.
pub async fn start(
    agent: &Arc<Agent>,
    name: &VserverName,
    req: MigrateRequest,
) -> Result<MigrationStatus, MigrateError> {
    let node = agent.config.node.clone();
    if req.target == node {
        return Err(MigrateError::BadRequest(format!("{name} already runs on {node}")));
    }
    let Some(peer) = agent.membership.peers().into_iter().find(|p| p.name == req.target) else {
        let known: Vec<String> = agent.config.peers.iter().map(|p| p.name.clone()).collect();
        return Err(MigrateError::BadRequest(format!(
            "unknown host {:?} (the peers of {node}: {})",
            req.target,
            known.join(", ")
        )));
    };
    if peer.state != PeerState::Alive {
        return Err(MigrateError::Conflict(format!(
            "target {} is {} (no recent heartbeat); nothing was stopped",
            req.target,
            serde_json::to_value(peer.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        )));
    }
    let status = agent.supervisor.get(name).await.map_err(MigrateError::Supervisor)?;
    let placement = agent
        .replication
        .placement(name)
        .ok_or_else(|| MigrateError::NotFound(format!("{name} is not in the cluster configuration")))?;
    if placement.primary != node {
        return Err(MigrateError::Conflict(format!("{name}'s primary is {}, not this host", placement.primary)));
    }
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
    tokio::spawn(async move {
        let url = agent2.config.peers.iter().find(|p| p.name == req.target).map(|p| p.url.clone()).unwrap_or_default();
        let source = AgentSource { agent: Arc::clone(&agent2), name: name2.clone(), url, placement, hold };
        let result = failover::migrate::run(&source, &req.target, was_running).await;
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
        let (store, vdir, cdir, n) =
            (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
        match tokio::task::spawn_blocking(move || store.keep(&n, &vdir, &cdir, meta)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warnings.push(format!("cannot keep this host's copy as a replica: {e}")),
            Err(e) => warnings.push(e.to_string()),
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

/// The target's side: promote the current replica to the running tree and start it (if asked). A failed start
/// puts the tree back as the current replica, so the target is as before.
///
/// One promote of a vserver at a time, never during a sync or a migrate of it here (its replication lock). A
/// promote at the epoch the vserver already runs at here is a success (asked twice: its answer was lost, or
/// the coordinator asked again). A promote that starts the vserver (a migrate's, a takeover's, or one asked
/// again) is refused once the cluster's event log no longer means the vserver to run: an operator's stop
/// recorded since its sender read the log (while the request was on its way, or its sender was paused)
/// outweighs it.
pub async fn promote(
    agent: &Arc<Agent>,
    name: &VserverName,
    req: PromoteRequest,
) -> Result<(VserverStatus, PromoteTimes), MigrateError> {
    if agent.config.witness {
        return Err(MigrateError::Conflict("this host is a witness: it runs no vservers".into()));
    }
    let _serial = agent.replication.vserver_lock(name).lock_owned().await;
    if let Some(epoch) = req.epoch {
        failover::migrate::wait_for_epoch(&agent.ownership, &agent.config.node, name.as_str(), epoch)
            .await
            .map_err(MigrateError::Conflict)?;
    }
    let mut times = PromoteTimes::default();
    let promoting = Instant::now();
    let dirs = agent.supervisor.host().dirs.clone();
    if dirs.conf(name).exists() || dirs.root(name).exists() {
        if req.epoch.is_some() {
            // The table gives it to this host at that epoch (checked above): running already is what was asked.
            if let Some(st) = agent.supervisor.get(name).await.ok().filter(|st| st.state == VserverState::Running) {
                tracing::info!(vserver = %name, epoch = req.epoch, "promote asked again: it runs here already");
                return Ok((st, times));
            }
        }
        return Err(MigrateError::Conflict(format!("{name} already exists on this host; nothing was changed")));
    }
    if req.start {
        let events = agent.ownership.events();
        if !failover::events::meant_to_run(&events, name.as_str(), None) {
            return Err(MigrateError::Conflict(format!(
                "the cluster no longer means {name} to run (an operator's stop, a halt or a failure limit is \
                 recorded since it was given to this host); nothing was changed"
            )));
        }
    }
    let (store, vdir, cdir, n) =
        (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
    let meta = tokio::task::spawn_blocking(move || store.promote(&n, &vdir, &cdir))
        .await
        .map_err(|e| {
            MigrateError::Supervisor(SupervisorError::Failed { name: name.to_string(), message: e.to_string() })
        })?
        .map_err(|e| match e {
            failover::store::StoreError::NoReplica(_) => MigrateError::NotFound(e.to_string()),
            failover::store::StoreError::Exists(_) => MigrateError::Conflict(e.to_string()),
            other => {
                MigrateError::Supervisor(SupervisorError::Failed { name: name.to_string(), message: other.to_string() })
            }
        })?;
    tracing::info!(vserver = %name, source = %req.source, "replica promoted to the running tree");
    times.promote_ms = Some(promoting.elapsed().as_millis() as u64);
    if !req.start {
        return agent.supervisor.get(name).await.map(|st| (st, times)).map_err(MigrateError::Supervisor);
    }
    let starting = Instant::now();
    match agent.supervisor.start(name).await {
        Ok(st) => {
            times.start_ms = Some(starting.elapsed().as_millis() as u64);
            agent.announce_after_move(name);
            Ok((st, times))
        }
        Err(e) => {
            tracing::warn!(vserver = %name, error = %e, "start after promote failed; the replica is put back");
            let _ = agent.supervisor.record_intent(name, crate::model::Intent::Stopped).await;
            let (store, vdir, cdir, n) =
                (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
            let back = tokio::task::spawn_blocking(move || store.keep(&n, &vdir, &cdir, meta)).await;
            if !matches!(back, Ok(Ok(_))) {
                tracing::error!(vserver = %name, "cannot put the replica back after a failed start: {back:?}");
            }
            Err(MigrateError::Supervisor(e))
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
