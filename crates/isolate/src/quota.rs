//! The disk quota of a vserver's tree (LIMIT_DISK), kept by a project quota of the file system holding it.
//!
//! A project quota counts the blocks of every inode carrying one project id, wherever it sits on the file
//! system. So the tree is given an id of its own: every directory and regular file of it gets the id, the
//! directories with the inherit flag (`FS_XFLAG_PROJINHERIT`) so that whatever is created in them later gets it
//! too, then the block limit is set for that id (`quotactl_fd`, Linux 5.14 and later, which needs no block
//! device name). ext4 (features `quota,project`, mounted with `prjquota`) and xfs (mounted with `pquota`) have
//! them; on any other file system, or one mounted without them, a start with LIMIT_DISK is refused, never run
//! without the quota.
//!
//! **The id.** A tree keeps the id its root directory carries: the root's project id *is* the record of the
//! assignment, kept by the file system itself, moving with the tree on a rename and surviving reboots. A tree
//! whose root has none (project 0) gets the inode number of its root: unique among the live directories of its
//! file system, so two trees there never share an id, and stable for the life of the tree. An inode number
//! beyond 32 bits (xfs with `inode64`) is folded to 32 bits; an id chosen that way that already counts files
//! elsewhere on the file system (an id given by hand, or a fold that collides) is passed over for the next one.
//!
//! **The walk.** Labelling an existing tree is done once: the root first gets the id *without* the inherit flag,
//! then every directory and regular file below it (never crossing into another mount, never following a
//! symbolic link, never opening a device or a FIFO), and the root's inherit flag last. A root with the id and the
//! flag is a tree labelled in full, and the walk is skipped; a walk cut short is done again at the next start.
//!
//! Without LIMIT_DISK, a limit left on the tree's id by an earlier start is lifted: the conf owns the quota.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use serde::{Deserialize, Serialize};

/// `FS_XFLAG_PROJINHERIT`: files and directories created in a directory with it get its project id.
const PROJECT_INHERIT: u32 = 0x200;
/// Flags of `Q_XGETQSTATV`: project quota usage is accounted.
const PROJECT_ACCOUNTED: u16 = 1 << 4;
/// Flags of `Q_XGETQSTATV`: project quota limits are enforced.
const PROJECT_ENFORCED: u16 = 1 << 5;
/// The unit of quota block limits (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;
/// How many ids after the one derived from the root's inode are tried when it already counts files.
const ID_TRIES: u32 = 64;

/// Why a tree's disk quota could not be set.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The tree's root could not be opened.
    #[error("cannot open {path} to set its disk quota: {source}")]
    Open {
        /// The tree.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file system holding the tree does not enforce project quotas.
    #[error(
        "cannot enforce LIMIT_DISK on {path}: its file system ({fs}) {what}; {hint}; or remove LIMIT_DISK from \
         the conf to run without a disk quota"
    )]
    NotEnforced {
        /// The tree.
        path: PathBuf,
        /// The file system's type (`ext4`, `xfs`, `btrfs`...).
        fs: String,
        /// What it lacks, in words.
        what: &'static str,
        /// How to give it project quotas.
        hint: &'static str,
    },
    /// The kernel has no `quotactl_fd`.
    #[error(
        "cannot enforce LIMIT_DISK on {path}: this kernel has no quotactl_fd system call (it needs Linux 5.14 or \
         later); remove LIMIT_DISK from the conf to run without a disk quota"
    )]
    Kernel {
        /// The tree.
        path: PathBuf,
    },
    /// A quota call on the tree's file system failed.
    #[error("cannot {op} project quota {id} of {path}: {source}")]
    Quotactl {
        /// `read the state of`, `read`, `set the limit of`.
        op: &'static str,
        /// The project id.
        id: u32,
        /// The tree.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file or directory of the tree could not be given the tree's project id.
    #[error(
        "cannot give {path} the project id {id} of its tree (for LIMIT_DISK): {source} \
         (an immutable or append-only file must lose that flag first: chattr -i -a)"
    )]
    Label {
        /// The file or directory.
        path: PathBuf,
        /// The id.
        id: u32,
        /// The OS error.
        source: io::Error,
    },
    /// A directory of the tree could not be read.
    #[error("cannot read directory {path} to give its files the project id of the tree: {source}")]
    Walk {
        /// The directory or entry.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Every id tried already counts files elsewhere on the file system.
    #[error(
        "cannot find a free project id for {path}: ids {first} and the {tries} after it already count files \
         elsewhere on its file system; give the tree an unused id yourself (chattr -p ID {path}) and start again"
    )]
    NoFreeId {
        /// The tree.
        path: PathBuf,
        /// The first id tried.
        first: u32,
        /// How many more were tried.
        tries: u32,
    },
}

/// A tree's disk usage against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// The tree's project id.
    pub project: u32,
    /// Bytes its files hold.
    pub bytes: u64,
    /// Its limit in bytes; `None` when it has none.
    pub limit: Option<u64>,
}

/// Gives the tree at `root` a project quota of `limit` bytes (labelling the tree the first time), or, with no
/// limit, lifts one an earlier start left. Refuses ([`QuotaError::NotEnforced`], [`QuotaError::Kernel`]) when
/// a limit is asked for and the file system or kernel cannot enforce it. Without a limit it never fails.
pub fn apply(root: &Path, limit: Option<u64>) -> Result<(), QuotaError> {
    apply_with(&Linux, root, limit).map(drop)
}

/// The disk usage of the tree at `root` and its limit, when its file system accounts project quotas and the
/// tree has a project id; `None` otherwise (also when the caller may not read quotas: that needs root).
pub fn usage(root: &Path) -> Option<DiskUsage> {
    usage_with(&Linux, root)
}

