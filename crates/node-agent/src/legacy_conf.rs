//! The legacy `/etc/vservers/NAME.conf`: reading it into typed values, turning those into the
//! [`ContextSpec`] that `isolate` builds, and writing the commented starter that `vserver NAME build` leaves.
//!
//! The file is "a simple script like configuration" (`KEY=value`, `KEY="value with spaces"`, `KEY='literal'`,
//! `#` comments, an optional leading `export `), but it is never run by a shell: nothing is expanded. A value
//! that a shell would expand (`$VAR`, `` `cmd` ``, `$(cmd)`) unquoted or in double quotes is refused, so an
//! operator learns at once that it would not have been run. Every error names `file:line`.
//!
//! An empty value (`KEY=` or `KEY=""`) is the same as leaving the key out, except for `ULIMIT=""`, which sets
//! no limit at all (without the key, the default `-H -u 1000` applies).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use isolate::spec::{
    self, Address, Capability, CgroupPlace, ContextSpec, Flags, Interface, Limits, Network, Relaxed, Resource, Rlimit,
    SpecError, VserverName, DEFAULT_PIDS_LIMIT,
};

/// The keys this parser knows; any other key is kept in [`LegacyConf::unknown`] and warned about.
pub const KNOWN_KEYS: &[&str] = &[
    "IPROOT",
    "IPROOTDEV",
    "IPROOTMASK",
    "IPROOTBCAST",
    "ONBOOT",
    "S_CAPS",
    "S_CONTEXT",
    "S_DOMAINNAME",
    "S_HOSTNAME",
    "S_NICE",
    "S_FLAGS",
    "S_UNSAFE",
    "ULIMIT",
    "LIMIT_PIDS",
    "LIMIT_MEMORY",
    "LIMIT_DISK",
    "CPU_WEIGHT",
    "IO_WEIGHT",
];

/// The words S_FLAGS may hold.
pub const KNOWN_FLAGS: &[&str] = &["lock", "sched", "nproc", "private", "fakeinit"];

/// ULIMIT when the conf does not set it, as the guide documents.
pub const DEFAULT_ULIMIT: &str = "-H -u 1000";

/// Process limit of the whole vserver under S_FLAGS `nproc` when ULIMIT has no `-u`.
pub const DEFAULT_NPROC: u64 = 1000;

/// Highest S_CONTEXT accepted (context numbers were 16 bits).
pub const MAX_CONTEXT: u32 = 65535;

/// Why a NAME.conf was refused. Every variant but [`ConfError::Read`] names the file and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `KEY=value` (no `=`, bad key, unterminated quote, text after the value...).
    #[error("{}:{line}: {reason}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, as a sentence.
        reason: String,
    },
    /// A value holds something a shell would expand; the file is never run by a shell, so it is refused.
    #[error(
        "{}:{line}: {key}: {found} would be expanded by a shell, but this file is never run by one: \
         write the value literally, or in single quotes to keep a literal $ or `",
        .path.display()
    )]
    Expansion {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The key being set.
        key: String,
        /// The text that would have been expanded, such as `$(rm -rf /)` or `$HOME`.
        found: String,
    },
    /// A value was refused by the spec's parser (address, capability, ulimit, nice, host or domain name).
    #[error("{}:{line}: {key}: {source}", .path.display())]
    Spec {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the key.
        line: usize,
        /// The key.
        key: String,
        /// Why the spec refused it.
        source: SpecError,
    },
    /// A value is not one this key takes (ONBOOT not yes/no, S_CONTEXT out of range, bad device name...).
    #[error("{}:{line}: {key}: {reason}", .path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the key.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// S_FLAGS names a flag that does not exist.
    #[error(
        "{}:{line}: S_FLAGS: unknown flag {flag:?} (known flags: lock sched nproc private fakeinit)",
        .path.display()
    )]
    UnknownFlag {
        /// The file.
        path: PathBuf,
        /// 1-based line number of S_FLAGS.
        line: usize,
        /// The word as given.
        flag: String,
    },
    /// An IPROOT address has no `dev:` prefix and IPROOTDEV is not set, so no device would carry it.
    #[error(
        "{}:{line}: IPROOT address {address} has no device: add a dev: prefix (eth0:{address}) or set IPROOTDEV",
        .path.display()
    )]
    NoDevice {
        /// The file.
        path: PathBuf,
        /// 1-based line number of IPROOT.
        line: usize,
        /// The address as written (without a device).
        address: String,
    },
}

impl ConfError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Syntax { path, .. }
            | Self::Expansion { path, .. }
            | Self::Spec { path, .. }
            | Self::Value { path, .. }
            | Self::UnknownFlag { path, .. }
            | Self::NoDevice { path, .. } => path,
        }
    }

    /// The 1-based line at fault, when the error is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { line, .. }
            | Self::Expansion { line, .. }
            | Self::Spec { line, .. }
            | Self::Value { line, .. }
            | Self::UnknownFlag { line, .. }
            | Self::NoDevice { line, .. } => Some(*line),
        }
    }
}

/// Something accepted but worth telling the operator (an unknown key, a key set twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What was noticed, as a sentence.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// The typed content of one NAME.conf. Made by [`LegacyConf::parse`], which refuses anything
/// [`LegacyConf::to_spec`] could not use, naming its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyConf {
    /// The file it was read from (used in error messages).
    pub path: PathBuf,
    /// IPROOT: each address with its `dev:` prefix if written; empty when not tied to an IP (empty or `0.0.0.0`).
    pub iproot: Vec<(Option<String>, Address)>,
    /// IPROOTDEV: device for the addresses written without a `dev:` prefix.
    pub iprootdev: Option<String>,
    /// IPROOTMASK: prefix length for the IPv4 addresses written without a `/mask`.
    pub iprootmask: Option<u8>,
    /// IPROOTBCAST: broadcast address of the IPv4 addresses.
    pub iprootbcast: Option<Ipv4Addr>,
    /// ONBOOT: started with the host.
    pub onboot: bool,
    /// S_CAPS: capabilities kept beyond the default set.
    pub caps: BTreeSet<Capability>,
    /// S_CONTEXT: fixed context number (2..=65535).
    pub context: Option<u32>,
    /// S_DOMAINNAME: `Some("")` resets it (`none`); `None` keeps the host's.
    pub domainname: Option<String>,
    /// S_HOSTNAME: `None` uses the vserver's name.
    pub hostname: Option<String>,
    /// S_NICE: the nice floor (-20..=19).
    pub nice: Option<i32>,
    /// S_FLAGS that change how the context is built (`lock`, `sched`, `private`, `fakeinit`).
    pub flags: Flags,
    /// S_FLAGS `nproc`: the ulimit on processes counts for the whole vserver.
    pub nproc_flag: bool,
    /// S_UNSAFE: the protections turned off for this vserver.
    pub relaxed: Relaxed,
    /// LIMIT_PIDS: `Some(None)` for `unlimited`; `None` when not set.
    pub limit_pids: Option<Option<u64>>,
    /// LIMIT_MEMORY, CPU_WEIGHT, IO_WEIGHT, LIMIT_DISK.
    pub limits: Limits,
    /// ULIMIT, parsed.
    pub ulimit: Vec<Rlimit>,
    /// ULIMIT as written ([`DEFAULT_ULIMIT`] when absent).
    pub ulimit_text: String,
    /// Keys this parser does not know: (key, value, line), in file order.
    pub unknown: Vec<(String, String, usize)>,
    /// Line where each known key was last set, so later errors still name it.
    pub lines: BTreeMap<String, usize>,
}

