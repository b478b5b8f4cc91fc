//! How a command ends when the reader of its output goes away (`vserver-stat | head`): quietly, by SIGPIPE
//! like any Unix tool (status 141 in a shell), instead of a panic message and exit 101.
//!
//! The Rust runtime ignores SIGPIPE, so a write nobody reads fails with EPIPE, and `println!` panics on it.
//! SIGPIPE stays ignored: the commands rely on EPIPE for their other pipes (`ip -batch` and `nft` reading a
//! script on their stdin), and `vserver-lab` must remove its lab whatever happens. Instead [`run`] runs
//! `main` so that a panic while stdout or stderr has lost its reader is silent: the closed output is pointed
//! at `/dev/null` (what runs as the panic unwinds may print more), everything unwinds (a lab is removed),
//! and the process then ends by SIGPIPE. Any other panic is reported as usual. Daemons (the agent, the
//! watchdog) and the replication tunnel, whose stdout is rsync's pipe, do not use it.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a panic came while an output had lost its reader.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Those of stdout and stderr that have lost their reader: a pipe with no reader left (`POLLERR`) or a
/// socket whose peer is gone (`POLLHUP`).
fn closed_outputs() -> Vec<libc::c_int> {
    let mut fds = [libc::STDOUT_FILENO, libc::STDERR_FILENO].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll(2) on a local array of the length given, without waiting.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if ready <= 0 {
        return Vec::new();
    }
    fds.iter().filter(|p| p.revents & (libc::POLLERR | libc::POLLHUP) != 0).map(|p| p.fd).collect()
}

/// Points `fd` at `/dev/null`, so that later writes to it succeed and go nowhere.
fn to_dev_null(fd: libc::c_int) {
    // SAFETY: open(2) of a constant path, dup2(2) onto a descriptor of ours, close(2) of the one just opened.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, fd);
            libc::close(null);
        }
    }
}

/// Ends the process by SIGPIPE, as a Unix tool whose output is closed ends.
fn end_by_sigpipe() -> ! {
    // SAFETY: restores SIGPIPE's default action (ending the process) and raises it on this thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Runs `main` (all of a command that runs once and prints; never a daemon) so that a closed output ends the
/// process quietly by SIGPIPE once everything has unwound (see the module).
pub fn run<T>(main: impl FnOnce() -> T) -> T {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let closed = closed_outputs();
        if closed.is_empty() {
            return report(info);
        }
        CLOSED.store(true, Ordering::SeqCst);
        closed.into_iter().for_each(to_dev_null);
    }));
    match catch_unwind(AssertUnwindSafe(main)) {
        Ok(value) => value,
        Err(_) if CLOSED.load(Ordering::SeqCst) => end_by_sigpipe(),
        Err(panic) => resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_main_returns_is_returned_and_another_panic_goes_on() {
        assert_eq!(super::run(|| 7), 7);
        let panicked = std::panic::catch_unwind(|| super::run(|| panic!("a bug")));
        let message = panicked.expect_err("the panic goes on");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"a bug"));
        assert!(!super::CLOSED.load(std::sync::atomic::Ordering::SeqCst), "no output is closed here");
    }
}
