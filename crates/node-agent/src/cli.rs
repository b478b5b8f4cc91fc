//! The command lines of `vserver` and `vserver-stat`, compatible with the guide's
//! (`vserver NAME start|stop|restart|running|enter|exec|suexec|service|status`, `vserver --all ...`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use isolate::{RootDevice, VserverName};

use crate::agent_client::{self, LifecycleAction};
use crate::build::{self, BuildOptions, Source};
use crate::dirs::Dirs;
use crate::exit;
use crate::lifecycle::{Host, LifecycleError, Status};
use crate::model::{EventView, StatusReport, TakeoverRecord, VserverState, VserverStatus};
use crate::root_device::RootDeviceArgs;
use crate::services;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (running/status: the vserver runs on this host)
  1  the operation failed (the message names the step), or the owner it was passed on to did not answer
  2  bad usage or invalid input (e.g. a name with '/' or '..'); nothing touched
  3  the vserver is not running (status: not on this host; on a standby it says where it runs)
  4  the vserver is already running; nothing changed
  5  no such vserver (no NAME.conf, or no tree: its directory is missing or holds nothing), or build: it
     exists already
  6  NAME.conf is malformed (the message names file:line)
  7  refused: the vserver is private, belongs to another host, its root device is mounted on this host
     already, or root is needed
exec, suexec, enter and service exit with the code of the command they ran.";

const STAT_EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  --cluster, --takeovers, --history: no agent runs on this host, or it did not answer
  2  bad usage";

/// `vserver`: run virtual servers on this host.
#[derive(Debug, Parser)]
#[command(
    name = "vserver",
    version,
    about = "Start, stop, enter and inspect virtual servers on this host",
    long_about = "Start, stop, enter and inspect virtual servers on this host.\n\n\
A vserver is a tree VSERVERS_DIR/NAME holding a Linux userland and a conf CONF_DIR/NAME.conf in the \
Linux-VServer format (IPROOT, S_HOSTNAME, S_CAPS, S_FLAGS, ULIMIT...). It runs in its own mount, PID, IPC, \
UTS and network namespaces, one cgroup, with a reduced capability ceiling.\n\n\
Examples:\n  vserver v1 build --busybox --iproot eth0:192.0.2.10/24\n  vserver v1 start\n  \
vserver v1 exec ps\n  vserver v1 status\n  vserver --all start      (every vserver with ONBOOT=yes)",
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = false,
    override_usage = "vserver [OPTIONS] NAME <COMMAND>\n       vserver [OPTIONS] --all <start|stop|restart|status>\n       \
                      vserver --completions SHELL"
)]
pub struct VserverCli {
    #[command(flatten)]
    dirs: Dirs,
    /// Act on every configured vserver (start: those with ONBOOT=yes; stop, restart: the running ones).
    #[arg(long)]
    all: bool,
    /// Seconds a vserver's processes get between SIGTERM and SIGKILL when it stops.
    #[arg(long, env = "VSERVER_STOP_TIMEOUT", default_value_t = 10, global = true)]
    timeout: u64,
    /// Seconds each runlevel start script may take before the start goes on without waiting for it.
    #[arg(long, env = "VSERVER_START_TIMEOUT", default_value_t = 300, global = true, hide_short_help = true)]
    start_timeout: u64,
    /// Print status as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Print a completion script for SHELL on standard output, and exit (e.g. `vserver --completions bash >
    /// /etc/bash_completion.d/vserver`).
    #[arg(long, value_name = "SHELL", conflicts_with_all = ["name", "all", "json"])]
    completions: Option<clap_complete::Shell>,
    /// Print the names of KIND (vservers configured here, or hosts this host's agent knows), one per line,
    /// and exit: what the bash completion script offers where a name goes.
    #[arg(long, value_name = "KIND", hide = true, conflicts_with_all = ["name", "all", "json", "completions"])]
    complete_names: Option<crate::completions::Names>,
    /// The vserver's name (omit with --all).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// What to do (required but with --completions).
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start the vserver and its runlevel-3 services (or its /sbin/init with S_FLAGS fakeinit).
    Start(RootDeviceArgs),
    /// Stop its services, then every process left after the timeout (and, for a vserver on a root device, wait
    /// until the device is mounted nowhere on this host).
    Stop,
    /// Stop, then start (from the root device it ran from, when no --root-device is given).
    Restart(RootDeviceArgs),
    /// Tell whether it runs (exit 0) or not (exit 3).
    Running,
    /// Open a shell inside it.
    Enter,
    /// Run a command inside it as root.
    Exec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a command inside it as USER (a name or uid of its /etc/passwd).
    Suexec {
        /// The user.
        user: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run /etc/init.d/SERVICE ACTION inside it.
    Service {
        /// The service's script name in /etc/init.d.
        service: String,
        /// What to do.
        action: ServiceAction,
    },
    /// Report state, process count, addresses and uptime (exit 3 when it does not run here); with an agent,
    /// also its intent, its restarts and relocations within the failure window, and why it is in state error.
    /// On a host of the cluster that does not hold it (a standby): where it runs, its owner, and how old the
    /// copy here is. Warns when this host's agent is down: what it shows is then this host's view alone.
    Status,
    /// Forget its failures and lift its state error (through this host's agent, which passes it on to the
    /// owner from any host): its restarts on its owner, its relocations in the whole cluster. The agents then
    /// act on its intent again.
    Clear,
    /// Copy it to its standbys now (through this host's agent, which passes it on to the owner from any
    /// host); exit 1 if a standby did not get a complete copy.
    Sync,
    /// Move it to HOST with the shortest outage: copy while it runs, stop, copy the rest, start there
    /// (through this host's agent, which passes it on to the owner from any host: `vserver NAME migrate h0`
    /// on h0 brings it to h0). HOST becomes its primary and the old owner a standby.
    Migrate {
        /// The host to move it to (a host of the cluster).
        host: String,
    },
    /// Announce each of its addresses now (gratuitous ARP for IPv4, unsolicited neighbour advertisement for
    /// IPv6), so that neighbours point at the host that runs it (through this host's agent when one runs,
    /// which passes it on to the owner from any host); exit 3 when it does not run on its owner.
    Announce,
    /// Make a runnable vserver: its tree and a starter NAME.conf.
    Build {
        /// Lay out a minimal userland from the host's static busybox.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        busybox: bool,
        /// Static busybox to use (default: VSERVER_BUSYBOX, /bin/busybox or /usr/bin/busybox).
        #[arg(long, requires = "busybox")]
        busybox_bin: Option<PathBuf>,
        /// Copy this directory tree as the vserver's root.
        #[arg(long)]
        from: Option<PathBuf>,
        /// IPROOT of the starter conf, e.g. "eth0:192.0.2.10/24" (empty: share the host's network).
        #[arg(long)]
        iproot: Option<String>,
        /// S_HOSTNAME of the starter conf.
        #[arg(long)]
        hostname: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServiceAction {
    Start,
    Stop,
    Restart,
    Status,
}

impl ServiceAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Status => "status",
        }
    }
}

