//! Promoting a replica on another host (the last step of a migrate and of a takeover), both sides.
//!
//! The asking side ([`promote_on`]): a lost answer means "it may run there": the question is asked again for a
//! while, and if it stays unanswered the outcome is [`PromoteOutcome::Unknown`], never taken for a refusal, so
//! that no caller starts a second copy.
//!
//! The receiving side ([`accept`]): the rules a host applies before it turns its replica into the running tree,
//! over the [`Target`] trait the agent implements (and the simulator).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::meant_to_run;
use crate::peer::Peers;
use crate::table::Table;
use crate::wire::{PromoteRequest, PromoteTimes, VserverState};

/// Longest wait for the target to promote and start (its start scripts may take minutes).
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(6 * 60);

/// What became of a promote on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteOutcome {
    /// It runs there (or was not to be started, and is in place there), with the target's timings when its
    /// answer came.
    Running(PromoteTimes),
    /// The target said no, and put things back as they were.
    Refused(String),
    /// No answer: it may or may not run there.
    Unknown(String),
}

/// Asks `target` to promote its replica of `name` (and start it when `req.start`); when the answer is lost,
/// asks again what it runs, for `ask_for`. Never takes a lost answer for a refusal.
pub async fn promote_on(
    peers: &impl Peers,
    target: &str,
    name: &str,
    req: &PromoteRequest,
    ask_for: Duration,
) -> PromoteOutcome {
    // A start runs the vserver's start scripts: as long as they may take, and a margin.
    let lost = match peers.promote(target, name, req, PROMOTE_TIMEOUT).await {
        Ok(Ok((state, times))) if !req.start || state == VserverState::Running => {
            return PromoteOutcome::Running(times)
        }
        Ok(Ok((state, _))) => return PromoteOutcome::Unknown(format!("it answered that {name} is {state:?}")),
        Ok(Err(refused)) => return PromoteOutcome::Refused(refused.to_string()),
        Err(lost) => lost.0,
    };
    // Ask what it has, for a while.
    let deadline = tokio::time::Instant::now() + ask_for;
    while tokio::time::Instant::now() < deadline {
        match peers.vserver_state(target, name, Duration::from_secs(3)).await {
            Ok(Err(refused)) if refused.status == reqwest::StatusCode::NOT_FOUND => {
                return PromoteOutcome::Refused(format!("{lost}; {target} does not have it"))
            }
            Ok(Ok(state)) if state == VserverState::Running || !req.start => {
                return PromoteOutcome::Running(PromoteTimes::default())
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    PromoteOutcome::Unknown(lost)
}

/// What a host holds of a vserver before a promote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Present {
    /// Neither its tree nor its conf: a replica may be promoted.
    Absent,
    /// Its tree or conf, stopped.
    Stopped,
    /// It runs here.
    Running,
}

/// Why a promote was refused; nothing was changed on the host (or it was put back as it was).
#[derive(Debug, thiserror::Error)]
pub enum Refusal<E: std::error::Error> {
    /// A witness runs no vservers.
    #[error("this host is a witness: it runs no vservers")]
    Witness,
    /// The table is past the promote's epoch, gives the vserver to another host, or this host's copy never
    /// reached the epoch.
    #[error("{0}")]
    Epoch(String),
    /// It exists here (and does not run at the promote's epoch).
    #[error("{0}")]
    Exists(String),
    /// It would be started, but the cluster's event log no longer means it to run.
    #[error(
        "the cluster no longer means {0} to run (an operator's stop, a halt or a failure limit is recorded since \
         its promote was asked); nothing was changed"
    )]
    NotMeant(String),
    /// No complete replica here.
    #[error("{0}")]
    NoReplica(String),
    /// The replica could not be made the running tree.
    #[error("{0}")]
    Failed(String),
    /// Promoted, but the start failed: the replica was put back.
    #[error(transparent)]
    Start(E),
}

/// Why a replica could not be made the running tree.
#[derive(Debug)]
pub enum PromoteError {
    /// There is no complete replica.
    NoReplica(String),
    /// A tree or conf is in the way.
    Exists(String),
    /// Anything else.
    Failed(String),
}

