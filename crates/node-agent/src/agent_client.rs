//! The `vserver` command's side of the agent: finds the agent of this host (`RUN_DIR/agent.json`, see
//! [`crate::announcement`]) and asks it to start, stop or restart a vserver, so that the operator's word is
//! recorded as intent and never taken for a crash; also `sync`, `clear`, `announce`, `migrate` and the
//! agent's view of a vserver. The agent is reached on its local Unix socket (`RUN_DIR/agent.sock`, plain HTTP
//! even when its network port speaks HTTPS), else on its `http://` URL, with reqwest's blocking client: the
//! command stays synchronous. The answers are the HTTP API's JSON types ([`crate::model`]).
//!
//! Set `VSERVER_NO_AGENT=1` to act locally without the agent (the agent itself does so when it runs the
//! command).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use isolate::VserverName;
use serde::Serialize;

use crate::announcement::{Announcement, NO_AGENT_ENV};
use crate::exit;
use crate::model::{ClearReport, ErrorBody, MigrationStatus, SyncOutcome, VserverStatus};

/// Longest wait to connect to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the agent's whole answer: a start runs every start script, each bounded by the start
/// timeout, so this is generous.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Largest answer read from the agent.
const MAX_REPLY: usize = 4 << 20;

/// Why the agent of this host could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// `agent.json` exists but cannot be read or parsed.
    #[error(
        "cannot read {path}: {reason}; remove it if no agent runs, or set {NO_AGENT_ENV}=1 to act without the agent"
    )]
    Announcement {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The agent runs but its secret cannot be read.
    #[error("the agent of node {node} runs (pid {pid}) but its secret {path} cannot be read: {reason}")]
    Secret {
        /// The agent's node.
        node: String,
        /// The agent's pid.
        pid: i32,
        /// The secret file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// A running agent of this host, ready to be asked.
#[derive(Clone)]
pub struct AgentHandle {
    /// Base URL of its HTTP API.
    pub url: String,
    /// Its node name.
    pub node: String,
    /// Its process id.
    pub pid: i32,
    /// Its local Unix socket, when it announced one.
    pub socket: Option<PathBuf>,
    secret: String,
    /// The HTTP client, made at the first request.
    client: OnceLock<reqwest::blocking::Client>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("url", &self.url).field("node", &self.node).field("pid", &self.pid).finish()
    }
}

/// The agent of this host, if one runs: `run_dir/agent.json` names a live process and its secret is readable.
pub fn find(run_dir: &Path) -> Option<AgentHandle> {
    locate(run_dir).ok().flatten()
}

/// Like [`find`], but says why an agent that seems to be there cannot be used. `Ok(None)`: no agent.json, or
/// the process it names is gone (an agent killed without withdrawing).
pub fn locate(run_dir: &Path) -> Result<Option<AgentHandle>, FindError> {
    let path = Announcement::path(run_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FindError::Announcement { path, reason: e.to_string() }),
    };
    let ann: Announcement = serde_json::from_str(&text)
        .map_err(|e| FindError::Announcement { path: path.clone(), reason: e.to_string() })?;
    if !ann.alive() {
        return Ok(None);
    }
    let secret = read_secret(&ann.secret_file).map_err(|reason| FindError::Secret {
        node: ann.node.clone(),
        pid: ann.pid,
        path: ann.secret_file.clone(),
        reason,
    })?;
    Ok(Some(AgentHandle::new(ann.url, ann.node, ann.pid, ann.socket, secret)))
}

/// The secret as the agent reads it: the file's first line, trimmed.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err("it is empty".into());
    }
    Ok(secret)
}

/// Whether `VSERVER_NO_AGENT` asks to act locally (set, not empty, not `0`).
pub fn disabled() -> bool {
    std::env::var_os(NO_AGENT_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A lifecycle request the `vserver` command sends to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    /// `POST /v1/vservers/NAME/start`.
    Start,
    /// `POST /v1/vservers/NAME/stop`.
    Stop,
    /// `POST /v1/vservers/NAME/restart`.
    Restart,
}

impl LifecycleAction {
    /// The last segment of the request's path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Start => "started",
            Self::Stop => "stopped",
            Self::Restart => "restarted",
        }
    }
}

