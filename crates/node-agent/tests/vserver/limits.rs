//! Scenarios: ULIMIT, S_FLAGS nproc, S_NICE, fakeinit; the resource limits of a vserver (the default
//! process limit, LIMIT_PIDS, LIMIT_MEMORY, CPU_WEIGHT, IO_WEIGHT, LIMIT_DISK) and their refusals.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::{alive, text, Fixture, VSERVER};

#[test]
fn nproc_stops_a_fork_bomb_inside_while_the_host_stays_fine() {
    let Some(f) = Fixture::new(
        "nproc_stops_a_fork_bomb_inside_while_the_host_stays_fine",
        "S_FLAGS=\"nproc\"\nULIMIT=\"-H -u 40\"",
    ) else {
        return;
    };
    f.add_httpd();
    f.start();
    f.wait_http();
    // A bounded fork bomb: every shell tries to start two more, for a few seconds.
    let bomb = "b() { b & b & sleep 3; }; b";
    let mut child = f.command(crate::fixture::VSERVER).args([&f.name, "exec", "sh", "-c", bomb]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let count = f.cgroup_procs().len();
    assert!(count <= 40, "the vserver holds at most 40 processes, has {count}");
    // The host can still start processes.
    assert!(std::process::Command::new("true").status().unwrap().success());
    let _ = child.wait();
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.cgroup_procs().is_empty());
}

#[test]
fn ulimit_and_nice_floor_apply_to_every_process() {
    let Some(f) =
        Fixture::new("ulimit_and_nice_floor_apply_to_every_process", "ULIMIT=\"-n 256 -H -u 1000\"\nS_NICE=5")
    else {
        return;
    };
    f.start();
    assert_eq!(f.exec(&["sh", "-c", "ulimit -n"]).trim(), "256");
    // Field 19 of /proc/PID/stat is the nice value; this busybox has renice but no nice.
    let nice_of = |script: &str| f.exec(&["sh", "-c", script]).split_whitespace().nth(18).unwrap().to_string();
    assert_eq!(nice_of("cat /proc/self/stat"), "5", "processes start at the floor");
    let out = f.vserver(&["exec", "sh", "-c", "renice -n -3 -p $$ && cat /proc/self/stat"]);
    assert!(!out.status.success(), "going under the floor is refused: {}", text(&out));
    // Going up is allowed.
    assert_eq!(nice_of("renice -n 3 -p $$ >/dev/null; cat /proc/self/stat"), "8");
}

#[test]
fn fakeinit_runs_the_vservers_own_init_as_process_1() {
    let Some(f) = Fixture::new("fakeinit_runs_the_vservers_own_init_as_process_1", "S_FLAGS=\"fakeinit\"") else {
        return;
    };
    let init = f.root().join("sbin/init");
    let _ = std::fs::remove_file(&init);
    std::fs::write(
        &init,
        "#!/bin/sh\nhttpd -p 80 -h /www\ntrap 'killall httpd; exit 0' TERM\nwhile true; do sleep 1; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.start();
    f.wait_http();
    let cmdline = f.exec(&["cat", "/proc/1/cmdline"]);
    assert!(
        cmdline.starts_with("/bin/sh") && cmdline.contains("/sbin/init") || cmdline.starts_with("init"),
        "process 1 is the vserver's init: {cmdline:?}"
    );
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.cgroup_procs().is_empty());
}

/// Polls `check` until it holds or `timeout` passes; whether it held.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

/// The number after `key` in a flat-keyed control file (`pids.events`, `memory.events`, `memory.oom_control`).
fn counter(path: &Path, key: &str) -> u64 {
    read(path)
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
}

