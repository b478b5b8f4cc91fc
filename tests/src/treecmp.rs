//! Comparing two trees the way a replica must match its source: the same entries with the same type, mode,
//! owner, size, modification time (to the nanosecond), content, link target, device number, extended
//! attributes (so POSIX ACLs too), and the same hard-link groups. Sparse files must stay sparse.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One entry as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    link: Option<PathBuf>,
    content: Option<[u8; 32]>,
    xattrs: BTreeMap<String, Vec<u8>>,
    blocks: u64,
    inode: (u64, u64),
    nlink: u64,
}

fn kind(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

fn digest(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn scan(root: &Path) -> Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let ft = meta.file_type();
        let mut xattrs = BTreeMap::new();
        if !ft.is_symlink() {
            for attr in xattr::list(&path).with_context(|| format!("listing xattrs of {}", path.display()))? {
                let name = attr.to_string_lossy().to_string();
                let value = xattr::get(&path, &attr)?.unwrap_or_default();
                xattrs.insert(name, value);
            }
        }
        let entry = Entry {
            kind: kind(&ft),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if ft.is_dir() { 0 } else { meta.size() },
            mtime: if ft.is_dir() { (0, 0) } else { (meta.mtime(), meta.mtime_nsec()) },
            rdev: meta.rdev(),
            link: ft.is_symlink().then(|| fs::read_link(&path)).transpose()?,
            content: if ft.is_file() { Some(digest(&path)?) } else { None },
            xattrs,
            blocks: meta.blocks(),
            inode: (meta.dev(), meta.ino()),
            nlink: meta.nlink(),
        };
        if ft.is_dir() {
            for child in fs::read_dir(&path)? {
                stack.push(rel.join(child?.file_name()));
            }
        }
        out.insert(rel, entry);
    }
    Ok(out)
}

/// The differences between tree `a` (the source) and tree `b` (its copy), one sentence each; empty when
/// `b` is an exact copy.
pub fn compare(a: &Path, b: &Path) -> Result<Vec<String>> {
    let (ta, tb) = (scan(a)?, scan(b)?);
    let mut diffs = Vec::new();
    for (rel, ea) in &ta {
        let Some(eb) = tb.get(rel) else {
            diffs.push(format!("{}: missing from the copy", rel.display()));
            continue;
        };
        let fields: [(&str, bool); 9] = [
            ("type", ea.kind == eb.kind),
            ("mode", ea.mode == eb.mode),
            ("owner", (ea.uid, ea.gid) == (eb.uid, eb.gid)),
            ("size", ea.size == eb.size),
            ("mtime", ea.mtime == eb.mtime),
            ("device", ea.rdev == eb.rdev),
            ("link target", ea.link == eb.link),
            ("content", ea.content == eb.content),
            ("xattrs", ea.xattrs == eb.xattrs),
        ];
        for (what, same) in fields {
            if !same {
                diffs.push(format!("{}: {what} differs ({ea:?} vs {eb:?})", rel.display()));
            }
        }
        // A sparse source stays sparse: the copy allocates no more than the source plus a little slack.
        if ea.kind == "file" && eb.blocks > ea.blocks + 64 {
            diffs.push(format!(
                "{}: {} blocks in the copy, {} in the source (not sparse)",
                rel.display(),
                eb.blocks,
                ea.blocks
            ));
        }
    }
    for rel in tb.keys().filter(|r| !ta.contains_key(*r)) {
        diffs.push(format!("{}: only in the copy", rel.display()));
    }
    // Hard links: the same groups of paths share an inode on both sides.
    let groups = |t: &BTreeMap<PathBuf, Entry>| {
        let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
        for (rel, e) in t.iter().filter(|(_, e)| e.kind != "dir" && e.nlink > 1) {
            by_inode.entry(e.inode).or_default().push(rel.clone());
        }
        let mut g: Vec<Vec<PathBuf>> = by_inode.into_values().filter(|v| v.len() > 1).collect();
        g.sort();
        g
    };
    let (ga, gb) = (groups(&ta), groups(&tb));
    if ga != gb {
        diffs.push(format!("hard links differ: {ga:?} vs {gb:?}"));
    }
    Ok(diffs)
}

/// Fills `root` with one of everything a root file system holds that a copy can get wrong: hard links, a
/// symlink, a sparse file, a user xattr, a POSIX ACL, device nodes, a fifo, odd owners and modes, and a file
/// with a nanosecond modification time.
pub fn fill_awkward(root: &Path) -> Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let d = root.join("awkward");
    fs::create_dir_all(&d)?;
    fs::write(d.join("linked"), "one inode, two names\n")?;
    fs::hard_link(d.join("linked"), d.join("linked-too"))?;
    symlink("linked", d.join("symlink"))?;
    let sparse = fs::File::create(d.join("sparse"))?;
    sparse.set_len(64 << 20)?;
    fs::write(d.join("xattr"), "has an xattr\n")?;
    xattr::set(d.join("xattr"), "user.replica", b"kept")?;
    // A POSIX ACL (user 4242 may read), in the kernel's xattr form: version 2, then (tag, perm, id) entries.
    fs::write(d.join("acl"), "has an ACL\n")?;
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(0x01u16, 6u16, u32::MAX), (0x02, 4, 4242), (0x04, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
    {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    xattr::set(d.join("acl"), "system.posix_acl_access", &acl)?;
    let mk = |name: &str, kind: nix::sys::stat::SFlag, dev: u64| {
        nix::sys::stat::mknod(&d.join(name), kind, nix::sys::stat::Mode::from_bits_truncate(0o640), dev)
            .with_context(|| format!("mknod {name}"))
    };
    mk("char-dev", nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::makedev(1, 3))?;
    mk("block-dev", nix::sys::stat::SFlag::S_IFBLK, nix::sys::stat::makedev(7, 200))?;
    mk("fifo", nix::sys::stat::SFlag::S_IFIFO, 0)?;
    fs::write(d.join("owned"), "owned by 1234:5678, mode 4750\n")?;
    nix::unistd::chown(&d.join("owned"), Some(1234.into()), Some(5678.into()))?;
    fs::set_permissions(d.join("owned"), fs::Permissions::from_mode(0o4750))?;
    fs::write(d.join("nanos"), "modified at a nanosecond\n")?;
    let t = nix::sys::time::TimeSpec::new(1_700_000_000, 123_456_789);
    nix::sys::stat::utimensat(None, &d.join("nanos"), &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}
