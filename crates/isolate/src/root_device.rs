//! A vserver whose tree is the file system of a block device ([`RootDevice`]): what is checked before it
//! starts, and the wait after it stops until the device is released.
//!
//! The device is mounted on the tree's directory inside the vserver's own mount namespace, after process 1 has
//! made every mount there private, by a child of the host side that enters that namespace (`context`,
//! `rootfs::mount_root_device`; process 1 is in the vserver's cgroups, whose device allow-list refuses it the
//! block device): no mount of it ever reaches the host's namespace, and when the last process in the namespace
//! ends the kernel unmounts it. A start is refused unless the
//! device is mounted nowhere on this host, in any namespace ([`crate::mounts::holders`], and the kernel's own
//! word through an exclusive open, [`crate::mounts::busy`]): an ext4 mounted twice at once is corrupted. That
//! it is mounted on no *other* host is the cluster's part (ownership, fencing), not this one's.
//!
//! **LIMIT_DISK is refused with a root device.** A project quota is set up through the tree's path on the
//! host (`quota.rs`: label every file, set the limit with `quotactl_fd`), and the host never mounts a root
//! device; it would have to be done by process 1 between its mount and `pivot_root`, and read back through
//! `/proc/PID/root`. Nothing is lost by refusing: the device belongs to this vserver alone, so its size
//! already bounds the tree, and a smaller bound is had by a smaller device (or file system), which moves with
//! the device to whichever host runs it next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mounts::{self, DeviceError, DeviceNumber};
use crate::spec::{ContextSpec, RootDevice, VserverName};

/// How long a stop waits, after the vserver's last process is gone, for the kernel to release its root
/// device before it gives up naming what still holds it.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A root device cannot be used, or was not released.
#[derive(Debug, thiserror::Error)]
pub enum RootDeviceError {
    /// The path is not a block device.
    #[error("vserver {name}: root device {source}; nothing was started")]
    NotBlock {
        /// The vserver.
        name: VserverName,
        /// What the path is.
        source: DeviceError,
    },
    /// The file system type cannot be mounted from a block device by this kernel.
    #[error("vserver {name}: root device {path}: file system type {fstype:?} {reason}; nothing was started")]
    FsType {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
        /// The type given.
        fstype: String,
        /// What is wrong with it.
        reason: String,
    },
    /// LIMIT_DISK was asked for a tree on a root device.
    #[error(
        "vserver {name}: LIMIT_DISK cannot be used with root device {path}: the disk quota is a project quota set \
         through the tree's directory on the host, which never mounts a root device; the device's own size bounds \
         the tree. Remove LIMIT_DISK from its conf; nothing was started"
    )]
    DiskLimit {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
    },
    /// The directory the device is to be mounted on is not one.
    #[error("vserver {name}: cannot mount root device {path} on {mount_point}: {reason}; nothing was started")]
    MountPoint {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
        /// The tree's directory.
        mount_point: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The device is mounted on this host already.
    #[error(
        "vserver {name}: root device {path} ({number}) is mounted on this host: {holders}; a vserver starts on its \
         device only when it is mounted nowhere else (unmount it first); nothing was started"
    )]
    Mounted {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
        /// Its device number.
        number: DeviceNumber,
        /// Who has it mounted, in words.
        holders: String,
    },
    /// The kernel holds the device though no mount table lists it.
    #[error(
        "vserver {name}: root device {path} ({number}) is in use on this host though no process's mount table \
         lists it: {holder}; nothing was started"
    )]
    Busy {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
        /// Its device number.
        number: DeviceNumber,
        /// What holds it, in words.
        holder: String,
    },
    /// The device stayed mounted after the vserver stopped.
    #[error(
        "vserver {name}: root device {path} ({number}) is still mounted {secs} s after the vserver's processes \
         ended: {holders}"
    )]
    StillMounted {
        /// The vserver.
        name: VserverName,
        /// The device.
        path: PathBuf,
        /// Its device number.
        number: DeviceNumber,
        /// How long the stop waited.
        secs: u64,
        /// What still holds it, in words.
        holders: String,
    },
}

