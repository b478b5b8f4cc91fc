//! Points in time on a standby of a vserver replicated continuously: a mistake inside the vserver (`rm -rf`)
//! reaches every standby within a batch, so a standby also keeps, every `points_every_secs`, a copy of its
//! current generation made of hard links, and the last `points_kept` of them.
//!
//! ```text
//! REPLICA_DIR/NAME/points/20261207T041503Z/tree/        hard links to the files of the generation's tree
//! REPLICA_DIR/NAME/points/20261207T041503Z/conf/        its NAME.conf (and NAME.sh), hard links too
//! REPLICA_DIR/NAME/points/20261207T041503Z/meta.json    a copy of the generation's record
//! ```
//!
//! A point is built under a name starting with a dot and renamed into place once whole, so a listed point is
//! always complete. Directories are made anew (mode, owner, extended attributes and times copied); every
//! other entry (files, symbolic links, devices, FIFOs, sockets) is a hard link, so a point costs a directory
//! entry per file and an inode per directory, not the data.
//!
//! Hard links are safe only because nothing ever writes into a replica's files in place: rsync writes a
//! changed file into a temporary file and renames it over the old name, which leaves the old inode (the
//! point's) as it was. The flags the agent gives rsync never include `--inplace` or `--append`
//! ([`crate::rsync::FLAGS`] and the passes' extra arguments; a test checks it), and the standby's end of the
//! tunnel refuses both. What rsync does change in place is an attribute of a file whose content did not
//! change (a `chmod`, `chown` or a new modification time alone): that reaches the points sharing the file,
//! which then show the newer attribute with the content of their instant.
//!
//! A host that starts the vserver from its replica (a takeover, a migrate to it) drops its points of that
//! vserver: the running tree's files would be the points' files, and a write into one would change them all
//! ([`retire`]). The other standbys keep theirs.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The part of a generation's record (`meta.json`, see `crate::store`) a point's listing shows.
#[derive(Deserialize)]
struct Record {
    source: String,
    started_unix_ms: u64,
}

/// The directory of a vserver's points, inside its replica directory.
pub const POINTS_DIR: &str = "points";

/// One point in time, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Its name: when it was made, UTC (`20261207T041503Z`).
    pub stamp: String,
    /// When the copy it was made of started on the primary (what it holds nothing newer than), ms since the
    /// Unix epoch.
    pub started_unix_ms: u64,
    /// The host the copy came from.
    pub source: String,
}

/// `unix_secs` as a point's name: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The Unix time a point's name stands for, if it is one.
pub fn parse_stamp(stamp: &str) -> Option<u64> {
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = stamp.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y, m as u32, d as u32);
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day counted from 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The points of the vserver whose replica directory is `vdir`, oldest first.
pub fn list(vdir: &Path) -> Vec<Point> {
    let Ok(entries) = fs::read_dir(vdir.join(POINTS_DIR)) else { return Vec::new() };
    let mut points: Vec<Point> = entries
        .flatten()
        .filter_map(|e| {
            let stamp = e.file_name().to_str()?.to_string();
            parse_stamp(&stamp)?;
            let meta: Record = serde_json::from_slice(&fs::read(e.path().join("meta.json")).ok()?).ok()?;
            Some(Point { stamp, started_unix_ms: meta.started_unix_ms, source: meta.source })
        })
        .collect();
    points.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    points
}

/// Whether a new point is due at `now`: none yet, or the newest is `every` old (or from the future: the clock
/// was set back).
pub fn due(vdir: &Path, every: Duration, now: SystemTime) -> bool {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let newest = list(vdir).last().and_then(|p| parse_stamp(&p.stamp));
    newest.is_none_or(|t| t > now || now - t >= every.as_secs())
}

/// Makes a point of the generation `generation` (a complete one: `tree/`, `conf/`, `meta.json`) of the vserver
/// whose replica directory is `vdir`, named after `now`. Returns its directory. A failure leaves no point
/// (what was begun is removed).
pub fn make(vdir: &Path, generation: &Path, now: SystemTime) -> io::Result<PathBuf> {
    let name = stamp(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let points = vdir.join(POINTS_DIR);
    fs::create_dir_all(&points)?;
    let done = points.join(&name);
    if done.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", done.display())));
    }
    let building = points.join(format!(".new-{name}"));
    remove_all(&building)?;
    let made = (|| {
        fs::create_dir(&building)?;
        link_tree(&generation.join("tree"), &building.join("tree"))?;
        link_tree(&generation.join("conf"), &building.join("conf"))?;
        fs::copy(generation.join("meta.json"), building.join("meta.json"))?;
        fs::rename(&building, &done)?;
        fs::File::open(&points)?.sync_all()
    })();
    if let Err(e) = made {
        let _ = remove_all(&building);
        return Err(e);
    }
    Ok(done)
}

/// Removes the oldest points beyond the newest `kept`, and what a point that was being made when its host
/// stopped left. Returns how many points it removed.
pub fn prune(vdir: &Path, kept: usize) -> io::Result<usize> {
    let points = vdir.join(POINTS_DIR);
    if let Ok(entries) = fs::read_dir(&points) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".new-") {
                remove_all(&e.path())?;
            }
        }
    }
    let listed = list(vdir);
    let excess = listed.len().saturating_sub(kept);
    for p in &listed[..excess] {
        remove_all(&points.join(&p.stamp))?;
    }
    Ok(excess)
}

