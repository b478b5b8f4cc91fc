//! The HTTP API's JSON types, used by the daemon and the CLI: what travels in a heartbeat, what
//! `GET /v1/status` reports, and the bodies of the routes the `vserver` and `vserver-stat` commands call
//! (a vserver's status, `clear`, `sync`, a migrate's progress, the event log). They serialize to the JSON of
//! the HTTP API (docs/api.md).

use serde::{Deserialize, Serialize};

pub use failover::events::TakeoverRecord;
pub use failover::wire::{
    Ack, Beacon, ErrorBody, Heartbeat, HeldReplica, MaintenanceMarkView, MaintenanceView, MigrationStatus, PeerState,
    PeerStatus, RejectCounters, SignedHeartbeat, VserverState, VserverSummary,
};

/// What a vserver is meant to be, by the operator's last word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    /// Started by intent: the agent keeps it running.
    Running,
    /// Stopped by intent (or never started): the agent leaves it stopped.
    Stopped,
}

/// One vserver of this node as `GET /v1/status` and `GET /v1/vservers/NAME` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VserverStatus {
    /// Its name.
    pub name: String,
    /// Observed state.
    pub state: VserverState,
    /// The operator's last word.
    pub intent: Intent,
    /// Seconds since it started, when running.
    pub uptime_secs: Option<u64>,
    /// Its addresses (`dev:addr/prefix`).
    pub addresses: Vec<String>,
    /// It shares the host's network namespace (empty IPROOT with S_UNSAFE hostnet).
    #[serde(default)]
    pub host_network: bool,
    /// Processes in its cgroup.
    pub processes: usize,
    /// What it holds against its limits (flattened: `tasks`, `pids_limit`, `memory_bytes`,
    /// `memory_limit_bytes`, `disk_bytes`, `disk_limit_bytes`, `cpu_weight`, `io_weight`; each absent or null
    /// where unknown, and absent from agents of earlier releases).
    #[serde(flatten)]
    pub resources: crate::lifecycle::Resources,
    /// Restarts this host's agent made after it died on its own, within the failure window.
    pub restarts: u32,
    /// When each of those restarts was made, ms since the Unix epoch, oldest first.
    #[serde(default)]
    pub restarted_unix_ms: Vec<u64>,
    /// Fences of it on this host within the failure window (its host lost its lease, or the watchdog or its
    /// keeper fired): counted apart from crashes, never a reason for backoff or state error.
    #[serde(default)]
    pub fences: u32,
    /// When each of those fences happened, ms since the Unix epoch, oldest first.
    #[serde(default)]
    pub fenced_unix_ms: Vec<u64>,
    /// Its relocations (takeovers) within the failure window, in the whole cluster (from the event log).
    #[serde(default)]
    pub relocations: u32,
    /// When each of those relocations was decided, ms since the Unix epoch, oldest first.
    #[serde(default)]
    pub relocated_unix_ms: Vec<u64>,
    /// Why it is in state `error` (`restarted 5 times in 3600 s`), until an operator clears it; set also
    /// while it runs if it was started outside the agent meanwhile.
    #[serde(default)]
    pub error: Option<String>,
    /// The last error seen starting or stopping it, in words.
    pub last_error: Option<String>,
}

/// The answer to `POST /v1/vservers/NAME/clear`: what was forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearReport {
    /// The vserver.
    pub vserver: String,
    /// Its restarts on this host within the failure window, forgotten.
    pub restarts: u32,
    /// Its relocations within the failure window, forgotten in the whole cluster.
    pub relocations: u32,
    /// The error it was in, lifted.
    pub error: Option<String>,
    /// Its status on this host after the clear (absent when it is not configured on this host).
    pub status: Option<VserverStatus>,
}

/// This node in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// The agent's version.
    pub version: String,
    /// How its traffic is protected (absent from an agent of an earlier release).
    #[serde(default)]
    pub wire: Option<WireStatus>,
}