/// The `vserver` command's exit code for the agent's HTTP status (see `vserver --help`).
pub fn exit_code(action: LifecycleAction, status: u16) -> i32 {
    match (status, action) {
        (200..=299, _) => exit::OK,
        (404, _) => exit::UNKNOWN,
        (409, LifecycleAction::Stop) => exit::NOT_RUNNING,
        (409, _) => exit::ALREADY_RUNNING,
        (400, _) => exit::USAGE,
        (422, _) => exit::CONFIG,
        (403, _) => exit::REFUSED,
        (503, LifecycleAction::Start | LifecycleAction::Restart) => exit::REFUSED,
        _ => exit::FAILED,
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// The owner the agent passed the request on to (`x-vserver-forwarded-to`), when it did.
    pub forwarded_to: Option<String>,
}

/// Longest wait for the agent's answer to a read (`status`): a hung agent is said to be one.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent answered, and said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The HTTP status.
    pub status: u16,
    /// Its message (the `error` of its JSON body, else the body itself).
    pub message: String,
}

/// The request did not get an answer: never to be confused with an answer that says no.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL is not `http://HOST[:PORT][/...]`.
    #[error("{url} is not an http:// URL with a host")]
    Url {
        /// The URL.
        url: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {reason}")]
    Client {
        /// What was wrong.
        reason: String,
    },
    /// No connection could be made (the name did not resolve, nothing listens, the connection timed out).
    #[error("cannot connect to {authority}: {reason}")]
    Connect {
        /// `host:port`, or the socket's path.
        authority: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection broke or timed out.
    #[error("no answer from {authority}: {reason}")]
    Io {
        /// `host:port`, or the socket's path.
        authority: String,
        /// What was wrong.
        reason: String,
    },
    /// What came back is not an HTTP answer, or it is too long.
    #[error("bad answer from {authority}: {reason}")]
    Malformed {
        /// `host:port`, or the socket's path.
        authority: String,
        /// What was wrong.
        reason: String,
    },
}

impl TransportError {
    /// Sorts reqwest's error: no connection, a broken or silent one, or an answer that is not HTTP.
    fn from_reqwest(authority: String, e: &reqwest::Error) -> Self {
        let reason = cause(e);
        if e.is_connect() {
            return Self::Connect { authority, reason };
        }
        if e.is_timeout() {
            return Self::Io {
                authority,
                reason: format!("{reason} (waited at most {} s)", RESPONSE_TIMEOUT.as_secs()),
            };
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) {
                return Self::Malformed { authority, reason };
            }
            source = s.source();
        }
        Self::Io { authority, reason }
    }
}

/// What went wrong, in words: the error's deepest causes (reqwest's own sentence only names the URL).
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !words.contains(&text) {
            words.push(text);
        }
        source = s.source();
    }
    match words.len() {
        0 => e.to_string(),
        n => words[n.saturating_sub(2)..].join(": "),
    }
}

impl AgentHandle {
    fn new(url: String, node: String, pid: i32, socket: Option<PathBuf>, secret: String) -> Self {
        AgentHandle { url, node, pid, socket, secret, client: OnceLock::new() }
    }

    /// Sends one request with a JSON body and the cluster secret.
    pub fn request_json(&self, method: &str, path: &str, body: &serde_json::Value) -> Result<Reply, TransportError> {
        self.send(method, path, Some(body.to_string()))
    }

    /// Sends one request with the cluster secret.
    pub fn request(&self, method: &str, path: &str) -> Result<Reply, TransportError> {
        self.send(method, path, None)
    }

    /// `GET path`, answered within [`READ_TIMEOUT`].
    pub fn read(&self, path: &str) -> Result<Reply, TransportError> {
        self.send_within("GET", path, None, READ_TIMEOUT)
    }

