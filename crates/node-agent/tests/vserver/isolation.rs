//! Scenarios: what a process inside a vserver can see and do.

use crate::fixture::{text, Fixture};

#[test]
fn ps_inside_sees_only_the_vservers_processes() {
    let Some(f) = Fixture::new("ps_inside_sees_only_the_vservers_processes", "") else { return };
    f.add_service("sleeper", 10, "sleep 300 &", "killall sleep");
    f.start();
    let ps = f.exec(&["ps", "-o", "pid,comm"]);
    let lines: Vec<&str> = ps.lines().skip(1).collect();
    assert!(lines.iter().any(|l| l.trim().starts_with("1 ") && l.contains("vinit")), "process 1 is vinit:\n{ps}");
    assert!(lines.iter().any(|l| l.contains("sleep")), "the vserver's own service is listed:\n{ps}");
    // vinit, sleep, ps itself: nothing of the host (no cargo, no test runner, no systemd).
    assert!(lines.len() <= 4, "only the vserver's processes are visible:\n{ps}");
    for l in &lines {
        let pid: i32 = l.split_whitespace().next().unwrap().parse().unwrap();
        assert!(pid < 100, "pids are the vserver's own namespace's:\n{ps}");
    }
}

#[test]
fn hostname_and_domainname_come_from_the_conf() {
    let Some(f) =
        Fixture::new("hostname_and_domainname_come_from_the_conf", "S_HOSTNAME=web-front\nS_DOMAINNAME=example.lan")
    else {
        return;
    };
    f.start();
    assert_eq!(f.exec(&["hostname"]).trim(), "web-front");
    assert_eq!(f.exec(&["cat", "/proc/sys/kernel/domainname"]).trim(), "example.lan");
    let host_name = nix::unistd::gethostname().unwrap();
    assert_ne!(host_name.to_string_lossy(), "web-front", "the host keeps its own name");
}

#[test]
fn host_files_outside_the_root_are_unreachable() {
    let Some(f) = Fixture::new("host_files_outside_the_root_are_unreachable", "") else { return };
    let secret = f.lab.dir().join("host-secret.txt");
    std::fs::write(&secret, "host only").unwrap();
    f.start();
    let out = f.vserver(&["exec", "cat", secret.to_str().unwrap()]);
    assert!(!out.status.success(), "a host file is not reachable by its host path");
    let up = f.vserver(&["exec", "cat", "/../../../../../etc/hostname"]);
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), f.name, "/.. stays inside the tree");
    // The mount table inside holds the tree, /proc and /dev only: the host's other mounts are invisible.
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    for line in mounts.lines() {
        let target = line.split_whitespace().nth(1).unwrap();
        assert!(
            target == "/" || target.starts_with("/proc") || target.starts_with("/dev"),
            "unexpected mount inside: {line}\n{mounts}"
        );
    }
    // The minimal /dev is there and works.
    for dev in ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts"] {
        f.exec(&["test", "-e", &format!("/dev/{dev}")]);
    }
    assert_eq!(f.exec(&["sh", "-c", "head -c 4 /dev/zero | wc -c"]).trim(), "4");
    assert!(!f.exec(&["ls", "/dev"]).contains("sda"), "no host disks in /dev");
}

