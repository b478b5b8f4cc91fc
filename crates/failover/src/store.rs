//! The replicas a standby holds: for each vserver, two generations used in turn, of which at most one is
//! current. A sync always fills the generation that is not current; it becomes current only after a clean
//! finish, by an atomic rename of the `current` link, with a record of its source, its start time and the conf
//! it carries. So a takeover always starts from a complete copy, whatever happened to the last sync.
//!
//! ```text
//! REPLICA_DIR/NAME/a/tree/            the vserver's tree, as of one sync
//! REPLICA_DIR/NAME/a/conf/NAME.conf   its conf (and NAME.sh), from the same sync
//! REPLICA_DIR/NAME/a/meta.json        written last: the generation is complete
//! REPLICA_DIR/NAME/b/...              the other generation (being filled, stale, or absent)
//! REPLICA_DIR/NAME/current -> a       the complete generation a takeover starts from
//! ```
//!
//! The replica directory lives on the file system of the vservers' trees (by default `/vservers/.replicas`),
//! so promoting a replica to the running tree, and keeping a tree aside as a replica, are renames. The conf
//! dir may be on another file system (`/etc` on `/`): a conf file that cannot be renamed across is copied
//! (content, mode, owner, times), synced, renamed into place beside its destination, and its source removed
//! only once the whole step holds. Each step that moves things ([`promote`](ReplicaStore::promote),
//! [`keep`](ReplicaStore::keep), [`set_aside`](ReplicaStore::set_aside)) puts back what it moved when a
//! later part of it fails, so a failure leaves the replica as it was: `current` names a complete generation.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{lchown, symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use isolate::VserverName;
use serde::{Deserialize, Serialize};

/// The two generations of a vserver's replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Generation `a`.
    A,
    /// Generation `b`.
    B,
}

impl Slot {
    /// Its directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other generation.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

/// The record of a complete generation (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// The host the copy came from.
    pub source: String,
    /// When the sync started on the source, ms since the Unix epoch: the copy holds nothing newer.
    pub started_unix_ms: u64,
    /// When it finished, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// SHA-256 (hex) of the `NAME.conf` it carries.
    pub conf_sha256: String,
    /// Whether the last pass ran with the vserver frozen (one instant of it).
    #[serde(default)]
    pub consistent: bool,
    /// How the copy was made: `sync`, `migrate`, or `kept` (a tree kept aside when its host gave it up).
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_kind() -> String {
    "sync".into()
}

/// A complete generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Which one.
    pub slot: Slot,
    /// Its directory.
    pub dir: PathBuf,
    /// Its record.
    pub meta: GenerationMeta,
}

impl Generation {
    /// The copy of the tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
}

/// A generation being filled by a sync: never what a takeover starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    /// Which one.
    pub slot: Slot,
    /// Its directory (holds `tree/` and `conf/`).
    pub dir: PathBuf,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A conf file could not be moved: renamed, or (to another file system) copied into place.
    #[error("moving {} to {}: {source}", from.display(), to.display())]
    Move {
        /// Where it was.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A commit of a generation that does not hold what a vserver needs.
    #[error("generation {} is incomplete: {reason}", dir.display())]
    Incomplete {
        /// The generation.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// No complete generation to promote.
    #[error("no complete replica of {0} on this host")]
    NoReplica(String),
    /// A store whose trees cannot move into service by a rename.
    #[error(
        "the replica dir {} is not on the file system (and mount) of the vservers dir {}: a replica's tree goes \
         into service by a rename, which cannot cross; put replica_dir there (the default, VSERVERS_DIR/.replicas, is)",
        root.display(),
        vservers_dir.display()
    )]
    OtherFileSystem {
        /// The store's directory.
        root: PathBuf,
        /// The vservers dir.
        vservers_dir: PathBuf,
    },
    /// A promote or keep that would overwrite something.
    #[error("{} already exists; nothing was moved", .0.display())]
    Exists(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { what, path: path.to_path_buf(), source }
}

/// The replicas of this host.
#[derive(Debug, Clone)]
pub struct ReplicaStore {
    root: PathBuf,
}

