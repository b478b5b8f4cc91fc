//! One running agent: its parts, built in order (configuration, membership, peer client, ownership table,
//! lease, event log, supervisor, replication) and shared by its tasks, and what it answers about itself
//! (status, clear, an operator's intent recorded in the cluster).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use failover::ownership::Ownership;

use super::cluster::ClusterLink;
use super::config::AgentConfig;
use super::events::{self, EventLog};
use super::lease::Lease;
use super::{heartbeat, migrations, replication, serve, supervisor};
use crate::model::{ClearReport, FailoverStatus, NodeStatus, OwnershipStatus, StatusReport};

/// One running agent: its configuration and the state its tasks share.
pub struct Agent {
    /// The configuration it was started with.
    pub config: AgentConfig,
    /// Where that configuration was read from.
    pub config_path: std::path::PathBuf,
    /// The cluster secret (bearer token and heartbeat signing key).
    pub secret: String,
    /// Every secret accepted from peers and operators: the cluster secret first, then the further lines of
    /// the secret file (a rotation under way).
    pub accepted_secrets: Vec<String>,
    /// Read-only tokens (`monitor_secret_file`): admitted on the API's reads alone.
    pub monitor_secrets: Vec<String>,
    /// Grows at every start of this agent.
    pub incarnation: u64,
    /// When this agent started.
    pub started: Instant,
    /// What this agent knows of its peers.
    pub membership: Arc<heartbeat::Membership>,
    /// This host's vservers.
    pub supervisor: supervisor::Supervisor,
    /// HTTPS for the API and the heartbeats, when `[tls]` is configured.
    pub tls: Option<serve::Tls>,
    /// Replication: syncs out as primary, sessions in as standby.
    pub replication: Arc<replication::Replication>,
    /// The client of the agent-to-agent routes (probes, replica sessions, promotes, migrates).
    pub peers: failover::peer::PeerClient,
    /// Migrates this host runs as source.
    pub migrations: migrations::Migrations,
    /// The last evacuation or restore of each host run through this agent.
    pub evacuations: failover::evacuate::Jobs,
    /// This host's member of the ownership table.
    pub ownership: Ownership,
    /// This host's lease.
    pub lease: Arc<Lease>,
    /// The cluster's event log.
    pub events: EventLog,
    /// The takeovers this host runs as the coordinator.
    pub takeovers: failover::takeover::Busy,
    /// When this host last heard from a majority of the voters, ms since [`Agent::started`].
    pub last_majority_ms: std::sync::atomic::AtomicU64,
    /// The event loop's proof of life, which the beacons' thread asks for before each send.
    pub pulse: Arc<super::beacons::Pulse>,
    /// Held while the vservers fenced here are confirmed or given up, one recovery at a time (the watchdog's
    /// report and the majority's return may both ask for one).
    pub recovery: tokio::sync::Mutex<()>,
    /// Who may hold connections to the API (the peers always, other addresses within limits).
    pub admission: Arc<serve::Admission>,
    /// This host's cluster file as read at start: the placements until it is taken into the cluster's table
    /// (see `placements.rs`).
    pub cluster_file: failover::placement::ClusterConfig,
    /// The `[alerts]` of agent.toml as last (re)loaded (see `reload.rs`).
    pub alerts_config: std::sync::RwLock<super::config::AlertsConfig>,
}

impl Agent {
    /// Brings the peers this host watches up to date (see `failover::membership::watch_set`): every peer on
    /// a voter, the voters and this host's partners (the hosts its vservers' placements name) elsewhere; and
    /// those it sends heartbeats to (the voters and its partners, on every host).
    pub fn watch_peers(&self) {
        let voters = self.ownership.lease_voters();
        let partners = self.partners();
        let node = self.config.node.as_str();
        let watched = failover::membership::watch_set(node, &voters, partners.iter().map(String::as_str));
        let heartbeats = failover::membership::heartbeat_set(node, &voters, partners.iter().map(String::as_str));
        self.membership.watch(watched.as_ref(), Some(&heartbeats));
    }

