//! Heartbeats between agents and the failure detector. (Being written: see the interface below.)

use std::sync::Arc;
use std::time::Duration;

use super::config::AgentConfig;
use super::model::{Heartbeat, PeerStatus, RejectCounters, SignedHeartbeat, VserverSummary};
use super::Agent;

/// Why a received heartbeat was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatReject {
    /// From a node not in the configuration (HTTP 403).
    #[error("heartbeat from unknown node {0:?}")]
    UnknownNode(String),
    /// The signature does not match the body under the cluster secret (HTTP 403).
    #[error("heartbeat with a bad signature (claims to be from {0:?})")]
    BadSignature(String),
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

/// What this agent knows of its peers.
pub struct Membership {}

impl Membership {
    /// A table of the configured peers, none heard yet.
    pub fn new(_config: &AgentConfig, _secret: &str, _incarnation: u64) -> Self {
        todo!()
    }
    /// Every configured peer, with its state judged now.
    pub fn peers(&self) -> Vec<PeerStatus> {
        todo!()
    }
    /// Counters of refused heartbeats.
    pub fn counters(&self) -> RejectCounters {
        todo!()
    }
    /// Checks and records a received heartbeat.
    pub fn receive(&self, _signed: &SignedHeartbeat) -> Result<(), HeartbeatReject> {
        todo!()
    }
    /// This node's next heartbeat (the sequence number grows).
    pub fn next_heartbeat(&self, _vservers: Vec<VserverSummary>) -> Heartbeat {
        todo!()
    }
    /// Signs a heartbeat with the cluster secret.
    pub fn sign(&self, _hb: &Heartbeat) -> SignedHeartbeat {
        todo!()
    }
    /// Records the round-trip time of a heartbeat to `peer`.
    pub fn record_rtt(&self, _peer: &str, _rtt: Duration) {
        todo!()
    }
}

/// Sends a heartbeat to every peer at every interval, until aborted.
pub async fn run_sender(_agent: Arc<Agent>) {
    todo!()
}
