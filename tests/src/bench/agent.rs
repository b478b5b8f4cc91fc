//! `bench agent`: the agent under load and at rest. A lab of six hosts runs six agents (the one measured
//! and five peers heartbeating at the default interval). At rest: the measured agent's resident memory and
//! CPU use over a window. Under load, from inside its own namespace (the loopback path): `GET /v1/status`
//! at a fixed rate (open loop: latency counts from each request's scheduled time, so queueing is not
//! hidden), then as fast as a few keep-alive connections go (throughput).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::stats::{median, percentile};
use super::Interrupted;
use crate::agents::{wait_for, Agents, Timing, AGENT_PORT};
use crate::lab::Lab;

/// What `bench agent` measures.
#[derive(Debug, Clone)]
pub struct AgentBenchOptions {
    /// Target rate of the fixed-rate phase, requests per second.
    pub rate: u32,
    /// Length of each load phase.
    pub duration: Duration,
    /// Length of the idle window.
    pub idle: Duration,
    /// Connections used by the load.
    pub connections: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct AgentBenchReport {
    /// Target rate of the fixed-rate phase.
    pub rate: u32,
    /// Requests answered 200 in the fixed-rate phase.
    pub requests: usize,
    /// Median latency at the target rate, ms.
    pub p50_ms: f64,
    /// 99th percentile latency at the target rate, ms.
    pub p99_ms: f64,
    /// Requests per second reached with the connections as fast as they go.
    pub max_rps: f64,
    /// Resident memory of the idle agent, MiB.
    pub idle_rss_mib: f64,
    /// CPU use of the idle agent, percent of one core.
    pub idle_cpu_percent: f64,
    /// Peers heartbeating it during the idle window.
    pub peers: usize,
}

impl AgentBenchReport {
    /// The report as a table with the targets beside the figures.
    pub fn table(&self) -> String {
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        format!(
            "figure                              value      target\n\
             GET /v1/status p50 at {rate} rps    {p50:>8.2} ms\n\
             GET /v1/status p99 at {rate} rps    {p99:>8.2} ms  < 5 ms   {m1}\n\
             GET /v1/status max throughput  {rps:>8.0} rps\n\
             idle RSS ({peers} peers heartbeating)  {rss:>8.1} MiB < 20 MiB {m2}\n\
             idle CPU ({peers} peers heartbeating)  {cpu:>8.2} %   < 1 %    {m3}\n",
            rate = self.rate,
            p50 = self.p50_ms,
            p99 = self.p99_ms,
            rps = self.max_rps,
            peers = self.peers,
            rss = self.idle_rss_mib,
            cpu = self.idle_cpu_percent,
            m1 = mark(self.p99_ms < 5.0),
            m2 = mark(self.idle_rss_mib < 20.0),
            m3 = mark(self.idle_cpu_percent < 1.0),
        )
    }
}

/// One keep-alive HTTP/1.1 connection made from inside a namespace.
struct Conn {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Conn {
    fn open(lab: &Lab, host: usize, addr: Ipv4Addr, secret: &str) -> Result<Self> {
        let target = SocketAddr::V4(SocketAddrV4::new(addr, AGENT_PORT));
        let stream = lab.hosts[host].netns.run(|| TcpStream::connect_timeout(&target, Duration::from_secs(2)))??;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let request =
            format!("GET /v1/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {secret}\r\n\r\n").into_bytes();
        Ok(Conn { stream: BufReader::new(stream), request })
    }

    /// One request; the status code.
    fn get(&mut self) -> Result<u16> {
        self.stream.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("content-length")?;
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok(status)
    }
}

/// utime + stime (clock ticks) and resident pages of `pid`.
pub fn proc_stat(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; rss (pages) is field 24.
    Ok((f[11].parse::<u64>()? + f[12].parse::<u64>()?, f[21].parse::<u64>()?))
}

/// Runs the benchmark (`cancel`: Ctrl-C).
pub fn run_agent_bench(opts: &AgentBenchOptions, cancel: &AtomicBool) -> Result<AgentBenchReport> {
    let check = || if cancel.load(Ordering::Relaxed) { Err(anyhow::anyhow!(Interrupted)) } else { Ok(()) };
    eprintln!("bench agent: a lab of 6 hosts, 6 agents at the default heartbeat timing");
    let lab = Lab::new(6)?;
    let mut agents = Agents::start(&lab, Timing::default())?;
    let all_alive = || (1..6).all(|p| agents.peer_state(0, p).as_deref() == Some("alive"));
    if wait_for(Duration::from_secs(20), all_alive).is_none() {
        bail!("the agents did not all see each other alive; log of h0:\n{}", agents.log(0));
    }
    let pid = agents.pid(0).context("the measured agent is not running")?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as f64;

    eprintln!("bench agent: idle for {} s", opts.idle.as_secs());
    let (cpu0, _) = proc_stat(pid)?;
    let t0 = Instant::now();
    let deadline = t0 + opts.idle;
    while Instant::now() < deadline {
        check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu1, rss_pages) = proc_stat(pid)?;
    let idle_cpu_percent = (cpu1 - cpu0) as f64 / ticks / t0.elapsed().as_secs_f64() * 100.0;
    let idle_rss_mib = rss_pages as f64 * page / (1024.0 * 1024.0);

    let addr = lab.hosts[0].addr;
    let secret = agents.secret().to_string();
    eprintln!("bench agent: GET /v1/status at {} rps for {} s", opts.rate, opts.duration.as_secs());
    let interval = Duration::from_secs_f64(opts.connections as f64 / opts.rate as f64);
    let start = Instant::now() + Duration::from_millis(100);
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..opts.connections)
            .map(|w| {
                let lab = &lab;
                let secret = &secret;
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut conn = Conn::open(lab, 0, addr, secret)?;
                    let mut lat = Vec::new();
                    // Workers are offset so the requests are spread evenly over time.
                    let mut due = start + interval.mul_f64(w as f64 / opts.connections as f64);
                    while due < start + opts.duration {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if conn.get()? != 200 {
                            bail!("GET /v1/status did not answer 200");
                        }
                        lat.push(due.elapsed().as_secs_f64() * 1000.0);
                        due += interval;
                    }
                    Ok(lat)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| bail!("a load worker panicked"))).collect()
    });
    check()?;
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }

    eprintln!("bench agent: GET /v1/status as fast as {} connections go", opts.connections);
    let stop = Instant::now() + opts.duration;
    let counts: Vec<Result<usize>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..opts.connections)
            .map(|_| {
                let (lab, secret) = (&lab, &secret);
                s.spawn(move || -> Result<usize> {
                    let mut conn = Conn::open(lab, 0, addr, secret)?;
                    let mut n = 0;
                    while Instant::now() < stop && !cancel.load(Ordering::Relaxed) {
                        conn.get()?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| bail!("a load worker panicked"))).collect()
    });
    check()?;
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    agents.kill_all();
    Ok(AgentBenchReport {
        rate: opts.rate,
        requests: latencies.len(),
        p50_ms: median(&latencies).unwrap_or(f64::NAN),
        p99_ms: percentile(&latencies, 99.0).unwrap_or(f64::NAN),
        max_rps: total as f64 / opts.duration.as_secs_f64(),
        idle_rss_mib,
        idle_cpu_percent,
        peers: 5,
    })
}
