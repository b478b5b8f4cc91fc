//! The context's addresses (IPROOT). Each host device named by IPROOT lends the context a macvlan in bridge
//! mode, moved into the context's own network namespace under the device's name and carrying its addresses,
//! so a service inside that binds 0.0.0.0 is reachable at IPROOT only. A gratuitous ARP follows each IPv4
//! address, an unsolicited neighbour advertisement each IPv6 one. Interfaces are configured with iproute2's `ip` (overridable with `VSERVER_IP_BIN`).

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;

use crate::spec::Interface;
use crate::{garp, unsolicited_na};

/// Configuring the context's network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The device IPROOT names does not exist on the host.
    #[error("device {dev:?} named by IPROOT (dev: prefix or IPROOTDEV) does not exist on this host")]
    NoDevice {
        /// Device name.
        dev: String,
    },
    /// `ip` could not be run at all.
    #[error("cannot run {program}: {source} (is iproute2 installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `ip` ran and failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// The context's network namespace could not be opened or entered.
    #[error("cannot enter the network namespace of process {pid}: {errno}")]
    Netns {
        /// Process whose namespace it is.
        pid: i32,
        /// The OS error.
        errno: nix::Error,
    },
    /// The gratuitous ARP could not be sent.
    #[error(transparent)]
    Garp(#[from] garp::GarpError),
    /// The unsolicited neighbour advertisement could not be sent.
    #[error(transparent)]
    Na(#[from] unsolicited_na::NaError),
}

fn ip_program() -> String {
    std::env::var("VSERVER_IP_BIN").unwrap_or_else(|_| "ip".into())
}

/// Runs `ip ARGS`, inside the network namespace `netns` when given, with `input` on its stdin.
fn ip(netns: Option<&File>, args: &[&str], input: Option<&str>) -> Result<String, NetworkError> {
    use std::io::Write;
    let program = ip_program();
    let mut cmd = Command::new(&program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    if let Some(ns) = netns {
        let ns = ns.try_clone().map_err(|source| NetworkError::Spawn { program: program.clone(), source })?;
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on an fd opened before fork.
        unsafe {
            cmd.pre_exec(move || nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
        }
    }
    let spawn_err = |source| NetworkError::Spawn { program: program.clone(), source };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let mut shown = args.join(" ");
        if let Some(text) = input {
            shown.push_str(&format!(" <<< {:?}", text.trim()));
        }
        return Err(NetworkError::Ip { args: shown, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn open_netns(pid: i32) -> Result<File, NetworkError> {
    File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| NetworkError::Netns { pid, errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)) })
}

/// The prefix length of the host's own address on `dev` whose network covers `addr`, if any.
pub fn host_prefix(dev: &str, addr: IpAddr) -> Option<u8> {
    let out = ip(None, &["-j", "addr", "show", "dev", dev], None).ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    for link in json.as_array()? {
        for info in link.get("addr_info")?.as_array()? {
            let local: IpAddr = info.get("local")?.as_str()?.parse().ok()?;
            let prefix = info.get("prefixlen")?.as_u64()? as u8;
            if same_network(local, addr, prefix) {
                return Some(prefix);
            }
        }
    }
    None
}

fn same_network(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Gives the context whose launcher is `pid` (already in its own network namespace) its interfaces and
/// addresses, brings them and the loopback up, and announces each address.
///
/// Each macvlan is created directly inside the context's namespace under the device's name: moving an
/// interface between namespaces afterwards waits for the kernel to quiesce the device (tens of
/// milliseconds). The rest is one `ip -batch` inside the namespace. Two process starts per device in all.
/// On failure nothing is left on the host: interfaces already made die with the context's namespace.
pub fn configure(interfaces: &[Interface], pid: i32) -> Result<(), NetworkError> {
    for iface in interfaces {
        if nix::net::if_::if_nametoindex(iface.host_dev.as_str()).is_err() {
            return Err(NetworkError::NoDevice { dev: iface.host_dev.clone() });
        }
    }
    let ns = open_netns(pid)?;
    let pid_text = pid.to_string();
    let mut batch = String::from("link set lo up\n");
    let mut announce = Vec::new();
    for iface in interfaces {
        let dev = iface.host_dev.as_str();
        ip(
            None,
            &["link", "add", "link", dev, "name", dev, "netns", &pid_text, "type", "macvlan", "mode", "bridge"],
            None,
        )?;
        for a in &iface.addresses {
            let prefix =
                a.prefix.or_else(|| host_prefix(dev, a.addr)).unwrap_or(if a.addr.is_ipv4() { 24 } else { 64 });
            let broadcast = match (iface.broadcast, a.addr.is_ipv4()) {
                (Some(b), true) => format!(" broadcast {b}"),
                (None, true) => " broadcast +".to_string(),
                (_, false) => String::new(),
            };
            batch.push_str(&format!("addr add {}/{prefix}{broadcast} dev {dev}\n", a.addr));
            announce.push((dev.to_string(), a.addr));
        }
        batch.push_str(&format!("link set {dev} up\n"));
    }
    ip(Some(&ns), &["-batch", "-"], Some(&batch))?;
    announce_in(pid, &announce, 1)
}

/// Whether process `pid` lives in the caller's own network namespace (the host's, for the agent).
fn shares_my_netns(pid: i32) -> Result<bool, NetworkError> {
    use std::os::unix::fs::MetadataExt;
    let inode = |p: String| {
        std::fs::metadata(&p)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| NetworkError::Netns { pid, errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)) })
    };
    Ok(inode(format!("/proc/{pid}/ns/net"))? == inode("/proc/self/ns/net".to_string())?)
}

/// The first of `pids` (a vserver's processes) that lives in a network namespace other than the caller's:
/// the vserver's own. `None` when the vserver shares the host's network (or none of them can be read), so
/// nobody ever sets the host's own interfaces down for a vserver (its keeper, for one, stays in the host's).
pub fn private_netns_member(pids: &[i32]) -> Option<i32> {
    pids.iter().copied().find(|p| shares_my_netns(*p).is_ok_and(|shared| !shared))
}

/// Sets every interface but the loopback down inside the network namespace of `pid`, so that the context's
/// addresses stop answering at once (ARP included), before its processes are killed and its namespace, with
/// its interfaces, goes away. Returns how many were set down: none when `pid` shares the caller's network
/// namespace, which is never touched.
pub fn down_all(pid: i32) -> Result<usize, NetworkError> {
    if shares_my_netns(pid)? {
        return Ok(0);
    }
    let ns = open_netns(pid)?;
    let listed = ip(Some(&ns), &["-o", "link", "show"], None)?;
    // `2: eth0@if5: <BROADCAST,...> mtu 1500 ...`: the name is the second field, up to an `@`.
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| *n != "lo")
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let batch: String = names.iter().map(|n| format!("link set dev {n} down\n")).collect();
    ip(Some(&ns), &["-batch", "-"], Some(&batch))?;
    Ok(names.len())
}

