//! The failure detector and the lease: what each peer last said (its signed heartbeats and beacons), judged
//! alive, suspect or dead from its silence, and the acknowledgements that vouch for this host.
//!
//! A heartbeat or beacon is JSON signed with HMAC-SHA256 under the cluster secret. The signature covers the
//! exact text that travels (`SignedHeartbeat::body`), so nothing is re-serialized before checking. Our view of
//! a peer comes only from what it sends us; failing to reach it is logged, never judged.
//!
//! A peer that hears this host's beacon acknowledges it in its own beacons, and so vouches for this host until
//! that beacon's sending plus the lease length ([`Membership::lease`]; [`crate::lease`] adds it up). Time is
//! tokio's clock, so the simulator runs it on virtual time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;

use crate::wire::{Ack, Beacon, Heartbeat, PeerState, PeerStatus, RejectCounters, SignedHeartbeat, VserverSummary};

type HmacSha256 = Hmac<Sha256>;

/// Why a received heartbeat was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatReject {
    /// From a node not in the configuration (HTTP 403).
    #[error("heartbeat from unknown node {0:?}")]
    UnknownNode(String),
    /// The signature does not match the body under the cluster secret (HTTP 403).
    #[error("heartbeat with a bad signature (claims to be from {0:?})")]
    BadSignature(String),
    /// A signature of the right form that does not match, on a body that is not a heartbeat (HTTP 403).
    #[error("heartbeat with a bad signature (and a body that is not a heartbeat)")]
    BadSignatureOnGarbage,
    /// The body is not a heartbeat (HTTP 400).
    #[error("malformed heartbeat: {0}")]
    Malformed(String),
    /// Older than one already accepted from that node (HTTP 409).
    #[error("stale heartbeat from {node:?}: incarnation {incarnation} seq {seq}")]
    Stale {
        /// Sender.
        node: String,
        /// Its incarnation.
        incarnation: u64,
        /// Its sequence number.
        seq: u64,
    },
}

/// The hex HMAC-SHA256 of `body` under `secret`: the signature of a heartbeat whose JSON text is `body`.
pub fn sign_body(secret: &str, body: &str) -> String {
    sign_with(&keyed(secret), body)
}

/// Whether `signature_hex` is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
pub fn verify_body(secret: &str, body: &str, signature_hex: &str) -> bool {
    verify_with(&keyed(secret), body, signature_hex)
}

/// HMAC-SHA256 keyed with `secret`, to be cloned for each message: a [`Membership`] sets its keys up once, not
/// for each of the beacons a voter signs and checks (20 a second for each host it watches).
fn keyed(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length")
}

/// The hex signature of `body` under `key`.
fn sign_with(key: &HmacSha256, body: &str) -> String {
    hex::encode(key.clone().chain_update(body.as_bytes()).finalize().into_bytes())
}

/// Whether `signature_hex` signs `body` under `key` (decoded on the stack, compared in constant time).
fn verify_with(key: &HmacSha256, body: &str, signature_hex: &str) -> bool {
    let mut given = [0u8; 32];
    hex::decode_to_slice(signature_hex, &mut given).is_ok()
        && key.clone().chain_update(body.as_bytes()).verify_slice(&given).is_ok()
}

/// What a [`Membership`] is made from.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This host's name.
    pub node: String,
    /// The peers: name and base URL, in configuration order.
    pub peers: Vec<(String, String)>,
    /// The cluster secret, which signs heartbeats and beacons.
    pub secret: String,
    /// This agent's incarnation (grows at every start).
    pub incarnation: u64,
    /// Silence after which a peer is suspect.
    pub suspect_after: Duration,
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
    /// How long an ack vouches for this host, from the sending of the beacon it acknowledges.
    pub lease_len: Duration,
}

/// What was last heard from a peer: its newest heartbeat or beacon, and the vservers of its newest
/// heartbeat.
struct Heard {
    at: Instant,
    incarnation: u64,
    seq: u64,
    /// The number of the heartbeat `vservers` came with (0: none yet in this incarnation).
    full_seq: u64,
    vservers: Vec<VserverSummary>,
}

/// One configured peer as this node knows it.
struct Peer {
    name: String,
    url: String,
    /// When this table took it in: a peer never heard is unknown until `dead_after` has passed since.
    since: Instant,
    heard: Option<Heard>,
    rtt: Option<Duration>,
    restarts_seen: u64,
    /// Until when this peer's acks vouch for this host (see [`Membership::lease`]).
    lease_until: Option<Instant>,
    /// Until when this host sends no ack of this peer's beacons (promised to a coordinator about to take
    /// the peer's vservers over, see [`Membership::probe`]).
    promised_until: Option<Instant>,
    /// The state last judged by [`Membership::tick`] or [`Membership::receive`], to log transitions once.
    judged: PeerState,
    /// Its last heartbeat said it is in maintenance.
    maintenance: bool,
    /// This host exchanges beacons with it (see [`watch_set`]): its silence is judged.
    watched: bool,
    /// This host sends it heartbeats (see [`heartbeat_set`]).
    heartbeats: bool,
}

impl Peer {
    fn new(name: String, url: String, since: Instant) -> Self {
        Self {
            name,
            url,
            since,
            heard: None,
            rtt: None,
            restarts_seen: 0,
            lease_until: None,
            promised_until: None,
            judged: PeerState::Unknown,
            maintenance: false,
            watched: true,
            heartbeats: true,
        }
    }
}

/// What the lock guards: the peers in configuration order and the refusal counters.
struct Table {
    peers: Vec<Peer>,
    /// Where each peer is in `peers`, by name: every beacon sent and received looks its peer up, so a voter
    /// that scanned the list for each did work that grew with the square of the cluster.
    index: HashMap<String, usize>,
    counters: RejectCounters,
}

impl Table {
    fn new(peers: Vec<Peer>) -> Self {
        let mut table = Self { peers: Vec::new(), index: HashMap::new(), counters: RejectCounters::default() };
        table.replace(peers);
        table
    }

    /// Makes `peers` the peers, and returns the ones they replace.
    fn replace(&mut self, peers: Vec<Peer>) -> Vec<Peer> {
        self.index.clear();
        for (i, p) in peers.iter().enumerate() {
            // The first of a name wins, as a search along the list would find it.
            self.index.entry(p.name.clone()).or_insert(i);
        }
        std::mem::replace(&mut self.peers, peers)
    }

    fn peer(&self, name: &str) -> Option<&Peer> {
        self.index.get(name).map(|&i| &self.peers[i])
    }

    fn peer_mut(&mut self, name: &str) -> Option<&mut Peer> {
        self.index.get(name).map(|&i| &mut self.peers[i])
    }
}

/// A change of a peer's judged state, logged once the lock is released.
struct Transition {
    peer: String,
    to: PeerState,
    silence: Duration,
}

impl Transition {
    fn log(&self) {
        let silence_ms = millis(self.silence);
        match self.to {
            PeerState::Alive => tracing::info!(peer = %self.peer, silence_ms, "peer alive"),
            PeerState::Suspect => tracing::warn!(peer = %self.peer, silence_ms, "peer suspect"),
            PeerState::Dead => tracing::warn!(peer = %self.peer, silence_ms, "peer dead"),
            PeerState::Unknown => tracing::info!(peer = %self.peer, silence_ms, "peer unknown"),
        }
    }
}

