//! `vserver-lab demo`: the product in two minutes on one machine. It builds a lab of three hosts and a
//! client in network namespaces, an agent and a watchdog on each host, and a busybox vserver serving HTTP at
//! its own address on h0 with h1 and h2 as standbys; replicates it, shows the cluster, crashes h0 and shows
//! the takeover as the client saw it, phase by phase; then brings h0 back and migrates the vserver home by
//! command, showing the outage. Everything goes at the end and on Ctrl-C, unless `--keep`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::agents::{agent_bin, Agents, Timing, AGENT_PORT};
use crate::bench::Interrupted;
use crate::faults::{watchdog_bin, Watchdogs};
use crate::lab::{vserver_bin, Lab, SUBNET_PREFIX};

/// What the demo does.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the lab, the agents and the vserver running, and print how to explore and remove them.
    pub keep: bool,
    /// The short form (for CI): no look inside, no return of h0 and no migrate back; still a real crash
    /// and a checked takeover.
    pub quick: bool,
}

const NAME: &str = "demo";

/// What the vserver's web page says.
const GREETING: &str = "Hello from the vserver demo";

/// How often the client asks during a crash or a migrate, and how long it waits for one answer.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// The longest the demo waits for anything the cluster does.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request of the client: when it was sent (since the probing began), and the body or what went wrong.
type Probe = (Duration, Result<String, String>);

struct Demo<'a> {
    lab: &'a Lab,
    vserver: PathBuf,
    stat: PathBuf,
    cancel: &'a AtomicBool,
    addr: Ipv4Addr,
}

impl Demo<'_> {
    fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        Ok(())
    }

    /// Shows `hN$ vserver ARGS` and its output, as an operator would type it on host `host`; fails on a
    /// non-zero exit.
    fn vserver(&self, host: usize, args: &[&str]) -> Result<String> {
        self.run(host, &self.vserver, "vserver", args)
    }

    fn stat(&self, host: usize, args: &[&str]) -> Result<String> {
        self.run(host, &self.stat, "vserver-stat", args)
    }

    fn run(&self, host: usize, bin: &Path, shown: &str, args: &[&str]) -> Result<String> {
        self.check()?;
        println!("\nh{host}$ {shown} {}", args.join(" "));
        let started = Instant::now();
        // Output and messages through one pipe, so the transcript keeps their order.
        let (mut reader, writer) = std::io::pipe().context("making a pipe")?;
        let mut cmd = self.lab.hosts[host].command(bin);
        cmd.args(args).stdin(std::process::Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
        let mut child = cmd.spawn().with_context(|| format!("running {shown}"))?;
        // The command's copies of the pipe's writing end are the only ones left once it runs.
        drop(cmd);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text).with_context(|| format!("reading {shown}'s output"))?;
        let status = child.wait()?;
        print!("{text}");
        println!("  ({} ms)", started.elapsed().as_millis());
        if !status.success() {
            bail!("`{shown} {}` on h{host} failed with {status}", args.join(" "));
        }
        Ok(text)
    }

    /// Waits until `done` holds, checking for Ctrl-C; fails with `what` after [`PATIENCE`].
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) -> Result<Duration> {
        let begun = Instant::now();
        loop {
            self.check()?;
            if done() {
                return Ok(begun.elapsed());
            }
            ensure!(begun.elapsed() < PATIENCE, "{what}: not after {} s", PATIENCE.as_secs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host running the vserver, if exactly one does.
    fn running_on(&self) -> Option<usize> {
        let on: Vec<usize> = (0..self.lab.hosts.len()).filter(|&i| self.lab.hosts[i].runs(NAME)).collect();
        (on.len() == 1).then(|| on[0])
    }

    /// Runs `act` while the client asks the vserver's address every [`PROBE_EVERY`]; what `act` gave and
    /// what the client saw, as (time since the start, answer or error) in order.
    fn probed<T>(&self, act: impl FnOnce(Instant) -> Result<T>) -> Result<(T, Vec<Probe>)> {
        let stop = AtomicBool::new(false);
        let seen = Mutex::new(Vec::new());
        let begun = Instant::now();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) && !self.cancel.load(Ordering::Relaxed) {
                    let at = begun.elapsed();
                    let answer = self.lab.client.http_get(self.addr, 80, PROBE_TIMEOUT).map_err(|e| short(&e));
                    seen.lock().expect("not poisoned").push((at, answer));
                    std::thread::sleep(PROBE_EVERY);
                }
            });
            let result = act(begun);
            stop.store(true, Ordering::Relaxed);
            result
        })?;
        Ok((result, seen.into_inner().expect("not poisoned")))
    }
}

