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

/// One vserver's entry (`[vservers.NAME]` in the cluster file), and what the cluster's table records of a
/// protected vserver (`vserver-agent placement set`): the same keys, checked by [`check_entry`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VserverEntry {
    /// The host that runs it (its `NAME.conf` must be on that host). In the cluster's table: the host it was
    /// placed on; where it runs now is its owner's row.
    pub primary: String,
    /// The hosts that hold a copy, in the order a takeover tries them.
    #[serde(default)]
    pub standbys: Vec<String>,
    /// Overrides `[defaults] interval_secs` for this vserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
    /// Overrides `[defaults] consistent` for this vserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
    /// Where its tree and conf are: `periodic` (the default: copied to each standby by rsync at each
    /// interval), `continuous`, `shared` (on a file system every host mounts, under `shared_dir`) or `block`
    /// (its tree on `device`, which one host at a time mounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For `data = "shared"`: the directory, mounted at the same path on every host, that holds the tree
    /// `NAME/` and the conf `NAME.conf` (and `NAME.sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<PathBuf>,
    /// For `data = "block"`: the block device holding the tree's file system, by a name that is the same on
    /// every host (`/dev/disk/by-id/...`, `/dev/disk/by-path/...`, `/dev/rbd/POOL/IMAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// For `data = "block"`: the device's file system type (default ext4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// For `data = "continuous"`: milliseconds between two batches of changes shipped to the standbys
    /// (default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_ms: Option<u64>,
    /// For `data = "continuous"`: seconds between two points in time a standby keeps (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_every_secs: Option<u64>,
    /// For `data = "continuous"`: how many points in time a standby keeps (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_kept: Option<u32>,
}

impl VserverEntry {
    /// The entry with the file's `[defaults]` written into it (what the cluster's table records).
    pub fn with_defaults(mut self, defaults: &Defaults) -> Self {
        self.interval_secs.get_or_insert(defaults.interval_secs);
        self.consistent.get_or_insert(defaults.consistent);
        self
    }

    /// Its hosts, the primary first then the standbys in order.
    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.primary).chain(&self.standbys)
    }
}

/// Checks one entry against the cluster's `hosts` (the key, relative to the entry, and the reason when it is
/// wrong) and gives the vserver's placement (epoch 0) and replication settings; `defaults` fills what it
/// leaves out.
pub fn check_entry(
    entry: &VserverEntry,
    hosts: &BTreeSet<String>,
    defaults: &Defaults,
) -> Result<(Placement, Replication), (&'static str, String)> {
    let known = || hosts.iter().cloned().collect::<Vec<_>>().join(", ");
    if !hosts.contains(&entry.primary) {
        return Err(("primary", format!("unknown host {:?} (known: {})", entry.primary, known())));
    }
    let mut seen = BTreeSet::from([entry.primary.clone()]);
    for standby in &entry.standbys {
        if !hosts.contains(standby) {
            return Err(("standbys", format!("unknown host {standby:?} (known: {})", known())));
        }
        if !seen.insert(standby.clone()) {
            return Err(("standbys", format!("host {standby:?} is listed twice")));
        }
    }
    if entry.interval_secs == Some(0) {
        return Err(("interval_secs", "must be above 0".into()));
    }
    let data = data_path(entry)?;
    let replication = Replication {
        interval: Duration::from_secs(entry.interval_secs.unwrap_or(defaults.interval_secs)),
        consistent: entry.consistent.unwrap_or(defaults.consistent),
        data,
    };
    let placement = Placement { primary: entry.primary.clone(), standbys: entry.standbys.clone(), epoch: 0 };
    Ok((placement, replication))
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
    #[serde(deserialize_with = "crate::whole::exact")]
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
    /// Where its tree and conf are.
    pub data: DataPath,
}

impl Replication {
    /// Periodic replication at `interval`, live passes: the settings of a vserver the file does not name.
    pub fn periodic(interval: Duration) -> Self {
        Replication { interval, consistent: false, data: DataPath::Periodic }
    }
}