#[test]
fn a_default_vserver_has_a_process_limit_and_a_fork_bomb_stops_at_it_while_the_host_stays_fine() {
    let Some(f) =
        Fixture::new("a_default_vserver_has_a_process_limit_and_a_fork_bomb_stops_at_it_while_the_host_stays_fine", "")
    else {
        return;
    };
    // The starter conf sets no limit: every vserver gets the default one.
    f.start();
    assert_eq!(read(&f.cgroup_file("pids", "pids.max")), "4096");
    assert_eq!(f.status_json()["pids_limit"], 4096);
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));

    // A smaller limit keeps the bomb quick.
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    std::fs::write(f.conf(), format!("{conf}LIMIT_PIDS=30\n")).unwrap();
    f.start();
    let (current, events) = (f.cgroup_file("pids", "pids.current"), f.cgroup_file("pids", "pids.events"));
    assert_eq!(read(&f.cgroup_file("pids", "pids.max")), "30");
    // Every shell starts two more, for ever: only the limit stops it.
    let bomb = "b() { b & b & sleep 3; }; b";
    let mut child = f.command(VSERVER).args([&f.name, "exec", "sh", "-c", bomb]).spawn().unwrap();
    let mut most = 0;
    let refused = wait_until(Duration::from_secs(30), || {
        most = most.max(read(&current).parse::<u64>().unwrap());
        counter(&events, "max") > 0
    });
    assert!(refused, "the kernel refused forks at the limit ({events:?}: {})", read(&events));
    assert!(most <= 30, "the vserver held at most 30 tasks, saw {most}");
    // The host can still start processes, and the vserver says where it stands.
    assert!(Command::new("true").status().unwrap().success());
    let status = f.status_json();
    assert_eq!(status["pids_limit"], 30);
    assert!(status["tasks"].as_u64().is_some_and(|t| (1..=30).contains(&t)), "{status}");
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let _ = child.wait();
    assert!(alive(&f.cgroup_procs()).is_empty());
}

