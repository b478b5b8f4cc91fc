//! The slow-link run of `bench takeover`: every frame each host sends held 200 ms (a round trip between two
//! hosts takes 400 ms) and 20% of the frames dropped each way on every host's link, for 5 minutes. Nothing
//! failed, so nothing may be fenced and nothing taken over. The client asks for the page once a second (each
//! request given 10 s, as a patient user would) and counts the requests that got no answer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::takeover::{check, TakeoverOptions};
use super::takeover_cluster::{now_unix_ms, stops, Cluster};
use crate::faults::Sampler;

/// Time between two of the client's requests.
const REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for one of them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The slow-link run.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    /// Its length, s.
    pub secs: u64,
    /// How long each frame a host sent was held, ms.
    pub delay_ms: u64,
    /// The loss, percent of frames each way on every host's link.
    pub loss_pct: u8,
    /// Fences of the vserver (the agents' accounts).
    pub fences: usize,
    /// "lease lost" in the agents' logs (a host fencing whatever it runs).
    pub lease_losses: usize,
    /// Takeovers (false ones: no host failed).
    pub takeovers: usize,
    /// Times a host stopped running the vserver.
    pub stops: usize,
    /// The client's requests.
    pub requests: usize,
    /// Those that got no answer within 10 s.
    pub failed_requests: usize,
    /// The most hosts seen running the vserver at one instant (must be 1).
    pub most_copies_at_once: usize,
}

impl SlowReport {
    /// Its lines of the table.
    pub(super) fn table(&self, out: &mut String) {
        let met = self.fences == 0 && self.takeovers == 0;
        let _ = writeln!(
            out,
            "slow link, 3 hosts: {} ms each way and {}% loss on every host's link, {} s",
            self.delay_ms, self.loss_pct, self.secs
        );
        let _ = writeln!(
            out,
            "  fences {}, takeovers {}   (targets: 0 and 0) {}",
            self.fences,
            self.takeovers,
            if met { "ok" } else { "MISSED" }
        );
        let _ = writeln!(
            out,
            "  lease lost {}, stops {}; client requests failed {} of {} (each given {} s)",
            self.lease_losses,
            self.stops,
            self.failed_requests,
            self.requests,
            REQUEST_TIMEOUT.as_secs()
        );
        let _ = writeln!(out, "  most hosts running it at once {} (must be 1)", self.most_copies_at_once);
    }
}

/// Runs it; the cluster must be at rest.
pub(super) fn run(c: &Cluster, opts: &TakeoverOptions, cancel: &AtomicBool) -> Result<SlowReport> {
    let (secs, delay_ms, loss) = (opts.slow_secs, opts.slow_delay_ms, opts.loss_pct);
    eprintln!("bench takeover: slow link, {delay_ms} ms each way and {loss}% loss on every host's link for {secs} s");
    let (_, epoch) = c.owner().ok_or_else(|| anyhow::anyhow!("no owner in the table"))?;
    let since = now_unix_ms();
    let losses_before = c.lease_losses();
    let sampler = Sampler::start(c.lab, &c.name);
    let (requests, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let stop = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut due = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                requests.fetch_add(1, Ordering::Relaxed);
                if c.lab.client.http_get(c.addr, 80, REQUEST_TIMEOUT).is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                due += REQUEST_INTERVAL;
                while !stop.load(Ordering::Relaxed) && Instant::now() < due {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let result = (|| -> Result<()> {
            // The links heal when `_links` drops, at the end of this closure.
            let _links = (0..c.n)
                .map(|i| c.lab.delay_with_loss(i, Duration::from_millis(delay_ms), loss))
                .collect::<Result<Vec<_>>>()?;
            let began = Instant::now();
            let mut said = 0;
            while began.elapsed() < Duration::from_secs(secs) {
                check(cancel)?;
                let minutes = began.elapsed().as_secs() / 60;
                if minutes > said {
                    said = minutes;
                    eprintln!(
                        "  {} s: fences {}, takeovers {}, client requests failed {} of {}",
                        began.elapsed().as_secs(),
                        c.counted("fenced_unix_ms", since).unwrap_or(0),
                        c.takeovers_after(epoch).len(),
                        failed.load(Ordering::Relaxed),
                        requests.load(Ordering::Relaxed)
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    });
    outcome?;
    // Whatever the last seconds were going to cause has happened by the takeover timeout.
    std::thread::sleep(c.hold());
    let seen = sampler.finish();
    if seen.most_at_once > 1 {
        eprintln!("bench takeover: RAN TWICE during the slow-link run at (ms, hosts): {:?}", seen.overlaps);
    }
    let report = SlowReport {
        secs,
        delay_ms,
        loss_pct: loss,
        fences: c.counted("fenced_unix_ms", since)?,
        lease_losses: c.lease_losses().saturating_sub(losses_before),
        takeovers: c.takeovers_after(epoch).len(),
        stops: stops(&seen),
        requests: requests.into_inner(),
        failed_requests: failed.into_inner(),
        most_copies_at_once: seen.most_at_once,
    };
    eprintln!(
        "  done: fences {}, takeovers {}, stops {}, client requests failed {} of {}",
        report.fences, report.takeovers, report.stops, report.failed_requests, report.requests
    );
    if let Err(e) = c.settle(Instant::now(), Duration::ZERO) {
        bail!("after the slow-link run (fences {}, takeovers {}): {e:#}", report.fences, report.takeovers);
    }
    if report.takeovers > 0 {
        // The new owner's standbys take a replica before the next run.
        let (to, _) = c.owner().ok_or_else(|| anyhow::anyhow!("no owner in the table"))?;
        c.sync_from(to)?;
    }
    Ok(report)
}