fn error(msg: impl std::fmt::Display) {
    eprintln!("vserver: error: {msg}");
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("vserver: warning: {msg}");
}

fn needs_root() -> Option<i32> {
    if nix::unistd::geteuid().is_root() {
        None
    } else {
        error("this command needs root (it creates namespaces, mounts and cgroups)");
        Some(exit::REFUSED)
    }
}

/// Runs `vserver` with the process's arguments and returns the exit code.
pub fn vserver_main() -> i32 {
    init_logging();
    let cli: VserverCli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The action is optional only so that `--completions` needs none; otherwise it is required.
    let usage = |kind, message: &str| {
        let _ = VserverCli::command().error(kind, message).print();
        exit::USAGE
    };
    if let Some(kind) = cli.complete_names {
        for name in crate::completions::list(&cli.dirs, kind) {
            println!("{name}");
        }
        return exit::OK;
    }
    let action = match (cli.completions, cli.action) {
        (Some(shell), None) => return print_completions::<VserverCli>(shell),
        (Some(_), Some(_)) => {
            return usage(clap::error::ErrorKind::ArgumentConflict, "--completions takes no NAME and no command")
        }
        (None, None) => {
            return usage(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required (start, stop, status...; see vserver --help)",
            )
        }
        (None, Some(action)) => action,
    };
    let host = Host {
        dirs: cli.dirs.clone(),
        grace: Duration::from_secs(cli.timeout),
        start_timeout: Duration::from_secs(cli.start_timeout),
    };
    if let Some(why) = agent_client::down(&host.dirs.run_dir, &host.dirs.conf_dir) {
        warn(format!("{why}: {ALONE}"));
    }
    if cli.all {
        if cli.name.is_some() {
            error("give either a NAME or --all, not both");
            return exit::USAGE;
        }
        return all(&host, &action, cli.json);
    }
    let Some(raw) = cli.name.as_deref() else {
        error("a vserver NAME is required (or --all); see vserver --help");
        return exit::USAGE;
    };
    let name = match VserverName::parse(raw) {
        Ok(n) => n,
        Err(e) => {
            error(e);
            return exit::USAGE;
        }
    };
    one(&host, &name, action, cli.json)
}

/// What a command run while the agent of its host is down must say.
const ALONE: &str = "what this command shows and does is this host's view alone, and failover is not watching \
                     it (nothing restarts its vservers here; the cluster may take them over elsewhere)";

