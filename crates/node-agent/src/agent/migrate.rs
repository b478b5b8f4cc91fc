//! `vserver NAME migrate HOST` (`POST /v1/vservers/NAME/migrate`), run by the source agent:
//!
//! 1. checks, before anything stops: the target is a live peer, has no such vserver, has room and a usable
//!    rsync; the vserver is held (no restart, no operator operation) and its syncs are locked out;
//! 2. pre-copies while it runs, pass after pass, until a pass moves little or the pass limit is reached;
//! 3. stops it; a final pass of the tree in which any rsync error aborts; the commit (carrying the conf) makes
//!    the copy the target's current replica;
//! 4. the target promotes that replica to its running tree and starts the vserver (its addresses come up
//!    there, announced by gratuitous ARP and neighbour advertisement) and confirms it runs;
//! 5. the new placement is recorded (the target primary, this host its first standby), and this host keeps its
//!    tree as its replica, so replication runs the other way from the next interval.
//!
//! If a step before the target's start fails, the vserver runs again here and nothing is lost: this host's tree
//! and conf were never touched. The outage is the time from the stop to the target confirming the start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use failover::peer::describe;
use failover::placement::Placement;
use failover::promote::PromoteOutcome;
use failover::store::GenerationMeta;
use failover::wire::{BeginRequest, CommitRequest, Preflight, PromoteRequest, PromoteTimes};
pub use failover::wire::{MigrateRequest, MigrationStatus};
use isolate::VserverName;

use super::replication::now_ms;
use super::supervisor::SupervisorError;
use super::Agent;
use crate::model::{PeerState, VserverState, VserverStatus};

/// Pre-copy passes at most, before the stop.
const MAX_PRECOPY_PASSES: u32 = 5;
/// How long a migrate asks the target again what it runs when the answer to its promote was lost.
const ASK_AGAIN: Duration = Duration::from_secs(15);
/// A pre-copy pass that moved less than this ends the pre-copy.
const SMALL_PASS_BYTES: u64 = 16 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The migrates of this host (as source), the running one and the last of each vserver.
#[derive(Default)]
pub struct Migrations {
    table: Mutex<BTreeMap<VserverName, MigrationStatus>>,
}

impl Migrations {
    /// The last (or running) migrate of `name`.
    pub fn get(&self, name: &VserverName) -> Option<MigrationStatus> {
        lock(&self.table).get(name).cloned()
    }

    fn update(&self, name: &VserverName, f: impl FnOnce(&mut MigrationStatus)) {
        if let Some(m) = lock(&self.table).get_mut(name) {
            f(m);
        }
    }
}

