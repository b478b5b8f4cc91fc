//! Promoting a replica on another host (the last step of a migrate and of a takeover), where a lost answer
//! means "it may run there": the question is asked again for a while, and if it stays unanswered the outcome is
//! [`PromoteOutcome::Unknown`], never taken for a refusal, so that no caller starts a second copy.

use std::time::Duration;

use crate::peer::Peers;
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
