//! What agents send each other, and the answers: the JSON bodies of the agent-to-agent routes (probes,
//! replica sessions, promotes, migrates, placements, maintenance forwarding). Their serialized form is the
//! wire: a field is only ever added, with a default, so that hosts of two releases speak during a rolling
//! upgrade. [`crate::peer`] sends them; the agent's HTTP API receives them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ownership::types::{Maintenance, MaintenanceMark};

/// What a vserver is, observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VserverState {
    /// Its process 1 runs.
    Running,
    /// Not running.
    Stopped,
    /// Not running, and an operator's start or restart failed; left alone until an operator starts it.
    Failed,
    /// Not running, and its failure limit was reached (`failures.max_restart` restarts or
    /// `failures.max_relocate` relocations within `failures.window_secs`): never restarted nor taken over
    /// until an operator clears it (`vserver NAME clear`).
    Error,
}

/// The part of a vserver's status (`GET /v1/vservers/NAME`, the answer to a promote) another host reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct StateAnswer {
    /// What it is.
    pub state: VserverState,
}

/// A replica a host holds as a standby: its current (complete) generation (`GET /v1/replicas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldReplica {
    /// The vserver.
    pub vserver: String,
    /// The host it came from.
    pub source: String,
    /// Which generation (`a` or `b`).
    pub generation: String,
    /// When its sync started on the source, ms since the epoch.
    pub started_unix_ms: u64,
    /// When it finished.
    pub finished_unix_ms: u64,
    /// Seconds since it started.
    pub age_secs: u64,
    /// Its last pass ran with the vserver frozen.
    pub consistent: bool,
    /// `sync`, `batch` (continuous replication), `migrate` or `kept`.
    pub kind: String,
    /// The points in time kept of it (continuous replication), oldest first; absent when none (and from a
    /// host of an earlier release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<crate::points::Point>,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A sentence saying what was wrong.
    pub error: String,
}

/// The body of `POST /v1/takeover/probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// The host the coordinator believes dead.
    pub host: String,
    /// The silence that makes this voter promise.
    #[serde(deserialize_with = "crate::whole::exact")]
    pub silent_ms: u64,
    /// How long the promise lasts.
    #[serde(deserialize_with = "crate::whole::exact")]
    pub promise_ms: u64,
}

/// The answer to a probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    /// How long this voter has not heard the host.
    pub silence_ms: u64,
    /// Whether it promised to acknowledge none of the host's beacons for `promise_ms`.
    pub promised: bool,
}

/// The body of `POST /v1/vservers/NAME/promote` (the receiving host's side of a migrate or a takeover).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The host the vserver comes from.
    pub source: String,
    /// Start it once promoted (it ran on the source).
    pub start: bool,
    /// The ownership epoch that gives it to this host: refused if the table is at a newer one, and waited
    /// for (a few seconds) while this host's copy of the table has not reached it.
    #[serde(default, deserialize_with = "crate::whole::optional")]
    pub epoch: Option<u64>,
    /// Asked again, at the same epoch, by a coordinator that finds this host owning the vserver without running
    /// it (the first promote never ran: this host restarted, or the request was lost): already running at that
    /// epoch is a success, and, as any promote that starts the vserver, it is refused once the cluster's event
    /// log no longer means the vserver to run (an operator's stop recorded since). Sent only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
}

/// How long a promote's phases took on the target (answered in the `x-promote-ms` and `x-start-ms` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromoteTimes {
    /// The replica made the running tree.
    pub promote_ms: Option<u64>,
    /// The vserver started.
    pub start_ms: Option<u64>,
}

impl PromoteTimes {
    /// The header carrying [`PromoteTimes::promote_ms`].
    pub const PROMOTE_HEADER: &'static str = "x-promote-ms";
    /// The header carrying [`PromoteTimes::start_ms`].
    pub const START_HEADER: &'static str = "x-start-ms";

    /// The phases known, named.
    pub fn phases(&self) -> Vec<(String, u64)> {
        [("promote", self.promote_ms), ("start", self.start_ms)]
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
            .collect()
    }
}

/// What `GET /v1/replicas/NAME/preflight` tells a migrating source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preflight {
    /// Free bytes on the replica store's file system.
    pub free_bytes: u64,
    /// The receiving rsync's version (`rsync 3.2.7`), when usable.
    pub rsync: Option<String>,
    /// Why rsync cannot be used there (missing, too old).
    pub rsync_error: Option<String>,
    /// The vserver runs or is configured on this host already.
    pub present: bool,
    /// Bytes already held by the replica generation a migrate's copy fills (its basis; room it needs no more).
    #[serde(default)]
    pub staging_bytes: u64,
    /// What is left of the host's lease, ms: zero while it may start nothing (just back, not yet acknowledged
    /// by a majority); absent where it needs none (and from a host of an earlier release).
    #[serde(default)]
    pub lease_left_ms: Option<u64>,
}

