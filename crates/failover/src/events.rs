//! The cluster's event log, read and written by the rules of the cluster: the kinds of its lines, the records
//! a takeover, a relocation error, an operator's clear and an operator's intent leave in it, and what they
//! add up to (a vserver's relocations within the failure window; whether a vserver taken over is meant to
//! run). The log itself is the ownership table's ([`crate::ownership::Event`]).

use serde::{Deserialize, Serialize};

use crate::ownership::Event;
use crate::wire::VserverState;

/// The kinds of the cluster's event log.
pub mod kinds {
    /// The coordinator confirmed a host dead (its lease over), before taking its vservers over.
    pub const HOST_DEAD: &str = "host_dead";
    /// A host lost its lease and fenced its vservers; logged once it can commit again.
    pub const FENCED: &str = "fenced";
    /// A vserver taken over from a dead host (the text is `takeover {json}`, with each phase's duration).
    pub const TAKEOVER: &str = "takeover";
    /// A takeover that failed on one standby.
    pub const TAKEOVER_FAILED: &str = "takeover_failed";
    /// A migrate finished (logged by its source, with the outage).
    pub const MIGRATE: &str = "migrate";
    /// A migrate that failed (logged by its source).
    pub const MIGRATE_FAILED: &str = "migrate_failed";
    /// A vserver that died on its own, restarted on its host by the supervisor.
    pub const RESTART: &str = "restart";
    /// A vserver rebooted itself (`reboot` inside) and was started again where it runs: its own intent.
    pub const REBOOT: &str = "reboot";
    /// A vserver halted itself (`halt` or `poweroff` inside): its intent is now stopped.
    pub const HALT: &str = "halt";
    /// A returning host kept its diverged copy of a vserver aside.
    pub const ASIDE: &str = "aside";
    /// Maintenance turned on or off, for a host or the cluster.
    pub const MAINTENANCE: &str = "maintenance";
    /// An evacuation of a host ended (the text records what moved where).
    pub const EVACUATE: &str = "evacuate";
    /// A vserver's relocation limit put it in state error, cluster-wide.
    pub const RELOCATION_ERROR: &str = "relocation_error";
    /// A vserver that died too often on its host: not restarted there until an operator clears it.
    pub const RESTART_GAVE_UP: &str = "restart_gave_up";
    /// An operator's start, restart or stop of a vserver of the cluster, recorded before it is carried out:
    /// the text begins with `running` or `stopped` (see [`super::intent_event`]).
    pub const INTENT: &str = "intent";
    /// The coordinator told the operator of the events up to a sequence number (see [`crate::alerts`]).
    pub const ALERTED: &str = "alerted";
    /// A host's certificate ends soon (written by the host, once a day while it does).
    pub const CERTIFICATE_EXPIRY: &str = "certificate_expiry";
}

/// The event log's text prefix of a takeover record.
pub const RECORD_PREFIX: &str = "takeover ";
/// The event log's text prefix of a vserver put in error by the relocation limit.
pub const ERROR_PREFIX: &str = "error ";
/// The event log's text prefix of an operator's clear of a vserver's failure accounting.
pub const CLEAR_PREFIX: &str = "clear ";

/// A vserver put in error, or cleared, as the event log keeps it (after [`ERROR_PREFIX`] or [`CLEAR_PREFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRecord {
    /// The vserver.
    pub vserver: String,
    /// Why it is in error (`relocated 3 times in 3600 s`), or the host the operator cleared it on.
    pub text: String,
}

/// The event text putting `vserver` in error for `reason`.
pub fn error_event(vserver: &str, reason: &str) -> String {
    let r = FailureRecord { vserver: vserver.into(), text: reason.into() };
    format!("{ERROR_PREFIX}{}", serde_json::to_string(&r).expect("serializes"))
}

/// The event text of an operator's clear of `vserver` on `host`.
pub fn clear_event(vserver: &str, host: &str) -> String {
    let r = FailureRecord { vserver: vserver.into(), text: host.into() };
    format!("{CLEAR_PREFIX}{}", serde_json::to_string(&r).expect("serializes"))
}

/// One takeover, as the event log keeps it and `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverRecord {
    /// The vserver.
    pub vserver: String,
    /// The host it was taken from.
    pub from: String,
    /// The host it runs on now.
    pub to: String,
    /// The ownership epoch of the new owner.
    pub epoch: u64,
    /// When it was decided, ms since the Unix epoch (the coordinator's clock).
    #[serde(default)]
    pub at_unix_ms: u64,
    /// Each phase and its duration in ms: `detect` (the silence when the coordinator decided), `confirm`
    /// (the voters' probe), `fence_hook`, `commit` (the new owner recorded by a majority), `promote` (the
    /// replica made the running tree), `start` (the vserver started, its addresses announced).
    pub phases_ms: Vec<(String, u64)>,
    /// Whether it was started (it was not when it was stopped on the dead host).
    pub started: bool,
}

