//! `agent.toml`: the configuration of one agent (`config/agent.toml` is the commented example). Unknown
//! keys are refused; every error names the file, the key and the reason, and the agent does not start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a source: a chain would repeat it).
        error: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: key `{key}`: {reason}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`heartbeat.interval_ms`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// One other agent of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node name.
    pub name: String,
    /// Its base URL, e.g. `http://192.0.2.11:7070`.
    pub url: String,
}

/// Heartbeat timing. Defaults: every 250 ms; suspect after 750 ms of silence; dead after 1500 ms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Interval between two heartbeats to each peer.
    pub interval_ms: u64,
    /// Silence after which a peer is suspect.
    pub suspect_after_ms: u64,
    /// Silence after which a peer is dead.
    pub dead_after_ms: u64,
    /// Longest wait for one heartbeat's answer.
    pub timeout_ms: u64,
    /// Interval between two UDP beacons to each peer (signed, to the port of its URL); 0 sends none. A
    /// beacon proves the sender alive like a heartbeat; datagrams lost on a lossy link do not stall the
    /// next ones, as a TCP connection does after a lost segment.
    pub beacon_interval_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self { interval_ms: 250, suspect_after_ms: 750, dead_after_ms: 1500, timeout_ms: 1000, beacon_interval_ms: 100 }
    }
}

impl HeartbeatConfig {
    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// `[fencing]`: how a host stops its own vservers when it may no longer own them. Both default to on when
/// automatic takeover is on, off otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingConfig {
    /// Arm and pet the host watchdog (`vserver-watchdog`, at `RUN_DIR/watchdog.sock`), which kills this
    /// host's vservers when the agent stops petting it: a frozen or hung agent cannot stop them itself. The
    /// agent pets it only while this host holds its lease, so the watchdog fires before the lease ends.
    pub watchdog: Option<bool>,
    /// Fence this host's vservers as soon as its lease ends: fewer than a majority of the ownership table's
    /// voters (itself included) acknowledged a beacon it sent within `timeout_ms`. A host cut off from the
    /// cluster so stops them before the others may give them to another host. After such a fence, as after
    /// the watchdog's, a vserver restarts only once the cluster confirms this host still owns it.
    pub quorum: Option<bool>,
    /// The lease: how long an acknowledged beacon vouches for this host (default 1800 ms). A silence of this
    /// host's link or agent shorter than about this minus 800 ms (the blip budget, 1.0 s by default) stops
    /// nothing; the takeover timeout is this plus `takeover.safety_margin_ms` (docs/failover.md, failure
    /// budgets).
    pub timeout_ms: u64,
}

impl Default for FencingConfig {
    fn default() -> Self {
        Self { watchdog: None, quorum: None, timeout_ms: 1800 }
    }
}

/// `[takeover]`: automatic takeover of a dead host's vservers by their standbys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TakeoverConfig {
    /// On by default with 3 hosts or more (witnesses count); a cluster of 2 cannot form a majority once one
    /// is gone, so it needs a witness.
    pub enabled: Option<bool>,
    /// The takeover timeout is `fencing.timeout_ms` plus this (default 600 ms): the silence after which the
    /// coordinator takes a host's vservers over, when a dead host's lease has been over for this long.
    pub safety_margin_ms: u64,
    /// A command run with the dead host's name before its vservers are taken over (IPMI, a PDU); the
    /// takeover waits for it and happens only if it exits with 0.
    pub fence_hook: Option<PathBuf>,
    /// Longest run of the fence hook, in seconds (default 60).
    pub fence_hook_timeout_secs: u64,
}

impl Default for TakeoverConfig {
    fn default() -> Self {
        Self { enabled: None, safety_margin_ms: 600, fence_hook: None, fence_hook_timeout_secs: 60 }
    }
}

