//! Scenarios: `vserver NAME migrate HOST` for real. The service keeps answering at its address from the
//! client after the move, the tree arrives exactly, the old host keeps a replica and the placement turns
//! round; what changes after the pre-copy arrives with the last pass, which copies only that; a start that fails on the target leaves the vserver running on the source, with no lock left;
//! an unknown or dead target is refused before anything stops; a migrate killed half way (its client, or the
//! target's agent) leaves no lock, nothing half promoted, and a later migrate succeeds.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, treecmp, Lab};

use crate::{all_alive, text, vserver, FAST, PATIENCE};

/// Builds a busybox vserver on h0 serving HTTP at its own address, and starts the agents with it placed on
/// h0 (standby h1); starts it through h0's agent and waits until it answers.
fn setup<'lab>(lab: &'lab Lab, name: &str) -> (Agents<'lab>, Ipv4Addr, PathBuf) {
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    let tree = lab.hosts[0].vservers_dir.join(name);
    vserver_lab::bench::install_httpd_service(&tree, "migrating").unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 3600\n");
    let agents = Agents::start_with(lab, FAST, Some(&cluster)).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, lab.hosts.len())).is_some(), "log:\n{}", agents.log(0));
    let out = vserver(lab, 0, &[name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    (agents, addr, tree)
}

fn state_on(agents: &Agents, host: usize, name: &str) -> Option<String> {
    let status = agents.status(host).ok()?;
    let v = status["vservers"].as_array()?.iter().find(|v| v["name"] == name)?.clone();
    v["state"].as_str().map(str::to_string)
}

#[test]
fn a_migrated_vserver_answers_at_the_same_address_from_its_new_host() {
    if skip_unless_root("a_migrated_vserver_answers_at_the_same_address_from_its_new_host") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("mg");
    let (agents, addr, tree) = setup(&lab, &name);
    treecmp::fill_awkward(&tree).unwrap();

    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}\nlog h1:\n{}", text(&out), agents.log(0), agents.log(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("outage"), "the command ends with the outage: {stdout}");
    eprintln!("{stdout}");

    // It runs on h1, answers at its address from the client, and no longer on h0.
    assert_eq!(state_on(&agents, 1, &name).as_deref(), Some("running"));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok_and(|b| b.contains("migrating")));
    assert!(!lab.hosts[0].conf_dir.join(format!("{name}.conf")).exists(), "the conf left h0");
    assert!(state_on(&agents, 0, &name).is_none());
    // The tree arrived exactly: h0 kept its copy as its replica, equal to what runs on h1.
    let kept = lab.hosts[0].vservers_dir.join(".replicas").join(&name);
    let slot = std::fs::read_link(kept.join("current")).expect("h0 keeps a current replica");
    let diffs = treecmp::compare(&kept.join(slot).join("tree"), &lab.hosts[1].vservers_dir.join(&name)).unwrap();
    assert!(diffs.is_empty(), "h1's tree differs from the source:\n{}", diffs.join("\n"));
    // The cluster's ownership table names h1, on both hosts (a follower applies it a heartbeat later).
    for host in [0, 1] {
        let owner = |a: &Agents| a.status(host).ok().map(|s| s["ownership"]["owners"][name.as_str()]["owner"].clone());
        assert!(
            wait_for(PATIENCE, || owner(&agents).is_some_and(|o| o == "h1")).is_some(),
            "h{host}: {:?}",
            owner(&agents)
        );
    }
    // The placement turned round on both: h1 primary, h0 its standby; replication now runs h1 -> h0. h1 turns
    // its own round once it has applied the new owner (its check follows the table every second).
    let replicates_to_h0 = || {
        agents.status(1).ok().is_some_and(|s| {
            s["replication"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["vserver"] == name.as_str() && r["standby"] == "h0"))
        })
    };
    assert!(
        wait_for(PATIENCE, replicates_to_h0).is_some(),
        "h1 replicates to h0: {}",
        agents.status(1).map(|s| s["replication"].clone()).unwrap_or_default()
    );
    let out = vserver(&lab, 1, &[&name, "sync"], false);
    assert!(out.status.success(), "the new primary syncs to the old one: {}", text(&out));

    // And back, by command.
    let out = vserver(&lab, 1, &[&name, "migrate", "h0"], false);
    assert!(out.status.success(), "{}\nlog h1:\n{}", text(&out), agents.log(1));
    assert_eq!(state_on(&agents, 0, &name).as_deref(), Some("running"));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok());
}

