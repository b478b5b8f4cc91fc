//! Scenarios: what a process inside a vserver can see and do.

use crate::fixture::Fixture;

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
