//! The cluster at a glance, the same from every host (`GET /v1/cluster`, `vserver-stat --cluster`, the top of
//! the status page): every host with its state as the coordinator judges it (the coordinator hears every
//! host), its role, lease, maintenance and certificate; the coordinator and the quorum; every vserver of the
//! ownership table with its owner, epoch, where it actually runs, its data path and each standby's copy (as its
//! owner reports them); the failed actions and the last takeovers, fences and migrates of the event log.
//!
//! Built from status reports: the asked host's own, the coordinator's and each host's that answered. A host
//! that is not alive, as the coordinator judges it, never shows a vserver as running.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::model::{EventView, StatusReport, VserverState};

/// How many of the event log's last takeovers, fences and migrates the view keeps, and of its failures.
pub const RECENT: usize = 10;

/// The event kinds the view lists as what happened lately.
const HAPPENED: [&str; 5] = ["takeover", "fenced", "migrate", "host_dead", "evacuate"];
/// The event kinds the view lists as failed actions.
const FAILED: [&str; 4] = ["takeover_failed", "migrate_failed", "relocation_error", "restart_gave_up"];

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Its node name.
    pub name: String,
    /// `alive`, `suspect`, `dead` or `unknown`, as the judge (the coordinator, else the asked host) sees it.
    pub state: String,
    /// `coordinator`, `voter`, `learner` (non-voting) or `-` (not in the consensus yet).
    pub role: String,
    /// Milliseconds since the judge last heard it (none for the judge itself).
    pub last_heard_ms: Option<u64>,
    /// The vservers it runs: none unless it is alive.
    pub running: Vec<String>,
    /// What is left of its lease, ms, as it reported it (none: it needs none, or it did not answer).
    pub lease_remaining_ms: Option<u64>,
    /// It is in maintenance (never fenced, never taken over).
    pub maintenance: bool,
    /// Until when its certificate is valid, ms since the Unix epoch (TLS only, when it answered).
    pub certificate_not_after_unix_ms: Option<u64>,
    /// Why its own report is missing (it did not answer the asked host), if it is.
    pub unanswered: Option<String>,
}

/// One standby's copy of a vserver, as the vserver's owner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyCopy {
    /// The standby.
    pub host: String,
    /// Seconds since the start of its last complete copy (none: no copy yet).
    pub age_secs: Option<u64>,
    /// What a crash of the owner would lose now, in seconds of writes.
    pub rpo_secs: Option<f64>,
    /// Continuous replication's lag, ms.
    pub change_lag_ms: Option<u64>,
    /// The last copy's error, if it failed.
    pub last_error: Option<String>,
}

/// One vserver of the ownership table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VserverRow {
    /// Its name.
    pub name: String,
    /// The host the cluster gives it to (none once cleared).
    pub owner: Option<String>,
    /// The epoch of that decision.
    pub epoch: u64,
    /// The live hosts running it (more than one would be a fault; none: stopped, or its host is not alive).
    pub running_on: Vec<String>,
    /// Where its tree and conf are (`periodic`, `continuous`, `shared`, `block`), as the owner reports it.
    pub data: Option<String>,
    /// Its standbys' copies, as the owner reports them (none when the owner did not answer).
    pub standbys: Vec<StandbyCopy>,
    /// Why it is in state error (the relocation limit, or its state on its owner), if it is.
    pub error: Option<String>,
}

/// The consensus' majority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// The voters.
    pub voters: Vec<String>,
    /// How many of them are alive, as the judge sees them.
    pub alive: usize,
    /// A majority of the voters is alive.
    pub held: bool,
}

/// The cluster, as one agent assembled it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The host asked.
    pub asked: String,
    /// The host whose judgment of the hosts' states the view shows: the coordinator, else the host asked.
    pub judge: String,
    /// The coordinator (Raft leader), if one is known.
    pub coordinator: Option<String>,
    /// The voters and how many are alive.
    pub quorum: Quorum,
    /// Automatic takeover is on (on the judge).
    pub takeover: bool,
    /// Maintenance in force: for the whole cluster, and the hosts in maintenance.
    pub maintenance: crate::model::MaintenanceView,
    /// Every host.
    pub hosts: Vec<HostRow>,
    /// Every vserver of the ownership table.
    pub vservers: Vec<VserverRow>,
    /// The last takeovers, fences, migrates, hosts found dead and evacuations, oldest first.
    pub recent: Vec<EventView>,
    /// The last failed actions (a takeover or migrate that failed, a relocation or restart limit reached).
    pub failed: Vec<EventView>,
    /// What the view could not see (the coordinator or hosts that did not answer), in words.
    pub warnings: Vec<String>,
}

