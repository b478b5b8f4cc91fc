//! Scenarios: address hygiene. After a takeover or a migrate the new owner announces the vserver's address
//! by `[announce] count` gratuitous ARPs, and once more on `vserver NAME announce`, as the client's namespace
//! sees them on the wire; asked on a host that does not run the vserver, the announcement is its owner's.

use std::time::Duration;

use vserver_lab::agents::{wait_for, Agents};
use vserver_lab::{skip_unless_root, Lab};

use crate::takeover::{synced_on_h0, wait_page};
use crate::{placed_on_h0, text, vserver, PATIENCE};

/// The agents' `[announce]` in these scenarios.
const COUNT: usize = 3;
const INTERVAL_MS: u64 = 300;

fn announce_toml() -> String {
    format!("[announce]\ncount = {COUNT}\ninterval_ms = {INTERVAL_MS}\n")
}

/// Once the series is over (nothing more comes from it), `vserver NAME announce` on `owner` sends one more;
/// asked on a host that does not run it, through the command or the API, the request goes to `owner`, which
/// sends one more again.
fn one_more_on_command(lab: &Lab, agents: &Agents, watch: &vserver_lab::arp::ArpWatch, name: &str, owner: usize) {
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * COUNT as u64 + 500));
    let before = watch.count();
    let out = vserver(lab, owner, &[name, "announce"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("announced eth0:"), "{}", text(&out));
    assert!(wait_for(PATIENCE, || watch.count() > before).is_some(), "one more after the command: {}", watch.count());

    let other = (owner + 1) % 3;
    let before = watch.count();
    let out = vserver(lab, other, &[name, "announce"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("forwarded to h{owner}")), "{}", text(&out));
    assert!(wait_for(PATIENCE, || watch.count() > before).is_some(), "one more through h{other}: {}", watch.count());
    let reply =
        agents.request(other, other, "POST", &format!("/v1/vservers/{name}/announce"), Some(agents.secret()), None);
    let reply = reply.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("announced"), "{}", reply.body);
}

#[test]
fn a_taken_over_vserver_is_announced_count_times_and_on_command() {
    if skip_unless_root("a_taken_over_vserver_is_announced_count_times_and_on_command") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (mut agents, mut dogs, name, addr) = synced_on_h0(&lab, "an", &announce_toml());
    let watch = lab.watch_arp(addr).unwrap();

    agents.kill9(0);
    dogs.kill9(0);
    lab.hosts[0].kill_vservers();
    lab.set_link(0, false).unwrap();
    assert!(wait_page(&lab, addr, "synced", Duration::from_secs(30)).is_some(), "taken over; h1:\n{}", agents.log(1));
    let all = wait_for(PATIENCE, || watch.count() >= COUNT);
    assert!(all.is_some(), "{} of {COUNT} announcements arrived; h1:\n{}", watch.count(), agents.log(1));
    one_more_on_command(&lab, &agents, &watch, &name, 1);
}

#[test]
fn a_migrated_vserver_is_announced_count_times_and_on_command() {
    if skip_unless_root("a_migrated_vserver_is_announced_count_times_and_on_command") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (agents, name, addr) = placed_on_h0(&lab, "am", &announce_toml(), true);
    let out = vserver(&lab, 0, &[&name, "sync"], false);
    assert!(out.status.success(), "{}", text(&out));
    let watch = lab.watch_arp(addr).unwrap();
    let out = vserver(&lab, 0, &[&name, "migrate", "h1"], false);
    assert!(out.status.success(), "{}\nlog h0:\n{}", text(&out), agents.log(0));
    let all = wait_for(PATIENCE, || watch.count() >= COUNT);
    assert!(all.is_some(), "{} of {COUNT} announcements arrived; h1:\n{}", watch.count(), agents.log(1));
    one_more_on_command(&lab, &agents, &watch, &name, 1);
}
