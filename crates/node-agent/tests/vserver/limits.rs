//! Scenarios: ULIMIT, S_FLAGS nproc, S_NICE, fakeinit.

use crate::fixture::{text, Fixture};

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
