//! Automatic takeover under real faults, 3 hosts and a client: a host crash, a partition of the primary, a
//! paused agent, an agent restart, lossy links. Every scenario samples, every 5 ms, on which hosts the
//! vserver has processes, and fails if two ever ran it at once; after a takeover the client must get, at
//! the vserver's address, the page of the last complete sync (not what the dead host wrote after it).

use std::time::{Duration, Instant};

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::faults::{Sampled, Sampler, Watchdogs};
use vserver_lab::flood::Flood;
use vserver_lab::{skip_unless_root, Lab};

use crate::{owner, placed_on_h0, signal, text, vserver, PATIENCE};

/// The page a vserver's httpd serves (as `install_httpd_service` writes it).
fn page(marker: &str) -> String {
    format!("<html><body>{marker}</body></html>\n")
}

/// Rewrites the page in `host`'s copy of the vserver's tree.
fn write_page(lab: &Lab, host: usize, name: &str, marker: &str) {
    let index = lab.hosts[host].vservers_dir.join(name).join("www/index.html");
    std::fs::write(&index, page(marker)).unwrap();
}

/// Waits until the client gets `marker`'s page at `addr`; how long that took.
pub(crate) fn wait_page(lab: &Lab, addr: std::net::Ipv4Addr, marker: &str, within: Duration) -> Option<Duration> {
    let want = page(marker);
    wait_for(within, || {
        lab.client.http_get(addr, 80, Duration::from_millis(300)).is_ok_and(|body| body.ends_with(&want))
    })
}

fn takeovers(agents: &Agents, i: usize) -> Vec<serde_json::Value> {
    agents.status(i).ok().and_then(|s| s["takeovers"].as_array().cloned()).unwrap_or_default()
}

/// Never two at once.
pub(crate) fn assert_one_copy(seen: &Sampled, agents: &Agents) {
    assert!(seen.rounds > 100, "the sampler ran ({} rounds)", seen.rounds);
    assert!(
        seen.most_at_once <= 1,
        "the vserver ran on two hosts at once: {:?}\nchanges: {:?}\nh0:\n{}\nh1:\n{}",
        seen.overlaps.iter().take(5).collect::<Vec<_>>(),
        seen.changes,
        agents.log(0),
        agents.log(1)
    );
}

/// A vserver on h0 (standbys h1, h2) with watchdogs on every host, synced once with the page "synced",
/// after which h0 writes "unsynced" (lost on a takeover, by design).
pub(crate) fn synced_on_h0<'lab>(
    lab: &'lab Lab,
    prefix: &str,
    extra: &str,
) -> (Agents<'lab>, Watchdogs<'lab>, String, std::net::Ipv4Addr) {
    synced_on_h0_timed(lab, prefix, extra, crate::FAST)
}

/// [`synced_on_h0`] with the agents' heartbeat timing `timing`.
pub(crate) fn synced_on_h0_timed<'lab>(
    lab: &'lab Lab,
    prefix: &str,
    extra: &str,
    timing: vserver_lab::agents::Timing,
) -> (Agents<'lab>, Watchdogs<'lab>, String, std::net::Ipv4Addr) {
    let dogs = Watchdogs::start(lab).unwrap();
    let (agents, name, addr) = crate::placed_on_h0_timed(lab, prefix, extra, true, timing);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());
    write_page(lab, 0, &name, "synced");
    let out = vserver(lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    write_page(lab, 0, &name, "unsynced");
    assert!(wait_page(lab, addr, "unsynced", PATIENCE).is_some());
    (agents, dogs, name, addr)
}

