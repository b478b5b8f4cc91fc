//! What changed in a tree since a moment, so that the last pass of a migrate (the vserver stopped, the outage
//! running) copies only that instead of comparing every file again.
//!
//! The test is the inode change time (`ctime`). The kernel sets it to the current time on every change of an
//! inode: data written or truncated, mode, owner, extended attributes and ACLs, times set (`utimensat`
//! included), a link added or removed, a rename. No system call sets it to a chosen value; only a step of the
//! system clock can make it lie, which the caller guards against (see [`ClockMark`]). A directory whose entries
//! changed (created, removed, renamed in or out) has a new ctime too.
//!
//! So, after a complete rsync pass that started at `T`, every path whose ctime is at or after `T` (less a
//! margin for the coarse clock the kernel stamps with) is what may differ from the copy: a changed directory
//! is listed whole (rsync then walks it with `-r` and deletes what it no longer holds, and a directory moved
//! into it arrives with everything under it), a changed file alone. The walk reads directory entries and one
//! `fstatat` per entry; it opens nothing but directories, does not follow symbolic links and stays on the
//! tree's file system (as `rsync -x`).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::dir::{Dir, OwningIter};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

/// How far before the pass's start a change still counts: the kernel stamps ctime from a clock that may lag
/// the one read here by a tick, and file systems with coarse timestamps round down.
pub const MARGIN: Duration = Duration::from_secs(2);

/// A moment to look for changes from, with what is needed to tell later whether the system clock was set
/// back since (which would let a later change carry an earlier ctime).
#[derive(Debug, Clone, Copy)]
pub struct ClockMark {
    wall: SystemTime,
    mono: Instant,
}

impl ClockMark {
    /// Now.
    pub fn now() -> Self {
        Self { wall: SystemTime::now(), mono: Instant::now() }
    }

    /// The wall clock time marked.
    pub fn wall(&self) -> SystemTime {
        self.wall
    }

    /// Whether the wall clock was set back since the mark (by more than the part of [`MARGIN`] a coarse
    /// timestamp does not need): ctimes are then not comparable with it.
    pub fn clock_set_back(&self) -> bool {
        let expected = self.wall + self.mono.elapsed();
        expected.duration_since(SystemTime::now()).is_ok_and(|behind| behind > MARGIN / 2)
    }
}

/// The paths that changed, relative to the tree's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The root itself changed (an entry added, removed or renamed at the top, or its attributes): nothing
    /// short of the whole tree will do.
    pub whole: bool,
    /// Changed directories (to be copied recursively, with deletion) and changed other files not under one,
    /// in the order of the walk.
    pub paths: Vec<PathBuf>,
    /// How many of `paths` are directories.
    pub dirs: usize,
    /// Entries looked at.
    pub scanned: u64,
}

impl Changes {
    /// The list for rsync's `--files-from` with `--from0`: each path followed by a NUL byte.
    pub fn files_from(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.paths {
            out.extend_from_slice(p.as_os_str().as_bytes());
            out.push(0);
        }
        out
    }
}

/// Why the changes could not be listed (the caller then copies the whole tree).
#[derive(Debug, thiserror::Error)]
#[error("cannot list what changed under {path}: {source}")]
pub struct ChangesError {
    /// The directory or entry that could not be read.
    pub path: PathBuf,
    /// What failed.
    pub source: nix::Error,
}