#[test]
fn what_changes_after_the_pre_copy_arrives_with_the_last_pass() {
    if skip_unless_root("what_changes_after_the_pre_copy_arrives_with_the_last_pass") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("mc");
    // On h0, at the stop (after the pre-copy, before the last pass), the hook changes the tree in every way
    // the last pass must carry: data rewritten at the same size with an old mtime, a file removed, a directory
    // moved to another, a hard link added across directories, a mode changed, a directory made.
    let hook = format!(
        "case \"$VSERVER_ROOT\" in {h0}/*) ;; *) exit 0 ;; esac\n\
         [ \"$1\" = pre-stop ] || exit 0\n\
         w=$VSERVER_ROOT/work\n\
         printf BBBB > $w/a/f && touch -d @1000000000 $w/a/f\n\
         rm $w/d/deep/gone\n\
         mv $w/c/sub $w/b/sub\n\
         ln $w/e/x $w/b/x-link\n\
         chmod 0600 $w/g/mode\n\
         mkdir -p $w/b/new/inner && echo fresh > $w/b/new/inner/file\n",
        h0 = lab.hosts[0].vservers_dir.display()
    );
    std::fs::create_dir_all(&lab.hosts[0].conf_dir).unwrap();
    std::fs::write(lab.hosts[0].conf_dir.join(format!("{name}.sh")), hook).unwrap();
    let (agents, _addr, tree) = setup(&lab, &name);
    let w = tree.join("work");
    for d in ["a", "b", "c/sub", "d/deep", "e", "g"] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    for (f, text) in [("a/f", "AAAA"), ("c/sub/f2", "moved"), ("d/deep/gone", "x"), ("e/x", "linked"), ("g/mode", "m")]
    {
        std::fs::write(w.join(f), text).unwrap();
    }
    // Older than the pre-copy by more than the 2 s margin the last pass allows (or the new `work` would make
    // the tree's top directory look changed, and the last pass compare the whole tree).
    std::thread::sleep(Duration::from_millis(2500));

    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}\nlog h1:\n{}", text(&out), agents.log(0), agents.log(1));
    let log = agents.log(0);
    assert!(log.contains("final pass") && log.contains("changed paths"), "the last pass went by the changes:\n{log}");
    let kept = lab.hosts[0].vservers_dir.join(".replicas").join(&name);
    let slot = std::fs::read_link(kept.join("current")).expect("h0 keeps a current replica");
    let source = kept.join(slot).join("tree");
    let target = lab.hosts[1].vservers_dir.join(&name);
    let diffs = treecmp::compare(&source, &target).unwrap();
    assert!(diffs.is_empty(), "h1's tree differs from the source:\n{}", diffs.join("\n"));
    // The hook did run on h0 before the last pass (so the comparison above covers its changes).
    let tw = target.join("work");
    assert_eq!(std::fs::read_to_string(tw.join("a/f")).unwrap(), "BBBB");
    assert!(!tw.join("d/deep/gone").exists() && !tw.join("c/sub").exists());
    assert_eq!(std::fs::read_to_string(tw.join("b/sub/f2")).unwrap(), "moved");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(tw.join("e/x")).unwrap().ino(), std::fs::metadata(tw.join("b/x-link")).unwrap().ino());
    assert_eq!(std::fs::read_to_string(tw.join("b/new/inner/file")).unwrap(), "fresh\n");
}

#[test]
fn a_start_that_fails_on_the_target_leaves_the_vserver_running_on_the_source() {
    if skip_unless_root("a_start_that_fails_on_the_target_leaves_the_vserver_running_on_the_source") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("mf");
    // The hook refuses to start on h1 only (it travels with the conf).
    let hook = format!(
        "case \"$VSERVER_ROOT\" in {}/*) [ \"$1\" = pre-start ] && exit 1 ;; esac\nexit 0\n",
        lab.hosts[1].vservers_dir.display()
    );
    std::fs::create_dir_all(&lab.hosts[0].conf_dir).unwrap();
    std::fs::write(lab.hosts[0].conf_dir.join(format!("{name}.sh")), hook).unwrap();
    let (agents, addr, _tree) = setup(&lab, &name);

    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs here again"), "{}", text(&out));
    assert_eq!(state_on(&agents, 0, &name).as_deref(), Some("running"), "running on the source again");
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok());
    // The target is as before: no tree, no conf, and its replica is current again.
    assert!(!lab.hosts[1].vservers_dir.join(&name).exists());
    assert!(!lab.hosts[1].conf_dir.join(format!("{name}.conf")).exists());
    assert!(lab.hosts[1].vservers_dir.join(".replicas").join(&name).join("current").exists());
    // No lock is left: operators act on it, and a new migrate is attempted (and fails for the same reason).
    let out = vserver(&lab, 0, &[&name, "restart"], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("start on h1 failed"), "{}", text(&out));
}