impl ReplicaStore {
    /// The store under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks, at start, that trees move between this store and `vservers_dir` by a rename, as
    /// [`promote`](Self::promote) and [`keep`](Self::keep) need (same file system, same mount): tried with an
    /// empty directory, removed again. Creates the store's directory.
    pub fn check_beside(&self, vservers_dir: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(&self.root).map_err(io_err("creating", &self.root))?;
        let probe = format!(".rename-probe-{}", std::process::id());
        let (here, there) = (self.root.join(&probe), vservers_dir.join(&probe));
        let _ = fs::remove_dir(&here);
        let _ = fs::remove_dir(&there);
        fs::create_dir(&here).map_err(io_err("creating", &here))?;
        let moved = fs::rename(&here, &there);
        let _ = fs::remove_dir(&here);
        let _ = fs::remove_dir(&there);
        match moved {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                Err(StoreError::OtherFileSystem { root: self.root.clone(), vservers_dir: vservers_dir.to_path_buf() })
            }
            Err(e) => Err(io_err("moving a directory to", &there)(e)),
        }
    }

    fn dir(&self, name: &VserverName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// The points in time kept of `name` (see [`crate::points`]), oldest first.
    pub fn points(&self, name: &VserverName) -> Vec<crate::points::Point> {
        crate::points::list(&self.dir(name))
    }

    /// Makes a point in time of `name`'s current generation if one is due (none yet, or the newest is `every`
    /// old), then removes the oldest beyond `kept`. Returns the point made, if any. The caller keeps syncs of
    /// `name` from beginning meanwhile: the generation linked must not be the one a sync fills.
    pub fn point_if_due(
        &self,
        name: &VserverName,
        every: std::time::Duration,
        kept: usize,
    ) -> Result<Option<PathBuf>, StoreError> {
        let vdir = self.dir(name);
        let now = std::time::SystemTime::now();
        let made = match self.current(name)? {
            Some(g) if kept > 0 && crate::points::due(&vdir, every, now) => {
                Some(crate::points::make(&vdir, &g.dir, now).map_err(io_err("making a point in time in", &vdir))?)
            }
            _ => None,
        };
        crate::points::prune(&vdir, kept).map_err(io_err("removing old points in time in", &vdir))?;
        Ok(made)
    }

    /// The current (complete) generation of `name`, if any.
    pub fn current(&self, name: &VserverName) -> Result<Option<Generation>, StoreError> {
        let link = self.dir(name).join("current");
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &link)(e)),
        };
        let Some(slot) = target.to_str().and_then(Slot::parse) else {
            return Err(StoreError::Incomplete { dir: link, reason: format!("it points to {}", target.display()) });
        };
        let dir = self.dir(name).join(slot.as_str());
        match read_meta(&dir)? {
            // Without its tree (a promote cut short by a crash once the tree had moved), it is not complete.
            Some(meta) if dir.join("tree").is_dir() => Ok(Some(Generation { slot, dir, meta })),
            _ => Ok(None),
        }
    }

    /// Every vserver with a replica directory here, with its current generation.
    pub fn list(&self) -> Vec<(VserverName, Option<Generation>)> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let mut out: Vec<_> = entries
            .flatten()
            .filter_map(|e| VserverName::parse(e.file_name().to_str()?).ok())
            .map(|n| {
                let current = self.current(&n).ok().flatten();
                (n, current)
            })
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }

    /// Prepares the generation that is not current for a sync: its record is removed first (so it can never
    /// be taken for complete), its `tree/` and `conf/` exist. What it held stays, as the basis of the copy.
    pub fn begin(&self, name: &VserverName) -> Result<Staging, StoreError> {
        self.begin_in(name, self.next_slot(name)?)
    }

    /// The tree a sync of `name` would fill now (the generation that is not current), which may not exist.
    pub fn staging_tree(&self, name: &VserverName) -> Result<PathBuf, StoreError> {
        Ok(self.dir(name).join(self.next_slot(name)?.as_str()).join("tree"))
    }

    /// The generation a sync fills: the one that is not current (`a` when none is).
    fn next_slot(&self, name: &VserverName) -> Result<Slot, StoreError> {
        Ok(self.current(name)?.map_or(Slot::A, |g| g.slot.other()))
    }

    fn begin_in(&self, name: &VserverName, slot: Slot) -> Result<Staging, StoreError> {
        let vdir = self.dir(name);
        fs::create_dir_all(&vdir).map_err(io_err("creating", &vdir))?;
        let dir = vdir.join(slot.as_str());
        let meta = dir.join("meta.json");
        match fs::remove_file(&meta) {
            Ok(()) => sync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &meta)(e)),
        }
        for sub in ["tree", "conf"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        Ok(Staging { slot, dir })
    }

    /// Makes a filled staging generation current: checks it holds a tree and `NAME.conf` (whose digest must
    /// be the record's), writes its record, then renames the `current` link onto it. Until the rename, the
    /// previous generation stays current.
    pub fn commit(
        &self,
        name: &VserverName,
        staging: &Staging,
        mut meta: GenerationMeta,
    ) -> Result<Generation, StoreError> {
        let conf = staging.dir.join("conf").join(format!("{name}.conf"));
        let conf_text = fs::read(&conf).map_err(|e| StoreError::Incomplete {
            dir: staging.dir.clone(),
            reason: format!("{}: {e}", conf.display()),
        })?;
        let tree = staging.dir.join("tree");
        if !tree.is_dir() {
            return Err(StoreError::Incomplete { dir: staging.dir.clone(), reason: "no tree".into() });
        }
        meta.conf_sha256 = sha256_hex(&conf_text);
        write_atomic(&staging.dir.join("meta.json"), &serde_json::to_vec_pretty(&meta).expect("meta serializes"))?;
        self.link_current(name, staging.slot)?;
        Ok(Generation { slot: staging.slot, dir: staging.dir.clone(), meta })
    }

    /// Points `current` at `slot`, by an atomic rename of a new link onto it.
    fn link_current(&self, name: &VserverName, slot: Slot) -> Result<(), StoreError> {
        let vdir = self.dir(name);
        let tmp = vdir.join("current.new");
        let _ = fs::remove_file(&tmp);
        symlink(slot.as_str(), &tmp).map_err(io_err("linking", &tmp))?;
        let link = vdir.join("current");
        fs::rename(&tmp, &link).map_err(io_err("renaming onto", &link))?;
        sync_dir(&vdir)
    }

    /// Moves the current generation into service: its tree becomes `vservers_dir/NAME` (a rename) and its conf
    /// files go to `conf_dir` (renamed, or copied when `conf_dir` is on another file system), `NAME.conf` last.
    /// Refuses if the tree or one of the conf files already exist there. Only once all of it is in place is the
    /// generation consumed (no longer current); if any step fails, what moved is put back and the generation
    /// stays current and complete.
    pub fn promote(
        &self,
        name: &VserverName,
        vservers_dir: &Path,
        conf_dir: &Path,
    ) -> Result<GenerationMeta, StoreError> {
        let generation = self.current(name)?.ok_or_else(|| StoreError::NoReplica(name.to_string()))?;
        let tree_to = vservers_dir.join(name.as_str());
        let conf_from = generation.dir.join("conf");
        let main_conf = format!("{name}.conf");
        let mut files: Vec<_> = fs::read_dir(&conf_from)
            .map_err(io_err("reading", &conf_from))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("reading", &conf_from))?;
        // NAME.conf last: until it is in place, this host has no such vserver.
        files.sort_by_key(|f| (*f == *main_conf, f.clone()));
        for p in std::iter::once(tree_to.clone()).chain(files.iter().map(|f| conf_dir.join(f))) {
            if p.symlink_metadata().is_ok() {
                return Err(StoreError::Exists(p));
            }
        }
        fs::create_dir_all(conf_dir).map_err(io_err("creating", conf_dir))?;
        let tree = generation.tree();
        fs::rename(&tree, &tree_to).map_err(io_err("moving the tree to", &tree_to))?;
        let mut moves = ConfMoves::default();
        let link = self.dir(name).join("current");
        let placed = (|| {
            for f in &files {
                moves.file(&conf_from.join(f), &conf_dir.join(f), true)?;
            }
            sync_dir(vservers_dir)?;
            moves.sync()?;
            // The commit point: from here on, this generation is never started twice.
            fs::remove_file(&link).map_err(io_err("removing", &link))
        })();
        if let Err(e) = placed {
            moves.undo(name);
            if let Err(undo) = fs::rename(&tree_to, &tree) {
                tracing::error!(vserver = %name, error = %undo, from = %tree_to.display(), to = %tree.display(),
                                "cannot put the tree back into its replica after a failed promote");
            }
            return Err(e);
        }
        // Consumed: what is left of it (its record, the sources of copied conf files) is only tidied.
        let _ = fs::remove_file(generation.dir.join("meta.json"));
        // The points in time share the files of the tree now in service, which the vserver will write into.
        if let Err(e) = crate::points::retire(&self.dir(name)) {
            tracing::warn!(vserver = %name, error = %e, "cannot take the points in time out of the way; they share \
                           files with the tree in service and change with it");
        }
        let _ = sync_dir(&self.dir(name));
        if let Err(e) = moves.finish() {
            tracing::warn!(vserver = %name, error = %e, "promoted, but a copied conf file stays in the used replica");
        }
        Ok(generation.meta)
    }

    /// Takes a vserver out of service on this host and keeps it as this host's replica: its tree and conf
    /// files (`NAME.conf`, `NAME.sh`) move into the generation that is not current, which becomes current
    /// with `meta`. What that generation held before is removed. With no current generation (this host
    /// promoted one to run the vserver), the tree goes into the generation the promote emptied, so that the
    /// other one, an older copy, stays as the basis of the next sync into it instead of being removed and sent
    /// again in full. The vserver must not run. (Also undoes a [`promote`](Self::promote) whose vserver never
    /// ran here.) If a step fails before the commit, the tree and conf files are back in service and the
    /// replica is as it was; conf files copied from another file system leave `conf_dir` after the commit
    /// (a failure to remove one is reported, with the replica current).
    pub fn keep(
        &self,
        name: &VserverName,
        vservers_dir: &Path,
        conf_dir: &Path,
        meta: GenerationMeta,
    ) -> Result<Generation, StoreError> {
        let previous = self.current(name)?.map(|g| g.slot);
        let staging = match previous {
            Some(slot) => self.begin_in(name, slot.other())?,
            None => {
                let holds_tree = |slot: Slot| self.dir(name).join(slot.as_str()).join("tree").exists();
                let slot = if holds_tree(Slot::A) && !holds_tree(Slot::B) { Slot::B } else { Slot::A };
                self.begin_in(name, slot)?
            }
        };
        let old_tree = staging.dir.join("tree");
        let old_conf = staging.dir.join("conf");
        let trash = self.dir(name).join(format!(".discard-{}", std::process::id()));
        let _ = remove_all(&trash);
        fs::create_dir_all(&trash).map_err(io_err("creating", &trash))?;
        fs::rename(&old_tree, trash.join("tree")).map_err(io_err("setting aside", &old_tree))?;
        fs::rename(&old_conf, trash.join("conf")).map_err(io_err("setting aside", &old_conf))?;
        let tree_from = vservers_dir.join(name.as_str());
        let mut moves = ConfMoves::default();
        let mut tree_moved = false;
        let kept = (|| {
            fs::create_dir_all(&old_conf).map_err(io_err("creating", &old_conf))?;
            fs::rename(&tree_from, &old_tree).map_err(io_err("moving the tree from", &tree_from))?;
            tree_moved = true;
            for file in [format!("{name}.conf"), format!("{name}.sh")] {
                moves.file(&conf_dir.join(&file), &old_conf.join(&file), file.ends_with(".conf"))?;
            }
            sync_dir(vservers_dir)?;
            moves.sync()?;
            self.commit(name, &staging, meta)
        })();
        let generation = match kept {
            Ok(g) => g,
            Err(e) => {
                // Whatever the commit did goes first (its record, and the link if it got that far): the old
                // content coming back is not what that record describes.
                let _ = fs::remove_file(staging.dir.join("meta.json"));
                let link = self.dir(name).join("current");
                if fs::read_link(&link).is_ok_and(|t| t == Path::new(staging.slot.as_str())) {
                    let relinked = match previous {
                        Some(slot) => self.link_current(name, slot),
                        None => fs::remove_file(&link).map_err(io_err("removing", &link)),
                    };
                    if let Err(undo) = relinked {
                        tracing::error!(vserver = %name, error = %undo, "cannot point the replica back after a failed keep");
                    }
                }
                moves.undo(name);
                let mut back: Vec<(PathBuf, PathBuf)> = Vec::new();
                if tree_moved {
                    back.push((old_tree.clone(), tree_from));
                }
                back.push((trash.join("tree"), old_tree));
                let _ = remove_all(&old_conf);
                back.push((trash.join("conf"), old_conf));
                for (from, to) in back {
                    if let Err(undo) = fs::rename(&from, &to) {
                        tracing::error!(vserver = %name, error = %undo, from = %from.display(), to = %to.display(),
                                        "cannot put back what a failed keep moved");
                    }
                }
                let _ = fs::remove_dir(&trash);
                return Err(e);
            }
        };
        moves.finish()?;
        remove_all(&trash).map_err(io_err("removing", &trash))?;
        Ok(generation)
    }

    /// Moves a vserver's running tree and its conf files (`NAME.conf`, `NAME.sh`) out of the way, into
    /// `ROOT/NAME/aside/LABEL/{tree,conf}`, where nothing ever deletes them: a copy that diverged from the
    /// cluster's (its host lost the vserver to another) is kept for the operator. Returns that directory. If a
    /// conf file cannot be moved, the tree and the conf files are put back, as they were.
    pub fn set_aside(
        &self,
        name: &VserverName,
        vservers_dir: &Path,
        conf_dir: &Path,
        label: &str,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.dir(name).join("aside").join(label);
        let conf = dir.join("conf");
        fs::create_dir_all(&conf).map_err(io_err("creating", &conf))?;
        let tree_from = vservers_dir.join(name.as_str());
        let tree_to = dir.join("tree");
        let tree_moved = match fs::rename(&tree_from, &tree_to) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("moving the tree from", &tree_from)(e)),
        };
        let mut moves = ConfMoves::default();
        let set = (|| {
            for file in [format!("{name}.conf"), format!("{name}.sh")] {
                moves.file(&conf_dir.join(&file), &conf.join(&file), false)?;
            }
            sync_dir(vservers_dir)?;
            moves.sync()
        })();
        if let Err(e) = set {
            moves.undo(name);
            if tree_moved {
                if let Err(undo) = fs::rename(&tree_to, &tree_from) {
                    tracing::error!(vserver = %name, error = %undo, from = %tree_to.display(),
                                    "cannot put the tree back after a failed set-aside");
                }
            }
            return Err(e);
        }
        moves.finish()?;
        Ok(dir)
    }

    /// The copies kept aside for `name` (see [`set_aside`](Self::set_aside)), oldest first by label.
    pub fn aside(&self, name: &VserverName) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.dir(name).join("aside"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    }
}

