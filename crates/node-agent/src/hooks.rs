//! `NAME.sh`, the per-vserver hook script of the guide: run on the host with the action (`pre-start`,
//! `post-start`, `pre-stop`, `post-stop`) and the vserver's name, typically to set up bind mounts.

use std::path::{Path, PathBuf};
use std::process::Command;

use isolate::VserverName;

/// The four moments a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Before anything is set up; a failure aborts the start.
    PreStart,
    /// After the vserver and its services started.
    PostStart,
    /// Before the services are stopped.
    PreStop,
    /// After every process is gone.
    PostStop,
}

impl HookAction {
    /// The argument given to the script.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreStart => "pre-start",
            Self::PostStart => "post-start",
            Self::PreStop => "pre-stop",
            Self::PostStop => "post-stop",
        }
    }
}

/// A hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The script could not be run.
    #[error("cannot run hook {path} {action}: {source}")]
    Spawn {
        /// The script.
        path: PathBuf,
        /// The action.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The script exited non-zero.
    #[error("hook {path} {action} {name} failed with {status}")]
    Failed {
        /// The script.
        path: PathBuf,
        /// The action.
        action: &'static str,
        /// The vserver.
        name: VserverName,
        /// How it ended.
        status: std::process::ExitStatus,
    },
}

/// Runs `path ACTION NAME` with `/bin/sh` when the script exists (it need not be executable, as in the
/// guide); does nothing when there is no script.
pub fn run(path: &Path, action: HookAction, name: &VserverName, root: &Path) -> Result<bool, HookError> {
    if !path.exists() {
        return Ok(false);
    }
    tracing::info!(vserver = %name, hook = %path.display(), action = action.as_str(), "running hook");
    let status = Command::new("/bin/sh")
        .arg(path)
        .arg(action.as_str())
        .arg(name.as_str())
        .env("VSERVER_NAME", name.as_str())
        .env("VSERVER_ROOT", root)
        .status()
        .map_err(|source| HookError::Spawn { path: path.to_path_buf(), action: action.as_str(), source })?;
    if !status.success() {
        return Err(HookError::Failed {
            path: path.to_path_buf(),
            action: action.as_str(),
            name: name.clone(),
            status,
        });
    }
    Ok(true)
}