/// How long a migrate waits, before it copies or stops anything, for a target that does not hold its lease
/// yet (a host just back wins it within a second or two; after a takeover of its vservers, once the voters'
/// promise not to acknowledge it has run out).
const TARGET_LEASE_WAIT: Duration = Duration::from_secs(10);

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
    {
        let mut table = lock(&agent.migrations.table);
        if table.get(name).is_some_and(|m| !m.finished) {
            return Err(MigrateError::Conflict(format!("a migrate of {name} is already running")));
        }
        table.insert(
            name.clone(),
            MigrationStatus {
                vserver: name.to_string(),
                source: node.clone(),
                target: req.target.clone(),
                phase: "checking".into(),
                started_unix_ms: now_ms(),
                ..Default::default()
            },
        );
    }
    let (agent2, name2) = (Arc::clone(agent), name.clone());
    let was_running = status.state == VserverState::Running;
    tokio::spawn(async move {
        let result = run(&agent2, &name2, &req.target, placement, was_running, hold).await;
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
            agent2.log_event_later(kind, Some(name2.as_str()), text);
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

/// The migrate itself; `Ok(outage)` (none if the vserver was not running), or what failed and what was done.
async fn run(
    agent: &Arc<Agent>,
    name: &VserverName,
    target: &str,
    placement: Placement,
    was_running: bool,
    hold: super::supervisor::Hold,
) -> Result<Option<Duration>, String> {
    let replication = Arc::clone(&agent.replication);
    let migrations = &agent.migrations;
    let phase_start = Mutex::new(Instant::now());
    let enter = |phase: &str| {
        let elapsed = std::mem::replace(&mut *lock(&phase_start), Instant::now()).elapsed();
        migrations.update(name, |m| {
            if !m.phase.is_empty() {
                m.phases_ms.push((m.phase.clone(), elapsed.as_millis() as u64));
            }
            m.phase = phase.to_string();
        });
    };
    let peer = agent.config.peers.iter().find(|p| p.name == target).expect("checked a peer");
    let peers = &agent.peers;

    // 1. Checks on the target, and room for the tree.
    let dirs = agent.supervisor.host().dirs.clone();
    let tree = dirs.root(name);
    let tree_bytes = {
        let t = tree.clone();
        tokio::task::spawn_blocking(move || failover::store::disk_usage(&t)).await.map_err(|e| e.to_string())?
    };
    migrations.update(name, |m| m.tree_bytes = tree_bytes);
    let ask = async || -> Result<Preflight, String> {
        describe(peers.preflight(target, name.as_str()).await, "preflight", target)
    };
    let mut pre = ask().await?;
    // A target without its lease would refuse the start after this host stopped the vserver: wait for it
    // before anything is stopped.
    let (waiting, mut said) = (Instant::now(), false);
    while pre.lease_left_ms == Some(0) {
        if waiting.elapsed() >= TARGET_LEASE_WAIT {
            return Err(format!(
                "{target} does not hold its lease (no majority of the cluster acknowledges it) after {} s; it \
                 could start nothing; nothing was stopped",
                TARGET_LEASE_WAIT.as_secs()
            ));
        }
        if !said {
            said = true;
            enter("waiting for the target's lease");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        pre = ask().await?;
    }
    if pre.present {
        return Err(format!("{target} already has {name} (configured or running); nothing was stopped"));
    }
    if let Some(e) = &pre.rsync_error {
        return Err(format!("{target} has no usable rsync ({e}); nothing was stopped"));
    }
    // The copy goes into the target's generation that is not current: what it holds already is mostly
    // rewritten in place, file by file (rsync's temporary copy of a file needs that file's size again).
    let needed = (tree_bytes + tree_bytes / 10).saturating_sub(pre.staging_bytes);
    if pre.free_bytes < needed {
        return Err(format!(
            "{target} has {} MiB free for replicas, {name} needs about {} MiB; nothing was stopped",
            pre.free_bytes >> 20,
            needed >> 20
        ));
    }
    // Keep syncs out (waiting for one under way).
    let vlock = replication.vserver_lock(name);
    let _sync_guard = vlock.lock().await;

    // 2. Pre-copy while it runs.
    enter("precopy");
    let begin_req = BeginRequest { source: agent.config.node.clone() };
    let begin = describe(peers.begin(target, name.as_str(), &begin_req).await, "begin", target)?;
    let session = begin.session.clone();
    let abort = || async {
        let req =
            CommitRequest { session: session.clone(), started_unix_ms: 0, consistent: false, kind: None, conf: None };
        let _ = peers.abort(target, name.as_str(), &req, failover::peer::CONTROL_TIMEOUT).await;
    };
    let progress = |bytes: u64| migrations.update(name, |m| m.pass_bytes = bytes);
    let mut pass = 0;
    let mut mark;
    loop {
        pass += 1;
        // Whatever changes from here on has a newer inode change time: the final pass looks for that alone.
        mark = failover::changes::ClockMark::now();
        migrations.update(name, |m| {
            m.pass = pass;
            m.pass_bytes = 0;
        });
        let moved = match replication.copy_tree(agent, name, target, &peer.url, &session, true, &progress).await {
            Ok(stats) => stats,
            Err(e) => {
                abort().await;
                return Err(format!("pre-copy pass {pass} failed: {e}; {name} kept running here"));
            }
        };
        migrations.update(name, |m| m.bytes_sent += moved.bytes_sent);
        if moved.transferred_bytes < SMALL_PASS_BYTES.max(tree_bytes / 100) || pass >= MAX_PRECOPY_PASSES {
            break;
        }
    }

    // 3. Stop, final pass.
    enter("stopping");
    let stopped_at = Instant::now();
    let started_unix_ms = now_ms();
    let restart_here = |why: String| {
        let hold = &hold;
        async move {
            if !was_running {
                return format!("{why}; {name} was not running, and stays here");
            }
            match agent.supervisor.run_held(hold, "start").await {
                Ok(()) => format!("{why}; {name} runs here again"),
                Err(e) => format!("{why}; and {name} could not be started here again: {e}"),
            }
        }
    };
    if was_running {
        if let Err(e) = agent.supervisor.run_held(&hold, "stop").await {
            abort().await;
            return Err(restart_here(format!("cannot stop {name} here: {e}")).await);
        }
    }
    enter("final");
    let final_pass = async {
        let (moved, how) = replication.copy_changes(agent, name, target, &peer.url, &session, mark, &progress).await?;
        tracing::info!(vserver = %name, target, "final pass: {how}");
        migrations.update(name, |m| m.final_pass = Some(how));
        let conf = replication.conf_for_commit(agent, name, target, &peer.url, &session).await?;
        let commit = CommitRequest {
            session: session.clone(),
            started_unix_ms,
            consistent: true,
            kind: Some("migrate".into()),
            conf,
        };
        let _: GenerationMeta = describe(peers.commit(target, name.as_str(), &commit).await, "commit", target)?;
        Ok::<_, String>(moved)
    };
    match final_pass.await {
        Ok(moved) => migrations.update(name, |m| m.bytes_sent += moved.bytes_sent),
        Err(e) => {
            abort().await;
            return Err(restart_here(format!("final pass failed: {e}")).await);
        }
    }

    // 4. Promote and start on the target.
    enter("starting");
    // The cluster records the new owner before anything starts there; without a majority, nothing moves.
    let own = agent.ownership.get();
    let mut epoch = None;
    if let Some(own) = own {
        let mut recorded = own.set_owner(name.as_str(), target, own.epoch(name.as_str())).await;
        // This host's copy of the table may lag the leader's by a Raft heartbeat: when the cluster says this
        // host owns it still, at a newer epoch, asked again from that epoch.
        if let Err(failover::ownership::OwnershipError::StaleEpoch { current, owner: Some(owner), .. }) = &recorded {
            if *owner == agent.config.node {
                recorded = own.set_owner(name.as_str(), target, *current).await;
            }
        }
        match recorded {
            Ok((_, e)) => epoch = Some(e),
            Err(e) => {
                abort().await;
                return Err(restart_here(format!("the cluster did not record {target} as the owner: {e}")).await);
            }
        }
    }
    let source = agent.config.node.clone();
    let req = PromoteRequest { source, start: was_running, epoch };
    match failover::promote::promote_on(peers, target, name.as_str(), &req, ASK_AGAIN).await {
        PromoteOutcome::Running(_) => {}
        PromoteOutcome::Refused(why) => {
            if let Some(own) = own {
                let here = &agent.config.node;
                if let Err(e) = own.set_owner(name.as_str(), here, own.epoch(name.as_str())).await {
                    tracing::warn!(vserver = %name, error = %e, "cannot record this host as the owner again");
                }
                // While the table named the target, the placement here may have followed it: back at once, so
                // that nothing (a new migrate) finds it pointing at the target meanwhile.
                if let Some(p) = agent.replication.placement(name).filter(|p| p.primary != *here) {
                    if let Err(e) = agent.replication.record_placement(name, p.moved_to(here)) {
                        tracing::warn!(vserver = %name, error = %e, "cannot record the placement here again");
                    }
                }
            }
            return Err(restart_here(format!("start on {target} failed: {why}")).await);
        }
        PromoteOutcome::Unknown(why) => {
            // Never two copies: whether it started there is not known, so it is not started here, and its
            // intent here becomes "stopped" so that the agent does not restart it either.
            let _ = agent.supervisor.record_intent(name, crate::model::Intent::Stopped).await;
            return Err(format!(
                "no answer from {target} about the start ({why}); {name} is stopped here and may be running on \
                 {target}: check there (vserver-stat, GET /v1/status) before starting it anywhere"
            ));
        }
    }
    let outage = was_running.then(|| stopped_at.elapsed());

    // 5. Record the new placement; keep this host's tree as its replica.
    enter("recording");
    let moved = placement.moved_to(target);
    let mut warnings = spread_placement(agent, name, &moved).await;
    let meta = GenerationMeta {
        source: agent.config.node.clone(),
        started_unix_ms,
        finished_unix_ms: now_ms(),
        conf_sha256: String::new(),
        consistent: true,
        kind: "kept".into(),
    };
    let (store, vdir, cdir, n) =
        (replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
    match tokio::task::spawn_blocking(move || store.keep(&n, &vdir, &cdir, meta)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warnings.push(format!("cannot keep this host's copy as a replica: {e}")),
        Err(e) => warnings.push(e.to_string()),
    }
    if let Err(e) = agent.supervisor.record_intent(name, crate::model::Intent::Stopped).await {
        warnings.push(e.to_string());
    }
    drop(hold);
    enter("done");
    if !warnings.is_empty() {
        tracing::warn!(vserver = %name, "migrate done with warnings: {}", warnings.join("; "));
        migrations.update(name, |m| m.error = Some(format!("done, with warnings: {}", warnings.join("; "))));
    }
    Ok(outage)
}

/// Records a new placement here and sends it to every other host it names; what did not work.
pub async fn spread_placement(agent: &Agent, name: &VserverName, moved: &Placement) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = agent.replication.record_placement(name, moved.clone()) {
        warnings.push(format!("cannot record the placement here: {e}"));
    }
    let mut sends = tokio::task::JoinSet::new();
    for host in moved.standbys.iter().chain([&moved.primary]).filter(|h| **h != agent.config.node) {
        if !agent.peers.knows(host) {
            continue;
        }
        let (peers, host, name, moved) = (agent.peers.clone(), host.clone(), name.to_string(), moved.clone());
        sends.spawn(async move {
            let sent = peers.placement(&host, &name, &moved, Duration::from_secs(5)).await;
            (host, matches!(sent, Ok(Ok(()))))
        });
    }
    for (host, ok) in sends.join_all().await {
        if !ok {
            warnings.push(format!(
                "{host} did not take the new placement; it keeps the old one until it is sent the new one again"
            ));
        }
    }
    warnings
}

/// The target's side: promote the current replica to the running tree and start it (if asked). A failed start
/// puts the tree back as the current replica, so the target is as before.
pub async fn promote(
    agent: &Arc<Agent>,
    name: &VserverName,
    req: PromoteRequest,
) -> Result<(VserverStatus, PromoteTimes), MigrateError> {
    if agent.config.witness {
        return Err(MigrateError::Conflict("this host is a witness: it runs no vservers".into()));
    }
    if let (Some(epoch), Some(own)) = (req.epoch, agent.ownership.get()) {
        wait_for_epoch(own, &agent.config.node, name, epoch).await?;
    }
    let mut times = PromoteTimes::default();
    let promoting = Instant::now();
    let dirs = agent.supervisor.host().dirs.clone();
    if dirs.conf(name).exists() || dirs.root(name).exists() {
        return Err(MigrateError::Conflict(format!("{name} already exists on this host; nothing was changed")));
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

/// Waits (up to 5 s) until this host's copy of the ownership table gives `name` to `me` at `epoch`; refused
/// when the table is past that epoch, or gives that epoch to another host.
async fn wait_for_epoch(
    own: &failover::ownership::Ownership,
    me: &str,
    name: &VserverName,
    epoch: u64,
) -> Result<(), MigrateError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match own.owner(name.as_str()) {
            Some((owner, e)) if e == epoch && owner == me => return Ok(()),
            Some((owner, e)) if e >= epoch => {
                return Err(MigrateError::Conflict(format!(
                    "stale ownership epoch {epoch}: the cluster gives {name} to {owner} at epoch {e}; nothing was \
                     changed"
                )))
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(MigrateError::Conflict(format!(
                "this host's ownership table has not reached epoch {epoch} of {name} (at {}); nothing was changed",
                own.epoch(name.as_str())
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    let lease_left_ms = super::watchdog::start_lease(agent).map(|d| d.as_millis() as u64);
    Preflight { free_bytes, rsync, rsync_error, present, staging_bytes, lease_left_ms }
}
