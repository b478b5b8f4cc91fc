//! `vserver-stat --cluster`: the cluster as this host's agent sees it — every host (alive or not, its role in
//! the consensus) and every vserver of the ownership table (owner, epoch, where it runs, its standbys'
//! copies).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::model::{PeerState, StatusReport, VserverState};

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    /// Its node name.
    pub name: String,
    /// `self` for the host asked, else alive, suspect, dead or unknown as it sees the peer.
    pub state: String,
    /// `coordinator`, `voter`, `learner` (non-voting) or `-` (not in the consensus yet).
    pub role: String,
    /// Milliseconds since the host asked last heard it (none for itself).
    pub last_heard_ms: Option<u64>,
    /// The vservers it runs, as last heard.
    pub running: Vec<String>,
}

/// One vserver of the ownership table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VserverRow {
    /// Its name.
    pub name: String,
    /// The host the cluster gives it to (none once cleared).
    pub owner: Option<String>,
    /// The epoch of that decision.
    pub epoch: u64,
    /// The hosts seen running it (more than one would be a fault; none: stopped or not heard yet).
    pub running_on: Vec<String>,
    /// Its standbys' copies, as the owner reports them (only when the host asked is the owner): standby and
    /// seconds since the start of its last complete copy.
    pub standbys: Vec<(String, Option<u64>)>,
    /// Where its tree and conf are (`periodic`, `continuous`, `shared`, `block`), as the owner reports it.
    pub data: Option<String>,
    /// What a crash of the owner would lose now, per standby, in ms of writes (recovery point objective), as the
    /// owner reports it.
    pub rpo_ms: BTreeMap<String, u64>,
}

/// The cluster as one agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The host asked.
    pub asked: String,
    /// The coordinator (Raft leader), if one is known.
    pub coordinator: Option<String>,
    /// Automatic takeover is on.
    pub takeover: bool,
    /// What is left of the asked host's lease, ms (none when it needs none).
    pub lease_remaining_ms: Option<u64>,
    /// Maintenance in force: for the whole cluster, and the hosts in maintenance.
    pub maintenance: failover::ownership::Maintenance,
    /// Every host.
    pub hosts: Vec<HostRow>,
    /// Every vserver of the ownership table.
    pub vservers: Vec<VserverRow>,
}

fn word<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

impl ClusterView {
    /// The view from one agent's status report.
    pub fn from_status(status: &StatusReport) -> Self {
        let raft = status.ownership.as_ref().map(|o| &o.raft);
        let coordinator = raft.and_then(|r| r.leader.clone());
        let role = |host: &str| match raft {
            Some(_) if coordinator.as_deref() == Some(host) => "coordinator".to_string(),
            Some(r) if r.voters.iter().any(|v| v == host) => "voter".to_string(),
            Some(r) if r.learners.iter().any(|v| v == host) => "learner".to_string(),
            _ => "-".to_string(),
        };
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let me = &status.node.name;
        let mine: Vec<String> =
            status.vservers.iter().filter(|v| v.state == VserverState::Running).map(|v| v.name.clone()).collect();
        for v in &mine {
            running.entry(v.clone()).or_default().push(me.clone());
        }
        let mut hosts = vec![HostRow {
            name: me.clone(),
            state: "self".into(),
            role: role(me),
            last_heard_ms: None,
            running: mine,
        }];
        for p in &status.peers {
            // A dead peer's last word is stale: it runs nothing as far as anyone can tell.
            let theirs: Vec<String> = if p.state == PeerState::Alive || p.state == PeerState::Suspect {
                p.vservers.iter().filter(|v| v.state == VserverState::Running).map(|v| v.name.clone()).collect()
            } else {
                Vec::new()
            };
            for v in &theirs {
                running.entry(v.clone()).or_default().push(p.name.clone());
            }
            hosts.push(HostRow {
                name: p.name.clone(),
                state: if p.watched { word(p.state) } else { "not watched here (see a voter)".into() },
                role: role(&p.name),
                last_heard_ms: p.last_heard_ms,
                running: theirs,
            });
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        let vservers = status
            .ownership
            .iter()
            .flat_map(|o| o.owners.iter())
            .map(|(name, entry)| VserverRow {
                name: name.clone(),
                owner: entry.owner.clone(),
                epoch: entry.epoch,
                running_on: running.get(name).cloned().unwrap_or_default(),
                standbys: status
                    .replication
                    .iter()
                    .filter(|r| &r.vserver == name)
                    .map(|r| (r.standby.clone(), r.lag_secs))
                    .collect(),
                data: status.replication.iter().find(|r| &r.vserver == name).and_then(|r| r.data.clone()),
                rpo_ms: status
                    .replication
                    .iter()
                    .filter(|r| &r.vserver == name)
                    .filter_map(|r| Some((r.standby.clone(), (r.rpo_secs? * 1000.0).round() as u64)))
                    .collect(),
            })
            .collect();
        ClusterView {
            asked: me.clone(),
            coordinator,
            takeover: status.failover.takeover,
            lease_remaining_ms: status.failover.lease_remaining_ms,
            maintenance: status.failover.maintenance.clone(),
            hosts,
            vservers,
        }
    }

    /// Two tables for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster as {} sees it: coordinator {}, automatic takeover {}{}",
            self.asked,
            self.coordinator.as_deref().unwrap_or("none (no majority?)"),
            if self.takeover { "on" } else { "off" },
            self.lease_remaining_ms.map(|ms| format!(", lease {ms} ms left")).unwrap_or_default()
        );
        if self.maintenance.cluster.is_some() {
            let _ = writeln!(
                out,
                "CLUSTER MAINTENANCE: fencing and takeover are disarmed on every host (vserver-agent maintenance off \
                 --cluster ends it)"
            );
        }
        let _ = writeln!(out, "{:<12} {:<8} {:<18} {:>13}  RUNS", "HOST", "STATE", "ROLE", "HEARD");
        for h in &self.hosts {
            let heard = h.last_heard_ms.map_or("-".to_string(), |ms| format!("{ms} ms ago"));
            let runs = if h.running.is_empty() { "-".to_string() } else { h.running.join(", ") };
            let role = if self.maintenance.hosts.contains_key(&h.name) {
                format!("{} (maint)", h.role)
            } else {
                h.role.clone()
            };
            let _ = writeln!(out, "{:<12} {:<8} {:<18} {:>13}  {runs}", h.name, h.state, role, heard);
        }
        if self.vservers.is_empty() {
            let _ = writeln!(out, "no vserver in the ownership table");
            return out;
        }
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
                v.standbys
                    .iter()
                    .map(|(s, lag)| {
                        let rpo = v.rpo_ms.get(s).map(|ms| format!(", RPO {:.1} s", *ms as f64 / 1000.0));
                        match lag {
                            // No copy: it reaches the running tree itself.
                            _ if v.data.as_deref() == Some("shared") => {
                                format!("{s} (the shared tree{})", rpo.unwrap_or_default())
                            }
                            Some(secs) => format!("{s} ({secs} s old{})", rpo.unwrap_or_default()),
                            None => format!("{s} (none yet{})", rpo.unwrap_or_default()),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>6}  {:<12} {:<10} {copies}",
                v.name,
                v.owner.as_deref().unwrap_or("(none)"),
                v.epoch,
                on,
                v.data.as_deref().unwrap_or("-")
            );
        }
        out
    }
}