/// Sends `count` announcements for each (device, address) from inside the network namespace of `pid`:
/// gratuitous ARPs for an IPv4 address, unsolicited neighbour advertisements for an IPv6 one.
pub fn announce_in(pid: i32, addrs: &[(String, IpAddr)], count: u32) -> Result<(), NetworkError> {
    if addrs.is_empty() {
        return Ok(());
    }
    let ns = open_netns(pid)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // Only this short-lived thread changes network namespace.
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|errno| NetworkError::Netns { pid, errno })?;
            for (dev, addr) in addrs {
                match addr {
                    IpAddr::V4(v4) => garp::announce(dev, *v4, count)?,
                    IpAddr::V6(v6) => unsolicited_na::announce(dev, *v6, count)?,
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or(Err(NetworkError::Netns { pid, errno: nix::Error::EINTR }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_own_network_namespace_is_never_set_down() {
        let me = std::process::id() as i32;
        assert_eq!(down_all(me).unwrap(), 0, "nothing touched, no `ip` run");
        assert_eq!(private_netns_member(&[me]), None);
    }

    #[test]
    fn networks_compare_under_the_prefix() {
        let a: IpAddr = "198.18.0.10".parse().unwrap();
        assert!(same_network(a, "198.18.0.200".parse().unwrap(), 24));
        assert!(!same_network(a, "198.18.1.1".parse().unwrap(), 24));
        assert!(same_network(a, "198.18.1.1".parse().unwrap(), 15));
        assert!(!same_network(a, "fd00::1".parse().unwrap(), 24));
    }
}
