//! The client's probes: TCP connects and HTTP/1.0 GETs from sockets made in the client namespace.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::Client;

/// Longest single attempt while waiting for a service: a lost SYN is retried rather than waited for.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);

/// Pause between attempts while waiting for a service.
const POLL_INTERVAL: Duration = Duration::from_millis(3);

/// Largest response read, so a runaway server cannot fill memory.
const MAX_RESPONSE: u64 = 1 << 20;

impl Client {
    /// Opens a TCP connection from the client namespace (the socket is made on a thread that
    /// entered the namespace; it keeps that namespace wherever it is used).
    pub fn connect(&self, addr: Ipv4Addr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        let target = SocketAddr::V4(SocketAddrV4::new(addr, port));
        self.netns.run(|| TcpStream::connect_timeout(&target, timeout))?
    }

    /// Whether a TCP connection to `addr:port` is accepted within `timeout`.
    pub fn tcp_connect_ok(&self, addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
        self.connect(addr, port, timeout).is_ok()
    }

    /// `GET /` over HTTP/1.0 from the client namespace; the body when the status is 200, else an
    /// error naming what happened. `timeout` bounds the whole exchange.
    pub fn http_get(&self, addr: Ipv4Addr, port: u16, timeout: Duration) -> Result<String> {
        self.http_get_path(addr, port, "/", timeout)
    }

    /// `GET path` over HTTP/1.0 from the client namespace; the body when the status is 200.
    pub fn http_get_path(&self, addr: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut stream = self
            .connect(addr, port, timeout)
            .with_context(|| format!("connecting to {addr}:{port} from the client"))?;
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(remaining))?;
        stream.set_write_timeout(Some(remaining))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: vserver-lab\r\n\r\n")
            .with_context(|| format!("sending a request to {addr}:{port}"))?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .with_context(|| format!("reading the answer of {addr}:{port}"))?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status_line = head.lines().next().unwrap_or("");
        let status = status_line.split_whitespace().nth(1);
        if status != Some("200") {
            bail!("{addr}:{port}{path} answered {status_line:?} instead of 200");
        }
        Ok(body.to_owned())
    }

    /// Polls `GET /` every few ms until it answers 200 or `deadline` passes; how long that took.
    pub fn wait_http(&self, addr: Ipv4Addr, port: u16, deadline: Instant) -> Option<Duration> {
        self.wait_http_unless(addr, port, deadline, &AtomicBool::new(false))
    }

    /// [`Client::wait_http`] that also gives up as soon as `cancel` is set (say, by Ctrl-C).
    pub fn wait_http_unless(
        &self,
        addr: Ipv4Addr,
        port: u16,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline || cancel.load(Ordering::Relaxed) {
                return None;
            }
            let attempt = (deadline - now).min(ATTEMPT_TIMEOUT);
            if self.http_get(addr, port, attempt).is_ok() {
                return Some(start.elapsed());
            }
            thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
}
