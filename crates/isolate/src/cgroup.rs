//! The cgroups of one vserver, so the host can list, limit, freeze and kill exactly its processes.
//!
//! Three host layouts are handled (see [`Layout`]): pure cgroup v2, the v1/v2 hybrid (v1 controllers plus a
//! controller-less cgroup2 tree at `unified/`), and pure v1. In each, one *authoritative* group holds every
//! process of the vserver and is the one listed, frozen and killed: `<parent>/<name>` on v2,
//! `unified/<parent>/<name>` on a hybrid host, `freezer/<parent>/<name>` on v1. On v1 hierarchies further
//! groups under `pids/`, `cpu/`, `memory/` and `blkio/` carry the process limit, the CPU group and weight,
//! memory accounting and limit, and the I/O weight, and one under `devices/` the device allow-list (see
//! `devices`). A limit the conf asks for and the host cannot enforce
//! refuses the start ([`CgroupError::Controller`], [`CgroupError::Unsupported`]): never silently weaker.
//! The cgroup root is passed in ([`CgroupPlace`]), so unit tests lay out each shape in a temp dir.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::spec::{CgroupPlace, ContextSpec, VserverName};

/// Controllers a v2 host enables for its vservers, in the order written to `cgroup.subtree_control`.
const V2_CONTROLLERS: [&str; 4] = ["pids", "cpu", "memory", "io"];
/// CPU and I/O weight of a vserver whose conf sets none (the kernel's default for `cpu.weight`,
/// `io.weight` and BFQ's weight: vservers weigh the same).
const DEFAULT_WEIGHT: u32 = 100;
/// `cpu.shares` on v1 for [`DEFAULT_WEIGHT`] (the kernel's default); other weights scale from it.
const DEFAULT_CPU_SHARES: u64 = 1024;
/// `blkio.weight` of the v1 CFQ scheduler for [`DEFAULT_WEIGHT`] (its default); its range is 10..=1000.
const DEFAULT_CFQ_WEIGHT: u32 = 500;
/// Highest weight BFQ takes (`io.bfq.weight`, `blkio.bfq.weight`); its range is 1..=1000.
const MAX_BFQ_WEIGHT: u32 = 1000;
/// From here up a v1 memory limit is the kernel's "unlimited" (it prints `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;
/// How many times `rmdir` is tried while the kernel still reports the group busy (exiting processes).
const REMOVE_TRIES: u32 = 50;
/// Pause between two polls of a cgroup file, and between two `rmdir` tries.
const POLL: Duration = Duration::from_millis(20);
/// How long [`Cgroups::freeze`] waits for the kernel to report the group frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(1);
/// Rounds of SIGKILL [`Cgroups::kill`] makes while new processes keep showing up.
const KILL_ROUNDS: u32 = 20;

/// How the host mounts its cgroups, read from the files under the cgroup root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layout {
    /// Pure cgroup v2: the root is a cgroup2 mount holding every controller.
    V2,
    /// v1 controllers under `root/<controller>` and a cgroup2 tree at `root/unified` used for membership,
    /// `cgroup.kill` and `cgroup.freeze`.
    Hybrid,
    /// Pure cgroup v1: one mount per controller, the `freezer` hierarchy holding membership.
    V1,
}

impl Layout {
    /// Tells the layout under `root`: `cgroup.controllers` means v2, `unified/cgroup.procs` a hybrid host,
    /// a `freezer` directory v1.
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        if root.join("cgroup.controllers").is_file() {
            Ok(Self::V2)
        } else if root.join("unified").join("cgroup.procs").is_file() {
            Ok(Self::Hybrid)
        } else if root.join("freezer").is_dir() {
            Ok(Self::V1)
        } else {
            Err(CgroupError::Detect { root: root.to_path_buf() })
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V2 => "cgroup v2",
            Self::Hybrid => "hybrid cgroup v1/v2",
            Self::V1 => "cgroup v1",
        })
    }
}

/// What the vserver's cgroups enforce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Most processes the vserver may hold at once (`pids.max`); `None` leaves it unlimited.
    pub pids_max: Option<u64>,
    /// The vserver is one group for the CPU scheduler (S_FLAGS `sched`), with the default weight unless
    /// `cpu_weight` says otherwise.
    pub cpu_group: bool,
    /// Most memory (RAM and swap together) its processes may hold, in bytes: v2 `memory.max` (and
    /// `memory.swap.max` 0), v1 `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, the same).
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// Its CPU weight, 1..=10000 (100 the default): v2 `cpu.weight`, v1 `cpu.shares` scaled (100 is 1024).
    /// Implies a CPU group of its own.
    #[serde(default)]
    pub cpu_weight: Option<u32>,
    /// Its block I/O weight, 1..=10000 (100 the default): v2 `io.weight` (or `io.bfq.weight`), v1
    /// `blkio.weight` (CFQ) or `blkio.bfq.weight` (BFQ), whichever the kernel offers.
    #[serde(default)]
    pub io_weight: Option<u32>,
}

impl From<&ContextSpec> for CgroupLimits {
    fn from(spec: &ContextSpec) -> Self {
        Self {
            pids_max: spec.nproc,
            cpu_group: spec.flags.sched,
            memory_max: spec.limits.memory,
            cpu_weight: spec.limits.cpu_weight,
            io_weight: spec.limits.io_weight,
        }
    }
}

/// What a vserver's groups hold and may hold, as the kernel reports it; `None` where the host does not
/// account it, the group does not exist, or (for a limit) there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    /// Tasks (processes and their threads) counted against the process limit (`pids.current`).
    pub tasks: Option<u64>,
    /// The process limit in force (`pids.max`).
    pub tasks_max: Option<u64>,
    /// Memory charged to the vserver, in bytes (`memory.current`, `memory.usage_in_bytes`).
    pub memory_bytes: Option<u64>,
    /// The memory limit in force, in bytes (`memory.max`, `memory.limit_in_bytes`).
    pub memory_max: Option<u64>,
}

/// Why a cgroup operation failed; each variant names the operation and carries the path it touched.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No known cgroup layout under the root.
    #[error(
        "cannot tell the cgroup layout under {root}: found neither {root}/cgroup.controllers (cgroup v2), \
         {root}/unified/cgroup.procs (hybrid) nor a {root}/freezer directory (cgroup v1); \
         is a cgroup file system mounted there?"
    )]
    Detect {
        /// The cgroup root looked at.
        root: PathBuf,
    },
    /// The parent group of [`CgroupPlace`] would leave the cgroup root.
    #[error("invalid cgroup parent {parent:?}: {reason}")]
    Parent {
        /// The parent as configured.
        parent: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A group directory could not be made.
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        /// The group.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A control file could not be written.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// A control file could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The control file or group.
        path: PathBuf,
        /// The OS error, or `InvalidData` for unexpected content.
        source: io::Error,
    },
    /// A group directory could not be removed.
    #[error("cannot remove cgroup {path}: {source} (are processes still inside? see its cgroup.procs)")]
    Remove {
        /// The group.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A process could not be moved into a group.
    #[error("cannot move process {pid} into cgroup {path}: {source}")]
    AddProcess {
        /// The process.
        pid: i32,
        /// The group.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// SIGKILL could not be sent to a process of the group.
    #[error("cannot kill process {pid} of cgroup {path}: {source}")]
    Kill {
        /// The process.
        pid: i32,
        /// The group.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// New processes kept appearing in the group however often they were killed.
    #[error(
        "new processes kept appearing in cgroup {path} after {rounds} rounds of SIGKILL; \
         is something outside moving processes into it?"
    )]
    KillRounds {
        /// The group.
        path: PathBuf,
        /// Rounds made.
        rounds: u32,
    },
    /// A signal could not be sent to a process of the group.
    #[error("cannot send {signal:?} to process {pid} of cgroup {path}: {source}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The process.
        pid: i32,
        /// The group.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A limit was asked for but the controller that enforces it is not available.
    #[error("cannot use the {controller} controller: it is not available at {path} ({hint})")]
    Controller {
        /// `pids`, ...
        controller: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// What to check.
        hint: &'static str,
    },
    /// A limit was asked for and its controller is there, but the kernel offers no file to set it (an I/O
    /// weight without a proportional I/O scheduler).
    #[error("cannot enforce {limit}: {group} has no {files} file ({hint})")]
    Unsupported {
        /// The conf key asking for the limit (`IO_WEIGHT`).
        limit: &'static str,
        /// The vserver's group, where the files were looked for.
        group: PathBuf,
        /// The files looked for, in words (`blkio.weight nor blkio.bfq.weight`).
        files: &'static str,
        /// What the host needs, and how to run without the limit.
        hint: &'static str,
    },
    /// The group exists but the kernel offers no freezer for it.
    #[error(
        "cannot freeze cgroup {path}: it has no cgroup.freeze file \
         (freezing a cgroup v2 group needs Linux 5.2 or later)"
    )]
    Freeze {
        /// The group.
        path: PathBuf,
    },
}

/// The cgroups of one vserver. Made by [`Cgroups::new`], which only computes paths; [`Cgroups::create`]
/// makes the groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    layout: Layout,
    /// The cgroup root, for messages.
    root: PathBuf,
    /// The authoritative group: holds every process; listed, frozen and killed.
    main: PathBuf,
    /// On v2, the groups above `main` from the root down to the parent (where controllers get enabled).
    v2_levels: Vec<PathBuf>,
    /// On v1 hierarchies, the vserver's group under `pids/`, if that hierarchy is mounted.
    pids: Option<PathBuf>,
    /// On v1 hierarchies, the vserver's group under `cpu/`, if that hierarchy is mounted.
    cpu: Option<PathBuf>,
    /// On v1 hierarchies, the vserver's group under `memory/`, if that hierarchy is mounted.
    memory: Option<PathBuf>,
    /// On v1 hierarchies, the vserver's group under `devices/`, if that hierarchy is mounted.
    devices: Option<PathBuf>,
    /// On v1 hierarchies, the vserver's group under `blkio/`, if that hierarchy is mounted (made only for an
    /// I/O weight).
    blkio: Option<PathBuf>,
}