fn word<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The status reports a view is made of.
#[derive(Debug, Default)]
pub struct Reports {
    /// Each other host's report, or why it is missing.
    pub hosts: BTreeMap<String, Result<StatusReport, String>>,
    /// The cluster's event log.
    pub events: Vec<EventView>,
}

impl ClusterView {
    /// The view from the asked host's own report alone (an agent of an earlier release serves no
    /// `/v1/cluster`).
    pub fn from_status(status: &StatusReport) -> Self {
        Self::assemble(status, &Reports::default())
    }

    /// The view from the asked host's report `me` and the `others`'. The coordinator's report, when there,
    /// judges the hosts' states; each host's own report gives its lease, certificate and (for the owner) the
    /// standbys' copies.
    pub fn assemble(me: &StatusReport, others: &Reports) -> Self {
        let asked = me.node.name.clone();
        let leader = me.ownership.as_ref().and_then(|o| o.raft.leader.clone());
        let mut warnings = Vec::new();
        let report = |host: &str| -> Option<&StatusReport> {
            if host == asked {
                return Some(me);
            }
            others.hosts.get(host).and_then(|r| r.as_ref().ok())
        };
        let judge = match leader.as_deref() {
            Some(l) if l == asked => me,
            Some(l) => match report(l) {
                Some(r) => r,
                None => {
                    warnings.push(format!(
                        "the coordinator {l} did not answer: hosts' states are as {asked} sees them{}",
                        if me.peers.iter().any(|p| !p.watched) { " (it does not watch every host)" } else { "" }
                    ));
                    me
                }
            },
            None => {
                warnings.push(format!("no coordinator (no majority?): hosts' states are as {asked} sees them"));
                me
            }
        };
        let raft = judge.ownership.as_ref().map(|o| &o.raft);
        let coordinator = raft.and_then(|r| r.leader.clone()).or(leader);
        let role = |host: &str| match raft {
            Some(_) if coordinator.as_deref() == Some(host) => "coordinator".to_string(),
            Some(r) if r.voters.iter().any(|v| v == host) => "voter".to_string(),
            Some(r) if r.learners.iter().any(|v| v == host) => "learner".to_string(),
            _ => "-".to_string(),
        };
        let maintenance = judge.failover.maintenance.clone();

        // Each host, judged; its own report for what only it knows.
        let mut states: Vec<(String, String, Option<u64>, Vec<String>)> = vec![(
            judge.node.name.clone(),
            "alive".into(),
            None,
            running_in(&judge.vservers.iter().map(|v| (v.name.clone(), v.state)).collect::<Vec<_>>()),
        )];
        for p in &judge.peers {
            let state = if p.watched { word(p.state) } else { "unknown".into() };
            states.push((
                p.name.clone(),
                state,
                p.last_heard_ms,
                running_in(&p.vservers.iter().map(|v| (v.name.clone(), v.state)).collect::<Vec<_>>()),
            ));
        }
        let mut hosts = Vec::new();
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, state, last_heard_ms, heard_running) in states {
            let own = report(&name);
            // Its own word on what it runs when it answered, else the judge's last heard; only if alive.
            let runs = match (state.as_str(), own) {
                ("alive", Some(r)) => {
                    running_in(&r.vservers.iter().map(|v| (v.name.clone(), v.state)).collect::<Vec<_>>())
                }
                ("alive", None) => heard_running,
                _ => Vec::new(),
            };
            for v in &runs {
                running.entry(v.clone()).or_default().push(name.clone());
            }
            let unanswered = match others.hosts.get(&name) {
                Some(Err(e)) if name != asked => Some(e.clone()),
                _ => None,
            };
            hosts.push(HostRow {
                maintenance: maintenance.hosts.contains_key(&name),
                lease_remaining_ms: own.and_then(|r| r.failover.lease_remaining_ms),
                certificate_not_after_unix_ms: own
                    .and_then(|r| r.node.wire.as_ref())
                    .and_then(|w| w.certificate_not_after_unix_ms),
                role: role(&name),
                name,
                state,
                last_heard_ms,
                running: runs,
                unanswered,
            });
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        let unanswered: Vec<&str> = hosts.iter().filter(|h| h.unanswered.is_some()).map(|h| h.name.as_str()).collect();
        if !unanswered.is_empty() {
            warnings.push(format!(
                "no report from {}: their leases, certificates and standby copies are not shown",
                unanswered.join(", ")
            ));
        }
        let quorum = {
            let voters = raft.map(|r| r.voters.clone()).unwrap_or_default();
            let alive = voters.iter().filter(|v| hosts.iter().any(|h| &h.name == *v && h.state == "alive")).count();
            Quorum { held: !voters.is_empty() && alive * 2 > voters.len(), alive, voters }
        };

        let owners = judge.ownership.as_ref().or(me.ownership.as_ref()).map(|o| o.owners.clone()).unwrap_or_default();
        let vservers = owners
            .into_iter()
            .map(|(name, entry)| {
                let owner_report = entry.owner.as_deref().and_then(report);
                let copies: Vec<_> = owner_report
                    .map(|r| r.replication.iter().filter(|c| c.vserver == name).collect())
                    .unwrap_or_default();
                let error = judge
                    .relocation_errors
                    .get(&name)
                    .cloned()
                    .or_else(|| owner_report?.vservers.iter().find(|v| v.name == name)?.error.clone());
                VserverRow {
                    owner: entry.owner.clone(),
                    epoch: entry.epoch,
                    running_on: running.get(&name).cloned().unwrap_or_default(),
                    data: copies.iter().find_map(|c| c.data.clone()),
                    standbys: copies
                        .iter()
                        .map(|c| StandbyCopy {
                            host: c.standby.clone(),
                            age_secs: c.lag_secs,
                            rpo_secs: c.rpo_secs,
                            change_lag_ms: c.change_lag_ms,
                            last_error: c.last_error.clone(),
                        })
                        .collect(),
                    error,
                    name,
                }
            })
            .collect();
        let last = |kinds: &[&str]| -> Vec<EventView> {
            let mut picked: Vec<EventView> =
                others.events.iter().rev().filter(|e| kinds.contains(&e.kind.as_str())).take(RECENT).cloned().collect();
            picked.reverse();
            picked
        };
        ClusterView {
            asked,
            judge: judge.node.name.clone(),
            coordinator,
            quorum,
            takeover: judge.failover.takeover,
            maintenance,
            hosts,
            vservers,
            recent: last(&HAPPENED),
            failed: last(&FAILED),
            warnings,
        }
    }

