//! Evacuate and restore a host through this agent (`POST /v1/hosts/HOST/evacuate`, `.../restore`): the
//! rules (which mode, which vservers, where each goes, the takeover of a dead host's) are
//! [`failover::evacuate`]'s; this runs the job, a few vservers at a time, and records its moves in the
//! cluster's event log, where a restore finds them. The job is shown by `GET /v1/hosts/HOST/evacuation`.

use std::sync::Arc;
use std::time::Duration;

use failover::evacuate::{EvacuateError, EvacuateRequest, Job, Mode};
use failover::wire::MigrateRequest;
use isolate::VserverName;

use super::node::Agent;
use crate::model::PeerState;

fn known_host(agent: &Agent, host: &str) -> Result<(), EvacuateError> {
    if host == agent.config.node || agent.config.peers.iter().any(|p| p.name == host) {
        Ok(())
    } else {
        Err(EvacuateError::UnknownHost(host.to_string()))
    }
}

fn peer_state(agent: &Agent, host: &str) -> Option<PeerState> {
    if host == agent.config.node {
        return Some(PeerState::Alive);
    }
    agent.membership.peers().into_iter().find(|p| p.name == host).map(|p| p.state)
}

/// Starts evacuating `host`; answers the job as it begins.
pub fn evacuate(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, EvacuateError> {
    known_host(agent, host)?;
    let parallel = failover::evacuate::parallel(req)?;
    let own = &agent.ownership;
    let said_maintenance = agent.membership.peers().iter().any(|p| p.name == host && p.maintenance);
    let fencing_known = agent.config.quorum_fencing() || agent.config.takeover.fence_hook.is_some();
    let mode = failover::evacuate::mode(host, peer_state(agent, host), said_maintenance, req.fenced, fencing_known)?;
    let items = failover::evacuate::evacuation_items(&own.table(), host);
    begin(agent, host, mode, parallel, items)
}

/// Starts moving back to `host` what its last evacuation moved away (those still where it put them).
pub fn restore(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, EvacuateError> {
    known_host(agent, host)?;
    let parallel = failover::evacuate::parallel(req)?;
    let own = &agent.ownership;
    if peer_state(agent, host) != Some(PeerState::Alive) {
        return Err(EvacuateError::NotAlive(host.to_string()));
    }
    let items = failover::evacuate::restore_items(&own.events(), &own.table(), host)?;
    begin(agent, host, Mode::Restore, parallel, items)
}

fn begin(
    agent: &Arc<Agent>,
    host: &str,
    mode: Mode,
    parallel: usize,
    items: Vec<(String, Option<String>, u64)>,
) -> Result<Job, EvacuateError> {
    let names: Vec<String> = items.iter().map(|(v, _, _)| v.clone()).collect();
    let job = agent.evacuations.begin(host, mode, parallel, &names)?;
    tracing::warn!(host, mode = mode.as_str(), vservers = items.len(), parallel, "evacuation begins");
    let (agent, host) = (Arc::clone(agent), host.to_string());
    tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for (vserver, from, epoch) in items {
            let (agent, host, gate) = (Arc::clone(&agent), host.clone(), Arc::clone(&gate));
            tasks.spawn(async move {
                let _turn = gate.acquire_owned().await;
                let jobs = &agent.evacuations;
                jobs.update(&host, &vserver, |i| i.state = "moving".into());
                let result = match mode {
                    Mode::Restore => {
                        let from = from.expect("a restore knows where each vserver is");
                        move_live(&agent, &vserver, &from, &host).await.map(|d| (host.clone(), d))
                    }
                    Mode::Takeover => {
                        let coordinator = super::takeover::AgentHost(Arc::clone(&agent));
                        let timeout = agent.config.takeover_timeout();
                        failover::evacuate::take_over_dead(&coordinator, &vserver, &host, epoch, timeout).await
                    }
                    Mode::Migrate => match target(&agent, &vserver, &host) {
                        Ok(to) => move_live(&agent, &vserver, &host, &to).await.map(|d| (to, d)),
                        Err(e) => Err(e),
                    },
                };
                match &result {
                    Ok((to, detail)) => jobs.update(&host, &vserver, |i| {
                        i.state = "done".into();
                        i.to = Some(to.clone());
                        i.detail = Some(detail.clone());
                    }),
                    Err(e) => jobs.update(&host, &vserver, |i| {
                        i.state = "failed".into();
                        i.detail = Some(e.clone());
                    }),
                }
                result.ok().map(|(to, _)| (vserver, to))
            });
        }
        let mut moved = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(m)) = done {
                moved.push(m);
            }
        }
        if mode != Mode::Restore && !moved.is_empty() {
            let text = failover::evacuate::record(&host, moved);
            let _ = agent.ownership.log(super::events::kinds::EVACUATE, None, &text).await;
        }
        agent.evacuations.finish(&host);
        tracing::warn!(host, mode = mode.as_str(), "evacuation ended");
    });
    Ok(job)
}

/// The first live standby of the vserver's placement other than `host`.
fn target(agent: &Agent, vserver: &str, host: &str) -> Result<String, String> {
    let name = VserverName::parse(vserver).map_err(|e| e.to_string())?;
    let placement = agent.replication.placement(&name).ok_or("not in the cluster configuration")?;
    failover::evacuate::target(&placement, host, |h| peer_state(agent, h) == Some(PeerState::Alive))
}

/// Migrates `vserver` from `from` to `to` through `from`'s agent, and waits for the end; the outage in words.
async fn move_live(agent: &Arc<Agent>, vserver: &str, from: &str, to: &str) -> Result<String, String> {
    let name = VserverName::parse(vserver).map_err(|e| e.to_string())?;
    if from == agent.config.node {
        super::migrate::start(agent, &name, MigrateRequest { target: to.to_string() })
            .await
            .map_err(|e| e.to_string())?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(m) = agent.migrations.get(&name).filter(|m| m.finished) {
                return failover::evacuate::outcome(&m);
            }
        }
    }
    let req = MigrateRequest { target: to.to_string() };
    match agent.peers.migrate(from, vserver, &req, Duration::from_secs(30)).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return Err(format!("{from} refused the migrate ({}): {}", refused.status, refused.reason)),
        Err(e) => return Err(format!("cannot ask {from} to migrate it: {e}")),
    }
    let mut unanswered = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match agent.peers.migration(from, vserver, Duration::from_secs(5)).await {
            Ok(Ok(m)) => {
                unanswered = 0;
                if m.finished {
                    return failover::evacuate::outcome(&m);
                }
            }
            _ => {
                unanswered += 1;
                if unanswered > 100 {
                    return Err(format!("{from} stopped answering about the migrate"));
                }
            }
        }
    }
}
