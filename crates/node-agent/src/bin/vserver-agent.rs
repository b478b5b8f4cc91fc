//! `vserver-agent --config FILE`: the per-host daemon; see `vserver-agent --help`.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The per-host agent: runs this host's vservers, keeps them running, serves the HTTP API (status, start,
/// stop, metrics, a status page) and exchanges heartbeats with the other agents.
#[derive(Debug, Parser)]
#[command(
    name = "vserver-agent",
    version,
    after_help = "Stopping or restarting the agent never stops a vserver: a new agent adopts the running ones.\n\
                  While an agent runs, `vserver NAME start|stop|restart` goes through it, so the operator's word\n\
                  is kept as intent. Logs go to stderr; VSERVER_LOG sets the level (e.g. debug, or\n\
                  node_agent=debug). The HTTP API is described in docs/api.md."
)]
struct Cli {
    /// The agent's configuration (TOML; config/agent.toml is a commented example).
    #[arg(long, short = 'c', env = "VSERVER_AGENT_CONFIG", default_value = "/etc/vservers/agent.toml")]
    config: PathBuf,
    /// Check the configuration (and read the secret and TLS files), print a summary, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSERVER_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if cli.check {
        return match node_agent::agent::check(&cli.config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vserver-agent: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node_agent::agent::run(&cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}
