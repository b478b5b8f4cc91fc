//! Real rsync runs between temporary directories: what a vserver's tree holds arrives whole, a same-second
//! rewrite is not missed, failures and kills are reported as such, progress and totals are read.
//!
//! Each test owns its directories (unique temporary ones), so they run in parallel. Tests that need root
//! (owners, device nodes) or a feature of the file system under the temporary directory (ACLs, immutable
//! flags) say why they skip when it is missing.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use failover::rsync::{self, Job, Progress, RsyncError};

/// A source and a destination directory, removed at the end even when a test fails, immutable flags
/// included.
struct Scratch {
    dir: tempfile::TempDir,
    flagged: Vec<PathBuf>,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("failover-rsync-").tempdir().unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        Scratch { dir, flagged: Vec::new() }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn dst(&self) -> PathBuf {
        self.dir.path().join("dst")
    }

    /// `src/` into `dst/`: the content of the tree, as replication copies it.
    fn job(&self) -> Job {
        Job::new(vec![slash(&self.src())], format!("{}/", self.dst().display()))
    }

    /// `chattr +FLAGS path`; false if the file system does not support it.
    fn chattr(&mut self, flags: &str, path: &Path) -> bool {
        let ok = Command::new("chattr").arg(format!("+{flags}")).arg(path).status().is_ok_and(|s| s.success());
        if ok {
            self.flagged.push(path.to_path_buf());
        }
        ok
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in &self.flagged {
            let _ = Command::new("chattr").arg("-ia").arg(path).status();
        }
    }
}

