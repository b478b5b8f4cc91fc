//! The alerts this agent tells (`[alerts]` of agent.toml; which and when: [`failover::alerts`]): while it
//! coordinates, the fences, takeovers, errors and certificates of the cluster's event log, each through the
//! hook of its kind, then a line in the log saying how far it got; while it votes without a coordinator, a
//! lost quorum. Every host writes a line of its own certificate when it ends soon, for the coordinator to
//! tell.
//!
//! A hook is a command, run with the alert as JSON on its standard input (and `VSERVER_ALERT`,
//! `VSERVER_ALERT_HOST`, `VSERVER_ALERT_VSERVER` in its environment), which succeeds by exiting with 0; or a
//! webhook, sent the JSON in a POST, which succeeds by answering 2xx. A failed hook is tried [`TRIES`] times
//! in all, [`RETRY_AFTER`] apart; then the log's line says it failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::alerts::{AlertKind, Backlog};
use failover::events::kinds;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::node::Agent;
use crate::agent::replication::now_ms;
use crate::cluster_view::utc;

/// Attempts of a hook in all.
pub const TRIES: u32 = 3;
/// The pause between two attempts.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Events older than this when a coordinator finds them not yet told are left untold (and counted).
const MAX_AGE: Duration = Duration::from_secs(3600);
/// How often a host looks at its own certificate.
const CERTIFICATE_EVERY: Duration = Duration::from_secs(3600);
/// When a host first looks at its own certificate after its start.
const CERTIFICATE_FIRST: Duration = Duration::from_secs(10);
const DAY_MS: u64 = 86_400_000;

/// Tells the alerts due, as long as the agent runs.
pub async fn run(agent: Arc<Agent>) {
    let client = |timeout| reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
    let mut timeout = Duration::from_secs(agent.alerts().timeout_secs);
    let mut webhooks = client(timeout);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut leaderless_since: Option<Instant> = None;
    let (mut looked, mut led): (Option<u64>, bool) = (None, false);
    let mut quorum_told = false;
    // The first look once the table has caught up (the log is what says a line was already written).
    let mut certificate_next = Instant::now() + CERTIFICATE_FIRST;
    loop {
        every.tick().await;
        // As agent.toml says now (a reload changes it).
        let config = agent.alerts();
        if Duration::from_secs(config.timeout_secs) != timeout {
            timeout = Duration::from_secs(config.timeout_secs);
            webhooks = client(timeout);
        }
        let quorum_after = Duration::from_secs(config.quorum_lost_after_secs);
        let own = &agent.ownership;
        if Instant::now() >= certificate_next {
            certificate_next = Instant::now() + CERTIFICATE_EVERY;
            certificate(&agent).await;
        }
        // A voter without a coordinator tells it once per spell.
        match own.leader() {
            Some(_) => (leaderless_since, quorum_told) = (None, false),
            None => {
                let since = *leaderless_since.get_or_insert_with(Instant::now);
                let voter = own.voters().iter().any(|v| v == &agent.config.node);
                if voter && !quorum_told && since.elapsed() >= quorum_after {
                    quorum_told = true;
                    if let Some(hook) = config.hook(AlertKind::QuorumLost) {
                        let text = format!(
                            "{} has had no coordinator for {} s: the cluster may have lost its majority of voters \
                             (no takeover and no change of the table until it is back)",
                            agent.config.node,
                            since.elapsed().as_secs()
                        );
                        let event = json!({"seq": null, "at_unix_ms": now_ms(), "at": utc(now_ms()),
                            "host": agent.config.node, "kind": "quorum_lost", "vserver": null, "text": text,
                            "says": text});
                        let told =
                            tell(&webhooks, timeout, hook, AlertKind::QuorumLost, &agent.config.node, event).await;
                        log_told(AlertKind::QuorumLost, hook, &told);
                    }
                }
            }
        }
        // Looked at again when the log grew, or when this host became the coordinator.
        let leading = own.is_leader();
        let last = own.last_event_seq();
        if leading && config.any() && (looked != Some(last) || !led) {
            looked = Some(last);
            let events = own.events();
            let backlog = failover::alerts::backlog(&events, now_ms(), MAX_AGE.as_millis() as u64);
            if !backlog.due.is_empty() {
                tell_backlog(&agent, &webhooks, timeout, backlog).await;
            }
        }
        led = leading;
    }
}

/// Tells each alert of `backlog` through its hook, then records how far it got in the log.
async fn tell_backlog(agent: &Agent, webhooks: &reqwest::Client, timeout: Duration, backlog: Backlog<'_>) {
    let alerts = agent.alerts();
    let mut told = Vec::new();
    if backlog.stale > 0 {
        told.push(format!("{} older than {} min left untold", backlog.stale, MAX_AGE.as_secs() / 60));
    }
    for (event, kind) in &backlog.due {
        let Some(hook) = alerts.hook(*kind) else { continue };
        if !agent.ownership.is_leader() {
            // The next coordinator goes on from the last recorded position.
            return;
        }
        let says = failover::events::describe(&event.text)
            .or_else(|| failover::evacuate::describe(&event.text))
            .unwrap_or_else(|| event.text.clone());
        let payload = json!({"seq": event.seq, "at_unix_ms": event.at_ms, "at": utc(event.at_ms),
            "host": event.host, "kind": event.kind(), "vserver": event.vserver, "text": event.text, "says": says});
        let outcome = tell(webhooks, timeout, hook, *kind, &agent.config.node, payload).await;
        log_told(*kind, hook, &outcome);
        let about = event.vserver.as_deref().map(|v| format!(" of {v}")).unwrap_or_default();
        told.push(match outcome {
            Ok(()) => format!("{}{about} (event {}) told through {hook}", kind.name(), event.seq),
            Err(e) => format!("{}{about} (event {}) NOT told through {hook}: {e}", kind.name(), event.seq),
        });
    }
    let text = failover::alerts::alerted_text(backlog.through, &told);
    if let Err(e) = agent.events.log(kinds::ALERTED, None, &text).await {
        tracing::warn!(error = %e, "the alerts went out but the log does not say so: the next coordinator may tell them again");
    }
}

