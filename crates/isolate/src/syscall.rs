//! The one seam through which the context builder makes privileged calls: [`LinuxSyscall`] makes them for
//! real; [`RecordingSyscall`] records them so the order of mounts and capability drops is unit tested
//! without root.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// A failed privileged call: which one, on what, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {errno}")]
pub struct SysError {
    /// The operation (`mount`, `pivot_root`, `mknod`...).
    pub op: &'static str,
    /// What it was applied to (a path, a capability, a name).
    pub target: String,
    /// The OS error.
    pub errno: nix::Error,
}

/// Result of a call through the seam.
pub type SysResult<T = ()> = Result<T, SysError>;

fn wrap<T>(op: &'static str, target: impl std::fmt::Display, r: nix::Result<T>) -> SysResult<T> {
    r.map_err(|errno| SysError { op, target: target.to_string(), errno })
}

/// The privileged calls made while building a context.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> SysResult;
    /// mkdir(2); an existing directory is not an error.
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult;
    /// mknod(2) of a character device.
    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult;
    /// symlink(2); an existing link is replaced.
    fn symlink(&self, target: &Path, link: &Path) -> SysResult;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> SysResult;
    /// setdomainname(2).
    fn setdomainname(&self, name: &str) -> SysResult;
    /// Drops one capability from the bounding set (irreversible).
    fn drop_bounding(&self, cap: Capability) -> SysResult;
    /// Sets one capability set of the calling thread.
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult;
    /// Clears the ambient set.
    fn clear_ambient(&self) -> SysResult;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        wrap("mount", target.display(), nix::mount::mount(source, target, fstype, flags, data))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult {
        wrap("umount", target.display(), nix::mount::umount2(target, flags))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        wrap("pivot_root", new_root.display(), nix::unistd::pivot_root(new_root, put_old))
    }

    fn chdir(&self, path: &Path) -> SysResult {
        wrap("chdir", path.display(), nix::unistd::chdir(path))
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult {
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
            Err(nix::Error::EEXIST) => Ok(()),
            r => wrap("mkdir", path.display(), r),
        }
    }

    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult {
        let dev = nix::sys::stat::makedev(major, minor);
        wrap(
            "mknod",
            path.display(),
            nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), dev),
        )?;
        // mknod is subject to the umask; devices must be usable by everyone, as on the host.
        wrap(
            "chmod",
            path.display(),
            nix::sys::stat::fchmodat(
                None,
                path,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
        )
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        let _ = std::fs::remove_file(link);
        wrap("symlink", link.display(), nix::unistd::symlinkat(target, None, link))
    }

    fn sethostname(&self, name: &str) -> SysResult {
        wrap("sethostname", name, nix::unistd::sethostname(name))
    }

    fn setdomainname(&self, name: &str) -> SysResult {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        wrap("setdomainname", name, nix::errno::Errno::result(rc).map(drop))
    }

    fn drop_bounding(&self, cap: Capability) -> SysResult {
        caps::drop(None, CapSet::Bounding, cap).map_err(|e| SysError {
            op: "drop capability",
            target: format!("{cap} ({e})"),
            errno: nix::Error::last(),
        })
    }

    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult {
        caps::set(None, set, caps).map_err(|e| SysError {
            op: "set capabilities",
            target: format!("{set:?} ({e})"),
            errno: nix::Error::last(),
        })
    }

    fn clear_ambient(&self) -> SysResult {
        caps::clear(None, CapSet::Ambient).map_err(|e| SysError {
            op: "clear capabilities",
            target: format!("ambient ({e})"),
            errno: nix::Error::last(),
        })
    }
}

/// One recorded call, with its arguments in a form easy to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A mount: source, target, file system type, flags, data.
    Mount(Option<PathBuf>, PathBuf, Option<String>, MsFlags, Option<String>),
    /// An unmount.
    Umount(PathBuf),
    /// pivot_root(new_root, put_old).
    PivotRoot(PathBuf, PathBuf),
    /// chdir.
    Chdir(PathBuf),
    /// mkdir.
    Mkdir(PathBuf),
    /// mknod of a character device: path, mode, major, minor.
    Mknod(PathBuf, u32, u64, u64),
    /// symlink(target, link).
    Symlink(PathBuf, PathBuf),
    /// sethostname.
    Hostname(String),
    /// setdomainname.
    Domainname(String),
    /// A capability dropped from the bounding set.
    DropBounding(Capability),
    /// A capability set assigned: the set's name (`Permitted`...) and its capabilities by number.
    SetCaps(String, Vec<Capability>),
    /// The ambient set cleared.
    ClearAmbient,
}

/// A double that records every call and succeeds, for unit tests.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
}

impl RecordingSyscall {
    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn push(&self, c: Call) -> SysResult {
        self.calls.borrow_mut().push(c);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.push(Call::Mount(
            source.map(Path::to_path_buf),
            target.to_path_buf(),
            fstype.map(str::to_string),
            flags,
            data.map(str::to_string),
        ))
    }
    fn umount2(&self, target: &Path, _flags: MntFlags) -> SysResult {
        self.push(Call::Umount(target.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.push(Call::PivotRoot(new_root.to_path_buf(), put_old.to_path_buf()))
    }
    fn chdir(&self, path: &Path) -> SysResult {
        self.push(Call::Chdir(path.to_path_buf()))
    }
    fn mkdir(&self, path: &Path, _mode: u32) -> SysResult {
        self.push(Call::Mkdir(path.to_path_buf()))
    }
    fn mknod_char(&self, path: &Path, mode: u32, major: u64, minor: u64) -> SysResult {
        self.push(Call::Mknod(path.to_path_buf(), mode, major, minor))
    }
    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        self.push(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
    }
    fn sethostname(&self, name: &str) -> SysResult {
        self.push(Call::Hostname(name.to_string()))
    }
    fn setdomainname(&self, name: &str) -> SysResult {
        self.push(Call::Domainname(name.to_string()))
    }
    fn drop_bounding(&self, cap: Capability) -> SysResult {
        self.push(Call::DropBounding(cap))
    }
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> SysResult {
        let mut v: Vec<Capability> = caps.iter().copied().collect();
        v.sort_by_key(|c| c.index());
        self.push(Call::SetCaps(format!("{set:?}"), v))
    }
    fn clear_ambient(&self) -> SysResult {
        self.push(Call::ClearAmbient)
    }
}