impl Cgroups {
    /// Detects the layout under `place.root` and computes the vserver's groups; creates nothing.
    pub fn new(place: &CgroupPlace, name: &VserverName) -> Result<Self, CgroupError> {
        let parent = parent_components(&place.parent)?;
        let root = place.root.clone();
        let layout = Layout::detect(&root)?;
        let under = |mut group: PathBuf| -> PathBuf {
            group.extend(&parent);
            group.push(name.as_str());
            group
        };
        let main = match layout {
            Layout::V2 => under(root.clone()),
            Layout::Hybrid => under(root.join("unified")),
            Layout::V1 => under(root.join("freezer")),
        };
        // On v2 a directory `pids` under the root would be some group of that name, not a hierarchy.
        let v1_group = |controller: &str| {
            let hierarchy = root.join(controller);
            (layout != Layout::V2 && hierarchy.is_dir()).then(|| under(hierarchy))
        };
        let v2_levels = match layout {
            Layout::V2 => std::iter::once(root.clone())
                .chain(parent.iter().scan(root.clone(), |level, c| {
                    level.push(c);
                    Some(level.clone())
                }))
                .collect(),
            Layout::Hybrid | Layout::V1 => Vec::new(),
        };
        Ok(Self {
            layout,
            main,
            v2_levels,
            pids: v1_group("pids"),
            cpu: v1_group("cpu"),
            memory: v1_group("memory"),
            devices: v1_group("devices"),
            blkio: v1_group("blkio"),
            root,
        })
    }