impl TakeoverRecord {
    /// From an event's text, if it is a takeover.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text.strip_prefix(RECORD_PREFIX)?).ok()
    }

    /// Its line in the event log.
    pub fn event_text(&self) -> String {
        format!("{RECORD_PREFIX}{}", serde_json::to_string(self).expect("serializes"))
    }

    /// The sum of the phases.
    pub fn total_ms(&self) -> u64 {
        self.phases_ms.iter().map(|(_, ms)| ms).sum()
    }
}

/// The takeovers in `events`, oldest first.
pub fn takeovers(events: &[Event]) -> Vec<TakeoverRecord> {
    events
        .iter()
        .filter_map(|e| {
            let r = TakeoverRecord::parse(&e.text)?;
            // Records written before they carried their time: the event's.
            Some(TakeoverRecord { at_unix_ms: if r.at_unix_ms == 0 { e.at_ms } else { r.at_unix_ms }, ..r })
        })
        .collect()
}

/// A record of the event log (a takeover, a vserver put in error, an operator's clear) in words, for people:
/// the log keeps these as JSON after a prefix, for the cluster's own reading. `None` for any other text.
pub fn describe(text: &str) -> Option<String> {
    if let Some(r) = TakeoverRecord::parse(text) {
        let phases: Vec<String> = r.phases_ms.iter().map(|(p, ms)| format!("{p} {ms}")).collect();
        return Some(format!(
            "taken over from {} by {} at epoch {}{} in {} ms (ms: {})",
            r.from,
            r.to,
            r.epoch,
            if r.started { "" } else { ", not started (it was stopped)" },
            r.total_ms(),
            phases.join(", ")
        ));
    }
    let failure = |prefix: &str| serde_json::from_str::<FailureRecord>(text.strip_prefix(prefix)?).ok();
    if let Some(r) = failure(ERROR_PREFIX) {
        return Some(format!("{} put in error: {} (vserver-agent clear to start it again)", r.vserver, r.text));
    }
    failure(CLEAR_PREFIX).map(|r| format!("{}'s failures cleared through {}", r.vserver, r.text))
}

/// A vserver's relocations (takeovers) within the failure window since it was last cleared, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relocations {
    /// When each was decided, ms since the Unix epoch, oldest first.
    pub at_unix_ms: Vec<u64>,
    /// Why it is in error, when the relocation limit put it there.
    pub error: Option<String>,
}

/// A vserver's relocations in the event log since its last clear, within `window_ms` of `now_ms`, and its
/// relocation error (which holds, whatever its age, until a clear).
pub fn relocations(events: &[Event], vserver: &str, now_ms: u64, window_ms: u64) -> Relocations {
    let mut out = Relocations::default();
    let since = now_ms.saturating_sub(window_ms);
    let failure = |prefix: &str, text: &str| {
        serde_json::from_str::<FailureRecord>(text.strip_prefix(prefix)?).ok().filter(|r| r.vserver == vserver)
    };
    for e in events {
        if TakeoverRecord::parse(&e.text).is_some_and(|r| r.vserver == vserver) {
            if e.at_ms >= since {
                out.at_unix_ms.push(e.at_ms);
            }
        } else if let Some(r) = failure(ERROR_PREFIX, &e.text) {
            out.error = Some(r.text);
        } else if failure(CLEAR_PREFIX, &e.text).is_some() {
            out = Relocations::default();
        }
    }
    out
}

/// Whether a vserver taken over is to be started: by the last intent the event log records for it (an
/// operator's start, restart, stop or clear, a halt inside, a restart limit reached, an earlier takeover),
/// else (nothing recorded, or only before the log's oldest line) by the state its host said last.
pub fn meant_to_run(events: &[Event], vserver: &str, was: Option<VserverState>) -> bool {
    let about = |e: &Event| e.vserver.as_deref() == Some(vserver);
    let logged = events.iter().fold(None, |last, e| match e.kind() {
        kinds::INTENT if about(e) => intent_of(&e.text).or(last),
        kinds::HALT | kinds::RESTART_GAVE_UP if about(e) => Some(false),
        _ => {
            if let Some(r) = TakeoverRecord::parse(&e.text).filter(|r| r.vserver == vserver) {
                Some(r.started)
            } else if e.text.starts_with(CLEAR_PREFIX)
                && serde_json::from_str::<FailureRecord>(&e.text[CLEAR_PREFIX.len()..])
                    .is_ok_and(|r| r.vserver == vserver)
            {
                Some(true)
            } else {
                last
            }
        }
    });
    logged.unwrap_or(!matches!(was, Some(VserverState::Stopped | VserverState::Error)))
}

/// The event text recording an operator's intent for `vserver`: `running` or `stopped`, and what asked it.
pub fn intent_event(vserver: &str, running: bool, what: &str) -> String {
    format!("{}: {what} of {vserver}", if running { "running" } else { "stopped" })
}

