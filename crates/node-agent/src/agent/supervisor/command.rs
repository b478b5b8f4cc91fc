//! The `vserver` command as the agent runs it for starts and stops: a child process (contexts are made by
//! forking, which must never happen inside the agent's multi-threaded process), its exit code mapped to an
//! error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use isolate::VserverName;

use super::error::SupervisorError;
use crate::announcement::NO_AGENT_ENV;
use crate::dirs::Dirs;
use crate::exit;

/// The `vserver` command as the agent runs it: its binary and the directories of this host.
#[derive(Debug, Clone)]
pub(super) struct VserverCommand {
    pub(super) bin: PathBuf,
    pub(super) env: Vec<(&'static str, OsString)>,
    /// The vservers whose tree is a block device's file system: the device and its type, which their starts
    /// are given (the cluster's placements change them while the agent runs).
    pub(super) root_devices: std::sync::Arc<std::sync::Mutex<BTreeMap<VserverName, (PathBuf, String)>>>,
}

impl VserverCommand {
    /// `configured`, else `vserver` beside this executable, else `vserver` on PATH.
    pub(super) fn new(
        configured: Option<PathBuf>,
        dirs: &Dirs,
        root_devices: BTreeMap<VserverName, (PathBuf, String)>,
    ) -> Self {
        let beside = || {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join("vserver")).filter(|p| p.is_file())
        };
        let bin = configured.or_else(beside).unwrap_or_else(|| "vserver".into());
        let env = vec![
            (NO_AGENT_ENV, OsString::from("1")),
            ("VSERVER_VSERVERS_DIR", dirs.vservers_dir.clone().into()),
            ("VSERVER_CONF_DIR", dirs.conf_dir.clone().into()),
            ("VSERVER_RUN_DIR", dirs.run_dir.clone().into()),
            ("VSERVER_CGROUP_ROOT", dirs.cgroup_root.clone().into()),
            ("VSERVER_CGROUP_PARENT", dirs.cgroup_parent.clone().into()),
        ];
        Self { bin, env, root_devices: std::sync::Arc::new(std::sync::Mutex::new(root_devices)) }
    }

    /// Runs `vserver NAME ACTION` and maps its exit code.
    pub(super) async fn run(&self, name: &VserverName, action: &str) -> Result<(), SupervisorError> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg(name.as_str())
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Not the agent's own, if it has them: a vserver's start gets its device from the cluster's file.
            .env_remove(crate::root_device::DEVICE_ENV)
            .env_remove(crate::root_device::FSTYPE_ENV)
            .envs(self.root_device_env(name))
            // Its default log level, so that its stderr holds its messages only.
            .env_remove("VSERVER_LOG")
            // The service manager's socket is the agent's alone (systemd's `Type=notify`).
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        crate::agent::nofile::as_started(&mut cmd);
        tracing::debug!(vserver = %name, bin = %self.bin.display(), action, "running the vserver command");
        let out = cmd.output().await.map_err(|e| SupervisorError::Failed {
            name: name.to_string(),
            message: format!("cannot run {}: {e}", self.bin.display()),
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in stderr.lines().filter_map(|l| l.strip_prefix("vserver: warning: ")) {
            tracing::warn!(vserver = %name, action, "{w}");
        }
        outcome(name, out.status.code(), &stderr)
    }
}

impl VserverCommand {
    /// The root device of `name` as the `vserver` command takes it, if its tree is on one.
    fn root_device_env(&self, name: &VserverName) -> Vec<(&'static str, OsString)> {
        match self.root_devices.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            Some((path, fstype)) => {
                let device = isolate::RootDevice { path: path.clone(), fstype: fstype.clone() };
                crate::root_device::env(&device).to_vec()
            }
            None => Vec::new(),
        }
    }
}

