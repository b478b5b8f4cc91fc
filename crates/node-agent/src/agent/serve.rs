//! Serving the API: HTTP or HTTPS (rustls) on the configured address for peers and operators, and plain HTTP
//! on a Unix socket in the run directory (mode 0600) for this host's `vserver` command.
//!
//! Each connection is served by hyper's HTTP/1.1 server with a header read timeout (a client that opens a
//! connection and says nothing is dropped), behind a TLS handshake timeout when TLS is on. With a cluster CA
//! configured, a client may present a certificate signed by it; the connection then carries
//! [`Connection::certified`] and the API admits it without the bearer token.
//!
//! A flood of connections that say nothing or trickle (slowloris) must not starve the peers' heartbeats nor
//! the agent's file descriptors: [`Admission`] lets the configured peers' addresses in always, and any other
//! address only up to [`PER_ADDRESS`] connections at once, all of them together up to [`OTHERS`]; a connection
//! over those is closed as soon as it is accepted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use super::config::{ConfigError, TlsConfig};

/// Longest wait for a request's headers, on a new or a kept-alive connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, at shutdown, for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once from one address that is not a peer's (an operator's browser or CLI, Prometheus).
pub const PER_ADDRESS: usize = 32;
/// Connections at once from all the addresses that are not peers'.
pub const OTHERS: usize = 256;
/// Refusals are logged at most this often.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Who may hold a connection to the API: the peers always, other addresses within [`PER_ADDRESS`] and
/// [`OTHERS`].
pub struct Admission {
    peers: std::sync::RwLock<HashSet<IpAddr>>,
    open: Mutex<(HashMap<IpAddr, usize>, usize)>,
    refused: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

/// A connection admitted from an address that is not a peer's; it counts until dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Admits `peers`' addresses always.
    pub fn new(peers: impl IntoIterator<Item = IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            peers: std::sync::RwLock::new(peers.into_iter().map(canonical).collect()),
            open: Mutex::new((HashMap::new(), 0)),
            refused: AtomicU64::new(0),
            logged: Mutex::new(None),
        })
    }

    /// Admits `peers`' addresses always from now on (the cluster's hosts changed).
    pub fn set_peers(&self, peers: impl IntoIterator<Item = IpAddr>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers.into_iter().map(canonical).collect();
    }

    /// Whether a connection from `ip` may be served: `Some(None)` for a peer, `Some(ticket)` for another
    /// address within its limits, `None` over them.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<Ticket>> {
        let ip = canonical(ip);
        if self.peers.read().unwrap_or_else(|e| e.into_inner()).contains(&ip) {
            return Some(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (by_ip, all) = &mut *open;
        let mine = by_ip.entry(ip).or_insert(0);
        if *mine >= PER_ADDRESS || *all >= OTHERS {
            if *mine == 0 {
                by_ip.remove(&ip);
            }
            drop(open);
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            if logged.is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY) {
                *logged = Some(Instant::now());
                tracing::warn!(%ip, refused, "too many connections from addresses that are not peers: closing \
                               new ones (limits: {PER_ADDRESS} per address, {OTHERS} in all)");
            }
            return None;
        }
        *mine += 1;
        *all += 1;
        Some(Some(Ticket { admission: Arc::clone(self), ip }))
    }

    /// Connections closed at once since the start, over the limits.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().unwrap_or_else(|e| e.into_inner());
        let (by_ip, all) = &mut *open;
        *all = all.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the API knows of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The client's address (`None` on the Unix socket).
    pub remote: Option<SocketAddr>,
    /// The client presented a certificate signed by the cluster CA (verified in the TLS handshake).
    pub certified: bool,
}

/// The rustls setup of the agent's listener and of its client to peers, read from `[tls]`.
#[derive(Clone)]
pub struct Tls {
    /// Accepts TLS connections with this agent's certificate.
    pub acceptor: TlsAcceptor,
    /// The cluster CA (PEM), when configured: peers are verified against it and clients it signed are
    /// admitted without the token.
    pub ca_pem: Option<Vec<u8>>,
    /// This agent's certificate chain and key (PEM), presented to peers as a client certificate.
    pub identity_pem: Vec<u8>,
    /// When this agent's certificate expires, ms since the Unix epoch.
    pub cert_not_after_unix_ms: Option<u64>,
    /// When the cluster CA's certificate expires, ms since the Unix epoch.
    pub ca_not_after_unix_ms: Option<u64>,
}

