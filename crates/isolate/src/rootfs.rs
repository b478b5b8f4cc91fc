//! The context's file system view: a private mount namespace whose root is the vserver's tree (by
//! `pivot_root`, so the host's tree is unreachable, not merely hidden as by chroot), with its own `/proc`
//! (its kernel-wide parts read-only or masked, as container runtimes do) and a minimal `/dev`; no `/sys`.
//! Runs in the context's process 1 after `unshare`, before capabilities are dropped.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::spec::{ContextSpec, RootDevice};
use crate::syscall::{SysError, SysResult, Syscall};

/// Character devices of the minimal `/dev`: name, major, minor. All are mode 0666 as on a host.
pub const DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// Parts of `/proc` that reach the whole kernel, not the vserver: made read-only (root inside could otherwise
/// set `kernel.core_pattern` to a program the host runs as root, or trigger SysRq actions).
pub const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Files of `/proc` that show the host's memory, keys or scheduler internals: `/dev/null` is bound over them.
pub const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "kallsyms",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
];

/// Directories of `/proc` describing host hardware: an empty read-only tmpfs is mounted over them.
pub const PROC_MASKED_DIRS: &[&str] = &["acpi", "scsi", "driver"];

/// One mount that hides or freezes part of `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcMask {
    /// Bind the path on itself, then remount it read-only.
    ReadOnly(PathBuf),
    /// Bind the vserver's `/dev/null` over the file.
    File(PathBuf),
    /// Mount an empty read-only tmpfs over the directory.
    Dir(PathBuf),
}

/// The masks for the `/proc` mounted at `proc_dir`, for the entries that `exists` (a kernel may lack some).
pub fn proc_masks(proc_dir: &Path, exists: impl Fn(&Path) -> bool) -> Vec<ProcMask> {
    let under = |names: &'static [&'static str]| names.iter().map(|n| proc_dir.join(n)).filter(|p| exists(p));
    under(PROC_READ_ONLY)
        .map(ProcMask::ReadOnly)
        .chain(under(PROC_MASKED_FILES).map(ProcMask::File))
        .chain(under(PROC_MASKED_DIRS).map(ProcMask::Dir))
        .collect()
}

/// Mounts the masks of [`proc_masks`]; `null` is the vserver's own `/dev/null` as the host sees it.
fn mask_proc(sys: &dyn Syscall, masks: &[ProcMask], null: &Path) -> SysResult {
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for mask in masks {
        match mask {
            ProcMask::ReadOnly(p) => {
                sys.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
                sys.mount(None, p, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked, None)?;
            }
            ProcMask::File(p) => sys.mount(Some(null), p, None, MsFlags::MS_BIND, None)?,
            ProcMask::Dir(p) => {
                sys.mount(Some(Path::new("tmpfs")), p, Some("tmpfs"), MsFlags::MS_RDONLY | locked, Some("size=0"))?
            }
        }
    }
    Ok(())
}

