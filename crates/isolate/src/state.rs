//! What the host remembers of a running context, in `RUN_DIR/NAME.json`: its process 1 (with the kernel's
//! start time of that process, so a reused pid is never mistaken for it), its keeper, when it started, and the
//! spec it was built from, so `exec` gives a new process exactly the ceiling the context's own processes have.
//! Once process 1 has ended, its keeper leaves `RUN_DIR/NAME.exit` ([`ExitRecord`]): how it ended, which only
//! the parent of a PID namespace's init can see (a `reboot` or `halt` inside, or a crash).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::mounts::DeviceNumber;
use crate::spec::{ContextSpec, VserverName};

/// Reading or writing the run state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("run state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid run state.
    #[error("run state {path} is damaged: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// A running context as recorded on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// The spec it was started with.
    pub spec: ContextSpec,
    /// Host pid of its process 1.
    pub init_pid: i32,
    /// Start time of that process in clock ticks since boot (field 22 of /proc/PID/stat).
    pub init_start_ticks: u64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Host pid of its keeper (the parent of process 1, outside the vserver's PID namespace), with its start
    /// time; `None` for a context started by a release without keepers.
    #[serde(default)]
    pub keeper: Option<(i32, u64)>,
    /// The number of its root device ([`ContextSpec::root_device`]) when it started, so a stop finds the
    /// device's mounts even once its path is gone; `None` for a tree that is a directory.
    #[serde(default)]
    pub root_device_number: Option<DeviceNumber>,
    /// The mount namespace of its process 1 (the inode number of `/proc/PID/ns/mnt`), so that a process
    /// still holding it open after a stop can be named; `None` when it was not recorded.
    #[serde(default)]
    pub mount_ns: Option<u64>,
}

/// How process 1 of a context ended, as its keeper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "how")]
pub enum Ending {
    /// `reboot` inside: the kernel ended the PID namespace with SIGHUP. The vserver asks to be started again.
    Reboot,
    /// `halt` or `poweroff` inside: the kernel ended the PID namespace with SIGINT. The vserver asks to stay down.
    Halt,
    /// Process 1 exited with this code.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// Its keeper killed it: the host's lease ended while it ran (a fence, never a crash).
    Fenced,
    /// Process 1 was killed by this signal (a stop's or a fence's SIGKILL, a crash).
    Killed {
        /// The signal number.
        signal: i32,
    },
}

impl Ending {
    /// The ending of a PID namespace's init from its wait status, as the kernel reports a `reboot(2)` inside
    /// one (SIGHUP for a restart, SIGINT for a halt or power off).
    pub fn from_wait(status: nix::sys::wait::WaitStatus) -> Option<Self> {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        match status {
            WaitStatus::Exited(_, code) => Some(Self::Exited { code }),
            WaitStatus::Signaled(_, Signal::SIGHUP, _) => Some(Self::Reboot),
            WaitStatus::Signaled(_, Signal::SIGINT, _) => Some(Self::Halt),
            WaitStatus::Signaled(_, sig, _) => Some(Self::Killed { signal: sig as i32 }),
            _ => None,
        }
    }

    /// Whether the vserver ended itself on purpose (`reboot`, `halt`): its own intent, never a crash.
    pub fn is_intent(self) -> bool {
        matches!(self, Self::Reboot | Self::Halt)
    }
}

/// What a keeper leaves in `RUN_DIR/NAME.exit` when process 1 ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Host pid of the process 1 that ended.
    pub init_pid: i32,
    /// Its start time (clock ticks since boot), so the record is never taken for another start's.
    pub init_start_ticks: u64,
    /// How it ended.
    pub ending: Ending,
    /// When, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl ExitRecord {
    /// Path of the exit record of `name` under `run_dir`.
    pub fn path(run_dir: &Path, name: &VserverName) -> PathBuf {
        run_dir.join(format!("{name}.exit"))
    }

    /// Writes the record atomically.
    pub fn save(&self, run_dir: &Path, name: &VserverName) -> Result<(), StateError> {
        let path = Self::path(run_dir, name);
        let io = |source| StateError::Io { path: path.clone(), source };
        let tmp = path.with_extension("exit.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("exit record serializes")).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes the record; absent is fine.
    pub fn remove(run_dir: &Path, name: &VserverName) -> Result<(), StateError> {
        let path = Self::path(run_dir, name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io { path, source: e }),
            _ => Ok(()),
        }
    }
}

