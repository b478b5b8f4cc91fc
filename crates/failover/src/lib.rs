//! The cluster layer: where each vserver should run, replication of its tree and conf to standbys, takeover
//! and migrate. It builds on `isolate` (one context) and the node agent (one host); it is filled in by the
//! replication and takeover work that follows the single-host foundation.
#![warn(missing_docs)]

/// Name of the layer, used in logs until the cluster code lands.
pub const LAYER: &str = "failover";
