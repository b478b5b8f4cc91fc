//! Replication, as the agent runs it: on a primary, each vserver's tree and conf go to its standbys at every
//! interval (and on `vserver NAME sync`); on a standby, a sync session fills the generation that is not
//! current and a commit makes it current (see `failover::store`).
//!
//! One sync of a vserver to one standby: `begin` on the standby (it prepares a generation and opens a
//! session), rsync of the tree (a live pass, where files vanishing is normal), in consistent mode a second pass
//! with the vserver frozen, then `commit`, which carries `NAME.conf` and `NAME.sh` (sent by rsync first when too
//! large to carry). rsync reaches the standby
//! through the tunnel (`tunnel.rs`). Syncs of one vserver never overlap (one lock per vserver, also taken by a
//! migrate); a failed sync leaves the standby's current generation as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use failover::placement::{ClusterConfig, DataPath, Placement, Replication as ReplicationSettings};
use failover::rsync;
use failover::rsync::Moved;
use failover::session::{self, Commit};
use failover::store::{GenerationMeta, ReplicaStore, Staging};
pub use failover::wire::{AbortReply, BeginReply, BeginRequest, CommitRequest, ConfFile};
use isolate::VserverName;
use tokio::sync::Mutex as AsyncMutex;

use super::config::{AgentConfig, TlsConfig};
use super::heartbeat::Membership;
use super::supervisor::Supervisor;
use crate::dirs::Dirs;
use crate::model::{HeldReplica, PeerState, ReplicationStatus, SyncOutcome};

/// Longest wait, at commit, for the receiving rsyncs of a session to end: well under the sender's wait for
/// the commit's answer, so that a commit never lands after the sender gave up on it.
const COMMIT_WAIT: Duration = Duration::from_secs(15);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    isolate::state::now_ms()
}

/// Why a replication step failed, in words.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// A sync session asked in the name of no host: `source`, and why.
    #[error("source: {0}")]
    BadSource(String),
    /// A sync session asked by a host that is not a peer of this one.
    #[error("{from:?} is not a peer of this host")]
    NotAPeer {
        /// The host that asked.
        from: String,
    },
    /// A replica asked of a witness, which holds none.
    #[error("{node} is a witness: it holds no replicas (take it out of {name}'s standbys)")]
    Witness {
        /// This host.
        node: String,
        /// The vserver.
        name: VserverName,
    },
    /// A replica asked of the host where the vserver runs.
    #[error("{name} runs on this host ({node}); it takes no replica of it from {from}")]
    RunsHere {
        /// The vserver.
        name: VserverName,
        /// This host.
        node: String,
        /// The host that asked.
        from: String,
    },
    /// No sync session of that id is open (it ended, or never began).
    #[error("no sync session {session} open for {name}")]
    NoSession {
        /// The vserver.
        name: VserverName,
        /// The session asked for.
        session: String,
    },
    /// The session was replaced by a newer sync of the same vserver.
    #[error("session {session} of {name} was replaced")]
    Replaced {
        /// The vserver.
        name: VserverName,
        /// The session asked for.
        session: String,
    },
    /// A commit while the session's rsyncs still write into the replica.
    #[error("rsync still writing into {name}'s replica")]
    StillWriting {
        /// The vserver.
        name: VserverName,
    },
    /// A sync of a vserver the cluster configuration does not place.
    #[error("{name} is not in the cluster configuration")]
    NotPlaced {
        /// The vserver.
        name: VserverName,
    },
    /// A sync asked of a host that is not the vserver's primary.
    #[error("{name} is replicated by its primary {primary}, not by this host ({node})")]
    NotPrimary {
        /// The vserver.
        name: VserverName,
        /// Its primary.
        primary: String,
        /// This host.
        node: String,
    },
    /// A sync of a vserver whose conf is not on this host.
    #[error("{name} has no conf on this host")]
    NoConf {
        /// The vserver.
        name: VserverName,
    },
    /// A sync from a host the ownership table no longer gives the vserver to.
    #[error("the cluster gives {name} to {owner} (ownership epoch {epoch}): this host's copy is not synced out")]
    OwnedElsewhere {
        /// The vserver.
        name: VserverName,
        /// Its owner.
        owner: String,
        /// The ownership epoch.
        epoch: u64,
    },
    /// The vserver moved off this host while the sync waited for its lock.
    #[error("{name} moved off this host meanwhile; not synced")]
    MovedAway {
        /// The vserver.
        name: VserverName,
    },
    /// A sync of a vserver on shared storage, which every host reaches already.
    #[error("{name} is on shared storage ({dir}), which every host reaches: there is nothing to copy")]
    Shared {
        /// The vserver.
        name: VserverName,
        /// Its shared directory.
        dir: String,
    },
    /// The conf files a commit carries are not acceptable; the message says which and why.
    #[error("{0}")]
    BadConf(String),
    /// A step failed on this host; the message says where and why.
    #[error("{0}")]
    Failed(String),
}

impl ReplicationError {
    /// Whether the request itself is at fault (rather than the state it met, or a failure here).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::BadSource(_) | Self::BadConf(_))
    }

    /// Whether the request names what this host does not have (a peer, a session, a placement, a conf).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::NotAPeer { .. } | Self::NoSession { .. } | Self::NotPlaced { .. } | Self::NoConf { .. })
    }

    /// Whether it failed here, rather than being refused.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

/// How often a vserver on shared storage this host could not link is tried again.
const LINK_RETRY: Duration = Duration::from_secs(30);

/// Conf files carried in a commit at most this large (base64 included), well under the API's body limit.
const CONF_IN_COMMIT_MAX: usize = 40 * 1024;

/// A sync session on a standby: the generation being filled and the receiving rsyncs at work in it.
struct Session {
    id: String,
    source: String,
    staging: Staging,
    /// Receiving rsyncs running for it (watched: a commit waits for none).
    active: Arc<tokio::sync::watch::Sender<usize>>,
    /// Set to true to kill them (session replaced or aborted).
    cancel: tokio::sync::watch::Sender<bool>,
    /// What failed receiving rsyncs said.
    errors: Arc<Mutex<Vec<String>>>,
}

/// The last syncs of one vserver to one standby, as the primary saw them.
#[derive(Debug, Clone, Default)]
struct Report {
    last_ok: Option<SyncOk>,
    last_error: Option<String>,
    last_attempt_unix_ms: Option<u64>,
    running: bool,
    /// Sessions with it that ended, committed or not (each may have changed what its generations hold).
    sessions_ended: u64,
    /// The generation the last committed session filled (now its current one), if the last session committed.
    generation: Option<String>,
}

#[derive(Debug, Clone)]
struct SyncOk {
    started_unix_ms: u64,
    duration: Duration,
    bytes_sent: u64,
    files_transferred: u64,
    freeze: Option<Duration>,
    flags_warning: Option<String>,
}