    /// The client: on the local socket when the agent announced one, else on its URL.
    fn client(&self) -> Result<&reqwest::blocking::Client, TransportError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let mut builder = reqwest::blocking::Client::builder()
            .user_agent(concat!("vserver/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RESPONSE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(socket) = &self.socket {
            builder = builder.unix_socket(socket.as_path());
        }
        let client = builder.build().map_err(|e| TransportError::Client { reason: cause(&e) })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Where a request goes (`http://localhost` on the socket), and how errors name the agent.
    fn target(&self) -> Result<(String, String), TransportError> {
        match &self.socket {
            Some(socket) => Ok(("http://localhost".into(), socket.display().to_string())),
            None => {
                let authority = authority(&self.url).ok_or_else(|| TransportError::Url { url: self.url.clone() })?;
                Ok((self.url.trim_end_matches('/').to_string(), authority))
            }
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<String>) -> Result<Reply, TransportError> {
        self.send_within(method, path, body, RESPONSE_TIMEOUT)
    }

    fn send_within(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let (base, authority) = self.target()?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| TransportError::Client { reason: format!("method {method:?}: {e}") })?;
        let mut req = self
            .client()?
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.secret)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = req.send().map_err(|e| TransportError::from_reqwest(authority.clone(), &e))?;
        let status = response.status().as_u16();
        let forwarded_to = response
            .headers()
            .get(failover::wire::FORWARDED_TO_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let too_long = || TransportError::Malformed {
            authority: authority.clone(),
            reason: format!("answer over {MAX_REPLY} bytes"),
        };
        if response.content_length().is_some_and(|len| len > MAX_REPLY as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        response.take(MAX_REPLY as u64 + 1).read_to_end(&mut body).map_err(|e| TransportError::Io {
            authority: authority.clone(),
            reason: e.get_ref().map_or_else(|| e.to_string(), |inner| cause(inner)),
        })?;
        if body.len() > MAX_REPLY {
            return Err(too_long());
        }
        Ok(Reply { status, body: String::from_utf8_lossy(&body).into_owned(), forwarded_to })
    }
    /// Asks the agent to start, stop or restart a vserver.
    pub fn lifecycle(
        &self,
        name: &VserverName,
        action: LifecycleAction,
    ) -> Result<Result<Reply, RemoteError>, TransportError> {
        let reply = self.request("POST", &format!("/v1/vservers/{name}/{}", action.as_str()))?;
        if (200..300).contains(&reply.status) {
            return Ok(Ok(reply));
        }
        let message = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or_else(|_| {
            match reply.body.trim() {
                "" => format!("the agent answered HTTP {}", reply.status),
                b => format!("the agent answered HTTP {}: {b}", reply.status),
            }
        });
        Ok(Err(RemoteError { status: reply.status, message }))
    }

    /// Carries out `vserver NAME start|stop|restart` through the agent, prints the outcome as the local
    /// command does, and returns the exit code.
    pub fn dispatch(&self, name: &VserverName, action: LifecycleAction) -> i32 {
        match self.lifecycle(name, action) {
            Ok(Ok(reply)) => {
                let detail = serde_json::from_str::<VserverStatus>(&reply.body).ok().map(|st| {
                    let addrs = crate::lifecycle::network_text(&st.addresses, st.host_network);
                    match action {
                        LifecycleAction::Stop => String::new(),
                        _ => format!("; {} process(es); {addrs}", st.processes),
                    }
                });
                println!(
                    "vserver {name} {} by the agent of node {}{}",
                    action.done(),
                    self.node,
                    detail.unwrap_or_default()
                );
                exit::OK
            }
            Ok(Err(e)) => {
                eprintln!("vserver: error: {}", e.message);
                exit_code(action, e.status)
            }
            Err(e) => {
                eprintln!("vserver: error: {}", unreachable_message(&self.url, &e));
                exit::FAILED
            }
        }
    }
}

fn unreachable_message(url: &str, e: &TransportError) -> String {
    format!(
        "the agent at {url} did not answer ({e}); nothing was done. If it is hung or being restarted, \
         set {NO_AGENT_ENV}=1 to act on this host without it (the agent then does not know the operator's intent)"
    )
}

/// The agent the `vserver` command should go through for start, stop and restart: `Ok(None)` to act locally
/// (`VSERVER_NO_AGENT` set, or no agent runs); `Err(exit code)` after printing why an agent that is there
/// cannot be used.
pub fn for_cli(run_dir: &Path) -> Result<Option<AgentHandle>, i32> {
    if disabled() {
        return Ok(None);
    }
    locate(run_dir).map_err(|e| {
        eprintln!("vserver: error: {e}");
        exit::FAILED
    })
}

/// `vserver NAME start|stop|restart` through the agent when one runs: `None` to act locally, else the exit code
/// (the outcome is printed).
pub fn route(run_dir: &Path, name: &VserverName, action: LifecycleAction) -> Option<i32> {
    match for_cli(run_dir) {
        Ok(None) => None,
        Ok(Some(agent)) => Some(agent.dispatch(name, action)),
        Err(code) => Some(code),
    }
}

/// `vserver NAME announce` through this host's agent: `None` when no agent runs (the command acts alone), else
/// the addresses the agent announced, or the exit code once the error is printed (3 when the vserver does not
/// run here).
pub fn announce(run_dir: &Path, name: &VserverName) -> Option<Result<Vec<String>, i32>> {
    let agent = match for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => return None,
        Err(code) => return Some(Err(code)),
    };
    let reply = match agent.request("POST", &format!("/v1/vservers/{name}/announce")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver: error: {}", unreachable_message(&agent.url, &e));
            return Some(Err(exit::FAILED));
        }
    };
    if !(200..300).contains(&reply.status) {
        let message = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
        eprintln!("vserver: error: {message}");
        return Some(Err(match reply.status {
            404 => exit::UNKNOWN,
            409 => exit::NOT_RUNNING,
            400 => exit::USAGE,
            403 => exit::REFUSED,
            _ => exit::FAILED,
        }));
    }
    say_forwarded(name, "announce", &agent, &reply);
    let addrs: Vec<String> = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| serde_json::from_value(v["announced"].clone()).ok())
        .unwrap_or_default();
    Some(Ok(addrs))
}