impl LegacyConf {
    /// Reads and parses a NAME.conf file.
    pub fn load(path: &Path) -> Result<(Self, Vec<Warning>), ConfError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a NAME.conf; `path` only names the file in errors and warnings.
    /// Refuses a malformed line or a bad value; returns the warnings (unknown key, key set twice) with it.
    pub fn parse(path: &Path, text: &str) -> Result<(Self, Vec<Warning>), ConfError> {
        let mut warnings = Vec::new();
        let mut unknown = Vec::new();
        let mut known: BTreeMap<&'static str, (String, usize)> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let (key, value) = match lex_line(raw) {
                Ok(None) => continue,
                Ok(Some(kv)) => kv,
                Err(LineError::Syntax(reason)) => {
                    return Err(ConfError::Syntax { path: path.to_path_buf(), line, reason })
                }
                Err(LineError::Expansion { key, found }) => {
                    return Err(ConfError::Expansion { path: path.to_path_buf(), line, key, found })
                }
            };
            match KNOWN_KEYS.iter().find(|k| **k == key) {
                Some(k) => {
                    if let Some((_, previous)) = known.insert(k, (value, line)) {
                        warnings.push(Warning {
                            path: path.to_path_buf(),
                            line,
                            message: format!(
                                "{key} is set again (already set on line {previous}); the later value wins"
                            ),
                        });
                    }
                }
                None => {
                    warnings.push(Warning {
                        path: path.to_path_buf(),
                        line,
                        message: format!("unknown key {key} is ignored (known keys: {})", KNOWN_KEYS.join(" ")),
                    });
                    unknown.push((key.to_string(), value, line));
                }
            }
        }

        let mut conf = LegacyConf {
            path: path.to_path_buf(),
            iproot: Vec::new(),
            iprootdev: None,
            iprootmask: None,
            iprootbcast: None,
            onboot: false,
            caps: BTreeSet::new(),
            context: None,
            domainname: None,
            hostname: None,
            nice: None,
            flags: Flags::default(),
            nproc_flag: false,
            relaxed: Relaxed::default(),
            limit_pids: None,
            limits: Limits::default(),
            ulimit: Vec::new(),
            ulimit_text: DEFAULT_ULIMIT.to_string(),
            unknown,
            lines: known.iter().map(|(k, (_, line))| (k.to_string(), *line)).collect(),
        };
        let at = |key: &str| Field { path, key: key.to_string(), line: known.get(key).map_or(0, |v| v.1) };
        let value = |key: &str| known.get(key).map(|(v, _)| v.as_str());
        let set = |key: &str| value(key).filter(|v| !v.trim().is_empty());

        if let Some(v) = set("IPROOTDEV") {
            let v = v.trim();
            check_device(v).map_err(|reason| at("IPROOTDEV").value(reason))?;
            conf.iprootdev = Some(v.to_string());
        }
        if let Some(v) = set("IPROOTMASK") {
            let v = v.trim();
            let mask = spec::parse_mask(v, true)
                .map_err(|reason| at("IPROOTMASK").value(format!("{reason} (IPv4 netmask expected)")))?;
            conf.iprootmask = Some(mask);
        }
        if let Some(v) = set("IPROOTBCAST") {
            let v = v.trim();
            let bcast =
                v.parse::<Ipv4Addr>().map_err(|_| at("IPROOTBCAST").value(format!("{v:?} is not an IPv4 address")))?;
            conf.iprootbcast = Some(bcast);
        }
        if let Some(v) = set("IPROOT") {
            conf.iproot = parse_iproot(v).map_err(|e| at("IPROOT").error(e))?;
        }
        if let Some(v) = set("ONBOOT") {
            conf.onboot = parse_bool(v.trim())
                .ok_or_else(|| at("ONBOOT").value(format!("{:?} is not yes or no (also true/false, 1/0)", v.trim())))?;
        }
        if let Some(v) = set("S_CAPS") {
            for word in v.split_whitespace() {
                let cap = spec::parse_capability(word).map_err(|e| at("S_CAPS").spec(e))?;
                conf.caps.insert(cap);
            }
        }
        if let Some(v) = set("S_CONTEXT") {
            let v = v.trim();
            let n = v.parse::<u32>().ok().filter(|n| (2..=MAX_CONTEXT).contains(n)).ok_or_else(|| {
                at("S_CONTEXT").value(format!("{v:?} is not a context number from 2 to {MAX_CONTEXT}"))
            })?;
            conf.context = Some(n);
        }
        if let Some(v) = set("S_DOMAINNAME") {
            if v == "none" {
                conf.domainname = Some(String::new());
            } else {
                spec::check_uts_name("domain name", v).map_err(|e| at("S_DOMAINNAME").spec(e))?;
                conf.domainname = Some(v.to_string());
            }
        }
        if let Some(v) = set("S_HOSTNAME") {
            spec::check_uts_name("hostname", v).map_err(|e| at("S_HOSTNAME").spec(e))?;
            conf.hostname = Some(v.to_string());
        }
        if let Some(v) = set("S_NICE") {
            let v = v.trim();
            let n = v
                .parse::<i32>()
                .map_err(|_| at("S_NICE").value(format!("{v:?} is not a whole number from -20 to 19")))?;
            conf.nice = Some(spec::check_nice(n).map_err(|e| at("S_NICE").spec(e))?);
        }
        if let Some(v) = set("S_FLAGS") {
            for word in v.split_whitespace() {
                match word {
                    "lock" => conf.flags.lock = true,
                    "sched" => conf.flags.sched = true,
                    "nproc" => conf.nproc_flag = true,
                    "private" => conf.flags.private = true,
                    "fakeinit" => conf.flags.fakeinit = true,
                    other => {
                        return Err(ConfError::UnknownFlag {
                            path: path.to_path_buf(),
                            line: at("S_FLAGS").line,
                            flag: other.to_string(),
                        })
                    }
                }
            }
        }
        if let Some(v) = set("S_UNSAFE") {
            for word in v.split_whitespace() {
                if !conf.relaxed.set(word) {
                    let known: Vec<&str> = Relaxed::WORDS.iter().map(|(w, _)| *w).collect();
                    return Err(
                        at("S_UNSAFE").value(format!("unknown protection {word:?} (known: {})", known.join(" ")))
                    );
                }
            }
        }
        if let Some(v) = set("LIMIT_PIDS") {
            let v = v.trim();
            conf.limit_pids = Some(match v {
                "unlimited" => None,
                n => Some(n.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    at("LIMIT_PIDS").value(format!("{n:?} is not a number of processes (1 or more) or unlimited"))
                })?),
            });
        }
        if let Some(v) = set("LIMIT_MEMORY") {
            conf.limits.memory = Some(parse_size(v.trim(), MIN_MEMORY).map_err(|r| at("LIMIT_MEMORY").value(r))?);
        }
        if let Some(v) = set("LIMIT_DISK") {
            conf.limits.disk = Some(parse_size(v.trim(), MIN_DISK).map_err(|r| at("LIMIT_DISK").value(r))?);
        }
        if let Some(v) = set("CPU_WEIGHT") {
            conf.limits.cpu_weight = Some(parse_weight(v.trim()).map_err(|r| at("CPU_WEIGHT").value(r))?);
        }
        if let Some(v) = set("IO_WEIGHT") {
            conf.limits.io_weight = Some(parse_weight(v.trim()).map_err(|r| at("IO_WEIGHT").value(r))?);
        }
        if let Some(v) = value("ULIMIT") {
            conf.ulimit_text = v.to_string();
        }
        conf.ulimit = spec::parse_ulimit(&conf.ulimit_text).map_err(|e| at("ULIMIT").spec(e))?;

        // Resolve the network now, so that a conf that could never start is refused when read.
        conf.network()?;
        Ok((conf, warnings))
    }

    /// Line where `key` was (last) set, if it was.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    /// The network the context gets: when IPROOT is empty or `0.0.0.0`, a private namespace with only its
    /// loopback (the host's, as the guide had it, only with S_UNSAFE `hostnet`); otherwise one interface per
    /// device (in order of first appearance) carrying its addresses, with IPROOTMASK given to the IPv4
    /// addresses written without a mask and IPROOTBCAST on every interface with an IPv4 address.
    pub fn network(&self) -> Result<Network, ConfError> {
        if self.iproot.is_empty() {
            return Ok(if self.relaxed.hostnet { Network::Host } else { Network::Private(Vec::new()) });
        }
        let mut interfaces: Vec<Interface> = Vec::new();
        for (dev, address) in &self.iproot {
            let Some(dev) = dev.as_deref().or(self.iprootdev.as_deref()) else {
                return Err(ConfError::NoDevice {
                    path: self.path.clone(),
                    line: self.line_of("IPROOT").unwrap_or(0),
                    address: show_address(address),
                });
            };
            let mut address = address.clone();
            if address.prefix.is_none() && address.addr.is_ipv4() {
                address.prefix = self.iprootmask;
            }
            match interfaces.iter_mut().find(|i| i.host_dev == dev) {
                Some(interface) => interface.addresses.push(address),
                None => {
                    interfaces.push(Interface { host_dev: dev.to_string(), addresses: vec![address], broadcast: None })
                }
            }
        }
        for interface in &mut interfaces {
            if interface.addresses.iter().any(|a| a.addr.is_ipv4()) {
                interface.broadcast = self.iprootbcast;
            }
        }
        Ok(Network::Private(interfaces))
    }

    /// Process limit of the whole vserver: LIMIT_PIDS when set (`None` = unlimited); else with S_FLAGS
    /// `nproc`, ULIMIT's `-u` (the hard limit if set, else the soft one), or [`DEFAULT_NPROC`] when ULIMIT
    /// has no `-u`; else [`DEFAULT_PIDS_LIMIT`].
    pub fn nproc_limit(&self) -> Option<u64> {
        if let Some(limit) = self.limit_pids {
            return limit;
        }
        if !self.nproc_flag {
            return Some(DEFAULT_PIDS_LIMIT);
        }
        let nproc = || self.ulimit.iter().rev().filter(|r| r.resource == Resource::NProc);
        nproc().find_map(|r| r.hard).or_else(|| nproc().find_map(|r| r.soft)).unwrap_or(Some(DEFAULT_NPROC))
    }

    /// The spec `isolate` builds for this vserver. An error still names the line of the key at fault.
    pub fn to_spec(&self, name: &VserverName, root: PathBuf, cgroup: CgroupPlace) -> Result<ContextSpec, ConfError> {
        Ok(ContextSpec {
            name: name.clone(),
            root,
            root_device: None,
            hostname: self.hostname.clone(),
            domainname: self.domainname.clone(),
            network: self.network()?,
            extra_caps: self.caps.clone(),
            nice: self.nice,
            rlimits: self.ulimit.clone(),
            nproc: self.nproc_limit(),
            limits: self.limits,
            relaxed: self.relaxed,
            flags: self.flags,
            context_id: self.context,
            cgroup,
        })
    }
}

