//! The example configuration shipped in `config/` stays valid: it parses without a warning and makes a spec.

use std::path::Path;

use isolate::spec::CgroupPlace;
use isolate::VserverName;
use node_agent::legacy_conf::LegacyConf;

#[test]
fn the_example_conf_parses_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/v1.conf");
    let (conf, warnings) = LegacyConf::load(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(conf.onboot);
    let spec = conf.to_spec(&VserverName::parse("v1").unwrap(), "/vservers/v1".into(), CgroupPlace::default()).unwrap();
    assert!(spec.flags.lock && spec.flags.sched);
    assert_eq!(spec.nproc, Some(1000));
    assert_eq!(spec.hostname.as_deref(), Some("v1.example.net"));
}

#[test]
fn the_example_hook_is_valid_shell() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/v1.sh");
    let st = std::process::Command::new("/bin/sh").arg("-n").arg(&path).status().unwrap();
    assert!(st.success());
}

#[test]
fn the_example_agent_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.toml");
    let config = node_agent::agent::config::AgentConfig::load(&path).unwrap();
    assert_eq!(config.node, "h1");
    assert_eq!(config.peers.len(), 2);
    assert_eq!(config.heartbeat.dead_after_ms, 1500);
}

#[test]
fn the_example_cluster_config_parses_against_the_example_agent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let agent = node_agent::agent::config::AgentConfig::load(&dir.join("agent.toml")).unwrap();
    let hosts = agent.peers.iter().map(|p| p.name.clone()).chain([agent.node.clone()]).collect();
    // h1 is the primary of v1, and v1.conf is beside it.
    let cluster = failover::placement::ClusterConfig::load(&dir.join("cluster.toml"), &hosts, &agent.node, |n| {
        dir.join(format!("{n}.conf")).is_file()
    })
    .unwrap();
    let v1 = VserverName::parse("v1").unwrap();
    assert_eq!(cluster.placements[&v1].primary, "h1");
    assert_eq!(cluster.placements[&v1].standbys, ["h2", "h3"]);
    assert_eq!(cluster.replication[&v1].interval, std::time::Duration::from_secs(60));
}