fn one(host: &Host, name: &VserverName, action: Action, json: bool) -> i32 {
    let code = |e: LifecycleError| {
        error(&e);
        exit::for_lifecycle(&e)
    };
    match action {
        // Through this host's agent when one runs, so that the operator's word is recorded as intent.
        Action::Start(args) => needs_root().unwrap_or_else(|| {
            let device = args.device();
            route(host, name, LifecycleAction::Start, device.as_ref())
                .unwrap_or_else(|| start(host, name, device.as_ref()).map_or_else(code, |()| exit::OK))
        }),
        Action::Stop => needs_root().unwrap_or_else(|| {
            agent_client::route(&host.dirs.run_dir, name, LifecycleAction::Stop)
                .unwrap_or_else(|| stop(host, name).map_or_else(code, |()| exit::OK))
        }),
        Action::Restart(args) => needs_root().unwrap_or_else(|| {
            let device = args.device();
            if let Some(c) = route(host, name, LifecycleAction::Restart, device.as_ref()) {
                return c;
            }
            // Without --root-device, a vserver running from a root device restarts from the same device.
            let running_on = host.running(name).ok().flatten().and_then(|st| st.spec.root_device);
            let device = device.or(running_on);
            match stop(host, name) {
                Ok(()) | Err(LifecycleError::NotRunning(_)) => {}
                Err(e) => return code(e),
            }
            start(host, name, device.as_ref()).map_or_else(code, |()| exit::OK)
        }),
        Action::Running => match host.running(name) {
            Ok(Some(st)) => {
                println!("vserver {name} is running (process 1 is pid {})", st.init_pid);
                exit::OK
            }
            Ok(None) => {
                println!("vserver {name} is not running");
                exit::NOT_RUNNING
            }
            Err(e) => code(e),
        },
        Action::Status => match host.status(name) {
            Ok(st) => {
                let view = agent_client::agent_view(&host.dirs.run_dir, name).unwrap_or_else(|why| {
                    warn(format!("{why}: {ALONE}"));
                    None
                });
                print_status(&st, view.as_ref(), json);
                if st.state == "running" {
                    exit::OK
                } else {
                    exit::NOT_RUNNING
                }
            }
            // Not configured here: a standby, or a host of the cluster that does not hold it; its agent knows
            // where it runs.
            Err(e @ (LifecycleError::NoConf { .. } | LifecycleError::NoRoot { .. })) => {
                match agent_client::cluster_report(&host.dirs.run_dir) {
                    Ok(Some(report)) if print_elsewhere(name, &report, json) => exit::NOT_RUNNING,
                    Ok(_) => code(e),
                    Err(why) => {
                        warn(format!("{why}: {ALONE}"));
                        code(e)
                    }
                }
            }
            Err(e) => code(e),
        },
        Action::Enter => {
            needs_root().unwrap_or_else(|| host.exec(name, &["/bin/sh".into(), "-l".into()], None).unwrap_or_else(code))
        }
        Action::Exec { command } => {
            needs_root().unwrap_or_else(|| host.exec(name, &command, None).unwrap_or_else(code))
        }
        Action::Suexec { user, command } => {
            needs_root().unwrap_or_else(|| host.exec(name, &command, Some(user)).unwrap_or_else(code))
        }
        Action::Service { service, action } => needs_root().unwrap_or_else(|| {
            if let Err(e) = services::check_service_name(&service) {
                error(e);
                return exit::USAGE;
            }
            let argv = vec![format!("/etc/init.d/{service}"), action.as_str().to_string()];
            host.exec(name, &argv, None).unwrap_or_else(code)
        }),
        Action::Clear => needs_root().unwrap_or_else(|| agent_client::clear(&host.dirs.run_dir, name, json)),
        Action::Sync => needs_root().unwrap_or_else(|| agent_client::sync(&host.dirs.run_dir, name, json)),
        // Through this host's agent when one runs (it announces again after a takeover or a migrate), else here.
        Action::Announce => needs_root().unwrap_or_else(|| {
            let announced = match agent_client::announce(&host.dirs.run_dir, name) {
                Some(Ok(addrs)) => addrs,
                Some(Err(c)) => return c,
                None => match host.announce(name) {
                    Ok(addrs) => addrs,
                    Err(e) => return code(e),
                },
            };
            print_announced(name, &announced);
            exit::OK
        }),
        Action::Migrate { host: target } => {
            needs_root().unwrap_or_else(|| agent_client::migrate(&host.dirs.run_dir, name, &target, json))
        }
        Action::Build { busybox, busybox_bin, from, iproot, hostname } => {
            let source = match (busybox, from) {
                (_, Some(dir)) => Source::Copy(dir),
                _ => Source::Busybox(busybox_bin.unwrap_or_else(build::default_busybox)),
            };
            match build::build(&host.dirs, name, &BuildOptions { source, iproot, hostname }) {
                Ok(conf) => {
                    println!("built {}", host.dirs.root(name).display());
                    match conf {
                        Some(c) => println!("wrote {}; edit it, then: vserver {name} start", c.display()),
                        None => println!("kept the existing {}", host.dirs.conf(name).display()),
                    }
                    exit::OK
                }
                Err(e) => {
                    error(&e);
                    exit::for_build(&e)
                }
            }
        }
    }
}

/// `vserver NAME start|restart` through this host's agent when one runs: `None` to act here, else the exit
/// code. A start on a root device never goes through the agent, which would start the vserver without it:
/// while an agent runs, it is refused.
fn route(host: &Host, name: &VserverName, action: LifecycleAction, device: Option<&RootDevice>) -> Option<i32> {
    let Some(device) = device else { return agent_client::route(&host.dirs.run_dir, name, action) };
    match agent_client::for_cli(&host.dirs.run_dir) {
        Ok(None) => None,
        Ok(Some(_)) => {
            error(format!(
                "--root-device {device} cannot go through this host's agent, which starts its vservers itself; \
                 set VSERVER_NO_AGENT=1 to start {name} here without it; nothing was started"
            ));
            Some(exit::USAGE)
        }
        Err(code) => Some(code),
    }
}