#[test]
fn an_unknown_or_dead_target_is_refused_before_anything_stops() {
    if skip_unless_root("an_unknown_or_dead_target_is_refused_before_anything_stops") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let name = vserver_lab::unique("mr");
    let (mut agents, addr, _tree) = setup(&lab, &name);
    let out = vserver(&lab, 0, &[&name, "migrate", "nosuchhost"], false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown host"), "{}", text(&out));
    agents.kill9(2);
    assert!(wait_for(PATIENCE, || agents.peer_state(0, 2).as_deref() == Some("dead")).is_some());
    let out = vserver(&lab, 0, &[&name, "migrate", "h2"], false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was stopped"), "{}", text(&out));
    assert_eq!(state_on(&agents, 0, &name).as_deref(), Some("running"));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(2)).is_ok());
}

#[test]
fn a_second_migrate_while_one_runs_is_refused_and_so_is_an_operators_stop() {
    if skip_unless_root("a_second_migrate_while_one_runs_is_refused_and_so_is_an_operators_stop") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("m2");
    let (agents, addr, tree) = setup(&lab, &name);
    // Enough data that the pre-copy takes a moment.
    std::fs::write(tree.join("payload"), vec![0xa5u8; 192 << 20]).unwrap();
    let secret = agents.secret().to_string();
    let migrate = |to: &str| {
        let body = format!("{{\"target\":\"{to}\"}}");
        agents.request(0, 0, "POST", &format!("/v1/vservers/{name}/migrate"), Some(&secret), Some(&body)).unwrap()
    };
    let first = migrate("h1");
    assert_eq!(first.status, 202, "{}", first.body);
    let second = migrate("h1");
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(second.json().unwrap()["error"].as_str().unwrap().contains("already running"), "{}", second.body);
    // An operator's stop meanwhile is refused, not queued behind the move.
    let out = vserver(&lab, 0, &[&name, "stop"], false);
    assert!(!out.status.success(), "{}", text(&out));
    let done = wait_for(PATIENCE, || {
        agents
            .get(0, 0, &format!("/v1/vservers/{name}/migration"))
            .ok()
            .and_then(|r| r.json().ok())
            .is_some_and(|m| m["finished"] == true)
    });
    assert!(done.is_some());
    let m = agents.get(0, 0, &format!("/v1/vservers/{name}/migration")).unwrap().json().unwrap();
    assert_eq!(m["phase"], "done", "{m}");
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok());
}

/// The migrate of `name` as h0's agent reports it.
fn migration(agents: &Agents, name: &str) -> Option<serde_json::Value> {
    agents.get(0, 0, &format!("/v1/vservers/{name}/migration")).ok()?.json().ok()
}

/// Limits what host `i` sends to 4 MB/s (a token bucket on its link, with a short queue so heartbeats still
/// pass), or lifts the limit: a copy of tens of MB then lasts while the test kills things.
fn throttle(lab: &Lab, i: usize, on: bool) {
    let host = &lab.hosts[i];
    let mut tc = std::process::Command::new("tc");
    tc.args(["-n", host.netns.name(), "qdisc"]);
    if on {
        tc.args(["replace", "dev", &host.dev, "root", "tbf", "rate", "32mbit", "burst", "64kb", "latency", "50ms"]);
    } else {
        tc.args(["del", "dev", &host.dev, "root"]);
    }
    let out = tc.output().expect("tc (iproute2)");
    assert!(out.status.success(), "tc: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until host `i`, primary of `name`, has completed a sync to its standby and runs none.
fn wait_synced(agents: &Agents, i: usize, name: &str) {
    let synced = wait_for(Duration::from_secs(60), || {
        agents.status(i).is_ok_and(|s| {
            s["replication"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["vserver"] == name && r["syncing"] == false && !r["last_complete_unix_ms"].is_null())
            })
        })
    });
    assert!(synced.is_some(), "h{i}: {:?}", agents.status(i).map(|s| s["replication"].clone()));
}

/// Waits until h0's migrate of `name` is copying the tree (pre-copy, bytes moved).
fn wait_mid_copy(agents: &Agents, name: &str) {
    let copying = wait_for(Duration::from_secs(60), || {
        migration(agents, name).is_some_and(|m| m["phase"] == "precopy" && m["pass_bytes"].as_u64() > Some(0))
    });
    assert!(copying.is_some(), "never seen copying: {:?}\nlog h0:\n{}", migration(agents, name), agents.log(0));
}