/// The result of a `vserver NAME ACTION` child from its exit code (`None`: killed by a signal) and stderr.
pub(super) fn outcome(name: &VserverName, code: Option<i32>, stderr: &str) -> Result<(), SupervisorError> {
    let name = name.to_string();
    match code {
        Some(exit::OK) => Ok(()),
        Some(exit::NOT_RUNNING) => Err(SupervisorError::NotRunning(name)),
        Some(exit::ALREADY_RUNNING) => Err(SupervisorError::AlreadyRunning(name)),
        Some(exit::UNKNOWN) => Err(SupervisorError::NotFound(name)),
        other => {
            // Its error lines, without the prefixes our own message adds again.
            let ours = format!("vserver {name}: ");
            let errors: Vec<&str> = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("vserver: error: "))
                .map(|l| l.strip_prefix(ours.as_str()).unwrap_or(l))
                .collect();
            let mut message = if errors.is_empty() { stderr.trim().to_string() } else { errors.join("; ") };
            if message.is_empty() {
                message = match other {
                    Some(c) => format!("the vserver command exited with {c}"),
                    None => "the vserver command was killed by a signal".into(),
                };
            }
            Err(match other {
                Some(exit::CONFIG) => SupervisorError::BadConf { name, message },
                Some(exit::REFUSED) => SupervisorError::Refused { name, message },
                _ => SupervisorError::Failed { name, message },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn name(n: &str) -> VserverName {
        VserverName::parse(n).unwrap()
    }
    #[test]
    fn the_commands_exit_codes_map_to_errors() {
        let n = name("web");
        assert!(outcome(&n, Some(0), "vserver: warning: w").is_ok());
        assert!(matches!(outcome(&n, Some(3), ""), Err(SupervisorError::NotRunning(x)) if x == "web"));
        assert!(matches!(outcome(&n, Some(4), ""), Err(SupervisorError::AlreadyRunning(_))));
        assert!(matches!(outcome(&n, Some(5), ""), Err(SupervisorError::NotFound(_))));
        let e = outcome(&n, Some(6), "vserver: warning: w\nvserver: error: /etc/vservers/web.conf:3: bad\n");
        assert!(
            matches!(&e, Err(SupervisorError::BadConf { message, .. }) if message == "/etc/vservers/web.conf:3: bad")
        );
        let e = outcome(&n, Some(1), "vserver: error: vserver web: launcher failed\n");
        assert_eq!(e.unwrap_err().to_string(), "vserver web: launcher failed");
        let e = outcome(&n, Some(1), "  thread panicked\n");
        assert!(matches!(&e, Err(SupervisorError::Failed { message, .. }) if message == "thread panicked"));
        let e = outcome(&n, None, "");
        assert!(matches!(&e, Err(SupervisorError::Failed { message, .. }) if message.contains("signal")));
        let e = outcome(&n, Some(7), "");
        assert!(matches!(&e, Err(SupervisorError::Refused { message, .. }) if message.contains("exited with 7")));
    }
    #[test]
    fn the_command_gets_the_hosts_directories_and_no_agent() {
        let dirs = Dirs {
            vservers_dir: "/vs".into(),
            conf_dir: "/conf".into(),
            run_dir: "/run/x".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "h1".into(),
        };
        let devices = BTreeMap::from([(name("db"), ("/dev/disk/by-id/wwn-1".into(), "xfs".to_string()))]);
        let c = VserverCommand::new(Some("/opt/vserver".into()), &dirs, devices);
        assert_eq!(c.bin, PathBuf::from("/opt/vserver"));
        // A vserver on a block device gets it, the others nothing.
        let db: HashMap<_, _> = c.root_device_env(&name("db")).into_iter().collect();
        assert_eq!(
            (db["VSERVER_ROOT_DEVICE"].as_os_str(), db["VSERVER_ROOT_FSTYPE"].as_os_str()),
            ("/dev/disk/by-id/wwn-1".as_ref(), "xfs".as_ref())
        );
        assert!(c.root_device_env(&name("web")).is_empty());
        let env: HashMap<_, _> = c.env.iter().cloned().collect();
        assert_eq!(env["VSERVER_NO_AGENT"], "1");
        assert_eq!(env["VSERVER_CONF_DIR"], "/conf");
        assert_eq!(env["VSERVER_CGROUP_PARENT"], "h1");
        assert_eq!(env["VSERVER_RUN_DIR"], "/run/x");
        assert_eq!(env["VSERVER_VSERVERS_DIR"], "/vs");
    }
    #[tokio::test]
    async fn the_command_runs_as_a_child_and_its_exit_code_is_read() {
        // A stand-in for the vserver command: a shell script echoing its arguments and environment.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("vserver");
        std::fs::write(
            &bin,
            "#!/bin/sh\n[ \"$VSERVER_NO_AGENT\" = 1 ] || exit 9\n\
             case \"$2\" in start) exit 0;; stop) exit 3;; *) echo \"vserver: error: no $2 for $1\" >&2; exit 1;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // A fork in another test thread may briefly hold the script open for writing (ETXTBSY): wait it out.
        for _ in 0..100 {
            match std::process::Command::new(&bin).env("VSERVER_NO_AGENT", "1").args(["web", "start"]).status() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(10)),
                r => {
                    assert!(r.unwrap().success());
                    break;
                }
            }
        }
        let dirs = Dirs {
            vservers_dir: dir.path().into(),
            conf_dir: dir.path().into(),
            run_dir: dir.path().into(),
            cgroup_root: dir.path().into(),
            cgroup_parent: "x".into(),
        };
        let c = VserverCommand::new(Some(bin), &dirs, BTreeMap::new());
        let n = name("web");
        assert!(c.run(&n, "start").await.is_ok());
        assert!(matches!(c.run(&n, "stop").await, Err(SupervisorError::NotRunning(_))));
        let e = c.run(&n, "restart").await.unwrap_err();
        assert_eq!(e.to_string(), "vserver web: no restart for web");
        let missing = VserverCommand::new(Some(dir.path().join("nope")), &dirs, BTreeMap::new());
        let e = missing.run(&n, "start").await.unwrap_err();
        assert!(e.to_string().contains("cannot run"), "{e}");
    }
}
