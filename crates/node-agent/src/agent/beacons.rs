//! The beacons' socket (UDP, on the API's address and port), served by a thread of its own: every
//! [`DRAIN_EVERY`] it takes in what the peers sent meanwhile, and at every beacon interval it sends one beacon
//! to each watched peer, right after taking in their latest (so each beacon acknowledges what arrived up to
//! that moment, as soon as before).
//!
//! Why a thread that wakes on its own clock rather than a task woken by each datagram: a voter hears every
//! host ten times a second, and a wakeup per datagram (a context switch each, and in a lab on one machine the
//! sender pays for waking the receiver) was the largest part of a voter's CPU at rest. The socket is in no
//! event loop, so a datagram only queues; the thread takes a batch at each wakeup. A datagram waits at most
//! [`DRAIN_EVERY`] before it counts: the peer is heard that much later (the conservative direction for
//! every judgement made from it: a peer vouches for a host from when it heard it), and this host learns of
//! its own renewed lease that much later, well inside the blip budget (docs/failover.md, *Failure budgets*).
//!
//! The thread sends only while the agent's event loop runs ([`Pulse`]): an agent whose loop hangs stops
//! writing the keepers' lease and petting the watchdog, so it must also stop proving itself alive, or its
//! vservers would be fenced here with nobody taking them over.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::heartbeat::Membership;

/// How often the thread takes in what arrived.
pub const DRAIN_EVERY: Duration = Duration::from_millis(25);

/// How long the event loop may go without a pulse before the thread stops sending beacons.
const PULSE_LIMIT: Duration = Duration::from_millis(500);

/// How long a peer's looked-up address is used before it is looked up again.
const ADDRESS_TTL: Duration = Duration::from_secs(30);

/// The receive buffer asked for: a drain's worth of datagrams from a thousand hosts, with room to spare.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The event loop's proof of life, given by the lease watch at each of its ticks.
#[derive(Debug)]
pub struct Pulse {
    origin: Instant,
    /// Ms since `origin` of the last pulse, plus one (0: none yet).
    last: AtomicU64,
}

impl Default for Pulse {
    fn default() -> Self {
        Self { origin: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Pulse {
    /// The loop runs.
    pub fn beat(&self) {
        self.last.store(self.origin.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// Whether the loop gave a pulse within `limit`.
    fn recent(&self, limit: Duration) -> bool {
        match self.last.load(Ordering::Relaxed) {
            0 => false,
            last => (self.origin.elapsed().as_millis() as u64 + 1).saturating_sub(last) <= limit.as_millis() as u64,
        }
    }
}

/// The peers' UDP addresses, looked up by the event loop (a lookup may block) and used by the thread.
type Addresses = Mutex<HashMap<String, (SocketAddr, Instant)>>;

/// Serves the beacons on `socket` until aborted: the thread sends beacons every `every` (none when zero) and
/// takes in the peers'; this task looks up the peers' addresses (when one is new, after a send to it failed,
/// and every [`ADDRESS_TTL`]). Aborting it stops the thread (within [`DRAIN_EVERY`]) and closes the socket.
pub async fn run(every: Duration, membership: Arc<Membership>, socket: tokio::net::UdpSocket, pulse: Arc<Pulse>) {
    let socket = match socket.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot take the beacons' socket out of the event loop; no beacons");
            return std::future::pending().await;
        }
    };
    if let Err(e) = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the beacons' receive buffer");
    }
    let addresses: Arc<Addresses> = Arc::default();
    let wanted = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    // Set when this future is dropped (the agent stops): the thread ends and closes the socket.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(Arc::clone(&stop));
    let thread = {
        let (membership, addresses, wanted, stop) =
            (Arc::clone(&membership), Arc::clone(&addresses), Arc::clone(&wanted), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("beacons".into())
            .spawn(move || serve(&socket, every, &membership, &addresses, &wanted, &pulse, &stop))
    };
    if let Err(e) = thread {
        tracing::error!(error = %e, "cannot start the beacons' thread; no beacons");
        return std::future::pending().await;
    }
    loop {
        look_up(&membership, &addresses).await;
        // Woken when the thread misses an address, else to renew the oldest.
        let _ = tokio::time::timeout(ADDRESS_TTL / 2, wanted.notified()).await;
    }
}

/// Looks up the address of each watched peer that has none or an old one, and forgets the unwatched.
async fn look_up(membership: &Membership, addresses: &Addresses) {
    let watched = membership.watched();
    let stale: Vec<(String, String)> = {
        let mut known = addresses.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|name, _| watched.iter().any(|(n, _)| n == name));
        watched
            .into_iter()
            .filter(|(name, _)| known.get(name).is_none_or(|(_, at)| at.elapsed() > ADDRESS_TTL))
            .collect()
    };
    for (name, url) in stale {
        if let Some(addr) = peer_udp_addr(&url).await {
            addresses.lock().unwrap_or_else(|p| p.into_inner()).insert(name, (addr, Instant::now()));
        }
    }
}

/// The thread: takes in, sends when due, sleeps until the next of the two.
fn serve(
    socket: &UdpSocket,
    every: Duration,
    membership: &Membership,
    addresses: &Addresses,
    wanted: &tokio::sync::Notify,
    pulse: &Pulse,
    stop: &AtomicBool,
) {
    // Any datagram: a valid peer's is at most MAX_BEACON, one of an earlier release larger.
    let mut buf = vec![0u8; 65_536];
    let mut next_send = Instant::now();
    let mut watched = Watched::default();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _from)) => {
                    let _ = membership.receive_beacon(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "beacon receive failed");
                    break;
                }
            }
        }
        let now = Instant::now();
        if !every.is_zero() && now >= next_send {
            if pulse.recent(PULSE_LIMIT) {
                send(socket, membership, watched.now(membership), addresses, wanted);
            }
            next_send += every;
            if next_send <= now {
                next_send = now + every;
            }
        }
        let wake = if every.is_zero() { now + DRAIN_EVERY } else { next_send.min(now + DRAIN_EVERY) };
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}

