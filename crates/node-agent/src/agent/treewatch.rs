//! Watching a vserver's tree for changes as they happen (inotify), for continuous replication: every
//! directory of the tree has a watch, a directory that appears gets one (and everything under it), and each
//! event becomes the path it names, relative to the tree.
//!
//! What a path means to the copy that follows (rsync with `--files-from`, `-r` and `--delete-missing-args`): a
//! file names itself; a directory that appeared (created, or moved in) is copied with everything under it, so
//! what was created in it before its watch was added is not missed; a path that is gone (removed, moved away)
//! is removed from the copy, with everything under it. A change of the tree's top directory itself names
//! `.`, the whole tree.
//!
//! Like rsync's `-x`, the watch stays on the tree's file system. Changes inotify does not report (writes
//! through a shared memory mapping, changes made on a mount inside the tree) are copied only by the full
//! passes; a lost event (the kernel's queue overflowed) is reported as [`Change::Lost`], after which only a
//! full pass is sure to catch up.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// What the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A path relative to the tree that changed (`.` for the tree's top directory).
    Path(PathBuf),
    /// Events were lost (the queue overflowed, or the tree itself was moved or removed): what changed is not
    /// known.
    Lost,
}

/// The events a watch asks for on each directory. Not the ones reading causes (open, access, close of a file
/// not written): rsync reading the tree must not look like a change.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
        | AddWatchFlags::IN_ONLYDIR
        // No events for a file unlinked while still open: it is no longer in the tree.
        | AddWatchFlags::from_bits_retain(libc::IN_EXCL_UNLINK)
}

/// The directories of a tree being watched, by watch.
struct Dirs {
    inotify: Inotify,
    root: PathBuf,
    /// The tree's file system.
    dev: u64,
    /// Each watch's directory, relative to the root (empty for the root).
    by_watch: HashMap<WatchDescriptor, PathBuf>,
}

impl Dirs {
    /// Adds watches on `rel` and every directory under it (on the tree's file system, not following links).
    /// A directory that vanished meanwhile is skipped; running out of watches is an error.
    fn add(&mut self, rel: &Path) -> io::Result<()> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(rel) = stack.pop() {
            let abs = self.root.join(&rel);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() && m.dev() == self.dev => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let wd = match self.inotify.add_watch(&abs, mask()) {
                Ok(wd) => wd,
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => continue,
                Err(nix::errno::Errno::ENOSPC) => {
                    return Err(io::Error::other(format!(
                        "no inotify watch left for {} (raise the sysctl fs.inotify.max_user_watches)",
                        abs.display()
                    )))
                }
                Err(e) => return Err(io::Error::other(format!("watching {}: {e}", abs.display()))),
            };
            self.by_watch.insert(wd, rel.clone());
            let entries = match std::fs::read_dir(&abs) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(rel.join(entry.file_name()));
                }
            }
        }
        Ok(())
    }

    /// Forgets the watches of `rel` and of every directory under it (moved away: their events would carry
    /// the old names).
    fn remove(&mut self, rel: &Path) {
        let gone: Vec<WatchDescriptor> =
            self.by_watch.iter().filter(|(_, p)| p.starts_with(rel)).map(|(wd, _)| *wd).collect();
        for wd in gone {
            self.by_watch.remove(&wd);
            let _ = self.inotify.rm_watch(wd);
        }
    }
}

/// An inotify watch over a whole tree.
pub struct TreeWatch {
    fd: AsyncFd<std::os::fd::OwnedFd>,
    dirs: Dirs,
}

impl TreeWatch {
    /// Watches every directory of the tree at `root`. Blocking (it walks the tree): run it where blocking is
    /// allowed, inside the runtime.
    pub fn new(root: &Path) -> io::Result<Self> {
        let dev = std::fs::symlink_metadata(root)?.dev();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
        let mut dirs = Dirs { inotify, root: root.to_path_buf(), dev, by_watch: HashMap::new() };
        dirs.add(Path::new(""))?;
        // The events are read through a duplicate of the descriptor that the runtime polls.
        let fd = std::os::fd::AsFd::as_fd(&dirs.inotify).try_clone_to_owned()?;
        // SAFETY: the descriptor is owned by the AsyncFd, which never replaces nor closes it while registered.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Self { fd, dirs })
    }

