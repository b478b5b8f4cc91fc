//! Announcements of a vserver's addresses (gratuitous ARP for IPv4, unsolicited neighbour advertisement for
//! IPv6), so that the neighbours on its segment point at the host that runs it: one as it starts (`vserver
//! NAME start` sends it), then, after a takeover or a migrate moved it here, `[announce] count - 1` more, `[announce] interval_ms` apart (one lost frame, or a switch that
//! learns late, is not left pointing at the old host); and one on command (`vserver NAME announce`,
//! `POST /v1/vservers/NAME/announce`).

use std::sync::Arc;
use std::time::Duration;

use isolate::VserverName;

use super::migrate::MigrateError;
use super::node::Agent;
use super::supervisor::SupervisorError;
use crate::lifecycle::LifecycleError;

impl Agent {
    /// Announces each address of `name` once; it must run here (and, with an ownership table, belong to this
    /// host). The addresses announced, as `dev:addr`.
    pub async fn announce_now(&self, name: &VserverName) -> Result<Vec<String>, MigrateError> {
        let host = self.supervisor.host().clone();
        if let Some((owner, epoch)) = self.ownership.owner(name.as_str()) {
            if owner != self.config.node {
                return Err(MigrateError::Conflict(format!(
                    "{name} does not run on {}: it belongs to {owner} (ownership epoch {epoch}), which announces it",
                    self.config.node
                )));
            }
        }
        if !host.dirs.conf(name).exists() {
            return Err(MigrateError::Supervisor(SupervisorError::NotFound(name.to_string())));
        }
        let n = name.clone();
        let result = tokio::task::spawn_blocking(move || host.announce(&n)).await.map_err(|e| {
            MigrateError::Supervisor(SupervisorError::Failed { name: name.to_string(), message: e.to_string() })
        })?;
        result.map_err(|e| match e {
            LifecycleError::NotRunning(_) => MigrateError::Conflict(format!(
                "{name} does not run on {}: nothing to announce (it is announced by the host that runs it)",
                self.config.node
            )),
            other => {
                MigrateError::Supervisor(SupervisorError::Failed { name: name.to_string(), message: other.to_string() })
            }
        })
    }

    /// After a takeover or a migrate started `name` here (which sent the first announcement): the further
    /// `[announce] count - 1`, `[announce] interval_ms` apart, in the background; they stop early if the
    /// vserver stops running here.
    pub fn announce_after_move(self: &Arc<Self>, name: &VserverName) {
        let (agent, name) = (Arc::clone(self), name.clone());
        let (count, every) = (self.config.announce.count, Duration::from_millis(self.config.announce.interval_ms));
        if count <= 1 {
            return;
        }
        tokio::spawn(async move {
            for sent in 1..count {
                tokio::time::sleep(every).await;
                match agent.announce_now(&name).await {
                    Ok(addrs) => tracing::debug!(vserver = %name, ?addrs, sent = sent + 1, count, "announced"),
                    Err(e) => {
                        tracing::info!(vserver = %name, error = %e, "no further announcement");
                        return;
                    }
                }
            }
        });
    }
}