fn start(host: &Host, name: &VserverName, device: Option<&RootDevice>) -> Result<(), LifecycleError> {
    let report = host.start(name, device)?;
    for w in &report.warnings {
        warn(w);
    }
    let st = report.state.as_ref().expect("a started vserver has a state");
    let addrs: Vec<String> = st.spec.network.addresses().map(|a| a.addr.to_string()).collect();
    let on_device = st.spec.root_device.as_ref().map_or_else(String::new, |d| format!("; root device {d}"));
    println!(
        "vserver {name} started (process 1 is pid {}; {} start script{}; {}{on_device})",
        st.init_pid,
        report.scripts.len(),
        if report.scripts.len() == 1 { "" } else { "s" },
        crate::lifecycle::network_text(&addrs, matches!(st.spec.network, isolate::spec::Network::Host))
    );
    Ok(())
}

fn stop(host: &Host, name: &VserverName) -> Result<(), LifecycleError> {
    let (report, warnings) = host.stop(name)?;
    for w in &warnings {
        warn(w);
    }
    if report.killed > 0 {
        println!("vserver {name} stopped ({} process(es) killed after {} s)", report.killed, host.grace.as_secs());
    } else {
        println!("vserver {name} stopped");
    }
    Ok(())
}

/// A state or intent as its JSON word.
fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The status as this host sees it, with the agent's view when one answers: its state (`error` when its
/// failure limit put it there), intent and failure accounting.
fn print_status(st: &Status, agent: Option<&VserverStatus>, json: bool) {
    let in_error = agent.and_then(|a| a.error.as_deref().filter(|_| a.state == VserverState::Error));
    if json {
        let mut value = serde_json::to_value(st).expect("status serializes");
        if let (Some(a), Some(map)) = (agent, value.as_object_mut()) {
            if in_error.is_some() {
                map.insert("state".into(), "error".into());
            }
            map.insert("intent".into(), word(&a.intent).into());
            map.insert("restarts".into(), a.restarts.into());
            map.insert("restarted_unix_ms".into(), a.restarted_unix_ms.clone().into());
            map.insert("relocations".into(), a.relocations.into());
            map.insert("relocated_unix_ms".into(), a.relocated_unix_ms.clone().into());
            map.insert("error".into(), a.error.clone().into());
        }
        println!("{}", serde_json::to_string_pretty(&value).expect("status serializes"));
        return;
    }
    match in_error {
        Some(why) => println!("vserver {}: error ({why}; `vserver {} clear` to lift it)", st.name, st.name),
        None => println!("vserver {}: {}", st.name, st.state),
    }
    if let Some(c) = st.context {
        println!("  context:   {c}");
    }
    let r = &st.resources;
    let tasks = match (r.tasks, r.pids_limit) {
        (Some(t), Some(l)) => format!(" ({t} tasks, limit {l})"),
        (Some(t), None) => format!(" ({t} tasks, no limit)"),
        (None, Some(l)) => format!(" (limit {l} tasks)"),
        (None, None) => String::new(),
    };
    println!("  processes: {}{tasks}", st.processes);
    let addrs = crate::lifecycle::network_text(&st.addresses, st.host_network);
    println!("  addresses: {addrs}");
    if let Some(u) = st.uptime_secs {
        println!("  uptime:    {}", human_duration(u));
    }
    if let Some(d) = &st.root_device {
        let number = d.device.map_or_else(String::new, |n| format!(", {n}"));
        println!("  root:      {} ({}{number}), mounted in its own mount namespace only", d.path.display(), d.fstype);
    }
    if let Some(m) = against_limit(r.memory_bytes, r.memory_limit_bytes) {
        println!("  memory:    {m}");
    }
    if let Some(d) = against_limit(r.disk_bytes, r.disk_limit_bytes) {
        println!("  disk:      {d}");
    }
    if let Some(w) = r.cpu_weight {
        println!("  cpu weight: {w}");
    }
    if let Some(w) = r.io_weight {
        println!("  io weight: {w}");
    }
    println!("  onboot:    {}", if st.onboot { "yes" } else { "no" });
    if let Some(a) = agent {
        let now = isolate::state::now_ms();
        let ago = |times: &[u64]| {
            let t: Vec<String> = times.iter().map(|t| format!("{} s ago", now.saturating_sub(*t) / 1000)).collect();
            if t.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.join(", "))
            }
        };
        println!("  intent:    {}", word(&a.intent));
        println!("  restarts:  {}{}", a.restarts, ago(&a.restarted_unix_ms));
        println!("  relocated: {}{}", a.relocations, ago(&a.relocated_unix_ms));
        if let (Some(e), None) = (&a.error, in_error) {
            println!("  error:     {e} (`vserver {} clear` to lift it)", st.name);
        }
    }
}

