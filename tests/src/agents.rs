//! Agents in the lab: one `vserver-agent` per host, configured to know each other, with the faults tests
//! inflict on them (`kill -9`, a restart, the host's link set down) and an HTTP client that speaks from
//! inside a namespace, as another host or the client would.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::lab::Lab;
use crate::netns::Netns;

/// Port every lab agent listens on (each host has its own address).
pub const AGENT_PORT: u16 = 7070;

/// Heartbeat timing of a lab cluster.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Heartbeat interval, ms.
    pub interval_ms: u64,
    /// Silence before suspect, ms.
    pub suspect_ms: u64,
    /// Silence before dead, ms.
    pub dead_ms: u64,
}

impl Default for Timing {
    /// The product's defaults.
    fn default() -> Self {
        Self { interval_ms: 250, suspect_ms: 750, dead_ms: 1500 }
    }
}

/// The `vserver-agent` command: `$VSERVER_AGENT_BIN`, else beside the running executable (or one directory
/// up, for test executables in `target/*/deps`).
pub fn agent_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VSERVER_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(2).map(|dir| dir.join("vserver-agent")).find(|c| c.is_file())
}

/// The soft limit of open files systemd gives a service (the agent's unit sets none).
pub const SERVICE_NOFILE: u64 = 1024;

/// Starts `cmd` with the limit of open files a service gets from systemd, whatever the test runner's.
fn as_a_service(cmd: &mut std::process::Command) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    // SAFETY: setrlimit(2) is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, SERVICE_NOFILE.min(hard), hard).map_err(std::io::Error::from)
        });
    }
}

/// A running agent on every host of a lab; every agent is killed when this drops.
pub struct Agents<'lab> {
    lab: &'lab Lab,
    bin: PathBuf,
    secret: String,
    /// The cluster CA (PEM) of a cluster formed with init and join: requests then go over TLS.
    ca_pem: Option<String>,
    configs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    procs: Vec<Option<Child>>,
}

/// An HTTP answer: status code and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON (status {}): {}", self.status, self.body))
    }
}

impl<'lab> Agents<'lab> {
    /// Writes a secret and one configuration per host (each host's peers are all the others), then starts
    /// every agent.
    pub fn start(lab: &'lab Lab, timing: Timing) -> Result<Self> {
        Self::start_with(lab, timing, None)
    }

    /// Like [`start`](Self::start), with a cluster configuration (placement and replication) given to every
    /// agent. Hosts are named `h0`, `h1`...; the vservers a host is primary of must exist before.
    pub fn start_with(lab: &'lab Lab, timing: Timing, cluster: Option<&str>) -> Result<Self> {
        Self::start_full(lab, timing, cluster, "")
    }

    /// Like [`start_with`](Self::start_with), with `extra` top-level lines added to every agent's
    /// configuration (e.g. `rsync_timeout_secs = 3`).
    pub fn start_full(lab: &'lab Lab, timing: Timing, cluster: Option<&str>, extra: &str) -> Result<Self> {
        Self::start_each(lab, timing, cluster, |_| extra.to_string())
    }

    /// Like [`start_full`](Self::start_full), with each host's own top-level lines (`extra(i)` for host i;
    /// e.g. `witness = true` for one).
    pub fn start_each(
        lab: &'lab Lab,
        timing: Timing,
        cluster: Option<&str>,
        extra: impl Fn(usize) -> String,
    ) -> Result<Self> {
        let mut agents = Self::prepare_each(lab, timing, cluster, extra)?;
        for i in 0..lab.hosts.len() {
            agents.spawn(i)?;
        }
        Ok(agents)
    }

    /// Like [`start_each`](Self::start_each), but starts no agent: each host's configuration is written, and
    /// the test spawns the agents it wants, when it wants (e.g. a host that joins late).
    pub fn prepare_each(
        lab: &'lab Lab,
        timing: Timing,
        cluster: Option<&str>,
        extra: impl Fn(usize) -> String,
    ) -> Result<Self> {
        Self::write_configs(lab, timing, cluster, extra, false)
    }