/// Header of an operator's request about a vserver (`sync`, `clear`, `announce`, `migrate`) that an agent sends
/// to another: the sender's name. The host it goes to answers the request itself and never passes it on again
/// (see [`FORWARDED_TO_HEADER`]). An agent of an earlier release ignores it.
pub const FORWARDED_BY_HEADER: &str = "x-vserver-forwarded-by";
/// Header of the answer to an operator's request that the agent asked passed on to the vserver's owner: the
/// owner's name. The body and status are the owner's.
pub const FORWARDED_TO_HEADER: &str = "x-vserver-forwarded-to";

/// The body of `POST /v1/vservers/NAME/migrate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The host to move to.
    pub target: String,
}

/// Where a migrate is (`GET /v1/vservers/NAME/migration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// The vserver.
    pub vserver: String,
    /// Where it moves from.
    pub source: String,
    /// Where it moves to.
    pub target: String,
    /// `checking`, `precopy`, `stopping`, `final`, `starting`, `recording`, `done`, `failed`.
    pub phase: String,
    /// The pre-copy pass under way (1-based), or the number made.
    pub pass: u32,
    /// Bytes of the tree transferred so far in the current pass.
    pub pass_bytes: u64,
    /// Size of the tree (bytes in its files).
    pub tree_bytes: u64,
    /// Bytes sent by all passes so far.
    pub bytes_sent: u64,
    /// When it started, ms since the epoch.
    pub started_unix_ms: u64,
    /// The outage it caused (stop to confirmed start), ms, once done.
    pub outage_ms: Option<u64>,
    /// Each phase's duration, ms, in order.
    pub phases_ms: Vec<(String, u64)>,
    /// What the final pass copied: only what changed since the last pre-copy pass started (how many paths),
    /// or the whole tree and why. Set when the final pass ends.
    #[serde(default)]
    pub final_pass: Option<String>,
    /// Why it failed, and what was done about it.
    pub error: Option<String>,
    /// Whether it has ended (done or failed).
    pub finished: bool,
}

/// The body of `POST /v1/replicas/NAME/begin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    /// The sending (primary) host.
    pub source: String,
}

/// The answer to `begin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeginReply {
    /// The session the tunnel and the commit must name.
    pub session: String,
    /// The generation being filled (`a` or `b`).
    pub generation: String,
}

/// The body of `POST /v1/replicas/NAME/commit` and `/abort`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The session.
    pub session: String,
    /// When the sync started on the source (ms since the Unix epoch).
    #[serde(default, deserialize_with = "crate::whole::exact")]
    pub started_unix_ms: u64,
    /// Whether its last pass ran frozen.
    #[serde(default)]
    pub consistent: bool,
    /// `sync` or `migrate`.
    #[serde(default)]
    pub kind: Option<String>,
    /// `NAME.conf` and `NAME.sh`, carried in the commit when small (else sent by rsync before it): the standby
    /// writes them into the generation before it becomes current.
    #[serde(default)]
    pub conf: Option<Vec<ConfFile>>,
}

/// A conf file carried in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfFile {
    /// `NAME.conf` or `NAME.sh`.
    pub name: String,
    /// Its permission bits.
    #[serde(deserialize_with = "crate::whole::exact")]
    pub mode: u32,
    /// Its content, base64.
    pub content: String,
}

/// The answer to `abort`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AbortReply {
    /// What the standby's receiving rsyncs said when they failed.
    pub receiver_errors: Option<String>,
}

/// The body of `POST /v1/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// On or off.
    pub on: bool,
    /// The host (default: the agent asked); not with `cluster`.
    #[serde(default)]
    pub host: Option<String>,
    /// The whole cluster instead of one host.
    #[serde(default)]
    pub cluster: bool,
    /// The host an operator asked, when another forwards the request to the coordinator (default: this one).
    #[serde(default)]
    pub asked_through: Option<String>,
}

/// Maintenance as the API shows it (`GET` and `POST /v1/maintenance`, `failover.maintenance` of `/v1/status`,
/// `maintenance` of `/v1/cluster`): the table's [`Maintenance`], each mark's time named as every other time of
/// the API. The table's own serialization (Raft entries and snapshots) stays as it is: never this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    /// The whole cluster: no host fences itself and no takeover happens.
    pub cluster: Option<MaintenanceMarkView>,
    /// Hosts in maintenance: each keeps its vservers running, never fences, and is never taken over.
    pub hosts: BTreeMap<String, MaintenanceMarkView>,
}