fn bounding_set(status: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).expect("CapBnd line");
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capability_ceiling_is_the_default_set_plus_s_caps() {
    let Some(f) =
        Fixture::new("capability_ceiling_is_the_default_set_plus_s_caps", "S_CAPS=\"CAP_NET_RAW CAP_SYS_TIME\"")
    else {
        return;
    };
    f.start();
    let bnd = bounding_set(&f.exec(&["cat", "/proc/self/status"]));
    let has = |cap: caps::Capability| bnd & (1u64 << cap.index()) != 0;
    for gone in [
        caps::Capability::CAP_SYS_ADMIN,
        caps::Capability::CAP_NET_ADMIN,
        caps::Capability::CAP_SYS_MODULE,
        caps::Capability::CAP_SYS_PTRACE,
    ] {
        assert!(!has(gone), "{gone} must be out of the bounding set ({bnd:x})");
    }
    for kept in [
        caps::Capability::CAP_NET_RAW,
        caps::Capability::CAP_SYS_TIME,
        caps::Capability::CAP_CHOWN,
        caps::Capability::CAP_NET_BIND_SERVICE,
    ] {
        assert!(has(kept), "{kept} must be kept ({bnd:x})");
    }
    // The ceiling holds for the context's own processes too (process 1), not only for exec.
    let init = bounding_set(&f.exec(&["cat", "/proc/1/status"]));
    assert_eq!(init, bnd);
    // Root inside cannot mount: CAP_SYS_ADMIN is gone for good.
    let out = f.vserver(&["exec", "mount", "-t", "tmpfs", "none", "/tmp"]);
    assert!(!out.status.success(), "mount must be refused inside");
}

#[test]
fn lock_forbids_new_contexts_and_private_forbids_entering() {
    let Some(f) = Fixture::new("lock_forbids_new_contexts_and_private_forbids_entering", "S_FLAGS=\"lock\"") else {
        return;
    };
    f.start();
    let out = f.vserver(&["exec", "unshare", "-U", "true"]);
    assert!(!out.status.success(), "a user namespace (needing no capability) is refused under lock");
    // su-style set-uid programs keep working: no_new_privs is not set.
    assert!(f.exec(&["cat", "/proc/self/status"]).contains("NoNewPrivs:\t0"));

    let Some(p) = Fixture::new("lock_forbids_new_contexts_and_private_forbids_entering", "S_FLAGS=\"private\"") else {
        return;
    };
    p.add_httpd();
    p.start();
    p.wait_http();
    let out = p.vserver(&["exec", "true"]);
    assert_eq!(out.status.code(), Some(7), "exec into a private vserver is refused: {}", crate::fixture::text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("private"));
    let out = p.vserver(&["enter"]);
    assert_eq!(out.status.code(), Some(7));
    // Its own services were started all the same, and it stops cleanly.
    let out = p.vserver(&["stop"]);
    assert!(out.status.success(), "{}", crate::fixture::text(&out));
}

#[test]
fn proc_is_read_only_or_masked_where_it_reaches_the_host_kernel() {
    let Some(f) = Fixture::new("proc_is_read_only_or_masked_where_it_reaches_the_host_kernel", "") else { return };
    f.start();
    // Writing back the very value it holds would be harmless; it is refused all the same.
    let out = f.vserver(&["exec", "sh", "-c", "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern"]);
    assert!(!out.status.success(), "core_pattern is read-only: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only"), "{}", text(&out));
    // Reading stays possible (the domain name test relies on it), the host's keys and timers are hidden.
    assert!(!f.exec(&["cat", "/proc/sys/kernel/ostype"]).trim().is_empty());
    assert_eq!(f.exec(&["cat", "/proc/keys"]), "", "the host's keys are masked");
    assert_eq!(f.exec(&["cat", "/proc/timer_list"]), "", "masked");
    assert_eq!(f.exec(&["ls", "/proc/acpi"]), "", "host hardware is masked");
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    let sys_line = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/proc/sys")).expect("/proc/sys mount");
    assert!(sys_line.split_whitespace().nth(3).unwrap().split(',').any(|o| o == "ro"), "{sys_line}");
    // No /sys at all: nothing of the host's devices, cgroups or firmware.
    assert!(!mounts.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|t| t.starts_with("/sys"))), "{mounts}");
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));

    // S_UNSAFE procfs: the guide's plain /proc, loudly.
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    std::fs::write(f.conf(), format!("{conf}S_UNSAFE=procfs\n")).unwrap();
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("S_UNSAFE procfs"), "{}", text(&out));
    let mounts = f.exec(&["cat", "/proc/mounts"]);
    assert!(!mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/proc/sys")), "{mounts}");
}

