//! The replicated data: what a proposal says ([`Command`]), what applying it answers ([`Response`]), the
//! table it changes ([`TableState`]), and the openraft type configuration that ties them together.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A Raft node id: one per host, stable for the host's life, given in the cluster configuration.
pub type NodeId = u64;

/// How many events the table keeps; older ones are dropped first.
pub const MAX_EVENTS: usize = 1000;

/// Longest event text accepted, in bytes (events travel in every append and every snapshot).
pub const MAX_EVENT_TEXT: usize = 1024;

/// What the Raft membership records about a host: its name and the base URL its agent serves the
/// `/v1/raft/*` routes under (`http://10.0.0.2:7070`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNode {
    /// The host's name, as in the cluster configuration.
    pub name: String,
    /// The base URL of the host's agent, without a trailing path.
    pub url: String,
}

impl fmt::Display for HostNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the ownership table.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = HostNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft instance this module runs.
pub type OwnershipRaft = openraft::Raft<TypeConfig>;

/// A change proposed to the table. Names are checked before a command is proposed; the state machine
/// applies what the log says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Make `owner` the vserver's owner, if the vserver's epoch is still `expected_epoch`; the epoch grows.
    SetOwner {
        /// The vserver.
        vserver: String,
        /// The host that will own it.
        owner: String,
        /// The epoch the proposer read (0 for a vserver never owned).
        expected_epoch: u64,
    },
    /// Leave the vserver without owner, if its epoch is still `expected_epoch`; the epoch grows (it never
    /// goes back, so a command written against an older epoch can never apply again).
    Clear {
        /// The vserver.
        vserver: String,
        /// The epoch the proposer read.
        expected_epoch: u64,
    },
    /// A takeover's change of owner: as [`Command::SetOwner`], but refused while the cluster, or the host it
    /// takes the vserver from, is in maintenance. Decided in the log's order, so a maintenance committed
    /// first always wins over a takeover committed after it.
    TakeOver {
        /// The vserver.
        vserver: String,
        /// The host that will own it.
        owner: String,
        /// The epoch the proposer read.
        expected_epoch: u64,
        /// The host it is taken from.
        from: String,
    },
    /// Turn maintenance on or off, for one host or (`host` none) for the whole cluster.
    Maintenance {
        /// The host; none for the whole cluster.
        host: Option<String>,
        /// On or off.
        on: bool,
        /// When it was asked, ms since the Unix epoch, by the proposer's clock.
        at_ms: u64,
        /// The host through which it was asked.
        by: String,
    },
    /// Append a line to the cluster's event log (the last [`MAX_EVENTS`] are kept).
    Event {
        /// When it happened, in milliseconds since the Unix epoch, by the proposer's clock.
        at_ms: u64,
        /// The host that reports it.
        host: String,
        /// What happened.
        text: String,
        /// Its kind (`host_dead`, `takeover`, `migrate`, ...); empty in entries written before kinds existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        kind: String,
        /// The vserver it is about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vserver: Option<String>,
    },
    /// Take a host into the cluster (or back, after a removal): every host adds it to its peers, and the
    /// coordinator adds it to the Raft membership as a learner. Proposed only once every host reads it (an
    /// agent of an earlier release would stop on an entry it cannot read).
    AddHost {
        /// Its name.
        host: String,
        /// The base URL of its agent.
        url: String,
    },
    /// Take a host out of the cluster for good: every host drops it from its peers, and the coordinator
    /// removes it from the Raft membership (choosing another voter if it voted). Refused while it owns a
    /// vserver.
    RemoveHost {
        /// Its name.
        host: String,
    },
    /// Record, change or (`entry` none) remove a protected vserver's placement (`vserver-agent placement`), if
    /// its revision is still `expected_revision` (0: not placed). Proposed only once every host reads it, as
    /// [`Command::AddHost`].
    Place {
        /// The vserver.
        vserver: String,
        /// Its placement; none to take it out of the cluster's protection.
        entry: Option<crate::placement::VserverEntry>,
        /// The revision the proposer read (0 for a vserver not placed).
        expected_revision: u64,
    },
    /// Take in the placements of `host`'s cluster file, once: those of vservers the table has no entry for and
    /// that no operator removed. After it, the table, not that file, says where the vservers are.
    SeedPlacements {
        /// The host whose file it is.
        host: String,
        /// Its file's entries, `[defaults]` written into each.
        entries: BTreeMap<String, crate::placement::VserverEntry>,
    },
}

