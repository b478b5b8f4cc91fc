//! One host: the lifecycle of its vservers (conf file to running context and back), the `vserver` and
//! `vserver-stat` commands, and the agent daemon with its HTTP API, heartbeats, replication and takeover.
#![warn(missing_docs)]

pub mod agent;
pub mod agent_client;
pub mod announcement;
pub mod build;
pub mod cli;
pub mod cluster_view;
pub mod completions;
pub mod dirs;
pub mod exit;
pub mod fence;
pub mod hooks;
pub mod legacy_conf;
pub mod lifecycle;
pub mod logging;
pub mod model;
pub mod root_device;
pub mod services;