/// Replication on this host: as primary (syncs out) and as standby (sessions in, the replica store).
pub struct Replication {
    node: String,
    dirs: Dirs,
    store: ReplicaStore,
    /// Settings per vserver from the cluster file.
    settings: Mutex<BTreeMap<VserverName, ReplicationSettings>>,
    /// Placements from the cluster file, overridden by newer ones kept in `placement_path`.
    placements: Mutex<BTreeMap<VserverName, Placement>>,
    placement_path: PathBuf,
    sessions: Mutex<BTreeMap<VserverName, Session>>,
    /// Per vserver, held while a point in time of its replica is made: a session of it begins only after.
    pointing: Mutex<BTreeMap<VserverName, Arc<AsyncMutex<()>>>>,
    /// Continuous replication's state, as the status shows it.
    pub continuous: super::lag::Board,
    reports: Mutex<BTreeMap<(VserverName, String), Report>>,
    locks: Mutex<BTreeMap<VserverName, Arc<AsyncMutex<()>>>>,
    last_run: Mutex<BTreeMap<VserverName, Instant>>,
    /// Vservers on shared storage this host could not link: when it last tried, and why (said once).
    unlinked: Mutex<BTreeMap<VserverName, (Instant, String)>>,
    rsync_bin: PathBuf,
    tunnel_bin: PathBuf,
    io_timeout: std::sync::atomic::AtomicU64,
    whole_file: std::sync::atomic::AtomicBool,
    /// This host's peers, as configured.
    /// A witness holds no replicas.
    witness: bool,
    /// What the tunnel is given to reach a standby: the secret file, the TLS files.
    secret_file: PathBuf,
    tls: Option<TlsConfig>,
    links: Links,
}

/// The agent's parts replication works with.
pub struct Links {
    /// This host's vservers (whether one runs here).
    pub supervisor: Supervisor,
    /// Which peers are alive.
    pub membership: Arc<Membership>,
    /// The replica sessions' routes on the standbys.
    pub peers: failover::peer::PeerClient,
    /// Who owns each vserver.
    pub ownership: failover::ownership::Ownership,
}

/// Reads and checks the agent's cluster file (`cluster_file`, a relative path taken from the directory of
/// `config_path`); without one, an empty configuration.
pub fn load_cluster(config: &AgentConfig, config_path: &Path) -> anyhow::Result<ClusterConfig> {
    let Some(path) = &config.cluster_file else { return Ok(ClusterConfig::default()) };
    let hosts: BTreeSet<String> = config.peers.iter().map(|p| p.name.clone()).chain([config.node.clone()]).collect();
    let path =
        if path.is_relative() { config_path.parent().unwrap_or(Path::new(".")).join(path) } else { path.clone() };
    let conf = |n: &VserverName| config.conf_dir.join(format!("{n}.conf")).is_file();
    let cluster = ClusterConfig::load(&path, &hosts, &config.node, conf)?;
    for name in &cluster.not_built {
        tracing::warn!(
            vserver = %name,
            "{} places {name} on this host as its primary, but {name}.conf is not in {} yet: build it (vserver \
             {name} build); it is replicated once it exists",
            path.display(),
            config.conf_dir.display()
        );
    }
    Ok(cluster)
}

impl Replication {
    /// Takes the cluster file's configuration ([`load_cluster`]) and the placements kept in the state
    /// directory.
    pub fn new(config: &AgentConfig, cluster: ClusterConfig, links: Links) -> anyhow::Result<Self> {
        use anyhow::Context;
        let dirs = Dirs {
            vservers_dir: config.vservers_dir.clone(),
            conf_dir: config.conf_dir.clone(),
            run_dir: config.run_dir.clone(),
            cgroup_root: std::env::var_os("VSERVER_CGROUP_ROOT").map_or_else(|| "/sys/fs/cgroup".into(), PathBuf::from),
            cgroup_parent: config.cgroup_parent.clone(),
        };
        let placement_path = config.state_dir.join("placement.json");
        let mut placements = cluster.placements.clone();
        match std::fs::read(&placement_path) {
            Ok(bytes) => {
                let kept: BTreeMap<VserverName, Placement> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a placement record", placement_path.display()))?;
                for (name, p) in kept {
                    let newer = placements.get(&name).is_none_or(|q| p.epoch > q.epoch);
                    if newer {
                        placements.insert(name, p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", placement_path.display())),
        }
        let replica_dir = config.replica_dir.clone().unwrap_or_else(|| config.vservers_dir.join(".replicas"));
        // Trees and replicas are reachable by root only (each directory is a barrier on its own, so a
        // replica directory outside the vservers directory is covered too).
        for dir in [&config.vservers_dir, &replica_dir] {
            match crate::dirs::barrier(dir) {
                Ok(Some(said)) => tracing::warn!("{said}"),
                Ok(None) => {}
                Err(e) => return Err(e).with_context(|| format!("making {} reachable by root only", dir.display())),
            }
        }
        // Trees go into service and back by renames: refused now rather than at the first takeover.
        let store = ReplicaStore::new(replica_dir);
        store.check_beside(&config.vservers_dir)?;
        let beside =
            |bin: &str| std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join(bin))).filter(|p| p.is_file());
        Ok(Self {
            node: config.node.clone(),
            dirs,
            store,
            settings: Mutex::new(cluster.replication),
            placements: Mutex::new(placements),
            placement_path,
            sessions: Mutex::default(),
            pointing: Mutex::default(),
            continuous: super::lag::Board::default(),
            reports: Mutex::default(),
            locks: Mutex::default(),
            last_run: Mutex::default(),
            unlinked: Mutex::default(),
            rsync_bin: config.rsync_bin.clone().unwrap_or_else(|| "rsync".into()),
            tunnel_bin: beside("vserver-tunnel").unwrap_or_else(|| "vserver-tunnel".into()),
            io_timeout: config.rsync_timeout_secs.into(),
            whole_file: config.rsync_whole_file.into(),
            witness: config.witness,
            secret_file: config.secret_file.clone(),
            tls: config.tls.clone(),
            links,
        })
    }

    /// The replica store of this host.
    pub fn store(&self) -> &ReplicaStore {
        &self.store
    }

    /// Every placement this host knows.
    pub fn placements(&self) -> BTreeMap<VserverName, Placement> {
        lock(&self.placements).clone()
    }

    /// The placement of `name`, if the cluster knows it.
    pub fn placement(&self, name: &VserverName) -> Option<Placement> {
        lock(&self.placements).get(name).cloned()
    }

    /// Records a newer placement (ignored if not newer than the one known); kept across restarts.
    pub fn record_placement(&self, name: &VserverName, placement: Placement) -> std::io::Result<bool> {
        let mut map = lock(&self.placements);
        if map.get(name).is_some_and(|p| p.epoch >= placement.epoch) {
            return Ok(false);
        }
        // On disk first: a placement in effect is always one that survives a restart.
        let mut next = map.clone();
        next.insert(name.clone(), placement);
        let text = serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?;
        crate::agent::supervisor::write_atomic(&self.placement_path, &text, 0o644)?;
        *map = next;
        Ok(true)
    }

    /// Makes the placements those the cluster gives (`placed`: each vserver's placement as recorded, epoch 0, and
    /// its settings), keeping those of `kept` as they are: a vserver that runs elsewhere than its recorded
    /// primary (moved by a migrate or a takeover) keeps its primary here, its other hosts standbys in the order
    /// recorded; a vserver the cluster no longer places is dropped. Kept across restarts.
    pub fn reconcile_placements(
        &self,
        placed: BTreeMap<VserverName, (Placement, ReplicationSettings)>,
        kept: &BTreeSet<VserverName>,
    ) {
        let mut map = lock(&self.placements);
        let mut settings = lock(&self.settings);
        let mut next = BTreeMap::new();
        let mut next_settings = BTreeMap::new();
        for (name, (recorded, s)) in placed {
            let here = map.get(&name);
            let owner = self.links.ownership.owner(name.as_str()).map(|(o, _)| o);
            let primary = here.map(|p| p.primary.clone()).or(owner).unwrap_or_else(|| recorded.primary.clone());
            let mut standbys: Vec<String> = Vec::new();
            for host in std::iter::once(&recorded.primary).chain(&recorded.standbys) {
                if *host != primary && !standbys.contains(host) {
                    standbys.push(host.clone());
                }
            }
            let epoch = here.map_or(0, |p| p.epoch);
            next.insert(name.clone(), Placement { primary, standbys, epoch });
            next_settings.insert(name, s);
        }
        for name in kept {
            if let Some(p) = map.get(name) {
                next.insert(name.clone(), p.clone());
            }
            if let Some(s) = settings.get(name) {
                next_settings.insert(name.clone(), s.clone());
            }
        }
        let devices = next_settings
            .iter()
            .filter_map(|(name, s)| match &s.data {
                DataPath::Block { device, fstype } => Some((name.clone(), (device.clone(), fstype.clone()))),
                _ => None,
            })
            .collect();
        self.links.supervisor.set_root_devices(devices);
        *settings = next_settings;
        if next == *map {
            return;
        }
        for (name, p) in &next {
            if map.get(name) != Some(p) {
                tracing::info!(vserver = %name, primary = %p.primary, standbys = ?p.standbys, "placement applied");
            }
        }
        for name in map.keys().filter(|n| !next.contains_key(*n)) {
            tracing::info!(vserver = %name, "no longer placed by the cluster: not replicated nor taken over any more");
        }
        match serde_json::to_vec_pretty(&next)
            .map_err(std::io::Error::other)
            .and_then(|text| crate::agent::supervisor::write_atomic(&self.placement_path, &text, 0o644))
        {
            Ok(()) => {}
            Err(e) => tracing::warn!("cannot keep the placements in {}: {e}", self.placement_path.display()),
        }
        *map = next;
    }

    /// rsync's I/O timeout (`rsync_timeout_secs`).
    fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `rsync_timeout_secs` and `rsync_whole_file` in force.
    pub fn rsync_settings(&self) -> (u64, bool) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.io_timeout.load(Relaxed), self.whole_file.load(Relaxed))
    }

