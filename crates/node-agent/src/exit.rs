//! The exit codes of the `vserver`, `vserver-stat` and `vserver-agent` commands, one table for scripts (and
//! the service manager) to rely on; the README has the full table. `exec`, `suexec`, `enter` and `service`
//! pass on the exit code of the command they ran. A command whose output loses its reader ends by SIGPIPE
//! (`isolate::closed_output`).
//!
//! | code | `vserver` | `vserver-stat` | `vserver-agent` |
//! |---|---|---|---|
//! | [`OK`] 0 | success; `running`, `status`: it runs | success | stopped by SIGTERM or SIGINT; `--check`: good |
//! | [`FAILED`] 1 | the operation failed | `--takeovers`: no agent, or it failed | failed while starting to serve or running |
//! | [`USAGE`] 2 | bad usage or input | bad usage | bad usage, or a configuration that cannot be used |
//! | [`NOT_RUNNING`] 3 .. [`REFUSED`] 7 | see each code | never | never |

use crate::build::BuildError;
use crate::lifecycle::LifecycleError;

/// Success; for `running` and `status`: the vserver runs. `vserver-agent`: stopped by SIGTERM or SIGINT, or
/// `--check` found the configuration good.
pub const OK: i32 = 0;
/// The operation failed (a kernel call, a hook, a copy); the message says which step. `vserver-stat
/// --takeovers`: no agent runs, or it did not answer. `vserver-agent`: it failed while starting to serve (its
/// port in use, the ownership table) or while running.
pub const FAILED: i32 = 1;
/// Bad usage or bad input (an invalid name, unknown option); nothing was touched. `vserver-agent`: also a
/// configuration that cannot be used (the file, the secret, the TLS or cluster files, the state directory;
/// the message names the key); nothing was started.
pub const USAGE: i32 = 2;
/// The vserver is not running (`running`, `status`, and `stop`, `exec`, `enter` of a stopped vserver).
pub const NOT_RUNNING: i32 = 3;
/// The vserver is already running (`start`); nothing was changed.
pub const ALREADY_RUNNING: i32 = 4;
/// The vserver does not exist here: no `NAME.conf` or no tree (a tree directory holding nothing counts as none;
/// or, for `build`, it exists already).
pub const UNKNOWN: i32 = 5;
/// `NAME.conf` is malformed or holds a bad value; the message names file and line.
pub const CONFIG: i32 = 6;
/// Refused: the vserver is private (S_FLAGS private), belongs to another host, this host's lease is over, its
/// root device is mounted on this host already, or the command needs root.
pub const REFUSED: i32 = 7;

/// The exit code for a lifecycle error.
pub fn for_lifecycle(e: &LifecycleError) -> i32 {
    use isolate::exec::ExecError;
    use isolate::root_device::RootDeviceError;
    match e {
        LifecycleError::NoConf { .. } | LifecycleError::NoRoot { .. } | LifecycleError::EmptyRoot { .. } => UNKNOWN,
        LifecycleError::Conf(_) => CONFIG,
        LifecycleError::AlreadyRunning(_) => ALREADY_RUNNING,
        LifecycleError::NotRunning(_) | LifecycleError::Exec(ExecError::NotRunning(_)) => NOT_RUNNING,
        LifecycleError::Exec(ExecError::Private(_)) | LifecycleError::LeaseOver { .. } => REFUSED,
        LifecycleError::Context(isolate::context::ContextError::AlreadyRunning(_)) => ALREADY_RUNNING,
        LifecycleError::Context(isolate::context::ContextError::RootDevice(
            RootDeviceError::Mounted { .. } | RootDeviceError::Busy { .. },
        )) => REFUSED,
        _ => FAILED,
    }
}

/// The exit code for a build error.
pub fn for_build(e: &BuildError) -> i32 {
    match e {
        BuildError::Exists(_) => UNKNOWN,
        BuildError::Iproot { .. } | BuildError::From(_) | BuildError::Busybox { .. } => USAGE,
        _ => FAILED,
    }
}
