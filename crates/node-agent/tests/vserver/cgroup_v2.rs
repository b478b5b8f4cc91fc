//! Scenario: a host with a pure cgroup v2 hierarchy. A second mount of this machine's cgroup2 file system
//! has `cgroup.controllers` at its root, so the product sees it exactly as it sees a pure v2 host.

use std::path::PathBuf;
use std::process::Command;

use crate::fixture::{text, Fixture, VSERVER};

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_pure_cgroup_v2_host_runs_lists_and_kills_vservers() {
    let Some(f) = Fixture::new("a_pure_cgroup_v2_host_runs_lists_and_kills_vservers", "") else { return };
    let root = f.lab.dir().join("cgroup2");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount").args(["-t", "cgroup2", "none"]).arg(&root).status().is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped a_pure_cgroup_v2_host_runs_lists_and_kills_vservers: cannot mount cgroup2 here");
        return;
    }
    let _unmount = Unmount(root.clone());
    f.add_httpd();
    f.add_service("stubborn", 20, "sh -c 'trap \"\" TERM; while true; do sleep 1; done' &", "true");
    let vserver =
        |args: &[&str]| f.command(VSERVER).env("VSERVER_CGROUP_ROOT", &root).arg(&f.name).args(args).output().unwrap();
    // This machine binds the pids controller to its v1 hierarchy, so this second cgroup2 mount offers none:
    // the default process limit cannot be enforced, and the start refuses rather than run without it.
    let out = vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pids controller"), "{}", text(&out));
    let group = root.join(&f.host().cgroup_parent).join(&f.name);
    assert!(!group.exists(), "nothing is left of the refused start");
    // An explicit opt-out runs it without a process limit.
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    std::fs::write(f.conf(), format!("{conf}LIMIT_PIDS=unlimited\n")).unwrap();
    let out = vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    f.wait_http();
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert!(procs.lines().count() >= 3, "vinit, httpd and the loop are in the v2 group: {procs}");
    let status = vserver(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("processes:"), "{}", text(&status));
    let out = vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!group.exists(), "the group is removed after the stop");
    assert!(!f.lab.client.tcp_connect_ok(f.addr, 80, std::time::Duration::from_millis(300)));
}
