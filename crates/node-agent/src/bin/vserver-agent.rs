//! `vserver-agent --config FILE`: the per-host daemon; see `vserver-agent --help`.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use node_agent::exit;

/// The per-host agent: runs this host's vservers, keeps them running, serves the HTTP API (status, start,
/// stop, metrics, a status page) and exchanges heartbeats with the other agents.
#[derive(Debug, Parser)]
#[command(
    name = "vserver-agent",
    version,
    after_help = "Restarting the agent stops no vserver: a new agent adopts the running ones. (With automatic\n\
                  takeover, an agent stopped for longer than its watchdog's timeout leaves a silent host: the\n\
                  watchdog kills its vservers and the cluster takes them over.)\n\
                  While an agent runs, `vserver NAME start|stop|restart` goes through it, so the operator's word\n\
                  is kept as intent. Logs go to stderr; VSERVER_LOG sets the level (e.g. debug, or\n\
                  node_agent=debug). The HTTP API is described in docs/api.md.\n\n\
                  Exit codes:\n  \
                  0  stopped by SIGTERM or SIGINT; --check: the configuration is good\n  \
                  1  failed while starting to serve (e.g. the port is in use) or while running\n  \
                  2  bad usage, or a configuration that cannot be used (the file, the secret, the TLS or cluster\n     \
                  files, the state directory; the message names the key); nothing was started"
)]
struct Cli {
    /// The agent's configuration (TOML; config/agent.toml is a commented example).
    #[arg(long, short = 'c', env = "VSERVER_AGENT_CONFIG", default_value = "/etc/vservers/agent.toml")]
    config: PathBuf,
    /// Check the configuration (and read the secret, TLS and cluster files), print a summary, and exit.
    #[arg(long)]
    check: bool,
    /// Print a completion script for SHELL on standard output, and exit.
    #[arg(long, value_name = "SHELL", conflicts_with = "check")]
    completions: Option<clap_complete::Shell>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        return ExitCode::from(node_agent::cli::print_completions::<Cli>(shell) as u8);
    }
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
                ExitCode::from(exit::USAGE as u8)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver-agent: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED as u8);
        }
    };
    match runtime.block_on(node_agent::agent::run(&cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-agent: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