/// How an agent's traffic is protected, and until when its certificates are valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStatus {
    /// `mutual_tls` (TLS, peers and clients admitted by the cluster CA's certificates; the secret never
    /// travels), `tls` (TLS, a bearer secret inside), or `plain` (plain HTTP: the secret travels in clear).
    pub mode: String,
    /// Plain HTTP is accepted on the port too (`insecure_plain_http`).
    pub plain_accepted: bool,
    /// When this host's certificate expires, ms since the Unix epoch.
    pub certificate_not_after_unix_ms: Option<u64>,
    /// When the cluster CA's certificate expires, ms since the Unix epoch.
    pub ca_not_after_unix_ms: Option<u64>,
}

/// Replication of one vserver of this host (its primary) to one standby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The vserver.
    pub vserver: String,
    /// The standby.
    pub standby: String,
    /// A sync to it runs now.
    pub syncing: bool,
    /// Start of the last sync that completed (the standby's copy holds nothing newer), ms since the epoch.
    pub last_complete_unix_ms: Option<u64>,
    /// Seconds since then: how far the standby's copy is behind.
    pub lag_secs: Option<u64>,
    /// Bytes rsync sent in the last complete sync.
    pub bytes_sent: Option<u64>,
    /// Files it transferred.
    pub files_transferred: Option<u64>,
    /// Its duration, ms.
    pub duration_ms: Option<u64>,
    /// How long the vserver was frozen for it (consistent mode), ms.
    pub freeze_ms: Option<u64>,
    /// Start of the last attempt, ms since the epoch.
    pub last_attempt_unix_ms: Option<u64>,
    /// Why the last attempt failed, in words (none when it succeeded).
    pub last_error: Option<String>,
    /// File attributes the last copy could not carry (e.g. immutable flags).
    pub warning: Option<String>,
    /// Where the vserver's tree and conf are: `periodic`, `continuous`, `shared` or `block` (absent from a host
    /// of an earlier release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// What a crash of this host would lose now, in seconds of writes (recovery point objective): for
    /// `continuous` while watched, the change lag below; for `periodic`, the interval plus the last sync's
    /// duration; 0 for `shared` and `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_secs: Option<f64>,
    /// `continuous`, while this host watches the tree: ms since the oldest change not yet committed on the
    /// standby was seen (0 when none is pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_lag_ms: Option<u64>,
    /// `continuous`: when the last batch (or full pass of the watch) committed on the standby, ms since the
    /// epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch_unix_ms: Option<u64>,
    /// `continuous`: sessions committed on the standby since the watch began (batches and full passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<u64>,
}

/// The body of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node.
    pub node: NodeStatus,
    /// Every configured peer.
    pub peers: Vec<PeerStatus>,
    /// This node's vservers (every one with a conf file).
    pub vservers: Vec<VserverStatus>,
    /// Heartbeats refused since start.
    pub rejected_heartbeats: RejectCounters,
    /// Replication of the vservers this host is primary of, per standby.
    #[serde(default)]
    pub replication: Vec<ReplicationStatus>,
    /// Replicas this host holds as a standby.
    #[serde(default)]
    pub replicas: Vec<HeldReplica>,
    /// The cluster's ownership table as this host knows it, and its Raft state; absent until it is open.
    #[serde(default)]
    pub ownership: Option<OwnershipStatus>,
    /// Takeover and fencing on this host.
    #[serde(default)]
    pub failover: FailoverStatus,
    /// The takeovers in the cluster's event log, oldest first.
    #[serde(default)]
    pub takeovers: Vec<TakeoverRecord>,
    /// The vservers the cluster's event log puts in state error (the relocation limit), with the reason, until
    /// an operator clears them: shown by every host, also those that do not run them.
    #[serde(default)]
    pub relocation_errors: std::collections::BTreeMap<String, String>,
}

