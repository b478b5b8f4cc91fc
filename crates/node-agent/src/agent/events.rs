//! The cluster's event log as the agent reports to it and shows it (`GET /v1/events`,
//! `vserver-stat --history`).
//!
//! Every event is a line of the replicated log (failover's ownership table): its sequence number, when it
//! happened (by the reporting host's clock), the host, a kind (a short stable word, listed in [`kinds`]), the
//! vserver it is about if any, and a sentence. Events written before kinds existed get one derived from their
//! text (`takeover` or `note`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::ownership::Ownership;

use crate::model::{EventView, TakeoverRecord};

pub use failover::events::kinds;

/// The cluster's event log, through this host's member of the ownership table.
#[derive(Clone)]
pub struct EventLog {
    ownership: Ownership,
    tally: Arc<Mutex<Tally>>,
}

/// The events counted so far, by kind, up to a sequence number.
#[derive(Debug, Default)]
struct Tally {
    last_seq: u64,
    by_kind: BTreeMap<String, u64>,
}

impl EventLog {
    /// The log kept in `ownership`.
    pub fn new(ownership: Ownership) -> Self {
        Self { ownership, tally: Arc::default() }
    }

    /// The events counted by kind since this agent started: at first those the log still holds (its last
    /// [`failover::ownership::types::MAX_EVENTS`]), then each new one. It never decreases, as Prometheus
    /// expects of a counter, also when old events leave the log.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        for event in self.ownership.events_after(tally.last_seq) {
            *tally.by_kind.entry(event.kind().to_string()).or_default() += 1;
            tally.last_seq = event.seq;
        }
        tally.by_kind.clone()
    }

    /// The events after `since` (a sequence number), oldest first, at most `limit` (the oldest ones).
    pub fn list(&self, since: u64, limit: Option<usize>) -> Vec<EventView> {
        self.ownership
            .events()
            .into_iter()
            .filter(|e| e.seq > since)
            .take(limit.unwrap_or(usize::MAX))
            .map(|e| EventView {
                seq: e.seq,
                at_unix_ms: e.at_ms,
                kind: e.kind().to_string(),
                host: e.host,
                vserver: e.vserver,
                text: e.text,
            })
            .collect()
    }

    /// The takeovers the log records, oldest first.
    pub fn takeovers(&self) -> Vec<TakeoverRecord> {
        failover::events::takeovers(&self.ownership.events())
    }

    /// Appends an event of `kind` (a short word: `a-z`, `0-9`, `_`), about `vserver` if any, to the cluster's
    /// event log, stamped with this host and the current time; returns its sequence number once a majority
    /// committed it. For features that report what they did (`maintenance`, `evacuate`, ...).
    pub async fn log(&self, kind: &str, vserver: Option<&str>, text: &str) -> Result<u64, String> {
        self.log_at(kind, vserver, text, isolate::state::now_ms()).await
    }

    /// As [`EventLog::log`], stamped with `at_ms` (ms since the Unix epoch): when it happened.
    pub async fn log_at(&self, kind: &str, vserver: Option<&str>, text: &str, at_ms: u64) -> Result<u64, String> {
        self.ownership.log_at(kind, vserver, truncate(text), at_ms).await.map_err(|e| e.to_string())
    }

    /// As [`EventLog::log`], in the background, retried every second until committed (for an hour at most):
    /// for what happened while this host could not commit (it lost its majority). Stamped with the time it
    /// is called.
    pub fn log_later(&self, kind: &str, vserver: Option<&str>, text: String) {
        self.log_later_at(kind, vserver, text, isolate::state::now_ms());
    }

    /// As [`EventLog::log_later`], stamped with `at_ms` (ms since the Unix epoch): when it happened.
    pub fn log_later_at(&self, kind: &str, vserver: Option<&str>, text: String, at_ms: u64) {
        let (log, kind, vserver) = (self.clone(), kind.to_string(), vserver.map(str::to_string));
        tokio::spawn(async move {
            for _ in 0..3600 {
                match log.log_at(&kind, vserver.as_deref(), &text, at_ms).await {
                    Ok(_) => return,
                    Err(e) => tracing::debug!(%kind, error = %e, "event not logged yet; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tracing::warn!(%kind, "event never logged: {text}");
        });
    }
}

/// `text` cut to what the event log takes, at a character boundary, marked with `...`.
fn truncate(text: &str) -> &str {
    let max = failover::ownership::types::MAX_EVENT_TEXT;
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
