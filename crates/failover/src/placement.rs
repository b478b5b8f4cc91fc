//! Placement: for each vserver, its primary host, its ordered standbys and how it is replicated, from the
//! cluster configuration (`cluster.toml`, the same file on every host; `config/cluster.toml` is the commented
//! example). The file gives the initial placement; a migrate records a newer one (a higher epoch) in each
//! agent's state, which wins over the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use isolate::VserverName;
use serde::{Deserialize, Serialize};

/// A cluster configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a source: a chain would repeat it).
        error: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: key `{key}`: {reason}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`vservers.web.standbys`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Replication defaults for every vserver (`[defaults]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Seconds between two syncs of a vserver to its standbys (default 60).
    pub interval_secs: u64,
    /// Whether each sync ends with a short pass with the vserver frozen (default false).
    pub consistent: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { interval_secs: 60, consistent: false }
    }
}

/// One vserver's entry (`[vservers.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VserverEntry {
    /// The host that runs it (its `NAME.conf` must be on that host).
    primary: String,
    /// The hosts that hold a copy, in the order a takeover tries them.
    #[serde(default)]
    standbys: Vec<String>,
    /// Overrides `[defaults] interval_secs` for this vserver.
    interval_secs: Option<u64>,
    /// Overrides `[defaults] consistent` for this vserver.
    consistent: Option<bool>,
}

/// The cluster file as written, before it is checked: the keys it accepts (unknown ones are refused).
/// [`ClusterConfig::parse`] reads it and checks it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `[defaults]`: replication settings of every vserver.
    #[serde(default)]
    defaults: Defaults,
    /// `[vservers.NAME]`: one table per vserver.
    #[serde(default)]
    vservers: BTreeMap<String, VserverEntry>,
}

/// Where one vserver runs and where it is copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The host that runs it.
    pub primary: String,
    /// The hosts that hold a replica, in the order a takeover tries them.
    pub standbys: Vec<String>,
    /// Grows at every change of placement (0: as in the cluster file).
    pub epoch: u64,
}

impl Placement {
    /// The placement after moving the vserver to `target`: the old primary becomes the first standby, the
    /// other standbys keep their order, the epoch grows.
    pub fn moved_to(&self, target: &str) -> Placement {
        let mut standbys = vec![self.primary.clone()];
        standbys.extend(self.standbys.iter().filter(|s| *s != target && **s != self.primary).cloned());
        Placement { primary: target.to_string(), standbys, epoch: self.epoch + 1 }
    }
}

/// How one vserver is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// Time between two syncs.
    pub interval: Duration,
    /// Whether each sync ends with a frozen pass.
    pub consistent: bool,
}

/// The whole cluster configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// Each vserver's placement as configured (epoch 0).
    pub placements: BTreeMap<VserverName, Placement>,
    /// Each vserver's replication settings.
    pub replication: BTreeMap<VserverName, Replication>,
    /// Vservers whose primary is this host but whose conf is not here yet (placed before being built, as
    /// the README's order of setting up a cluster has it): replicated once built, a warning meanwhile.
    pub not_built: Vec<VserverName>,
}

impl ClusterConfig {
    /// Reads and checks `path`. `hosts` are the cluster's nodes (this agent and its peers); `has_conf` says
    /// whether a vserver's conf is on this host, and `this_node` is this host: a vserver whose primary is this
    /// host and has no conf here yet is listed in [`ClusterConfig::not_built`].
    pub fn load(
        path: &Path,
        hosts: &BTreeSet<String>,
        this_node: &str,
        has_conf: impl Fn(&VserverName) -> bool,
    ) -> Result<Self, PlacementError> {
        let text = std::fs::read_to_string(path).map_err(|error| PlacementError::Read { path: path.into(), error })?;
        Self::parse(path, &text, hosts, this_node, has_conf)
    }

