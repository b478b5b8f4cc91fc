//! `vserver-agent --config FILE`: the per-host daemon; see `vserver-agent --help`.
use std::path::PathBuf;

use clap::Parser;

/// The per-host agent: runs this host's vservers, serves the HTTP API (status, start/stop), exchanges
/// heartbeats with the other agents.
#[derive(Debug, Parser)]
#[command(name = "vserver-agent", version)]
struct Cli {
    /// The agent's configuration (see config/agent.toml).
    #[arg(long, env = "VSERVER_AGENT_CONFIG", default_value = "/etc/vservers/agent.toml")]
    config: PathBuf,
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSERVER_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node_agent::agent::run(&cli.config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