    /// The vservers that have a group under `place` (running, or left behind by one that died), by the
    /// directories of the authoritative hierarchy; names that are not valid vserver names are skipped. A
    /// parent group that does not exist yet holds none.
    pub fn list(place: &CgroupPlace) -> Result<Vec<VserverName>, CgroupError> {
        let parent = parent_components(&place.parent)?;
        let mut dir = match Layout::detect(&place.root)? {
            Layout::V2 => place.root.clone(),
            Layout::Hybrid => place.root.join("unified"),
            Layout::V1 => place.root.join("freezer"),
        };
        dir.extend(&parent);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CgroupError::Read { path: dir, source }),
        };
        let mut names: Vec<VserverName> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| VserverName::parse(e.file_name().to_str()?).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The host's cgroup layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The authoritative group, the one holding every process of the vserver (for `CLONE_INTO_CGROUP` and
    /// diagnostics).
    pub fn path(&self) -> &Path {
        &self.main
    }

    /// Makes the vserver's groups (and missing parents), enables the controllers and sets the limits.
    /// Running it again on existing groups brings the limits in line: a limit no longer asked for goes back
    /// to the kernel's default.
    ///
    /// A limit the host cannot enforce is an error ([`CgroupError::Controller`] when its controller is
    /// missing, [`CgroupError::Unsupported`] when the controller offers no file for it): the vserver never
    /// runs without a limit its conf asks for. Only a CPU group of S_FLAGS `sched` without CPU_WEIGHT is
    /// logged when the host cannot make it, and the vserver runs without one.
    pub fn create(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        mkdir_p(&self.main)?;
        match self.layout {
            Layout::V2 => self.create_v2(limits)?,
            Layout::Hybrid | Layout::V1 => self.create_v1(limits)?,
        }
        tracing::debug!(group = %self.main.display(), layout = %self.layout, ?limits, "cgroups ready");
        Ok(())
    }

    fn create_v2(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        // Top down: a level can only enable what the level above enabled for it.
        for (depth, level) in self.v2_levels.iter().enumerate() {
            let available = read_word_set(&level.join("cgroup.controllers"))?;
            let control = level.join("cgroup.subtree_control");
            let enabled = read_word_set(&control)?;
            let missing: Vec<String> = V2_CONTROLLERS
                .iter()
                .filter(|c| available.contains(**c) && !enabled.contains(**c))
                .map(|c| format!("+{c}"))
                .collect();
            if missing.is_empty() {
                continue;
            }
            match write_control(&control, &missing.join(" ")) {
                Ok(()) => {}
                // The root may be a delegated group that holds processes itself: the host's business.
                Err(err) if depth == 0 => {
                    tracing::warn!(%err, "cannot enable controllers at the cgroup root; using what it offers")
                }
                Err(err) => return Err(err),
            }
        }
        let parent = self.v2_levels.last().expect("the root is a level");
        let parent_control = parent.join("cgroup.subtree_control");
        let active = read_word_set(&parent_control)?;
        let need = |controller: &'static str| -> Result<(), CgroupError> {
            if active.contains(controller) {
                Ok(())
            } else {
                Err(CgroupError::Controller { controller, path: parent_control.clone(), hint: v2_hint(controller) })
            }
        };
        let group = &self.main;

        let pids_max = group.join("pids.max");
        match limits.pids_max {
            Some(max) => {
                need("pids")?;
                write_control(&pids_max, &max.to_string())?;
            }
            None if pids_max.is_file() => write_control(&pids_max, "max")?,
            None => {}
        }

        let (memory_max, swap_max) = (group.join("memory.max"), group.join("memory.swap.max"));
        match limits.memory_max {
            Some(bytes) => {
                need("memory")?;
                write_control(&memory_max, &bytes.to_string())?;
                // memory.max bounds RAM alone; without this the vserver could go on in swap.
                if swap_max.is_file() {
                    write_control(&swap_max, "0")?;
                }
            }
            None => {
                for file in [&memory_max, &swap_max] {
                    if file.is_file() {
                        write_control(file, "max")?;
                    }
                }
            }
        }

        let cpu_weight = group.join("cpu.weight");
        match (limits.cpu_weight, limits.cpu_group) {
            (Some(weight), _) => {
                need("cpu")?;
                write_control(&cpu_weight, &weight.to_string())?;
            }
            (None, true) if active.contains("cpu") => write_control(&cpu_weight, &DEFAULT_WEIGHT.to_string())?,
            (None, true) => tracing::warn!(
                group = %group.display(),
                "the cpu controller is not enabled here; the vserver gets no CPU group of its own"
            ),
            (None, false) if cpu_weight.is_file() => write_control(&cpu_weight, &DEFAULT_WEIGHT.to_string())?,
            (None, false) => {}
        }

        let (io_weight, bfq_weight) = (group.join("io.weight"), group.join("io.bfq.weight"));
        match limits.io_weight {
            Some(weight) => {
                need("io")?;
                if io_weight.is_file() {
                    write_control(&io_weight, &format!("default {weight}"))?;
                } else if bfq_weight.is_file() {
                    write_control(&bfq_weight, &weight.min(MAX_BFQ_WEIGHT).to_string())?;
                } else {
                    return Err(CgroupError::Unsupported {
                        limit: "IO_WEIGHT",
                        group: group.clone(),
                        files: "io.weight nor io.bfq.weight",
                        hint: "I/O weights need a kernel with the io.cost controller (CONFIG_BLK_CGROUP_IOCOST) or \
                               the BFQ scheduler; remove IO_WEIGHT from the conf to run without one",
                    });
                }
            }
            None => {
                if io_weight.is_file() {
                    write_control(&io_weight, &format!("default {DEFAULT_WEIGHT}"))?;
                }
                if bfq_weight.is_file() {
                    write_control(&bfq_weight, &DEFAULT_WEIGHT.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn create_v1(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let missing = |controller: &'static str, hint: &'static str| CgroupError::Controller {
            controller,
            path: self.root.join(controller),
            hint,
        };

        match (limits.pids_max, &self.pids) {
            (Some(max), Some(group)) => {
                mkdir_p(group)?;
                write_control(&group.join("pids.max"), &max.to_string())?;
            }
            (Some(_), None) => {
                return Err(missing(
                    "pids",
                    "the v1 pids controller must be mounted there to limit processes; LIMIT_PIDS=unlimited \
                     runs the vserver without a process limit",
                ))
            }
            // An earlier run may have set a limit that is no longer wanted.
            (None, Some(group)) if group.join("pids.max").is_file() => {
                write_control(&group.join("pids.max"), "max")?;
            }
            (None, _) => {}
        }

        match (limits.memory_max, &self.memory) {
            (Some(_), None) => {
                return Err(missing(
                    "memory",
                    "the v1 memory controller must be mounted there to limit memory; remove LIMIT_MEMORY from \
                     the conf to run without a memory limit",
                ))
            }
            (Some(bytes), Some(group)) => {
                mkdir_p(group)?;
                set_v1_memory(group, &bytes.to_string())?;
            }
            (None, Some(group)) => {
                // Made even without a limit: it accounts the vserver's memory for `status`.
                mkdir_p(group)?;
                if group.join("memory.limit_in_bytes").is_file() {
                    set_v1_memory(group, "-1")?;
                }
            }
            (None, None) => {}
        }

        let shares = limits.cpu_weight.or(limits.cpu_group.then_some(DEFAULT_WEIGHT)).map(cpu_shares);
        match (shares, &self.cpu) {
            (Some(shares), Some(group)) => {
                mkdir_p(group)?;
                write_control(&group.join("cpu.shares"), &shares.to_string())?;
            }
            (Some(_), None) if limits.cpu_weight.is_some() => {
                return Err(missing(
                    "cpu",
                    "the v1 cpu controller must be mounted there to weigh the vserver's CPU time; remove \
                     CPU_WEIGHT from the conf to run without one",
                ))
            }
            (Some(_), None) => tracing::warn!(
                hierarchy = %self.root.join("cpu").display(),
                "no v1 cpu hierarchy is mounted; the vserver gets no CPU group of its own"
            ),
            // A group left by an earlier run that had one: back to the default weight.
            (None, Some(group)) if group.join("cpu.shares").is_file() => {
                write_control(&group.join("cpu.shares"), &DEFAULT_CPU_SHARES.to_string())?;
            }
            (None, _) => {}
        }

        match (limits.io_weight, &self.blkio) {
            (Some(_), None) => {
                return Err(missing(
                    "blkio",
                    "the v1 blkio controller must be mounted there to weigh the vserver's I/O; remove \
                     IO_WEIGHT from the conf to run without one",
                ))
            }
            (Some(weight), Some(group)) => {
                mkdir_p(group)?;
                let (cfq, bfq) = (group.join("blkio.weight"), group.join("blkio.bfq.weight"));
                if cfq.is_file() {
                    write_control(&cfq, &cfq_weight(weight).to_string())?;
                } else if bfq.is_file() {
                    write_control(&bfq, &weight.min(MAX_BFQ_WEIGHT).to_string())?;
                } else {
                    return Err(CgroupError::Unsupported {
                        limit: "IO_WEIGHT",
                        group: group.clone(),
                        files: "blkio.weight nor blkio.bfq.weight",
                        hint: "this kernel's blkio controller only throttles: I/O weights need the BFQ scheduler \
                               (CONFIG_IOSCHED_BFQ, selected in /sys/block/DEV/queue/scheduler) or cgroup v2's \
                               io.cost; remove IO_WEIGHT from the conf to run without one",
                    });
                }
            }
            (None, Some(group)) if group.is_dir() => {
                let (cfq, bfq) = (group.join("blkio.weight"), group.join("blkio.bfq.weight"));
                if cfq.is_file() {
                    write_control(&cfq, &DEFAULT_CFQ_WEIGHT.to_string())?;
                }
                if bfq.is_file() {
                    write_control(&bfq, &DEFAULT_WEIGHT.to_string())?;
                }
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// The vserver's group in the v1 `devices` hierarchy, if the host mounts one (made by
    /// [`Cgroups::limit_devices_v1`]).
    pub fn devices_group(&self) -> Option<&Path> {
        self.devices.as_deref()
    }

    /// Makes the vserver's group in the v1 `devices` hierarchy and gives it an allow-list: `a` written to
    /// `devices.deny` (every device denied), then each of `allow` (lines of the `devices.allow` syntax, such
    /// as `c 1:3 rwm`) to `devices.allow`, one rule a write as the kernel reads them. Done again, it sets the
    /// same list. Processes join the group with the others ([`Cgroups::add_process`]).
    pub fn limit_devices_v1(&self, allow: &[String]) -> Result<(), CgroupError> {
        let Some(group) = &self.devices else {
            return Err(CgroupError::Controller {
                controller: "devices",
                path: self.root.join("devices"),
                hint: "the v1 devices controller must be mounted there to limit a vserver's devices",
            });
        };
        mkdir_p(group)?;
        write_control(&group.join("devices.deny"), "a")?;
        let path = group.join("devices.allow");
        let fail = |value: &str, source| CgroupError::Write { path: path.clone(), value: value.to_string(), source };
        let mut file =
            OpenOptions::new().write(true).truncate(true).open(&path).map_err(|e| fail(&allow.join("\n"), e))?;
        for rule in allow {
            file.write_all(rule.as_bytes()).map_err(|e| fail(rule, e))?;
        }
        Ok(())
    }

    /// Moves a process into every group of the vserver, the authoritative one first. The groups must exist.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let fail = |path: &Path, source| CgroupError::AddProcess { pid, path: path.to_path_buf(), source };
        if pid <= 0 {
            // 0 would move the caller itself.
            return Err(fail(&self.main, io::Error::new(io::ErrorKind::InvalidInput, "not a process id")));
        }
        if !self.main.is_dir() {
            let msg = "the group does not exist (create it first)";
            return Err(fail(&self.main, io::Error::new(io::ErrorKind::NotFound, msg)));
        }
        for group in std::iter::once(&self.main).chain(self.v1_groups().filter(|g| g.is_dir())) {
            write_file(&group.join("cgroup.procs"), &pid.to_string()).map_err(|source| fail(group, source))?;
        }
        Ok(())
    }

    /// Every process of the vserver, sub-groups included, sorted; empty when the group does not exist.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = BTreeSet::new();
        collect_procs(&self.main, &mut pids)?;
        Ok(pids.into_iter().collect())
    }

    /// Whether the authoritative group exists.
    pub fn exists(&self) -> bool {
        self.main.is_dir()
    }

    /// SIGKILLs every process of the vserver, so that none can escape by forking; does not wait for them
    /// to be gone (see [`Cgroups::wait_empty`]).
    ///
    /// Writes `1` to `cgroup.kill` where the kernel has it. Otherwise it makes rounds: freeze the group
    /// (when it can), SIGKILL every listed process, thaw (v1 frozen processes only die once thawed), until a
    /// round finds no process it had not killed yet. A missing group is not an error.
    pub fn kill(&self) -> Result<(), CgroupError> {
        if !self.exists() {
            return Ok(());
        }
        let kill_file = self.main.join("cgroup.kill");
        if self.layout != Layout::V1 && kill_file.is_file() {
            write_control(&kill_file, "1")?;
            tracing::debug!(group = %self.main.display(), "killed through cgroup.kill");
            return Ok(());
        }
        let can_freeze = self.freeze_file().0.is_file();
        let mut killed = BTreeSet::new();
        for _ in 0..KILL_ROUNDS {
            if can_freeze {
                self.freeze()?;
            }
            let outcome = self.kill_listed(&mut killed);
            let thawed = if can_freeze { self.thaw() } else { Ok(()) };
            let fresh = outcome?;
            thawed?;
            if !fresh {
                tracing::debug!(group = %self.main.display(), killed = killed.len(), "killed by rounds");
                return Ok(());
            }
            thread::sleep(POLL);
        }
        Err(CgroupError::KillRounds { path: self.main.clone(), rounds: KILL_ROUNDS })
    }

    /// SIGKILLs every listed process; says whether one was not killed in an earlier round.
    fn kill_listed(&self, killed: &mut BTreeSet<i32>) -> Result<bool, CgroupError> {
        let mut fresh = false;
        for pid in self.procs()? {
            fresh |= killed.insert(pid);
            match signal::kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => return Err(CgroupError::Kill { pid, path: self.main.clone(), source: errno.into() }),
            }
        }
        Ok(fresh)
    }

    /// Sends `sig` to every process of the vserver but those in `except`; returns how many got it
    /// (processes gone meanwhile are not counted).
    pub fn signal(&self, sig: Signal, except: &[i32]) -> Result<usize, CgroupError> {
        let mut sent = 0;
        for pid in self.procs()?.into_iter().filter(|p| !except.contains(p)) {
            match signal::kill(Pid::from_raw(pid), sig) {
                Ok(()) => sent += 1,
                Err(Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(CgroupError::Signal { signal: sig, pid, path: self.main.clone(), source: errno.into() })
                }
            }
        }
        Ok(sent)
    }

    /// The freezer file of the authoritative group and the values that freeze and thaw it.
    fn freeze_file(&self) -> (PathBuf, &'static str, &'static str) {
        match self.layout {
            Layout::V1 => (self.main.join("freezer.state"), "FROZEN", "THAWED"),
            Layout::V2 | Layout::Hybrid => (self.main.join("cgroup.freeze"), "1", "0"),
        }
    }

    /// Stops every process of the vserver (sub-groups included) and waits up to a second for the kernel to
    /// report them stopped; a group still freezing after that is logged, not an error.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let (file, frozen, _) = self.freeze_file();
        if self.layout != Layout::V1 && self.exists() && !file.is_file() {
            return Err(CgroupError::Freeze { path: self.main.clone() });
        }
        write_control(&file, frozen)?;
        let deadline = Instant::now() + FREEZE_WAIT;
        while !self.is_frozen() {
            if Instant::now() >= deadline {
                tracing::warn!(group = %self.main.display(), "the group is still freezing after {FREEZE_WAIT:?}");
                break;
            }
            thread::sleep(POLL / 4);
        }
        Ok(())
    }

    /// Whether the kernel reports the group frozen; `true` when it cannot tell.
    fn is_frozen(&self) -> bool {
        match self.layout {
            Layout::V1 => fs::read_to_string(self.main.join("freezer.state")).map_or(true, |s| s.trim() == "FROZEN"),
            Layout::V2 | Layout::Hybrid => fs::read_to_string(self.main.join("cgroup.events"))
                .map_or(true, |s| s.lines().any(|l| l.split_whitespace().eq(["frozen", "1"]))),
        }
    }

    /// Lets the vserver's processes run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let (file, _, thawed) = self.freeze_file();
        if self.layout != Layout::V1 && self.exists() && !file.is_file() {
            return Err(CgroupError::Freeze { path: self.main.clone() });
        }
        write_control(&file, thawed)
    }

    /// Memory charged to the vserver, in bytes (v2 `memory.current`, v1 `memory.usage_in_bytes`); `None`
    /// when the host does not account it or the group does not exist.
    pub fn memory_bytes(&self) -> Option<u64> {
        let file = match self.layout {
            Layout::V2 => self.main.join("memory.current"),
            Layout::Hybrid | Layout::V1 => self.memory.as_ref()?.join("memory.usage_in_bytes"),
        };
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// What the vserver's groups hold and may hold: tasks against the process limit, memory against the
    /// memory limit (`None` fields where the host does not tell).
    pub fn usage(&self) -> CgroupUsage {
        let pids = match self.layout {
            Layout::V2 => Some(&self.main),
            Layout::Hybrid | Layout::V1 => self.pids.as_ref(),
        };
        let memory = match self.layout {
            Layout::V2 => Some(self.main.join("memory.max")),
            Layout::Hybrid | Layout::V1 => self.memory.as_ref().map(|g| g.join("memory.limit_in_bytes")),
        };
        CgroupUsage {
            tasks: pids.and_then(|g| read_limit(&g.join("pids.current"))),
            tasks_max: pids.and_then(|g| read_limit(&g.join("pids.max"))),
            memory_bytes: self.memory_bytes(),
            memory_max: memory.and_then(|f| read_limit(&f)),
        }
    }

    /// Polls until the vserver has no process left: `true` when empty, `false` if `timeout` passed first.
    pub fn wait_empty(&self, timeout: Duration) -> Result<bool, CgroupError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Backoff::default();
        loop {
            if self.procs()?.is_empty() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            thread::sleep(pause.next().min(deadline - now));
        }
    }

    /// Removes every group of the vserver, sub-groups first, retrying briefly while the kernel reports one
    /// busy. Groups already gone are fine; the shared parent stays. Tries every group and reports the first
    /// failure.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for group in std::iter::once(&self.main).chain(self.v1_groups()) {
            if let Err(err) = remove_tree(group) {
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => {
                tracing::debug!(group = %self.main.display(), "cgroups removed");
                Ok(())
            }
        }
    }

    /// The vserver's groups for status and diagnostics: the authoritative one first (whether it exists or
    /// not), then the v1 per-controller groups that exist.
    pub fn paths(&self) -> Vec<PathBuf> {
        std::iter::once(&self.main).chain(self.v1_groups().filter(|g| g.is_dir())).cloned().collect()
    }

    /// The v1 per-controller groups the host could hold (none on v2).
    fn v1_groups(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.pids, &self.cpu, &self.memory, &self.devices, &self.blkio].into_iter().flatten()
    }
}

