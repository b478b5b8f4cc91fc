//! This host's side of automatic takeover (the decisions are `failover::takeover`'s): the agent as the
//! [`failover::takeover::Host`] the coordinator works through, a voter's answer to a probe, the fence hook, and
//! what a host that comes back does.
//!
//! A host that comes back (after a crash, a partition, a pause) finds the table giving some of its vservers
//! to other hosts: it stops any it still runs, keeps its copy aside (never deleted: `REPLICA_DIR/NAME/aside/`),
//! and takes the new placement, as a standby of the new owner, which resyncs it.

use std::sync::Arc;
use std::time::Duration;

use failover::events::{kinds, TakeoverRecord};
use failover::takeover::{Busy, Limits, PeerView};
use failover::wire::{HeldReplica, ProbeReply, ProbeRequest, PromoteRequest, PromoteTimes};
use isolate::VserverName;

use super::Agent;
use crate::model::{PeerState, VserverState};

/// The takeovers in the cluster's event log, oldest first.
pub fn records(agent: &Agent) -> Vec<TakeoverRecord> {
    agent.ownership.get().map(|own| failover::events::takeovers(&own.events())).unwrap_or_default()
}

/// The agent, as the coordinator and a takeover reach this host.
#[derive(Clone)]
pub struct AgentHost(pub Arc<Agent>);

impl failover::takeover::Host for AgentHost {
    type Table = failover::ownership::Ownership;
    type Peers = failover::peer::PeerClient;

    fn node(&self) -> &str {
        &self.0.config.node
    }
    fn table(&self) -> Option<&Self::Table> {
        self.0.ownership.get()
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
        let since_start = self.0.started.elapsed().as_millis() as u64;
        self.0
            .membership
            .peers()
            .into_iter()
            .map(|p| PeerView {
                // Never heard since this agent started: silent since then.
                silence: Duration::from_millis(p.last_heard_ms.unwrap_or(since_start)),
                alive: p.state == PeerState::Alive,
                maintenance: p.maintenance,
                vservers: p.vservers.iter().map(|v| (v.name.clone(), v.state)).collect(),
                name: p.name,
            })
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

/// On every host, every second: a vserver the table gives to another host is not run here, its copy here is
/// kept aside, and this host takes the new placement (as a standby of the new owner).
pub async fn reconcile(agent: &Arc<Agent>) {
    let Some(own) = agent.ownership.get() else { return };
    let me = &agent.config.node;
    for (name, entry) in own.table() {
        let Some(owner) = entry.owner else { continue };
        if owner == *me {
            continue;
        }
        let Ok(name) = VserverName::parse(&name) else { continue };
        // The placement follows the table.
        if let Some(p) = agent.replication.placement(&name) {
            if p.primary != owner && (p.standbys.contains(&owner)) {
                let moved = p.moved_to(&owner);
                match agent.replication.record_placement(&name, moved) {
                    Ok(_) => tracing::info!(vserver = %name, %owner, "placement follows the ownership table"),
                    Err(e) => tracing::warn!(vserver = %name, error = %e, "cannot record the placement"),
                }
            }
        }
        let dirs = agent.supervisor.host().dirs.clone();
        if !dirs.conf(&name).exists() && !dirs.root(&name).exists() {
            continue;
        }
        // Not while a migrate or a sync of it runs here (a migrate's source gives it up itself).
        let Ok(_held) = agent.replication.vserver_lock(&name).try_lock_owned() else { continue };
        let running = agent.supervisor.get(&name).await.is_ok_and(|v| v.state == VserverState::Running);
        if running {
            tracing::error!(vserver = %name, %owner, epoch = entry.epoch, "runs here, but the cluster gives it to \
                            another host: stopping it here");
            let _ = agent.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
            if let Err(e) = agent.supervisor.stop(&name).await {
                tracing::error!(vserver = %name, error = %e, "cannot stop it");
            }
            continue;
        }
        let _ = agent.supervisor.record_intent(&name, crate::model::Intent::Stopped).await;
        let (store, vdir, cdir, n) =
            (agent.replication.store().clone(), dirs.vservers_dir.clone(), dirs.conf_dir.clone(), name.clone());
        let label = format!("epoch{}-{}", entry.epoch, super::replication::now_ms());
        match tokio::task::spawn_blocking(move || store.set_aside(&n, &vdir, &cdir, &label)).await {
            Ok(Ok(path)) => {
                let text = format!(
                    "{me} kept its copy of {name} aside at {} ({owner} owns it since epoch {})",
                    path.display(),
                    entry.epoch
                );
                tracing::warn!("{text}");
                let _ = own.log(kinds::ASIDE, Some(name.as_str()), &text).await;
            }
            Ok(Err(e)) => tracing::error!(vserver = %name, error = %e, "cannot keep this host's copy aside"),
            Err(e) => tracing::error!(vserver = %name, error = %e, "cannot keep this host's copy aside"),
        }
    }
}