/// Runs `program args` as the unprivileged host user nobody. (util-linux's `runuser`: `setpriv` execs the
/// program while it still holds root's capabilities, so a path only root may traverse would not stop it.)
fn as_nobody(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("run runuser (util-linux)")
}

#[test]
fn host_users_cannot_reach_into_a_tree_to_run_a_set_uid_program_made_inside() {
    use std::os::unix::fs::PermissionsExt;
    let Some(f) = Fixture::new("host_users_cannot_reach_into_a_tree_to_run_a_set_uid_program_made_inside", "") else {
        return;
    };
    // Open every directory on the way, as on a host where /vservers sits under /: only the vservers
    // directory itself may stand between a host user and the trees.
    let vservers = f.host().vservers_dir.clone();
    let mut dir = vservers.clone();
    while dir != std::path::Path::new("/") {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        dir = dir.parent().unwrap().to_path_buf();
    }
    // Root inside makes a set-uid-root shell; with the vservers directory open, a host user reaches it.
    let suid = f.root().join("bin/busybox-suid");
    std::fs::copy(f.root().join("bin/busybox"), &suid).unwrap();
    f.start();
    f.exec(&["chmod", "4755", "/bin/busybox-suid"]);
    std::fs::set_permissions(&vservers, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reached = as_nobody(&suid, &["true"]);
    assert!(reached.status.success(), "with the barrier open the tree is reachable: {}", text(&reached));
    assert_eq!(std::fs::metadata(&suid).unwrap().permissions().mode() & 0o7777, 0o4755, "set-uid kept");

    // Every start (and build, and the agent) puts the barrier back, saying so.
    let out = f.vserver(&["restart"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host user can reach"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&vservers).unwrap().permissions().mode() & 0o777, 0o700);
    let refused = as_nobody(&suid, &["true"]);
    assert!(!refused.status.success(), "the barrier holds: {}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"), "{}", text(&refused));
    // Inside, nothing changed: the set-uid program still works for the vserver's own users.
    assert_eq!(f.exec(&["stat", "-c", "%a", "/bin/busybox-suid"]).trim(), "4755");
}

#[test]
fn exec_carries_no_descriptor_of_the_caller_and_cgroups_are_private() {
    use std::os::fd::AsRawFd;
    let Some(f) = Fixture::new("exec_carries_no_descriptor_of_the_caller_and_cgroups_are_private", "") else {
        return;
    };
    f.start();
    // A careless caller leaves a host directory open without close-on-exec, as descriptor 3.
    let dir = std::fs::File::open(f.lab.dir()).unwrap();
    let raw = dir.as_raw_fd();
    let mut cmd = f.command(crate::fixture::VSERVER);
    cmd.args([f.name.as_str(), "exec", "ls", "-l", "/proc/self/fd/"]);
    // SAFETY: the closure only calls dup2(2) and fcntl(2), async-signal-safe, on descriptors that are open.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            nix::unistd::dup2(raw, 3).map_err(std::io::Error::from)?;
            nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
                .map_err(std::io::Error::from)?;
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let fds = String::from_utf8_lossy(&out.stdout);
    assert!(!fds.contains(" 3 -> "), "descriptor 3 of the caller is not inside: {fds}");
    assert!(!fds.contains("vserver-lab"), "nothing of the host is open inside: {fds}");
    // The vserver's own cgroup is its root: the host's cgroup paths stay unknown inside.
    assert_eq!(
        f.exec(&["cat", "/proc/self/cgroup"]).lines().filter(|l| !l.ends_with(":/")).count(),
        0,
        "{}",
        f.exec(&["cat", "/proc/self/cgroup"])
    );
    assert_eq!(f.exec(&["cat", "/proc/1/cgroup"]).lines().filter(|l| !l.ends_with(":/")).count(), 0);
}