/// What a file system is, for messages and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKind {
    Ext4,
    Xfs,
    /// Another type, by its `statfs` name or magic number.
    Other(&'static str),
}

impl FsKind {
    fn name(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
            Self::Other(name) => name,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Self::Ext4 => {
                "ext4 needs the quota and project features (mkfs.ext4 -O quota,project -I 256, or tune2fs -O \
                 quota,project on the unmounted device) and the prjquota mount option"
            }
            Self::Xfs => {
                "xfs needs the pquota (prjquota) mount option, on a kernel built with XFS quota support \
                 (CONFIG_XFS_QUOTA)"
            }
            Self::Other(_) => {
                "project quotas need ext4 (features quota,project, mounted with prjquota) or xfs (mounted with \
                 pquota): put the vservers' trees on one"
            }
        }
    }
}

/// Usage and limit of one project id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Quota {
    /// Bytes charged.
    bytes: u64,
    /// Inodes charged.
    inodes: u64,
    /// The block limit in bytes, if any.
    limit: Option<u64>,
}

impl Quota {
    /// Nothing on the file system carries the id.
    fn unused(&self) -> bool {
        self.bytes == 0 && self.inodes == 0
    }
}

/// The kernel's side of project quotas, so the decisions above it (which id, whether to walk, what to refuse)
/// are unit tested with a double; [`Linux`] makes the calls.
trait ProjectQuotas {
    /// Whether the kernel has `quotactl_fd`.
    fn has_quotactl_fd(&self) -> bool;
    /// The file system type of `fs`.
    fn fs_kind(&self, fs: BorrowedFd<'_>) -> FsKind;
    /// The `Q_XGETQSTATV` flags of the file system holding `fs` (0 when it has no quotas at all).
    fn state(&self, fs: BorrowedFd<'_>) -> io::Result<u16>;
    /// The project id of a file and whether it has the inherit flag.
    fn project(&self, file: BorrowedFd<'_>) -> io::Result<(u32, bool)>;
    /// Gives a file a project id, setting or clearing its inherit flag.
    fn set_project(&self, file: BorrowedFd<'_>, id: u32, inherit: bool) -> io::Result<()>;
    /// Usage and limit of a project id on the file system holding `fs`.
    fn quota(&self, fs: BorrowedFd<'_>, id: u32) -> io::Result<Quota>;
    /// Sets (or with `None` lifts) the block limit of a project id.
    fn set_limit(&self, fs: BorrowedFd<'_>, id: u32, limit: Option<u64>) -> io::Result<()>;
}

fn apply_with(ops: &impl ProjectQuotas, root: &Path, limit: Option<u64>) -> Result<Option<u32>, QuotaError> {
    let Some(bytes) = limit else {
        lift(ops, root);
        return Ok(None);
    };
    let dir = open_dir(root).map_err(|source| QuotaError::Open { path: root.to_path_buf(), source })?;
    let fs = dir.as_fd();
    if !ops.has_quotactl_fd() {
        return Err(QuotaError::Kernel { path: root.to_path_buf() });
    }
    let flags = match ops.state(fs) {
        Ok(flags) => flags,
        // No quota operations at all on this file system (or none built into the kernel for it).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOTTY)) => 0,
        Err(source) => {
            return Err(QuotaError::Quotactl { op: "read the state of", id: 0, path: root.to_path_buf(), source })
        }
    };
    if flags & PROJECT_ENFORCED == 0 || flags & PROJECT_ACCOUNTED == 0 {
        let kind = ops.fs_kind(fs);
        let what = if flags & PROJECT_ACCOUNTED != 0 {
            "accounts project quotas but does not enforce them"
        } else {
            "has no project quotas"
        };
        return Err(QuotaError::NotEnforced {
            path: root.to_path_buf(),
            fs: kind.name().into(),
            what,
            hint: kind.hint(),
        });
    }
    let (current, inherit) = ops.project(fs).map_err(label_error(root, 0))?;
    let id = match current {
        0 => free_id(ops, root, fs)?,
        id => id,
    };
    if current != id || !inherit {
        let labelled = label_tree(ops, root, fs, id)?;
        tracing::info!(tree = %root.display(), project = id, labelled, "the tree has its project id");
    }
    ops.set_limit(fs, id, Some(bytes)).map_err(|source| QuotaError::Quotactl {
        op: "set the limit of",
        id,
        path: root.to_path_buf(),
        source,
    })?;
    tracing::debug!(tree = %root.display(), project = id, bytes, "disk quota set");
    Ok(Some(id))
}

/// Lifts a limit left on the tree's id by an earlier start; quietly does nothing where there is none or the
/// file system has no project quotas.
fn lift(ops: &impl ProjectQuotas, root: &Path) {
    let Ok(dir) = open_dir(root) else { return };
    let fs = dir.as_fd();
    let Ok((id @ 1.., _)) = ops.project(fs) else { return };
    if !ops.has_quotactl_fd() || ops.state(fs).map_or(true, |f| f & PROJECT_ACCOUNTED == 0) {
        return;
    }
    if ops.quota(fs, id).is_ok_and(|q| q.limit.is_some()) {
        match ops.set_limit(fs, id, None) {
            Ok(()) => tracing::info!(tree = %root.display(), project = id, "LIMIT_DISK is gone: disk quota lifted"),
            Err(err) => tracing::warn!(tree = %root.display(), project = id, %err, "cannot lift the disk quota"),
        }
    }
}

fn usage_with(ops: &impl ProjectQuotas, root: &Path) -> Option<DiskUsage> {
    let dir = open_dir(root).ok()?;
    let fs = dir.as_fd();
    let (project @ 1.., _) = ops.project(fs).ok()? else { return None };
    if !ops.has_quotactl_fd() || ops.state(fs).ok()? & PROJECT_ACCOUNTED == 0 {
        return None;
    }
    let q = ops.quota(fs, project).ok()?;
    Some(DiskUsage { project, bytes: q.bytes, limit: q.limit })
}

/// The id for a tree whose root has none: its root's inode number folded to 32 bits, or the next one that
/// counts no file yet.
fn free_id(ops: &impl ProjectQuotas, root: &Path, fs: BorrowedFd<'_>) -> Result<u32, QuotaError> {
    let ino = nix::sys::stat::fstat(fs.as_raw_fd())
        .map_err(|e| QuotaError::Open { path: root.to_path_buf(), source: e.into() })?
        .st_ino;
    let first = id_from_inode(ino);
    let mut id = first;
    for _ in 0..=ID_TRIES {
        let quota = ops.quota(fs, id).map_err(|source| QuotaError::Quotactl {
            op: "read",
            id,
            path: root.to_path_buf(),
            source,
        })?;
        if quota.unused() {
            return Ok(id);
        }
        tracing::debug!(tree = %root.display(), project = id, "project id already counts files elsewhere");
        id = next_id(id);
    }
    Err(QuotaError::NoFreeId { path: root.to_path_buf(), first, tries: ID_TRIES })
}

/// An inode number as a project id: itself when it fits 32 bits, else its two halves xor-ed; never 0 (no
/// project) nor `u32::MAX` (the kernel's invalid id).
fn id_from_inode(ino: u64) -> u32 {
    let folded = (ino ^ (ino >> 32)) as u32;
    match folded {
        0 | u32::MAX => 1,
        id => id,
    }
}

/// The id tried after `id`, skipping 0 and `u32::MAX`.
fn next_id(id: u32) -> u32 {
    match id.wrapping_add(1) {
        0 | u32::MAX => 1,
        next => next,
    }
}

/// Gives `id` to every directory and regular file of the tree, the root's inherit flag last (see the module
/// docs); returns how many were labelled.
fn label_tree(ops: &impl ProjectQuotas, root: &Path, dir: BorrowedFd<'_>, id: u32) -> Result<u64, QuotaError> {
    ops.set_project(dir, id, false).map_err(label_error(root, id))?;
    let top = sys::statx(dir, c"").map_err(|source| QuotaError::Walk { path: root.to_path_buf(), source })?;
    let mut labelled = 1;
    walk(ops, dir, root, id, &top, &mut labelled)?;
    ops.set_project(dir, id, true).map_err(label_error(root, id))?;
    Ok(labelled)
}

fn walk(
    ops: &impl ProjectQuotas,
    dir: BorrowedFd<'_>,
    path: &Path,
    id: u32,
    top: &sys::Entry,
    labelled: &mut u64,
) -> Result<(), QuotaError> {
    for name in entry_names(dir).map_err(walk_error(path))? {
        let child = path.join(OsStr::from_bytes(name.as_bytes()));
        let entry = match sys::statx(dir, &name) {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(walk_error(&child)(source)),
        };
        if entry.dev != top.dev || entry.mnt_id.is_some() && entry.mnt_id != top.mnt_id {
            tracing::debug!(path = %child.display(), "another mount: not part of the tree's quota");
            continue;
        }
        match entry.kind {
            sys::Kind::Directory => {
                let sub = sys::open_at(dir, &name, libc::O_DIRECTORY).map_err(walk_error(&child))?;
                ops.set_project(sub.as_fd(), id, true).map_err(label_error(&child, id))?;
                *labelled += 1;
                walk(ops, sub.as_fd(), &child, id, top, labelled)?;
            }
            sys::Kind::Regular => {
                let file = sys::open_at(dir, &name, 0).map_err(walk_error(&child))?;
                ops.set_project(file.as_fd(), id, false).map_err(label_error(&child, id))?;
                *labelled += 1;
            }
            // Symbolic links, devices, FIFOs and sockets hold no blocks worth counting and are never opened.
            sys::Kind::Other => {}
        }
    }
    Ok(())
}

fn label_error(path: &Path, id: u32) -> impl FnOnce(io::Error) -> QuotaError + '_ {
    move |source| QuotaError::Label { path: path.to_path_buf(), id, source }
}

fn walk_error(path: &Path) -> impl FnOnce(io::Error) -> QuotaError + '_ {
    move |source| QuotaError::Walk { path: path.to_path_buf(), source }
}

/// Opens the tree's root (following a link there: the host's own layout).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?;
    Ok(file.into())
}

/// The names in a directory but `.` and `..`, read through a duplicate of its descriptor.
fn entry_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut stream = Dir::from(dir.try_clone_to_owned()?)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// The kernel.
struct Linux;

impl ProjectQuotas for Linux {
    fn has_quotactl_fd(&self) -> bool {
        sys::has_quotactl_fd()
    }

    fn fs_kind(&self, fs: BorrowedFd<'_>) -> FsKind {
        use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
        let Ok(stat) = fstatfs(fs) else { return FsKind::Other("of unknown type") };
        match stat.filesystem_type() {
            // ext2 and ext3 share the magic number: the ext4 driver mounts them all.
            EXT4_SUPER_MAGIC => FsKind::Ext4,
            XFS_SUPER_MAGIC => FsKind::Xfs,
            BTRFS_SUPER_MAGIC => FsKind::Other("btrfs"),
            TMPFS_MAGIC => FsKind::Other("tmpfs"),
            _ => FsKind::Other("neither ext4 nor xfs"),
        }
    }

    fn state(&self, fs: BorrowedFd<'_>) -> io::Result<u16> {
        sys::project_quota_flags(fs)
    }

    fn project(&self, file: BorrowedFd<'_>) -> io::Result<(u32, bool)> {
        let attr = sys::get_fsxattr(file)?;
        Ok((attr.fsx_projid, attr.fsx_xflags & PROJECT_INHERIT != 0))
    }

    fn set_project(&self, file: BorrowedFd<'_>, id: u32, inherit: bool) -> io::Result<()> {
        let mut attr = sys::get_fsxattr(file)?;
        attr.fsx_projid = id;
        attr.fsx_xflags = if inherit { attr.fsx_xflags | PROJECT_INHERIT } else { attr.fsx_xflags & !PROJECT_INHERIT };
        sys::set_fsxattr(file, &attr)
    }

    fn quota(&self, fs: BorrowedFd<'_>, id: u32) -> io::Result<Quota> {
        match sys::get_quota(fs, id) {
            Ok(q) => Ok(Quota {
                bytes: q.dqb_curspace,
                inodes: q.dqb_curinodes,
                limit: (q.dqb_bhardlimit != 0).then(|| q.dqb_bhardlimit.saturating_mul(QUOTA_BLOCK)),
            }),
            // An id nothing ever carried has no record (xfs says ENOENT).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Quota::default()),
            Err(e) => Err(e),
        }
    }

    fn set_limit(&self, fs: BorrowedFd<'_>, id: u32, limit: Option<u64>) -> io::Result<()> {
        sys::set_block_limit(fs, id, limit.map_or(0, quota_blocks))
    }
}

/// A limit in bytes as quota blocks, rounded up so the limit is never below what was asked.
fn quota_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(QUOTA_BLOCK)
}

/// The raw calls: `statx`, `openat` of a regular file, the `FS_IOC_FS[GS]ETXATTR` ioctls and `quotactl_fd`.
mod sys {
    use std::ffi::CStr;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    /// `PRJQUOTA`: the project quota type.
    const PRJQUOTA: u32 = 2;
    /// `Q_XGETQSTATV`: `XQM_CMD(8)`.
    const Q_XGETQSTATV: u32 = ((b'X' as u32) << 8) + 8;
    /// `FS_QSTATV_VERSION1`.
    const FS_QSTATV_VERSION1: i8 = 1;

    /// `struct fsxattr` of `<linux/fs.h>`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct FsXattr {
        pub fsx_xflags: u32,
        pub fsx_extsize: u32,
        pub fsx_nextents: u32,
        pub fsx_projid: u32,
        pub fsx_cowextsize: u32,
        pub fsx_pad: [u8; 8],
    }

    /// `struct fs_qfilestatv` of `<linux/dqblk_xfs.h>`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    struct FsQfilestatv {
        qfs_ino: u64,
        qfs_nblks: u64,
        qfs_nextents: u32,
        qfs_pad: u32,
    }

