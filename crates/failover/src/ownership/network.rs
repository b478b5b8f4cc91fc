//! The client side of the Raft transport: JSON over HTTP(S) with reqwest, `POST {url}/v1/raft/{append,vote,
//! snapshot}` with the cluster's bearer secret and the target's node id (so that a request that reaches the
//! wrong host, after an address change, is refused instead of counted as a vote).
//!
//! A peer that cannot be reached, or answers with an HTTP error, is reported as `Unreachable`, which makes
//! openraft back off before the next attempt; each request is also bounded by openraft's own time limit
//! (heartbeat interval for appends, minimum election timeout for votes) and by the configured RPC timeout.
//!
//! openraft logs every failed attempt, by node id; its logs are off by default (see the agent's logging), and
//! this transport says instead, by host name, when a peer stops answering and when it answers again.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{HostNode, NodeId, TypeConfig};

/// The header that names the node a Raft RPC is meant for.
pub(crate) const TARGET_HEADER: &str = "x-raft-target";

/// A peer answered with an HTTP error status.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered HTTP {status}: {body}")]
pub(crate) struct HttpStatusError {
    pub(crate) url: String,
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Makes one [`PeerClient`] per replication target; it shares the caller's reqwest client (and its pool).
#[derive(Clone)]
pub(crate) struct HttpNetwork {
    pub(crate) client: reqwest::Client,
    /// How requests are authenticated.
    pub(crate) credentials: crate::peer::Credentials,
    pub(crate) timeout: Duration,
    /// The URLs this host's configuration gives its members: they win over the URL a member was recorded
    /// with in the membership (written by whichever host formed the cluster, from its own configuration).
    pub(crate) urls: Arc<std::collections::BTreeMap<NodeId, String>>,
    /// Whether each peer answers, shared by every client made here.
    pub(crate) reach: Arc<Reachability>,
    /// This node's Raft metrics, once it runs (set by [`Ownership::open`](super::Ownership::open)): who votes.
    pub(crate) metrics: Arc<OnceLock<Metrics>>,
}

/// openraft's metrics of this node.
pub(crate) type Metrics = tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, HostNode>>;

/// How long a learner is spared a heartbeat that would tell it nothing new (see [`Quiet`]): at most this long
/// after the last one it answered, the next goes whatever it says.
pub(crate) const LEARNER_HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// What a leader's heartbeat tells a learner: the leader's vote, where the learner's log matches the leader's
/// and how far the leader has committed. A learner told this already and recently needs nothing more: it
/// votes in nothing, so it needs no proof of the leader's life (a leader that dies is replaced by the voters,
/// and the new one tells it at once), and a change of any of the three (a new term, new entries, a new
/// commit) goes at once.
///
/// The leader sends a heartbeat to every host of the cluster twice a second; its learners (every host that
/// does not vote) were most of that work in a large cluster. Spared, a learner answered lately counts as
/// answering again; one that answers no more is found at the next heartbeat that goes, at most
/// [`LEARNER_HEARTBEAT_EVERY`] later.
#[derive(Debug, Default)]
struct Quiet {
    /// The last heartbeat the learner answered with a success, and when.
    answered: Option<(HeartbeatSays, Instant)>,
}

/// What a heartbeat says (an append of no entries).
type HeartbeatSays = (openraft::Vote<NodeId>, Option<openraft::LogId<NodeId>>, Option<openraft::LogId<NodeId>>);

impl Quiet {
    /// Whether `says` may be spared now.
    fn spare(&self, says: &HeartbeatSays, now: Instant) -> bool {
        self.answered
            .as_ref()
            .is_some_and(|(last, at)| last == says && now.saturating_duration_since(*at) < LEARNER_HEARTBEAT_EVERY)
    }

    /// A heartbeat saying `says` was sent at `at` and answered with `success`.
    fn sent(&mut self, says: HeartbeatSays, success: bool, at: Instant) {
        self.answered = success.then_some((says, at));
    }
}

/// Failed attempts in a row before a peer is said to be unreachable: a single request cut short by openraft's
/// own time limit on a busy host is no news.
const FAILURES_BEFORE_UNREACHABLE: u32 = 3;

/// Whether each peer answers Raft's requests, and what was said about it: one line when it stops answering,
/// one when it answers again, whatever the number of retries in between.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    peers: Mutex<HashMap<NodeId, PeerReach>>,
}

/// One peer's failed attempts in a row, and whether it was said to be unreachable.
#[derive(Debug, Default)]
struct PeerReach {
    failures: u32,
    unreachable: bool,
}

