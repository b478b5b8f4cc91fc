//! Scenarios: the devices root inside a vserver can reach. It may make device nodes (CAP_MKNOD, as in a
//! Docker container) but open only its own harmless ones; the tree is mounted `nodev`. The two layers refuse
//! differently, which the scenarios use to tell them apart: the device allow-list (cgroup v1 `devices`, or
//! the cgroup v2 device program) answers EPERM ("Operation not permitted"), `nodev` answers EACCES
//! ("Permission denied"). Block devices are only ever read, never written.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{text, Fixture, VSERVER};

/// A program run with `sh -c` inside that opens `path` for reading (and reads at most a block).
fn read_cmd(path: &str) -> String {
    format!("dd if={path} of=/dev/null bs=512 count=1")
}

/// Runs `script` with `sh -c` inside, expecting it to fail with `error` in its output.
fn fails_with(f: &Fixture, script: &str, error: &str) {
    let out = f.vserver(&["exec", "sh", "-c", script]);
    assert!(!out.status.success(), "{script:?} must fail: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(error),
        "{script:?} must fail with {error:?}: {}",
        text(&out)
    );
}

/// Whether the host has /dev/loop0 as 7:0 (the block device the scenarios make nodes of).
fn host_has_loop0() -> bool {
    std::fs::metadata("/dev/loop0").is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == libc::makedev(7, 0))
}

/// A copy of the host's /dev/null made by the host inside the tree, as a restored backup could hold one.
fn host_made_null(f: &Fixture) -> PathBuf {
    let path = f.root().join("host-null");
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod on the host");
    path
}

/// The vserver's group in the host's v1 devices hierarchy, when the host mounts one.
fn v1_devices_group(f: &Fixture) -> Option<PathBuf> {
    let hierarchy = Path::new("/sys/fs/cgroup/devices");
    hierarchy.join("devices.list").exists().then(|| hierarchy.join(&f.host().cgroup_parent).join(&f.name))
}