    /// Applies agent.toml's `rsync_timeout_secs` and `rsync_whole_file` from the next rsync run on.
    pub fn set_rsync(&self, timeout_secs: u64, whole_file: bool) {
        self.io_timeout.store(timeout_secs, std::sync::atomic::Ordering::Relaxed);
        self.whole_file.store(whole_file, std::sync::atomic::Ordering::Relaxed);
    }

    /// The lock that keeps syncs and migrates of one vserver from overlapping.
    pub fn vserver_lock(&self, name: &VserverName) -> Arc<AsyncMutex<()>> {
        Arc::clone(lock(&self.locks).entry(name.clone()).or_default())
    }

    /// The replication part of `GET /v1/status`: one entry per vserver this host is primary of and standby.
    pub fn status(&self) -> Vec<ReplicationStatus> {
        let placements = lock(&self.placements).clone();
        let reports = lock(&self.reports).clone();
        let now = now_ms();
        let mut out = Vec::new();
        for (name, p) in placements.iter().filter(|(_, p)| p.primary == self.node) {
            let settings = self.settings(name);
            for standby in &p.standbys {
                let r = reports.get(&(name.clone(), standby.clone())).cloned().unwrap_or_default();
                let ok = r.last_ok.as_ref();
                let lane = self.continuous.lane(name, standby);
                let rpo_secs = match (&settings.data, &lane) {
                    (DataPath::Shared { .. } | DataPath::Block { .. }, _) => 0.0,
                    // Watched: what a crash now would lose.
                    (DataPath::Continuous { .. }, Some(lane)) => lane.lag_ms(now) as f64 / 1000.0,
                    // Periodic, or continuous while not watched (stopped here): at worst the writes of an
                    // interval and of the pass that then runs.
                    _ => settings.interval.as_secs_f64() + ok.map_or(0.0, |o| o.duration.as_secs_f64()),
                };
                out.push(ReplicationStatus {
                    data: Some(settings.data.kind().to_string()),
                    rpo_secs: Some(rpo_secs),
                    change_lag_ms: lane.as_ref().map(|l| l.lag_ms(now)),
                    last_batch_unix_ms: lane.as_ref().and_then(|l| l.last_commit_unix_ms),
                    batches: lane.as_ref().map(|l| l.batches),
                    vserver: name.to_string(),
                    standby: standby.clone(),
                    syncing: r.running,
                    last_complete_unix_ms: ok.map(|o| o.started_unix_ms),
                    lag_secs: ok.map(|o| now.saturating_sub(o.started_unix_ms) / 1000),
                    bytes_sent: ok.map(|o| o.bytes_sent),
                    files_transferred: ok.map(|o| o.files_transferred),
                    duration_ms: ok.map(|o| o.duration.as_millis() as u64),
                    freeze_ms: ok.and_then(|o| o.freeze).map(|f| f.as_millis() as u64),
                    last_attempt_unix_ms: r.last_attempt_unix_ms,
                    last_error: r.last_error.clone(),
                    warning: ok.and_then(|o| o.flags_warning.clone()),
                });
            }
        }
        out
    }

    /// The replicas this host holds, for `GET /v1/status`: the complete generations of its store, and the
    /// vservers on shared storage it is a standby of, whose tree and conf it reaches (current by nature).
    pub fn held(&self) -> Vec<HeldReplica> {
        let now = now_ms();
        let shared = self.placements().into_iter().filter_map(|(name, p)| {
            // Not looked at here (a hung shared file system must not hang the status): a promote checks it.
            self.data_path(&name).shared_dir()?;
            p.standbys.contains(&self.node).then(|| HeldReplica {
                vserver: name.to_string(),
                source: p.primary.clone(),
                generation: "shared".into(),
                started_unix_ms: now,
                finished_unix_ms: now,
                age_secs: 0,
                consistent: true,
                kind: "shared".into(),
                points: Vec::new(),
            })
        });
        let mut held: Vec<HeldReplica> = shared.collect();
        held.extend(self.store.list().into_iter().filter_map(|(name, g)| {
            let g = g?;
            Some(HeldReplica {
                vserver: name.to_string(),
                source: g.meta.source.clone(),
                generation: g.slot.as_str().to_string(),
                started_unix_ms: g.meta.started_unix_ms,
                finished_unix_ms: g.meta.finished_unix_ms,
                age_secs: now.saturating_sub(g.meta.started_unix_ms) / 1000,
                consistent: g.meta.consistent,
                kind: g.meta.kind.clone(),
                points: self.store.points(&name),
            })
        }));
        held
    }