/// The host a replica is promoted on, as the promote's rules need it.
pub trait Target: Send + Sync {
    /// The ownership table.
    type Table: Table;
    /// Held while the promote runs: one promote of a vserver at a time, never during a sync or a migrate of it.
    type Serial: Send;
    /// What putting the replica back needs.
    type Promoted: Send;
    /// Why a start failed.
    type StartError: std::error::Error;

    /// This host's name.
    fn node(&self) -> &str;
    /// Whether this host is a witness (it runs no vservers).
    fn witness(&self) -> bool;
    /// This host's copy of the ownership table.
    fn table(&self) -> &Self::Table;
    /// Waits for the vserver's other work here to end and keeps new work out until the guard is dropped.
    fn serialize(&self, name: &str) -> impl Future<Output = Self::Serial> + Send;
    /// What this host holds of the vserver.
    fn present(&self, name: &str) -> impl Future<Output = Present> + Send;
    /// Makes the complete replica the vserver's tree and conf.
    fn promote_replica(&self, name: &str) -> impl Future<Output = Result<Self::Promoted, PromoteError>> + Send;
    /// Starts it (recording that it is meant to run here).
    fn start(&self, name: &str) -> impl Future<Output = Result<(), Self::StartError>> + Send;
    /// After a failed start: records that it is not to run here and puts the replica back.
    fn put_back(&self, name: &str, promoted: Self::Promoted) -> impl Future<Output = ()> + Send;
}

/// How long a target waits for its copy of the table to reach the promote's epoch.
pub const EPOCH_WAIT: Duration = Duration::from_secs(5);

/// A host's side of a promote of its replica of `name`, asked by `req.source`: makes the replica the running
/// tree and starts it when `req.start`.
///
/// - One promote of a vserver at a time ([`Target::serialize`]).
/// - With an epoch, this host's copy of the table must give it `name` at that epoch (it waits up to
///   [`EPOCH_WAIT`] for its copy to catch up); refused when the table is past it or names another host.
/// - A promote at the epoch the vserver already runs at here is a success (asked twice: its answer was lost,
///   or the coordinator asked again): never a second start.
/// - A promote that would start the vserver is refused once the cluster's event log no longer means it to
///   run: an operator's stop recorded since its sender read the log outweighs it.
/// - A failed start puts the replica back, so the host is as before.
pub async fn accept<T: Target>(
    host: &T,
    name: &str,
    req: &PromoteRequest,
) -> Result<PromoteTimes, Refusal<T::StartError>> {
    if host.witness() {
        return Err(Refusal::Witness);
    }
    let _serial = host.serialize(name).await;
    if let Some(epoch) = req.epoch {
        wait_for_epoch(host.table(), host.node(), name, epoch).await.map_err(Refusal::Epoch)?;
    }
    let mut times = PromoteTimes::default();
    match host.present(name).await {
        Present::Absent => {}
        // The table gives it to this host at that epoch (checked above): running already is what was asked.
        Present::Running if req.epoch.is_some() => {
            tracing::info!(vserver = name, epoch = req.epoch, "promote asked again: it runs here already");
            return Ok(times);
        }
        Present::Running | Present::Stopped => {
            return Err(Refusal::Exists(format!("{name} already exists on this host; nothing was changed")))
        }
    }
    // An operator's stop recorded since the sender read the log (while the request was on its way, or its
    // sender was paused) outweighs a promote that would start it: a migrate's, a takeover's or one asked again.
    if req.start && !meant_to_run(&host.table().events(), name, None) {
        return Err(Refusal::NotMeant(name.to_string()));
    }
    let promoting = Instant::now();
    let promoted = host.promote_replica(name).await.map_err(|e| match e {
        PromoteError::NoReplica(e) => Refusal::NoReplica(e),
        PromoteError::Exists(e) => Refusal::Exists(e),
        PromoteError::Failed(e) => Refusal::Failed(e),
    })?;
    tracing::info!(vserver = name, source = %req.source, "replica promoted to the running tree");
    times.promote_ms = Some(promoting.elapsed().as_millis() as u64);
    if !req.start {
        return Ok(times);
    }
    let starting = Instant::now();
    match host.start(name).await {
        Ok(()) => {
            times.start_ms = Some(starting.elapsed().as_millis() as u64);
            Ok(times)
        }
        Err(e) => {
            tracing::warn!(vserver = name, error = %e, "start after promote failed; the replica is put back");
            host.put_back(name, promoted).await;
            Err(Refusal::Start(e))
        }
    }
}