/// What the kernel says when a device is held by something no mount table shows.
const HELD_UNSEEN: &str = "the kernel refuses it an exclusive open (a mount namespace that no process is in, kept \
                           by an open /proc/PID/ns/mnt or a bind mount of one; or device-mapper, md or swap on it)";

/// Checks, before anything of the vserver exists, that `device` can become the tree of `spec`: LIMIT_DISK is
/// not asked for, `spec.root` is a directory to mount it on, the path is a block device, the kernel mounts
/// `device.fstype` from block devices, and the device is mounted nowhere on this host. Returns its number.
pub fn check(spec: &ContextSpec, device: &RootDevice) -> Result<DeviceNumber, RootDeviceError> {
    let name = &spec.name;
    let path = &device.path;
    if spec.limits.disk.is_some() {
        return Err(RootDeviceError::DiskLimit { name: name.clone(), path: path.clone() });
    }
    let mount_point = |reason: String| RootDeviceError::MountPoint {
        name: name.clone(),
        path: path.clone(),
        mount_point: spec.root.clone(),
        reason,
    };
    match std::fs::metadata(&spec.root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(mount_point("it is not a directory".into())),
        Err(e) => return Err(mount_point(e.to_string())),
    }
    let number =
        mounts::block_device(path).map_err(|source| RootDeviceError::NotBlock { name: name.clone(), source })?;
    let filesystems = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot be checked: /proc/filesystems: {e}"))
        .and_then(|text| check_fstype(&device.fstype, &text));
    if let Err(reason) = filesystems {
        return Err(RootDeviceError::FsType {
            name: name.clone(),
            path: path.clone(),
            fstype: device.fstype.clone(),
            reason,
        });
    }
    let holders = mounts::holders(number);
    if !holders.is_empty() {
        return Err(RootDeviceError::Mounted {
            name: name.clone(),
            path: path.clone(),
            number,
            holders: describe(&holders),
        });
    }
    if mounts::busy(path).unwrap_or(false) {
        return Err(RootDeviceError::Busy {
            name: name.clone(),
            path: path.clone(),
            number,
            holder: HELD_UNSEEN.into(),
        });
    }
    Ok(number)
}

/// Whether `fstype` is a file system on a block device that the kernel knows, by the text of
/// `/proc/filesystems` (one type a line, after `nodev` for those that need no device); the reason when not.
pub fn check_fstype(fstype: &str, filesystems: &str) -> Result<(), String> {
    let entry = filesystems.lines().find_map(|line| {
        let (flag, kind) = line.split_once('\t')?;
        (kind.trim() == fstype).then_some(flag.trim())
    });
    match entry {
        Some("") => Ok(()),
        Some(_) => Err("is not a file system on a block device (/proc/filesystems marks it nodev)".into()),
        None => Err(format!(
            "is not one this kernel knows (it is not in /proc/filesystems: load its module first, e.g. `modprobe \
             {fstype}`)"
        )),
    }
}