/// The gist of a failed request, for a timeline.
fn short(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("timed out") || text.contains("WouldBlock") || text.contains("Resource temporarily") {
        "timed out".into()
    } else if text.contains("refused") {
        "connection refused".into()
    } else if text.contains("unreachable") {
        "no route to the address".into()
    } else {
        text.rsplit(": ").next().unwrap_or(&text).to_string()
    }
}

/// The client's view, condensed: the first failure, how many followed, the first answer after them; with
/// `event` (what the demo did, and when) in its place.
fn timeline(seen: &[Probe], from: &str, event: (Duration, &str)) -> (String, Option<Duration>) {
    let mut lines = vec![(event.0, event.1.to_string())];
    let mut outage = None;
    match seen.iter().position(|(_, r)| r.is_err()) {
        None => lines.push((event.0, format!("client: every request was answered ({} requests)", seen.len()))),
        Some(first_fail) => {
            let (failed_at, ref err) = seen[first_fail];
            let last_ok = first_fail.checked_sub(1).map(|i| seen[i].0);
            if let Some(at) = last_ok {
                lines.push((at, format!("client: last answer, {from}")));
            }
            lines.push((failed_at, format!("client: request failed ({})", err.as_ref().unwrap_err())));
            let back = seen[first_fail..].iter().position(|(_, r)| r.is_ok()).map(|i| i + first_fail);
            let failed = back.unwrap_or(seen.len()) - first_fail;
            if let Some(b) = back {
                let (at, ref body) = seen[b];
                lines.push((
                    at,
                    format!(
                        "client: answered again after {failed} failed requests: {:?}",
                        body.as_deref().unwrap_or_default().trim()
                    ),
                ));
                outage = Some(at - last_ok.unwrap_or(failed_at));
            } else {
                lines.push((seen.last().map_or(failed_at, |l| l.0), format!("client: {failed} requests failed")));
            }
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let mut out = String::new();
    for (at, what) in lines {
        let _ = writeln!(out, "  +{:>6.3} s  {what}", at.as_secs_f64());
    }
    (out, outage)
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs the demo. Everything it made is removed at the end, on failure and on Ctrl-C (`cancel`), unless
/// `keep` is set and it succeeded.
pub fn run_demo(opts: &DemoOptions, cancel: &AtomicBool) -> Result<()> {
    let missing = "beside this executable (build them all: cargo build --release)";
    let vserver = vserver_bin().with_context(|| format!("no `vserver` command {missing}"))?;
    agent_bin().with_context(|| format!("no `vserver-agent` {missing}"))?;
    watchdog_bin().with_context(|| format!("no `vserver-watchdog` {missing}"))?;
    let stat = vserver.with_file_name("vserver-stat");
    let total = Instant::now();

    step("A lab on this machine: three hosts and a client, network namespaces on one bridge (198.18.0.0/24)");
    let lab = Lab::new(3)?;
    for host in &lab.hosts {
        println!(
            "h{}     at {}  (namespace {}, its files in {})",
            host.index,
            host.addr,
            host.netns.name(),
            host.dir.display()
        );
    }
    println!("client at {}  (namespace {})", lab.client.addr, lab.client.netns.name());
    let addr = lab.free_addr(0);
    let demo = Demo { lab: &lab, vserver, stat, cancel, addr };

    step("Build a vserver on h0 from the host's static busybox, with its own address and a web page");
    let iproot = format!("eth0:{addr}/{SUBNET_PREFIX}");
    demo.vserver(0, &[NAME, "build", "--busybox", "--iproot", &iproot, "--hostname", "demo.lab"])?;
    crate::bench::install_httpd_service(&lab.hosts[0].vservers_dir.join(NAME), GREETING)?;
    println!("installed /etc/init.d/web (busybox httpd on port 80) as the runlevel-3 start script S50web");

    step(
        "An agent and a watchdog on every host; the cluster file names h0 primary, h1 and h2 standbys. The cluster \
         is formed as on real hosts: `vserver-agent init --node h0 --listen ... --peer h1=... --peer h2=...` on h0 \
         (the cluster CA, h0's certificate, a join token per host), then `vserver-agent join TOKEN` on h1 and h2: \
         the agents speak TLS with client certificates, and the cluster secret never travels",
    );
    let cluster = format!("[vservers.{NAME}]\nprimary = \"h0\"\nstandbys = [\"h1\", \"h2\"]\n");
    print!("cluster.toml:\n  {}", cluster.replace('\n', "\n  ").trim_end_matches(' '));
    println!(
        "\ndefault timing: beacons every 100 ms, a lease of 1.2 s, takeover after 2 s of silence; agents on port \
         {AGENT_PORT}"
    );
    let mut dogs = Watchdogs::start(&lab)?;
    let mut agents = Agents::form(&lab, Timing::default(), Some(&cluster), |_| String::new())?;
    let all_alive = |agents: &Agents| {
        (0..3).all(|o| (0..3).filter(|p| *p != o).all(|p| agents.peer_state(o, p).as_deref() == Some("alive")))
    };
    let took = demo.wait("the agents did not see each other", || all_alive(&agents))?;
    println!("the three agents hear each other ({} ms)", took.as_millis());

    step("Start it on h0 (the command goes through h0's agent, which records the intent)");
    demo.vserver(0, &[NAME, "start"])?;
    demo.wait("the vserver's web service did not answer the client", || {
        lab.client.http_get(addr, 80, PROBE_TIMEOUT).is_ok()
    })?;
    let body = lab.client.http_get(addr, 80, Duration::from_secs(2))?;
    println!("client -> http://{addr}/ : {:?}", body.trim());
    demo.wait("the cluster did not record h0 as the owner", || owner(&agents, 0).as_deref() == Some("h0"))?;

    step("Replicate it to its standbys now (the agent also does it every 60 s): rsync over the agents' port");
    demo.vserver(0, &[NAME, "sync"])?;
    demo.stat(0, &["--cluster"])?;

    if !opts.quick {
        step("From inside: its own processes, name and addresses, and a reduced root");
        demo.vserver(0, &[NAME, "exec", "ps"])?;
        demo.vserver(0, &[NAME, "exec", "ip", "-o", "-4", "addr"])?;
        demo.check()?;
        println!("\nh0$ vserver {NAME} exec mount -t tmpfs none /tmp");
        let out = lab.hosts[0]
            .command(&demo.vserver)
            .args([NAME, "exec", "mount", "-t", "tmpfs", "none", "/tmp"])
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stderr));
        ensure!(!out.status.success(), "mount inside the vserver succeeded: the capability ceiling is not in force");
        println!("  (refused: root inside has no CAP_SYS_ADMIN)");
    }

    step("Crash h0: kill -9 its agent, its watchdog and every process of the vserver, and pull its link");
    let before = takeovers(&agents, 1);
    let ((to, crashed), seen) = demo.probed(|begun| {
        std::thread::sleep(Duration::from_millis(300));
        let crashed = begun.elapsed();
        agents.kill9(0);
        dogs.kill9(0);
        lab.hosts[0].kill_vservers();
        lab.set_link(0, false)?;
        let mut to = None;
        demo.wait("nobody took the vserver over", || {
            to = demo.running_on().filter(|&i| i != 0);
            to.is_some() && lab.client.http_get(addr, 80, PROBE_TIMEOUT).is_ok()
        })?;
        std::thread::sleep(Duration::from_millis(300));
        Ok((to.expect("found"), crashed))
    })?;
    let (told, outage) = timeline(&seen, "from h0", (crashed, "h0 crashed"));
    print!("{told}");
    println!(
        "the client was without an answer for {} ms; h{to} runs the vserver now",
        outage.map_or("?".to_string(), |d| d.as_millis().to_string())
    );
    demo.wait("the takeover was not recorded", || takeovers(&agents, to) > before)?;
    demo.stat(to, &["--takeovers"])?;
    demo.stat(to, &["--cluster"])?;
    ensure!(owner(&agents, to).as_deref() == Some(&format!("h{to}")), "the table does not give it to h{to}");
    ensure!(!lab.hosts[0].runs(NAME), "the vserver still runs on the crashed h0");

    if !opts.quick {
        step("h0 comes back: it learns it lost the vserver, sets its copy aside, and becomes a standby");
        lab.set_link(0, true)?;
        dogs.spawn(0)?;
        agents.spawn(0)?;
        let conf = lab.hosts[0].conf_dir.join(format!("{NAME}.conf"));
        demo.wait("h0 did not come back as a standby", || all_alive(&agents) && !conf.exists())?;
        ensure!(!lab.hosts[0].runs(NAME), "h0 restarted what it lost");
        // Where the agent keeps replicas (REPLICA_DIR, by default VSERVERS_DIR/.replicas) and sets copies aside.
        let aside = lab.hosts[0].vservers_dir.join(".replicas").join(NAME).join("aside");
        for kept in std::fs::read_dir(&aside).into_iter().flatten().flatten() {
            println!("h0 set its copy aside at {} (kept, never deleted)", kept.path().display());
        }
        println!("h{to} refills h0's replica:");
        demo.vserver(to, &[NAME, "sync"])?;

        step("Migrate it back to h0 by command, while the client keeps asking");
        let (began, seen) = demo.probed(|begun| {
            std::thread::sleep(Duration::from_millis(300));
            let began = begun.elapsed();
            demo.vserver(to, &[NAME, "migrate", "h0"])?;
            demo.wait("h0 does not serve it after the migrate", || {
                demo.running_on() == Some(0) && lab.client.http_get(addr, 80, PROBE_TIMEOUT).is_ok()
            })?;
            std::thread::sleep(Duration::from_millis(300));
            Ok(began)
        })?;
        println!("\nwhat the client saw:");
        let (told, outage) = timeline(&seen, &format!("from h{to}"), (began, "migrate command begins"));
        print!("{told}");
        println!(
            "the client was without an answer for {} ms (a planned move: copy while it runs, stop, copy the rest, \
             start)",
            outage.map_or("?".to_string(), |d| d.as_millis().to_string())
        );
        demo.stat(0, &["--cluster"])?;
    }
    println!("\ndemo done in {:.1} s", total.elapsed().as_secs_f64());

    if opts.keep {
        // Where things stand: the short form leaves h0 crashed and the vserver on its new owner.
        let (owner_now, down) = if opts.quick { (to, Some(0)) } else { (0, None) };
        keep(&lab, &demo, &agents, owner_now, down)?;
        std::mem::forget(agents);
        std::mem::forget(dogs);
        std::mem::forget(lab);
        return Ok(());
    }
    step("Removing the lab");
    Ok(())
}

/// The owner of the demo vserver in host `i`'s copy of the table.
fn owner(agents: &Agents, i: usize) -> Option<String> {
    let status = agents.status(i).ok()?;
    status["ownership"]["owners"][NAME]["owner"].as_str().map(str::to_string)
}

/// How many takeovers host `i` knows of.
fn takeovers(agents: &Agents, i: usize) -> usize {
    agents.status(i).ok().and_then(|s| s["takeovers"].as_array().map(Vec::len)).unwrap_or(0)
}

/// Prints how to explore the lab left running, and writes a script that removes it.
fn keep(lab: &Lab, demo: &Demo, agents: &Agents, owner_now: usize, down: Option<usize>) -> Result<()> {
    step("Kept running. Explore it with the real commands:");
    let bin_dir = demo.vserver.parent().context("the vserver command has a directory")?.display().to_string();
    for host in &lab.hosts {
        println!(
            "  h{i}: nsenter --net=/run/netns/{ns} env VSERVER_RUN_DIR={run} VSERVER_VSERVERS_DIR={vs} \
             VSERVER_CONF_DIR={conf} VSERVER_CGROUP_PARENT={cg} VSERVER_AGENT_CONFIG={config} PATH={bin_dir}:$PATH bash",
            i = host.index,
            config = agents.config(host.index).display(),
            ns = host.netns.name(),
            run = host.run_dir.display(),
            vs = host.vservers_dir.display(),
            conf = host.conf_dir.display(),
            cg = host.cgroup_parent
        );
    }
    let elsewhere = (0..3).find(|&i| i != owner_now && Some(i) != down).expect("three hosts");
    if let Some(d) = down {
        println!("  h{d} is still crashed (its link down, no agent): it stays out of the cluster");
    }
    println!(
        "  then, in h{owner_now}'s shell: vserver-stat --cluster; vserver {NAME} status; vserver {NAME} migrate h{elsewhere}"
    );
    // As the demo crashed h0: every process of the host (its agent and watchdog) and of its vservers (each in
    // its own network namespace, so found by their cgroups), and its link pulled.
    let crashed = &lab.hosts[owner_now];
    println!(
        "  crash h{owner_now}: ip netns pids {ns} | xargs -r kill -9; for d in /sys/fs/cgroup/unified/{cg} \
         /sys/fs/cgroup/{cg}; do [ -e $d/cgroup.kill ] && echo 1 > $d/cgroup.kill; done; ip netns exec {switch} \
         ip link set {port} down",
        ns = crashed.netns.name(),
        cg = crashed.cgroup_parent,
        switch = lab.switch().name(),
        port = crashed.switch_port,
    );
    let (home, client) = (&lab.hosts[0].dir, lab.client.netns.name());
    println!(
        "  the API (TLS, the cluster CA of h0's init): ip netns exec {client} curl -s --cacert {ca} -H \
         \"Authorization: Bearer $(head -1 {secret})\" https://{}:{AGENT_PORT}/v1/status",
        lab.hosts[0].addr,
        ca = home.join("pki/ca.pem").display(),
        secret = home.join("cluster.secret").display(),
    );
    println!(
        "  agent logs: {}",
        (0..3).map(|i| lab.hosts[i].dir.join("agent.log").display().to_string()).collect::<Vec<_>>().join(" ")
    );
    let script = lab.dir().join("remove.sh");
    let mut text =
        String::from("#!/bin/sh\n# Removes the demo lab: its processes, namespaces, cgroups, mounts and files.\n");
    let mut namespaces: Vec<&str> = lab.hosts.iter().map(|h| h.netns.name()).collect();
    namespaces.push(lab.client.netns.name());
    namespaces.push(lab.switch().name());
    for ns in &namespaces {
        let _ = writeln!(text, "ip netns pids {ns} 2>/dev/null | xargs -r kill -9");
    }
    for host in &lab.hosts {
        let _ = writeln!(
            text,
            "for f in $(find /sys/fs/cgroup -depth -type d -path '*{cg}*' 2>/dev/null); do \
             [ -e $f/cgroup.kill ] && echo 1 > $f/cgroup.kill; rmdir $f 2>/dev/null; done",
            cg = host.cgroup_parent
        );
    }
    let _ =
        writeln!(text, "grep -o ' {}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l", lab.dir().display());
    for ns in &namespaces {
        let _ = writeln!(text, "ip netns del {ns} 2>/dev/null");
    }
    let _ = writeln!(text, "rm -rf {}", lab.dir().display());
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    println!("Remove it all afterwards:\n  sh {}", script.display());
    Ok(())
}
