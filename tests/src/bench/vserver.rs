//! The product: `vserver NAME build --busybox --iproot eth0:IP/24`, the service installed as a
//! runlevel script, then `vserver NAME start` and `vserver NAME stop`.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

use super::contender::{plumb, run_logged, Contender};
use super::service::install_httpd_service;
use crate::lab::{vserver_bin, Host, SUBNET_PREFIX};

/// Longest a build or a stop may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Vservers `PREFIX0`, `PREFIX1`, ... on one host.
pub(crate) struct Vservers<'lab> {
    host: &'lab Host,
    bin: PathBuf,
    prefix: &'static str,
    /// Lines added to each one's NAME.conf.
    extra_conf: &'static str,
    logs: PathBuf,
    /// Instances launched and not yet stopped: stopped on drop.
    started: BTreeSet<usize>,
}

impl<'lab> Vservers<'lab> {
    /// Finds the `vserver` command (see [`vserver_bin`]) for vservers named `prefix` and a number on `host`,
    /// with `extra_conf` added to their conf.
    pub(crate) fn new(host: &'lab Host, prefix: &'static str, extra_conf: &'static str) -> Result<Self> {
        let bin = vserver_bin().context(
            "no `vserver` command beside this executable and VSERVER_BIN is not set \
             (build it: cargo build --release -p node-agent)",
        )?;
        let logs = host.dir.join("logs");
        fs::create_dir_all(logs.join(prefix)).with_context(|| format!("creating {}", logs.display()))?;
        Ok(Vservers { host, bin, prefix, extra_conf, logs: logs.join(prefix), started: BTreeSet::new() })
    }

    fn name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }
}

impl Contender for Vservers<'_> {
    fn prepare(&mut self, i: usize, addr: Ipv4Addr, marker: &str) -> Result<()> {
        let name = self.name(i);
        let iproot = format!("{}:{addr}/{SUBNET_PREFIX}", self.host.dev);
        let mut build = self.host.command(&self.bin);
        build.args([&name, "build", "--busybox", "--iproot", &iproot]);
        run_logged(&mut build, &self.log_path(i), COMMAND_TIMEOUT)?;
        if !self.extra_conf.is_empty() {
            let conf = self.host.conf_dir.join(format!("{name}.conf"));
            let mut text = fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
            text.push_str(self.extra_conf);
            fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        }
        install_httpd_service(&self.host.vservers_dir.join(&name), marker)
    }

    fn launch(&mut self, i: usize) -> Result<Child> {
        let mut start = self.host.command(&self.bin);
        start.args([&self.name(i), "start"]);
        plumb(&mut start, &self.log_path(i))?;
        let child = start.spawn().context("starting `vserver start`")?;
        self.started.insert(i);
        Ok(child)
    }

    fn stop(&mut self, i: usize) -> Result<()> {
        let mut stop = self.host.command(&self.bin);
        stop.args([&self.name(i), "stop"]);
        self.started.remove(&i);
        run_logged(&mut stop, &self.log_path(i), COMMAND_TIMEOUT)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.logs.join(format!("{}.log", self.name(i)))
    }
}

impl Drop for Vservers<'_> {
    fn drop(&mut self) {
        for i in std::mem::take(&mut self.started) {
            if let Err(err) = self.stop(i) {
                let err = format!("{err:#}");
                // Interrupted while `vserver start` ran: there was nothing to stop.
                if !err.contains("is not running") {
                    eprintln!("vserver-lab: cleaning up vserver {}: {err}", self.name(i));
                }
            }
        }
    }
}