    /// Where `name`'s tree and conf are (periodic for a vserver the cluster file does not name).
    pub fn data_path(&self, name: &VserverName) -> DataPath {
        self.settings(name).data
    }

    /// This host's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's parts replication works with.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// A vserver's tree on this host.
    pub fn tree(&self, name: &VserverName) -> PathBuf {
        self.dirs.root(name)
    }

    /// Whether `name`'s conf is on this host.
    pub fn built(&self, name: &VserverName) -> bool {
        self.dirs.conf(name).is_file()
    }

    /// How many sessions with `standby` for `name` ended since this agent started, and the generation the
    /// last one made current (none if it did not commit).
    pub fn sessions_ended(&self, name: &VserverName, standby: &str) -> (u64, Option<String>) {
        let reports = lock(&self.reports);
        reports
            .get(&(name.clone(), standby.to_string()))
            .map_or((0, None), |r| (r.sessions_ended, r.generation.clone()))
    }

    /// When the copy now current on `standby` began on this host, if a sync to it completed since start.
    pub fn last_complete_unix_ms(&self, name: &VserverName, standby: &str) -> Option<u64> {
        let reports = lock(&self.reports);
        reports.get(&(name.clone(), standby.to_string()))?.last_ok.as_ref().map(|o| o.started_unix_ms)
    }

    /// Records that a sync of `name` began now (the periodic schedule counts from it).
    pub fn mark_run(&self, name: &VserverName) {
        lock(&self.last_run).insert(name.clone(), Instant::now());
    }

    /// `name`'s replication settings (periodic at 60 s for a vserver the cluster file does not name).
    pub fn settings(&self, name: &VserverName) -> ReplicationSettings {
        lock(&self.settings)
            .get(name)
            .cloned()
            .unwrap_or_else(|| ReplicationSettings::periodic(Duration::from_secs(60)))
    }

    // ---- standby side ----

    /// Opens a sync session for `name` from `source`: prepares the generation that is not current. A session
    /// already open for it (a sync that died on the way) is cancelled and replaced.
    pub async fn begin(&self, name: &VserverName, req: BeginRequest) -> Result<BeginReply, ReplicationError> {
        super::config::check_node_name(&req.source).map_err(ReplicationError::BadSource)?;
        if !self.links.peers.knows(&req.source) {
            return Err(ReplicationError::NotAPeer { from: req.source });
        }
        if self.witness {
            return Err(ReplicationError::Witness { node: self.node.clone(), name: name.clone() });
        }
        let running_here =
            self.links.supervisor.get(name).await.is_ok_and(|v| v.state == crate::model::VserverState::Running);
        if running_here {
            return Err(ReplicationError::RunsHere { name: name.clone(), node: self.node.clone(), from: req.source });
        }
        if let Some(old) = lock(&self.sessions).remove(name) {
            tracing::warn!(vserver = %name, session = %old.id, "a new sync replaces an unfinished one");
            let _ = old.cancel.send(true);
        }
        // Not while a point in time links the current generation's files: a session after the next would fill
        // that generation.
        let _pointing = self.pointing_lock(name).lock_owned().await;
        let store = self.store.clone();
        let n = name.clone();
        let staging = tokio::task::spawn_blocking(move || store.begin(&n))
            .await
            .map_err(|e| ReplicationError::Failed(e.to_string()))?
            .map_err(|e| ReplicationError::Failed(e.to_string()))?;
        let id = session_id();
        let generation = staging.slot.as_str().to_string();
        let (cancel, _) = tokio::sync::watch::channel(false);
        tracing::info!(vserver = %name, source = %req.source, session = %id, generation, "sync begins");
        lock(&self.sessions).insert(
            name.clone(),
            Session {
                id: id.clone(),
                source: req.source,
                staging,
                active: Arc::new(tokio::sync::watch::Sender::new(0)),
                cancel,
                errors: Arc::default(),
            },
        );
        Ok(BeginReply { session: id, generation })
    }

    /// The directory a tunnel of `session` writes into, a guard counting it as active, and the signal that
    /// cancels it.
    pub fn tunnel_target(
        &self,
        name: &VserverName,
        session: &str,
    ) -> Result<(PathBuf, ActiveGuard, tokio::sync::watch::Receiver<bool>), ReplicationError> {
        let sessions = lock(&self.sessions);
        match sessions.get(name) {
            Some(s) if s.id == session => {
                s.active.send_modify(|n| *n += 1);
                let guard = ActiveGuard { active: Arc::clone(&s.active), errors: Arc::clone(&s.errors) };
                Ok((s.staging.dir.clone(), guard, s.cancel.subscribe()))
            }
            Some(_) => Err(ReplicationError::Replaced { name: name.clone(), session: session.to_string() }),
            None => Err(ReplicationError::NoSession { name: name.clone(), session: session.to_string() }),
        }
    }

    /// Makes the session's generation current, once its rsyncs have ended.
    pub async fn commit(&self, name: &VserverName, req: CommitRequest) -> Result<GenerationMeta, ReplicationError> {
        let (staging, source, active) = {
            let sessions = lock(&self.sessions);
            match sessions.get(name) {
                Some(s) if s.id == req.session => (s.staging.clone(), s.source.clone(), Arc::clone(&s.active)),
                Some(_) => return Err(ReplicationError::Replaced { name: name.clone(), session: req.session }),
                None => return Err(ReplicationError::NoSession { name: name.clone(), session: req.session }),
            }
        };
        if !idle_within(&active, COMMIT_WAIT).await {
            return Err(ReplicationError::StillWriting { name: name.clone() });
        }
        if let Some(files) = &req.conf {
            let dir = staging.dir.join("conf");
            let n = name.clone();
            let files = files.clone();
            tokio::task::spawn_blocking(move || write_conf(&dir, &n, &files))
                .await
                .map_err(|e| ReplicationError::Failed(e.to_string()))??;
        }
        let meta = GenerationMeta {
            source,
            started_unix_ms: req.started_unix_ms,
            finished_unix_ms: now_ms(),
            conf_sha256: String::new(),
            consistent: req.consistent,
            kind: req.kind.unwrap_or_else(|| "sync".into()),
        };
        let store = self.store.clone();
        let n = name.clone();
        let generation = tokio::task::spawn_blocking(move || store.commit(&n, &staging, meta))
            .await
            .map_err(|e| ReplicationError::Failed(e.to_string()))?
            .map_err(|e| ReplicationError::Failed(e.to_string()))?;
        {
            let mut sessions = lock(&self.sessions);
            if sessions.get(name).is_some_and(|s| s.id == req.session) {
                sessions.remove(name);
            }
        }
        let level_batch = generation.meta.kind == "batch";
        if level_batch {
            tracing::debug!(vserver = %name, generation = generation.slot.as_str(), source = %generation.meta.source, "replica current");
        } else {
            tracing::info!(vserver = %name, generation = generation.slot.as_str(), source = %generation.meta.source, "replica current");
        }
        // Not of a migrate's copy: it goes into service at once, and its points with it would be dropped.
        if let Some((every, kept)) = self.data_path(name).points().filter(|_| generation.meta.kind != "migrate") {
            self.keep_points(name, every, kept);
        }
        Ok(generation.meta)
    }

