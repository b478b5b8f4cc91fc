//! The lifecycle of one host's vservers, as the guide's `vserver` command defines it: start (pre-start
//! hook, context, runlevel-3 start scripts, post-start hook), stop (pre-stop hook, stop scripts, SIGTERM,
//! grace, SIGKILL, post-stop hook), and the commands that look into or run inside a vserver.

use std::path::{Path, PathBuf};
use std::time::Duration;

use isolate::context::{ContextError, StopOptions, StopReport};
use isolate::exec::{ExecError, ExecOptions};
use isolate::mounts::DeviceNumber;
use isolate::spec::ContextSpec;
use isolate::{RootDevice, RunState, VserverName};

use crate::dirs::Dirs;
use crate::hooks::{self, HookAction, HookError};
use crate::legacy_conf::{ConfError, LegacyConf};
use crate::services;

/// Why a lifecycle operation did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No `NAME.conf` for this name.
    #[error("vserver {name} is not configured: {path} does not exist")]
    NoConf {
        /// The vserver.
        name: VserverName,
        /// The missing file.
        path: PathBuf,
    },
    /// No tree for this name.
    #[error(
        "vserver {name} has no root directory: {path} does not exist (build it with `vserver {name} build`; a \
         vserver whose tree is on a block device starts with --root-device DEV)"
    )]
    NoRoot {
        /// The vserver.
        name: VserverName,
        /// The missing directory.
        path: PathBuf,
    },
    /// The tree's directory holds no tree, and no root device was given: most likely the empty mount point of a
    /// vserver on a block device, started without its device.
    #[error(
        "vserver {name} cannot start: its root directory {path} holds no tree (it is empty, or holds only the dev \
         and proc directories a start makes); a vserver whose tree is on a block device needs --root-device DEV \
         (or VSERVER_ROOT_DEVICE); nothing was started"
    )]
    EmptyRoot {
        /// The vserver.
        name: VserverName,
        /// The empty directory.
        path: PathBuf,
    },
    /// The directory a root device is mounted on could not be made.
    #[error("vserver {name}: cannot make {path}, the mount point of its root device: {source}; nothing was started")]
    MountPoint {
        /// The vserver.
        name: VserverName,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `NAME.conf` is malformed or has a bad value.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// This host's lease, as its agent last wrote it for the keepers (`RUN_DIR/lease`), is over: the cluster
    /// may be giving its vservers to other hosts, and the keeper would kill this one at once.
    #[error(
        "this host's lease is over (its agent wrote {path}, which ended {ago_ms} ms ago: the agent is down, frozen or \
         cut off from the majority): starting {name} here could run it twice while another host takes it over; \
         nothing changed. Start the agent, or, if no other host may run it, remove {path}"
    )]
    LeaseOver {
        /// The vserver.
        name: VserverName,
        /// The lease file.
        path: PathBuf,
        /// How long ago it ended.
        ago_ms: u64,
    },
    /// Start of a vserver that runs: nothing was changed.
    #[error("vserver {0} is already running; nothing changed")]
    AlreadyRunning(VserverName),
    /// Stop (or exec) of a vserver that does not run: nothing was changed.
    #[error("vserver {0} is not running; nothing changed")]
    NotRunning(VserverName),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The pre-start hook failed: the start was aborted before anything was set up.
    #[error("start of {name} aborted, nothing was set up: {source}")]
    PreStart {
        /// The vserver.
        name: VserverName,
        /// The hook's failure.
        source: HookError,
    },
    /// Building, stopping or joining the context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// Running a command inside failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The run state could not be read.
    #[error(transparent)]
    State(#[from] isolate::state::StateError),
    /// A cgroup could not be read.
    #[error(transparent)]
    Cgroup(#[from] isolate::cgroup::CgroupError),
    /// Its addresses could not be announced.
    #[error("vserver {name}: cannot announce its addresses: {message}")]
    Announce {
        /// The vserver.
        name: VserverName,
        /// Why.
        message: String,
    },
}

/// What a start did, for the operator.
#[derive(Debug, Default)]
pub struct StartReport {
    /// The context's record.
    pub state: Option<RunState>,
    /// Start scripts run, with their exit codes.
    pub scripts: Vec<(PathBuf, i32)>,
    /// Warnings (conf file, post-start hook).
    pub warnings: Vec<String>,
}

/// The state of one vserver as `status` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Its name.
    pub name: String,
    /// `running` or `stopped`.
    pub state: &'static str,
    /// Context number (S_CONTEXT, or the host pid of its process 1).
    pub context: Option<u64>,
    /// Processes in its cgroup.
    pub processes: usize,
    /// Its addresses (`dev:addr/prefix`); empty when it has only a loopback or shares the host's network.
    pub addresses: Vec<String>,
    /// It shares the host's network namespace (empty IPROOT with S_UNSAFE hostnet).
    pub host_network: bool,
    /// Seconds since start.
    pub uptime_secs: Option<u64>,
    /// The block device its tree is on, while it runs from one; null otherwise.
    pub root_device: Option<RootDeviceStatus>,
    /// What it holds against its limits (flattened: `tasks`, `pids_limit`, `memory_bytes`...).
    #[serde(flatten)]
    pub resources: Resources,
    /// ONBOOT=yes.
    pub onboot: bool,
}