    /// Tables for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let q = &self.quorum;
        let _ = writeln!(
            out,
            "cluster (asked {}, states as {} judges them): coordinator {}, quorum {} ({} of {} voters alive), \
             automatic takeover {}",
            self.asked,
            self.judge,
            self.coordinator.as_deref().unwrap_or("none"),
            if q.held { "held" } else { "LOST" },
            q.alive,
            q.voters.len(),
            if self.takeover { "on" } else { "off" },
        );
        if self.maintenance.cluster.is_some() {
            let _ = writeln!(
                out,
                "CLUSTER MAINTENANCE: fencing and takeover are disarmed on every host (vserver-agent maintenance off \
                 --cluster ends it)"
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(
            out,
            "\n{:<12} {:<8} {:<12} {:>10} {:>9} {:<20} RUNS",
            "HOST", "STATE", "ROLE", "HEARD", "LEASE", "CERTIFICATE UNTIL"
        );
        for h in &self.hosts {
            let heard = h.last_heard_ms.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
            let lease = match (&h.unanswered, h.lease_remaining_ms) {
                (Some(_), _) => "?".to_string(),
                (None, Some(ms)) => format!("{:.1} s", ms as f64 / 1000.0),
                (None, None) => "-".to_string(),
            };
            let cert = h.certificate_not_after_unix_ms.map_or("-".to_string(), utc);
            let runs = if h.running.is_empty() { "-".to_string() } else { h.running.join(", ") };
            let role = if h.maintenance { format!("{} (maint)", h.role) } else { h.role.clone() };
            let _ = writeln!(
                out,
                "{:<12} {:<8} {:<12} {:>10} {:>9} {:<20} {runs}",
                h.name, h.state, role, heard, lease, cert
            );
        }
        if self.vservers.is_empty() {
            let _ = writeln!(out, "\nno vserver in the ownership table");
        } else {
            let _ = writeln!(
                out,
                "\n{:<16} {:<12} {:>6}  {:<12} {:<10} STANDBY COPIES",
                "VSERVER", "OWNER", "EPOCH", "RUNNING ON", "DATA"
            );
            for v in &self.vservers {
                let on = if v.running_on.is_empty() { "-".to_string() } else { v.running_on.join(", ") };
                let copies = if v.standbys.is_empty() {
                    "-".to_string()
                } else {
                    v.standbys.iter().map(|c| copy_words(c, v.data.as_deref())).collect::<Vec<_>>().join(", ")
                };
                let _ = writeln!(
                    out,
                    "{:<16} {:<12} {:>6}  {:<12} {:<10} {copies}{}",
                    v.name,
                    v.owner.as_deref().unwrap_or("(none)"),
                    v.epoch,
                    on,
                    v.data.as_deref().unwrap_or("-"),
                    v.error.as_deref().map(|e| format!("  ERROR: {e}")).unwrap_or_default()
                );
            }
        }
        for (title, events) in [("failed actions", &self.failed), ("lately", &self.recent)] {
            if events.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for e in events {
                let _ = writeln!(out, "  {}  {:<16} {}", utc(e.at_unix_ms), e.kind, event_words(e));
            }
        }
        out
    }
}

/// The vservers running among `(name, state)`.
fn running_in(vservers: &[(String, VserverState)]) -> Vec<String> {
    vservers.iter().filter(|(_, s)| *s == VserverState::Running).map(|(n, _)| n.clone()).collect()
}

/// A time (ms since the Unix epoch) in UTC, to the second: `2026-12-07 06:40:12Z`.
pub fn utc(unix_ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms));
    t.to_string().replace('T', " ")
}

