//! Vservers on a shared block device (`data = "block"` in `cluster.toml`): the tree is an ext4 file system
//! on a device every host reaches, mounted by the owner only, inside the vserver's mount namespace; a
//! takeover mounts it only once the old owner is certainly stopped (the fence hook, or an operator's word).
//!
//! A loop device over a file of the lab's stands for the LUN: the lab's hosts share one kernel, so a mount
//! by two hosts' vservers at once would show as two mount namespaces holding it, which a sampler looks for
//! every few ms all along. The lab's fence hook stands for the power fence: it kills every process of the
//! host and sets its link down.

use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::blockdev::{namespaces_mounting, power_fence, LoopDevice, MountSampler, Mounted};
use vserver_lab::faults::{Sampler, Watchdogs};
use vserver_lab::skip_unless_root;
use vserver_lab::Lab;

use crate::takeover::assert_one_copy;
use crate::writer::{install_writer, missing, Acks};
use crate::{all_alive, owner, signal, text, vserver, PATIENCE};

/// A vserver built on h0 whose tree was then moved onto a fresh ext4 loop device (h0 keeps an empty
/// directory as its mount point), placed on h0 with standbys h1, h2 and `data = "block"`, its conf synced to
/// the standbys, started with its writer running. `fence`: the agents' fence hook is the lab's power fence.
struct Setup<'lab> {
    agents: Agents<'lab>,
    dogs: Watchdogs<'lab>,
    name: String,
    device: LoopDevice,
    acks: Acks,
}

fn block_on_h0<'lab>(lab: &'lab Lab, prefix: &str, fence: bool) -> Setup<'lab> {
    let dogs = Watchdogs::start(lab).unwrap();
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    let tree = lab.hosts[0].vservers_dir.join(&name);
    vserver_lab::bench::install_httpd_service(&tree, prefix).unwrap();
    install_writer(&tree);
    let device = LoopDevice::ext4(lab.dir(), 128).unwrap();
    device
        .with_mounted(&lab.dir().join("fill"), |mnt| {
            let out = std::process::Command::new("cp").arg("-a").arg(tree.join(".")).arg(mnt).output()?;
            anyhow::ensure!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        })
        .unwrap();
    std::fs::remove_dir_all(&tree).unwrap();
    std::fs::create_dir(&tree).unwrap();
    let hook = if fence {
        let script = power_fence(lab, &lab.dir().join("fenced.log")).unwrap();
        format!("[takeover]\nfence_hook = \"{}\"\n", script.display())
    } else {
        String::new()
    };
    let cluster = format!(
        "[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\ndata = \"block\"\n\
         device = \"{}\"\n",
        device.path.display()
    );
    let agents = Agents::start_full(lab, crate::FAST, Some(&cluster), &hook).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 3)).is_some());
    let out = vserver(lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_for(PATIENCE, || owner(&agents, 1, &name).is_some_and(|o| o.0 == "h0")).is_some());
    // The standbys get the conf alone.
    let out = vserver(lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    for i in [1, 2] {
        let replica = lab.hosts[i].vservers_dir.join(".replicas").join(&name).join("current");
        assert!(replica.join(format!("conf/{name}.conf")).is_file(), "h{i} has the conf");
        let tree = std::fs::read_dir(replica.join("tree")).unwrap().count();
        assert_eq!(tree, 0, "h{i}'s copy holds no tree: it is on the device");
    }
    let acks = Acks::start(lab, addr);
    assert!(acks.wait_past(0), "the writer runs on h0; log:\n{}", agents.log(0));
    // Mounted in the vserver's namespace alone: not in the host's.
    assert_eq!(namespaces_mounting(&device.devno).len(), 1);
    let host_view = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_view.lines().any(|l| l.split_whitespace().nth(2) == Some(device.devno.as_str())));
    Setup { agents, dogs, name, device, acks }
}