fn log_told(kind: AlertKind, hook: &str, outcome: &Result<(), String>) {
    match outcome {
        Ok(()) => tracing::info!(alert = kind.name(), hook, "alert told"),
        Err(e) => tracing::error!(alert = kind.name(), hook, error = %e, "alert not told"),
    }
}

/// Runs `hook` with the alert (`kind`, told by `node`, about `event`), up to [`TRIES`] times.
async fn tell(
    webhooks: &reqwest::Client,
    timeout: Duration,
    hook: &str,
    kind: AlertKind,
    node: &str,
    event: serde_json::Value,
) -> Result<(), String> {
    let payload = json!({"alert": kind.name(), "told_by": node, "event": event});
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let tried = if hook.starts_with("http://") || hook.starts_with("https://") {
            post(webhooks, hook, &payload).await
        } else {
            command(hook, timeout, kind, &payload).await
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if attempt < TRIES {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
    Err(format!("{last} ({TRIES} tries)"))
}

async fn post(client: &reqwest::Client, url: &str, payload: &serde_json::Value) -> Result<(), String> {
    match client.post(url).json(payload).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) => Err(failover::peer::chain(&e)),
    }
}

async fn command(path: &str, timeout: Duration, kind: AlertKind, payload: &serde_json::Value) -> Result<(), String> {
    let event = &payload["event"];
    let mut child = tokio::process::Command::new(path)
        .env("VSERVER_ALERT", kind.name())
        .env("VSERVER_ALERT_HOST", event["host"].as_str().unwrap_or(""))
        .env("VSERVER_ALERT_VSERVER", event["vserver"].as_str().unwrap_or(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut input = child.stdin.take().expect("piped");
    let text = payload.to_string();
    let ran = async {
        // A hook that does not read its input still runs.
        let _ = input.write_all(text.as_bytes()).await;
        drop(input);
        child.wait().await
    };
    match tokio::time::timeout(timeout, ran).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("it ended with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("still running after {} s (killed)", timeout.as_secs())),
    }
}

/// Writes a line of this host's certificate in the log when it ends within `[alerts] certificate_days`
/// (once a day at most), for the coordinator to tell.
async fn certificate(agent: &Agent) {
    let Some(not_after) = agent.tls.as_ref().and_then(|t| t.cert_not_after_unix_ms) else { return };
    let days = agent.alerts().certificate_days;
    let now = now_ms();
    let events = agent.ownership.events();
    let node = &agent.config.node;
    if !failover::alerts::certificate_due(&events, node, not_after, now, days * DAY_MS, DAY_MS) {
        return;
    }
    let text = failover::alerts::certificate_text(node, &utc(not_after), not_after.saturating_sub(now) / DAY_MS);
    tracing::warn!("{text}");
    agent.events.log_later(kinds::CERTIFICATE_EXPIRY, None, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A webhook on a local port answering `status` once; gives its URL and what it was sent.
    async fn webhook(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as they announce.
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                        .and_then(|l| l.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length || n == 0 {
                        break;
                    }
                }
            }
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            conn.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).to_string()
        });
        (url, got)
    }

    #[tokio::test]
    async fn a_webhook_is_posted_the_alert_as_json_and_must_answer_2xx() {
        let client = reqwest::Client::new();
        let payload = json!({"alert": "takeover", "told_by": "h1", "event": {"vserver": "web"}});
        let (url, got) = webhook("204 No Content").await;
        assert_eq!(post(&client, &url, &payload).await, Ok(()));
        let request = got.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(request.to_ascii_lowercase().contains("content-type: application/json"), "{request}");
        let body: serde_json::Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body, payload);
        let (url, _) = webhook("500 Internal Server Error").await;
        assert_eq!(post(&client, &url, &payload).await, Err("answered 500 Internal Server Error".into()));
    }

    #[tokio::test]
    async fn a_command_gets_the_alert_on_its_input_and_must_exit_0() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let hook = dir.path().join("hook");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\necho \"$VSERVER_ALERT $VSERVER_ALERT_VSERVER\" > {0}\ncat >> {0}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let payload = json!({"alert": "error", "event": {"vserver": "web", "host": "h1"}});
        let hook = hook.to_str().unwrap();
        assert_eq!(command(hook, Duration::from_secs(10), AlertKind::Error, &payload).await, Ok(()));
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got.lines().next(), Some("error web"));
        assert_eq!(serde_json::from_str::<serde_json::Value>(got.lines().nth(1).unwrap()).unwrap(), payload);
        let failing = dir.path().join("failing");
        std::fs::write(&failing, "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(&failing, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let said = command(failing.to_str().unwrap(), Duration::from_secs(10), AlertKind::Error, &payload).await;
        assert!(said.unwrap_err().contains("exit status: 3"));
        let slow = dir.path().join("slow");
        std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let said = command(slow.to_str().unwrap(), Duration::from_millis(300), AlertKind::Error, &payload).await;
        assert!(said.unwrap_err().contains("killed"));
    }
}