/// `vserver NAME status` on a host of the cluster that does not hold it (a standby): where it runs, as this
/// host's agent knows it (the ownership table, the peers' heartbeats), and the copy this host holds. `false`
/// when the table does not know it.
fn print_elsewhere(name: &VserverName, report: &StatusReport, json: bool) -> bool {
    let view = crate::cluster_view::ClusterView::from_status(report);
    let Some(row) = view.vservers.iter().find(|v| v.name == name.as_str()) else { return false };
    let here = &report.node.name;
    let copy = report.replicas.iter().find(|r| r.vserver == name.as_str());
    if json {
        let value = serde_json::json!({
            "name": name.as_str(),
            "state": "elsewhere",
            "host": here,
            "owner": row.owner,
            "epoch": row.epoch,
            "running_on": row.running_on,
            "replica": copy,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("status serializes"));
        return true;
    }
    let at = format!("ownership epoch {}", row.epoch);
    match (&row.owner, row.running_on.as_slice()) {
        (None, _) => println!("vserver {name}: no host owns it ({at}); not on this host ({here})"),
        (Some(o), on) if on.contains(o) => {
            println!("vserver {name}: runs on {o} (its owner, {at}); not on this host ({here})")
        }
        (Some(o), _) => {
            println!("vserver {name}: belongs to {o} ({at}), not heard running there; not on this host ({here})")
        }
    }
    let on = if row.running_on.is_empty() { "nowhere".to_string() } else { row.running_on.join(", ") };
    println!("  running:   on {on}, as last heard");
    match copy {
        Some(r) if r.kind == "shared" => println!("  this host: a standby reaching its shared tree"),
        Some(r) => println!(
            "  this host: holds a standby copy, {} s old (generation {}, from {}, {}{})",
            r.age_secs,
            r.generation,
            r.source,
            r.kind,
            if r.consistent { ", taken frozen" } else { "" }
        ),
        None => println!("  this host: holds no copy of it"),
    }
    true
}

/// `12.0M (limit 64.0M)`, `12.0M`, `limit 64.0M`, or nothing when neither is known.
fn against_limit(used: Option<u64>, limit: Option<u64>) -> Option<String> {
    match (used, limit) {
        (Some(u), Some(l)) => Some(format!("{} (limit {})", human_bytes(u), human_bytes(l))),
        (Some(u), None) => Some(human_bytes(u)),
        (None, Some(l)) => Some(format!("limit {}", human_bytes(l))),
        (None, None) => None,
    }
}

/// `1d 02:03:04` style durations.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `12.3M` style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// `vserver --all ACTION`: every configured vserver; one failure does not stop the others.
fn all(host: &Host, action: &Action, json: bool) -> i32 {
    let (names, bad) = match host.dirs.configured() {
        Ok(v) => v,
        Err(e) => {
            error(format!("cannot list {}: {e}", host.dirs.conf_dir.display()));
            return exit::FAILED;
        }
    };
    for b in bad {
        warn(format!("ignoring {}: not a valid vserver name", b.display()));
    }
    let mut failed = 0;
    let mut report = |name: &VserverName, r: Result<(), LifecycleError>| {
        if let Err(e) = r {
            error(format!("{name}: {e}"));
            failed += 1;
        }
    };
    match action {
        Action::Start(args) | Action::Restart(args) if args.device().is_some() => {
            error(format!(
                "--root-device (or {}) names the device of one vserver: give its NAME, not --all",
                crate::root_device::DEVICE_ENV
            ));
            return exit::USAGE;
        }
        Action::Start(_) | Action::Stop | Action::Restart(_) => {
            if let Some(c) = needs_root() {
                return c;
            }
            let agent = match agent_client::for_cli(&host.dirs.run_dir) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let mut failed_via_agent = 0;
            for name in &names {
                let running = matches!(host.running(name), Ok(Some(_)));
                let onboot = host.conf(name).map(|(c, _)| c.onboot).unwrap_or(false);
                if let Some(agent) = &agent {
                    let via = match action {
                        Action::Start(_) if onboot && !running => Some(LifecycleAction::Start),
                        Action::Stop if running => Some(LifecycleAction::Stop),
                        Action::Restart(_) if running => Some(LifecycleAction::Restart),
                        _ => None,
                    };
                    // The outcome is printed by dispatch.
                    if via.is_some_and(|a| agent.dispatch(name, a) != exit::OK) {
                        failed_via_agent += 1;
                    }
                    continue;
                }
                match action {
                    Action::Start(_) if onboot && !running => report(name, start(host, name, None)),
                    Action::Stop if running => report(name, stop(host, name)),
                    Action::Restart(_) if running => {
                        let r = stop(host, name).and_then(|()| start(host, name, None));
                        report(name, r);
                    }
                    _ => {}
                }
            }
            failed += failed_via_agent;
        }
        Action::Status => {
            let mut all = Vec::new();
            for name in &names {
                match host.status(name) {
                    Ok(st) => all.push(st),
                    Err(e) => report(name, Err(e)),
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all).expect("status serializes"));
            } else {
                for st in &all {
                    let addrs = crate::lifecycle::network_text(&st.addresses, st.host_network);
                    println!("{:<20} {:<8} {:>5} procs  {}", st.name, st.state, st.processes, addrs);
                }
            }
        }
        _ => {
            error("--all works with start, stop, restart and status");
            return exit::USAGE;
        }
    }
    if failed > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// `vserver-stat`: one line per running vserver.
#[derive(Debug, Parser)]
#[command(
    name = "vserver-stat",
    version,
    about = "List the running vservers of this host: context, processes, memory, uptime, name",
    after_help = STAT_EXIT_CODES
)]
pub struct StatCli {
    #[command(flatten)]
    dirs: Dirs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// List the cluster's takeovers instead (from the cluster's event log, through this host's agent): when,
    /// which vserver, from which host to which, and each phase's duration.
    #[arg(long, conflicts_with = "cluster")]
    takeovers: bool,
    /// List the cluster's events instead (from the cluster's event log, through this host's agent), oldest
    /// first: when (UTC), which host reported it, its kind, the vserver and what happened.
    #[arg(long, conflicts_with_all = ["cluster", "takeovers"])]
    history: bool,
    /// Show the cluster instead, the same from every host (this host's agent asks the coordinator and every
    /// host): every host with its state, role, lease, maintenance and certificate; the coordinator and the
    /// quorum; every vserver with its owner, epoch, where it runs, its data path and its standbys' copies; the
    /// failed actions and the last takeovers, fences and migrates.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: show it again every SECS seconds (2 when not given) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2", requires = "cluster",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch: Option<u64>,
    /// Print a completion script for SHELL on standard output, and exit.
    #[arg(long, value_name = "SHELL", conflicts_with_all = ["json", "takeovers", "cluster", "history"])]
    completions: Option<clap_complete::Shell>,
}

