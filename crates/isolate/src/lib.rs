//! Security contexts for vservers on a modern Linux kernel.
//!
//! A [`spec::ContextSpec`] (typed, already validated) goes in; a running context comes out: a process tree
//! in its own mount, PID, IPC and UTS namespaces (and network namespace when it has addresses), rooted in the
//! vserver's tree by `pivot_root`, inside one cgroup per vserver, with a reduced capability ceiling. This
//! crate knows system calls and specs only: it never reads configuration files and never speaks HTTP.
#![warn(missing_docs)]

pub mod capabilities;
pub mod cgroup;
pub mod closed_output;
pub mod context;
pub mod devices;
pub mod exec;
pub mod garp;
pub mod lease;
pub mod mounts;
pub mod network;
mod packet;
pub mod preflight;
pub mod quota;
pub mod root_device;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod syscall;
pub mod unsolicited_na;

pub use context::{start, stop, StartOptions, StopOptions};
pub use spec::{ContextSpec, RootDevice, VserverName};
pub use state::RunState;
