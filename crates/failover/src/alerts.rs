//! Alerts: which lines of the cluster's event log an operator is told of at once, and which of them are still
//! to be told. The coordinator tells them (a hook per alert kind, run by the agent), then records in the log
//! how far it got (an [`kinds::ALERTED`] line), so that a coordinator elected after it goes on from there:
//! each alert goes out at least once, whoever coordinates.
//!
//! Two alerts have no line of the log behind them when they happen, and are told by the hosts themselves:
//! `quorum_lost` (a voter that has had no coordinator for a while: there is none to tell it) and, through a
//! line each host writes of its own certificate, `certificate_expiry`.

use serde::Serialize;

use crate::events::kinds;
use crate::ownership::Event;

/// What an operator is alerted of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A host lost its lease and fenced its vservers.
    Fenced,
    /// A vserver was taken over from a dead host, or a takeover failed on a standby.
    Takeover,
    /// A vserver went to state error: the relocation limit, or the restart limit on its host.
    Error,
    /// A voter has had no coordinator for a while: the cluster may have lost its majority.
    QuorumLost,
    /// A host's certificate ends soon.
    CertificateExpiry,
}

impl AlertKind {
    /// Every kind, in the order of the configuration's keys.
    pub const ALL: [AlertKind; 5] =
        [Self::Fenced, Self::Takeover, Self::Error, Self::QuorumLost, Self::CertificateExpiry];

    /// Its name: the configuration's key and the payload's `alert`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            Self::Takeover => "takeover",
            Self::Error => "error",
            Self::QuorumLost => "quorum_lost",
            Self::CertificateExpiry => "certificate_expiry",
        }
    }

    /// The alert an event of the log raises, if any.
    pub fn of(event: &Event) -> Option<Self> {
        match event.kind() {
            kinds::FENCED => Some(Self::Fenced),
            kinds::TAKEOVER | kinds::TAKEOVER_FAILED => Some(Self::Takeover),
            kinds::RELOCATION_ERROR | kinds::RESTART_GAVE_UP => Some(Self::Error),
            kinds::CERTIFICATE_EXPIRY => Some(Self::CertificateExpiry),
            _ => None,
        }
    }
}

/// The text of the line recording that the alerts of the events up to `seq` went out.
pub fn alerted_text(seq: u64, told: &[String]) -> String {
    let what = if told.is_empty() { "nothing to tell".to_string() } else { told.join("; ") };
    format!("alerted through {seq}: {what}")
}

/// The sequence number an [`kinds::ALERTED`] line records, if `event` is one.
fn alerted_through(event: &Event) -> Option<u64> {
    if event.kind() != kinds::ALERTED {
        return None;
    }
    event.text.strip_prefix("alerted through ")?.split(':').next()?.trim().parse().ok()
}

/// Where the alerts stand in `events` (the log, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog<'a> {
    /// The events whose alerts are still to go out, oldest first: after the last recorded position, at
    /// most `max_age_ms` old at `now_ms` (an alert that old tells nothing: see [`Backlog::stale`]).
    pub due: Vec<(&'a Event, AlertKind)>,
    /// How many were left out as too old.
    pub stale: usize,
    /// The last sequence number looked at: what the next [`kinds::ALERTED`] line records.
    pub through: u64,
}

/// The alerts still to go out in `events`. Without any recorded position (alerts never went out in this
/// cluster), only the events of the last `max_age_ms` are due.
pub fn backlog(events: &[Event], now_ms: u64, max_age_ms: u64) -> Backlog<'_> {
    let from = events.iter().rev().find_map(alerted_through).unwrap_or(0);
    let oldest = now_ms.saturating_sub(max_age_ms);
    let mut due = Vec::new();
    let mut stale = 0;
    let mut through = from;
    for e in events.iter().filter(|e| e.seq > from) {
        through = through.max(e.seq);
        let Some(kind) = AlertKind::of(e) else { continue };
        if e.at_ms < oldest {
            stale += 1;
        } else {
            due.push((e, kind));
        }
    }
    Backlog { due, stale, through }
}