/// Takeover and fencing as configured on one host, and its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// Automatic takeover is on (this host takes part, and takes over when it coordinates).
    pub takeover: bool,
    /// The takeover timeout (ms): the lease length plus the safety margin.
    pub takeover_timeout_ms: u64,
    /// This host is a witness (it runs no vservers).
    pub witness: bool,
    /// The agent fences its vservers when its lease ends.
    pub quorum_fencing: bool,
    /// The agent pets the host watchdog.
    pub watchdog: bool,
    /// What is left of this host's lease, in ms; absent when it needs none (no cluster yet, a single voter).
    pub lease_remaining_ms: Option<u64>,
    /// Maintenance as the cluster decided it: for the whole cluster (fencing and takeover disarmed
    /// everywhere) and per host.
    #[serde(default)]
    pub maintenance: MaintenanceView,
    /// On the coordinator: the takeovers it runs now, as (vserver, the host it is taken from).
    #[serde(default)]
    pub takeovers_in_progress: Vec<(String, String)>,
}

/// The ownership table (vserver -> owner host and epoch, kept by consensus) as one host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipStatus {
    /// This host's Raft state: leader, term, voters, learners, log positions.
    pub raft: failover::ownership::MetricsSummary,
    /// Each vserver's owner (none once cleared) and the epoch of that decision.
    pub owners: std::collections::BTreeMap<String, failover::ownership::OwnerEntry>,
}

/// What one sync to one standby did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// The standby.
    pub standby: String,
    /// Whether the copy became the standby's current generation.
    pub ok: bool,
    /// Bytes rsync sent (all passes).
    pub bytes_sent: u64,
    /// Files transferred (all passes).
    pub files_transferred: u64,
    /// Its duration, ms.
    pub duration_ms: u64,
    /// How long the vserver was frozen (consistent mode), ms.
    pub freeze_ms: Option<u64>,
    /// Why it failed, in words.
    pub error: Option<String>,
    /// File attributes the copy could not carry.
    pub warning: Option<String>,
    /// Each step's duration, ms, in order (begin, tree, frozen tree, conf, commit).
    #[serde(default)]
    pub phases_ms: Vec<(String, u64)>,
}

/// One event as `GET /v1/events` lists it (and `recent` and `failed` of `GET /v1/cluster`). Its JSON has
/// `at_unix_ms` and, for the clients of the previous release, `at_ms` (the same time; deprecated, it goes in a
/// later release); either is read, so an answer of an agent of the previous release reads too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EventJson", try_from = "EventJson")]
pub struct EventView {
    /// Its sequence number, from 1, never reused.
    pub seq: u64,
    /// When it happened, ms since the Unix epoch, by the reporting host's clock.
    pub at_unix_ms: u64,
    /// The host that reported it.
    pub host: String,
    /// Its kind.
    pub kind: String,
    /// The vserver it is about, if any.
    pub vserver: Option<String>,
    /// What happened, in words (for `takeover`: `takeover {json}`).
    pub text: String,
}

/// [`EventView`]'s JSON: both names of its time written, either read.
#[derive(Serialize, Deserialize)]
struct EventJson {
    seq: u64,
    #[serde(default)]
    at_unix_ms: Option<u64>,
    /// Deprecated: `at_unix_ms` under its former name.
    #[serde(default)]
    at_ms: Option<u64>,
    host: String,
    kind: String,
    vserver: Option<String>,
    text: String,
}

impl From<EventView> for EventJson {
    fn from(e: EventView) -> Self {
        let EventView { seq, at_unix_ms, host, kind, vserver, text } = e;
        Self { seq, at_unix_ms: Some(at_unix_ms), at_ms: Some(at_unix_ms), host, kind, vserver, text }
    }
}

impl TryFrom<EventJson> for EventView {
    type Error = &'static str;

