//! Scenarios: the default system call profile of every vserver, on process 1 and on every command run
//! inside; S_UNSAFE seccomp and userns turning parts of it off; S_CAPS opening the calls of a capability;
//! S_FLAGS lock on top of it or alone.

use crate::fixture::{text, Fixture};

/// A field of a `/proc/PID/status` text (`Seccomp`, `NoNewPrivs`...).
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
        .trim()
        .to_string()
}

/// The filter state of process 1 and of an exec'd command: (mode, number of filters) for each, mode 2 being
/// "filtered" and 0 "none". Both must hold no_new_privs off, so that set-uid programs keep working.
fn filters(f: &Fixture) -> [(String, String); 2] {
    ["/proc/1/status", "/proc/self/status"].map(|file| {
        let status = f.exec(&["cat", file]);
        assert_eq!(status_field(&status, "NoNewPrivs"), "0", "set-uid programs keep working ({file}):\n{status}");
        (status_field(&status, "Seccomp"), status_field(&status, "Seccomp_filters"))
    })
}

/// Stops the vserver, appends `line` to its conf and starts it again; returns what the start said.
fn restart_with(f: &Fixture, line: &str) -> String {
    let out = f.vserver(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    std::fs::write(f.conf(), format!("{conf}{line}\n")).unwrap();
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "start with {line}: {}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_process_of_a_default_vserver_runs_under_the_profile_unless_s_unsafe_seccomp() {
    let Some(f) = Fixture::new("every_process_of_a_default_vserver_runs_under_the_profile_unless_s_unsafe_seccomp", "")
    else {
        return;
    };
    f.start();
    // The profile's two programs (EPERM, and ENOSYS with every call newer than it), on process 1 and on exec.
    let filtered = ("2".to_string(), "2".to_string());
    assert_eq!(filters(&f), [filtered.clone(), filtered]);
    // The host kernel's log is refused: `dmesg` is syslog(2).
    let out = f.vserver(&["exec", "dmesg"]);
    assert!(!out.status.success(), "dmesg inside: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{}", text(&out));

    let said = restart_with(&f, "S_UNSAFE=seccomp");
    assert!(said.contains("S_UNSAFE seccomp"), "the start warns: {said}");
    let none = ("0".to_string(), "0".to_string());
    assert_eq!(filters(&f), [none.clone(), none]);

    // S_FLAGS lock still installs its own two programs.
    restart_with(&f, "S_FLAGS=lock");
    let lock = ("2".to_string(), "2".to_string());
    assert_eq!(filters(&f), [lock.clone(), lock]);
    let out = f.vserver(&["exec", "unshare", "-U", "true"]);
    assert!(!out.status.success(), "lock refuses a user namespace: {}", text(&out));
}

#[test]
fn user_namespaces_are_refused_unless_s_unsafe_userns() {
    let Some(f) = Fixture::new("user_namespaces_are_refused_unless_s_unsafe_userns", "") else { return };
    f.start();
    let out = f.vserver(&["exec", "unshare", "-U", "true"]);
    assert!(!out.status.success(), "a user namespace needs no capability, only the profile refuses it: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{}", text(&out));

    let said = restart_with(&f, "S_UNSAFE=userns");
    assert!(said.contains("S_UNSAFE userns"), "the start warns: {said}");
    // Root inside becomes nobody in its new namespace (no mapping written): it got one.
    assert_eq!(f.exec(&["unshare", "-U", "cat", "/proc/self/uid_map"]), "", "an empty map: a new user namespace");
    // The rest of the profile stays.
    let filtered = ("2".to_string(), "2".to_string());
    assert_eq!(filters(&f), [filtered.clone(), filtered]);
    let out = f.vserver(&["exec", "dmesg"]);
    assert!(!out.status.success(), "dmesg inside: {}", text(&out));
}

#[test]
fn a_capability_in_s_caps_opens_the_calls_it_guards() {
    let Some(f) = Fixture::new("a_capability_in_s_caps_opens_the_calls_it_guards", "S_CAPS=CAP_SYSLOG") else {
        return;
    };
    f.start();
    // The profile is there, and lets syslog through for the capability the conf gives.
    let filtered = ("2".to_string(), "2".to_string());
    assert_eq!(filters(&f), [filtered.clone(), filtered]);
    let out = f.vserver(&["exec", "dmesg"]);
    assert!(out.status.success(), "dmesg with CAP_SYSLOG: {}", text(&out));
    // Another call stays refused: no capability opens mount here.
    let out = f.vserver(&["exec", "mount", "-t", "tmpfs", "none", "/tmp"]);
    assert!(!out.status.success(), "mount inside: {}", text(&out));
}