/// A commented starter NAME.conf in the guide's format, as `vserver NAME build` writes it: every key present,
/// each under a one-line explanation, commented out unless given here. `iproot` is written as is (e.g.
/// `"eth0:192.168.1.2"`); parse the result to check it (an address with no `dev:` is refused, as IPROOTDEV
/// is left commented out).
pub fn render_starter(name: &VserverName, iproot: Option<&str>, hostname: Option<&str>) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    let key = |key: &str, given: Option<&str>, example: &str| match given {
        Some(v) => format!("{key}={}", double_quote(v)),
        None => format!("#{key}={example}"),
    };
    line(&format!("# {name}.conf: configuration of the vserver {name}, in the Linux-VServer guide's format."));
    line("# One KEY=value per line; quote a value holding spaces (\"...\" or '...'). This file is read, never");
    line("# run by a shell: $VAR, `cmd` and $(cmd) are refused. A key left commented out takes its default.");
    line("");
    line("# Addresses, space separated, each [dev:]addr[/mask]; empty or 0.0.0.0: a private network with only");
    line("# a loopback (S_UNSAFE hostnet shares the host's network instead, as the guide's vservers did).");
    line(&key("IPROOT", iproot, "\"eth0:192.168.1.2\""));
    line("# Device carrying the addresses written without a dev: prefix.");
    line("#IPROOTDEV=eth0");
    line("# Netmask of the IPv4 addresses written without /mask; default: the host's on that device, else /24.");
    line("#IPROOTMASK=255.255.255.0");
    line("# Broadcast address of the vserver's IPv4 addresses.");
    line("#IPROOTBCAST=192.168.1.255");
    line("# yes: the vserver is started with the host; default no.");
    line("#ONBOOT=yes");
    line("# Capabilities kept beyond the default set (root in a vserver cannot take over the host).");
    line("#S_CAPS=\"CAP_NET_RAW\"");
    line("# Fixed context number (2 to 65535), shown by vserver-stat; default: none.");
    line("#S_CONTEXT=42");
    line("# NIS domain name inside; none resets it; default: the host's.");
    line("#S_DOMAINNAME=none");
    line("# Host name inside; default: the vserver's name.");
    line(&key("S_HOSTNAME", hostname, name.as_str()));
    line("# Nice floor (-20 to 19) of every process inside; even root cannot go under it.");
    line("#S_NICE=5");
    line("# Flags: lock (no new contexts inside), sched (scheduled as one), nproc (ULIMIT -u for the whole");
    line("# vserver), private (nobody may enter it), fakeinit (its /sbin/init runs as process 1).");
    line("#S_FLAGS=\"lock nproc\"");
    line("# Arguments of the shell's ulimit applied inside; default \"-H -u 1000\".");
    line(&format!("#ULIMIT={}", double_quote(DEFAULT_ULIMIT)));
    line(&format!("# Most processes of the whole vserver (a fork bomb stops there); default {DEFAULT_PIDS_LIMIT}."));
    line("#LIMIT_PIDS=4096");
    line("# Most memory of the whole vserver (K, M, G, T); default: no limit.");
    line("#LIMIT_MEMORY=512M");
    line("# Most disk space of its tree, by a project quota (the file system must have them); default: none.");
    line("#LIMIT_DISK=10G");
    line("# Share of CPU and of block I/O against other vservers, 1 to 10000; default 100.");
    line("#CPU_WEIGHT=100");
    line("#IO_WEIGHT=100");
    line("# Protections turned off, each a way for root inside to reach the host: seccomp, userns, devices,");
    line("# procfs, hostnet. Every start warns about them. Default: none.");
    line("#S_UNSAFE=\"userns\"");
    out
}

