//! The vserver's own services: the System V start scripts of runlevel 3 (`/etc/rc3.d/S*` or
//! `/etc/rc.d/rc3.d/S*`), run inside the context in name order with `start` and in reverse with `stop`.

use std::path::{Path, PathBuf};

/// Start scripts of runlevel 3, as paths inside the vserver, sorted by name. The directories are looked
/// up from the host, so a directory that is a symbolic link (which could point anywhere on the host) is
/// not followed.
pub fn start_scripts(root: &Path) -> Vec<PathBuf> {
    for dir in ["etc/rc3.d", "etc/rc.d/rc3.d"] {
        if !plain_dirs(root, dir) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with('S') && n.len() > 1 && !n.ends_with('~'))
            .collect();
        names.sort();
        return names.into_iter().map(|n| Path::new("/").join(dir).join(n)).collect();
    }
    Vec::new()
}

/// Whether every component of `rel` under `root` is a real directory, not a symbolic link.
fn plain_dirs(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    rel.split('/').all(|c| {
        p.push(c);
        std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false)
    })
}

/// A service name for `vserver NAME service SERVICE ...`: a plain file name in `/etc/init.d`.
pub fn check_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(format!("invalid service name {name:?}: it must be a file name in /etc/init.d"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_scripts_are_sorted_and_symlinked_dirs_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("etc/rc3.d");
        std::fs::create_dir_all(&rc).unwrap();
        for n in ["S50httpd", "S10syslog", "K20old", "README", "S99local"] {
            std::fs::write(rc.join(n), "").unwrap();
        }
        let got = start_scripts(dir.path());
        assert_eq!(
            got,
            vec![PathBuf::from("/etc/rc3.d/S10syslog"), "/etc/rc3.d/S50httpd".into(), "/etc/rc3.d/S99local".into()]
        );

        let evil = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", evil.path().join("etc")).unwrap();
        assert!(start_scripts(evil.path()).is_empty());
        assert!(check_service_name("../x").is_err());
        assert!(check_service_name("httpd").is_ok());
    }
}