impl Tls {
    /// Reads the certificate, the key and the CA named by `[tls]`; every error names the key and the file.
    pub fn load(tls: &TlsConfig, config_path: &Path) -> Result<Self, ConfigError> {
        let bad = |key: &str, file: &Path, reason: String| ConfigError::Value {
            path: config_path.into(),
            key: format!("tls.{key}"),
            reason: format!("{}: {reason}", file.display()),
        };
        let read = |key: &str, file: &Path| std::fs::read(file).map_err(|e| bad(key, file, e.to_string()));
        let cert_pem = read("cert_file", &tls.cert_file)?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| bad("cert_file", &tls.cert_file, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("cert_file", &tls.cert_file, "holds no certificate".into()));
        }
        let key_pem = read("key_file", &tls.key_file)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad("key_file", &tls.key_file, format!("no PEM private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("cert_file", &tls.cert_file, e.to_string()))?;
        let ca_pem = match &tls.ca_file {
            Some(ca_file) => Some(read("ca_file", ca_file)?),
            None => None,
        };
        let builder = match (&tls.ca_file, &ca_pem) {
            (Some(ca_file), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| bad("ca_file", ca_file, format!("not PEM certificates: {e}")))?;
                    roots.add(cert).map_err(|e| bad("ca_file", ca_file, e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("ca_file", ca_file, "holds no certificate".into()));
                }
                // A client certificate is optional: without one, the bearer token is required, as over HTTP.
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| bad("ca_file", ca_file, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("key_file", &tls.key_file, format!("does not fit the certificate: {e}")))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let not_after = |pem: &[u8]| {
            super::pki::not_after(&String::from_utf8_lossy(pem))
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
        };
        let cert_not_after_unix_ms = not_after(&cert_pem);
        let ca_not_after_unix_ms = ca_pem.as_deref().and_then(not_after);
        let mut identity_pem = cert_pem;
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(&key_pem);
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            ca_pem,
            identity_pem,
            cert_not_after_unix_ms,
            ca_not_after_unix_ms,
        })
    }
}

/// Where the `vserver` command reaches this host's agent.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("agent.sock")
}

/// Binds the Unix socket for the `vserver` command: root only (0600), replacing a stale one.
pub fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `app` on `tcp` (over TLS when `tls` is given, and plain HTTP too on the same port when `plain_too`,
/// told apart by the first byte; connections as `admission` admits them) and on `unix` until `shutdown`
/// resolves, then lets the requests in progress finish (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    tcp: TcpListener,
    unix: Option<UnixListener>,
    tls: Option<TlsAcceptor>,
    plain_too: bool,
    admission: Arc<Admission>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Some(ticket) = admission.admit(remote.ip()) else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (app, tls, watcher) = (app.clone(), tls.clone(), graceful.watcher());
                    tokio::spawn(async move {
                        let _ticket = ticket;
                        match tls {
                            None => {
                                let conn = Connection { remote: Some(remote), certified: false };
                                serve_connection(stream, conn, app, watcher).await;
                            }
                            Some(acceptor) => {
                                if plain_too && !starts_tls(&stream).await {
                                    let conn = Connection { remote: Some(remote), certified: false };
                                    return serve_connection(stream, conn, app, watcher).await;
                                }
                                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                                    Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
                                };
                                let certified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                                let conn = Connection { remote: Some(remote), certified };
                                serve_connection(stream, conn, app, watcher).await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_unix(unix.as_ref()) => match accepted {
                Ok(stream) => {
                    let (app, watcher) = (app.clone(), graceful.watcher());
                    let conn = Connection { remote: None, certified: false };
                    tokio::spawn(serve_connection(stream, conn, app, watcher));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection on the local socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(tcp);
    drop(unix);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in progress after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Whether a connection begins with a TLS handshake record (0x16); false for anything else, or nothing within
/// the handshake timeout (then served as plain HTTP, whose header timeout closes it).
async fn starts_tls(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == 0x16)
}

async fn accept_unix(unix: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn serve_connection<S>(stream: S, conn: Connection, app: Router, watcher: hyper_util::server::graceful::Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::ServiceExt::map_request(app, move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(conn);
        if conn.certified {
            req.extensions_mut().insert(failover::wire::Certified);
        }
        req
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    // With upgrades: the replication tunnel turns a request's connection into rsync's stream.
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(served).await {
        tracing::debug!(remote = ?conn.remote, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_always_admitted_and_other_addresses_within_their_limits() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let admission = Admission::new([peer]);
        let peers: Vec<_> = (0..OTHERS * 2).map(|_| admission.admit(peer)).collect();
        assert!(peers.iter().all(|t| matches!(t, Some(None))), "a peer is never limited");
        // The same peer, as an IPv4-mapped IPv6 address.
        assert!(matches!(admission.admit("::ffff:10.0.0.2".parse().unwrap()), Some(None)));

        let flooder: IpAddr = "10.0.0.66".parse().unwrap();
        let mut held: Vec<_> = (0..PER_ADDRESS).map(|_| admission.admit(flooder).unwrap().unwrap()).collect();
        assert!(admission.admit(flooder).is_none(), "over its own limit");
        assert_eq!(admission.refused(), 1);
        // Another address is still admitted; one of the flooder's closing lets one more in.
        assert!(admission.admit("10.0.0.7".parse().unwrap()).is_some());
        held.pop();
        assert!(admission.admit(flooder).is_some());

        // Many addresses together stop at the total.
        let mut many = Vec::new();
        for i in 0..=OTHERS {
            let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
            match admission.admit(ip) {
                Some(t) => many.push(t),
                None => break,
            }
        }
        assert_eq!(many.len() + held.len(), OTHERS, "{} admitted besides the flooder's", many.len());
        assert!(matches!(admission.admit(peer), Some(None)), "the peer still gets in");
        drop(many);
        drop(held);
        assert_eq!(admission.open.lock().unwrap().1, 0, "every connection closed is counted out");
        assert!(admission.open.lock().unwrap().0.is_empty());
    }
}
