//! This host's side of automatic takeover (the decisions are `failover::takeover`'s): the agent as the
//! [`failover::takeover::Host`] the coordinator works through, a voter's answer to a probe, the fence hook, and
//! what a host that comes back does.
//!
//! A host that comes back (after a crash, a partition, a pause) finds the table giving some of its vservers
//! to other hosts: it stops any it still runs, keeps its copy aside (never deleted: `REPLICA_DIR/NAME/aside/`),
//! and takes the new placement, as a standby of the new owner, which resyncs it.

use std::sync::Arc;
use std::time::Duration;

use failover::takeover::{Busy, Limits, PeerView};
use failover::wire::{HeldReplica, ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes};
use isolate::VserverName;

use super::node::Agent;
use crate::model::VserverState;

/// The agent, as the coordinator and a takeover reach this host.
#[derive(Clone)]
pub struct AgentHost(pub Arc<Agent>);

impl AgentHost {
    /// How long this agent has run, to the millisecond: a peer never heard is silent since then.
    fn since_start(&self) -> Duration {
        Duration::from_millis(self.0.started.elapsed().as_millis() as u64)
    }
}

impl failover::takeover::Host for AgentHost {
    type Table = failover::ownership::Ownership;
    type Peers = failover::peer::PeerClient;

    fn node(&self) -> &str {
        &self.0.config.node
    }
    fn table(&self) -> Option<&Self::Table> {
        Some(&self.0.ownership)
    }
    fn peers(&self) -> &Self::Peers {
        &self.0.peers
    }
    fn takeover_timeout(&self) -> Option<Duration> {
        self.0.config.takeover_enabled().then(|| self.0.config.takeover_timeout())
    }
    fn limits(&self) -> Limits {
        Limits { max_relocate: self.0.config.failures.max_relocate, window_secs: self.0.config.failures.window_secs }
    }
    fn membership(&self) -> Vec<PeerView> {
        let since_start = self.since_start();
        self.0.membership.peers().into_iter().map(|p| PeerView::from_status(p, since_start)).collect()
    }
    fn silent(&self, at_least: Duration) -> Vec<PeerView> {
        let since_start = self.since_start();
        self.0
            .membership
            .silent_peers(at_least, since_start)
            .into_iter()
            .map(|p| PeerView::from_status(p, since_start))
            .collect()
    }
    fn probe(&self, req: &ProbeRequest) -> Option<ProbeReply> {
        probe(&self.0, req)
    }
    fn held(&self) -> Vec<HeldReplica> {
        self.0.replication.held()
    }
    fn placement(&self, name: &str) -> Option<failover::placement::Placement> {
        self.0.replication.placement(&VserverName::parse(name).ok()?)
    }
    fn vserver_state(&self, name: &str) -> Option<failover::wire::VserverState> {
        self.0.supervisor.summaries().into_iter().find(|v| v.name == name).map(|v| v.state)
    }
    async fn promote(&self, name: &str, req: PromoteRequest) -> Result<PromoteTimes, String> {
        let name = VserverName::parse(name).map_err(|e| e.to_string())?;
        super::migrate::promote(&self.0, &name, req).await.map(|(_, times)| times).map_err(|e| e.to_string())
    }
    async fn fence_hook(&self, host: &str) -> Result<(), String> {
        fence_hook(&self.0, host).await
    }
    fn has_fence_hook(&self) -> bool {
        self.0.config.takeover.fence_hook.is_some()
    }
    fn needs_power_fence(&self, name: &str) -> bool {
        VserverName::parse(name).is_ok_and(|n| self.0.replication.data_path(&n).needs_power_fence())
    }
    async fn spread_placement(&self, name: &str, placement: &failover::placement::Placement) -> Vec<String> {
        match VserverName::parse(name) {
            Ok(name) => super::migrate::spread_placement(&self.0, &name, placement).await,
            Err(e) => vec![e.to_string()],
        }
    }
    fn busy(&self) -> &Busy {
        &self.0.takeovers
    }
    fn now_unix_ms(&self) -> u64 {
        super::replication::now_ms()
    }
}

