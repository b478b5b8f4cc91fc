//! The cluster's certificates: a cluster CA made when the cluster is formed (`vserver-agent init`), a
//! certificate per host signed by it (for the host's name and its address), and one-time join tokens that
//! let a new host get its certificate (`vserver-agent join TOKEN`) from a host that holds the CA's key.
//!
//! A join token says where to ask (`host:port`), which CA to trust there (the SHA-256 of the CA certificate,
//! so the joining host verifies the answering agent without trusting anything else), and a one-time secret
//! that the admitting host keeps only as a hash, for one named host, until it expires (by the admitting host's
//! clock alone: clocks are never compared between hosts).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// How long a host certificate is valid (renewed with `vserver-agent renew`, see docs/failover.md).
pub const HOST_VALIDITY: Duration = Duration::from_secs(3 * 365 * 86_400);
/// How long a join token is valid by default.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(3600);
/// What a join token begins with (its format's version).
const TOKEN_PREFIX: &str = "vsj1";

/// Something wrong with the cluster's certificates or tokens; the message says what and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(pub String);

fn err(what: impl std::fmt::Display) -> PkiError {
    PkiError(what.to_string())
}

/// The files of a host's certificates, in one directory (`/etc/vservers/pki` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    /// The cluster CA's certificate.
    pub ca_cert: PathBuf,
    /// The cluster CA's key (on hosts that admit new ones: every host, as the cluster secret).
    pub ca_key: PathBuf,
    /// This host's certificate, followed by the CA's (the chain it presents).
    pub host_cert: PathBuf,
    /// This host's key.
    pub host_key: PathBuf,
    /// The join tokens this host issued, as hashes.
    pub tokens: PathBuf,
}

impl PkiFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            host_cert: dir.join("host.pem"),
            host_key: dir.join("host.key"),
            tokens: dir.join("join-tokens.json"),
        }
    }
}

/// The cluster CA: its certificate and key, PEM.
pub struct Ca {
    /// The certificate.
    pub cert_pem: String,
    /// The key.
    pub key_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new CA for the cluster whose first host is `first_host`.
    pub fn create(first_host: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(|e| err(format!("cannot make the CA's key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("vserver cluster CA (formed on {first_host})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + CA_VALIDITY).into();
        let issuer = params.self_signed(&key).map_err(|e| err(format!("cannot sign the CA: {e}")))?;
        Ok(Self { cert_pem: issuer.pem(), key_pem: key.serialize_pem(), issuer, key })
    }

    /// The CA of `key_pem` whose certificate is in `bundle_pem` (one or more CA certificates, as during a
    /// rotation: written by [`Ca::create`] and `vserver-agent ca new`).
    pub fn load(bundle_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| err(format!("the CA's key: {e}")))?;
        let cert_pem = certificates(bundle_pem)?
            .into_iter()
            .find(|pem| public_key_der(pem).is_ok_and(|spki| spki == key.public_key_der()))
            .ok_or_else(|| err("no certificate of the CA file is the CA key's"))?;
        let cert_pem = cert_pem.as_str();
        let params =
            CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| err(format!("the CA's certificate: {e}")))?;
        let issuer = params.self_signed(&key).map_err(|e| err(format!("the CA's key does not sign: {e}")))?;
        if issuer.der().is_empty() || sha256_of_pem(cert_pem).is_err() {
            return Err(err("the CA's certificate is not PEM"));
        }
        Ok(Self { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer, key })
    }

    /// The CA's fingerprint (SHA-256 of its DER certificate), as a join token pins it.
    pub fn sha256(&self) -> Result<[u8; 32], PkiError> {
        sha256_of_pem(&self.cert_pem)
    }