/// What applying one log entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The change was applied.
    Applied {
        /// The vserver.
        vserver: String,
        /// Its owner now (`None` after a clear).
        owner: Option<String>,
        /// Its epoch now.
        epoch: u64,
    },
    /// Refused: the vserver's epoch was not the expected one. Nothing changed.
    StaleEpoch {
        /// The vserver.
        vserver: String,
        /// The epoch the command expected.
        expected: u64,
        /// The vserver's epoch.
        current: u64,
        /// The vserver's owner.
        owner: Option<String>,
    },
    /// Refused: the cluster (`host` none) or the host a takeover would take the vserver from is in
    /// maintenance. Nothing changed.
    InMaintenance {
        /// The vserver.
        vserver: String,
        /// The host in maintenance; none when the whole cluster is.
        host: Option<String>,
    },
    /// Maintenance is now as asked.
    MaintenanceSet,
    /// The event was appended under this sequence number.
    EventLogged {
        /// Its sequence number (1 for the cluster's first event).
        seq: u64,
    },
    /// The host was added to, or removed from, the cluster's hosts.
    HostsSet,
    /// Refused: the host to remove still owns these vservers. Nothing changed.
    HostOwns {
        /// The host.
        host: String,
        /// The vservers it owns.
        vservers: Vec<String>,
    },
    /// The vserver's placement is now at this revision (removed, for a removal).
    Placed {
        /// The vserver.
        vserver: String,
        /// Its revision now.
        revision: u64,
    },
    /// Refused: the vserver's placement was not at the expected revision. Nothing changed.
    StaleRevision {
        /// The vserver.
        vserver: String,
        /// The revision the command expected.
        expected: u64,
        /// Its revision (0: not placed).
        current: u64,
    },
    /// A host's cluster file was taken in: these vservers were added (the others were in the table already).
    Seeded {
        /// The vservers added.
        added: Vec<String>,
    },
    /// An entry without application data (a new leader's blank entry, a membership change).
    Nothing,
}

/// A protected vserver's placement in the cluster's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedEntry {
    /// Its placement: the host it was placed on, its standbys, its data path and replication settings.
    pub entry: crate::placement::VserverEntry,
    /// Grows at every change of the cluster's placements; a compare-and-set names it.
    pub revision: u64,
}

/// One vserver's row: who owns it and at which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerEntry {
    /// The owning host, or `None` once cleared.
    pub owner: Option<String>,
    /// Grows by one at every applied change; 0 means never owned.
    pub epoch: u64,
}

/// One line of the cluster's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its sequence number, from 1, never reused.
    pub seq: u64,
    /// When it happened, in milliseconds since the Unix epoch, by the reporting host's clock.
    pub at_ms: u64,
    /// The host that reported it.
    pub host: String,
    /// What happened.
    pub text: String,
    /// Its kind: a short stable word (`host_dead`, `fenced`, `takeover`, `migrate`, `restart`, ...). Events
    /// written before kinds existed have none in the log; [`Event::kind`] derives one from their text.
    #[serde(default)]
    pub kind: String,
    /// The vserver it is about, if any.
    #[serde(default)]
    pub vserver: Option<String>,
}

impl Event {
    /// Its kind: the recorded one, or for an event written before kinds existed, `takeover` for a takeover
    /// record and `note` for anything else.
    pub fn kind(&self) -> &str {
        if !self.kind.is_empty() {
            &self.kind
        } else if self.text.starts_with("takeover {") {
            "takeover"
        } else {
            "note"
        }
    }
}

