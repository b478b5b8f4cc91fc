//! This host's lease, and the agent's side of the host watchdog (`vserver-watchdog`, see its documentation).
//!
//! The lease: a peer that hears this host's beacon acknowledges it in its own beacons, and so vouches for
//! this host until that beacon's sending plus `fencing.timeout_ms`. This host holds its lease while a
//! majority of the ownership table's voters (itself included, when it votes) vouch for it. A peer vouches
//! at most a lease length after it last heard this host; so once the peers that make a majority have not
//! heard this host for the takeover timeout (the lease length plus the safety margin), this host's lease
//! has been over for at least the margin, whatever the network did between them.
//!
//! With `fencing.quorum`, the agent fences its vservers as soon as its lease ends. With the watchdog, each
//! pet says how long the watchdog may wait for the next one: what is left of the lease, less the time a fence
//! takes ([`super::lease::FENCE_LEAD`]). So a frozen or hung agent is fenced when its lease ends, and a
//! silence shorter than the lease (a network blip, a stall of the host) stops nothing.
//!
//! When the watchdog answers that it fenced the host, the agent restarts none of the vservers it killed until
//! the cluster confirms, by a write through a majority, that this host still owns each one: the ownership
//! table's compare-and-set from the epoch it knows to itself. A vserver the table gives to another host (or
//! whose epoch moved on: someone took it over meanwhile) gets the intent `stopped` here and stays down; its
//! tree is left as it is. Without a majority, the question stays open and the vserver down. Then it arms the
//! watchdog again.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::node::Agent;
use crate::model::Intent;

