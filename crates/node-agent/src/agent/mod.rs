//! The agent daemon (`vserver-agent --config FILE`): owns this host's vservers (supervisor), tells the world
//! their state over HTTP (api, metrics, page, served by serve), and exchanges heartbeats with the other agents
//! (heartbeat).

pub mod announce;
pub mod api;
pub mod config;
pub mod evacuate;
pub mod events;
pub mod heartbeat;
pub mod maintenance;
pub mod metrics;
pub mod migrate;
pub mod page;
pub mod replication;
pub mod serve;
pub mod supervisor;
pub mod takeover;
pub mod tunnel;
pub mod watchdog;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::model::{ClearReport, FailoverStatus, NodeStatus, OwnershipStatus, StatusReport};
use config::AgentConfig;

/// One running agent: its configuration and the state its tasks share.
pub struct Agent {
    /// The configuration it was started with.
    pub config: AgentConfig,
    /// The cluster secret (bearer token and heartbeat signing key).
    pub secret: String,
    /// Every secret accepted from peers and operators: the cluster secret first, then the further lines of
    /// the secret file (a rotation under way).
    pub accepted_secrets: Vec<String>,
    /// Grows at every start of this agent.
    pub incarnation: u64,
    /// When this agent started.
    pub started: Instant,
    /// What this agent knows of its peers.
    pub membership: heartbeat::Membership,
    /// This host's vservers.
    pub supervisor: supervisor::Supervisor,
    /// HTTPS for the API and the heartbeats, when `[tls]` is configured.
    pub tls: Option<serve::Tls>,
    /// Replication: syncs out as primary, sessions in as standby.
    pub replication: Arc<replication::Replication>,
    /// The client of the agent-to-agent routes (probes, replica sessions, promotes, migrates).
    pub peers: failover::peer::PeerClient,
    /// Migrates this host runs as source.
    pub migrations: migrate::Migrations,
    /// The last evacuation or restore of each host run through this agent.
    pub evacuations: failover::evacuate::Jobs,
    /// This host's member of the ownership table (set once at start, before the API serves).
    pub ownership: std::sync::OnceLock<failover::ownership::Ownership>,
    /// The takeovers this host runs as the coordinator.
    pub takeovers: failover::takeover::Busy,
    /// When this host last heard from a majority of the voters, ms since [`Agent::started`].
    pub last_majority_ms: std::sync::atomic::AtomicU64,
}

