//! Vservers on a shared file system (`data = "shared"`): their tree `DIR/NAME` and conf `DIR/NAME.conf` (and
//! `NAME.sh`) are on a file system every host mounts at the same path, so nothing is copied. The host that owns
//! one reaches it through symbolic links in its own directories (`VSERVERS_DIR/NAME`, `CONF_DIR/NAME.conf`,
//! `CONF_DIR/NAME.sh`), which every tool on the host follows; the other hosts have none, so they neither list
//! nor start it. Taking it into service here (a migrate's or a takeover's promote) makes the links; giving it
//! up (the end of a migrate away, a host back after a takeover) removes them, and never touches the shared
//! data.

use std::io;
use std::path::{Path, PathBuf};

use isolate::VserverName;

use crate::dirs::Dirs;

/// The paths of one vserver on its shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPaths {
    /// Its tree.
    pub tree: PathBuf,
    /// Its conf.
    pub conf: PathBuf,
    /// Its hook script (optional).
    pub hook: PathBuf,
}

/// Where `name`'s tree and conf are under the shared directory `dir`.
pub fn paths(dir: &Path, name: &VserverName) -> SharedPaths {
    SharedPaths {
        tree: dir.join(name.as_str()),
        conf: dir.join(format!("{name}.conf")),
        hook: dir.join(format!("{name}.sh")),
    }
}

/// Why the links could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The shared directory lacks the tree or the conf (not mounted here, or never built there).
    #[error("{0}")]
    Missing(String),
    /// A tree or conf of that name is on this host already.
    #[error("{0}")]
    Exists(String),
    /// Making a link failed.
    #[error("{0}")]
    Failed(String),
}

/// The links of this host's directories and where each points: (link, target); the hook only when the shared
/// directory has one.
fn links(dirs: &Dirs, shared: &SharedPaths, name: &VserverName) -> Vec<(PathBuf, PathBuf)> {
    let mut out = vec![(dirs.conf(name), shared.conf.clone()), (dirs.root(name), shared.tree.clone())];
    if shared.hook.is_file() {
        out.push((dirs.hook(name), shared.hook.clone()));
    }
    out
}

/// Takes `name` into service on this host: links its tree and conf on the shared directory `dir` into this
/// host's directories. Refused when the shared directory lacks them, or this host has a tree or conf of that
/// name; a failure halfway removes the links it made.
pub fn link(dirs: &Dirs, dir: &Path, name: &VserverName) -> Result<(), LinkError> {
    let shared = paths(dir, name);
    if !shared.tree.is_dir() || !shared.conf.is_file() {
        return Err(LinkError::Missing(format!(
            "the shared directory {} lacks {name}'s tree {name}/ or conf {name}.conf (is the shared file system \
             mounted on this host?)",
            dir.display()
        )));
    }
    let wanted = links(dirs, &shared, name);
    if let Some((there, _)) = wanted.iter().find(|(link, _)| link.symlink_metadata().is_ok()) {
        return Err(LinkError::Exists(format!(
            "{} is on this host already; {name} is on shared storage and is reached here through links only: \
             nothing was changed",
            there.display()
        )));
    }
    let mut made: Vec<&Path> = Vec::new();
    for (link, target) in &wanted {
        if let Err(e) = std::os::unix::fs::symlink(target, link) {
            for done in made {
                let _ = std::fs::remove_file(done);
            }
            return Err(LinkError::Failed(format!("cannot link {} to {}: {e}", link.display(), target.display())));
        }
        made.push(link);
    }
    Ok(())
}

/// Gives `name` up on this host: removes the links of its tree, conf and hook to the shared directory `dir`.
/// Anything else in their place (a real tree or file) is left alone and named in the error. Missing links are
/// no error.
pub fn unlink(dirs: &Dirs, dir: &Path, name: &VserverName) -> io::Result<()> {
    let shared = paths(dir, name);
    let mut foreign = Vec::new();
    for (link, target) in
        [(dirs.conf(name), shared.conf), (dirs.root(name), shared.tree), (dirs.hook(name), shared.hook)]
    {
        match std::fs::read_link(&link) {
            Ok(to) if to == target => std::fs::remove_file(&link)?,
            Ok(_) => foreign.push(link),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not a link: a real tree or file.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => foreign.push(link),
            Err(e) => return Err(e),
        }
    }
    if foreign.is_empty() {
        Ok(())
    } else {
        let list: Vec<String> = foreign.iter().map(|p| p.display().to_string()).collect();
        Err(io::Error::other(format!(
            "left alone, not links to {name}'s shared directory {}: {}",
            dir.display(),
            list.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Dirs, PathBuf, VserverName) {
        let t = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            vservers_dir: t.path().join("vservers"),
            conf_dir: t.path().join("etc"),
            run_dir: t.path().join("run"),
            cgroup_root: t.path().join("cg"),
            cgroup_parent: "x".into(),
        };
        let shared = t.path().join("shared");
        for d in [&dirs.vservers_dir, &dirs.conf_dir, &shared.join("web/etc")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(shared.join("web.conf"), "S_HOSTNAME=web\n").unwrap();
        (t, dirs, shared, VserverName::parse("web").unwrap())
    }

    #[test]
    fn links_are_made_followed_and_removed_without_touching_the_shared_data() {
        let (_t, dirs, shared, web) = setup();
        link(&dirs, &shared, &web).unwrap();
        assert!(dirs.root(&web).join("etc").is_dir() && dirs.conf(&web).is_file());
        assert!(!dirs.hook(&web).exists(), "no hook on the shared directory: no link");
        let e = link(&dirs, &shared, &web).unwrap_err();
        assert!(matches!(e, LinkError::Exists(_)), "{e}");
        unlink(&dirs, &shared, &web).unwrap();
        assert!(dirs.root(&web).symlink_metadata().is_err() && dirs.conf(&web).symlink_metadata().is_err());
        assert!(shared.join("web/etc").is_dir() && shared.join("web.conf").is_file(), "the shared data stays");
        unlink(&dirs, &shared, &web).unwrap();
    }

    #[test]
    fn what_is_missing_or_in_the_way_is_refused_and_a_real_tree_never_removed() {
        let (_t, dirs, shared, web) = setup();
        let elsewhere = tempfile::tempdir().unwrap();
        let e = link(&dirs, elsewhere.path(), &web).unwrap_err();
        assert!(matches!(e, LinkError::Missing(_)) && e.to_string().contains("mounted"), "{e}");
        std::fs::create_dir(dirs.root(&web)).unwrap();
        let e = link(&dirs, &shared, &web).unwrap_err();
        assert!(matches!(e, LinkError::Exists(_)), "{e}");
        assert!(dirs.conf(&web).symlink_metadata().is_err(), "nothing was made");
        let e = unlink(&dirs, &shared, &web).unwrap_err();
        assert!(e.to_string().contains("left alone"), "{e}");
        assert!(dirs.root(&web).is_dir(), "a real tree stays");
    }
}