    /// `struct fs_quota_statv` of `<linux/dqblk_xfs.h>`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    struct FsQuotaStatv {
        qs_version: i8,
        qs_pad1: u8,
        qs_flags: u16,
        qs_incoredqs: u32,
        qs_uquota: FsQfilestatv,
        qs_gquota: FsQfilestatv,
        qs_pquota: FsQfilestatv,
        qs_btimelimit: i32,
        qs_itimelimit: i32,
        qs_rtbtimelimit: i32,
        qs_bwarnlimit: u16,
        qs_iwarnlimit: u16,
        qs_rtbwarnlimit: u16,
        qs_pad3: u16,
        qs_pad4: u32,
        qs_pad2: [u64; 7],
    }

    nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);
    nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsXattr);

    /// What a directory entry is, for the walk.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Directory,
        Regular,
        Other,
    }

    /// The parts of `statx` the walk needs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Entry {
        pub kind: Kind,
        /// Device (major, minor) of its file system.
        pub dev: (u32, u32),
        /// Its mount's id, when the kernel tells it (Linux 5.8 and later).
        pub mnt_id: Option<u64>,
    }

    /// `statx` of `name` in `dir` without following a symbolic link; `name` empty is `dir` itself.
    pub fn statx(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Entry> {
        let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
        if name.is_empty() {
            flags |= libc::AT_EMPTY_PATH;
        }
        let mask = libc::STATX_TYPE | libc::STATX_MNT_ID;
        // SAFETY: an all-zero statx is a valid value of the plain C struct.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated and `st` a writable statx; both outlive the call.
        let rc = unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let kind = match u32::from(st.stx_mode) & libc::S_IFMT {
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFREG => Kind::Regular,
            _ => Kind::Other,
        };
        let mnt_id = (st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id);
        Ok(Entry { kind, dev: (st.stx_dev_major, st.stx_dev_minor), mnt_id })
    }

    /// Opens `name` in `dir` read-only for its attributes (`extra`: `O_DIRECTORY` for a directory): never
    /// following a link, never blocking, never becoming a controlling terminal.
    pub fn open_at(dir: BorrowedFd<'_>, name: &CStr, extra: libc::c_int) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | extra;
        // SAFETY: `name` is NUL-terminated and outlives the call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat just returned this descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `FS_IOC_FSGETXATTR`.
    pub fn get_fsxattr(file: BorrowedFd<'_>) -> io::Result<FsXattr> {
        let mut attr = FsXattr::default();
        // SAFETY: `attr` is a writable fsxattr of the size the ioctl number encodes.
        unsafe { fs_ioc_fsgetxattr(file.as_raw_fd(), &mut attr) }?;
        Ok(attr)
    }

    /// `FS_IOC_FSSETXATTR`.
    pub fn set_fsxattr(file: BorrowedFd<'_>, attr: &FsXattr) -> io::Result<()> {
        // SAFETY: `attr` is an fsxattr of the size the ioctl number encodes, only read by the kernel.
        unsafe { fs_ioc_fssetxattr(file.as_raw_fd(), attr) }?;
        Ok(())
    }

    /// `QCMD(cmd, PRJQUOTA)`.
    fn project_cmd(cmd: u32) -> libc::c_int {
        ((cmd << 8) | PRJQUOTA) as libc::c_int
    }

    /// `quotactl_fd(2)` with the project quota type.
    ///
    /// # Safety
    /// `addr` must point to the structure `cmd` reads or writes, valid for the call.
    unsafe fn quotactl_fd(fs: BorrowedFd<'_>, cmd: u32, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
        // SAFETY: the caller vouches for `addr`; the descriptor is open for the call.
        let rc = unsafe { libc::syscall(libc::SYS_quotactl_fd, fs.as_raw_fd(), project_cmd(cmd), id, addr) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the kernel has `quotactl_fd`: on a descriptor that is not open it says EBADF, unless the call
    /// itself is missing (ENOSYS).
    pub fn has_quotactl_fd() -> bool {
        // SAFETY: with an invalid descriptor the kernel returns before looking at the (null) address.
        let rc = unsafe {
            libc::syscall(libc::SYS_quotactl_fd, -1, project_cmd(Q_XGETQSTATV), 0, std::ptr::null_mut::<u8>())
        };
        !(rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
    }

    /// The `FS_QUOTA_*` flags of the file system holding `fs` (`Q_XGETQSTATV`).
    pub fn project_quota_flags(fs: BorrowedFd<'_>) -> io::Result<u16> {
        let mut stat = FsQuotaStatv { qs_version: FS_QSTATV_VERSION1, ..Default::default() };
        // SAFETY: `stat` is a writable fs_quota_statv with the version the kernel checks.
        unsafe { quotactl_fd(fs, Q_XGETQSTATV, 0, (&mut stat as *mut FsQuotaStatv).cast()) }?;
        Ok(stat.qs_flags)
    }

    /// `Q_GETQUOTA` of project `id`.
    pub fn get_quota(fs: BorrowedFd<'_>, id: u32) -> io::Result<libc::dqblk> {
        let mut q = empty_dqblk();
        // SAFETY: `q` is a writable dqblk, what Q_GETQUOTA fills.
        unsafe { quotactl_fd(fs, libc::Q_GETQUOTA as u32, id, (&mut q as *mut libc::dqblk).cast()) }?;
        Ok(q)
    }

    /// `Q_SETQUOTA` of project `id`'s block hard limit (0: none); its soft limit is cleared.
    pub fn set_block_limit(fs: BorrowedFd<'_>, id: u32, blocks: u64) -> io::Result<()> {
        let mut q = libc::dqblk { dqb_bhardlimit: blocks, dqb_valid: libc::QIF_BLIMITS, ..empty_dqblk() };
        // SAFETY: `q` is a dqblk, what Q_SETQUOTA reads.
        unsafe { quotactl_fd(fs, libc::Q_SETQUOTA as u32, id, (&mut q as *mut libc::dqblk).cast()) }
    }

    fn empty_dqblk() -> libc::dqblk {
        libc::dqblk {
            dqb_bhardlimit: 0,
            dqb_bsoftlimit: 0,
            dqb_curspace: 0,
            dqb_ihardlimit: 0,
            dqb_isoftlimit: 0,
            dqb_curinodes: 0,
            dqb_btime: 0,
            dqb_itime: 0,
            dqb_valid: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use tempfile::TempDir;

    use super::*;

    /// A file system held in maps, keyed by inode: projects and inherit flags, usage and limits per id.
    struct Fake {
        quotactl_fd: bool,
        flags: u16,
        kind: FsKind,
        projects: RefCell<HashMap<u64, (u32, bool)>>,
        /// Every `set_project` in order: inode, id, inherit.
        sets: RefCell<Vec<(u64, u32, bool)>>,
        used: HashMap<u32, Quota>,
        limits: RefCell<HashMap<u32, Option<u64>>>,
        /// An inode whose labelling fails with EPERM.
        fail_at: Option<u64>,
    }

    impl Fake {
        /// ext4 with project quotas accounted and enforced.
        fn enforcing() -> Self {
            Fake {
                quotactl_fd: true,
                flags: PROJECT_ACCOUNTED | PROJECT_ENFORCED,
                kind: FsKind::Ext4,
                projects: Default::default(),
                sets: Default::default(),
                used: Default::default(),
                limits: Default::default(),
                fail_at: None,
            }
        }

        fn project_of(&self, path: &Path) -> Option<(u32, bool)> {
            self.projects.borrow().get(&inode(path)).copied()
        }
    }

    fn ino(fd: BorrowedFd<'_>) -> u64 {
        nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino
    }

    fn inode(path: &Path) -> u64 {
        fs::symlink_metadata(path).unwrap().ino()
    }

    impl ProjectQuotas for Fake {
        fn has_quotactl_fd(&self) -> bool {
            self.quotactl_fd
        }
        fn fs_kind(&self, _: BorrowedFd<'_>) -> FsKind {
            self.kind
        }
        fn state(&self, _: BorrowedFd<'_>) -> io::Result<u16> {
            Ok(self.flags)
        }
        fn project(&self, file: BorrowedFd<'_>) -> io::Result<(u32, bool)> {
            Ok(self.projects.borrow().get(&ino(file)).copied().unwrap_or((0, false)))
        }
        fn set_project(&self, file: BorrowedFd<'_>, id: u32, inherit: bool) -> io::Result<()> {
            let ino = ino(file);
            if self.fail_at == Some(ino) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.sets.borrow_mut().push((ino, id, inherit));
            self.projects.borrow_mut().insert(ino, (id, inherit));
            Ok(())
        }
        fn quota(&self, _: BorrowedFd<'_>, id: u32) -> io::Result<Quota> {
            let mut q = self.used.get(&id).copied().unwrap_or_default();
            q.limit = self.limits.borrow().get(&id).copied().flatten();
            Ok(q)
        }
        fn set_limit(&self, _: BorrowedFd<'_>, id: u32, limit: Option<u64>) -> io::Result<()> {
            self.limits.borrow_mut().insert(id, limit);
            Ok(())
        }
    }

    /// A small tree: files, nested directories, an empty one, a symbolic link and a FIFO.
    fn tree() -> TempDir {
        let dir = TempDir::new().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("var/log/deep")).unwrap();
        fs::create_dir_all(r.join("empty")).unwrap();
        fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(r.join("var/log/deep/messages"), "hello\n").unwrap();
        fs::write(r.join("top.txt"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("link")).unwrap();
        nix::unistd::mkfifo(&r.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        dir
    }

    /// Every directory and regular file of the tree, the root included.
    fn labelled_paths(root: &Path) -> Vec<PathBuf> {
        let mut out = vec![root.to_path_buf()];
        for entry in fs::read_dir(root).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.extend(labelled_paths(&entry.path()));
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
        out
    }

    #[test]
    fn a_tree_gets_its_root_inode_as_project_id_on_every_directory_and_file() {
        let dir = tree();
        let r = dir.path();
        let fake = Fake::enforcing();
        let id = apply_with(&fake, r, Some(10 << 20)).unwrap().unwrap();
        assert_eq!(u64::from(id), inode(r), "the id is the root's inode number");
        let paths = labelled_paths(r);
        assert_eq!(paths.len(), 9, "{paths:?}");
        for path in &paths {
            let inherit = path.is_dir();
            assert_eq!(fake.project_of(path), Some((id, inherit)), "{}", path.display());
        }
        for skipped in ["link", "fifo"] {
            assert_eq!(fake.project_of(&r.join(skipped)), None, "{skipped} is never opened");
        }
        let sets = fake.sets.borrow();
        assert_eq!(sets.first(), Some(&(inode(r), id, false)), "the root gets the id first, without inherit");
        assert_eq!(sets.last(), Some(&(inode(r), id, true)), "and its inherit flag last");
        assert_eq!(fake.limits.borrow()[&id], Some(10 << 20));
    }

    #[test]
    fn a_labelled_tree_is_not_walked_again_and_its_limit_follows_the_conf() {
        let dir = tree();
        let r = dir.path();
        let fake = Fake::enforcing();
        let id = apply_with(&fake, r, Some(10 << 20)).unwrap().unwrap();
        let walked = fake.sets.borrow().len();
        assert_eq!(apply_with(&fake, r, Some(20 << 20)).unwrap(), Some(id));
        assert_eq!(fake.sets.borrow().len(), walked, "no file is touched again");
        assert_eq!(fake.limits.borrow()[&id], Some(20 << 20));
        // LIMIT_DISK gone from the conf: the limit goes too, the labels stay.
        assert_eq!(apply_with(&fake, r, None).unwrap(), None);
        assert_eq!(fake.limits.borrow()[&id], None);
        assert_eq!(fake.sets.borrow().len(), walked);
    }

    #[test]
    fn a_walk_cut_short_is_done_again_with_the_same_id() {
        let dir = tree();
        let r = dir.path();
        let passwd = r.join("etc/passwd");
        let mut fake = Fake::enforcing();
        fake.fail_at = Some(inode(&passwd));
        let err = apply_with(&fake, r, Some(10 << 20)).unwrap_err();
        let id = inode(r) as u32;
        match &err {
            QuotaError::Label { path, id: got, source } => {
                assert_eq!((path, *got), (&passwd, id));
                assert_eq!(source.raw_os_error(), Some(libc::EPERM));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("chattr -i -a"), "{err}");
        assert_eq!(fake.project_of(r), Some((id, false)), "the root says: labelled, not in full");
        assert!(fake.limits.borrow().is_empty(), "no limit on a tree labelled in part");
        fake.fail_at = None;
        assert_eq!(apply_with(&fake, r, Some(10 << 20)).unwrap(), Some(id));
        assert_eq!(fake.project_of(&passwd), Some((id, false)));
        assert_eq!(fake.project_of(r), Some((id, true)));
    }

    #[test]
    fn an_id_that_already_counts_files_is_passed_over_and_an_id_given_by_hand_is_kept() {
        let dir = tree();
        let r = dir.path();
        let mut fake = Fake::enforcing();
        let derived = id_from_inode(inode(r));
        fake.used.insert(derived, Quota { bytes: 4096, inodes: 1, limit: None });
        assert_eq!(apply_with(&fake, r, Some(1 << 20)).unwrap(), Some(next_id(derived)));

        let dir = tree();
        let r = dir.path();
        let fake = Fake::enforcing();
        fake.projects.borrow_mut().insert(inode(r), (777, false));
        assert_eq!(apply_with(&fake, r, Some(1 << 20)).unwrap(), Some(777));
        assert_eq!(fake.project_of(&r.join("etc/passwd")), Some((777, false)));

        let dir = tree();
        let mut fake = Fake::enforcing();
        let first = id_from_inode(inode(dir.path()));
        let mut id = first;
        for _ in 0..=ID_TRIES {
            fake.used.insert(id, Quota { bytes: 0, inodes: 1, limit: None });
            id = next_id(id);
        }
        let err = apply_with(&fake, dir.path(), Some(1 << 20)).unwrap_err();
        assert!(matches!(err, QuotaError::NoFreeId { first: f, .. } if f == first), "{err:?}");
        assert!(fake.sets.borrow().is_empty());
    }

    #[test]
    fn a_file_system_without_project_quotas_refuses_and_says_how_to_get_them() {
        for (flags, kind, says) in [
            (0, FsKind::Ext4, ["(ext4) has no project quotas", "mkfs.ext4 -O quota,project", "prjquota"]),
            (
                PROJECT_ACCOUNTED,
                FsKind::Ext4,
                ["accounts project quotas but does not enforce them", "tune2fs", "prjquota"],
            ),
            (0, FsKind::Xfs, ["(xfs) has no project quotas", "pquota", "CONFIG_XFS_QUOTA"]),
            (0, FsKind::Other("btrfs"), ["(btrfs) has no project quotas", "ext4", "xfs"]),
        ] {
            let dir = tree();
            let fake = Fake { flags, kind, ..Fake::enforcing() };
            let err = apply_with(&fake, dir.path(), Some(1 << 20)).unwrap_err();
            assert!(matches!(err, QuotaError::NotEnforced { .. }), "{err:?}");
            let msg = err.to_string();
            for part in says.iter().copied().chain(["cannot enforce LIMIT_DISK", "remove LIMIT_DISK"]) {
                assert!(msg.contains(part), "{part:?} missing from: {msg}");
            }
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
            assert!(fake.sets.borrow().is_empty() && fake.limits.borrow().is_empty(), "nothing changed");
            // Without LIMIT_DISK such a file system is fine.
            assert_eq!(apply_with(&fake, dir.path(), None).unwrap(), None);
        }
    }

    #[test]
    fn a_kernel_without_quotactl_fd_refuses() {
        let dir = tree();
        let fake = Fake { quotactl_fd: false, ..Fake::enforcing() };
        let err = apply_with(&fake, dir.path(), Some(1 << 20)).unwrap_err();
        assert!(matches!(err, QuotaError::Kernel { .. }), "{err:?}");
        assert!(err.to_string().contains("Linux 5.14"), "{err}");
        assert!(fake.sets.borrow().is_empty());
    }

    #[test]
    fn a_missing_tree_is_named() {
        let dir = TempDir::new().unwrap();
        let gone = dir.path().join("gone");
        let err = apply_with(&Fake::enforcing(), &gone, Some(1 << 20)).unwrap_err();
        assert!(matches!(&err, QuotaError::Open { path, .. } if path == &gone), "{err:?}");
        assert_eq!(usage_with(&Fake::enforcing(), &gone), None);
    }

    #[test]
    fn usage_reads_the_project_of_the_tree() {
        let dir = tree();
        let r = dir.path();
        let mut fake = Fake::enforcing();
        assert_eq!(usage_with(&fake, r), None, "a tree without a project id has no usage of its own");
        let id = apply_with(&fake, r, Some(8 << 20)).unwrap().unwrap();
        fake.used.insert(id, Quota { bytes: 12288, inodes: 9, limit: None });
        assert_eq!(usage_with(&fake, r), Some(DiskUsage { project: id, bytes: 12288, limit: Some(8 << 20) }));
        fake.flags = 0;
        assert_eq!(usage_with(&fake, r), None, "quotas no longer accounted");
    }

    #[test]
    fn inode_numbers_become_32_bit_ids_and_limits_whole_blocks() {
        assert_eq!(id_from_inode(12), 12);
        assert_eq!(id_from_inode(u64::from(u32::MAX) - 1), u32::MAX - 1);
        assert_eq!(id_from_inode(u64::from(u32::MAX)), 1, "never the invalid id");
        assert_eq!(id_from_inode((1 << 32) | 5), 4, "halves xor-ed");
        assert_eq!(id_from_inode(1 << 32), 1, "never 0");
        assert_eq!(next_id(7), 8);
        assert_eq!(next_id(u32::MAX - 1), 1);
        assert_eq!((quota_blocks(1), quota_blocks(1024), quota_blocks(1025)), (1, 1, 2));
    }

    /// Mounts made by a real test, unmounted (lazily, deepest first) when it ends, also on failure; a loop
    /// device mounted with `-o loop` is released with its mount.
    struct Mounts(Vec<PathBuf>);

    impl Drop for Mounts {
        fn drop(&mut self) {
            for target in self.0.iter().rev() {
                let _ = std::process::Command::new("umount").arg("-l").arg(target).status();
            }
        }
    }

    fn run(program: &str, args: &[&str]) -> bool {
        std::process::Command::new(program).args(args).status().is_ok_and(|s| s.success())
    }

    /// A 64 MiB ext4 image made with `mkfs_args`, mounted at `dir/name` with `options`; `None` when this
    /// kernel cannot mount it so (ext4's quota feature needs CONFIG_QFMT_V2).
    fn ext4(dir: &Path, name: &str, mkfs_args: &[&str], options: &str, mounts: &mut Mounts) -> Option<PathBuf> {
        let mut args = vec!["-q", "-F"];
        args.extend_from_slice(mkfs_args);
        loop_fs(dir, name, "mkfs.ext4", &args, options, mounts)
    }

    /// A 320 MiB image (xfs's smallest is 300) made by `mkfs` with `args`, mounted at `dir/name` with
    /// `options`; `None` when the kernel refuses the mount.
    fn loop_fs(
        dir: &Path,
        name: &str,
        mkfs: &str,
        args: &[&str],
        options: &str,
        mounts: &mut Mounts,
    ) -> Option<PathBuf> {
        let image = dir.join(format!("{name}.img"));
        fs::File::create(&image).unwrap().set_len(320 << 20).unwrap();
        let image = image.to_str().unwrap();
        let mut args = args.to_vec();
        args.push(image);
        assert!(run(mkfs, &args), "{mkfs} {args:?}");
        let target = dir.join(name);
        fs::create_dir_all(&target).unwrap();
        let target_s = target.to_str().unwrap();
        if !run("mount", &["-o", &format!("loop,{options}"), image, target_s]) {
            return None;
        }
        mounts.0.push(target.clone());
        Some(target)
    }

    /// Writes `len` bytes to `path` from a thread without CAP_SYS_RESOURCE (capabilities are per thread), as
    /// a vserver's process would.
    fn write_as_vserver(path: &Path, len: usize) -> io::Result<()> {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap();
            fs::write(path, vec![1u8; len])
        })
        .join()
        .unwrap()
    }

    /// Whether a real test may make loop file systems here, saying why not when it may not.
    fn real_file_systems_usable() -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (loop devices, mounts, quotas)");
            return false;
        }
        if !run("mkfs.ext4", &["-V"]) {
            eprintln!("skipped: no mkfs.ext4");
            return false;
        }
        true
    }

    #[test]
    fn real_ext4_project_quota_limits_a_tree_and_nothing_outside_it() {
        if !real_file_systems_usable() {
            return;
        }
        let dir = TempDir::new().unwrap();
        let mut mounts = Mounts(Vec::new());
        let quota_fs = ["-O", "quota,project", "-I", "256"];
        let Some(fs_root) = ext4(dir.path(), "quota", &quota_fs, "prjquota", &mut mounts) else {
            eprintln!(
                "skipped: this kernel cannot mount ext4 with project quotas (see dmesg: ext4's quota feature \
                 needs CONFIG_QUOTA and CONFIG_QFMT_V2)"
            );
            return;
        };
        let tree = fs_root.join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/data"), vec![7u8; 200 << 10]).unwrap();
        // A directory of the same file system bound into the tree: another mount, never labelled.
        let outside = fs_root.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("kept"), "host data\n").unwrap();
        fs::create_dir_all(tree.join("bound")).unwrap();
        let bound = tree.join("bound");
        assert!(run("mount", &["--bind", outside.to_str().unwrap(), bound.to_str().unwrap()]));
        mounts.0.push(bound.clone());

        apply(&tree, Some(1 << 20)).unwrap();
        let project = |path: &Path| {
            let file = fs::File::open(path).unwrap();
            Linux.project(file.as_fd()).unwrap()
        };
        let id = inode(&tree) as u32;
        assert_eq!(project(&tree), (id, true));
        assert_eq!(project(&tree.join("etc")), (id, true));
        assert_eq!(project(&tree.join("etc/data")), (id, false));
        assert_eq!(project(&outside.join("kept")).0, 0, "the bind mount's files are not the tree's");
        let used = usage(&tree).unwrap();
        assert_eq!((used.project, used.limit), (id, Some(1 << 20)));
        assert!(used.bytes >= 200 << 10, "{used:?}");

        // Beyond the limit: EDQUOT for a process without CAP_SYS_RESOURCE, as in a vserver (with it, the
        // kernel lets root past hard limits). New files inherit the id.
        let err = write_as_vserver(&tree.join("etc/big"), 2 << 20).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
        assert_eq!(project(&tree.join("etc/big")), (id, false));
        fs::remove_file(tree.join("etc/big")).unwrap();
        // Lifted without LIMIT_DISK.
        apply(&tree, None).unwrap();
        assert_eq!(usage(&tree).unwrap().limit, None);
        write_as_vserver(&tree.join("etc/big"), 2 << 20).unwrap();

        // Project quotas accounted but not enforced (mounted without prjquota).
        let unenforced = ext4(dir.path(), "unenforced", &quota_fs, "rw", &mut mounts).expect("mounts as the first did");
        let err = apply(&unenforced, Some(1 << 20)).unwrap_err();
        assert!(err.to_string().contains("(ext4) accounts project quotas but does not enforce them"), "{err}");
    }

    #[test]
    fn real_xfs_project_quota_limits_a_tree() {
        if !nix::unistd::geteuid().is_root() || !run("mkfs.xfs", &["-V"]) {
            eprintln!("skipped: needs root and mkfs.xfs (xfsprogs)");
            return;
        }
        let dir = TempDir::new().unwrap();
        let mut mounts = Mounts(Vec::new());
        let Some(fs_root) = loop_fs(dir.path(), "xfs", "mkfs.xfs", &["-q", "-f"], "pquota", &mut mounts) else {
            eprintln!("skipped: this kernel cannot mount xfs with pquota (CONFIG_XFS_QUOTA)");
            return;
        };
        let tree = fs_root.join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/data"), vec![7u8; 200 << 10]).unwrap();
        apply(&tree, Some(1 << 20)).unwrap();
        let used = usage(&tree).unwrap();
        assert_eq!((used.project, used.limit), (id_from_inode(inode(&tree)), Some(1 << 20)));
        assert!(used.bytes >= 200 << 10, "{used:?}");
        // xfs says ENOSPC, not EDQUOT, when a project quota is full: the tree looks like a full disk.
        let err = write_as_vserver(&tree.join("etc/big"), 2 << 20).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        let plain = loop_fs(dir.path(), "plain-xfs", "mkfs.xfs", &["-q", "-f"], "rw", &mut mounts).unwrap();
        let err = apply(&plain, Some(1 << 20)).unwrap_err();
        assert!(err.to_string().contains("(xfs) has no project quotas"), "{err}");
    }

    #[test]
    fn real_ext4_without_project_quotas_refuses_a_limit() {
        if !real_file_systems_usable() {
            return;
        }
        let dir = TempDir::new().unwrap();
        let mut mounts = Mounts(Vec::new());
        let plain = ext4(dir.path(), "plain", &[], "rw", &mut mounts).expect("a plain ext4 mounts");
        let err = apply(&plain, Some(1 << 20)).unwrap_err();
        assert!(matches!(err, QuotaError::NotEnforced { .. }), "{err:?}");
        assert!(err.to_string().contains("(ext4) has no project quotas"), "{err}");
        let file = fs::File::open(&plain).unwrap();
        assert_eq!(Linux.project(file.as_fd()).unwrap(), (0, false), "nothing was labelled");
        apply(&plain, None).unwrap();
        assert_eq!(usage(&plain), None);
    }
}