/// Since when, and through which host, maintenance is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceMark {
    /// When it was turned on, ms since the Unix epoch, by the asking host's clock.
    pub since_ms: u64,
    /// The host through which it was asked.
    pub by: String,
}

/// Maintenance as the cluster decided it: while on, fencing and takeover stand down (for one host, or for
/// all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The whole cluster: no host fences itself and no takeover happens.
    pub cluster: Option<MaintenanceMark>,
    /// Hosts in maintenance: each keeps its vservers running, never fences, and is never taken over.
    pub hosts: BTreeMap<String, MaintenanceMark>,
}

impl Maintenance {
    /// Whether `host` stands outside fencing and takeover now: it, or the whole cluster, is in maintenance.
    pub fn covers(&self, host: &str) -> bool {
        self.cluster.is_some() || self.hosts.contains_key(host)
    }
}

/// The state machine's data, and the content of a snapshot (as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// Each vserver's row.
    pub owners: BTreeMap<String, OwnerEntry>,
    /// The last [`MAX_EVENTS`] events, oldest first.
    pub events: VecDeque<Event>,
    /// The sequence number of the last event ever appended.
    pub last_event_seq: u64,
    /// Maintenance, for the cluster and per host (absent from tables written before it existed).
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Hosts taken into the cluster through it (`vserver-agent token HOST --address`), by name, with their
    /// agent's base URL; the hosts of the configuration files are known without it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
    /// Hosts taken out of the cluster for good (`vserver-agent remove HOST`): no host counts them as peers
    /// any more, whatever its configuration file says.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub removed: std::collections::BTreeSet<String>,
    /// The protected vservers' placements (`vserver-agent placement`, and the cluster files taken in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placements: BTreeMap<String, PlacedEntry>,
    /// The revision of the last change of the placements.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub placement_revision: u64,
    /// The hosts whose cluster file was taken in: from then on the table, not their file, places vservers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub placements_from: std::collections::BTreeSet<String>,
    /// Vservers an operator took out of the placements: no host's cluster file brings them back.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub unplaced: std::collections::BTreeSet<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TableState {
    /// The vserver's epoch: 0 for a vserver never owned.
    pub fn epoch(&self, vserver: &str) -> u64 {
        self.owners.get(vserver).map_or(0, |e| e.epoch)
    }

    /// Applies one command: deterministic, so every replica ends in the same state.
    pub fn apply(&mut self, command: &Command) -> Response {
        match command {
            Command::SetOwner { vserver, owner, expected_epoch } => {
                self.compare_and_set(vserver, Some(owner.clone()), *expected_epoch)
            }
            Command::Clear { vserver, expected_epoch } => self.compare_and_set(vserver, None, *expected_epoch),
            Command::TakeOver { vserver, owner, expected_epoch, from } => {
                if self.maintenance.cluster.is_some() {
                    return Response::InMaintenance { vserver: vserver.clone(), host: None };
                }
                if self.maintenance.hosts.contains_key(from) {
                    return Response::InMaintenance { vserver: vserver.clone(), host: Some(from.clone()) };
                }
                self.compare_and_set(vserver, Some(owner.clone()), *expected_epoch)
            }
            Command::Maintenance { host, on, at_ms, by } => {
                let mark = MaintenanceMark { since_ms: *at_ms, by: by.clone() };
                match (host, on) {
                    // Turning on what is on keeps the first mark: since when it has been on.
                    (None, true) => {
                        self.maintenance.cluster.get_or_insert(mark);
                    }
                    (None, false) => self.maintenance.cluster = None,
                    (Some(h), true) => {
                        self.maintenance.hosts.entry(h.clone()).or_insert(mark);
                    }
                    (Some(h), false) => {
                        self.maintenance.hosts.remove(h);
                    }
                }
                Response::MaintenanceSet
            }
            Command::Event { at_ms, host, text, kind, vserver } => {
                self.last_event_seq += 1;
                let mut event = Event {
                    seq: self.last_event_seq,
                    at_ms: *at_ms,
                    host: host.clone(),
                    text: text.clone(),
                    kind: kind.clone(),
                    vserver: vserver.clone(),
                };
                event.kind = event.kind().to_string();
                self.events.push_back(event);
                while self.events.len() > MAX_EVENTS {
                    self.events.pop_front();
                }
                Response::EventLogged { seq: self.last_event_seq }
            }
            Command::AddHost { host, url } => {
                self.removed.remove(host);
                self.hosts.insert(host.clone(), url.clone());
                Response::HostsSet
            }
            Command::RemoveHost { host } => {
                let owned: Vec<String> = self
                    .owners
                    .iter()
                    .filter(|(_, e)| e.owner.as_deref() == Some(host.as_str()))
                    .map(|(v, _)| v.clone())
                    .collect();
                if !owned.is_empty() {
                    return Response::HostOwns { host: host.clone(), vservers: owned };
                }
                self.hosts.remove(host);
                self.maintenance.hosts.remove(host);
                self.removed.insert(host.clone());
                Response::HostsSet
            }
            Command::Place { vserver, entry, expected_revision } => {
                let current = self.placements.get(vserver).map_or(0, |p| p.revision);
                if current != *expected_revision {
                    return Response::StaleRevision { vserver: vserver.clone(), expected: *expected_revision, current };
                }
                self.placement_revision += 1;
                match entry {
                    Some(entry) => {
                        let placed = PlacedEntry { entry: entry.clone(), revision: self.placement_revision };
                        self.placements.insert(vserver.clone(), placed);
                        self.unplaced.remove(vserver);
                    }
                    None => {
                        self.placements.remove(vserver);
                        self.unplaced.insert(vserver.clone());
                    }
                }
                Response::Placed { vserver: vserver.clone(), revision: self.placement_revision }
            }
            Command::SeedPlacements { host, entries } => {
                if !self.placements_from.insert(host.clone()) {
                    return Response::Seeded { added: Vec::new() };
                }
                let mut added = Vec::new();
                for (vserver, entry) in entries {
                    if self.placements.contains_key(vserver) || self.unplaced.contains(vserver) {
                        continue;
                    }
                    self.placement_revision += 1;
                    let placed = PlacedEntry { entry: entry.clone(), revision: self.placement_revision };
                    self.placements.insert(vserver.clone(), placed);
                    added.push(vserver.clone());
                }
                Response::Seeded { added }
            }
        }
    }

    fn compare_and_set(&mut self, vserver: &str, owner: Option<String>, expected: u64) -> Response {
        let current = self.epoch(vserver);
        if current != expected {
            let owner = self.owners.get(vserver).and_then(|e| e.owner.clone());
            return Response::StaleEpoch { vserver: vserver.to_string(), expected, current, owner };
        }
        let entry = OwnerEntry { owner: owner.clone(), epoch: current + 1 };
        self.owners.insert(vserver.to_string(), entry);
        Response::Applied { vserver: vserver.to_string(), owner, epoch: current + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vserver: &str, owner: &str, expected_epoch: u64) -> Command {
        Command::SetOwner { vserver: vserver.into(), owner: owner.into(), expected_epoch }
    }

    #[test]
    fn set_owner_applies_only_at_the_expected_epoch() {
        let mut t = TableState::default();
        assert_eq!(
            t.apply(&set("web", "a", 0)),
            Response::Applied { vserver: "web".into(), owner: Some("a".into()), epoch: 1 }
        );
        let before = t.clone();
        assert_eq!(
            t.apply(&set("web", "b", 0)),
            Response::StaleEpoch { vserver: "web".into(), expected: 0, current: 1, owner: Some("a".into()) }
        );
        assert_eq!(t, before, "a refusal changes nothing");
        assert!(matches!(t.apply(&set("web", "b", 1)), Response::Applied { epoch: 2, .. }));
    }

    #[test]
    fn clear_keeps_the_epoch_growing() {
        let mut t = TableState::default();
        t.apply(&set("web", "a", 0));
        let cleared = t.apply(&Command::Clear { vserver: "web".into(), expected_epoch: 1 });
        assert_eq!(cleared, Response::Applied { vserver: "web".into(), owner: None, epoch: 2 });
        assert!(matches!(t.apply(&set("web", "a", 0)), Response::StaleEpoch { current: 2, .. }));
        assert_eq!(t.epoch("web"), 2);
        assert_eq!(t.epoch("never"), 0);
    }

    #[test]
    fn maintenance_wins_over_a_takeover_committed_after_it_and_not_before() {
        let mut t = TableState::default();
        t.apply(&set("web", "a", 0));
        let take = |from: &str| Command::TakeOver {
            vserver: "web".into(),
            owner: "b".into(),
            expected_epoch: 1,
            from: from.into(),
        };
        let maint = |host: Option<&str>, on| Command::Maintenance {
            host: host.map(str::to_string),
            on,
            at_ms: 7,
            by: "c".into(),
        };
        assert_eq!(t.apply(&maint(Some("a"), true)), Response::MaintenanceSet);
        assert!(t.maintenance.covers("a") && !t.maintenance.covers("b"));
        assert_eq!(t.apply(&take("a")), Response::InMaintenance { vserver: "web".into(), host: Some("a".into()) });
        assert_eq!(t.epoch("web"), 1, "a refused takeover changes nothing");
        t.apply(&maint(Some("a"), false));
        t.apply(&maint(None, true));
        assert!(t.maintenance.covers("b"), "cluster maintenance covers every host");
        assert_eq!(t.apply(&take("a")), Response::InMaintenance { vserver: "web".into(), host: None });
        t.apply(&maint(None, false));
        assert!(matches!(t.apply(&take("a")), Response::Applied { epoch: 2, .. }));
        // A table written before maintenance existed reads as none.
        let old: TableState = serde_json::from_str(r#"{"owners":{},"events":[],"last_event_seq":0}"#).unwrap();
        assert_eq!(old.maintenance, Maintenance::default());
    }

    #[test]
    fn a_host_is_removed_only_once_it_owns_nothing_and_may_come_back() {
        let mut t = TableState::default();
        t.apply(&set("web", "a", 0));
        let remove = Command::RemoveHost { host: "a".into() };
        assert_eq!(t.apply(&remove), Response::HostOwns { host: "a".into(), vservers: vec!["web".into()] });
        assert!(t.removed.is_empty(), "a refused removal changes nothing");
        t.apply(&set("web", "b", 1));
        t.apply(&Command::Maintenance { host: Some("a".into()), on: true, at_ms: 1, by: "b".into() });
        assert_eq!(t.apply(&remove), Response::HostsSet);
        assert!(t.removed.contains("a") && !t.maintenance.covers("a"), "gone, with its maintenance");
        let add = Command::AddHost { host: "a".into(), url: "https://10.0.0.1:7070".into() };
        assert_eq!(t.apply(&add), Response::HostsSet);
        assert!(t.removed.is_empty());
        assert_eq!(t.hosts.get("a").map(String::as_str), Some("https://10.0.0.1:7070"));
        // A table without hosts writes as before (an earlier release reads its snapshots).
        let plain = serde_json::to_value(TableState::default()).unwrap();
        let keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["events", "last_event_seq", "maintenance", "owners"], "{plain}");
    }

    #[test]
    fn placements_change_by_revision_and_a_file_is_taken_in_once_without_bringing_back_a_removal() {
        use crate::placement::VserverEntry;
        let entry = |primary: &str, standbys: &[&str]| VserverEntry {
            primary: primary.into(),
            standbys: standbys.iter().map(|s| s.to_string()).collect(),
            ..VserverEntry::default()
        };
        let place = |v: &str, e: Option<VserverEntry>, expected_revision| Command::Place {
            vserver: v.into(),
            entry: e,
            expected_revision,
        };
        let mut t = TableState::default();
        assert_eq!(
            t.apply(&place("web", Some(entry("a", &["b"])), 0)),
            Response::Placed { vserver: "web".into(), revision: 1 }
        );
        let before = t.clone();
        assert_eq!(
            t.apply(&place("web", Some(entry("a", &["c"])), 0)),
            Response::StaleRevision { vserver: "web".into(), expected: 0, current: 1 }
        );
        assert_eq!(t, before, "a refusal changes nothing");
        t.apply(&place("web", Some(entry("a", &["c"])), 1));
        assert_eq!(t.placements["web"].entry.standbys, ["c"]);
        // A file taken in adds what the table lacks, never overwrites, and counts once per host.
        let file: BTreeMap<String, VserverEntry> =
            [("web".to_string(), entry("a", &["b"])), ("db".to_string(), entry("b", &["a"]))].into();
        let seed = |host: &str| Command::SeedPlacements { host: host.into(), entries: file.clone() };
        assert_eq!(t.apply(&seed("a")), Response::Seeded { added: vec!["db".into()] });
        assert_eq!(t.placements["web"].entry.standbys, ["c"], "the table wins over a file");
        // Removed by an operator: a file taken in later does not bring it back.
        let rev = t.placements["db"].revision;
        assert!(matches!(t.apply(&place("db", None, rev)), Response::Placed { .. }));
        assert_eq!(t.apply(&seed("b")), Response::Seeded { added: vec![] });
        assert!(!t.placements.contains_key("db"));
        assert_eq!(t.apply(&seed("a")), Response::Seeded { added: vec![] }, "once per host");
        // Placed again by an operator: it is back, from revision 0.
        assert!(matches!(t.apply(&place("db", Some(entry("b", &[])), 0)), Response::Placed { .. }));
        assert!(t.unplaced.is_empty());
        // A table with placements reads back; one without writes as before (an earlier release reads it).
        let back: TableState = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let plain = serde_json::to_value(TableState::default()).unwrap();
        assert!(plain.get("placements").is_none() && plain.get("placement_revision").is_none());
    }

    #[test]
    fn the_event_log_keeps_the_last_thousand() {
        let mut t = TableState::default();
        for i in 0..(MAX_EVENTS as u64 + 5) {
            t.apply(&Command::Event {
                at_ms: i,
                host: "a".into(),
                text: format!("e{i}"),
                kind: String::new(),
                vserver: None,
            });
        }
        assert_eq!(t.events.len(), MAX_EVENTS);
        assert_eq!(t.events.front().map(|e| e.seq), Some(6));
        assert_eq!(t.last_event_seq, MAX_EVENTS as u64 + 5);
    }

    #[test]
    fn events_written_before_kinds_still_read() {
        // A log entry and a snapshot as they were written before events had a kind and a vserver.
        let entry = r#"{"op":"event","at_ms":5,"host":"a","text":"takeover {\"vserver\":\"web\"}"}"#;
        let command: Command = serde_json::from_str(entry).expect("an old entry reads");
        let mut t = TableState::default();
        t.apply(&command);
        assert_eq!(t.events[0].kind, "takeover");
        assert_eq!(t.events[0].vserver, None);
        let snapshot = r#"{"owners":{},"events":[{"seq":1,"at_ms":5,"host":"a","text":"hello"}],"last_event_seq":1}"#;
        let old: TableState = serde_json::from_str(snapshot).expect("an old snapshot reads");
        assert_eq!(old.events[0].kind(), "note");
        let new = Command::Event {
            at_ms: 6,
            host: "a".into(),
            text: "t".into(),
            kind: "migrate".into(),
            vserver: Some("web".into()),
        };
        let back: Command = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}

/// The answer to a forwarded proposal (`POST /v1/raft/propose` on the leader).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ProposeReply {
    /// Committed and applied; the state machine's answer.
    Applied(Response),
    /// This node is not (or no longer) the leader; the proposer looks for the leader again.
    NotLeader,
}
