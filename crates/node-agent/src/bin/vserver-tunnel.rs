//! `vserver-tunnel`: rsync's remote shell for replication between agents (`rsync -e "vserver-tunnel ..."`).
//! Not run by hand: the agent builds the command line. See `crates/node-agent/src/agent/tunnel.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use node_agent::agent::tunnel::{ARGV_HEADER, SESSION_HEADER, UPGRADE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Carries one rsync's stdin and stdout to a receiving agent over its HTTP(S) port, authenticated with the
/// cluster secret. rsync runs it as its remote shell and appends HOST and the remote command.
#[derive(Debug, Parser)]
#[command(name = "vserver-tunnel", version)]
struct Cli {
    /// The receiving agent's base URL (http:// or https://).
    #[arg(long)]
    url: String,
    /// File holding the cluster secret (sent as a bearer token; leave out with a client certificate, which
    /// the receiving agent admits instead).
    #[arg(long, required_unless_present = "cert_file")]
    secret_file: Option<PathBuf>,
    /// The vserver whose replica receives.
    #[arg(long)]
    vserver: String,
    /// The sync session opened on the receiving agent.
    #[arg(long)]
    session: String,
    /// The cluster CA (PEM) that signed the receiving agent's certificate (https; without it, the public
    /// authorities' roots are trusted).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// This agent's certificate (PEM), presented to the receiving agent (https).
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Give up when data sent is not acknowledged, or the peer does not answer keep-alive probes, for this
    /// many seconds (a cut link then ends the tunnel, and rsync with it, instead of hanging).
    #[arg(long, default_value_t = 60)]
    io_timeout: u64,
    /// What rsync appends: the host (ignored: the URL says where) and the remote command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    remote: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rsync waits for its remote shell at the end of a run by polling every 20 ms, which would add up to 20 ms
    // to every pass. So the tunnel runs in a child process, and this one exits as soon as the tunnel is up
    // (rsync collects its status then), or with the tunnel's failure before that. The child keeps rsync's
    // stdin, stdout and stderr and its process group (a kill of the group still reaches it).
    let Ok((ready_r, ready_w)) = nix::unistd::pipe() else {
        return tunnel(cli, None);
    };
    // SAFETY: no other thread exists yet (no runtime has been built); the child goes on as this program.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready_r);
            tunnel(cli, Some(std::fs::File::from(ready_w)))
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            use std::io::Read;
            drop(ready_w);
            let mut said = [0u8; 1];
            match std::fs::File::from(ready_r).read(&mut said) {
                Ok(1) => ExitCode::from(said[0]),
                // It ended without a word: its own status says how.
                _ => match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => ExitCode::from(code as u8),
                    _ => ExitCode::from(255),
                },
            }
        }
        Err(_) => tunnel(cli, None),
    }
}

/// Runs the tunnel; `ready` gets one byte when it is up (0) or has failed (its exit code).
fn tunnel(cli: Cli, ready: Option<std::fs::File>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vserver-tunnel: cannot start: {e}");
            return report(ready, 255);
        }
    };
    let mut ready = ready;
    let result = runtime.block_on(run(cli, &mut ready));
    // A read of stdin may still be pending in a blocking thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-tunnel: {e:#}");
            report(ready, 255)
        }
    }
}