    /// Brings this host's peers in line with the cluster's hosts (see `Ownership::hosts`: those of its
    /// configuration and those taken in through the cluster, less those taken out for good), for its
    /// heartbeats and beacons, its calls to peers and the connections it admits; and tells the ownership table
    /// which hosts are heard alive (only those become voters).
    pub async fn follow_hosts(&self) {
        let node = self.config.node.as_str();
        let peers: Vec<(String, String)> = self.ownership.hosts().into_iter().filter(|(h, _)| h != node).collect();
        if self.membership.set_peers(&peers) {
            self.peers.set_peers(peers.clone());
            self.admission.set_peers(peer_addresses(&peers).await);
            let names: Vec<&str> = peers.iter().map(|(h, _)| h.as_str()).collect();
            tracing::info!(peers = ?names, "the cluster's hosts changed");
        }
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if self.ownership.removed().contains(node) && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "this host was removed from the cluster (vserver-agent remove): it is no one's peer; \
                             stop its agent, or take it in again with a join token"
            );
        }
        let alive = self.membership.peers().into_iter().filter(|p| p.state == crate::model::PeerState::Alive);
        let mut alive: std::collections::BTreeSet<String> = alive.map(|p| p.name).collect();
        alive.insert(node.to_string());
        self.ownership.set_alive(alive);
    }

    /// This host's partners: the hosts named with it in a vserver's placement (this host among them).
    pub fn partners(&self) -> std::collections::BTreeSet<String> {
        let node = self.config.node.as_str();
        let placements = self.replication.placements();
        let shared = placements.values().filter(|p| p.primary == node || p.standbys.iter().any(|s| s == node));
        shared.flat_map(|p| std::iter::once(&p.primary).chain(&p.standbys)).cloned().collect()
    }

    /// Builds the agent from a checked configuration: reads the secret, takes the next incarnation, opens
    /// this host's member of the ownership table, loads the vservers' intents.
    pub async fn new(config: AgentConfig, config_path: &Path) -> anyhow::Result<Self> {
        config.check_wire(config_path)?;
        let accepted_secrets = config.secrets(config_path)?;
        let monitor_secrets = config.monitor_secrets(config_path, &accepted_secrets)?;
        let secret = accepted_secrets[0].clone();
        let tls = config.tls.as_ref().map(|t| serve::Tls::load(t, config_path)).transpose()?;
        let incarnation = supervisor::next_incarnation(&config.state_dir)
            .with_context(|| format!("keeping the incarnation in {}", config.state_dir.display()))?;
        let mut membership = heartbeat::Membership::new(heartbeat::membership_config(&config, &secret, incarnation));
        membership.also_accept(&accepted_secrets[1..]);
        let membership = Arc::new(membership);
        let http = heartbeat::peer_client(std::time::Duration::from_secs(30), tls.as_ref())
            .context("building the HTTP client for peers")?;
        let urls = config.peers.iter().map(|p| (p.name.clone(), p.url.clone()));
        let peers =
            failover::peer::PeerClient::new(http, credentials(tls.as_ref(), &secret), urls).sent_by(&config.node);
        let configured: Vec<(String, String)> = config.peers.iter().map(|p| (p.name.clone(), p.url.clone())).collect();
        let admission = serve::Admission::new(peer_addresses(&configured).await);
        let mutual = tls.as_ref().is_some_and(|t| t.ca_pem.is_some());
        let ownership = open_ownership(&config, tls.is_some(), mutual, &peers, &accepted_secrets).await?;
        let lease = Arc::new(Lease::new(&config, ownership.clone(), Arc::clone(&membership)));
        let events = EventLog::new(ownership.clone());
        let cluster = ClusterLink {
            ownership: ownership.clone(),
            lease: Arc::clone(&lease),
            events: events.clone(),
            window_ms: config.failures.window_ms(),
        };
        let cluster_config = replication::load_cluster(&config, config_path)?;
        let root_devices = cluster_config
            .replication
            .iter()
            .filter_map(|(name, r)| match &r.data {
                failover::placement::DataPath::Block { device, fstype } => {
                    Some((name.clone(), (device.clone(), fstype.clone())))
                }
                _ => None,
            })
            .collect();
        let supervisor = supervisor::Supervisor::new(&config, Arc::new(cluster), root_devices)?;
        let links = replication::Links {
            supervisor: supervisor.clone(),
            membership: Arc::clone(&membership),
            peers: peers.clone(),
            ownership: ownership.clone(),
        };
        let cluster_file = cluster_config.clone();
        let alerts_config = std::sync::RwLock::new(config.alerts.clone());
        let replication = Arc::new(replication::Replication::new(&config, cluster_config, links)?);
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
        Ok(Self {
            config,
            config_path: config_path.to_path_buf(),
            secret,
            accepted_secrets,
            monitor_secrets,
            incarnation,
            started: Instant::now(),
            membership,
            supervisor,
            tls,
            replication,
            peers,
            migrations: migrations::Migrations::default(),
            evacuations: failover::evacuate::Jobs::default(),
            ownership,
            lease,
            events,
            takeovers: Default::default(),
            last_majority_ms: std::sync::atomic::AtomicU64::new(0),
            pulse: Arc::default(),
            recovery: tokio::sync::Mutex::new(()),
            admission,
            cluster_file,
            alerts_config,
        })
    }

    /// The `[alerts]` of agent.toml in force (a reload changes it).
    pub fn alerts(&self) -> super::config::AlertsConfig {
        self.alerts_config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How this agent's traffic is protected.
    pub fn wire(&self) -> crate::model::WireStatus {
        let mode = match &self.tls {
            Some(t) if t.ca_pem.is_some() => "mutual_tls",
            Some(_) => "tls",
            None => "plain",
        };
        crate::model::WireStatus {
            mode: mode.into(),
            plain_accepted: self.config.insecure_plain_http,
            certificate_not_after_unix_ms: self.tls.as_ref().and_then(|t| t.cert_not_after_unix_ms),
            ca_not_after_unix_ms: self.tls.as_ref().and_then(|t| t.ca_not_after_unix_ms),
        }
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
        let own = &self.ownership;
        // A vserver of the cluster: placed by the cluster configuration, or named by the table. Not only once the
        // table names its owner: a start in the second after the cluster formed (its primary not recorded yet)
        // would otherwise leave no intent, and a takeover right after would go by the last heartbeat heard.
        if self.replication.placement(name).is_none() && own.owner(name.as_str()).is_none() {
            return Ok(());
        }
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
        let in_cluster = self.replication.placement(name).is_some() || self.ownership.owner(name.as_str()).is_some();
        let here = match self.supervisor.get(name).await {
            Ok(_) => true,
            Err(supervisor::SupervisorError::NotFound(_)) if in_cluster => false,
            Err(e) => return Err(e),
        };
        let window = self.config.failures.window_ms();
        let relocated =
            failover::events::relocations(&self.ownership.events(), name.as_str(), replication::now_ms(), window);
        // Recorded for every vserver of the cluster: a clear makes it meant to run again (see
        // `record_intent_in_cluster`), and forgets its relocations.
        let owned = self.ownership.owner(name.as_str()).is_some();
        if owned || relocated != failover::events::Relocations::default() {
            self.ownership.log_event(&failover::events::clear_event(name.as_str(), &self.config.node)).await.map_err(
                |e| supervisor::SupervisorError::Failed {
                    name: name.to_string(),
                    message: format!("cannot record the clear in the cluster's event log ({e}); nothing changed"),
                },
            )?;
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
        let own = &self.ownership;
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
                wire: Some(self.wire()),
            },
            peers: self.membership.peers(),
            vservers: self.supervisor.list().await,
            rejected_heartbeats: self.membership.counters(),
            replication: self.replication.status(),
            replicas: self.replication.held(),
            ownership: Some(OwnershipStatus { raft: self.ownership.metrics(), owners: self.ownership.table() }),
            failover: FailoverStatus {
                takeover: self.config.takeover_enabled(),
                takeover_timeout_ms: self.config.takeover_timeout().as_millis() as u64,
                witness: self.config.witness,
                quorum_fencing: self.config.quorum_fencing(),
                watchdog: self.config.watchdog(),
                lease_remaining_ms: self.lease.remaining().map(|d| d.as_millis() as u64),
                maintenance: (&self.ownership.maintenance()).into(),
                takeovers_in_progress: self.takeovers.list(),
            },
            takeovers: self.events.takeovers(),
            relocation_errors: self.relocation_errors(),
        }
    }
}

