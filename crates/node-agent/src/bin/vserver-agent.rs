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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Turn maintenance on or off (through this host's agent, recorded by the cluster), or show it. A host in
    /// maintenance keeps its vservers running, never fences itself and is never taken over; with --cluster,
    /// fencing and takeover stand down on every host (for planned network work) until it is turned off.
    /// Turning it on while a takeover runs waits for it (10 s), then refuses.
    Maintenance {
        /// on, off, or status.
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        /// The host (default: this one).
        #[arg(long, conflicts_with = "cluster")]
        host: Option<String>,
        /// The whole cluster.
        #[arg(long)]
        cluster: bool,
        /// Print the maintenance now in force as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `vserver-agent maintenance ...`: asks the running agent of this host.
fn maintenance(config: &std::path::Path, state: &str, host: Option<String>, cluster: bool, json: bool) -> ExitCode {
    let fail = |code: i32, message: String| {
        eprintln!("vserver-agent: {message}");
        ExitCode::from(code as u8)
    };
    let conf = match node_agent::agent::config::AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => return fail(exit::USAGE, e.to_string()),
    };
    if let Some(h) = &host {
        if *h != conf.node && !conf.peers.iter().any(|p| &p.name == h) {
            return fail(exit::USAGE, format!("{h:?} is not a host of this cluster (see {})", config.display()));
        }
    }
    let agent = match node_agent::agent_client::for_cli(&conf.run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => return fail(exit::FAILED, "no agent runs on this host: maintenance is kept by the agents".into()),
        Err(code) => return ExitCode::from(code as u8),
    };
    let reply = if state == "status" {
        agent.request("GET", "/v1/maintenance")
    } else {
        let body = serde_json::json!({ "on": state == "on", "host": host, "cluster": cluster });
        agent.request_json("POST", "/v1/maintenance", &body)
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => return fail(exit::FAILED, format!("cannot ask the agent: {e}")),
    };
    let said = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap_or_default();
    if reply.status != 200 {
        let why = said["error"].as_str().map_or(reply.body.clone(), str::to_string);
        let code = if reply.status == 400 { exit::USAGE } else { exit::FAILED };
        return fail(code, why);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&said).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    match said["cluster"].as_object() {
        Some(c) => println!(
            "CLUSTER MAINTENANCE: fencing and takeover are disarmed on every host (since unix ms {}, asked through {})",
            c["since_ms"],
            c["by"].as_str().unwrap_or("?")
        ),
        None => println!("cluster: not in maintenance"),
    }
    let hosts = said["hosts"].as_object().cloned().unwrap_or_default();
    if hosts.is_empty() {
        println!("hosts in maintenance: none");
    }
    for (h, mark) in hosts {
        println!(
            "host {h}: in maintenance (since unix ms {}, asked through {})",
            mark["since_ms"],
            mark["by"].as_str().unwrap_or("?")
        );
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        return ExitCode::from(node_agent::cli::print_completions::<Cli>(shell) as u8);
    }
    if let Some(Command::Maintenance { state, host, cluster, json }) = cli.command {
        return maintenance(&cli.config, &state, host, cluster, json);
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
