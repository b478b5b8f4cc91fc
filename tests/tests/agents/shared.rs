//! Vservers on shared storage (`data = "shared"` in `cluster.toml`): no copy is made; a migrate and a takeover
//! go through the same ownership, lease and fencing as with replicas, then start the vserver from the shared
//! tree on the new owner.
//!
//! The lab's hosts share one kernel and one file system: a directory of the lab's stands for the shared file
//! system (NFS, CephFS...) every host mounts at the same path. What these tests show is the product's part:
//! one host at a time runs the vserver from the shared tree, the others reach it through nothing, and a writer
//! inside loses no write it saw made durable (`sync`) across a migrate, a crash, a cut link and a pause.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::{Sampler, Watchdogs};
use vserver_lab::skip_unless_root;
use vserver_lab::Lab;

use crate::takeover::assert_one_copy;
use crate::writer::{install_writer, lost, Acks};
use crate::{all_alive, owner, signal, text, vserver, PATIENCE};

/// A lab of three hosts with a vserver built into the shared directory, placed on h0 (standbys h1, h2) with
/// `data = "shared"`, started there with its writer running: the agents, the watchdogs, the vserver's name,
/// address and shared tree, and the acknowledgements the client sees.
fn shared_on_h0<'lab>(
    lab: &'lab Lab,
    prefix: &str,
) -> (Agents<'lab>, Watchdogs<'lab>, String, std::net::Ipv4Addr, PathBuf, Acks) {
    let dogs = Watchdogs::start(lab).unwrap();
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let shared = lab.dir().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let built = lab.hosts[0]
        .command(vserver_lab::vserver_bin().unwrap())
        .args([&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")])
        .env("VSERVER_VSERVERS_DIR", &shared)
        .env("VSERVER_CONF_DIR", &shared)
        .env("VSERVER_NO_AGENT", "1")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let tree = shared.join(&name);
    vserver_lab::bench::install_httpd_service(&tree, prefix).unwrap();
    install_writer(&tree);
    let cluster = format!(
        "[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ndata = \"shared\"\nshared_dir = \"{}\"\n",
        shared.display()
    );
    let agents = Agents::start_full(lab, crate::FAST, Some(&cluster), "").unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    // The primary's agent links it from the shared directory; the others do not.
    let linked = wait_for(PATIENCE, || lab.hosts[0].conf_dir.join(format!("{name}.conf")).is_file());
    assert!(linked.is_some(), "h0 links it; log:\n{}", agents.log(0));
    let out = vserver(lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    let acks = Acks::start(lab, addr);
    if !acks.wait_past(0) {
        let ps = vserver(lab, 0, &[&name, "exec", "ps"], true);
        let ack = vserver(lab, 0, &[&name, "exec", "cat", "/www/ack"], true);
        panic!("the writer runs on h0:\n{}\n{}\nlog:\n{}", text(&ps), text(&ack), agents.log(0));
    }
    assert!(wait_for(PATIENCE, || owner(&agents, 1, &name).is_some_and(|o| o.0 == "h0")).is_some());
    for i in [1, 2] {
        assert!(links(lab, i, &name).is_empty(), "h{i} has no link to it");
    }
    (agents, dogs, name, addr, tree, acks)
}

/// The links host `i` has to the vserver's tree and conf.
fn links(lab: &Lab, i: usize, name: &str) -> Vec<PathBuf> {
    let h = &lab.hosts[i];
    [h.vservers_dir.join(name), h.conf_dir.join(format!("{name}.conf"))]
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// Waits until `to` runs the vserver and the writer goes on there past what was acknowledged before; then no
/// acknowledged write is missing from the shared tree.
fn check_moved(lab: &Lab, agents: &Agents, name: &str, to: usize, tree: &Path, acks: &Acks, what: &str) {
    let running = || vserver(lab, to, &[name, "status"], true).status.success();
    let ran = wait_for(Duration::from_secs(30), running);
    assert!(ran.is_some(), "{what}: h{to} runs it; log:\n{}", agents.log(to));
    let before = acks.high();
    assert!(acks.wait_past(before), "{what}: the writer goes on on h{to}; log:\n{}", agents.log(to));
    assert_eq!(links(lab, to, name).len(), 2, "{what}: h{to} reaches it through its links");
    let acked = acks.high();
    assert_eq!(lost(tree, acked), Vec::<u64>::new(), "{what}: acknowledged writes lost (of {acked})");
}

#[test]
fn a_vserver_on_a_shared_directory_migrates_and_is_taken_over_from_a_crashed_host_losing_no_write() {
    if skip_unless_root(
        "a_vserver_on_a_shared_directory_migrates_and_is_taken_over_from_a_crashed_host_losing_no_write",
    ) {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, _addr, tree, acks) = shared_on_h0(&lab, "sm");
    let sampler = Sampler::start(&lab, &name);

    // Its data path and what a crash would lose now, in the cluster's view and on the status page.
    let stat = vserver_lab::vserver_bin().unwrap().with_file_name("vserver-stat");
    let out = lab.hosts[0].command(stat).arg("--cluster").output().unwrap();
    let view = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = view.lines().find(|l| l.starts_with(name.as_str())).unwrap_or_default().to_string();
    assert!(line.contains("h1 (the shared tree, RPO 0.0 s)"), "vserver-stat --cluster:\n{view}");
    let page = agents.get(0, 0, "/").unwrap().body;
    assert!(page.contains("shared"), "the status page names the data path");

    // Nothing to copy: a sync says so.
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(!out.status.success() && text(&out).contains("nothing to copy"), "{}", text(&out));

    // Migrate: stop here, start there, from the same tree.
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}", text(&out));
    check_moved(&lab, &agents, &name, 1, &tree, &acks, "migrate");
    assert!(links(&lab, 0, &name).is_empty() && !lab.hosts[0].runs(&name), "h0 gave it up");
    assert!(!lab.hosts[0].vservers_dir.join(".replicas").join(&name).exists(), "no replica was made");

    // h1 crashes: its first standby, h0, takes it over.
    agents.kill9(1);
    dogs.kill9(1);
    lab.hosts[1].kill_vservers();
    lab.set_link(1, false).unwrap();
    check_moved(&lab, &agents, &name, 0, &tree, &acks, "crash");
    assert_eq!(owner(&agents, 2, &name).map(|o| o.0).as_deref(), Some("h0"));

    // h1 comes back: it removes its links, and nothing else (the shared tree is the running one).
    lab.set_link(1, true).unwrap();
    dogs.spawn(1).unwrap();
    agents.spawn(1).unwrap();
    let gone = wait_for(PATIENCE, || links(&lab, 1, &name).is_empty());
    assert!(gone.is_some(), "h1 removed its links; log:\n{}", agents.log(1));
    assert!(!lab.hosts[1].runs(&name));
    check_moved(&lab, &agents, &name, 0, &tree, &acks, "h1 back");
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn a_vserver_on_a_shared_directory_cut_off_then_paused_is_taken_over_losing_no_write() {
    if skip_unless_root("a_vserver_on_a_shared_directory_cut_off_then_paused_is_taken_over_losing_no_write") {
        return;
    }
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, _addr, tree, acks) = shared_on_h0(&lab, "sp");
    let sampler = Sampler::start(&lab, &name);

    // h0 cut off: it fences itself, h1 takes over.
    lab.set_link(0, false).unwrap();
    check_moved(&lab, &agents, &name, 1, &tree, &acks, "partition");
    lab.set_link(0, true).unwrap();
    let gone = wait_for(PATIENCE, || links(&lab, 0, &name).is_empty());
    assert!(gone.is_some(), "h0 removed its links once back; log:\n{}", agents.log(0));
    assert!(!lab.hosts[0].runs(&name));

    // The new owner's agent paused: its watchdog fences it, h0 (its first standby now) takes over.
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    signal(&agents, 1, SIGSTOP);
    let before = acks.high();
    let ran = wait_for(Duration::from_secs(30), || lab.hosts[0].runs(&name) || lab.hosts[2].runs(&name));
    signal(&agents, 1, SIGCONT);
    assert!(ran.is_some(), "taken over from the paused h1; h0:\n{}", agents.log(0));
    let to = if lab.hosts[0].runs(&name) { 0 } else { 2 };
    assert!(acks.wait_past(before));
    check_moved(&lab, &agents, &name, to, &tree, &acks, "pause");
    let gone = wait_for(PATIENCE, || links(&lab, 1, &name).is_empty());
    assert!(gone.is_some(), "h1 removed its links once resumed; log:\n{}", agents.log(1));
    assert!(!lab.hosts[1].runs(&name), "h1 did not resume it");
    assert_one_copy(&sampler.finish(), &agents);
}