/// One standby's copy in words: `h1 (12 s old, RPO 72.0 s)`.
pub fn copy_words(c: &StandbyCopy, data: Option<&str>) -> String {
    let rpo = c.rpo_secs.map(|s| format!(", RPO {s:.1} s")).unwrap_or_default();
    let lag = c.change_lag_ms.map(|ms| format!(", lag {:.1} s", ms as f64 / 1000.0)).unwrap_or_default();
    let failing = c.last_error.as_deref().map(|e| format!(", FAILING: {e}")).unwrap_or_default();
    match c.age_secs {
        // No copy: it reaches the running tree itself.
        _ if data == Some("shared") => format!("{} (the shared tree{rpo})", c.host),
        Some(secs) => format!("{} ({secs} s old{lag}{rpo}{failing})", c.host),
        None => format!("{} (none yet{rpo}{failing})", c.host),
    }
}

/// An event's sentence, records in words.
pub fn event_words(e: &EventView) -> String {
    let what = failover::events::describe(&e.text)
        .or_else(|| failover::evacuate::describe(&e.text))
        .unwrap_or_else(|| e.text.clone());
    match &e.vserver {
        Some(v) if !what.contains(v.as_str()) => format!("{v}: {what} (reported by {})", e.host),
        _ => format!("{what} (reported by {})", e.host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A status report of `host`: its peers `(name, state)`, the vservers it runs, the Raft leader and voters
    /// it knows, the owners (vserver, owner, epoch) and its replication entries (vserver, standby, age).
    fn report(
        host: &str,
        peers: &[(&str, &str, &[&str])],
        runs: &[&str],
        leader: Option<&str>,
        owners: &[(&str, &str, u64)],
        copies: &[(&str, &str, u64)],
    ) -> StatusReport {
        let vservers: Vec<_> = runs
            .iter()
            .map(|v| {
                json!({"name": v, "state": "running", "intent": "running", "uptime_secs": 5, "addresses": [],
                       "processes": 1, "restarts": 0, "last_error": null})
            })
            .collect();
        let peers: Vec<_> = peers
            .iter()
            .map(|(name, state, theirs)| {
                let vs: Vec<_> = theirs.iter().map(|v| json!({"name": v, "state": "running"})).collect();
                json!({"name": name, "url": format!("https://{name}:7070"), "state": state, "last_heard_ms": 50,
                       "rtt_ms": null, "incarnation": 1, "restarts_seen": 0, "vservers": vs})
            })
            .collect();
        let owners: serde_json::Map<_, _> =
            owners.iter().map(|(v, o, e)| (v.to_string(), json!({"owner": o, "epoch": e}))).collect();
        let replication: Vec<_> = copies
            .iter()
            .map(|(v, s, age)| {
                json!({"vserver": v, "standby": s, "syncing": false, "last_complete_unix_ms": 1, "lag_secs": age,
                       "bytes_sent": null, "files_transferred": null, "duration_ms": null, "freeze_ms": null,
                       "last_attempt_unix_ms": null, "last_error": null, "warning": null, "data": "periodic",
                       "rpo_secs": 61.5})
            })
            .collect();
        serde_json::from_value(json!({
            "node": {"name": host, "incarnation": 1, "uptime_secs": 9, "version": "t", "wire": null},
            "peers": peers,
            "vservers": vservers,
            "rejected_heartbeats": {"unknown_node": 0, "bad_signature": 0, "malformed_or_stale": 0},
            "replication": replication,
            "ownership": {
                "raft": {"node_id": 1, "host": host, "state": "Follower", "term": 2, "leader": leader,
                         "last_log_index": 1, "last_applied": 1, "snapshot_index": null, "purged_index": null,
                         "voters": ["h0", "h1", "h2"], "learners": [], "millis_since_quorum_ack": null,
                         "initialized": true},
                "owners": owners
            },
            "failover": {"takeover": true, "takeover_timeout_ms": 2400, "witness": false, "quorum_fencing": true,
                         "watchdog": true, "lease_remaining_ms": 1800}
        }))
        .unwrap()
    }

    #[test]
    fn a_host_the_coordinator_judges_dead_runs_nothing_whatever_its_last_word() {
        // Asked h2 (a standby), which still believes h0 runs web; the coordinator h1 judges h0 dead and took
        // web over.
        let h2 = report(
            "h2",
            &[("h0", "alive", &["web"]), ("h1", "alive", &["web"])],
            &[],
            Some("h1"),
            &[("web", "h0", 1)],
            &[],
        );
        let h1 = report(
            "h1",
            &[("h0", "dead", &["web"]), ("h2", "alive", &[])],
            &["web"],
            Some("h1"),
            &[("web", "h1", 2)],
            &[("web", "h2", 3)],
        );
        let mut others = Reports::default();
        others.hosts.insert("h1".into(), Ok(h1));
        others.hosts.insert("h0".into(), Err("the status report on h0: timed out".into()));
        let view = ClusterView::assemble(&h2, &others);
        assert_eq!((view.asked.as_str(), view.judge.as_str()), ("h2", "h1"));
        assert_eq!(view.coordinator.as_deref(), Some("h1"));
        let states: Vec<(&str, &str)> = view.hosts.iter().map(|h| (h.name.as_str(), h.state.as_str())).collect();
        assert_eq!(states, [("h0", "dead"), ("h1", "alive"), ("h2", "alive")]);
        assert!(view.hosts[0].running.is_empty(), "{:?}", view.hosts[0]);
        assert_eq!(view.hosts[1].role, "coordinator");
        assert_eq!(view.quorum, Quorum { voters: vec!["h0".into(), "h1".into(), "h2".into()], alive: 2, held: true });
        // The table of the coordinator, and the copies as the new owner reports them.
        let web = &view.vservers[0];
        assert_eq!((web.owner.as_deref(), web.epoch, web.running_on.clone()), (Some("h1"), 2, vec!["h1".to_string()]));
        assert_eq!(web.standbys.len(), 1);
        assert_eq!(copy_words(&web.standbys[0], web.data.as_deref()), "h2 (3 s old, RPO 61.5 s)");
        assert_eq!(view.hosts[0].unanswered.as_deref(), Some("the status report on h0: timed out"));
        assert!(view.warnings.iter().any(|w| w.contains("no report from h0")), "{:?}", view.warnings);
        let table = view.table();
        assert!(table.contains("coordinator h1, quorum held (2 of 3 voters alive)"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("h0 ") && l.contains("dead") && l.ends_with(" -")), "{table}");
    }

    #[test]
    fn without_the_coordinators_report_the_asked_host_judges_and_says_so() {
        let h2 =
            report("h2", &[("h0", "dead", &["web"]), ("h1", "alive", &[])], &[], Some("h1"), &[("web", "h0", 1)], &[]);
        let mut others = Reports::default();
        others.hosts.insert("h1".into(), Err("refused".into()));
        let view = ClusterView::assemble(&h2, &others);
        assert_eq!(view.judge, "h2");
        assert!(view.warnings.iter().any(|w| w.contains("the coordinator h1 did not answer")), "{:?}", view.warnings);
        assert!(view.hosts.iter().all(|h| h.name != "h0" || h.running.is_empty()));
        // No majority known at all: said too, and the quorum is not held with one voter of three alive.
        let alone = report("h2", &[("h0", "dead", &[]), ("h1", "dead", &[])], &[], None, &[], &[]);
        let view = ClusterView::from_status(&alone);
        assert!(!view.quorum.held && view.quorum.alive == 1, "{:?}", view.quorum);
        assert!(view.table().contains("coordinator none, quorum LOST"), "{}", view.table());
    }

    #[test]
    fn the_last_happenings_and_failures_come_from_the_event_log() {
        let h0 = report("h0", &[], &["web"], Some("h0"), &[("web", "h0", 1)], &[]);
        let event = |seq: u64, kind: &str, text: &str| EventView {
            seq,
            at_unix_ms: 1_796_399_508_203,
            host: "h1".into(),
            kind: kind.into(),
            vserver: Some("web".into()),
            text: text.into(),
        };
        let mut others = Reports {
            events: (1..=12).map(|i| event(i, "migrate", &format!("web migrated {i}"))).collect(),
            ..Default::default()
        };
        others.events.push(event(13, "maintenance", "maintenance on for host h1, asked through h1"));
        others.events.push(event(14, "migrate_failed", "web: h2 refused"));
        let view = ClusterView::assemble(&h0, &others);
        assert_eq!(view.recent.len(), RECENT);
        assert_eq!(view.recent.last().unwrap().seq, 12);
        assert_eq!(view.failed.iter().map(|e| e.seq).collect::<Vec<_>>(), [14]);
        let table = view.table();
        assert!(table.contains("failed actions:\n  2026-12-04 15:51:48Z  migrate_failed"), "{table}");
        assert!(!table.contains("1796399508203"), "{table}");
    }

    /// `vserver-stat --cluster` of an agent of the previous release: its events have `at_ms` alone, its
    /// maintenance marks `since_ms` alone. This release's view answers both names.
    #[test]
    fn the_view_of_an_agent_of_the_previous_release_reads() {
        let previous = r#"{"asked":"h0","judge":"h0","coordinator":"h0",
            "quorum":{"voters":["h0"],"alive":1,"held":true},"takeover":true,
            "maintenance":{"cluster":{"since_ms":1796399500000,"by":"h0"},"hosts":{}},
            "hosts":[],"vservers":[],
            "recent":[{"seq":41,"at_ms":1796399508203,"host":"h1","kind":"takeover","vserver":"web","text":"t"}],
            "failed":[],"warnings":[]}"#;
        let view: ClusterView = serde_json::from_str(previous).unwrap();
        assert_eq!(view.recent[0].at_unix_ms, 1_796_399_508_203);
        assert_eq!(view.maintenance.cluster.as_ref().map(|m| m.since_unix_ms), Some(1_796_399_500_000));
        let table = view.table();
        assert!(table.contains("CLUSTER MAINTENANCE") && table.contains("  2026-12-04 15:51:48Z  takeover"), "{table}");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["recent"][0]["at_unix_ms"], json["recent"][0]["at_ms"]);
        assert_eq!(json["maintenance"]["cluster"]["since_unix_ms"], 1_796_399_500_000_u64, "{json}");
        assert_eq!(json["maintenance"]["cluster"]["since_ms"], 1_796_399_500_000_u64, "{json}");
    }
}
