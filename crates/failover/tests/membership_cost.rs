//! What a voter's membership costs for each host it watches, as the cluster grows: every round (ten a second
//! at the default timing) a voter sends each watched host a beacon and takes in each one's beacon with its
//! ack. The work per host should not grow with the number of hosts, or a voter of a large cluster pays for
//! the cluster's size once per host.
//!
//! `cargo test --release -p failover --test membership_cost -- --ignored --nocapture` prints, for 8 to 1,000
//! watched hosts, the time per host of a round (a beacon sent, one received with its ack, and the round's
//! judgment of every peer) and its ratio to the same at 8 hosts.

use std::time::{Duration, Instant};

use failover::membership::{sign_body, Membership, MembershipConfig};
use failover::wire::{Ack, Beacon, PeerState, SignedHeartbeat};

const SECRET: &str = "a cluster secret of the measurement";

/// Host names as a real cluster has them: one prefix, a number.
fn name(i: usize) -> String {
    format!("vs-prod-fra1-{i:04}")
}

/// The beacon `from` sends in round `round`, acknowledging `ack_seq` of `to`.
fn beacon(from: &str, round: u64, to: &str, ack_seq: u64) -> Vec<u8> {
    let acks = vec![Ack { node: to.to_string(), incarnation: 1, seq: ack_seq }];
    let body = serde_json::to_string(&Beacon { node: from.to_string(), incarnation: 1, seq: round + 1, acks }).unwrap();
    serde_json::to_vec(&SignedHeartbeat { signature: sign_body(SECRET, &body), body }).unwrap()
}

/// A voter watching `hosts` peers for `rounds` rounds: the time per host and round of the sending, of the
/// receiving, and of the round's judgment.
fn measure(hosts: usize, rounds: u64) -> (Duration, Duration, Duration) {
    let me = "vs-prod-fra1-voter";
    let peers: Vec<String> = (0..hosts).map(name).collect();
    let m = Membership::new(MembershipConfig {
        node: me.to_string(),
        peers: peers.iter().map(|p| (p.clone(), format!("https://{p}:7070"))).collect(),
        secret: SECRET.to_string(),
        incarnation: 1,
        suspect_after: Duration::from_millis(750),
        dead_after: Duration::from_millis(1500),
        lease_len: Duration::from_secs(60),
    });
    // Each peer's beacon of each round, acknowledging the beacon this voter sent it in that round (its
    // numbers go one per beacon, in the peers' order).
    let datagrams: Vec<Vec<Vec<u8>>> = (0..rounds)
        .map(|r| (0..hosts).map(|i| beacon(&peers[i], r, me, r * hosts as u64 + i as u64 + 1)).collect())
        .collect();
    let (mut sending, mut receiving, mut judging) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in &datagrams {
        let started = Instant::now();
        for p in &peers {
            std::hint::black_box(m.next_beacon(p));
        }
        sending += started.elapsed();
        let started = Instant::now();
        for d in round {
            assert_eq!(m.receive_beacon(d), Ok(true));
        }
        receiving += started.elapsed();
        let started = Instant::now();
        m.tick();
        judging += started.elapsed();
    }
    // The work measured was the real one: every peer alive, and every one vouching for this voter.
    assert!(m.peers().iter().all(|p| p.state == PeerState::Alive));
    assert_eq!(m.lease(tokio::time::Instant::now()).len(), hosts, "every peer's ack was taken");
    let per = |d: Duration| d / (rounds as u32 * hosts as u32);
    (per(sending), per(receiving), per(judging))
}

#[test]
#[ignore = "a measurement: prints a voter's membership work per host at 8 to 1,000 hosts"]
fn a_voters_membership_work_per_host_does_not_grow_with_the_cluster() {
    let sizes = [8usize, 64, 128, 512, 1000];
    // About 40,000 beacons each way at every size, five times; the fastest of the five.
    let best = |hosts: usize| {
        let rounds = (40_000 / hosts) as u64;
        (0..5).map(|_| measure(hosts, rounds)).min_by_key(|(s, r, j)| *s + *r + *j).unwrap()
    };
    let base = best(8);
    let total = |(s, r, j): (Duration, Duration, Duration)| (s + r + j).as_nanos() as f64;
    println!("hosts  sent (ns/host)  received (ns/host)  judged (ns/host)  round per host (ns)  ratio to 8 hosts");
    for hosts in sizes {
        let got = if hosts == 8 { base } else { best(hosts) };
        println!(
            "{hosts:>5}  {:>14}  {:>18}  {:>16}  {:>19}  {:>16.2}",
            got.0.as_nanos(),
            got.1.as_nanos(),
            got.2.as_nanos(),
            total(got) as u64,
            total(got) / total(base)
        );
    }
}