/// The target's check before it promotes a replica at `epoch`: waits (up to [`EPOCH_WAIT`]) until its copy
/// of the ownership table gives `name` to `me` at that epoch; refused when the table is past it, or gives it to
/// another host.
pub async fn wait_for_epoch(table: &impl Table, me: &str, name: &str, epoch: u64) -> Result<(), String> {
    let deadline = Instant::now() + EPOCH_WAIT;
    loop {
        match table.owner(name) {
            Some((owner, e)) if e == epoch && owner == me => return Ok(()),
            Some((owner, e)) if e >= epoch => {
                return Err(format!(
                    "stale ownership epoch {epoch}: the cluster gives {name} to {owner} at epoch {e}; nothing was \
                     changed"
                ))
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "this host's ownership table has not reached epoch {epoch} of {name} (at {}); nothing was changed",
                table.epoch(name)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::events::{intent_event, kinds};
    use crate::ownership::{Event, OwnerEntry};
    use crate::table::fake::FakeTable;

    #[derive(Debug, thiserror::Error)]
    #[error("the start failed")]
    struct StartFailed;

    /// h1, a target with a replica of `web` (or what a test puts there instead), counting what is done.
    #[derive(Default)]
    struct FakeTarget {
        table: FakeTable,
        witness: bool,
        present: Mutex<Option<Present>>,
        replica: Mutex<bool>,
        start_fails: bool,
        starts: Mutex<u32>,
        put_back: Mutex<u32>,
    }

    impl Target for FakeTarget {
        type Table = FakeTable;
        type Serial = ();
        type Promoted = ();
        type StartError = StartFailed;
        fn node(&self) -> &str {
            "h1"
        }
        fn witness(&self) -> bool {
            self.witness
        }
        fn table(&self) -> &FakeTable {
            &self.table
        }
        async fn serialize(&self, _: &str) {}
        async fn present(&self, _: &str) -> Present {
            self.present.lock().unwrap().unwrap_or(Present::Absent)
        }
        async fn promote_replica(&self, name: &str) -> Result<(), PromoteError> {
            let mut replica = self.replica.lock().unwrap();
            if !*replica {
                return Err(PromoteError::NoReplica(format!("no complete replica of {name}")));
            }
            *replica = false;
            *self.present.lock().unwrap() = Some(Present::Stopped);
            Ok(())
        }
        async fn start(&self, _: &str) -> Result<(), StartFailed> {
            if self.start_fails {
                return Err(StartFailed);
            }
            *self.starts.lock().unwrap() += 1;
            *self.present.lock().unwrap() = Some(Present::Running);
            Ok(())
        }
        async fn put_back(&self, _: &str, (): ()) {
            *self.put_back.lock().unwrap() += 1;
            *self.replica.lock().unwrap() = true;
            *self.present.lock().unwrap() = Some(Present::Absent);
        }
    }

    fn target(owner: &str, epoch: u64) -> FakeTarget {
        let t = FakeTarget { replica: Mutex::new(true), ..Default::default() };
        t.table.owners.lock().unwrap().insert("web".into(), OwnerEntry { owner: Some(owner.into()), epoch });
        t
    }

    fn req(epoch: Option<u64>, again: bool) -> PromoteRequest {
        PromoteRequest { source: "h0".into(), start: true, epoch, again }
    }

    #[tokio::test(start_paused = true)]
    async fn a_promote_at_the_tables_epoch_starts_once_even_asked_twice() {
        let t = target("h1", 4);
        let times = accept(&t, "web", &req(Some(4), false)).await.unwrap();
        assert!(times.promote_ms.is_some() && times.start_ms.is_some());
        // Its answer was lost: asked again at the same epoch, it is done already.
        let again = accept(&t, "web", &req(Some(4), true)).await.unwrap();
        assert_eq!((again.promote_ms, again.start_ms), (None, None));
        assert_eq!(*t.starts.lock().unwrap(), 1, "never a second start");
    }

    #[tokio::test(start_paused = true)]
    async fn a_promote_the_table_is_past_or_gives_elsewhere_changes_nothing() {
        for (owner, epoch) in [("h1", 5), ("h2", 4), ("h2", 5)] {
            let t = target(owner, epoch);
            let e = accept(&t, "web", &req(Some(4), false)).await.unwrap_err();
            assert!(matches!(e, Refusal::Epoch(_)), "{owner} at {epoch}: {e}");
            assert!(*t.replica.lock().unwrap(), "the replica stays");
        }
        // A copy of the table that never reaches the epoch: refused after the wait, nothing changed.
        let t = target("h1", 3);
        let asked = Instant::now();
        let e = accept(&t, "web", &req(Some(4), false)).await.unwrap_err();
        assert!(matches!(e, Refusal::Epoch(_)) && asked.elapsed() >= EPOCH_WAIT, "{e}");
        assert_eq!(*t.starts.lock().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_of_the_table_that_catches_up_within_the_wait_is_enough() {
        let t = std::sync::Arc::new(target("h0", 3));
        let later = std::sync::Arc::clone(&t);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            later.table.owners.lock().unwrap().insert("web".into(), OwnerEntry { owner: Some("h1".into()), epoch: 4 });
        });
        accept(&*t, "web", &req(Some(4), false)).await.unwrap();
        assert_eq!(*t.starts.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn what_exists_here_or_is_no_longer_meant_to_run_is_refused() {
        let t = target("h1", 4);
        *t.present.lock().unwrap() = Some(Present::Stopped);
        assert!(matches!(accept(&t, "web", &req(Some(4), false)).await, Err(Refusal::Exists(_))));
        // Without an epoch (a migrate in a cluster with no table), running here is no success either.
        *t.present.lock().unwrap() = Some(Present::Running);
        assert!(matches!(accept(&t, "web", &req(None, false)).await, Err(Refusal::Exists(_))));

        // An operator's stop recorded since the sender read the log: a promote that would start it is refused,
        // asked again or not; one that only puts the replica in place is carried out.
        let t = target("h1", 4);
        t.table.events.lock().unwrap().push(Event {
            seq: 1,
            at_ms: 0,
            host: "h0".into(),
            text: intent_event("web", false, "stop on h0"),
            kind: kinds::INTENT.into(),
            vserver: Some("web".into()),
        });
        assert!(matches!(accept(&t, "web", &req(Some(4), true)).await, Err(Refusal::NotMeant(_))));
        assert!(matches!(accept(&t, "web", &req(Some(4), false)).await, Err(Refusal::NotMeant(_))));
        assert!(*t.replica.lock().unwrap());
        let quiet = PromoteRequest { start: false, ..req(Some(4), false) };
        accept(&t, "web", &quiet).await.unwrap();
        assert_eq!((*t.replica.lock().unwrap(), *t.starts.lock().unwrap()), (false, 0), "in place, not started");
        let witness = FakeTarget { witness: true, ..target("h1", 4) };
        assert!(matches!(accept(&witness, "web", &req(Some(4), false)).await, Err(Refusal::Witness)));
        let none = target("h1", 4);
        *none.replica.lock().unwrap() = false;
        assert!(matches!(accept(&none, "web", &req(Some(4), false)).await, Err(Refusal::NoReplica(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_start_puts_the_replica_back() {
        let t = FakeTarget { start_fails: true, ..target("h1", 4) };
        assert!(matches!(accept(&t, "web", &req(Some(4), false)).await, Err(Refusal::Start(StartFailed))));
        assert_eq!(*t.put_back.lock().unwrap(), 1);
        assert!(*t.replica.lock().unwrap(), "the replica is back");
    }
}
