//! File attributes rsync cannot carry: the inode flags `chattr` sets (immutable, append-only, no-dump...).
//! A replica silently without them would start as a different system, so a sync looks for them in the source
//! tree and reports every file that has one.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The flags an operator sets with `chattr`, with their `lsattr` letters. Flags the file system sets by itself
/// (extents, indexed directories, inline data...) are not listed: they need no carrying.
const FLAGS: &[(u32, char)] = &[
    (0x0000_0001, 's'), // secure deletion
    (0x0000_0002, 'u'), // undeletable
    (0x0000_0004, 'c'), // compressed
    (0x0000_0008, 'S'), // synchronous updates
    (0x0000_0010, 'i'), // immutable
    (0x0000_0020, 'a'), // append only
    (0x0000_0040, 'd'), // no dump
    (0x0000_0080, 'A'), // no atime updates
    (0x0000_4000, 'j'), // data journalling
    (0x0000_8000, 't'), // no tail merging
    (0x0001_0000, 'D'), // synchronous directory updates
    (0x0002_0000, 'T'), // top of directory hierarchy
    (0x0080_0000, 'C'), // no copy on write
    (0x2000_0000, 'P'), // project hierarchy
];

nix::ioctl_read!(
    /// `FS_IOC_GETFLAGS`: the inode flags of an open file.
    get_flags,
    b'f',
    1,
    libc::c_long
);

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagReport {
    /// Files (relative to the tree) with flags rsync cannot carry, and those flags as `lsattr` letters.
    pub flagged: Vec<(PathBuf, String)>,
    /// Files and directories looked at.
    pub checked: u64,
    /// The file system does not support inode flags at all (nothing to carry).
    pub unsupported: bool,
}

impl FlagReport {
    /// A sentence for the operator when something cannot be carried, else `None`.
    pub fn warning(&self) -> Option<String> {
        if self.flagged.is_empty() {
            return None;
        }
        let shown: Vec<String> = self.flagged.iter().take(5).map(|(p, f)| format!("{} ({f})", p.display())).collect();
        let more = self.flagged.len().saturating_sub(shown.len());
        Some(format!(
            "{} file(s) have attributes rsync cannot copy (chattr flags; set them again on the replica by hand \
             after a takeover): {}{}",
            self.flagged.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ))
    }
}

/// The `lsattr` letters of the flags in `bits` that matter.
pub fn letters(bits: u32) -> String {
    FLAGS.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, c)| *c).collect()
}

fn flags_of(path: &Path) -> std::io::Result<u32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let mut value: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int-sized value through the pointer, which points to a c_long we
    // own (larger than an int, as the kernel's definition with `long` asks for), on a file descriptor we hold.
    unsafe { get_flags(file.as_raw_fd(), &mut value) }.map_err(std::io::Error::from)?;
    Ok(value as u32)
}

/// Looks at every regular file and directory of the tree at `root` (not following symlinks, not crossing into
/// other file systems) and lists those with flags rsync cannot carry.
pub fn scan(root: &Path) -> FlagReport {
    let mut report = FlagReport::default();
    let Ok(top) = std::fs::symlink_metadata(root) else { return report };
    let dev = top.dev();
    match flags_of(root) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) => {
            report.unsupported = true;
            return report;
        }
        _ => {}
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_dir()) || meta.dev() != dev {
            continue;
        }
        report.checked += 1;
        if let Ok(bits) = flags_of(&path) {
            let l = letters(bits);
            if !l.is_empty() {
                report.flagged.push((rel.clone(), l));
            }
        }
        if ft.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| rel.join(e.file_name())));
            }
        }
    }
    report.flagged.sort();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_name_only_the_flags_that_matter() {
        assert_eq!(letters(0x10 | 0x20), "ia");
        assert_eq!(letters(0x0008_0000), "", "extents are the file system's own");
        assert_eq!(letters(0x40 | 0x0008_0000), "d");
    }

    #[test]
    fn a_plain_tree_has_nothing_to_report() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("a/link")).unwrap();
        let r = scan(dir.path());
        assert!(r.flagged.is_empty() && r.warning().is_none(), "{r:?}");
        assert!(r.unsupported || r.checked == 4, "{r:?}");
    }

    #[test]
    fn the_warning_names_the_files_and_their_flags() {
        let r = FlagReport { flagged: vec![("etc/shadow".into(), "i".into())], checked: 9, unsupported: false };
        let w = r.warning().unwrap();
        assert!(w.contains("etc/shadow (i)"), "{w}");
    }
}