/// Where a vserver's tree and conf are, and so what a standby holds and what a takeover may lose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DataPath {
    /// On the primary; each standby gets a copy by rsync at each interval (what a crash loses: the writes since
    /// the last complete copy began).
    #[default]
    Periodic,
    /// On a file system every host mounts at the same path (NFS, CephFS, GlusterFS, OCFS2): no copy is made,
    /// the owner runs the vserver from `dir/NAME` with the conf `dir/NAME.conf` (nothing is lost).
    Shared {
        /// The shared directory.
        dir: PathBuf,
    },
    /// The tree is the file system of a block device every host reaches (an iSCSI or FC LUN, an RBD image),
    /// mounted only by the owner, inside the vserver's mount namespace; the conf is copied to the standbys.
    /// A takeover mounts it only once the old owner is certainly stopped: its fence hook (power) ran, or an
    /// operator said so.
    Block {
        /// The device, by a name that is the same on every host.
        device: PathBuf,
        /// Its file system type.
        fstype: String,
    },
    /// On the primary, like `Periodic`, but shipped as it changes: the primary's agent watches the tree
    /// (inotify) and sends what changed to each standby every `batch`, each batch committed whole; a full copy
    /// still runs at each interval and whenever the watch may have missed something (what a crash loses: the
    /// changes of the last batch or two). Standbys also keep points in time, for a mistake that reached them.
    Continuous {
        /// Time between two batches.
        batch: Duration,
        /// Time between two points in time a standby keeps.
        points_every: Duration,
        /// How many points in time a standby keeps.
        points_kept: usize,
    },
}

impl DataPath {
    /// Its name in `cluster.toml`, the status and the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DataPath::Periodic => "periodic",
            DataPath::Shared { .. } => "shared",
            DataPath::Block { .. } => "block",
            DataPath::Continuous { .. } => "continuous",
        }
    }
    /// Whether the tree is copied to the standbys (periodic and continuous paths copy it).
    pub fn copies_tree(&self) -> bool {
        matches!(self, DataPath::Periodic | DataPath::Continuous { .. })
    }
    /// The time between two batches, for `continuous`.
    pub fn batch(&self) -> Option<Duration> {
        match self {
            DataPath::Continuous { batch, .. } => Some(*batch),
            _ => None,
        }
    }
    /// How often a standby keeps a point in time, and how many, for `continuous`.
    pub fn points(&self) -> Option<(Duration, usize)> {
        match self {
            DataPath::Continuous { points_every, points_kept, .. } => Some((*points_every, *points_kept)),
            _ => None,
        }
    }
    /// The shared directory, for `shared`.
    pub fn shared_dir(&self) -> Option<&Path> {
        match self {
            DataPath::Shared { dir } => Some(dir),
            _ => None,
        }
    }
    /// Whether a takeover must know the old owner is stopped (powered off) before it starts the vserver: the
    /// device's file system must never be mounted by two hosts, and a host that only lost its lease may still
    /// write its cache to it.
    pub fn needs_power_fence(&self) -> bool {
        matches!(self, DataPath::Block { .. })
    }
}

/// The whole cluster configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// Each vserver's placement as configured (epoch 0).
    pub placements: BTreeMap<VserverName, Placement>,
    /// Each vserver's replication settings.
    pub replication: BTreeMap<VserverName, Replication>,
    /// Each vserver's entry as written, `[defaults]` filled in: what the cluster's table takes from the file.
    pub entries: BTreeMap<VserverName, VserverEntry>,
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
        let mut config = ClusterConfig::default();
        for (raw, entry) in file.vservers {
            let key = |k: &str| format!("vservers.{raw}.{k}");
            let name = VserverName::parse(&raw).map_err(|e| bad(format!("vservers.{raw}"), e.to_string()))?;
            let (placement, replication) =
                check_entry(&entry, hosts, &file.defaults).map_err(|(k, reason)| bad(key(k), reason))?;
            // A shared vserver's conf is on the shared file system, which the file cannot check here.
            if entry.primary == this_node && replication.data.shared_dir().is_none() && !has_conf(&name) {
                config.not_built.push(name.clone());
            }
            config.replication.insert(name.clone(), replication);
            config.placements.insert(name.clone(), placement);
            config.entries.insert(name, entry.with_defaults(&file.defaults));
        }
        Ok(config)
    }
}

/// `batch_ms` when not given.
pub const DEFAULT_BATCH_MS: u64 = 250;
/// The accepted `batch_ms`: a batch costs a session and an rsync run on each standby, so not more often than
/// every 50 ms; and continuous replication slower than a minute is the periodic path.
pub const BATCH_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
/// `points_every_secs` when not given.
pub const DEFAULT_POINTS_EVERY_SECS: u64 = 900;
/// The accepted `points_every_secs` (from a minute to a week).
pub const POINTS_EVERY_SECS: std::ops::RangeInclusive<u64> = 60..=7 * 24 * 3600;
/// `points_kept` when not given.
pub const DEFAULT_POINTS_KEPT: u32 = 8;
/// The most points in time a standby keeps of one vserver.
pub const MAX_POINTS_KEPT: u32 = 1000;

