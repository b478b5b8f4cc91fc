//! Scenarios: start, stop, hooks, services, the commands around them, and all vservers at once.

use std::time::Duration;

use crate::fixture::{alive, text, Fixture, VSERVER_STAT};

#[test]
fn stop_leaves_no_process_behind() {
    let Some(f) = Fixture::new("stop_leaves_no_process_behind", "") else { return };
    f.add_httpd();
    // A daemon that ignores SIGTERM, and a double-forked orphan whose parent is gone.
    f.add_service("stubborn", 20, "sh -c 'trap \"\" TERM; while true; do sleep 1; done' &", "true");
    f.add_service("orphan", 30, "sh -c '(sleep 300 &) &'", "true");
    f.start();
    f.wait_http();
    let pids = f.cgroup_procs();
    assert!(pids.len() >= 5, "vinit, httpd, the stubborn loop, its sleep and the orphan: {pids:?}");
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("killed"), "the stop says it had to kill: {}", text(&out));
    assert!(f.cgroup_procs().is_empty());
    // Killed ones are reaped by whoever they were reparented to, a moment later on a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !alive(&pids).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(&pids).is_empty(), "processes survived the stop: {:?}", alive(&pids));
    assert!(!f.lab.client.tcp_connect_ok(f.addr, 80, Duration::from_millis(300)), "the address is gone");
    assert_eq!(f.vserver(&["running"]).status.code(), Some(3));
}

fn write_hook(f: &Fixture, body: &str) -> std::path::PathBuf {
    let log = f.lab.dir().join("hooks.log");
    let hook = f.host().conf_dir.join(format!("{}.sh", f.name));
    std::fs::write(&hook, format!("echo \"$1 $2\" >> {}\n{body}\n", log.display())).unwrap();
    log
}

#[test]
fn hooks_run_in_order_with_action_and_name() {
    let Some(f) = Fixture::new("hooks_run_in_order_with_action_and_name", "") else { return };
    let log = write_hook(&f, "exit 0");
    f.start();
    assert!(f.vserver(&["stop"]).status.success());
    let n = &f.name;
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        format!("pre-start {n}\npost-start {n}\npre-stop {n}\npost-stop {n}\n")
    );
}

#[test]
fn a_failing_pre_start_hook_aborts_and_leaves_nothing_set_up() {
    let Some(f) = Fixture::new("a_failing_pre_start_hook_aborts_and_leaves_nothing_set_up", "") else { return };
    let log = write_hook(&f, "[ \"$1\" = pre-start ] && exit 3; exit 0");
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pre-start"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(log).unwrap(), format!("pre-start {}\n", f.name), "nothing ran after pre-start");
    assert!(f.cgroup_procs().is_empty());
    assert!(!f.host().run_dir.join(format!("{}.json", f.name)).exists());
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup", "/sys/fs/cgroup/pids"] {
        let dir = std::path::Path::new(root).join(&f.host().cgroup_parent).join(&f.name);
        assert!(!dir.exists(), "no cgroup was made: {}", dir.display());
    }
    assert!(!f.lab.client.tcp_connect_ok(f.addr, 80, Duration::from_millis(200)));
}