/// The thread's copy of the watched peers (name, URL), read again only when they may have changed: copying
/// them for each round of beacons (ten a second) was work that grew with the cluster on a voter.
#[derive(Default)]
struct Watched {
    generation: Option<u64>,
    peers: Vec<(String, String)>,
}

impl Watched {
    /// The watched peers now.
    fn now(&mut self, membership: &Membership) -> &[(String, String)] {
        // The generation is read before the list: a change after it makes the next round read again.
        let generation = membership.watched_generation();
        if self.generation != Some(generation) {
            self.peers = membership.watched();
            self.generation = Some(generation);
        }
        &self.peers
    }
}

/// One beacon to each watched peer whose address is known; a peer without one (new, or whose last send
/// failed) is asked for.
fn send(
    socket: &UdpSocket,
    membership: &Membership,
    watched: &[(String, String)],
    addresses: &Addresses,
    wanted: &tokio::sync::Notify,
) {
    let mut missing = false;
    for (name, url) in watched {
        let to = addresses.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|(addr, _)| *addr);
        let Some(to) = to else {
            missing = true;
            continue;
        };
        let datagram = membership.next_beacon(name);
        if let Err(e) = socket.send_to(&datagram, to) {
            tracing::debug!(peer = %url, error = %e, "beacon not sent");
            if e.kind() != std::io::ErrorKind::WouldBlock {
                addresses.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
                missing = true;
            }
        }
    }
    if missing {
        wanted.notify_one();
    }
}

