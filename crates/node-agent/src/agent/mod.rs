//! The agent daemon (`vserver-agent --config FILE`, issue 3, in progress): owns this host's vservers
//! (supervisor), tells the world their state over HTTP (api), and exchanges heartbeats with the other agents
//! (heartbeat). Done: config, model, heartbeat, supervisor. Still a stub (`todo!`): api; no binary ships yet.

pub mod api;
pub mod config;
pub mod heartbeat;
pub mod model;
pub mod supervisor;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use config::AgentConfig;
use model::{NodeStatus, StatusReport};

/// One running agent: its configuration and the state its tasks share.
pub struct Agent {
    /// The configuration it was started with.
    pub config: AgentConfig,
    /// The cluster secret (bearer token and heartbeat signing key).
    pub secret: String,
    /// Grows at every start of this agent.
    pub incarnation: u64,
    /// When this agent started.
    pub started: Instant,
    /// What this agent knows of its peers.
    pub membership: heartbeat::Membership,
    /// This host's vservers.
    pub supervisor: supervisor::Supervisor,
}

impl Agent {
    /// Builds the agent from a checked configuration: reads the secret, takes the next incarnation, loads
    /// the vservers' intents.
    pub fn new(config: AgentConfig, config_path: &Path) -> anyhow::Result<Self> {
        let secret = config.secret(config_path)?;
        let incarnation = supervisor::next_incarnation(&config.state_dir)
            .with_context(|| format!("keeping the incarnation in {}", config.state_dir.display()))?;
        let membership = heartbeat::Membership::new(&config, &secret, incarnation);
        let supervisor = supervisor::Supervisor::new(&config)?;
        Ok(Self { config, secret, incarnation, started: Instant::now(), membership, supervisor })
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
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT: heartbeats, the supervisor and the HTTP API.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let listen = config.listen;
    let agent = Arc::new(Agent::new(config, config_path)?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(node = %agent.config.node, incarnation = agent.incarnation, %listen, "agent started");
    supervisor::announce(&agent).context("writing the agent's address for the vserver command")?;
    let heartbeats = tokio::spawn(heartbeat::run_sender(Arc::clone(&agent)));
    let supervision = tokio::spawn(supervisor::run(Arc::clone(&agent)));
    let app = api::router(Arc::clone(&agent));
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    heartbeats.abort();
    supervision.abort();
    supervisor::withdraw(&agent);
    tracing::info!(node = %agent.config.node, "agent stopped; its vservers keep running");
    served.context("serving the HTTP API")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
