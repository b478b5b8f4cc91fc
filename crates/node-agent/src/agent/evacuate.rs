//! Evacuate and restore a host through this agent (`POST /v1/hosts/HOST/evacuate`, `.../restore`): the
//! rules and the job (which mode, which vservers, where each goes, a few at a time, the takeover of a dead
//! host's, the record of its moves) are [`failover::evacuate`]'s; this checks the request against this host's
//! configuration and lends the job this host's migrates. The job is shown by `GET /v1/hosts/HOST/evacuation`.

use std::sync::Arc;
use std::time::Duration;

use failover::evacuate::{EvacuateError, EvacuateRequest, Job, Jobs, Mode};
use failover::wire::{MigrateRequest, MigrationStatus};
use isolate::VserverName;

use super::node::Agent;
use super::takeover::AgentHost;
use crate::model::PeerState;

fn known_host(agent: &Agent, host: &str) -> Result<(), EvacuateError> {
    super::config::check_node_name(host).map_err(EvacuateError::HostName)?;
    if host == agent.config.node || agent.peers.knows(host) {
        Ok(())
    } else {
        Err(EvacuateError::UnknownHost(host.to_string()))
    }
}

/// What this host knows of `host`: its state, or an error naming the voters when this host does not hear its
/// heartbeats (with its maintenance): a voter hears every host, another host only its partners.
fn peer_state(agent: &Agent, host: &str) -> Result<Option<PeerState>, EvacuateError> {
    if host == agent.config.node {
        return Ok(Some(PeerState::Alive));
    }
    let mut voters = agent.ownership.lease_voters();
    voters.sort();
    if !voters.contains(&agent.config.node) && !agent.partners().contains(host) {
        return Err(EvacuateError::NotWatched(host.to_string(), voters));
    }
    Ok(agent.membership.peers().into_iter().find(|p| p.name == host).map(|p| p.state))
}

/// Starts evacuating `host`; answers the job as it begins.
pub fn evacuate(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, EvacuateError> {
    known_host(agent, host)?;
    let parallel = failover::evacuate::parallel(req)?;
    let own = &agent.ownership;
    let said_maintenance = agent.membership.peers().iter().any(|p| p.name == host && p.maintenance);
    let fencing_known = agent.config.quorum_fencing() || agent.config.takeover.fence_hook.is_some();
    let mode = failover::evacuate::mode(host, peer_state(agent, host)?, said_maintenance, req.fenced, fencing_known)?;
    let items = failover::evacuate::evacuation_items(&own.table(), host);
    begin(agent, host, mode, parallel, req.fenced, items)
}

/// Starts moving back to `host` what its last evacuation moved away (those still where it put them).
pub fn restore(agent: &Arc<Agent>, host: &str, req: &EvacuateRequest) -> Result<Job, EvacuateError> {
    known_host(agent, host)?;
    let parallel = failover::evacuate::parallel(req)?;
    let own = &agent.ownership;
    if peer_state(agent, host)? != Some(PeerState::Alive) {
        return Err(EvacuateError::NotAlive(host.to_string()));
    }
    let items = failover::evacuate::restore_items(&own.events(), &own.table(), host)?;
    begin(agent, host, Mode::Restore, parallel, false, items)
}

fn begin(
    agent: &Arc<Agent>,
    host: &str,
    mode: Mode,
    parallel: usize,
    fenced: bool,
    items: Vec<(String, Option<String>, u64)>,
) -> Result<Job, EvacuateError> {
    let names: Vec<String> = items.iter().map(|(v, _, _)| v.clone()).collect();
    let job = agent.evacuations.begin(host, mode, parallel, &names)?;
    let runner = AgentHost(Arc::clone(agent));
    tokio::spawn(failover::evacuate::run(runner, host.to_string(), mode, parallel, fenced, items));
    Ok(job)
}

impl failover::evacuate::Runner for AgentHost {
    type Migrates = failover::peer::PeerClient;
    fn jobs(&self) -> &Jobs {
        &self.0.evacuations
    }
    fn migrates(&self) -> &Self::Migrates {
        &self.0.peers
    }
    fn dead_after(&self) -> Duration {
        self.0.config.takeover_timeout()
    }
    async fn migrate_here(&self, vserver: &str, to: &str) -> Result<(), String> {
        let name = VserverName::parse(vserver).map_err(|e| e.to_string())?;
        super::migrate::start(&self.0, &name, MigrateRequest { target: to.to_string() })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    fn migration_here(&self, vserver: &str) -> Option<MigrationStatus> {
        self.0.migrations.get(&VserverName::parse(vserver).ok()?)
    }
}
