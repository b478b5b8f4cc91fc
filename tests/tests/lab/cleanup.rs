//! Scenarios for the lab's cleanup: after a drop, even a panicking one, no namespace, process,
//! cgroup or directory of the lab is left.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use vserver_lab::{skip_unless_root, Lab};

use crate::netns_list;

/// Names of the namespaces of a lab, its directory and its cgroup parents.
fn lab_traces(lab: &Lab) -> (Vec<String>, PathBuf, Vec<String>) {
    let mut names: Vec<String> = lab.hosts.iter().map(|h| h.netns.name().to_owned()).collect();
    names.push(lab.client.netns.name().to_owned());
    names.push(lab.switch().name().to_owned());
    let cgroups = lab.hosts.iter().map(|h| h.cgroup_parent.clone()).collect();
    (names, lab.dir().to_owned(), cgroups)
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: its /proc entry has no namespaces any more.
    kill(Pid::from_raw(pid as i32), None).is_ok() && fs::read_link(format!("/proc/{pid}/ns/net")).is_ok()
}

#[test]
fn a_dropped_lab_leaves_no_namespace_or_directory() {
    if skip_unless_root("a_dropped_lab_leaves_no_namespace_or_directory") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (names, dir, _) = lab_traces(&lab);
    let before = netns_list();
    for name in &names {
        assert!(before.contains(name.as_str()), "{name} missing from {before}");
    }
    drop(lab);
    let after = netns_list();
    for name in &names {
        assert!(!after.contains(name.as_str()), "{name} left behind: {after}");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_test_that_panics_half_way_still_cleans_up() {
    if skip_unless_root("a_test_that_panics_half_way_still_cleans_up") {
        return;
    }
    let mut traces = None;
    let mut sleeper = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(1).unwrap();
        traces = Some(lab_traces(&lab));
        sleeper = Some(lab.hosts[0].command("sleep").arg("600").spawn().unwrap());
        panic!("a failing assertion half way through a test");
    }));
    assert!(outcome.is_err());
    let (names, dir, _) = traces.unwrap();
    let after = netns_list();
    for name in &names {
        assert!(!after.contains(name.as_str()), "{name} left behind: {after}");
    }
    assert!(!dir.exists());
    let mut sleeper = sleeper.unwrap();
    assert!(!sleeper.wait().unwrap().success(), "the sleeper was not killed");
}

#[test]
fn processes_chrooted_into_the_lab_die_with_it_even_in_their_own_namespace() {
    if skip_unless_root("processes_chrooted_into_the_lab_die_with_it_even_in_their_own_namespace") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let root = lab.hosts[0].vservers_dir.join("escapee");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    // A network namespace of its own, as a vserver has: the host's namespace does not hold it.
    let mut escapee = Command::new("unshare")
        .args(["--net", "--mount", "chroot"])
        .arg(&root)
        .args(["/bin/busybox", "sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = escapee.id();
    let chrooted = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(10));
        fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root)
    });
    assert!(chrooted, "the escapee never ran in {}", root.display());
    assert_ne!(fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(), fs::read_link("/proc/self/ns/net").unwrap());
    drop(lab);
    assert!(!escapee.wait().unwrap().success());
}

#[test]
fn cgroups_under_a_host_parent_are_emptied_and_removed() {
    if skip_unless_root("cgroups_under_a_host_parent_are_emptied_and_removed") {
        return;
    }
    let Some(v2) = cgroup2_mount() else {
        eprintln!("skipped cgroups_under_a_host_parent_are_emptied_and_removed: no cgroup2 mount");
        return;
    };
    let lab = Lab::new(1).unwrap();
    let parent = v2.join(&lab.hosts[0].cgroup_parent);
    let leaf = parent.join("vb0");
    fs::create_dir_all(&leaf).unwrap();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    fs::write(leaf.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let pid = sleeper.id();
    drop(lab);
    assert!(!sleeper.wait().unwrap().success());
    assert!(!alive(pid));
    assert!(!parent.exists(), "{} left behind", parent.display());
}

/// Where the cgroup2 tree is mounted (`/sys/fs/cgroup` or, on hybrid hosts, `.../unified`).
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(sep + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
    })
}
