//! A slowloris: a client that holds many connections to an agent open, each with a request begun and never
//! finished (a header line now and then), and opens again every one the agent closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Netns;

/// How often closed connections are opened again, and a header line trickles on the open ones.
const ROUND: Duration = Duration::from_millis(500);
/// A new header line on each open connection this often (under the agent's header timeout).
const TRICKLE: Duration = Duration::from_secs(5);

/// What the flood saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodReport {
    /// Connections opened (at the TCP level), reopenings included.
    pub opened: usize,
    /// Connections the agent closed.
    pub closed_by_agent: usize,
    /// The most connections held open at one instant.
    pub most_open: usize,
}

/// The flood, running until [`Flood::finish`] (or drop).
pub struct Flood {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    thread: Option<JoinHandle<FloodReport>>,
}

impl Flood {
    /// Opens `count` connections to `target` from the namespace `from`, and keeps them open.
    pub fn start(from: &Netns, target: SocketAddr, count: usize) -> Flood {
        raise_nofile(count as u64 + 256);
        let (stop, held) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let enter = from.enterer();
        let (s, h) = (Arc::clone(&stop), Arc::clone(&held));
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter() {
                panic!("cannot enter the flood's namespace: {e}");
            }
            flood(target, count, &s, &h)
        });
        Flood { stop, held, thread: Some(thread) }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Stops the flood (its connections close) and says what it saw.
    pub fn finish(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flood(target: SocketAddr, count: usize, stop: &AtomicBool, held: &AtomicUsize) -> FloodReport {
    let mut report = FloodReport::default();
    let mut conns: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    let mut last_trickle = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let trickle = last_trickle.elapsed() >= TRICKLE;
        if trickle {
            last_trickle = Instant::now();
        }
        for slot in conns.iter_mut() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(conn) = slot {
                let mut byte = [0u8; 1];
                let closed = match conn.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
                let closed = closed || (trickle && conn.write_all(b"X-Slow: 1\r\n").is_err());
                if closed {
                    report.closed_by_agent += 1;
                    *slot = None;
                }
            }
            if slot.is_none() {
                if let Ok(mut conn) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                    report.opened += 1;
                    let _ = conn.write_all(b"GET /v1/status HTTP/1.1\r\nHost: flood\r\n");
                    let _ = conn.set_nonblocking(true);
                    *slot = Some(conn);
                }
            }
        }
        let open = conns.iter().filter(|c| c.is_some()).count();
        held.store(open, Ordering::Relaxed);
        report.most_open = report.most_open.max(open);
        if let Some(rest) = ROUND.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    report
}

/// Lets this (test) process hold `n` descriptors, within its hard limit.
fn raise_nofile(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < n {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard);
        }
    }
}
