//! The agent daemon (`vserver-agent --config FILE`): owns this host's vservers (supervisor), tells the world
//! their state over HTTP (api, metrics, page, served by serve), and exchanges heartbeats with the other agents
//! (heartbeat).

pub mod alerts;
pub mod announce;
pub mod api;
pub mod beacons;
pub mod cluster;
pub mod config;
pub mod continuous;
pub mod evacuate;
pub mod events;
pub mod forward;
pub mod heartbeat;
pub mod hosts;
pub mod join;
pub mod lag;
pub mod lease;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod migrations;
pub mod node;
pub mod nofile;
pub mod overview;
pub mod page;
pub mod pki;
pub mod placements;
pub mod reload;
pub mod replication;
pub mod rotate;
pub mod serve;
pub mod shared;
pub mod supervisor;
pub mod takeover;
pub mod treewatch;
pub mod tunnel;
pub mod watchdog;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use config::AgentConfig;
use node::Agent;

/// Checks a configuration as the agent would at start (the file, the secret, the TLS files, the cluster
/// file) without starting anything; returns a one-paragraph summary.
pub fn check(config_path: &Path) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    config.check_wire(config_path)?;
    let secrets = config.secrets(config_path)?;
    config.monitor_secrets(config_path, &secrets)?;
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
        match (&config.tls, config.insecure_plain_http) {
            (Some(t), false) if t.ca_file.is_some() => " (HTTPS, client certificates accepted)",
            (Some(_), false) => " (HTTPS)",
            (Some(_), true) => " (HTTPS, and plain HTTP accepted: insecure_plain_http)",
            (None, _) => " (plain HTTP: insecure_plain_http; the secret travels in clear)",
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
    let agent = Agent::new(config, config_path).await.map_err(RunError::Config)?;
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
    // A SIGHUP reloads agent.toml (instead of ending the agent, its default action).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
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
    if agent.config.insecure_plain_http {
        tracing::warn!(
            "insecure_plain_http: this agent {} plain HTTP, in which the cluster secret travels in clear; form \
             the cluster's certificates with `vserver-agent init` and `join` (docs/failover.md, runbook)",
            if agent.tls.is_some() { "also accepts" } else { "serves and speaks" }
        );
    }
    supervisor::announce(&agent.config).context("writing the agent's address for the vserver command")?;
    if agent.config.watchdog() {
        watchdog::check_at_start(&agent).await;
    }
    let held = if agent.config.quorum_fencing() { watchdog::hold_at_start(&agent).await } else { Vec::new() };
    if !held.is_empty() {
        tracing::warn!(vservers = ?held, "meant to run but down at start: each starts once the cluster confirms \
                       this host still owns it");
    }
    agent.watch_peers();
    let watching = tokio::spawn({
        let agent = Arc::clone(&agent);
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                agent.follow_hosts().await;
                agent.watch_peers();
            }
        }
    });
    let client = heartbeat::heartbeat_client(
        std::time::Duration::from_millis(agent.config.heartbeat.timeout_ms),
        agent.tls.as_ref(),
    )
    .context("building the heartbeat HTTP client")?;
    let heartbeats = tokio::spawn(heartbeat::run_sender(
        client,
        agent.config.clone(),
        node::credentials(agent.tls.as_ref(), &agent.secret),
        Arc::clone(&agent.membership),
        agent.supervisor.clone(),
    ));
    let udp = with_port_retries(listen, || tokio::net::UdpSocket::bind(listen))
        .await
        .with_context(|| format!("cannot listen on {listen}/udp"))?;
    let beacons = tokio::spawn(beacons::run(
        std::time::Duration::from_millis(agent.config.heartbeat.beacon_interval_ms),
        Arc::clone(&agent.membership),
        udp,
        Arc::clone(&agent.pulse),
    ));
    let supervision = tokio::spawn({
        let (supervisor, every) = (agent.supervisor.clone(), agent.config.restart.check_interval_ms);
        async move { supervisor.run(std::time::Duration::from_millis(every)).await }
    });
    // The cluster's placements before anything replicates or takes over (the table is read from disk at start).
    let _ = placements::apply(&agent, &agent.cluster_file);
    let placing = tokio::spawn(placements::run(Arc::clone(&agent), agent.cluster_file.clone()));
    let reloading = tokio::spawn(reload::on_hangup(Arc::clone(&agent), hangups));
    let replicating = tokio::spawn(Arc::clone(&agent.replication).run());
    let watching_trees = tokio::spawn(continuous::run(Arc::clone(&agent.replication)));
    let ownership = agent.ownership.clone();
    let owning = tokio::spawn(keep_ownership(Arc::clone(&agent), ownership.clone()));
    let taking_over = tokio::spawn(failover::takeover::run(takeover::AgentHost(Arc::clone(&agent))));
    let nagging = tokio::spawn(maintenance::nag(Arc::clone(&agent)));
    let alerting = tokio::spawn(alerts::run(Arc::clone(&agent)));
    if !held.is_empty() {
        tokio::spawn({
            let agent = Arc::clone(&agent);
            async move { watchdog::recover_fenced(&agent).await }
        });
    }
    let guarding = agent.config.watchdog().then(|| tokio::spawn(watchdog::run(Arc::clone(&agent))));
    let quorum = tokio::spawn(watchdog::watch_majority(Arc::clone(&agent)));
    let trimming = tokio::spawn(memory::trim_now_and_then());
    let app = api::router(Arc::clone(&agent)).merge(failover::ownership::http::router(ownership.clone()));
    let acceptor = agent.tls.as_ref().map(|t| t.acceptor.clone());
    // Connections wait in the listeners' backlogs until the server takes them, a moment from now: units
    // ordered after this one (the boot unit's `vserver --all start`) find the agent.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell the service manager that the agent is ready");
    }
    let plain_too = agent.config.insecure_plain_http;
    serve::serve(listener, Some(socket), acceptor, plain_too, Arc::clone(&agent.admission), app, shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    heartbeats.abort();
    beacons.abort();
    watching.abort();
    owning.abort();
    taking_over.abort();
    nagging.abort();
    alerting.abort();
    quorum.abort();
    trimming.abort();
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
    placing.abort();
    reloading.abort();
    replicating.abort();
    watching_trees.abort();
    supervisor::withdraw(&agent.config);
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!(node = %agent.config.node, "agent stopped; its vservers keep running");
    Ok(())
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
            failover::reconcile::reconcile(&takeover::AgentHost(Arc::clone(&agent))).await;
        }
        let placements = agent.replication.placements().into_iter().map(|(name, p)| (name.to_string(), p));
        failover::reconcile::record_primaries(&ownership, placements).await;
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