impl From<&Maintenance> for MaintenanceView {
    fn from(m: &Maintenance) -> Self {
        Self {
            cluster: m.cluster.as_ref().map(MaintenanceMarkView::from),
            hosts: m.hosts.iter().map(|(h, mark)| (h.clone(), mark.into())).collect(),
        }
    }
}

impl From<MaintenanceView> for Maintenance {
    fn from(m: MaintenanceView) -> Self {
        Self {
            cluster: m.cluster.map(MaintenanceMark::from),
            hosts: m.hosts.into_iter().map(|(h, mark)| (h, mark.into())).collect(),
        }
    }
}

/// Since when, and through which host, maintenance is on, as the API shows it. Its JSON has `since_unix_ms`
/// and, for the clients of the previous release, `since_ms` (the same time; deprecated, it goes in a later
/// release); either is read, so an answer of an agent of the previous release reads too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "MarkJson", try_from = "MarkJson")]
pub struct MaintenanceMarkView {
    /// When it was turned on, ms since the Unix epoch, by the asking host's clock.
    pub since_unix_ms: u64,
    /// The host through which it was asked.
    pub by: String,
}

impl From<&MaintenanceMark> for MaintenanceMarkView {
    fn from(mark: &MaintenanceMark) -> Self {
        Self { since_unix_ms: mark.since_ms, by: mark.by.clone() }
    }
}

impl From<MaintenanceMarkView> for MaintenanceMark {
    fn from(mark: MaintenanceMarkView) -> Self {
        Self { since_ms: mark.since_unix_ms, by: mark.by }
    }
}

/// [`MaintenanceMarkView`]'s JSON: both names written, either read.
#[derive(Serialize, Deserialize)]
struct MarkJson {
    #[serde(default)]
    since_unix_ms: Option<u64>,
    /// Deprecated: `since_unix_ms` under its former name.
    #[serde(default)]
    since_ms: Option<u64>,
    by: String,
}

impl From<MaintenanceMarkView> for MarkJson {
    fn from(mark: MaintenanceMarkView) -> Self {
        Self { since_unix_ms: Some(mark.since_unix_ms), since_ms: Some(mark.since_unix_ms), by: mark.by }
    }
}

impl TryFrom<MarkJson> for MaintenanceMarkView {
    type Error = &'static str;

    fn try_from(json: MarkJson) -> Result<Self, Self::Error> {
        let since_unix_ms = json.since_unix_ms.or(json.since_ms).ok_or("missing field `since_unix_ms`")?;
        Ok(Self { since_unix_ms, by: json.by })
    }
}

// Heartbeats and beacons (see `crate::membership`).

/// How this node judges a peer from the heartbeats it hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Never heard since this agent started.
    Unknown,
    /// Heard within the suspicion threshold.
    Alive,
    /// Silent past the suspicion threshold.
    Suspect,
    /// Silent past the dead threshold.
    Dead,
}

/// One vserver in a heartbeat: enough for peers to know what runs where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VserverSummary {
    /// Its name.
    pub name: String,
    /// Observed state.
    pub state: VserverState,
}

/// The body of `POST /v1/heartbeat`, signed by [`SignedHeartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Sender's node name.
    pub node: String,
    /// Grows at every start of the sender's agent, so a restarted peer is recognised.
    pub incarnation: u64,
    /// Grows at every heartbeat of one incarnation.
    pub seq: u64,
    /// Sender's wall clock, milliseconds since the Unix epoch (informational only: never used for timing).
    pub sent_unix_ms: u64,
    /// The sender's vservers.
    pub vservers: Vec<VserverSummary>,
    /// The sender stands outside fencing (it, or the whole cluster, is in maintenance, as its copy of the table
    /// says): the coordinator does not take it over while this is its last word, whatever the table says
    /// since (it may not have heard that maintenance ended). Sent only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
}

/// The small form of a heartbeat, sent by UDP besides the HTTP heartbeat and more often: a lost datagram
/// is not retried, and the next one is not held up behind it the way a TCP stream is behind a lost segment.
/// It proves the sender alive; the vservers travel with the HTTP heartbeat alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// Sender's node name.
    pub node: String,
    /// Its incarnation (as in [`Heartbeat`]).
    pub incarnation: u64,
    /// The number of the sender's newest heartbeat or beacon (one count for both).
    pub seq: u64,
    /// The newest beacon the sender heard from each peer lately: each peer learns from it that the sender
    /// hears it (its lease, see `heartbeat.rs`).
    #[serde(default)]
    pub acks: Vec<Ack>,
}

/// In a beacon: "I heard `node`'s beacon (`incarnation`, `seq`)".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The peer heard.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The number of its newest beacon heard.
    pub seq: u64,
}