/// Where a context stands once its record says it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Process 1 runs.
    Running,
    /// Process 1 has ended but its keeper has not yet said how: ask again shortly.
    Ending,
    /// It has ended; how, when its keeper recorded it (`None`: no keeper, or it was killed with the context).
    Ended(Option<Ending>),
}

impl RunState {
    /// Path of the state file of `name` under `run_dir`.
    pub fn path(run_dir: &Path, name: &VserverName) -> PathBuf {
        run_dir.join(format!("{name}.json"))
    }

    /// Reads the state of `name`; `None` when it has none (not started by us, or stopped).
    pub fn load(run_dir: &Path, name: &VserverName) -> Result<Option<Self>, StateError> {
        let path = Self::path(run_dir, name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| StateError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes the state atomically (temporary file, then rename).
    pub fn save(&self, run_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(run_dir, &self.spec.name);
        let io = |source| StateError::Io { path: path.clone(), source };
        std::fs::create_dir_all(run_dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).expect("run state serializes");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes the state file; absent is fine.
    pub fn remove(run_dir: &Path, name: &VserverName) -> Result<(), StateError> {
        let path = Self::path(run_dir, name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Whether the recorded process 1 still runs (same pid, same start time).
    pub fn init_alive(&self) -> bool {
        // A zombie (exited, not yet reaped by its parent) is dead: its processes are gone.
        process_stat(self.init_pid)
            .is_some_and(|(state, ticks)| ticks == self.init_start_ticks && state != 'Z' && state != 'X')
    }

    /// Whether its keeper still runs (same pid, same start time); `false` when it has none.
    pub fn keeper_alive(&self) -> bool {
        self.keeper.is_some_and(|(pid, ticks)| {
            process_stat(pid).is_some_and(|(state, t)| t == ticks && state != 'Z' && state != 'X')
        })
    }

    /// Where the context stands: running, ending (process 1 gone, its keeper still recording), or ended
    /// with how, read from the keeper's [`ExitRecord`] for this very process 1.
    pub fn lifecycle(&self, run_dir: &Path) -> Lifecycle {
        if self.init_alive() {
            return Lifecycle::Running;
        }
        if self.keeper_alive() {
            return Lifecycle::Ending;
        }
        let record = std::fs::read(ExitRecord::path(run_dir, &self.spec.name))
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
            .filter(|r| r.init_pid == self.init_pid && r.init_start_ticks == self.init_start_ticks);
        Lifecycle::Ended(record.map(|r| r.ending))
    }

    /// The vserver's tree as the host reaches it: its root directory, or, for a tree on a root device
    /// (mounted in the vserver's own mount namespace only), process 1's root, `/proc/PID/root`. A path
    /// under the latter resolves inside the tree, but an absolute symbolic link met on the way resolves
    /// against the host's root: look up with the care a tree on the host needs (never follow links).
    pub fn tree(&self) -> PathBuf {
        match self.spec.root_device {
            None => self.spec.root.clone(),
            Some(_) => PathBuf::from(format!("/proc/{}/root", self.init_pid)),
        }
    }

    /// Seconds since the context started.
    pub fn uptime_secs(&self) -> u64 {
        now_ms().saturating_sub(self.started_unix_ms) / 1000
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Start time of a process in clock ticks since boot, `None` if it does not exist.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    process_stat(pid).map(|(_, ticks)| ticks)
}

/// A process's state letter (`R`, `S`, `Z`...) and start time, from `/proc/PID/stat`.
fn process_stat(pid: i32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing ')'.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CgroupPlace, Flags, Network};

    #[test]
    fn stat_gives_state_and_start_time_whatever_the_command_name() {
        let line = "42 (a) b (c)) Z 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat(line), Some(('Z', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        // A real zombie: a child that exited and is not reaped yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_stat(pid).is_some_and(|(s, _)| s != 'Z') && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(process_stat(pid).map(|(s, _)| s), Some('Z'));
        child.wait().unwrap();
    }

    #[test]
    fn state_round_trips_and_knows_our_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let name = VserverName::parse("v1").unwrap();
        let spec = ContextSpec {
            name: name.clone(),
            root: "/vservers/v1".into(),
            root_device: Some(crate::spec::RootDevice { path: "/dev/loop3".into(), fstype: "ext4".into() }),
            hostname: None,
            domainname: None,
            network: Network::Host,
            extra_caps: Default::default(),
            nice: None,
            rlimits: vec![],
            nproc: None,
            limits: Default::default(),
            relaxed: Default::default(),
            flags: Flags::default(),
            context_id: None,
            cgroup: CgroupPlace::default(),
        };
        let me = std::process::id() as i32;
        let st = RunState {
            spec,
            init_pid: me,
            init_start_ticks: process_start_ticks(me).unwrap(),
            started_unix_ms: now_ms(),
            keeper: None,
            root_device_number: Some(DeviceNumber { major: 7, minor: 3 }),
            mount_ns: Some(4026531841),
        };
        st.save(dir.path()).unwrap();
        let back = RunState::load(dir.path(), &name).unwrap().unwrap();
        assert_eq!(back, st);
        assert!(back.init_alive());
        assert_eq!(back.tree(), PathBuf::from(format!("/proc/{me}/root")), "a device's tree, seen from the host");
        RunState::remove(dir.path(), &name).unwrap();
        assert!(RunState::load(dir.path(), &name).unwrap().is_none());
    }

    #[test]
    fn a_run_state_of_the_previous_release_reads_without_a_keeper() {
        let old = r#"{"spec":{"name":"v1","root":"/vservers/v1","hostname":null,"domainname":null,"network":"Host",
            "extra_caps":[],"nice":null,"rlimits":[],"nproc":null,"flags":{"lock":false,"sched":false,
            "private":false,"fakeinit":false},"context_id":null,"cgroup":{"root":"/sys/fs/cgroup",
            "parent":"vservers"}},"init_pid":1,"init_start_ticks":2,"started_unix_ms":3}"#;
        let st: RunState = serde_json::from_str(old).unwrap();
        assert_eq!(st.keeper, None);
        assert_eq!((st.spec.root_device.clone(), st.root_device_number, st.mount_ns), (None, None, None));
        assert_eq!(st.tree(), PathBuf::from("/vservers/v1"));
        assert_eq!(st.spec.limits, Default::default());
        assert_eq!(st.spec.relaxed, Default::default());
    }

    #[test]
    fn the_kernels_reboot_and_halt_statuses_are_told_from_crashes() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let pid = nix::unistd::Pid::from_raw(9);
        assert_eq!(Ending::from_wait(WaitStatus::Signaled(pid, Signal::SIGHUP, false)), Some(Ending::Reboot));
        assert_eq!(Ending::from_wait(WaitStatus::Signaled(pid, Signal::SIGINT, false)), Some(Ending::Halt));
        assert_eq!(
            Ending::from_wait(WaitStatus::Signaled(pid, Signal::SIGKILL, true)),
            Some(Ending::Killed { signal: 9 })
        );
        assert_eq!(Ending::from_wait(WaitStatus::Exited(pid, 3)), Some(Ending::Exited { code: 3 }));
        assert!(Ending::Reboot.is_intent() && Ending::Halt.is_intent());
        assert!(!Ending::Exited { code: 0 }.is_intent());
    }

    #[test]
    fn an_exit_record_counts_only_for_the_process_1_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let name = VserverName::parse("v1").unwrap();
        let spec: ContextSpec = serde_json::from_str(
            &serde_json::to_string(&serde_json::json!({
                "name":"v1","root":"/vservers/v1","hostname":null,"domainname":null,"network":"Host","extra_caps":[],
                "nice":null,"rlimits":[],"nproc":null,"flags":{"lock":false,"sched":false,"private":false,
                "fakeinit":false},"context_id":null,"cgroup":{"root":"/sys/fs/cgroup","parent":"vservers"}
            }))
            .unwrap(),
        )
        .unwrap();
        // A process 1 that is long gone (pid 0 never names a process).
        let st = RunState {
            spec,
            init_pid: 0,
            init_start_ticks: 5,
            started_unix_ms: 1,
            keeper: Some((0, 1)),
            root_device_number: None,
            mount_ns: None,
        };
        assert_eq!(st.lifecycle(dir.path()), Lifecycle::Ended(None));
        let other = ExitRecord { init_pid: 0, init_start_ticks: 6, ending: Ending::Reboot, at_unix_ms: 2 };
        other.save(dir.path(), &name).unwrap();
        assert_eq!(st.lifecycle(dir.path()), Lifecycle::Ended(None), "another start's record");
        let mine = ExitRecord { init_start_ticks: 5, ..other };
        mine.save(dir.path(), &name).unwrap();
        assert_eq!(st.lifecycle(dir.path()), Lifecycle::Ended(Some(Ending::Reboot)));
        ExitRecord::remove(dir.path(), &name).unwrap();
        ExitRecord::remove(dir.path(), &name).unwrap();
    }
}