/// After a takeover by h1: it runs there alone, the client gets the synced page, the takeover is in the
/// status of every live host with its phases.
pub(crate) fn check_taken_over_by_h1(lab: &Lab, agents: &Agents, name: &str, addr: std::net::Ipv4Addr, live: &[usize]) {
    assert!(lab.hosts[1].runs(name), "h1 runs it; log:\n{}", agents.log(1));
    assert!(!lab.hosts[2].runs(name));
    assert!(wait_page(lab, addr, "synced", PATIENCE).is_some(), "the client gets the synced page from h1");
    for &i in live {
        let seen = wait_for(PATIENCE, || {
            takeovers(agents, i).iter().any(|t| t["vserver"] == name && t["from"] == "h0" && t["to"] == "h1")
        });
        assert!(seen.is_some(), "h{i} shows the takeover: {:?}", takeovers(agents, i));
    }
    let record = takeovers(agents, live[0]).into_iter().find(|t| t["vserver"] == name).unwrap();
    let phases: Vec<&str> = record["phases_ms"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    for phase in ["detect", "confirm", "commit", "promote", "start"] {
        assert!(phases.contains(&phase), "phase {phase} in {record}");
    }
    let out = lab.hosts[1].command(vserver_lab::vserver_bin().unwrap()).args(["--help"]).output().unwrap();
    assert!(out.status.success());
}

/// Once h0 is back: it does not run the vserver, its copy is kept aside (not deleted), and it takes a
/// replica from h1.
pub(crate) fn check_h0_came_back_as_standby(lab: &Lab, agents: &Agents, name: &str) {
    let conf = lab.hosts[0].conf_dir.join(format!("{name}.conf"));
    let aside = wait_for(PATIENCE, || !conf.exists());
    assert!(aside.is_some(), "h0 moved its copy aside; log:\n{}", agents.log(0));
    assert!(!lab.hosts[0].runs(name), "h0 does not run it");
    let kept = walk_for(&lab.hosts[0].dir, "index.html")
        .into_iter()
        .any(|p| p.to_string_lossy().contains("/aside/") && std::fs::read_to_string(&p).unwrap() == page("unsynced"));
    assert!(kept, "h0's own copy (with the unsynced page) is kept aside");
    // The new owner syncs to it.
    let out = vserver(lab, 1, &[name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    let replicas = agents.get(0, 0, "/v1/replicas").unwrap().json().unwrap();
    assert!(
        replicas.as_array().unwrap().iter().any(|r| r["vserver"] == name && r["source"] == "h1"),
        "h0 holds a replica from h1: {replicas}"
    );
    assert!(!lab.hosts[0].runs(name));
}

fn walk_for(dir: &std::path::Path, file: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if e.file_name() == file {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_crashed_host_is_taken_over_by_its_first_standby() {
    if skip_unless_root("a_crashed_host_is_taken_over_by_its_first_standby") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "tk", "");
    let sampler = Sampler::start(&lab, &name);

    // The crash: every process of h0 gone at once, and its link down.
    let crashed = Instant::now();
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    let back = wait_page(&lab, addr, "synced", Duration::from_secs(30));
    assert!(back.is_some(), "taken over; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));
    eprintln!("recovered {} ms after the crash", crashed.elapsed().as_millis());
    check_taken_over_by_h1(&lab, &agents, &name, addr, &[1, 2]);
    assert_eq!(owner(&agents, 1, &name).map(|o| o.0).as_deref(), Some("h1"));

    // h0 comes back: a standby now.
    lab.set_link(0, true).unwrap();
    dogs.spawn(0).unwrap();
    agents.spawn(0).unwrap();
    check_h0_came_back_as_standby(&lab, &agents, &name);
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.hosts[1].runs(&name));
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn a_partitioned_primary_fences_itself_and_comes_back_as_a_standby() {
    if skip_unless_root("a_partitioned_primary_fences_itself_and_comes_back_as_a_standby") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, "tp", "");
    let sampler = Sampler::start(&lab, &name);

    // h0 alone on one side, h1, h2 and the client on the other. h0's agent and vserver keep running: h0
    // must stop it itself before h1 may start it.
    lab.partition(&[&[0], &[1, 2]], 1).unwrap();
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "taken over; h1:\n{}", agents.log(1));
    check_taken_over_by_h1(&lab, &agents, &name, addr, &[1, 2]);
    assert!(!lab.hosts[0].runs(&name), "h0 fenced itself; log:\n{}", agents.log(0));
    assert!(agents.log(0).contains("lease lost"), "{}", agents.log(0));

    // Healed: h0 learns the new epoch, keeps its copy aside, never starts it again.
    lab.partition(&[], 0).unwrap();
    check_h0_came_back_as_standby(&lab, &agents, &name);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.hosts[1].runs(&name) && !lab.hosts[0].runs(&name));
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn a_paused_primary_agent_is_fenced_by_its_watchdog_and_does_not_resume_what_it_lost() {
    if skip_unless_root("a_paused_primary_agent_is_fenced_by_its_watchdog_and_does_not_resume_what_it_lost") {
        return;
    }
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, "ts", "");
    let sampler = Sampler::start(&lab, &name);

    // Paused well past the takeover timeout: the watchdog kills the vserver, h1 takes it over.
    signal(&agents, 0, SIGSTOP);
    let taken = wait_page(&lab, addr, "synced", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    signal(&agents, 0, SIGCONT);
    assert!(taken.is_some(), "taken over; h1:\n{}", agents.log(1));
    check_taken_over_by_h1(&lab, &agents, &name, addr, &[1, 2]);
    // Resumed: h0 learns it lost the vserver, and does not start it.
    check_h0_came_back_as_standby(&lab, &agents, &name);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!lab.hosts[0].runs(&name), "h0 did not resume it; log:\n{}", agents.log(0));
    assert_one_copy(&sampler.finish(), &agents);
}

/// No takeover and no fence over `watch`: the vserver runs on h0 alone all along, and the table still
/// gives it to h0 at the same epoch.
fn assert_nothing_moved(lab: &Lab, agents: &Agents, name: &str, sampler: Sampler, epoch: u64) {
    let seen = sampler.finish();
    assert_one_copy(&seen, agents);
    assert_eq!(seen.changes.len(), 1, "it never stopped nor moved: {:?}\nh0:\n{}", seen.changes, agents.log(0));
    assert_eq!(seen.changes[0].1, vec![0]);
    assert!(lab.hosts[0].runs(name));
    assert_eq!(owner(agents, 1, name), Some(("h0".to_string(), epoch)), "the table did not move");
    for i in 0..3 {
        assert!(takeovers(agents, i).is_empty(), "no takeover: {:?}", takeovers(agents, i));
    }
    assert!(!agents.log(0).contains("lease lost"), "h0 never fenced itself:\n{}", agents.log(0));
}

#[test]
fn an_agent_restart_moves_nothing() {
    if skip_unless_root("an_agent_restart_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, _dogs, name, _addr) = synced_on_h0(&lab, "tr", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    for _ in 0..3 {
        agents.kill9(0);
        agents.spawn(0).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

/// A slowloris against the owner's API port from the client's address: 2,000 connections held open with a
/// request begun and never finished, each the agent closes opened again. The agent serves at most a few of
/// them and closes the rest at once; its peers' heartbeats, beacons and requests, and its supervision, go on.
#[test]
fn a_flood_of_half_open_connections_to_the_owner_moves_nothing() {
    if skip_unless_root("a_flood_of_half_open_connections_to_the_owner_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, _addr) = synced_on_h0(&lab, "fl", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    let target = std::net::SocketAddr::from((lab.hosts[0].addr, vserver_lab::agents::AGENT_PORT));
    let flood = Flood::start(&lab.client.netns, target, 2000);
    // Longer than the agent's header timeout (10 s): the connections it served time out and come again.
    let until = Instant::now() + Duration::from_secs(25);
    let mut asked = 0;
    while Instant::now() < until {
        // An authenticated request from a peer's address answers all along.
        let reply = agents.get(1, 0, "/v1/status").unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        asked += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = flood.finish();
    assert!(asked > 10);
    assert!(report.opened >= 2000 && report.closed_by_agent > 1000, "the flood was on: {report:?}");
    assert!(agents.log(0).contains("too many connections"), "h0 said it closed some:\n{}", agents.log(0));
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
    let events = agents.get(0, 0, "/v1/events").unwrap().json().unwrap();
    let moved: Vec<_> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let kind = e["kind"].as_str().unwrap_or("");
            ["fence", "restart", "takeover", "host_dead"].iter().any(|k| kind.starts_with(k))
        })
        .collect();
    assert!(moved.is_empty(), "no fence, restart nor takeover: {moved:?}");
}

#[test]
fn clean_agent_restarts_in_a_row_move_nothing() {
    if skip_unless_root("clean_agent_restarts_in_a_row_move_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, _dogs, name, _addr) = synced_on_h0(&lab, "tc", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let healthy = healthy_lease(&agents);
    let sampler = Sampler::start(&lab, &name);
    for round in 0..10 {
        // What `systemctl restart vserver-agent` does: SIGTERM, the wait for the exit, a new start.
        assert!(agents.stop(0, Duration::from_secs(10)), "round {round}: the agent left by itself");
        agents.spawn(0).unwrap();
        settle(&agents, healthy);
        // Restarts a second apart, as an operator's or an upgrade's are (not a crash loop).
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn twenty_percent_loss_on_every_link_moves_nothing() {
    if skip_unless_root("twenty_percent_loss_on_every_link_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, _addr) = synced_on_h0(&lab, "tl", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    for i in 0..3 {
        lab.set_loss(i, 20).unwrap();
    }
    std::thread::sleep(Duration::from_secs(20));
    for i in 0..3 {
        lab.set_loss(i, 0).unwrap();
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn a_200_ms_delay_on_every_link_moves_nothing() {
    if skip_unless_root("a_200_ms_delay_on_every_link_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    // The product's default timing, whose heartbeat timeout (1 s) covers a new connection's two round trips of
    // 400 ms; the tests' fast timing (a 600 ms timeout) does not, and a heartbeat cut short by a stall of the
    // machine could then never be sent again until the delay ends.
    let (agents, _dogs, name, addr) = synced_on_h0_timed(&lab, "td", "", vserver_lab::agents::Timing::default());
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    {
        // Every frame a host sends is 200 ms late: 400 ms round trips between hosts, for 20 s.
        let _delays: Vec<_> = (0..3).map(|i| lab.delay(i, Duration::from_millis(200)).unwrap()).collect();
        std::thread::sleep(Duration::from_secs(20));
        let answered = wait_for(PATIENCE, || {
            lab.client.http_get(addr, 80, Duration::from_secs(3)).is_ok_and(|body| body.ends_with(&page("unsynced")))
        });
        assert!(answered.is_some(), "the service answers through the delay, from h0");
        // The agents felt it: h1's heartbeats to h0 take a round trip of two delays.
        let status = agents.status(1).unwrap();
        let rtt = status["peers"].as_array().unwrap().iter().find(|p| p["name"] == "h0").unwrap()["rtt_ms"].as_f64();
        assert!(rtt.is_some_and(|ms| ms >= 400.0), "h1 measures h0's round trip at {rtt:?} ms");
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn rotating_the_cluster_secret_one_host_at_a_time_moves_nothing() {
    if skip_unless_root("rotating_the_cluster_secret_one_host_at_a_time_moves_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, _dogs, name, _addr) = synced_on_h0(&lab, "ts", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    let file = lab.dir().join("cluster.secret");
    let old = agents.secret().to_string();
    let new = format!("rotated-{}", vserver_lab::unique("secret"));
    // The runbook: accept the new one everywhere, then send it everywhere, then drop the old one; each step a
    // restart of one agent after the other (every agent reads the file at start only).
    for text in [format!("{old}\n{new}\n"), format!("{new}\n{old}\n"), format!("{new}\n")] {
        std::fs::write(&file, text).unwrap();
        for i in 0..3 {
            agents.kill9(i);
            agents.spawn(i).unwrap();
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    agents.use_secret(&new);
    let status = |i: usize, secret: &str| agents.request(i, i, "GET", "/v1/status", Some(secret), None).unwrap();
    assert!(
        wait_for(PATIENCE, || (0..3).all(|i| {
            let reply = status(i, &new);
            reply.status == 200
                && reply.json().unwrap()["peers"].as_array().unwrap().iter().all(|p| p["state"] == "alive")
        }))
        .is_some(),
        "every agent hears the others under the new secret"
    );
    for i in 0..3 {
        assert_eq!(status(i, &old).status, 401, "h{i} no longer takes the old secret");
        let rejected = status(i, &new).json().unwrap()["rejected_heartbeats"]["bad_signature"].as_u64();
        assert_eq!(rejected, Some(0), "h{i} refused a heartbeat's signature during the rotation");
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

/// `vserver-agent maintenance ARGS` on host `i`, through its agent.
fn maintenance(lab: &Lab, agents: &Agents, i: usize, args: &[&str]) -> std::process::Output {
    let bin = vserver_lab::agents::agent_bin().unwrap();
    lab.hosts[i].command(bin).arg("--config").arg(agents.config(i)).arg("maintenance").args(args).output().unwrap()
}

/// With maintenance on (`args` on h0), h0's link down for three takeover timeouts: nothing moves, nothing is
/// fenced; then maintenance off (`off` on h1), and still nothing moves.
fn link_down_in_maintenance(prefix: &str, args: &[&str], off: &[&str], covers: fn(&serde_json::Value) -> bool) {
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, prefix, "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let out = maintenance(&lab, &agents, 0, args);
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..3 {
        let seen = wait_for(PATIENCE, || agents.status(i).is_ok_and(|s| covers(&s["failover"]["maintenance"])));
        assert!(
            seen.is_some(),
            "h{i} knows of the maintenance: {:?}",
            agents.status(i).ok().map(|s| s["failover"].clone())
        );
    }
    // Every answer that shows the mark names its time `since_unix_ms`, as every other time of the API, and
    // still `since_ms` (the same, deprecated) for the clients of the previous release.
    let marks = |m: &serde_json::Value| -> Vec<serde_json::Value> {
        let hosts = m["hosts"].as_object().into_iter().flat_map(|h| h.values().cloned());
        m["cluster"].as_object().map(|_| m["cluster"].clone()).into_iter().chain(hosts).collect()
    };
    let answers = [
        ("GET /v1/maintenance", agents.get(2, 2, "/v1/maintenance").unwrap().json().unwrap()),
        ("/v1/status", agents.status(2).unwrap()["failover"]["maintenance"].clone()),
        ("/v1/cluster", agents.get(2, 2, "/v1/cluster").unwrap().json().unwrap()["maintenance"].clone()),
    ];
    for (what, m) in answers {
        let marks = marks(&m);
        let named = |mark: &serde_json::Value| {
            mark["since_unix_ms"].as_u64().is_some_and(|t| t > 0) && mark["since_ms"] == mark["since_unix_ms"]
        };
        assert!(!marks.is_empty() && marks.iter().all(named), "{what}: {m}");
    }
    // In words, with the time in UTC.
    let shown = text(&maintenance(&lab, &agents, 2, &["status"]));
    assert!(shown.contains("(since 20") && shown.contains("Z, asked through h0)"), "{shown}");
    // Loud: the status page of every host says so.
    let banner = if args.contains(&"--cluster") { "CLUSTER MAINTENANCE" } else { "In maintenance (never fenced" };
    for i in 0..3 {
        let page = agents.get(i, i, "/").unwrap().body;
        assert!(page.contains(banner), "h{i}'s page shows {banner:?}");
    }
    let sampler = Sampler::start(&lab, &name);
    lab.set_link(0, false).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(lab.hosts[0].runs(&name), "h0 kept running it with its link down");
    lab.set_link(0, true).unwrap();
    assert!(wait_for(PATIENCE, || crate::all_alive(&agents, 3)).is_some());
    let out = maintenance(&lab, &agents, 1, off);
    assert!(out.status.success(), "{}", text(&out));
    let status = maintenance(&lab, &agents, 2, &["status", "--json"]);
    let now: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(now["cluster"].is_null() && now["hosts"].as_object().unwrap().is_empty(), "maintenance is off: {now}");
    // The history has both, on every host. A host reads its own copy of the table, which applies the event a
    // moment after the mark it follows.
    let maintenance_events = || -> Vec<serde_json::Value> {
        let events = agents.get(2, 2, "/v1/events").unwrap().json().unwrap();
        events.as_array().unwrap().iter().filter(|e| e["kind"] == "maintenance").cloned().collect()
    };
    let said = || -> Vec<String> {
        maintenance_events().iter().filter_map(|e| e["text"].as_str().map(str::to_owned)).collect()
    };
    let both = |said: &[String]| {
        said.len() == 2 && said[0].starts_with("maintenance on") && said[1].starts_with("maintenance off")
    };
    let about = |i: usize| -> String {
        agents
            .log(i)
            .lines()
            .filter(|l| l.contains("maintenance") || l.contains("event"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        wait_for(PATIENCE, || both(&said())).is_some(),
        "{:?}\nh0:\n{}\nh1:\n{}\nh2:\n{}",
        said(),
        about(0),
        about(1),
        about(2)
    );
    // Each event's time is `at_unix_ms`, and still `at_ms` (the same, deprecated).
    for e in maintenance_events() {
        assert!(e["at_unix_ms"].as_u64().is_some_and(|t| t > 0) && e["at_ms"] == e["at_unix_ms"], "{e}");
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(wait_page(&lab, addr, "unsynced", PATIENCE).is_some(), "h0 still serves its own page");
    assert!(agents.log(0).contains("in maintenance: not fencing"), "h0 said why it did not fence:\n{}", agents.log(0));
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn in_cluster_maintenance_the_primary_cut_off_is_neither_fenced_nor_taken_over() {
    if skip_unless_root("in_cluster_maintenance_the_primary_cut_off_is_neither_fenced_nor_taken_over") {
        return;
    }
    link_down_in_maintenance("tm", &["on", "--cluster"], &["off", "--cluster"], |m| m["cluster"]["by"] == "h0");
}

#[test]
fn a_host_in_maintenance_cut_off_is_neither_fenced_nor_taken_over() {
    if skip_unless_root("a_host_in_maintenance_cut_off_is_neither_fenced_nor_taken_over") {
        return;
    }
    link_down_in_maintenance("th", &["on"], &["off", "--host", "h0"], |m| {
        m["cluster"].is_null() && m["hosts"]["h0"]["by"] == "h0"
    });
}

/// The dangerous order: maintenance ends while its host is cut off, so the host cannot hear it and would not
/// fence itself. Its last heartbeat said it was in maintenance: nobody takes it over until it is heard again.
#[test]
fn maintenance_ended_while_its_host_is_cut_off_moves_nothing_until_it_is_back() {
    if skip_unless_root("maintenance_ended_while_its_host_is_cut_off_moves_nothing_until_it_is_back") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, "tc", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let out = maintenance(&lab, &agents, 0, &["on"]);
    assert!(out.status.success(), "{}", text(&out));
    // Its heartbeats say so before the link goes.
    let said = wait_for(PATIENCE, || agents.peer(1, 0).is_some_and(|p| p["maintenance"] == true));
    assert!(said.is_some(), "h1 hears h0 say it is in maintenance");
    let sampler = Sampler::start(&lab, &name);
    lab.set_link(0, false).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let out = maintenance(&lab, &agents, 1, &["off", "--host", "h0"]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(6));
    assert!(lab.hosts[0].runs(&name), "h0, which never heard the end, kept running it");
    assert!(
        agents.log(1).contains("its last heartbeat said it is in maintenance")
            || agents.log(2).contains("its last heartbeat said it is in maintenance"),
        "the coordinator said why it waits"
    );
    lab.set_link(0, true).unwrap();
    assert!(wait_for(PATIENCE, || agents.peer(1, 0).is_some_and(|p| p["maintenance"] == false)).is_some());
    std::thread::sleep(Duration::from_secs(3));
    assert!(wait_page(&lab, addr, "unsynced", PATIENCE).is_some(), "h0 still serves its own page");
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn maintenance_refuses_bad_input_and_changes_nothing() {
    if skip_unless_root("maintenance_refuses_bad_input_and_changes_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, _addr) = placed_on_h0(&lab, "tb", "", false);
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some()).is_some());
    let out = maintenance(&lab, &agents, 0, &["on", "--host", "h9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("\"h9\" is not a host of this cluster"), "{}", text(&out));
    let both = r#"{"on":true,"host":"h1","cluster":true}"#;
    let reply = agents.request(1, 1, "POST", "/v1/maintenance", Some(agents.secret()), Some(both)).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = agents.request(1, 1, "POST", "/v1/maintenance", Some(agents.secret()), Some("{\"on\":1}")).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.body);
    let now = agents.get(2, 2, "/v1/maintenance").unwrap().json().unwrap();
    assert!(now["cluster"].is_null() && now["hosts"].as_object().unwrap().is_empty(), "nothing changed: {now}");
}

/// A vserver on h0 of an `n`-host lab, standbys `standbys` in order, each host's agent.toml given
/// `extra(i)`, watchdogs everywhere; synced once ("synced"), then changed on h0 only ("unsynced").
fn synced_on_h0_of<'lab>(
    lab: &'lab Lab,
    prefix: &str,
    standbys: &[usize],
    extra: impl Fn(usize) -> String,
) -> (Agents<'lab>, Watchdogs<'lab>, String, std::net::Ipv4Addr) {
    let dogs = Watchdogs::start(lab).unwrap();
    let name = vserver_lab::unique(prefix);
    let addr = lab.free_addr(0);
    let out = vserver(lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "synced").unwrap();
    let list: Vec<String> = standbys.iter().map(|i| format!("\"h{i}\"")).collect();
    let cluster =
        format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [{}]\ninterval_secs = 3600\n", list.join(", "));
    let agents = Agents::start_each(lab, crate::FAST, Some(&cluster), extra).unwrap();
    let n = lab.hosts.len();
    assert!(wait_for(PATIENCE, || crate::all_alive(&agents, n)).is_some(), "all alive");
    let out = vserver(lab, 0, &[&name, "start"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_for(PATIENCE, || owner(&agents, 0, &name).is_some_and(|o| o.0 == "h0")).is_some());
    let out = vserver(lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    write_page(lab, 0, &name, "unsynced");
    assert!(wait_page(lab, addr, "unsynced", PATIENCE).is_some());
    (agents, dogs, name, addr)
}

/// The leader's index, as host `asked` sees it.
fn leader(agents: &Agents, asked: usize) -> Option<usize> {
    let status = agents.status(asked).ok()?;
    status["ownership"]["raft"]["leader"].as_str()?.trim_start_matches('h').parse().ok()
}

/// Runs it alone, and the client gets the synced page there.
fn served_by(lab: &Lab, agents: &Agents, name: &str, addr: std::net::Ipv4Addr, host: usize) {
    let moved = wait_for(Duration::from_secs(30), || lab.hosts[host].runs(name));
    assert!(moved.is_some(), "h{host} runs it; its log:\n{}", agents.log(host));
    assert!(wait_page(lab, addr, "synced", PATIENCE).is_some(), "the client gets the synced page from h{host}");
    let on: Vec<usize> = (0..lab.hosts.len()).filter(|&i| lab.hosts[i].runs(name)).collect();
    assert_eq!(on, vec![host]);
}

#[test]
fn five_hosts_the_majority_side_takes_over_from_a_primary_in_the_minority() {
    if skip_unless_root("five_hosts_the_majority_side_takes_over_from_a_primary_in_the_minority") {
        return;
    }
    let lab = Lab::new(5).unwrap();
    let (agents, _dogs, name, addr) = synced_on_h0_of(&lab, "t5m", &[1, 2, 3, 4], |_| String::new());
    let sampler = Sampler::start(&lab, &name);
    // h0 and its first standby h1 on the minority side: h2 (the first standby the majority side sees) takes
    // over; nothing starts on the minority side.
    lab.partition(&[&[0, 1], &[2, 3, 4]], 2).unwrap();
    served_by(&lab, &agents, &name, addr, 2);
    assert!(!lab.hosts[0].runs(&name) && !lab.hosts[1].runs(&name));
    assert!(agents.log(0).contains("lease lost"), "h0 fenced itself:\n{}", agents.log(0));
    lab.partition(&[], 0).unwrap();
    let conf = lab.hosts[0].conf_dir.join(format!("{name}.conf"));
    assert!(wait_for(PATIENCE, || !conf.exists()).is_some(), "h0 keeps its copy aside once healed");
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.hosts[2].runs(&name));
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn five_hosts_a_primary_on_the_majority_side_keeps_its_vserver() {
    if skip_unless_root("five_hosts_a_primary_on_the_majority_side_keeps_its_vserver") {
        return;
    }
    let lab = Lab::new(5).unwrap();
    let (agents, _dogs, name, _addr) = synced_on_h0_of(&lab, "t5k", &[3, 4, 1], |_| String::new());
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    // h3 and h4, the first standbys, are cut off: they cannot take anything over, and h0 keeps its lease.
    lab.partition(&[&[0, 1, 2], &[3, 4]], 0).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    lab.partition(&[], 0).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let seen = sampler.finish();
    assert_eq!(seen.changes.len(), 1, "it never stopped nor moved: {:?}\nh0:\n{}", seen.changes, agents.log(0));
    assert_eq!(owner(&agents, 0, &name), Some(("h0".to_string(), epoch)));
    assert!(!agents.log(0).contains("lease lost"), "{}", agents.log(0));
    for i in 0..5 {
        assert!(takeovers(&agents, i).is_empty());
    }
}

#[test]
fn a_crashed_coordinator_is_replaced_and_takeovers_still_happen() {
    if skip_unless_root("a_crashed_coordinator_is_replaced_and_takeovers_still_happen") {
        return;
    }
    let lab = Lab::new(5).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0_of(&lab, "t5c", &[1, 2, 3, 4], |_| String::new());
    let sampler = Sampler::start(&lab, &name);
    let crash = |agents: &mut Agents, dogs: &mut Watchdogs, i: usize| {
        agents.kill9(i);
        dogs.kill9(i);
        lab.hosts[i].kill_vservers();
        lab.set_link(i, false).unwrap();
    };
    let first = leader(&agents, 2).expect("a coordinator");
    eprintln!("coordinator: h{first}");
    if first != 0 {
        // The coordinator's host crashes first; another is elected among the four left.
        crash(&mut agents, &mut dogs, first);
        let asked = (1..5).find(|&i| i != first).unwrap();
        let elected = wait_for(PATIENCE, || leader(&agents, asked).is_some_and(|l| l != first));
        assert!(elected.is_some(), "a new coordinator; log:\n{}", agents.log(asked));
    }
    // Then the vserver's host (when it was the coordinator too, both at once).
    crash(&mut agents, &mut dogs, 0);
    let heir = (1..5).find(|&i| i != first).unwrap();
    served_by(&lab, &agents, &name, addr, heir);
    let newer = leader(&agents, heir).expect("a coordinator");
    assert!(newer != first && newer != 0, "the coordinator now: h{newer}");
    assert_one_copy(&sampler.finish(), &agents);
}

#[test]
fn a_witness_gives_two_hosts_their_takeover_and_runs_nothing() {
    if skip_unless_root("a_witness_gives_two_hosts_their_takeover_and_runs_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let witness = |i: usize| if i == 2 { "witness = true\n".to_string() } else { String::new() };
    let (mut agents, mut dogs, name, addr) = synced_on_h0_of(&lab, "tw", &[1], witness);
    let status = agents.status(2).unwrap();
    assert_eq!(status["failover"]["witness"], true, "{status}");
    // The witness runs nothing: a start there is refused, saying why.
    let path = format!("/v1/vservers/{name}/start");
    let reply = agents.request(2, 2, "POST", &path, Some(agents.secret()), None).unwrap();
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("witness"), "{}", reply.body);
    let sampler = Sampler::start(&lab, &name);
    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    served_by(&lab, &agents, &name, addr, 1);
    assert!(!lab.hosts[2].runs(&name));
    assert_one_copy(&sampler.finish(), &agents);
}

/// Crashes host `i` as a takeover test does: its agent and watchdog killed, its vservers killed, its link down.
fn crash_host(lab: &Lab, agents: &mut Agents, dogs: &mut Watchdogs, i: usize) {
    agents.kill9(i);
    dogs.kill9(i);
    lab.hosts[i].kill_vservers();
    lab.set_link(i, false).unwrap();
}

#[test]
fn a_vserver_relocated_max_relocate_times_is_left_in_error_until_cleared() {
    if skip_unless_root("a_vserver_relocated_max_relocate_times_is_left_in_error_until_cleared") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "rl", "[failures]\nmax_relocate = 1\n");

    // Its host crashes: taken over by h1, its first relocation (of 1 allowed within the window).
    crash_host(&lab, &mut agents, &mut dogs, 0);
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "h1:\n{}", agents.log(1));
    check_taken_over_by_h1(&lab, &agents, &name, addr, &[1, 2]);
    let v = agents.get(1, 1, &format!("/v1/vservers/{name}")).unwrap().json().unwrap();
    assert_eq!((v["relocations"].as_u64(), v["relocated_unix_ms"].as_array().map(Vec::len)), (Some(1), Some(1)), "{v}");
    // h0 comes back as a standby, and h1 gives it a copy.
    lab.set_link(0, true).unwrap();
    dogs.spawn(0).unwrap();
    agents.spawn(0).unwrap();
    check_h0_came_back_as_standby(&lab, &agents, &name);

    // Its new host crashes too: due a second relocation, it is put in error instead, cluster-wide.
    crash_host(&lab, &mut agents, &mut dogs, 1);
    let cleared_by = |i: usize| {
        let out = vserver(&lab, i, &[&name, "clear", "--json"], false);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let in_error = |i: usize| {
        agents.status(i).is_ok_and(|s| s["relocation_errors"][name.as_str()] == "relocated 1 times in 3600 s")
    };
    let logged = wait_for(Duration::from_secs(30), || in_error(0) && in_error(2));
    assert!(logged.is_some(), "the error is in the event log\nh0:\n{}\nh2:\n{}", agents.log(0), agents.log(2));
    // Not taken over: it runs nowhere, and no second takeover is recorded.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!lab.hosts[0].runs(&name) && !lab.hosts[2].runs(&name), "not taken over while in error");
    assert_eq!(takeovers(&agents, 2).iter().filter(|t| t["vserver"] == name.as_str()).count(), 1);

    // Cleared (on h2): its relocation is forgotten cluster-wide and the takeover happens.
    let report = cleared_by(2);
    assert_eq!(report["relocations"], 1, "{report}");
    assert_eq!(report["error"], "relocated 1 times in 3600 s", "{report}");
    let moved = wait_for(Duration::from_secs(30), || lab.hosts[0].runs(&name) || lab.hosts[2].runs(&name));
    assert!(moved.is_some(), "taken over once cleared\nh0:\n{}\nh2:\n{}", agents.log(0), agents.log(2));
    assert!(wait_for(PATIENCE, || takeovers(&agents, 2).iter().filter(|t| t["vserver"] == name.as_str()).count() == 2)
        .is_some());
}

/// Half the blip budget (docs/failover.md, "Failure budgets"): a silence this long must stop nothing.
const HALF_BLIP: Duration = Duration::from_millis(500);

/// Host `i`'s view of host `j` is `alive` again.
fn sees_alive(agents: &Agents, i: usize, j: usize) -> bool {
    agents.peer_state(i, j).as_deref() == Some("alive")
}

/// What is left of host 0's lease, as its status says.
fn lease_left(agents: &Agents) -> Option<u64> {
    agents.status(0).ok().and_then(|s| s["failover"]["lease_remaining_ms"].as_u64())
}

/// What is left of host 0's lease while all is well (the most seen over a moment).
fn healthy_lease(agents: &Agents) -> u64 {
    let mut most = 0;
    let _ = wait_for(Duration::from_secs(1), || {
        most = most.max(lease_left(agents).unwrap_or(0));
        false
    });
    assert!(most > 0, "h0 holds a lease; log:\n{}", agents.log(0));
    most
}

/// Waits until host 0 is back to normal after a blip: the peers see it alive again and its lease is renewed
/// to nearly what it is while all is well (`healthy`), so the next blip is one blip, not a flapping link.
fn settle(agents: &Agents, healthy: u64) {
    let alive = wait_for(PATIENCE, || sees_alive(agents, 1, 0) && sees_alive(agents, 0, 1));
    assert!(alive.is_some(), "h0 and h1 see each other again; log:\n{}", agents.log(0));
    let renewed = wait_for(PATIENCE, || lease_left(agents).is_some_and(|left| left + 250 >= healthy));
    assert!(renewed.is_some(), "h0's lease renewed (healthy: {healthy} ms); log:\n{}", agents.log(0));
}

#[test]
fn short_cuts_of_the_owners_link_stop_nothing() {
    if skip_unless_root("short_cuts_of_the_owners_link_stop_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, _addr) = synced_on_h0(&lab, "tb", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let healthy = healthy_lease(&agents);
    let sampler = Sampler::start(&lab, &name);
    for _ in 0..6 {
        lab.set_link(0, false).unwrap();
        std::thread::sleep(HALF_BLIP);
        lab.set_link(0, true).unwrap();
        settle(&agents, healthy);
    }
    // Whatever a cut was going to cause (a fence, a takeover) has happened by the takeover timeout.
    std::thread::sleep(Duration::from_secs(3));
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn short_freezes_of_the_owners_agent_and_watchdog_stop_nothing() {
    if skip_unless_root("short_freezes_of_the_owners_agent_and_watchdog_stop_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, dogs, name, _addr) = synced_on_h0(&lab, "tz", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let healthy = healthy_lease(&agents);
    let sampler = Sampler::start(&lab, &name);
    let watchdog = nix::unistd::Pid::from_raw(dogs.pid(0).expect("h0's watchdog") as i32);
    for round in 0..6 {
        // The agent alone, then agent and watchdog together (as a host-wide stall would freeze both).
        signal(&agents, 0, nix::sys::signal::Signal::SIGSTOP);
        if round % 2 == 1 {
            nix::sys::signal::kill(watchdog, nix::sys::signal::Signal::SIGSTOP).unwrap();
        }
        std::thread::sleep(HALF_BLIP);
        let _ = nix::sys::signal::kill(watchdog, nix::sys::signal::Signal::SIGCONT);
        signal(&agents, 0, nix::sys::signal::Signal::SIGCONT);
        settle(&agents, healthy);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn killing_the_owners_agent_and_watchdog_leaves_the_keeper_to_fence_before_the_takeover() {
    if skip_unless_root("killing_the_owners_agent_and_watchdog_leaves_the_keeper_to_fence_before_the_takeover") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "tw", "");
    let sampler = Sampler::start(&lab, &name);
    // An OOM kill or an operator's mistake: the host's control processes die, the vserver lives on, its link
    // stays up (so its old address would still answer beside the new owner's).
    agents.kill9(0);
    dogs.kill9(0);
    assert!(lab.hosts[0].runs(&name), "the vserver outlives its agent and watchdog, for now");
    let back = wait_page(&lab, addr, "synced", Duration::from_secs(30));
    assert!(back.is_some(), "taken over; h1:\n{}", agents.log(1));
    let seen = sampler.finish();
    assert_one_copy(&seen, &agents);
    assert!(!lab.hosts[0].runs(&name), "its keeper fenced it on h0");
    let ending = std::fs::read_to_string(lab.hosts[0].run_dir.join(format!("{name}.exit"))).unwrap_or_default();
    assert!(ending.contains("fenced"), "the keeper recorded a fence: {ending}");
    assert!(lab.hosts[1].runs(&name));
}

#[test]
fn fences_are_not_crashes_they_are_counted_apart_and_never_end_in_error() {
    if skip_unless_root("fences_are_not_crashes_they_are_counted_apart_and_never_end_in_error") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    // Lease fencing without takeover: a cut longer than the lease fences the owner, and nothing moves, so
    // the same vserver is fenced again and again on the same host (the lab allows 3 restarts).
    let extra = "[takeover]\nenabled = false\n[fencing]\nquorum = true\nwatchdog = true\n";
    let (agents, _dogs, name, addr) = synced_on_h0(&lab, "tf", extra);
    let vs = |agents: &Agents| {
        agents.status(0).ok().and_then(|s| s["vservers"].as_array()?.iter().find(|v| v["name"] == name).cloned())
    };
    for round in 1..=4u64 {
        lab.set_link(0, false).unwrap();
        let fenced = wait_for(PATIENCE, || !lab.hosts[0].runs(&name));
        assert!(fenced.is_some(), "round {round}: fenced; log:\n{}", agents.log(0));
        lab.set_link(0, true).unwrap();
        let back = wait_for(PATIENCE, || {
            lab.hosts[0].runs(&name) && vs(&agents).is_some_and(|v| v["fences"].as_u64() == Some(round))
        });
        assert!(back.is_some(), "round {round}: started again and counted: {:?}\nlog:\n{}", vs(&agents), agents.log(0));
    }
    assert!(wait_page(&lab, addr, "unsynced", PATIENCE).is_some(), "it serves again, from h0");
    let v = vs(&agents).unwrap();
    assert_eq!(v["state"], "running", "never in error: {v}");
    assert_eq!(v["restarts"], 0, "a fence is not a crash: {v}");
    // Four fences caused; a busy machine that starves h0 past its lease adds one more, counted alike.
    let fences = v["fences"].as_u64().unwrap();
    assert!(fences >= 4, "{v}");
    assert_eq!(v["fenced_unix_ms"].as_array().map(|a| a.len() as u64), Some(fences), "{v}");
    let metrics = agents.get(0, 0, "/metrics").unwrap().body;
    assert!(metrics.contains(&format!("vserver_fences{{vserver=\"{name}\"}} {fences}")), "{metrics}");
}

#[test]
fn a_slow_lossy_link_moves_nothing_and_keeps_a_coordinator() {
    if skip_unless_root("a_slow_lossy_link_moves_nothing_and_keeps_a_coordinator") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, _dogs, name, _addr) = synced_on_h0(&lab, "ts", "");
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    {
        // 200 ms each way (400 ms round trips) and 20% of the frames lost each way, on every host's link.
        let _links: Vec<_> = (0..3).map(|i| lab.delay_with_loss(i, Duration::from_millis(200), 20).unwrap()).collect();
        std::thread::sleep(Duration::from_secs(30));
        // The cluster still has a coordinator, and it can commit (a takeover could happen if one were due).
        let led = wait_for(PATIENCE, || (0..3).any(|i| leader(&agents, i).is_some()));
        assert!(led.is_some(), "a coordinator through the slow link; h1:\n{}", agents.log(1));
    }
    assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
}

#[test]
fn a_cluster_set_up_in_the_readmes_order_with_a_late_primary_fences_nothing() {
    if skip_unless_root("a_cluster_set_up_in_the_readmes_order_with_a_late_primary_fences_nothing") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let _dogs = Watchdogs::start(&lab).unwrap();
    // cluster.toml first, then the agents, the primary's last, and only then the vserver is built.
    let name = vserver_lab::unique("tr");
    let addr = lab.free_addr(0);
    let cluster = format!("[vservers.{name}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\ninterval_secs = 3600\n");
    let mut agents = Agents::prepare_each(&lab, crate::FAST, Some(&cluster), |_| String::new()).unwrap();
    agents.spawn(1).unwrap();
    agents.spawn(2).unwrap();
    // h0 has never run: the coordinator finds it dead, with tr placed on it, and the voters promise not to
    // acknowledge it for a while. h0 then comes, knowing no membership yet: it holds no lease until the promise
    // is over, and must start nothing before (it used to take "no membership known" for "no cluster").
    let confirmed = wait_for(PATIENCE, || (1..3).any(|i| agents.log(i).contains("host dead")));
    assert!(confirmed.is_some(), "h0 confirmed dead before it came; h1:\n{}\nh2:\n{}", agents.log(1), agents.log(2));
    agents.spawn(0).unwrap();
    assert!(wait_for(PATIENCE, || crate::all_alive(&agents, 3)).is_some(), "log h0:\n{}", agents.log(0));
    assert!(agents.running(0), "the primary's agent runs without the vserver's conf yet:\n{}", agents.log(0));
    assert!(agents.log(0).contains("is not in"), "it warns that the vserver is not built yet:\n{}", agents.log(0));
    let out = vserver(&lab, 0, &[&name, "build", "--busybox", "--iproot", &format!("eth0:{addr}/24")], true);
    assert!(out.status.success(), "{}", text(&out));
    vserver_lab::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(&name), "tr").unwrap();
    let started = wait_for(PATIENCE, || vserver(&lab, 0, &[&name, "start"], false).status.success());
    assert!(started.is_some(), "started through the agent; log:\n{}", agents.log(0));
    assert!(lab.client.wait_http(addr, 80, Instant::now() + PATIENCE).is_some());
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "replicated once built: {}", text(&out));
    let sampler = Sampler::start(&lab, &name);
    std::thread::sleep(Duration::from_secs(3));
    let seen = sampler.finish();
    assert_eq!(
        seen.changes.len(),
        1,
        "it never stopped: {:?}\nexit: {:?}\nlease: {:?}\nh0:\n{}",
        seen.changes,
        std::fs::read_to_string(lab.hosts[0].run_dir.join(format!("{name}.exit"))),
        std::fs::read_to_string(lab.hosts[0].run_dir.join("lease")),
        agents.log(0)
    );
    assert!(!agents.log(0).contains("lease lost"), "no fence was needed: {}", agents.log(0));
}

/// A fault of the owner's control processes (its agent and its watchdog), the vserver's own processes
/// untouched and its link up.
#[derive(Clone, Copy, Debug)]
enum ControlFault {
    /// The watchdog killed (-9) alone: nothing may stop or move.
    WatchdogKilled,
    /// The agent frozen past the takeover timeout, the watchdog killed: the keeper fences first.
    AgentFrozenWatchdogKilled,
    /// Both frozen past the takeover timeout: the keeper fences first.
    BothFrozen,
}

fn control_fault(prefix: &str, conf_extra: &str, fault: ControlFault) {
    let lab = Lab::new(3).unwrap();
    let (agents, mut dogs, name, addr) = synced_on_h0(&lab, prefix, "");
    if !conf_extra.is_empty() {
        // Applies from the next start: restart it with its new conf through the agent.
        let conf = lab.hosts[0].conf_dir.join(format!("{name}.conf"));
        let was = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("{was}{conf_extra}")).unwrap();
        let out = vserver(&lab, 0, &[&name, "restart"], false);
        assert!(out.status.success(), "{}", text(&out));
    }
    let epoch = owner(&agents, 1, &name).unwrap().1;
    let sampler = Sampler::start(&lab, &name);
    let watchdog = nix::unistd::Pid::from_raw(dogs.pid(0).unwrap() as i32);
    match fault {
        ControlFault::WatchdogKilled => {
            dogs.kill9(0);
            std::thread::sleep(Duration::from_secs(5));
            assert_nothing_moved(&lab, &agents, &name, sampler, epoch);
            return;
        }
        ControlFault::AgentFrozenWatchdogKilled => {
            dogs.kill9(0);
            signal(&agents, 0, nix::sys::signal::Signal::SIGSTOP);
        }
        ControlFault::BothFrozen => {
            nix::sys::signal::kill(watchdog, nix::sys::signal::Signal::SIGSTOP).unwrap();
            signal(&agents, 0, nix::sys::signal::Signal::SIGSTOP);
        }
    }
    let back = wait_page(&lab, addr, "synced", Duration::from_secs(30));
    assert!(back.is_some(), "{fault:?}: taken over; h1:\n{}", agents.log(1));
    let seen = sampler.finish();
    assert_one_copy(&seen, &agents);
    assert!(!lab.hosts[0].runs(&name), "{fault:?}: fenced on h0");
    let ending = std::fs::read_to_string(lab.hosts[0].run_dir.join(format!("{name}.exit"))).unwrap_or_default();
    assert!(ending.contains("fenced"), "{fault:?}: its keeper fenced it: {ending}");
    let _ = nix::sys::signal::kill(watchdog, nix::sys::signal::Signal::SIGCONT);
    signal(&agents, 0, nix::sys::signal::Signal::SIGCONT);
}

#[test]
fn the_watchdog_killed_alone_stops_nothing() {
    if skip_unless_root("the_watchdog_killed_alone_stops_nothing") {
        return;
    }
    control_fault("tq", "", ControlFault::WatchdogKilled);
}

#[test]
fn an_agent_frozen_with_its_watchdog_dead_leaves_the_keeper_to_fence() {
    if skip_unless_root("an_agent_frozen_with_its_watchdog_dead_leaves_the_keeper_to_fence") {
        return;
    }
    control_fault("tj", "", ControlFault::AgentFrozenWatchdogKilled);
}

#[test]
fn agent_and_watchdog_frozen_with_the_vservers_own_init_leave_the_keeper_to_fence() {
    if skip_unless_root("agent_and_watchdog_frozen_with_the_vservers_own_init_leave_the_keeper_to_fence") {
        return;
    }
    // The vserver's own init (fakeinit) as process 1: root inside runs its own process 1, and still cannot
    // reach the keeper, which lives outside its PID namespace.
    control_fault("ti", "S_FLAGS=fakeinit\n", ControlFault::BothFrozen);
}
