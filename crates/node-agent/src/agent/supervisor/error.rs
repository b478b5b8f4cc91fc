//! Why a lifecycle request to the supervisor could not be carried out.

/// A lifecycle request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No such vserver on this host (HTTP 404).
    #[error("vserver {0} is not configured on this host")]
    NotFound(String),
    /// Start of a running vserver (HTTP 409).
    #[error("vserver {0} is already running; nothing changed")]
    AlreadyRunning(String),
    /// Stop of a stopped vserver (HTTP 409).
    #[error("vserver {0} is not running; nothing changed")]
    NotRunning(String),
    /// `NAME.conf` is malformed or holds a bad value (HTTP 422); the message names `file:line`.
    #[error("vserver {name}: {message}")]
    BadConf {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// The vserver may not be acted on (`S_FLAGS private`) (HTTP 403).
    #[error("vserver {name}: {message}")]
    Refused {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// The `vserver` command failed (HTTP 500); the message is its own.
    #[error("vserver {name}: {message}")]
    Failed {
        /// The vserver.
        name: String,
        /// What the command said.
        message: String,
    },
    /// This host does not hold its lease (HTTP 503): cut off from the majority, it may not start anything.
    #[error(
        "this host does not hold its lease (no majority of the cluster acknowledges it): starting {0} here could \
         run it twice while another host takes it over; nothing changed (retry once the host is back)"
    )]
    NoLease(String),
    /// Held by a migrate (HTTP 423): operators' lifecycle requests are refused until it ends.
    #[error("vserver {0} is being migrated; nothing changed (retry when the migrate ends)")]
    Busy(String),
    /// The intents could not be kept on disk (HTTP 500).
    #[error("cannot keep the intents in {path}: {source}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