    fn pointing_lock(&self, name: &VserverName) -> Arc<AsyncMutex<()>> {
        Arc::clone(lock(&self.pointing).entry(name.clone()).or_default())
    }

    /// Makes a point in time of `name`'s current generation if one is due, and removes the oldest beyond
    /// `kept`, in the background (the commit's answer does not wait); the next session of `name` begins once it
    /// is done.
    fn keep_points(&self, name: &VserverName, every: Duration, kept: usize) {
        let Ok(held) = self.pointing_lock(name).try_lock_owned() else { return };
        let (store, name) = (self.store.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            let _held = held;
            match store.point_if_due(&name, every, kept) {
                Ok(Some(dir)) => tracing::info!(vserver = %name, point = %dir.display(), "point in time kept"),
                Ok(None) => {}
                Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot keep a point in time of the replica"),
            }
        });
    }

    /// Closes a session without committing: the current generation stays. Returns what its receiving
    /// rsyncs said when they failed (waiting a moment for one still ending), so the sender can tell why.
    pub async fn abort(&self, name: &VserverName, session: &str) -> Option<String> {
        let (active, errors) = {
            let sessions = lock(&self.sessions);
            let s = sessions.get(name).filter(|s| s.id == session)?;
            (Arc::clone(&s.active), Arc::clone(&s.errors))
        };
        idle_within(&active, Duration::from_secs(2)).await;
        {
            let mut sessions = lock(&self.sessions);
            if sessions.get(name).is_some_and(|s| s.id == session) {
                if let Some(s) = sessions.remove(name) {
                    let _ = s.cancel.send(true);
                }
            }
        }
        tracing::info!(vserver = %name, session, "sync aborted; the current replica stays");
        let said = lock(&errors).join("; ");
        (!said.is_empty()).then_some(said)
    }

    // ---- primary side ----

    /// Syncs `name` to each of its standbys in order, now; waits for a sync already running. Every standby is
    /// tried (a dead or failing one does not stop the others).
    pub async fn sync_now(self: &Arc<Self>, name: &VserverName) -> Result<Vec<SyncOutcome>, ReplicationError> {
        let placement = self.placement(name).ok_or_else(|| ReplicationError::NotPlaced { name: name.clone() })?;
        if placement.primary != self.node {
            return Err(ReplicationError::NotPrimary {
                name: name.clone(),
                primary: placement.primary,
                node: self.node.clone(),
            });
        }
        if let Some(dir) = self.data_path(name).shared_dir() {
            return Err(ReplicationError::Shared { name: name.clone(), dir: dir.display().to_string() });
        }
        if !self.dirs.conf(name).is_file() {
            return Err(ReplicationError::NoConf { name: name.clone() });
        }
        if let Some((owner, epoch)) = foreign_owner(&self.links, &self.node, name) {
            return Err(ReplicationError::OwnedElsewhere { name: name.clone(), owner, epoch });
        }
        let guard = self.vserver_lock(name);
        let _held = guard.lock().await;
        // Again, now that no migrate runs: one that just ended may have moved it.
        let placement = self
            .placement(name)
            .filter(|p| p.primary == self.node && self.dirs.conf(name).is_file())
            .ok_or_else(|| ReplicationError::MovedAway { name: name.clone() })?;
        lock(&self.last_run).insert(name.clone(), Instant::now());
        let mut outcomes = Vec::new();
        for standby in &placement.standbys {
            outcomes.push(self.sync_to(name, standby, "sync").await);
        }
        Ok(outcomes)
    }

    /// One sync of `name` to `standby` (the vserver's lock is held by the caller).
    pub async fn sync_to(self: &Arc<Self>, name: &VserverName, standby: &str, kind: &str) -> SyncOutcome {
        self.reported(name, standby, kind, |started_unix_ms| self.sync_steps(name, standby, started_unix_ms, kind))
            .await
    }

    /// Runs `steps` (a session with `standby`, given the start time) and keeps its outcome for the status.
    pub async fn reported<'a, F, Fut>(&'a self, name: &VserverName, standby: &str, kind: &str, steps: F) -> SyncOutcome
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<Passes, String>> + 'a,
    {
        let key = (name.clone(), standby.to_string());
        let started_unix_ms = now_ms();
        {
            let mut reports = lock(&self.reports);
            let r = reports.entry(key.clone()).or_default();
            r.running = true;
            r.last_attempt_unix_ms = Some(started_unix_ms);
        }
        let started = Instant::now();
        let result = steps(started_unix_ms).await;
        let duration = started.elapsed();
        let mut reports = lock(&self.reports);
        let r = reports.entry(key).or_default();
        r.running = false;
        r.sessions_ended += 1;
        r.generation = result.as_ref().ok().map(|done| done.generation.clone());
        match result {
            Ok(done) => {
                r.last_error = None;
                r.last_ok = Some(SyncOk {
                    started_unix_ms,
                    duration,
                    bytes_sent: done.bytes_sent,
                    files_transferred: done.files_transferred,
                    freeze: done.freeze,
                    flags_warning: done.warning.clone(),
                });
                if kind == "batch" {
                    tracing::debug!(
                        vserver = %name, standby, bytes_sent = done.bytes_sent, files = done.files_transferred,
                        ms = duration.as_millis() as u64, "batch committed"
                    );
                } else {
                    tracing::info!(
                        vserver = %name, standby, bytes_sent = done.bytes_sent, files = done.files_transferred,
                        ms = duration.as_millis() as u64, "sync complete"
                    );
                }
                SyncOutcome {
                    standby: standby.to_string(),
                    ok: true,
                    bytes_sent: done.bytes_sent,
                    files_transferred: done.files_transferred,
                    duration_ms: duration.as_millis() as u64,
                    freeze_ms: done.freeze.map(|f| f.as_millis() as u64),
                    error: None,
                    warning: done.warning,
                    phases_ms: done.phases_ms,
                }
            }
            Err(e) => {
                tracing::warn!(vserver = %name, standby, error = %e, "sync failed; the standby keeps its previous replica");
                r.last_error = Some(e.clone());
                SyncOutcome {
                    standby: standby.to_string(),
                    ok: false,
                    bytes_sent: 0,
                    files_transferred: 0,
                    duration_ms: duration.as_millis() as u64,
                    freeze_ms: None,
                    error: Some(e),
                    warning: None,
                    phases_ms: Vec::new(),
                }
            }
        }
    }

    async fn sync_steps(
        self: &Arc<Self>,
        name: &VserverName,
        standby: &str,
        started_unix_ms: u64,
        kind: &str,
    ) -> Result<Passes, String> {
        let peer_url =
            self.links.peers.url(standby).ok_or_else(|| format!("standby {standby} is not a peer of this host"))?;
        if self.links.membership.peers().iter().any(|p| p.name == standby && p.state == PeerState::Dead) {
            return Err(format!("standby {standby} is dead (no heartbeat); not tried"));
        }
        let begun = Instant::now();
        let session = session::Session::begin(&self.links.peers, standby, name.as_str(), &self.node).await?;
        let begin_ms = begun.elapsed().as_millis() as u64;
        let mut passes = match self.passes(name, standby, &peer_url, session.id()).await {
            Ok(passes) => passes,
            Err(e) => return Err(session.abort(e).await),
        };
        passes.generation = session.generation().to_string();
        passes.phases_ms.insert(0, ("begin".into(), begin_ms));
        let committing = Instant::now();
        let commit = Commit {
            started_unix_ms,
            consistent: passes.freeze.is_some(),
            kind: kind.to_string(),
            conf: passes.conf.take(),
        };
        session.commit(commit).await?;
        passes.phases_ms.push(("commit".into(), committing.elapsed().as_millis() as u64));
        Ok(passes)
    }

    /// The rsync passes of one sync: tree (live), tree again frozen in consistent mode, conf.
    async fn passes(
        self: &Arc<Self>,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
    ) -> Result<Passes, String> {
        let tree = self.dirs.root(name);
        let settings = self.settings(name);
        let mut passes = Passes::default();
        if !settings.data.copies_tree() {
            // The tree is on the shared device: the standbys get the conf alone.
            let step = Instant::now();
            passes.conf = self.conf_for_commit(name, standby, url, session).await?;
            passes.phases_ms.push(("conf".into(), step.elapsed().as_millis() as u64));
            return Ok(passes);
        }
        // File attributes rsync cannot carry: looked for while the live pass runs, at idle priority.
        let scan = failover::fileflags::scan_beside(tree.clone());
        let step = Instant::now();
        // What changes from here on, the frozen pass of consistent mode copies alone.
        let mark = failover::changes::ClockMark::now();
        let live = self.copy_tree(name, standby, url, session, true, &|_| {}).await?;
        passes.add(&live);
        passes.phases_ms.push(("tree".into(), step.elapsed().as_millis() as u64));
        let running =
            self.links.supervisor.get(name).await.is_ok_and(|v| v.state == crate::model::VserverState::Running);
        if settings.consistent && running {
            let cgroups = isolate::cgroup::Cgroups::new(&self.dirs.cgroup(), name).map_err(|e| e.to_string())?;
            let frozen_at = Instant::now();
            cgroups.freeze().map_err(|e| format!("cannot freeze {name}: {e}"))?;
            let frozen = self.copy_changes(name, standby, url, session, mark, &|_| {}).await.map(|(m, how)| {
                tracing::debug!(vserver = %name, standby, "frozen pass: {how}");
                m
            });
            let thawed = cgroups.thaw();
            passes.freeze = Some(frozen_at.elapsed());
            thawed.map_err(|e| format!("cannot thaw {name}: {e}"))?;
            passes.add(&frozen?);
            passes.phases_ms.push(("frozen tree".into(), frozen_at.elapsed().as_millis() as u64));
        }
        let step = Instant::now();
        passes.conf = self.conf_for_commit(name, standby, url, session).await?;
        passes.phases_ms.push(("conf".into(), step.elapsed().as_millis() as u64));
        passes.warning = match scan {
            Ok(handle) => match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(report)) => report.warning(),
                _ => None,
            },
            Err(e) => Some(format!("cannot look for file attributes rsync does not carry: {e}")),
        };
        Ok(passes)
    }

    /// One rsync pass of the tree into the session's generation on `standby`; `live`: the vserver may be
    /// running (files vanishing is then accepted). `progress` gets the bytes transferred so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_tree(
        &self,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
        live: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Moved, String> {
        let shell = self.remote_shell(url, name, session);
        self.rsync(RsyncPass::tree(&self.dirs.root(name), standby, &shell, live), progress).await
    }

    /// An rsync pass of only what changed in the tree since `mark`, into the session's generation on
    /// `standby`, which a complete pass that started at `mark` filled (see [`failover::changes`]). Falls back
    /// to a pass over the whole tree when the changes cannot be listed, the root itself changed or the clock
    /// was set back. The vserver must not be running (stopped, or frozen: not a live pass). Returns what moved
    /// and, in words, how the pass was chosen.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_changes(
        &self,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
        mark: failover::changes::ClockMark,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Moved, String), String> {
        let root = self.dirs.root(name);
        let walk_root = root.clone();
        let listed = tokio::task::spawn_blocking(move || failover::changes::since(&walk_root, mark.wall())).await;
        let why_whole = match listed {
            Ok(Ok(_)) if mark.clock_set_back() => "the system clock was set back since the pre-copy".to_string(),
            Ok(Ok(c)) if c.whole => "the tree's top directory changed".to_string(),
            Ok(Ok(c)) if c.paths.is_empty() => {
                return Ok((Moved::default(), format!("nothing changed ({} entries looked at)", c.scanned)))
            }
            Ok(Ok(c)) => {
                let how = format!(
                    "{} changed paths ({} of them directories, copied whole) of {} entries",
                    c.paths.len(),
                    c.dirs,
                    c.scanned
                );
                let listed = Listed { what: "tree (changes since the pre-copy)", live: false, gone_removed: false };
                return self
                    .copy_listed(name, standby, url, session, &c.files_from(), listed, progress)
                    .await
                    .map(|m| (m, how));
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!(vserver = %name, reason = %why_whole, "the last pass compares the whole tree");
        let moved = self.copy_tree(name, standby, url, session, false, progress).await?;
        Ok((moved, format!("whole tree: {why_whole}")))
    }

    /// An rsync pass of the paths in `list` (relative to the tree, each followed by a NUL byte) into the
    /// session's generation on `standby`: a listed file alone, a listed directory with everything under it
    /// (and what it no longer holds deleted); with `gone_removed`, a listed path the tree no longer has is
    /// removed from the copy (`--delete-missing-args`).
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_listed(
        &self,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
        list: &[u8],
        how: Listed,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Moved, String> {
        let file = self.dirs.run_dir.join(format!("{name}.{standby}.changed"));
        write_private(&file, list).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let shell = self.remote_shell(url, name, session);
        let mut pass = RsyncPass::tree(&self.dirs.root(name), standby, &shell, how.live);
        pass.what = how.what.into();
        // With a list, -a no longer implies -r: it is asked for, so that a listed directory is copied with
        // everything under it, and what it no longer holds is deleted.
        pass.extra = vec!["-r".into(), "--from0".into(), format!("--files-from={}", file.display())];
        if how.gone_removed {
            pass.extra.push("--delete-missing-args".into());
        }
        let moved = self.rsync(pass, progress).await;
        let _ = std::fs::remove_file(&file);
        moved
    }

    /// `NAME.conf` and `NAME.sh` for the commit, or, when they are too large to carry, sent by rsync into the
    /// session's generation now (`None`).
    pub async fn conf_for_commit(
        &self,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
    ) -> Result<Option<Vec<ConfFile>>, String> {
        match read_conf(&self.dirs.conf_dir, name)? {
            Some(files) => Ok(Some(files)),
            None => self.copy_conf(name, standby, url, session).await.map(|_| None),
        }
    }

    /// The rsync pass of `NAME.conf` and `NAME.sh` into the session's generation on `standby`.
    pub async fn copy_conf(
        &self,
        name: &VserverName,
        standby: &str,
        url: &str,
        session: &str,
    ) -> Result<Moved, String> {
        let shell = self.remote_shell(url, name, session);
        self.rsync(RsyncPass::conf(&self.dirs.conf_dir, name, standby, &shell), &|_| {}).await
    }

    fn remote_shell(&self, url: &str, name: &VserverName, session: &str) -> String {
        let mut parts = vec![
            quote(&self.tunnel_bin.to_string_lossy()),
            "--url".into(),
            quote(url),
            "--vserver".into(),
            name.to_string(),
            "--session".into(),
            session.to_string(),
            "--io-timeout".into(),
            self.io_timeout().as_secs().to_string(),
        ];
        // With a cluster CA, the certificate stands for the secret over https, which then never travels.
        let certified = self.tls.as_ref().is_some_and(|t| t.ca_file.is_some());
        if !(certified && url.starts_with("https://")) {
            parts.extend(["--secret-file".into(), quote(&self.secret_file.to_string_lossy())]);
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                parts.extend(["--ca-file".into(), quote(&ca.to_string_lossy())]);
            }
            parts.extend(["--cert-file".into(), quote(&tls.cert_file.to_string_lossy())]);
            parts.extend(["--key-file".into(), quote(&tls.key_file.to_string_lossy())]);
        }
        parts.join(" ")
    }

    async fn rsync(&self, pass: RsyncPass, progress: &(dyn Fn(u64) + Sync)) -> Result<Moved, String> {
        let bin = self.rsync_bin.clone();
        let live = pass.live;
        let what = pass.what.clone();
        let timeout = self.io_timeout();
        let whole_file = self.whole_file.load(std::sync::atomic::Ordering::Relaxed);
        // Progress goes from rsync's thread to the caller through a channel.
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        let run = tokio::task::spawn_blocking(move || {
            pass.job(bin, timeout, whole_file).run(|p| {
                let _ = tx.send(p.bytes);
            })
        });
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                done = &mut run => break done,
                changed = rx.changed() => if changed.is_ok() { progress(*rx.borrow()) },
            }
        };
        let outcome =
            outcome.map_err(|e| format!("{what}: the rsync task failed: {e}"))?.map_err(|e| format!("{what}: {e}"))?;
        if rsync::accepted(outcome.exit_code, live) {
            Ok(Moved::from(&outcome))
        } else {
            Err(format!(
                "{what}: rsync exit {}: {}{}",
                outcome.exit_code,
                rsync::explain_exit(outcome.exit_code),
                tail(&outcome.stderr_tail)
            ))
        }
    }

    /// Links into this host's directories the vservers on shared storage it is the primary of and the cluster
    /// gives to no other host, which it has no links to yet: a new cluster's, or one added to the cluster file.
    /// (A migrate's or a takeover's promote links them on the host they go to.)
    async fn link_own_shared(&self) {
        for (name, p) in self.placements() {
            let Some(dir) = self.data_path(&name).shared_dir().map(Path::to_path_buf) else { continue };
            let mine = p.primary == self.node && foreign_owner(&self.links, &self.node, &name).is_none();
            let linked =
                self.dirs.conf(&name).symlink_metadata().is_ok() || self.dirs.root(&name).symlink_metadata().is_ok();
            let tried = lock(&self.unlinked).get(&name).map(|(at, _)| at.elapsed() < LINK_RETRY);
            if !mine || linked || tried == Some(true) {
                continue;
            }
            let dirs = self.dirs.clone();
            let n = name.clone();
            let made = tokio::task::spawn_blocking(move || super::shared::link(&dirs, &dir, &n)).await;
            match made {
                Ok(Ok(())) => {
                    lock(&self.unlinked).remove(&name);
                    tracing::info!(vserver = %name, "linked from its shared directory");
                }
                Ok(Err(e)) => {
                    let said = e.to_string();
                    let mut unlinked = lock(&self.unlinked);
                    if unlinked.get(&name).is_none_or(|(_, before)| *before != said) {
                        tracing::warn!(vserver = %name, "cannot link it from its shared directory (tried again every \
                                       {} s): {said}", LINK_RETRY.as_secs());
                    }
                    unlinked.insert(name, (Instant::now(), said));
                }
                Err(e) => tracing::warn!(vserver = %name, "cannot link it from its shared directory: {e}"),
            }
        }
    }

    /// Runs due syncs: every vserver this host is primary of, at its interval. Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // At most two vservers sync at once.
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        loop {
            tick.tick().await;
            self.link_own_shared().await;
            let alive: BTreeSet<String> = self
                .links
                .membership
                .peers()
                .into_iter()
                .filter(|p| p.state == PeerState::Alive)
                .map(|p| p.name)
                .collect();
            let due = {
                let placements = lock(&self.placements);
                let last = lock(&self.last_run);
                let owners: BTreeMap<&VserverName, Option<String>> =
                    placements.keys().map(|n| (n, self.links.ownership.owner(n.as_str()).map(|(o, _)| o))).collect();
                let candidates: Vec<failover::sync::Candidate<'_>> = placements
                    .iter()
                    // Shared storage: nothing to copy. Watched continuously: its watch runs its full passes.
                    .filter(|(n, _)| self.data_path(n).shared_dir().is_none() && !self.continuous.watched(n))
                    .map(|(n, p)| failover::sync::Candidate {
                        name: n.as_str(),
                        placement: p,
                        built: self.dirs.conf(n).is_file(),
                        since_last: last.get(n).map(Instant::elapsed),
                        interval: self.settings(n).interval,
                        owner: owners[n].as_deref(),
                    })
                    .collect();
                failover::sync::due(&self.node, &candidates, &alive)
            };
            for (name, standbys) in due {
                let Ok(name) = VserverName::parse(&name) else { continue };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { break };
                // Not now if a sync or a migrate of it runs.
                let Ok(held) = self.vserver_lock(&name).try_lock_owned() else { continue };
                lock(&self.last_run).insert(name.clone(), Instant::now());
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let _permit = permit;
                    let _held = held;
                    for standby in &standbys {
                        me.sync_to(&name, standby, "sync").await;
                    }
                });
            }
        }
    }
}

