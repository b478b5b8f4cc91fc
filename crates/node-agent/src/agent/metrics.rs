//! `GET /metrics`: the agent's state for Prometheus, built from a status report at each scrape, so it can
//! never disagree with `GET /v1/status`. Two formats, by the request's `Accept`: the Prometheus text format
//! (0.0.4), unless OpenMetrics is preferred.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::lifecycle::Resources;
use crate::model::{PeerState, StatusReport, VserverState};

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what Prometheus and promtool read, and the default.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it prefers `application/openmetrics-text`
    /// (a higher quality than `text/plain` and at least that of `*/*`), else the text format, also when there
    /// is no header or it cannot be read.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let (mut open, mut plain, mut any) = (0.0f32, 0.0f32, 0.0f32);
        for range in accept.unwrap_or_default().split(',') {
            let Ok(mime) = range.trim().parse::<mime::Mime>() else { continue };
            let q = mime.get_param("q").and_then(|q| q.as_str().parse().ok()).unwrap_or(1.0f32);
            let slot = match (mime.type_().as_str(), mime.subtype().as_str()) {
                ("application", "openmetrics-text") => &mut open,
                ("text", "plain" | "*") => &mut plain,
                ("*", "*") => &mut any,
                _ => continue,
            };
            *slot = slot.max(q);
        }
        if open > 0.0 && open > plain && open >= any {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The content type of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The event kinds counted from the first scrape on, seen or not (others appear once seen).
const COUNTED_KINDS: [&str; 7] = {
    use failover::events::kinds::*;
    [HOST_DEAD, FENCED, TAKEOVER, TAKEOVER_FAILED, MIGRATE, MIGRATE_FAILED, RESTART]
};

type Labels = Vec<(&'static str, String)>;

/// One gauge of a vserver's resources: its name, unit and help, and the value it shows.
type ResourceMetric = (&'static str, Option<Unit>, &'static str, fn(&Resources) -> Option<u64>);

const PEER_STATES: [(PeerState, &str); 4] = [
    (PeerState::Unknown, "unknown"),
    (PeerState::Alive, "alive"),
    (PeerState::Suspect, "suspect"),
    (PeerState::Dead, "dead"),
];
const VSERVER_STATES: [(VserverState, &str); 4] = [
    (VserverState::Running, "running"),
    (VserverState::Stopped, "stopped"),
    (VserverState::Failed, "failed"),
    (VserverState::Error, "error"),
];

/// The metrics text for one status report and the event log's counts by kind (see
/// [`EventLog::counts`](super::events::EventLog::counts)), in `format`.
pub fn render(status: &StatusReport, events: &BTreeMap<String, u64>, format: Format) -> String {
    let mut registry = Registry::with_prefix("vserver");
    let node = &status.node;

    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("node", node.name.clone()), ("version", node.version.clone())]).set(1);
    registry.register("agent_info", "This agent: node name and version (always 1)", info);
    let incarnation = Gauge::<i64>::default();
    incarnation.set(i64::try_from(node.incarnation).unwrap_or(i64::MAX));
    registry.register("agent_incarnation", "Grows at every start of this agent", incarnation);
    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(node.uptime_secs).unwrap_or(i64::MAX));
    registry.register_with_unit("agent_uptime", "Time since this agent started", Unit::Seconds, uptime);
    if let Some(wire) = &node.wire {
        let plain = Gauge::<i64>::default();
        plain.set(i64::from(wire.mode == "plain" || wire.plain_accepted));
        registry.register(
            "agent_plain_http",
            "1 when this agent serves plain HTTP (insecure_plain_http), in which the cluster secret travels in clear",
            plain,
        );
        let expiry = Family::<Labels, Gauge>::default();
        for (which, at) in [("host", wire.certificate_not_after_unix_ms), ("ca", wire.ca_not_after_unix_ms)] {
            if let Some(ms) = at {
                expiry.get_or_create(&vec![("certificate", which.to_string())]).set((ms / 1000) as i64);
            }
        }
        registry.register_with_unit(
            "agent_certificate_expiry_timestamp",
            "When this agent's certificate (host) and the cluster CA's (ca) expire, seconds since the Unix epoch",
            Unit::Seconds,
            expiry,
        );
    }

    let up = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    let rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let heard = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let restarts_seen = Family::<Labels, Counter>::default();
    for peer in &status.peers {
        let peer_label = || vec![("peer", peer.name.clone())];
        up.get_or_create(&peer_label()).set(i64::from(peer.state == PeerState::Alive));
        for (s, word) in PEER_STATES {
            let mut labels = peer_label();
            labels.push(("state", word.to_string()));
            state.get_or_create(&labels).set(i64::from(peer.state == s));
        }
        if let Some(ms) = peer.rtt_ms {
            rtt.get_or_create(&peer_label()).set(ms / 1000.0);
        }
        if let Some(ms) = peer.last_heard_ms {
            heard.get_or_create(&peer_label()).set(ms as f64 / 1000.0);
        }
        restarts_seen.get_or_create(&peer_label()).inc_by(peer.restarts_seen);
    }
    registry.register("peer_up", "1 when the peer is alive by its heartbeats, else 0", up);
    registry.register("peer_state", "1 for the peer's current state (unknown, alive, suspect, dead)", state);
    registry.register_with_unit(
        "peer_heartbeat_rtt",
        "Round-trip time of the last heartbeat sent to the peer",
        Unit::Seconds,
        rtt,
    );
    registry.register_with_unit(
        "peer_last_heard",
        "Time since the peer's last accepted heartbeat",
        Unit::Seconds,
        heard,
    );
    registry.register("peer_restarts_seen", "Restarts of the peer seen as a new incarnation", restarts_seen);

    let rejected = Family::<Labels, Counter>::default();
    let counters = status.rejected_heartbeats;
    for (reason, n) in [
        ("unknown_node", counters.unknown_node),
        ("bad_signature", counters.bad_signature),
        ("malformed_or_stale", counters.malformed_or_stale),
    ] {
        rejected.get_or_create(&vec![("reason", reason.to_string())]).inc_by(n);
    }
    registry.register("heartbeats_rejected", "Heartbeats refused, by reason", rejected);

    let vs_up = Family::<Labels, Gauge>::default();
    let vs_state = Family::<Labels, Gauge>::default();
    let vs_restarts = Family::<Labels, Gauge>::default();
    let vs_relocations = Family::<Labels, Gauge>::default();
    let vs_fences = Family::<Labels, Gauge>::default();
    let vs_procs = Family::<Labels, Gauge>::default();
    let vs_uptime = Family::<Labels, Gauge>::default();
    // What each vserver holds against its limits: one family per field of `Resources`, a series only where
    // the value is known.
    let resources: [ResourceMetric; 8] = [
        ("tasks", None, "Tasks (processes and threads) counted against the vserver's process limit", |r| r.tasks),
        ("pids_limit", None, "The vserver's process limit (LIMIT_PIDS), in tasks", |r| r.pids_limit),
        ("memory", Some(Unit::Bytes), "Memory charged to the vserver's cgroup", |r| r.memory_bytes),
        ("memory_limit", Some(Unit::Bytes), "The vserver's memory limit, RAM and swap (LIMIT_MEMORY)", |r| {
            r.memory_limit_bytes
        }),
        ("disk", Some(Unit::Bytes), "Bytes the vserver's tree holds, by its project quota", |r| r.disk_bytes),
        ("disk_limit", Some(Unit::Bytes), "The vserver's disk quota (LIMIT_DISK)", |r| r.disk_limit_bytes),
        ("cpu_weight", None, "The vserver's CPU weight (CPU_WEIGHT, 1 to 10000; absent: the default 100)", |r| {
            r.cpu_weight.map(u64::from)
        }),
        ("io_weight", None, "The vserver's block I/O weight (IO_WEIGHT, 1 to 10000; absent: the default 100)", |r| {
            r.io_weight.map(u64::from)
        }),
    ];
    let resource_families: Vec<Family<Labels, Gauge>> = resources.iter().map(|_| Family::default()).collect();
    for v in &status.vservers {
        let label = || vec![("vserver", v.name.clone())];
        vs_up.get_or_create(&label()).set(i64::from(v.state == VserverState::Running));
        for (s, word) in VSERVER_STATES {
            let mut labels = label();
            labels.push(("state", word.to_string()));
            vs_state.get_or_create(&labels).set(i64::from(v.state == s));
        }
        vs_restarts.get_or_create(&label()).set(i64::from(v.restarts));
        vs_relocations.get_or_create(&label()).set(i64::from(v.relocations));
        vs_fences.get_or_create(&label()).set(i64::from(v.fences));
        vs_procs.get_or_create(&label()).set(i64::try_from(v.processes).unwrap_or(i64::MAX));
        if let Some(secs) = v.uptime_secs {
            vs_uptime.get_or_create(&label()).set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        for ((_, _, _, value), family) in resources.iter().zip(&resource_families) {
            if let Some(n) = value(&v.resources) {
                family.get_or_create(&label()).set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }
    registry.register("up", "1 when the vserver runs, else 0", vs_up);
    registry.register("state", "1 for the vserver's current state (running, stopped, failed, error)", vs_state);
    registry.register(
        "restarts",
        "Restarts made by this host's agent after the vserver died on its own, within the failure window",
        vs_restarts,
    );
    registry.register(
        "relocations",
        "Relocations (takeovers) of the vserver within the failure window",
        vs_relocations,
    );
    registry.register(
        "fences",
        "Fences of the vserver on this host within the failure window (a lost lease, the watchdog or its keeper; \
         not crashes)",
        vs_fences,
    );
    registry.register("processes", "Processes in the vserver's cgroup", vs_procs);
    registry.register_with_unit("uptime", "Time since the vserver started", Unit::Seconds, vs_uptime);
    for ((name, unit, help, _), family) in resources.into_iter().zip(resource_families) {
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, family),
            None => registry.register(name, help, family),
        }
    }

    let lag = Family::<Labels, Gauge>::default();
    let last_complete = Family::<Labels, Gauge>::default();
    let bytes = Family::<Labels, Gauge>::default();
    let duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let freeze = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let ok = Family::<Labels, Gauge>::default();
    let change_lag = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let last_batch = Family::<Labels, Gauge>::default();
    let rpo = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for r in &status.replication {
        let label = || vec![("vserver", r.vserver.clone()), ("standby", r.standby.clone())];
        if let Some(v) = r.change_lag_ms {
            change_lag.get_or_create(&label()).set(v as f64 / 1000.0);
        }
        if let Some(v) = r.last_batch_unix_ms {
            last_batch.get_or_create(&label()).set(i64::try_from(v / 1000).unwrap_or(i64::MAX));
        }
        if let Some(v) = r.rpo_secs {
            let mut labels = label();
            labels.push(("data", r.data.clone().unwrap_or_default()));
            rpo.get_or_create(&labels).set(v);
        }
        ok.get_or_create(&label()).set(i64::from(r.last_error.is_none() && r.last_complete_unix_ms.is_some()));
        if let Some(v) = r.lag_secs {
            lag.get_or_create(&label()).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = r.last_complete_unix_ms {
            last_complete.get_or_create(&label()).set(i64::try_from(v / 1000).unwrap_or(i64::MAX));
        }
        if let Some(v) = r.bytes_sent {
            bytes.get_or_create(&label()).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = r.duration_ms {
            duration.get_or_create(&label()).set(v as f64 / 1000.0);
        }
        if let Some(v) = r.freeze_ms {
            freeze.get_or_create(&label()).set(v as f64 / 1000.0);
        }
    }
    registry.register("replication_ok", "1 when the last sync to the standby completed, else 0", ok);
    registry.register_with_unit(
        "replication_lag",
        "Age of the standby's copy: time since the start of the last complete sync",
        Unit::Seconds,
        lag,
    );
    registry.register(
        "replication_last_complete_timestamp_seconds",
        "Start of the last complete sync, Unix time",
        last_complete,
    );
    registry.register("replication_bytes_sent", "Bytes rsync sent in the last complete sync", bytes);
    registry.register_with_unit("replication_duration", "Duration of the last complete sync", Unit::Seconds, duration);
    registry.register_with_unit(
        "replication_freeze",
        "Time the vserver was frozen for the last complete sync (consistent mode)",
        Unit::Seconds,
        freeze,
    );
    registry.register_with_unit(
        "replication_change_lag",
        "Continuous replication: time since the oldest change not yet committed on the standby was seen (0 when \
         none is pending)",
        Unit::Seconds,
        change_lag,
    );
    registry.register(
        "replication_last_batch_timestamp_seconds",
        "Continuous replication: when the last batch committed on the standby, Unix time",
        last_batch,
    );
    registry.register_with_unit(
        "replication_rpo",
        "What a crash of this host would lose now, in seconds of writes: the change lag (continuous), the \
         interval plus the last sync's duration (periodic), 0 (shared, block)",
        Unit::Seconds,
        rpo,
    );
    let held = Family::<Labels, Gauge>::default();
    for r in &status.replicas {
        held.get_or_create(&vec![("vserver", r.vserver.clone()), ("source", r.source.clone())])
            .set(i64::try_from(r.age_secs).unwrap_or(i64::MAX));
    }
    registry.register_with_unit("replica_age", "Age of a replica this host holds as a standby", Unit::Seconds, held);

    register_cluster(&mut registry, status, events);

    let mut out = String::new();
    match format {
        Format::Text => prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => text::encode(&mut out, &registry),
    }
    .expect("writing to a String cannot fail");
    out
}

/// The cluster as this host sees it: the coordinator, this host's lease, maintenance, and the event log's
/// counts.
fn register_cluster(registry: &mut Registry, status: &StatusReport, events: &BTreeMap<String, u64>) {
    let flag = |on: bool| {
        let g = Gauge::<i64>::default();
        g.set(i64::from(on));
        g
    };
    let leader = status.ownership.as_ref().and_then(|o| o.raft.leader.as_deref());
    registry.register(
        "cluster_coordinator",
        "1 when this host coordinates the cluster (it leads the ownership table's Raft group), else 0",
        flag(leader == Some(status.node.name.as_str())),
    );
    registry.register(
        "cluster_coordinator_known",
        "1 when this host knows the cluster's coordinator, else 0 (no majority in reach, or an election)",
        flag(leader.is_some()),
    );
    let failover = &status.failover;
    let remaining = failover.lease_remaining_ms;
    registry.register(
        "lease_held",
        "1 while this host holds its lease or needs none (a single voter), 0 once it is over: with quorum \
         fencing, its vservers are fenced",
        flag(remaining.is_none_or(|ms| ms > 0)),
    );
    if let Some(ms) = remaining {
        let left = Gauge::<f64, AtomicU64>::default();
        left.set(ms as f64 / 1000.0);
        registry.register_with_unit(
            "lease_remaining",
            "What is left of this host's lease (0 once over; absent when it needs none)",
            Unit::Seconds,
            left,
        );
    }
    let maintenance = &failover.maintenance;
    registry.register(
        "cluster_maintenance",
        "1 while the whole cluster is in maintenance (no fence, no takeover anywhere), else 0",
        flag(maintenance.cluster.is_some()),
    );
    registry.register(
        "host_maintenance",
        "1 while this host is in maintenance (it never fences and is never taken over), else 0; the whole \
         cluster's is apart",
        flag(maintenance.hosts.contains_key(&status.node.name)),
    );
    let running = Gauge::<i64>::default();
    running.set(i64::try_from(failover.takeovers_in_progress.len()).unwrap_or(i64::MAX));
    registry.register("cluster_takeovers_running", "Takeovers this host runs now as the coordinator", running);
    let counted = Family::<Labels, Counter>::default();
    let kinds = COUNTED_KINDS.iter().map(|k| k.to_string()).chain(events.keys().cloned());
    for kind in kinds.collect::<std::collections::BTreeSet<_>>() {
        let n = events.get(&kind).copied().unwrap_or(0);
        counted.get_or_create(&vec![("kind", kind)]).inc_by(n);
    }
    registry.register(
        "cluster_events",
        "Events of the cluster's event log, by kind (takeover, fenced, host_dead, migrate, restart...)",
        counted,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Intent, NodeStatus, PeerStatus, RejectCounters, VserverStatus};

    /// A report with a peer, a vserver, replication, a coordinator and maintenance.
    fn sample() -> StatusReport {
        StatusReport {
            node: NodeStatus {
                name: "h0".into(),
                incarnation: 3,
                uptime_secs: 5,
                version: "0.1.0".into(),
                wire: Some(crate::model::WireStatus {
                    mode: "mutual_tls".into(),
                    plain_accepted: false,
                    certificate_not_after_unix_ms: Some(1_900_000_000_000),
                    ca_not_after_unix_ms: Some(2_400_000_000_000),
                }),
            },
            peers: vec![PeerStatus {
                name: "h1".into(),
                url: "http://h1".into(),
                state: PeerState::Suspect,
                last_heard_ms: Some(800),
                rtt_ms: Some(1.5),
                incarnation: Some(2),
                restarts_seen: 1,
                vservers: vec![],
                maintenance: false,
                watched: true,
                heartbeats: true,
            }],
            vservers: vec![VserverStatus {
                name: "web".into(),
                state: VserverState::Running,
                intent: Intent::Running,
                uptime_secs: Some(7),
                addresses: vec![],
                host_network: false,
                processes: 2,
                resources: Resources {
                    tasks: Some(5),
                    pids_limit: Some(4096),
                    memory_bytes: Some(12 << 20),
                    memory_limit_bytes: Some(512 << 20),
                    disk_bytes: Some(3 << 30),
                    disk_limit_bytes: Some(10 << 30),
                    cpu_weight: Some(500),
                    io_weight: None,
                },
                restarts: 4,
                restarted_unix_ms: vec![1, 2, 3, 4],
                relocations: 1,
                fences: 0,
                fenced_unix_ms: vec![],
                relocated_unix_ms: vec![5],
                error: None,
                last_error: None,
            }],
            rejected_heartbeats: RejectCounters { unknown_node: 0, bad_signature: 2, malformed_or_stale: 0 },
            replication: vec![crate::model::ReplicationStatus {
                vserver: "web".into(),
                standby: "h1".into(),
                syncing: false,
                last_complete_unix_ms: Some(1_700_000_000_000),
                lag_secs: Some(1),
                bytes_sent: Some(10),
                files_transferred: Some(1),
                duration_ms: Some(20),
                freeze_ms: None,
                last_attempt_unix_ms: Some(1_700_000_000_000),
                last_error: None,
                warning: None,
                data: Some("continuous".into()),
                rpo_secs: Some(0.25),
                change_lag_ms: Some(250),
                last_batch_unix_ms: Some(1_700_000_001_000),
                batches: Some(9),
            }],
            replicas: vec![],
            ownership: Some(crate::model::OwnershipStatus {
                raft: failover::ownership::MetricsSummary {
                    node_id: 1,
                    host: "h0".into(),
                    state: "Leader".into(),
                    term: 2,
                    leader: Some("h0".into()),
                    last_log_index: Some(9),
                    last_applied: Some(9),
                    snapshot_index: None,
                    purged_index: None,
                    voters: vec!["h0".into(), "h1".into()],
                    learners: vec![],
                    millis_since_quorum_ack: Some(10),
                    initialized: true,
                    reads_host_changes: true,
                    reads_placements: true,
                },
                owners: Default::default(),
            }),
            failover: crate::model::FailoverStatus {
                lease_remaining_ms: Some(1500),
                maintenance: crate::model::MaintenanceView {
                    cluster: None,
                    hosts: [(
                        "h0".to_string(),
                        crate::model::MaintenanceMarkView { since_unix_ms: 1, by: "h0".into() },
                    )]
                    .into(),
                },
                takeovers_in_progress: vec![("web".into(), "h1".into())],
                ..Default::default()
            },
            takeovers: vec![],
            relocation_errors: Default::default(),
        }
    }

    #[test]
    fn peers_and_vservers_become_labelled_series() {
        let status = sample();
        let text = render(&status, &BTreeMap::new(), Format::OpenMetrics);
        for line in [
            "vserver_peer_up{peer=\"h1\"} 0",
            "vserver_peer_state{peer=\"h1\",state=\"suspect\"} 1",
            "vserver_peer_state{peer=\"h1\",state=\"alive\"} 0",
            "vserver_peer_heartbeat_rtt_seconds{peer=\"h1\"} 0.0015",
            "vserver_heartbeats_rejected_total{reason=\"bad_signature\"} 2",
            "vserver_up{vserver=\"web\"} 1",
            "vserver_restarts{vserver=\"web\"} 4",
            "vserver_relocations{vserver=\"web\"} 1",
            "vserver_agent_incarnation 3",
            "vserver_agent_plain_http 0",
            "vserver_agent_certificate_expiry_timestamp_seconds{certificate=\"host\"} 1900000000",
            "vserver_agent_certificate_expiry_timestamp_seconds{certificate=\"ca\"} 2400000000",
            "vserver_tasks{vserver=\"web\"} 5",
            "vserver_pids_limit{vserver=\"web\"} 4096",
            "vserver_memory_bytes{vserver=\"web\"} 12582912",
            "vserver_memory_limit_bytes{vserver=\"web\"} 536870912",
            "vserver_disk_bytes{vserver=\"web\"} 3221225472",
            "vserver_disk_limit_bytes{vserver=\"web\"} 10737418240",
            "vserver_cpu_weight{vserver=\"web\"} 500",
            "# HELP vserver_memory_limit_bytes The vserver's memory limit, RAM and swap (LIMIT_MEMORY).",
            "# TYPE vserver_disk_bytes gauge",
            "# UNIT vserver_disk_bytes bytes",
            "vserver_replication_change_lag_seconds{vserver=\"web\",standby=\"h1\"} 0.25",
            "vserver_replication_last_batch_timestamp_seconds{vserver=\"web\",standby=\"h1\"} 1700000001",
            "vserver_replication_rpo_seconds{vserver=\"web\",standby=\"h1\",data=\"continuous\"} 0.25",
            "# TYPE vserver_replication_change_lag_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("vserver_io_weight{"), "no series for an unknown value:\n{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_cluster_is_seen_from_this_host() {
        let events = BTreeMap::from([("takeover".to_string(), 2), ("fenced".to_string(), 1), ("aside".to_string(), 1)]);
        let text = render(&sample(), &events, Format::Text);
        for line in [
            "vserver_cluster_coordinator 1",
            "vserver_cluster_coordinator_known 1",
            "vserver_lease_held 1",
            "vserver_lease_remaining_seconds 1.5",
            "vserver_cluster_maintenance 0",
            "vserver_host_maintenance 1",
            "vserver_cluster_takeovers_running 1",
            "vserver_cluster_events_total{kind=\"takeover\"} 2",
            "vserver_cluster_events_total{kind=\"fenced\"} 1",
            "vserver_cluster_events_total{kind=\"aside\"} 1",
            "vserver_cluster_events_total{kind=\"migrate\"} 0",
            "# TYPE vserver_cluster_events_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        let mut follower = sample();
        let raft = &mut follower.ownership.as_mut().unwrap().raft;
        raft.leader = None;
        follower.failover.lease_remaining_ms = Some(0);
        let text = render(&follower, &BTreeMap::new(), Format::Text);
        for line in ["vserver_cluster_coordinator 0", "vserver_cluster_coordinator_known 0", "vserver_lease_held 0"] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_has_no_openmetrics_lines() {
        let text = render(&sample(), &BTreeMap::new(), Format::Text);
        for line in [
            "# HELP vserver_heartbeats_rejected_total Heartbeats refused, by reason.",
            "# TYPE vserver_heartbeats_rejected_total counter",
            "vserver_heartbeats_rejected_total{reason=\"bad_signature\"} 2",
            "# TYPE vserver_disk_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("# UNIT") && !text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_only_when_the_client_prefers_it() {
        use Format::{OpenMetrics, Text};
        for (accept, format) in [
            (None, Text),
            (Some(""), Text),
            (Some("*/*"), Text),
            (Some("text/plain; version=0.0.4"), Text),
            (Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"), Text),
            (Some("application/openmetrics-text; version=1.0.0"), OpenMetrics),
            // What Prometheus sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                     text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Text),
            (Some("application/openmetrics-text, text/plain"), Text),
            (Some("application/openmetrics-text;q=0.1, */*;q=0.5"), Text),
            (Some("garbage,,;"), Text),
        ] {
            assert_eq!(Format::from_accept(accept), format, "{accept:?}");
        }
        assert_eq!(Text.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    }

    /// Every family, in both formats, as the reference tools read them: promtool lints the text format,
    /// and a strict OpenMetrics parser reads the other (promtool reads only the text format).
    #[test]
    fn every_family_passes_promtool_and_the_openmetrics_parser() {
        let events = BTreeMap::from([("takeover".to_string(), 2)]);
        let status = sample();
        if let Some(result) = vserver_lab::promtool::check_metrics(&render(&status, &events, Format::Text)) {
            result.unwrap();
        }
        if let Some(result) = vserver_lab::promtool::parse_openmetrics(&render(&status, &events, Format::OpenMetrics)) {
            result.unwrap();
        }
    }
}