/// Takes the points of a vserver out of the way, at once, when this host starts it from its replica (whose
/// files they share): renamed to a hidden name, then removed by a thread of their own (removing many links
/// takes a while, and the start must not wait for it). Returns whether there were any.
pub fn retire(vdir: &Path) -> io::Result<bool> {
    let points = vdir.join(POINTS_DIR);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let retired = vdir.join(format!(".points-retired-{nanos}"));
    match fs::rename(&points, &retired) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    std::thread::spawn(move || {
        if let Err(e) = remove_all(&retired) {
            tracing::warn!(dir = %retired.display(), error = %e, "cannot remove retired points in time");
        }
    });
    Ok(true)
}

/// Recreates the directory `from` at `to`: directories made anew with `from`'s mode, owner, extended
/// attributes and times, every other entry a hard link to `from`'s. Does not follow symbolic links.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            // link(2) makes a link to a symbolic link itself, not to what it points to.
            fs::hard_link(&src, &dst)?;
        }
    }
    copy_dir_attributes(from, to, &meta)
}

/// Gives the directory `to` the owner, mode, extended attributes and times of `from` (owner first: a change of
/// owner clears the set-id bits; times last: setting the others changes none of them, but creating entries
/// did).
fn copy_dir_attributes(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    for attr in xattr::list(from)? {
        if let Some(value) = xattr::get(from, &attr)? {
            xattr::set(to, &attr, &value)?;
        }
    }
    let times = fs::FileTimes::new().set_accessed(meta.accessed()?).set_modified(meta.modified()?);
    fs::File::open(to)?.set_times(times)
}

fn remove_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_read_back() {
        assert_eq!(stamp(0), "19700101T000000Z");
        // 2026-12-07 04:15:03 UTC.
        assert_eq!(stamp(1_796_616_903), "20261207T041503Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        for t in [0, 951_782_400, 1_796_616_903, 4_102_444_799] {
            assert_eq!(parse_stamp(&stamp(t)), Some(t));
        }
        for bad in ["", "20261207T041503", "2026120xT041503Z", "20261307T041503Z", ".new-20261207T041503Z"] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    fn generation(dir: &Path, content: &str) -> PathBuf {
        let g = dir.join("a");
        fs::create_dir_all(g.join("tree/data/sub")).unwrap();
        fs::create_dir_all(g.join("conf")).unwrap();
        fs::write(g.join("tree/data/log"), content).unwrap();
        std::os::unix::fs::symlink("/nowhere", g.join("tree/dangling")).unwrap();
        fs::set_permissions(g.join("tree/data/sub"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(g.join("conf/web.conf"), "IPROOT=\"\"\n").unwrap();
        let meta = r#"{"source":"h0","started_unix_ms":42,"finished_unix_ms":43,"conf_sha256":"","kind":"batch"}"#;
        fs::write(g.join("meta.json"), meta).unwrap();
        g
    }

    #[test]
    fn a_point_shares_the_files_and_outlives_a_rename_over_them() {
        let dir = tempfile::tempdir().unwrap();
        let vdir = dir.path().join("web");
        let g = generation(&vdir, "1\n2\n");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_796_616_903);
        assert!(due(&vdir, Duration::from_secs(900), t0), "no point yet");
        let p = make(&vdir, &g, t0).unwrap();
        assert_eq!(p, vdir.join("points/20261207T041503Z"));
        let (a, b) = (fs::metadata(g.join("tree/data/log")).unwrap(), fs::metadata(p.join("tree/data/log")).unwrap());
        assert_eq!(a.ino(), b.ino(), "a hard link, not a copy");
        assert_eq!(fs::read_link(p.join("tree/dangling")).unwrap(), Path::new("/nowhere"));
        assert_eq!(fs::metadata(p.join("tree/data/sub")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(
            list(&vdir),
            vec![Point { stamp: "20261207T041503Z".into(), started_unix_ms: 42, source: "h0".into() }]
        );
        // What rsync does with a changed file: a new file renamed over the name. The point keeps its content.
        fs::write(g.join("tree/data/.log.tmp"), "1\n2\n3\n").unwrap();
        fs::rename(g.join("tree/data/.log.tmp"), g.join("tree/data/log")).unwrap();
        assert_eq!(fs::read_to_string(p.join("tree/data/log")).unwrap(), "1\n2\n");
        assert!(!due(&vdir, Duration::from_secs(900), t0 + Duration::from_secs(899)));
        assert!(due(&vdir, Duration::from_secs(900), t0 + Duration::from_secs(900)));
        assert!(due(&vdir, Duration::from_secs(900), t0 - Duration::from_secs(5)), "the clock was set back");
        assert!(make(&vdir, &g, t0).is_err(), "one point per second at most");
    }

    #[test]
    fn prune_keeps_the_newest_and_clears_half_made_ones() {
        let dir = tempfile::tempdir().unwrap();
        let vdir = dir.path().join("web");
        let g = generation(&vdir, "x\n");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_796_616_903);
        for i in 0..4 {
            make(&vdir, &g, t0 + Duration::from_secs(60 * i)).unwrap();
        }
        fs::create_dir_all(vdir.join("points/.new-20261207T050000Z/tree")).unwrap();
        assert_eq!(prune(&vdir, 2).unwrap(), 2);
        let left: Vec<String> = list(&vdir).into_iter().map(|p| p.stamp).collect();
        assert_eq!(left, ["20261207T041703Z", "20261207T041803Z"]);
        assert!(!vdir.join("points/.new-20261207T050000Z").exists());
        assert_eq!(fs::read_to_string(g.join("tree/data/log")).unwrap(), "x\n", "the generation is untouched");
        assert!(retire(&vdir).unwrap());
        assert!(list(&vdir).is_empty());
        assert!(!retire(&vdir).unwrap());
    }

    #[test]
    fn nothing_the_replication_passes_run_writes_in_place() {
        for flag in crate::rsync::FLAGS {
            assert!(!flag.contains("inplace") && !flag.contains("append"), "{flag}");
        }
    }
}
