//! A reload of agent.toml while the agent runs (SIGHUP, as `systemctl reload vserver-agent` sends): the keys
//! that can change without a restart take effect at once, the others are named in the journal as needing a
//! restart, and a file that no longer loads changes nothing.

use super::config::AgentConfig;
use super::node::Agent;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The keys applied.
    pub applied: Vec<&'static str>,
    /// The keys that changed but take effect at the next restart only.
    pub needs_restart: Vec<&'static str>,
}

/// The keys of `new` that differ from `old`: those a reload applies ([alerts], rsync's), and the others.
pub fn compare(old: &AgentConfig, new: &AgentConfig) -> Reloaded {
    let mut out = Reloaded::default();
    macro_rules! keys {
        ($list:ident: $($key:ident),*) => { $( if old.$key != new.$key { out.$list.push(stringify!($key)); } )* };
    }
    keys!(applied: alerts, rsync_timeout_secs, rsync_whole_file);
    keys!(needs_restart: node, listen, secret_file, monitor_secret_file, vservers_dir, conf_dir, run_dir, state_dir,
          cgroup_parent, vserver_bin, peers, heartbeat, restart, failures, fencing, takeover, announce, witness, tls,
          insecure_plain_http, cluster_file, replica_dir, rsync_bin);
    out
}

/// Reads agent.toml again and applies what can change while the agent runs; an error (the file no longer
/// loads) changes nothing.
pub fn reload(agent: &Agent) -> Result<Reloaded, String> {
    let new = AgentConfig::load(&agent.config_path).map_err(|e| e.to_string())?;
    // Compared with what is in force: the file as started, with the reloadable keys as last applied.
    let mut current = agent.config.clone();
    current.alerts = agent.alerts();
    let (timeout, whole_file) = agent.replication.rsync_settings();
    (current.rsync_timeout_secs, current.rsync_whole_file) = (timeout, whole_file);
    let reloaded = compare(&current, &new);
    *agent.alerts_config.write().unwrap_or_else(|p| p.into_inner()) = new.alerts.clone();
    agent.replication.set_rsync(new.rsync_timeout_secs, new.rsync_whole_file);
    Ok(reloaded)
}

/// Reloads at every SIGHUP, saying in the journal what it did. Runs until aborted.
pub async fn on_hangup(agent: std::sync::Arc<Agent>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        match reload(&agent) {
            Ok(r) => {
                let applied = if r.applied.is_empty() { "nothing changed".to_string() } else { r.applied.join(", ") };
                if r.needs_restart.is_empty() {
                    tracing::info!("{} reloaded: applied {applied}", agent.config_path.display());
                } else {
                    tracing::warn!(
                        "{} reloaded: applied {applied}; changed but applied at the next restart only: {}",
                        agent.config_path.display(),
                        r.needs_restart.join(", ")
                    );
                }
            }
            Err(e) => tracing::error!("{} not reloaded, nothing changed: {e}", agent.config_path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_tells_what_it_applies_from_what_needs_a_restart() {
        let text = "node = \"h0\"\nlisten = \"127.0.0.1:7070\"\nsecret_file = \"/s\"\n";
        let old = AgentConfig::parse(std::path::Path::new("a.toml"), text).unwrap();
        let changed = format!("{text}rsync_timeout_secs = 77\nlisten2 = 1\n");
        assert!(AgentConfig::parse(std::path::Path::new("a.toml"), &changed).is_err(), "unknown keys refused");
        let changed =
            format!("{}rsync_timeout_secs = 77\n[alerts]\nall = \"/bin/true\"\n", text.replace("7070", "7071"));
        let new = AgentConfig::parse(std::path::Path::new("a.toml"), &changed).unwrap();
        let r = compare(&old, &new);
        assert_eq!(r.applied, ["alerts", "rsync_timeout_secs"]);
        assert_eq!(r.needs_restart, ["listen"]);
        assert_eq!(compare(&old, &old), Reloaded::default());
    }
}