/// The owner and epoch of `name` when the ownership table gives it to another host than this one.
fn foreign_owner(links: &Links, node: &str, name: &VserverName) -> Option<(String, u64)> {
    links.ownership.owner(name.as_str()).filter(|(owner, _)| owner != node)
}

/// Reads `NAME.conf` and `NAME.sh` from `conf_dir` for a commit; `None` when they are too large to carry.
pub fn read_conf(conf_dir: &Path, name: &VserverName) -> Result<Option<Vec<ConfFile>>, String> {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut size = 0;
    for file in [format!("{name}.conf"), format!("{name}.sh")] {
        let path = conf_dir.join(&file);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.ends_with(".sh") => continue,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
        let content = base64::engine::general_purpose::STANDARD.encode(bytes);
        size += content.len();
        files.push(ConfFile { name: file, mode, content });
    }
    Ok((size <= CONF_IN_COMMIT_MAX).then_some(files))
}

/// Writes carried conf files into a generation's `conf/`, replacing what it held.
fn write_conf(dir: &Path, name: &VserverName, files: &[ConfFile]) -> Result<(), ReplicationError> {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let allowed = [format!("{name}.conf"), format!("{name}.sh")];
    let bad = ReplicationError::BadConf;
    if let Some(f) = files.iter().find(|f| !allowed.contains(&f.name)) {
        return Err(bad(format!("a commit of {name} may carry only {name}.conf and {name}.sh, not {:?}", f.name)));
    }
    if !files.iter().any(|f| f.name == allowed[0]) {
        return Err(bad(format!("a commit that carries the conf must carry {name}.conf")));
    }
    let failed =
        |what: &str, p: &Path, e: std::io::Error| ReplicationError::Failed(format!("{what} {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| failed("creating", dir, e))?;
    for entry in std::fs::read_dir(dir).map_err(|e| failed("reading", dir, e))?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    for f in files {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&f.content)
            .map_err(|e| bad(format!("{}: not base64: {e}", f.name)))?;
        let path = dir.join(&f.name);
        std::fs::write(&path, bytes).map_err(|e| failed("writing", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(|e| failed("setting the mode of", &path, e))?;
    }
    Ok(())
}

/// How a listed pass ([`Replication::copy_listed`]) runs.
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    /// The pass, in words (for errors).
    pub what: &'static str,
    /// The vserver may be running: files vanishing is accepted.
    pub live: bool,
    /// A listed path the tree no longer has is removed from the copy.
    pub gone_removed: bool,
}

/// Waits until no receiving rsync of a session runs, at most `limit`; false if some still do.
async fn idle_within(active: &tokio::sync::watch::Sender<usize>, limit: Duration) -> bool {
    let mut rx = active.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
}

/// Counts a receiving rsync as active while it lives, and keeps what it said if it failed.
pub struct ActiveGuard {
    active: Arc<tokio::sync::watch::Sender<usize>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl ActiveGuard {
    /// Records what a failed receiving rsync said (for the sender's error message).
    pub fn report(&self, said: String) {
        lock(&self.errors).push(said);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What the passes of one session moved.
#[derive(Debug, Default)]
pub struct Passes {
    bytes_sent: u64,
    files_transferred: u64,
    freeze: Option<Duration>,
    warning: Option<String>,
    /// Each step's duration, ms, in order.
    phases_ms: Vec<(String, u64)>,
    /// The conf, when carried in the commit.
    conf: Option<Vec<ConfFile>>,
    /// The standby's generation the session filled.
    generation: String,
}

impl Passes {
    /// A session's passes that moved `moved` into `generation`, in the given steps.
    pub fn new(moved: &Moved, generation: &str, phases_ms: Vec<(String, u64)>) -> Self {
        let mut passes = Passes { generation: generation.to_string(), phases_ms, ..Passes::default() };
        passes.add(moved);
        passes
    }

    fn add(&mut self, m: &Moved) {
        self.bytes_sent += m.bytes_sent;
        self.files_transferred += m.files_transferred;
    }
}

/// One rsync run of a sync.
struct RsyncPass {
    what: String,
    sources: Vec<PathBuf>,
    dest: String,
    shell: String,
    live: bool,
    extra: Vec<String>,
}

impl RsyncPass {
    fn tree(tree: &Path, standby: &str, shell: &str, live: bool) -> Self {
        let mut source = tree.as_os_str().to_owned();
        source.push("/");
        Self {
            what: if live { "tree (live pass)".into() } else { "tree (frozen pass)".into() },
            sources: vec![PathBuf::from(source)],
            dest: format!("{standby}:tree/"),
            shell: shell.to_string(),
            live,
            extra: Vec::new(),
        }
    }

    fn conf(conf_dir: &Path, name: &VserverName, standby: &str, shell: &str) -> Self {
        let mut source = conf_dir.as_os_str().to_owned();
        source.push("/");
        Self {
            what: "conf".into(),
            sources: vec![PathBuf::from(source)],
            dest: format!("{standby}:conf/"),
            shell: shell.to_string(),
            live: false,
            extra: vec![format!("--include=/{name}.conf"), format!("--include=/{name}.sh"), "--exclude=*".into()],
        }
    }

    fn job(self, bin: PathBuf, io_timeout: Duration, whole_file: bool) -> rsync::Job {
        let mut extra_args = self.extra;
        if whole_file {
            extra_args.insert(0, "--whole-file".into());
        }
        rsync::Job {
            rsync_bin: bin,
            sources: self.sources,
            dest: self.dest,
            remote_shell: Some(self.shell),
            live: self.live,
            extra_args,
            io_timeout: Some(io_timeout),
        }
    }
}

/// Quotes one argument of rsync's `-e` command (rsync splits it on spaces and honours single quotes).
fn quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=@,+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', ""))
    }
}

fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(" ({})", t.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("; "))
    }
}

fn session_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 12];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
    }
    hex::encode(bytes)
}

