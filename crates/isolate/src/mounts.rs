//! Where a block device is mounted on this host, in any mount namespace.
//!
//! Each mount namespace has its own mount table, and `/proc/PID/mountinfo` shows the table of the namespace
//! of PID. So [`holders`] reads the table of every mount namespace that has a task in it (once per namespace,
//! found through `/proc/PID/task/TID/ns/mnt`, since a thread may have left its process's namespace) and
//! keeps the mounts whose device number (`major:minor`, the third field) is the device's. A mount namespace
//! that no task is in, kept alive by an open `/proc/PID/ns/mnt` descriptor or a bind mount of one, has no
//! table to read: [`busy`] asks the kernel itself, which refuses an exclusive open of a block device that a
//! mounted file system holds, wherever it is mounted.
//!
//! For file systems on one block device (ext4, xfs): the device number in mountinfo is the device's own. A
//! file system spanning devices (btrfs) shows an anonymous number there and is not found by its devices.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device number as the kernel shows it in mountinfo and `ls -l`: `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceNumber {
    /// The driver's number (8 for SCSI disks, 7 for loop devices...).
    pub major: u32,
    /// The device's number within the driver.
    pub minor: u32,
}

impl DeviceNumber {
    /// The number of a `dev_t` (`st_rdev` of a device node, `st_dev` of a file).
    pub fn from_dev_t(dev: u64) -> Self {
        Self { major: libc::major(dev), minor: libc::minor(dev) }
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DeviceNumber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a device number (expected MAJOR:MINOR)");
        let (major, minor) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self { major: major.parse().map_err(|_| bad())?, minor: minor.parse().map_err(|_| bad())? })
    }
}

impl TryFrom<String> for DeviceNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceNumber> for String {
    fn from(d: DeviceNumber) -> Self {
        d.to_string()
    }
}

/// A path that should name a block device does not.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The path could not be looked up.
    #[error("{path}: {source}")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is something other than a block device.
    #[error("{path} is not a block device (it is {what})")]
    NotBlock {
        /// The path.
        path: PathBuf,
        /// What it is instead, in words.
        what: &'static str,
    },
}

/// The device number of the block device at `path` (a symbolic link to one, such as `/dev/disk/by-id/...`,
/// is followed).
pub fn block_device(path: &Path) -> Result<DeviceNumber, DeviceError> {
    let meta = std::fs::metadata(path).map_err(|source| DeviceError::Stat { path: path.to_path_buf(), source })?;
    let kind = meta.file_type();
    if kind.is_block_device() {
        return Ok(DeviceNumber::from_dev_t(meta.rdev()));
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a device"
    };
    Err(DeviceError::NotBlock { path: path.to_path_buf(), what })
}

/// One line of a mountinfo table (`proc(5)`), the fields a holder check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device of the mounted file system (field 3).
    pub device: DeviceNumber,
    /// The directory of the file system that is mounted (field 4; `/` for a whole file system).
    pub root: PathBuf,
    /// Where it is mounted, in that namespace (field 5).
    pub mount_point: PathBuf,
    /// Its file system type (the first field after `-`).
    pub fstype: String,
    /// What it was mounted from (`/dev/sdb`), as the file system reports it.
    pub source: String,
}

/// The mounts of a mountinfo table; a line that does not read as one is skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let device = fields.next()?.parse().ok()?;
    let root = PathBuf::from(unescape(fields.next()?));
    let mount_point = PathBuf::from(unescape(fields.next()?));
    // Mount options, then optional fields (`shared:1`, `master:2`...) up to the separator `-`.
    fields.find(|f| *f == "-")?;
    let fstype = unescape(fields.next()?);
    let source = unescape(fields.next()?);
    Some(Mount { device, root, mount_point, fstype, source })
}

/// Undoes the kernel's octal escapes of mountinfo (`\040` for a space, `\011` tab, `\012` newline, `\134`
/// backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount namespace of this host that has a device mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// A process in that namespace (the first one found: the lowest pid).
    pub pid: i32,
    /// The namespace's inode number (as in `/proc/PID/ns/mnt`, `mnt:[N]`); `None` when it could not be read.
    pub mount_ns: Option<u64>,
    /// Where the device is mounted there, as that namespace sees it.
    pub mount_points: Vec<PathBuf>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let points: Vec<String> = self.mount_points.iter().map(|p| p.display().to_string()).collect();
        write!(f, "process {}", self.pid)?;
        if let Some(ns) = self.mount_ns {
            write!(f, " (mount namespace {ns})")?;
        }
        write!(f, " has it mounted on {}", points.join(", "))
    }
}

