//! Namespaces and mounts: new user namespaces, joining process 1's namespaces, the mount API, and the
//! file systems whose mounting shows the host (sysfs, cgroup v1 with its release_agent, cgroup2, a fresh
//! /proc without the masks, binfmt_misc). Every mount is made under the probe's scratch directory in the
//! vserver's own mount namespace and removed at once.

use crate::procfs::{kernel_has_fs, opens_for_writing, readable_proc};
use crate::sys::{self, Errno, Forked};
use crate::{attempt, denied, escaped, permission_probe, reached, refused, Attempt, Ctx, Outcome, Verdict, ABSENT};

const MS_HARMLESS: u64 = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The namespace attempts.
pub fn namespace_attempts() -> Vec<Attempt> {
    vec![
        attempt("userns", "unshare(CLONE_NEWUSER)", |_| match sys::unshare(libc::CLONE_NEWUSER) {
            Ok(_) => reached("a new user namespace, in which root holds every capability"),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
        attempt("userns", "clone(CLONE_NEWUSER)", |_| {
            child_verdict(sys::clone_flags(libc::CLONE_NEWUSER as i64), "a process in a new user namespace")
        }),
        attempt("userns", "clone3(CLONE_NEWUSER)", |_| {
            child_verdict(sys::clone3_flags(libc::CLONE_NEWUSER as u64), "a process in a new user namespace")
        }),
        attempt("userns", "unshare(CLONE_NEWUSER|CLONE_NEWNS) then mount a tmpfs", userns_mount),
        attempt("userns", "setns into process 1's namespaces", setns_init),
    ]
}

/// The mount attempts.
pub fn attempts() -> Vec<Attempt> {
    vec![
        attempt("mount", "fsopen (unknown flag)", |_| {
            permission_probe(sys::fsopen_invalid(), Outcome::Reached, "file systems can be mounted")
        }),
        attempt("mount", "open_tree OPEN_TREE_CLONE (no such path)", |_| {
            match sys::open_tree_clone("/escape-probe-none") {
                Ok(_) => reached("a mount tree cloned"),
                Err(e) if refused(e) => denied(e.name()),
                Err(e) => reached(format!("{e} after the permission check: mount trees can be cloned")),
            }
        }),
        attempt("mount", "move_mount (unknown flag)", |_| {
            permission_probe(sys::move_mount_invalid(), Outcome::Reached, "mounts can be moved")
        }),
        attempt("mount", "mount a tmpfs", mount_tmpfs),
        attempt("mount", "umount2 of a directory that is not a mount point", |c| {
            permission_probe(
                sys::umount2(&c.scratch, 0),
                Outcome::Reached,
                "the vserver's mounts (its /proc masks) can be removed",
            )
        }),
        attempt("mount", "pivot_root (no such directories)", |_| {
            permission_probe(
                sys::pivot_root("/escape-probe-none", "/escape-probe-none"),
                Outcome::Reached,
                "the root can be pivoted",
            )
        }),
        attempt("procfs", "mount a fresh proc and open its core_pattern for writing", mount_proc),
        attempt("procfs", "unshare a mount namespace and unmount the /proc masks", lift_proc_masks),
        attempt("sysfs", "mount sysfs", mount_sysfs),
        attempt("cgroup", "/proc/self/cgroup shows the host's cgroup tree", |_| own_cgroup()),
        attempt("cgroup", "mount a cgroup v1 hierarchy and open its release_agent for writing", cgroup_v1),
        attempt("cgroup", "release_agent or cgroup.procs writable in a cgroup file system already mounted", |_| {
            mounted_cgroup_files()
        }),
        attempt("cgroup", "mount cgroup2 and open the root's cgroup.procs for writing", cgroup2),
        attempt("binfmt", "mount binfmt_misc and open its register for writing", binfmt_misc),
    ]
}

/// The verdict on a fork-like call: in the child, exit at once; in the parent, reap it.
fn child_verdict(r: Result<Forked, Errno>, what: &str) -> Verdict {
    match r {
        Ok(Forked::Child) => sys::exit_now(0),
        Ok(Forked::Parent(pid)) => {
            let _ = sys::wait(pid);
            reached(what)
        }
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
    }
}

/// A fresh directory under the scratch directory, for a mount point.
fn mount_point(ctx: &Ctx, name: &str) -> Result<String, Verdict> {
    let dir = format!("{}/{name}", ctx.scratch);
    std::fs::create_dir_all(&dir).map_err(|e| reached(format!("mkdir {dir}: {e}")))?;
    Ok(dir)
}

/// Unmounts and removes a mount point made by [`mount_point`].
fn release(dir: &str) {
    let _ = sys::umount2(dir, libc::MNT_DETACH);
    let _ = std::fs::remove_dir(dir);
}

fn userns_mount(ctx: &Ctx) -> Verdict {
    let dir = match mount_point(ctx, "userns-tmpfs") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        // The new mount namespace dies with this child: nothing to unmount in the vserver's.
        Ok(_) => match sys::mount("escape-probe", &dir, "tmpfs", MS_HARMLESS, "size=64k") {
            Ok(_) => reached("a tmpfs mounted by root of a new user namespace"),
            Err(e) => reached(format!("a new user and mount namespace; mount: {e}")),
        },
    };
    let _ = std::fs::remove_dir(&dir);
    v
}

fn setns_init(_ctx: &Ctx) -> Verdict {
    let mut joined = Vec::new();
    let mut foreign = Vec::new();
    let mut refusals = Vec::new();
    for ns in ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time"] {
        let path = format!("/proc/1/ns/{ns}");
        let target = std::fs::read_link(&path).ok();
        let own = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
        let fd = match sys::open(&path, libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) => {
                refusals.push(format!("{ns}: open {e}"));
                continue;
            }
        };
        match sys::setns(&fd) {
            Ok(_) if target.is_some() && target != own => foreign.push(ns),
            Ok(_) => joined.push(ns),
            Err(e) => refusals.push(format!("{ns}: {e}")),
        }
    }
    if !foreign.is_empty() {
        escaped(format!("joined namespaces that are not the vserver's: {}", foreign.join(" ")))
    } else if !joined.is_empty() {
        reached(format!(
            "joined process 1's (the vserver's own) {}; refused: {}",
            joined.join(" "),
            refusals.join(", ")
        ))
    } else {
        denied(refusals.join(", "))
    }
}

