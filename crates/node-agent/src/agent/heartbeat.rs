//! Heartbeats between agents, as this host sends them: its signed HTTP heartbeats to the peers it names (the
//! UDP beacons are `beacons`'). What they say, and the failure detector that judges them, are
//! `failover::membership`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

pub use failover::membership::{HeartbeatReject, Membership, MembershipConfig};

use super::config::AgentConfig;
use super::serve::Tls;
use super::supervisor::Supervisor;
use crate::model::SignedHeartbeat;

/// How long an idle connection to a peer is kept for the next heartbeat.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// TCP keep-alive on connections to peers, so a dead path is noticed by the kernel too.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The failure detector's settings, from this agent's configuration.
pub fn membership_config(config: &AgentConfig, secret: &str, incarnation: u64) -> MembershipConfig {
    MembershipConfig {
        node: config.node.clone(),
        peers: config.peers.iter().map(|p| (p.name.clone(), p.url.clone())).collect(),
        secret: secret.to_string(),
        incarnation,
        suspect_after: Duration::from_millis(config.heartbeat.suspect_after_ms),
        dead_after: Duration::from_millis(config.heartbeat.dead_after_ms),
        lease_len: Duration::from_millis(config.fencing.timeout_ms),
    }
}

/// Why one heartbeat to a peer did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// Not connected, timed out, or the connection broke.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// The peer answered, but refused.
    #[error("answered {0}")]
    Refused(reqwest::StatusCode),
}

/// The one HTTP client of the sender: connections are kept and reused, no heartbeat waits longer than
/// `timeout`, and `HTTP_PROXY`-style variables are ignored. With `[tls]`, it presents this agent's
/// certificate, and with a cluster CA it trusts that CA alone.
pub fn heartbeat_client(timeout: Duration, tls: Option<&Tls>) -> reqwest::Result<reqwest::Client> {
    peer_client(timeout, tls)
}