#[test]
fn a_migrate_killed_half_way_leaves_no_lock_and_a_later_migrate_succeeds() {
    if skip_unless_root("a_migrate_killed_half_way_leaves_no_lock_and_a_later_migrate_succeeds") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let name = vserver_lab::unique("mk");
    let addr = lab.free_addr(0);
    let out = vserver(&lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    let tree = lab.hosts[0].vservers_dir.join(&name);
    vserver_lab::bench::install_httpd_service(&tree, "killed").unwrap();
    std::fs::write(tree.join("payload"), vec![0x5au8; 48 << 20]).unwrap();
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\"]\ninterval_secs = 3600\n");
    let mut agents = Agents::start_with(&lab, FAST, Some(&cluster)).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 2)).is_some(), "log:\n{}", agents.log(0));
    let out = vserver(&lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    let bin = vserver_lab::vserver_bin().unwrap();
    // The first sync (h0 to h1) ends first, so that the kill below hits the migrate's own copy.
    wait_synced(&agents, 0, &name);

    // 1. The target's agent killed (-9) while the tree is copied: the migrate fails, the vserver runs on the
    //    source, which holds no lock; the target has nothing half promoted.
    throttle(&lab, 0, true);
    let mut client = lab.hosts[0].command(&bin).args([name.as_str(), "migrate", "h1"]).spawn().unwrap();
    wait_mid_copy(&agents, &name);
    agents.kill9(1);
    throttle(&lab, 0, false);
    let status = client.wait().unwrap();
    assert!(!status.success(), "the migrate cannot succeed without its target");
    let m = migration(&agents, &name).unwrap();
    assert_eq!((m["phase"].as_str(), m["finished"].as_bool()), (Some("failed"), Some(true)), "{m}");
    assert_eq!(state_on(&agents, 0, &name).as_deref(), Some("running"), "log h0:\n{}", agents.log(0));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok_and(|b| b.contains("killed")));
    assert!(!lab.hosts[1].vservers_dir.join(&name).exists(), "no tree promoted on the target");
    assert!(!lab.hosts[1].conf_dir.join(format!("{name}.conf")).exists(), "no conf on the target");
    // No lock: an operator's restart goes through at once (a held vserver answers 423).
    let out = vserver(&lab, 0, &[&name, "restart"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    // The target comes back; a later migrate succeeds.
    agents.spawn(1).unwrap();
    assert!(wait_for(PATIENCE, || all_alive(&agents, 2)).is_some(), "log h1:\n{}", agents.log(1));
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}\nlog h1:\n{}", text(&out), agents.log(0), agents.log(1));
    assert_eq!(state_on(&agents, 1, &name).as_deref(), Some("running"));
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok_and(|b| b.contains("killed")));

    // 2. The client of a migrate killed (-9) while the tree is copied (back to h0): the agent carries the
    //    migrate to its end by itself, as with any request whose client hangs up, and leaves no lock.
    // The sync that follows the move (h1 to h0) ends first: a migrate waits for a sync under way.
    wait_synced(&agents, 1, &name);
    // New data there, so that the copy back has something to move.
    std::fs::write(lab.hosts[1].vservers_dir.join(&name).join("payload2"), vec![0xa5u8; 48 << 20]).unwrap();
    throttle(&lab, 1, true);
    let mut client = lab.hosts[1].command(&bin).args([name.as_str(), "migrate", "h0"]).spawn().unwrap();
    let from_h1 = |a: &Agents| a.get(1, 1, &format!("/v1/vservers/{name}/migration")).ok()?.json().ok();
    let copying = wait_for(Duration::from_secs(60), || {
        from_h1(&agents)
            .is_some_and(|m: serde_json::Value| m["phase"] == "precopy" && m["pass_bytes"].as_u64() > Some(0))
    });
    assert!(copying.is_some(), "never seen copying: {:?}", from_h1(&agents));
    client.kill().unwrap();
    let _ = client.wait();
    throttle(&lab, 1, false);
    let ended = wait_for(Duration::from_secs(60), || from_h1(&agents).is_some_and(|m| m["finished"] == true));
    assert!(ended.is_some(), "{:?}\nlog h1:\n{}", from_h1(&agents), agents.log(1));
    let m = from_h1(&agents).unwrap();
    assert_eq!(m["phase"], "done", "{m}\nlog h1:\n{}", agents.log(1));
    assert_eq!(state_on(&agents, 0, &name).as_deref(), Some("running"));
    assert!(state_on(&agents, 1, &name).is_none(), "it runs on one host only");
    assert!(lab.client.http_get(addr, 80, Duration::from_secs(5)).is_ok_and(|b| b.contains("killed")));
    // No lock on either host: a restart on h0, then a migrate to h1 and back, all succeed.
    let out = vserver(&lab, 0, &[&name, "restart"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}", text(&out), agents.log(0));
    assert_eq!(state_on(&agents, 1, &name).as_deref(), Some("running"));
}
