//! `vserver-lab demo`: the product on one host in two minutes. It builds a lab (a host and a client in
//! network namespaces on this machine), builds a busybox vserver serving HTTP at its own address, starts
//! it, shows what it looks like from outside and from inside, stops it, and removes everything.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::Interrupted;
use crate::lab::{vserver_bin, Host, Lab, SUBNET_PREFIX};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Leave the lab and the running vserver in place, and print how to explore them.
    pub keep: bool,
}

const NAME: &str = "demo";

struct Demo<'a> {
    host: &'a Host,
    vserver: PathBuf,
    stat: PathBuf,
    cancel: &'a AtomicBool,
}

impl Demo<'_> {
    fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        Ok(())
    }

    /// Shows `$ vserver ARGS` and its output, as an operator would type it; fails on a non-zero exit.
    fn vserver(&self, args: &[&str]) -> Result<String> {
        self.run(&self.vserver, "vserver", args)
    }

    fn run(&self, bin: &PathBuf, shown: &str, args: &[&str]) -> Result<String> {
        self.check()?;
        println!("\n$ {shown} {}", args.join(" "));
        let started = Instant::now();
        let out = self.host.command(bin).args(args).output().with_context(|| format!("running {shown}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{stdout}");
        // Messages of the command in line with its output (one stream keeps the transcript in order).
        print!("{}", String::from_utf8_lossy(&out.stderr));
        println!("  ({} ms)", started.elapsed().as_millis());
        if !out.status.success() {
            bail!("`{shown} {}` failed with {}", args.join(" "), out.status);
        }
        Ok(stdout)
    }
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs the demo. Everything it made is removed at the end, on failure and on Ctrl-C (`cancel`), unless
/// `keep` is set and it succeeded.
pub fn run_demo(opts: &DemoOptions, cancel: &AtomicBool) -> Result<()> {
    let vserver = vserver_bin().context(
        "no `vserver` command beside this executable and VSERVER_BIN is not set (build it: cargo build --release)",
    )?;
    let stat = vserver.with_file_name("vserver-stat");
    step("A lab on this machine: one host and one client, network namespaces on a bridge (198.18.0.0/24)");
    let lab = Lab::new(1)?;
    let host = &lab.hosts[0];
    println!("host   {} at {} (its vservers in {})", host.netns.name(), host.addr, host.vservers_dir.display());
    println!("client {} at {}", lab.client.netns.name(), lab.client.addr);
    let demo = Demo { host, vserver, stat, cancel };
    let addr: Ipv4Addr = lab.free_addr(0);
    let iproot = format!("{}:{addr}/{SUBNET_PREFIX}", host.dev);

    step("Build a vserver from the host's static busybox, with its own address");
    demo.vserver(&[NAME, "build", "--busybox", "--iproot", &iproot, "--hostname", "demo.lab"])?;
    let root = host.vservers_dir.join(NAME);
    crate::bench::install_httpd_service(&root, "Hello from the vserver demo")?;
    println!("installed /etc/init.d/web (busybox httpd on port 80) as the runlevel-3 start script S50web");

    step("Start it: namespaces, cgroup, macvlan with its address, capability ceiling, then its services");
    let before = Instant::now();
    demo.vserver(&[NAME, "start"])?;
    let answered = lab
        .client
        .wait_http(addr, 80, Instant::now() + Duration::from_secs(10))
        .context("the vserver's web service did not answer from the client")?;
    let total = before.elapsed();
    let body = lab.client.http_get(addr, 80, Duration::from_secs(2))?;
    println!(
        "\nclient -> http://{addr}/ : {:?}  (answered {} ms after the start command began)",
        body.trim(),
        total.as_millis().max(answered.as_millis())
    );
    let host_answers = lab.client.tcp_connect_ok(host.addr, 80, Duration::from_millis(300));
    println!(
        "client -> http://{}/ (the host's own address): {}",
        host.addr,
        if host_answers { "answers (!)" } else { "nothing: the service is bound to the vserver's address only" }
    );

    step("From the host");
    demo.vserver(&[NAME, "status"])?;
    demo.run(&demo.stat, "vserver-stat", &[])?;

    step("From inside: its own processes, name and addresses, and a reduced root");
    demo.vserver(&[NAME, "exec", "ps"])?;
    demo.vserver(&[NAME, "exec", "hostname"])?;
    demo.vserver(&[NAME, "exec", "ip", "-o", "-4", "addr"])?;
    demo.check()?;
    println!("\n$ vserver {NAME} exec mount -t tmpfs none /tmp");
    let out = host.command(&demo.vserver).args([NAME, "exec", "mount", "-t", "tmpfs", "none", "/tmp"]).output()?;
    print!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        bail!("mount inside the vserver succeeded: the capability ceiling is not in force");
    }
    println!("  (refused: root inside has no CAP_SYS_ADMIN)");

    if opts.keep {
        step("Kept running. Explore it with the real commands:");
        let env = format!(
            "VSERVER_VSERVERS_DIR={} VSERVER_CONF_DIR={} VSERVER_RUN_DIR={} VSERVER_CGROUP_PARENT={}",
            host.vservers_dir.display(),
            host.conf_dir.display(),
            host.run_dir.display(),
            host.cgroup_parent
        );
        let bin = demo.vserver.display();
        println!("  export {env}");
        println!("  nsenter --net=/run/netns/{} {bin} {NAME} status", host.netns.name());
        println!("  nsenter --net=/run/netns/{} {bin} {NAME} enter", host.netns.name());
        println!("  ip netns exec {} busybox wget -qO- http://{addr}/", lab.client.netns.name());
        println!("Remove it all afterwards:");
        println!("  nsenter --net=/run/netns/{} {bin} {NAME} stop", host.netns.name());
        println!(
            "  ip netns del {}; ip netns del {}; ip netns del {}; rm -rf {}",
            host.netns.name(),
            lab.client.netns.name(),
            lab.switch().name(),
            lab.dir().display()
        );
        println!("  rmdir /sys/fs/cgroup/{0} /sys/fs/cgroup/*/{0} 2>/dev/null", host.cgroup_parent);
        std::mem::forget(lab);
        return Ok(());
    }

    step("Stop it: stop scripts, SIGTERM, grace period, then SIGKILL through the cgroup");
    demo.vserver(&[NAME, "stop"])?;
    let gone = !lab.client.tcp_connect_ok(addr, 80, Duration::from_millis(300));
    println!(
        "client -> http://{addr}/ : {}",
        if gone { "no answer: the address left with the vserver" } else { "still answers (!)" }
    );
    step("Done; the lab is being removed");
    Ok(())
}
