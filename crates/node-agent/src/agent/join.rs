//! Forming a cluster and joining it, the one way hosts get their certificates:
//!
//! - `vserver-agent init` on the first host makes the cluster secret (unless there is one), the cluster CA,
//!   this host's certificate, and a one-time join token for each other host named with `--peer`; it writes
//!   the cluster part of `agent.toml` (node, listen, secret, `[tls]`, the peers over https), leaving every
//!   other key as it was;
//! - the first host's agent, started, admits each of them on `POST /v1/join` (TLS, no credentials but the
//!   token);
//! - `vserver-agent join TOKEN` on each other host makes its key, trusts the answering agent only if its chain
//!   holds the CA the token pins, and receives its certificate (for its name and address, as the admitting
//!   host's configuration names them), the CA, the cluster secret, the peers and the cluster configuration;
//!   it writes them and the cluster part of its `agent.toml`.
//!
//! No openssl, and no file copied by hand. `vserver-agent token HOST` issues a new token on any host that
//! holds the CA's key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::AgentConfig;
use super::pki::{self, Ca, JoinToken, PkiFiles};

/// What a joining host sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's one-time secret (hex).
    pub secret: String,
    /// The joining host's public key: DER SubjectPublicKeyInfo, base64.
    pub public_key: String,
}

/// What an admitted host receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinReply {
    /// Its name in the cluster.
    pub node: String,
    /// The address and port it listens on.
    pub listen: String,
    /// Its certificate, then the CA's.
    pub cert_pem: String,
    /// The cluster CA's certificate.
    pub ca_pem: String,
    /// The cluster CA's key (every host admits new ones, as every host holds the secret).
    pub ca_key_pem: String,
    /// The cluster secret file's text (every line: a rotation under way carries on).
    pub secret_text: String,
    /// The cluster configuration (`cluster.toml`), when the admitting host has one.
    pub cluster_toml: Option<String>,
    /// The other hosts (the admitting one included), by name and URL.
    pub peers: Vec<PeerEntry>,
}

/// A host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Its name.
    pub name: String,
    /// Its base URL.
    pub url: String,
}

/// Why a join was refused by the admitting host.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The token is unknown, used or expired (403).
    #[error("{0}")]
    Token(String),
    /// This host cannot admit hosts (409).
    #[error("{0}")]
    Cannot(String),
}

/// The directory of the cluster's certificates beside `config_path`.
pub fn pki_dir(config_path: &Path) -> PathBuf {
    config_dir(config_path).join("pki")
}