/// The root device of a running vserver, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootDeviceStatus {
    /// The device's path, as given at start.
    pub path: PathBuf,
    /// Its file system type.
    pub fstype: String,
    /// Its device number when it started (`MAJOR:MINOR`, as in `/proc/PID/mountinfo`).
    pub device: Option<DeviceNumber>,
}

impl RootDeviceStatus {
    /// The root device a run state records, if any.
    pub fn of(state: &RunState) -> Option<Self> {
        let device = state.spec.root_device.as_ref()?;
        Some(Self { path: device.path.clone(), fstype: device.fstype.clone(), device: state.root_device_number })
    }
}

/// A vserver as a supervisor observes it ([`Host::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Its process 1 runs.
    Running,
    /// Its process 1 has ended and its keeper is recording how.
    Ending,
    /// It does not run; how its last run ended, when known.
    Down(Option<isolate::state::Ending>),
}

/// What a vserver holds against its limits, as `vserver NAME status` and the agent report it. While it runs
/// the limits are those in force (read from its cgroups and its tree's quota); while it is stopped, those of
/// its conf. A field is null where the host does not tell, or (for a limit) there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Tasks (processes and their threads) counted against the process limit (`pids.current`).
    pub tasks: Option<u64>,
    /// Its process limit (LIMIT_PIDS, default 4096; `pids.max`).
    pub pids_limit: Option<u64>,
    /// Memory charged to its cgroup, in bytes.
    pub memory_bytes: Option<u64>,
    /// Its memory limit (LIMIT_MEMORY: RAM and swap together), in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes its tree holds, by its project quota (when its file system accounts them); for a tree on a root
    /// device, the bytes used on the device's file system (while it runs).
    pub disk_bytes: Option<u64>,
    /// Its disk quota (LIMIT_DISK), in bytes; for a tree on a root device, the size of the device's file system
    /// (while it runs).
    pub disk_limit_bytes: Option<u64>,
    /// Its CPU weight (CPU_WEIGHT, 1..10000); null for the default (100).
    pub cpu_weight: Option<u32>,
    /// Its block I/O weight (IO_WEIGHT, 1..10000); null for the default (100).
    pub io_weight: Option<u32>,
}

