//! What the host remembers of a running context, in `RUN_DIR/NAME.json`: its process 1 (with the kernel's
//! start time of that process, so a reused pid is never mistaken for it), when it started, and the spec it
//! was built from, so `exec` gives a new process exactly the ceiling the context's own processes have.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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
        };
        st.save(dir.path()).unwrap();
        let back = RunState::load(dir.path(), &name).unwrap().unwrap();
        assert_eq!(back, st);
        assert!(back.init_alive());
        RunState::remove(dir.path(), &name).unwrap();
        assert!(RunState::load(dir.path(), &name).unwrap().is_none());
    }
}