/// The text of a host's line about its own certificate.
pub fn certificate_text(host: &str, not_after: &str, days_left: u64) -> String {
    format!("the certificate of {host} ends at {not_after} (in {days_left} days): renew it (vserver-agent rotate)")
}

/// Whether `host` should write a line about its certificate now: it ends within `warn_ms` of `now_ms`, and
/// `host` wrote none in the last `every_ms` (the log is the memory, across restarts).
pub fn certificate_due(
    events: &[Event],
    host: &str,
    not_after_ms: u64,
    now_ms: u64,
    warn_ms: u64,
    every_ms: u64,
) -> bool {
    let soon = not_after_ms <= now_ms.saturating_add(warn_ms);
    let said = events
        .iter()
        .rev()
        .any(|e| e.host == host && e.kind() == kinds::CERTIFICATE_EXPIRY && e.at_ms + every_ms > now_ms);
    soon && !said
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, at_ms: u64, kind: &str, text: &str) -> Event {
        Event { seq, at_ms, host: "h1".into(), text: text.into(), kind: kind.into(), vserver: None }
    }

    #[test]
    fn the_events_after_the_last_recorded_position_are_due() {
        let log = vec![
            event(1, 1_000, kinds::TAKEOVER, "takeover {}"),
            event(2, 1_100, kinds::ALERTED, &alerted_text(1, &["takeover of web".into()])),
            event(3, 1_200, kinds::MIGRATE, "web migrated"),
            event(4, 1_300, kinds::FENCED, "h0 fenced web"),
            event(5, 1_400, kinds::RELOCATION_ERROR, "error {}"),
        ];
        let b = backlog(&log, 2_000, 60_000);
        let due: Vec<(u64, AlertKind)> = b.due.iter().map(|(e, k)| (e.seq, *k)).collect();
        assert_eq!(due, [(4, AlertKind::Fenced), (5, AlertKind::Error)]);
        assert_eq!((b.through, b.stale), (5, 0));
        // Once recorded, nothing is due until something happens.
        let mut log = log;
        log.push(event(6, 1_500, kinds::ALERTED, &alerted_text(5, &[])));
        let b = backlog(&log, 2_000, 60_000);
        assert!(b.due.is_empty() && b.through == 6);
        log.push(event(7, 1_600, kinds::TAKEOVER_FAILED, "h2 refused"));
        assert_eq!(backlog(&log, 2_000, 60_000).due[0].1, AlertKind::Takeover);
    }

    #[test]
    fn old_events_are_left_out_and_counted() {
        let log = vec![event(1, 1_000, kinds::FENCED, "old"), event(2, 90_000, kinds::FENCED, "new")];
        let b = backlog(&log, 100_000, 60_000);
        assert_eq!(b.due.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(), [2]);
        assert_eq!((b.stale, b.through), (1, 2));
    }

    #[test]
    fn a_certificate_line_is_written_once_a_day_while_the_end_is_near() {
        let day = 86_400_000;
        let now = 100 * day;
        assert!(!certificate_due(&[], "h1", now + 40 * day, now, 30 * day, day), "40 days left: not yet");
        assert!(certificate_due(&[], "h1", now + 20 * day, now, 30 * day, day));
        let said = vec![Event {
            seq: 1,
            at_ms: now - day / 2,
            host: "h1".into(),
            text: certificate_text("h1", "2027-01-01T00:00:00Z", 20),
            kind: kinds::CERTIFICATE_EXPIRY.into(),
            vserver: None,
        }];
        assert!(!certificate_due(&said, "h1", now + 20 * day, now, 30 * day, day), "said half a day ago");
        assert!(certificate_due(&said, "h2", now + 20 * day, now, 30 * day, day), "another host's line");
        assert!(certificate_due(&said, "h1", now + 20 * day, now + day, 30 * day, day), "a day later");
    }
}