/// Splits the configured parent into path components, refusing any that would leave the cgroup root.
/// Empty components are skipped, so `/vservers/` is `vservers` and an empty parent is the root itself.
fn parent_components(parent: &str) -> Result<Vec<String>, CgroupError> {
    let bad = |reason| CgroupError::Parent { parent: parent.to_string(), reason };
    let mut out = Vec::new();
    for component in parent.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(bad("'.' and '..' components are not allowed"));
        }
        if component.contains(['\0', '\n']) {
            return Err(bad("it contains a NUL or newline character"));
        }
        out.push(component.to_string());
    }
    Ok(out)
}

fn mkdir_p(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(dir).map_err(|source| CgroupError::Create { path: dir.to_path_buf(), source })
}

/// Writes a control file. The file must exist: the kernel makes control files, and creating one would
/// hide a missing controller behind a misleading "permission denied".
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new().write(true).truncate(true).open(path)?.write_all(value.as_bytes())
}

fn write_control(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_file(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// What a v2 host needs for `controller`, and how to run without the limit that asked for it.
fn v2_hint(controller: &str) -> &'static str {
    match controller {
        "pids" => {
            "the pids controller must be listed in the cgroup root's cgroup.controllers and be enabled in every \
             cgroup.subtree_control down to here; LIMIT_PIDS=unlimited runs the vserver without a process limit"
        }
        "memory" => {
            "LIMIT_MEMORY needs the memory controller listed in the cgroup root's cgroup.controllers and enabled \
             in every cgroup.subtree_control down to here; remove LIMIT_MEMORY from the conf to run without one"
        }
        "cpu" => {
            "CPU_WEIGHT needs the cpu controller listed in the cgroup root's cgroup.controllers and enabled in \
             every cgroup.subtree_control down to here; remove CPU_WEIGHT from the conf to run without one"
        }
        "io" => {
            "IO_WEIGHT needs the io controller listed in the cgroup root's cgroup.controllers and enabled in \
             every cgroup.subtree_control down to here; remove IO_WEIGHT from the conf to run without one"
        }
        _ => "the controller must be listed in the cgroup root's cgroup.controllers and enabled below it",
    }
}

/// v1 `cpu.shares` for a CPU weight: the default weight 100 is the default 1024 shares, others in
/// proportion (1 is 10, 10000 is 102400; the kernel takes 2 to 262144).
fn cpu_shares(weight: u32) -> u64 {
    u64::from(weight) * DEFAULT_CPU_SHARES / u64::from(DEFAULT_WEIGHT)
}

/// v1 CFQ `blkio.weight` for an I/O weight: 100 is CFQ's default 500, others in proportion, within CFQ's
/// 10..=1000.
fn cfq_weight(weight: u32) -> u32 {
    (weight.saturating_mul(DEFAULT_CFQ_WEIGHT) / DEFAULT_WEIGHT).clamp(10, 1000)
}

/// Sets a v1 memory group's limit (`-1` for none) on RAM and, where the kernel accounts swap, on RAM and
/// swap together. The kernel keeps `memsw` at or above the RAM limit at every step, hence the order:
/// lift `memsw`, set the RAM limit, then bring `memsw` down to it.
fn set_v1_memory(group: &Path, value: &str) -> Result<(), CgroupError> {
    let memsw = group.join("memory.memsw.limit_in_bytes");
    let has_memsw = memsw.is_file();
    if has_memsw {
        write_control(&memsw, "-1")?;
    }
    write_control(&group.join("memory.limit_in_bytes"), value)?;
    if has_memsw {
        write_control(&memsw, value)?;
    }
    Ok(())
}

/// A number read from a control file; `max` (and v1's huge "unlimited") is `None`, as is a missing or
/// unreadable file.
fn read_limit(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&n| n < V1_UNLIMITED)
}

/// The words of a control file such as `cgroup.controllers` or `cgroup.subtree_control`, a leading `+`
/// dropped; a missing file has none.
fn read_word_set(path: &Path) -> Result<BTreeSet<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.split_whitespace().map(|w| w.trim_start_matches('+').to_string()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(CgroupError::Read { path: path.to_path_buf(), source }),
    }
}

/// Reads a `cgroup.procs` file: one positive process id per line.
fn parse_procs(text: &str) -> io::Result<Vec<i32>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{l:?} is not a process id"))),
        })
        .collect()
}

/// Adds the processes of `group` and its sub-groups to `out`. Groups and files that vanish meanwhile
/// (or, in tests, were never made) hold none.
fn collect_procs(group: &Path, out: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
    let file = group.join("cgroup.procs");
    match fs::read_to_string(&file) {
        Ok(text) => out.extend(parse_procs(&text).map_err(|source| CgroupError::Read { path: file, source })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(CgroupError::Read { path: file, source }),
    }
    let entries = match fs::read_dir(group) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: group.to_path_buf(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read { path: group.to_path_buf(), source })?;
        // `DirEntry::file_type` does not follow symlinks, so the walk stays inside the group.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// Removes a group and its sub-groups, deepest first. Only directories are removed, never files.
/// Pauses that start at a millisecond and double up to [`POLL`]: a group emptied by `cgroup.kill` is
/// usually empty a millisecond later, and a slow one is not polled in a tight loop.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(1))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(POLL);
        now
    }
}

