//! A one-host lab with one busybox vserver, and helpers to run the real `vserver` command in it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vserver_lab::{skip_unless_root, Lab};

/// The binary under test.
pub const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");
/// Its companion.
pub const VSERVER_STAT: &str = env!("CARGO_BIN_EXE_vserver-stat");

/// A lab with one host and a vserver `name` built there with busybox (not started).
pub struct Fixture {
    /// The lab; host 0 runs the vserver.
    pub lab: Lab,
    /// The vserver's name (unique per test).
    pub name: String,
    /// Its address, reachable from the lab's client.
    pub addr: Ipv4Addr,
}

impl Fixture {
    /// Builds the lab and the vserver with `conf_extra` appended to its starter conf; `None` when the test
    /// must be skipped (not root).
    pub fn new(test: &str, conf_extra: &str) -> Option<Fixture> {
        if skip_unless_root(test) {
            return None;
        }
        let lab = Lab::new(1).expect("lab");
        let addr = lab.free_addr(0);
        let name = vserver_lab::unique("v");
        let f = Fixture { lab, name, addr };
        let out = f.vserver(&["build", "--busybox", "--iproot", &format!("eth0:{addr}/24")]);
        assert!(out.status.success(), "build failed: {}", text(&out));
        if !conf_extra.is_empty() {
            let mut conf = std::fs::read_to_string(f.conf()).unwrap();
            conf.push_str(conf_extra);
            conf.push('\n');
            std::fs::write(f.conf(), conf).unwrap();
        }
        Some(f)
    }

    /// Host 0.
    pub fn host(&self) -> &vserver_lab::Host {
        &self.lab.hosts[0]
    }

    /// The vserver's tree.
    pub fn root(&self) -> PathBuf {
        self.host().vservers_dir.join(&self.name)
    }

    /// Its conf file.
    pub fn conf(&self) -> PathBuf {
        self.host().conf_dir.join(format!("{}.conf", self.name))
    }

    /// `vserver NAME ARGS...` on host 0.
    pub fn vserver(&self, args: &[&str]) -> Output {
        self.command(VSERVER).arg(&self.name).args(args).output().expect("run vserver")
    }

    /// `vserver ARGS...` on host 0 (no name prepended).
    pub fn vserver_raw(&self, args: &[&str]) -> Output {
        self.command(VSERVER).args(args).output().expect("run vserver")
    }

    /// A command in host 0's namespace with its directories, a short stop timeout, stdin closed.
    pub fn command(&self, program: &str) -> Command {
        let mut c = self.host().command(program);
        c.env("VSERVER_STOP_TIMEOUT", "2").stdin(Stdio::null());
        c
    }

    /// `vserver NAME exec ARGS...`, asserting success; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["exec"];
        full.extend_from_slice(args);
        let out = self.vserver(&full);
        assert!(out.status.success(), "exec {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the vserver, asserting success.
    pub fn start(&self) {
        let out = self.vserver(&["start"]);
        assert!(out.status.success(), "start failed: {}", text(&out));
    }

    /// Installs a busybox httpd as the runlevel-3 service S50web (not named httpd: `killall httpd` in it
    /// would kill the script itself).
    pub fn add_httpd(&self) {
        self.add_service("web", 50, "httpd -p 80 -h /www", "killall httpd");
    }

    /// Installs `/etc/init.d/NAME` running `start` / `stop` and links it as `S{order}NAME` in rc3.d.
    pub fn add_service(&self, name: &str, order: u32, start: &str, stop: &str) {
        let root = self.root();
        let script = root.join("etc/init.d").join(name);
        std::fs::write(
            &script,
            format!("#!/bin/sh\ncase \"$1\" in\n  start) {start} ;;\n  stop) {stop} ;;\n  status) echo ok ;;\nesac\n"),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(format!("../init.d/{name}"), root.join(format!("etc/rc3.d/S{order:02}{name}")))
            .unwrap();
    }

    /// Host pids of every process in the vserver's cgroup (unified or v2 hierarchy), for checks from outside.
    pub fn cgroup_procs(&self) -> Vec<i32> {
        let parent = &self.host().cgroup_parent;
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(|r| PathBuf::from(r).join(parent).join(&self.name).join("cgroup.procs"))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The vserver's control file `file` of `controller` (`pids`, `memory`, `cpu`, `blkio`...): in the v1
    /// hierarchy of that controller on a hybrid or v1 host, in its one group on a pure v2 host.
    pub fn cgroup_file(&self, controller: &str, file: &str) -> PathBuf {
        let root = PathBuf::from("/sys/fs/cgroup");
        let group = if root.join("cgroup.controllers").exists() { root } else { root.join(controller) };
        group.join(&self.host().cgroup_parent).join(&self.name).join(file)
    }

    /// Every group the vserver has in any hierarchy of this machine (none once it is stopped or refused).
    pub fn cgroup_groups(&self) -> Vec<PathBuf> {
        let root = PathBuf::from("/sys/fs/cgroup");
        let mut hierarchies = vec![root.clone()];
        hierarchies.extend(std::fs::read_dir(&root).into_iter().flatten().flatten().map(|e| e.path()));
        hierarchies
            .into_iter()
            .map(|h| h.join(&self.host().cgroup_parent).join(&self.name))
            .filter(|g| g.is_dir())
            .collect()
    }

    /// `vserver NAME status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.vserver(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)))
    }

    /// Waits until the service at the vserver's address answers HTTP, or panics.
    pub fn wait_http(&self) -> Duration {
        self.lab
            .client
            .wait_http(self.addr, 80, Instant::now() + Duration::from_secs(10))
            .expect("the vserver's service answers from the client")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.command(VSERVER).arg(&self.name).arg("stop").output();
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Which of `pids` still run on the machine. A zombie (dead, waiting for its parent, the machine's init for
/// a context's process 1, to collect its exit status) holds no resource and does not count.
pub fn alive(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
            !matches!(state, "Z" | "X")
        })
        .collect()
}
