//! `vserver NAME build`: makes a runnable root so anyone can try the product, and the tests have real
//! vservers. `--busybox` lays out a small userland from the host's static busybox; `--from DIR` copies an
//! existing tree. The tree is built under a temporary name and renamed into place only when complete; a
//! starter `NAME.conf` is written last, and only when there is none.

use std::path::{Path, PathBuf};
use std::process::Command;

use isolate::VserverName;

use crate::dirs::Dirs;
use crate::legacy_conf;

/// Where the tree comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A static busybox binary (path), installed with all its applets.
    Busybox(PathBuf),
    /// An existing tree, copied with owners, modes, links and special files.
    Copy(PathBuf),
}

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the tree comes from.
    pub source: Source,
    /// IPROOT for the starter conf (validated before anything is written).
    pub iproot: Option<String>,
    /// S_HOSTNAME for the starter conf.
    pub hostname: Option<String>,
}

/// A build was refused or failed; nothing was left behind.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The tree exists already.
    #[error("{0} already exists; remove it first or build under another name")]
    Exists(PathBuf),
    /// The busybox binary is missing or not static.
    #[error("{path}: {reason} (install Debian's busybox-static, or pass --busybox-bin)")]
    Busybox {
        /// The binary.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The source directory of --from is not a directory.
    #[error("--from {0}: not a directory")]
    From(PathBuf),
    /// The IPROOT given does not parse.
    #[error("--iproot {value:?}: {reason}")]
    Iproot {
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A copy or applet installation failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// What it printed.
        detail: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io { op, path: path.to_path_buf(), source }
}

/// The host's static busybox: `VSERVER_BUSYBOX`, else `/bin/busybox`, else `/usr/bin/busybox`.
pub fn default_busybox() -> PathBuf {
    if let Some(p) = std::env::var_os("VSERVER_BUSYBOX") {
        return p.into();
    }
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "/bin/busybox".into())
}

/// Whether an ELF file asks for a dynamic loader (it has a PT_INTERP program header).
pub fn is_dynamic_elf(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 64 || &bytes[0..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None; // only 64-bit little-endian is checked
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let kind = u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?);
        if kind == 3 {
            return Some(true);
        }
    }
    Some(false)
}

/// Builds the vserver `name`: its tree, then a starter conf when it has none. Returns the conf's path when
/// one was written.
pub fn build(dirs: &Dirs, name: &VserverName, opts: &BuildOptions) -> Result<Option<PathBuf>, BuildError> {
    let root = dirs.root(name);
    if root.exists() || std::fs::symlink_metadata(&root).is_ok() {
        return Err(BuildError::Exists(root));
    }
    let conf_text = legacy_conf::render_starter(name, opts.iproot.as_deref(), opts.hostname.as_deref());
    // Validate what we would write before touching anything.
    let conf_path = dirs.conf(name);
    if let Err(e) = legacy_conf::LegacyConf::parse(&conf_path, &conf_text)
        .and_then(|(c, _)| c.to_spec(name, root.clone(), dirs.cgroup()))
    {
        return Err(BuildError::Iproot { value: opts.iproot.clone().unwrap_or_default(), reason: e.to_string() });
    }
    match &opts.source {
        Source::Busybox(bb) => check_busybox(bb)?,
        Source::Copy(from) if !from.is_dir() => return Err(BuildError::From(from.clone())),
        Source::Copy(_) => {}
    }
    crate::dirs::barrier(&dirs.vservers_dir).map_err(io("create", &dirs.vservers_dir))?;
    let tmp = dirs.vservers_dir.join(format!(".{name}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = match &opts.source {
        Source::Busybox(bb) => busybox_tree(&tmp, bb, name, opts.hostname.as_deref()),
        Source::Copy(from) => copy_tree(from, &tmp),
    }
    .and_then(|()| std::fs::rename(&tmp, &root).map_err(io("rename", &root)));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if conf_path.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(&dirs.conf_dir).map_err(io("create", &dirs.conf_dir))?;
    std::fs::write(&conf_path, conf_text).map_err(io("write", &conf_path))?;
    Ok(Some(conf_path))
}

fn check_busybox(bb: &Path) -> Result<(), BuildError> {
    let bytes = std::fs::read(bb).map_err(|e| BuildError::Busybox { path: bb.into(), reason: e.to_string() })?;
    match is_dynamic_elf(&bytes) {
        Some(false) => Ok(()),
        Some(true) => Err(BuildError::Busybox {
            path: bb.into(),
            reason: "is dynamically linked and would not run inside a vserver".into(),
        }),
        None => Err(BuildError::Busybox { path: bb.into(), reason: "is not a 64-bit ELF program".into() }),
    }
}

fn busybox_tree(root: &Path, bb: &Path, name: &VserverName, hostname: Option<&str>) -> Result<(), BuildError> {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/init.d",
        "etc/rc3.d",
        "dev",
        "proc",
        "sys",
        "root",
        "tmp",
        "var/run",
        "var/log",
        "var/tmp",
        "home",
        "www",
    ] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    use std::os::unix::fs::PermissionsExt;
    for t in ["tmp", "var/tmp"] {
        let p = root.join(t);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).map_err(io("chmod", &p))?;
    }
    let target = root.join("bin/busybox");
    std::fs::copy(bb, &target).map_err(io("copy busybox to", &target))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &target))?;
    let out = Command::new(bb).arg("--list-full").output().map_err(io("run", bb))?;
    if !out.status.success() {
        return Err(BuildError::Command {
            what: format!("{} --list-full", bb.display()),
            detail: String::from_utf8_lossy(&out.stderr).into(),
        });
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.contains("..") || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io("link", &link))?;
        }
    }
    let host = hostname.unwrap_or(name.as_str());
    let files: [(&str, String); 6] = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".into()),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n".into()),
        ("etc/hostname", format!("{host}\n")),
        ("etc/hosts", format!("127.0.0.1 localhost\n127.0.1.1 {host}\n")),
        ("etc/fstab", "# a vserver has no disks of its own\n".into()),
        ("www/index.html", format!("<h1>{name}</h1>\n")),
    ];
    for (f, text) in files {
        let p = root.join(f);
        std::fs::write(&p, text).map_err(io("write", &p))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(io("create", to))?;
    let out = Command::new("cp")
        .arg("-a")
        .arg("--one-file-system")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(io("run cp for", from))?;
    if !out.status.success() {
        return Err(BuildError::Command {
            what: format!("cp -a {}", from.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_detected() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert_eq!(is_dynamic_elf(&sh), Some(true));
        assert_eq!(is_dynamic_elf(b"#!/bin/sh\n"), None);
    }
}