/// A voter's side of the probe.
pub fn probe(agent: &Agent, req: &ProbeRequest) -> Option<ProbeReply> {
    let (silence, promised) = agent.membership.probe(
        &req.host,
        Duration::from_millis(req.silent_ms),
        Duration::from_millis(req.promise_ms.min(60_000)),
    )?;
    if promised {
        tracing::warn!(host = %req.host, silence_ms = silence.as_millis() as u64, "probe: promised to acknowledge \
                       none of its beacons while the coordinator decides");
    }
    Some(ProbeReply { silence_ms: silence.as_millis() as u64, promised })
}

/// Runs the fence hook, if one is configured, with the dead host's name.
async fn fence_hook(agent: &Agent, host: &str) -> Result<(), String> {
    let Some(hook) = &agent.config.takeover.fence_hook else { return Ok(()) };
    let limit = Duration::from_secs(agent.config.takeover.fence_hook_timeout_secs);
    let mut child = tokio::process::Command::new(hook)
        .arg(host)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", hook.display()))?;
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{} {host}: {status}", hook.display())),
        Ok(Err(e)) => Err(format!("{} {host}: {e}", hook.display())),
        Err(_) => Err(format!("{} {host}: still running after {} s", hook.display(), limit.as_secs())),
    }
}

impl failover::reconcile::Local for AgentHost {
    type Table = failover::ownership::Ownership;
    type Held = tokio::sync::OwnedMutexGuard<()>;

    fn node(&self) -> &str {
        &self.0.config.node
    }
    fn table(&self) -> &Self::Table {
        &self.0.ownership
    }
    fn placement(&self, name: &str) -> Option<failover::placement::Placement> {
        self.0.replication.placement(&VserverName::parse(name).ok()?)
    }
    fn record_placement(&self, name: &str, placement: failover::placement::Placement) -> Result<(), String> {
        let name = VserverName::parse(name).map_err(|e| e.to_string())?;
        self.0.replication.record_placement(&name, placement).map(drop).map_err(|e| e.to_string())
    }
    fn has_copy(&self, name: &str) -> bool {
        let Ok(name) = VserverName::parse(name) else { return false };
        let dirs = &self.0.supervisor.host().dirs;
        // A link to a shared directory counts, also when that is not mounted here now.
        dirs.conf(&name).symlink_metadata().is_ok() || dirs.root(&name).symlink_metadata().is_ok()
    }
    fn try_hold(&self, name: &str) -> Option<Self::Held> {
        self.0.replication.vserver_lock(&VserverName::parse(name).ok()?).try_lock_owned().ok()
    }
    async fn running(&self, name: &str) -> bool {
        let Ok(name) = VserverName::parse(name) else { return false };
        self.0.supervisor.get(&name).await.is_ok_and(|v| v.state == VserverState::Running)
    }
    async fn stop_here(&self, name: &str) -> Result<(), String> {
        let name = VserverName::parse(name).map_err(|e| e.to_string())?;
        let _ = self.0.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
        self.0.supervisor.stop(&name).await.map(drop).map_err(|e| e.to_string())
    }
    async fn keep_aside(&self, name: &str, label: &str) -> Result<String, String> {
        let name = VserverName::parse(name).map_err(|e| e.to_string())?;
        let _ = self.0.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
        let dirs = self.0.supervisor.host().dirs.clone();
        if let Some(shared) = self.0.replication.data_path(&name).shared_dir().map(std::path::Path::to_path_buf) {
            // Nothing diverged here: the tree is the shared one, which the new owner runs. Only the links go.
            let unlinked = tokio::task::spawn_blocking(move || super::shared::unlink(&dirs, &shared, &name)).await;
            return match unlinked {
                Ok(Ok(())) => Ok("its shared directory (this host's links to it were removed)".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        }
        let (store, label) = (self.0.replication.store().clone(), label.to_string());
        let aside =
            tokio::task::spawn_blocking(move || store.set_aside(&name, &dirs.vservers_dir, &dirs.conf_dir, &label));
        match aside.await {
            Ok(Ok(path)) => Ok(path.display().to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
    fn now_unix_ms(&self) -> u64 {
        super::replication::now_ms()
    }
}