    /// A cluster formed as the README forms one: each host's configuration holds the operator's keys (its
    /// directories, the timing, `extra(i)`), `vserver-agent init` on h0 makes the CA and its certificate, h0's
    /// agent starts, `vserver-agent join TOKEN` on each other host (from its namespace) gets its certificate,
    /// and its agent starts. The agents speak TLS with client certificates; the helpers' requests go over TLS
    /// with the cluster secret that init made.
    pub fn form(
        lab: &'lab Lab,
        timing: Timing,
        cluster: Option<&str>,
        extra: impl Fn(usize) -> String,
    ) -> Result<Self> {
        Self::form_first(lab, lab.hosts.len(), timing, cluster, extra)
    }

    /// As [`Agents::form`], with the first `n` hosts only: the others are configured (directories) but in no
    /// host's peers, not joined and not started, for a test that adds them while the cluster runs.
    pub fn form_first(
        lab: &'lab Lab,
        n: usize,
        timing: Timing,
        cluster: Option<&str>,
        extra: impl Fn(usize) -> String,
    ) -> Result<Self> {
        let mut agents = Self::write_configs(lab, timing, cluster, extra, true)?;
        let mut init = std::process::Command::new(&agents.bin);
        init.arg("--config").arg(&agents.configs[0]).args(["init", "--node", "h0", "--listen"]);
        init.arg(format!("{}:{AGENT_PORT}", lab.hosts[0].addr));
        for other in &lab.hosts[1..n] {
            init.arg("--peer").arg(format!("h{}={}:{AGENT_PORT}", other.index, other.addr));
        }
        let out = init.output().context("running vserver-agent init")?;
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(out.status.success(), "init failed: {said}{}", String::from_utf8_lossy(&out.stderr));
        let home = agents.configs[0].parent().context("h0's directory")?.to_path_buf();
        agents.secret = fs::read_to_string(home.join("cluster.secret"))?.lines().next().unwrap_or("").to_string();
        agents.ca_pem = Some(fs::read_to_string(home.join("pki/ca.pem"))?);
        agents.spawn(0)?;
        ensure!(
            wait_for(Duration::from_secs(20), || agents.get(0, 0, "/healthz").is_ok_and(|r| r.status == 200)).is_some(),
            "h0's agent does not answer over TLS:\n{}",
            agents.log(0)
        );
        for other in &lab.hosts[1..n] {
            let i = other.index;
            let prefix = format!("on h{i}: vserver-agent join ");
            let token = said.lines().find_map(|l| l.strip_prefix(&prefix)).context("no token printed")?.to_string();
            let out = lab.hosts[i]
                .command(&agents.bin)
                .arg("--config")
                .arg(&agents.configs[i])
                .args(["join", &token])
                .output()
                .context("running vserver-agent join")?;
            ensure!(
                out.status.success(),
                "join of h{i} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            agents.spawn(i)?;
        }
        Ok(agents)
    }

    fn write_configs(
        lab: &'lab Lab,
        timing: Timing,
        cluster: Option<&str>,
        extra: impl Fn(usize) -> String,
        formed: bool,
    ) -> Result<Self> {
        let cluster_line = match cluster {
            Some(text) => {
                let path = lab.dir().join("cluster.toml");
                fs::write(&path, text).context("writing cluster.toml")?;
                format!("cluster_file = \"{}\"\n", path.display())
            }
            None => String::new(),
        };
        let bin = agent_bin().context("no vserver-agent beside this executable (cargo build -p node-agent)")?;
        let secret = format!("lab-secret-{}", crate::unique("s"));
        let secret_file = lab.dir().join("cluster.secret");
        fs::write(&secret_file, format!("{secret}\n")).context("writing the secret")?;
        let mut agents =
            Agents { lab, bin, secret, ca_pem: None, configs: Vec::new(), logs: Vec::new(), procs: Vec::new() };
        for host in &lab.hosts {
            let mut peers = String::new();
            for other in lab.hosts.iter().filter(|o| o.index != host.index) {
                peers.push_str(&format!(
                    "[[peers]]\nname = \"h{}\"\nurl = \"http://{}:{AGENT_PORT}\"\n\n",
                    other.index, other.addr
                ));
            }
            let vserver_bin = crate::vserver_bin().context("no vserver command beside this executable")?;
            let extra_text = extra(host.index);
            let cluster_part = format!(
                "node = \"h{index}\"\nlisten = \"{addr}:{AGENT_PORT}\"\nsecret_file = \"{secret}\"\n\
                 insecure_plain_http = true\n",
                index = host.index,
                addr = host.addr,
                secret = secret_file.display(),
            );
            let (cluster_part, peers) = if formed { (String::new(), String::new()) } else { (cluster_part, peers) };
            let config = format!(
                "{cluster_part}\
                 vservers_dir = \"{vs}\"\nconf_dir = \"{conf}\"\nrun_dir = \"{run}\"\nstate_dir = \"{state}\"\n\
                 cgroup_parent = \"{cg}\"\nvserver_bin = \"{bin}\"\n{cluster_line}{extra}\n\n{peers}\
                 [heartbeat]\ninterval_ms = {i}\nsuspect_after_ms = {s}\ndead_after_ms = {d}\ntimeout_ms = {t}\n\n\
                 [restart]\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\ncheck_interval_ms = 200\n{failures}",
                vs = host.vservers_dir.display(),
                conf = host.conf_dir.display(),
                run = host.run_dir.display(),
                state = host.dir.join("agent-state").display(),
                cg = host.cgroup_parent,
                bin = vserver_bin.display(),
                i = timing.interval_ms,
                s = timing.suspect_ms,
                d = timing.dead_ms,
                // Three restarts within the failure window, unless the scenario sets its own `[failures]`.
                failures = if extra_text.contains("[failures]") { "" } else { "\n[failures]\nmax_restart = 3\n" },
                extra = extra_text,
                // As the product: long enough for a slow link, at most the silence before dead.
                t = timing.dead_ms.min(1000),
            );
            let path = host.dir.join("agent.toml");
            fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
            agents.configs.push(path);
            agents.logs.push(host.dir.join("agent.log"));
            agents.procs.push(None);
        }
        Ok(agents)
    }

    /// `vserver-agent --config CONFIG ARGS...` run in host `i`'s network namespace: its output.
    pub fn run(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        let mut command = self.lab.hosts[i].command(&self.bin);
        command.arg("--config").arg(&self.configs[i]).args(args);
        command.output().with_context(|| format!("running vserver-agent {args:?} on h{i}"))
    }

    /// The cluster secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Spawns `bin` as the agent from now on (another release's, for an upgrade).
    pub fn use_agent_bin(&mut self, bin: PathBuf) {
        self.bin = bin;
    }

    /// Rewrites host `i`'s configuration with `f` (read when its agent next starts).
    pub fn edit_config(&self, i: usize, f: impl FnOnce(String) -> String) -> Result<()> {
        let text = fs::read_to_string(&self.configs[i])?;
        fs::write(&self.configs[i], f(text))?;
        Ok(())
    }

    /// Makes the helpers' requests over TLS, trusting the cluster CA of `ca_pem` (none: plain HTTP).
    pub fn use_tls(&mut self, ca_pem: Option<String>) {
        self.ca_pem = ca_pem;
    }

    /// Makes the helpers' requests with `secret` from now on (after the test rotated the cluster secret).
    pub fn use_secret(&mut self, secret: &str) {
        self.secret = secret.to_string();
    }

    /// Host `i`'s agent configuration file.
    pub fn config(&self, i: usize) -> &PathBuf {
        &self.configs[i]
    }

    /// Starts (or restarts) the agent of host `i`, in its network namespace, logging to its host dir.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        if let Some(mut old) = self.procs[i].take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.logs[i])?;
        let mut cmd = self.lab.hosts[i].command(&self.bin);
        as_a_service(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(&self.configs[i])
            .env("VSERVER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting vserver-agent")?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// `kill -9` of the agent of host `i` (its vservers are untouched).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A clean stop of host `i`'s agent, as systemd's stop or restart does it: SIGTERM, then the wait for
    /// its exit (SIGKILL after `patience`, as systemd's stop timeout). Whether it left by itself in time.
    pub fn stop(&mut self, i: usize, patience: std::time::Duration) -> bool {
        let Some(mut child) = self.procs[i].take() else { return true };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The process id of host `i`'s agent, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// Kills every agent now.
    pub fn kill_all(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }

    /// Whether the agent process of host `i` still runs (it exits on a bad configuration).
    pub fn running(&mut self, i: usize) -> bool {
        self.procs[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log of host `i`'s agent so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.logs[i]).unwrap_or_default()
    }

    /// An HTTP request to the agent of host `to`, sent from inside host `from`'s namespace.
    pub fn request(
        &self,
        from: usize,
        to: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<Reply> {
        let (netns, addr) = (&self.lab.hosts[from].netns, self.lab.hosts[to].addr);
        match &self.ca_pem {
            Some(ca) => https(netns, addr, AGENT_PORT, ca, method, path, token, body),
            None => http(netns, addr, AGENT_PORT, method, path, token, body),
        }
    }

    /// `GET path` with the cluster secret, from host `from` to host `to`.
    pub fn get(&self, from: usize, to: usize, path: &str) -> Result<Reply> {
        self.request(from, to, "GET", path, Some(&self.secret), None)
    }

    /// `GET /v1/status` of host `i`'s agent (asked from its own namespace) as JSON.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let reply = self.get(i, i, "/v1/status")?;
        if reply.status != 200 {
            bail!("status of h{i}: HTTP {}: {}", reply.status, reply.body);
        }
        reply.json()
    }

    /// The state host `observer` reports for peer `peer` (`alive`, `suspect`, `dead`, `unknown`).
    pub fn peer_state(&self, observer: usize, peer: usize) -> Option<String> {
        self.peer(observer, peer)?["state"].as_str().map(str::to_string)
    }

    /// A peer as host `observer` reports it, as JSON.
    pub fn peer(&self, observer: usize, peer: usize) -> Option<serde_json::Value> {
        let status = self.status(observer).ok()?;
        let name = format!("h{peer}");
        status["peers"].as_array()?.iter().find(|p| p["name"] == name.as_str()).cloned()
    }
}

impl Drop for Agents<'_> {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns how long it took.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.0 request from inside `netns` (so the server closes the connection and sends no chunks); a large
/// body goes as HTTP/1.1 with `Expect: 100-continue` and `Connection: close`.
pub fn http(
    netns: &Netns,
    addr: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Reply> {
    let stream = connect(netns, addr, port)?;
    exchange(stream, addr, port, method, path, token, body)
}

/// A TCP connection from `netns` to `addr:port`, with a read timeout.
fn connect(netns: &Netns, addr: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let target = SocketAddr::V4(SocketAddrV4::new(addr, port));
    let stream = netns
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(2)))?
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Like [`http`], over TLS: the agent's certificate must be signed by the CA of `ca_pem` for `addr`.
#[allow(clippy::too_many_arguments)]
pub fn https(
    netns: &Netns,
    addr: Ipv4Addr,
    port: u16,
    ca_pem: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Reply> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the lab's CA")?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(addr).into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let tcp = connect(netns, addr, port)?;
    exchange(rustls::StreamOwned::new(conn, tcp), addr, port, method, path, token, body)
}

/// Sends one request on `stream` and reads the answer to the end of the connection.
fn exchange(
    mut stream: impl Read + Write,
    addr: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Reply> {
    let body = body.unwrap_or("");
    // A large body waits for the server's go-ahead, as curl does (HTTP/1.1 only): a server that refuses it from
    // its headers (413) answers at once instead of resetting a connection it did not read.
    let expect = body.len() > 1024;
    let mut req = if expect {
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}:{port}\r\nConnection: close\r\n")
    } else {
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}:{port}\r\n")
    };
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    if expect {
        req.push_str("Expect: 100-continue\r\n");
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    if expect {
        stream.write_all(req.as_bytes())?;
        let mut first = [0u8; 25];
        let n = stream.read(&mut first)?;
        if first[..n].starts_with(b"HTTP/1.1 100") {
            let mut rest = Vec::new();
            // The rest of the interim answer ("Continue\r\n\r\n") is skipped below with the final one's start.
            stream.write_all(body.as_bytes())?;
            read_all(&mut stream, &mut rest)?;
            let text = String::from_utf8_lossy(&rest).to_string();
            let start = text.find("HTTP/").with_context(|| format!("no final answer after 100: {text:?}"))?;
            raw.extend_from_slice(&rest[start..]);
        } else {
            raw.extend_from_slice(&first[..n]);
            read_all(&mut stream, &mut raw)?;
        }
    } else {
        req.push_str(body);
        stream.write_all(req.as_bytes())?;
        read_all(&mut stream, &mut raw)?;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok(Reply { status, body: body.to_string() })
}

/// Reads to the end of the connection; a TLS peer that closes without its close_notify ends it too.
fn read_all(stream: &mut impl Read, into: &mut Vec<u8>) -> Result<()> {
    match stream.read_to_end(into) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !into.is_empty() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
