//! The typed client of the agent-to-agent routes: one method per route, each answering
//! [`Answer<T>`]`= Result<Result<T, Refused>, Unreachable>`, so that a peer that said no ([`Refused`]) is never
//! confused with one that did not answer ([`Unreachable`]): after a lost answer, the request may have been
//! carried out. The cluster's bearer secret is added here, once (unless the client's certificate stands for it);
//! each call has its own time limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::placement::Placement;
use crate::store::GenerationMeta;
use crate::wire::{
    AbortReply, BeginReply, BeginRequest, CommitRequest, ErrorBody, HeldReplica, MaintenanceRequest, MigrateRequest,
    MigrationStatus, Preflight, ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes, StateAnswer, VserverState,
    FORWARDED_BY_HEADER,
};

/// The peer answered, and said no: the request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Refused {
    /// Its HTTP status.
    pub status: reqwest::StatusCode,
    /// What it said (the `error` of its JSON body, else the body).
    pub reason: String,
}

/// No answer (no connection, a time limit, a reset, an answer that cannot be read): the request may or may not
/// have been carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// What a call to a peer gives.
pub type Answer<T> = Result<Result<T, Refused>, Unreachable>;

/// The time limit of a control call (a replica session's begin, a preflight, a placement).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls the cluster's decisions make to other hosts, as a trait: [`PeerClient`] sends them over HTTP; a
/// simulated network can carry them instead.
pub trait Peers: Send + Sync + 'static {
    /// Whether `host` is one of the peers.
    fn knows(&self, host: &str) -> bool;
    /// See [`PeerClient::probe`].
    fn probe(
        &self,
        voter: &str,
        req: &ProbeRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<ProbeReply>> + Send;
    /// See [`PeerClient::replicas`].
    fn replicas(&self, host: &str, timeout: Duration) -> impl Future<Output = Answer<Vec<HeldReplica>>> + Send;
    /// See [`PeerClient::promote`].
    fn promote(
        &self,
        host: &str,
        name: &str,
        req: &PromoteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<(VserverState, PromoteTimes)>> + Send;
    /// See [`PeerClient::vserver_state`].
    fn vserver_state(
        &self,
        host: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Answer<VserverState>> + Send;
}

impl Peers for PeerClient {
    fn knows(&self, host: &str) -> bool {
        PeerClient::knows(self, host)
    }
    fn probe(
        &self,
        voter: &str,
        req: &ProbeRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<ProbeReply>> + Send {
        PeerClient::probe(self, voter, req, timeout)
    }
    fn replicas(&self, host: &str, timeout: Duration) -> impl Future<Output = Answer<Vec<HeldReplica>>> + Send {
        PeerClient::replicas(self, host, timeout)
    }
    fn promote(
        &self,
        host: &str,
        name: &str,
        req: &PromoteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<(VserverState, PromoteTimes)>> + Send {
        PeerClient::promote(self, host, name, req, timeout)
    }
    fn vserver_state(
        &self,
        host: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Answer<VserverState>> + Send {
        PeerClient::vserver_state(self, host, name, timeout)
    }
}

/// How a host authenticates its requests to its peers: the cluster secret as a bearer token, except over
/// https when its client certificate (signed by the cluster CA) stands for it, so that the secret never
/// travels. Over plain HTTP (a cluster moving to TLS), the secret is sent.
#[derive(Clone)]
pub struct Credentials {
    secret: Arc<str>,
    certified: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("certified", &self.certified).finish_non_exhaustive()
    }
}

impl Credentials {
    /// `secret`, and whether the client presents a certificate the peers admit.
    pub fn new(secret: &str, certified: bool) -> Self {
        Self { secret: secret.into(), certified }
    }

    /// Whether a request to `url` carries the secret.
    pub fn sends_secret(&self, url: &str) -> bool {
        !(self.certified && url.starts_with("https://"))
    }

    /// `request` (to `url`) with the secret as a bearer token, when it is sent.
    pub fn apply(&self, request: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        if self.sends_secret(url) {
            request.bearer_auth(&*self.secret)
        } else {
            request
        }
    }
}

/// Calls this host's peers. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    client: reqwest::Client,
    /// How requests are authenticated.
    credentials: Credentials,
    /// Each peer's base URL (no trailing slash), by name; the peers change as hosts join and leave.
    urls: Arc<std::sync::RwLock<BTreeMap<String, String>>>,
    /// This host's name, sent in [`FORWARDED_BY_HEADER`].
    node: Arc<str>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("PeerClient").field("peers", &urls.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client sending with `client` (its TLS settings and pool), authenticated by `credentials`, to the peers
    /// `urls` (name, base URL).
    pub fn new(
        client: reqwest::Client,
        credentials: Credentials,
        urls: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let urls = urls.into_iter().map(|(name, url)| (name, url.trim_end_matches('/').to_string())).collect();
        Self { client, credentials, urls: Arc::new(std::sync::RwLock::new(urls)), node: "".into() }
    }

    /// This client, naming `node` as the sender of the operators' requests it passes on.
    pub fn sent_by(mut self, node: &str) -> Self {
        self.node = node.into();
        self
    }

    /// Makes `urls` (name, base URL) the peers, for this client and its clones.
    pub fn set_peers(&self, urls: impl IntoIterator<Item = (String, String)>) {
        let urls = urls.into_iter().map(|(name, url)| (name, url.trim_end_matches('/').to_string())).collect();
        *self.urls.write().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// The underlying HTTP client (shared with the ownership table's transport).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether `host` is one of the peers.
    pub fn knows(&self, host: &str) -> bool {
        self.urls.read().unwrap_or_else(|p| p.into_inner()).contains_key(host)
    }

    /// `host`'s base URL.
    pub fn url(&self, host: &str) -> Option<String> {
        self.urls.read().unwrap_or_else(|p| p.into_inner()).get(host).cloned()
    }

    /// The peers' names.
    pub fn names(&self) -> Vec<String> {
        self.urls.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn request(&self, method: reqwest::Method, host: &str, path: &str) -> Result<reqwest::RequestBuilder, Unreachable> {
        let base = self.url(host).ok_or_else(|| Unreachable(format!("{host} is not a peer of this host")))?;
        let url = format!("{base}{path}");
        Ok(self.credentials.apply(self.client.request(method, &url), &url))
    }

    /// Sends and reads the answer's status and body.
    async fn exchange(&self, req: reqwest::RequestBuilder, timeout: Duration) -> Result<Reply, Unreachable> {
        let response = req.timeout(timeout).send().await.map_err(|e| Unreachable(chain(&e)))?;
        let status = response.status();
        let header = |h: &str| response.headers().get(h).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let times = PromoteTimes {
            promote_ms: header(PromoteTimes::PROMOTE_HEADER),
            start_ms: header(PromoteTimes::START_HEADER),
        };
        let body = response.text().await.map_err(|e| Unreachable(chain(&e)))?;
        Ok(Reply { status, body, times })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Answer<(T, PromoteTimes)> {
        let mut req = self.request(method, host, path)?;
        if let Some(body) = body {
            req = req.json(body);
        }
        let reply = self.exchange(req, timeout).await?;
        if !reply.status.is_success() {
            let reason = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
            return Ok(Err(Refused { status: reply.status, reason }));
        }
        // An answer that cannot be read says nothing of what was done.
        let value = serde_json::from_str(&reply.body).map_err(|e| Unreachable(format!("bad answer: {e}")))?;
        Ok(Ok((value, reply.times)))
    }

    async fn get<T: DeserializeOwned>(&self, host: &str, path: &str, timeout: Duration) -> Answer<T> {
        Ok(self.call(reqwest::Method::GET, host, path, None::<&()>, timeout).await?.map(|(v, _)| v))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        host: &str,
        path: &str,
        body: &(impl Serialize + ?Sized),
        timeout: Duration,
    ) -> Answer<T> {
        Ok(self.call(reqwest::Method::POST, host, path, Some(body), timeout).await?.map(|(v, _)| v))
    }

    /// `POST /v1/takeover/probe`: asks a voter to promise to acknowledge none of `req.host`'s beacons.
    pub async fn probe(&self, voter: &str, req: &ProbeRequest, timeout: Duration) -> Answer<ProbeReply> {
        self.post(voter, "/v1/takeover/probe", req, timeout).await
    }

    /// `GET /v1/status`: `host`'s status report (its type is the agent's).
    pub async fn status<T: DeserializeOwned>(&self, host: &str, timeout: Duration) -> Answer<T> {
        self.get(host, "/v1/status", timeout).await
    }

    /// `GET /v1/cluster/seed`: `host`'s cluster file, to take into the cluster's table.
    pub async fn seed(&self, host: &str, timeout: Duration) -> Answer<crate::wire::SeedReply> {
        self.get(host, "/v1/cluster/seed", timeout).await
    }

    /// `GET /v1/replicas`: the complete replicas `host` holds.
    pub async fn replicas(&self, host: &str, timeout: Duration) -> Answer<Vec<HeldReplica>> {
        self.get(host, "/v1/replicas", timeout).await
    }

    /// `POST /v1/vservers/NAME/promote`: `host` makes its replica of `name` its running tree (and starts it).
    /// The answer: its state, and how long the promote and the start took there.
    pub async fn promote(
        &self,
        host: &str,
        name: &str,
        req: &PromoteRequest,
        timeout: Duration,
    ) -> Answer<(VserverState, PromoteTimes)> {
        let path = format!("/v1/vservers/{name}/promote");
        let answer = self.call::<StateAnswer>(reqwest::Method::POST, host, &path, Some(req), timeout).await?;
        Ok(answer.map(|(a, times)| (a.state, times)))
    }

    /// `GET /v1/vservers/NAME`: what `name` is on `host` (refused with 404 where it has no such vserver).
    pub async fn vserver_state(&self, host: &str, name: &str, timeout: Duration) -> Answer<VserverState> {
        Ok(self.get::<StateAnswer>(host, &format!("/v1/vservers/{name}"), timeout).await?.map(|a| a.state))
    }

    /// `GET /v1/replicas/NAME/preflight`: whether `host` can receive `name` by a migrate.
    pub async fn preflight(&self, host: &str, name: &str) -> Answer<Preflight> {
        self.get(host, &format!("/v1/replicas/{name}/preflight"), CONTROL_TIMEOUT).await
    }

    /// `POST /v1/replicas/NAME/begin`: opens a replica session on the standby `host`.
    pub async fn begin(&self, host: &str, name: &str, req: &BeginRequest) -> Answer<BeginReply> {
        self.post(host, &format!("/v1/replicas/{name}/begin"), req, CONTROL_TIMEOUT).await
    }

    /// `POST /v1/replicas/NAME/commit`: makes the session's copy the standby's current replica.
    pub async fn commit(&self, host: &str, name: &str, req: &CommitRequest) -> Answer<GenerationMeta> {
        self.post(host, &format!("/v1/replicas/{name}/commit"), req, CONTROL_TIMEOUT).await
    }

    /// `POST /v1/replicas/NAME/abort`: closes the session; the standby keeps its previous replica.
    pub async fn abort(&self, host: &str, name: &str, req: &CommitRequest, timeout: Duration) -> Answer<AbortReply> {
        self.post(host, &format!("/v1/replicas/{name}/abort"), req, timeout).await
    }

    /// `POST /v1/placements/NAME`: `host` records `name`'s new placement.
    pub async fn placement(&self, host: &str, name: &str, placement: &Placement, timeout: Duration) -> Answer<()> {
        let path = format!("/v1/placements/{name}");
        Ok(self.post::<serde_json::Value>(host, &path, placement, timeout).await?.map(drop))
    }

    /// Sends `name`'s new placement to every host it names but `me`, at once (5 s each); a sentence for each
    /// host that did not take it (it keeps the old one until it is sent the new one again).
    pub async fn spread_placement(&self, me: &str, name: &str, moved: &Placement) -> Vec<String> {
        let mut sends = tokio::task::JoinSet::new();
        for host in moved.standbys.iter().chain([&moved.primary]).filter(|h| *h != me && self.knows(h)) {
            let (peers, host, name, moved) = (self.clone(), host.clone(), name.to_string(), moved.clone());
            sends.spawn(async move {
                let sent = peers.placement(&host, &name, &moved, Duration::from_secs(5)).await;
                (host, matches!(sent, Ok(Ok(()))))
            });
        }
        let mut warnings = Vec::new();
        for (host, ok) in sends.join_all().await {
            if !ok {
                warnings.push(format!(
                    "{host} did not take the new placement; it keeps the old one until it is sent the new one again"
                ));
            }
        }
        warnings
    }

    /// `POST /v1/vservers/NAME/migrate`: asks `host` (where `name` runs) to move it to `req.target`. Marked
    /// with [`FORWARDED_BY_HEADER`]: `host` refuses it if `name` is no longer its own, rather than passing it on
    /// to another owner.
    pub async fn migrate(&self, host: &str, name: &str, req: &MigrateRequest, timeout: Duration) -> Answer<()> {
        let path = format!("/v1/vservers/{name}/migrate");
        let request = self.request(reqwest::Method::POST, host, &path)?.header(FORWARDED_BY_HEADER, self.sender());
        let reply = self.exchange(request.json(req), timeout).await?;
        if !reply.status.is_success() {
            let reason = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
            return Ok(Err(Refused { status: reply.status, reason }));
        }
        Ok(Ok(()))
    }

    /// An operator's request about one of `host`'s vservers, passed on to `host` as it came (`body`: JSON)
    /// and marked with [`FORWARDED_BY_HEADER`], so that `host` answers it itself; its status and body as they
    /// are.
    pub async fn relay(
        &self,
        host: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, String), Unreachable> {
        let mut request = self.request(method, host, path)?.header(FORWARDED_BY_HEADER, self.sender());
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let reply = self.exchange(request, timeout).await?;
        Ok((reply.status, reply.body))
    }

    /// The name sent in [`FORWARDED_BY_HEADER`].
    fn sender(&self) -> &str {
        if self.node.is_empty() {
            "peer"
        } else {
            &self.node
        }
    }

    /// `GET /v1/vservers/NAME/migration`: where `host`'s migrate of `name` is.
    pub async fn migration(&self, host: &str, name: &str, timeout: Duration) -> Answer<MigrationStatus> {
        self.get(host, &format!("/v1/vservers/{name}/migration"), timeout).await
    }

    /// `POST /v1/maintenance`: forwards an operator's maintenance request to the coordinator `host`; its answer
    /// as it gave it.
    pub async fn maintenance(
        &self,
        host: &str,
        req: &MaintenanceRequest,
        timeout: Duration,
    ) -> Answer<serde_json::Value> {
        self.post(host, "/v1/maintenance", req, timeout).await
    }
}

/// A raw answer.
struct Reply {
    status: reqwest::StatusCode,
    body: String,
    times: PromoteTimes,
}

/// One sentence for an answer that is not `Ok(Ok(_))`, in the words the agent logs: `"{what} on {peer}:
/// {why}"` for no answer, `"{what} refused by {peer} ({status}): {reason}"` for a refusal.
pub fn describe<T>(answer: Answer<T>, what: &str, peer: &str) -> Result<T, String> {
    match answer {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(r)) => Err(format!("{what} refused by {peer} ({}): {}", r.status, r.reason)),
        Err(u) => Err(format!("{what} on {peer}: {u}")),
    }
}

/// An error with its causes ("error sending request: connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP answer with `status`, extra `headers` (each ending in CRLF) and `body`.
    fn reply_with(status: &str, headers: &str, body: &str) -> &'static str {
        let text = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        Box::leak(text.into_boxed_str())
    }

    /// A server answering each connection with `reply` (raw HTTP), or closing it unanswered when `None`.
    async fn server(reply: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                if let Some(reply) = reply {
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            }
        });
        url
    }

    fn client(url: String) -> PeerClient {
        PeerClient::new(
            reqwest::Client::new(),
            Credentials::new("s3cret", false),
            [("h1".to_string(), format!("{url}/"))],
        )
    }

    const PROBE: ProbeRequest = ProbeRequest { host: String::new(), silent_ms: 1, promise_ms: 1 };

    #[test]
    fn the_secret_travels_only_where_no_certificate_stands_for_it() {
        let certified = Credentials::new("s3cret", true);
        assert!(!certified.sends_secret("https://192.0.2.12:7070/v1/heartbeat"));
        // A peer still on plain HTTP (a cluster moving to TLS) needs it.
        assert!(certified.sends_secret("http://192.0.2.12:7070/v1/heartbeat"));
        let plain = Credentials::new("s3cret", false);
        assert!(plain.sends_secret("https://192.0.2.12:7070/v1/heartbeat"));
        assert!(!format!("{certified:?}").contains("s3cret"), "never in a log line");
    }

    #[tokio::test]
    async fn a_refusal_is_told_apart_from_no_answer() {
        let said_no = reply_with("409 Conflict", "", r#"{"error":"not the owner"}"#);
        let peers = client(server(Some(said_no)).await);
        let answer = peers.probe("h1", &PROBE, Duration::from_secs(5)).await;
        let refused = answer.expect("it answered").expect_err("it said no");
        assert_eq!((refused.status.as_u16(), refused.reason.as_str()), (409, "not the owner"));
        assert_eq!(
            describe(Ok(Err::<(), _>(refused)), "probe", "h1").unwrap_err(),
            "probe refused by h1 (409 Conflict): not the owner"
        );

        // A connection closed without an answer, an unknown peer, and an answer that cannot be read: no answer.
        let peers = client(server(None).await);
        assert!(peers.probe("h1", &PROBE, Duration::from_secs(5)).await.is_err());
        assert!(peers.probe("h9", &PROBE, Duration::from_secs(5)).await.unwrap_err().0.contains("not a peer"));
        let garbage = reply_with("200 OK", "", "hello");
        let peers = client(server(Some(garbage)).await);
        assert!(peers.probe("h1", &PROBE, Duration::from_secs(5)).await.unwrap_err().0.starts_with("bad answer"));
    }

    /// A server answering one connection with `reply`; the request it read comes out of the channel.
    async fn recording(reply: &'static str) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
            let _ = s.write_all(reply.as_bytes()).await;
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_request_passed_on_says_who_sent_it_and_comes_back_as_it_was_answered() {
        let said_no = reply_with("400 Bad Request", "", r#"{"error":"web already runs on h1"}"#);
        let (url, head) = recording(said_no).await;
        let peers = client(url).sent_by("h2");
        let body = br#"{"target":"h1"}"#.to_vec();
        let path = "/v1/vservers/web/migrate";
        let (status, text) =
            peers.relay("h1", reqwest::Method::POST, path, Some(body), Duration::from_secs(5)).await.unwrap();
        assert_eq!((status.as_u16(), text.as_str()), (400, r#"{"error":"web already runs on h1"}"#));
        let head = head.await.unwrap();
        assert!(head.starts_with("post /v1/vservers/web/migrate http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nx-vserver-forwarded-by: h2\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n") && head.ends_with(r#"{"target":"h1"}"#));

        // An evacuation's migrate is marked too: the host asked refuses it if the vserver is no longer its own.
        let (url, head) = recording(reply_with("202 Accepted", "", "{}")).await;
        let req = MigrateRequest { target: "h0".into() };
        assert_eq!(client(url).sent_by("h2").migrate("h1", "web", &req, Duration::from_secs(5)).await, Ok(Ok(())));
        assert!(head.await.unwrap().contains("\r\nx-vserver-forwarded-by: h2\r\n"));
    }

    #[tokio::test]
    async fn a_promote_answer_carries_the_state_and_the_timings() {
        let ok = reply_with(
            "200 OK",
            "x-promote-ms: 12\r\nx-start-ms: 340\r\n",
            r#"{"name":"web","state":"running","more":1}"#,
        );
        let peers = client(server(Some(ok)).await);
        let req = PromoteRequest { source: "h0".into(), start: true, epoch: Some(3), again: false };
        let (state, times) = peers.promote("h1", "web", &req, Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(state, VserverState::Running);
        assert_eq!(times, PromoteTimes { promote_ms: Some(12), start_ms: Some(340) });
    }
}