fn config_dir(config_path: &Path) -> PathBuf {
    config_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

/// One join at a time on a host (each reads and rewrites the tokens' file).
static ADMITTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admitting host's side of `POST /v1/join`.
pub async fn admit(agent: &super::node::Agent, req: JoinRequest) -> Result<JoinReply, AdmitError> {
    let (config, config_path) = (&agent.config, agent.config_path.as_path());
    let tls = config.tls.as_ref().ok_or_else(|| {
        AdmitError::Cannot("this agent runs without TLS (insecure_plain_http): it cannot admit hosts".into())
    })?;
    let (Some(ca_file), Some(ca_key_file)) = (&tls.ca_file, &tls.ca_key_file) else {
        return Err(AdmitError::Cannot(
            "this agent holds no cluster CA key ([tls] ca_key_file): ask a host that does".into(),
        ));
    };
    let public_key = base64::engine::general_purpose::STANDARD
        .decode(req.public_key.trim())
        .map_err(|e| AdmitError::BadRequest(format!("public_key is not base64: {e}")))?;
    let _one = ADMITTING.lock().await;
    let tokens = tokens_file(ca_key_file);
    let secret = req.secret.clone();
    let (node, address) = tokio::task::spawn_blocking(move || pki::redeem(&tokens, &secret))
        .await
        .map_err(|e| AdmitError::Cannot(e.to_string()))?
        .map_err(|e| AdmitError::Token(e.to_string()))?;
    let url = match &address {
        Some(at) => format!("https://{at}"),
        None => agent.peers.url(&node).ok_or_else(|| {
            AdmitError::Cannot(format!(
                "{node} is no longer a host of the cluster: issue a token with `vserver-agent token {node} --address \
                 ADDRESS:PORT`"
            ))
        })?,
    };
    let (listen, ip) = address_of(&url).await.map_err(|e| AdmitError::Cannot(format!("{node}: {e}")))?;
    if address.is_some() {
        // A host no configuration names: the cluster takes it in, and every host counts it as a peer.
        agent.ownership.add_host(&node, &url).await.map_err(|e| {
            AdmitError::Cannot(format!(
                "the cluster cannot take {node} in: {e}; this token is used up, issue another once that is fixed"
            ))
        })?;
        let text = format!("{node} was taken into the cluster at {url} (admitted by {})", config.node);
        let _ = agent.ownership.log("host_added", None, &text).await;
    }
    let read = |f: &Path| std::fs::read_to_string(f).map_err(|e| AdmitError::Cannot(format!("{}: {e}", f.display())));
    let (ca_pem, ca_key_pem) = (read(ca_file)?, read(ca_key_file)?);
    let ca = Ca::load(&ca_pem, &ca_key_pem).map_err(|e| AdmitError::Cannot(e.to_string()))?;
    let cert_pem = ca.issue(&node, ip, &public_key).map_err(|e| AdmitError::BadRequest(e.to_string()))?;
    let secret_text = read(&config.secret_file)?;
    let cluster_toml = match &config.cluster_file {
        Some(f) => Some(read(&config_dir(config_path).join(f))?),
        None => None,
    };
    let mut peers = vec![PeerEntry { name: config.node.clone(), url: format!("https://{}", config.listen) }];
    let others = agent.ownership.hosts().into_iter().filter(|(h, _)| *h != node && *h != config.node);
    peers.extend(others.map(|(name, url)| PeerEntry { name, url }));
    tracing::info!(host = %node, %listen, "admitted a host to the cluster: its certificate is signed");
    Ok(JoinReply { node, listen, cert_pem, ca_pem, ca_key_pem, secret_text, cluster_toml, peers })
}

/// The tokens' file beside the CA's key.
fn tokens_file(ca_key_file: &Path) -> PathBuf {
    PkiFiles::in_dir(&config_dir(ca_key_file)).tokens
}

/// The `host:port` of a peer's URL and its address (a name is resolved).
async fn address_of(url: &str) -> anyhow::Result<(String, IpAddr)> {
    let (listen, _) = split_url(url)?;
    let ip = tokio::net::lookup_host(listen.clone()).await?.next().context("the name does not resolve")?.ip();
    Ok((listen, ip))
}

/// What `init` was given.
pub struct InitArgs {
    /// This host's name (default: the configuration's).
    pub node: Option<String>,
    /// Its address and port (default: the configuration's).
    pub listen: Option<SocketAddr>,
    /// The other hosts: name and address:port (default: the configuration's peers).
    pub peers: Vec<(String, String)>,
    /// How long the join tokens are valid.
    pub token_validity: Duration,
}

/// `vserver-agent init`: forms the cluster on this host; the lines to print (the tokens).
pub fn init(config_path: &Path, args: &InitArgs) -> anyhow::Result<Vec<String>> {
    let files = PkiFiles::in_dir(&pki_dir(config_path));
    if files.ca_cert.exists() {
        bail!(
            "{} exists: this host already belongs to a cluster (to add a host: `vserver-agent token HOST` here, then \
             `vserver-agent join TOKEN` there)",
            files.ca_cert.display()
        );
    }
    let existing = existing(config_path)?;
    let node = match (&args.node, &existing) {
        (Some(n), _) => n.clone(),
        (None, Some(c)) => c.node.clone(),
        (None, None) => bail!("--node is needed: {} does not exist yet", config_path.display()),
    };
    let listen = match (args.listen, &existing) {
        (Some(l), _) => l,
        (None, Some(c)) => c.listen,
        (None, None) => bail!("--listen is needed: {} does not exist yet", config_path.display()),
    };
    let mut peers_given = args.peers.clone();
    if peers_given.is_empty() {
        if let Some(c) = &existing {
            for p in &c.peers {
                let (at, _) =
                    split_url(&p.url).with_context(|| format!("peer {} in {}", p.name, config_path.display()))?;
                peers_given.push((p.name.clone(), at));
            }
        }
    }
    let moving = existing.as_ref().is_some_and(|c| c.insecure_plain_http);
    for (name, at) in &peers_given {
        if *name == node {
            bail!("--peer {name}={at}: that is this host's own name");
        }
        if at.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
            bail!("--peer {name}={at}: the address must be HOST:PORT (e.g. 192.0.2.12:7070)");
        }
    }
    // A running cluster keeps its secret where its configuration says.
    let secret_file =
        existing.as_ref().map_or_else(|| config_dir(config_path).join("cluster.secret"), |c| c.secret_file.clone());
    if !secret_file.exists() {
        let secret = base64::engine::general_purpose::STANDARD.encode(pki::random::<32>()?);
        pki::write_private(&secret_file, format!("{secret}\n").as_bytes())?;
    }
    let ca = Ca::create(&node)?;
    let (key_pem, spki) = pki::host_key()?;
    let cert_pem = ca.issue(&node, listen.ip(), &spki)?;
    // A cluster moving from plain HTTP keeps its peers' URLs until every host has its certificate
    // (`vserver-agent secure`); a new one speaks https at once.
    let peers: Vec<PeerEntry> =
        peers_given.iter().map(|(name, at)| PeerEntry { name: name.clone(), url: format!("https://{at}") }).collect();
    write_pki(&files, &ca.cert_pem, &ca.key_pem, &cert_pem, &key_pem)?;
    // A cluster file beside the configuration, not named in it yet, is this cluster's.
    let beside = config_dir(config_path).join("cluster.toml");
    let cluster_file =
        (existing.as_ref().is_none_or(|c| c.cluster_file.is_none()) && beside.is_file()).then_some(beside);
    write_agent_toml(
        config_path,
        &node,
        &listen.to_string(),
        &secret_file,
        &files,
        (!moving).then_some(&peers[..]),
        cluster_file.as_deref(),
    )?;
    let mut lines = vec![format!(
        "cluster formed on {node}: CA sha256 {}; {} written (restart or start the agent now: the others join \
         through it)",
        hex::encode(ca.sha256()?),
        config_path.display()
    )];
    if moving {
        lines.push(
            "moving from plain HTTP (insecure_plain_http): the peers' URLs are kept; once every host has joined \
             and restarted, run `vserver-agent secure` on each, then `vserver-agent secure --refuse-plain`"
                .into(),
        );
    }
    for (name, _) in &peers_given {
        let token = pki::mint(&files.tokens, name, None, &listen.to_string(), ca.sha256()?, args.token_validity)?;
        lines.push(format!("on {name}: vserver-agent join {token}"));
    }
    if !peers_given.is_empty() {
        lines.push(format!(
            "(each token works once, for its host, for {}; a new one: vserver-agent token HOST)",
            humantime::format_duration(args.token_validity)
        ));
    }
    Ok(lines)
}