/// `[alerts]`: who is told at once of fences, takeovers, vservers in error, a lost quorum and certificates
/// ending soon. Each kind names a hook: a command (an absolute path, run with the alert as JSON on its standard
/// input) or a webhook (an `http://` or `https://` URL, sent the JSON in a POST); `all` serves the kinds not
/// named. The coordinator tells fences, takeovers, errors and certificates (from the cluster's event log); a
/// voter without a coordinator tells a lost quorum itself. Give the voters the same `[alerts]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The hook for every kind not named below.
    pub all: Option<String>,
    /// A host lost its lease and fenced its vservers.
    pub fenced: Option<String>,
    /// A vserver was taken over from a dead host, or a takeover failed.
    pub takeover: Option<String>,
    /// A vserver went to state error (the relocation or restart limit).
    pub error: Option<String>,
    /// A voter has had no coordinator for `quorum_lost_after_secs`.
    pub quorum_lost: Option<String>,
    /// A host's certificate ends within `certificate_days`.
    pub certificate_expiry: Option<String>,
    /// Longest run of a command or a webhook's answer, in seconds (default 30); a hook that fails or takes
    /// longer is tried twice more, 5 s apart.
    pub timeout_secs: u64,
    /// How long a voter goes without a coordinator before it tells of a lost quorum (default 15 s).
    pub quorum_lost_after_secs: u64,
    /// How long before its end a host's certificate is told of, once a day (default 30 days).
    pub certificate_days: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            all: None,
            fenced: None,
            takeover: None,
            error: None,
            quorum_lost: None,
            certificate_expiry: None,
            timeout_secs: 30,
            quorum_lost_after_secs: 15,
            certificate_days: 30,
        }
    }
}

impl AlertsConfig {
    /// The hook of `kind`, if any.
    pub fn hook(&self, kind: failover::alerts::AlertKind) -> Option<&str> {
        use failover::alerts::AlertKind::*;
        let named = match kind {
            Fenced => &self.fenced,
            Takeover => &self.takeover,
            Error => &self.error,
            QuorumLost => &self.quorum_lost,
            CertificateExpiry => &self.certificate_expiry,
        };
        named.as_deref().or(self.all.as_deref())
    }

    /// Whether any hook is set.
    pub fn any(&self) -> bool {
        failover::alerts::AlertKind::ALL.iter().any(|k| self.hook(*k).is_some())
    }

    fn check(&self) -> Result<(), (String, String)> {
        let named = [
            ("all", &self.all),
            ("fenced", &self.fenced),
            ("takeover", &self.takeover),
            ("error", &self.error),
            ("quorum_lost", &self.quorum_lost),
            ("certificate_expiry", &self.certificate_expiry),
        ];
        for (key, hook) in named {
            let Some(hook) = hook else { continue };
            let key = format!("alerts.{key}");
            if hook.starts_with("http://") || hook.starts_with("https://") {
                let url = reqwest::Url::parse(hook).map_err(|e| (key.clone(), format!("{hook:?}: {e}")))?;
                if url.host().is_none() {
                    return Err((key, format!("{hook:?} names no host")));
                }
            } else if !hook.starts_with('/') {
                return Err((key, format!("{hook:?} is neither an absolute path to a command nor an http(s) URL")));
            }
        }
        for (key, value, range) in [
            ("alerts.timeout_secs", self.timeout_secs, 1..=600),
            ("alerts.quorum_lost_after_secs", self.quorum_lost_after_secs, 1..=3600),
            ("alerts.certificate_days", self.certificate_days, 1..=3650),
        ] {
            if !range.contains(&value) {
                return Err((key.into(), format!("{value} is not from {} to {}", range.start(), range.end())));
            }
        }
        Ok(())
    }
}

/// `[failures]`: the failure accounting of each vserver. Its local restarts (on this host) and its
/// relocations (takeovers, counted cluster-wide from the event log) within the last `window_secs`; past
/// `max_restart` or `max_relocate` it is put in state `error` and left alone until an operator clears it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailuresConfig {
    /// How long a restart or a relocation counts, in seconds (default 3600).
    pub window_secs: u64,
    /// Restarts within the window after which a vserver found dead again is put in `error` (default 5).
    pub max_restart: u32,
    /// Relocations within the window after which a vserver is not taken over again but put in `error`
    /// (default 3).
    pub max_relocate: u32,
}

impl Default for FailuresConfig {
    fn default() -> Self {
        Self { window_secs: 3600, max_restart: 5, max_relocate: 3 }
    }
}

impl FailuresConfig {
    /// The window in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_secs.saturating_mul(1000)
    }
}

/// Keys that were replaced, and what replaced them: refused with a message naming the new key.
const REPLACED_KEYS: &[(&str, &str, &str)] = &[
    ("restart", "max_restarts", "failures.max_restart (restarts within failures.window_secs)"),
    ("takeover", "max_relocations_per_hour", "failures.max_relocate (relocations within failures.window_secs)"),
];