#[test]
fn limit_memory_kills_a_process_allocating_beyond_it_while_the_vserver_and_host_go_on() {
    let Some(f) = Fixture::new(
        "limit_memory_kills_a_process_allocating_beyond_it_while_the_vserver_and_host_go_on",
        "LIMIT_MEMORY=32M",
    ) else {
        return;
    };
    f.start();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (limit_file, events, key) = if v2 {
        (f.cgroup_file("memory", "memory.max"), f.cgroup_file("memory", "memory.events"), "oom_kill ")
    } else {
        (f.cgroup_file("memory", "memory.limit_in_bytes"), f.cgroup_file("memory", "memory.oom_control"), "oom_kill ")
    };
    assert_eq!(read(&limit_file), (32u64 << 20).to_string(), "the limit asked for is in force");
    assert_eq!(f.status_json()["memory_limit_bytes"], 32u64 << 20);
    // Within the limit: fine. dd's buffer is its block size, filled from /dev/zero.
    let out = f.vserver(&["exec", "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1"]);
    assert!(out.status.success(), "8 MiB fits in 32: {}", text(&out));
    assert_eq!(counter(&events, key), 0);
    // Beyond it: the kernel kills the allocating process, not the vserver, not the host.
    let out = f.vserver(&["exec", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    assert!(!out.status.success(), "64 MiB does not fit in 32: {}", text(&out));
    assert!(counter(&events, key) >= 1, "the OOM killer acted inside the vserver's group: {}", read(&events));
    assert_eq!(f.exec(&["echo", "still here"]).trim(), "still here");
    assert!(Command::new("true").status().unwrap().success());
    let text_status = f.vserver(&["status"]);
    assert!(String::from_utf8_lossy(&text_status.stdout).contains("(limit 32.0M)"), "{}", text(&text_status));
}

#[test]
fn cpu_weight_lands_in_the_vservers_cpu_group() {
    let Some(f) = Fixture::new("cpu_weight_lands_in_the_vservers_cpu_group", "CPU_WEIGHT=500") else { return };
    f.start();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (file, expected) =
        if v2 { (f.cgroup_file("cpu", "cpu.weight"), "500") } else { (f.cgroup_file("cpu", "cpu.shares"), "5120") };
    assert_eq!(read(&file), expected, "CPU_WEIGHT 500 is five times the default");
    // The vserver's processes are in that group.
    let procs = read(&file.with_file_name("cgroup.procs"));
    let inside = f.cgroup_procs();
    assert!(!inside.is_empty() && inside.iter().all(|p| procs.lines().any(|l| l == p.to_string())), "{procs}");
    assert_eq!(f.status_json()["cpu_weight"], 500);
    let out = f.vserver(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cpu weight: 500"), "{}", text(&out));
}

/// Whether this machine's kernel offers an I/O weight to a vserver's group: `blkio.weight` or
/// `blkio.bfq.weight` in a fresh v1 blkio group, `io.weight` or `io.bfq.weight` in a v2 group.
fn host_has_io_weights(probe_name: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let (hierarchy, files) = if root.join("cgroup.controllers").exists() {
        if !read(&root.join("cgroup.controllers")).split_whitespace().any(|c| c == "io") {
            return false;
        }
        (root.to_path_buf(), ["io.weight", "io.bfq.weight"])
    } else {
        (root.join("blkio"), ["blkio.weight", "blkio.bfq.weight"])
    };
    if !hierarchy.is_dir() {
        return false;
    }
    if root.join("cgroup.controllers").exists() {
        // Any group below the root shows the files once io is on for it.
        return std::fs::read_dir(&hierarchy)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| files.iter().any(|f| e.path().join(f).exists()));
    }
    let probe = hierarchy.join(probe_name);
    std::fs::create_dir(&probe).unwrap();
    let has = files.iter().any(|f| probe.join(f).exists());
    std::fs::remove_dir(&probe).unwrap();
    has
}

#[test]
fn io_weight_without_a_proportional_io_scheduler_refuses_and_leaves_nothing_behind() {
    let Some(f) = Fixture::new(
        "io_weight_without_a_proportional_io_scheduler_refuses_and_leaves_nothing_behind",
        "IO_WEIGHT=200",
    ) else {
        return;
    };
    let supported = host_has_io_weights(&format!("{}-probe", f.host().cgroup_parent));
    let out = f.vserver(&["start"]);
    if supported {
        eprintln!("this host has I/O weights: checking the weight lands instead of the refusal");
        assert!(out.status.success(), "{}", text(&out));
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let files: &[(&str, &str)] = if v2 {
            &[("io.weight", "default 200"), ("io.bfq.weight", "200")]
        } else {
            &[("blkio.weight", "1000"), ("blkio.bfq.weight", "200")]
        };
        let landed = files.iter().any(|(file, value)| {
            let path = f.cgroup_file(if v2 { "io" } else { "blkio" }, file);
            path.exists() && read(&path).lines().any(|l| l == *value)
        });
        assert!(landed, "IO_WEIGHT 200 is in the vserver's group");
        return;
    }
    // This machine: blkio offers throttling only (no CFQ, no BFQ). Never run without the weight asked for.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in ["cannot enforce IO_WEIGHT", "weight nor", "remove IO_WEIGHT"] {
        assert!(stderr.contains(part), "{part:?} missing: {}", text(&out));
    }
    assert!(f.cgroup_groups().is_empty(), "groups left behind: {:?}", f.cgroup_groups());
    assert!(!f.host().run_dir.join(format!("{}.json", f.name)).exists(), "no run state");
    let running = f.vserver(&["running"]);
    assert!(!running.status.success(), "{}", text(&running));
}

#[test]
fn limit_disk_on_a_tree_without_project_quotas_refuses_and_says_how() {
    let Some(f) = Fixture::new("limit_disk_on_a_tree_without_project_quotas_refuses_and_says_how", "LIMIT_DISK=64M")
    else {
        return;
    };
    // The lab's trees sit in a temporary directory of this machine's root file system: no project quotas.
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in ["cannot enforce LIMIT_DISK", &f.root().display().to_string(), "project quotas", "remove LIMIT_DISK"] {
        assert!(stderr.contains(part), "{part:?} missing: {}", text(&out));
    }
    assert!(f.cgroup_groups().is_empty(), "groups left behind: {:?}", f.cgroup_groups());
    assert!(!f.vserver(&["running"]).status.success());
}

/// An ext4 file system with project quotas (`mkfs.ext4 -O quota,project`, mounted with `prjquota`) on a
/// loop device backed by a file of the lab's directory. Its drop stops the vserver running from it, then
/// unmounts it and detaches the loop device, also when the test failed.
struct QuotaFs<'f> {
    f: &'f Fixture,
    mount: PathBuf,
    loop_dev: String,
}