/// `vserver-agent token HOST [--address ADDRESS:PORT]`: a new join token for a host of this host's configuration,
/// or for a new host at `address`, which the cluster takes in when it joins.
pub fn token(
    config_path: &Path,
    node: &str,
    validity: Duration,
    address: Option<SocketAddr>,
) -> anyhow::Result<JoinToken> {
    let config = AgentConfig::load(config_path)?;
    let tls = config.tls.as_ref().context("no [tls] in the configuration: run `vserver-agent init` first")?;
    let (Some(ca_file), Some(ca_key_file)) = (&tls.ca_file, &tls.ca_key_file) else {
        bail!("this host holds no cluster CA key ([tls] ca_file and ca_key_file): issue the token on a host that does");
    };
    super::config::check_node_name(node).map_err(|e| anyhow::anyhow!("{e}"))?;
    let configured = config.peers.iter().find(|p| p.name == node);
    match (configured, address) {
        (Some(p), Some(_)) => bail!("{node} is a peer in this host's configuration (at {}): drop --address", p.url),
        (None, None) if node == config.node => bail!("{node} is this host"),
        (None, None) => {
            let known: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "{node} is not among this host's configured peers ({}): for a new host, give its agent's address \
                 with --address ADDRESS:PORT (the cluster takes it in when it joins)",
                known.join(", ")
            );
        }
        _ => {}
    }
    let ca_pem = std::fs::read_to_string(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let pin = pki::sha256_of_pem(&ca_pem)?;
    let address = address.map(|a| a.to_string());
    Ok(pki::mint(&tokens_file(ca_key_file), node, address.as_deref(), &config.listen.to_string(), pin, validity)?)
}

