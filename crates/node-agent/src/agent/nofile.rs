//! The agent's limit of open files: raised at start to the hard limit, so that a flood of connections cannot
//! leave it without descriptors for its peers, its files and its children; the processes it starts (the
//! `vserver` command, and through it the vservers) get the limit the agent was started with, unchanged.

use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Never more than this, whatever the hard limit.
const CEILING: u64 = 1 << 20;

/// The (soft, hard) limit the agent was started with, once raised.
static STARTED_WITH: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises the soft limit of open files to the hard one; (before, now).
pub fn raise() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = STARTED_WITH.set((soft, hard));
    let wanted = hard.min(CEILING).max(soft);
    if wanted > soft {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?;
    }
    Ok((soft, wanted))
}

/// Gives a child the limit the agent was started with (nothing to do if it was never raised).
pub fn as_started(cmd: &mut tokio::process::Command) {
    if let Some(&(soft, hard)) = STARTED_WITH.get() {
        // SAFETY: setrlimit(2) is async-signal-safe, and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agent_gets_the_hard_limit_and_its_children_the_limit_it_started_with() {
        let (before, now) = raise().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, now);
        assert!(now >= before && (now == hard || now == CEILING), "{before} -> {now} (hard {hard})");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "ulimit -n"]);
        as_started(&mut cmd);
        let out = cmd.output().await.unwrap();
        let started = STARTED_WITH.get().unwrap().0;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), started.to_string());
    }
}
