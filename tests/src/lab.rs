//! The lab: a switch namespace with a bridge, host namespaces and a client namespace on it, each
//! host with its own directories and cgroup parent; all of it released on drop.

use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use tempfile::TempDir;

use crate::cleanup;
use crate::names::unique;
use crate::netns::Netns;

/// Prefix length of the lab's first block, 198.18.0.0/24: the client, the first [`FIRST_BLOCK_HOSTS`] hosts and
/// the free addresses for vservers.
pub const SUBNET_PREFIX: u8 = 24;

/// Prefix length of the hosts' and the client's interfaces in a lab of more hosts than the first block holds:
/// 198.18.0.0/23, the first block and the second, 198.18.1.0/24, where the hosts past the first
/// [`FIRST_BLOCK_HOSTS`] are. A smaller lab is on the first block alone, [`SUBNET_PREFIX`].
const TWO_BLOCKS_PREFIX: u8 = 23;

/// The client namespace's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Host `i` is at 198.18.0.(HOST_BASE + i) in the first block, 198.18.1.(HOST_BASE + i - FIRST_BLOCK_HOSTS) past it.
const HOST_BASE: u8 = 10;

/// [`Lab::free_addr`]`(n)` is 198.18.0.(FREE_BASE + n).
const FREE_BASE: u8 = 100;

/// The hosts of the first block stop short of the free addresses.
const FIRST_BLOCK_HOSTS: usize = (FREE_BASE - HOST_BASE) as usize;

/// The first block's hosts and the second block's, 198.18.1.10 to 198.18.1.254.
pub const MAX_HOSTS: usize = FIRST_BLOCK_HOSTS + (255 - HOST_BASE as usize);

/// Name of the bridge inside the switch namespace.
const BRIDGE: &str = "br0";

/// Name of the lab interface inside every host and the client.
const DEV: &str = "eth0";

/// ARP retransmit interval of the client, in ms (kernel default 1000). The client probes addresses
/// before they exist; with the default it would notice a new address up to a second late.
const CLIENT_ARP_RETRANS_MS: &str = "10";

/// A switch, `hosts` hosts and a client, each host with its own directories; everything it made,
/// and every process left in its namespaces, cgroups or directories, goes when it drops.
pub struct Lab {
    /// The hosts, host `i` at 198.18.0.(10+i) (past 90, 198.18.1.(10+i-90)).
    pub hosts: Vec<Host>,
    /// The client, at 198.18.0.2, from which services are probed.
    pub client: Client,
    // Dropped after hosts and client (field order): the bridge outlives the ports on it.
    switch: Netns,
    dir: TempDir,
    /// The prefix length of the hosts' and the client's addresses.
    prefix: u8,
}

/// One host: a network namespace on the switch, and the directories and cgroup parent the
/// product is pointed at by [`Host::command`].
pub struct Host {
    /// Position in [`Lab::hosts`].
    pub index: usize,
    /// The host's network namespace.
    pub netns: Netns,
    /// The host's address on `dev`.
    pub addr: Ipv4Addr,
    /// The host's interface on the lab network: `eth0`.
    pub dev: String,
    /// The bridge port (in the switch namespace) this host is plugged into: set it down to cut
    /// the host off, or put `tc netem` on it.
    pub switch_port: String,
    /// The host's private directory, holding the three below; free for a test's own files.
    pub dir: PathBuf,
    /// `VSERVER_VSERVERS_DIR`: the vserver trees.
    pub vservers_dir: PathBuf,
    /// `VSERVER_CONF_DIR`: `NAME.conf` and `NAME.sh`.
    pub conf_dir: PathBuf,
    /// `VSERVER_RUN_DIR`: run-time state.
    pub run_dir: PathBuf,
    /// `VSERVER_CGROUP_PARENT`: a unique cgroup name under which the host's vservers go.
    pub cgroup_parent: String,
}

/// The client namespace, from which the lab's services are reached as users would.
pub struct Client {
    /// The client's network namespace.
    pub netns: Netns,
    /// The client's address: [`CLIENT_ADDR`].
    pub addr: Ipv4Addr,
    /// The client's interface on the lab network: `eth0`.
    pub dev: String,
    /// The bridge port (in the switch namespace) the client is plugged into.
    pub switch_port: String,
}

