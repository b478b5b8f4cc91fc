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

/// What `vserver-agent placement` does.
// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum PlacementStep {
    /// List the placements the cluster's table holds (the default).
    List {
        /// Print them as JSON (GET /v1/cluster/placements).
        #[arg(long)]
        json: bool,
    },
    /// Place a vserver, or change its placement: the keys of a `[vservers.NAME]` table of cluster.toml. What is
    /// not given is kept (a new vserver: periodic, every 60 s, on the host that owns it unless --primary says).
    /// Every host applies it within a second, nothing restarted: a new standby gets its copy at the next sync.
    Set {
        /// The vserver.
        name: String,
        #[command(flatten)]
        request: node_agent::agent::placements::PlaceRequest,
    },
    /// Take a vserver out of the cluster's placements: it keeps running where it runs, is no longer
    /// replicated nor taken over, and the copies on its standbys stay (remove them by hand).
    Remove {
        /// The vserver.
        name: String,
        /// Remove it only if its placement is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
    },
}

/// The steps of a CA rotation.
#[derive(Debug, clap::Subcommand)]
enum CaStep {
    /// Make the next CA: trusted beside the current one here, and signing from now on.
    New,
    /// Trust and keep the CAs of HOST (where `ca new` ran), fetched over TLS with this host's certificate.
    Sync {
        /// The host where `ca new` ran.
        #[arg(long)]
        from: String,
    },
    /// Trust only the CA that signs now (once every host ran `renew`).
    Retire,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Form a new cluster on this host: make the cluster secret (unless --config's directory has one), the
    /// cluster CA and this host's certificate (under its directory, pki/), write the cluster part of the
    /// configuration (node, listen, secret_file, [tls], [[peers]]; other keys are kept), and print a one-time
    /// join token for each --peer. Then start this host's agent, and run `vserver-agent join TOKEN` on each
    /// other host. No certificate to make by hand.
    Init {
        /// This host's name in the cluster (letters, digits, '.', '_', '-'; default: the configuration's).
        #[arg(long)]
        node: Option<String>,
        /// The address and port this host's agent listens on, which the others reach (e.g. 192.0.2.11:7070;
        /// default: the configuration's).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Another host of the cluster, NAME=HOST:PORT (repeat for each; default: the configuration's peers).
        #[arg(long = "peer", value_name = "NAME=HOST:PORT")]
        peers: Vec<String>,
        /// How long each join token is valid (e.g. 30m, 2h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
    },
    /// Join this host to a cluster with a token from `vserver-agent init` or `vserver-agent token` (it names the
    /// admitting host and pins the cluster CA): receive this host's certificate, the CA, the cluster secret,
    /// the peers and the cluster configuration, and write them and the cluster part of the configuration.
    /// The admitting host's agent must be running.
    Join {
        /// The token (vsj1.CA-HASH.SECRET.HOST:PORT).
        token: String,
    },
    /// The last steps of moving a running cluster from plain HTTP to TLS (docs/failover.md, runbook), on each
    /// host once every host has joined and restarted: the peers are reached over https (each must answer over
    /// TLS with a certificate of the cluster CA first, or nothing changes); with --refuse-plain, run on each host
    /// after that, plain HTTP is refused too (insecure_plain_http removed). Restart the agent after each.
    Secure {
        /// Also remove insecure_plain_http: plain HTTP is refused.
        #[arg(long)]
        refuse_plain: bool,
    },
    /// A new key and certificate for this host (its name and address as configured), signed by the cluster CA
    /// key it holds: before the certificate expires (see the status page or the metric
    /// vserver_agent_certificate_expiry_timestamp_seconds), or during a CA rotation. Restart the agent after.
    Renew,
    /// Rotate the cluster CA, host by host, the agents running (docs/failover.md, runbook): `ca new` on one
    /// host, `ca sync --from THAT-HOST` on each other, then `renew` on each, then `ca retire` on each; restart
    /// the agent after each step.
    Ca {
        #[command(subcommand)]
        step: CaStep,
    },
    /// Print a new one-time join token for HOST, on a host holding the cluster CA's key. HOST is one of this
    /// host's peers, or a new host given with --address: once it joins, the cluster takes it in (every agent
    /// counts it as a peer within a second, none restarted).
    Token {
        /// The host that will join.
        host: String,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
        /// A new host's agent address and port (e.g. 192.0.2.14:7070), for a host no configuration names.
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
    /// Take hosts out of the cluster for good (through this host's agent, recorded by the cluster): no host
    /// counts them as peers any more, and a voter among them is replaced by a host that does not vote. Refused
    /// while one owns a vserver (evacuate it first), and while another host does not answer (name every host
    /// that is gone in the same command).
    Remove {
        /// The hosts.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Recover a cluster that lost a majority of its voters for good (docs/failover.md, runbook), on a host
    /// whose agent is stopped. Without a flag, print what this host's copy of the cluster's table holds (to
    /// choose the most recent survivor).
    Recover {
        /// Make this host the only voter, keeping its table (on the most recent survivor only).
        #[arg(long, conflicts_with = "rejoin")]
        force_new_cluster: bool,
        /// Set this host's copy of the table aside, so that it joins the recovered cluster afresh (on every
        /// other survivor).
        #[arg(long)]
        rejoin: bool,
    },
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
    /// Show or change where the protected vservers run and are copied, through this host's agent, recorded in
    /// the cluster's table (any host accepts it; every host applies it without a restart). cluster.toml only
    /// seeds the table: each host's file is taken in once every host runs a release that reads placements.
    Placement {
        #[command(subcommand)]
        step: Option<PlacementStep>,
    },
    /// Move every vserver off HOST to its first live standby, a few at a time, showing each one's progress:
    /// by migrate when HOST is alive; when it is dead, by takeover (the voters confirm its lease is over). One
    /// failure does not stop the others; they are listed at the end (exit 1). `restore HOST` moves them back.
    Evacuate {
        /// The host to empty.
        host: String,
        /// How many vservers move at once (1 to 16).
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// HOST is dead and you made sure it is down (powered off): needed when the cluster cannot know it,
        /// without lease fencing and without a fence hook, and, without a fence hook, for its vservers on a
        /// shared block device (data = "block"), which its kernel may still write to.
        #[arg(long)]
        fenced: bool,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move back to HOST (alive again) the vservers its last evacuation moved away, those still where it put
    /// them.
    Restore {
        /// The host to fill again.
        host: String,
        /// How many vservers move at once (1 to 16).
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Prints the message, and the exit code to give.
/// `vserver-agent init`.
fn init(
    config: &std::path::Path,
    node: Option<String>,
    listen: Option<std::net::SocketAddr>,
    peers: &[String],
    token_validity: std::time::Duration,
) -> ExitCode {
    let mut parsed = Vec::new();
    for p in peers {
        match p.split_once('=') {
            Some((name, at)) if !name.is_empty() => parsed.push((name.to_string(), at.to_string())),
            _ => return fail(exit::USAGE, format!("--peer {p}: expected NAME=HOST:PORT (e.g. h2=192.0.2.12:7070)")),
        }
    }
    let args = node_agent::agent::join::InitArgs { node, listen, peers: parsed, token_validity };
    match node_agent::agent::join::init(config, &args) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(exit::USAGE, format!("{e:#}")),
    }
}

/// `vserver-agent join TOKEN`.
fn join(config: &std::path::Path, token: &str) -> ExitCode {
    let token: node_agent::agent::pki::JoinToken = match token.parse() {
        Ok(t) => t,
        Err(e) => return fail(exit::USAGE, e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(exit::FAILED, format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(node_agent::agent::join::join(config, &token)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(exit::FAILED, format!("{e:#}")),
    }
}

/// `vserver-agent secure`.
fn secure(config: &std::path::Path, refuse_plain: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(exit::FAILED, format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(node_agent::agent::join::secure(config, refuse_plain)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(exit::FAILED, format!("{e:#}")),
    }
}

/// Prints what a one-shot step said, or fails with its error.
fn said(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(exit::FAILED, format!("{e:#}")),
    }
}

fn fail(code: i32, message: String) -> ExitCode {
    eprintln!("vserver-agent: {message}");
    ExitCode::from(code as u8)
}

/// The running agent of this host (from the configuration's run directory), after checking that `host`, if
/// given, is a valid host name (whether it is one of the cluster's hosts is the agent's to say: the cluster
/// takes hosts in that no configuration file names).
fn local_agent(
    config: &std::path::Path,
    host: Option<&str>,
) -> Result<node_agent::agent_client::AgentHandle, ExitCode> {
    let conf = node_agent::agent::config::AgentConfig::load(config).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    if let Some(h) = host {
        node_agent::agent::config::check_node_name(h).map_err(|e| fail(exit::USAGE, format!("{h:?}: {e}")))?;
    }
    match node_agent::agent_client::for_cli(&conf.run_dir) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(fail(exit::FAILED, "no agent runs on this host: this is asked of the agents".into())),
        Err(code) => Err(ExitCode::from(code as u8)),
    }
}

/// `vserver-agent evacuate|restore HOST`: starts the job through this host's agent, prints each vserver's
/// progress, and the outcome.
fn evacuate(config: &std::path::Path, what: &str, host: &str, parallel: usize, fenced: bool, json: bool) -> ExitCode {
    let agent = match local_agent(config, Some(host)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let body = serde_json::json!({ "parallel": parallel, "fenced": fenced });
    let started = match agent.request_json("POST", &format!("/v1/hosts/{host}/{what}"), &body) {
        Ok(r) => r,
        Err(e) => return fail(exit::FAILED, format!("cannot ask the agent: {e}")),
    };
    if started.status != 202 {
        let said = serde_json::from_str::<serde_json::Value>(&started.body).unwrap_or_default();
        let why = said["error"].as_str().map_or(started.body.clone(), str::to_string);
        // 400: a malformed request; 404: a host that is not the cluster's.
        return fail(if matches!(started.status, 400 | 404) { exit::USAGE } else { exit::FAILED }, why);
    }
    let mut shown: std::collections::BTreeMap<String, String> = Default::default();
    let job = loop {
        let job = match agent.request("GET", &format!("/v1/hosts/{host}/evacuation")) {
            Ok(r) if r.status == 200 => serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default(),
            Ok(r) => return fail(exit::FAILED, format!("the agent answered {}: {}", r.status, r.body)),
            Err(e) => return fail(exit::FAILED, format!("cannot ask the agent: {e}")),
        };
        if !json {
            if shown.is_empty() {
                let n = job["items"].as_array().map_or(0, Vec::len);
                eprintln!(
                    "{what} {host}: {n} vserver(s), by {}, {parallel} at a time",
                    job["mode"].as_str().unwrap_or("?")
                );
            }
            for item in job["items"].as_array().into_iter().flatten() {
                let name = item["vserver"].as_str().unwrap_or("?").to_string();
                let state = item["state"].as_str().unwrap_or("?").to_string();
                if shown.get(&name) != Some(&state) {
                    let to = item["to"].as_str().map(|t| format!(" -> {t}")).unwrap_or_default();
                    let detail = item["detail"].as_str().map(|d| format!(": {d}")).unwrap_or_default();
                    eprintln!("  {name}{to}: {state}{detail}");
                    shown.insert(name, state);
                }
            }
        }
        if job["finished"].as_bool() == Some(true) {
            break job;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let items = job["items"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&serde_json::Value> = items.iter().filter(|i| i["state"] != "done").collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
    } else if items.is_empty() {
        println!("{what} {host}: nothing to move");
    } else {
        println!("{what} {host}: {} of {} moved", items.len() - failed.len(), items.len());
        for f in &failed {
            println!(
                "  FAILED {}: {}",
                f["vserver"].as_str().unwrap_or("?"),
                f["detail"].as_str().unwrap_or("(no reason given)")
            );
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILED as u8)
    }
}

/// `vserver-agent maintenance ...`: asks the running agent of this host.
fn maintenance(config: &std::path::Path, state: &str, host: Option<String>, cluster: bool, json: bool) -> ExitCode {
    let agent = match local_agent(config, host.as_deref()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let reply = if state == "status" {
        agent.request("GET", "/v1/maintenance")
    } else {
        let body = serde_json::json!({ "on": state == "on", "host": host, "cluster": cluster });
        agent.request_json("POST", "/v1/maintenance", &body)
    };
    let said = match answered(reply) {
        Ok(said) => said,
        Err(code) => return code,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&said).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    // `since_unix_ms`, or `since_ms` from an agent of the previous release.
    let now: node_agent::model::MaintenanceView = match serde_json::from_value(said) {
        Ok(m) => m,
        Err(e) => {
            return fail(exit::FAILED, format!("the agent's answer is not understood ({e}): agent of another version?"))
        }
    };
    match &now.cluster {
        Some(c) => println!(
            "CLUSTER MAINTENANCE: fencing and takeover are disarmed on every host (since {}, asked through {})",
            since(c.since_unix_ms),
            c.by
        ),
        None => println!("cluster: not in maintenance"),
    }
    if now.hosts.is_empty() {
        println!("hosts in maintenance: none");
    }
    for (h, mark) in &now.hosts {
        println!("host {h}: in maintenance (since {}, asked through {})", since(mark.since_unix_ms), mark.by);
    }
    ExitCode::SUCCESS
}

/// A maintenance mark's start (ms since the Unix epoch) as a UTC time.
fn since(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms)).to_string()
}

/// `vserver-agent placement ...` through this host's agent.
fn placement(config: &std::path::Path, step: PlacementStep) -> ExitCode {
    let agent = match local_agent(config, None) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let (method, name, body) = match step {
        PlacementStep::List { json } => return placement_list(&agent, json),
        PlacementStep::Set { name, mut request } => {
            if let Some(standbys) = request.standbys.as_mut() {
                standbys.retain(|h| !h.is_empty());
            }
            let mut body = serde_json::to_value(&request).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            ("PUT", name, Some(body))
        }
        PlacementStep::Remove { name, expected_revision } => {
            ("DELETE", name, expected_revision.map(|r| serde_json::json!(r)))
        }
    };
    if let Err(e) = isolate::VserverName::parse(&name) {
        return fail(exit::USAGE, format!("{name:?}: {e}"));
    }
    let reply = match (method, body) {
        ("PUT", Some(body)) => agent.request_json("PUT", &format!("/v1/cluster/placements/{name}"), &body),
        (_, revision) => {
            let query = revision.map_or(String::new(), |r| format!("?expected_revision={r}"));
            agent.request("DELETE", &format!("/v1/cluster/placements/{name}{query}"))
        }
    };
    let said = match answered(reply) {
        Ok(said) => said,
        Err(code) => return code,
    };
    let revision = said["revision"].as_u64().unwrap_or(0);
    match said.get("entry").filter(|e| !e.is_null()) {
        Some(e) => {
            println!("{name} placed (revision {revision}): {}; every host applies it within a second", entry_words(e))
        }
        None => println!(
            "{name} is no longer placed by the cluster: it keeps running where it runs, not replicated nor taken over"
        ),
    }
    ExitCode::SUCCESS
}

/// A placement in words: its primary, standbys and data path.
fn entry_words(e: &serde_json::Value) -> String {
    let standbys: Vec<&str> = e["standbys"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
    let mut out = format!(
        "primary {}, standbys {}, {}",
        e["primary"].as_str().unwrap_or("?"),
        if standbys.is_empty() { "none".to_string() } else { standbys.join(", ") },
        e["data"].as_str().unwrap_or("periodic")
    );
    if let Some(i) = e["interval_secs"].as_u64() {
        out.push_str(&format!(", every {i} s"));
    }
    out
}

fn placement_list(agent: &node_agent::agent_client::AgentHandle, json: bool) -> ExitCode {
    let reply = match agent.read("/v1/cluster/placements") {
        Ok(r) => r,
        Err(e) => return fail(exit::FAILED, format!("cannot ask the agent: {e}")),
    };
    if reply.status != 200 {
        let said = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap_or_default();
        return fail(exit::FAILED, said["error"].as_str().map_or(reply.body.clone(), str::to_string));
    }
    if json {
        println!("{}", reply.body);
        return ExitCode::SUCCESS;
    }
    let said = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap_or_default();
    let placements = said["placements"].as_object().cloned().unwrap_or_default();
    let from: Vec<&str> = said["taken_from"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
    if placements.is_empty() {
        println!("the cluster's table places no vserver");
    }
    for (name, p) in &placements {
        println!("{name}: {} (revision {})", entry_words(&p["entry"]), p["revision"].as_u64().unwrap_or(0));
    }
    if from.is_empty() {
        println!("no host's cluster.toml is taken in yet: each host places vservers by its file until then");
    } else {
        println!("cluster files taken in from: {}", from.join(", "));
    }
    ExitCode::SUCCESS
}

/// An agent's answer to a request: its JSON when 200, else the message printed and the exit code to give (2 for
/// 400 and 404: bad input, or a name the cluster does not know; 1 otherwise).
fn answered(
    reply: Result<node_agent::agent_client::Reply, node_agent::agent_client::TransportError>,
) -> Result<serde_json::Value, ExitCode> {
    let reply = reply.map_err(|e| fail(exit::FAILED, format!("cannot ask the agent: {e}")))?;
    let said = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap_or_default();
    if reply.status != 200 {
        let why = said["error"].as_str().map_or(reply.body.clone(), str::to_string);
        let code = if matches!(reply.status, 400 | 404) { exit::USAGE } else { exit::FAILED };
        return Err(fail(code, why));
    }
    Ok(said)
}

fn remove(config: &std::path::Path, hosts: &[String]) -> ExitCode {
    let agent = match local_agent(config, None) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let said = match answered(agent.request_json("POST", "/v1/hosts/remove", &serde_json::json!({ "hosts": hosts }))) {
        Ok(said) => said,
        Err(code) => return code,
    };
    let now: Vec<&str> = said["hosts"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
    println!("removed from the cluster for good: {}; its hosts now: {}", hosts.join(", "), now.join(", "));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.completions.is_none() && cli.command.is_none() && !cli.check {
        return serve(&cli.config);
    }
    // The one-shot modes print and end: a closed output (`--check | head`) ends them quietly. Not the daemon.
    isolate::closed_output::run(|| once(cli))
}

/// Starts logging to stderr at the level VSERVER_LOG gives (default info), as the journal keeps it.
fn init_logging() {
    node_agent::logging::init("info");
}

/// The one-shot modes: `--completions`, `--check` and the subcommands.
fn once(cli: Cli) -> ExitCode {
    if let Some(shell) = cli.completions {
        return ExitCode::from(node_agent::cli::print_completions::<Cli>(shell) as u8);
    }
    match cli.command {
        Some(Command::Maintenance { state, host, cluster, json }) => {
            return maintenance(&cli.config, &state, host, cluster, json)
        }
        Some(Command::Evacuate { host, parallel, fenced, json }) => {
            return evacuate(&cli.config, "evacuate", &host, parallel, fenced, json)
        }
        Some(Command::Restore { host, parallel, json }) => {
            return evacuate(&cli.config, "restore", &host, parallel, false, json)
        }
        Some(Command::Init { node, listen, peers, valid }) => return init(&cli.config, node, listen, &peers, valid),
        Some(Command::Join { token }) => return join(&cli.config, &token),
        Some(Command::Secure { refuse_plain }) => return secure(&cli.config, refuse_plain),
        Some(Command::Renew) => return said(node_agent::agent::rotate::renew(&cli.config)),
        Some(Command::Ca { step: CaStep::New }) => return said(node_agent::agent::rotate::ca_new(&cli.config)),
        Some(Command::Ca { step: CaStep::Retire }) => return said(node_agent::agent::rotate::ca_retire(&cli.config)),
        Some(Command::Ca { step: CaStep::Sync { from } }) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(exit::FAILED, format!("cannot start the runtime: {e}")),
            };
            return said(runtime.block_on(node_agent::agent::rotate::ca_sync(&cli.config, &from)));
        }
        Some(Command::Remove { hosts }) => return remove(&cli.config, &hosts),
        Some(Command::Placement { step }) => {
            return placement(&cli.config, step.unwrap_or(PlacementStep::List { json: false }))
        }
        Some(Command::Recover { force_new_cluster, rejoin }) => {
            use node_agent::agent::hosts::RecoverStep;
            let step = match (force_new_cluster, rejoin) {
                (true, _) => RecoverStep::ForceNewCluster,
                (_, true) => RecoverStep::Rejoin,
                _ => RecoverStep::Show,
            };
            return said(node_agent::agent::hosts::recover(&cli.config, step));
        }
        Some(Command::Token { host, valid, address }) => {
            return match node_agent::agent::join::token(&cli.config, &host, valid, address) {
                Ok(token) => {
                    println!("on {host}: vserver-agent join {token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::USAGE, format!("{e:#}")),
            }
        }
        None => {}
    }
    init_logging();
    match node_agent::agent::check(&cli.config) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vserver-agent: {e:#}");
            ExitCode::from(exit::USAGE as u8)
        }
    }
}

/// The daemon: serves until SIGTERM or SIGINT.
fn serve(config: &std::path::Path) -> ExitCode {
    // Before any thread, so that every thread shares the one arena.
    node_agent::agent::memory::one_arena();
    init_logging();
    // Before any thread: a flood of connections must not leave the agent without descriptors.
    match node_agent::agent::nofile::raise() {
        Ok((before, now)) if now > before => tracing::debug!(before, now, "limit of open files raised"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the limit of open files"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver-agent: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED as u8);
        }
    };
    let result = runtime.block_on(node_agent::agent::run(config));
    // Stopped: leave at once. Dropping the runtime would wait for every blocking task still running (a status
    // read, a hung file system), keeping the port from the agent that replaces this one.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-agent: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