/// Smallest LIMIT_MEMORY accepted: below it not even a shell starts.
const MIN_MEMORY: u64 = 4 << 20;
/// Smallest LIMIT_DISK accepted.
const MIN_DISK: u64 = 1 << 20;

/// Reads a size in bytes: a whole number with an optional binary unit (`K`, `M`, `G`, `T`, also written
/// `KiB`... or `KB`..., all powers of 1024), at least `min`.
fn parse_size(text: &str, min: u64) -> Result<u64, String> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("{text:?} is not a size (a number with an optional unit K, M, G or T, e.g. 512M)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes < min {
        return Err(format!("{text:?} is under the smallest limit accepted, {} MiB", min >> 20));
    }
    Ok(bytes)
}

/// Reads a CPU or I/O weight: 1 to 10000, 100 being what a vserver without one weighs.
fn parse_weight(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|w| (1..=10_000).contains(w))
        .ok_or_else(|| format!("{text:?} is not a weight from 1 to 10000 (100 is the default)"))
}

/// Writes `value` in double quotes, escaping what the parser would otherwise read specially.
fn double_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Where a value was set, to build errors naming it.
struct Field<'a> {
    path: &'a Path,
    key: String,
    line: usize,
}

impl Field<'_> {
    fn value(&self, reason: String) -> ConfError {
        ConfError::Value { path: self.path.to_path_buf(), line: self.line, key: self.key.clone(), reason }
    }

    fn spec(&self, source: SpecError) -> ConfError {
        ConfError::Spec { path: self.path.to_path_buf(), line: self.line, key: self.key.clone(), source }
    }

    fn error(&self, e: ValueError) -> ConfError {
        match e {
            ValueError::Spec(source) => self.spec(source),
            ValueError::Reason(reason) => self.value(reason),
        }
    }
}

/// Why a value was refused, before it is tied to its file and line.
enum ValueError {
    Spec(SpecError),
    Reason(String),
}

/// Reads IPROOT: `[dev:]addr[/mask]` words; a lone `0.0.0.0` (or `::`) means not tied to an IP.
fn parse_iproot(value: &str) -> Result<Vec<(Option<String>, Address)>, ValueError> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let mut out: Vec<(Option<String>, Address)> = Vec::new();
    for word in &words {
        let (dev, address) = match spec::parse_address(word) {
            Ok(address) => (None, address),
            Err(whole) => match word.split_once(':') {
                Some((dev, rest)) if !rest.is_empty() => {
                    let address = spec::parse_address(rest).map_err(|e| {
                        // `fd00::zz` is a broken IPv6 address, not the device `fd00`: report it whole.
                        ValueError::Spec(if dev.bytes().all(|b| b.is_ascii_hexdigit()) { whole } else { e })
                    })?;
                    check_device(dev).map_err(|r| ValueError::Reason(format!("in {word:?}: {r}")))?;
                    (Some(dev.to_string()), address)
                }
                _ => return Err(ValueError::Spec(whole)),
            },
        };
        if address.addr.is_unspecified() {
            if words.len() > 1 {
                return Err(ValueError::Reason(format!(
                    "{word} means \"not tied to an IP\" and cannot be combined with other addresses"
                )));
            }
            return Ok(Vec::new());
        }
        if out.iter().any(|(_, a)| a.addr == address.addr) {
            return Err(ValueError::Reason(format!("address {} is listed twice", address.addr)));
        }
        out.push((dev, address));
    }
    Ok(out)
}

/// Checks a network device name as the kernel does: 1 to 15 bytes, no `/`, `:` or white space, not `.`/`..`.
fn check_device(dev: &str) -> Result<(), String> {
    if dev.is_empty() {
        return Err("empty device name".into());
    }
    if dev.len() > 15 {
        return Err(format!("device name {dev:?} is longer than 15 bytes"));
    }
    if dev == "." || dev == ".." || dev.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("{dev:?} is not a valid device name"));
    }
    Ok(())
}

/// Reads ONBOOT: yes/no, true/false, 1/0, case ignored.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Some(true),
        "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Shows an address as the operator wrote it (`addr` or `addr/prefix`).
fn show_address(a: &Address) -> String {
    match a.prefix {
        Some(p) => format!("{}/{p}", a.addr),
        None => a.addr.to_string(),
    }
}

/// Why one line could not be read.
#[derive(Debug, PartialEq, Eq)]
enum LineError {
    Syntax(String),
    Expansion { key: String, found: String },
}

/// Reads one line: `None` for a blank or comment line, else the key and its (unquoted) value.
fn lex_line(raw: &str) -> Result<Option<(&str, String)>, LineError> {
    let s = raw.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    let s = match s.strip_prefix("export") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => s,
    };
    let Some((key, rest)) = s.split_once('=') else {
        return Err(LineError::Syntax(format!("expected KEY=value, found no '=' in {:?}", s.trim_end())));
    };
    check_key(key)?;
    let value = lex_value(key, rest)?;
    Ok(Some((key, value)))
}