/// A switch forwards frames and nothing else: on a kernel with bridge netfilter, each frame the lab's bridge
/// forwarded would also go through the machine's IP firewall hooks (the default in the switch's namespace),
/// charged to the sending agent, which on real hosts' switches never happens. Turned off in the switch's
/// namespace alone; the lab's faults use the bridge's own tables, which this leaves alone.
fn switch_without_netfilter(switch: &Netns) -> Result<()> {
    switch
        .run(|| {
            for family in ["iptables", "ip6tables", "arptables"] {
                let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
                match fs::write(&path, "0") {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(anyhow::Error::new(e).context(format!("writing 0 to {path} in the switch")))
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .context("entering the switch's namespace")?
}

impl Lab {
    /// Builds a lab of `hosts` hosts (at most [`MAX_HOSTS`]) and one client on a fresh switch.
    pub fn new(hosts: usize) -> Result<Lab> {
        ensure!(hosts <= MAX_HOSTS, "a lab has at most {MAX_HOSTS} hosts, not {hosts}");
        let dir = tempfile::Builder::new().prefix("vserver-lab-").tempdir().context("creating the lab's directory")?;

        let switch = Netns::create(&unique("vsw"))?;
        switch.ip(["link", "set", "lo", "up"])?;
        switch.ip(["link", "add", BRIDGE, "type", "bridge"])?;
        switch.ip(["link", "set", BRIDGE, "up"])?;
        switch_without_netfilter(&switch)?;

        let client_ns = Netns::create(&unique("vcl"))?;
        let prefix = if hosts > FIRST_BLOCK_HOSTS { TWO_BLOCKS_PREFIX } else { SUBNET_PREFIX };
        plug(&switch, &client_ns, "cl", CLIENT_ADDR, prefix).context("plugging in the client")?;
        client_ns.ip(["ntable", "change", "name", "arp_cache", "dev", DEV, "retrans", CLIENT_ARP_RETRANS_MS])?;
        let client = Client { netns: client_ns, addr: CLIENT_ADDR, dev: DEV.to_owned(), switch_port: "cl".to_owned() };

        let mut lab = Lab { hosts: Vec::with_capacity(hosts), client, switch, dir, prefix };
        for index in 0..hosts {
            let host = lab.add_host(index).with_context(|| format!("setting up host {index}"))?;
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    fn add_host(&self, index: usize) -> Result<Host> {
        let netns = Netns::create(&unique("vh"))?;
        let addr = host_addr(index);
        let switch_port = format!("h{index}");
        plug(&self.switch, &netns, &switch_port, addr, self.prefix)?;
        let dir = self.dir.path().join(format!("host{index}"));
        let vservers_dir = dir.join("vservers");
        let conf_dir = dir.join("conf");
        let run_dir = dir.join("run");
        for d in [&vservers_dir, &conf_dir, &run_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Host {
            index,
            netns,
            addr,
            dev: DEV.to_owned(),
            switch_port,
            dir,
            vservers_dir,
            conf_dir,
            run_dir,
            cgroup_parent: unique("vlab"),
        })
    }

    /// An address on the lab network that no host or client uses, for vservers: 198.18.0.(100+n).
    ///
    /// # Panics
    /// When `n` > 154 (past 198.18.0.254).
    pub fn free_addr(&self, n: usize) -> Ipv4Addr {
        let last = u8::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(FREE_BASE))
            .filter(|&last| last < 255)
            .unwrap_or_else(|| panic!("free_addr({n}): only 0..=154 are free"));
        Ipv4Addr::new(198, 18, 0, last)
    }

    /// Drops `percent` % of the frames going through host `i`'s switch port, at random, each way (nftables
    /// `numgen random` on the bridge: this kernel has no netem). Everything on that link is hit alike: the
    /// agent's heartbeats, beacons, Raft and rsync traffic, and its vservers' own. 0 removes the loss.
    pub fn set_loss(&self, i: usize, percent: u8) -> Result<()> {
        let port = &self.hosts[i].switch_port;
        let table = format!("loss_{}", port.replace('-', "_"));
        // Replacing: the table goes first (missing is fine), then comes back with the new rate.
        let _ = self.switch.command("nft").args(["delete", "table", "bridge", &table]).output();
        if percent == 0 {
            return Ok(());
        }
        ensure!(percent <= 100, "a loss of {percent} %: at most 100");
        let chance = if percent == 100 { String::new() } else { format!("numgen random mod 100 < {percent} ") };
        let rules = format!(
            "table bridge {table} {{\n  chain forward {{\n    type filter hook forward priority 0;\n    \
             iifname \"{port}\" {chance}drop\n    \
             oifname \"{port}\" {chance}drop\n  }}\n}}\n"
        );
        let mut child = self
            .switch
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft (is the nftables package installed?)")?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), rules.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "nft refused the loss rules: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Has every switch port hand the frames it receives to a kernel thread of its own (threaded NAPI), as separate
    /// machines leave receiving to the receiver's kernel. Without it, a veth pair and the bridge carry each frame
    /// through the bridge and into the receiving agent's socket in the sender's context, charged to the sending
    /// process: an agent that sends to many hosts (a voter) pays for their receiving too. With it, the sender
    /// pays for its own stack down to its interface, as on a real host. A veth takes frames in on a queue of its
    /// own only with GRO on (and, for UDP from an interface with segmentation offload, UDP GRO forwarding), which
    /// takes `ethtool`. Returns the kernel threads' process ids: their CPU is the lab's network's.
    pub fn receive_on_kernel_threads(&self) -> Result<Vec<u32>> {
        let ethtool = Command::new("ethtool").arg("--version").output();
        ensure!(
            ethtool.is_ok_and(|o| o.status.success()),
            "ethtool is missing (apt-get install ethtool): the lab needs it to have its switch's ports receive on \
             kernel threads of their own"
        );
        let ports: Vec<&str> =
            self.hosts.iter().map(|h| h.switch_port.as_str()).chain([self.client.switch_port.as_str()]).collect();
        let before = napi_threads(&ports);
        // `ip netns exec` mounts the namespace's own /sys, where the ports' `threaded` switch is.
        let script = r#"set -e
for p in "$@"; do
  ethtool -K "$p" gro on rx-udp-gro-forwarding on
  echo 1 > "/sys/class/net/$p/threaded"
done"#;
        let out = Command::new("ip")
            .args(["netns", "exec", self.switch.name(), "sh", "-c", script, "sh"])
            .args(&ports)
            .output()
            .context("running ip netns exec in the switch's namespace")?;
        ensure!(
            out.status.success(),
            "the switch's ports would not receive on kernel threads: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let threads: Vec<u32> = napi_threads(&ports).into_iter().filter(|pid| !before.contains(pid)).collect();
        ensure!(
            threads.len() >= ports.len(),
            "{} kernel threads for the switch's {} ports: this kernel does not receive on them",
            threads.len(),
            ports.len()
        );
        Ok(threads)
    }

    /// The switch namespace, holding the bridge `br0` and one port per host and client.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The lab's private directory, holding one directory per host.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (their namespaces, cgroups and mounts then have no users), then what
        // the product may have left: processes chrooted into the lab's trees, cgroups, mounts.
        // The namespaces and the directory go when the fields drop.
        for host in &self.hosts {
            host.netns.kill_all();
        }
        self.client.netns.kill_all();
        cleanup::kill_processes_rooted_under(self.dir.path());
        for host in &self.hosts {
            cleanup::remove_cgroup_trees(&host.cgroup_parent);
        }
        cleanup::detach_mounts_under(self.dir.path());
    }
}

impl Host {
    /// A command that runs `program` inside this host's network namespace, with
    /// `VSERVER_VSERVERS_DIR`, `VSERVER_CONF_DIR`, `VSERVER_RUN_DIR` and `VSERVER_CGROUP_PARENT`
    /// set to this host's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = self.netns.command(program);
        cmd.env("VSERVER_VSERVERS_DIR", &self.vservers_dir)
            .env("VSERVER_CONF_DIR", &self.conf_dir)
            .env("VSERVER_RUN_DIR", &self.run_dir)
            .env("VSERVER_CGROUP_PARENT", &self.cgroup_parent);
        cmd
    }
}

impl Client {
    /// A command that runs `program` inside the client's network namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.netns.command(program)
    }
}

/// The product's `vserver` command: `$VSERVER_BIN`, else `vserver` beside the running executable
/// (or one directory up, for test executables in `target/*/deps`); `None` when there is none.
pub fn vserver_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VSERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(2).map(|dir| dir.join("vserver")).find(|candidate| candidate.is_file())
}

/// Host `index`'s address: 198.18.0.10 to 198.18.0.99 for the first 90, then 198.18.1.10 on.
fn host_addr(index: usize) -> Ipv4Addr {
    match index.checked_sub(FIRST_BLOCK_HOSTS) {
        None => Ipv4Addr::new(198, 18, 0, HOST_BASE + index as u8),
        Some(past) => Ipv4Addr::new(198, 18, 1, HOST_BASE + past as u8),
    }
}

/// The kernel's receiving threads (`napi/PORT-ID`) of interfaces named as one of `ports`.
fn napi_threads(ports: &[&str]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else { return false };
            comm.trim()
                .strip_prefix("napi/")
                .and_then(|rest| rest.rsplit_once('-'))
                .is_some_and(|(dev, _)| ports.contains(&dev))
        })
        .collect()
}

/// Connects `ns` to the bridge by a veth pair: `port` on the bridge, `eth0` (with `addr`/`prefix`) in `ns`.
fn plug(switch: &Netns, ns: &Netns, port: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    let cidr = format!("{addr}/{prefix}");
    switch.ip(["link", "add", port, "type", "veth", "peer", "name", DEV, "netns", ns.name()])?;
    switch.ip(["link", "set", port, "master", BRIDGE, "up"])?;
    ns.ip(["addr", "add", &cidr, "dev", DEV])?;
    ns.ip(["link", "set", DEV, "up"])?;
    ns.ip(["link", "set", "lo", "up"])?;
    Ok(())
}