fn remove_tree(group: &Path) -> Result<(), CgroupError> {
    let fail = |source| CgroupError::Remove { path: group.to_path_buf(), source };
    let entries = match fs::read_dir(group) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(fail(source)),
    };
    for entry in entries {
        let entry = entry.map_err(fail)?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    let mut tries = 0;
    let mut pause = Backoff::default();
    loop {
        tries += 1;
        match fs::remove_dir(group) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Processes just killed leave the group a moment after they die.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < REMOVE_TRIES => thread::sleep(pause.next()),
            Err(source) => return Err(fail(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    use tempfile::TempDir;

    use super::*;

    /// Writes a file, making its directories, as the kernel would have made a control file.
    fn touch(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn place(dir: &TempDir) -> CgroupPlace {
        CgroupPlace { root: dir.path().to_path_buf(), parent: "vservers".into() }
    }

    fn web() -> VserverName {
        VserverName::parse("web").unwrap()
    }

    /// A cgroup v2 root offering `root_offers`, with the parent and vserver groups pre-made the way the
    /// kernel would show them once the controllers are on.
    fn v2_host(root_offers: &str) -> TempDir {
        let dir = TempDir::new().unwrap();
        let r = dir.path();
        touch(&r.join("cgroup.controllers"), root_offers);
        touch(&r.join("cgroup.subtree_control"), "");
        touch(&r.join("vservers/cgroup.controllers"), root_offers);
        touch(&r.join("vservers/cgroup.subtree_control"), "");
        touch(&r.join("vservers/web/pids.max"), "max");
        touch(&r.join("vservers/web/cpu.weight"), "1");
        dir
    }

    /// A hybrid host: controller-less cgroup2 at `unified/`, v1 hierarchies for each of `controllers`.
    fn hybrid_host(controllers: &[&str]) -> TempDir {
        let dir = TempDir::new().unwrap();
        touch(&dir.path().join("unified/cgroup.procs"), "1\n");
        for c in controllers {
            fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        dir
    }

    /// A v1 host with a freezer hierarchy and each of `controllers`.
    fn v1_host(controllers: &[&str]) -> TempDir {
        let dir = TempDir::new().unwrap();
        fs::create_dir_all(dir.path().join("freezer")).unwrap();
        for c in controllers {
            fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        dir
    }

    #[test]
    fn list_reads_the_authoritative_hierarchy_of_each_layout() {
        let v2 = v2_host("pids cpu");
        fs::create_dir_all(v2.path().join("vservers/db")).unwrap();
        fs::create_dir_all(v2.path().join("vservers/not a name")).unwrap();
        touch(&v2.path().join("vservers/cgroup.procs"), "");
        let names: Vec<String> = Cgroups::list(&place(&v2)).unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["db", "web"]);
        let hybrid = hybrid_host(&["pids"]);
        fs::create_dir_all(hybrid.path().join("unified/vservers/web")).unwrap();
        fs::create_dir_all(hybrid.path().join("pids/vservers/other")).unwrap();
        assert_eq!(Cgroups::list(&place(&hybrid)).unwrap(), [web()]);
        let v1 = v1_host(&[]);
        assert!(Cgroups::list(&place(&v1)).unwrap().is_empty(), "no parent group yet: none");
        fs::create_dir_all(v1.path().join("freezer/vservers/web")).unwrap();
        assert_eq!(Cgroups::list(&place(&v1)).unwrap(), [web()]);
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("100").spawn().expect("spawn sleep")
    }

    #[test]
    fn layout_is_told_by_the_files_under_the_root() {
        let v2 = v2_host("cpu memory pids");
        assert_eq!(Layout::detect(v2.path()).unwrap(), Layout::V2);
        assert_eq!(Layout::detect(hybrid_host(&["pids"]).path()).unwrap(), Layout::Hybrid);
        assert_eq!(Layout::detect(v1_host(&[]).path()).unwrap(), Layout::V1);
    }

    #[test]
    fn a_root_with_no_cgroups_says_what_was_looked_for() {
        let dir = TempDir::new().unwrap();
        let err = Cgroups::new(&place(&dir), &web()).unwrap_err();
        assert!(matches!(err, CgroupError::Detect { .. }), "{err:?}");
        let msg = err.to_string();
        for looked_for in ["cgroup.controllers", "unified/cgroup.procs", "freezer"] {
            assert!(msg.contains(looked_for), "{msg}");
        }
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn a_parent_leaving_the_root_is_refused() {
        let dir = v1_host(&[]);
        for parent in ["..", "a/../b", "./x", "a\nb"] {
            let p = CgroupPlace { root: dir.path().into(), parent: parent.into() };
            assert!(matches!(Cgroups::new(&p, &web()), Err(CgroupError::Parent { .. })), "{parent:?}");
        }
        let p = CgroupPlace { root: dir.path().into(), parent: "/hosting/vservers/".into() };
        let cg = Cgroups::new(&p, &web()).unwrap();
        assert_eq!(cg.path(), dir.path().join("freezer/hosting/vservers/web"));
    }

    #[test]
    fn new_creates_nothing() {
        let dir = hybrid_host(&["pids", "cpu", "memory"]);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert!(!cg.exists());
        assert!(!dir.path().join("unified/vservers").exists());
        assert!(!dir.path().join("memory/vservers").exists());
        assert_eq!(cg.paths(), vec![dir.path().join("unified/vservers/web")]);
        assert_eq!(cg.procs().unwrap(), Vec::<i32>::new());
        assert!(cg.wait_empty(Duration::ZERO).unwrap());
        assert_eq!(cg.memory_bytes(), None);
    }

    #[test]
    fn v2_enables_offered_controllers_top_down_and_sets_limits() {
        let dir = v2_host("cpu io memory pids");
        let r = dir.path();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.layout(), Layout::V2);
        assert_eq!(cg.paths(), vec![r.join("vservers/web")]);
        cg.create(&CgroupLimits { pids_max: Some(20), cpu_group: true, ..Default::default() }).unwrap();
        assert!(cg.exists());
        assert_eq!(read(&r.join("cgroup.subtree_control")), "+pids +cpu +memory +io");
        assert_eq!(read(&r.join("vservers/cgroup.subtree_control")), "+pids +cpu +memory +io");
        assert_eq!(read(&r.join("vservers/web/pids.max")), "20");
        assert_eq!(read(&r.join("vservers/web/cpu.weight")), "100");
        // Processes never go into the parent.
        touch(&r.join("vservers/cgroup.procs"), "");
        touch(&r.join("vservers/web/cgroup.procs"), "");
        cg.add_process(4242).unwrap();
        assert_eq!(read(&r.join("vservers/web/cgroup.procs")), "4242");
        assert_eq!(read(&r.join("vservers/cgroup.procs")), "");
    }

    #[test]
    fn v2_create_again_only_brings_limits_in_line() {
        let dir = v2_host("cpu io memory pids");
        let r = dir.path();
        let g = r.join("vservers/web");
        v2_limit_files(&g);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&all_limits()).unwrap();
        assert_eq!(read(&g.join("pids.max")), "20");
        assert_eq!(read(&g.join("memory.max")), "67108864");
        assert_eq!(read(&g.join("cpu.weight")), "500");
        assert_eq!(read(&g.join("io.weight")), "default 300");
        // What the kernel shows once they are on: nothing is written again.
        touch(&r.join("cgroup.subtree_control"), "cpu io memory pids\n");
        touch(&r.join("vservers/cgroup.subtree_control"), "cpu io memory pids\n");
        // The conf no longer asks for limits: each goes back to the kernel's default.
        cg.create(&CgroupLimits::default()).unwrap();
        assert_eq!(read(&r.join("cgroup.subtree_control")), "cpu io memory pids\n");
        assert_eq!(read(&r.join("vservers/cgroup.subtree_control")), "cpu io memory pids\n");
        assert_eq!(read(&g.join("pids.max")), "max");
        assert_eq!(read(&g.join("memory.max")), "max");
        assert_eq!(read(&g.join("memory.swap.max")), "max");
        assert_eq!(read(&g.join("cpu.weight")), "100");
        assert_eq!(read(&g.join("io.weight")), "default 100");
    }

    /// Every limit at once: 20 processes, 64 MiB, CPU weight 500, I/O weight 300.
    fn all_limits() -> CgroupLimits {
        CgroupLimits {
            pids_max: Some(20),
            cpu_group: false,
            memory_max: Some(64 << 20),
            cpu_weight: Some(500),
            io_weight: Some(300),
        }
    }

    /// The control files the kernel shows in a v2 group with pids, memory, cpu and io on (and swap
    /// accounted, and the io.cost controller built in).
    fn v2_limit_files(group: &Path) {
        for (file, value) in [
            ("pids.max", "max"),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.weight", "100"),
            ("io.weight", "default 100"),
        ] {
            touch(&group.join(file), value);
        }
    }

    #[test]
    fn v2_memory_limit_is_memory_max_with_no_swap() {
        let dir = v2_host("memory pids");
        let g = dir.path().join("vservers/web");
        v2_limit_files(&g);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let limits = CgroupLimits { memory_max: Some(512 << 20), ..Default::default() };
        cg.create(&limits).unwrap();
        assert_eq!(read(&g.join("memory.max")), "536870912");
        assert_eq!(read(&g.join("memory.swap.max")), "0", "RAM and swap together stay under the limit");
        // A kernel without swap accounting has no memory.swap.max: memory.max alone is the whole limit.
        fs::remove_file(g.join("memory.swap.max")).unwrap();
        cg.create(&limits).unwrap();
        assert!(!g.join("memory.swap.max").exists(), "control files are never created");
        assert_eq!(read(&g.join("memory.max")), "536870912");
    }

    #[test]
    fn v2_cpu_weight_is_written_as_is_and_sched_alone_gets_the_default() {
        let dir = v2_host("cpu pids");
        let g = dir.path().join("vservers/web");
        v2_limit_files(&g);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { cpu_weight: Some(10000), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("cpu.weight")), "10000");
        cg.create(&CgroupLimits { cpu_group: true, cpu_weight: Some(1), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("cpu.weight")), "1", "CPU_WEIGHT wins over the default of sched");
        cg.create(&CgroupLimits { cpu_group: true, ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("cpu.weight")), "100");
    }

    #[test]
    fn v2_io_weight_goes_to_io_weight_or_else_to_bfq() {
        let dir = v2_host("io pids");
        let g = dir.path().join("vservers/web");
        v2_limit_files(&g);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { io_weight: Some(300), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("io.weight")), "default 300");
        // A kernel without io.cost but with BFQ: its own file, whose range ends at 1000.
        fs::remove_file(g.join("io.weight")).unwrap();
        touch(&g.join("io.bfq.weight"), "default 100");
        cg.create(&CgroupLimits { io_weight: Some(300), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("io.bfq.weight")), "300");
        cg.create(&CgroupLimits { io_weight: Some(5000), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("io.bfq.weight")), "1000");
        cg.create(&CgroupLimits::default()).unwrap();
        assert_eq!(read(&g.join("io.bfq.weight")), "100");
    }

    #[test]
    fn v2_an_io_weight_without_a_weight_file_is_refused_naming_the_files() {
        let dir = v2_host("io pids");
        let g = dir.path().join("vservers/web");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let err = cg.create(&CgroupLimits { io_weight: Some(300), ..Default::default() }).unwrap_err();
        match &err {
            CgroupError::Unsupported { limit: "IO_WEIGHT", group, .. } => assert_eq!(group, &g),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        for part in ["IO_WEIGHT", "io.weight", "io.bfq.weight", &g.display().to_string(), "remove IO_WEIGHT"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
    }

    #[test]
    fn v2_each_limit_without_its_controller_is_refused() {
        for (limits, controller, key) in [
            (CgroupLimits { memory_max: Some(64 << 20), ..Default::default() }, "memory", "LIMIT_MEMORY"),
            (CgroupLimits { cpu_weight: Some(200), ..Default::default() }, "cpu", "CPU_WEIGHT"),
            (CgroupLimits { io_weight: Some(200), ..Default::default() }, "io", "IO_WEIGHT"),
            (CgroupLimits { pids_max: Some(20), ..Default::default() }, "pids", "LIMIT_PIDS=unlimited"),
        ] {
            // The host offers every controller but the one the limit needs.
            let offered: Vec<&str> = V2_CONTROLLERS.into_iter().filter(|c| *c != controller).collect();
            let dir = v2_host(&offered.join(" "));
            v2_limit_files(&dir.path().join("vservers/web"));
            let cg = Cgroups::new(&place(&dir), &web()).unwrap();
            let err = cg.create(&limits).unwrap_err();
            match &err {
                CgroupError::Controller { controller: c, path, .. } => {
                    assert_eq!(*c, controller);
                    assert_eq!(path, &dir.path().join("vservers/cgroup.subtree_control"));
                }
                other => panic!("{controller}: {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&format!("the {controller} controller")) && msg.contains(key), "{msg}");
        }
        // S_FLAGS sched alone asks for no limit: without the cpu controller it is only logged.
        let dir = v2_host("pids");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { cpu_group: true, ..Default::default() }).unwrap();
    }

    #[test]
    fn hybrid_memory_limit_bounds_ram_and_swap_together() {
        let dir = hybrid_host(&["memory"]);
        let g = dir.path().join("memory/vservers/web");
        touch(&g.join("memory.limit_in_bytes"), "9223372036854771712");
        touch(&g.join("memory.memsw.limit_in_bytes"), "9223372036854771712");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { memory_max: Some(64 << 20), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(&g.join("memory.memsw.limit_in_bytes")), "67108864");
        cg.create(&CgroupLimits::default()).unwrap();
        assert_eq!(read(&g.join("memory.limit_in_bytes")), "-1");
        assert_eq!(read(&g.join("memory.memsw.limit_in_bytes")), "-1");
        // Without swap accounting only the RAM limit exists.
        fs::remove_file(g.join("memory.memsw.limit_in_bytes")).unwrap();
        cg.create(&CgroupLimits { memory_max: Some(32 << 20), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("memory.limit_in_bytes")), "33554432");
        assert!(!g.join("memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn hybrid_cpu_weight_becomes_scaled_cpu_shares() {
        let dir = hybrid_host(&["pids", "cpu", "memory"]);
        let g = dir.path().join("cpu/vservers/web");
        touch(&g.join("cpu.shares"), "1024");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        for (weight, shares) in [(500, "5120"), (100, "1024"), (1, "10"), (10000, "102400")] {
            cg.create(&CgroupLimits { cpu_weight: Some(weight), ..Default::default() }).unwrap();
            assert_eq!(read(&g.join("cpu.shares")), shares, "weight {weight}");
        }
        cg.create(&CgroupLimits::default()).unwrap();
        assert_eq!(read(&g.join("cpu.shares")), "1024", "a weight no longer asked for goes back to the default");
        assert!(cg.paths().contains(&g));
    }

    #[test]
    fn v1_io_weight_goes_to_cfq_or_bfq_whichever_exists() {
        let dir = v1_host(&["blkio"]);
        let g = dir.path().join("blkio/vservers/web");
        touch(&g.join("blkio.weight"), "500");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        // CFQ: 100 is its default 500, within 10..=1000.
        for (weight, cfq) in [(100, "500"), (300, "1000"), (1, "10"), (50, "250")] {
            cg.create(&CgroupLimits { io_weight: Some(weight), ..Default::default() }).unwrap();
            assert_eq!(read(&g.join("blkio.weight")), cfq, "weight {weight}");
        }
        cg.create(&CgroupLimits::default()).unwrap();
        assert_eq!(read(&g.join("blkio.weight")), "500");
        // BFQ: the same scale as io.weight, up to 1000.
        fs::remove_file(g.join("blkio.weight")).unwrap();
        touch(&g.join("blkio.bfq.weight"), "100");
        cg.create(&CgroupLimits { io_weight: Some(300), ..Default::default() }).unwrap();
        assert_eq!(read(&g.join("blkio.bfq.weight")), "300");
        assert_eq!(cg.paths(), vec![dir.path().join("freezer/vservers/web"), g.clone()]);
        cg.add_process(4242).unwrap_err();
        touch(&dir.path().join("freezer/vservers/web/cgroup.procs"), "");
        touch(&g.join("cgroup.procs"), "");
        cg.add_process(4242).unwrap();
        assert_eq!(read(&g.join("cgroup.procs")), "4242", "the process joins the blkio group");
    }

    #[test]
    fn hybrid_an_io_weight_on_a_throttling_only_blkio_is_refused_and_removable() {
        // This machine's shape: a blkio hierarchy with only blkio.throttle.* files (no CFQ, no BFQ).
        let dir = hybrid_host(&["pids", "memory", "blkio"]);
        let r = dir.path();
        touch(&r.join("pids/vservers/web/pids.max"), "max");
        let g = r.join("blkio/vservers/web");
        touch(&g.join("blkio.throttle.read_bps_device"), "");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let limits = CgroupLimits { pids_max: Some(4096), io_weight: Some(200), ..Default::default() };
        let err = cg.create(&limits).unwrap_err();
        match &err {
            CgroupError::Unsupported { limit: "IO_WEIGHT", group, .. } => assert_eq!(group, &g),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        for part in ["cannot enforce IO_WEIGHT", "blkio.weight", "blkio.bfq.weight", "BFQ", "remove IO_WEIGHT"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // What the start does after a refusal: every group goes, the blkio one included.
        fs::remove_file(g.join("blkio.throttle.read_bps_device")).unwrap();
        fs::remove_file(r.join("pids/vservers/web/pids.max")).unwrap();
        cg.remove().unwrap();
        for h in ["unified", "pids", "memory", "blkio"] {
            assert!(!r.join(h).join("vservers/web").exists(), "{h} group left behind");
        }
    }

    #[test]
    fn v1_each_limit_without_its_hierarchy_is_refused() {
        for (limits, controller, key) in [
            (CgroupLimits { memory_max: Some(64 << 20), ..Default::default() }, "memory", "LIMIT_MEMORY"),
            (CgroupLimits { cpu_weight: Some(200), ..Default::default() }, "cpu", "CPU_WEIGHT"),
            (CgroupLimits { io_weight: Some(200), ..Default::default() }, "blkio", "IO_WEIGHT"),
        ] {
            let others: Vec<&str> =
                ["pids", "cpu", "memory", "blkio"].into_iter().filter(|c| *c != controller).collect();
            let dir = hybrid_host(&others);
            let cg = Cgroups::new(&place(&dir), &web()).unwrap();
            let err = cg.create(&limits).unwrap_err();
            match &err {
                CgroupError::Controller { controller: c, path, .. } => {
                    assert_eq!(*c, controller);
                    assert_eq!(path, &dir.path().join(controller));
                }
                other => panic!("{controller}: {other:?}"),
            }
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn usage_reads_tasks_and_memory_against_their_limits() {
        let dir = v2_host("memory pids");
        let g = dir.path().join("vservers/web");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.usage(), CgroupUsage::default(), "no group: nothing known");
        for (file, value) in
            [("pids.current", "7\n"), ("pids.max", "4096\n"), ("memory.current", "1048576\n"), ("memory.max", "max\n")]
        {
            touch(&g.join(file), value);
        }
        let usage = cg.usage();
        assert_eq!(
            usage,
            CgroupUsage { tasks: Some(7), tasks_max: Some(4096), memory_bytes: Some(1048576), memory_max: None }
        );

        let dir = hybrid_host(&["pids", "memory"]);
        let r = dir.path();
        touch(&r.join("pids/vservers/web/pids.current"), "3\n");
        touch(&r.join("pids/vservers/web/pids.max"), "max\n");
        touch(&r.join("memory/vservers/web/memory.usage_in_bytes"), "8192\n");
        touch(&r.join("memory/vservers/web/memory.limit_in_bytes"), "33554432\n");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(
            cg.usage(),
            CgroupUsage { tasks: Some(3), tasks_max: None, memory_bytes: Some(8192), memory_max: Some(33554432) }
        );
        // v1 says "unlimited" with a huge number.
        touch(&r.join("memory/vservers/web/memory.limit_in_bytes"), "9223372036854771712\n");
        assert_eq!(cg.usage().memory_max, None);
    }

    #[test]
    fn v2_only_enables_what_is_offered_and_a_pids_limit_needs_pids() {
        let dir = v2_host("cpu io memory");
        let r = dir.path();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { pids_max: None, cpu_group: true, ..Default::default() }).unwrap();
        assert_eq!(read(&r.join("cgroup.subtree_control")), "+cpu +memory +io");
        let err = cg.create(&CgroupLimits { pids_max: Some(20), cpu_group: false, ..Default::default() }).unwrap_err();
        assert!(matches!(err, CgroupError::Controller { controller: "pids", .. }), "{err:?}");
        assert!(err.to_string().contains("vservers/cgroup.subtree_control"), "{err}");
    }

    #[test]
    fn v2_a_root_that_refuses_is_a_warning_but_a_parent_that_refuses_is_an_error() {
        let dir = v2_host("cpu memory pids");
        let r = dir.path();
        // No subtree_control at the root: the write fails, as it would on a root holding processes.
        fs::remove_file(r.join("cgroup.subtree_control")).unwrap();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits { pids_max: Some(5), cpu_group: false, ..Default::default() }).unwrap();
        assert_eq!(read(&r.join("vservers/web/pids.max")), "5");
        fs::remove_file(r.join("vservers/cgroup.subtree_control")).unwrap();
        let err = cg.create(&CgroupLimits::default()).unwrap_err();
        match &err {
            CgroupError::Write { path, value, .. } => {
                assert_eq!(path, &r.join("vservers/cgroup.subtree_control"));
                assert_eq!(value, "+pids +cpu +memory");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v2_with_an_empty_parent_puts_the_vserver_under_the_root() {
        let dir = v2_host("pids");
        let p = CgroupPlace { root: dir.path().into(), parent: String::new() };
        let cg = Cgroups::new(&p, &web()).unwrap();
        assert_eq!(cg.path(), dir.path().join("web"));
        touch(&dir.path().join("web/pids.max"), "max");
        cg.create(&CgroupLimits { pids_max: Some(7), cpu_group: false, ..Default::default() }).unwrap();
        assert_eq!(read(&dir.path().join("cgroup.subtree_control")), "+pids");
        assert_eq!(read(&dir.path().join("web/pids.max")), "7");
    }

    #[test]
    fn v2_enables_controllers_at_every_level_of_a_deep_parent() {
        let dir = TempDir::new().unwrap();
        let r = dir.path();
        for level in ["", "hosting", "hosting/vservers"] {
            touch(&r.join(level).join("cgroup.controllers"), "memory pids");
            touch(&r.join(level).join("cgroup.subtree_control"), "");
        }
        // A v2 group that happens to be called `memory` is not a v1 hierarchy.
        fs::create_dir_all(r.join("memory/vservers/web")).unwrap();
        let p = CgroupPlace { root: r.into(), parent: "hosting/vservers".into() };
        let cg = Cgroups::new(&p, &web()).unwrap();
        cg.create(&CgroupLimits::default()).unwrap();
        for level in ["", "hosting", "hosting/vservers"] {
            assert_eq!(read(&r.join(level).join("cgroup.subtree_control")), "+pids +memory", "{level:?}");
        }
        assert_eq!(cg.paths(), vec![r.join("hosting/vservers/web")]);
        cg.remove().unwrap();
        assert!(r.join("memory/vservers/web").is_dir());
    }

    #[test]
    fn hybrid_uses_unified_for_membership_and_v1_for_limits() {
        let dir = hybrid_host(&["pids", "cpu", "memory", "freezer"]);
        let r = dir.path();
        touch(&r.join("pids/vservers/web/pids.max"), "max");
        touch(&r.join("cpu/vservers/web/cpu.shares"), "2");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.layout(), Layout::Hybrid);
        cg.create(&CgroupLimits { pids_max: Some(20), cpu_group: true, ..Default::default() }).unwrap();
        assert_eq!(read(&r.join("pids/vservers/web/pids.max")), "20");
        assert_eq!(read(&r.join("cpu/vservers/web/cpu.shares")), "1024");
        assert!(r.join("memory/vservers/web").is_dir());
        assert!(!r.join("freezer/vservers").exists(), "the unified group does the freezing");
        assert_eq!(cg.paths(), ["unified", "pids", "cpu", "memory"].map(|h| r.join(h).join("vservers/web")).to_vec());
        // Nothing is enabled in the controller-less unified tree.
        assert!(!r.join("unified/cgroup.subtree_control").exists());
    }

    #[test]
    fn hybrid_without_limits_makes_only_membership_and_memory_groups() {
        let dir = hybrid_host(&["pids", "cpu", "memory"]);
        let r = dir.path();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.create(&CgroupLimits::default()).unwrap();
        assert!(r.join("unified/vservers/web").is_dir());
        assert!(r.join("memory/vservers/web").is_dir());
        assert!(!r.join("pids/vservers").exists());
        assert!(!r.join("cpu/vservers").exists());
        touch(&r.join("memory/vservers/web/memory.usage_in_bytes"), "8192\n");
        assert_eq!(cg.memory_bytes(), Some(8192));
    }

    /// The control files the kernel shows in a new v1 devices group.
    fn devices_files(group: &Path) {
        touch(&group.join("devices.deny"), "");
        touch(&group.join("devices.allow"), "");
    }

    #[test]
    fn the_v1_devices_group_denies_all_then_allows_the_list_and_lives_with_the_others() {
        let allow = ["c 1:3 rwm".to_string(), "b *:* m".to_string()];
        for dir in [hybrid_host(&["pids", "devices"]), v1_host(&["devices"])] {
            let r = dir.path();
            let cg = Cgroups::new(&place(&dir), &web()).unwrap();
            let group = r.join("devices/vservers/web");
            assert_eq!(cg.devices_group(), Some(group.as_path()));
            assert!(!group.exists(), "new creates nothing");
            cg.create(&CgroupLimits::default()).unwrap();
            assert!(!group.exists(), "the devices group is made by limit_devices_v1 only");
            devices_files(&group);
            cg.limit_devices_v1(&allow).unwrap();
            assert_eq!(read(&group.join("devices.deny")), "a");
            // One write a rule: a plain file shows them end to end, in order.
            assert_eq!(read(&group.join("devices.allow")), "c 1:3 rwmb *:* m");
            assert!(cg.paths().contains(&group));
            touch(&cg.path().join("cgroup.procs"), "");
            touch(&group.join("cgroup.procs"), "");
            cg.add_process(4242).unwrap();
            assert_eq!(read(&group.join("cgroup.procs")), "4242", "processes join the devices group");
            // Control files go with their group in a real cgroup file system; these are plain files.
            for file in [cg.path().join("cgroup.procs"), group.join("cgroup.procs")] {
                fs::remove_file(file).unwrap();
            }
            for file in ["devices.deny", "devices.allow"] {
                fs::remove_file(group.join(file)).unwrap();
            }
            cg.remove().unwrap();
            assert!(!group.exists(), "removed with the others");
            assert!(r.join("devices/vservers").is_dir(), "the shared parent stays");
        }
    }

    #[test]
    fn a_devices_list_without_a_devices_hierarchy_names_where_it_was_looked_for() {
        let dir = v1_host(&["pids"]);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.devices_group(), None);
        let err = cg.limit_devices_v1(&["c 1:3 rwm".to_string()]).unwrap_err();
        assert!(matches!(err, CgroupError::Controller { controller: "devices", .. }), "{err:?}");
        assert!(err.to_string().contains(&dir.path().join("devices").display().to_string()), "{err}");
        // On v2 a directory called `devices` is a group, not a hierarchy.
        let dir = v2_host("pids");
        fs::create_dir_all(dir.path().join("devices")).unwrap();
        assert_eq!(Cgroups::new(&place(&dir), &web()).unwrap().devices_group(), None);
    }

    #[test]
    fn v1_uses_the_freezer_group_and_tolerates_a_missing_cpu_hierarchy() {
        let dir = v1_host(&["pids", "memory"]);
        let r = dir.path();
        touch(&r.join("pids/vservers/web/pids.max"), "max");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.layout(), Layout::V1);
        assert_eq!(cg.path(), r.join("freezer/vservers/web"));
        cg.create(&CgroupLimits { pids_max: Some(3), cpu_group: true, ..Default::default() }).unwrap();
        assert_eq!(read(&r.join("pids/vservers/web/pids.max")), "3");
        assert!(!r.join("cpu").exists());
        assert_eq!(cg.paths().len(), 3);
    }

    #[test]
    fn v1_a_pids_limit_without_a_pids_hierarchy_is_an_error() {
        let dir = v1_host(&["memory"]);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let err = cg.create(&CgroupLimits { pids_max: Some(3), cpu_group: false, ..Default::default() }).unwrap_err();
        assert!(matches!(err, CgroupError::Controller { controller: "pids", .. }), "{err:?}");
        assert!(err.to_string().contains(&dir.path().join("pids").display().to_string()), "{err}");
    }

    #[test]
    fn a_failed_limit_write_is_reported_with_its_path() {
        // The kernel makes pids.max; if it is not there the limit cannot be set, and that is said.
        let dir = hybrid_host(&["pids"]);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let err = cg.create(&CgroupLimits { pids_max: Some(3), cpu_group: false, ..Default::default() }).unwrap_err();
        match &err {
            CgroupError::Write { path, value, source } => {
                assert_eq!(path, &dir.path().join("pids/vservers/web/pids.max"));
                assert_eq!(value, "3");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("pids/vservers/web/pids.max").exists(), "control files are never created");
    }

    #[test]
    fn procs_are_read_from_every_sub_group() {
        let dir = v2_host("pids");
        let g = dir.path().join("vservers/web");
        touch(&g.join("cgroup.procs"), "12\n7\n");
        touch(&g.join("init.scope/cgroup.procs"), "30\n");
        touch(&g.join("init.scope/deeper/cgroup.procs"), "7\n");
        fs::create_dir_all(g.join("empty")).unwrap();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.procs().unwrap(), vec![7, 12, 30]);
        assert!(!cg.wait_empty(Duration::from_millis(30)).unwrap());
    }

    #[test]
    fn unreadable_procs_are_an_error_never_a_pid_to_signal() {
        let dir = v2_host("pids");
        let file = dir.path().join("vservers/web/cgroup.procs");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        for bad in ["abc\n", "0\n", "-1\n", "12 13\n"] {
            touch(&file, bad);
            match cg.procs() {
                Err(CgroupError::Read { path, source }) => {
                    assert_eq!(path, file);
                    assert_eq!(source.kind(), io::ErrorKind::InvalidData);
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn add_process_goes_into_every_hierarchy() {
        let dir = hybrid_host(&["pids", "cpu", "memory"]);
        let r = dir.path();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let err = cg.add_process(4242).unwrap_err();
        assert!(matches!(err, CgroupError::AddProcess { pid: 4242, .. }), "{err:?}");
        for h in ["unified", "pids", "memory"] {
            touch(&r.join(h).join("vservers/web/cgroup.procs"), "");
        }
        cg.add_process(4242).unwrap();
        for h in ["unified", "pids", "memory"] {
            assert_eq!(read(&r.join(h).join("vservers/web/cgroup.procs")), "4242", "{h}");
        }
        assert!(!r.join("cpu/vservers").exists());
        for pid in [0, -1] {
            assert!(matches!(cg.add_process(pid), Err(CgroupError::AddProcess { .. })));
        }
        assert_eq!(read(&r.join("unified/vservers/web/cgroup.procs")), "4242");
    }

    #[test]
    fn remove_takes_sub_groups_first_and_missing_groups_are_fine() {
        let dir = hybrid_host(&["pids", "memory"]);
        let r = dir.path();
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.remove().unwrap();
        fs::create_dir_all(r.join("unified/vservers/web/a/b")).unwrap();
        fs::create_dir_all(r.join("unified/vservers/web/c")).unwrap();
        fs::create_dir_all(r.join("memory/vservers/web")).unwrap();
        cg.remove().unwrap();
        assert!(!cg.exists());
        assert!(!r.join("memory/vservers/web").exists());
        assert!(r.join("unified/vservers").is_dir(), "the shared parent stays");
        cg.remove().unwrap();
    }

    #[test]
    fn remove_reports_a_group_it_cannot_remove() {
        let dir = v2_host("pids");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        // A plain directory holding a file: rmdir fails as it would on a busy group.
        let err = cg.remove().unwrap_err();
        match err {
            CgroupError::Remove { path, .. } => assert_eq!(path, dir.path().join("vservers/web")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kill_uses_cgroup_kill_when_the_kernel_has_it() {
        let dir = hybrid_host(&[]);
        let g = dir.path().join("unified/vservers/web");
        touch(&g.join("cgroup.kill"), "0");
        touch(&g.join("cgroup.freeze"), "0");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.kill().unwrap();
        assert_eq!(read(&g.join("cgroup.kill")), "1");
        assert_eq!(read(&g.join("cgroup.freeze")), "0");
    }

    #[test]
    fn kill_of_a_missing_group_is_fine() {
        let dir = v1_host(&[]);
        Cgroups::new(&place(&dir), &web()).unwrap().kill().unwrap();
    }

    #[test]
    fn v1_kill_freezes_kills_every_process_and_thaws() {
        let dir = v1_host(&[]);
        let g = dir.path().join("freezer/vservers/web");
        let mut a = sleeper();
        let mut b = sleeper();
        touch(&g.join("cgroup.procs"), &format!("{}\n", a.id()));
        touch(&g.join("sub/cgroup.procs"), &format!("{}\n", b.id()));
        touch(&g.join("freezer.state"), "THAWED\n");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.kill().unwrap();
        assert_eq!(a.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(b.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(read(&g.join("freezer.state")), "THAWED");
    }

    #[test]
    fn v2_kill_without_cgroup_kill_freezes_and_thaws() {
        let dir = v2_host("pids");
        let g = dir.path().join("vservers/web");
        let mut a = sleeper();
        touch(&g.join("cgroup.procs"), &format!("{}\n", a.id()));
        touch(&g.join("cgroup.freeze"), "0");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.kill().unwrap();
        assert_eq!(a.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(read(&g.join("cgroup.freeze")), "0");
    }

    #[test]
    fn signal_spares_the_listed_processes() {
        let dir = v2_host("pids");
        let g = dir.path().join("vservers/web");
        let mut spared = sleeper();
        let mut hit = sleeper();
        touch(&g.join("cgroup.procs"), &format!("{}\n{}\n", spared.id(), hit.id()));
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let sent = cg.signal(Signal::SIGTERM, &[spared.id() as i32]).unwrap();
        assert_eq!(sent, 1);
        assert_eq!(hit.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert_eq!(spared.try_wait().unwrap(), None, "the spared process still runs");
        spared.kill().unwrap();
        spared.wait().unwrap();
    }

    #[test]
    fn freeze_and_thaw_write_the_freezer_of_each_layout() {
        let dir = v2_host("pids");
        let g = dir.path().join("vservers/web");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        let err = cg.freeze().unwrap_err();
        assert!(matches!(err, CgroupError::Freeze { .. }), "no cgroup.freeze in an existing group: {err:?}");
        touch(&g.join("cgroup.freeze"), "0");
        touch(&g.join("cgroup.events"), "populated 1\nfrozen 1\n");
        cg.freeze().unwrap();
        assert_eq!(read(&g.join("cgroup.freeze")), "1");
        cg.thaw().unwrap();
        assert_eq!(read(&g.join("cgroup.freeze")), "0");

        let dir = v1_host(&[]);
        let g = dir.path().join("freezer/vservers/web");
        touch(&g.join("freezer.state"), "THAWED\n");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        cg.freeze().unwrap();
        assert_eq!(read(&g.join("freezer.state")), "FROZEN");
        cg.thaw().unwrap();
        assert_eq!(read(&g.join("freezer.state")), "THAWED");
    }

    #[test]
    fn memory_comes_from_the_accounting_hierarchy() {
        let dir = v2_host("memory");
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.memory_bytes(), None);
        touch(&dir.path().join("vservers/web/memory.current"), "12345\n");
        assert_eq!(cg.memory_bytes(), Some(12345));

        let dir = hybrid_host(&[]);
        let cg = Cgroups::new(&place(&dir), &web()).unwrap();
        assert_eq!(cg.memory_bytes(), None, "no memory hierarchy");
    }

    #[test]
    fn limits_come_from_the_spec() {
        let spec = ContextSpec {
            name: web(),
            root: "/vservers/web".into(),
            root_device: None,
            hostname: None,
            domainname: None,
            network: crate::spec::Network::Host,
            extra_caps: Default::default(),
            nice: None,
            rlimits: vec![],
            nproc: Some(9),
            limits: crate::spec::Limits {
                memory: Some(1 << 30),
                cpu_weight: Some(50),
                io_weight: Some(70),
                disk: None,
            },
            relaxed: Default::default(),
            flags: crate::spec::Flags { sched: true, ..Default::default() },
            context_id: None,
            cgroup: CgroupPlace::default(),
        };
        let limits = CgroupLimits {
            pids_max: Some(9),
            cpu_group: true,
            memory_max: Some(1 << 30),
            cpu_weight: Some(50),
            io_weight: Some(70),
        };
        assert_eq!(CgroupLimits::from(&spec), limits);
    }

    /// Cleans up what a real test made, even when an assertion failed: the child, the vserver's groups and
    /// the test's own parent group in every hierarchy.
    struct RealGuard {
        cgroups: Cgroups,
        parents: Vec<PathBuf>,
        child: Option<Child>,
    }

    impl Drop for RealGuard {
        fn drop(&mut self) {
            let _ = self.cgroups.kill();
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = self.cgroups.wait_empty(Duration::from_secs(5));
            if let Err(err) = self.cgroups.remove() {
                eprintln!("cleanup: {err}");
            }
            for parent in &self.parents {
                // Only ever removes an empty directory.
                let _ = fs::remove_dir(parent);
            }
        }
    }

    /// Whether the test may touch the host's cgroups, saying why not when it may not.
    fn real_cgroups_usable(root: &Path) -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return false;
        }
        if let Err(err) = Layout::detect(root) {
            eprintln!("skipped: {root:?} is not usable: {err}");
            return false;
        }
        true
    }

    /// Runs the whole life of a vserver's cgroups on a real cgroup file system under `root`.
    fn real_life(root: &Path, tag: &str) {
        let place =
            CgroupPlace { root: root.to_path_buf(), parent: format!("isolate-test-{}-{tag}", std::process::id()) };
        let name = VserverName::parse("v1").unwrap();
        let cgroups = Cgroups::new(&place, &name).unwrap();
        let parents = ["", "unified", "freezer", "pids", "cpu", "memory", "blkio"]
            .iter()
            .map(|h| root.join(h).join(&place.parent))
            .collect();
        let mut guard = RealGuard { cgroups: cgroups.clone(), parents, child: None };

        let limits = CgroupLimits { pids_max: Some(20), cpu_group: true, ..Default::default() };
        cgroups.create(&limits).unwrap();
        cgroups.create(&limits).expect("create is idempotent");
        let pids_max = match cgroups.layout() {
            Layout::V2 => cgroups.path().join("pids.max"),
            Layout::Hybrid | Layout::V1 => root.join("pids").join(&place.parent).join("v1/pids.max"),
        };
        assert_eq!(read(&pids_max).trim(), "20");
        real_memory_and_cpu_limits(root, &place, &cgroups);

        let child = guard.child.insert(sleeper());
        let pid = child.id() as i32;
        cgroups.add_process(pid).unwrap();
        assert_eq!(cgroups.procs().unwrap(), vec![pid]);
        for group in cgroups.paths() {
            let listed = parse_procs(&read(&group.join("cgroup.procs"))).unwrap();
            assert_eq!(listed, vec![pid], "{}", group.display());
        }
        if cgroups.layout() != Layout::V2 || cgroups.path().join("memory.current").exists() {
            assert!(cgroups.memory_bytes().is_some(), "memory is accounted");
        }

        cgroups.freeze().unwrap();
        let frozen = match cgroups.layout() {
            Layout::V1 => read(&cgroups.path().join("freezer.state")).trim() == "FROZEN",
            _ => read(&cgroups.path().join("cgroup.events")).contains("frozen 1"),
        };
        assert!(frozen, "the kernel reports the group frozen");
        cgroups.thaw().unwrap();
        assert_eq!(cgroups.signal(Signal::SIGCONT, &[]).unwrap(), 1);
        assert_eq!(cgroups.signal(Signal::SIGCONT, &[pid]).unwrap(), 0);

        cgroups.kill().unwrap();
        let status = guard.child.take().unwrap().wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(cgroups.wait_empty(Duration::from_secs(5)).unwrap());
        cgroups.remove().unwrap();
        assert!(!cgroups.exists());
        assert!(cgroups.paths().len() == 1 && !pids_max.exists());
        drop(guard);
        for h in ["", "unified", "freezer", "pids", "cpu", "memory"] {
            assert!(!root.join(h).join(&place.parent).exists(), "{h} parent left behind");
        }
    }

    /// Sets, lowers, raises and lifts the memory limit and the CPU weight on the real kernel, which refuses
    /// a v1 RAM limit above the RAM+swap one: the order of the writes is checked here.
    fn real_memory_and_cpu_limits(root: &Path, place: &CgroupPlace, cgroups: &Cgroups) {
        let (memory_file, cpu_file, cpu_value): (PathBuf, PathBuf, fn(u32) -> String) = match cgroups.layout() {
            Layout::V2 => (cgroups.path().join("memory.max"), cgroups.path().join("cpu.weight"), |w| w.to_string()),
            Layout::Hybrid | Layout::V1 => (
                root.join("memory").join(&place.parent).join("v1/memory.limit_in_bytes"),
                root.join("cpu").join(&place.parent).join("v1/cpu.shares"),
                |w| cpu_shares(w).to_string(),
            ),
        };
        let base = CgroupLimits { pids_max: Some(20), cpu_group: true, ..Default::default() };
        if !memory_file.exists() || !cpu_file.exists() {
            eprintln!("memory and CPU limits not checked: no {} or {}", memory_file.display(), cpu_file.display());
            return;
        }
        for (memory, weight) in [(64 << 20, 300), (32 << 20, 7), (128 << 20, 10000)] {
            let limits = CgroupLimits { memory_max: Some(memory), cpu_weight: Some(weight), ..base };
            cgroups.create(&limits).unwrap_or_else(|e| panic!("{memory} bytes, weight {weight}: {e}"));
            assert_eq!(read(&memory_file).trim(), memory.to_string());
            assert_eq!(read(&cpu_file).trim(), cpu_value(weight));
            assert_eq!(cgroups.usage().memory_max, Some(memory));
        }
        cgroups.create(&base).unwrap();
        assert_eq!(cgroups.usage().memory_max, None, "the memory limit is lifted");
        assert_eq!(read(&cpu_file).trim(), cpu_value(DEFAULT_WEIGHT));
        assert_eq!(cgroups.usage().tasks_max, Some(20));
    }

    #[test]
    fn real_host_cgroups_hold_limit_freeze_and_kill_a_process() {
        let root = Path::new("/sys/fs/cgroup");
        if real_cgroups_usable(root) {
            real_life(root, "host");
        }
    }

    #[test]
    fn real_v1_hierarchies_behind_a_v1_shaped_root() {
        // A root holding only links to the host's v1 hierarchies is a pure v1 host to the module: this
        // runs the freeze, kill and thaw rounds against the real v1 freezer.
        let host = Path::new("/sys/fs/cgroup");
        if !real_cgroups_usable(host) {
            return;
        }
        if !host.join("freezer/freezer.state").exists() && !host.join("freezer/tasks").exists() {
            eprintln!("skipped: no v1 freezer hierarchy at {}", host.join("freezer").display());
            return;
        }
        let dir = TempDir::new().unwrap();
        for h in ["freezer", "pids", "cpu", "memory"] {
            if host.join(h).join("tasks").exists() {
                std::os::unix::fs::symlink(host.join(h), dir.path().join(h)).unwrap();
            }
        }
        if !dir.path().join("pids").exists() {
            eprintln!("skipped: no v1 pids hierarchy");
            return;
        }
        real_life(dir.path(), "v1");
    }
}
