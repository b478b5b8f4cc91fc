//! A tmpfs mounted for a test, unmounted when its guard drops (also when the test fails half way): puts a
//! directory on a file system of its own, as `/etc` and `/vservers` are on real hosts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A tmpfs mounted on a directory; unmounted (lazily, so a process still in it does not keep it) on drop.
pub struct Tmpfs {
    point: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as tmpfs's `size=` option: `16m`) on the existing directory `point`,
    /// mode 0755 owned by root; whatever `point` held is hidden until the guard drops.
    pub fn mount(point: &Path, size: &str) -> Result<Tmpfs> {
        let options = format!("mode=0755,size={size}");
        mount(Some("tmpfs"), point, Some("tmpfs"), MsFlags::empty(), Some(options.as_str()))
            .with_context(|| format!("mounting a tmpfs on {}", point.display()))?;
        Ok(Tmpfs { point: point.to_path_buf() })
    }

    /// Where it is mounted.
    pub fn point(&self) -> &Path {
        &self.point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(err) = umount2(&self.point, MntFlags::MNT_DETACH) {
            eprintln!("vserver-lab: could not unmount the tmpfs on {}: {err}", self.point.display());
        }
    }
}
