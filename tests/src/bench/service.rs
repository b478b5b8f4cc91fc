//! The service every variant runs: busybox `httpd` serving a page that names its instance, started
//! by a runlevel script where the variant has init scripts.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// `/etc/init.d/web` in the variants with init scripts (busybox httpd daemonizes itself). The script is
/// not named `httpd`: `killall httpd` would then kill the script itself.
pub(crate) const HTTPD_INIT_SCRIPT: &str = r#"#!/bin/sh
# The benchmark's service: busybox httpd on port 80, serving /www.
case "$1" in
  start) httpd -p 80 -h /www ;;
  stop) killall httpd ;;
  *) echo "usage: $0 start|stop" >&2; exit 1 ;;
esac
"#;

/// The page an instance serves: naming it proves the answer came from this instance.
pub(crate) fn page(marker: &str) -> String {
    format!("<html><body>{marker}</body></html>\n")
}

/// Installs the service into the tree at `root`: `/etc/init.d/web`, the runlevel 3 link
/// `/etc/rc3.d/S50web` and `/www/index.html` naming `marker`.
pub fn install_httpd_service(root: &Path, marker: &str) -> Result<()> {
    let init_d = root.join("etc/init.d");
    let rc3 = root.join("etc/rc3.d");
    for dir in [&init_d, &rc3] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let script = init_d.join("web");
    fs::write(&script, HTTPD_INIT_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", script.display()))?;
    let link = rc3.join("S50web");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
    }
    symlink("../init.d/web", &link).with_context(|| format!("linking {}", link.display()))?;
    write_page(root, marker)
}

/// Writes `/www/index.html` naming `marker` into the tree at `root`.
pub(crate) fn write_page(root: &Path, marker: &str) -> Result<()> {
    let www = root.join("www");
    fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
    let index = www.join("index.html");
    fs::write(&index, page(marker)).with_context(|| format!("writing {}", index.display()))
}

/// A minimal busybox tree at `root`: `/bin/busybox` (a hard link of `busybox`, which must be on
/// the same file system) with `sh` and `httpd` links, and the page naming `marker`.
pub(crate) fn make_busybox_root(root: &Path, busybox: &Path, marker: &str) -> Result<()> {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let target = bin.join("busybox");
    fs::hard_link(busybox, &target)
        .or_else(|_| fs::copy(busybox, &target).map(|_| ()))
        .with_context(|| format!("installing busybox as {}", target.display()))?;
    for applet in ["sh", "httpd", "killall"] {
        let link = bin.join(applet);
        symlink("busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    write_page(root, marker)
}
