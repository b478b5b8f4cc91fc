//! Where one host keeps its vservers: trees, confs, run state and cgroups. Every path is a parameter
//! (flag or environment variable) so several "hosts" can share one machine in tests.

use std::path::PathBuf;

use isolate::spec::CgroupPlace;
use isolate::VserverName;

/// The directories of one host.
#[derive(Debug, Clone, clap::Args)]
pub struct Dirs {
    /// Directory holding the vservers' trees (`/vservers/NAME`).
    #[arg(long, env = "VSERVER_VSERVERS_DIR", default_value = "/vservers", global = true)]
    pub vservers_dir: PathBuf,
    /// Directory holding `NAME.conf` and `NAME.sh`.
    #[arg(long, env = "VSERVER_CONF_DIR", default_value = "/etc/vservers", global = true)]
    pub conf_dir: PathBuf,
    /// Directory for run state and console logs of running vservers.
    #[arg(long, env = "VSERVER_RUN_DIR", default_value = "/run/vservers", global = true)]
    pub run_dir: PathBuf,
    /// Mount point of the cgroup file systems.
    #[arg(long, env = "VSERVER_CGROUP_ROOT", default_value = "/sys/fs/cgroup", global = true, hide_short_help = true)]
    pub cgroup_root: PathBuf,
    /// Parent cgroup of this host's vservers.
    #[arg(long, env = "VSERVER_CGROUP_PARENT", default_value = "vservers", global = true, hide_short_help = true)]
    pub cgroup_parent: String,
}

impl Dirs {
    /// The vserver's tree.
    pub fn root(&self, name: &VserverName) -> PathBuf {
        self.vservers_dir.join(name.as_str())
    }

    /// The vserver's `NAME.conf`.
    pub fn conf(&self, name: &VserverName) -> PathBuf {
        self.conf_dir.join(format!("{name}.conf"))
    }

    /// The vserver's hook script `NAME.sh`.
    pub fn hook(&self, name: &VserverName) -> PathBuf {
        self.conf_dir.join(format!("{name}.sh"))
    }

    /// Where its cgroups go.
    pub fn cgroup(&self) -> CgroupPlace {
        CgroupPlace { root: self.cgroup_root.clone(), parent: self.cgroup_parent.clone() }
    }

    /// Every vserver with a conf file, sorted by name; files whose name is not a valid vserver name are
    /// returned apart so the caller can warn about them.
    pub fn configured(&self) -> std::io::Result<(Vec<VserverName>, Vec<PathBuf>)> {
        let mut names = Vec::new();
        let mut bad = Vec::new();
        let entries = match std::fs::read_dir(&self.conf_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((names, bad)),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            let Some(stem) = path.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_suffix(".conf")) else {
                continue;
            };
            match VserverName::parse(stem) {
                Ok(n) => names.push(n),
                Err(_) => bad.push(path),
            }
        }
        names.sort();
        Ok((names, bad))
    }
}

/// Makes `dir` (created if missing) a barrier, as util-vserver's was: reachable by root only (mode 0700 at
/// most), so no host user can reach into a vserver's tree or a replica, where root inside may have left a
/// set-uid program or a device node. Inside the barrier, trees and replicas keep their modes exactly.
/// Returns a sentence for the operator when it had to narrow the mode of an existing directory.
pub fn barrier(dir: &std::path::Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
    Ok(Some(format!(
        "{} was mode {mode:04o}: made {:04o}, so that no host user can reach into a vserver's tree (a set-uid \
         program made inside would otherwise run as root for them)",
        dir.display(),
        mode & 0o700
    )))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_barrier_shuts_out_everyone_but_root_and_says_so_once() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/vservers");
        assert_eq!(super::barrier(&fresh).unwrap(), None, "a new directory is made 0700");
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777, 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let said = super::barrier(&open).unwrap().expect("narrowed");
        assert!(said.contains("0755") && said.contains("0700"), "{said}");
        assert_eq!(std::fs::metadata(&open).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(super::barrier(&open).unwrap(), None, "nothing more to say");
    }
}