impl Reachability {
    /// An attempt to reach `host` (node `id`) failed with `error`; says so when it makes the host unreachable.
    /// Whether it did.
    fn failed(&self, id: NodeId, host: &str, error: &dyn Display) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let peer = peers.entry(id).or_default();
        peer.failures = peer.failures.saturating_add(1);
        if peer.unreachable || peer.failures < FAILURES_BEFORE_UNREACHABLE {
            return false;
        }
        peer.unreachable = true;
        tracing::warn!(peer = %host, error = %error, "Raft: peer unreachable, retrying quietly until it answers");
        true
    }

    /// `host` (node `id`) answered; says so when it was unreachable. Whether it was.
    fn answered(&self, id: NodeId, host: &str) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peer) = peers.remove(&id) else { return false };
        if peer.unreachable {
            tracing::info!(peer = %host, "Raft: peer reachable again");
        }
        peer.unreachable
    }
}

/// One request to a peer under way: dropped unfinished (openraft gave up waiting), it counts as a failure.
struct Attempt<'a> {
    reach: &'a Reachability,
    id: NodeId,
    host: &'a str,
    finished: bool,
}

impl Attempt<'_> {
    fn failed(mut self, error: &dyn Display) {
        self.finished = true;
        self.reach.failed(self.id, self.host, error);
    }

    fn answered(mut self) {
        self.finished = true;
        self.reach.answered(self.id, self.host);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.reach.failed(self.id, self.host, &"no answer within Raft's time limit");
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &HostNode) -> PeerClient {
        let mut node = node.clone();
        if let Some(url) = self.urls.get(&target) {
            node.url.clone_from(url);
        }
        PeerClient { net: self.clone(), target, node, quiet: Quiet::default() }
    }
}

/// Sends Raft RPCs to one peer.
pub(crate) struct PeerClient {
    net: HttpNetwork,
    target: NodeId,
    node: HostNode,
    /// The heartbeats this peer may be spared while it does not vote.
    quiet: Quiet,
}

/// How a leader sends a learner its new entries. openraft sends each new entry to every host at once, before
/// it is committed, and its commit in a second request: in a large cluster the voters' copies (which alone
/// decide the commit) were sent, written and answered among those of every learner, and each learner took two
/// requests per change. A learner cannot apply an entry before it is committed anyway, so the leader's
/// stream to a learner holds this leader's new entries until the leader has applied them (at most a bound well
/// within openraft's time limit for the request; then they go as before), and sends them with their commit.
impl PeerClient {
    /// Whether `last`, an entry of this leader's term, is committed: applied here within `within`. An entry
    /// applied here with the same leader and a number at least `last`'s is in the committed log of every later
    /// leader, and so is everything before it in this leader's log, `last` with it.
    async fn committed_here(&self, last: openraft::LogId<NodeId>, within: Duration) -> bool {
        let Some(metrics) = self.net.metrics.get() else { return false };
        let mut metrics = metrics.clone();
        let applied = |m: &openraft::RaftMetrics<NodeId, HostNode>| {
            m.last_applied.is_some_and(|a| a.leader_id == last.leader_id && a.index >= last.index)
        };
        let committed = matches!(tokio::time::timeout(within, metrics.wait_for(applied)).await, Ok(Ok(_)));
        committed
    }
}

/// The URL of route `route` (`append`, `vote`, ...) on the host whose base URL is `base`.
pub(crate) fn route_url(base: &str, route: &str) -> String {
    format!("{}/v1/raft/{route}", base.trim_end_matches('/'))
}

impl PeerClient {
    /// Whether the peer votes in the membership this node knows (yes while that is not known).
    fn votes(&self) -> bool {
        self.net
            .metrics
            .get()
            .is_none_or(|m| m.borrow().membership_config.membership().voter_ids().any(|v| v == self.target))
    }