    fn try_from(e: EventJson) -> Result<Self, Self::Error> {
        let at_unix_ms = e.at_unix_ms.or(e.at_ms).ok_or("missing field `at_unix_ms`")?;
        Ok(Self { seq: e.seq, at_unix_ms, host: e.host, kind: e.kind, vserver: e.vserver, text: e.text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Resources;

    /// An event answers `at_unix_ms` and `at_ms` (the same); an agent of the previous release answered `at_ms`
    /// alone.
    #[test]
    fn an_event_answers_both_names_of_its_time_and_reads_either() {
        let event = EventView {
            seq: 41,
            at_unix_ms: 1763890000123,
            host: "h1".into(),
            kind: "host_dead".into(),
            vserver: None,
            text: "h0 confirmed dead".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 41, "at_unix_ms": 1763890000123_u64, "at_ms": 1763890000123_u64, "host": "h1",
                               "kind": "host_dead", "vserver": null, "text": "h0 confirmed dead"})
        );
        assert_eq!(serde_json::from_value::<EventView>(json).unwrap(), event);
        let previous = r#"[{"seq":41,"at_ms":1763890000123,"host":"h1","kind":"host_dead","vserver":null,
            "text":"h0 confirmed dead"}]"#;
        assert_eq!(serde_json::from_str::<Vec<EventView>>(previous).unwrap(), std::slice::from_ref(&event));
        let new_only = r#"{"seq":41,"at_unix_ms":1763890000123,"host":"h1","kind":"host_dead","vserver":null,
            "text":"h0 confirmed dead"}"#;
        assert_eq!(serde_json::from_str::<EventView>(new_only).unwrap(), event);
        let neither = r#"{"seq":41,"host":"h1","kind":"k","vserver":null,"text":"t"}"#;
        assert!(serde_json::from_str::<EventView>(neither).unwrap_err().to_string().contains("at_unix_ms"));
    }

    /// A status report of an agent of the previous release (maintenance marks with `since_ms` alone) reads, and
    /// this release's answers both names.
    #[test]
    fn the_maintenance_of_a_status_report_reads_either_name_and_answers_both() {
        let previous = r#"{"takeover":true,"takeover_timeout_ms":2000,"witness":false,"quorum_fencing":true,
            "watchdog":true,"lease_remaining_ms":1043,
            "maintenance":{"cluster":null,"hosts":{"h3":{"since_ms":1718000040000,"by":"h1"}}},
            "takeovers_in_progress":[]}"#;
        let failover: FailoverStatus = serde_json::from_str(previous).unwrap();
        let mark = &failover.maintenance.hosts["h3"];
        assert_eq!((mark.since_unix_ms, mark.by.as_str()), (1718000040000, "h1"));
        let json = serde_json::to_value(&failover).unwrap();
        assert_eq!(json["maintenance"]["hosts"]["h3"]["since_unix_ms"], 1718000040000_u64, "{json}");
        assert_eq!(json["maintenance"]["hosts"]["h3"]["since_ms"], 1718000040000_u64, "{json}");
    }

    #[test]
    fn a_vserver_status_of_an_earlier_release_reads_with_its_resources_unknown() {
        // What an agent of the previous release sends: no resource fields.
        let old = r#"{"name":"web","state":"running","intent":"running","uptime_secs":7,"addresses":[],
            "processes":2,"restarts":0,"last_error":null}"#;
        let status: VserverStatus = serde_json::from_str(old).unwrap();
        assert_eq!(status.resources, Resources::default());
        assert_eq!(status.processes, 2);

        let resources = Resources {
            tasks: Some(5),
            pids_limit: Some(4096),
            memory_bytes: Some(1 << 20),
            memory_limit_bytes: Some(64 << 20),
            disk_bytes: Some(3 << 20),
            disk_limit_bytes: Some(10 << 20),
            cpu_weight: Some(500),
            io_weight: Some(200),
        };
        let new = VserverStatus { resources, ..status };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["pids_limit"], 4096, "the fields sit beside the others: {json}");
        assert_eq!(json["disk_limit_bytes"], 10 << 20);
        assert_eq!(serde_json::from_value::<VserverStatus>(json).unwrap(), new);
    }
}