fn ctime(st: &FileStat) -> SystemTime {
    let ns = Duration::new(st.st_ctime.max(0) as u64, st.st_ctime_nsec.clamp(0, 999_999_999) as u32);
    if st.st_ctime < 0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + ns
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn open_dir(dir: Option<&OwningIter>, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir.map(|d| d.as_raw_fd()), name, flags, Mode::empty())?;
    // SAFETY: openat just returned this descriptor, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Lists what changed under `root` at or after `since` less [`MARGIN`]. Any entry that cannot be read is an
/// error: a list that might miss a change is never returned.
pub fn since(root: &Path, since: SystemTime) -> Result<Changes, ChangesError> {
    let from = since.checked_sub(MARGIN).unwrap_or(UNIX_EPOCH);
    let fail = |path: &Path| {
        let path = root.join(path);
        move |source| ChangesError { path, source }
    };
    let fd = open_dir(None, root.as_os_str()).map_err(fail(Path::new("")))?;
    let top = fstat(fd.as_raw_fd()).map_err(fail(Path::new("")))?;
    let mut changes = Changes { scanned: 1, ..Changes::default() };
    if ctime(&top) >= from {
        changes.whole = true;
        return Ok(changes);
    }
    let dir = Dir::from(fd).map_err(fail(Path::new("")))?;
    let mut stack: Vec<(OwningIter, PathBuf)> = vec![(dir.into_iter(), PathBuf::new())];
    while let Some((entries, rel)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let entry = entry.map_err(fail(rel))?;
        let name: &CStr = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let name = OsStr::from_bytes(name.to_bytes());
        let child = rel.join(name);
        let st = fstatat(Some(entries.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(fail(&child))?;
        changes.scanned += 1;
        let dir = is_dir(&st);
        if ctime(&st) >= from {
            changes.dirs += usize::from(dir);
            changes.paths.push(child);
            continue;
        }
        // An unchanged directory may hold changes; one on another file system is not looked into (rsync -x
        // copies its mount point only).
        if dir && st.st_dev == top.st_dev {
            let fd = open_dir(Some(entries), name).map_err(fail(&child))?;
            let dir = Dir::from(fd).map_err(fail(&child))?;
            stack.push((dir.into_iter(), child));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A mark that [`since`] reads as "30 ms from now": whatever exists now is older, whatever changes after
    /// a longer sleep is newer (the kernel's coarse clock lags by a few milliseconds at most).
    fn mark() -> SystemTime {
        std::thread::sleep(Duration::from_millis(10));
        SystemTime::now() + MARGIN + Duration::from_millis(30)
    }

    fn after_mark() {
        std::thread::sleep(Duration::from_millis(80));
    }

    #[test]
    fn nothing_changed_lists_nothing_and_a_changed_root_means_whole() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), "1").unwrap();
        let since = mark();
        let c = super::since(t.path(), since).unwrap();
        assert!(!c.whole && c.paths.is_empty(), "{c:?}");
        assert_eq!(c.scanned, 4);
        after_mark();
        fs::write(t.path().join("new"), "1").unwrap();
        let c = super::since(t.path(), since).unwrap();
        assert!(c.whole, "{c:?}");
    }

    #[test]
    fn changed_files_and_directories_are_listed_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["keep/deep", "edit", "del", "attr", "moved/sub"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["keep/deep/same", "edit/file", "del/gone", "attr/file", "moved/sub/f"] {
            fs::write(root.join(f), "1").unwrap();
        }
        let since = mark();
        after_mark();
        fs::write(root.join("edit/file"), "2").unwrap();
        fs::remove_file(root.join("del/gone")).unwrap();
        fs::set_permissions(root.join("attr/file"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        fs::rename(root.join("moved/sub"), root.join("keep/sub")).unwrap();
        let c = super::since(root, since).unwrap();
        let mut paths: Vec<_> = c.paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        paths.sort();
        // keep/sub is under keep, which changed (an entry came in): keep is listed whole, sub with it.
        assert_eq!(paths, ["attr/file", "del", "edit/file", "keep", "moved"], "{c:?}");
        assert_eq!(c.dirs, 3);
        assert!(!c.whole);
        let mut expected = Vec::new();
        for p in &c.paths {
            expected.extend_from_slice(p.as_os_str().as_bytes());
            expected.push(0);
        }
        assert_eq!(c.files_from(), expected);
    }

    #[test]
    fn an_unreadable_directory_is_an_error_not_a_shorter_list() {
        let t = tempfile::tempdir().unwrap();
        let err = super::since(&t.path().join("missing"), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_clock_set_back_is_noticed() {
        let m = ClockMark::now();
        assert!(!m.clock_set_back());
        let ahead = ClockMark { wall: SystemTime::now() + Duration::from_secs(10), mono: Instant::now() };
        assert!(ahead.clock_set_back(), "a mark 10 s ahead of the clock now means the clock went back");
    }
}