/// Runs `vserver-stat` and returns the exit code.
pub fn stat_main() -> i32 {
    init_logging();
    let cli: StatCli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(shell) = cli.completions {
        return print_completions::<StatCli>(shell);
    }
    let host = Host { dirs: cli.dirs, grace: Duration::ZERO, start_timeout: Duration::ZERO };
    if cli.takeovers {
        return print_takeovers(&host.dirs.run_dir, cli.json);
    }
    if cli.history {
        return print_history(&host.dirs.run_dir, cli.json);
    }
    if cli.cluster {
        return match cli.watch {
            Some(secs) => watch_cluster(&host.dirs.run_dir, cli.json, Duration::from_secs(secs)),
            None => print_cluster(&host.dirs.run_dir, cli.json),
        };
    }
    let rows: Vec<Status> = host.running_all().iter().filter_map(|st| host.status(&st.spec.name).ok()).collect();
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
        return exit::OK;
    }
    println!("{:>7} {:>5} {:>8} {:>12}  NAME", "CTX", "PROC", "MEMORY", "UPTIME");
    for r in rows {
        println!(
            "{:>7} {:>5} {:>8} {:>12}  {}",
            r.context.map_or("-".into(), |c| c.to_string()),
            r.processes,
            r.resources.memory_bytes.map_or("-".into(), human_bytes),
            r.uptime_secs.map_or("-".into(), human_duration),
            r.name
        );
    }
    exit::OK
}

/// `GET /v1/status` of this host's agent, as text; on failure the message is out and the exit code is given.
fn agent_status(run_dir: &std::path::Path, what: &str) -> Result<String, i32> {
    agent_get(run_dir, "/v1/status", what)
}

/// `GET PATH` of this host's agent, as text; on failure the message is out and the exit code is given.
fn agent_get(run_dir: &std::path::Path, path: &str, what: &str) -> Result<String, i32> {
    let agent = match agent_client::for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => {
            error(format!("no agent runs on this host: {what}"));
            return Err(exit::FAILED);
        }
        Err(code) => return Err(code),
    };
    match agent.request("GET", path) {
        Ok(r) if r.status == 200 => Ok(r.body),
        Ok(r) => {
            error(format!("the agent answered {}: {}", r.status, r.body));
            Err(exit::FAILED)
        }
        Err(e) => {
            error(format!("cannot ask the agent: {e}"));
            Err(exit::FAILED)
        }
    }
}

/// The cluster view from this host's agent (`GET /v1/cluster`; from its own status report alone when it is of
/// an earlier release, which serves none); on failure the message is out and the exit code is given.
fn cluster_view(run_dir: &std::path::Path) -> Result<crate::cluster_view::ClusterView, i32> {
    use crate::cluster_view::ClusterView;
    let what = "the cluster's state is what the agents know";
    let agent = match agent_client::for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => {
            error(format!("no agent runs on this host: {what}"));
            return Err(exit::FAILED);
        }
        Err(code) => return Err(code),
    };
    let unreadable = |e: serde_json::Error| {
        error(format!("the agent's answer is not what this command understands ({e}): agent of another version?"));
        exit::FAILED
    };
    match agent.request("GET", "/v1/cluster") {
        Ok(r) if r.status == 200 => serde_json::from_str::<ClusterView>(&r.body).map_err(unreadable),
        Ok(r) if r.status == 404 => {
            let status = agent_status(run_dir, what)?;
            let report: StatusReport = serde_json::from_str(&status).map_err(unreadable)?;
            let mut view = ClusterView::from_status(&report);
            view.warnings.push("this host's agent is of an earlier release: the cluster as it alone sees it".into());
            Ok(view)
        }
        Ok(r) => {
            error(format!("the agent answered {}: {}", r.status, r.body));
            Err(exit::FAILED)
        }
        Err(e) => {
            error(format!("cannot ask the agent: {e}"));
            Err(exit::FAILED)
        }
    }
}