    /// Directories watched.
    pub fn watched(&self) -> usize {
        self.dirs.by_watch.len()
    }

    /// Waits for events, and returns what they name (at least one change). An error (no watch left for a new
    /// directory) means the watch can no longer see every change.
    pub async fn next(&mut self) -> io::Result<Vec<Change>> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut changes = Vec::new();
            loop {
                match self.dirs.inotify.read_events() {
                    Ok(events) => {
                        for e in events {
                            self.dirs.event(e, &mut changes)?;
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            ready.clear_ready();
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

impl Dirs {
    /// What one event names, added to `out`; watches added or removed for directories that appeared or went.
    fn event(&mut self, e: nix::sys::inotify::InotifyEvent, out: &mut Vec<Change>) -> io::Result<()> {
        use AddWatchFlags as F;
        if e.mask.contains(F::IN_Q_OVERFLOW) {
            out.push(Change::Lost);
            return Ok(());
        }
        if e.mask.contains(F::IN_IGNORED) {
            self.by_watch.remove(&e.wd);
            return Ok(());
        }
        let Some(dir) = self.by_watch.get(&e.wd).cloned() else { return Ok(()) };
        let Some(name) = e.name else {
            // The watched directory itself.
            if dir.as_os_str().is_empty() && e.mask.intersects(F::IN_DELETE_SELF | F::IN_MOVE_SELF) {
                out.push(Change::Lost);
            } else if e.mask.contains(F::IN_ATTRIB) {
                out.push(Change::Path(if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir }));
            }
            return Ok(());
        };
        let rel = dir.join(name);
        if e.mask.contains(F::IN_ISDIR) {
            if e.mask.contains(F::IN_MOVED_FROM) {
                self.remove(&rel);
            }
            if e.mask.intersects(F::IN_CREATE | F::IN_MOVED_TO) {
                self.add(&rel)?;
            }
        }
        out.push(Change::Path(rel));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    /// Changes until `want` are all seen (or 10 s pass).
    async fn collect(w: &mut TreeWatch, want: &[&str]) -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let want: BTreeSet<PathBuf> = want.iter().map(PathBuf::from).collect();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !want.is_subset(&seen) {
            let got = tokio::time::timeout_at(deadline, w.next()).await.expect("events in time").unwrap();
            for c in got {
                if let Change::Path(p) = c {
                    seen.insert(p);
                }
            }
        }
        seen
    }

    #[tokio::test]
    async fn changes_anywhere_in_the_tree_are_named_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("data/deep")).unwrap();
        fs::write(root.join("data/deep/old"), "x").unwrap();
        let mut w = TreeWatch::new(&root).unwrap();
        assert_eq!(w.watched(), 3);
        fs::write(root.join("data/deep/old"), "y").unwrap();
        fs::write(root.join("top"), "z").unwrap();
        let seen = collect(&mut w, &["data/deep/old", "top"]).await;
        assert!(!seen.iter().any(|p| p.as_os_str().is_empty()), "{seen:?}");

        // A new directory gets watches, and what is created in it is seen.
        fs::create_dir_all(root.join("new/sub")).unwrap();
        collect(&mut w, &["new"]).await;
        fs::write(root.join("new/sub/file"), "1").unwrap();
        collect(&mut w, &["new/sub/file"]).await;

        // A directory moved keeps being watched under its new name; the old name is reported as gone.
        fs::rename(root.join("new"), root.join("data/moved")).unwrap();
        collect(&mut w, &["new", "data/moved"]).await;
        fs::write(root.join("data/moved/sub/file"), "2").unwrap();
        let seen = collect(&mut w, &["data/moved/sub/file"]).await;
        assert!(!seen.contains(Path::new("new/sub/file")), "{seen:?}");

        fs::remove_file(root.join("top")).unwrap();
        collect(&mut w, &["top"]).await;
        fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
        collect(&mut w, &["."]).await;
    }

    #[tokio::test]
    async fn reading_the_tree_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        let mut w = TreeWatch::new(dir.path()).unwrap();
        let _ = fs::read(dir.path().join("f")).unwrap();
        let _ = fs::read_dir(dir.path()).unwrap().count();
        fs::write(dir.path().join("marker"), "").unwrap();
        let got = w.next().await.unwrap();
        assert_eq!(got.first(), Some(&Change::Path("marker".into())), "{got:?}");
    }
}