/// `vserver-agent join TOKEN`: joins this host to the cluster; a line to print.
pub async fn join(config_path: &Path, token: &JoinToken) -> anyhow::Result<String> {
    let files = PkiFiles::in_dir(&pki_dir(config_path));
    if files.ca_cert.exists() {
        bail!("{} exists: this host already belongs to a cluster", files.ca_cert.display());
    }
    let (key_pem, spki) = pki::host_key()?;
    let client = pinned_client(token.ca_sha256)?;
    let req = JoinRequest {
        secret: hex::encode(token.secret),
        public_key: base64::engine::general_purpose::STANDARD.encode(spki),
    };
    let url = format!("https://{}/v1/join", token.at);
    let answer = client.post(&url).json(&req).send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach {} ({}): is its agent running?", token.at, failover::peer::chain(&e))
    })?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        let why = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{} refused the join ({status}): {why}", token.at);
    }
    let reply: JoinReply = serde_json::from_str(&body).context("the admitting agent's answer")?;
    if pki::sha256_of_pem(&reply.ca_pem)? != token.ca_sha256 {
        bail!("the CA received is not the one the token names: nothing written");
    }
    let dir = config_dir(config_path);
    let existing = existing(config_path)?;
    let moving = existing.as_ref().is_some_and(|c| c.insecure_plain_http);
    let secret_file = existing.map_or_else(|| dir.join("cluster.secret"), |c| c.secret_file);
    pki::write_private(&secret_file, reply.secret_text.as_bytes())?;
    let cluster_file = match &reply.cluster_toml {
        // A host of a running cluster keeps its own cluster file.
        Some(_) if moving => None,
        Some(text) => {
            let file = dir.join("cluster.toml");
            pki::write_private(&file, text.as_bytes())?;
            Some(file)
        }
        None => None,
    };
    write_pki(&files, &reply.ca_pem, &reply.ca_key_pem, &reply.cert_pem, &key_pem)?;
    write_agent_toml(
        config_path,
        &reply.node,
        &reply.listen,
        &secret_file,
        &files,
        (!moving).then_some(&reply.peers[..]),
        cluster_file.as_deref(),
    )?;
    Ok(format!(
        "{} joined the cluster as {} (listening on {}; peers: {}); {} written: start the agent",
        reply.listen,
        reply.node,
        reply.listen,
        reply.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        config_path.display()
    ))
}

fn write_pki(files: &PkiFiles, ca: &str, ca_key: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    pki::write_private(&files.ca_key, ca_key.as_bytes())?;
    pki::write_private(&files.host_key, key.as_bytes())?;
    pki::write_private(&files.host_cert, cert.as_bytes())?;
    // Last: its presence says this host belongs to a cluster.
    pki::write_private(&files.ca_cert, ca.as_bytes())?;
    Ok(())
}

/// Writes the cluster part of `agent.toml` (creating it if it does not exist): node, listen, secret_file,
/// `[tls]`, the peers (unless `None`: kept as they are) and the cluster file; every other key stays as it was.
fn write_agent_toml(
    config_path: &Path,
    node: &str,
    listen: &str,
    secret_file: &Path,
    files: &PkiFiles,
    peers: Option<&[PeerEntry]>,
    cluster_file: Option<&Path>,
) -> anyhow::Result<()> {
    use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "# {}: this host's agent (vserver-agent --config FILE). Its cluster part (node, listen, secret_file,\n\
             # [tls], [[peers]]) was written by `vserver-agent init` or `join`; every key is explained in the\n\
             # project's config/agent.toml.\n",
            config_path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    };
    let mut doc: DocumentMut = text.parse().with_context(|| format!("{} is not TOML", config_path.display()))?;
    doc["node"] = value(node);
    doc["listen"] = value(listen);
    doc["secret_file"] = value(secret_file.to_string_lossy().as_ref());
    if let Some(f) = cluster_file {
        doc["cluster_file"] = value(f.to_string_lossy().as_ref());
    }
    let mut tls = Table::new();
    tls["cert_file"] = value(files.host_cert.to_string_lossy().as_ref());
    tls["key_file"] = value(files.host_key.to_string_lossy().as_ref());
    tls["ca_file"] = value(files.ca_cert.to_string_lossy().as_ref());
    tls["ca_key_file"] = value(files.ca_key.to_string_lossy().as_ref());
    doc["tls"] = Item::Table(tls);
    if let Some(peers) = peers {
        let mut list = ArrayOfTables::new();
        for p in peers {
            let mut t = Table::new();
            t["name"] = value(&p.name);
            t["url"] = value(&p.url);
            list.push(t);
        }
        doc["peers"] = Item::ArrayOfTables(list);
    }
    save(config_path, doc)
}