/// An HTTP client to peers: kept-alive connections, no proxy, requests bounded by `timeout`, and with
/// `[tls]` this agent's certificate (and the cluster CA alone, when configured).
pub fn peer_client(timeout: Duration, tls: Option<&Tls>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(tls) = tls {
        builder = builder.identity(reqwest::Identity::from_pem(&tls.identity_pem)?);
        if let Some(ca) = &tls.ca_pem {
            builder = builder.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    builder
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE)
        .tcp_nodelay(true)
        // Peers are reached directly: a proxy from the environment would add a hop to the failure detector.
        .no_proxy()
        .build()
}

/// `POST {peer_url}/v1/heartbeat`; the round-trip time on a 2xx answer.
async fn send_heartbeat(
    client: &reqwest::Client,
    peer_url: &str,
    credentials: &failover::peer::Credentials,
    signed: &SignedHeartbeat,
) -> Result<Duration, SendError> {
    let url = format!("{}/v1/heartbeat", peer_url.trim_end_matches('/'));
    let sent = Instant::now();
    let response = credentials.apply(client.post(&url), &url).json(signed).send().await?;
    let status = response.status();
    // Read the answer to its end so the connection goes back to the pool.
    response.bytes().await?;
    let rtt = sent.elapsed();
    if status.is_success() {
        Ok(rtt)
    } else {
        Err(SendError::Refused(status))
    }
}

/// A heartbeat whose content (the vservers' states, maintenance) a peer already has is sent to it every this
/// many intervals only (5 s by default), while this host's beacons reach it (its acks say so): they prove the
/// host alive 10 times a second. A change is sent at once, then at every interval until the peer has taken it;
/// so is the same content to a peer that restarted since it took it (it knows nothing it was told); and every
/// interval to a peer the beacons do not reach (UDP blocked, beacons off).
const UNCHANGED_EVERY: u32 = 20;

/// What each peer last took from this host (what the heartbeat said, see [`what_it_says`]), when, and in
/// which of its incarnations (as this host last heard it then).
type Delivered = std::collections::HashMap<String, (Arc<String>, Instant, Option<u64>)>;

/// The part of a heartbeat a peer keeps: its vservers' states and maintenance.
fn what_it_says(hb: &failover::wire::Heartbeat) -> String {
    serde_json::to_string(&(&hb.vservers, hb.maintenance)).unwrap_or_default()
}

/// Whether `name`, now heard in `incarnation`, is due a heartbeat saying `said`: it has not taken this
/// content yet, or took it in another incarnation (it restarted since), or `unchanged_every` ago or more.
fn due(
    delivered: &std::sync::Mutex<Delivered>,
    name: &str,
    said: &str,
    incarnation: Option<u64>,
    unchanged_every: Duration,
) -> bool {
    let delivered = delivered.lock().unwrap_or_else(|p| p.into_inner());
    match delivered.get(name) {
        Some((took, at, then)) => took.as_str() != said || *then != incarnation || at.elapsed() >= unchanged_every,
        None => true,
    }
}

/// Sends a heartbeat (signed with `membership`'s key, carrying `supervisor`'s summaries) to every peer it
/// names (`Membership::heartbeat_targets`: the voters and this host's partners) at every interval through
/// `client` (see [`heartbeat_client`]), authenticated by `credentials`,
/// until aborted. Each peer gets its own task, so a slow or unreachable peer never delays the others; the tasks
/// end with this one.
pub async fn run_sender(
    client: reqwest::Client,
    config: AgentConfig,
    credentials: failover::peer::Credentials,
    membership: Arc<Membership>,
    supervisor: Supervisor,
) {
    let mut interval = tokio::time::interval(config.heartbeat.interval());
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // With beacons proving this host alive, a heartbeat that says nothing new is sent every few intervals only.
    let unchanged_every = if config.heartbeat.beacon_interval_ms == 0 {
        Duration::ZERO
    } else {
        config.heartbeat.interval() * UNCHANGED_EVERY
    };
    let delivered: Arc<std::sync::Mutex<Delivered>> = Arc::default();
    // Dropped (and so aborted) with this future, so no send outlives the sender.
    let mut in_flight = JoinSet::new();
    loop {
        interval.tick().await;
        while in_flight.try_join_next().is_some() {}
        membership.tick();
        let hb = membership.next_heartbeat(supervisor.summaries());
        let said = Arc::new(what_it_says(&hb));
        let signed = Arc::new(membership.sign(&hb));
        let targets = membership.heartbeat_targets();
        {
            let mut delivered = delivered.lock().unwrap_or_else(|p| p.into_inner());
            delivered.retain(|name, _| targets.iter().any(|(n, _)| n == name));
        }
        // The peers whose acks show that this host's beacons reach them.
        let reached: std::collections::HashSet<String> =
            membership.lease(tokio::time::Instant::now()).into_iter().map(|(name, _)| name).collect();
        for (name, url) in targets {
            let every = if reached.contains(&name) { unchanged_every } else { Duration::ZERO };
            let incarnation = membership.incarnation_of(&name);
            if !due(&delivered, &name, &said, incarnation, every) {
                continue;
            }
            let (membership, client, signed) = (Arc::clone(&membership), client.clone(), Arc::clone(&signed));
            let (delivered, said) = (Arc::clone(&delivered), Arc::clone(&said));
            let credentials = credentials.clone();
            let seq = hb.seq;
            in_flight.spawn(async move {
                match send_heartbeat(&client, &url, &credentials, &signed).await {
                    Ok(rtt) => {
                        membership.record_rtt(&name, rtt);
                        let mut delivered = delivered.lock().unwrap_or_else(|p| p.into_inner());
                        delivered.insert(name, (said, Instant::now(), incarnation));
                    }
                    Err(e) => tracing::debug!(peer = %name, seq, error = %e, "heartbeat not delivered"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "0123456789abcdef-cluster";

    fn membership() -> Membership {
        Membership::new(MembershipConfig {
            node: "h1".into(),
            peers: vec![("h2".into(), "http://127.0.0.1:7071".into())],
            secret: SECRET.into(),
            incarnation: 1,
            suspect_after: Duration::from_millis(750),
            dead_after: Duration::from_millis(1500),
            lease_len: Duration::from_millis(1800),
        })
    }

    /// A one-shot HTTP server: answers `status_line` to the first request and hands back what it read.
    async fn one_request_server(status_line: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                assert!(n > 0, "connection closed mid-request");
            }
            conn.write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, served)
    }

    #[test]
    fn a_heartbeat_that_says_nothing_new_waits_its_turn_and_a_change_goes_at_once() {
        let m = membership();
        let running =
            vec![failover::wire::VserverSummary { name: "web".into(), state: crate::model::VserverState::Running }];
        let said = Arc::new(what_it_says(&m.next_heartbeat(running.clone())));
        assert_eq!(*said, what_it_says(&m.next_heartbeat(running)), "the numbers are not content");
        let delivered = std::sync::Mutex::new(Delivered::new());
        let every = Duration::from_millis(200);
        let first = Some(7);
        assert!(due(&delivered, "h2", &said, first, every), "never delivered");
        delivered.lock().unwrap().insert("h2".into(), (Arc::clone(&said), Instant::now(), first));
        assert!(!due(&delivered, "h2", &said, first, every), "just taken");
        assert!(due(&delivered, "h3", &said, None, every), "another peer has not taken it");
        let stopped = what_it_says(&m.next_heartbeat(vec![]));
        assert!(due(&delivered, "h2", &stopped, first, every), "a change goes at once");
        assert!(due(&delivered, "h2", &said, Some(8), every), "a peer that restarted since gets it at once");
        assert!(due(&delivered, "h2", &said, first, Duration::ZERO), "beacons off: every interval");
        std::thread::sleep(every);
        assert!(due(&delivered, "h2", &said, first, every), "and the same again after a while");
    }

    #[tokio::test]
    async fn a_heartbeat_is_posted_with_the_bearer_token_and_its_signed_body() {
        let (url, served) = one_request_server("HTTP/1.1 204 No Content").await;
        let m = membership();
        let hb = m.next_heartbeat(vec![]);
        let s = m.sign(&hb);
        let client = heartbeat_client(Duration::from_secs(2), None).unwrap();
        let rtt = send_heartbeat(&client, &url, &failover::peer::Credentials::new(SECRET, false), &s).await.unwrap();
        assert!(rtt < Duration::from_secs(2));
        let request = served.await.unwrap();
        assert!(request.starts_with("POST /v1/heartbeat HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains(&format!("authorization: bearer {SECRET}")), "{request}");
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(serde_json::from_str::<SignedHeartbeat>(body).unwrap(), s);
    }

    #[tokio::test]
    async fn a_refusal_or_silence_is_an_error_not_a_round_trip() {
        let (url, served) = one_request_server("HTTP/1.1 403 Forbidden").await;
        let m = membership();
        let s = m.sign(&m.next_heartbeat(vec![]));
        let client = heartbeat_client(Duration::from_secs(2), None).unwrap();
        let refused = send_heartbeat(&client, &url, &failover::peer::Credentials::new(SECRET, false), &s).await;
        assert!(matches!(refused, Err(SendError::Refused(reqwest::StatusCode::FORBIDDEN))), "{refused:?}");
        served.await.unwrap();

        // A peer that accepts but never answers: the timeout bounds the wait.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = heartbeat_client(Duration::from_millis(100), None).unwrap();
        let started = Instant::now();
        let silent = send_heartbeat(&client, &url, &failover::peer::Credentials::new(SECRET, false), &s).await;
        assert!(matches!(silent, Err(SendError::Transport(_))), "{silent:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(listener);
    }
}