/// Bytes the files of a tree take on disk (allocated blocks, so sparse files count what they hold), not
/// following symbolic links nor crossing into other file systems. A missing tree takes 0.
pub fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(root) else { return 0 };
    let dev = top.dev();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() && meta.dev() == dev {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Removes a tree that may be large; a missing one is fine.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Conf files being moved between the conf dir and a replica, which may be on different file systems. On the
/// same one a move is a rename; across, a copy placed beside its destination, the source staying until
/// [`finish`](Self::finish). Until then [`undo`](Self::undo) puts everything back.
#[derive(Default)]
struct ConfMoves {
    done: Vec<ConfMove>,
}

struct ConfMove {
    from: PathBuf,
    to: PathBuf,
    /// A copy (the source is still there), not a rename.
    copied: bool,
}

impl ConfMoves {
    /// Moves `from` to `to`, which must not exist. A missing `from` is an error when `required`, else skipped.
    fn file(&mut self, from: &Path, to: &Path, required: bool) -> Result<(), StoreError> {
        let failed = |source| StoreError::Move { from: from.to_path_buf(), to: to.to_path_buf(), source };
        // Looked for first: across file systems, rename(2) says EXDEV before it looks for its source.
        match from.symlink_metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(()),
            Err(e) => return Err(failed(e)),
            Ok(_) => {}
        }
        match fs::rename(from, to) {
            Ok(()) => self.done.push(ConfMove { from: from.to_path_buf(), to: to.to_path_buf(), copied: false }),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                copy_into_place(from, to).map_err(failed)?;
                self.done.push(ConfMove { from: from.to_path_buf(), to: to.to_path_buf(), copied: true });
            }
            Err(e) => return Err(failed(e)),
        }
        Ok(())
    }

    /// Every directory a move touched.
    fn dirs(&self) -> BTreeSet<&Path> {
        self.done.iter().flat_map(|m| [m.from.parent(), m.to.parent()]).flatten().collect()
    }

    /// Makes the moves so far durable (the copies are already synced, with their directories).
    fn sync(&self) -> Result<(), StoreError> {
        self.dirs().into_iter().try_for_each(sync_dir)
    }

    /// Puts every file back where it was (renamed back; a copy removed). Best effort: a failure is logged, the
    /// error being reported is the one that made the caller undo.
    fn undo(self, name: &VserverName) {
        for m in self.done.iter().rev() {
            let undone = if m.copied { fs::remove_file(&m.to) } else { fs::rename(&m.to, &m.from) };
            if let Err(e) = undone {
                tracing::error!(vserver = %name, error = %e, from = %m.from.display(), to = %m.to.display(),
                                "cannot put a conf file back");
            }
        }
        for dir in self.dirs() {
            let _ = sync_dir(dir);
        }
    }

    /// Removes the sources of the copies: the move is done.
    fn finish(self) -> Result<(), StoreError> {
        for m in self.done.iter().filter(|m| m.copied) {
            match fs::remove_file(&m.from) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &m.from)(e)),
                _ => {}
            }
        }
        self.dirs().into_iter().try_for_each(sync_dir)
    }
}

