//! Benchmarks run in a lab: how fast the product starts a service compared with LXC and with a
//! bare namespace-and-chroot floor; the agent under load and at rest; replication and migrate.

mod agent;
pub mod cli;
mod contender;
mod data;
mod floor;
mod lxc;
mod outage;
mod replicate;
pub mod report;
mod scale;
mod service;
mod start;
mod stats;
mod takeover;
mod takeover_blip;
mod takeover_cluster;
mod takeover_crash;
mod takeover_keepalived;
mod takeover_restart;
mod takeover_slow;
mod vserver;

pub use agent::{proc_stat, run_agent_bench, AgentBenchOptions, AgentBenchReport};
pub use data::{get_ack, run_data_bench, DataOptions, DataReport, Mode as DataMode, ModeReport};
pub use replicate::{run_replicate_bench, ReplicateOptions, ReplicateReport};
pub use scale::{run_scale_bench, ScaleOptions, ScaleReport, ScaleRow};
pub use service::install_httpd_service;
pub use start::{run_start, StartOptions, StartReport, Variant, VariantReport};
pub use takeover::{run_takeover_bench, TakeoverOptions, TakeoverReport, TakeoverRun, BLIP_BUDGET_MS};
pub use takeover_blip::{Blip, BlipKind, BlipReport, BlipSums};
pub use takeover_crash::{CrashReport, Trial};
pub use takeover_keepalived::{Baseline, KeepalivedReport, KeepalivedTrial};
pub use takeover_restart::RestartReport;
pub use takeover_slow::SlowReport;

/// Why a benchmark stopped early: Ctrl-C. Everything it made has been released by then.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}