    /// A certificate for host `node` at `ip`, for the public key `spki_der` (DER SubjectPublicKeyInfo),
    /// followed by the CA's: the chain the host presents.
    pub fn issue(&self, node: &str, ip: IpAddr, spki_der: &[u8]) -> Result<String, PkiError> {
        let public =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| err(format!("the host's public key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        let name = node.try_into().map_err(|e| err(format!("host name {node:?} is not a DNS name: {e}")))?;
        params.subject_alt_names = vec![SanType::DnsName(name), SanType::IpAddress(ip)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + HOST_VALIDITY).into();
        let cert = params.signed_by(&public, &self.issuer, &self.key).map_err(|e| err(format!("cannot sign: {e}")))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// Each certificate of `bundle_pem`, as PEM.
pub fn certificates(bundle_pem: &str) -> Result<Vec<String>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let mut out = Vec::new();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        let der = der.map_err(|e| err(format!("not PEM certificates: {e}")))?;
        out.push(pem_of(der.as_ref()));
    }
    Ok(out)
}

/// A DER certificate as PEM.
fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The public key (DER SubjectPublicKeyInfo) of the first certificate of `pem`.
fn public_key_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| err(format!("not a PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| err(format!("not an X.509 certificate: {e}")))?;
    Ok(cert.public_key().raw.to_vec())
}

/// A host's new key pair: its PEM, and its public key (DER SubjectPublicKeyInfo) to be certified.
pub fn host_key() -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate().map_err(|e| err(format!("cannot make a key: {e}")))?;
    Ok((key.serialize_pem(), key.public_key_der()))
}

/// The SHA-256 of the first certificate of `pem`.
pub fn sha256_of_pem(pem: &str) -> Result<[u8; 32], PkiError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| err(format!("not a PEM certificate: {e}")))?;
    Ok(Sha256::digest(der.as_ref()).into())
}

/// When the first certificate of `pem` expires.
pub fn not_after(pem: &str) -> Result<SystemTime, PkiError> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| err(format!("not a PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| err(format!("not an X.509 certificate: {e}")))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Random bytes from the kernel.
pub fn random<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the rest of `buf`, which lives across the call.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err(format!("cannot read random bytes: {e}")));
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// A join token: where to ask, the CA to trust there, and the one-time secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The admitting agent's `host:port`.
    pub at: String,
    /// The SHA-256 of the cluster CA's certificate.
    pub ca_sha256: [u8; 32],
    /// The one-time secret.
    pub secret: [u8; 16],
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", hex::encode(self.ca_sha256), hex::encode(self.secret), self.at)
    }
}

impl std::str::FromStr for JoinToken {
    type Err = PkiError;
    fn from_str(text: &str) -> Result<Self, PkiError> {
        let bad = |why: &str| {
            err(format!("not a join token ({why}): it looks like {TOKEN_PREFIX}.CA-HASH.SECRET.HOST:PORT, as `vserver-agent init` or `vserver-agent token` printed it"))
        };
        let mut parts = text.trim().splitn(4, '.');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(bad(&format!("it does not begin with {TOKEN_PREFIX}.")));
        }
        let ca = parts.next().and_then(|h| hex::decode(h).ok()).and_then(|b| <[u8; 32]>::try_from(b).ok());
        let secret = parts.next().and_then(|h| hex::decode(h).ok()).and_then(|b| <[u8; 16]>::try_from(b).ok());
        let at =
            parts.next().filter(|a| a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()));
        match (ca, secret, at) {
            (Some(ca_sha256), Some(secret), Some(at)) => Ok(Self { at: at.to_string(), ca_sha256, secret }),
            (None, _, _) => Err(bad("the CA hash is not 64 hex digits")),
            (_, None, _) => Err(bad("the secret is not 32 hex digits")),
            _ => Err(bad("it does not end with the admitting agent's HOST:PORT")),
        }
    }
}

/// A token an admitting host issued: for which host, until when (by its own clock), and its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The host it admits.
    pub node: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Valid until, ms since the Unix epoch (this host's clock).
    pub until_unix_ms: u64,
    /// For a host no configuration names: its agent's `address:port`, which the cluster takes it in at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Reads the tokens issued (none if the file does not exist).
fn read_issued(file: &Path) -> Result<Vec<Issued>, PkiError> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(format!("{}: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(err(format!("{}: {e}", file.display()))),
    }
}

/// Writes the tokens issued (mode 0600, atomically), dropping the expired ones.
fn write_issued(file: &Path, issued: &[Issued]) -> Result<(), PkiError> {
    let now = now_ms();
    let live: Vec<&Issued> = issued.iter().filter(|i| i.until_unix_ms > now).collect();
    let text = serde_json::to_vec_pretty(&live).map_err(err)?;
    write_private(file, &text)
}

/// Writes `bytes` to `file` atomically, readable by root alone.
pub fn write_private(file: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".{}.tmp", file.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, file).map_err(|e| err(format!("{}: {e}", file.display())))
}