/// `vserver-stat --cluster`: the cluster, the same from every host.
fn print_cluster(run_dir: &std::path::Path, json: bool) -> i32 {
    let view = match cluster_view(run_dir) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view).expect("the view serializes"));
    } else {
        print!("{}", view.table());
    }
    exit::OK
}

/// `vserver-stat --cluster --watch SECS`: the view again every `every` until interrupted (a terminal is
/// cleared first; with --json, one line of JSON each time). A failure is said and tried again.
fn watch_cluster(run_dir: &std::path::Path, json: bool, every: Duration) -> i32 {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    loop {
        let view = cluster_view(run_dir);
        let mut out = std::io::stdout().lock();
        let written = match (&view, json) {
            (Ok(v), true) => writeln!(out, "{}", serde_json::to_string(v).expect("the view serializes")),
            (Ok(v), false) => {
                let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
                let now = crate::cluster_view::utc(isolate::state::now_ms());
                write!(out, "{clear}{now} (every {} s; Ctrl-C to stop)\n{}\n", every.as_secs(), v.table())
            }
            (Err(_), _) => Ok(()),
        };
        if written.and_then(|()| out.flush()).is_err() {
            // The reader went away.
            return exit::OK;
        }
        drop(out);
        std::thread::sleep(every);
    }
}

/// `vserver-stat --takeovers`: the takeovers this host's agent knows from the cluster's event log.
fn print_takeovers(run_dir: &std::path::Path, json: bool) -> i32 {
    let status = match agent_status(run_dir, "the takeovers are in the cluster's event log, which it keeps") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let records: Vec<TakeoverRecord> = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|v| serde_json::from_value(v["takeovers"].clone()).ok())
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&records).expect("records serialize"));
        return exit::OK;
    }
    if records.is_empty() {
        println!("no takeover in the cluster's event log");
        return exit::OK;
    }
    println!(
        "{:<19}  {:<16} {:<10} {:<10} {:>6} {:>8}  PHASES (ms)",
        "WHEN (UTC)", "VSERVER", "FROM", "TO", "EPOCH", "TOTAL"
    );
    for r in records {
        let when = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(r.at_unix_ms));
        let phases: Vec<String> = r.phases_ms.iter().map(|(p, ms)| format!("{p} {ms}")).collect();
        println!(
            "{:<19}  {:<16} {:<10} {:<10} {:>6} {:>6}ms  {}{}",
            when.to_string().trim_end_matches('Z').replace('T', " "),
            r.vserver,
            r.from,
            r.to,
            r.epoch,
            r.total_ms(),
            phases.join(", "),
            if r.started { "" } else { " (not started: it was stopped)" }
        );
    }
    exit::OK
}

/// The line `vserver NAME announce` prints.
fn print_announced(name: &VserverName, addrs: &[String]) {
    if addrs.is_empty() {
        println!("vserver {name}: no address to announce");
    } else {
        println!("vserver {name}: announced {}", addrs.join(", "));
    }
}

/// `vserver-stat --history`: the cluster's events, as this host's agent knows them from the event log.
fn print_history(run_dir: &std::path::Path, json: bool) -> i32 {
    let body = match agent_get(run_dir, "/v1/events", "the history is the cluster's event log, which it keeps") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let events: Vec<EventView> = match serde_json::from_str(&body) {
        Ok(e) => e,
        Err(e) => {
            error(format!("the agent's events are not what this command understands ({e}): agent of another version?"));
            return exit::FAILED;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&events).expect("events serialize"));
        return exit::OK;
    }
    print!("{}", history_table(&events));
    exit::OK
}

/// The table `vserver-stat --history` prints.
fn history_table(events: &[EventView]) -> String {
    if events.is_empty() {
        return "no event in the cluster's event log\n".into();
    }
    let mut out = format!("{:<23}  {:<10} {:<16} {:<16} WHAT\n", "WHEN (UTC)", "HOST", "KIND", "VSERVER");
    for e in events {
        let when = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(e.at_unix_ms));
        let what = failover::events::describe(&e.text)
            .or_else(|| failover::evacuate::describe(&e.text))
            .unwrap_or_else(|| e.text.clone());
        out.push_str(&format!(
            "{:<23}  {:<10} {:<16} {:<16} {}\n",
            when.to_string().trim_end_matches('Z').replace('T', " "),
            e.host,
            e.kind,
            e.vserver.as_deref().unwrap_or("-"),
            what
        ));
    }
    out
}

/// Prints the completion script of the command `T` for `shell` on standard output (`--completions SHELL` of
/// `vserver`, `vserver-stat` and `vserver-agent`) and returns the exit code.
pub fn print_completions<T: clap::CommandFactory>(shell: clap_complete::Shell) -> i32 {
    use std::io::Write;
    let mut cmd = T::command();
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = crate::completions::with_names(&String::from_utf8_lossy(&script), &name).into_bytes();
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("{name}: error: cannot write the completion script: {e}");
            exit::FAILED
        }
    }
}

/// Parses the command line; on failure (or `--help`) prints clap's message and gives the exit code.
fn parse<T: Parser>() -> Result<T, i32> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        }
    })
}

