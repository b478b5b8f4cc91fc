//! Scenarios: alerts. Every agent has the same `[alerts]` hook, a script that keeps each alert it is given.
//! A partition of the primary makes a takeover and, once healed, the fence it made; two hosts gone then leave
//! the third without a coordinator, which it tells itself. In a cluster formed with TLS, every host's
//! certificate is told as ending soon (the warning set to ten years).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vserver_lab::agents::wait_for;
use vserver_lab::{skip_unless_root, Lab};

use crate::takeover::{check_h0_came_back_as_standby, synced_on_h0, wait_page};

/// The alerts the hook kept in `dir`, each as the JSON it was given, in the order they came.
fn kept(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .filter_map(|f| serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok())
        .collect()
}

/// A hook that keeps each alert in a file of its own under the inbox (names sorting in the order they came),
/// and the environment it was given beside it: (their directory, the hook, the inbox).
fn hook() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new().prefix("vserver-alerts-").tempdir().unwrap();
    let hook = dir.path().join("hook");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nf=$(date +%s%N)-$$\ncat > {inbox}/$f.tmp\necho \"$VSERVER_ALERT $VSERVER_ALERT_HOST \
             $VSERVER_ALERT_VSERVER\" > {inbox}/$f.env\nmv {inbox}/$f.tmp {inbox}/$f.json\n",
            inbox = inbox.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (dir, hook, inbox)
}

fn of_kind<'a>(alerts: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    alerts.iter().filter(|a| a["alert"] == kind).collect()
}

#[test]
fn the_coordinator_tells_takeovers_and_fences_and_a_voter_alone_tells_the_lost_quorum() {
    if skip_unless_root("the_coordinator_tells_takeovers_and_fences_and_a_voter_alone_tells_the_lost_quorum") {
        return;
    }
    let (_dir, hook, inbox) = hook();
    let lab = Lab::new(3).unwrap();
    let extra = format!("[alerts]\nall = \"{}\"\nquorum_lost_after_secs = 3\n", hook.display());
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "al", &extra);

    // h0 cut off: h1 takes the vserver over (told at once); h0 fenced it, which it logs once it hears the
    // others again (told then).
    lab.partition(&[&[0], &[1, 2]], 1).unwrap();
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "taken over; h1:\n{}", agents.log(1));
    let takeover = wait_for(Duration::from_secs(60), || !of_kind(&kept(&inbox), "takeover").is_empty());
    assert!(takeover.is_some(), "a takeover alert: {:?}", kept(&inbox));
    lab.partition(&[], 0).unwrap();
    check_h0_came_back_as_standby(&lab, &agents, &name);
    let fenced = wait_for(Duration::from_secs(60), || !of_kind(&kept(&inbox), "fenced").is_empty());
    assert!(fenced.is_some(), "a fence alert: {:?}\nh0:\n{}", kept(&inbox), agents.log(0));

    let alerts = kept(&inbox);
    let takeovers = of_kind(&alerts, "takeover");
    assert_eq!(takeovers.len(), 1, "one takeover, told once: {alerts:?}");
    let t = takeovers[0];
    assert_eq!(t["event"]["vserver"], name.as_str(), "{t}");
    assert_eq!(t["event"]["kind"], "takeover", "{t}");
    assert!(t["event"]["says"].as_str().unwrap().starts_with("taken over from h0 by h1"), "{t}");
    assert!(t["event"]["at"].as_str().unwrap().ends_with('Z'), "a UTC time: {t}");
    assert!(["h1", "h2"].contains(&t["told_by"].as_str().unwrap()), "told by the coordinator: {t}");
    let f = of_kind(&alerts, "fenced")[0];
    assert_eq!(f["event"]["host"], "h0", "{f}");
    // The hook's environment names the alert, the host and the vserver.
    let envs: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "env"))
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
        .collect();
    let reporter = t["event"]["host"].as_str().unwrap();
    assert!(envs.iter().any(|e| e == &format!("takeover {reporter} {name}")), "{envs:?}");
    // The log says what was told.
    let events = agents.get(1, 1, "/v1/events").unwrap().body;
    assert!(events.contains("\"kind\":\"alerted\"") && events.contains("told through"), "{events}");

    // h1 and h2 gone: h0, a voter, has no coordinator, and tells it after 3 s.
    for i in [1, 2] {
        agents.kill9(i);
        dogs.kill9(i);
    }
    let lost = wait_for(Duration::from_secs(60), || !of_kind(&kept(&inbox), "quorum_lost").is_empty());
    assert!(lost.is_some(), "a lost quorum alert: {:?}\nh0:\n{}", kept(&inbox), agents.log(0));
    let q = of_kind(&kept(&inbox), "quorum_lost")[0].clone();
    assert_eq!((q["told_by"].as_str(), q["event"]["host"].as_str()), (Some("h0"), Some("h0")), "{q}");
}

#[test]
fn every_hosts_certificate_ending_soon_is_told_once() {
    if skip_unless_root("every_hosts_certificate_ending_soon_is_told_once") {
        return;
    }
    let (_dir, hook, inbox) = hook();
    let lab = Lab::new(3).unwrap();
    // A cluster formed with its own CA (TLS); every certificate ends within ten years.
    let extra = format!("[alerts]\ncertificate_expiry = \"{}\"\ncertificate_days = 3650\n", hook.display());
    let agents = vserver_lab::agents::Agents::form(&lab, crate::FAST, None, |_| extra.clone()).unwrap();
    let told = || {
        let alerts = kept(&inbox);
        let hosts: std::collections::BTreeSet<String> = of_kind(&alerts, "certificate_expiry")
            .iter()
            .filter_map(|a| a["event"]["host"].as_str().map(str::to_owned))
            .collect();
        (alerts.len(), hosts.into_iter().collect::<Vec<_>>())
    };
    let all = wait_for(Duration::from_secs(90), || told().1 == ["h0", "h1", "h2"]);
    assert!(all.is_some(), "{:?}\nh0:\n{}", kept(&inbox), agents.log(0));
    let alerts = kept(&inbox);
    let one = of_kind(&alerts, "certificate_expiry")[0];
    assert!(one["event"]["says"].as_str().unwrap().contains("vserver-agent rotate"), "{one}");
    assert_eq!(told().0, 3, "once per host: {alerts:?}");
}