impl Agent {
    /// Builds the agent from a checked configuration: reads the secret, takes the next incarnation, loads
    /// the vservers' intents.
    pub fn new(config: AgentConfig, config_path: &Path) -> anyhow::Result<Self> {
        let accepted_secrets = config.secrets(config_path)?;
        let secret = accepted_secrets[0].clone();
        let tls = config.tls.as_ref().map(|t| serve::Tls::load(t, config_path)).transpose()?;
        let incarnation = supervisor::next_incarnation(&config.state_dir)
            .with_context(|| format!("keeping the incarnation in {}", config.state_dir.display()))?;
        let mut membership = heartbeat::Membership::new(heartbeat::membership_config(&config, &secret, incarnation));
        membership.also_accept(&accepted_secrets[1..]);
        let supervisor = supervisor::Supervisor::new(&config)?;
        let replication = Arc::new(replication::Replication::new(&config, config_path)?);
        if config.witness {
            if let Some((name, _)) = replication
                .placements()
                .into_iter()
                .find(|(_, p)| p.primary == config.node || p.standbys.contains(&config.node))
            {
                anyhow::bail!(
                    "{}: this host is a witness (witness = true), but the cluster configuration places {name} on it; \
                     a witness runs no vservers and holds no replicas",
                    config_path.display()
                );
            }
        }
        let http = heartbeat::peer_client(std::time::Duration::from_secs(30), tls.as_ref())
            .context("building the HTTP client for peers")?;
        let urls = config.peers.iter().map(|p| (p.name.clone(), p.url.clone()));
        let peers = failover::peer::PeerClient::new(http, &secret, urls);
        Ok(Self {
            config,
            secret,
            accepted_secrets,
            incarnation,
            started: Instant::now(),
            membership,
            supervisor,
            tls,
            replication,
            peers,
            migrations: migrate::Migrations::default(),
            evacuations: failover::evacuate::Jobs::default(),
            ownership: std::sync::OnceLock::new(),
            takeovers: Default::default(),
            last_majority_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Records an operator's `what` (start, restart, stop) of `name` in the cluster's event log before it is
    /// carried out, for a vserver of the cluster (the ownership table names its owner): a takeover starts a
    /// vserver or not by the last intent recorded, which no heartbeat may have carried yet. With automatic
    /// takeover on, a start or restart that cannot be recorded (no majority, after 10 s of trying) is refused
    /// with nothing done; otherwise, and for a stop, it is carried out, recorded if the cluster answers
    /// within a few seconds.
    pub async fn record_intent_in_cluster(
        &self,
        name: &isolate::VserverName,
        running: bool,
        what: &str,
    ) -> Result<(), supervisor::SupervisorError> {
        let Some(own) = self.ownership.get().filter(|o| o.owner(name.as_str()).is_some()) else { return Ok(()) };
        let text = failover::events::intent_event(name.as_str(), running, &format!("{what} on {}", self.config.node));
        let logged = own.log(events::kinds::INTENT, Some(name.as_str()), &text);
        // Only automatic takeover reads it: without it (two hosts, or turned off), a start never waits for it.
        if running && self.config.takeover_enabled() {
            // Through a leader election (the old leader just died) as well: tried again for a while.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut tried = logged.await;
            while let Err(e) = &tried {
                if std::time::Instant::now() >= until {
                    tracing::warn!(vserver = %name, error = %e, "{what} refused: its intent is not recorded in the \
                                   cluster");
                    return Err(supervisor::SupervisorError::NoLease(name.to_string()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                tried = own.log(events::kinds::INTENT, Some(name.as_str()), &text).await;
            }
            Ok(())
        } else {
            match tokio::time::timeout(std::time::Duration::from_secs(3), logged).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(vserver = %name, error = %e, "stopped; its intent is not recorded in the \
                                             cluster (no majority answered)"),
                Err(_) => tracing::warn!(vserver = %name, "stopped; its intent is not recorded in the cluster (no \
                                          majority answered in 3 s)"),
            }
            Ok(())
        }
    }

    /// `POST /v1/vservers/NAME/clear`: forgets a vserver's failures and lifts its error. Its relocations are
    /// forgotten cluster-wide (a clear event in the cluster's event log, recorded first: if that fails,
    /// nothing changed), its restarts on this host. It needs the vserver configured here or in the cluster.
    pub async fn clear(&self, name: &isolate::VserverName) -> Result<ClearReport, supervisor::SupervisorError> {
        let in_cluster = self.replication.placement(name).is_some()
            || self.ownership.get().is_some_and(|o| o.owner(name.as_str()).is_some());
        let here = match self.supervisor.get(name).await {
            Ok(_) => true,
            Err(supervisor::SupervisorError::NotFound(_)) if in_cluster => false,
            Err(e) => return Err(e),
        };
        let relocated = self
            .ownership
            .get()
            .map(|o| {
                let window = self.config.failures.window_ms();
                failover::events::relocations(&o.events(), name.as_str(), replication::now_ms(), window)
            })
            .unwrap_or_default();
        // Recorded for every vserver of the cluster: a clear makes it meant to run again (see
        // `record_intent_in_cluster`), and forgets its relocations.
        let owned = self.ownership.get().is_some_and(|o| o.owner(name.as_str()).is_some());
        if owned || relocated != failover::events::Relocations::default() {
            let own = self.ownership.get().expect("relocations come from the table");
            own.log_event(&failover::events::clear_event(name.as_str(), &self.config.node)).await.map_err(|e| {
                supervisor::SupervisorError::Failed {
                    name: name.to_string(),
                    message: format!("cannot record the clear in the cluster's event log ({e}); nothing changed"),
                }
            })?;
        }
        let cleared = if here { self.supervisor.clear(name).await? } else { Default::default() };
        let status = if here { Some(self.supervisor.get(name).await?) } else { None };
        Ok(ClearReport {
            vserver: name.to_string(),
            restarts: cleared.restarts,
            relocations: relocated.at_unix_ms.len() as u32,
            error: cleared.error.or(relocated.error),
            status,
        })
    }

    /// The vservers the cluster's event log puts in error (the relocation limit), with the reason.
    fn relocation_errors(&self) -> std::collections::BTreeMap<String, String> {
        let Some(own) = self.ownership.get() else { return Default::default() };
        let (events, now, window) = (own.events(), replication::now_ms(), self.config.failures.window_ms());
        own.table()
            .into_keys()
            .filter_map(|v| failover::events::relocations(&events, &v, now, window).error.map(|e| (v, e)))
            .collect()
    }

    /// The body of `GET /v1/status`.
    pub async fn status(&self) -> StatusReport {
        StatusReport {
            node: NodeStatus {
                name: self.config.node.clone(),
                incarnation: self.incarnation,
                uptime_secs: self.started.elapsed().as_secs(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            peers: self.membership.peers(),
            vservers: self.supervisor.list().await,
            rejected_heartbeats: self.membership.counters(),
            replication: self.replication.status(),
            replicas: self.replication.held(),
            ownership: self.ownership.get().map(|o| OwnershipStatus { raft: o.metrics(), owners: o.table() }),
            failover: FailoverStatus {
                takeover: self.config.takeover_enabled(),
                takeover_timeout_ms: self.config.takeover_timeout().as_millis() as u64,
                witness: self.config.witness,
                quorum_fencing: self.config.quorum_fencing(),
                watchdog: self.config.watchdog(),
                lease_remaining_ms: watchdog::lease_remaining(self).map(|d| d.as_millis() as u64),
                maintenance: self.ownership.get().map(|o| o.maintenance()).unwrap_or_default(),
                takeovers_in_progress: self.takeovers.list(),
            },
            takeovers: takeover::records(self),
            relocation_errors: self.relocation_errors(),
        }
    }
}

/// Checks a configuration as the agent would at start (the file, the secret, the TLS files, the cluster
/// file) without starting anything; returns a one-paragraph summary.
pub fn check(config_path: &Path) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    config.secret(config_path)?;
    if let Some(tls) = &config.tls {
        serve::Tls::load(tls, config_path)?;
    }
    replication::load_cluster(&config, config_path)?;
    let peers: Vec<String> = config.peers.iter().map(|p| format!("{} ({})", p.name, p.url)).collect();
    let hb = &config.heartbeat;
    Ok(format!(
        "{}: configuration OK\n  node {} listening on {}{}\n  peers: {}\n  heartbeat every {} ms; suspect after {} ms, dead after {} ms",
        config_path.display(),
        config.node,
        config.listen,
        match &config.tls {
            Some(t) if t.ca_file.is_some() => " (HTTPS, client certificates accepted)",
            Some(_) => " (HTTPS)",
            None => " (HTTP)",
        },
        if peers.is_empty() { "none".to_string() } else { peers.join(", ") },
        hb.interval_ms,
        hb.suspect_after_ms,
        hb.dead_after_ms,
    ))
}

/// Why the agent stopped with an error. The two kinds exit with different codes (see [`crate::exit`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot be used: the file, the secret, the TLS files, the cluster file or the state
    /// directory. Nothing was started.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// The agent failed while starting to serve (a port in use, the ownership table) or while running.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl RunError {
    /// The process's exit code: [`crate::exit::USAGE`] for a configuration that cannot be used,
    /// [`crate::exit::FAILED`] otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => crate::exit::USAGE,
            Self::Failed(_) => crate::exit::FAILED,
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT: heartbeats, the supervisor and the HTTP API. Under systemd
/// (`Type=notify`), it tells the service manager it is ready once its API and its local socket listen.
pub async fn run(config_path: &Path) -> Result<(), RunError> {
    let config = AgentConfig::load(config_path).map_err(|e| RunError::Config(e.into()))?;
    let agent = Agent::new(config, config_path).map_err(RunError::Config)?;
    serve_agent(Arc::new(agent)).await.map_err(RunError::Failed)
}

/// How long a starting agent waits for its port while another process holds it (the agent it replaces, still
/// leaving): a restart must fit in the blip budget, but must not fail because the old agent took a moment.
const PORT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds with `bind`, trying again for [`PORT_PATIENCE`] while the address is in use.
async fn with_port_retries<T, F>(listen: std::net::SocketAddr, bind: impl Fn() -> F) -> std::io::Result<T>
where
    F: std::future::Future<Output = std::io::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PORT_PATIENCE;
    let mut said = false;
    loop {
        match bind().await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::info!(%listen, "the port is still in use (the agent this one replaces is leaving): waiting");
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn serve_agent(agent: Arc<Agent>) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let listen = agent.config.listen;
    let listener = with_port_retries(listen, || tokio::net::TcpListener::bind(listen))
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let socket_path = serve::socket_path(&agent.config.run_dir);
    let socket = serve::bind_socket(&socket_path)
        .with_context(|| format!("cannot listen on the local socket {}", socket_path.display()))?;
    let scheme = if agent.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        node = %agent.config.node, incarnation = agent.incarnation, %listen, scheme,
        socket = %socket_path.display(), "agent started"
    );
    supervisor::announce(&agent).context("writing the agent's address for the vserver command")?;
    if agent.config.watchdog() {
        watchdog::check_at_start(&agent).await;
    }
    let held = if agent.config.quorum_fencing() { watchdog::hold_at_start(&agent).await } else { Vec::new() };
    if !held.is_empty() {
        tracing::warn!(vservers = ?held, "meant to run but down at start: each starts once the cluster confirms \
                       this host still owns it");
    }
    let heartbeats = tokio::spawn(heartbeat::run_sender(Arc::clone(&agent)));
    let udp = with_port_retries(listen, || tokio::net::UdpSocket::bind(listen))
        .await
        .with_context(|| format!("cannot listen on {listen}/udp"))?;
    let beacons = tokio::spawn(heartbeat::run_beacons(Arc::clone(&agent), udp));
    let supervision = tokio::spawn(supervisor::run(Arc::clone(&agent)));
    let replicating = tokio::spawn(Arc::clone(&agent.replication).run(Arc::clone(&agent)));
    let ownership = open_ownership(&agent).await?;
    let _ = agent.ownership.set(ownership.clone());
    let table = ownership.clone();
    agent.supervisor.set_owner_lookup(Box::new(move |name| table.owner(name.as_str()).map(|(owner, _)| owner)));
    let (log, window) = (ownership.clone(), agent.config.failures.window_ms());
    agent.supervisor.set_relocation_lookup(Box::new(move |name| {
        failover::events::relocations(&log.events(), name.as_str(), replication::now_ms(), window)
    }));
    let weak = Arc::downgrade(&agent);
    agent.supervisor.set_lease_check(Box::new(move || {
        weak.upgrade().is_none_or(|agent| {
            let may = watchdog::start_lease(&agent).is_none_or(|left| !left.is_zero());
            if may {
                // The keepers (and the `vserver start` the supervisor runs) read the lease from a file.
                watchdog::keepers_catch_up(&agent);
            }
            may
        })
    }));
    let weak = Arc::downgrade(&agent);
    agent.supervisor.set_event_sink(Box::new(move |kind, name, text| {
        if let Some(agent) = weak.upgrade() {
            agent.log_event_later(kind, Some(name.as_str()), text);
        }
    }));
    let owning = tokio::spawn(keep_ownership(Arc::clone(&agent), ownership.clone()));
    let taking_over = tokio::spawn(failover::takeover::run(takeover::AgentHost(Arc::clone(&agent))));
    let nagging = tokio::spawn(maintenance::nag(Arc::clone(&agent)));
    if !held.is_empty() {
        tokio::spawn({
            let agent = Arc::clone(&agent);
            async move { watchdog::recover_fenced(&agent).await }
        });
    }
    let guarding = agent.config.watchdog().then(|| tokio::spawn(watchdog::run(Arc::clone(&agent))));
    let quorum = tokio::spawn(watchdog::watch_majority(Arc::clone(&agent)));
    let app = api::router(Arc::clone(&agent)).merge(failover::ownership::router(ownership.clone()));
    let acceptor = agent.tls.as_ref().map(|t| t.acceptor.clone());
    // Connections wait in the listeners' backlogs until the server takes them, a moment from now: units
    // ordered after this one (the boot unit's `vserver --all start`) find the agent.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell the service manager that the agent is ready");
    }
    serve::serve(listener, Some(socket), acceptor, app, shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    heartbeats.abort();
    beacons.abort();
    owning.abort();
    taking_over.abort();
    nagging.abort();
    quorum.abort();
    if let Some(g) = guarding {
        g.abort();
        // With lease fencing (automatic takeover), a stopped agent is a silent host: its vservers are taken
        // over after the takeover timeout, so the watchdog stays armed and kills them unless the agent is back
        // in time (a restart). Without it, an agent stopped on purpose leaves them running.
        if agent.config.quorum_fencing() {
            tracing::warn!(
                "the host watchdog stays armed: this host's vservers are killed unless the agent is back \
                            within its timeout (their takeover follows)"
            );
        } else {
            watchdog::disarm(&agent).await;
        }
    }
    if let Err(e) = ownership.shutdown().await {
        tracing::warn!(error = %e, "the ownership table did not stop cleanly");
    }
    supervision.abort();
    replicating.abort();
    supervisor::withdraw(&agent);
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!(node = %agent.config.node, "agent stopped; its vservers keep running");
    Ok(())
}

/// A host's Raft node id: the first 8 bytes of the SHA-256 of its name, so every host computes the same ids
/// from the same names, and an id is never reused for another name.
pub fn raft_node_id(name: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Opens this host's member of the ownership table (`STATE_DIR/raft`): this host and its peers, reached at
/// the URLs of this configuration.
async fn open_ownership(agent: &Agent) -> anyhow::Result<failover::ownership::Ownership> {
    use failover::ownership::{Member, Ownership, OwnershipConfig};
    let config = &agent.config;
    let scheme = if agent.tls.is_some() { "https" } else { "http" };
    let mut members = vec![Member {
        id: raft_node_id(&config.node),
        name: config.node.clone(),
        url: format!("{scheme}://{}", config.listen),
    }];
    members.extend(config.peers.iter().map(|p| Member {
        id: raft_node_id(&p.name),
        name: p.name.clone(),
        url: p.url.clone(),
    }));
    let mut own =
        OwnershipConfig::new(raft_node_id(&config.node), config.state_dir.join("raft"), members, agent.secret.clone());
    own.client = agent.peers.http().clone();
    own.also_accepted = agent.accepted_secrets[1..].to_vec();
    Ownership::open(own).await.context("opening the ownership table")
}

/// Forms the cluster when nobody has yet, then, while this host leads, records the configured primary as
/// the owner of every placed vserver the table does not know yet.
async fn keep_ownership(agent: Arc<Agent>, ownership: failover::ownership::Ownership) {
    let mut formed = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !formed {
            match ownership.initialize_if_first().await {
                Ok(started) => {
                    formed = true;
                    if started {
                        tracing::info!("ownership table: cluster formed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ownership table: not formed yet"),
            }
        }
        if formed {
            takeover::reconcile(&agent).await;
        }
        if !ownership.is_leader() {
            continue;
        }
        for (name, placement) in agent.replication.placements() {
            if ownership.epoch(name.as_str()) != 0 {
                continue;
            }
            match ownership.set_owner(name.as_str(), &placement.primary, 0).await {
                Ok((owner, epoch)) => tracing::info!(vserver = %name, %owner, epoch, "ownership recorded"),
                Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record the ownership"),
            }
        }
    }
}

/// SIGTERM or SIGINT, whichever comes first. The handlers are installed at once, not when the future is
/// first awaited, so that a signal that comes while the agent starts (once the service manager was told it
/// is ready, say) stops it cleanly instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