/// Checks a key the way the shell reads an assignment: letters, digits and `_`, not starting with a digit.
fn check_key(key: &str) -> Result<(), LineError> {
    if key.is_empty() {
        return Err(LineError::Syntax("missing key before '='".into()));
    }
    if key.ends_with(char::is_whitespace) && !key.trim_end().contains(char::is_whitespace) {
        return Err(LineError::Syntax(format!(
            "space before '=' after {:?}: write KEY=value with no space around '='",
            key.trim_end()
        )));
    }
    let mut bytes = key.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(LineError::Syntax(format!(
            "invalid key {key:?}: a key is ASCII letters, digits and '_', not starting with a digit"
        )));
    }
    Ok(())
}

/// Reads what follows `=`: an unquoted word, a `"double"` or a `'single'` quoted value, then at most a comment.
fn lex_value(key: &str, rest: &str) -> Result<String, LineError> {
    let expansion = |at: &str| LineError::Expansion { key: key.to_string(), found: expansion_text(at) };
    match rest.chars().next() {
        None => Ok(String::new()),
        Some(c) if c.is_whitespace() => {
            let tail = rest.trim_start();
            if tail.is_empty() || tail.starts_with('#') {
                Ok(String::new())
            } else {
                Err(LineError::Syntax(format!(
                    "space after '=' in {key}: write KEY=value with no space around '=', and quote a value \
                     holding spaces"
                )))
            }
        }
        Some('\'') => {
            let body = &rest[1..];
            let Some(end) = body.find('\'') else {
                return Err(LineError::Syntax(format!(
                    "{key}: unterminated single quote (the closing ' is missing; a value cannot span lines)"
                )));
            };
            check_tail(key, &body[end + 1..], true)?;
            Ok(body[..end].to_string())
        }
        Some('"') => {
            let body = &rest[1..];
            let mut value = String::new();
            let mut chars = body.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        check_tail(key, &body[i + 1..], true)?;
                        return Ok(value);
                    }
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => break,
                    },
                    '$' | '`' => return Err(expansion(&body[i..])),
                    c => value.push(c),
                }
            }
            Err(LineError::Syntax(format!(
                "{key}: unterminated double quote (the closing \" is missing; a value cannot span lines)"
            )))
        }
        Some(_) => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with('~') {
                return Err(LineError::Syntax(format!(
                    "{key}: a leading '~' would be expanded by a shell: quote the value"
                )));
            }
            for (i, c) in word.char_indices() {
                match c {
                    '$' | '`' => return Err(expansion(&word[i..])),
                    '"' | '\'' => {
                        return Err(LineError::Syntax(format!(
                            "{key}: a quote in the middle of the value {word:?}: quote the whole value"
                        )))
                    }
                    '\\' => {
                        return Err(LineError::Syntax(format!(
                            "{key}: a backslash outside quotes in {word:?}: put the value in quotes"
                        )))
                    }
                    ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                        return Err(LineError::Syntax(format!(
                            "{key}: {c:?} in {word:?} would end the assignment in a shell: quote the value"
                        )))
                    }
                    _ => {}
                }
            }
            check_tail(key, &rest[end..], false)?;
            Ok(word.to_string())
        }
    }
}

/// Accepts what follows a value: nothing, or white space and an optional `#` comment.
fn check_tail(key: &str, tail: &str, quoted: bool) -> Result<(), LineError> {
    if tail.is_empty() {
        return Ok(());
    }
    if quoted && !tail.starts_with(char::is_whitespace) {
        return Err(LineError::Syntax(format!(
            "{key}: unexpected text {:?} right after the closing quote",
            tail.trim_end()
        )));
    }
    let tail = tail.trim_start();
    if tail.is_empty() || tail.starts_with('#') {
        return Ok(());
    }
    Err(LineError::Syntax(format!(
        "{key}: unexpected text {tail:?} after the value: one KEY=value per line, and quote a value \
         holding spaces"
    )))
}