/// What this agent knows of its peers, and the numbering of its own heartbeats.
///
/// Shared by the sender task and the API handlers; the lock is never held across an `.await`.
pub struct Membership {
    node: String,
    /// The cluster secret's key, which signs this node's heartbeats and beacons.
    secret: HmacSha256,
    /// Further secrets' keys whose signatures are accepted (a rotation under way).
    also_accepted: Vec<HmacSha256>,
    incarnation: u64,
    seq: AtomicU64,
    suspect_after: Duration,
    dead_after: Duration,
    table: Mutex<Table>,
    /// How long an ack vouches for this host, from the sending of the beacon it acknowledges.
    lease_len: Duration,
    /// This node's recent beacons (number, when sent), newest last, to date the acks that come back.
    sent: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    /// This node stands outside fencing (maintenance), as its heartbeats tell the peers.
    covered: std::sync::atomic::AtomicBool,
    /// Counts the changes of the watched peers or their URLs (see [`Membership::watched_generation`]).
    watched_changes: AtomicU64,
}

/// The peers a host exchanges heartbeats and beacons with, so that its work does not grow with the cluster:
/// a voter watches every host (`None`: it grants their leases, and the coordinator is a voter), a host that
/// does not vote watches the voters (its lease) and its partners (the hosts its vservers are replicated
/// with, whose liveness its syncs and migrates ask), whatever the number of hosts.
pub fn watch_set<'a>(
    node: &str,
    voters: &'a [String],
    partners: impl IntoIterator<Item = &'a str>,
) -> Option<BTreeSet<String>> {
    if voters.iter().any(|v| v == node) {
        return None;
    }
    Some(heartbeat_set(node, voters, partners))
}

/// The peers a host sends its heartbeats (HTTP, with its vservers' states) to: the voters (the coordinator is
/// one, and reads every host's vservers from them) and its partners. A voter sends none to the other hosts it
/// watches: its beacons prove it alive to them and carry their leases, and they need nothing else from it.
pub fn heartbeat_set<'a>(
    node: &str,
    voters: &'a [String],
    partners: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let peers = voters.iter().map(String::as_str).chain(partners).filter(|p| *p != node);
    peers.map(str::to_string).collect()
}

/// The largest beacon a peer can send: one ack, names of at most 64 bytes, numbers of at most 20 digits, and
/// the signature (a beacon of an earlier release, which acknowledged every peer, may be larger: the receiving
/// buffer holds any datagram).
pub const MAX_BEACON: usize = 512;

/// The most sent beacons remembered for dating acks: each is kept for the lease length (an older one's ack
/// vouches for nothing any more), which at 10 beacons a second to each of a thousand peers and the default
/// lease is 18,000; this bound only caps the memory (4 MiB) against a misconfiguration.
const SENT_KEPT: usize = 1 << 18;

impl Membership {
    /// A table of the configured peers, none heard yet.
    pub fn new(config: MembershipConfig) -> Self {
        let born = Instant::now();
        let peers = config.peers.into_iter().map(|(name, url)| Peer::new(name, url, born)).collect();
        Self {
            node: config.node,
            secret: keyed(&config.secret),
            also_accepted: Vec::new(),
            incarnation: config.incarnation,
            seq: AtomicU64::new(0),
            suspect_after: config.suspect_after,
            dead_after: config.dead_after,
            table: Mutex::new(Table::new(peers)),
            lease_len: config.lease_len,
            sent: Mutex::new(std::collections::VecDeque::new()),
            covered: std::sync::atomic::AtomicBool::new(false),
            watched_changes: AtomicU64::new(0),
        }
    }

