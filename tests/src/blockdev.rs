//! A shared block device for the lab: a loop device over a file of the lab's, holding an ext4 file system
//! (every lab host reaches it, as every host of a SAN reaches a LUN); a sampler that checks, every few
//! milliseconds, in how many mount namespaces it is mounted (two is the corruption the product must never
//! cause); and the lab's power fence, a fence hook that "powers off" a host by killing every process of it.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::lab::Lab;

/// A loop device over a file, with an ext4 file system; detached on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// Its `major:minor`, as `/proc/PID/mountinfo` names it.
    pub devno: String,
    file: PathBuf,
}

impl LoopDevice {
    /// A file of `mib` MiB under `dir`, attached to a free loop device, with an empty ext4 file system.
    pub fn ext4(dir: &Path, mib: u64) -> Result<LoopDevice> {
        let file = dir.join("lun.img");
        let f = std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        f.set_len(mib << 20)?;
        drop(f);
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&file).output().context("running losetup")?;
        ensure!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let rdev = std::fs::metadata(&path)?.rdev();
        let devno = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
        let dev = LoopDevice { path, devno, file };
        let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev.path).output().context("running mkfs.ext4")?;
        ensure!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
        Ok(dev)
    }

    /// Mounts it at `at` on the host for `f` (to fill or read it), then unmounts it.
    pub fn with_mounted<T>(&self, at: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount").arg(&self.path).arg(at).output()?;
        ensure!(out.status.success(), "mount {}: {}", self.path.display(), String::from_utf8_lossy(&out.stderr));
        let result = f(at);
        let out = Command::new("umount").arg(at).output()?;
        ensure!(out.status.success(), "umount {}: {}", at.display(), String::from_utf8_lossy(&out.stderr));
        result
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).output();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The mount namespaces (by inode) in which a file system of device `devno` is mounted now.
pub fn namespaces_mounting(devno: &str) -> BTreeSet<u64> {
    let mut namespaces = BTreeSet::new();
    let mut looked = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino()) else { continue };
        if !looked.insert(ns) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else { continue };
        if info.lines().any(|l| l.split_whitespace().nth(2) == Some(devno)) {
            namespaces.insert(ns);
        }
    }
    namespaces
}

/// What a [`MountSampler`] saw.
#[derive(Debug, Clone, Default)]
pub struct Mounted {
    /// Rounds.
    pub rounds: u64,
    /// The most mount namespaces seen with the device mounted in one round.
    pub most_at_once: usize,
    /// Rounds with two or more: ms since the sampler started, and how many.
    pub overlaps: Vec<(u64, usize)>,
}

/// Checks every few ms in how many mount namespaces a device is mounted, until finished.
pub struct MountSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Mounted>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MountSampler {
    /// Starts sampling device `devno`.
    pub fn start(devno: &str) -> MountSampler {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Mounted::default())));
        let (s, w, devno) = (Arc::clone(&stop), Arc::clone(&seen), devno.to_string());
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let n = namespaces_mounting(&devno).len();
                let mut seen = w.lock().unwrap_or_else(|e| e.into_inner());
                seen.rounds += 1;
                seen.most_at_once = seen.most_at_once.max(n);
                if n > 1 {
                    seen.overlaps.push((began.elapsed().as_millis() as u64, n));
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        MountSampler { stop, seen, thread: Some(thread) }
    }

    /// Stops it; what it saw.
    pub fn finish(mut self) -> Mounted {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for MountSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes the lab's power fence, a fence hook (`[takeover] fence_hook`) that "powers off" host `hN`: every
/// process in its network namespace and in its vservers' cgroups killed, waited for until none is left, its
/// link down. Each call is logged, one line per host, in `log`. Returns the script's path.
pub fn power_fence(lab: &Lab, log: &Path) -> Result<PathBuf> {
    let mut cases = String::new();
    for h in &lab.hosts {
        let groups = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(|root| format!("{root}/{}", h.cgroup_parent))
            .collect::<Vec<_>>()
            .join(" ");
        cases.push_str(&format!(
            "  h{i}) ns={ns}; port={port}; groups=\"{groups}\" ;;\n",
            i = h.index,
            ns = h.netns.name(),
            port = h.switch_port,
        ));
    }
    let script = format!(
        "#!/bin/sh\n# The lab's power fence: host $1 is switched off.\nset -u\ncase \"$1\" in\n{cases}  *) echo \"unknown \
         host $1\" >&2; exit 2 ;;\nesac\necho \"$1\" >> {log}\nip netns exec {switch} ip link set \"$port\" down\n\
         for g in $groups; do [ -e \"$g/cgroup.kill\" ] && echo 1 > \"$g/cgroup.kill\"; done\n\
         ip netns pids \"$ns\" | xargs -r kill -9\n\
         for i in $(seq 1 200); do\n  left=$(ip netns pids \"$ns\"; for g in $groups; do find \"$g\" -name cgroup.procs \
         -exec cat {{}} + 2>/dev/null; done)\n  [ -z \"$left\" ] && exit 0\n  sleep 0.05\ndone\necho \"$1: processes \
         left: $left\" >&2\nexit 1\n",
        log = log.display(),
        switch = lab.switch().name(),
    );
    let path = lab.dir().join("power-fence.sh");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