/// Waits until no process is left in the process group `pid` (its last members may need a moment to be
/// reaped by init).
fn gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), None).is_ok() {
        assert!(Instant::now() < deadline, "processes of the run are left");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn slash(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push("/");
    s.into()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

fn run(job: &Job) -> rsync::Outcome {
    let outcome = job.run(|_| {}).unwrap();
    assert_eq!(outcome.exit_code, 0, "{}: {}", outcome.explain(), outcome.stderr_tail);
    outcome
}

#[test]
fn hard_links_symlinks_and_sparse_files_arrive_as_they_are() {
    let s = Scratch::new();
    let src = s.src();
    write(&src.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
    fs::hard_link(src.join("etc/passwd"), src.join("etc/passwd.link")).unwrap();
    fs::create_dir_all(src.join("var/backups")).unwrap();
    fs::hard_link(src.join("etc/passwd"), src.join("var/backups/passwd")).unwrap();
    std::os::unix::fs::symlink("passwd", src.join("etc/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/does-not-exist", src.join("etc/dangling")).unwrap();
    // 64 MiB of which only the last 4 KiB are written.
    let sparse = File::create(src.join("var/sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, &[7u8; 4096], (64 << 20) - 4096).unwrap();
    drop(sparse);

    let outcome = run(&s.job());

    let dst = s.dst();
    let (a, b, c) = (
        fs::metadata(dst.join("etc/passwd")).unwrap(),
        fs::metadata(dst.join("etc/passwd.link")).unwrap(),
        fs::metadata(dst.join("var/backups/passwd")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 3), "hard links are one file");
    assert_eq!(a.ino(), c.ino(), "even across directories");
    assert_eq!(fs::read_link(dst.join("etc/relative")).unwrap(), Path::new("passwd"));
    assert_eq!(fs::read_link(dst.join("etc/dangling")).unwrap(), Path::new("/etc/does-not-exist"));
    let sparse = fs::metadata(dst.join("var/sparse")).unwrap();
    assert_eq!(sparse.len(), 64 << 20);
    assert!(sparse.blocks() * 512 < 1 << 20, "the copy holds {} bytes of blocks", sparse.blocks() * 512);
    assert_eq!(fs::read(dst.join("var/sparse")).unwrap()[(64 << 20) - 1], 7);
    // The totals, as rsync counted them: 5 directories (src itself too), 3 regular files, 2 links.
    let stats = outcome.stats.unwrap();
    assert_eq!((stats.files, stats.regular_files_transferred), (10, 2), "{stats:?}");
    assert_eq!(stats.total_file_size, (64 << 20) + 26 * 3 + 6 + 19);
}

#[test]
fn owners_modes_xattrs_acls_and_devices_arrive_as_they_are() {
    let s = Scratch::new();
    let src = s.src();
    write(&src.join("usr/bin/tool"), b"#!/bin/sh\n");
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(&src.join("home/data"), b"data");
    xattr::set(src.join("home/data"), "user.origin", b"web").unwrap();
    // An ACL written as the kernel stores it (the file system's own format; setfacl is not needed): owner
    // rw, user 4242 r, group r, mask r, others nothing.
    let acl = posix_acl(&[
        (0x01, 6, u32::MAX),
        (0x02, 4, 4242),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    let acls = match xattr::set(src.join("home/data"), "system.posix_acl_access", &acl) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping the ACL check: the file system under {} refuses ACLs ({e})", src.display());
            false
        }
    };
    if is_root() {
        std::os::unix::fs::chown(src.join("home/data"), Some(12345), Some(54321)).unwrap();
        std::os::unix::fs::lchown(src.join("usr/bin/tool"), Some(0), Some(4242)).unwrap();
        fs::create_dir_all(src.join("dev")).unwrap();
        let dev = |major, minor| nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(
            &src.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            dev(1, 3),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &src.join("dev/loop9"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            dev(7, 9),
        )
        .unwrap();
        nix::unistd::mkfifo(&src.join("dev/initctl"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    } else {
        eprintln!("skipping owners and device nodes: they need root");
    }
    // After the chown, which clears the set-user-id bit.
    fs::set_permissions(src.join("usr/bin/tool"), fs::Permissions::from_mode(0o4750)).unwrap();

    run(&s.job());

    let dst = s.dst();
    let mode = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap().mode();
    assert_eq!(mode("usr/bin/tool") & 0o7777, 0o4750);
    assert_eq!(mode("tmp") & 0o7777, 0o1777);
    assert_eq!(xattr::get(dst.join("home/data"), "user.origin").unwrap().as_deref(), Some(&b"web"[..]));
    if acls {
        let copied = xattr::get(dst.join("home/data"), "system.posix_acl_access").unwrap().expect("the ACL");
        assert_eq!(copied, acl);
    }
    if is_root() {
        let data = fs::metadata(dst.join("home/data")).unwrap();
        assert_eq!((data.uid(), data.gid()), (12345, 54321), "owners as numbers");
        assert_eq!(fs::metadata(dst.join("usr/bin/tool")).unwrap().gid(), 4242);
        let null = fs::symlink_metadata(dst.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        let loop9 = fs::symlink_metadata(dst.join("dev/loop9")).unwrap();
        assert!(loop9.file_type().is_block_device());
        assert_eq!(loop9.rdev(), nix::sys::stat::makedev(7, 9));
        assert!(fs::symlink_metadata(dst.join("dev/initctl")).unwrap().file_type().is_fifo());
    }
}

/// A POSIX ACL in its extended attribute form: a version, then (tag, permissions, id) entries.
fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut bytes = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        bytes.extend(tag.to_le_bytes());
        bytes.extend(perm.to_le_bytes());
        bytes.extend(id.to_le_bytes());
    }
    bytes
}

#[test]
fn the_copy_loses_what_the_source_no_longer_has() {
    let s = Scratch::new();
    write(&s.src().join("keep"), b"k");
    write(&s.dst().join("stale/file"), b"old");
    write(&s.dst().join("gone"), b"old");
    let outcome = run(&s.job());
    assert!(s.dst().join("keep").exists());
    assert!(!s.dst().join("stale").exists() && !s.dst().join("gone").exists());
    assert_eq!(outcome.stats.unwrap().deleted_files, 3);
}

#[test]
fn a_same_size_rewrite_within_the_same_second_is_copied() {
    let s = Scratch::new();
    let file = s.src().join("counter");
    let second = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let set_mtime = |nanos: u32| {
        File::options().write(true).open(&file).unwrap().set_modified(second + Duration::new(0, nanos)).unwrap();
    };
    write(&file, b"1111");
    set_mtime(100_000_000);
    // Two copies made by the same first sync.
    let ours = s.job();
    let whole_seconds = Job {
        extra_args: vec!["--modify-window=0".into()],
        ..Job::new(vec![slash(&s.src())], format!("{}/", s.dir.path().join("seconds").display()))
    };
    run(&ours);
    run(&whole_seconds);
    // Rewritten with the same size, 0.5 s later within the same second.
    write(&file, b"2222");
    set_mtime(600_000_000);

    run(&whole_seconds);
    run(&ours);

    assert_eq!(
        fs::read(s.dir.path().join("seconds/counter")).unwrap(),
        b"1111",
        "comparing whole seconds (rsync's default) misses the rewrite: the test would prove nothing"
    );
    assert_eq!(fs::read(s.dst().join("counter")).unwrap(), b"2222");
    let mtime = fs::metadata(s.dst().join("counter")).unwrap().modified().unwrap();
    assert_eq!(mtime, second + Duration::new(0, 600_000_000), "the modification time to the nanosecond");
}

#[test]
fn a_missing_source_is_a_partial_transfer() {
    let s = Scratch::new();
    write(&s.src().join("a"), b"a");
    let job = Job { sources: vec![slash(&s.src()), s.dir.path().join("no-such-directory")], live: true, ..s.job() };
    let outcome = job.run(|_| {}).unwrap();
    assert_eq!(outcome.exit_code, 23, "{}", outcome.stderr_tail);
    assert!(!outcome.accepted(), "23 is never accepted, even on a live pass");
    assert!(outcome.explain().contains("partial transfer"), "{}", outcome.explain());
    assert!(outcome.stderr_tail.contains("no-such-directory"), "{}", outcome.stderr_tail);
    assert!(outcome.stderr_tail.contains("(code 23)"), "{}", outcome.stderr_tail);
    assert!(outcome.stats.is_some(), "rsync prints its totals after a partial transfer");
}

#[test]
fn a_destination_that_cannot_be_written_is_a_partial_transfer() {
    let mut s = Scratch::new();
    write(&s.src().join("locked/new-file"), b"new");
    fs::create_dir_all(s.dst().join("locked")).unwrap();
    let locked = s.dst().join("locked");
    if !s.chattr("i", &locked) {
        eprintln!("skipping: chattr +i does not work under {} (no such flag on this file system)", locked.display());
        return;
    }
    let outcome = s.job().run(|_| {}).unwrap();
    assert_eq!(outcome.exit_code, 23, "{}", outcome.stderr_tail);
    assert!(outcome.stderr_tail.contains("Operation not permitted"), "{}", outcome.stderr_tail);
}

#[test]
fn files_vanishing_during_a_live_pass_are_accepted_only_there() {
    let s = Scratch::new();
    for i in 0..20 {
        write(&s.src().join(format!("f{i:02}")), &[i as u8; 128 << 10]);
    }
    // 1 MiB/s: the 20 files take 2.5 s, and the last ones are removed after the first has arrived.
    let job = Job { live: true, extra_args: vec!["--bwlimit=1024".into()], ..s.job() };
    let mut removed = false;
    let outcome = job
        .run(|_| {
            if !removed {
                removed = true;
                for i in 15..20 {
                    fs::remove_file(s.src().join(format!("f{i:02}"))).unwrap();
                }
            }
        })
        .unwrap();
    assert_eq!(outcome.exit_code, 24, "{}", outcome.stderr_tail);
    assert!(outcome.stderr_tail.contains("vanished"), "{}", outcome.stderr_tail);
    assert!(outcome.accepted(), "a live pass accepts vanished files");
    assert!(!rsync::accepted(24, false), "a frozen pass does not");
    assert!(outcome.explain().contains("vanished"));
}

#[test]
fn progress_grows_while_50_mib_are_copied() {
    let s = Scratch::new();
    for i in 0..50 {
        write(&s.src().join(format!("d{}/f{i}", i % 5)), &vec![i as u8; 1 << 20]);
    }
    let job = Job { extra_args: vec!["--bwlimit=25600".into()], ..s.job() };
    let mut seen: Vec<Progress> = Vec::new();
    let outcome = job.run(|p| seen.push(p)).unwrap();
    assert_eq!(outcome.exit_code, 0, "{}", outcome.stderr_tail);
    assert!(seen.len() >= 5, "{} progress calls: {seen:?}", seen.len());
    assert!(seen.windows(2).all(|w| w[0].bytes <= w[1].bytes), "{seen:?}");
    assert!(seen.first().unwrap().bytes < seen.last().unwrap().bytes);
    let last = seen.last().unwrap();
    assert_eq!(last.bytes, 50 << 20);
    assert_eq!((last.percent, last.files_transferred, last.list_complete), (100, Some(50), Some(true)));
    assert!(seen.iter().any(|p| p.rate.is_some_and(|r| r > 0.0)));
    let stats = outcome.stats.unwrap();
    assert_eq!((stats.files, stats.regular_files_transferred), (56, 50));
    assert_eq!(
        (stats.total_file_size, stats.total_transferred_file_size, stats.literal_data),
        (50 << 20, 50 << 20, 50 << 20)
    );
    assert!(stats.total_bytes_sent >= 50 << 20);
}

#[test]
fn a_killed_run_returns_promptly_saying_so() {
    let s = Scratch::new();
    write(&s.src().join("big"), &vec![1u8; 50 << 20]);
    // 2 MiB/s: 25 s if left alone.
    let job = Job { extra_args: vec!["--bwlimit=2048".into()], ..s.job() };
    let running = job.start().unwrap();
    let (killer, pid) = (running.killer(), running.pid());
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || running.wait(|p| tx.send(p.bytes).unwrap_or(())));
    // Mid-run: once data moves.
    while rx.recv_timeout(Duration::from_secs(10)).expect("some progress before the kill") == 0 {}
    let killed_at = Instant::now();
    killer.kill();
    let result = waiter.join().unwrap();
    let took = killed_at.elapsed();
    assert!(took < rsync::KILL_GRACE, "the kill took {took:?}");
    match result {
        Err(e @ RsyncError::Killed { requested: true, .. }) => {
            assert!(e.to_string().contains("killed on request"), "{e}");
        }
        other => panic!("not a kill: {other:?}"),
    }
    // No process of the run is left (once the last ones are reaped).
    gone(pid);
    killer.kill(); // after the end: nothing happens
                   // rsync removes its partial file on SIGTERM, but not always under load (it may be killed by its sibling
                   // first): the next run removes it (--delete) and completes the copy.
    let outcome = run(&s.job());
    let left: Vec<_> = fs::read_dir(s.dst()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["big"]);
    assert_eq!(fs::metadata(s.dst().join("big")).unwrap().len(), 50 << 20);
    assert!(outcome.stats.unwrap().deleted_files <= 1);
}

#[test]
fn a_remote_shell_is_one_argument_and_its_failure_is_explained() {
    let s = Scratch::new();
    write(&s.src().join("f"), b"through the shell");
    // A remote shell that runs the remote rsync here: `SHELL HOST rsync --server ...`.
    let job = Job {
        remote_shell: Some("sh -c 'shift; exec \"$@\"' remote-shell".into()),
        dest: format!("standby:{}/", s.dst().display()),
        ..s.job()
    };
    run(&job);
    assert_eq!(fs::read(s.dst().join("f")).unwrap(), b"through the shell");

    let broken = Job { remote_shell: Some("/nonexistent/vserver-tunnel --url http://h1:7070".into()), ..job };
    let outcome = broken.run(|_| {}).unwrap();
    assert!(!outcome.accepted());
    assert!(outcome.stderr_tail.contains("/nonexistent/vserver-tunnel"), "{}", outcome.stderr_tail);
    // 14 or 12, as rsync happens to notice first that the shell could not start or that it is gone.
    assert!([12, 14].contains(&outcome.exit_code), "exit {}: {}", outcome.exit_code, outcome.stderr_tail);
    assert!(outcome.explain().contains("remote shell"), "exit {}: {}", outcome.exit_code, outcome.explain());
}

#[test]
fn a_missing_rsync_binary_is_named_in_the_error() {
    let s = Scratch::new();
    let job = Job { rsync_bin: "/nonexistent/bin/rsync".into(), ..s.job() };
    let e = job.start().err().expect("no such binary").to_string();
    assert!(e.contains("cannot start rsync /nonexistent/bin/rsync"), "{e}");
    assert!(e.contains("No such file or directory"), "{e}");
}

#[test]
fn dropping_a_running_rsync_stops_it() {
    let s = Scratch::new();
    write(&s.src().join("big"), &vec![1u8; 20 << 20]);
    let running = Job { extra_args: vec!["--bwlimit=1024".into()], ..s.job() }.start().unwrap();
    let pid = running.pid();
    std::thread::sleep(Duration::from_millis(200));
    drop(running);
    gone(pid);
}