/// Waits, up to `timeout`, until the root device `path` (number `number`) of vserver `name` is mounted nowhere
/// on this host: no mount table lists it and the kernel gives it up for an exclusive open. `mount_ns` is the
/// mount namespace the vserver had, so a process still holding it open is named. Called once every process
/// of the vserver is gone: the kernel unmounts the device as the last one leaves the namespace.
pub fn wait_released(
    name: &VserverName,
    path: &Path,
    number: DeviceNumber,
    mount_ns: Option<u64>,
    timeout: Duration,
) -> Result<(), RootDeviceError> {
    let begun = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let holders = mounts::holders(number);
        // The exclusive open says something only while the path still names this very device.
        let held = holders.is_empty()
            && mounts::block_device(path).is_ok_and(|n| n == number)
            && mounts::busy(path).unwrap_or(false);
        if holders.is_empty() && !held {
            return Ok(());
        }
        if begun.elapsed() >= timeout {
            let holders = if holders.is_empty() { unseen_holder(mount_ns) } else { describe(&holders) };
            return Err(RootDeviceError::StillMounted {
                name: name.clone(),
                path: path.to_path_buf(),
                number,
                secs: timeout.as_secs(),
                holders,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// What holds a device that no mount table lists: the processes with the vserver's mount namespace open,
/// when there are any.
fn unseen_holder(mount_ns: Option<u64>) -> String {
    let pids = mount_ns.map(mounts::namespace_descriptor_holders).unwrap_or_default();
    match (mount_ns, pids.is_empty()) {
        (Some(ns), false) => {
            let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
            format!("process {} holds its mount namespace {ns} open (/proc/PID/fd)", pids.join(", "))
        }
        _ => HELD_UNSEEN.to_string(),
    }
}

fn describe(holders: &[mounts::Holder]) -> String {
    holders.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text4\nnodev\tproc\n\txfs\n";

    #[test]
    fn only_block_file_systems_the_kernel_lists_are_taken() {
        assert_eq!(check_fstype("ext4", FILESYSTEMS), Ok(()));
        assert_eq!(check_fstype("xfs", FILESYSTEMS), Ok(()));
        let nodev = check_fstype("tmpfs", FILESYSTEMS).unwrap_err();
        assert!(nodev.contains("not a file system on a block device"), "{nodev}");
        let unknown = check_fstype("zfs", FILESYSTEMS).unwrap_err();
        assert!(unknown.contains("/proc/filesystems") && unknown.contains("modprobe zfs"), "{unknown}");
        assert!(check_fstype("ext", FILESYSTEMS).is_err(), "whole names only");
        assert!(check_fstype("", FILESYSTEMS).is_err());
    }

    fn spec_on(root: &Path, device: &Path) -> (ContextSpec, RootDevice) {
        let device = RootDevice { path: device.to_path_buf(), fstype: "ext4".into() };
        let spec = ContextSpec { root: root.to_path_buf(), root_device: Some(device.clone()), ..ContextSpec::sample() };
        (spec, device)
    }

    #[test]
    fn a_start_is_refused_naming_the_device_when_it_cannot_be_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, "").unwrap();

        let (spec, dev) = spec_on(dir.path(), &file);
        let err = check(&spec, &dev).unwrap_err().to_string();
        assert!(err.contains("vserver v1: root device") && err.contains("disk.img is not a block device"), "{err}");
        assert!(err.contains("nothing was started"), "{err}");

        let (mut spec, dev) = spec_on(dir.path(), &file);
        spec.limits.disk = Some(1 << 30);
        let err = check(&spec, &dev).unwrap_err();
        assert!(matches!(err, RootDeviceError::DiskLimit { .. }), "{err}");
        assert!(err.to_string().contains("Remove LIMIT_DISK"), "{err}");

        let (spec, dev) = spec_on(&file, &file);
        let err = check(&spec, &dev).unwrap_err().to_string();
        assert!(err.contains("disk.img: it is not a directory"), "{err}");
    }

    #[test]
    fn a_device_mounted_nowhere_is_released_at_once() {
        // A number no device has: no mount table lists it, and its path (none here) is never opened.
        let name = VserverName::parse("v1").unwrap();
        let number = DeviceNumber { major: 4095, minor: 1048575 };
        let gone = Path::new("/nonexistent/device");
        wait_released(&name, gone, number, None, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_device_still_mounted_is_named_with_its_holders_after_the_wait() {
        let name = VserverName::parse("v1").unwrap();
        let table = mounts::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let root = table.iter().find(|m| m.mount_point == Path::new("/")).expect("a root mount");
        let err = wait_released(&name, Path::new("/nonexistent"), root.device, None, Duration::ZERO).unwrap_err();
        let said = err.to_string();
        assert!(said.contains(&format!("({})", root.device)) && said.contains("has it mounted on /"), "{said}");
    }
}