/// A heartbeat with an HMAC-SHA256 of its JSON under the cluster secret, hex encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHeartbeat {
    /// The heartbeat, as the exact JSON text that was signed.
    pub body: String,
    /// Hex HMAC-SHA256 of `body`.
    pub signature: String,
}

/// One peer as `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Alive, suspect, dead or unknown.
    pub state: PeerState,
    /// Milliseconds since its last accepted heartbeat.
    pub last_heard_ms: Option<u64>,
    /// Round-trip time of our last heartbeat to it, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its incarnation as last heard.
    pub incarnation: Option<u64>,
    /// Times it was seen to restart (a new incarnation).
    pub restarts_seen: u64,
    /// Its vservers as last heard.
    pub vservers: Vec<VserverSummary>,
    /// Its last heartbeat said it stands outside fencing (maintenance).
    #[serde(default)]
    pub maintenance: bool,
    /// This host watches it (exchanges beacons with it and judges its silence): false for a host that neither
    /// votes nor shares a vserver with this one, when this one does not vote; its state is then unknown here.
    #[serde(default = "yes")]
    pub watched: bool,
    /// This host sends it heartbeats: false on a voter for a host that does not vote and shares no vserver
    /// with it (beacons alone go there), and wherever `watched` is false.
    #[serde(default = "yes")]
    pub heartbeats: bool,
}

fn yes() -> bool {
    true
}

/// Counters of heartbeats refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectCounters {
    /// From a node not in the configuration.
    pub unknown_node: u64,
    /// With a signature that does not match.
    pub bad_signature: u64,
    /// Malformed, or older than what was already heard.
    pub malformed_or_stale: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark answers `since_unix_ms` and `since_ms` (the same); an agent of the previous release answered
    /// `since_ms` alone, and the table's own serialization (Raft entries and snapshots) keeps `since_ms` alone.
    #[test]
    fn a_maintenance_mark_answers_both_names_and_reads_either() {
        let table = Maintenance {
            cluster: None,
            hosts: [("h1".to_string(), MaintenanceMark { since_ms: 1718000040000, by: "h0".into() })].into(),
        };
        let view = MaintenanceView::from(&table);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cluster": null,
                               "hosts": {"h1": {"since_unix_ms": 1718000040000_u64, "since_ms": 1718000040000_u64,
                                                "by": "h0"}}})
        );
        assert_eq!(serde_json::from_value::<MaintenanceView>(json).unwrap(), view);
        let previous = r#"{"cluster": {"since_ms": 1718000050000, "by": "h2"}, "hosts": {}}"#;
        let read: MaintenanceView = serde_json::from_str(previous).unwrap();
        assert_eq!(read.cluster, Some(MaintenanceMarkView { since_unix_ms: 1718000050000, by: "h2".into() }));
        let new_only = r#"{"cluster": {"since_unix_ms": 7, "by": "h2"}, "hosts": {}}"#;
        assert_eq!(serde_json::from_str::<MaintenanceView>(new_only).unwrap().cluster.unwrap().since_unix_ms, 7);
        let neither = serde_json::from_str::<MaintenanceView>(r#"{"cluster": {"by": "h2"}, "hosts": {}}"#);
        assert!(neither.unwrap_err().to_string().contains("since_unix_ms"));
        assert_eq!(Maintenance::from(view), table);
        let stored = serde_json::to_value(&table).unwrap();
        assert_eq!(stored["hosts"]["h1"], serde_json::json!({"since_ms": 1718000040000_u64, "by": "h0"}));
    }

    /// `again` crosses releases: a sender leaves it out when false, and a body without it reads as false.
    #[test]
    fn a_promote_asked_once_reads_and_writes_as_before() {
        let once = PromoteRequest { source: "h0".into(), start: true, epoch: Some(4), again: false };
        assert_eq!(serde_json::to_string(&once).unwrap(), r#"{"source":"h0","start":true,"epoch":4}"#);
        let read: PromoteRequest = serde_json::from_str(r#"{"source":"h0","start":true,"epoch":4}"#).unwrap();
        assert!(!read.again);
        let again = PromoteRequest { again: true, ..once };
        let text = serde_json::to_string(&again).unwrap();
        assert!(serde_json::from_str::<PromoteRequest>(&text).unwrap().again, "{text}");
    }
}

/// A request extension the server adds when the connection presented a client certificate signed by the
/// cluster CA (verified in the TLS handshake): such a request needs no bearer secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Certified;

/// The answer of `GET /v1/cluster/seed` (internal): a host's cluster file, for the coordinator to take into the
/// cluster's table once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReply {
    /// The host whose file it is.
    pub host: String,
    /// Its entries, `[defaults]` written into each.
    pub entries: BTreeMap<String, crate::placement::VserverEntry>,
}