/// Copies `from` (a regular file or a symbolic link) to `to` on another file system: a temporary file beside
/// `to` gets the content, owner, mode and access and modification times, is synced and renamed onto `to`, and
/// the directory synced. `to` is never seen torn; on a failure the temporary file is removed.
fn copy_into_place(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let file_name = to.file_name().map_or_else(|| "conf".into(), |f| f.to_string_lossy());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let copied = (|| {
        let meta = fs::symlink_metadata(from)?;
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(from)?, &tmp)?;
            lchown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
        } else if meta.is_file() {
            let mut src = fs::File::open(from)?;
            let mut dst = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            io::copy(&mut src, &mut dst)?;
            std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
            // After the owner: a change of owner clears the set-id bits.
            dst.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            dst.set_times(fs::FileTimes::new().set_accessed(meta.accessed()?).set_modified(meta.modified()?))?;
            dst.sync_all()?;
        } else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither a regular file nor a symbolic link"));
        }
        fs::rename(&tmp, to)
    })();
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    copied?;
    fs::File::open(dir).and_then(|d| d.sync_all())
}

fn read_meta(dir: &Path) -> Result<Option<GenerationMeta>, StoreError> {
    let path = dir.join("meta.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Incomplete { dir: dir.to_path_buf(), reason: format!("{}: {e}", path.display()) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err("writing", &tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming onto", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> VserverName {
        VserverName::parse(n).unwrap()
    }

    fn meta(source: &str) -> GenerationMeta {
        GenerationMeta {
            source: source.into(),
            started_unix_ms: 1,
            finished_unix_ms: 2,
            conf_sha256: String::new(),
            consistent: false,
            kind: "sync".into(),
        }
    }

    fn fill(staging: &Staging, name: &str, content: &str) {
        fs::write(staging.dir.join("tree").join("file"), content).unwrap();
        fs::write(staging.dir.join("conf").join(format!("{name}.conf")), format!("# {content}\n")).unwrap();
    }

    #[test]
    fn syncs_alternate_and_only_a_commit_changes_what_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::new(dir.path().join("replicas"));
        let web = name("web");
        assert!(store.current(&web).unwrap().is_none());
        let s1 = store.begin(&web).unwrap();
        assert_eq!(s1.slot, Slot::A);
        fill(&s1, "web", "one");
        // Not committed: nothing is current.
        assert!(store.current(&web).unwrap().is_none());
        let g1 = store.commit(&web, &s1, meta("h0")).unwrap();
        assert_eq!(store.current(&web).unwrap().unwrap().slot, Slot::A);
        assert_eq!(g1.meta.conf_sha256, sha256_hex(b"# one\n"));

        // A second sync fills b; a crash half way leaves a current and complete.
        let s2 = store.begin(&web).unwrap();
        assert_eq!(s2.slot, Slot::B);
        fs::write(s2.dir.join("tree").join("file"), "half").unwrap();
        let cur = store.current(&web).unwrap().unwrap();
        assert_eq!((cur.slot, fs::read_to_string(cur.tree().join("file")).unwrap()), (Slot::A, "one".into()));
        // A new sync after the crash takes b again (never a).
        let s3 = store.begin(&web).unwrap();
        assert_eq!(s3.slot, Slot::B);
        fill(&s3, "web", "two");
        store.commit(&web, &s3, meta("h0")).unwrap();
        let cur = store.current(&web).unwrap().unwrap();
        assert_eq!((cur.slot, fs::read_to_string(cur.tree().join("file")).unwrap()), (Slot::B, "two".into()));
        // The next begin takes a, and removes its record before anything is written into it.
        let s4 = store.begin(&web).unwrap();
        assert_eq!(s4.slot, Slot::A);
        assert!(!s4.dir.join("meta.json").exists());
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn a_generation_without_its_conf_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::new(dir.path());
        let web = name("web");
        let s = store.begin(&web).unwrap();
        fs::write(s.dir.join("tree").join("file"), "x").unwrap();
        let err = store.commit(&web, &s, meta("h0")).unwrap_err();
        assert!(err.to_string().contains("web.conf"), "{err}");
        assert!(store.current(&web).unwrap().is_none());
    }

    /// A temporary host: its vservers and conf directories, and a replica store under the former.
    fn service_dirs() -> (tempfile::TempDir, PathBuf, PathBuf, ReplicaStore) {
        let dir = tempfile::tempdir().unwrap();
        let (vs, conf) = (dir.path().join("vservers"), dir.path().join("etc"));
        fs::create_dir_all(&vs).unwrap();
        fs::create_dir_all(&conf).unwrap();
        let store = ReplicaStore::new(vs.join(".replicas"));
        (dir, vs, conf, store)
    }

    #[test]
    fn promote_and_keep_move_trees_and_confs_by_rename() {
        let (_dir, vs, conf, store) = service_dirs();
        let web = name("web");
        let s = store.begin(&web).unwrap();
        fill(&s, "web", "one");
        fs::write(s.dir.join("conf").join("web.sh"), "#!/bin/sh\n").unwrap();
        store.commit(&web, &s, meta("h0")).unwrap();

        // Something in the way: refused, nothing moved.
        fs::write(conf.join("web.conf"), "mine").unwrap();
        assert!(matches!(store.promote(&web, &vs, &conf), Err(StoreError::Exists(_))));
        assert!(store.current(&web).unwrap().is_some());
        fs::remove_file(conf.join("web.conf")).unwrap();

        let m = store.promote(&web, &vs, &conf).unwrap();
        assert_eq!(m.source, "h0");
        assert_eq!(fs::read_to_string(vs.join("web").join("file")).unwrap(), "one");
        assert!(conf.join("web.conf").is_file() && conf.join("web.sh").is_file());
        assert!(store.current(&web).unwrap().is_none(), "a promoted replica is consumed");
        assert!(matches!(store.promote(&web, &vs, &conf), Err(StoreError::NoReplica(_))));

        // Kept aside again (this host gives the vserver up): it is the current replica once more.
        let g = store.keep(&web, &vs, &conf, GenerationMeta { kind: "kept".into(), ..meta("h1") }).unwrap();
        assert_eq!(fs::read_to_string(g.tree().join("file")).unwrap(), "one");
        assert!(!vs.join("web").exists() && !conf.join("web.conf").exists() && !conf.join("web.sh").exists());
        assert_eq!(store.current(&web).unwrap().unwrap().meta.kind, "kept");
        assert!(fs::read_dir(store.root().join("web"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".discard")));
    }

    #[test]
    fn keep_after_a_promote_spares_the_older_copy() {
        let (_dir, vs, conf, store) = service_dirs();
        let web = name("web");
        for (slot, text) in [(Slot::A, "one"), (Slot::B, "two")] {
            let s = store.begin(&web).unwrap();
            assert_eq!(s.slot, slot);
            fill(&s, "web", text);
            store.commit(&web, &s, meta("h0")).unwrap();
        }
        // b runs here; a, one change behind, stays.
        store.promote(&web, &vs, &conf).unwrap();
        let older = store.root().join("web").join("a").join("tree").join("file");
        assert_eq!(fs::read_to_string(&older).unwrap(), "one");
        // Given up again: the tree goes back into b, and a is still there as the next sync's basis.
        let g = store.keep(&web, &vs, &conf, GenerationMeta { kind: "kept".into(), ..meta("h1") }).unwrap();
        assert_eq!(g.slot, Slot::B);
        assert_eq!(fs::read_to_string(g.tree().join("file")).unwrap(), "two");
        assert_eq!(fs::read_to_string(&older).unwrap(), "one");
        let next = store.begin(&web).unwrap();
        assert_eq!(next.slot, Slot::A);
        assert_eq!(fs::read_to_string(next.dir.join("tree").join("file")).unwrap(), "one");
        assert_eq!(store.staging_tree(&web).unwrap(), next.dir.join("tree"));
    }

    /// Whether the test can mount a tmpfs (root); says so when it skips.
    fn can_mount(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped {test}: needs root, to mount a tmpfs as a file system of its own");
        }
        root
    }

    /// A tmpfs of `size` on a new directory `point`, unmounted when dropped.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(point: &Path, size: &str) -> Tmpfs {
            use nix::mount::{mount, MsFlags};
            fs::create_dir_all(point).unwrap();
            mount(Some("tmpfs"), point, Some("tmpfs"), MsFlags::empty(), Some(format!("size={size}").as_str()))
                .unwrap();
            Tmpfs(point.to_path_buf())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// A host whose vservers dir (with the replicas) and conf dir are on different file systems: one of them
    /// a tmpfs of `size` (`tmpfs_conf`: the conf dir, else the vservers dir), the other the temp dir's.
    struct TwoFs {
        // Unmounted before the temp dir goes (fields drop in order).
        _mount: Tmpfs,
        _dir: tempfile::TempDir,
        vs: PathBuf,
        conf: PathBuf,
        store: ReplicaStore,
    }

    fn two_fs(tmpfs_conf: bool, size: &str) -> TwoFs {
        let dir = tempfile::tempdir().unwrap();
        let (vs, conf) = (dir.path().join("vservers"), dir.path().join("etc"));
        let mount = Tmpfs::mount(if tmpfs_conf { &conf } else { &vs }, size);
        fs::create_dir_all(&vs).unwrap();
        fs::create_dir_all(&conf).unwrap();
        assert_ne!(fs::metadata(&vs).unwrap().dev(), fs::metadata(&conf).unwrap().dev());
        let store = ReplicaStore::new(vs.join(".replicas"));
        TwoFs { _mount: mount, _dir: dir, vs, conf, store }
    }

    /// A file's owner, mode and modification time, to compare a copy with its original (by stat alone).
    fn attrs(path: &Path) -> (u32, u32, u32, i64, i64) {
        let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (m.uid(), m.gid(), m.mode(), m.mtime(), m.mtime_nsec())
    }

    /// A file's access time, by stat alone (a read may change it).
    fn atime(path: &Path) -> (i64, i64) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.atime(), m.atime_nsec())
    }

    /// Gives `path` an owner, a mode and times of its own (as a conf edited long ago by another user).
    fn mark(path: &Path, mode: u32) {
        std::os::unix::fs::chown(path, Some(1234), Some(5678)).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        let at = |s| std::time::UNIX_EPOCH + std::time::Duration::new(s, 123_456_789);
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(at(1_000_000_000)).set_modified(at(1_100_000_000))).unwrap();
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> =
            fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    }

    /// A committed generation of `web`: `tree/file` holding `content`, `web.conf` and `web.sh` as given.
    fn committed(store: &ReplicaStore, content: &str, conf: &[u8], script: &[u8]) -> Generation {
        let web = name("web");
        let s = store.begin(&web).unwrap();
        fs::write(s.dir.join("tree").join("file"), content).unwrap();
        fs::write(s.dir.join("conf").join("web.conf"), conf).unwrap();
        fs::write(s.dir.join("conf").join("web.sh"), script).unwrap();
        store.commit(&web, &s, meta("h0")).unwrap()
    }

    #[test]
    fn a_copy_into_place_keeps_content_mode_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("web.sh"), dir.path().join("out").join("web.sh"));
        fs::create_dir(dir.path().join("out")).unwrap();
        fs::write(&from, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o750)).unwrap();
        let f = fs::File::options().write(true).open(&from).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7)))
            .unwrap();
        let before = (attrs(&from), atime(&from));
        copy_into_place(&from, &to).unwrap();
        assert_eq!((attrs(&to), atime(&to)), before);
        assert_eq!(fs::read(&to).unwrap(), b"#!/bin/sh\n");
        assert_eq!(names(&dir.path().join("out")), ["web.sh"], "no temporary file left");
        // A link is copied as a link.
        symlink("web.sh", dir.path().join("link")).unwrap();
        copy_into_place(&dir.path().join("link"), &dir.path().join("out").join("link")).unwrap();
        assert_eq!(fs::read_link(dir.path().join("out").join("link")).unwrap(), Path::new("web.sh"));
    }

    #[test]
    fn promote_keep_and_set_aside_move_confs_to_and_from_another_file_system() {
        if !can_mount("promote_keep_and_set_aside_move_confs_to_and_from_another_file_system") {
            return;
        }
        let h = two_fs(true, "16m");
        let web = name("web");
        let g = committed(&h.store, "one", b"# web\n", b"#!/bin/sh\n");
        mark(&g.dir.join("conf").join("web.conf"), 0o640);
        mark(&g.dir.join("conf").join("web.sh"), 0o750);
        let marked = (1_000_000_000, 123_456_789);
        let conf = attrs(&g.dir.join("conf").join("web.conf"));
        let script = attrs(&g.dir.join("conf").join("web.sh"));
        assert_eq!((conf.0, conf.1, conf.2 & 0o7777, conf.3), (1234, 5678, 0o640, 1_100_000_000));
        // Each move carries the owner, mode and both times; the content is read after the times (a read may
        // change the access time).
        let moved = |dir: &Path| {
            let (c, s) = (dir.join("web.conf"), dir.join("web.sh"));
            assert_eq!((attrs(&c), attrs(&s)), (conf, script), "{}", dir.display());
            let (ca, sa) = (atime(&c), atime(&s));
            assert_eq!(fs::read(&c).unwrap(), b"# web\n");
            assert_eq!(fs::read(&s).unwrap(), b"#!/bin/sh\n");
            (ca, sa)
        };

        // Promote: the tree by rename, the conf files copied across.
        h.store.promote(&web, &h.vs, &h.conf).unwrap();
        assert_eq!(fs::read_to_string(h.vs.join("web").join("file")).unwrap(), "one");
        assert_eq!(moved(&h.conf), (marked, marked));
        assert_eq!(names(&h.conf), ["web.conf", "web.sh"], "nothing else in the conf dir");
        assert!(names(&g.dir.join("conf")).is_empty(), "the sources left the replica");
        assert!(h.store.current(&web).unwrap().is_none(), "consumed");

        // Keep: back into the replica, across again.
        let times = (atime(&h.conf.join("web.conf")), atime(&h.conf.join("web.sh")));
        let kept = h.store.keep(&web, &h.vs, &h.conf, GenerationMeta { kind: "kept".into(), ..meta("h1") }).unwrap();
        // (web.conf's access time moves once it is there: the commit reads it for its digest.)
        assert_eq!(moved(&kept.dir.join("conf")).1, times.1);
        assert!(names(&h.conf).is_empty() && !h.vs.join("web").exists());
        assert_eq!(h.store.current(&web).unwrap().unwrap().meta.kind, "kept");

        // Set aside: promoted again, then moved out of the way, conf files across.
        h.store.promote(&web, &h.vs, &h.conf).unwrap();
        moved(&h.conf);
        let times = (atime(&h.conf.join("web.conf")), atime(&h.conf.join("web.sh")));
        let aside = h.store.set_aside(&web, &h.vs, &h.conf, "epoch3").unwrap();
        assert_eq!(fs::read_to_string(aside.join("tree").join("file")).unwrap(), "one");
        assert_eq!(moved(&aside.join("conf")), times);
        assert!(names(&h.conf).is_empty() && !h.vs.join("web").exists());
    }

    #[test]
    fn a_conf_without_its_script_moves_across_file_systems() {
        if !can_mount("a_conf_without_its_script_moves_across_file_systems") {
            return;
        }
        let h = two_fs(true, "16m");
        let web = name("web");
        fs::create_dir(h.vs.join("web")).unwrap();
        fs::write(h.vs.join("web").join("file"), "one").unwrap();
        fs::write(h.conf.join("web.conf"), "# web\n").unwrap();
        let kept = h.store.keep(&web, &h.vs, &h.conf, meta("h1")).unwrap();
        assert_eq!(names(&kept.dir.join("conf")), ["web.conf"]);
        h.store.promote(&web, &h.vs, &h.conf).unwrap();
        assert_eq!(names(&h.conf), ["web.conf"]);
        let aside = h.store.set_aside(&web, &h.vs, &h.conf, "epoch2").unwrap();
        assert_eq!(names(&aside.join("conf")), ["web.conf"]);
        assert!(names(&h.conf).is_empty());
        // Without its conf, a tree is not kept as a replica: refused, and left in service.
        let g = committed(&h.store, "two", b"# two\n", b"");
        h.store.promote(&web, &h.vs, &h.conf).unwrap();
        fs::remove_file(h.conf.join("web.conf")).unwrap();
        let err = h.store.keep(&web, &h.vs, &h.conf, meta("h1")).unwrap_err();
        assert!(matches!(&err, StoreError::Move { from, .. } if from.ends_with("web.conf")), "{err}");
        assert_eq!(fs::read_to_string(h.vs.join("web").join("file")).unwrap(), "two");
        assert!(h.store.current(&web).unwrap().is_none_or(|c| c.slot != g.slot));
    }

    #[test]
    fn a_replica_dir_trees_cannot_be_renamed_from_is_refused() {
        let (_dir, vs, _conf, store) = service_dirs();
        store.check_beside(&vs).unwrap();
        assert_eq!(names(&vs), [".replicas"], "the probe is gone");
        if !can_mount("a_replica_dir_trees_cannot_be_renamed_from_is_refused") {
            return;
        }
        let _mount = Tmpfs::mount(&vs.join(".replicas"), "1m");
        let err = store.check_beside(&vs).unwrap_err();
        assert!(matches!(err, StoreError::OtherFileSystem { .. }), "{err}");
        assert!(err.to_string().contains("replica_dir"), "{err}");
        assert_eq!(names(&vs), [".replicas"]);
        assert!(names(store.root()).is_empty());
    }

    #[test]
    fn a_promote_that_fails_half_way_leaves_the_replica_current_and_complete() {
        if !can_mount("a_promote_that_fails_half_way_leaves_the_replica_current_and_complete") {
            return;
        }
        // The conf dir holds 64 KiB: the tree moves, web.sh is copied, web.conf (last, 100 KiB) does not fit.
        let h = two_fs(true, "64k");
        let web = name("web");
        let big = vec![b'#'; 100 * 1024];
        let g = committed(&h.store, "one", &big, b"#!/bin/sh\n");
        let err = h.store.promote(&web, &h.vs, &h.conf).unwrap_err();
        assert!(
            matches!(&err, StoreError::Move { to, source, .. }
                if to.ends_with("web.conf") && source.raw_os_error() == Some(libc::ENOSPC)),
            "{err}"
        );
        assert!(err.to_string().contains("web.conf"), "{err}");
        // As it was: the same generation current, with its tree and both conf files; nothing in service.
        let cur = h.store.current(&web).unwrap().expect("still current");
        assert_eq!((cur.slot, &cur.meta), (g.slot, &g.meta));
        assert_eq!(fs::read_to_string(cur.tree().join("file")).unwrap(), "one");
        assert_eq!(fs::read(cur.dir.join("conf").join("web.conf")).unwrap(), big);
        assert_eq!(names(&cur.dir.join("conf")), ["web.conf", "web.sh"]);
        assert!(!h.vs.join("web").exists());
        assert!(names(&h.conf).is_empty(), "no conf file, copy or temporary file left: {:?}", names(&h.conf));
        // The next sync fills the other generation, never this one.
        assert_eq!(h.store.begin(&web).unwrap().slot, g.slot.other());
        // And a promote that can go through does.
        let roomy = h._dir.path().join("etc2");
        h.store.promote(&web, &h.vs, &roomy).unwrap();
        assert_eq!(fs::read(roomy.join("web.conf")).unwrap(), big);
    }

    #[test]
    fn a_keep_that_fails_half_way_leaves_the_vserver_in_service_and_the_replica_as_it_was() {
        if !can_mount("a_keep_that_fails_half_way_leaves_the_vserver_in_service_and_the_replica_as_it_was") {
            return;
        }
        // The vservers dir (and the replicas in it) holds 64 KiB: the tree moves by rename, web.conf is
        // copied in, web.sh (100 KiB) does not fit.
        let h = two_fs(false, "64k");
        let web = name("web");
        committed(&h.store, "one", b"# one\n", b"");
        let b = committed(&h.store, "two", b"# two\n", b"");
        fs::create_dir(h.vs.join("web")).unwrap();
        fs::write(h.vs.join("web").join("file"), "running").unwrap();
        let big = vec![b'#'; 100 * 1024];
        fs::write(h.conf.join("web.conf"), "# running\n").unwrap();
        fs::write(h.conf.join("web.sh"), &big).unwrap();
        let conf = attrs(&h.conf.join("web.conf"));

        let err = h.store.keep(&web, &h.vs, &h.conf, meta("h1")).unwrap_err();
        assert!(matches!(&err, StoreError::Move { from, .. } if from.ends_with("web.sh")), "{err}");
        // In service as before.
        assert_eq!(fs::read_to_string(h.vs.join("web").join("file")).unwrap(), "running");
        assert_eq!(attrs(&h.conf.join("web.conf")), conf);
        assert_eq!(fs::read(h.conf.join("web.conf")).unwrap(), b"# running\n");
        assert_eq!(fs::read(h.conf.join("web.sh")).unwrap(), big);
        // b still current and complete; a still holds its copy, the basis of the next sync into it.
        let cur = h.store.current(&web).unwrap().expect("still current");
        assert_eq!((cur.slot, &cur.meta), (b.slot, &b.meta));
        assert_eq!(fs::read_to_string(cur.tree().join("file")).unwrap(), "two");
        let a = h.store.root().join("web").join("a");
        assert_eq!(fs::read_to_string(a.join("tree").join("file")).unwrap(), "one");
        assert_eq!(names(&a.join("conf")), ["web.conf", "web.sh"], "a's conf back, no copy left");
        assert_eq!(names(&h.store.root().join("web")), ["a", "b", "current"], "no trash left");
    }

    #[test]
    fn a_set_aside_that_fails_half_way_leaves_the_vserver_in_place() {
        if !can_mount("a_set_aside_that_fails_half_way_leaves_the_vserver_in_place") {
            return;
        }
        let h = two_fs(false, "64k");
        let web = name("web");
        fs::create_dir(h.vs.join("web")).unwrap();
        fs::write(h.vs.join("web").join("file"), "diverged").unwrap();
        fs::write(h.conf.join("web.conf"), "# diverged\n").unwrap();
        fs::write(h.conf.join("web.sh"), vec![b'#'; 100 * 1024]).unwrap();
        let err = h.store.set_aside(&web, &h.vs, &h.conf, "epoch2").unwrap_err();
        assert!(matches!(&err, StoreError::Move { from, .. } if from.ends_with("web.sh")), "{err}");
        assert_eq!(fs::read_to_string(h.vs.join("web").join("file")).unwrap(), "diverged");
        assert_eq!(names(&h.conf), ["web.conf", "web.sh"]);
        let aside = h.store.root().join("web").join("aside").join("epoch2");
        assert!(!aside.join("tree").exists() && names(&aside.join("conf")).is_empty(), "nothing half aside");
        // Once there is room, it goes aside whole.
        fs::write(h.conf.join("web.sh"), "#!/bin/sh\n").unwrap();
        let aside = h.store.set_aside(&web, &h.vs, &h.conf, "epoch2").unwrap();
        assert_eq!(names(&aside.join("conf")), ["web.conf", "web.sh"]);
        assert!(names(&h.conf).is_empty() && !h.vs.join("web").exists());
    }
}