/// `vserver NAME sync`: asks this host's agent to copy the vserver to its standbys now, prints one line per
/// standby (or the JSON), and returns the exit code (0: every standby got a complete copy).
pub fn sync(run_dir: &Path, name: &VserverName, json: bool) -> i32 {
    let agent = match for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!(
                "vserver: error: sync needs this host's agent (it knows the standbys); none runs here{}",
                if disabled() { format!(" ({NO_AGENT_ENV} is set)") } else { String::new() }
            );
            return exit::FAILED;
        }
        Err(code) => return code,
    };
    eprintln!("vserver {name}: syncing to its standbys...");
    let reply = match agent.request("POST", &format!("/v1/vservers/{name}/sync")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver: error: {}", unreachable_message(&agent.url, &e));
            return exit::FAILED;
        }
    };
    if !(200..300).contains(&reply.status) {
        let message = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
        eprintln!("vserver: error: {message}");
        return match reply.status {
            404 => exit::UNKNOWN,
            400 => exit::USAGE,
            _ => exit::FAILED,
        };
    }
    say_forwarded(name, "sync", &agent, &reply);
    let outcomes: Vec<SyncOutcome> = match serde_json::from_str(&reply.body) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vserver: error: the agent's answer is not understood: {e}");
            return exit::FAILED;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes).unwrap_or_default());
    } else if outcomes.is_empty() {
        println!("vserver {name}: no standby configured; nothing to do");
    }
    let mut code = exit::OK;
    for o in &outcomes {
        if !json {
            if o.ok {
                let freeze = o.freeze_ms.map(|f| format!(", frozen {f} ms")).unwrap_or_default();
                let phases: Vec<String> = o.phases_ms.iter().map(|(p, ms)| format!("{p} {ms}")).collect();
                println!(
                    "vserver {name} -> {}: complete, {} bytes sent, {} files, {} ms{freeze} ({} ms)",
                    o.standby,
                    o.bytes_sent,
                    o.files_transferred,
                    o.duration_ms,
                    phases.join(", ")
                );
            } else {
                println!("vserver {name} -> {}: FAILED: {}", o.standby, o.error.as_deref().unwrap_or("unknown error"));
            }
            if let Some(w) = &o.warning {
                println!("vserver {name} -> {}: warning: {w}", o.standby);
            }
        }
        if !o.ok {
            code = exit::FAILED;
        }
    }
    code
}