/// `[announce]`: how a new owner (after a takeover or a migrate) announces the vserver's addresses (gratuitous
/// ARP for IPv4, unsolicited neighbour advertisement for IPv6), so that every neighbour's table points at it
/// even if one announcement is lost.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// Announcements per address in all, the first one as the vserver starts (default 5).
    pub count: u32,
    /// Time between two of them (default 1000 ms).
    pub interval_ms: u64,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self { count: 5, interval_ms: 1000 }
    }
}

/// How the agent restarts a vserver that died on a healthy host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// Wait before the first restart; doubled at each further one.
    pub backoff_initial_ms: u64,
    /// Longest wait between two restarts.
    pub backoff_max_ms: u64,
    /// How often the agent checks its vservers.
    pub check_interval_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self { backoff_initial_ms: 1000, backoff_max_ms: 30_000, check_interval_ms: 500 }
    }
}

/// `[tls]`: serve the API over HTTPS, and optionally admit clients by certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This agent's certificate chain (PEM), for its listener and as its client certificate to peers.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The cluster CA (PEM). When set, peers' certificates must be signed by it (and only by it), and a
    /// client presenting a certificate it signed is admitted without the bearer token.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The cluster CA's key (PEM): this host admits new hosts (`vserver-agent token HOST`, then `join`).
    #[serde(default)]
    pub ca_key_file: Option<PathBuf>,
}

/// The whole `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Address and port the HTTP API listens on.
    pub listen: SocketAddr,
    /// File holding the cluster secret (a bearer token shared by all agents and operators).
    pub secret_file: PathBuf,
    /// A file of read-only credentials, for monitoring (Prometheus, a status board): each non-empty line is
    /// a token (at least 16 characters) admitted on the API's reads (GET) and refused (403) on anything else.
    #[serde(default)]
    pub monitor_secret_file: Option<PathBuf>,
    /// Directory of the vservers' trees.
    #[serde(default = "default_vservers_dir")]
    pub vservers_dir: PathBuf,
    /// Directory of `NAME.conf` and `NAME.sh`.
    #[serde(default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    /// Run-state directory shared with the `vserver` command.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Where the agent keeps what survives its restarts: the vservers' intents and its incarnation.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Parent cgroup of this host's vservers.
    #[serde(default = "default_cgroup_parent")]
    pub cgroup_parent: String,
    /// The `vserver` command the agent runs (default: beside the agent's binary, else on PATH).
    #[serde(default)]
    pub vserver_bin: Option<PathBuf>,
    /// The other agents.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Heartbeat timing.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Failure accounting and its limits.
    #[serde(default)]
    pub failures: FailuresConfig,
    /// Fencing: the host's watchdog.
    #[serde(default)]
    pub fencing: FencingConfig,
    /// `[takeover]`.
    #[serde(default)]
    pub takeover: TakeoverConfig,
    /// `[announce]`: announcements of the addresses after a takeover or a migrate.
    #[serde(default)]
    pub announce: AnnounceConfig,
    /// `[alerts]`: hooks told of fences, takeovers, errors, a lost quorum, certificates ending.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// A witness runs no vservers and holds no replicas: it votes in the ownership table so that two hosts
    /// (and a witness) keep a majority when one of them dies.
    #[serde(default)]
    pub witness: bool,
    /// HTTPS for the API and the heartbeats, made by `vserver-agent init` and `join` (required, unless
    /// `insecure_plain_http`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Plain HTTP, knowingly: without `[tls]`, the agent serves and speaks plain HTTP, the cluster secret
    /// travelling in clear (a warning at every start and on the status page); with `[tls]`, it also accepts
    /// plain HTTP on its port (a cluster moving to TLS host by host: docs/failover.md, runbook). Off by default:
    /// an agent without `[tls]` refuses to start.
    #[serde(default)]
    pub insecure_plain_http: bool,
    /// The cluster configuration: placement and replication of the vservers (absent: no replication).
    /// A relative path is taken from this file's directory.
    #[serde(default)]
    pub cluster_file: Option<PathBuf>,
    /// Where this host keeps replicas as a standby (default: `VSERVERS_DIR/.replicas`, on the trees' file
    /// system so that promoting a replica is a rename).
    #[serde(default)]
    pub replica_dir: Option<PathBuf>,
    /// The rsync binary (default: `rsync` on PATH).
    #[serde(default)]
    pub rsync_bin: Option<PathBuf>,
    /// A sync pass gives up when no data moves for this many seconds (a cut link, a hung standby).
    #[serde(default = "default_rsync_timeout")]
    pub rsync_timeout_secs: u64,
    /// Send changed files whole (rsync's `--whole-file`) instead of through rsync's delta algorithm. The
    /// default, right where the standbys share a LAN with the primary (as moving an address by gratuitous
    /// ARP requires): the delta algorithm reads every changed file on both hosts to save network bytes a LAN
    /// does not miss. Set false when the link is the bottleneck and large files change in small places.
    #[serde(default = "yes")]
    pub rsync_whole_file: bool,
}