fn mount_tmpfs(ctx: &Ctx) -> Verdict {
    let dir = match mount_point(ctx, "tmpfs") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::mount("escape-probe", &dir, "tmpfs", MS_HARMLESS, "size=64k") {
        Ok(_) => reached("a tmpfs mounted in the vserver's own mount namespace (removed)"),
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
    };
    release(&dir);
    v
}

fn mount_proc(ctx: &Ctx) -> Verdict {
    let dir = match mount_point(ctx, "proc") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::mount("proc", &dir, "proc", MS_HARMLESS, "") {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        Ok(_) => match opens_for_writing(&format!("{dir}/sys/kernel/core_pattern")) {
            Ok(()) => escaped("a fresh proc, without masks: core_pattern opens for writing (nothing written)"),
            Err(e) => reached(format!("a fresh proc mounted; its core_pattern: {e}")),
        },
    };
    release(&dir);
    v
}

fn lift_proc_masks(_ctx: &Ctx) -> Verdict {
    if let Err(e) = sys::unshare(libc::CLONE_NEWNS) {
        return if refused(e) { denied(format!("unshare(CLONE_NEWNS): {e}")) } else { reached(e.name()) };
    }
    // This child's private copy of the vserver's mounts: nothing done here reaches the vserver.
    if let Err(e) = sys::mount_propagation("/", libc::MS_REC | libc::MS_PRIVATE) {
        return reached(format!("a mount namespace of its own, but making it private: {e}"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut masks: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with("/proc/"))
        .map(str::to_string)
        .collect();
    masks.reverse();
    let mut lifted = 0;
    let mut kept = Vec::new();
    for m in &masks {
        match sys::umount2(m, libc::MNT_DETACH) {
            Ok(_) => lifted += 1,
            Err(e) => kept.push(format!("{m}: {e}")),
        }
    }
    if masks.is_empty() {
        return reached("a mount namespace of its own, but no masks under /proc to lift");
    }
    // What the masks hide, on any kernel (sysrq-trigger and kcore are not built into every one).
    let open: Vec<&str> = ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger"]
        .into_iter()
        .filter(|p| opens_for_writing(p).is_ok())
        .chain(["/proc/timer_list", "/proc/kcore"].into_iter().filter(|p| readable_proc(p)))
        .collect();
    if !open.is_empty() {
        escaped(format!("{lifted} of {} masks removed; then open (nothing written): {}", masks.len(), open.join(" ")))
    } else if kept.is_empty() {
        denied(format!("{lifted} masks removed, but nothing they hid opens"))
    } else {
        denied(format!("masks kept: {}", kept.join(", ")))
    }
}

fn mount_sysfs(ctx: &Ctx) -> Verdict {
    let dir = match mount_point(ctx, "sysfs") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::mount("sysfs", &dir, "sysfs", MS_HARMLESS, "") {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        Ok(_) => {
            let disks: Vec<String> = std::fs::read_dir(format!("{dir}/block"))
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).take(6).collect())
                .unwrap_or_default();
            let helper = sys::open(&format!("{dir}/kernel/uevent_helper"), libc::O_WRONLY).is_ok();
            escaped(format!(
                "the host's sysfs mounted: block devices {}{}",
                disks.join(" "),
                if helper { "; kernel/uevent_helper opens for writing (nothing written)" } else { "" }
            ))
        }
    };
    release(&dir);
    v
}