/// Tells the waiting parent (if it still waits) how the tunnel went, and returns the same code.
fn report(ready: Option<std::fs::File>, code: u8) -> ExitCode {
    if let Some(mut f) = ready {
        use std::io::Write;
        let _ = f.write_all(&[code]);
    }
    ExitCode::from(code)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn run(cli: Cli, ready: &mut Option<std::fs::File>) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    let authorization = match &cli.secret_file {
        Some(file) => {
            let secret =
                std::fs::read_to_string(file).with_context(|| format!("cannot read the secret {}", file.display()))?;
            format!("Authorization: Bearer {}\r\n", secret.lines().next().unwrap_or("").trim())
        }
        None => String::new(),
    };
    let url = reqwest::Url::parse(&cli.url).with_context(|| format!("bad URL {:?}", cli.url))?;
    let host = url.host_str().context("the URL has no host")?.to_string();
    let port = url.port_or_known_default().context("the URL has no port")?;
    // rsync passes HOST first, then the remote command.
    let command: Vec<String> = cli.remote.iter().skip(1).cloned().collect();
    if command.is_empty() {
        bail!("no remote command (rsync runs this helper as `vserver-tunnel ... HOST rsync --server ...`)");
    }
    let tcp =
        TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("cannot connect to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    watch_link(&tcp, std::time::Duration::from_secs(cli.io_timeout.max(1)))?;
    let mut stream: Box<dyn Stream> = match url.scheme() {
        "http" => Box::new(tcp),
        "https" => Box::new(tls(&cli, &host, tcp).await?),
        other => bail!("unsupported URL scheme {other}"),
    };
    let argv = serde_json::to_string(&command)?;
    let request = format!(
        "POST /v1/replicas/{name}/rsync HTTP/1.1\r\nHost: {host}:{port}\r\n{authorization}\
         Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\n{SESSION_HEADER}: {session}\r\n{ARGV_HEADER}: {argv}\r\n\
         Content-Length: 0\r\n\r\n",
        name = cli.vserver,
        session = cli.session,
    );
    stream.write_all(request.as_bytes()).await.context("sending the tunnel request")?;
    // Read the answer's head; what follows it already belongs to rsync.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut buf).await.context("reading the tunnel answer")?;
        if n == 0 {
            bail!("the agent at {} closed the connection without answering", cli.url);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 * 1024 {
            bail!("the agent's answer has no end of headers");
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "101" {
        // The refusal's body, if it came with the head.
        let mut body = head[end..].to_vec();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read_to_end(&mut body)).await;
        let body = String::from_utf8_lossy(&body);
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        bail!("the agent at {} refused the tunnel ({}): {reason}", cli.url, text.lines().next().unwrap_or(""));
    }
    // Up: the parent may go (rsync then finds its remote shell done when it looks at the end).
    if let Some(f) = ready.take() {
        report(Some(f), 0);
    }
    let (stdin, mut stdout) = stdio()?;
    stdout.write_all(&head[end..]).await?;
    stdout.flush().await?;
    let (from_agent, mut to_agent) = tokio::io::split(stream);
    let upstream = async move {
        let copied = tokio::io::copy_buf(&mut tokio::io::BufReader::with_capacity(BUF, stdin), &mut to_agent).await;
        let _ = to_agent.shutdown().await;
        copied
    };
    let downstream = async move {
        let mut from_agent = tokio::io::BufReader::with_capacity(BUF, from_agent);
        let copied = tokio::io::copy_buf(&mut from_agent, &mut stdout).await;
        let _ = stdout.flush().await;
        copied
    };
    // The tunnel ends when the receiving side closes: after its rsync ends, which also follows our rsync
    // closing its side (sent on as a half-close).
    tokio::spawn(upstream);
    downstream.await.context("receiving from the agent")?;
    Ok(())
}

/// Bytes moved per read.
const BUF: usize = 256 * 1024;

/// Our stdin and stdout, on which rsync talks. rsync hands its remote shell the ends of a socket pair (or
/// pipes); those are read and written through the runtime's event loop. Tokio's own stdio would pass every
/// read and write through a blocking thread, which shows in a pass that moves many small messages.
fn stdio() -> std::io::Result<(Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let socket = |fd: std::os::fd::OwnedFd| {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    };
    let kind = |fd: &std::os::fd::OwnedFd| -> std::io::Result<std::fs::FileType> {
        Ok(std::fs::File::from(fd.try_clone()?).metadata()?.file_type())
    };
    let input = std::io::stdin().as_fd().try_clone_to_owned()?;
    let input: Box<dyn AsyncRead + Unpin + Send> = match kind(&input)? {
        k if k.is_socket() => Box::new(socket(input)?),
        k if k.is_fifo() => Box::new(tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(input))?),
        _ => Box::new(tokio::io::stdin()),
    };
    let output = std::io::stdout().as_fd().try_clone_to_owned()?;
    let output: Box<dyn AsyncWrite + Unpin + Send> = match kind(&output)? {
        k if k.is_socket() => Box::new(socket(output)?),
        k if k.is_fifo() => Box::new(tokio::net::unix::pipe::Sender::from_file(std::fs::File::from(output))?),
        _ => Box::new(tokio::io::stdout()),
    };
    Ok((input, output))
}

/// Makes the kernel end the connection when the link is gone: unacknowledged data for `timeout`
/// (`TCP_USER_TIMEOUT`), or an idle connection whose peer misses keep-alive probes for about as long.
fn watch_link(tcp: &TcpStream, timeout: std::time::Duration) -> anyhow::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
    let probe = (secs / 3).max(1);
    setsockopt(tcp, sockopt::TcpUserTimeout, &secs.saturating_mul(1000))?;
    setsockopt(tcp, sockopt::KeepAlive, &true)?;
    setsockopt(tcp, sockopt::TcpKeepIdle, &probe)?;
    setsockopt(tcp, sockopt::TcpKeepInterval, &probe)?;
    setsockopt(tcp, sockopt::TcpKeepCount, &3)?;
    Ok(())
}

async fn tls(cli: &Cli, host: &str, tcp: TcpStream) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &cli.ca_file {
        // The cluster CA alone, as the agents trust it.
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(cert?)?;
            }
        }
        // No cluster CA: certificates from the public authorities, as the agents' HTTP client does then.
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&cli.cert_file, &cli.key_file) {
        (Some(cert), Some(key)) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(host.to_string()).with_context(|| format!("bad server name {host}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(name, tcp).await.with_context(|| format!("TLS handshake with {host}"))
}