/// A host's Raft node id: the first 8 bytes of the SHA-256 of its name, so every host computes the same ids
/// from the same names, and an id is never reused for another name.
pub fn raft_node_id(name: &str) -> u64 {
    failover::ownership::node_id_of(name)
}

/// Opens this host's member of the ownership table (`STATE_DIR/raft`): this host and its peers, reached at
/// the URLs of this configuration, through `peers`' HTTP client.
async fn open_ownership(
    config: &AgentConfig,
    tls: bool,
    mutual: bool,
    peers: &failover::peer::PeerClient,
    accepted_secrets: &[String],
) -> anyhow::Result<Ownership> {
    use failover::ownership::{Member, OwnershipConfig};
    let scheme = if tls { "https" } else { "http" };
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
    let mut own = OwnershipConfig::new(
        raft_node_id(&config.node),
        config.state_dir.join("raft"),
        members,
        accepted_secrets[0].clone(),
    );
    own.client = peers.http().clone();
    own.also_accepted = accepted_secrets[1..].to_vec();
    own.certified = mutual;
    Ownership::open(own).await.context("opening the ownership table")
}

/// The addresses of the peers' URLs (a name is resolved once, at start; one that does not resolve is left out,
/// and its connections count as any other address's).
async fn peer_addresses(peers: &[(String, String)]) -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    for (name, url) in peers {
        let Ok(url) = reqwest::Url::parse(url) else { continue };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { continue };
        let host = host.to_string();
        match tokio::net::lookup_host(format!("{host}:{port}")).await {
            Ok(addrs) => found.extend(addrs.map(|a| a.ip())),
            Err(e) => tracing::warn!(peer = %name, %host, error = %e, "cannot resolve the peer's address: \
                                     its connections are limited as any other address's"),
        }
    }
    found
}

/// How this agent authenticates its requests to its peers: with mutual TLS (a cluster CA configured), its
/// certificate stands for the secret over https, and the secret never travels there.
pub fn credentials(tls: Option<&serve::Tls>, secret: &str) -> failover::peer::Credentials {
    failover::peer::Credentials::new(secret, tls.is_some_and(|t| t.ca_pem.is_some()))
}