/// Checks that `p`, the value of `key`, is an absolute path without `..`: the key and why when it is not.
pub fn check_absolute<'k>(key: &'k str, p: &Path) -> Result<(), (&'k str, String)> {
    if p.is_absolute() && p.components().all(|c| !matches!(c, std::path::Component::ParentDir)) {
        Ok(())
    } else {
        Err((key, format!("must be an absolute path without `..`, not {:?}", p.display().to_string())))
    }
}

/// The data path of one entry, or the key that is wrong and why.
fn data_path(entry: &VserverEntry) -> Result<DataPath, (&'static str, String)> {
    let absolute = check_absolute;
    let stray = |key: &'static str, set: bool, kind: &str| {
        if set {
            Err((key, format!("only a vserver with data = \"{kind}\" has it")))
        } else {
            Ok(())
        }
    };
    let kind = entry.data.as_deref().unwrap_or("periodic");
    if kind != "continuous" {
        stray("batch_ms", entry.batch_ms.is_some(), "continuous")?;
        stray("points_every_secs", entry.points_every_secs.is_some(), "continuous")?;
        stray("points_kept", entry.points_kept.is_some(), "continuous")?;
    }
    match kind {
        "periodic" => {
            stray("shared_dir", entry.shared_dir.is_some(), "shared")?;
            stray("device", entry.device.is_some(), "block")?;
            stray("fstype", entry.fstype.is_some(), "block")?;
            Ok(DataPath::Periodic)
        }
        "shared" => {
            stray("device", entry.device.is_some(), "block")?;
            stray("fstype", entry.fstype.is_some(), "block")?;
            let dir = entry.shared_dir.clone().ok_or((
                "shared_dir",
                "data = \"shared\" needs it: the directory \
                 every host mounts that holds the tree NAME/ and NAME.conf"
                    .to_string(),
            ))?;
            absolute("shared_dir", &dir)?;
            Ok(DataPath::Shared { dir })
        }
        "block" => {
            stray("shared_dir", entry.shared_dir.is_some(), "shared")?;
            let device = entry.device.clone().ok_or((
                "device",
                "data = \"block\" needs it: the block device holding the tree, named the same on every host".into(),
            ))?;
            absolute("device", &device)?;
            let fstype = entry.fstype.clone().unwrap_or_else(|| "ext4".into());
            if fstype.is_empty() || !fstype.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(("fstype", format!("{fstype:?} is not a file system type (e.g. ext4, xfs)")));
            }
            Ok(DataPath::Block { device, fstype })
        }
        "continuous" => {
            stray("shared_dir", entry.shared_dir.is_some(), "shared")?;
            stray("device", entry.device.is_some(), "block")?;
            stray("fstype", entry.fstype.is_some(), "block")?;
            let batch_ms = entry.batch_ms.unwrap_or(DEFAULT_BATCH_MS);
            if !BATCH_MS.contains(&batch_ms) {
                return Err((
                    "batch_ms",
                    format!(
                        "must be from {} to {} (milliseconds between two batches)",
                        BATCH_MS.start(),
                        BATCH_MS.end()
                    ),
                ));
            }
            let every = entry.points_every_secs.unwrap_or(DEFAULT_POINTS_EVERY_SECS);
            if !POINTS_EVERY_SECS.contains(&every) {
                return Err((
                    "points_every_secs",
                    format!(
                        "must be from {} to {} (seconds between two points in time)",
                        POINTS_EVERY_SECS.start(),
                        POINTS_EVERY_SECS.end()
                    ),
                ));
            }
            let kept = entry.points_kept.unwrap_or(DEFAULT_POINTS_KEPT);
            if kept > MAX_POINTS_KEPT {
                return Err(("points_kept", format!("must be at most {MAX_POINTS_KEPT} (0 keeps none)")));
            }
            Ok(DataPath::Continuous {
                batch: Duration::from_millis(batch_ms),
                points_every: Duration::from_secs(every),
                points_kept: kept as usize,
            })
        }
        other => Err(("data", format!("unknown data path {other:?} (periodic, continuous, shared or block)"))),
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
        assert_eq!(
            c.replication[&db],
            Replication { interval: Duration::from_secs(5), consistent: true, data: DataPath::Periodic }
        );
    }

    #[test]
    fn a_data_path_is_read_with_its_keys_and_refused_without_them() {
        let c = parse(
            "[vservers.web]\nprimary = \"h0\"\ndata = \"shared\"\nshared_dir = \"/srv/shared\"\n\
             [vservers.db]\nprimary = \"h1\"\ndata = \"block\"\ndevice = \"/dev/disk/by-id/wwn-1\"\n\
             [vservers.noconf]\nprimary = \"h0\"\ndata = \"shared\"\nshared_dir = \"/srv/shared\"\n",
        )
        .unwrap();
        let v = |n: &str| c.replication[&VserverName::parse(n).unwrap()].data.clone();
        assert_eq!(v("web"), DataPath::Shared { dir: "/srv/shared".into() });
        assert_eq!(v("db"), DataPath::Block { device: "/dev/disk/by-id/wwn-1".into(), fstype: "ext4".into() });
        assert!(c.not_built.is_empty(), "a shared vserver's conf is on the shared file system");
        assert!(v("db").needs_power_fence() && !v("web").needs_power_fence() && !v("web").copies_tree());
        let err = |t: &str| parse(&format!("[vservers.web]\nprimary = \"h0\"\n{t}")).unwrap_err().to_string();
        assert!(err("data = \"drbd\"\n").contains("`vservers.web.data`: unknown data path \"drbd\""));
        assert!(err("data = \"shared\"\n").contains("vservers.web.shared_dir"));
        assert!(err("data = \"shared\"\nshared_dir = \"srv\"\n").contains("absolute"));
        assert!(err("data = \"block\"\n").contains("vservers.web.device"));
        assert!(err("data = \"block\"\ndevice = \"/dev/sdb\"\nfstype = \"ext4;x\"\n").contains("vservers.web.fstype"));
        assert!(err("shared_dir = \"/srv\"\n").contains("only a vserver with data = \"shared\""));
        assert!(
            err("data = \"shared\"\nshared_dir = \"/srv\"\ndevice = \"/dev/sdb\"\n").contains("vservers.web.device")
        );
    }

    #[test]
    fn a_continuous_path_takes_its_defaults_and_checks_its_bounds() {
        let c = parse(
            "[vservers.web]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ndata = \"continuous\"\n\
             [vservers.db]\nprimary = \"h1\"\ndata = \"continuous\"\nbatch_ms = 1000\npoints_every_secs = 60\n\
             points_kept = 0\n",
        )
        .unwrap();
        let v = |n: &str| c.replication[&VserverName::parse(n).unwrap()].data.clone();
        assert_eq!(
            v("web"),
            DataPath::Continuous {
                batch: Duration::from_millis(250),
                points_every: Duration::from_secs(900),
                points_kept: 8
            }
        );
        assert_eq!(v("web").kind(), "continuous");
        assert!(v("web").copies_tree() && !v("web").needs_power_fence() && v("web").shared_dir().is_none());
        assert_eq!(v("db").batch(), Some(Duration::from_secs(1)));
        assert_eq!(v("db").points(), Some((Duration::from_secs(60), 0)));
        assert_eq!(DataPath::Periodic.batch(), None);
        let err = |t: &str| parse(&format!("[vservers.web]\nprimary = \"h0\"\n{t}")).unwrap_err().to_string();
        let e = err("data = \"continuous\"\nbatch_ms = 10\n");
        assert!(e.contains("`vservers.web.batch_ms`: must be from 50 to 60000"), "{e}");
        assert!(err("data = \"continuous\"\nbatch_ms = 60001\n").contains("vservers.web.batch_ms"));
        let e = err("data = \"continuous\"\npoints_every_secs = 5\n");
        assert!(e.contains("`vservers.web.points_every_secs`: must be from 60"), "{e}");
        assert!(err("data = \"continuous\"\npoints_kept = 1001\n").contains("vservers.web.points_kept"));
        let e = err("batch_ms = 300\n");
        assert!(e.contains("`vservers.web.batch_ms`: only a vserver with data = \"continuous\""), "{e}");
        assert!(err("data = \"shared\"\nshared_dir = \"/srv\"\npoints_kept = 2\n").contains("points_kept"));
        assert!(err("data = \"continuous\"\ndevice = \"/dev/sdb\"\n").contains("vservers.web.device"));
        assert!(err("data = \"continuous\"\nbatch_ms = -1\n").contains("batch_ms"));
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