impl Resources {
    /// What a vserver with `spec` holds: from `cgroups` and its tree's quota (or its root device's file system)
    /// when it runs (`running` is its run state), its conf's limits (and its tree's disk usage) when it does not.
    pub fn read(spec: &ContextSpec, cgroups: &isolate::cgroup::Cgroups, running: Option<&RunState>) -> Self {
        let disk = match (&spec.root_device, running) {
            (None, _) => isolate::quota::usage(&spec.root).map(|d| (d.bytes, d.limit)),
            (Some(_), Some(state)) => file_system_usage(&state.tree()),
            (Some(_), None) => None,
        };
        let mut r = Self {
            disk_bytes: disk.map(|(bytes, _)| bytes),
            cpu_weight: spec.limits.cpu_weight,
            io_weight: spec.limits.io_weight,
            ..Self::default()
        };
        if running.is_some() {
            let usage = cgroups.usage();
            r.tasks = usage.tasks;
            r.pids_limit = usage.tasks_max;
            r.memory_bytes = usage.memory_bytes;
            r.memory_limit_bytes = usage.memory_max;
            r.disk_limit_bytes = disk.and_then(|(_, limit)| limit);
        } else {
            r.pids_limit = spec.nproc;
            r.memory_limit_bytes = spec.limits.memory;
            r.disk_limit_bytes = spec.limits.disk;
        }
        r
    }
}

/// Bytes used on the file system holding `path`, and its size (statvfs).
fn file_system_usage(path: &Path) -> Option<(u64, Option<u64>)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let block = st.fragment_size();
    let used = st.blocks().saturating_sub(st.blocks_free()).saturating_mul(block);
    Some((used, Some(st.blocks().saturating_mul(block))))
}

/// Whether `root` holds no tree: nothing in it but what a start makes there itself (`dev`, `proc`) and what
/// `mkfs` makes (`lost+found`). The mount point of a vserver on a block device looks like that.
fn holds_no_tree(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    entries.flatten().all(|e| matches!(e.file_name().to_str(), Some("dev" | "proc" | "lost+found")))
}

/// How a vserver's network reads in one line: its addresses, `loopback only`, or `host network`.
pub fn network_text(addresses: &[String], host_network: bool) -> String {
    match (addresses.is_empty(), host_network) {
        (false, _) => addresses.join(" "),
        (true, true) => "host network".to_string(),
        (true, false) => "loopback only".to_string(),
    }
}

/// One host's vservers.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its directories.
    pub dirs: Dirs,
    /// Time between SIGTERM and SIGKILL when stopping; also the bound on each stop script.
    pub grace: Duration,
    /// Bound on each start script: one that hangs (a daemon that does not detach) must not hold the start
    /// forever. It goes on running inside; the start reports it and continues.
    pub start_timeout: Duration,
}

impl Host {
    /// Reads `NAME.conf` (refusing a missing one) and returns it with its warnings.
    pub fn conf(&self, name: &VserverName) -> Result<(LegacyConf, Vec<String>), LifecycleError> {
        let path = self.dirs.conf(name);
        if !path.exists() {
            return Err(LifecycleError::NoConf { name: name.clone(), path });
        }
        let (conf, warnings) = LegacyConf::load(&path)?;
        Ok((conf, warnings.iter().map(ToString::to_string).collect()))
    }

    /// The spec a start would use.
    pub fn spec(&self, name: &VserverName) -> Result<(ContextSpec, LegacyConf, Vec<String>), LifecycleError> {
        let (conf, warnings) = self.conf(name)?;
        let root = self.dirs.root(name);
        if !root.is_dir() {
            return Err(LifecycleError::NoRoot { name: name.clone(), path: root });
        }
        let spec = conf.to_spec(name, root, self.dirs.cgroup())?;
        Ok((spec, conf, warnings))
    }