/// The intent an `intent` event's text records.
pub fn intent_of(text: &str) -> Option<bool> {
    match text.split(':').next()? {
        "running" => Some(true),
        "stopped" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_described_in_words_and_other_text_is_not() {
        let r = TakeoverRecord {
            vserver: "web".into(),
            from: "h0".into(),
            to: "h1".into(),
            epoch: 3,
            at_unix_ms: 0,
            phases_ms: vec![("detect".into(), 2000), ("commit".into(), 2)],
            started: true,
        };
        assert_eq!(
            describe(&r.event_text()).unwrap(),
            "taken over from h0 by h1 at epoch 3 in 2002 ms (ms: detect 2000, commit 2)"
        );
        assert_eq!(
            describe(&error_event("web", "relocated 3 times in 3600 s")).unwrap(),
            "web put in error: relocated 3 times in 3600 s (vserver-agent clear to start it again)"
        );
        assert_eq!(describe(&clear_event("web", "h2")).unwrap(), "web's failures cleared through h2");
        assert_eq!(describe("maintenance on for host h1, asked through h1"), None);
        assert_eq!(describe("takeover {not json"), None);
    }

    fn event(seq: u64, at_ms: u64, text: String) -> Event {
        serde_json::from_value(serde_json::json!({"seq": seq, "at_ms": at_ms, "host": "h0", "text": text})).unwrap()
    }

    fn takeover(vserver: &str) -> String {
        let r = TakeoverRecord {
            vserver: vserver.into(),
            from: "h0".into(),
            to: "h1".into(),
            epoch: 2,
            at_unix_ms: 0,
            phases_ms: vec![],
            started: true,
        };
        format!("{RECORD_PREFIX}{}", serde_json::to_string(&r).unwrap())
    }

    fn about(seq: u64, kind: &str, vserver: &str, text: String) -> Event {
        serde_json::from_value(serde_json::json!({
            "seq": seq, "at_ms": seq, "host": "h0", "text": text, "kind": kind, "vserver": vserver
        }))
        .unwrap()
    }

    #[test]
    fn the_last_recorded_intent_decides_whether_a_takeover_starts_it() {
        let running = Some(VserverState::Running);
        let stopped = Some(VserverState::Stopped);
        // Nothing recorded: what the host said last.
        assert!(meant_to_run(&[], "web", running));
        assert!(!meant_to_run(&[], "web", stopped));
        assert!(!meant_to_run(&[], "web", Some(VserverState::Error)));
        assert!(meant_to_run(&[], "web", None));
        // An operator's start just before the host died, which no heartbeat carried: started.
        let started = vec![about(1, kinds::INTENT, "web", intent_event("web", true, "start on h0"))];
        assert!(meant_to_run(&started, "web", stopped));
        // And a stop: not started, whatever the last heartbeat said.
        let mut stop = started.clone();
        stop.push(about(2, kinds::INTENT, "web", intent_event("web", false, "stop on h0")));
        assert!(!meant_to_run(&stop, "web", running));
        assert!(meant_to_run(&stop, "db", running), "another vserver's intent");
        // A restart limit reached, then an operator's clear (an event that names no vserver).
        let mut failed = started.clone();
        failed.push(about(2, kinds::RESTART_GAVE_UP, "web", "web died too often".into()));
        assert!(!meant_to_run(&failed, "web", running));
        failed.push(event(3, 3, clear_event("web", "h0")));
        assert!(meant_to_run(&failed, "web", Some(VserverState::Error)));
        // A halt inside, then an earlier takeover that did not start it, then one that did.
        let mut halted = vec![about(1, kinds::HALT, "web", "web halted itself".into())];
        assert!(!meant_to_run(&halted, "web", running));
        halted.push(event(2, 2, takeover("web")));
        assert!(meant_to_run(&halted, "web", stopped), "the last takeover started it");
        assert_eq!(intent_of("garbage"), None);
    }

    #[test]
    fn relocations_count_within_the_window_since_the_last_clear() {
        let events = vec![
            event(1, 1_000, takeover("web")),
            event(2, 50_000, takeover("web")),
            event(3, 60_000, takeover("db")),
            event(4, 70_000, takeover("web")),
            event(5, 80_000, "takeover of web by h2 failed: no".into()),
        ];
        // The window is 40 s back from 90 s: the first is too old.
        let r = relocations(&events, "web", 90_000, 40_000);
        assert_eq!(r.at_unix_ms, vec![50_000, 70_000]);
        assert_eq!(r.error, None);
        assert_eq!(relocations(&events, "db", 90_000, 40_000).at_unix_ms, vec![60_000]);
        // An error holds whatever its age; a clear forgets all before it.
        let mut more = events.clone();
        more.push(event(6, 81_000, error_event("web", "relocated 2 times in 40 s")));
        let r = relocations(&more, "web", 1_000_000, 40_000);
        assert_eq!((r.at_unix_ms.len(), r.error.as_deref()), (0, Some("relocated 2 times in 40 s")));
        assert_eq!(relocations(&more, "db", 90_000, 40_000).error, None, "another vserver's error");
        more.push(event(7, 82_000, clear_event("web", "h1")));
        assert_eq!(relocations(&more, "web", 90_000, 40_000), Default::default());
        more.push(event(8, 83_000, takeover("web")));
        assert_eq!(relocations(&more, "web", 90_000, 40_000).at_unix_ms, vec![83_000]);
    }
}