    /// Parses and checks the text of `path` (see [`load`](Self::load)).
    pub fn parse(
        path: &Path,
        text: &str,
        hosts: &BTreeSet<String>,
        this_node: &str,
        has_conf: impl Fn(&VserverName) -> bool,
    ) -> Result<Self, PlacementError> {
        let file: ClusterFile =
            toml::from_str(text).map_err(|e| PlacementError::Syntax { path: path.into(), message: e.to_string() })?;
        let bad = |key: String, reason: String| PlacementError::Value { path: path.into(), key, reason };
        if file.defaults.interval_secs == 0 {
            return Err(bad("defaults.interval_secs".into(), "must be above 0".into()));
        }
        let known = || hosts.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut config = ClusterConfig::default();
        for (raw, entry) in file.vservers {
            let key = |k: &str| format!("vservers.{raw}.{k}");
            let name = VserverName::parse(&raw).map_err(|e| bad(format!("vservers.{raw}"), e.to_string()))?;
            if !hosts.contains(&entry.primary) {
                return Err(bad(key("primary"), format!("unknown host {:?} (known: {})", entry.primary, known())));
            }
            let mut seen = BTreeSet::from([entry.primary.clone()]);
            for standby in &entry.standbys {
                if !hosts.contains(standby) {
                    return Err(bad(key("standbys"), format!("unknown host {standby:?} (known: {})", known())));
                }
                if !seen.insert(standby.clone()) {
                    return Err(bad(key("standbys"), format!("host {standby:?} is listed twice")));
                }
            }
            if entry.interval_secs == Some(0) {
                return Err(bad(key("interval_secs"), "must be above 0".into()));
            }
            if entry.primary == this_node && !has_conf(&name) {
                config.not_built.push(name.clone());
            }
            config.replication.insert(
                name.clone(),
                Replication {
                    interval: Duration::from_secs(entry.interval_secs.unwrap_or(file.defaults.interval_secs)),
                    consistent: entry.consistent.unwrap_or(file.defaults.consistent),
                },
            );
            config.placements.insert(name, Placement { primary: entry.primary, standbys: entry.standbys, epoch: 0 });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> BTreeSet<String> {
        ["h0", "h1", "h2"].iter().map(|s| s.to_string()).collect()
    }

    fn parse(text: &str) -> Result<ClusterConfig, PlacementError> {
        ClusterConfig::parse(Path::new("cluster.toml"), text, &hosts(), "h0", |n| n.as_str() != "noconf")
    }

    #[test]
    fn placements_take_the_defaults_and_their_own_values() {
        let c = parse(
            "[defaults]\ninterval_secs = 30\n[vservers.web]\nprimary = \"h0\"\nstandbys = [\"h2\", \"h1\"]\n\
             [vservers.db]\nprimary = \"h1\"\nconsistent = true\ninterval_secs = 5\n",
        )
        .unwrap();
        let web = VserverName::parse("web").unwrap();
        assert_eq!(
            c.placements[&web],
            Placement { primary: "h0".into(), standbys: vec!["h2".into(), "h1".into()], epoch: 0 }
        );
        assert_eq!(c.replication[&web].interval, Duration::from_secs(30));
        let db = VserverName::parse("db").unwrap();
        assert_eq!(c.replication[&db], Replication { interval: Duration::from_secs(5), consistent: true });
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert!(err("[vservers.web]\nprimary = \"h9\"\n").contains("vservers.web.primary"));
        assert!(err("[vservers.web]\nprimary = \"h9\"\n").contains("unknown host \"h9\""));
        assert!(err("[vservers.web]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h1\"]\n").contains("listed twice"));
        assert!(err("[vservers.web]\nprimary = \"h0\"\nstandbys = [\"h0\"]\n").contains("listed twice"));
        assert!(err("[vservers.web]\nprimary = \"h0\"\nstandbys = [\"hx\"]\n").contains("vservers.web.standbys"));
        let placed_first = parse("[vservers.noconf]\nprimary = \"h0\"\n").unwrap();
        assert_eq!(placed_first.not_built, vec![VserverName::parse("noconf").unwrap()], "a warning, not a refusal");
        assert!(err("[vservers.\"a..b\"]\nprimary = \"h0\"\n").contains("vservers.a..b"));
        assert!(err("[vservers.web]\nprimary = \"h0\"\nbogus = 1\n").contains("bogus"));
        assert!(err("[defaults]\ninterval_secs = 0\n").contains("defaults.interval_secs"));
        // A vserver whose primary is another host needs no conf here.
        assert!(parse("[vservers.noconf]\nprimary = \"h1\"\n").is_ok());
    }

    #[test]
    fn a_move_makes_the_old_primary_the_first_standby() {
        let p = Placement { primary: "h0".into(), standbys: vec!["h1".into(), "h2".into()], epoch: 3 };
        let q = p.moved_to("h2");
        assert_eq!(q, Placement { primary: "h2".into(), standbys: vec!["h0".into(), "h1".into()], epoch: 4 });
    }
}
