//! The restart policy, pure: what the check does about a vserver from its intent, whether it runs, and its
//! bookkeeping (the streak drives the backoff, the restarts within the failure window the limit).

use std::time::{Duration, Instant};

use isolate::VserverName;

use crate::agent::config::RestartConfig;
use crate::model::{Intent, VserverState};

/// Restart bookkeeping of one vserver, since the agent started (its counted restarts are in [`Accounts`]).
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Restarts since it last ran stably: drives the backoff.
    pub(super) streak: u32,
    /// An operator's start failed: left alone until an operator starts it.
    pub(super) failed: bool,
    /// When a restart is due, once it was found dead.
    pub(super) next_allowed: Option<Instant>,
    /// Since when it has been seen running without a break.
    pub(super) running_since: Option<Instant>,
    /// The last error starting or stopping it.
    pub(super) last_error: Option<String>,
    /// The last error observing it, logged once.
    pub(super) observe_error: Option<String>,
}

impl Book {
    /// An operator's start or restart: a fresh account.
    pub(super) fn reset(&mut self) {
        *self = Book { running_since: self.running_since, ..Book::default() };
    }
}

/// Keeps the account of one observation: a vserver seen running is no longer due a restart; one running
/// without a break for `backoff_max_ms` has recovered and starts a fresh streak; one seen running after it
/// was marked failed was started by an operator outside the agent, which counts as an operator's start.
pub(super) fn note_observation(book: &mut Book, running: bool, now: Instant, cfg: &RestartConfig, name: &VserverName) {
    if !running {
        book.running_since = None;
        return;
    }
    book.next_allowed = None;
    if book.failed {
        tracing::info!(vserver = %name, "marked failed but runs again (started outside the agent); watched again");
        book.reset();
    }
    let since = *book.running_since.get_or_insert(now);
    if book.streak > 0 && now.duration_since(since) >= Duration::from_millis(cfg.backoff_max_ms) {
        tracing::info!(vserver = %name, after = book.streak, "runs stably again; restart streak cleared");
        book.streak = 0;
    }
}

pub(super) fn observed_state(running: bool, failed: bool, error: bool) -> VserverState {
    match (running, error, failed) {
        (true, _, _) => VserverState::Running,
        (false, true, _) => VserverState::Error,
        (false, false, true) => VserverState::Failed,
        (false, false, false) => VserverState::Stopped,
    }
}

/// What the restart policy looks at of one vserver.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Standing {
    /// Restarts since it last ran stably (the backoff).
    pub(super) streak: u32,
    /// Restarts within the failure window (the limit).
    pub(super) in_window: u32,
    /// Failed or in error: left alone.
    pub(super) left_alone: bool,
    /// When a scheduled restart is due.
    pub(super) next_allowed: Option<Instant>,
}

/// What the check does about one vserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing: as meant, stopped by intent, or failed and left alone.
    Leave,
    /// It runs with no recorded intent (started before the agent, or by hand): record "running".
    Adopt,
    /// Meant to run, just found dead: restart at this instant.
    Schedule(Instant),
    /// A restart is scheduled, not yet due.
    Wait,
    /// A scheduled restart is due.
    Restart,
    /// Found dead after `failures.max_restart` restarts within the window: put it in error.
    GiveUp,
}

/// The restart policy, pure: the streak drives the backoff, the restarts within the window the limit.
pub(super) fn decide(
    intent: Option<Intent>,
    running: bool,
    s: &Standing,
    now: Instant,
    max_restart: u32,
    cfg: &RestartConfig,
) -> Decision {
    match (intent, running) {
        (None, true) => Decision::Adopt,
        (Some(_), true) => Decision::Leave,
        (None | Some(Intent::Stopped), false) => Decision::Leave,
        (Some(Intent::Running), false) if s.left_alone => Decision::Leave,
        (Some(Intent::Running), false) if s.in_window >= max_restart => Decision::GiveUp,
        (Some(Intent::Running), false) => match s.next_allowed {
            None => Decision::Schedule(now + backoff(s.streak, cfg)),
            Some(at) if now >= at => Decision::Restart,
            Some(_) => Decision::Wait,
        },
    }
}

