//! Where the agent listens, written for the `vserver` command (`RUN_DIR/agent.json`, see
//! `crate::announcement`).

use super::records::write_atomic;
use crate::agent::config::AgentConfig;
use crate::announcement::Announcement;

/// The announcement of an agent listening on `listen`: an unspecified address (0.0.0.0, ::) is reached
/// through loopback.
fn announcement(config: &AgentConfig, pid: u32) -> Announcement {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    Announcement {
        url: format!("{scheme}://{addr}"),
        pid: pid as i32,
        node: config.node.clone(),
        secret_file: std::fs::canonicalize(&config.secret_file).unwrap_or_else(|_| config.secret_file.clone()),
        start_ticks: isolate::state::process_start_ticks(pid as i32),
        socket: Some(crate::agent::serve::socket_path(&config.run_dir)),
    }
}

/// Writes where the agent listens, for the `vserver` command (`RUN_DIR/agent.json`).
pub fn announce(config: &AgentConfig) -> std::io::Result<()> {
    let ann = announcement(config, std::process::id());
    std::fs::create_dir_all(&config.run_dir)?;
    let path = Announcement::path(&config.run_dir);
    let text = serde_json::to_string_pretty(&ann).map_err(std::io::Error::other)?;
    write_atomic(&path, text.as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), url = %ann.url, "announced to the vserver command");
    Ok(())
}

/// Removes what [`announce`] wrote.
pub fn withdraw(config: &AgentConfig) {
    let path = Announcement::path(&config.run_dir);
    let ours = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Announcement>(&t).ok())
        .is_some_and(|a| a.pid == std::process::id() as i32);
    if ours {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot withdraw the announcement");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_announcement_reaches_an_unspecified_listen_address_through_loopback() {
        let text = "node = \"h1\"\nlisten = \"0.0.0.0:7070\"\nsecret_file = \"/nonexistent/secret\"\n";
        let config = AgentConfig::parse(Path::new("agent.toml"), text).unwrap();
        let ann = announcement(&config, std::process::id());
        assert_eq!(ann.url, "http://127.0.0.1:7070");
        assert_eq!((ann.node.as_str(), ann.pid), ("h1", std::process::id() as i32));
        let json = serde_json::to_value(&ann).unwrap();
        assert_eq!(json["secret_file"], "/nonexistent/secret");
        let back: Announcement = serde_json::from_value(json).unwrap();
        assert_eq!(back, ann);
        assert!(back.alive());
    }
}