/// What the harmless devices are for: they work inside a vserver under any device policy.
fn own_devices_work(f: &Fixture) {
    f.exec(&["sh", "-c", "echo discarded > /dev/null"]);
    assert_eq!(f.exec(&["sh", "-c", "head -c 4 /dev/zero | wc -c"]).trim(), "4");
    assert_eq!(f.exec(&["sh", "-c", "head -c 16 /dev/urandom | wc -c"]).trim(), "16");
    assert_eq!(f.exec(&["sh", "-c", "head -c 16 /dev/random | wc -c"]).trim(), "16");
    // Opening the multiplexer makes a terminal of the vserver's own devpts instance. Its other end is
    // locked until the opener unlocks it, so opening that end reaches the terminal driver, which answers
    // EIO; a device check refusing it would have answered EPERM first.
    let out = f.vserver(&["exec", "sh", "-c", "exec 3<>/dev/ptmx; ls /dev/pts; exec 4<>/dev/pts/0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "0"), "/dev/ptmx opens and makes pts/0: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Input/output error") && !stderr.contains("not permitted"), "{}", text(&out));
}

#[test]
fn a_default_vserver_makes_device_nodes_but_opens_only_its_own() {
    let Some(f) = Fixture::new("a_default_vserver_makes_device_nodes_but_opens_only_its_own", "") else { return };
    let host_null = host_made_null(&f);
    f.start();
    own_devices_work(&f);
    // Made in /dev (a tmpfs of the vserver's own, not nodev): the allow-list alone refuses them.
    f.exec(&["mknod", "/dev/blk", "b", "7", "0"]);
    fails_with(&f, &read_cmd("/dev/blk"), "Operation not permitted");
    f.exec(&["mknod", "/dev/kvmx", "c", "10", "232"]);
    fails_with(&f, "cat /dev/kvmx", "Operation not permitted");
    fails_with(&f, "echo x > /dev/kvmx", "Operation not permitted");
    // A node made by mknod inside /dev for an allowed device opens: the list goes by device, not by path.
    f.exec(&["mknod", "/dev/null2", "c", "1", "3"]);
    f.exec(&["sh", "-c", "echo discarded > /dev/null2"]);
    // Made in the tree: nodev refuses them before the device check, whatever the device.
    f.exec(&["mknod", "/tmp/blk", "b", "7", "0"]);
    fails_with(&f, &read_cmd("/tmp/blk"), "Permission denied");
    let inside = format!("/{}", host_null.file_name().unwrap().to_str().unwrap());
    fails_with(&f, &format!("cat {inside}"), "Permission denied");
    fails_with(&f, &format!("echo x > {inside}"), "Permission denied");
    // Set-uid programs of the tree keep working: the tree is not nosuid.
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    let root_mount = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/")).expect("a / mount");
    let options: Vec<&str> = root_mount.split_whitespace().nth(3).unwrap().split(',').collect();
    assert!(options.contains(&"nodev") && !options.contains(&"nosuid"), "{root_mount}");

    // On a host with a v1 devices hierarchy (this hybrid one), the vserver has its group there too.
    if let Some(group) = v1_devices_group(&f) {
        let list = std::fs::read_to_string(group.join("devices.list")).expect("the v1 devices group exists");
        let mut got: Vec<&str> = list.lines().collect();
        got.sort_unstable();
        let mut want = [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c *:* m",
            "b *:* m",
        ];
        want.sort_unstable();
        assert_eq!(got, want, "{}", group.display());
        let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
        assert!(procs.lines().count() >= 1, "the vserver's processes are in it");
        let out = f.vserver(&["stop"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!group.exists(), "the stop removes the v1 devices group with the others");
    }
}

#[test]
fn s_unsafe_devices_lets_root_inside_open_the_nodes_it_makes() {
    let Some(f) = Fixture::new("s_unsafe_devices_lets_root_inside_open_the_nodes_it_makes", "S_UNSAFE=\"devices\"")
    else {
        return;
    };
    let host_null = host_made_null(&f);
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("devices"), "the start warns: {}", text(&out));
    own_devices_work(&f);
    let inside = format!("/{}", host_null.file_name().unwrap().to_str().unwrap());
    f.exec(&["sh", "-c", &format!("echo discarded > {inside}")]);
    f.exec(&["mknod", "/tmp/blk", "b", "7", "0"]);
    if host_has_loop0() {
        f.exec(&["sh", "-c", &read_cmd("/tmp/blk")]);
    } else {
        eprintln!("no /dev/loop0 (7:0) on this host: the block device read is not tried");
    }
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    let root_mount = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/")).expect("a / mount");
    assert!(!root_mount.split_whitespace().nth(3).unwrap().split(',').any(|o| o == "nodev"), "{root_mount}");
    if let Some(group) = v1_devices_group(&f) {
        assert!(!group.exists(), "no v1 devices group: {}", group.display());
    }
}

#[test]
fn the_nodev_remount_keeps_the_flags_of_the_trees_own_mount() {
    let test = "the_nodev_remount_keeps_the_flags_of_the_trees_own_mount";
    let Some(f) = Fixture::new(test, "") else { return };
    // The host mounts the tree nosuid and noatime; a remount that only added nodev would clear both.
    let root = f.root();
    let status = Command::new("mount").arg("--bind").arg(&root).arg(&root).status().unwrap();
    assert!(status.success(), "bind the tree on itself");
    let _unmount = Unmount(root.clone());
    let status = Command::new("mount").args(["-o", "remount,bind,nosuid,noatime"]).arg(&root).status().unwrap();
    assert!(status.success(), "make the tree's mount nosuid,noatime");
    f.start();
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    let root_mount = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/")).expect("a / mount");
    let options: Vec<&str> = root_mount.split_whitespace().nth(3).unwrap().split(',').collect();
    for kept in ["nodev", "nosuid", "noatime"] {
        assert!(options.contains(&kept), "{kept}: {root_mount}");
    }
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_host_without_device_checks_refuses_the_start_and_leaves_nothing() {
    let test = "a_host_without_device_checks_refuses_the_start_and_leaves_nothing";
    let Some(f) = Fixture::new(test, "") else { return };
    // A root holding links to this machine's v1 hierarchies but not to `devices` is a pure v1 host without
    // the devices controller to the product: no way to limit devices.
    let host = Path::new("/sys/fs/cgroup");
    if !host.join("freezer/tasks").exists() || !host.join("pids/tasks").exists() {
        eprintln!("skipped {test}: no v1 freezer and pids hierarchies here");
        return;
    }
    let root = f.lab.dir().join("cgroup-v1-without-devices");
    std::fs::create_dir_all(&root).unwrap();
    for h in ["freezer", "pids", "cpu", "memory"] {
        if host.join(h).join("tasks").exists() {
            std::os::unix::fs::symlink(host.join(h), root.join(h)).unwrap();
        }
    }
    let vserver = |args: &[&str]| -> Output {
        f.command(VSERVER).env("VSERVER_CGROUP_ROOT", &root).arg(&f.name).args(args).output().unwrap()
    };
    let groups = || {
        ["freezer", "pids", "cpu", "memory", "devices"]
            .map(|h| host.join(h).join(&f.host().cgroup_parent).join(&f.name))
            .into_iter()
            .filter(|g| g.exists())
            .collect::<Vec<_>>()
    };
    let out = vserver(&["start"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in ["devices controller", &root.join("devices").display().to_string(), "S_UNSAFE=\"devices\""] {
        assert!(stderr.contains(said), "the refusal says {said:?}: {}", text(&out));
    }
    assert_eq!(groups(), Vec::<PathBuf>::new(), "nothing is left of the refused start");
    assert!(f.cgroup_procs().is_empty());
    // The operator's explicit opt-out runs it without the list.
    std::fs::write(f.conf(), format!("{}S_UNSAFE=\"devices\"\n", std::fs::read_to_string(f.conf()).unwrap())).unwrap();
    let out = vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(groups(), Vec::<PathBuf>::new(), "the stop leaves nothing either");
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn on_pure_cgroup_v2_the_device_program_alone_holds_the_list() {
    let test = "on_pure_cgroup_v2_the_device_program_alone_holds_the_list";
    let Some(f) = Fixture::new(test, "LIMIT_PIDS=unlimited") else { return };
    // A second mount of this machine's cgroup2 file system is a pure v2 host to the product (see
    // cgroup_v2.rs); it offers no pids controller here, hence LIMIT_PIDS=unlimited. The vserver's processes
    // stay in the root groups of the v1 hierarchies, which allow every device: only the BPF program limits.
    let root = f.lab.dir().join("cgroup2");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount").args(["-t", "cgroup2", "none"]).arg(&root).status().is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped {test}: cannot mount cgroup2 here");
        return;
    }
    let _unmount = Unmount(root.clone());
    let vserver = |args: &[&str]| -> Output {
        f.command(VSERVER).env("VSERVER_CGROUP_ROOT", &root).arg(&f.name).args(args).output().unwrap()
    };
    let out = vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    if let Some(group) = v1_devices_group(&f) {
        assert!(!group.exists(), "a v2 host has no v1 devices group: {}", group.display());
    }
    let exec_fails = |script: &str, error: &str| {
        let out = vserver(&["exec", "sh", "-c", script]);
        assert!(!out.status.success(), "{script:?} must fail: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(error), "{script:?}: {}", text(&out));
    };
    let exec_ok = |script: &str| {
        let out = vserver(&["exec", "sh", "-c", script]);
        assert!(out.status.success(), "{script:?}: {}", text(&out));
    };
    exec_ok("mknod /dev/blk b 7 0 && mknod /dev/kvmx c 10 232");
    exec_fails(&read_cmd("/dev/blk"), "Operation not permitted");
    exec_fails("cat /dev/kvmx", "Operation not permitted");
    // The run state keeps the cgroup place: exec finds the vserver's v2 group without being told.
    own_devices_work(&f);
    let out = vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.join(&f.host().cgroup_parent).join(&f.name).exists(), "the group (and its program) are gone");
}