/// Keeps the watchdog armed and petted, until aborted.
pub async fn run(agent: Arc<Agent>) {
    let timeout = arm_ms(&agent);
    let socket = agent.config.run_dir.join("watchdog.sock");
    let mut warned = false;
    loop {
        match guard(&agent, &socket, timeout).await {
            Ok(()) => {}
            Err(e) if !warned => {
                tracing::error!(socket = %socket.display(), error = %e, "the host watchdog cannot be reached; \
                                this host's vservers are not guarded against a frozen agent");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if warned && UnixStream::connect(&socket).await.is_ok() {
            tracing::info!(socket = %socket.display(), "the host watchdog is back");
            warned = false;
        }
    }
}

/// At start, before the check loop runs: if the watchdog fenced this host while no agent ran, the vservers
/// it killed are fenced here too, so that nothing restarts them before the cluster is asked. Best effort: a
/// watchdog that does not answer within a second is left to [`run`].
pub async fn check_at_start(agent: &Arc<Agent>) {
    if let Some(status) = ask_once(agent, "status").await.filter(|status| status.starts_with("fenced")) {
        let names = agent.supervisor.fence();
        tracing::warn!(?names, "the host watchdog fenced this host while no agent ran");
        log_fence(agent, &names, "was fenced by its host watchdog while no agent ran", fenced_at(&status));
    }
}

/// On a clean stop of the agent: the watchdog stands down (an agent stopped on purpose leaves its vservers
/// running, unguarded until it is back).
pub async fn disarm(agent: &Agent) {
    let _ = ask_once(agent, "disarm").await;
}

/// One request on a connection of its own, answered within a second, or `None`.
async fn ask_once(agent: &Agent, request: &str) -> Option<String> {
    let socket = agent.config.run_dir.join("watchdog.sock");
    let asked = tokio::time::timeout(Duration::from_secs(1), async {
        let stream = UnixStream::connect(&socket).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{request}\n").as_bytes()).await?;
        BufReader::new(read).lines().next_line().await
    })
    .await;
    asked.ok()?.ok()?
}

/// How long before the end of the lease the watchdog fires: after the keepers (which record the fence as
/// theirs, so it is never taken for a crash), still before the lease ends.
const WATCHDOG_LEAD: Duration = Duration::from_millis(75);

/// How long the watchdog may wait before its next pet, following the lease: what is left of it less
/// [`WATCHDOG_LEAD`]; `None` when nothing may be promised (the lease is over, or too close to its end), and
/// `Some(fixed)` when this host needs no lease (no quorum fencing, or a single voter).
fn pet_budget(agent: &Agent, fixed: Duration) -> Option<Duration> {
    if !agent.config.quorum_fencing() {
        return Some(fixed);
    }
    match agent.lease.remaining() {
        None => Some(fixed),
        Some(left) => left.checked_sub(WATCHDOG_LEAD).filter(|b| !b.is_zero()),
    }
}

/// One connection: arm, then pet until the connection fails. Each pet carries the time the watchdog may wait
/// for the next one: what is left of this host's lease, so that a frozen or hung agent is fenced when its
/// lease ends and not before (a blip shorter than the lease stops nothing). A watchdog of the previous
/// release, which only knows `pet` with the armed timeout, is petted as before (half the lease).
async fn guard(agent: &Arc<Agent>, socket: &std::path::Path, timeout_ms: u64) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut ask = async |line: String| -> std::io::Result<String> {
        write.write_all(format!("{line}\n").as_bytes()).await?;
        lines.next_line().await?.ok_or_else(|| std::io::Error::other("the watchdog closed the connection"))
    };
    // Whatever happened before this connection, a fence reported by `status` is handled first.
    let status = ask("status".into()).await?;
    if status.starts_with("fenced") {
        recover(agent).await;
    }
    // Armed already (this agent restarted): its deadline stands until this agent holds a lease of its own.
    let lease_len = Duration::from_millis(agent.config.fencing.timeout_ms);
    if !status.starts_with("armed") {
        let armed = ask(format!("arm {}", lease_len.as_millis())).await?;
        if !armed.starts_with("ok") {
            return Err(std::io::Error::other(format!("the watchdog refused to arm: {armed}")));
        }
    }
    tracing::info!(lease_ms = lease_len.as_millis() as u64, "host watchdog armed");
    let mut legacy = false;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if agent.lease.in_maintenance() {
            // Nobody takes this host's vservers over meanwhile: a fence would only be an outage.
            let answer = ask("disarm".into()).await?;
            tracing::warn!(answer = %answer, "maintenance: the host watchdog stands down until it ends");
            while agent.lease.in_maintenance() {
                every.tick().await;
            }
            // As the lease watch does: a lease length to win the lease back before the watchdog guards again.
            let ended = std::time::Instant::now();
            while ended.elapsed() < lease_len && pet_budget(agent, lease_len).is_none() {
                every.tick().await;
            }
            let armed = ask(format!("arm {}", lease_len.as_millis())).await?;
            tracing::info!(answer = %armed, "maintenance over: host watchdog armed again");
            continue;
        }
        let answer = if legacy {
            // The previous release's watchdog: pet with its armed timeout, only while that much lease is left.
            if agent.config.quorum_fencing()
                && agent.lease.remaining().is_some_and(|left| left < Duration::from_millis(timeout_ms))
            {
                continue;
            }
            ask("pet".into()).await?
        } else {
            let Some(budget) = pet_budget(agent, lease_len / 2) else { continue };
            let answer = ask(format!("pet {}", budget.as_millis().max(1))).await?;
            if answer.starts_with("error unknown request") {
                tracing::info!("the host watchdog is of an earlier release: petted with its armed timeout");
                legacy = true;
                let armed = ask(format!("arm {timeout_ms}")).await?;
                tracing::info!(answer = %armed, "host watchdog armed again");
                continue;
            }
            answer
        };
        if answer.starts_with("error fenced") {
            tracing::error!("the host watchdog fenced this host (the agent did not pet it in time): {answer}");
            let names = agent.supervisor.fence();
            let why = "was fenced by its host watchdog (the agent did not pet it in time)";
            log_fence(agent, &names, why, fenced_at(&answer));
            recover(agent).await;
            let armed = ask(format!("arm {}", lease_len.as_millis())).await?;
            tracing::info!(answer = %armed, "host watchdog armed again");
        } else if !answer.starts_with("ok") {
            return Err(std::io::Error::other(format!("the watchdog answered {answer:?}")));
        }
    }
}

/// What this agent last wrote for the vservers' keepers (`RUN_DIR/lease`, see `isolate::lease`).
#[derive(Default)]
struct KeepersLease {
    written: Option<isolate::lease::HostLease>,
}

impl KeepersLease {
    /// Tells the keepers where this host's lease stands: its end less [`super::lease::FENCE_LEAD`] while it
    /// holds one, `unguarded` where no lease applies (no quorum fencing, a single voter, maintenance and
    /// the lease length after it). Nothing while the lease is over: what was
    /// written stands (an agent restarting within its lease keeps its vservers; one that never comes back,
    /// or is frozen, leaves them to be fenced when the lease it last wrote ends).
    async fn follow(&mut self, agent: &Agent, left: Option<Duration>, grace: bool) {
        use isolate::lease::HostLease;
        let Some(next) = agent.lease.keepers(left, grace) else { return };
        let worth = match (self.written, next) {
            (Some(HostLease::Until(was)), HostLease::Until(now)) => now.abs_diff(was) >= 50,
            (was, now) => was != Some(now),
        };
        if !worth {
            return;
        }
        let run_dir = agent.config.run_dir.clone();
        match tokio::task::spawn_blocking(move || isolate::lease::write(&run_dir, next)).await {
            Ok(Ok(())) => self.written = Some(next),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot tell the vservers' keepers this host's lease"),
            Err(e) => tracing::warn!(error = %e, "the lease file's writer failed"),
        }
    }
}

