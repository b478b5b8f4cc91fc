//! Agents in a lab of network namespaces, for real: heartbeats and the failure detector under `kill -9`
//! and a link set down, the HTTP API and its security, and the supervision of a host's vservers.
//! Root only; each scenario builds and removes its own lab (`cargo nextest run -E 'binary(agents)'`).

mod api;
mod heartbeats;
mod migrate;
mod replication;
mod supervision;

use std::time::Duration;

/// Fast timing for tests: the detector's logic is the same at any scale.
pub const FAST: vserver_lab::agents::Timing =
    vserver_lab::agents::Timing { interval_ms: 100, suspect_ms: 300, dead_ms: 600 };

/// Generous bound for anything the tests wait for (never a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(15);