    /// Every configured peer, with its state judged now, in configuration order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers_where(Instant::now(), |_| true)
    }

    /// The peers not heard for at least `at_least` now, as [`Membership::peers`] gives them (its
    /// `last_heard_ms`, or `never_heard` for a peer never heard), and only those: the coordinator looks for them
    /// ten times a second, and copying every peer each time made its work grow with the cluster.
    pub fn silent_peers(&self, at_least: Duration, never_heard: Duration) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers_where(now, |p| {
            let silence = p.heard.as_ref().map(|h| Duration::from_millis(millis(now.saturating_duration_since(h.at))));
            silence.unwrap_or(never_heard) >= at_least
        })
    }

    /// The peers `keep` keeps, with their state judged at `now`, in configuration order.
    fn peers_where(&self, now: Instant, keep: impl Fn(&Peer) -> bool) -> Vec<PeerStatus> {
        let table = self.lock();
        table
            .peers
            .iter()
            .filter(|p| keep(p))
            .map(|p| PeerStatus {
                name: p.name.clone(),
                url: p.url.clone(),
                state: self.judge(p, now).0,
                last_heard_ms: p.heard.as_ref().map(|h| millis(now.saturating_duration_since(h.at))),
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                incarnation: p.heard.as_ref().map(|h| h.incarnation),
                restarts_seen: p.restarts_seen,
                vservers: p.heard.as_ref().map(|h| h.vservers.clone()).unwrap_or_default(),
                maintenance: p.maintenance,
                watched: p.watched,
                heartbeats: p.watched && p.heartbeats,
            })
            .collect()
    }

    /// Watches only the peers of `watched` (see [`watch_set`]), or every peer (`None`), and sends heartbeats
    /// to those of them in `heartbeats` (see [`heartbeat_set`]), or to all (`None`). A peer no longer watched
    /// is not judged by its silence any more: it shows as unknown once it has been silent for the suspicion
    /// threshold, never suspect or dead.
    pub fn watch(&self, watched: Option<&BTreeSet<String>>, heartbeats: Option<&BTreeSet<String>>) {
        let mut table = self.lock();
        let mut changed = false;
        for peer in &mut table.peers {
            let was = peer.watched;
            peer.watched = watched.is_none_or(|w| w.contains(&peer.name));
            peer.heartbeats = heartbeats.is_none_or(|h| h.contains(&peer.name));
            changed |= peer.watched != was;
        }
        if changed {
            self.watched_changes.fetch_add(1, Ordering::Release);
        }
    }

    /// Makes `peers` (name, base URL) the peers of this table, in that order: a peer that stays keeps what was
    /// heard of it (its URL follows), a new one starts unheard (unknown until `dead_after` has passed), and
    /// one no longer listed is forgotten, its acks with it. A new peer is watched and sent heartbeats until
    /// [`Membership::watch`] says otherwise. Whether anything changed.
    pub fn set_peers(&self, peers: &[(String, String)]) -> bool {
        let mut table = self.lock();
        let same = table.peers.len() == peers.len()
            && table.peers.iter().zip(peers).all(|(p, (name, url))| p.name == *name && p.url == *url);
        if same {
            return false;
        }
        let now = Instant::now();
        let mut old: BTreeMap<String, Peer> =
            table.replace(Vec::new()).into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut fresh = Vec::with_capacity(peers.len());
        for (name, url) in peers.iter().filter(|(name, _)| *name != self.node) {
            let peer = match old.remove(name) {
                Some(mut p) => {
                    p.url.clone_from(url);
                    p
                }
                None => {
                    tracing::info!(peer = %name, %url, "a new peer");
                    Peer::new(name.clone(), url.clone(), now)
                }
            };
            fresh.push(peer);
        }
        table.replace(fresh);
        for gone in old.into_values() {
            tracing::info!(peer = %gone.name, "no longer a peer");
        }
        self.watched_changes.fetch_add(1, Ordering::Release);
        true
    }

    /// A number that changes whenever the list [`Membership::watched`] gives may have changed: read before that
    /// list, it tells a sender that keeps a copy when to read it again, instead of copying it for every round.
    pub fn watched_generation(&self) -> u64 {
        self.watched_changes.load(Ordering::Acquire)
    }

    /// The peers this host sends its beacons to (name, URL), in configuration order.
    pub fn watched(&self) -> Vec<(String, String)> {
        self.lock().peers.iter().filter(|p| p.watched).map(|p| (p.name.clone(), p.url.clone())).collect()
    }

    /// The peers this host sends its heartbeats to (name, URL), in configuration order.
    pub fn heartbeat_targets(&self) -> Vec<(String, String)> {
        let table = self.lock();
        table.peers.iter().filter(|p| p.watched && p.heartbeats).map(|p| (p.name.clone(), p.url.clone())).collect()
    }

    /// The incarnation `name` was last heard in (a new one: it restarted, and knows nothing it was told).
    pub fn incarnation_of(&self, name: &str) -> Option<u64> {
        self.lock().peer(name).and_then(|p| p.heard.as_ref().map(|h| h.incarnation))
    }

    /// Counters of refused heartbeats.
    pub fn counters(&self) -> RejectCounters {
        self.lock().counters
    }

    /// Checks and records a received heartbeat: parsed, then its signature checked, then its sender looked up,
    /// then its freshness. Every refusal is counted and logged.
    pub fn receive(&self, signed: &SignedHeartbeat) -> Result<(), HeartbeatReject> {
        let result = self.accept(signed);
        if let Err(reject) = &result {
            {
                let mut table = self.lock();
                let counters = &mut table.counters;
                match reject {
                    HeartbeatReject::UnknownNode(_) => counters.unknown_node += 1,
                    HeartbeatReject::BadSignature(_) | HeartbeatReject::BadSignatureOnGarbage => {
                        counters.bad_signature += 1
                    }
                    HeartbeatReject::Malformed(_) | HeartbeatReject::Stale { .. } => counters.malformed_or_stale += 1,
                }
            }
            tracing::warn!(error = %reject, "heartbeat refused");
        }
        result
    }

    /// Counts and logs a request to the heartbeat endpoint whose body is not even a signed heartbeat.
    pub fn refuse_malformed(&self, reason: String) -> HeartbeatReject {
        self.lock().counters.malformed_or_stale += 1;
        let reject = HeartbeatReject::Malformed(reason);
        tracing::warn!(error = %reject, "heartbeat refused");
        reject
    }

    /// Whether this node stands outside fencing (maintenance): said in its next heartbeats.
    pub fn set_covered(&self, covered: bool) {
        self.covered.store(covered, std::sync::atomic::Ordering::Relaxed);
    }

    /// Accepts signatures made with these secrets too (the further lines of the secret file).
    pub fn also_accept(&mut self, secrets: &[String]) {
        self.also_accepted = secrets.iter().map(|s| keyed(s)).collect();
    }

    /// Whether `signature` (hex) signs `body` under the cluster secret or one still accepted.
    fn signed_by_us(&self, body: &str, signature: &str) -> bool {
        std::iter::once(&self.secret).chain(&self.also_accepted).any(|key| verify_with(key, body, signature))
    }

    /// A signature of the right form (64 hex digits) is judged before the body: one that does not match is
    /// refused as such whatever the body. A signature of another form cannot match, and the body is judged first.
    fn accept(&self, signed: &SignedHeartbeat) -> Result<(), HeartbeatReject> {
        let signed_by_us = self.signed_by_us(&signed.body, &signed.signature);
        let well_formed = signed.signature.len() == 64 && signed.signature.bytes().all(|b| b.is_ascii_hexdigit());
        let hb: Heartbeat = match serde_json::from_str(&signed.body) {
            Ok(hb) => hb,
            Err(_) if well_formed && !signed_by_us => return Err(HeartbeatReject::BadSignatureOnGarbage),
            Err(e) => return Err(HeartbeatReject::Malformed(e.to_string())),
        };
        if !signed_by_us {
            return Err(HeartbeatReject::BadSignature(hb.node));
        }
        let (node, maintenance) = (hb.node.clone(), hb.maintenance);
        self.heard(&hb.node, hb.incarnation, hb.seq, Some(hb.vservers))?;
        if let Some(peer) = self.lock().peer_mut(&node) {
            peer.maintenance = maintenance;
        }
        Ok(())
    }

    /// Checks and records a beacon received by UDP. A beacon no newer than what was heard already (the HTTP
    /// heartbeat of the same number came first, or a datagram came twice) is ignored: `Ok(false)`.
    /// Refusals are counted; they are logged at debug level only, since anyone can send a datagram.
    pub fn receive_beacon(&self, datagram: &[u8]) -> Result<bool, HeartbeatReject> {
        let result = (|| {
            let signed: SignedHeartbeat =
                serde_json::from_slice(datagram).map_err(|e| HeartbeatReject::Malformed(e.to_string()))?;
            let b: Beacon =
                serde_json::from_str(&signed.body).map_err(|e| HeartbeatReject::Malformed(e.to_string()))?;
            if !self.signed_by_us(&signed.body, &signed.signature) {
                return Err(HeartbeatReject::BadSignature(b.node));
            }
            let newer = self.heard(&b.node, b.incarnation, b.seq, None);
            if newer.is_ok() || matches!(newer, Err(HeartbeatReject::Stale { .. })) {
                self.take_acks(&b.node, &b.acks);
            }
            newer
        })();
        match result {
            Err(HeartbeatReject::Stale { .. }) => Ok(false),
            Err(reject) => {
                let mut table = self.lock();
                match &reject {
                    HeartbeatReject::UnknownNode(_) => table.counters.unknown_node += 1,
                    HeartbeatReject::BadSignature(_) => table.counters.bad_signature += 1,
                    _ => table.counters.malformed_or_stale += 1,
                }
                drop(table);
                tracing::debug!(error = %reject, "beacon refused");
                Err(reject)
            }
            Ok(newer) => Ok(newer),
        }
    }

    /// Records that `node` said (`incarnation`, `seq`), with its vservers for a heartbeat (`None` for a
    /// beacon). A heartbeat is stale when not newer than the last heartbeat (a beacon of the same number
    /// may have come first: the heartbeat still brings the vservers); a beacon when not newer than
    /// anything heard. Returns whether it was newer than anything heard (it then counts as liveness).
    fn heard(
        &self,
        node: &str,
        incarnation: u64,
        seq: u64,
        vservers: Option<Vec<VserverSummary>>,
    ) -> Result<bool, HeartbeatReject> {
        let now = Instant::now();
        let mut restarted = false;
        let (newer, transition) = {
            let mut table = self.lock();
            let Some(peer) = table.peer_mut(node) else {
                return Err(HeartbeatReject::UnknownNode(node.to_string()));
            };
            let stale = match &peer.heard {
                None => false,
                Some(known) => {
                    let against =
                        if vservers.is_some() && incarnation == known.incarnation { known.full_seq } else { known.seq };
                    incarnation < known.incarnation || (incarnation == known.incarnation && seq <= against)
                }
            };
            if stale {
                return Err(HeartbeatReject::Stale { node: node.to_string(), incarnation, seq });
            }
            let newer = peer.heard.as_ref().is_none_or(|k| (incarnation, seq) > (k.incarnation, k.seq));
            if let Some(known) = &peer.heard {
                if incarnation > known.incarnation {
                    peer.restarts_seen += 1;
                    restarted = true;
                }
            }
            let silence = peer
                .heard
                .as_ref()
                .map_or(now.saturating_duration_since(peer.since), |h| now.saturating_duration_since(h.at));
            let heard =
                peer.heard.get_or_insert(Heard { at: now, incarnation, seq, full_seq: 0, vservers: Vec::new() });
            if restarted {
                heard.full_seq = 0;
            }
            if newer {
                heard.at = now;
                heard.incarnation = incarnation;
                heard.seq = seq;
            }
            if let Some(v) = vservers {
                heard.full_seq = seq;
                heard.vservers = v;
            }
            let changed = newer && peer.judged != PeerState::Alive;
            if newer {
                peer.judged = PeerState::Alive;
            }
            (newer, changed.then(|| Transition { peer: peer.name.clone(), to: PeerState::Alive, silence }))
        };
        if restarted {
            tracing::info!(peer = %node, incarnation, "peer restarted");
        }
        if let Some(t) = transition {
            t.log();
        }
        Ok(newer)
    }

    /// Judges every peer now and logs the ones whose state changed since the last judgment (info when a peer
    /// comes alive, warn when it turns suspect or dead). The sender calls it at every interval.
    pub fn tick(&self) {
        let now = Instant::now();
        let transitions: Vec<Transition> = {
            let mut table = self.lock();
            let mut transitions = Vec::new();
            for peer in &mut table.peers {
                let (state, silence) = self.judge(peer, now);
                if state != peer.judged {
                    peer.judged = state;
                    transitions.push(Transition { peer: peer.name.clone(), to: state, silence });
                }
            }
            transitions
        };
        transitions.iter().for_each(Transition::log);
    }

    /// This node's next heartbeat (the sequence number grows).
    pub fn next_heartbeat(&self, vservers: Vec<VserverSummary>) -> Heartbeat {
        Heartbeat {
            node: self.node.clone(),
            incarnation: self.incarnation,
            seq: self.number(),
            sent_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0),
            vservers,
            maintenance: self.covered.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// This node's next beacon to `peer`, signed (the same numbering as its heartbeats), as the datagram to
    /// send. It acknowledges `peer` alone (if heard within the lease length and not promised otherwise): a peer
    /// reads only its own ack, so a beacon's size does not grow with the cluster (at most [`MAX_BEACON`]).
    pub fn next_beacon(&self, peer: &str) -> Vec<u8> {
        let now = Instant::now();
        let acks = {
            let table = self.lock();
            table
                .peer(peer)
                .into_iter()
                .filter(|p| p.promised_until.is_none_or(|t| now >= t))
                .filter_map(|p| p.heard.as_ref().map(|h| (p, h)))
                .filter(|(_, h)| now.saturating_duration_since(h.at) < self.lease_len)
                .map(|(p, h)| Ack { node: p.name.clone(), incarnation: h.incarnation, seq: h.seq })
                .collect()
        };
        let seq = self.number();
        let b = Beacon { node: self.node.clone(), incarnation: self.incarnation, seq, acks };
        let body = serde_json::to_string(&b).expect("a beacon always serializes to JSON");
        let signature = sign_with(&self.secret, &body);
        serde_json::to_vec(&SignedHeartbeat { body, signature }).expect("a signed beacon serializes")
    }

    /// Signs a heartbeat with the cluster secret: the JSON is written once and the signature covers that text.
    pub fn sign(&self, hb: &Heartbeat) -> SignedHeartbeat {
        let body = serde_json::to_string(hb).expect("a heartbeat always serializes to JSON");
        let signature = sign_with(&self.secret, &body);
        SignedHeartbeat { body, signature }
    }

    /// The next number of a heartbeat or beacon, remembered with the time (numbers enter the queue in order).
    fn number(&self) -> u64 {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        while sent.front().is_some_and(|(_, at)| now.saturating_duration_since(*at) >= self.lease_len)
            || sent.len() >= SENT_KEPT
        {
            sent.pop_front();
        }
        sent.push_back((seq, now));
        seq
    }

    /// Takes the acks of a beacon from `from`: an ack of one of this node's beacons (this incarnation) makes
    /// `from` vouch for this node until that beacon's sending plus the lease length.
    fn take_acks(&self, from: &str, acks: &[Ack]) {
        let Some(ack) = acks.iter().find(|a| a.node == self.node && a.incarnation == self.incarnation) else {
            return;
        };
        let sent_at = {
            let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            // Numbers grow along the queue (heartbeats take numbers too, so there are gaps).
            match sent.binary_search_by_key(&ack.seq, |(seq, _)| *seq) {
                Ok(i) => Some(sent[i].1),
                Err(_) => None,
            }
        };
        let Some(sent_at) = sent_at else { return };
        let until = sent_at + self.lease_len;
        if let Some(peer) = self.lock().peer_mut(from) {
            if peer.lease_until.is_none_or(|t| t < until) {
                peer.lease_until = Some(until);
            }
        }
    }

    /// The peers that vouch for this node at `now` (they acknowledged a beacon sent less than the lease
    /// length ago), each with when its word runs out. A peer's vouching ends, at the latest, a lease length
    /// after it last heard this node: by then this node has counted it out, whatever the network did.
    pub fn lease(&self, now: Instant) -> Vec<(String, Instant)> {
        self.lock()
            .peers
            .iter()
            .filter_map(|p| p.lease_until.filter(|t| *t > now).map(|t| (p.name.clone(), t)))
            .collect()
    }

    /// [`Membership::lease`] from the peers named in `among` alone (the voters, whose word is all a lease
    /// counts): what the lease watch asks 20 times a second, without a name copied for every other host.
    pub fn lease_among(&self, among: &[String], now: Instant) -> Vec<(String, Instant)> {
        let table = self.lock();
        among
            .iter()
            .filter_map(|name| table.peer(name))
            .filter_map(|p| p.lease_until.filter(|t| *t > now).map(|t| (p.name.clone(), t)))
            .collect()
    }

    /// A coordinator's question before taking `host`'s vservers over: how long has this node not heard it?
    /// If at least `silent`, this node also stops acknowledging `host`'s beacons for `promise`, so that
    /// `host` cannot win its lease back from this node while the coordinator decides. `None`: not a peer.
    pub fn probe(&self, host: &str, silent: Duration, promise: Duration) -> Option<(Duration, bool)> {
        let now = Instant::now();
        let mut table = self.lock();
        let peer = table.peer_mut(host)?;
        let silence = now.saturating_duration_since(peer.heard.as_ref().map_or(peer.since, |h| h.at));
        let promised = silence >= silent;
        if promised {
            let until = now + promise;
            if peer.promised_until.is_none_or(|t| t < until) {
                peer.promised_until = Some(until);
            }
        }
        Some((silence, promised))
    }

    /// Records the round-trip time of a heartbeat to `peer` (shown in the status; not used for judging).
    pub fn record_rtt(&self, peer: &str, rtt: Duration) {
        if let Some(p) = self.lock().peer_mut(peer) {
            p.rtt = Some(rtt);
        }
    }

    /// A peer's state and its silence at `now`: since its last heartbeat, or since this table was made when
    /// it was never heard.
    fn judge(&self, peer: &Peer, now: Instant) -> (PeerState, Duration) {
        match &peer.heard {
            None if !peer.watched => (PeerState::Unknown, now.saturating_duration_since(peer.since)),
            Some(heard) if !peer.watched => {
                let silence = now.saturating_duration_since(heard.at);
                (if silence < self.suspect_after { PeerState::Alive } else { PeerState::Unknown }, silence)
            }
            None => {
                let silence = now.saturating_duration_since(peer.since);
                let state = if silence < self.dead_after { PeerState::Unknown } else { PeerState::Dead };
                (state, silence)
            }
            Some(heard) => {
                let silence = now.saturating_duration_since(heard.at);
                let state = if silence < self.suspect_after {
                    PeerState::Alive
                } else if silence < self.dead_after {
                    PeerState::Suspect
                } else {
                    PeerState::Dead
                };
                (state, silence)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a panic elsewhere does not spoil it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VserverState;

    const SECRET: &str = "0123456789abcdef-cluster";

    /// h1, with peers h2 and h3: default thresholds (suspect 750, dead 1500 ms) and a lease of `lease_ms`.
    fn config(lease_ms: u64) -> MembershipConfig {
        MembershipConfig {
            node: "h1".into(),
            peers: vec![("h2".into(), "http://127.0.0.1:7071".into()), ("h3".into(), "http://127.0.0.1:7072".into())],
            secret: SECRET.into(),
            incarnation: 1,
            suspect_after: Duration::from_millis(750),
            dead_after: Duration::from_millis(1500),
            lease_len: Duration::from_millis(lease_ms),
        }
    }

    /// Small thresholds for tests that wait: suspect 50, dead 150 ms.
    fn fast() -> MembershipConfig {
        MembershipConfig {
            suspect_after: Duration::from_millis(50),
            dead_after: Duration::from_millis(150),
            ..config(1800)
        }
    }

    fn membership() -> Membership {
        Membership::new(config(1800))
    }

    fn heartbeat(node: &str, incarnation: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            incarnation,
            seq,
            sent_unix_ms: 0,
            vservers: vec![VserverSummary { name: "web".into(), state: VserverState::Running }],
            maintenance: false,
        }
    }

    fn signed(hb: &Heartbeat) -> SignedHeartbeat {
        let body = serde_json::to_string(hb).unwrap();
        SignedHeartbeat { signature: sign_body(SECRET, &body), body }
    }

    fn state_of(m: &Membership, name: &str) -> PeerStatus {
        m.peers().into_iter().find(|p| p.name == name).unwrap()
    }

    /// The coordinator's look for silent peers copies those alone, each as `peers` gives it: a peer heard
    /// lately is left out, one silent for the threshold or longer is in, and one never heard is in when the
    /// silence the caller gives it (its agent's run so far) reaches the threshold.
    #[tokio::test(start_paused = true)]
    async fn only_the_peers_silent_long_enough_are_copied_each_as_the_status_has_it() {
        let peers = ["h2", "h3", "h4"].map(|h| (h.to_string(), format!("http://{h}:7070"))).to_vec();
        let m = Membership::new(MembershipConfig { peers, ..config(1800) });
        m.receive(&signed(&heartbeat("h2", 1, 1))).unwrap();
        m.receive(&signed(&heartbeat("h3", 1, 1))).unwrap();
        tokio::time::advance(Duration::from_millis(1000)).await;
        m.receive(&signed(&heartbeat("h3", 1, 2))).unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        // h2 silent 1,500 ms, h3 500 ms, h4 never heard.
        let names = |silent: Vec<PeerStatus>| silent.into_iter().map(|p| p.name).collect::<Vec<_>>();
        let ms = Duration::from_millis;
        assert_eq!(names(m.silent_peers(ms(1000), ms(999))), ["h2"]);
        assert_eq!(names(m.silent_peers(ms(1000), ms(1000))), ["h2", "h4"]);
        assert_eq!(names(m.silent_peers(ms(500), Duration::ZERO)), ["h2", "h3"]);
        assert_eq!(names(m.silent_peers(ms(1500), Duration::ZERO)), ["h2"]);
        assert!(m.silent_peers(ms(1501), Duration::ZERO).is_empty());
        assert_eq!(m.silent_peers(Duration::ZERO, Duration::ZERO), m.peers());
    }

    /// The beacons' thread keeps its copy of the watched peers while this number stays: it moves when a peer
    /// is watched or no longer is, and when the peers or their URLs change, and not otherwise.
    #[test]
    fn the_watched_generation_moves_when_the_watched_peers_may_have_changed_and_only_then() {
        let m = membership();
        let urls = |m: &Membership| m.watched().into_iter().map(|(n, u)| format!("{n} {u}")).collect::<Vec<_>>();
        let at_start = m.watched_generation();
        m.watch(None, None);
        assert_eq!(m.watched_generation(), at_start, "every peer was watched already");
        let h2 = BTreeSet::from(["h2".to_string()]);
        m.watch(Some(&h2), None);
        let h2_only = m.watched_generation();
        assert_ne!(h2_only, at_start);
        assert_eq!(urls(&m), ["h2 http://127.0.0.1:7071"]);
        m.watch(Some(&h2), Some(&BTreeSet::new()));
        assert_eq!(m.watched_generation(), h2_only, "only the heartbeats' targets changed");
        let moved =
            [("h2".to_string(), "http://127.0.0.2:7071".to_string()), ("h3".into(), "http://127.0.0.1:7072".into())];
        assert!(m.set_peers(&moved));
        let after_move = m.watched_generation();
        assert_ne!(after_move, h2_only, "h2's URL changed");
        assert!(!m.set_peers(&moved));
        assert_eq!(m.watched_generation(), after_move, "nothing changed");
        m.watch(None, None);
        assert_ne!(m.watched_generation(), after_move, "h3 is watched again");
        assert_eq!(urls(&m), ["h2 http://127.0.0.2:7071", "h3 http://127.0.0.1:7072"]);
    }

    #[test]
    fn a_signature_verifies_and_a_flipped_byte_does_not() {
        let body = r#"{"node":"h2"}"#;
        let sig = sign_body(SECRET, body);
        assert_eq!(sig.len(), 64);
        assert!(verify_body(SECRET, body, &sig));
        assert!(!verify_body(SECRET, &body.replace("h2", "h3"), &sig));
        assert!(!verify_body("another-secret-of-16+", body, &sig));
        let mut flipped = hex::decode(&sig).unwrap();
        flipped[7] ^= 0x01;
        assert!(!verify_body(SECRET, body, &hex::encode(flipped)));
        assert!(!verify_body(SECRET, body, "not hex"));
        assert!(!verify_body(SECRET, body, &sig[..62]));
    }

    #[test]
    fn our_heartbeats_count_up_and_are_signed_over_their_exact_text() {
        let m = membership();
        let first = m.next_heartbeat(vec![]);
        let second = m.next_heartbeat(vec![]);
        assert_eq!((first.node.as_str(), first.incarnation, first.seq, second.seq), ("h1", 1, 1, 2));
        assert!(second.sent_unix_ms > 0);
        let s = m.sign(&second);
        assert!(verify_body(SECRET, &s.body, &s.signature));
        assert_eq!(serde_json::from_str::<Heartbeat>(&s.body).unwrap(), second);
    }

    fn beacon(node: &str, incarnation: u64, seq: u64, secret: &str) -> Vec<u8> {
        let body = serde_json::to_string(&Beacon { node: node.into(), incarnation, seq, acks: vec![] }).unwrap();
        serde_json::to_vec(&SignedHeartbeat { signature: sign_body(secret, &body), body }).unwrap()
    }

    /// A beacon from `node` acknowledging `acks` (peer, incarnation, seq).
    fn acking(node: &str, seq: u64, acks: &[(&str, u64, u64)]) -> Vec<u8> {
        let acks = acks.iter().map(|(n, i, s)| Ack { node: n.to_string(), incarnation: *i, seq: *s }).collect();
        let body = serde_json::to_string(&Beacon { node: node.into(), incarnation: 1, seq, acks }).unwrap();
        serde_json::to_vec(&SignedHeartbeat { signature: sign_body(SECRET, &body), body }).unwrap()
    }

    /// The acks in the beacon this node sends next.
    fn acks_sent(m: &Membership) -> Vec<Ack> {
        let signed: SignedHeartbeat = serde_json::from_slice(&m.next_beacon("h2")).unwrap();
        serde_json::from_str::<Beacon>(&signed.body).unwrap().acks
    }

    #[test]
    fn an_ack_of_our_beacon_vouches_for_us_from_its_sending_for_the_lease_length() {
        let m = Membership::new(MembershipConfig { incarnation: 3, ..config(400) });
        assert!(m.lease(Instant::now()).is_empty(), "no lease before any ack");
        let sent_at = Instant::now();
        let ours: SignedHeartbeat = serde_json::from_slice(&m.next_beacon("h2")).unwrap();
        let seq = serde_json::from_str::<Beacon>(&ours.body).unwrap().seq;
        // An ack of another incarnation, or of a number we never sent, vouches for nothing.
        m.receive_beacon(&acking("h2", 1, &[("h1", 2, seq)])).unwrap();
        m.receive_beacon(&acking("h2", 2, &[("h1", 3, seq + 1000)])).unwrap();
        assert!(m.lease(Instant::now()).is_empty());
        m.receive_beacon(&acking("h2", 3, &[("h1", 3, seq)])).unwrap();
        let lease = m.lease(Instant::now());
        assert_eq!(lease.len(), 1);
        assert_eq!(lease[0].0, "h2");
        let until = lease[0].1;
        assert!(until >= sent_at + Duration::from_millis(400) && until <= Instant::now() + Duration::from_millis(400));
        assert!(m.lease(until).is_empty(), "over at the sending plus the lease length");
        // Asked of the voters alone: the same word from the peers named, nothing from the others.
        let now = Instant::now();
        assert_eq!(m.lease_among(&["h3".into(), "h2".into()], now), m.lease(now));
        assert!(m.lease_among(&["h3".into()], now).is_empty(), "h3 never acknowledged us");
        assert!(m.lease_among(&["h2".into()], until).is_empty());
    }

    #[test]
    fn an_ack_is_dated_however_many_beacons_a_voter_sent_since() {
        // A voter of a thousand hosts sends 10,000 beacons a second: an ack that comes back 300 ms after its
        // beacon, 3,000 beacons later, still vouches (the sent beacons are kept for the lease length).
        let m = Membership::new(MembershipConfig { incarnation: 3, ..config(1800) });
        let ours: SignedHeartbeat = serde_json::from_slice(&m.next_beacon("h2")).unwrap();
        let seq = serde_json::from_str::<Beacon>(&ours.body).unwrap().seq;
        for _ in 0..3000 {
            m.number();
        }
        m.receive_beacon(&acking("h2", 1, &[("h1", 3, seq)])).unwrap();
        assert_eq!(m.lease(Instant::now()).len(), 1, "the ack of an early beacon vouches");
    }

    #[test]
    fn we_ack_peers_heard_lately_but_not_one_we_promised_a_coordinator_about() {
        let m = Membership::new(config(400));
        m.receive_beacon(&acking("h2", 9, &[])).unwrap();
        let acks = acks_sent(&m);
        assert_eq!(acks, vec![Ack { node: "h2".into(), incarnation: 1, seq: 9 }]);
        // A probe about h2, heard just now: no promise. About h3, never heard: silent long enough, promised.
        let (silence, promised) = m.probe("h2", Duration::from_millis(200), Duration::from_secs(5)).unwrap();
        assert!(!promised && silence < Duration::from_millis(200));
        assert!(m.probe("h3", Duration::ZERO, Duration::from_secs(5)).unwrap().1);
        assert!(m.probe("h9", Duration::ZERO, Duration::from_secs(5)).is_none(), "not a peer");
        // Promised about h2: heard again, still not acknowledged while the promise lasts.
        assert!(m.probe("h2", Duration::ZERO, Duration::from_millis(300)).unwrap().1);
        m.receive_beacon(&acking("h2", 10, &[])).unwrap();
        assert!(acks_sent(&m).is_empty());
        std::thread::sleep(Duration::from_millis(350));
        m.receive_beacon(&acking("h2", 11, &[])).unwrap();
        assert_eq!(acks_sent(&m).len(), 1, "acknowledged again once the promise is over");
    }

    #[test]
    fn a_beacon_proves_a_peer_alive_and_its_heartbeat_still_brings_the_vservers() {
        let m = membership();
        assert_eq!(m.receive_beacon(&beacon("h2", 7, 5, SECRET)), Ok(true));
        let h2 = state_of(&m, "h2");
        assert_eq!((h2.state, h2.incarnation), (PeerState::Alive, Some(7)));
        assert!(h2.vservers.is_empty(), "a beacon carries no vservers");
        // The same datagram twice, or an older one: ignored, not counted as a refusal.
        assert_eq!(m.receive_beacon(&beacon("h2", 7, 5, SECRET)), Ok(false));
        assert_eq!(m.receive_beacon(&beacon("h2", 7, 4, SECRET)), Ok(false));
        // The HTTP heartbeat of the number the beacon already told: not news, but its vservers are kept.
        m.receive(&signed(&heartbeat("h2", 7, 5))).unwrap();
        assert_eq!(state_of(&m, "h2").vservers[0].name, "web");
        // A replay of that heartbeat is stale, as before.
        assert!(matches!(m.receive(&signed(&heartbeat("h2", 7, 5))), Err(HeartbeatReject::Stale { .. })));
        // A newer incarnation by beacon is a restart.
        assert_eq!(m.receive_beacon(&beacon("h2", 8, 1, SECRET)), Ok(true));
        assert_eq!(state_of(&m, "h2").restarts_seen, 1);
        m.receive(&signed(&heartbeat("h2", 8, 1))).unwrap();
        assert_eq!(m.counters().malformed_or_stale, 1, "only the replayed heartbeat counted");
    }

    #[test]
    fn bad_beacons_are_refused_and_counted() {
        let m = membership();
        assert!(matches!(
            m.receive_beacon(&beacon("h2", 1, 1, "not the secret")),
            Err(HeartbeatReject::BadSignature(_))
        ));
        assert!(matches!(m.receive_beacon(&beacon("h9", 1, 1, SECRET)), Err(HeartbeatReject::UnknownNode(_))));
        assert!(matches!(m.receive_beacon(b"\x00garbage"), Err(HeartbeatReject::Malformed(_))));
        // A heartbeat's body is not a beacon.
        let hb = serde_json::to_vec(&signed(&heartbeat("h2", 1, 1))).unwrap();
        assert!(matches!(m.receive_beacon(&hb), Err(HeartbeatReject::Malformed(_))));
        let c = m.counters();
        assert_eq!((c.bad_signature, c.unknown_node, c.malformed_or_stale), (1, 1, 2));
        assert_eq!(state_of(&m, "h2").state, PeerState::Unknown);
    }

    #[test]
    fn a_beacon_acknowledges_its_recipient_alone_and_its_size_does_not_grow_with_the_cluster() {
        // The largest valid beacon: names of 64 bytes, the largest numbers, an ack.
        let (long_a, long_b) = ("a".repeat(64), "b".repeat(64));
        let m = Membership::new(MembershipConfig {
            node: long_a.clone(),
            peers: (0..200)
                .map(|i| (format!("{}{i:03}", &long_b[..61]), format!("http://10.0.{}.{}:7070", i / 250, i % 250)))
                .collect(),
            incarnation: u64::MAX,
            ..config(1800)
        });
        let peers: Vec<String> = (0..200).map(|i| format!("{}{i:03}", &long_b[..61])).collect();
        for p in &peers {
            let b = acking(p, u64::MAX - 1, &[]);
            let _ = m.receive_beacon(&b);
        }
        let datagram = m.next_beacon(&peers[7]);
        assert!(datagram.len() <= MAX_BEACON, "{} bytes: {}", datagram.len(), String::from_utf8_lossy(&datagram));
        let signed: SignedHeartbeat = serde_json::from_slice(&datagram).unwrap();
        let acks = serde_json::from_str::<Beacon>(&signed.body).unwrap().acks;
        assert_eq!(acks.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(), [peers[7].as_str()]);

        // A beacon of an earlier release acknowledged every peer: one for 200 peers (about 20 KB) is still taken,
        // and its ack of this node found among the others.
        let ours = membership();
        let _ = ours.next_beacon("h2");
        let seq = ours.next_heartbeat(Vec::new()).seq - 1;
        let mut everyone: Vec<(String, u64, u64)> = peers.iter().map(|p| (p.clone(), 1, 5)).collect();
        everyone.push(("h1".into(), 1, seq));
        let everyone: Vec<(&str, u64, u64)> = everyone.iter().map(|(n, i, s)| (n.as_str(), *i, *s)).collect();
        let legacy = acking("h2", 3, &everyone);
        assert!(legacy.len() > 16_000, "{}", legacy.len());
        assert!(ours.receive_beacon(&legacy).is_ok());
        assert!(ours.lease(Instant::now()).iter().any(|(p, _)| p == "h2"), "h2's ack of our beacon vouches for us");
    }

    #[test]
    fn our_beacons_and_heartbeats_share_one_numbering() {
        let m = membership();
        let first = m.next_heartbeat(Vec::new()).seq;
        let signed: SignedHeartbeat = serde_json::from_slice(&m.next_beacon("h2")).unwrap();
        assert!(verify_body(SECRET, &signed.body, &signed.signature));
        let b: Beacon = serde_json::from_str(&signed.body).unwrap();
        assert_eq!((b.node.as_str(), b.incarnation, b.seq), ("h1", 1, first + 1));
        assert_eq!(m.next_heartbeat(Vec::new()).seq, first + 2);
    }

    #[test]
    fn a_good_heartbeat_marks_its_peer_alive_and_keeps_what_it_said() {
        let m = membership();
        assert_eq!(state_of(&m, "h2").state, PeerState::Unknown);
        m.receive(&signed(&heartbeat("h2", 7, 1))).unwrap();
        let h2 = state_of(&m, "h2");
        assert_eq!(h2.state, PeerState::Alive);
        assert_eq!(h2.incarnation, Some(7));
        assert_eq!(h2.vservers[0].name, "web");
        assert!(h2.last_heard_ms.is_some());
        assert_eq!(h2.restarts_seen, 0);
        assert_eq!(state_of(&m, "h3").state, PeerState::Unknown);
        let names: Vec<_> = m.peers().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["h2", "h3"], "configuration order");
        assert_eq!(m.counters(), RejectCounters::default());
    }

    #[test]
    fn each_bad_heartbeat_is_refused_and_counted() {
        let m = membership();
        m.receive(&signed(&heartbeat("h2", 5, 10))).unwrap();

        let stranger = m.receive(&signed(&heartbeat("h9", 1, 1)));
        assert_eq!(stranger, Err(HeartbeatReject::UnknownNode("h9".into())));

        let mut forged = signed(&heartbeat("h2", 5, 11));
        forged.signature = sign_body("a-guessed-secret-16chars", &forged.body);
        assert_eq!(m.receive(&forged), Err(HeartbeatReject::BadSignature("h2".into())));
        // A forger from an unknown node is refused for its signature, so names cannot be probed.
        let mut forged_stranger = signed(&heartbeat("h9", 1, 1));
        forged_stranger.signature = "00".repeat(32);
        assert_eq!(m.receive(&forged_stranger), Err(HeartbeatReject::BadSignature("h9".into())));

        let junk = SignedHeartbeat { body: "{\"node\":".into(), signature: sign_body(SECRET, "{\"node\":") };
        assert!(matches!(m.receive(&junk), Err(HeartbeatReject::Malformed(_))));
        // Junk under a signature of the right form that does not match: the signature is what is wrong first.
        let forged_junk = SignedHeartbeat { body: "junk".into(), signature: "ab".repeat(32) };
        assert_eq!(m.receive(&forged_junk), Err(HeartbeatReject::BadSignatureOnGarbage));
        // Junk under a signature of no form at all: a malformed envelope.
        let junk_junk = SignedHeartbeat { body: "junk".into(), signature: "00".into() };
        assert!(matches!(m.receive(&junk_junk), Err(HeartbeatReject::Malformed(_))));

        let same_seq = m.receive(&signed(&heartbeat("h2", 5, 10)));
        assert_eq!(same_seq, Err(HeartbeatReject::Stale { node: "h2".into(), incarnation: 5, seq: 10 }));
        let older_seq = m.receive(&signed(&heartbeat("h2", 5, 3)));
        assert!(matches!(older_seq, Err(HeartbeatReject::Stale { .. })));
        let old_incarnation = m.receive(&signed(&heartbeat("h2", 4, 99)));
        assert_eq!(old_incarnation, Err(HeartbeatReject::Stale { node: "h2".into(), incarnation: 4, seq: 99 }));

        assert_eq!(m.counters(), RejectCounters { unknown_node: 1, bad_signature: 3, malformed_or_stale: 5 });
        let h2 = state_of(&m, "h2");
        assert_eq!((h2.incarnation, h2.restarts_seen), (Some(5), 0), "refusals change nothing");
    }

    #[test]
    fn a_new_incarnation_is_a_restart_and_starts_its_numbering_afresh() {
        let m = membership();
        m.receive(&signed(&heartbeat("h2", 1, 40))).unwrap();
        m.receive(&signed(&heartbeat("h2", 2, 1))).unwrap();
        m.receive(&signed(&heartbeat("h2", 2, 2))).unwrap();
        m.receive(&signed(&heartbeat("h2", 5, 1))).unwrap();
        let h2 = state_of(&m, "h2");
        assert_eq!((h2.incarnation, h2.restarts_seen), (Some(5), 2));
        assert_eq!(m.counters(), RejectCounters::default());
    }

    #[test]
    fn a_silent_peer_goes_alive_then_suspect_then_dead_and_comes_back() {
        let m = Membership::new(fast());
        m.receive(&signed(&heartbeat("h2", 1, 1))).unwrap();
        assert_eq!(state_of(&m, "h2").state, PeerState::Alive);
        std::thread::sleep(Duration::from_millis(80));
        m.tick();
        assert_eq!(state_of(&m, "h2").state, PeerState::Suspect);
        assert_eq!(m.lock().peers[0].judged, PeerState::Suspect, "tick keeps the judged state");
        std::thread::sleep(Duration::from_millis(100));
        m.tick();
        assert_eq!(state_of(&m, "h2").state, PeerState::Dead);
        assert!(state_of(&m, "h2").last_heard_ms.unwrap() >= 150);
        m.receive(&signed(&heartbeat("h2", 1, 2))).unwrap();
        assert_eq!(state_of(&m, "h2").state, PeerState::Alive);
        assert_eq!(m.lock().peers[0].judged, PeerState::Alive);
    }

    #[test]
    fn a_peer_never_heard_is_unknown_then_dead() {
        let m = Membership::new(fast());
        m.tick();
        let h3 = state_of(&m, "h3");
        assert_eq!((h3.state, h3.last_heard_ms, h3.incarnation), (PeerState::Unknown, None, None));
        std::thread::sleep(Duration::from_millis(170));
        m.tick();
        assert_eq!(state_of(&m, "h3").state, PeerState::Dead);
        assert_eq!(m.lock().peers[1].judged, PeerState::Dead);
    }

    #[test]
    fn peers_come_and_go_and_a_newcomer_is_not_dead_at_once() {
        let m = Membership::new(fast());
        m.receive_beacon(&beacon("h2", 4, 1, SECRET)).unwrap();
        let h2_before = state_of(&m, "h2");
        std::thread::sleep(Duration::from_millis(250));
        let changed = m.set_peers(&[
            ("h1".into(), "http://itself".into()),
            ("h2".into(), "http://127.0.0.1:7999".into()),
            ("h4".into(), "http://127.0.0.1:7073".into()),
        ]);
        assert!(changed);
        assert!(!m.set_peers(&[
            ("h2".into(), "http://127.0.0.1:7999".into()),
            ("h4".into(), "http://127.0.0.1:7073".into())
        ]));
        let names: Vec<String> = m.peers().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["h2", "h4"], "this node is never its own peer, and h3 is gone");
        let h2 = state_of(&m, "h2");
        assert_eq!((h2.url.as_str(), h2.incarnation), ("http://127.0.0.1:7999", h2_before.incarnation));
        m.tick();
        assert_eq!(
            state_of(&m, "h4").state,
            PeerState::Unknown,
            "the table is older than dead_after, the newcomer is not"
        );
        assert!(m.receive_beacon(&beacon("h3", 1, 1, SECRET)).is_err(), "a forgotten peer is unknown");
    }

    /// Every beacon sent or received looks its peer up by name (through an index: a search along the list made a
    /// voter's work per host grow with the cluster); the peers reordered, added and removed, each beacon still
    /// finds its own peer, and what was heard of a peer stays with it.
    #[test]
    fn a_beacon_finds_its_own_peer_after_the_peers_are_reordered_added_and_removed() {
        let m = membership();
        m.receive_beacon(&beacon("h3", 7, 1, SECRET)).unwrap();
        let url = |n: u16| format!("http://127.0.0.1:{n}");
        assert!(m.set_peers(&[("h4".into(), url(7073)), ("h3".into(), url(7072)), ("h2".into(), url(7071))]));
        assert_eq!((m.incarnation_of("h3"), m.incarnation_of("h2"), m.incarnation_of("h4")), (Some(7), None, None));

        m.receive_beacon(&beacon("h2", 5, 1, SECRET)).unwrap();
        assert_eq!((m.incarnation_of("h2"), m.incarnation_of("h4")), (Some(5), None), "h2's beacon is h2's");
        let h2_acked = serde_json::from_slice::<SignedHeartbeat>(&m.next_beacon("h2")).unwrap();
        let acks = serde_json::from_str::<Beacon>(&h2_acked.body).unwrap().acks;
        assert_eq!(acks, [Ack { node: "h2".into(), incarnation: 5, seq: 1 }], "the beacon to h2 acknowledges h2");
        let to_h4 = serde_json::from_slice::<SignedHeartbeat>(&m.next_beacon("h4")).unwrap();
        assert!(serde_json::from_str::<Beacon>(&to_h4.body).unwrap().acks.is_empty(), "h4 was never heard");

        // h4 acknowledges this node's beacon to it: its word, not another's.
        let ours: Beacon = serde_json::from_str(&to_h4.body).unwrap();
        m.receive_beacon(&acking("h4", 1, &[("h1", 1, ours.seq)])).unwrap();
        let now = Instant::now();
        let vouching: Vec<String> = m.lease(now).into_iter().map(|(n, _)| n).collect();
        assert_eq!(vouching, ["h4"]);
        assert_eq!(m.lease_among(&["h2".into(), "h4".into()], now).len(), 1);

        assert!(m.set_peers(&[("h2".into(), url(7071))]));
        assert!(m.receive_beacon(&beacon("h4", 1, 2, SECRET)).is_err(), "a peer taken out is unknown");
        assert_eq!(m.incarnation_of("h2"), Some(5));
        m.receive_beacon(&beacon("h2", 5, 2, SECRET)).unwrap();
        assert_eq!(state_of(&m, "h2").state, PeerState::Alive);
    }

    #[test]
    fn judging_follows_the_thresholds_exactly() {
        let m = Membership::new(fast());
        let at = m.lock().peers[0].since;
        let mut peer = Peer::new("h2".into(), String::new(), at);
        let ms = |n| at + Duration::from_millis(n);
        assert_eq!(m.judge(&peer, ms(149)).0, PeerState::Unknown);
        assert_eq!(m.judge(&peer, ms(150)).0, PeerState::Dead);
        peer.heard = Some(Heard { at, incarnation: 1, seq: 1, full_seq: 1, vservers: vec![] });
        assert_eq!(m.judge(&peer, ms(49)), (PeerState::Alive, Duration::from_millis(49)));
        assert_eq!(m.judge(&peer, ms(50)).0, PeerState::Suspect);
        assert_eq!(m.judge(&peer, ms(149)).0, PeerState::Suspect);
        assert_eq!(m.judge(&peer, ms(150)).0, PeerState::Dead);
    }

    #[test]
    fn a_voter_watches_everyone_and_another_host_the_voters_and_its_partners() {
        let voters: Vec<String> = ["h0", "h1", "h2"].map(String::from).to_vec();
        assert_eq!(watch_set("h1", &voters, ["h7"]), None, "a voter watches every host");
        let to: Vec<String> = heartbeat_set("h1", &voters, ["h7"]).into_iter().collect();
        assert_eq!(to, ["h0", "h2", "h7"], "and sends heartbeats to the voters and its partners");
        let set = watch_set("h5", &voters, ["h5", "h7", "h1"]).unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["h0", "h1", "h2", "h7"]);
        // A thousand hosts: a host that does not vote still watches the voters and its partners alone.
        assert_eq!(watch_set("h999", &voters, std::iter::empty()).unwrap().len(), 3);
    }

    #[test]
    fn a_peer_not_watched_is_never_judged_suspect_or_dead_and_gets_no_beacon() {
        let m = Membership::new(fast());
        m.receive(&signed(&heartbeat("h2", 1, 1))).unwrap();
        let only_h2: BTreeSet<String> = ["h2".to_string()].into();
        m.watch(Some(&only_h2), None);
        assert_eq!(m.watched().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["h2"]);
        assert_eq!(m.heartbeat_targets().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["h2"]);
        std::thread::sleep(Duration::from_millis(170));
        m.tick();
        // h2, watched and silent: dead. h3, never heard and not watched: unknown, long past the threshold.
        assert_eq!(state_of(&m, "h2").state, PeerState::Dead);
        let h3 = state_of(&m, "h3");
        assert_eq!((h3.state, h3.watched), (PeerState::Unknown, false));
        // Heard although not watched (a peer that watches this host): alive while heard, then unknown.
        m.receive(&signed(&heartbeat("h3", 1, 1))).unwrap();
        assert_eq!(state_of(&m, "h3").state, PeerState::Alive);
        std::thread::sleep(Duration::from_millis(80));
        m.tick();
        assert_eq!(state_of(&m, "h3").state, PeerState::Unknown);
        // Watched again (it became a partner): judged by its silence as before.
        m.watch(None, None);
        assert_eq!(state_of(&m, "h3").state, PeerState::Suspect);
        assert_eq!(m.watched().len(), 2);
        // A voter: beacons to every peer, heartbeats to the voters and its partners alone (h3 here).
        let h3: BTreeSet<String> = ["h3".to_string()].into();
        m.watch(None, Some(&h3));
        assert_eq!(m.watched().len(), 2);
        assert_eq!(m.heartbeat_targets().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["h3"]);
        assert!(!state_of(&m, "h2").heartbeats && state_of(&m, "h3").heartbeats);
    }

    #[test]
    fn rtt_is_recorded_for_known_peers_only() {
        let m = membership();
        m.record_rtt("h3", Duration::from_micros(1500));
        m.record_rtt("h9", Duration::from_millis(1));
        assert_eq!(state_of(&m, "h3").rtt_ms, Some(1.5));
        assert_eq!(state_of(&m, "h2").rtt_ms, None);
    }
}