/// Starts logging to stderr at the level VSERVER_LOG gives (default warn).
fn init_logging() {
    crate::logging::init("warn");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_table_has_a_line_per_event_and_spells_out_takeovers() {
        assert_eq!(history_table(&[]), "no event in the cluster's event log\n");
        let takeover = r#"takeover {"vserver":"web","from":"h0","to":"h1","epoch":3,"phases_ms":[["detect",2000],["commit",2]],"started":true}"#;
        let events = [
            EventView {
                seq: 1,
                at_unix_ms: 0,
                host: "h1".into(),
                kind: "host_dead".into(),
                vserver: None,
                text: "h0 dead".into(),
            },
            EventView {
                seq: 2,
                at_unix_ms: 1500,
                host: "h1".into(),
                kind: "takeover".into(),
                vserver: Some("web".into()),
                text: takeover.into(),
            },
        ];
        let table = history_table(&events);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].starts_with("1970-01-01 00:00:00.000  h1")
                && lines[1].contains("host_dead")
                && lines[1].ends_with("h0 dead")
        );
        assert!(
            lines[2].contains("web")
                && lines[2].contains("taken over from h0 by h1 at epoch 3 in 2002 ms (ms: detect 2000, commit 2)"),
            "{table}"
        );
        assert!(StatCli::try_parse_from(["vserver-stat", "--history", "--json"]).unwrap().history);
        assert!(StatCli::try_parse_from(["vserver-stat", "--history", "--takeovers"]).is_err());
    }

    /// `vserver-stat --history` of an agent of the previous release, whose events have `at_ms` alone.
    #[test]
    fn the_history_of_an_agent_of_the_previous_release_reads() {
        let previous = r#"[{"seq":1,"at_ms":1500,"host":"h1","kind":"host_dead","vserver":null,"text":"h0 dead"}]"#;
        let events: Vec<EventView> = serde_json::from_str(previous).unwrap();
        let table = history_table(&events);
        assert!(table.lines().nth(1).unwrap().starts_with("1970-01-01 00:00:01.500  h1"), "{table}");
    }

    #[test]
    fn guide_command_lines_parse() {
        let c = VserverCli::try_parse_from(["vserver", "v1", "start"]).unwrap();
        assert_eq!(c.name.as_deref(), Some("v1"));
        assert!(matches!(c.action, Some(Action::Start(ref a)) if a.device().is_none()));
        let c = VserverCli::try_parse_from(["vserver", "v1", "start", "--root-device", "/dev/sdb"]).unwrap();
        let device = RootDevice { path: "/dev/sdb".into(), fstype: "ext4".into() };
        assert!(matches!(c.action, Some(Action::Start(ref a)) if a.device() == Some(device.clone())));
        let c = VserverCli::try_parse_from([
            "vserver",
            "v1",
            "restart",
            "--root-device",
            "/dev/sdb",
            "--root-fstype",
            "xfs",
        ])
        .unwrap();
        assert!(matches!(c.action, Some(Action::Restart(ref a)) if a.device().is_some_and(|d| d.fstype == "xfs")));
        assert!(VserverCli::try_parse_from(["vserver", "v1", "stop", "--root-device", "/dev/sdb"]).is_err());
        let c = VserverCli::try_parse_from(["vserver", "v1", "exec", "ps", "-ef"]).unwrap();
        assert!(matches!(c.action, Some(Action::Exec { ref command }) if command == &["ps", "-ef"]));
        let c = VserverCli::try_parse_from(["vserver", "v1", "suexec", "www", "id", "-u"]).unwrap();
        assert!(matches!(c.action, Some(Action::Suexec { ref user, .. }) if user == "www"));
        let c = VserverCli::try_parse_from(["vserver", "v1", "service", "httpd", "restart"]).unwrap();
        assert!(matches!(c.action, Some(Action::Service { .. })));
        let c = VserverCli::try_parse_from(["vserver", "--all", "start"]).unwrap();
        assert!(c.all && c.name.is_none());
        assert!(VserverCli::try_parse_from(["vserver", "v1", "fly"]).is_err());
    }

    #[test]
    fn completions_is_an_option_and_leaves_names_free() {
        let c = VserverCli::try_parse_from(["vserver", "--completions", "bash"]).unwrap();
        assert!(c.completions.is_some() && c.action.is_none() && c.name.is_none());
        // A vserver may be called "completions": the option takes no name from anyone.
        let c = VserverCli::try_parse_from(["vserver", "completions", "start"]).unwrap();
        assert_eq!(c.name.as_deref(), Some("completions"));
        assert!(VserverCli::try_parse_from(["vserver", "--completions", "bash", "v1"]).is_err());
        assert!(VserverCli::try_parse_from(["vserver", "--completions", "bash", "--all"]).is_err());
        assert!(VserverCli::try_parse_from(["vserver", "--completions", "tcsh"]).is_err());
        let c = StatCli::try_parse_from(["vserver-stat", "--completions", "zsh"]).unwrap();
        assert!(c.completions.is_some());
        assert!(StatCli::try_parse_from(["vserver-stat", "--completions", "zsh", "--json"]).is_err());
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_duration(3725), "01:02:05");
        assert_eq!(human_duration(90061), "1d 01:01:01");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0M");
    }
}
