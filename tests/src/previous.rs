//! Earlier releases' binaries, for rolling-upgrade tests: their sources taken from this repository's history
//! (`git archive` of a commit) and built once, in debug, beside this build's binaries
//! (`target/debug/previous-release/COMMIT/bin`); later runs reuse them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// The release before the cluster's wire moved to TLS: what the TLS upgrade test starts from.
pub const PREVIOUS_RELEASE: &str = "8d064e4797cea2ff0a85894a2119dd958d070c4b";

/// The last release that landed (the hub, before hosts could be added and removed through the cluster): what the
/// rolling-upgrade test of an eight-host cluster starts from.
pub const LAST_RELEASE: &str = "f2df48db2d24624175071066bdefa87f05e7644e";

/// The binaries every host runs.
const BINARIES: [&str; 4] = ["vserver-agent", "vserver", "vserver-tunnel", "vserver-watchdog"];

/// The directory holding [`PREVIOUS_RELEASE`]'s binaries (see [`binaries_of`]).
pub fn binaries() -> Result<PathBuf> {
    binaries_of(PREVIOUS_RELEASE)
}

/// The directory holding the `vserver-agent`, `vserver`, `vserver-tunnel` and `vserver-watchdog` of the release
/// at `commit`, built if they are not there yet (a few minutes the first time).
pub fn binaries_of(commit: &str) -> Result<PathBuf> {
    let here = crate::agents::agent_bin().context("no vserver-agent beside this executable")?;
    let base = here.parent().context("the binaries' directory")?.join("previous-release").join(commit);
    let bin = base.join("bin");
    if BINARIES.iter().all(|b| bin.join(b).is_file()) {
        return Ok(bin);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("the repository")?.to_path_buf();
    let src = base.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    // A shallow clone may lack the commit: fetch it from where the clone came from.
    let present = |repo: &std::path::Path| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !present(&repo) {
        let _ = Command::new("git").arg("-C").arg(&repo).args(["fetch", "--quiet", "--unshallow"]).status();
        let _ = Command::new("git").arg("-C").arg(&repo).args(["fetch", "--quiet", "origin", commit]).status();
    }
    let archive = Command::new("git")
        .args(["-C"])
        .arg(&repo)
        .args(["archive", "--format=tar", commit])
        .output()
        .context("running git archive")?;
    ensure!(
        archive.status.success(),
        "git archive {commit} in {}: {}",
        repo.display(),
        String::from_utf8_lossy(&archive.stderr)
    );
    let tar = base.join("src.tar");
    std::fs::write(&tar, &archive.stdout)?;
    let untar = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&src).status()?;
    ensure!(untar.success(), "unpacking the previous release's sources");
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", base.join("target"))
        .args(["build", "--locked", "-p", "node-agent", "--bins"])
        .output()
        .context("running cargo build")?;
    ensure!(build.status.success(), "building the release at {commit}: {}", String::from_utf8_lossy(&build.stderr));
    std::fs::create_dir_all(&bin)?;
    for b in BINARIES {
        std::fs::copy(base.join("target/debug").join(b), bin.join(b)).with_context(|| format!("copying {b}"))?;
    }
    let _ = std::fs::remove_dir_all(base.join("target"));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_file(&tar);
    Ok(bin)
}
