//! What a benchmarked variant does (prepare, launch, stop) and the process plumbing they share.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One way of running the benchmark's service; dropping it stops and removes whatever it made.
pub(crate) trait Contender {
    /// Untimed: makes instance `i` ready to start at `addr`, its page naming `marker`.
    fn prepare(&mut self, i: usize, addr: Ipv4Addr, marker: &str) -> Result<()>;
    /// Timed: launches instance `i`'s start command and returns it, still running or not.
    fn launch(&mut self, i: usize) -> Result<Child>;
    /// Timed: stops instance `i`, returning once it is down.
    fn stop(&mut self, i: usize) -> Result<()>;
    /// Where the output of instance `i`'s commands goes, for error messages.
    fn log_path(&self, i: usize) -> PathBuf;
}

/// Prepares `cmd` for the benchmark: its own process group (so the terminal's Ctrl-C reaches only
/// the benchmark, which then cleans up in order), no stdin, stdout and stderr appended to `log`.
pub(crate) fn plumb(cmd: &mut Command, log: &Path) -> Result<()> {
    let out =
        File::options().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().context("duplicating a log descriptor")?;
    cmd.process_group(0).stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

/// Waits for `child` until `deadline`, killing it when it is late.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish in time and was killed");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `cmd` (plumbed to `log`) to completion within `timeout`; fails with the end of the log.
pub(crate) fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<()> {
    plumb(cmd, log)?;
    let what = describe(cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let status = wait_until(&mut child, Instant::now() + timeout)
        .with_context(|| format!("{what}; log {}:\n{}", log.display(), log_tail(log)))?;
    if !status.success() {
        bail!("{what} failed ({status}); log {}:\n{}", log.display(), log_tail(log));
    }
    Ok(())
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `program arg...` of a command, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}