/// Checks `doc` as the agent would, then writes it.
fn save(config_path: &Path, doc: toml_edit::DocumentMut) -> anyhow::Result<()> {
    let text = doc.to_string();
    // What the agent would refuse is refused here, before anything is replaced.
    let checked = AgentConfig::parse(config_path, &text);
    if let Err(e) = checked {
        bail!("the configuration written would not be valid: {e}");
    }
    pki::write_private(config_path, text.as_bytes())?;
    Ok(())
}

/// The configuration at `config_path`, if the file exists (it must then be valid).
fn existing(config_path: &Path) -> anyhow::Result<Option<AgentConfig>> {
    let text = match std::fs::read_to_string(config_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.with_context(|| format!("reading {}", config_path.display()))?,
    };
    let doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{} is not TOML", config_path.display()))?;
    // A file with only the operator's own keys (no node yet): nothing to take from it.
    if !doc.contains_key("node") {
        return Ok(None);
    }
    Ok(Some(AgentConfig::parse(config_path, &text)?))
}

/// The `host:port` of a URL, and whether it is https.
fn split_url(url: &str) -> anyhow::Result<(String, bool)> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = parsed.host_str().context("the URL has no host")?;
    let port = parsed.port_or_known_default().context("the URL has no port")?;
    Ok((format!("{host}:{port}"), parsed.scheme() == "https"))
}

/// `vserver-agent secure`: the last steps of a move from plain HTTP, on each host once every host has joined
/// and restarted: the peers' URLs become https (each peer must answer over TLS with a certificate of the
/// cluster CA, or nothing changes); with `refuse_plain`, also `insecure_plain_http` is removed (once every
/// host speaks https). A line to print.
pub async fn secure(config_path: &Path, refuse_plain: bool) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let tls = config.tls.as_ref().context("no [tls]: run `vserver-agent init` or `join` first")?;
    let loaded = super::serve::Tls::load(tls, config_path)?;
    if loaded.ca_pem.is_none() {
        bail!("[tls] has no ca_file: the peers cannot be checked against the cluster CA");
    }
    let client = super::heartbeat::peer_client(Duration::from_secs(5), Some(&loaded))?;
    let mut not_yet = Vec::new();
    for p in &config.peers {
        let (at, _) = split_url(&p.url)?;
        let url = format!("https://{at}/healthz");
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => not_yet.push(format!("{} ({at}: {})", p.name, r.status())),
            Err(e) => not_yet.push(format!("{} ({at}: {})", p.name, failover::peer::chain(&e))),
        }
    }
    if !not_yet.is_empty() {
        bail!(
            "these peers do not answer over TLS with a certificate of the cluster CA yet: {}; run `vserver-agent join` \
             there and restart their agents first; nothing changed",
            not_yet.join(", ")
        );
    }
    let text = std::fs::read_to_string(config_path)?;
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    if let Some(peers) = doc.get_mut("peers").and_then(|p| p.as_array_of_tables_mut()) {
        for t in peers.iter_mut() {
            if let Some(url) = t.get("url").and_then(|u| u.as_str()).map(str::to_string) {
                let (at, _) = split_url(&url)?;
                t["url"] = toml_edit::value(format!("https://{at}"));
            }
        }
    }
    if refuse_plain {
        doc.remove("insecure_plain_http");
    }
    save(config_path, doc)?;
    Ok(format!(
        "{}: the peers are reached over TLS{}; restart the agent (systemctl restart vserver-agent)",
        config_path.display(),
        if refuse_plain { ", and plain HTTP is refused" } else { "" }
    ))
}

/// An HTTPS client that trusts an agent only if the chain it presents holds the CA whose SHA-256 is `pin`,
/// and its certificate is signed by that CA for the address asked.
fn pinned_client(pin: [u8; 32]) -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder().use_preconfigured_tls(config).timeout(Duration::from_secs(30)).no_proxy().build()?)
}

#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| rustls::Error::General("the agent does not present the CA the join token names".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