/// Every mount namespace of this host with a task in it that has `dev` mounted, one [`Holder`] each (with
/// the lowest pid in it), in pid order. Empty when the device is mounted nowhere a task can see. Reads the
/// mount table of each namespace once; processes that end during the scan are passed over. Needs root to
/// see other users' processes.
pub fn holders(dev: DeviceNumber) -> Vec<Holder> {
    holders_in(Path::new("/proc"), dev)
}

/// [`holders`] over a proc file system mounted at `proc`.
pub fn holders_in(proc: &Path, dev: DeviceNumber) -> Vec<Holder> {
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut out = Vec::new();
    for pid in numbered_entries(proc) {
        // Threads whose namespace cannot be told (the kernel may refuse to show it) count as their process's.
        let mut unknown_seen = false;
        for tid in numbered_entries(&proc.join(pid.to_string()).join("task")) {
            let task = proc.join(pid.to_string()).join("task").join(tid.to_string());
            let ns = namespace_inode(&task.join("ns/mnt"));
            let seen_before = match ns {
                Some(n) => !seen.insert(n),
                None => std::mem::replace(&mut unknown_seen, true),
            };
            if seen_before {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(task.join("mountinfo")) else { continue };
            let mount_points: Vec<PathBuf> =
                parse_mountinfo(&text).into_iter().filter(|m| m.device == dev).map(|m| m.mount_point).collect();
            if !mount_points.is_empty() {
                out.push(Holder { pid, mount_ns: ns, mount_points });
            }
        }
    }
    out
}

/// The entries of `dir` whose names are numbers (pids, tids), in ascending order.
fn numbered_entries(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<i32> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    out.sort_unstable();
    out
}

/// The inode number of the namespace a `/proc/.../ns/mnt` link names (`mnt:[4026531841]`).
fn namespace_inode(link: &Path) -> Option<u64> {
    parse_namespace_link(std::fs::read_link(link).ok()?.to_str()?)
}

fn parse_namespace_link(target: &str) -> Option<u64> {
    target.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// The mount namespace of process `pid` (the inode number of `/proc/PID/ns/mnt`).
pub fn mount_namespace(pid: i32) -> Option<u64> {
    namespace_inode(&Path::new("/proc").join(pid.to_string()).join("ns/mnt"))
}

/// Processes of this host that hold an open descriptor of mount namespace `ns` (`/proc/PID/fd/N` naming
/// `mnt:[ns]`): each keeps that namespace, and every mount in it, alive with no task inside. In pid order.
pub fn namespace_descriptor_holders(ns: u64) -> Vec<i32> {
    let proc = Path::new("/proc");
    numbered_entries(proc)
        .into_iter()
        .filter(|pid| {
            let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else { return false };
            fds.flatten().any(|fd| namespace_inode(&fd.path()) == Some(ns))
        })
        .collect()
}

/// Whether the kernel holds the block device at `path` for a mounted file system (or another exclusive user:
/// device-mapper, md, swap), wherever it is mounted, even in a mount namespace that no process is in. Asks
/// by opening it exclusively (`O_EXCL`), which the kernel refuses with EBUSY then; the descriptor is closed
/// at once (while it is open, a mount of the device on this host would fail). Errors other than EBUSY
/// (the path is gone) are returned.
pub fn busy(path: &Path) -> std::io::Result<bool> {
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL | libc::O_CLOEXEC).open(path) {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
36 22 7:3 / /mnt/with\\040space rw,relatime shared:30 master:2 - ext4 /dev/loop3 rw
37 22 7:3 /sub /srv/bound rw,relatime - ext4 /dev/loop3 rw
38 22 7:30 / /mnt/other rw - ext4 /dev/loop30 rw
garbage line
39 22 7:3 / /no/separator rw ext4 /dev/loop3 rw
";

    fn dev(major: u32, minor: u32) -> DeviceNumber {
        DeviceNumber { major, minor }
    }

    #[test]
    fn mountinfo_lines_give_device_mount_point_and_type() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 5, "{mounts:?}");
        assert_eq!(
            mounts[2],
            Mount {
                device: dev(7, 3),
                root: "/".into(),
                mount_point: "/mnt/with space".into(),
                fstype: "ext4".into(),
                source: "/dev/loop3".into(),
            }
        );
        assert_eq!(mounts[3].root, PathBuf::from("/sub"), "a bind of a directory of the file system");
        let of_loop3: Vec<&Path> =
            mounts.iter().filter(|m| m.device == dev(7, 3)).map(|m| m.mount_point.as_path()).collect();
        assert_eq!(of_loop3, [Path::new("/mnt/with space"), Path::new("/srv/bound")], "7:30 is another device");
        assert_eq!(mounts[1].fstype, "proc");
    }

    #[test]
    fn escapes_and_device_numbers_read_back() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), "a b\tc\nd\\e");
        assert_eq!(unescape("trailing\\04"), "trailing\\04", "a cut escape stays as it is");
        assert_eq!(unescape("\\x41"), "\\x41");
        assert_eq!("259:12".parse::<DeviceNumber>(), Ok(dev(259, 12)));
        assert!("259".parse::<DeviceNumber>().is_err());
        assert!("a:b".parse::<DeviceNumber>().is_err());
        assert_eq!(dev(8, 16).to_string(), "8:16");
        assert_eq!(serde_json::to_string(&dev(8, 16)).unwrap(), "\"8:16\"");
        assert_eq!(serde_json::from_str::<DeviceNumber>("\"8:16\"").unwrap(), dev(8, 16));
        assert_eq!(DeviceNumber::from_dev_t(libc::makedev(259, 3)), dev(259, 3));
        assert_eq!(parse_namespace_link("mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse_namespace_link("net:[4026531841]"), None);
    }

    /// A fake `/proc`: each task with its namespace link (none for 0) and mountinfo text.
    fn fake_proc(tasks: &[(i32, i32, u64, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, tid, ns, mountinfo) in tasks {
            let task = dir.path().join(pid.to_string()).join("task").join(tid.to_string());
            std::fs::create_dir_all(task.join("ns")).unwrap();
            if *ns != 0 {
                std::os::unix::fs::symlink(format!("mnt:[{ns}]"), task.join("ns/mnt")).unwrap();
            }
            std::fs::write(task.join("mountinfo"), mountinfo).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        dir
    }

    #[test]
    fn holders_are_one_per_mount_namespace_with_the_lowest_pid() {
        let host = "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n";
        let inside = "50 40 7:3 / / rw - ext4 /dev/loop3 rw\n51 50 0:5 / /proc rw - proc proc rw\n";
        let proc = fake_proc(&[
            (1, 1, 100, host),
            (7, 7, 100, host),
            // A thread that unshared its own mount namespace and mounted the device there.
            (7, 9, 300, "60 1 7:3 / /mnt rw - ext4 /dev/loop3 rw\n"),
            // A process whose namespace cannot be read (no ns/mnt link below): one holder, not one per thread.
            (30, 30, 0, "70 1 7:3 / /srv rw - ext4 /dev/loop3 rw\n"),
            (30, 31, 0, "70 1 7:3 / /srv rw - ext4 /dev/loop3 rw\n"),
            (40, 40, 200, inside),
            (41, 41, 200, inside),
        ]);
        let found = holders_in(proc.path(), dev(7, 3));
        assert_eq!(
            found,
            vec![
                Holder { pid: 7, mount_ns: Some(300), mount_points: vec!["/mnt".into()] },
                Holder { pid: 30, mount_ns: None, mount_points: vec!["/srv".into()] },
                Holder { pid: 40, mount_ns: Some(200), mount_points: vec!["/".into()] },
            ]
        );
        assert_eq!(found[2].to_string(), "process 40 (mount namespace 200) has it mounted on /");
        assert_eq!(found[1].to_string(), "process 30 has it mounted on /srv");
        assert!(holders_in(proc.path(), dev(7, 4)).is_empty());
        assert!(holders_in(&proc.path().join("absent"), dev(7, 3)).is_empty());
    }

    #[test]
    fn the_real_scan_finds_the_root_file_system_and_not_a_device_mounted_nowhere() {
        // The device of this process's own root, as its own table says: mounted at least here.
        let table = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let root = table.iter().find(|m| m.mount_point == Path::new("/")).expect("a root mount").device;
        let me = std::process::id() as i32;
        let mine = mount_namespace(me).expect("our own namespace");
        let found = holders(root);
        assert!(found.iter().any(|h| h.mount_ns == Some(mine)), "{root} in our namespace: {found:?}");
        assert!(holders(dev(4095, 1048575)).is_empty());
    }

    #[test]
    fn block_device_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = block_device(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a block device (it is a directory)"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(block_device(&file).unwrap_err().to_string().contains("a regular file"));
        assert!(block_device(Path::new("/dev/null")).unwrap_err().to_string().contains("a character device"));
        let missing = block_device(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("nope") && missing.contains("No such file"), "{missing}");
    }
}