fn own_cgroup() -> Verdict {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let paths: Vec<&str> = text.lines().filter_map(|l| l.splitn(3, ':').nth(2)).filter(|p| *p != "/").collect();
    match paths.first() {
        Some(p) => reached(format!("no cgroup namespace: the host's path {p} is shown")),
        None => denied("every cgroup path is / (a cgroup namespace of its own)"),
    }
}

/// The option string of a cgroup v1 hierarchy that already exists on the host (mounting it again adds no
/// hierarchy to the machine), else a named hierarchy without controllers.
fn v1_hierarchy() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let existing = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, controllers) = (f.next()?, f.next()?);
        (id != "0" && !controllers.is_empty()).then(|| {
            if controllers.starts_with("name=") {
                format!("none,{controllers}")
            } else {
                controllers.to_string()
            }
        })
    });
    existing.unwrap_or_else(|| "none,name=escape_probe".to_string())
}

fn cgroup_v1(ctx: &Ctx) -> Verdict {
    if !kernel_has_fs("cgroup") {
        return denied(format!("{ABSENT}: no cgroup v1 file system"));
    }
    let dir = match mount_point(ctx, "cgroup1") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let options = v1_hierarchy();
    let v = match sys::mount("cgroup", &dir, "cgroup", MS_HARMLESS, &options) {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(format!("mount -o {options}: {e}")),
        Ok(_) => match sys::open(&format!("{dir}/release_agent"), libc::O_WRONLY) {
            Ok(_) => {
                escaped(format!("hierarchy {options} mounted; its release_agent opens for writing (nothing written)"))
            }
            Err(e) => reached(format!("hierarchy {options} mounted; release_agent: {e}")),
        },
    };
    release(&dir);
    v
}

fn mounted_cgroup_files() -> Verdict {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    let mut seen = 0;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fstype = right.split_whitespace().next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(point) = left.split_whitespace().nth(4) else { continue };
        seen += 1;
        for file in ["release_agent", "cgroup.procs"] {
            let path = format!("{point}/{file}");
            if sys::open(&path, libc::O_WRONLY).is_ok() {
                found.push(path);
            }
        }
    }
    if !found.is_empty() {
        escaped(format!("open for writing (nothing written): {}", found.join(" ")))
    } else if seen > 0 {
        denied(format!("{seen} cgroup file systems mounted, none writable"))
    } else {
        denied("no cgroup file system mounted inside")
    }
}

fn cgroup2(ctx: &Ctx) -> Verdict {
    let dir = match mount_point(ctx, "cgroup2") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::mount("cgroup2", &dir, "cgroup2", MS_HARMLESS, "") {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        Ok(_) => {
            let groups =
                std::fs::read_dir(&dir).map(|d| d.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0);
            match sys::open(&format!("{dir}/cgroup.procs"), libc::O_WRONLY) {
                Ok(_) => escaped(format!(
                    "cgroup2 mounted at the host's root ({groups} groups under it); cgroup.procs opens for writing"
                )),
                Err(e) => reached(format!("cgroup2 mounted ({groups} groups); cgroup.procs: {e}")),
            }
        }
    };
    release(&dir);
    v
}

fn binfmt_misc(ctx: &Ctx) -> Verdict {
    if !kernel_has_fs("binfmt_misc") {
        return denied(format!("{ABSENT}: no binfmt_misc (not tried: mounting it would make the host run modprobe)"));
    }
    let dir = match mount_point(ctx, "binfmt") {
        Ok(d) => d,
        Err(v) => return v,
    };
    let v = match sys::mount("binfmt_misc", &dir, "binfmt_misc", MS_HARMLESS, "") {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
        Ok(_) => match sys::open(&format!("{dir}/register"), libc::O_WRONLY) {
            Ok(_) => escaped("the host's binfmt_misc mounted; register opens for writing (nothing written)"),
            Err(e) => reached(format!("binfmt_misc mounted; register: {e}")),
        },
    };
    release(&dir);
    v
}