    /// Where a vserver stands for a supervisor: running, ending (process 1 gone, its keeper still recording
    /// how: look again shortly), or down with how its last run ended when its keeper recorded it (`reboot`
    /// and `halt` inside are the vserver's own intent, never a crash).
    pub fn observe(&self, name: &VserverName) -> Result<Observed, LifecycleError> {
        Ok(match RunState::load(&self.dirs.run_dir, name)? {
            None => Observed::Down(None),
            Some(st) => match st.lifecycle(&self.dirs.run_dir) {
                isolate::state::Lifecycle::Running => Observed::Running,
                isolate::state::Lifecycle::Ending => Observed::Ending,
                isolate::state::Lifecycle::Ended(how) => Observed::Down(how),
            },
        })
    }

    /// The run state of a vserver that runs, `None` when it does not.
    pub fn running(&self, name: &VserverName) -> Result<Option<RunState>, LifecycleError> {
        Ok(RunState::load(&self.dirs.run_dir, name)?.filter(RunState::init_alive))
    }

    /// Announces each address of a running vserver once, from inside its network namespace (a gratuitous ARP
    /// for IPv4, an unsolicited neighbour advertisement for IPv6); the addresses announced (`dev:addr`).
    /// [`LifecycleError::NotRunning`] when it does not run here.
    pub fn announce(&self, name: &VserverName) -> Result<Vec<String>, LifecycleError> {
        let state = self.running(name)?.ok_or_else(|| LifecycleError::NotRunning(name.clone()))?;
        let addrs: Vec<(String, std::net::IpAddr)> = match &state.spec.network {
            isolate::spec::Network::Host => Vec::new(),
            isolate::spec::Network::Private(ifaces) => {
                ifaces.iter().flat_map(|i| i.addresses.iter().map(|a| (i.host_dev.clone(), a.addr))).collect()
            }
        };
        isolate::network::announce_in(state.init_pid, &addrs, 1)
            .map_err(|e| LifecycleError::Announce { name: name.clone(), message: e.to_string() })?;
        Ok(addrs.iter().map(|(dev, a)| format!("{dev}:{a}")).collect())
    }

    /// Starts a vserver and its services; its tree is the directory `VSERVERS_DIR/NAME`, or, with
    /// `root_device`, the file system of that block device, mounted on that directory (made when missing)
    /// inside the vserver's mount namespace only.
    pub fn start(&self, name: &VserverName, root_device: Option<&RootDevice>) -> Result<StartReport, LifecycleError> {
        let root = self.dirs.root(name);
        let made = match root_device {
            Some(_) if !root.exists() => {
                self.conf(name)?;
                std::fs::create_dir(&root).map_err(|source| LifecycleError::MountPoint {
                    name: name.clone(),
                    path: root.clone(),
                    source,
                })?;
                true
            }
            _ => false,
        };
        let started = self.start_on(name, root_device);
        if made && started.is_err() {
            // Only the empty directory made above: a refused start leaves nothing behind.
            let _ = std::fs::remove_dir(&root);
        }
        started
    }