/// The UDP address of a peer: the host and port of its URL (the first address its name resolves to).
async fn peer_udp_addr(url: &str) -> Option<SocketAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default()?;
    let first = tokio::net::lookup_host((host.as_str(), port)).await.ok()?.next();
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::heartbeat::MembershipConfig;

    fn membership(node: &str, peer: &str, port: u16) -> Arc<Membership> {
        Arc::new(Membership::new(MembershipConfig {
            node: node.into(),
            peers: vec![(peer.into(), format!("http://127.0.0.1:{port}"))],
            secret: "0123456789abcdef-cluster".into(),
            incarnation: 1,
            suspect_after: Duration::from_millis(750),
            dead_after: Duration::from_millis(1500),
            lease_len: Duration::from_millis(1800),
        }))
    }

    /// Waits up to 20 s for `done`.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn heard_ms(m: &Membership, peer: &str) -> Option<u64> {
        m.peers().into_iter().find(|p| p.name == peer).and_then(|p| p.last_heard_ms)
    }

    /// The thread keeps its copy of the watched peers from round to round, yet a peer that comes while it runs
    /// gets beacons too: the copy is read again when the membership's watched peers change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_comes_while_beacons_go_gets_them_too() {
        let (sa, sb, sc) = (
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        let (port_b, port_c) = (sb.local_addr().unwrap().port(), sc.local_addr().unwrap().port());
        let a = membership("h1", "h2", port_b);
        let pulse = Arc::new(Pulse::default());
        let beating = tokio::spawn({
            let pulse = Arc::clone(&pulse);
            async move {
                loop {
                    pulse.beat();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let sender = tokio::spawn(run(Duration::from_millis(100), Arc::clone(&a), sa, pulse));
        let from_h1 = |socket: &tokio::net::UdpSocket| {
            let mut buf = vec![0u8; 65_536];
            let n = socket.try_recv(&mut buf).unwrap_or(0);
            let signed: Option<failover::wire::SignedHeartbeat> = serde_json::from_slice(&buf[..n]).ok();
            signed.is_some_and(|s| s.body.contains("\"node\":\"h1\""))
        };
        until("h2 gets h1's beacons", || from_h1(&sb)).await;
        assert!(!from_h1(&sc), "h3 is no peer yet");
        let peers = [("h2", port_b), ("h3", port_c)].map(|(n, p)| (n.to_string(), format!("http://127.0.0.1:{p}")));
        assert!(a.set_peers(&peers));
        until("h3, a peer now, gets h1's beacons", || from_h1(&sc)).await;
        until("h2 still gets them", || from_h1(&sb)).await;
        sender.abort();
        beating.abort();
    }

    /// Two hosts' beacons over real UDP: each acknowledges the other's, so each holds the other's lease; a host
    /// whose event loop stops giving its pulse stops sending but still takes in; stopping the task closes the
    /// socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beacons_cross_acks_come_back_and_a_host_without_a_pulse_falls_silent() {
        let (sa, sb) = (
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        let (addr_a, addr_b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        let (a, b) = (membership("h1", "h2", addr_b.port()), membership("h2", "h1", addr_a.port()));
        let (pa, pb) = (Arc::new(Pulse::default()), Arc::new(Pulse::default()));
        let a_beats = Arc::new(AtomicBool::new(true));
        let beating = tokio::spawn({
            let (pa, pb, a_beats) = (Arc::clone(&pa), Arc::clone(&pb), Arc::clone(&a_beats));
            async move {
                loop {
                    if a_beats.load(Ordering::Relaxed) {
                        pa.beat();
                    }
                    pb.beat();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let every = Duration::from_millis(100);
        let ta = tokio::spawn(run(every, Arc::clone(&a), sa, Arc::clone(&pa)));
        let tb = tokio::spawn(run(every, Arc::clone(&b), sb, pb));
        let holds =
            |m: &Membership, peer: &str| m.lease(tokio::time::Instant::now()).iter().any(|(name, _)| name == peer);
        until("each acknowledges the other", || holds(&a, "h2") && holds(&b, "h1")).await;

        a_beats.store(false, Ordering::Relaxed);
        until("h2 stops hearing h1", || heard_ms(&b, "h1").is_some_and(|ms| ms > 1000)).await;
        assert!(heard_ms(&a, "h2").is_some_and(|ms| ms < 1000), "h1 still takes in h2's beacons");
        until("h1's lease, no longer renewed, runs out", || !holds(&a, "h2")).await;

        ta.abort();
        tb.abort();
        beating.abort();
        until("the sockets are closed", || {
            std::net::UdpSocket::bind(addr_a).is_ok() && std::net::UdpSocket::bind(addr_b).is_ok()
        })
        .await;
    }

    #[test]
    fn a_pulse_is_recent_only_once_given_and_for_its_limit() {
        let pulse = Pulse::default();
        assert!(!pulse.recent(Duration::from_secs(60)), "none yet");
        pulse.beat();
        assert!(pulse.recent(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!pulse.recent(Duration::from_millis(10)), "older than the limit");
    }
}