/// `vserver NAME clear`: asks this host's agent to forget the vserver's failures and lift its error (its
/// relocations cluster-wide, its restarts on this host), prints what was forgotten (or the JSON), and returns
/// the exit code.
pub fn clear(run_dir: &Path, name: &VserverName, json: bool) -> i32 {
    let agent = match for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!(
                "vserver: error: clear needs this host's agent (it keeps the failure accounting); none runs here{}",
                if disabled() { format!(" ({NO_AGENT_ENV} is set)") } else { String::new() }
            );
            return exit::FAILED;
        }
        Err(code) => return code,
    };
    let reply = match agent.request("POST", &format!("/v1/vservers/{name}/clear")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver: error: {}", unreachable_message(&agent.url, &e));
            return exit::FAILED;
        }
    };
    if !(200..300).contains(&reply.status) {
        let message = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
        eprintln!("vserver: error: {message}");
        return match reply.status {
            404 => exit::UNKNOWN,
            400 => exit::USAGE,
            403 => exit::REFUSED,
            _ => exit::FAILED,
        };
    }
    say_forwarded(name, "clear", &agent, &reply);
    let report: ClearReport = match serde_json::from_str(&reply.body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver: error: the agent's answer is not understood: {e}");
            return exit::FAILED;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return exit::OK;
    }
    let was = report.error.as_deref().map(|e| format!("; was in error: {e}")).unwrap_or_default();
    let now = report
        .status
        .as_ref()
        .map(|st| format!("; now {} (intent {})", word(st.state), word(st.intent)))
        .unwrap_or_default();
    println!(
        "vserver {name} cleared by the agent of node {}: {} restart(s) and {} relocation(s) forgotten{was}{now}",
        reply.forwarded_to.as_deref().unwrap_or(&agent.node),
        report.restarts,
        report.relocations
    );
    exit::OK
}

/// Says on standard error that the agent passed the request on to the vserver's owner, when it did.
fn say_forwarded(name: &VserverName, what: &str, agent: &AgentHandle, reply: &Reply) {
    if let Some(owner) = &reply.forwarded_to {
        eprintln!("vserver {name}: {what} forwarded to {owner}, its owner, by the agent of this host ({})", agent.node);
    }
}

/// Why this host's agent is down, when it is: its `agent.json` names a process that is gone (killed,
/// crashed), or none runs though `conf_dir/agent.toml` configures one. `None` when one runs, when the host
/// has none, and with `VSERVER_NO_AGENT` set (the agent's own commands, or an operator's choice).
pub fn down(run_dir: &Path, conf_dir: &Path) -> Option<String> {
    if disabled() {
        return None;
    }
    let path = Announcement::path(run_dir);
    match std::fs::read_to_string(&path) {
        // A file that cannot be parsed is reported by the commands that go through the agent.
        Ok(text) => serde_json::from_str::<Announcement>(&text).ok().filter(|a| !a.alive()).map(|a| {
            format!(
                "the agent of this host (node {}, pid {}) is not running: {} names a process that is gone",
                a.node,
                a.pid,
                path.display()
            )
        }),
        Err(_) => {
            let conf = conf_dir.join("agent.toml");
            conf.is_file()
                .then(|| format!("the agent of this host is not running, though {} configures one", conf.display()))
        }
    }
}

/// What this host's agent says for `vserver NAME status`: `Ok(None)` when no agent runs (or it does not know
/// the vserver), `Err(why)` when one runs and does not answer.
pub fn agent_view(run_dir: &Path, name: &VserverName) -> Result<Option<VserverStatus>, String> {
    let Some(agent) = usable(run_dir)? else { return Ok(None) };
    let reply = agent.read(&format!("/v1/vservers/{name}")).map_err(|e| silent(&agent, &e))?;
    if !(200..300).contains(&reply.status) {
        return Ok(None);
    }
    Ok(serde_json::from_str(&reply.body).ok())
}

/// This host's agent's `GET /v1/status`: `Ok(None)` when no agent runs, `Err(why)` when one runs and does not
/// answer.
pub fn cluster_report(run_dir: &Path) -> Result<Option<crate::model::StatusReport>, String> {
    let Some(agent) = usable(run_dir)? else { return Ok(None) };
    let reply = agent.read("/v1/status").map_err(|e| silent(&agent, &e))?;
    if reply.status != 200 {
        return Err(format!("the agent of this host answered {}: {}", reply.status, reply.body));
    }
    serde_json::from_str(&reply.body).map(Some).map_err(|e| {
        format!("the agent's status is not what this command understands ({e}): agent of another version?")
    })
}

/// The agent to ask for a read: `Ok(None)` when none runs or `VSERVER_NO_AGENT` is set.
fn usable(run_dir: &Path) -> Result<Option<AgentHandle>, String> {
    if disabled() {
        return Ok(None);
    }
    locate(run_dir).map_err(|e| e.to_string())
}

fn silent(agent: &AgentHandle, e: &TransportError) -> String {
    format!("the agent of this host (node {}, pid {}) is not answering ({e})", agent.node, agent.pid)
}