/// Wait before restart number `n + 1` of a streak: `backoff_initial_ms`, doubled at each restart, at most
/// `backoff_max_ms`.
pub(super) fn backoff(n: u32, cfg: &RestartConfig) -> Duration {
    let factor = 1u64.checked_shl(n).unwrap_or(u64::MAX);
    Duration::from_millis(cfg.backoff_initial_ms.saturating_mul(factor).min(cfg.backoff_max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RestartConfig {
        RestartConfig { backoff_initial_ms: 200, backoff_max_ms: 1000, check_interval_ms: 100 }
    }
    fn name(n: &str) -> VserverName {
        VserverName::parse(n).unwrap()
    }
    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let c = cfg();
        let waits: Vec<u64> = (0..6).map(|n| backoff(n, &c).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(200, &c), Duration::from_millis(1000), "no overflow");
        let big = RestartConfig { backoff_initial_ms: u64::MAX / 2, backoff_max_ms: u64::MAX, ..c };
        assert_eq!(backoff(5, &big), Duration::from_millis(u64::MAX));
    }
    fn st(streak: u32, in_window: u32, left_alone: bool, next_allowed: Option<Instant>) -> Standing {
        Standing { streak, in_window, left_alone, next_allowed }
    }
    #[test]
    fn a_stop_by_intent_is_never_taken_for_a_crash() {
        let (c, now) = (cfg(), Instant::now());
        use Intent::*;
        // Stopped by intent or never started: left alone, whatever the restart account says.
        assert_eq!(decide(Some(Stopped), false, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(Some(Stopped), false, &st(0, 9, false, Some(now)), now, 3, &c), Decision::Leave);
        assert_eq!(decide(None, false, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
        // Running by hand while stopped by intent: never stopped, never adopted.
        assert_eq!(decide(Some(Stopped), true, &st(0, 0, false, None), now, 3, &c), Decision::Leave);
    }
    #[test]
    fn running_vservers_are_adopted_and_never_touched() {
        let (c, now) = (cfg(), Instant::now());
        assert_eq!(decide(None, true, &st(0, 0, false, None), now, 3, &c), Decision::Adopt);
        assert_eq!(decide(Some(Intent::Running), true, &st(2, 2, false, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(Some(Intent::Running), true, &st(0, 5, true, None), now, 3, &c), Decision::Leave);
    }
    #[test]
    fn a_crash_is_restarted_after_the_backoff_then_put_in_error() {
        let (c, now) = (cfg(), Instant::now());
        let r = Some(Intent::Running);
        // Found dead: scheduled after the backoff of its streak.
        let sched = |streak, in_window| decide(r, false, &st(streak, in_window, false, None), now, 3, &c);
        assert_eq!(sched(0, 0), Decision::Schedule(now + Duration::from_millis(200)));
        assert_eq!(sched(2, 2), Decision::Schedule(now + Duration::from_millis(800)));
        // A stable run cleared the streak, not the count within the window.
        assert_eq!(sched(0, 2), Decision::Schedule(now + Duration::from_millis(200)));
        // Not yet due, then due.
        let at = now + Duration::from_millis(200);
        assert_eq!(decide(r, false, &st(0, 0, false, Some(at)), now, 3, &c), Decision::Wait);
        assert_eq!(decide(r, false, &st(0, 0, false, Some(at)), at, 3, &c), Decision::Restart);
        // The limit within the window reached: error, however long the runs between were.
        assert_eq!(sched(0, 3), Decision::GiveUp);
        assert_eq!(decide(r, false, &st(3, 3, false, Some(at)), at, 3, &c), Decision::GiveUp);
        // In error or failed: left alone.
        assert_eq!(decide(r, false, &st(3, 3, true, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(r, false, &st(0, 0, true, None), now, 3, &c), Decision::Leave);
        assert_eq!(decide(r, false, &st(0, 0, false, None), now, 0, &c), Decision::GiveUp, "max_restart 0");
    }
    #[test]
    fn a_stable_run_clears_the_streak_and_a_start_outside_the_agent_clears_failed() {
        let (c, t0, n) = (cfg(), Instant::now(), name("web"));
        let mut book = Book { streak: 2, next_allowed: Some(t0), ..Book::default() };
        note_observation(&mut book, true, t0, &c, &n);
        assert_eq!((book.streak, book.next_allowed, book.running_since), (2, None, Some(t0)));
        note_observation(&mut book, true, t0 + Duration::from_millis(999), &c, &n);
        assert_eq!(book.streak, 2, "not stable yet");
        note_observation(&mut book, true, t0 + Duration::from_millis(1000), &c, &n);
        assert_eq!(book.streak, 0, "stable: a fresh streak");
        note_observation(&mut book, false, t0, &c, &n);
        assert_eq!(book.running_since, None);
        let mut failed = Book { streak: 3, failed: true, last_error: Some("x".into()), ..Book::default() };
        note_observation(&mut failed, true, t0, &c, &n);
        assert!(!failed.failed && failed.streak == 0 && failed.last_error.is_none());
        assert_eq!(observed_state(false, true, false), VserverState::Failed);
        assert_eq!(observed_state(false, true, true), VserverState::Error);
        assert_eq!(observed_state(false, false, true), VserverState::Error);
        assert_eq!(observed_state(true, true, true), VserverState::Running);
        assert_eq!(observed_state(false, false, false), VserverState::Stopped);
    }
}
