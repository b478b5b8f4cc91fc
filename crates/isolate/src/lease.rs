//! This host's lease as each vserver's keeper reads it, in `RUN_DIR/lease`: one line, `until MS` (the
//! lease ends at MS on the host's boot-time clock, `CLOCK_BOOTTIME`, which also counts a suspend) or
//! `unguarded` (no lease applies: no cluster, automatic takeover off, maintenance). The agent writes it as
//! its lease moves; a keeper whose vserver is still running when the time written there has passed kills it
//! (see `context`), so a host whose agent and watchdog are both gone (killed, frozen, hung) still stops its
//! vservers when its lease ends, before another host may take them over. A missing or unreadable file is
//! `unguarded`: a host without an agent runs its vservers as it always did.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLease {
    /// No lease applies to this host's vservers now.
    Unguarded,
    /// The lease ends at this time of the boot-time clock, in ms.
    Until(u64),
}

impl HostLease {
    /// A lease ending `left` from now.
    pub fn ending_in(left: Duration) -> Self {
        Self::Until(boottime_ms().saturating_add(left.as_millis() as u64))
    }

    /// How long until it ends: `None` when unguarded, zero when over.
    pub fn left(self) -> Option<Duration> {
        match self {
            Self::Unguarded => None,
            Self::Until(end) => Some(Duration::from_millis(end.saturating_sub(boottime_ms()))),
        }
    }
}

/// The file of `run_dir`.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("lease")
}

/// Now on the boot-time clock, in ms.
pub fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1000) + (t.tv_nsec() as u64) / 1_000_000)
        .unwrap_or(0)
}

/// Reads the file; anything but a well-formed line is [`HostLease::Unguarded`].
pub fn read(run_dir: &Path) -> HostLease {
    let Ok(text) = std::fs::read_to_string(path(run_dir)) else { return HostLease::Unguarded };
    match text.trim().strip_prefix("until ").map(str::parse::<u64>) {
        Some(Ok(ms)) => HostLease::Until(ms),
        _ => HostLease::Unguarded,
    }
}

/// Writes the file whole (a temporary file, then a rename), so a keeper never reads half of it.
pub fn write(run_dir: &Path, lease: HostLease) -> std::io::Result<()> {
    let text = match lease {
        HostLease::Unguarded => "unguarded\n".to_string(),
        HostLease::Until(ms) => format!("until {ms}\n"),
    };
    std::fs::create_dir_all(run_dir)?;
    let file = path(run_dir);
    // One temporary file per writer: two writers never write into the same file, nor rename the other's half.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp.{}.{n}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_anything_else_is_unguarded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), HostLease::Unguarded, "no file");
        let lease = HostLease::ending_in(Duration::from_secs(60));
        write(dir.path(), lease).unwrap();
        assert_eq!(read(dir.path()), lease);
        assert!(lease.left().unwrap() > Duration::from_secs(59));
        write(dir.path(), HostLease::Unguarded).unwrap();
        assert_eq!(read(dir.path()), HostLease::Unguarded);
        std::fs::write(path(dir.path()), "until soon\n").unwrap();
        assert_eq!(read(dir.path()), HostLease::Unguarded);
        assert_eq!(HostLease::Until(0).left(), Some(Duration::ZERO), "over");
    }
}