/// A state or intent as its JSON word.
fn word<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// `vserver NAME migrate HOST`: asks this host's agent to move the vserver to HOST, shows the phase and the
/// bytes as it goes, and ends with the outage it caused. Returns the exit code (0: it runs on HOST).
pub fn migrate(run_dir: &Path, name: &VserverName, target: &str, json: bool) -> i32 {
    use std::io::IsTerminal;
    let agent = match for_cli(run_dir) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("vserver: error: migrate needs this host's agent; none runs here");
            return exit::FAILED;
        }
        Err(code) => return code,
    };
    let body = serde_json::json!({ "target": target });
    let reply = match agent.request_json("POST", &format!("/v1/vservers/{name}/migrate"), &body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver: error: {}", unreachable_message(&agent.url, &e));
            return exit::FAILED;
        }
    };
    if reply.status != 202 {
        let message = serde_json::from_str::<ErrorBody>(&reply.body).map(|b| b.error).unwrap_or(reply.body);
        eprintln!("vserver: error: {message}");
        return match reply.status {
            400 => exit::USAGE,
            // The vserver is unknown, or the target host: bad input when the vserver is here.
            404 if agent.request("GET", &format!("/v1/vservers/{name}")).is_ok_and(|r| r.status == 200) => exit::USAGE,
            404 => exit::UNKNOWN,
            _ => exit::FAILED,
        };
    }
    say_forwarded(name, "migrate", &agent, &reply);
    let bar = if std::io::stderr().is_terminal() && !json {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:28} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let mut last_phase = String::new();
    let status: MigrationStatus = loop {
        std::thread::sleep(Duration::from_millis(200));
        let reply = match agent.request("GET", &format!("/v1/vservers/{name}/migration")) {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                eprintln!("vserver: error: the agent answered {} about the migrate: {}", r.status, r.body);
                return exit::FAILED;
            }
            Err(e) => {
                eprintln!("vserver: error: {}", unreachable_message(&agent.url, &e));
                return exit::FAILED;
            }
        };
        let Ok(m) = serde_json::from_str::<MigrationStatus>(&reply.body) else {
            eprintln!("vserver: error: the agent's answer is not understood: {}", reply.body);
            return exit::FAILED;
        };
        let label = match m.phase.as_str() {
            "precopy" => format!("pre-copy, pass {}", m.pass),
            "final" => "final pass (stopped)".to_string(),
            p => p.to_string(),
        };
        match &bar {
            Some(bar) => {
                bar.set_length(m.tree_bytes.max(m.pass_bytes));
                bar.set_position(m.pass_bytes);
                bar.set_message(label.clone());
            }
            None if label != last_phase && !json => eprintln!("vserver {name}: {label}"),
            None => {}
        }
        last_phase = label;
        if m.finished {
            break m;
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else if status.phase == "done" {
        match status.outage_ms {
            Some(ms) => println!("vserver {name} migrated to {target}; outage {ms} ms (stop to confirmed start)"),
            None => println!("vserver {name} moved to {target} (it was not running; it is stopped there)"),
        }
        let phases: Vec<String> = status.phases_ms.iter().map(|(p, ms)| format!("{p} {ms} ms")).collect();
        println!("  phases: {}; {} bytes sent", phases.join(", "), status.bytes_sent);
        if let Some(how) = &status.final_pass {
            println!("  final pass: {how}");
        }
        if let Some(w) = &status.error {
            println!("  {w}");
        }
    } else if status.phase == "unknown" {
        eprintln!("vserver: error: migrate of {name} to {target}: {}", status.error.as_deref().unwrap_or("?"));
    } else {
        eprintln!("vserver: error: migrate of {name} to {target} failed: {}", status.error.as_deref().unwrap_or("?"));
    }
    if status.phase == "done" {
        exit::OK
    } else {
        exit::FAILED
    }
}

