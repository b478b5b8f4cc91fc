//! Whether this machine can run the lab: root tests skip, loudly, where it cannot.

use std::process::{Command, Stdio};

/// Returns true, and says why on stderr, when `test` cannot run here: the effective user is not root
/// or iproute2's `ip` is missing. Root tests start with `if skip_unless_root("name") { return; }`.
pub fn skip_unless_root(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: needs root (run as root, as CI does)");
        return true;
    }
    let has_ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_ip {
        eprintln!("skipped {test}: needs root and iproute2's `ip` command (apt-get install iproute2)");
        return true;
    }
    false
}

/// A child process killed (and reaped) when the guard drops, so a test that fails half way leaves no helper
/// process behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
