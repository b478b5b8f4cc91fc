//! Root tests of the lab itself: its network, its probes, and that it leaves nothing behind.
//! Each test skips, saying why, unless run as root with iproute2 (CI runs them as root).

mod cleanup;
mod network;
mod probes;

use std::process::Command;

/// Names of the network namespaces that exist now (`ip netns list`).
fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