    fn start_on(&self, name: &VserverName, root_device: Option<&RootDevice>) -> Result<StartReport, LifecycleError> {
        let (mut spec, _conf, mut warnings) = self.spec(name)?;
        if self.running(name)?.is_some() {
            return Err(LifecycleError::AlreadyRunning(name.clone()));
        }
        match root_device {
            None if holds_no_tree(&spec.root) => {
                return Err(LifecycleError::EmptyRoot { name: name.clone(), path: spec.root.clone() });
            }
            None => {}
            Some(device) => {
                if std::fs::read_dir(&spec.root).is_ok_and(|mut e| e.next().is_some()) {
                    warnings.push(format!(
                        "root device {device} is mounted over {}, which is not empty: the vserver does not see \
                         what that directory holds",
                        spec.root.display()
                    ));
                }
                spec.root_device = Some(device.clone());
            }
        }
        if let isolate::lease::HostLease::Until(end) = isolate::lease::read(&self.dirs.run_dir) {
            let now = isolate::lease::boottime_ms();
            if end <= now {
                return Err(LifecycleError::LeaseOver {
                    name: name.clone(),
                    path: isolate::lease::path(&self.dirs.run_dir),
                    ago_ms: now - end,
                });
            }
        }
        let mut report = StartReport { warnings, ..Default::default() };
        report.warnings.extend(spec.warnings());
        match crate::dirs::barrier(&self.dirs.vservers_dir) {
            Ok(said) => report.warnings.extend(said),
            Err(e) => report.warnings.push(format!(
                "cannot make {} reachable by root only: {e}; host users may reach into the vserver's tree",
                self.dirs.vservers_dir.display()
            )),
        }
        let hook = self.dirs.hook(name);
        hooks::run(&hook, HookAction::PreStart, name, &spec.root)
            .map_err(|source| LifecycleError::PreStart { name: name.clone(), source })?;
        let state = isolate::start(&spec, &isolate::StartOptions { run_dir: self.dirs.run_dir.clone() }).map_err(
            |e| match e {
                ContextError::AlreadyRunning(n) => LifecycleError::AlreadyRunning(n),
                e => LifecycleError::Context(e),
            },
        )?;
        if !spec.flags.fakeinit {
            for script in services::start_scripts(&state.tree()) {
                let argv = vec![script.display().to_string(), "start".to_string()];
                let opts = self.script_options(name, Some(self.start_timeout));
                let console = isolate::context::console_path(&self.dirs.run_dir, name);
                let code = match isolate::exec::exec(&state, &argv, &opts) {
                    Ok(0) => 0,
                    Ok(code) => {
                        report.warnings.push(format!(
                            "start script {} exited with {code}; its output is in {}",
                            script.display(),
                            console.display()
                        ));
                        code
                    }
                    Err(ExecError::Timeout { secs, .. }) => {
                        report.warnings.push(format!(
                            "start script {} did not finish within {secs} s; it goes on running inside, \
                             the start continues (its output is in {})",
                            script.display(),
                            console.display()
                        ));
                        124
                    }
                    Err(e) => {
                        report.warnings.push(format!("start script {}: {e}", script.display()));
                        127
                    }
                };
                report.scripts.push((script, code));
            }
        }
        if let Err(e) = hooks::run(&hook, HookAction::PostStart, name, &spec.root) {
            report.warnings.push(format!("{e} (the vserver is running)"));
        }
        report.state = Some(state);
        Ok(report)
    }

    /// Stops a vserver: its stop scripts, then every process left, then its cgroups and addresses.
    pub fn stop(&self, name: &VserverName) -> Result<(StopReport, Vec<String>), LifecycleError> {
        let state = RunState::load(&self.dirs.run_dir, name)?;
        // Prefer the spec the vserver was started with: the conf may have changed since.
        let spec = match &state {
            Some(s) => s.spec.clone(),
            None => self.spec(name)?.0,
        };
        let cg = isolate::cgroup::Cgroups::new(&spec.cgroup, name)?;
        let alive = state.as_ref().is_some_and(RunState::init_alive);
        if !alive && cg.procs()?.is_empty() {
            // Clean a stale record of a context that died on its own.
            if state.is_some() {
                isolate::stop(&spec, &self.dirs.run_dir, &self.stop_options(Duration::ZERO))?;
            }
            return Err(LifecycleError::NotRunning(name.clone()));
        }
        let mut warnings = Vec::new();
        let hook = self.dirs.hook(name);
        if let Err(e) = hooks::run(&hook, HookAction::PreStop, name, &spec.root) {
            warnings.push(format!("{e} (stopping anyway)"));
        }
        if let (Some(state), false) = (state.as_ref().filter(|_| alive), spec.flags.fakeinit) {
            for script in services::start_scripts(&state.tree()).into_iter().rev() {
                let argv = vec![script.display().to_string(), "stop".to_string()];
                let opts = self.script_options(name, Some(self.grace.max(Duration::from_secs(1))));
                match isolate::exec::exec(state, &argv, &opts) {
                    Ok(0) => {}
                    Ok(code) => warnings.push(format!("stop script {} exited with {code}", script.display())),
                    Err(e) => warnings.push(format!("stop script {}: {e}", script.display())),
                }
            }
        }
        let report = isolate::stop(&spec, &self.dirs.run_dir, &self.stop_options(self.grace))?;
        if let Err(e) = hooks::run(&hook, HookAction::PostStop, name, &spec.root) {
            warnings.push(e.to_string());
        }
        Ok((report, warnings))
    }

