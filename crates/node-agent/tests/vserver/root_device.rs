//! Scenarios: a vserver whose tree is the ext4 file system of a block device (`start --root-device`), here a
//! loop device over a file of the lab: mounted only in the vserver's own mount namespace, released when its
//! processes end (by a stop, or a kill of them all as a fence does), refused while mounted anywhere else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use isolate::mounts::{self, DeviceNumber};

use crate::fixture::{alive, text, Fixture};

/// How long the kernel may take, on a busy machine, to release a device once the vserver's processes are gone.
const RELEASE: Duration = Duration::from_secs(30);

/// A loop device over a 64 MiB file of the lab holding an ext4 file system made from the vserver's busybox
/// tree, whose directory is emptied to be the mount point. Its drop stops the vserver (which waits until the
/// device is released), then detaches the loop device, also when the test failed; the lab removes the file.
struct RootDisk<'f> {
    f: &'f Fixture,
    path: PathBuf,
    number: DeviceNumber,
}

impl<'f> RootDisk<'f> {
    /// The file system is made with `mkfs.ext4 -d` from the tree: it is never mounted on the host to be filled.
    fn new(f: &'f Fixture) -> RootDisk<'f> {
        let image = f.lab.dir().join("root.img");
        std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        let out =
            Command::new("losetup").args(["--find", "--show"]).arg(&image).output().expect("losetup (util-linux)");
        assert!(out.status.success(), "losetup: {}", text(&out));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let number = mounts::block_device(&path).unwrap();
        let disk = RootDisk { f, path, number };
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(f.root())
            .arg(&disk.path)
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4 -d: {}", text(&out));
        std::fs::remove_dir_all(f.root()).unwrap();
        std::fs::create_dir(f.root()).unwrap();
        disk
    }

    /// `vserver NAME start --root-device DEV ARGS...`.
    fn start(&self, args: &[&str]) -> Output {
        let mut all = vec!["start", "--root-device", self.path.to_str().unwrap()];
        all.extend_from_slice(args);
        self.f.vserver(&all)
    }

    /// Who has the device mounted, in words; empty when it is released (no mount table lists it and the kernel
    /// gives it up for an exclusive open).
    fn held_by(&self) -> String {
        let holders = mounts::holders(self.number);
        if !holders.is_empty() {
            return format!("{holders:?}");
        }
        if mounts::busy(&self.path).unwrap() {
            return "the kernel (exclusive open refused)".into();
        }
        String::new()
    }

    /// Waits until the device is released, or fails naming what holds it.
    fn wait_released(&self) {
        let deadline = Instant::now() + RELEASE;
        loop {
            let held = self.held_by();
            if held.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{} still held after {RELEASE:?} by {held}", self.path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Mounts the device on a directory of the lab, in the host's mount namespace, until the guard drops.
    fn mount_on_host(&self) -> HostMount {
        let point = self.f.lab.dir().join("host-mount");
        std::fs::create_dir_all(&point).unwrap();
        let out = Command::new("mount").args(["-t", "ext4"]).arg(&self.path).arg(&point).output().unwrap();
        assert!(out.status.success(), "mount on the host: {}", text(&out));
        HostMount { point }
    }

    /// `e2fsck -n -f`: the file system is consistent (nothing is changed).
    fn assert_clean(&self) {
        let out = Command::new("e2fsck").args(["-n", "-f"]).arg(&self.path).output().expect("e2fsck (e2fsprogs)");
        assert!(out.status.success(), "e2fsck -n -f {}: {}", self.path.display(), text(&out));
    }
}

impl Drop for RootDisk<'_> {
    fn drop(&mut self) {
        let _ = self.f.vserver(&["stop"]);
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// The device mounted on the host; unmounted when the guard drops (lazily if it is busy).
struct HostMount {
    point: PathBuf,
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.point).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// Process 1 of the running vserver, from its run state.
fn init_pid(f: &Fixture) -> i32 {
    let state = std::fs::read(f.host().run_dir.join(format!("{}.json", f.name))).expect("a run state");
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    i32::try_from(state["init_pid"].as_i64().expect("init_pid")).unwrap()
}

fn mountinfo(pid: &str) -> Vec<mounts::Mount> {
    mounts::parse_mountinfo(&std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap())
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// A refused start left nothing: no group, no run state, no process, and the mount point as it was.
fn assert_nothing_started(f: &Fixture, out: &Output) {
    assert!(f.cgroup_groups().is_empty(), "groups left behind: {:?}\n{}", f.cgroup_groups(), text(out));
    assert!(!f.host().run_dir.join(format!("{}.json", f.name)).exists(), "a run state left: {}", text(out));
    assert_eq!(f.vserver(&["running"]).status.code(), Some(3));
    assert!(is_empty_dir(&f.root()), "the mount point is left empty");
}

#[test]
fn a_vserver_runs_from_its_root_device_mounted_in_its_own_mount_namespace_only() {
    let Some(f) = Fixture::new("a_vserver_runs_from_its_root_device_mounted_in_its_own_mount_namespace_only", "")
    else {
        return;
    };
    // Its start and stop scripts are read from the device: the host's directory is empty.
    f.add_service("mark", 10, "touch /started-by-script", "touch /stopped-by-script");
    let disk = RootDisk::new(&f);
    let out = disk.start(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("root device {} (ext4)", disk.path.display())), "{}", text(&out));
    f.exec(&["ls", "/started-by-script"]);
    f.exec(&["sh", "-c", "echo written inside > /on-device"]);
    assert!(is_empty_dir(&f.root()), "what the vserver writes goes to the device, not the host's directory");

    // The host's own mount table does not list the device; the vserver's has it as its root.
    let host = mountinfo("self");
    assert!(!host.iter().any(|m| m.device == disk.number), "the host sees {}: {host:?}", disk.number);
    let init = init_pid(&f);
    let inside = mountinfo(&init.to_string());
    assert!(
        inside.iter().any(|m| m.device == disk.number && m.mount_point == Path::new("/")),
        "the vserver's root is the device: {inside:?}"
    );
    let holders = mounts::holders(disk.number);
    assert_eq!(holders.len(), 1, "only the vserver's namespace has it: {holders:?}");
    assert_eq!(holders[0].mount_ns, mounts::mount_namespace(init), "{holders:?}");
    let status = f.status_json();
    assert_eq!(status["root_device"]["path"], disk.path.to_str().unwrap(), "{status}");
    assert_eq!(status["root_device"]["fstype"], "ext4", "{status}");
    assert_eq!(status["root_device"]["device"], disk.number.to_string(), "{status}");
    let out = f.vserver(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("root:      {}", disk.path.display())));

    // A restart without the flag runs it from the same device.
    let out = f.vserver(&["restart"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.exec(&["cat", "/on-device"]), "written inside\n");
    assert_eq!(mounts::holders(disk.number).len(), 1);

    // A stop returns once the device is mounted nowhere.
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(disk.held_by(), "", "held after the stop returned");
    {
        let mounted = disk.mount_on_host();
        let written = std::fs::read_to_string(mounted.point.join("on-device")).unwrap();
        assert_eq!(written, "written inside\n");
        assert!(mounted.point.join("stopped-by-script").exists(), "the stop scripts ran from the device");
    }
    disk.wait_released();
    disk.assert_clean();
}

#[test]
fn a_root_device_mounted_elsewhere_or_unusable_is_refused_and_nothing_starts() {
    let Some(f) = Fixture::new("a_root_device_mounted_elsewhere_or_unusable_is_refused_and_nothing_starts", "") else {
        return;
    };
    let disk = RootDisk::new(&f);
    let device = disk.path.display().to_string();

    // The empty mount point without its device: the error says what is missing.
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no tree") && stderr.contains("--root-device"), "{}", text(&out));
    assert_nothing_started(&f, &out);

    // Mounted on the host: refused, naming the device and where it is mounted.
    {
        let mounted = disk.mount_on_host();
        let out = disk.start(&[]);
        assert_eq!(out.status.code(), Some(7), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for part in [&device, "is mounted on this host", &mounted.point.display().to_string(), "nothing was started"] {
            assert!(stderr.contains(part), "{part:?} missing: {}", text(&out));
        }
        assert_nothing_started(&f, &out);
    }
    disk.wait_released();

    // Not a block device; a file system type the kernel does not know.
    let image = f.lab.dir().join("root.img");
    let out = f.vserver(&["start", "--root-device", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root.img is not a block device"), "{}", text(&out));
    assert_nothing_started(&f, &out);
    let out = disk.start(&["--root-fstype", "nosuchfs"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&device) && stderr.contains("\"nosuchfs\" is not one this kernel knows"), "{stderr}");
    assert_nothing_started(&f, &out);

    // Once nothing holds it, it starts; given through the environment this time.
    let out = f
        .command(crate::fixture::VSERVER)
        .env("VSERVER_ROOT_DEVICE", &disk.path)
        .args([&f.name, "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mounts::holders(disk.number).len(), 1);
}

#[test]
fn killing_every_process_of_a_vserver_releases_its_root_device() {
    let Some(f) = Fixture::new("killing_every_process_of_a_vserver_releases_its_root_device", "") else { return };
    let disk = RootDisk::new(&f);
    let out = disk.start(&[]);
    assert!(out.status.success(), "{}", text(&out));
    f.exec(&["sh", "-c", "echo before the kill > /on-device; sleep 300 >/dev/null 2>&1 &"]);
    assert!(f.cgroup_procs().len() >= 3, "the keeper, process 1 and a sleep: {:?}", f.cgroup_procs());

    // As a fence does: SIGKILL to every process of the vserver, until none is left; no stop.
    let deadline = Instant::now() + RELEASE;
    while !alive(&f.cgroup_procs()).is_empty() {
        for pid in f.cgroup_procs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(Instant::now() < deadline, "processes survive SIGKILL: {:?}", f.cgroup_procs());
        std::thread::sleep(Duration::from_millis(20));
    }
    disk.wait_released();
    // The kernel unmounted it as the namespace ended: a clean file system, with what was written.
    disk.assert_clean();
    let out = f.vserver(&["stop"]);
    assert_eq!(out.status.code(), Some(3), "the stop finds it ended: {}", text(&out));
    let out = disk.start(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.exec(&["cat", "/on-device"]), "before the kill\n");
}
