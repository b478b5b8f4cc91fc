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
//! so promoting a replica to the running tree, and keeping a tree aside as a replica, are renames.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
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

    fn dir(&self, name: &VserverName) -> PathBuf {
        self.root.join(name.as_str())
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
            Some(meta) => Ok(Some(Generation { slot, dir, meta })),
            None => Ok(None),
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
        let vdir = self.dir(name);
        let tmp = vdir.join("current.new");
        let _ = fs::remove_file(&tmp);
        symlink(staging.slot.as_str(), &tmp).map_err(io_err("linking", &tmp))?;
        let link = vdir.join("current");
        fs::rename(&tmp, &link).map_err(io_err("renaming onto", &link))?;
        sync_dir(&vdir)?;
        Ok(Generation { slot: staging.slot, dir: staging.dir.clone(), meta })
    }

    /// Moves the current generation into service: its tree becomes `vservers_dir/NAME` and its conf files
    /// go to `conf_dir`, by renames. Refuses if the tree or `NAME.conf` already exist there. The generation
    /// is consumed (no longer current).
    pub fn promote(
        &self,
        name: &VserverName,
        vservers_dir: &Path,
        conf_dir: &Path,
    ) -> Result<GenerationMeta, StoreError> {
        let generation = self.current(name)?.ok_or_else(|| StoreError::NoReplica(name.to_string()))?;
        let tree_to = vservers_dir.join(name.as_str());
        let conf_to = conf_dir.join(format!("{name}.conf"));
        for p in [&tree_to, &conf_to] {
            if p.symlink_metadata().is_ok() {
                return Err(StoreError::Exists(p.clone()));
            }
        }
        // Unlink `current` first: from here on, this generation is never started twice.
        let link = self.dir(name).join("current");
        fs::remove_file(&link).map_err(io_err("removing", &link))?;
        let meta_file = generation.dir.join("meta.json");
        let _ = fs::remove_file(&meta_file);
        sync_dir(&self.dir(name))?;
        fs::create_dir_all(conf_dir).map_err(io_err("creating", conf_dir))?;
        let conf_from = generation.dir.join("conf");
        for entry in fs::read_dir(&conf_from).map_err(io_err("reading", &conf_from))?.flatten() {
            let to = conf_dir.join(entry.file_name());
            fs::rename(entry.path(), &to).map_err(io_err("moving the conf to", &to))?;
        }
        let tree = generation.tree();
        fs::rename(&tree, &tree_to).map_err(io_err("moving the tree to", &tree_to))?;
        sync_dir(vservers_dir)?;
        sync_dir(conf_dir)?;
        Ok(generation.meta)
    }

    /// Takes a vserver out of service on this host and keeps it as this host's replica: its tree and conf
    /// files (`NAME.conf`, `NAME.sh`) move into the generation that is not current, which becomes current
    /// with `meta`. What that generation held before is removed. With no current generation (this host
    /// promoted one to run the vserver), the tree goes into the generation the promote emptied, so that the
    /// other one, an older copy, stays as the basis of the next sync into it instead of being removed and sent
    /// again in full. The vserver must not run. (Also undoes a [`promote`](Self::promote) whose vserver never
    /// ran here.)
    pub fn keep(
        &self,
        name: &VserverName,
        vservers_dir: &Path,
        conf_dir: &Path,
        meta: GenerationMeta,
    ) -> Result<Generation, StoreError> {
        let staging = match self.current(name)? {
            Some(g) => self.begin_in(name, g.slot.other())?,
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
        fs::create_dir_all(&old_conf).map_err(io_err("creating", &old_conf))?;
        let tree_from = vservers_dir.join(name.as_str());
        fs::rename(&tree_from, &old_tree).map_err(io_err("moving the tree from", &tree_from))?;
        for file in [format!("{name}.conf"), format!("{name}.sh")] {
            let from = conf_dir.join(&file);
            match fs::rename(&from, old_conf.join(&file)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && file.ends_with(".sh") => {}
                Err(e) => return Err(io_err("moving the conf from", &from)(e)),
            }
        }
        sync_dir(vservers_dir)?;
        sync_dir(conf_dir)?;
        let generation = self.commit(name, &staging, meta)?;
        remove_all(&trash).map_err(io_err("removing", &trash))?;
        Ok(generation)
    }

    /// Moves a vserver's running tree and its conf files (`NAME.conf`, `NAME.sh`) out of the way, into
    /// `ROOT/NAME/aside/LABEL/{tree,conf}`, where nothing ever deletes them: a copy that diverged from the
    /// cluster's (its host lost the vserver to another) is kept for the operator. Returns that directory.
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
        match fs::rename(&tree_from, dir.join("tree")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("moving the tree from", &tree_from)(e)),
        }
        for file in [format!("{name}.conf"), format!("{name}.sh")] {
            let from = conf_dir.join(&file);
            match fs::rename(&from, conf.join(&file)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("moving the conf from", &from)(e)),
            }
        }
        sync_dir(vservers_dir)?;
        sync_dir(conf_dir)?;
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
}
