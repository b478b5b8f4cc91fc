//! Scenarios: the keeper (the parent of a vserver's process 1, on the host side), and `reboot`, `halt` and
//! `poweroff` from inside, which end the vserver with a status only that parent sees.

use std::time::{Duration, Instant};

use crate::fixture::{alive, text, Fixture};

/// The exit record the keeper left, as JSON, once the vserver has ended.
fn wait_ended(f: &Fixture) -> serde_json::Value {
    let path = f.host().run_dir.join(format!("{}.exit", f.name));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = f.vserver(&["running"]).status.code() == Some(0);
        if !running {
            if let Ok(bytes) = std::fs::read(&path) {
                if alive(&f.cgroup_procs()).is_empty() {
                    return serde_json::from_slice(&bytes).unwrap();
                }
            }
        }
        assert!(Instant::now() < deadline, "the vserver did not end with an exit record ({})", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

#[test]
fn the_keeper_is_outside_the_vserver_and_takes_it_down_with_it() {
    let Some(f) = Fixture::new("the_keeper_is_outside_the_vserver_and_takes_it_down_with_it", "") else { return };
    f.add_service("sleeper", 10, "sleep 300 &", "killall sleep");
    f.start();
    let keepers: Vec<i32> = f.cgroup_procs().into_iter().filter(|p| comm(*p) == "vkeeper").collect();
    assert_eq!(keepers.len(), 1, "one keeper in the vserver's cgroup: {:?}", f.cgroup_procs());
    let keeper = keepers[0];
    // Inside, nothing shows it: the vserver's PID namespace starts at its process 1.
    let ps = f.exec(&["ps", "-o", "comm"]);
    assert!(!ps.contains("vkeeper"), "the keeper is invisible inside:\n{ps}");
    // A stop takes it with the rest and waits for no grace period on its account.
    let begun = Instant::now();
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(begun.elapsed() < Duration::from_secs(2), "the stop did not wait out its grace period for the keeper");
    assert!(alive(&[keeper]).is_empty(), "the keeper is gone with the vserver");

    // Killing the keeper alone takes the vserver down: it is never left running without its keeper.
    f.start();
    let keeper = f.cgroup_procs().into_iter().find(|p| comm(*p) == "vkeeper").expect("a keeper");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(keeper), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alive(&f.cgroup_procs()).is_empty() {
        assert!(Instant::now() < deadline, "the vserver outlived its keeper: {:?}", f.cgroup_procs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reboot_halt_and_poweroff_inside_end_the_vserver_saying_how() {
    let Some(f) = Fixture::new("reboot_halt_and_poweroff_inside_end_the_vserver_saying_how", "") else { return };
    for (command, how) in [
        (&["reboot"][..], "reboot"),
        (&["reboot", "-f"][..], "reboot"),
        (&["halt"][..], "halt"),
        (&["poweroff"][..], "halt"),
    ] {
        f.start();
        let mut argv = vec!["exec"];
        argv.extend_from_slice(command);
        // The command may be killed with the vserver before it exits: its own status does not matter.
        let _ = f.vserver(&argv);
        let record = wait_ended(&f);
        assert_eq!(record["ending"]["how"], how, "{command:?} ended it as {record}");
        let out = f.vserver(&["stop"]);
        assert_eq!(out.status.code(), Some(3), "already down: {}", text(&out));
    }
}

#[test]
fn a_vservers_own_init_reboots_it_too() {
    let Some(f) = Fixture::new("a_vservers_own_init_reboots_it_too", "S_FLAGS=fakeinit") else { return };
    let init = f.root().join("sbin/init");
    let _ = std::fs::remove_file(&init);
    std::fs::write(&init, "#!/bin/sh\ntrap 'reboot -f' TERM\nwhile true; do sleep 1; done\n").unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.start();
    let _ = f.vserver(&["exec", "kill", "-TERM", "1"]);
    let record = wait_ended(&f);
    assert_eq!(record["ending"]["how"], "reboot", "{record}");
}
