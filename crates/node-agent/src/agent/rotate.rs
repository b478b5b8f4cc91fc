//! Renewing a host's certificate and rotating the cluster CA, host by host with the agents running (each
//! step ends with a restart of the agent, which stops no vserver):
//!
//! - `vserver-agent renew`: a new key and certificate for this host, signed by the CA key it holds;
//! - a CA rotation: `vserver-agent ca new` on one host makes the next CA (its certificate trusted beside the
//!   current one, its key the one that signs from now on); `vserver-agent ca sync --from HOST` on each other
//!   host fetches both from it (over TLS, admitted by its current certificate); once every host trusts both,
//!   `renew` on each; once every host is renewed, `vserver-agent ca retire` on each drops the old CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::AgentConfig;
use super::pki::{self, Ca};

/// What `GET /v1/pki` answers a peer (certified connections only): the CA bundle it trusts and the key that
/// signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiReply {
    /// The CA certificates trusted (the signing one first during a rotation).
    pub ca_pem: String,
    /// The key of the CA that signs.
    pub ca_key_pem: String,
}

/// The CA files of a configuration: (bundle, signing key).
fn ca_files(config: &AgentConfig) -> anyhow::Result<(PathBuf, PathBuf)> {
    let tls = config.tls.as_ref().context("no [tls]: run `vserver-agent init` or `join` first")?;
    match (&tls.ca_file, &tls.ca_key_file) {
        (Some(ca), Some(key)) => Ok((ca.clone(), key.clone())),
        _ => bail!("[tls] needs ca_file and ca_key_file (as `vserver-agent init` and `join` write them)"),
    }
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// `vserver-agent renew`: a new key and certificate for this host (its name and address as configured),
/// signed by the CA key it holds. A line to print.
pub fn renew(config_path: &Path) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let (ca_file, ca_key_file) = ca_files(&config)?;
    let tls = config.tls.as_ref().context("no [tls]")?;
    let ca = Ca::load(&read(&ca_file)?, &read(&ca_key_file)?)?;
    let (key_pem, spki) = pki::host_key()?;
    let chain = ca.issue(&config.node, config.listen.ip(), &spki)?;
    pki::write_private(&tls.key_file, key_pem.as_bytes())?;
    pki::write_private(&tls.cert_file, chain.as_bytes())?;
    let until = humantime::format_rfc3339_seconds(pki::not_after(&chain)?);
    Ok(format!(
        "{}: a new certificate for {} (valid until {until}), signed by the CA {}; restart the agent",
        tls.cert_file.display(),
        config.node,
        hex::encode(&ca.sha256()?[..8])
    ))
}

/// `vserver-agent ca new`: the next CA, trusted beside the current one, its key signing from now on. A line to
/// print.
pub fn ca_new(config_path: &Path) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let (ca_file, ca_key_file) = ca_files(&config)?;
    let bundle = read(&ca_file)?;
    if pki::certificates(&bundle)?.len() > 1 {
        bail!("{} already holds two CAs: a rotation is under way (finish it with `ca retire`)", ca_file.display());
    }
    let next = Ca::create(&config.node)?;
    let old = old_key_file(&ca_key_file);
    pki::write_private(&old, read(&ca_key_file)?.as_bytes())?;
    pki::write_private(&ca_file, format!("{}{bundle}", next.cert_pem).as_bytes())?;
    pki::write_private(&ca_key_file, next.key_pem.as_bytes())?;
    Ok(format!(
        "the next cluster CA {} is trusted here beside the current one, and signs from now on; restart this agent, \
         then on each other host: vserver-agent ca sync --from {} (and restart it)",
        hex::encode(&next.sha256()?[..8]),
        config.node
    ))
}

/// `vserver-agent ca sync --from HOST`: trusts and keeps the CAs of `from` (fetched over TLS, admitted by this
/// host's current certificate). A line to print.
pub async fn ca_sync(config_path: &Path, from: &str) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let (ca_file, ca_key_file) = ca_files(&config)?;
    let peer = config.peers.iter().find(|p| p.name == from).with_context(|| format!("{from} is not a peer"))?;
    let tls = super::serve::Tls::load(config.tls.as_ref().context("no [tls]")?, config_path)?;
    let client = super::heartbeat::peer_client(Duration::from_secs(10), Some(&tls))?;
    let url = format!("{}/v1/pki", peer.url.trim_end_matches('/'));
    let answer = client.get(&url).send().await.with_context(|| format!("asking {from} ({url})"))?;
    let status = answer.status();
    let body = answer.text().await?;
    if !status.is_success() {
        bail!("{from} refused ({status}): {body}");
    }
    let reply: PkiReply = serde_json::from_str(&body).context("the answer")?;
    // The key must be one of the bundle's CAs, and the bundle must still hold the CA this host trusts.
    Ca::load(&reply.ca_pem, &reply.ca_key_pem)?;
    let mine = pki::sha256_of_pem(&read(&ca_file)?)?;
    let theirs = pki::certificates(&reply.ca_pem)?;
    if !theirs.iter().any(|c| pki::sha256_of_pem(c).is_ok_and(|h| h == mine)) {
        bail!("{from}'s CAs do not include the one this host trusts: not a rotation of this cluster's CA");
    }
    pki::write_private(&old_key_file(&ca_key_file), read(&ca_key_file)?.as_bytes())?;
    pki::write_private(&ca_file, reply.ca_pem.as_bytes())?;
    pki::write_private(&ca_key_file, reply.ca_key_pem.as_bytes())?;
    Ok(format!("{}: the CAs of {from} are trusted here; restart the agent", ca_file.display()))
}

/// `vserver-agent ca retire`: the end of a rotation, once every host is renewed: only the CA that signs is
/// trusted. A line to print.
pub fn ca_retire(config_path: &Path) -> anyhow::Result<String> {
    let config = AgentConfig::load(config_path)?;
    let (ca_file, ca_key_file) = ca_files(&config)?;
    let ca = Ca::load(&read(&ca_file)?, &read(&ca_key_file)?)?;
    let tls = config.tls.as_ref().context("no [tls]")?;
    let own = read(&tls.cert_file)?;
    let issuer = pki::certificates(&own)?.get(1).cloned().unwrap_or_default();
    if pki::sha256_of_pem(&issuer).ok() != Some(ca.sha256()?) {
        bail!("this host's certificate is not signed by the CA that signs now: run `vserver-agent renew` first");
    }
    pki::write_private(&ca_file, ca.cert_pem.as_bytes())?;
    let _ = std::fs::remove_file(old_key_file(&ca_key_file));
    Ok(format!(
        "{}: only the CA {} is trusted now; restart the agent",
        ca_file.display(),
        hex::encode(&ca.sha256()?[..8])
    ))
}

/// `GET /v1/pki`'s answer: this host's CA bundle and signing key.
pub fn pki_reply(config: &AgentConfig) -> anyhow::Result<PkiReply> {
    let (ca_file, ca_key_file) = ca_files(config)?;
    Ok(PkiReply { ca_pem: read(&ca_file)?, ca_key_pem: read(&ca_key_file)? })
}

fn old_key_file(ca_key_file: &Path) -> PathBuf {
    ca_key_file.with_extension("key.old")
}