impl<'f> QuotaFs<'f> {
    /// `None` when this kernel cannot mount such a file system (ext4's quota feature needs CONFIG_QFMT_V2).
    fn new(f: &'f Fixture) -> Option<QuotaFs<'f>> {
        let image = f.lab.dir().join("quota.img");
        std::fs::File::create(&image).unwrap().set_len(128 << 20).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&image).output().unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out));
        let loop_dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mount = f.lab.dir().join("quota-fs");
        std::fs::create_dir_all(&mount).unwrap();
        let mut disk = QuotaFs { f, mount, loop_dev };
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "quota,project", "-I", "256"])
            .arg(&disk.loop_dev)
            .status()
            .unwrap();
        assert!(mkfs.success(), "mkfs.ext4 on {}", disk.loop_dev);
        let mounted = Command::new("mount").args(["-o", "prjquota"]).arg(&disk.loop_dev).arg(&disk.mount).status();
        if !mounted.unwrap().success() {
            // Nothing is mounted: the drop only detaches the loop device.
            disk.mount = PathBuf::new();
            return None;
        }
        Some(disk)
    }

    /// `vserver NAME ARGS...` with the vservers' trees on this file system.
    fn vserver(&self, args: &[&str]) -> std::process::Output {
        self.f.command(VSERVER).env("VSERVER_VSERVERS_DIR", &self.mount).arg(&self.f.name).args(args).output().unwrap()
    }
}

impl Drop for QuotaFs<'_> {
    fn drop(&mut self) {
        if !self.mount.as_os_str().is_empty() {
            let _ = self.vserver(&["stop"]);
            let unmounted = Command::new("umount").arg(&self.mount).status().is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.loop_dev).status();
    }
}

#[test]
fn limit_disk_stops_writes_beyond_the_quota_inside_and_status_shows_usage() {
    let Some(f) =
        Fixture::new("limit_disk_stops_writes_beyond_the_quota_inside_and_status_shows_usage", "LIMIT_DISK=16M")
    else {
        return;
    };
    let Some(disk) = QuotaFs::new(&f) else {
        eprintln!(
            "skipped limit_disk_stops_writes_beyond_the_quota_inside_and_status_shows_usage: this kernel cannot \
             mount ext4 with project quotas (dmesg: ext4's quota feature needs CONFIG_QUOTA and CONFIG_QFMT_V2)"
        );
        return;
    };
    let tree = disk.mount.join(&f.name);
    let copied = Command::new("cp").arg("-a").arg(f.root()).arg(&tree).status().unwrap();
    assert!(copied.success(), "copying the tree onto the quota file system");
    let out = disk.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = disk.vserver(&["exec", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=32"]);
    assert!(!out.status.success(), "32 MiB do not fit in 16: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"), "{}", text(&out));
    let out = disk.vserver(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["disk_limit_bytes"], 16u64 << 20, "{status}");
    let used = status["disk_bytes"].as_u64().unwrap_or_default();
    assert!(used > 8 << 20 && used <= 17 << 20, "the tree holds about its quota: {status}");
    let out = disk.vserver(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(limit 16.0M)"), "{}", text(&out));
    // Room again once the file is gone.
    assert!(disk.vserver(&["exec", "rm", "/big"]).status.success());
    let out = disk.vserver(&["exec", "dd", "if=/dev/zero", "of=/small", "bs=1M", "count=4"]);
    assert!(out.status.success(), "{}", text(&out));
}