/// Issues a token for `node`, valid `validity` from now, recorded (as a hash) in `file`.
pub fn mint(
    file: &Path,
    node: &str,
    address: Option<&str>,
    at: &str,
    ca_sha256: [u8; 32],
    validity: Duration,
) -> Result<JoinToken, PkiError> {
    let secret = random::<16>()?;
    let mut issued = read_issued(file)?;
    issued.push(Issued {
        node: node.to_string(),
        secret_sha256: hex::encode(Sha256::digest(secret)),
        until_unix_ms: now_ms() + validity.as_millis() as u64,
        address: address.map(str::to_string),
    });
    write_issued(file, &issued)?;
    Ok(JoinToken { at: at.to_string(), ca_sha256, secret })
}

/// Uses up the token whose secret is `secret` (hex): the host it admits (and the address it was issued with, for a
/// new host), or why not. A token works once.
pub fn redeem(file: &Path, secret_hex: &str) -> Result<(String, Option<String>), PkiError> {
    let presented = hex::encode(Sha256::digest(hex::decode(secret_hex.trim()).unwrap_or_default()));
    let mut issued = read_issued(file)?;
    let now = now_ms();
    let found = issued.iter().position(|i| failover::credential::matches_any([i.secret_sha256.as_str()], &presented));
    let Some(i) = found else {
        return Err(err("unknown join token (already used, or not issued by this host): ask for a new one with `vserver-agent token HOST` on a host of the cluster"));
    };
    let token = issued.remove(i);
    write_issued(file, &issued)?;
    if token.until_unix_ms <= now {
        return Err(err(format!(
            "this join token for {} has expired: ask for a new one with `vserver-agent token {}`",
            token.node, token.node
        )));
    }
    Ok((token.node, token.address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_certificate_chains_to_the_cluster_ca_and_names_the_host() {
        let ca = Ca::create("h1").unwrap();
        let again = Ca::load(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(ca.sha256().unwrap(), again.sha256().unwrap());
        let (key_pem, spki) = host_key().unwrap();
        let chain = again.issue("h2", "192.0.2.12".parse().unwrap(), &spki).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "host then CA");
        assert!(chain.ends_with(&ca.cert_pem));
        // rustls accepts it as h2's, and as 192.0.2.12's, signed by the CA.
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain.as_bytes()).map(Result::unwrap).collect();
        for name in ["h2", "192.0.2.12"] {
            let name = ServerName::try_from(name).unwrap();
            use rustls::client::danger::ServerCertVerifier;
            verifier.verify_server_cert(&certs[0], &certs[1..], &name, &[], UnixTime::now()).unwrap();
        }
        assert!(rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_ok());
        let until = not_after(&chain).unwrap();
        let years = until.duration_since(SystemTime::now()).unwrap().as_secs() / (365 * 86_400);
        assert_eq!(years, 2, "about three years");
    }

    #[test]
    fn a_token_reads_back_and_bad_ones_say_why() {
        let t = JoinToken { at: "192.0.2.11:7070".into(), ca_sha256: [7; 32], secret: [9; 16] };
        let text = t.to_string();
        assert!(text.starts_with("vsj1."));
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        let v6 = JoinToken { at: "[2001:db8::1]:7070".into(), ..t.clone() };
        assert_eq!(v6.to_string().parse::<JoinToken>().unwrap(), v6);
        for (bad, says) in [
            ("", "does not begin"),
            ("vsj1.abc.def.h:1", "CA hash"),
            (&text.replace(":7070", ""), "HOST:PORT"),
            (&text.replacen(&hex::encode([9u8; 16]), "zz", 1), "secret"),
        ] {
            let e = bad.parse::<JoinToken>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_token_works_once_for_its_host_and_not_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("join-tokens.json");
        let t = mint(&file, "h2", None, "192.0.2.11:7070", [1; 32], TOKEN_VALIDITY).unwrap();
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&hex::encode(t.secret)), "only its hash is kept");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(redeem(&file, "00").unwrap_err().to_string().contains("unknown join token"));
        assert_eq!(redeem(&file, &hex::encode(t.secret)).unwrap(), ("h2".into(), None));
        assert!(redeem(&file, &hex::encode(t.secret)).unwrap_err().to_string().contains("already used"));
        let new = mint(&file, "h9", Some("192.0.2.19:7070"), "x:1", [1; 32], TOKEN_VALIDITY).unwrap();
        assert_eq!(redeem(&file, &hex::encode(new.secret)).unwrap(), ("h9".into(), Some("192.0.2.19:7070".into())));
        let old = mint(&file, "h3", None, "x:1", [1; 32], Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let e = redeem(&file, &hex::encode(old.secret)).unwrap_err().to_string();
        assert!(e.contains("expired") || e.contains("unknown"), "{e}");
    }
}