    async fn call<Req, Resp, E>(&self, route: &str, request: &Req) -> Result<Resp, RPCError<NodeId, HostNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let attempt = Attempt { reach: &self.net.reach, id: self.target, host: &self.node.name, finished: false };
        let result = self.send(route, request).await;
        match &result {
            Ok(_) | Err(RPCError::RemoteError(_)) => attempt.answered(),
            Err(e) => attempt.failed(e),
        }
        result
    }

    async fn send<Req, Resp, E>(&self, route: &str, request: &Req) -> Result<Resp, RPCError<NodeId, HostNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = route_url(&self.node.url, route);
        // openraft cancels the call at its own limit (`RPCOption::hard_ttl`) and reports a timeout, which it retries at
        // once; our own limit is the longer configured one, so that it does not race openraft's and turn a
        // slow answer into `Unreachable` (which backs off for half a second and could let a follower's
        // election timer run out).
        let timeout = self.net.timeout;
        let response = self
            .net
            .credentials
            .apply(self.net.client.post(&url), &url)
            .header(TARGET_HEADER, self.target.to_string())
            .timeout(timeout)
            .json(request)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let err = HttpStatusError { url, status: status.as_u16(), body };
            return Err(RPCError::Unreachable(Unreachable::new(&err)));
        }
        let reply: Result<Resp, E> = response.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, HostNode, RaftError<NodeId>>> {
        if self.votes() {
            self.quiet = Quiet::default();
            return self.call("append", &rpc).await;
        }
        if let Some(last) = rpc.entries.last().map(|e| e.log_id) {
            // A learner: this leader's new entries go to it once committed, with their commit (see
            // [`committed_here`]), so that it applies them on this one request.
            if rpc.leader_commit.is_none_or(|c| c.index < last.index)
                && last.leader_id == rpc.vote.leader_id
                && self.committed_here(last, option.soft_ttl() / 2).await
            {
                rpc.leader_commit = Some(last);
            }
            let says: HeartbeatSays = (rpc.vote, Some(last), rpc.leader_commit);
            let now = Instant::now();
            let result = self.call("append", &rpc).await;
            // The heartbeat that would tell it the same (the commit, once openraft's stream hears of it) is spared.
            self.quiet.sent(says, matches!(result, Ok(AppendEntriesResponse::Success)), now);
            return result;
        }
        let says: HeartbeatSays = (rpc.vote, rpc.prev_log_id, rpc.leader_commit);
        let now = Instant::now();
        if self.quiet.spare(&says, now) {
            return Ok(AppendEntriesResponse::Success);
        }
        let result = self.call("append", &rpc).await;
        self.quiet.sent(says, matches!(result, Ok(AppendEntriesResponse::Success)), now);
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, HostNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, HostNode, RaftError<NodeId>>> {
        self.call("vote", &rpc).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_said_unreachable_once_after_failures_in_a_row_and_reachable_once_when_it_answers() {
        let reach = Reachability::default();
        let said: Vec<bool> = (0..10).map(|_| reach.failed(7, "h2", &"refused")).collect();
        assert_eq!(said.iter().filter(|s| **s).count(), 1, "{said:?}");
        assert!(said[FAILURES_BEFORE_UNREACHABLE as usize - 1], "{said:?}");
        assert!(reach.answered(7, "h2"));
        assert!(!reach.answered(7, "h2"), "said once");
        // A failure or two between answers is no news.
        for _ in 1..FAILURES_BEFORE_UNREACHABLE {
            assert!(!reach.failed(7, "h2", &"timeout"));
        }
        assert!(!reach.answered(7, "h2"));
        assert!(!reach.failed(7, "h2", &"timeout"), "the count started again");
    }

    #[test]
    fn a_learner_is_spared_a_heartbeat_it_answered_lately_and_told_anything_new_at_once() {
        use openraft::{CommittedLeaderId, LogId, Vote};
        let log = |term, index| Some(LogId::new(CommittedLeaderId::new(term, 1), index));
        let says = |term, matched, committed| -> HeartbeatSays {
            (Vote::new_committed(term, 1), log(term, matched), log(term, committed))
        };
        let t0 = Instant::now();
        let mut quiet = Quiet::default();
        assert!(!quiet.spare(&says(2, 7, 7), t0), "never answered: sent");
        quiet.sent(says(2, 7, 7), true, t0);
        let soon = t0 + Duration::from_millis(500);
        assert!(quiet.spare(&says(2, 7, 7), soon), "nothing new, answered lately: spared");
        assert!(!quiet.spare(&says(2, 7, 8), soon), "a new commit goes at once");
        assert!(!quiet.spare(&says(2, 8, 8), soon), "a new match goes at once");
        assert!(!quiet.spare(&says(3, 7, 7), soon), "a new term goes at once");
        assert!(!quiet.spare(&says(2, 7, 7), t0 + LEARNER_HEARTBEAT_EVERY), "and the same, now and then");
        quiet.sent(says(2, 7, 7), false, soon);
        assert!(!quiet.spare(&says(2, 7, 7), soon), "a learner that did not answer is asked again");
    }

    #[test]
    fn a_request_cut_short_counts_as_a_failure() {
        let reach = Reachability::default();
        for _ in 0..FAILURES_BEFORE_UNREACHABLE {
            drop(Attempt { reach: &reach, id: 3, host: "h1", finished: false });
        }
        assert!(reach.answered(3, "h1"), "the host was said unreachable");
        Attempt { reach: &reach, id: 3, host: "h1", finished: false }.answered();
        assert!(!reach.answered(3, "h1"));
    }
}