/// The text a shell would have expanded, starting at `$` or `` ` ``: `$(...)`, `${...}`, `$NAME` or `` `...` ``.
fn expansion_text(at: &str) -> String {
    let take_to = |close: char, from: usize| match at[from..].find(close) {
        Some(end) => at[..from + end + close.len_utf8()].to_string(),
        None => at.to_string(),
    };
    if at.starts_with('`') {
        return take_to('`', 1);
    }
    match at[1..].chars().next() {
        Some('(') => take_to(')', 2),
        Some('{') => take_to('}', 2),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let end = at[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(at.len(), |e| e + 1);
            at[..end].to_string()
        }
        Some(c) => format!("${c}"),
        None => "$".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const PATH: &str = "/etc/vservers/v1.conf";

    fn parse(text: &str) -> Result<(LegacyConf, Vec<Warning>), ConfError> {
        LegacyConf::parse(Path::new(PATH), text)
    }

    fn ok(text: &str) -> LegacyConf {
        let (conf, warnings) = parse(text).unwrap_or_else(|e| panic!("refused: {e}"));
        assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
        conf
    }

    fn cap(name: &str) -> Capability {
        spec::parse_capability(name).unwrap()
    }

    fn addr(s: &str, prefix: Option<u8>) -> Address {
        Address { addr: s.parse::<IpAddr>().unwrap(), prefix }
    }

    /// Asserts that `text` is refused at `line` and returns the message after the `file:line: ` prefix.
    fn refused_at(text: &str, line: usize) -> String {
        let err = parse(text).map(|_| ()).expect_err("accepted");
        let shown = err.to_string();
        let prefix = format!("{PATH}:{line}: ");
        assert!(shown.starts_with(&prefix), "{shown:?} does not start with {prefix:?}");
        assert_eq!(err.line(), Some(line));
        assert_eq!(err.path(), Path::new(PATH));
        shown[prefix.len()..].to_string()
    }

    #[test]
    fn the_guides_example_gives_two_interfaces_in_order_of_appearance() {
        let conf = ok("IPROOT=\"eth0:192.168.1.2 eth1:192.168.3.1/255.255.255.192 192.168.1.4\"\nIPROOTDEV=eth0\n");
        let Network::Private(ifaces) = conf.network().unwrap() else { panic!("host network") };
        assert_eq!(ifaces.len(), 2);
        assert_eq!(ifaces[0].host_dev, "eth0");
        assert_eq!(ifaces[0].addresses, vec![addr("192.168.1.2", None), addr("192.168.1.4", None)]);
        assert_eq!(ifaces[1].host_dev, "eth1");
        assert_eq!(ifaces[1].addresses, vec![addr("192.168.3.1", Some(26))]);
        assert_eq!(conf.iproot[2].0, None, "the bare address keeps no device of its own");
    }

    #[test]
    fn iprootmask_fills_missing_masks_and_iprootbcast_goes_on_ipv4_interfaces() {
        let conf = ok(concat!(
            "IPROOT='10.0.0.2 10.0.1.2/16 eth1:fd00::2'\n",
            "IPROOTDEV=eth0\nIPROOTMASK=255.255.255.0\nIPROOTBCAST=10.0.0.255\n"
        ));
        let Network::Private(ifaces) = conf.network().unwrap() else { panic!("host network") };
        assert_eq!(ifaces[0].addresses, vec![addr("10.0.0.2", Some(24)), addr("10.0.1.2", Some(16))]);
        assert_eq!(ifaces[0].broadcast, Some("10.0.0.255".parse().unwrap()));
        assert_eq!(ifaces[1].addresses, vec![addr("fd00::2", None)], "IPROOTMASK is for IPv4 only");
        assert_eq!(ifaces[1].broadcast, None);
        assert_eq!(ok("IPROOT=fd00::9/64\nIPROOTDEV=eth0\n").iproot, vec![(None, addr("fd00::9", Some(64)))]);
    }

    #[test]
    fn empty_or_unspecified_iproot_gives_a_private_loopback_unless_hostnet() {
        for text in ["", "IPROOT=\n", "IPROOT=\"\"\n", "IPROOT=0.0.0.0\n", "IPROOT=\"eth0:0.0.0.0\"\n"] {
            assert_eq!(ok(text).network().unwrap(), Network::Private(vec![]), "{text:?}");
            let opted = format!("{text}S_UNSAFE=hostnet\n");
            assert_eq!(ok(&opted).network().unwrap(), Network::Host, "{opted:?}");
        }
        let msg = refused_at("IPROOT=\"0.0.0.0 10.0.0.1\"\nIPROOTDEV=eth0\n", 1);
        assert!(msg.contains("cannot be combined"), "{msg}");
    }

    #[test]
    fn quotes_comments_and_export_read_as_in_a_shell() {
        let conf = ok(concat!(
            "# a whole-line comment\n",
            "\n",
            "   # an indented comment\n",
            "export S_HOSTNAME=web1 # after an unquoted value\n",
            "S_FLAGS=\"lock  nproc\"   # after a double-quoted value\n",
            "export\tS_CAPS='CAP_NET_RAW cap_sys_time' # after a single-quoted value\n",
        ));
        assert_eq!(conf.hostname.as_deref(), Some("web1"));
        assert!(conf.flags.lock && conf.nproc_flag && !conf.flags.sched);
        assert_eq!(conf.caps, BTreeSet::from([cap("CAP_NET_RAW"), cap("CAP_SYS_TIME")]));

        let (conf, warnings) = parse(concat!(
            "A='$(not run) `nor this` $HOME'\n",
            "B=\"say \\\"hi\\\" \\\\ costs \\$5 \\n\"\n",
            "C=a#b\n",
            "D=\n",
        ))
        .unwrap();
        assert_eq!(warnings.len(), 4);
        let values: Vec<&str> = conf.unknown.iter().map(|(_, v, _)| v.as_str()).collect();
        assert_eq!(values, ["$(not run) `nor this` $HOME", r#"say "hi" \ costs $5 \n"#, "a#b", ""]);
    }

    #[test]
    fn a_command_substitution_is_refused_and_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        for text in [
            format!("S_HOSTNAME=\"$(touch {})\"\n", marker.display()),
            format!("S_HOSTNAME=$(touch {})\n", marker.display()),
            format!("S_HOSTNAME=`touch {}`\n", marker.display()),
        ] {
            let msg = refused_at(&format!("# first\n{text}"), 2);
            assert!(msg.starts_with("S_HOSTNAME: "), "{msg}");
            assert!(msg.contains("touch"), "{msg}");
            assert!(msg.contains("never run by one"), "{msg}");
        }
        assert!(!marker.exists());
        let msg = refused_at("IPROOT=\"$(rm -rf /)\"\n", 1);
        assert!(msg.starts_with("IPROOT: $(rm -rf /) would be expanded by a shell"), "{msg}");
        let msg = refused_at("\nS_NICE=$NICE\n", 2);
        assert!(msg.starts_with("S_NICE: $NICE would be expanded"), "{msg}");
        refused_at("X=\"${HOME}\"\n", 1);
    }

    #[test]
    fn malformed_lines_are_refused_naming_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("ONBOOT=yes\nthis is not an assignment\n", 2, "no '='"),
            ("\n\n1KEY=x\n", 3, "invalid key \"1KEY\""),
            ("BAD-KEY=x\n", 1, "invalid key"),
            ("=x\n", 1, "missing key"),
            ("ONBOOT =yes\n", 1, "space before '='"),
            ("ONBOOT= yes\n", 1, "space after '='"),
            ("#\nS_HOSTNAME=\"web1\n", 2, "unterminated double quote"),
            ("S_HOSTNAME='web1\n", 1, "unterminated single quote"),
            ("S_HOSTNAME=\"web1\"x\n", 1, "right after the closing quote"),
            ("S_HOSTNAME='web1' junk\n", 1, "unexpected text \"junk\""),
            ("IPROOT=10.0.0.1 10.0.0.2\n", 1, "unexpected text \"10.0.0.2\""),
            ("S_HOSTNAME=we\"b\"1\n", 1, "quote in the middle"),
            ("S_HOSTNAME=a;b\n", 1, "would end the assignment"),
            ("S_HOSTNAME=a\\b\n", 1, "backslash"),
            ("S_HOSTNAME=~web\n", 1, "'~'"),
            ("export\n", 1, "no '='"),
        ];
        for (text, line, needle) in cases {
            let msg = refused_at(text, *line);
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_line_of_their_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("ONBOOT=maybe\n", 1, "ONBOOT: \"maybe\" is not yes or no"),
            ("#\nS_CONTEXT=1\n", 2, "S_CONTEXT: \"1\" is not a context number from 2 to 65535"),
            ("S_CONTEXT=65536\n", 1, "S_CONTEXT:"),
            ("S_CONTEXT=ten\n", 1, "S_CONTEXT:"),
            ("\nS_NICE=20\n", 2, "S_NICE: invalid nice value 20"),
            ("S_NICE=low\n", 1, "S_NICE: \"low\" is not a whole number"),
            (
                "\n\nS_FLAGS=\"lock turbo\"\n",
                3,
                "S_FLAGS: unknown flag \"turbo\" (known flags: lock sched nproc private fakeinit)",
            ),
            ("S_CAPS=\"CAP_NET_RAW CAP_QUOTACTL\"\n", 1, "S_CAPS: unknown capability \"CAP_QUOTACTL\""),
            ("ULIMIT=\"-u lots\"\n", 1, "ULIMIT: invalid ulimit"),
            ("S_HOSTNAME='web 1'\n", 1, "S_HOSTNAME: invalid hostname"),
            ("IPROOTDEV=eth0\nIPROOT=\"10.0.0.300\"\n", 2, "IPROOT: invalid address"),
            ("IPROOTDEV=eth0\nIPROOT=\"10.0.0.1/33\"\n", 2, "IPROOT: invalid address"),
            ("IPROOT=\"some/thing:10.0.0.1\"\n", 1, "IPROOT: in \"some/thing:10.0.0.1\""),
            ("IPROOT=\"fd00::zz\"\n", 1, "IPROOT: invalid address \"fd00::zz\""),
            ("IPROOT=\"eth0:fd00::zz\"\n", 1, "IPROOT: invalid address \"fd00::zz\""),
            ("IPROOT=\"eth0:10.0.0.1 10.0.0.1\"\nIPROOTDEV=eth0\n", 1, "listed twice"),
            ("IPROOTDEV=a/b\n", 1, "IPROOTDEV: \"a/b\" is not a valid device name"),
            ("IPROOTMASK=255.0.255.0\n", 1, "IPROOTMASK: netmask 255.0.255.0 is not contiguous"),
            ("IPROOTBCAST=broadcast\n", 1, "IPROOTBCAST: \"broadcast\" is not an IPv4 address"),
        ];
        for (text, line, needle) in cases {
            let msg = refused_at(text, *line);
            assert!(msg.starts_with(needle) || msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
        let long = format!("S_DOMAINNAME={}\n", "d".repeat(65));
        assert!(refused_at(&long, 1).starts_with("S_DOMAINNAME: invalid domain name"));
    }

    #[test]
    fn an_address_without_any_device_names_the_iproot_line() {
        let msg = refused_at("ONBOOT=yes\nIPROOT=\"eth1:10.0.0.1 10.0.0.2/24\"\n", 2);
        assert_eq!(
            msg,
            "IPROOT address 10.0.0.2/24 has no device: add a dev: prefix (eth0:10.0.0.2/24) or set IPROOTDEV"
        );
        // IPROOTDEV may come after IPROOT, as in a shell script the value is read as a whole.
        assert!(ok("IPROOT=10.0.0.2\nIPROOTDEV=eth0\n").network().is_ok());
    }

    #[test]
    fn an_unknown_key_is_kept_and_warned_about() {
        let (conf, warnings) = parse("ONBOOT=yes\nS_MACHINE=x86\n").unwrap();
        assert_eq!(conf.unknown, vec![("S_MACHINE".to_string(), "x86".to_string(), 2)]);
        assert_eq!(warnings.len(), 1);
        let shown = warnings[0].to_string();
        assert!(shown.starts_with(&format!("{PATH}:2: unknown key S_MACHINE is ignored")), "{shown}");
    }

    #[test]
    fn a_key_set_twice_keeps_the_later_value_with_a_warning() {
        let (conf, warnings) = parse("S_NICE=5\nS_HOSTNAME=a\nS_NICE=99\nS_NICE=-3\n").unwrap();
        assert_eq!(conf.nice, Some(-3), "the overridden bad value is not read");
        assert_eq!(conf.line_of("S_NICE"), Some(4));
        assert_eq!(warnings.len(), 2);
        assert_eq!(warnings[1].line, 4);
        assert!(warnings[1].message.contains("already set on line 3"), "{}", warnings[1]);
        // The error of a repeated key names its last line.
        assert!(refused_at("S_NICE=5\nS_NICE=50\n", 2).starts_with("S_NICE:"));
    }

    #[test]
    fn onboot_takes_yes_no_true_false_one_zero() {
        for (v, want) in [
            ("yes", true),
            ("YES", true),
            ("True", true),
            ("1", true),
            ("no", false),
            ("No", false),
            ("false", false),
            ("0", false),
            ("", false),
        ] {
            assert_eq!(ok(&format!("ONBOOT=\"{v}\"\n")).onboot, want, "{v:?}");
        }
        assert!(!ok("").onboot);
        refused_at("ONBOOT=2\n", 1);
    }

    #[test]
    fn domain_and_host_names() {
        let conf = ok("S_DOMAINNAME=none\nS_HOSTNAME=web1.example\n");
        assert_eq!(conf.domainname.as_deref(), Some(""));
        assert_eq!(conf.hostname.as_deref(), Some("web1.example"));
        let conf = ok("S_DOMAINNAME=example.org\nS_HOSTNAME=\n");
        assert_eq!(conf.domainname.as_deref(), Some("example.org"));
        assert_eq!(conf.hostname, None);
        assert_eq!(ok("").domainname, None);
    }

    #[test]
    fn ulimit_defaults_and_the_nproc_flag() {
        let conf = ok("");
        assert_eq!(conf.ulimit_text, DEFAULT_ULIMIT);
        assert_eq!(conf.ulimit, spec::parse_ulimit(DEFAULT_ULIMIT).unwrap());
        assert_eq!(conf.nproc_limit(), Some(DEFAULT_PIDS_LIMIT), "no nproc flag: the default whole-vserver limit");

        assert_eq!(ok("S_FLAGS=nproc\n").nproc_limit(), Some(1000));
        assert_eq!(ok("S_FLAGS=nproc\nULIMIT=\"-H -u 200\"\n").nproc_limit(), Some(200));
        assert_eq!(ok("S_FLAGS=nproc\nULIMIT=\"-S -u 50\"\n").nproc_limit(), Some(50));
        assert_eq!(ok("S_FLAGS=nproc\nULIMIT=\"-S -u 50 -H -u 80\"\n").nproc_limit(), Some(80));
        assert_eq!(ok("S_FLAGS=nproc\nULIMIT=\"-u unlimited\"\n").nproc_limit(), None);
        assert_eq!(ok("S_FLAGS=nproc\nULIMIT=\"-n 4096\"\n").nproc_limit(), Some(DEFAULT_NPROC));

        let conf = ok("ULIMIT=\"\"\n");
        assert!(conf.ulimit.is_empty(), "an explicit empty ULIMIT sets no limit");
    }

    #[test]
    fn to_spec_carries_every_key() {
        let conf = ok(concat!(
            "IPROOT=\"eth0:192.168.1.2 192.168.1.4\"\nIPROOTDEV=eth0\nIPROOTMASK=24\nIPROOTBCAST=192.168.1.255\n",
            "ONBOOT=yes\nS_CAPS=\"CAP_NET_RAW\"\nS_CONTEXT=42\nS_DOMAINNAME=none\nS_HOSTNAME=www\nS_NICE=5\n",
            "S_FLAGS=\"lock sched nproc private fakeinit\"\nULIMIT=\"-H -u 300 -n 1024\"\n",
        ));
        let name = VserverName::parse("v1").unwrap();
        let cgroup = CgroupPlace::default();
        let spec = conf.to_spec(&name, PathBuf::from("/vservers/v1"), cgroup.clone()).unwrap();
        assert_eq!(spec.name, name);
        assert_eq!(spec.root, PathBuf::from("/vservers/v1"));
        assert_eq!(spec.hostname.as_deref(), Some("www"));
        assert_eq!(spec.domainname.as_deref(), Some(""));
        assert_eq!(
            spec.network,
            Network::Private(vec![Interface {
                host_dev: "eth0".into(),
                addresses: vec![addr("192.168.1.2", Some(24)), addr("192.168.1.4", Some(24))],
                broadcast: Some(Ipv4Addr::new(192, 168, 1, 255)),
            }])
        );
        assert_eq!(spec.extra_caps, BTreeSet::from([cap("CAP_NET_RAW")]));
        assert_eq!(spec.nice, Some(5));
        assert_eq!(spec.rlimits.len(), 2);
        assert_eq!(spec.nproc, Some(300));
        assert_eq!(spec.flags, Flags { lock: true, sched: true, private: true, fakeinit: true });
        assert_eq!(spec.context_id, Some(42));
        assert_eq!(spec.cgroup, cgroup);

        let spec = ok("").to_spec(&name, PathBuf::from("/vservers/v1"), CgroupPlace::default()).unwrap();
        assert_eq!(spec.hostname, None, "isolate then uses the vserver's name");
        assert_eq!(spec.network, Network::Private(vec![]));
        assert_eq!(spec.nproc, Some(DEFAULT_PIDS_LIMIT), "every vserver has a process limit");
        assert_eq!(spec.limits, Limits::default());
        assert_eq!(spec.relaxed, Relaxed::default());
        assert_eq!(spec.context_id, None);
        assert!(spec.extra_caps.is_empty());
        assert!(spec.warnings().is_empty(), "a default vserver starts without a warning");
    }

    #[test]
    fn limits_and_unsafe_words_are_read_and_bad_values_named() {
        let conf = ok(concat!(
            "LIMIT_PIDS=200\nLIMIT_MEMORY=512M\nLIMIT_DISK=\"2 GiB\"\nCPU_WEIGHT=300\nIO_WEIGHT=50\n",
            "S_UNSAFE=\"userns procfs\"\nS_CAPS=\"CAP_SYS_ADMIN CAP_NET_RAW\"\n"
        ));
        let name = VserverName::parse("v1").unwrap();
        let spec = conf.to_spec(&name, PathBuf::from("/vservers/v1"), CgroupPlace::default()).unwrap();
        assert_eq!(spec.nproc, Some(200));
        assert_eq!(
            spec.limits,
            Limits { memory: Some(512 << 20), cpu_weight: Some(300), io_weight: Some(50), disk: Some(2 << 30) }
        );
        assert_eq!(spec.relaxed.words(), vec!["userns", "procfs"]);
        let warnings = spec.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("CAP_SYS_ADMIN"), "{warnings:?}");
        assert_eq!(ok("LIMIT_PIDS=unlimited\n").nproc_limit(), None);
        assert_eq!(ok("LIMIT_PIDS=9\nS_FLAGS=nproc\nULIMIT=\"-u 40\"\n").nproc_limit(), Some(9), "LIMIT_PIDS wins");
        for (text, says) in [
            ("LIMIT_PIDS=0\n", "LIMIT_PIDS"),
            ("LIMIT_PIDS=many\n", "LIMIT_PIDS"),
            ("LIMIT_MEMORY=1K\n", "smallest"),
            ("LIMIT_MEMORY=12X\n", "not a size"),
            ("LIMIT_DISK=99999999999T\n", "too large"),
            ("CPU_WEIGHT=0\n", "1 to 10000"),
            ("IO_WEIGHT=10001\n", "1 to 10000"),
            ("S_UNSAFE=\"seccomp everything\"\n", "unknown protection \"everything\""),
        ] {
            let msg = refused_at(text, 1);
            assert!(msg.contains(says), "{text:?}: {msg}");
        }
    }

    #[test]
    fn to_spec_keeps_the_line_of_a_key_changed_after_parsing() {
        let mut conf = ok("ONBOOT=yes\nIPROOT=\"10.0.0.2\"\nIPROOTDEV=eth0\n");
        conf.iprootdev = None;
        let name = VserverName::parse("v1").unwrap();
        let err = conf.to_spec(&name, PathBuf::from("/vservers/v1"), CgroupPlace::default()).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{PATH}:2: IPROOT address 10.0.0.2 has no device")));
    }

    #[test]
    fn the_starter_parses_back_without_warning() {
        let name = VserverName::parse("web-01").unwrap();
        for (iproot, hostname) in [
            (None, None),
            (Some("eth0:10.0.0.5/24"), Some("www.example.org")),
            (Some("eth0:10.0.0.5 eth1:fd00::5"), None),
            (Some(""), Some("a")),
        ] {
            let text = render_starter(&name, iproot, hostname);
            let conf = ok(&text);
            assert_eq!(conf.hostname.as_deref(), hostname);
            assert_eq!(conf.ulimit_text, DEFAULT_ULIMIT);
            for key in KNOWN_KEYS {
                assert!(text.contains(&format!("{key}=")), "{key} missing from the starter");
            }
            if iproot.is_some() {
                assert!(conf.line_of("IPROOT").is_some());
            }
        }

        // Every commented example is valid too: uncommenting them all still parses cleanly.
        let text = render_starter(&name, None, None);
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let conf = ok(&uncommented);
        assert_eq!(conf.lines.len(), KNOWN_KEYS.len());
        assert!(conf.onboot && conf.flags.lock && conf.nproc_flag);
        assert_eq!(conf.hostname.as_deref(), Some("web-01"));
    }

    #[test]
    fn the_starter_quotes_what_it_is_given() {
        let name = VserverName::parse("v1").unwrap();
        let text = render_starter(&name, Some("eth0:10.0.0.1"), Some("a\"$`b"));
        assert!(text.contains(r#"S_HOSTNAME="a\"\$\`b""#), "{text}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.conf");
        std::fs::write(&path, "ONBOOT=yes\r\nS_NICE=3\r\n").unwrap();
        let (conf, warnings) = LegacyConf::load(&path).unwrap();
        assert!(warnings.is_empty());
        assert!(conf.onboot);
        assert_eq!(conf.nice, Some(3));
        assert_eq!(conf.path, path);

        let missing = dir.path().join("none.conf");
        let err = LegacyConf::load(&missing).unwrap_err();
        assert!(matches!(err, ConfError::Read { .. }));
        assert!(err.to_string().starts_with(&format!("cannot read {}: ", missing.display())));
        assert_eq!(err.line(), None);
    }
}
