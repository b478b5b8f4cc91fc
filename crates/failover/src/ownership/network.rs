//! The client side of the Raft transport: JSON over HTTP(S) with reqwest, `POST {url}/v1/raft/{append,vote,
//! snapshot}` with the cluster's bearer secret and the target's node id (so that a request that reaches the
//! wrong host, after an address change, is refused instead of counted as a vote).
//!
//! A peer that cannot be reached, or answers with an HTTP error, is reported as `Unreachable`, which makes
//! openraft back off before the next attempt; each request is also bounded by openraft's own time limit
//! (heartbeat interval for appends, minimum election timeout for votes) and by the configured RPC timeout.

use std::sync::Arc;
use std::time::Duration;

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
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &HostNode) -> PeerClient {
        let mut node = node.clone();
        if let Some(url) = self.urls.get(&target) {
            node.url.clone_from(url);
        }
        PeerClient { net: self.clone(), target, node }
    }
}

/// Sends Raft RPCs to one peer.
pub(crate) struct PeerClient {
    net: HttpNetwork,
    target: NodeId,
    node: HostNode,
}

/// The URL of route `route` (`append`, `vote`, ...) on the host whose base URL is `base`.
pub(crate) fn route_url(base: &str, route: &str) -> String {
    format!("{}/v1/raft/{route}", base.trim_end_matches('/'))
}

impl PeerClient {
    async fn call<Req, Resp, E>(&self, route: &str, request: &Req) -> Result<Resp, RPCError<NodeId, HostNode, E>>
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
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, HostNode, RaftError<NodeId>>> {
        self.call("append", &rpc).await
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
