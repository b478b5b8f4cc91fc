//! The flag scan on real files: flags set with `chattr` under the temporary directory are found, links are
//! not followed, devices and fifos are not opened, a file system mounted inside is not looked into.
//!
//! These need a file system with inode flags under the temporary directory (ext4, xfs, btrfs; not overlay)
//! and root for `chattr +i`/`+a` and the mount; they say why they skip otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use failover::fileflags::{scan, FlagReport};

/// A temporary tree, removed at the end even when a test fails: its immutable and append-only flags are
/// cleared and what was mounted in it is unmounted first.
struct Tree {
    dir: tempfile::TempDir,
    flagged: Vec<PathBuf>,
    mounts: Vec<PathBuf>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            dir: tempfile::Builder::new().prefix("failover-flags-").tempdir().unwrap(),
            flagged: Vec::new(),
            mounts: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn file(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, rel).unwrap();
        p
    }

    /// `chattr +FLAGS`; false when this file system or user cannot.
    fn chattr(&mut self, flags: &str, path: &Path) -> bool {
        let ok = Command::new("chattr").arg(format!("+{flags}")).arg(path).status().is_ok_and(|s| s.success());
        if ok {
            self.flagged.push(path.to_path_buf());
        }
        ok
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        for p in &self.flagged {
            let _ = Command::new("chattr").arg("-ia").arg(p).status();
        }
    }
}

fn flagged(report: &FlagReport) -> Vec<(String, String)> {
    report.flagged.iter().map(|(p, f)| (p.display().to_string(), f.clone())).collect()
}

fn pair(p: &str, f: &str) -> (String, String) {
    (p.to_string(), f.to_string())
}

#[test]
fn flags_set_with_chattr_are_reported_in_lsattr_letters() {
    let mut t = Tree::new();
    let shadow = t.file("etc/shadow");
    if !t.chattr("i", &shadow) {
        eprintln!(
            "skipping: chattr +i does not work under {} (file system without flags, or not root)",
            t.path("").display()
        );
        return;
    }
    let log = t.file("var/log/messages");
    assert!(t.chattr("a", &log));
    assert!(t.chattr("dA", &t.path("var/log")));
    t.file("usr/bin/plain");
    // A link to a flagged file is not followed; a fifo is not opened (it would block); a device neither.
    std::os::unix::fs::symlink("../etc/shadow", t.path("usr/shadow-link")).unwrap();
    nix::unistd::mkfifo(&t.path("usr/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let device = nix::unistd::geteuid().is_root()
        && nix::sys::stat::mknod(
            &t.path("usr/tape"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(9, 0),
        )
        .is_ok();

    let report = scan(t.dir.path());

    assert!(!report.unsupported);
    assert_eq!(flagged(&report), [pair("etc/shadow", "i"), pair("var/log", "dA"), pair("var/log/messages", "a")]);
    // The tree, etc, etc/shadow, var, var/log, var/log/messages, usr, usr/bin, usr/bin/plain.
    assert_eq!((report.checked, report.skipped), (9, 0), "{report:?}");
    let warning = report.warning().unwrap();
    assert!(warning.starts_with("3 file(s)") && warning.contains("etc/shadow (i)"), "{warning}");
    if !device {
        eprintln!("the device node case was not checked: it needs root");
    }
}

#[test]
fn a_file_system_mounted_inside_is_not_looked_into() {
    let mut t = Tree::new();
    let root_flagged = t.file("flagged");
    if !t.chattr("d", &root_flagged) {
        eprintln!("skipping: chattr +d does not work under {}", t.path("").display());
        return;
    }
    let mnt = t.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m"));
    if let Err(e) = mounted {
        eprintln!("skipping: cannot mount a tmpfs ({e}; it needs root)");
        return;
    }
    t.mounts.push(mnt.clone());
    let inside = t.file("mnt/inside");
    // tmpfs has had a few flags since Linux 6.0; if it has none here the case still holds.
    let _ = t.chattr("d", &inside);

    let report = scan(t.dir.path());

    assert_eq!(flagged(&report), [pair("flagged", "d")]);
    // The tree and `flagged`: neither the mount point (the tmpfs's root) nor what it holds.
    assert_eq!(report.checked, 2, "{report:?}");
}

/// The cost on a large tree: `cargo nextest run -p failover --test fileflags --run-ignored only
/// --no-capture`. 100,000 small files in 1,000 directories.
#[test]
#[ignore = "a measurement: makes 100,000 files"]
fn scanning_100k_files_is_cheap() {
    let t = Tree::new();
    let made = Instant::now();
    for d in 0..1000 {
        let dir = t.path(&format!("d{}/e{d}", d / 100));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), [b'x'; 100]).unwrap();
        }
    }
    eprintln!("made 100,000 files in {:?}", made.elapsed());
    for pass in ["first", "second"] {
        let started = Instant::now();
        let report = scan(t.dir.path());
        eprintln!("{pass} scan: {} checked in {:?}", report.checked, started.elapsed());
        assert_eq!(report.checked, 100_000 + 1000 + 10 + 1);
    }
}