/// Writes `bytes` to `path`, readable by root alone.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_travels_in_the_commit_and_only_the_conf() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("etc"), dir.path().join("gen-conf"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let web = VserverName::parse("web").unwrap();
        std::fs::write(src.join("web.conf"), "IPROOT=\"\"\n").unwrap();
        std::fs::write(dst.join("web.sh"), "stale hook").unwrap();
        let files = read_conf(&src, &web).unwrap().unwrap();
        assert_eq!(files.len(), 1, "no hook on the source");
        write_conf(&dst, &web, &files).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("web.conf")).unwrap(), "IPROOT=\"\"\n");
        assert!(!dst.join("web.sh").exists(), "a hook removed on the source is removed from the copy");
        let evil = vec![ConfFile { name: "../../etc/passwd".into(), mode: 0o644, content: String::new() }];
        assert!(matches!(write_conf(&dst, &web, &evil), Err(ReplicationError::BadConf(_))));
        // Too large to carry: sent by rsync instead.
        std::fs::write(src.join("web.sh"), vec![b'#'; 64 * 1024]).unwrap();
        assert!(read_conf(&src, &web).unwrap().is_none());
    }

    #[test]
    fn the_remote_shell_quotes_what_needs_it() {
        assert_eq!(quote("/usr/bin/vserver-tunnel"), "/usr/bin/vserver-tunnel");
        assert_eq!(quote("http://198.18.0.11:7070"), "http://198.18.0.11:7070");
        assert_eq!(quote("/a b/c"), "'/a b/c'");
    }
}