    /// How a stop proceeds: `grace` between SIGTERM and SIGKILL, then, for a vserver on a root device, up to
    /// [`isolate::root_device::RELEASE_TIMEOUT`] until the device is mounted nowhere on this host.
    fn stop_options(&self, grace: Duration) -> StopOptions {
        StopOptions { grace, release: isolate::root_device::RELEASE_TIMEOUT }
    }

    /// How the vserver's own start and stop scripts run: allowed under `private`, stdin from /dev/null,
    /// output to the console log (`RUN_DIR/NAME.console`).
    fn script_options(&self, name: &VserverName, timeout: Option<Duration>) -> ExecOptions {
        ExecOptions {
            internal: true,
            null_stdin: true,
            output: Some(isolate::context::console_path(&self.dirs.run_dir, name)),
            timeout,
            ..Default::default()
        }
    }

    /// Runs a command inside a running vserver and returns its exit code.
    pub fn exec(&self, name: &VserverName, argv: &[String], user: Option<String>) -> Result<i32, LifecycleError> {
        let state = self.running(name)?.ok_or_else(|| LifecycleError::NotRunning(name.clone()))?;
        Ok(isolate::exec::exec(&state, argv, &ExecOptions { user, ..Default::default() })?)
    }

    /// The state of a vserver, running or not.
    pub fn status(&self, name: &VserverName) -> Result<Status, LifecycleError> {
        let (conf, _) = self.conf(name)?;
        let state = self.running(name)?;
        let cgroup_place = state.as_ref().map_or_else(|| self.dirs.cgroup(), |s| s.spec.cgroup.clone());
        let cg = isolate::cgroup::Cgroups::new(&cgroup_place, name)?;
        let processes = cg.procs().map(|p| p.len()).unwrap_or(0);
        let spec = match &state {
            Some(s) => s.spec.clone(),
            None => conf.to_spec(name, self.dirs.root(name), self.dirs.cgroup())?,
        };
        let network = spec.network.clone();
        let addresses = match &network {
            isolate::spec::Network::Host => Vec::new(),
            isolate::spec::Network::Private(ifaces) => ifaces
                .iter()
                .flat_map(|i| {
                    i.addresses.iter().map(move |a| match a.prefix {
                        Some(p) => format!("{}:{}/{p}", i.host_dev, a.addr),
                        None => format!("{}:{}", i.host_dev, a.addr),
                    })
                })
                .collect(),
        };
        Ok(Status {
            name: name.to_string(),
            state: if state.is_some() { "running" } else { "stopped" },
            context: state.as_ref().map(|s| s.spec.context_id.map_or(s.init_pid as u64, u64::from)),
            processes,
            addresses,
            host_network: matches!(network, isolate::spec::Network::Host),
            uptime_secs: state.as_ref().map(RunState::uptime_secs),
            root_device: state.as_ref().and_then(RootDeviceStatus::of),
            resources: Resources::read(&spec, &cg, state.as_ref()),
            onboot: conf.onboot,
        })
    }

    /// Every running vserver of this host (from the run directory), sorted by name.
    pub fn running_all(&self) -> Vec<RunState> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dirs.run_dir) else { return out };
        for e in entries.flatten() {
            let f = e.file_name();
            let Some(stem) = f.to_str().and_then(|f| f.strip_suffix(".json")) else { continue };
            let Ok(name) = VserverName::parse(stem) else { continue };
            if let Ok(Some(st)) = self.running(&name) {
                out.push(st);
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out
    }
}