/// The writer's log as the vserver on host `i` sees it (its tree is the device, mounted in its namespace).
fn log_on(lab: &Lab, i: usize, s: &Setup) -> String {
    let out = vserver(lab, i, &[&s.name, "exec", "cat", "/data/log"], true);
    assert!(out.status.success(), "reading the log on h{i}: {}\nlogs:\n{}", text(&out), logs(s));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `to` runs the vserver and its writer goes on there; then no acknowledged write is missing.
fn check_moved(lab: &Lab, s: &Setup, to: usize, what: &str) {
    // Started there (its start done, not only begun): from then on only it writes, the old owner being fenced.
    let running = || vserver(lab, to, &[&s.name, "status"], true).status.success();
    let ran = wait_for(Duration::from_secs(40), running);
    assert!(ran.is_some(), "{what}: h{to} runs it; logs:\n{}", logs(s));
    let before = s.acks.high();
    assert!(s.acks.wait_past(before), "{what}: the writer goes on on h{to}; logs:\n{}", logs(s));
    let acked = s.acks.high();
    let log = log_on(lab, to, s);
    let lost = missing(&log, acked);
    assert!(
        lost.is_empty(),
        "{what}: {} acknowledged writes lost (of {acked}): {lost:?}\nh{to}'s log:\n{log}\nlogs:\n{}",
        lost.len(),
        logs(s)
    );
}

/// Every agent's log without the Raft library's lines, for a failure's message.
fn logs(s: &Setup) -> String {
    (0..3)
        .map(|i| {
            let log = s.agents.log(i);
            let ours: Vec<&str> = log.lines().filter(|l| !l.contains("openraft")).collect();
            format!("--- h{i}:\n{}", ours.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_never_mounted_twice(seen: &Mounted) {
    assert!(seen.rounds > 100, "the mount sampler ran ({} rounds)", seen.rounds);
    assert!(seen.most_at_once <= 1, "the device was mounted in two namespaces at once: {:?}", seen.overlaps);
}

/// Host `i` back from a power-off or a crash: its link up, its watchdog and agent started; it sets its old
/// copy aside, and the owner (host `owner`) syncs the conf to it, so that it is a standby with a replica again.
fn power_on(lab: &Lab, s: &mut Setup, i: usize, owner: usize) {
    lab.set_link(i, true).unwrap();
    s.dogs.spawn(i).unwrap();
    s.agents.spawn(i).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&s.agents, 3)).is_some(), "h{i} is back; logs:\n{}", logs(s));
    let conf = lab.hosts[i].conf_dir.join(format!("{}.conf", s.name));
    assert!(wait_for(PATIENCE, || !conf.exists()).is_some(), "h{i} set its copy aside; logs:\n{}", logs(s));
    let out = vserver(lab, owner, &[&s.name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    // The voters promised the coordinator not to acknowledge it while its vservers were taken over: it holds a
    // lease again once that promise has run out. Until then it is no majority's member.
    let lease = || s.agents.status(i).ok().and_then(|st| st["failover"]["lease_remaining_ms"].as_u64());
    let held = wait_for(PATIENCE * 2, || lease().is_some_and(|left| left > 0));
    assert!(held.is_some(), "h{i} holds its lease again; logs:\n{}", logs(s));
}

#[test]
fn a_vserver_on_a_shared_device_moves_by_migrate_crash_cut_and_pause_behind_the_power_fence_losing_no_write() {
    if skip_unless_root(
        "a_vserver_on_a_shared_device_moves_by_migrate_crash_cut_and_pause_behind_the_power_fence_losing_no_write",
    ) {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let mut s = block_on_h0(&lab, "bm", true);
    let mounts = MountSampler::start(&s.device.devno);
    let sampler = Sampler::start(&lab, &s.name);
    let name = s.name.clone();

    // Migrate: stopped and unmounted here, mounted and started there.
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}", text(&out));
    check_moved(&lab, &s, 1, "migrate");

    // h1 crashes: the fence hook runs against it, then h0 (its first standby) takes it over.
    s.agents.kill9(1);
    s.dogs.kill9(1);
    lab.hosts[1].kill_vservers();
    lab.set_link(1, false).unwrap();
    check_moved(&lab, &s, 0, "crash");
    power_on(&lab, &mut s, 1, 0);

    // h0 cut off: the fence hook switches it off, h1 takes over.
    lab.set_link(0, false).unwrap();
    check_moved(&lab, &s, 1, "cut");
    power_on(&lab, &mut s, 0, 1);

    // h1's agent paused: the fence hook switches h1 off (the paused agent with it), h0 takes over.
    signal(&s.agents, 1, nix::sys::signal::Signal::SIGSTOP);
    check_moved(&lab, &s, 0, "pause");

    let fenced = std::fs::read_to_string(lab.dir().join("fenced.log")).unwrap_or_default();
    assert_eq!(fenced.lines().collect::<Vec<_>>(), ["h1", "h0", "h1"], "the power fence ran before each takeover");
    assert_never_mounted_twice(&mounts.finish());
    assert_one_copy(&sampler.finish(), &s.agents);
}

#[test]
fn without_a_power_fence_a_vserver_on_a_shared_device_waits_for_the_operators_word() {
    if skip_unless_root("without_a_power_fence_a_vserver_on_a_shared_device_waits_for_the_operators_word") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let mut s = block_on_h0(&lab, "bw", false);
    let mounts = MountSampler::start(&s.device.devno);
    let name = s.name.clone();
    s.agents.kill9(0);
    s.dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    // The coordinator says why it waits, and starts it nowhere.
    let said = wait_for(Duration::from_secs(30), || {
        let events = s.agents.get(1, 1, "/v1/events").ok().and_then(|r| r.json().ok()).unwrap_or_default();
        events.as_array().into_iter().flatten().any(|e| {
            e["vserver"] == name.as_str() && e["text"].as_str().is_some_and(|t| t.contains("evacuate h0 --fenced"))
        })
    });
    assert!(said.is_some(), "the wait is in the history; h1:\n{}", s.agents.log(1));
    assert!(!lab.hosts[1].runs(&name) && !lab.hosts[2].runs(&name), "started nowhere without the word");
    assert_eq!(owner(&s.agents, 1, &name).map(|o| o.0).as_deref(), Some("h0"));

    // The operator's word: h0 is down.
    let bin = vserver_lab::agents::agent_bin().unwrap();
    let out = lab.hosts[1]
        .command(bin)
        .arg("--config")
        .arg(s.agents.config(1))
        .args(["evacuate", "h0", "--fenced"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    check_moved(&lab, &s, 1, "evacuate --fenced");
    assert_never_mounted_twice(&mounts.finish());
}