fn yes() -> bool {
    true
}

fn default_rsync_timeout() -> u64 {
    60
}

fn default_vservers_dir() -> PathBuf {
    "/vservers".into()
}
fn default_conf_dir() -> PathBuf {
    "/etc/vservers".into()
}
fn default_run_dir() -> PathBuf {
    "/run/vservers".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/vserver-agent".into()
}
fn default_cgroup_parent() -> String {
    "vservers".into()
}

/// A node name: like a vserver name (letters, digits, `.`, `_`, `-`, at most 64 bytes).
pub fn check_node_name(name: &str) -> Result<(), String> {
    isolate::VserverName::parse(name).map(drop).map_err(|e| e.to_string().replace("vserver name", "node name"))
}

impl AgentConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        if let Ok(toml::Value::Table(top)) = toml::from_str::<toml::Value>(text) {
            for (table, key, now) in REPLACED_KEYS {
                if top.get(*table).and_then(|t| t.get(*key)).is_some() {
                    return Err(ConfigError::Value {
                        path: path.into(),
                        key: format!("{table}.{key}"),
                        reason: format!("this key was replaced: use {now} in [failures]"),
                    });
                }
            }
        }
        let config: AgentConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.into(), message: e.to_string() })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Value { path: path.into(), key: key.into(), reason };
        check_node_name(&self.node).map_err(|r| bad("node", r))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let key = |k: &str| format!("peers[{i}].{k}");
            check_node_name(&peer.name).map_err(|r| bad(&key("name"), r))?;
            if peer.name == self.node {
                return Err(bad(&key("name"), format!("{:?} is this node itself", peer.name)));
            }
            if !seen.insert(peer.name.clone()) {
                return Err(bad(&key("name"), format!("{:?} is listed twice", peer.name)));
            }
            let url = reqwest::Url::parse(&peer.url).map_err(|e| bad(&key("url"), format!("{:?}: {e}", peer.url)))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(bad(&key("url"), format!("{:?} is not an http:// or https:// URL with a host", peer.url)));
            }
        }
        let hb = &self.heartbeat;
        if hb.interval_ms == 0 {
            return Err(bad("heartbeat.interval_ms", "must be above 0".into()));
        }
        if hb.suspect_after_ms <= hb.interval_ms {
            return Err(bad(
                "heartbeat.suspect_after_ms",
                format!("{} must exceed heartbeat.interval_ms ({})", hb.suspect_after_ms, hb.interval_ms),
            ));
        }
        if hb.dead_after_ms <= hb.suspect_after_ms {
            return Err(bad(
                "heartbeat.dead_after_ms",
                format!("{} must exceed heartbeat.suspect_after_ms ({})", hb.dead_after_ms, hb.suspect_after_ms),
            ));
        }
        if hb.timeout_ms == 0 || hb.timeout_ms > hb.dead_after_ms {
            return Err(bad(
                "heartbeat.timeout_ms",
                format!("{} must be between 1 and heartbeat.dead_after_ms", hb.timeout_ms),
            ));
        }
        if hb.beacon_interval_ms >= hb.suspect_after_ms {
            return Err(bad(
                "heartbeat.beacon_interval_ms",
                format!(
                    "{} must be below heartbeat.suspect_after_ms ({}), or 0 for no beacons",
                    hb.beacon_interval_ms, hb.suspect_after_ms
                ),
            ));
        }
        if !(100..=600_000).contains(&self.fencing.timeout_ms) {
            return Err(bad("fencing.timeout_ms", format!("{} must be from 100 to 600000", self.fencing.timeout_ms)));
        }
        let t = &self.takeover;
        if !(100..=600_000).contains(&t.safety_margin_ms) {
            return Err(bad("takeover.safety_margin_ms", format!("{} must be from 100 to 600000", t.safety_margin_ms)));
        }
        if t.fence_hook_timeout_secs == 0 {
            return Err(bad("takeover.fence_hook_timeout_secs", "must be above 0".into()));
        }
        if t.enabled == Some(true) && self.peers.len() < 2 {
            return Err(bad(
                "takeover.enabled",
                format!(
                    "automatic takeover needs 3 hosts or more, witnesses included; this cluster has {}: one left \
                     alone cannot form a majority, so add a witness (an agent with `witness = true`)",
                    self.peers.len() + 1
                ),
            ));
        }
        if self.takeover_enabled() {
            if self.fencing.quorum == Some(false) {
                return Err(bad(
                    "fencing.quorum",
                    "cannot be false with automatic takeover on: a host cut off from the others would keep its \
                     vservers while a standby starts them"
                        .into(),
                ));
            }
            if hb.beacon_interval_ms == 0 || hb.beacon_interval_ms * 3 > self.fencing.timeout_ms {
                return Err(bad(
                    "heartbeat.beacon_interval_ms",
                    format!(
                        "{} must be above 0 and at most a third of fencing.timeout_ms ({}) with automatic takeover \
                         on: the lease is renewed by beacons",
                        hb.beacon_interval_ms, self.fencing.timeout_ms
                    ),
                ));
            }
        }
        let r = &self.restart;
        if r.backoff_initial_ms == 0 || r.backoff_max_ms < r.backoff_initial_ms {
            return Err(bad(
                "restart.backoff_max_ms",
                "must be at least restart.backoff_initial_ms, which must be above 0".into(),
            ));
        }
        if r.check_interval_ms == 0 {
            return Err(bad("restart.check_interval_ms", "must be above 0".into()));
        }
        if self.failures.window_secs == 0 {
            return Err(bad("failures.window_secs", "must be above 0".into()));
        }
        self.alerts.check().map_err(|(key, reason)| bad(&key, reason))?;
        if !(1..=100).contains(&self.announce.count) {
            return Err(bad("announce.count", format!("{} is not from 1 to 100", self.announce.count)));
        }
        if !(1..=60_000).contains(&self.announce.interval_ms) {
            return Err(bad("announce.interval_ms", format!("{} is not from 1 to 60000", self.announce.interval_ms)));
        }
        if self.rsync_timeout_secs == 0 {
            return Err(bad("rsync_timeout_secs", "must be above 0".into()));
        }
        if self.cgroup_parent.split('/').any(|c| c == ".." || c == ".") {
            return Err(bad("cgroup_parent", format!("{:?} may not hold . or ..", self.cgroup_parent)));
        }
        Ok(())
    }

    /// Whether this host's agent takes part in automatic takeover (see [`TakeoverConfig::enabled`]).
    pub fn takeover_enabled(&self) -> bool {
        self.takeover.enabled.unwrap_or(self.peers.len() >= 2)
    }

    /// The silence after which a host's vservers are taken over.
    pub fn takeover_timeout(&self) -> Duration {
        Duration::from_millis(self.fencing.timeout_ms + self.takeover.safety_margin_ms)
    }

    /// Whether the agent arms and pets the host watchdog.
    pub fn watchdog(&self) -> bool {
        self.fencing.watchdog.unwrap_or_else(|| self.takeover_enabled())
    }

    /// Whether the agent fences its vservers when its lease ends.
    pub fn quorum_fencing(&self) -> bool {
        self.fencing.quorum.unwrap_or_else(|| self.takeover_enabled())
    }

    /// Refuses a configuration whose traffic would travel in clear without the operator saying so.
    pub fn check_wire(&self, path_for_errors: &Path) -> Result<(), ConfigError> {
        if self.tls.is_none() && !self.insecure_plain_http {
            return Err(ConfigError::Value {
                path: path_for_errors.into(),
                key: "tls".into(),
                reason: "no [tls]: the cluster's traffic (and its secret) would travel in clear. Form the cluster \
                         with `vserver-agent init` on the first host and `vserver-agent join TOKEN` on the others, \
                         which write [tls]; or set insecure_plain_http = true to run without encryption"
                    .into(),
            });
        }
        Ok(())
    }

    /// Reads the cluster secret: the file's first line, which must not be empty.
    pub fn secret(&self, path_for_errors: &Path) -> Result<String, ConfigError> {
        Ok(self.secrets(path_for_errors)?.swap_remove(0))
    }

    /// Reads every secret of the secret file: the first line is the cluster secret this agent sends; each
    /// further non-empty line is an earlier (or the next) secret it still accepts from peers and operators,
    /// so the secret can be rotated one host at a time (docs/failover.md, the runbook). Each at least 16
    /// characters.
    pub fn secrets(&self, path_for_errors: &Path) -> Result<Vec<String>, ConfigError> {
        let bad =
            |reason: String| ConfigError::Value { path: path_for_errors.into(), key: "secret_file".into(), reason };
        let text = std::fs::read_to_string(&self.secret_file)
            .map_err(|e| bad(format!("{}: {e}", self.secret_file.display())))?;
        let mut lines = text.lines().map(str::trim);
        let first = lines.next().unwrap_or("");
        let mut secrets = vec![first.to_string()];
        secrets.extend(lines.filter(|l| !l.is_empty()).map(str::to_string));
        if let Some(n) = secrets.iter().position(|s| s.len() < 16) {
            return Err(bad(format!(
                "{} line {}: a secret must be at least 16 characters",
                self.secret_file.display(),
                n + 1
            )));
        }
        Ok(secrets)
    }

    /// The read-only tokens of `monitor_secret_file` (none without it), each at least 16 characters and none
    /// a cluster secret (`cluster`).
    pub fn monitor_secrets(&self, path_for_errors: &Path, cluster: &[String]) -> Result<Vec<String>, ConfigError> {
        let Some(file) = &self.monitor_secret_file else { return Ok(Vec::new()) };
        let bad = |reason: String| ConfigError::Value {
            path: path_for_errors.into(),
            key: "monitor_secret_file".into(),
            reason: format!("{}: {reason}", file.display()),
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let token = line.trim();
            if token.len() < 16 {
                return Err(bad(format!("line {}: a token must be at least 16 characters", n + 1)));
            }
            if cluster.iter().any(|c| c == token) {
                return Err(bad(format!(
                    "line {}: this is a cluster secret, which can do anything; a monitoring token must be another",
                    n + 1
                )));
            }
            tokens.push(token.to_string());
        }
        if tokens.is_empty() {
            return Err(bad("holds no token".into()));
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node = "h1"
listen = "127.0.0.1:7070"
secret_file = "/etc/vservers/cluster.secret"
[[peers]]
name = "h2"
url = "http://127.0.0.1:7071"
"#;

    fn err(text: &str) -> String {
        AgentConfig::parse(Path::new("agent.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c = AgentConfig::parse(Path::new("agent.toml"), GOOD).unwrap();
        assert_eq!(c.heartbeat, HeartbeatConfig::default());
        assert_eq!(c.vservers_dir, PathBuf::from("/vservers"));
        assert_eq!(c.peers[0].name, "h2");
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        assert!(err(&GOOD.replace("node = \"h1\"", "node = \"../h1\"")).contains("key `node`"));
        assert!(err(&format!("{GOOD}\nbogus = 1\n")).contains("bogus"));
        assert!(err(&GOOD.replace("\"h2\"", "\"h1\"")).contains("peers[0].name"));
        assert!(err(&GOOD.replace("http://127.0.0.1:7071", "ftp://x")).contains("peers[0].url"));
        assert!(err(&GOOD.replace("127.0.0.1:7070", "nowhere")).contains("listen"));
        let slow = format!("{GOOD}\n[heartbeat]\ninterval_ms = 1000\n");
        assert!(err(&slow).contains("heartbeat.suspect_after_ms"));
        let twice = format!("{GOOD}\n[[peers]]\nname = \"h2\"\nurl = \"http://127.0.0.1:7072\"\n");
        assert!(err(&twice).contains("listed twice"));
        assert!(err(&format!("{GOOD}\n[announce]\ncount = 0\n")).contains("announce.count"));
        assert!(err(&format!("{GOOD}\n[announce]\ninterval_ms = 0\n")).contains("announce.interval_ms"));
        let c = AgentConfig::parse(Path::new("agent.toml"), &format!("{GOOD}\n[announce]\ncount = 3\n")).unwrap();
        assert_eq!((c.announce.count, c.announce.interval_ms), (3, 1000));
    }

    #[test]
    fn alert_hooks_are_commands_or_webhooks_and_bad_ones_are_named() {
        let text =
            format!("{GOOD}\n[alerts]\nall = \"/usr/local/sbin/page\"\ntakeover = \"https://hooks.example.com/x\"\n");
        let c = AgentConfig::parse(Path::new("agent.toml"), &text).unwrap();
        use failover::alerts::AlertKind;
        assert_eq!(c.alerts.hook(AlertKind::Takeover), Some("https://hooks.example.com/x"));
        assert_eq!(c.alerts.hook(AlertKind::Fenced), Some("/usr/local/sbin/page"));
        assert!(c.alerts.any() && !AlertsConfig::default().any());
        let said = err(&format!("{GOOD}\n[alerts]\nfenced = \"page-me\"\n"));
        assert!(said.contains("alerts.fenced") && said.contains("absolute path"), "{said}");
        let said = err(&format!("{GOOD}\n[alerts]\nerror = \"https://\"\n"));
        assert!(said.contains("alerts.error"), "{said}");
        let said = err(&format!("{GOOD}\n[alerts]\ntimeout_secs = 0\n"));
        assert!(said.contains("alerts.timeout_secs") && said.contains("not from 1 to 600"), "{said}");
        assert!(err(&format!("{GOOD}\n[alerts]\npager = \"/x\"\n")).contains("pager"));
    }

    #[test]
    fn the_replaced_limits_are_refused_naming_their_new_keys() {
        let old = format!("{GOOD}\n[restart]\nmax_restarts = 3\n");
        let e = err(&old);
        assert!(e.contains("key `restart.max_restarts`") && e.contains("failures.max_restart"), "{e}");
        let old = format!("{GOOD}\n[takeover]\nmax_relocations_per_hour = 3\n");
        let e = err(&old);
        assert!(e.contains("takeover.max_relocations_per_hour") && e.contains("failures.max_relocate"), "{e}");
        let new = format!("{GOOD}\n[failures]\nwindow_secs = 600\nmax_restart = 3\nmax_relocate = 2\n");
        let c = AgentConfig::parse(Path::new("agent.toml"), &new).unwrap();
        assert_eq!(c.failures, FailuresConfig { window_secs: 600, max_restart: 3, max_relocate: 2 });
        assert!(err(&format!("{GOOD}\n[failures]\nwindow_secs = 0\n")).contains("failures.window_secs"));
        assert!(err(&format!("{GOOD}\n[failures]\nmax_restarts = 1\n")).contains("max_restarts"));
    }

    #[test]
    fn takeover_is_on_from_three_hosts_and_brings_its_fencing() {
        let two = AgentConfig::parse(Path::new("agent.toml"), GOOD).unwrap();
        assert!(!two.takeover_enabled() && !two.quorum_fencing() && !two.watchdog());
        let three = format!("{GOOD}\n[[peers]]\nname = \"h3\"\nurl = \"http://127.0.0.1:7072\"\n");
        let c = AgentConfig::parse(Path::new("agent.toml"), &three).unwrap();
        assert!(c.takeover_enabled() && c.quorum_fencing() && c.watchdog());
        assert_eq!(c.takeover_timeout(), Duration::from_millis(2400));
        // Two hosts cannot have it: the message says to add a witness.
        let forced = format!("{GOOD}\n[takeover]\nenabled = true\n");
        assert!(err(&forced).contains("takeover.enabled") && err(&forced).contains("witness"));
        // With takeover, no lease fencing and no beacons are refused.
        let unfenced = format!("{three}\n[fencing]\nquorum = false\n");
        assert!(err(&unfenced).contains("fencing.quorum"));
        let silent = format!("{three}\n[heartbeat]\nbeacon_interval_ms = 0\n");
        assert!(err(&silent).contains("heartbeat.beacon_interval_ms"));
        let margin = format!("{three}\n[takeover]\nsafety_margin_ms = 10\n");
        assert!(err(&margin).contains("takeover.safety_margin_ms"));
    }
}
