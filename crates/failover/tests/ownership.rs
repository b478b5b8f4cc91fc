//! The ownership table across real hosts: each node is an `Ownership` with its own data directory, serving
//! its routes on its own 127.0.0.1 port, talking to the others over HTTP. Ports are taken from the kernel
//! (port 0) and directories from tempfile, so tests run in parallel; servers and Raft tasks end with the
//! test's runtime and the directories with their guard, even when a test fails.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failover::ownership::{voters_for, Member, Ownership, OwnershipConfig, OwnershipError, Timing};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "test-secret";
/// Generous: the machine is shared and noisy; nothing here asserts a duration.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns Some or `PATIENCE` runs out.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One running host: its Raft and the HTTP server in front of it.
struct Node {
    ownership: Ownership,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Node {
    /// Stops the server and Raft, as a crash would, keeping the data directory.
    async fn stop(mut self) {
        self.ownership.shutdown().await.expect("shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.server).await.is_err() {
            self.server.abort();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A cluster of hosts `h1..hN` with node ids 1..N.
struct Cluster {
    dir: TempDir,
    members: Vec<Member>,
    timing: Timing,
    nodes: Vec<Option<Node>>,
    /// Every Raft append each host received: (host id, the request as JSON).
    appends: Arc<Mutex<Vec<(usize, serde_json::Value)>>>,
}

impl Cluster {
    async fn start(n: usize, timing: Timing) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        let mut members = Vec::new();
        for i in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            members.push(Member { id: i as u64, name: format!("h{i}"), url: format!("http://{addr}") });
            listeners.push(listener);
        }
        let mut cluster = Cluster { dir, members, timing, nodes: Vec::new(), appends: Arc::default() };
        for (i, listener) in listeners.into_iter().enumerate() {
            let node = cluster.open(i + 1, listener).await;
            cluster.nodes.push(Some(node));
        }
        let inits: Vec<_> = cluster.running().map(|n| n.ownership.clone()).collect();
        let handles: Vec<_> =
            inits.into_iter().map(|o| tokio::spawn(async move { o.initialize_if_first().await })).collect();
        let mut formed = 0;
        for h in handles {
            if h.await.expect("join").expect("initialize_if_first") {
                formed += 1;
            }
        }
        assert!(formed >= 1, "some voter must form the cluster");
        cluster
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("h{id}"))
    }

    fn addr(&self, id: usize) -> SocketAddr {
        self.members[id - 1].url.trim_start_matches("http://").parse().expect("addr")
    }

    async fn open(&self, id: usize, listener: TcpListener) -> Node {
        let mut config = OwnershipConfig::new(id as u64, self.data_dir(id), self.members.clone(), SECRET);
        config.timing = self.timing.clone();
        let ownership = Ownership::open(config).await.expect("open");
        let appends = self.appends.clone();
        let app = failover::ownership::http::router(ownership.clone()).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let appends = appends.clone();
                async move {
                    if request.uri().path() != "/v1/raft/append" {
                        return next.run(request).await;
                    }
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the request's body");
                    if let Ok(json) = serde_json::from_slice(&bytes) {
                        appends.lock().unwrap().push((id, json));
                    }
                    next.run(axum::extract::Request::from_parts(parts, bytes.into())).await
                }
            },
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Node { ownership, stop: Some(stop), server }
    }

    /// Opens host `id`'s data directory without serving its routes.
    async fn open_offline(&self, id: usize) -> Ownership {
        let mut config = OwnershipConfig::new(id as u64, self.data_dir(id), self.members.clone(), SECRET);
        config.timing = self.timing.clone();
        Ownership::open(config).await.expect("open offline")
    }

    /// Opens host `id` again on its data directory and port.
    async fn restart(&mut self, id: usize) {
        let addr = self.addr(id);
        let listener =
            eventually("the old port to be free", || async move { TcpListener::bind(addr).await.ok() }).await;
        let node = self.open(id, listener).await;
        self.nodes[id - 1] = Some(node);
    }

    async fn stop(&mut self, id: usize) {
        if let Some(node) = self.nodes[id - 1].take() {
            node.stop().await;
        }
    }

