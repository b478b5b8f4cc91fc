//! The outage a client sees while something moves a service: `GET /` from the client every 10 ms, each probe
//! on a thread of its own so that one left waiting (a SYN lost to an address that has gone) never delays the
//! next. The outage is the longest run of failed probes, from the sending of its first to the sending of the
//! next probe that got an answer: the resolution is the probe interval, whatever the probe timeout.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::lab::Client;

/// Time between two probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Longest wait for one probe's answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest wait, after the watched work, for the service to answer again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// Runs `work` while the client probes `addr:80`; `work`'s result and the longest outage seen, ms. The probing
/// goes on after `work` until a probe sent after it is answered, so a service still coming up is counted.
pub(crate) fn while_probing<T>(client: &Client, addr: Ipv4Addr, work: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let origin = Instant::now();
    // (sent, answered) of every probe, sent as ms since `origin`.
    let probes: Mutex<Vec<(f64, bool)>> = Mutex::new(Vec::new());
    let done_at: Mutex<Option<f64>> = Mutex::new(None);
    let back = AtomicBool::new(false);
    let ms = move |t: Instant| t.duration_since(origin).as_secs_f64() * 1000.0;
    let (probes_ref, done_ref, back_ref) = (&probes, &done_at, &back);
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut due = Instant::now();
            loop {
                let finished = *done_ref.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(done) = finished {
                    if back_ref.load(Ordering::Relaxed)
                        || ms(Instant::now()) - done > RECOVERY_LIMIT.as_secs_f64() * 1000.0
                    {
                        break;
                    }
                }
                let (probes, done_at, back) = (probes_ref, done_ref, back_ref);
                scope.spawn(move || {
                    let sent = ms(Instant::now());
                    let answered = client.http_get(addr, 80, PROBE_TIMEOUT).is_ok();
                    probes.lock().unwrap_or_else(|e| e.into_inner()).push((sent, answered));
                    let done = *done_at.lock().unwrap_or_else(|e| e.into_inner());
                    if answered && done.is_some_and(|d| sent >= d) {
                        back.store(true, Ordering::Relaxed);
                    }
                });
                due += PROBE_INTERVAL;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        let result = work();
        *done_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(ms(Instant::now()));
        result
    })?;
    let mut probes = probes.into_inner().unwrap_or_else(|e| e.into_inner());
    probes.sort_by(|a, b| a.0.total_cmp(&b.0));
    longest_outage(&probes).map(|gap| (result, gap))
}

/// The longest run of failed probes in `probes` (sorted by sending time), ms; an error when the last probe
/// failed (the service never answered again).
fn longest_outage(probes: &[(f64, bool)]) -> Result<f64> {
    let mut worst = 0.0f64;
    let mut down_since = None;
    for &(sent, answered) in probes {
        match (answered, down_since) {
            (false, None) => down_since = Some(sent),
            (true, Some(since)) => {
                worst = worst.max(sent - since);
                down_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = down_since {
        bail!("the service did not answer again (down since {since:.0} ms into the measurement)");
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_run_counts_from_its_first_failure_to_the_next_answer() {
        let probes = [(0.0, true), (10.0, false), (20.0, false), (30.0, true), (40.0, false), (50.0, true)];
        assert_eq!(longest_outage(&probes).unwrap(), 20.0);
        assert_eq!(longest_outage(&[(0.0, true), (10.0, true)]).unwrap(), 0.0);
        assert!(longest_outage(&[(0.0, true), (10.0, false)]).is_err());
    }
}