#[test]
fn starting_twice_and_stopping_twice_answer_clearly_and_change_nothing() {
    let Some(f) = Fixture::new("starting_twice_and_stopping_twice_answer_clearly_and_change_nothing", "") else {
        return;
    };
    f.start();
    let before = f.cgroup_procs();
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(f.cgroup_procs(), before, "the running vserver is untouched");
    assert!(f.vserver(&["running"]).status.success());
    assert!(f.vserver(&["stop"]).status.success());
    let out = f.vserver(&["stop"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    let out = f.vserver(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
}

#[test]
fn restart_status_suexec_service_and_enter_work_like_the_guide() {
    let Some(f) = Fixture::new("restart_status_suexec_service_and_enter_work_like_the_guide", "") else { return };
    f.add_httpd();
    f.start();
    f.wait_http();
    let status = String::from_utf8_lossy(&f.vserver(&["status"]).stdout).to_string();
    for want in ["running", "processes:", &f.addr.to_string(), "uptime:"] {
        assert!(status.contains(want), "status shows {want}: {status}");
    }
    let first = f.vserver(&["running"]);
    let out = f.vserver(&["restart"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(first.stdout, f.vserver(&["running"]).stdout, "a new process 1 after restart");
    f.wait_http();

    assert_eq!(f.exec(&["id", "-u"]).trim(), "0");
    let out = f.vserver(&["suexec", "nobody", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65534", "{}", text(&out));
    let out = f.vserver(&["suexec", "nosuchuser", "true"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nosuchuser"), "{}", text(&out));

    let out = f.vserver(&["service", "web", "status"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{}", text(&out));
    let out = f.vserver(&["service", "web", "stop"]);
    assert!(out.status.success(), "{}", text(&out));
    // The service's stop sends SIGTERM (busybox killall): httpd is gone a moment later, not at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while f.lab.client.tcp_connect_ok(f.addr, 80, Duration::from_millis(300)) {
        assert!(std::time::Instant::now() < deadline, "httpd stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(f.vserver(&["service", "../../bin/sh", "start"]).status.code(), Some(2));
    assert_eq!(f.exec(&["sh", "-c", "exit 0"]), "");
    assert_eq!(f.vserver(&["exec", "sh", "-c", "exit 42"]).status.code(), Some(42), "exec passes the exit code on");

    let mut enter = f.command(crate::fixture::VSERVER);
    enter.args([&f.name, "enter"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = enter.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hostname\nexit 0\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&f.name), "{}", text(&out));
}

#[test]
fn all_starts_onboot_vservers_and_vserver_stat_lists_them() {
    let Some(f) = Fixture::new("all_starts_onboot_vservers_and_vserver_stat_lists_them", "ONBOOT=yes") else { return };
    // A second vserver copied from the first, without ONBOOT.
    let other = vserver_lab::unique("w");
    let from = f.root();
    let out = f.vserver_raw(&[
        &other,
        "build",
        "--from",
        from.to_str().unwrap(),
        "--iproot",
        &format!("eth0:{}/24", f.lab.free_addr(2)),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.host().vservers_dir.join(&other).join("bin/busybox").exists(), "--from copied the tree");

    let out = f.vserver_raw(&["--all", "start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.vserver(&["running"]).status.success(), "ONBOOT=yes started");
    assert_eq!(f.vserver_raw(&[&other, "running"]).status.code(), Some(3), "ONBOOT unset stays stopped");

    let stat = f.command(VSERVER_STAT).output().unwrap();
    let table = String::from_utf8_lossy(&stat.stdout);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("CTX"), "{table}");
    let row: Vec<&str> =
        lines.find(|l| l.ends_with(&f.name)).expect("a row for the running vserver").split_whitespace().collect();
    assert!(row[1].parse::<u32>().unwrap() >= 1, "process count: {table}");
    assert!(!table.contains(&other), "stopped vservers are not listed: {table}");

    let all = f.vserver_raw(&["--all", "status"]);
    let text_all = String::from_utf8_lossy(&all.stdout);
    assert!(text_all.contains(&f.name) && text_all.contains(&other), "{text_all}");
    assert!(f.vserver_raw(&["--all", "stop"]).status.success());
    assert_eq!(f.vserver(&["running"]).status.code(), Some(3));
}

#[test]
fn a_start_script_that_never_returns_does_not_hold_the_start() {
    let Some(f) = Fixture::new("a_start_script_that_never_returns_does_not_hold_the_start", "") else { return };
    // A daemon that forgot to detach: its start script runs for good.
    f.add_service("stuck", 10, "exec sleep 300", "true");
    f.add_httpd();
    let out =
        f.command(crate::fixture::VSERVER).env("VSERVER_START_TIMEOUT", "1").args([&f.name, "start"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("S10stuck") && err.contains("did not finish"), "the start says which script hung: {err}");
    f.wait_http();
    assert!(f.vserver(&["stop"]).status.success(), "the stop ends the stuck script too");
    assert!(f.cgroup_procs().is_empty());
}
