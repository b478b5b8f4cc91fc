//! LXC with Debian's busybox template, on a macvlan of the host's `eth0`, the service started by
//! the container's init scripts; `lxc-start -d` and `lxc-stop -k`.
//!
//! Every `lxc-*` command runs in the host's network namespace by setns only: LXC's command socket
//! is an abstract unix socket, so it is only reachable from the namespace `lxc-start` ran in, and
//! `ip netns exec` would remount `/sys` and hide the cgroup hierarchies from LXC.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

use super::contender::{plumb, run_logged, Contender};
use super::service::install_httpd_service;
use crate::lab::{Host, SUBNET_PREFIX};

/// Longest an `lxc-create` or `lxc-stop` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The container's `/etc/init.d/rcS`, run by busybox init at sysinit. The template's own runs
/// `udhcpc` in the foreground, which never returns on a network without DHCP.
const RCS: &str = r#"#!/bin/sh
/bin/mount -a
for script in /etc/rc3.d/S*; do
  [ -x "$script" ] && "$script" start
done
"#;

/// Containers `lxb0`, `lxb1`, ... in an lxcpath of the host's directory.
pub(crate) struct LxcContainers<'lab> {
    host: &'lab Host,
    lxcpath: PathBuf,
    /// Instances launched and not yet stopped: stopped on drop.
    started: BTreeSet<usize>,
}

impl<'lab> LxcContainers<'lab> {
    /// An empty lxcpath under the host's directory.
    pub(crate) fn new(host: &'lab Host) -> Result<Self> {
        let lxcpath = host.dir.join("lxc");
        fs::create_dir_all(&lxcpath).with_context(|| format!("creating {}", lxcpath.display()))?;
        Ok(LxcContainers { host, lxcpath, started: BTreeSet::new() })
    }

    fn name(i: usize) -> String {
        format!("lxb{i}")
    }

    fn lxc(&self, program: &str, i: usize) -> std::process::Command {
        let mut cmd = self.host.command(program);
        cmd.arg("-n").arg(Self::name(i)).arg("-P").arg(&self.lxcpath);
        cmd
    }

    /// Replaces the template's network and AppArmor settings: a macvlan on the host's device with
    /// `addr`, no AppArmor profile, and cgroups under the host's cgroup parent (so that the lab's
    /// cleanup finds them).
    fn configure(&self, i: usize, addr: Ipv4Addr) -> Result<()> {
        let config = self.lxcpath.join(Self::name(i)).join("config");
        let text = fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                let key = l.trim_start();
                !(key.starts_with("lxc.net.") || key.starts_with("lxc.apparmor.") || key.starts_with("lxc.cgroup.dir"))
            })
            .collect();
        let ours = format!(
            "lxc.net.0.type = macvlan\n\
             lxc.net.0.link = {dev}\n\
             lxc.net.0.macvlan.mode = bridge\n\
             lxc.net.0.flags = up\n\
             lxc.net.0.ipv4.address = {addr}/{SUBNET_PREFIX}\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.dir = {parent}/{name}\n",
            dev = self.host.dev,
            parent = self.host.cgroup_parent,
            name = Self::name(i),
        );
        kept.push(&ours);
        fs::write(&config, kept.join("\n")).with_context(|| format!("writing {}", config.display()))
    }

    fn rootfs(&self, i: usize) -> PathBuf {
        self.lxcpath.join(Self::name(i)).join("rootfs")
    }
}

/// Writes the container's `rcS` (see [`RCS`]).
fn write_rcs(rootfs: &Path) -> Result<()> {
    let rcs = rootfs.join("etc/init.d/rcS");
    fs::write(&rcs, RCS).with_context(|| format!("writing {}", rcs.display()))?;
    fs::set_permissions(&rcs, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", rcs.display()))
}

impl Contender for LxcContainers<'_> {
    fn prepare(&mut self, i: usize, addr: Ipv4Addr, marker: &str) -> Result<()> {
        let mut create = self.lxc("lxc-create", i);
        create.args(["-t", "busybox"]);
        run_logged(&mut create, &self.log_path(i), COMMAND_TIMEOUT)?;
        self.configure(i, addr)?;
        let rootfs = self.rootfs(i);
        write_rcs(&rootfs)?;
        install_httpd_service(&rootfs, marker)
    }

    fn launch(&mut self, i: usize) -> Result<Child> {
        let mut start = self.lxc("lxc-start", i);
        let lxc_log = self.lxcpath.join(format!("{}.lxc.log", Self::name(i)));
        start.arg("-d").arg("-o").arg(lxc_log);
        plumb(&mut start, &self.log_path(i))?;
        let child = start.spawn().context("starting `lxc-start`")?;
        self.started.insert(i);
        Ok(child)
    }

    fn stop(&mut self, i: usize) -> Result<()> {
        let mut stop = self.lxc("lxc-stop", i);
        stop.arg("-k");
        self.started.remove(&i);
        run_logged(&mut stop, &self.log_path(i), COMMAND_TIMEOUT)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.lxcpath.join(format!("{}.log", Self::name(i)))
    }
}

impl Drop for LxcContainers<'_> {
    fn drop(&mut self) {
        for i in std::mem::take(&mut self.started) {
            if let Err(err) = self.stop(i) {
                let err = format!("{err:#}");
                // Interrupted while lxc-start ran: there was nothing to stop.
                if !err.contains("is not running") {
                    eprintln!("vserver-lab: cleaning up container {}: {err}", Self::name(i));
                }
            }
        }
    }
}
