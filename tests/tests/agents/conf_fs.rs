//! Each host's conf dir on a file system of its own, as on real hosts (`/etc` on `/`, `/vservers` on its own
//! partition): a takeover, a migrate there and back, and a returning host's copy kept aside all move the conf
//! files between the conf dir and the replica dir, across file systems.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use vserver_lab::agents::wait_for;
use vserver_lab::faults::Sampler;
use vserver_lab::{skip_unless_root, Lab, Tmpfs};

use crate::takeover::{check_h0_came_back_as_standby, check_taken_over_by_h1, synced_on_h0, wait_page};
use crate::{owner, placed_on_h0, text, vserver, PATIENCE};

/// A tmpfs on every host's conf dir, unmounted when the guards drop (before the lab's directory goes).
fn conf_dirs_on_their_own_fs(lab: &Lab) -> Vec<Tmpfs> {
    let mounts: Vec<Tmpfs> = lab.hosts.iter().map(|h| Tmpfs::mount(&h.conf_dir, "16m").unwrap()).collect();
    for h in &lab.hosts {
        let dev = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(dev(&h.conf_dir), dev(&h.vservers_dir), "the conf dir is on a file system of its own");
    }
    mounts
}

#[test]
fn a_crashed_host_is_taken_over_with_the_conf_dir_on_another_file_system() {
    if skip_unless_root("a_crashed_host_is_taken_over_with_the_conf_dir_on_another_file_system") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _mounts = conf_dirs_on_their_own_fs(&lab);
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "xt", "");
    let sampler = Sampler::start(&lab, &name);

    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    let back = wait_page(&lab, addr, "synced", Duration::from_secs(30));
    assert!(back.is_some(), "taken over; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));
    check_taken_over_by_h1(&lab, &agents, &name, addr, &[1, 2]);
    let conf = lab.hosts[1].conf_dir.join(format!("{name}.conf"));
    assert!(conf.is_file(), "h1's conf dir holds the conf");

    // h0 comes back: its copy goes aside (the conf from its own file system into the replica dir), and it
    // takes a replica from h1.
    lab.set_link(0, true).unwrap();
    dogs.spawn(0).unwrap();
    agents.spawn(0).unwrap();
    check_h0_came_back_as_standby(&lab, &agents, &name);
    let aside = lab.hosts[0].vservers_dir.join(".replicas").join(&name).join("aside");
    let kept = std::fs::read_dir(&aside)
        .unwrap()
        .flatten()
        .any(|e| e.path().join("conf").join(format!("{name}.conf")).is_file());
    assert!(kept, "h0's conf is kept aside with its tree");
    assert!(lab.hosts[1].runs(&name));
    let seen = sampler.finish();
    assert!(seen.most_at_once <= 1, "never two at once: {:?}", seen.overlaps);
}

#[test]
fn a_migrate_there_and_back_moves_the_conf_across_file_systems() {
    if skip_unless_root("a_migrate_there_and_back_moves_the_conf_across_file_systems") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _mounts = conf_dirs_on_their_own_fs(&lab);
    let (agents, name, addr) = placed_on_h0(&lab, "xm", "", true);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());
    // A script beside the conf, with a mode of its own, travels with it.
    let script = |host: usize| lab.hosts[host].conf_dir.join(format!("{name}.sh"));
    std::fs::write(script(0), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(script(0), std::fs::Permissions::from_mode(0o750)).unwrap();
    let conf_text = std::fs::read(lab.hosts[0].conf_dir.join(format!("{name}.conf"))).unwrap();

    for (from, to) in [(0, 1), (1, 0)] {
        let out = vserver(&lab, from, &[&name, "migrate", &format!("h{to}")], false);
        assert!(
            out.status.success(),
            "h{from} -> h{to}: {}\nlog h{from}:\n{}\nlog h{to}:\n{}",
            text(&out),
            agents.log(from),
            agents.log(to)
        );
        assert!(lab.hosts[to].runs(&name) && !lab.hosts[from].runs(&name), "it runs on h{to} alone");
        assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some(), "it answers from h{to}");
        let conf_to = lab.hosts[to].conf_dir.join(format!("{name}.conf"));
        assert_eq!(std::fs::read(&conf_to).unwrap(), conf_text, "the conf arrived whole on h{to}");
        assert_eq!(std::fs::metadata(script(to)).unwrap().permissions().mode() & 0o7777, 0o750);
        assert!(!lab.hosts[from].conf_dir.join(format!("{name}.conf")).exists(), "the conf left h{from}");
        assert!(!script(from).exists(), "the script left h{from}");
        // The source keeps its copy as its current replica, conf included.
        let kept = lab.hosts[from].vservers_dir.join(".replicas").join(&name);
        let slot = std::fs::read_link(kept.join("current")).expect("the source keeps a current replica");
        let kept_conf = kept.join(slot).join("conf");
        assert_eq!(std::fs::read(kept_conf.join(format!("{name}.conf"))).unwrap(), conf_text);
        assert_eq!(
            std::fs::metadata(kept_conf.join(format!("{name}.sh"))).unwrap().permissions().mode() & 0o7777,
            0o750
        );
    }
}