/// Builds the file system of the context and enters it: the vserver's tree, as the host sees it
/// (`spec.root`), becomes `/`.
///
/// The sequence: make every mount private (nothing we do propagates back to the host); bind the tree on
/// itself (with the mounts under it, such as those NAME.sh made) so it is a mount point, and remount that
/// bind `nodev` (unless S_UNSAFE `devices`); mount `/proc`, a tmpfs `/dev` with the device nodes, a private
/// devpts instance and `/dev/shm`; mask the kernel-wide parts of `/proc` (unless S_UNSAFE `procfs`); then
/// `pivot_root` to the tree and detach the old root, which leaves the host's other mounts invisible.
///
/// With a root device, the device is mounted on the tree's directory already ([`mount_root_device`], by the
/// host side, in this namespace): from here on the tree is the device's file system, and it is treated
/// exactly as a directory tree.
pub fn enter_root(sys: &dyn Syscall, spec: &ContextSpec) -> SysResult {
    let root = spec.root.as_path();
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    sys.mount(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    if !spec.relaxed.devices {
        // No device node in the tree opens, whoever made it (the host, a restored backup): only the
        // vserver's own /dev, mounted below, holds usable ones. A bind remount sets exactly the flags it is
        // given, so those the mount has (ro, nosuid, noexec, atime) are read and kept; nosuid is not added,
        // set-uid programs of the tree keep working.
        let kept = sys.mount_flags(root)?;
        sys.mount(None, root, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | kept, None)?;
    }

    let proc_dir = root.join("proc");
    sys.mkdir(&proc_dir, 0o555)?;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(Some(Path::new("proc")), &proc_dir, Some("proc"), nosuid_nodev_noexec, None)?;

    mount_dev(sys, &root.join("dev"))?;
    if !spec.relaxed.procfs {
        mask_proc(sys, &proc_masks(&proc_dir, |p| p.exists()), &root.join("dev/null"))?;
    }

    sys.chdir(root)?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it then leaves only the tree.
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

/// Mounts the root device on the tree's directory `root`, in the calling process's mount namespace, which
/// must be the vserver's with every mount already private (so the mount never reaches the host's), before
/// [`enter_root`]. `nodev` as the tree's bind gets it, unless `devices_relaxed`; no other flag, so the
/// device's file system is what a directory tree would be. A failure names the device.
///
/// The caller must be outside the vserver's cgroups: their device allow-list refuses the block device to
/// the vserver's own processes, process 1 included (a mount opens the device as an open(2) would).
pub fn mount_root_device(sys: &dyn Syscall, device: &RootDevice, root: &Path, devices_relaxed: bool) -> SysResult {
    let flags = if devices_relaxed { MsFlags::empty() } else { MsFlags::MS_NODEV };
    sys.mount(Some(&device.path), root, Some(&device.fstype), flags, None).map_err(|e| SysError {
        op: "mount",
        target: format!("{device} on {}", root.display()),
        errno: e.errno,
    })
}

fn mount_dev(sys: &dyn Syscall, dev: &Path) -> SysResult {
    sys.mkdir(dev, 0o755)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEVICES {
        sys.mknod_char(&dev.join(name), 0o666, *major, *minor)?;
    }
    let pts = dev.join("pts");
    sys.mkdir(&pts, 0o755)?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o1777)?;
    sys.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::{Call, RecordingSyscall};

    fn spec(relaxed: crate::spec::Relaxed) -> ContextSpec {
        ContextSpec { relaxed, ..ContextSpec::sample() }
    }

    #[test]
    fn proc_is_masked_where_it_reaches_the_whole_kernel() {
        let proc_dir = Path::new("/vservers/v1/proc");
        let masks = proc_masks(proc_dir, |p| !p.ends_with("timer_stats"));
        for ro in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
            assert!(masks.contains(&ProcMask::ReadOnly(proc_dir.join(ro))), "{ro} read-only");
        }
        for hidden in ["kcore", "keys", "timer_list", "sched_debug"] {
            assert!(masks.contains(&ProcMask::File(proc_dir.join(hidden))), "{hidden} masked");
        }
        assert!(masks.contains(&ProcMask::Dir(proc_dir.join("acpi"))));
        assert!(!masks.iter().any(|m| matches!(m, ProcMask::File(p) if p.ends_with("timer_stats"))), "absent: skipped");

        // The real sequence, on a path that exists here: /proc/sys bound on itself, then remounted read-only.
        let sys = RecordingSyscall::default();
        let here = Path::new("/proc");
        mask_proc(&sys, &proc_masks(here, |p| p.exists()), Path::new("/vservers/v1/dev/null")).unwrap();
        let calls = sys.calls();
        let sysctl = here.join("sys");
        let bind = calls.iter().position(|c| {
            matches!(c, Call::Mount(Some(s), t, None, f, None)
            if s == &sysctl && t == &sysctl && f.contains(MsFlags::MS_BIND))
        });
        let ro = calls.iter().position(|c| {
            matches!(c, Call::Mount(None, t, None, f, None)
            if t == &sysctl && f.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_BIND))
        });
        assert!(bind.is_some() && bind < ro, "{calls:?}");
        assert!(calls.iter().any(|c| matches!(c, Call::Mount(Some(s), t, None, _, None)
            if s == Path::new("/vservers/v1/dev/null") && t == &here.join("keys"))));
    }

    #[test]
    fn the_tree_is_remounted_nodev_keeping_its_flags_but_not_dev() {
        let root = Path::new("/vservers/v1");
        let host_flags = MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME;
        let sys = RecordingSyscall::with_mount_flags(host_flags);
        enter_root(&sys, &spec(Default::default())).unwrap();
        let calls = sys.calls();
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        let bound = calls.iter().position(|c| c == &Call::Mount(Some(root.into()), root.into(), None, bind, None));
        let read = calls.iter().position(|c| c == &Call::MountFlags(root.into()));
        let nodev = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | host_flags;
        let remount = calls.iter().position(|c| c == &Call::Mount(None, root.into(), None, nodev, None));
        let dev = calls
            .iter()
            .position(|c| matches!(c, Call::Mount(_, t, Some(fs), _, _) if fs == "tmpfs" && t == &root.join("dev")));
        assert!(bound.is_some() && bound < read && read < remount && remount < dev, "{calls:?}");
        // Set-uid programs keep working, and the vserver's own /dev keeps its devices usable.
        for call in &calls {
            if let Call::Mount(_, target, _, flags, _) = call {
                if target == root {
                    assert!(!flags.contains(MsFlags::MS_NOSUID), "{call:?}");
                }
                if target == &root.join("dev") {
                    assert!(!flags.contains(MsFlags::MS_NODEV), "{call:?}");
                }
            }
        }

        let relaxed = crate::spec::Relaxed { devices: true, ..Default::default() };
        let sys = RecordingSyscall::with_mount_flags(host_flags);
        enter_root(&sys, &spec(relaxed)).unwrap();
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| matches!(c, Call::MountFlags(_))), "{calls:?}");
        assert!(!calls.iter().any(|c| matches!(c, Call::Mount(_, _, _, f, _) if f.contains(MsFlags::MS_REMOUNT))));
    }

    #[test]
    fn a_root_device_is_mounted_nodev_as_the_tree_is_bound_then_treated_as_the_tree() {
        let root = Path::new("/vservers/v1");
        let device = RootDevice { path: "/dev/loop3".into(), fstype: "ext4".into() };
        let sys = RecordingSyscall::default();
        mount_root_device(&sys, &device, root, false).unwrap();
        let mounted = Call::Mount(Some("/dev/loop3".into()), root.into(), Some("ext4".into()), MsFlags::MS_NODEV, None);
        assert_eq!(sys.calls(), vec![mounted]);
        // S_UNSAFE devices: neither the device nor the tree's bind is nodev, as for a directory tree.
        let sys = RecordingSyscall::default();
        mount_root_device(&sys, &device, root, true).unwrap();
        let plain = Call::Mount(Some("/dev/loop3".into()), root.into(), Some("ext4".into()), MsFlags::empty(), None);
        assert_eq!(sys.calls(), vec![plain]);

        // Then the tree, now the device's file system, is treated as any tree: bound on itself and remounted.
        let on_device = ContextSpec { root_device: Some(device), ..ContextSpec::sample() };
        let sys = RecordingSyscall::default();
        enter_root(&sys, &on_device).unwrap();
        let calls = sys.calls();
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        assert!(calls.contains(&Call::Mount(Some(root.into()), root.into(), None, bind, None)), "{calls:?}");
        assert!(!calls.iter().any(|c| matches!(c, Call::Mount(_, t, Some(_), _, _) if t == root)), "{calls:?}");
    }

    #[test]
    fn pivots_into_the_tree_after_private_proc_and_dev() {
        let sys = RecordingSyscall::default();
        enter_root(&sys, &spec(Default::default())).unwrap();
        let calls = sys.calls();
        // Propagation is cut before anything is mounted.
        assert!(matches!(&calls[0], Call::Mount(None, p, None, f, None)
            if p == Path::new("/") && f.contains(MsFlags::MS_PRIVATE | MsFlags::MS_REC)));
        let pos = |want: &dyn Fn(&Call) -> bool| calls.iter().position(want).expect("call made");
        let proc_mount = pos(
            &|c| matches!(c, Call::Mount(_, t, Some(fs), _, _) if fs == "proc" && t == Path::new("/vservers/v1/proc")),
        );
        let devpts = pos(
            &|c| matches!(c, Call::Mount(_, _, Some(fs), _, Some(d)) if fs == "devpts" && d.contains("newinstance")),
        );
        let pivot = pos(&|c| matches!(c, Call::PivotRoot(..)));
        let detach = pos(&|c| matches!(c, Call::Umount(p) if p == Path::new(".")));
        assert!(proc_mount < pivot && devpts < pivot && pivot < detach);
        for (name, major, minor) in DEVICES {
            let path = Path::new("/vservers/v1/dev").join(name);
            assert!(calls.contains(&Call::Mknod(path, 0o666, *major, *minor)), "missing /dev/{name}");
        }
        assert_eq!(calls.last(), Some(&Call::Chdir("/".into())));
    }
}