/// After a fence: every vserver that was meant to run stays down until the cluster confirms this host still
/// owns it (then the check loop restarts it), or is given up (intent `stopped`) when the cluster says it
/// belongs elsewhere now.
async fn recover(agent: &Arc<Agent>) {
    agent.supervisor.fence();
    recover_fenced(agent).await;
}

/// At start, with fencing on: the vservers meant to run that do not run (this host crashed, or was fenced
/// while no agent ran) start only once the cluster confirms this host still owns each: this host may have
/// been away while the others took them over, and its copy of the table may not know it yet.
pub async fn hold_at_start(agent: &Agent) -> Vec<isolate::VserverName> {
    let down: Vec<isolate::VserverName> = agent
        .supervisor
        .list()
        .await
        .into_iter()
        .filter(|v| v.intent == Intent::Running && v.state != crate::model::VserverState::Running)
        .filter_map(|v| isolate::VserverName::parse(&v.name).ok())
        .collect();
    agent.supervisor.fence_only(&down);
    down
}

/// Confirms (or gives up) every fenced vserver, one at a time, as after a fence.
pub async fn recover_fenced(agent: &Arc<Agent>) {
    // One at a time (the watchdog's report and the majority's return may both ask).
    let _one = agent.recovery.lock().await;
    let fenced = agent.supervisor.fenced();
    let me = agent.config.node.clone();
    let mut open: Vec<_> = fenced;
    while !open.is_empty() {
        let mut still = Vec::new();
        for name in open {
            let own = &agent.ownership;
            let verdict = failover::lease::still_ours(own, &me, name.as_str()).await;
            match verdict {
                Some(true) => {
                    tracing::info!(vserver = %name, "after the fence: the cluster confirms this host owns it");
                    agent.supervisor.recover_from_fence(&name).await;
                }
                Some(false) => {
                    tracing::warn!(vserver = %name, "after the fence: it belongs to another host now; it stays \
                                   stopped here");
                    if let Err(e) = agent.supervisor.record_intent(&name, Intent::Stopped).await {
                        tracing::warn!(vserver = %name, error = %e, "cannot record the intent");
                    }
                    agent.supervisor.unfence(&name);
                }
                None => still.push(name),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The timeout a watchdog of the previous release is armed with: half the lease length.
fn arm_ms(agent: &Agent) -> u64 {
    (agent.config.fencing.timeout_ms / 2).max(50)
}

/// Follows this host's lease (every 50 ms): records when it last held it, and with `fencing.quorum` fences
/// this host's vservers as soon as it is over (a freshly started agent first has one lease length to win
/// it); once it is back, each vserver restarts only if the cluster confirms this host still owns it. The
/// decisions are [`failover::lease::Watch`]'s; this carries them out.
pub async fn watch_majority(agent: Arc<Agent>) {
    use failover::lease::Verdict;
    let lease_len = Duration::from_millis(agent.config.fencing.timeout_ms);
    let mut watch = failover::lease::Watch::new(lease_len, agent.config.quorum_fencing(), Instant::now());
    let mut maintenance_said = false;
    let mut keepers = KeepersLease::default();
    let recovering = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        agent.pulse.beat();
        let covered = agent.lease.in_maintenance();
        // Said before it acts on it: the peers learn it is covered no later than it stops fencing, and that it
        // is no longer covered no earlier than it fences again.
        agent.membership.set_covered(covered);
        let left = agent.lease.remaining();
        let now = Instant::now();
        let grace = watch.grace(covered, now);
        keepers.follow(&agent, left, grace).await;
        let verdict = watch.look(left, covered, now);
        if matches!(verdict, Verdict::Holds | Verdict::Recover) {
            let since_start = agent.started.elapsed().as_millis() as u64;
            agent.last_majority_ms.store(since_start, std::sync::atomic::Ordering::Relaxed);
        }
        if verdict != Verdict::Covered {
            maintenance_said = false;
        }
        match verdict {
            Verdict::Recover => {
                tracing::info!("this host holds its lease again: asking the cluster which vservers are still ours");
                recover(&agent).await;
            }
            Verdict::Holds => {
                if !agent.supervisor.fenced().is_empty() && !recovering.load(std::sync::atomic::Ordering::Relaxed) {
                    // Fenced by their keepers while this agent was away, or held at its start: ask the cluster.
                    recovering.store(true, std::sync::atomic::Ordering::Relaxed);
                    let (agent, recovering) = (Arc::clone(&agent), Arc::clone(&recovering));
                    tokio::spawn(async move {
                        recover_fenced(&agent).await;
                        recovering.store(false, std::sync::atomic::Ordering::Relaxed);
                    });
                }
            }
            Verdict::Wait => {}
            Verdict::Covered => {
                if !maintenance_said && covered {
                    tracing::warn!(
                        "no majority acknowledges this host, but it is in maintenance: not fencing (and nobody takes \
                         over)"
                    );
                    maintenance_said = true;
                }
            }
            Verdict::Fence => fence(&agent, lease_len, watch.held()).await,
        }
    }
}

/// Fences this host's vservers after its lease of `lease_len` was lost (`held`: it had won one since it started).
async fn fence(agent: &Arc<Agent>, lease_len: Duration, held: bool) {
    let names = agent.supervisor.fence();
    let place = agent.supervisor.host().dirs.cgroup();
    let nothing_here = names.is_empty()
        && tokio::task::spawn_blocking({
            let place = place.clone();
            move || isolate::cgroup::Cgroups::list(&place).is_ok_and(|l| l.is_empty())
        })
        .await
        .unwrap_or(false);
    if nothing_here {
        // A host running nothing: nothing to fence, nothing to log in the cluster. A lease it held and lost
        // is still worth a line (the operator learns why starts are refused); a fresh start's is not.
        if held {
            tracing::warn!(
                lease_ms = lease_len.as_millis() as u64,
                "lease lost (no majority of the cluster acknowledged this host): nothing runs here, so nothing is \
                 fenced; starts are refused until it is back"
            );
        } else {
            tracing::info!("no majority acknowledges this host yet; nothing runs here, so nothing is fenced");
        }
        return;
    }
    log_fence(
        agent,
        &names,
        &format!("lost its lease (no majority acknowledged it for {} ms)", lease_len.as_millis()),
        None,
    );
    tracing::error!(
        ?names,
        lease_ms = lease_len.as_millis() as u64,
        "lease lost (no majority of the cluster acknowledged this host): fencing this host's vservers (interfaces \
         down, killed)"
    );
    let _ = tokio::task::spawn_blocking(move || {
        node_agent_fence(&place);
    })
    .await;
}

fn node_agent_fence(place: &isolate::spec::CgroupPlace) {
    crate::fence::fence_all(place, |line| tracing::warn!("fence: {line}"));
}

/// When the watchdog fenced, from its answer (`fenced UNIX_MS N` to `status`, `error fenced at UNIX_MS: ...`
/// to a pet).
fn fenced_at(answer: &str) -> Option<u64> {
    let rest = answer.strip_prefix("error fenced at ").or_else(|| answer.strip_prefix("fenced "))?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Logs a fence of this host in the cluster's event log: in the background, committed once this host can
/// commit again (it usually cannot while fenced), stamped with the time it happened (`at_unix_ms`, the
/// watchdog's word, else now), which the text says too.
fn log_fence(agent: &Arc<Agent>, names: &[isolate::VserverName], why: &str, at_unix_ms: Option<u64>) {
    let at_unix_ms = at_unix_ms.filter(|t| *t > 0).unwrap_or_else(super::replication::now_ms);
    let at = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at_unix_ms));
    let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    let what = if list.is_empty() { "no vserver ran here".to_string() } else { format!("fenced {}", list.join(", ")) };
    let text = format!("{} {why} at {at}: {what}", agent.config.node);
    let vserver = (list.len() == 1).then(|| list[0]);
    agent.events.log_later_at(super::events::kinds::FENCED, vserver, text, at_unix_ms);
}

#[cfg(test)]
mod tests {
    use super::fenced_at;

    #[test]
    fn the_fence_time_is_the_watchdogs() {
        assert_eq!(fenced_at("fenced 1764900000123 2"), Some(1_764_900_000_123));
        assert_eq!(fenced_at("error fenced at 1764900000123: 2 vservers killed; arm again"), Some(1_764_900_000_123));
        assert_eq!(fenced_at("armed 900"), None);
        assert_eq!(fenced_at("fenced soon"), None);
    }
}