/// `HOST:PORT` of an `http://` URL (port 80 when absent), to name the agent in errors; `None` for another
/// scheme or no host.
fn authority(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host()?;
    Some(format!("{host}:{}", url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;

    /// Reads a request's head (up to the blank line) from a test server's connection.
    fn read_head(conn: &mut impl Read) -> String {
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut b).unwrap();
            assert!(n > 0, "request cut");
            req.extend_from_slice(&b[..n]);
        }
        String::from_utf8(req).unwrap()
    }

    /// A one-shot server: accepts one connection, returns the request head it read, answers `answer`.
    fn serve_once(answer: &'static [u8]) -> (String, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let req = read_head(&mut s);
            s.write_all(answer).unwrap();
            req
        });
        (url, handle)
    }

    fn handle(url: &str, socket: Option<PathBuf>) -> AgentHandle {
        AgentHandle::new(url.into(), "h1".into(), 1, socket, "0123456789abcdef".into())
    }

    fn post(url: &str, path: &str) -> Result<Reply, TransportError> {
        handle(url, None).request("POST", path)
    }

    #[test]
    fn the_client_sends_the_secret_and_reads_status_and_body() {
        let (url, server) = serve_once(
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"error\":\"busy\"}",
        );
        let reply = post(&url, "/v1/vservers/v1/start").unwrap();
        assert_eq!(reply, Reply { status: 409, body: "{\"error\":\"busy\"}".into(), forwarded_to: None });
        let req = server.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /v1/vservers/v1/start http/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nauthorization: bearer 0123456789abcdef\r\n"), "{req}");
        assert!(req.contains(&format!("\r\nhost: {}\r\n", url.trim_start_matches("http://"))), "{req}");
        assert!(req.contains("\r\nuser-agent: vserver/"), "{req}");
    }

    #[test]
    fn a_json_body_goes_with_its_content_type() {
        let (url, server) =
            serve_once(b"HTTP/1.1 202 Accepted\r\nx-vserver-forwarded-to: h0\r\ncontent-length: 2\r\n\r\n{}");
        let reply = handle(&url, None).request_json("POST", "/v1/maintenance", &serde_json::json!({"on": true}));
        let reply = reply.unwrap();
        assert_eq!((reply.status, reply.forwarded_to.as_deref()), (202, Some("h0")), "the owner it went to");
        let req = server.join().unwrap().to_ascii_lowercase();
        assert!(req.contains("\r\ncontent-type: application/json\r\n"), "{req}");
        assert!(req.contains("\r\ncontent-length: 11\r\n"), "{req}");
    }

    #[test]
    fn garbage_and_silence_are_transport_errors_not_answers() {
        let (url, server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = post(&url, "/").unwrap_err();
        assert!(matches!(err, TransportError::Malformed { .. }), "{err:?}");
        server.join().unwrap();
        // An answer cut short.
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
        let err = post(&url, "/").unwrap_err();
        assert!(matches!(err, TransportError::Io { .. }), "{err:?}");
        server.join().unwrap();
        // An answer over the limit.
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{");
        let err = post(&url, "/").unwrap_err();
        assert!(matches!(err, TransportError::Malformed { .. }) && err.to_string().contains("bytes"), "{err:?}");
        server.join().unwrap();
        // Nothing listens.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err = post(&url, "/").unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("cannot connect to {}: ", url.trim_start_matches("http://"))));
        let msg = unreachable_message(&url, &err);
        assert!(msg.contains(&url) && msg.contains("VSERVER_NO_AGENT=1") && msg.contains("nothing was done"), "{msg}");
        assert!(matches!(post("https://h:1", "/"), Err(TransportError::Url { .. })));
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:7070").as_deref(), Some("127.0.0.1:7070"));
        assert_eq!(authority("http://h1/v1").as_deref(), Some("h1:80"));
        assert_eq!(authority("http://[::1]:7070/").as_deref(), Some("[::1]:7070"));
        assert_eq!(authority("http://[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(authority("http://"), None);
        assert_eq!(authority("ftp://h"), None);
    }

    #[test]
    fn http_statuses_map_to_the_documented_exit_codes() {
        use LifecycleAction::*;
        assert_eq!(exit_code(Start, 200), exit::OK);
        assert_eq!(exit_code(Stop, 404), exit::UNKNOWN);
        assert_eq!(exit_code(Start, 409), exit::ALREADY_RUNNING);
        assert_eq!(exit_code(Restart, 409), exit::ALREADY_RUNNING);
        assert_eq!(exit_code(Stop, 409), exit::NOT_RUNNING);
        assert_eq!(exit_code(Start, 400), exit::USAGE);
        assert_eq!(exit_code(Start, 401), exit::FAILED);
        assert_eq!(exit_code(Restart, 500), exit::FAILED);
        assert_eq!(exit_code(Start, 422), exit::CONFIG);
        assert_eq!(exit_code(Start, 403), exit::REFUSED);
    }

    #[test]
    fn the_local_socket_is_preferred_and_spoken_to_in_http() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let req = read_head(&mut conn);
            conn.write_all(b"HTTP/1.1 409 Conflict\r\nContent-Length: 20\r\n\r\n{\"error\":\"not so\"}  ").unwrap();
            req
        });
        // The URL leads nowhere: only the socket answers.
        let agent = handle("http://192.0.2.1:1", Some(socket));
        let reply = agent.lifecycle(&"a".parse::<VserverName>().unwrap(), LifecycleAction::Stop).unwrap();
        assert_eq!(reply, Err(RemoteError { status: 409, message: "not so".into() }));
        let req = server.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /v1/vservers/a/stop http/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nauthorization: bearer 0123456789abcdef\r\n"), "{req}");
        assert!(req.contains("\r\nhost: localhost\r\n"), "{req}");
    }

    #[test]
    fn a_missing_socket_is_no_answer_and_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = handle("http://127.0.0.1:1", Some(socket.clone())).request("GET", "/v1/status").unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&socket.display().to_string()), "{err}");
    }

    #[test]
    fn an_agent_that_is_gone_or_configured_and_absent_is_said_to_be_down() {
        let (run, conf) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(down(run.path(), conf.path()), None, "a host without an agent");
        std::fs::write(conf.path().join("agent.toml"), "").unwrap();
        let said = down(run.path(), conf.path()).expect("configured, and none runs");
        assert!(said.contains("not running") && said.contains("agent.toml"), "{said}");
        let me = std::process::id() as i32;
        let ann = Announcement {
            url: "http://127.0.0.1:7070".into(),
            pid: me,
            node: "h1".into(),
            secret_file: run.path().join("secret"),
            start_ticks: isolate::state::process_start_ticks(me),
            socket: None,
        };
        let path = Announcement::path(run.path());
        std::fs::write(&path, serde_json::to_string(&ann).unwrap()).unwrap();
        assert_eq!(down(run.path(), conf.path()), None, "it runs");
        let dead = Announcement { pid: i32::MAX - 1, start_ticks: None, ..ann };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let said = down(run.path(), conf.path()).expect("killed");
        assert!(said.contains(&format!("pid {}", i32::MAX - 1)) && said.contains("gone"), "{said}");
    }

    #[test]
    fn agent_json_names_a_live_agent_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(locate(dir.path()).unwrap().is_none(), "no agent.json: act locally");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef\n").unwrap();
        let me = std::process::id() as i32;
        let ann = Announcement {
            url: "http://127.0.0.1:7070".into(),
            pid: me,
            node: "h1".into(),
            secret_file: secret.clone(),
            start_ticks: isolate::state::process_start_ticks(me),
            socket: None,
        };
        let path = Announcement::path(dir.path());
        std::fs::write(&path, serde_json::to_string(&ann).unwrap()).unwrap();
        let h = find(dir.path()).expect("our own pid is alive");
        assert_eq!(
            (h.url.as_str(), h.node.as_str(), h.secret.as_str()),
            ("http://127.0.0.1:7070", "h1", "0123456789abcdef")
        );
        assert!(!format!("{h:?}").contains("0123456789abcdef"), "Debug hides the secret");
        // The brief's minimal form (no start_ticks) parses.
        let minimal = format!(r#"{{"url":"http://x:1","pid":{me},"node":"h1","secret_file":"{}"}}"#, secret.display());
        std::fs::write(&path, minimal).unwrap();
        assert!(find(dir.path()).is_some());
        // A recycled pid (another start time) or a dead one: no agent.
        let stale = Announcement { start_ticks: ann.start_ticks.map(|t| t + 1), ..ann.clone() };
        std::fs::write(&path, serde_json::to_string(&stale).unwrap()).unwrap();
        assert!(locate(dir.path()).unwrap().is_none());
        let dead = Announcement { pid: i32::MAX - 1, start_ticks: None, ..ann.clone() };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        assert!(locate(dir.path()).unwrap().is_none());
        // Alive but the secret is unreadable, or the file is garbage: a clear error, not a silent local act.
        let nosecret = Announcement { secret_file: dir.path().join("missing"), ..ann };
        std::fs::write(&path, serde_json::to_string(&nosecret).unwrap()).unwrap();
        assert!(matches!(locate(dir.path()), Err(FindError::Secret { .. })));
        std::fs::write(&path, "{not json").unwrap();
        let err = locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("agent.json") && err.contains("VSERVER_NO_AGENT=1"), "{err}");
    }
}
