//! Last-resort cleanup when a lab drops: cgroups left under a host's cgroup parent and mounts left
//! under the lab's directory. Best effort, never panics; what it cannot undo it reports on stderr.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How deep under a cgroup mount a host's cgroup parent is looked for (the product may nest it
/// under its own cgroup, as this machine's memory hierarchy does).
const SEARCH_DEPTH: usize = 3;

/// How long processes in a cgroup tree are killed before its directories are given up on.
const PATIENCE: Duration = Duration::from_secs(3);

/// Kills every process in, and removes, each cgroup directory named `name` found in any mounted
/// hierarchy (v1 controllers and the v2 tree alike).
pub(crate) fn remove_cgroup_trees(name: &str) {
    if name.is_empty() || name.contains('/') {
        return;
    }
    for mount in cgroup_mounts() {
        for dir in find_dirs_named(&mount, name, SEARCH_DEPTH) {
            remove_cgroup_tree(&dir);
        }
    }
}

/// Kills the processes of the tree at `dir`, then removes its directories deepest first.
fn remove_cgroup_tree(dir: &Path) {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        let _ = fs::write(&kill_file, "1");
    }
    let started = Instant::now();
    loop {
        let pids = tree_pids(dir);
        if pids.is_empty() {
            break;
        }
        if started.elapsed() > PATIENCE {
            eprintln!("vserver-lab: processes {pids:?} survive SIGKILL in cgroup {}", dir.display());
            break;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(10));
    }
    // rmdir fails with EBUSY for a moment after the last process died; retry briefly.
    let started = Instant::now();
    loop {
        match remove_dirs_depth_first(dir) {
            Ok(()) => return,
            Err(err) if started.elapsed() > PATIENCE => {
                eprintln!("vserver-lab: could not remove cgroup {}: {err}", dir.display());
                return;
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Every pid listed in `cgroup.procs` of `dir` and its descendants.
fn tree_pids(dir: &Path) -> Vec<Pid> {
    let mut pids = Vec::new();
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse().ok()).map(Pid::from_raw));
    }
    for sub in subdirs(dir) {
        pids.extend(tree_pids(&sub));
    }
    pids
}

/// rmdir(2) of `dir` after its subdirectories (cgroup files themselves cannot and need not be removed).
fn remove_dirs_depth_first(dir: &Path) -> std::io::Result<()> {
    for sub in subdirs(dir) {
        remove_dirs_depth_first(&sub)?;
    }
    match fs::remove_dir(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Directories called `name` at most `depth` levels under `root`.
fn find_dirs_named(root: &Path, name: &str, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for sub in subdirs(root) {
        if sub.file_name().is_some_and(|n| n == name) {
            found.push(sub);
        } else if depth > 1 {
            found.extend(find_dirs_named(&sub, name, depth - 1));
        }
    }
    found
}

/// Mount points of cgroup (v1) and cgroup2 file systems in this mount namespace.
fn cgroup_mounts() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| point)
        .collect()
}

/// How deep under the lab's directory a process's root directory is looked for: deep enough for
/// `hostN/vservers/NAME`, `hostN/lxc/NAME/rootfs` and their top-level directories.
const ROOT_SEARCH_DEPTH: usize = 5;

/// SIGKILLs every process whose root directory (chroot or pivot_root) is a directory under `dir`:
/// what a vserver, container or chroot of the lab left behind in a namespace of its own.
pub(crate) fn kill_processes_rooted_under(dir: &Path) {
    let mut roots = HashSet::new();
    collect_dir_ids(dir, ROOT_SEARCH_DEPTH, &mut roots);
    if roots.is_empty() {
        return;
    }
    let me = std::process::id();
    let started = Instant::now();
    loop {
        let pids: Vec<Pid> = all_pids()
            .into_iter()
            .filter(|&pid| pid != me)
            .filter(|pid| fs::metadata(format!("/proc/{pid}/root")).is_ok_and(|m| roots.contains(&(m.dev(), m.ino()))))
            .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
            .collect();
        if pids.is_empty() {
            return;
        }
        if started.elapsed() > PATIENCE {
            eprintln!("vserver-lab: processes {pids:?} rooted in {} survive SIGKILL", dir.display());
            return;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// (device, inode) of `dir` and of the directories under it, `depth` levels down, not following
/// symbolic links.
fn collect_dir_ids(dir: &Path, depth: usize, ids: &mut HashSet<(u64, u64)>) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    ids.insert((meta.dev(), meta.ino()));
    if depth > 0 {
        for sub in subdirs(dir) {
            collect_dir_ids(&sub, depth - 1, ids);
        }
    }
}

/// Every process id in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Detaches (lazily unmounts) every mount at or under `dir`, deepest first, so that removing the
/// directory can never reach into a bind-mounted host directory.
pub(crate) fn detach_mounts_under(dir: &Path) {
    let mut points: Vec<PathBuf> =
        mountinfo().into_iter().map(|(point, _)| point).filter(|point| point.starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        if let Err(err) = umount2(&point, MntFlags::MNT_DETACH) {
            eprintln!("vserver-lab: could not unmount {}: {err}", point.display());
        }
    }
}

/// (mount point, file system type) of each line of `/proc/self/mountinfo`.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some((PathBuf::from(unescape_octal(point)), (*fstype).to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(digits) = escape {
            let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            if let Ok(b) = u8::try_from(value) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/end\"), r"/end\");
    }

    #[test]
    fn finds_named_directories_within_depth() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b/target")).unwrap();
        fs::create_dir_all(root.path().join("target")).unwrap();
        fs::create_dir_all(root.path().join("a/b/c/d/target")).unwrap();
        let mut found = find_dirs_named(root.path(), "target", 3);
        found.sort();
        assert_eq!(found, vec![root.path().join("a/b/target"), root.path().join("target")]);
    }
}