    fn node(&self, id: usize) -> &Ownership {
        &self.nodes[id - 1].as_ref().expect("node is running").ownership
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Waits until every running host names the same leader, and returns its id.
    async fn agreed_leader(&self) -> usize {
        eventually("all running hosts to agree on a leader", || async {
            let leaders: Vec<Option<String>> = self.running().map(|n| n.ownership.leader()).collect();
            let first = leaders.first()?.clone()?;
            let leader_running = self.running().any(|n| n.ownership.host() == first && n.ownership.is_leader());
            (leaders.iter().all(|l| l.as_deref() == Some(first.as_str())) && leader_running)
                .then(|| first.trim_start_matches('h').parse().expect("host name"))
        })
        .await
    }

    /// Waits until every running host has applied `vserver` at (owner, epoch).
    async fn converged(&self, vserver: &str, expected: (&str, u64)) {
        eventually(&format!("all hosts to show {vserver} at {expected:?}"), || async {
            self.running()
                .all(|n| n.ownership.owner(vserver) == Some((expected.0.to_string(), expected.1)))
                .then_some(())
        })
        .await
    }

    async fn shutdown(mut self) {
        for id in 1..=self.nodes.len() {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_elect_a_leader_and_agree_on_every_change() {
    let cluster = Cluster::start(3, Timing::default()).await;
    let leader = cluster.agreed_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };

    // A follower's write is forwarded to the leader and committed before the call returns.
    let made = cluster.node(follower).set_owner("web", "h3", 0).await.expect("set_owner on a follower");
    assert_eq!(made, ("h3".to_string(), 1));
    cluster.converged("web", ("h3", 1)).await;
    let moved = cluster.node(leader).set_owner("web", "h1", 1).await.expect("set_owner on the leader");
    assert_eq!(moved, ("h1".to_string(), 2));
    cluster.converged("web", ("h1", 2)).await;
    cluster.node(leader).set_owner("db", "h1", 0).await.expect("db on h1");
    cluster.node(leader).set_owner("mx", "h2", 0).await.expect("mx on h2");
    cluster.converged("mx", ("h2", 1)).await;
    // What the coordinator asks of a silent host: its vservers alone, by name.
    for n in cluster.running() {
        let owned = |host| n.ownership.owned_by(host);
        assert_eq!(owned("h1"), [("db".to_string(), 1), ("web".to_string(), 2)]);
        assert_eq!(owned("h2"), [("mx".to_string(), 1)]);
        assert!(owned("h3").is_empty());
    }

    // An old epoch is refused and changes nothing, anywhere.
    let stale = cluster.node(follower).set_owner("web", "h2", 1).await.expect_err("stale epoch");
    assert!(
        matches!(&stale, OwnershipError::StaleEpoch { current: 2, owner: Some(o), .. } if o == "h1"),
        "unexpected: {stale}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.converged("web", ("h1", 2)).await;

    // Bad names are refused before anything is proposed.
    let bad = cluster.node(leader).set_owner("../etc", "h1", 2).await.expect_err("bad vserver name");
    assert!(matches!(bad, OwnershipError::InvalidName { what: "vserver name", .. }), "unexpected: {bad}");
    let unknown = cluster.node(leader).set_owner("web", "h9", 2).await.expect_err("unknown host");
    assert!(matches!(unknown, OwnershipError::UnknownHost { .. }), "unexpected: {unknown}");

    // Clear keeps the epoch growing, events are replicated, and every table is the same.
    assert_eq!(cluster.node(follower).clear("web", 2).await.expect("clear"), 3);
    let seq = cluster.node(follower).log_event("web cleared for a test").await.expect("event");
    assert_eq!(seq, 1);
    eventually("every host to apply the clear and the event", || async {
        cluster.running().all(|n| n.ownership.epoch("web") == 3 && n.ownership.events().len() == 1).then_some(())
    })
    .await;
    let tables: Vec<_> = cluster.running().map(|n| n.ownership.table()).collect();
    assert!(tables.windows(2).all(|w| w[0] == w[1]), "tables differ: {tables:?}");
    let m = cluster.node(leader).metrics();
    assert_eq!(m.voters, ["h1", "h2", "h3"]);
    assert!(m.learners.is_empty());
    assert_eq!(m.leader.as_deref(), Some(format!("h{leader}").as_str()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_recovers_its_table_and_catches_up() {
    let mut cluster = Cluster::start(3, Timing::default()).await;
    let leader = cluster.agreed_leader().await;
    let down = if leader == 3 { 2 } else { 3 };
    cluster.node(leader).set_owner("db", "h1", 0).await.expect("first write");
    cluster.converged("db", ("h1", 1)).await;

    cluster.stop(down).await;
    cluster.node(leader).set_owner("db", "h2", 1).await.expect("write while a host is down");
    cluster.node(leader).set_owner("mail", "h1", 0).await.expect("another write while a host is down");

    // Opened from its directory alone, with no server (so no peer can reach it), it rebuilds the table
    // from its own log: what was committed before it stopped, and nothing it never received.
    let offline = cluster.open_offline(down).await;
    eventually("the reopened host to replay its log", || async { (offline.epoch("db") == 1).then_some(()) }).await;
    assert_eq!(offline.owner("db"), Some(("h1".to_string(), 1)));
    assert_eq!(offline.owner("mail"), None);
    offline.shutdown().await.expect("shutdown");
    drop(offline);

    // Served again on its port, it gets from the leader what it missed.
    cluster.restart(down).await;
    cluster.converged("db", ("h2", 2)).await;
    cluster.converged("mail", ("h1", 1)).await;
    cluster.node(down).set_owner("db", "h3", 2).await.expect("write through the restarted host");
    cluster.converged("db", ("h3", 3)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_missed_purged_entries_catches_up_from_a_snapshot() {
    let timing = Timing { snapshot_every: 3, logs_kept_after_snapshot: 0, ..Timing::default() };
    let mut cluster = Cluster::start(3, timing).await;
    let leader = cluster.agreed_leader().await;
    let down = if leader == 1 { 2 } else { 1 };
    cluster.stop(down).await;
    for epoch in 0..8 {
        let owner = if epoch % 2 == 0 { "h1" } else { "h2" };
        cluster.node(leader).set_owner("web", owner, epoch).await.expect("write while a host is down");
    }
    // Eight changes, a snapshot every three entries, nothing kept behind it: what the stopped host
    // misses is no longer in the leader's log.
    eventually("the leader to purge its log behind a snapshot", || async {
        let m = cluster.node(leader).metrics();
        (m.snapshot_index >= Some(6) && m.purged_index >= Some(6)).then_some(())
    })
    .await;
    cluster.restart(down).await;
    cluster.converged("web", ("h2", 8)).await;
    let m = eventually("the returning host to record the snapshot it installed", || async {
        let m = cluster.node(down).metrics();
        m.snapshot_index.is_some().then_some(m)
    })
    .await;
    assert!(m.snapshot_index >= Some(6), "{m:?}");
    // The snapshot it received is on its disk: restarted once more, it still has the table.
    cluster.stop(down).await;
    cluster.restart(down).await;
    eventually("the snapshot to survive a restart", || async { (cluster.node(down).epoch("web") == 8).then_some(()) })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stops_the_others_elect_a_new_one_and_a_lone_survivor_commits_nothing() {
    let timing = Timing { propose_timeout_ms: 2000, ..Timing::default() };
    let mut cluster = Cluster::start(3, timing).await;
    let old = cluster.agreed_leader().await;
    cluster.node(old).set_owner("web", &format!("h{old}"), 0).await.expect("first write");

    cluster.stop(old).await;
    let new = cluster.agreed_leader().await;
    assert_ne!(new, old, "a stopped host cannot lead");
    let survivor = (1..=3).find(|&i| i != old && i != new).expect("a third host");
    let written = cluster.node(survivor).set_owner("web", &format!("h{new}"), 1).await.expect("write after failover");
    assert_eq!(written.1, 2);
    cluster.converged("web", (&format!("h{new}"), 2)).await;

    // Alone, a host cannot reach a majority: the write is refused with a clear error, and nothing changes.
    cluster.stop(new).await;
    let err = cluster.node(survivor).set_owner("web", &format!("h{survivor}"), 2).await.expect_err("no majority");
    assert!(matches!(err, OwnershipError::NotCommitted { .. }), "unexpected: {err}");
    assert!(err.to_string().contains("no majority"), "message: {err}");
    assert_eq!(cluster.node(survivor).owner("web"), Some((format!("h{new}"), 2)));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_secret_are_refused() {
    let cluster = Cluster::start(1, Timing::default()).await;
    cluster.agreed_leader().await;
    let base = cluster.members[0].url.clone();
    let client = reqwest::Client::new();
    let vote = format!("{base}/v1/raft/vote");

    let none = client.post(&vote).body("{}").send().await.expect("send");
    assert_eq!(none.status(), 401);
    let wrong = client.post(&vote).bearer_auth("not-the-secret").body("{}").send().await.expect("send");
    assert_eq!(wrong.status(), 401);
    for route in ["append", "snapshot", "propose"] {
        let r = client.post(format!("{base}/v1/raft/{route}")).send().await.expect("send");
        assert_eq!(r.status(), 401, "{route}");
    }
    let metrics = client.get(format!("{base}/v1/raft/metrics")).send().await.expect("send");
    assert_eq!(metrics.status(), 401);

    // With the secret: malformed JSON is a 400 that says so; another node's RPC is a 409.
    let malformed = client.post(&vote).bearer_auth(SECRET).body("{not json").send().await.expect("send");
    assert_eq!(malformed.status(), 400);
    assert!(malformed.text().await.expect("body").contains("malformed JSON"));
    let elsewhere =
        client.post(&vote).bearer_auth(SECRET).header("x-raft-target", "7").body("{}").send().await.expect("send");
    assert_eq!(elsewhere.status(), 409);
    let bad_command = client
        .post(format!("{base}/v1/raft/propose"))
        .bearer_auth(SECRET)
        .body(r#"{"op":"set_owner","vserver":"a/b","owner":"h1","expected_epoch":0}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(bad_command.status(), 400);
    let ok = client.get(format!("{base}/v1/raft/metrics")).bearer_auth(SECRET).send().await.expect("send");
    assert_eq!(ok.status(), 200);

    // Nothing of the above reached the table; a single host is its own majority.
    assert!(cluster.node(1).table().is_empty());
    assert_eq!(cluster.node(1).set_owner("web", "h1", 0).await.expect("write"), ("h1".to_string(), 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hosts_run_three_voters_and_a_learner_that_gets_the_table() {
    let cluster = Cluster::start(4, Timing::default()).await;
    let leader = cluster.agreed_leader().await;
    let m = eventually("the leader to add the fourth host as a learner", || async {
        let m = cluster.node(leader).metrics();
        (m.learners.len() == 1).then_some(m)
    })
    .await;
    assert_eq!(m.voters, ["h1", "h2", "h3"]);
    assert_eq!(m.learners, ["h4"]);
    cluster.node(4).set_owner("web", "h4", 0).await.expect("write through the learner");
    cluster.converged("web", ("h4", 1)).await;
    cluster.shutdown().await;
}

/// A learner cannot apply an entry before it is committed: the leader sends it this term's new entries once
/// they are committed, with their commit, in one request. The voters' copies, which decide the commit, do not
/// wait for the learners', and the learner needs no second request to learn the commit. (A commit slower than
/// three eighths of the heartbeat interval would send them as before, uncommitted: the long heartbeat here
/// leaves a busy machine 1.5 s for each.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_gets_new_entries_once_committed_with_their_commit() {
    let timing = Timing { heartbeat_ms: 4000, election_min_ms: 8000, election_max_ms: 10000, ..Timing::default() };
    let cluster = Cluster::start(4, timing).await;
    let leader = cluster.agreed_leader().await;
    eventually("h4 to be a learner", || async { (cluster.node(leader).metrics().learners == ["h4"]).then_some(()) })
        .await;
    for vserver in ["a", "b", "c", "d", "e"] {
        cluster.node(leader).set_owner(vserver, "h1", 0).await.expect("write");
        cluster.converged(vserver, ("h1", 1)).await;
    }
    let appends = cluster.appends.lock().unwrap().clone();
    let index = |v: &serde_json::Value| v["index"].as_u64();
    // Each append that carried entries to host `to`: the number of its last entry, and the commit it told.
    let carried = |to: usize| -> Vec<(Option<u64>, Option<u64>)> {
        appends
            .iter()
            .filter(|(id, _)| *id == to)
            .filter_map(|(_, a)| Some((index(&a["entries"].as_array()?.last()?["log_id"]), index(&a["leader_commit"]))))
            .collect()
    };
    let to_learner = carried(4);
    let last_five: Vec<_> = to_learner.iter().rev().take(5).collect();
    assert_eq!(last_five.len(), 5, "{to_learner:?}");
    for (last, commit) in &last_five {
        assert!(commit >= last, "an append of new entries to the learner without their commit: {to_learner:?}");
    }
    // And no request of its own to tell it a commit: each change took one request, not two.
    let mut told = None;
    for (_, a) in appends.iter().filter(|(id, _)| *id == 4) {
        let commit = index(&a["leader_commit"]);
        let empty = a["entries"].as_array().is_none_or(|e| e.is_empty());
        assert!(!(empty && commit > told), "a request to the learner only to tell it a commit: {a}");
        told = told.max(commit);
    }
    // A voter's copy goes before the commit, as always: the commit needs it.
    let voter = if leader == 1 { 2 } else { 1 };
    assert!(carried(voter).iter().any(|(last, commit)| commit < last), "{:?}", carried(voter));
    cluster.shutdown().await;
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn one_or_two_hosts_all_vote() {
    assert_eq!(voters_for(&[]), (vec![], vec![]));
    assert_eq!(voters_for(&names(&["a"])), (names(&["a"]), vec![]));
    assert_eq!(voters_for(&names(&["b", "a"])), (names(&["a", "b"]), vec![]));
}

#[test]
fn three_or_four_hosts_have_three_voters() {
    assert_eq!(voters_for(&names(&["c", "a", "b"])), (names(&["a", "b", "c"]), vec![]));
    assert_eq!(voters_for(&names(&["d", "c", "a", "b"])), (names(&["a", "b", "c"]), names(&["d"])));
}

#[test]
fn five_hosts_or_more_have_five_voters_and_learners() {
    assert_eq!(voters_for(&names(&["e", "d", "c", "b", "a"])).0, names(&["a", "b", "c", "d", "e"]));
    let (voters, learners) = voters_for(&names(&["h", "g", "f", "e", "d", "c", "b", "a"]));
    assert_eq!(voters, names(&["a", "b", "c", "d", "e"]));
    assert_eq!(learners, names(&["f", "g", "h"]));
}

#[test]
fn every_host_computes_the_same_voters_whatever_the_order() {
    let one = voters_for(&names(&["web2", "db1", "web1", "db1", "mx"]));
    let other = voters_for(&names(&["mx", "web1", "db1", "web2"]));
    assert_eq!(one, other);
    assert_eq!(one, (names(&["db1", "mx", "web1"]), names(&["web2"])));
}

/// Waits until host `id` sees these voters.
async fn voters_become(cluster: &Cluster, id: usize, voters: &[&str]) {
    let started = Instant::now();
    while cluster.node(id).metrics().voters != voters {
        let now: Vec<_> = cluster.running().map(|n| n.ownership.metrics()).collect();
        assert!(started.elapsed() < PATIENCE, "gave up waiting for h{id} to see the voters {voters:?}: {now:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_removed_for_good_gives_its_vote_to_a_learner_and_no_host_counts_it_any_more() {
    let mut cluster = Cluster::start(4, Timing::default()).await;
    let leader = cluster.agreed_leader().await;
    voters_become(&cluster, leader, &["h1", "h2", "h3"]).await;
    eventually("h4 to be a learner", || async { (cluster.node(leader).metrics().learners == ["h4"]).then_some(()) })
        .await;
    cluster.node(2).set_owner("web", "h1", 0).await.expect("write");
    cluster.converged("web", ("h1", 1)).await;

    // h1 owns web: refused, nothing changed.
    let refused = cluster.node(2).remove_hosts(&["h1".to_string()]).await.expect_err("h1 owns web");
    assert!(matches!(refused, OwnershipError::HostOwns { .. }), "{refused}");
    assert!(refused.to_string().contains("web"), "{refused}");
    assert!(cluster.node(2).removed().is_empty());
    let itself = cluster.node(2).remove_hosts(&["h2".to_string()]).await.expect_err("not itself");
    assert!(itself.to_string().contains("this host"), "{itself}");

    // A live learner can be removed, and taken back as a freshly joined host would be.
    cluster.node(3).remove_hosts(&["h4".to_string()]).await.expect("h4 removed");
    eventually("h4 to leave the peers", || async { (!cluster.node(1).hosts().contains_key("h4")).then_some(()) }).await;
    let h4_url = cluster.members[3].url.clone();
    cluster.node(3).add_host("h4", &h4_url).await.expect("h4 back");
    eventually("h4 to be a learner again", || async {
        (cluster.node(cluster.agreed_leader().await).metrics().learners == ["h4"]).then_some(())
    })
    .await;

    // Gone for good: web moves, h1 dies; a change that h1 would have to read is refused while it is silent,
    // unless it is h1's own removal. h4, caught up, votes in its place.
    cluster.node(2).set_owner("web", "h2", 1).await.expect("move web");
    cluster.stop(1).await;
    let silent = cluster.node(3).add_host("h4", &h4_url).await.expect_err("h1 is silent");
    assert!(matches!(silent, OwnershipError::HostsUnchangeable { .. }), "{silent}");
    assert!(silent.to_string().contains("h1"), "{silent}");
    cluster.node(3).remove_hosts(&["h1".to_string()]).await.expect("h1 gone");
    for id in [2, 3, 4] {
        voters_become(&cluster, id, &["h2", "h3", "h4"]).await;
    }
    let leader = cluster.agreed_leader().await;
    eventually("h1 to leave the membership", || async {
        (cluster.node(leader).metrics().learners.is_empty()).then_some(())
    })
    .await;
    for id in [2, 3, 4] {
        let hosts: Vec<String> = cluster.node(id).hosts().into_keys().collect();
        assert_eq!(hosts, ["h2", "h3", "h4"], "as h{id} counts them");
    }
    // The three commit without h1.
    cluster.node(4).set_owner("web", "h4", 2).await.expect("write without h1");
    cluster.converged("web", ("h4", 3)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_no_configuration_names_is_taken_in_through_the_table() {
    let cluster = Cluster::start(3, Timing::default()).await;
    cluster.agreed_leader().await;
    cluster.node(1).set_owner("web", "h1", 0).await.expect("write");
    // The newcomer knows the cluster (as `join` tells it); the others' configurations do not name it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let id = failover::ownership::node_id_of("h9");
    let mut members = cluster.members.clone();
    members.push(Member { id, name: "h9".into(), url: url.clone() });
    let mut config = OwnershipConfig::new(id, cluster.dir.path().join("h9"), members, SECRET);
    config.timing = cluster.timing.clone();
    let newcomer = Ownership::open(config).await.expect("open");
    let app = failover::ownership::http::router(newcomer.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    assert!(!newcomer.initialize_if_first().await.expect("init"), "it never forms a cluster of its own");
    let bad = cluster.node(2).add_host("h9", "ftp://x").await.expect_err("bad url");
    assert!(bad.to_string().contains("url"), "{bad}");
    cluster.node(2).add_host("h9", &url).await.expect("taken in");
    eventually("h9 to get the table", || async { (newcomer.owner("web") == Some(("h1".into(), 1))).then_some(()) })
        .await;
    for id in 1..=3 {
        assert_eq!(cluster.node(id).hosts().get("h9"), Some(&url), "h{id} counts h9");
    }
    // openraft's metrics of a node may lag what its state machine applied: on a busy
    // machine the table may show first.
    eventually("h9 to know the voters", || async { (newcomer.metrics().voters == ["h1", "h2", "h3"]).then_some(()) })
        .await;
    assert_eq!(newcomer.voters(), ["h1", "h2", "h3"], "four hosts keep three voters");
    newcomer.shutdown().await.expect("shutdown");
    server.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_majority_forced_into_a_new_cluster_keeps_the_table_and_takes_the_others_back() {
    let timing = Timing { propose_timeout_ms: 2000, ..Timing::default() };
    let mut cluster = Cluster::start(3, timing).await;
    cluster.agreed_leader().await;
    cluster.node(1).set_owner("web", "h3", 0).await.expect("write");
    cluster.converged("web", ("h3", 1)).await;
    cluster.stop(1).await;
    cluster.stop(2).await;
    let stuck = cluster.node(3).set_owner("web", "h3", 1).await.expect_err("no majority");
    assert!(matches!(stuck, OwnershipError::NotCommitted { .. }), "{stuck}");

    // While the agent runs, its files are refused.
    let dir3 = cluster.data_dir(3);
    let busy = failover::ownership::recover::local_state(&dir3).expect_err("in use");
    assert!(busy.to_string().contains("stop the agent"), "{busy}");
    cluster.stop(3).await;
    // (In this process the stopped Raft's tasks let go of the file a moment later; an agent's exit at once.)
    let before = eventually("the stopped node's log to be free", || async {
        failover::ownership::recover::local_state(&dir3).ok()
    })
    .await;
    assert_eq!(before.voters, ["h1", "h2", "h3"]);
    let node = failover::ownership::HostNode { name: "h3".into(), url: cluster.members[2].url.clone() };
    let after = failover::ownership::recover::force_new_cluster(&dir3, 3, node).expect("forced");
    assert_eq!(after.voters, ["h3"]);
    assert!(after.last_log > before.last_log);
    cluster.restart(3).await;
    voters_become(&cluster, 3, &["h3"]).await;
    let written = cluster.node(3).set_owner("web", "h3", 1).await.expect("alone, it commits");
    assert_eq!(written, ("h3".to_string(), 2), "the table was kept");

    // h2 comes back with its copy set aside: it joins as a learner, catches up, and votes again.
    let aside = failover::ownership::recover::set_aside(&cluster.data_dir(2), 1).expect("aside");
    assert!(aside.exists() && !cluster.data_dir(2).exists());
    cluster.restart(2).await;
    cluster.converged("web", ("h3", 2)).await;
    for id in [2, 3] {
        voters_become(&cluster, id, &["h2", "h3"]).await;
    }
    // h1, gone for good, is removed: two hosts, two voters; a write needs both and gets both.
    cluster.node(2).remove_hosts(&["h1".to_string()]).await.expect("h1 removed");
    cluster.node(2).set_owner("web", "h2", 2).await.expect("write by the new majority");
    cluster.converged("web", ("h2", 3)).await;
    cluster.shutdown().await;
}

#[test]
fn voters_are_chosen_again_only_for_hosts_gone_for_good_a_grown_cluster_or_too_many() {
    use failover::ownership::next_voters;
    use std::collections::BTreeSet;
    let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
    let none = set(&[]);
    let next = |v: &BTreeSet<String>, h: &BTreeSet<String>, r: &BTreeSet<String>, c: &BTreeSet<String>| {
        next_voters(v, h, r, c, &none)
    };
    // Nothing to do: a dead voter that is not removed keeps its vote.
    assert_eq!(next(&set(&["a", "b", "c"]), &set(&["a", "b", "c", "d"]), &none, &set(&["d"])), None);
    // A voter removed for good: a caught-up learner takes its place (the first by name).
    assert_eq!(
        next(&set(&["a", "b", "c"]), &set(&["a", "b", "c", "d", "e"]), &set(&["a"]), &set(&["e", "d"])),
        Some(set(&["b", "c", "d"]))
    );
    // No learner caught up: the voters that remain, alone.
    assert_eq!(next(&set(&["a", "b", "c"]), &set(&["a", "b", "c", "d"]), &set(&["a"]), &none), Some(set(&["b", "c"])));
    // Five voters, one removed, four hosts left: three voters (a majority of four is no better).
    assert_eq!(
        next(&set(&["a", "b", "c", "d", "e"]), &set(&["a", "b", "c", "d", "e"]), &set(&["e"]), &none),
        Some(set(&["a", "b", "c"]))
    );
    // A cluster grown from three hosts to five: five voters once the newcomers are caught up.
    let five = set(&["a", "b", "c", "d", "e"]);
    assert_eq!(next(&set(&["a", "b", "c"]), &five, &none, &set(&["d"])), Some(set(&["a", "b", "c", "d"])));
    assert_eq!(next(&set(&["a", "b", "c"]), &five, &none, &set(&["d", "e"])), Some(five.clone()));
    // Too many: the healthy ones stay (a dead voter goes first).
    let healthy = set(&["b", "c", "e"]);
    assert_eq!(
        next_voters(&set(&["a", "b", "c", "d", "e"]), &set(&["a", "b", "c", "d", "e"]), &set(&["d"]), &none, &healthy),
        Some(set(&["b", "c", "e"]))
    );
    // Every voter removed: never an empty set.
    assert_eq!(next(&set(&["a"]), &set(&["a", "b"]), &set(&["a"]), &none), None);
}
