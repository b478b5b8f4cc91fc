//! The typed description of a security context: what `isolate` is asked to build. Every type here is made
//! by a parser that rejects bad input, so code past this point never re-checks.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest vserver name accepted, in bytes (it becomes a directory, a cgroup and part of interface names).
pub const MAX_NAME_LEN: usize = 64;

/// Why a value could not become part of a spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The vserver name is empty, too long, or has a character that is not allowed.
    #[error("invalid vserver name {name:?}: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A capability name is not known.
    #[error("unknown capability {0:?} (expected a name such as CAP_NET_RAW)")]
    Capability(String),
    /// An address of IPROOT could not be read.
    #[error("invalid address {value:?}: {reason}")]
    Address {
        /// The word as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A ulimit argument list could not be read.
    #[error("invalid ulimit {value:?}: {reason}")]
    Ulimit {
        /// The arguments as given.
        value: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A nice value outside -20..=19.
    #[error("invalid nice value {0} (must be between -20 and 19)")]
    Nice(i32),
    /// A host name or domain name the kernel would refuse.
    #[error("invalid {what} {value:?}: {reason}")]
    UtsName {
        /// "hostname" or "domain name".
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A vserver's name: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit.
/// It can therefore never be `..`, never hold `/`, and is safe as a path component, cgroup and file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VserverName(String);

impl VserverName {
    /// Parses a name, refusing anything that could escape a directory or break a cgroup or interface name.
    pub fn parse(name: &str) -> Result<Self, SpecError> {
        let err = |reason| SpecError::Name { name: name.to_string(), reason };
        if name.is_empty() {
            return Err(err("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("it is longer than 64 bytes"));
        }
        if name.contains('/') {
            return Err(err("it contains '/'"));
        }
        if name.contains("..") {
            return Err(err("it contains '..'"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(err("only ASCII letters, digits, '.', '_' and '-' are allowed"));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(err("it must start with a letter or a digit"));
        }
        Ok(Self(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VserverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for VserverName {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for VserverName {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<VserverName> for String {
    fn from(n: VserverName) -> Self {
        n.0
    }
}

/// One Linux capability, ordered by its kernel number and written as `CAP_NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capability(pub caps::Capability);

impl Capability {
    /// The kernel's capability.
    pub fn raw(self) -> caps::Capability {
        self.0
    }
}

impl PartialOrd for Capability {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Capability {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.index().cmp(&other.0.index())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_capability(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a capability name such as `CAP_NET_RAW` (the `CAP_` prefix is optional, case is ignored).
pub fn parse_capability(word: &str) -> Result<Capability, SpecError> {
    let upper = word.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    caps::Capability::from_str(&full).map(Capability).map_err(|_| SpecError::Capability(word.to_string()))
}

/// The capabilities a vserver keeps when its conf adds none: enough to run ordinary services as root
/// (change owners, bind low ports, switch users, `reboot` its own PID namespace), no wider than a container
/// runtime's default, and nothing that reaches the host (no CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN,
/// CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_RAWIO, CAP_SYS_PTRACE, CAP_NET_RAW, CAP_BPF,
/// CAP_PERFMON, CAP_SYSLOG, CAP_MAC_*). CAP_SYS_BOOT stays for `reboot` and `halt` inside, which in a PID
/// namespace only end the vserver's init; the default seccomp profile denies `kexec_load` and
/// `kexec_file_load`, the host-wide calls the same capability would otherwise allow.
pub const DEFAULT_CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_AUDIT_WRITE,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SYS_BOOT,
];

/// Capabilities that are known ways out of a vserver: S_CAPS may add them back, and every start warns.
pub const ESCAPE_CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_RAWIO,
    caps::Capability::CAP_SYS_PTRACE,
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_BPF,
    caps::Capability::CAP_PERFMON,
    caps::Capability::CAP_SYSLOG,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_LINUX_IMMUTABLE,
    caps::Capability::CAP_SYS_RESOURCE,
];

/// One address of IPROOT with its prefix length, as it will be configured inside the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length; `None` takes the prefix of the host's own address on the device covering this
    /// address, or /24 (IPv4) and /64 (IPv6) when the host has none.
    pub prefix: Option<u8>,
}

/// Parses `a.b.c.d`, `a.b.c.d/24` or `a.b.c.d/255.255.255.0` (IPv6: `addr` or `addr/64`).
pub fn parse_address(word: &str) -> Result<Address, SpecError> {
    let bad = |reason: String| SpecError::Address { value: word.to_string(), reason };
    let (ip, mask) = match word.split_once('/') {
        Some((ip, mask)) => (ip, Some(mask)),
        None => (word, None),
    };
    let addr: IpAddr = ip.parse().map_err(|_| bad(format!("{ip:?} is not an IP address")))?;
    let prefix = match mask {
        None => None,
        Some(m) => Some(parse_mask(m, addr.is_ipv4()).map_err(bad)?),
    };
    Ok(Address { addr, prefix })
}

/// Reads a netmask given as a prefix length (`24`) or, for IPv4, a dotted mask (`255.255.255.192`).
pub fn parse_mask(mask: &str, v4: bool) -> Result<u8, String> {
    let max = if v4 { 32 } else { 128 };
    if let Ok(n) = mask.parse::<u8>() {
        return if n <= max { Ok(n) } else { Err(format!("prefix length {n} is over {max}")) };
    }
    if v4 {
        if let Ok(m) = mask.parse::<std::net::Ipv4Addr>() {
            let bits = u32::from(m);
            let ones = bits.leading_ones();
            if bits.checked_shl(ones).unwrap_or(0) != 0 {
                return Err(format!("netmask {mask} is not contiguous"));
            }
            return Ok(ones as u8);
        }
    }
    Err(format!("{mask:?} is neither a prefix length nor a netmask"))
}

/// One host device lent to the context through a macvlan, carrying one or more addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The host's device the macvlan sits on (`eth0`); inside the context the interface has the same name.
    pub host_dev: String,
    /// Addresses configured on it, the first being primary.
    pub addresses: Vec<Address>,
    /// Broadcast address for the IPv4 addresses (IPROOTBCAST), if set.
    pub broadcast: Option<std::net::Ipv4Addr>,
}

/// How the context reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Shares the host's network namespace: only with an empty IPROOT and S_UNSAFE `hostnet`.
    Host,
    /// Its own network namespace holding only these interfaces and the loopback (only the loopback when
    /// IPROOT is empty).
    Private(Vec<Interface>),
}

impl Network {
    /// Every address the context carries.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        let ifaces: &[Interface] = match self {
            Network::Host => &[],
            Network::Private(v) => v,
        };
        ifaces.iter().flat_map(|i| i.addresses.iter())
    }
}

/// A resource limit as `setrlimit` knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// `-c`: core file size (512-byte blocks in ulimit).
    Core,
    /// `-d`: data segment (KiB).
    Data,
    /// `-e`: scheduling priority ceiling.
    Nice,
    /// `-f`: file size (512-byte blocks).
    FileSize,
    /// `-i`: pending signals.
    SigPending,
    /// `-l`: locked memory (KiB).
    MemLock,
    /// `-m`: resident set (KiB).
    Rss,
    /// `-n`: open files.
    NoFile,
    /// `-q`: POSIX message queue bytes.
    MsgQueue,
    /// `-r`: real-time priority.
    RtPrio,
    /// `-s`: stack (KiB).
    Stack,
    /// `-t`: CPU seconds.
    Cpu,
    /// `-u`: processes.
    NProc,
    /// `-v`: address space (KiB).
    As,
    /// `-x`: file locks.
    Locks,
}

impl Resource {
    fn from_flag(c: char) -> Option<(Self, u64)> {
        // The multiplier turns the shell's unit into what setrlimit takes.
        Some(match c {
            'c' => (Self::Core, 512),
            'd' => (Self::Data, 1024),
            'e' => (Self::Nice, 1),
            'f' => (Self::FileSize, 512),
            'i' => (Self::SigPending, 1),
            'l' => (Self::MemLock, 1024),
            'm' => (Self::Rss, 1024),
            'n' => (Self::NoFile, 1),
            'q' => (Self::MsgQueue, 1),
            'r' => (Self::RtPrio, 1),
            's' => (Self::Stack, 1024),
            't' => (Self::Cpu, 1),
            'u' => (Self::NProc, 1),
            'v' => (Self::As, 1024),
            'x' => (Self::Locks, 1),
            _ => return None,
        })
    }
}

/// One limit: `None` in a bound means "unlimited"; a bound not set by the ulimit arguments is left as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// Soft limit to set, if any.
    pub soft: Option<Option<u64>>,
    /// Hard limit to set, if any.
    pub hard: Option<Option<u64>>,
}

/// Parses the arguments of the shell's `ulimit` (e.g. `-H -u 1000`, `-n 4096 -c unlimited`, `-Su 200`).
/// Without `-H` or `-S`, a value sets both limits, as the shell does.
pub fn parse_ulimit(text: &str) -> Result<Vec<Rlimit>, SpecError> {
    let bad = |reason: String| SpecError::Ulimit { value: text.to_string(), reason };
    let mut out = Vec::new();
    let (mut hard, mut soft) = (false, false);
    let mut pending: Vec<(Resource, u64)> = Vec::new();
    let mut words = text.split_whitespace().peekable();
    while let Some(w) = words.next() {
        let Some(flags) = w.strip_prefix('-') else {
            return Err(bad(format!("{w:?} is not an option (expected e.g. -u 1000)")));
        };
        if flags.is_empty() {
            return Err(bad("a lone '-'".into()));
        }
        for c in flags.chars() {
            match c {
                'H' => hard = true,
                'S' => soft = true,
                'a' => return Err(bad("-a only prints limits".into())),
                c => match Resource::from_flag(c) {
                    Some(r) => pending.push(r),
                    None => return Err(bad(format!("unknown option -{c}"))),
                },
            }
        }
        if pending.is_empty() {
            continue;
        }
        let Some(value) = words.next() else {
            return Err(bad(format!("option {w} needs a value")));
        };
        if pending.len() > 1 {
            return Err(bad(format!("{w} names more than one limit for one value")));
        }
        let (resource, unit) = pending.pop().expect("one pending limit");
        let v = match value {
            "unlimited" => None,
            n => Some(
                n.parse::<u64>()
                    .map_err(|_| bad(format!("{n:?} is not a number or 'unlimited'")))?
                    .saturating_mul(unit),
            ),
        };
        let (set_hard, set_soft) = if hard || soft { (hard, soft) } else { (true, true) };
        out.push(Rlimit { resource, soft: set_soft.then_some(v), hard: set_hard.then_some(v) });
    }
    if !pending.is_empty() {
        return Err(bad("an option has no value".into()));
    }
    Ok(out)
}

/// The S_FLAGS that change how a context is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// `lock`: processes inside may not create or join namespaces (no new contexts from inside).
    pub lock: bool,
    /// `sched`: the context is one group for the CPU scheduler.
    pub sched: bool,
    /// `private`: nobody may enter the context or exec into it once it runs.
    pub private: bool,
    /// `fakeinit`: the vserver's `/sbin/init` runs as process 1.
    pub fakeinit: bool,
}

/// Process limit of a vserver whose conf sets none: a fork bomb inside stops here.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Resource limits of the whole context beyond its process limit. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most memory its processes may use, in bytes (LIMIT_MEMORY): `memory.max` on v2,
    /// `memory.limit_in_bytes` on v1.
    pub memory: Option<u64>,
    /// Its share of the CPU against other vservers (CPU_WEIGHT, 1 to 10000, 100 being the kernel's default).
    pub cpu_weight: Option<u32>,
    /// Its share of block I/O against other vservers (IO_WEIGHT, 1 to 10000, default 100).
    pub io_weight: Option<u32>,
    /// Most bytes its tree may hold on disk (LIMIT_DISK), enforced by a project quota.
    pub disk: Option<u64>,
}

/// Protections of a default vserver that an operator turned off for one vserver, by name in S_UNSAFE.
/// Every one is on unless named; each start warns about those that are off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Relaxed {
    /// `seccomp`: no default system call filter (S_FLAGS lock still installs its own).
    pub seccomp: bool,
    /// `userns`: processes inside may create user namespaces (the default filter refuses them).
    pub userns: bool,
    /// `devices`: no device allow-list, and the tree is not mounted `nodev`.
    pub devices: bool,
    /// `procfs`: `/proc` is not masked (`/proc/sys` writable, `/proc/kcore` and the like readable).
    pub procfs: bool,
    /// `hostnet`: a vserver with an empty IPROOT shares the host's network namespace, as the guide's
    /// vservers did, instead of getting a private one with only a loopback.
    pub hostnet: bool,
}

impl Relaxed {
    /// The words of S_UNSAFE, each with what it turns off.
    pub const WORDS: &'static [(&'static str, &'static str)] = &[
        ("seccomp", "the default system call filter"),
        ("userns", "the ban on user namespaces"),
        ("devices", "the device allow-list and nodev"),
        ("procfs", "the masks on /proc"),
        ("hostnet", "the private network namespace of a vserver without IPROOT"),
    ];

    /// Turns off the protection named `word`; `false` when no protection has that name.
    pub fn set(&mut self, word: &str) -> bool {
        let flag = match word {
            "seccomp" => &mut self.seccomp,
            "userns" => &mut self.userns,
            "devices" => &mut self.devices,
            "procfs" => &mut self.procfs,
            "hostnet" => &mut self.hostnet,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// The names of the protections turned off, in the order of [`Relaxed::WORDS`].
    pub fn words(&self) -> Vec<&'static str> {
        let on = [self.seccomp, self.userns, self.devices, self.procfs, self.hostnet];
        Self::WORDS.iter().zip(on).filter(|(_, on)| *on).map(|((w, _), _)| *w).collect()
    }
}

/// Where the context's cgroups live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlace {
    /// Mount point of the cgroup file systems, normally `/sys/fs/cgroup`.
    pub root: PathBuf,
    /// Parent group under every hierarchy (e.g. `vservers`), so one host's vservers sit together.
    pub parent: String,
}

impl Default for CgroupPlace {
    fn default() -> Self {
        Self { root: PathBuf::from("/sys/fs/cgroup"), parent: "vservers".into() }
    }
}

/// A block device whose file system is the vserver's tree (an iSCSI or FC LUN, an RBD image holding ext4),
/// mounted at start on the tree's directory inside the vserver's own mount namespace only: the host's mount
/// namespace never sees it, and the kernel unmounts it when the last process of the vserver ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RootDevice {
    /// The block device (`/dev/sdb`, `/dev/disk/by-id/...`, `/dev/rbd0`); a symbolic link to one is followed.
    pub path: PathBuf,
    /// Its file system type as mount(2) takes it (`ext4`); one the kernel lists in `/proc/filesystems`.
    pub fstype: String,
}

impl fmt::Display for RootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.fstype)
    }
}

/// Everything `isolate` needs to build a running context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSpec {
    /// The vserver's name.
    pub name: VserverName,
    /// Its root directory (`/vservers/NAME`); with [`ContextSpec::root_device`], the empty directory the
    /// device is mounted on (inside the vserver's mount namespace only).
    pub root: PathBuf,
    /// The block device holding its tree, mounted on `root` at start; `None` when the tree is the directory
    /// `root` itself.
    #[serde(default)]
    pub root_device: Option<RootDevice>,
    /// Host name inside (S_HOSTNAME); `None` uses the vserver's name.
    pub hostname: Option<String>,
    /// NIS domain name inside (S_DOMAINNAME); `Some("")` resets it (`none`); `None` keeps the host's.
    pub domainname: Option<String>,
    /// Network: the host's, or a private namespace with IPROOT.
    pub network: Network,
    /// Capabilities kept beyond [`DEFAULT_CAPABILITIES`] (S_CAPS).
    pub extra_caps: BTreeSet<Capability>,
    /// Nice floor (S_NICE): processes start at it and cannot go below it.
    pub nice: Option<i32>,
    /// Resource limits (ULIMIT).
    pub rlimits: Vec<Rlimit>,
    /// Process limit for the whole context, enforced by its cgroup (LIMIT_PIDS, or ULIMIT -u with S_FLAGS
    /// nproc, or [`DEFAULT_PIDS_LIMIT`]); `None` only when the conf asks for no limit.
    pub nproc: Option<u64>,
    /// The other resource limits (LIMIT_MEMORY, CPU_WEIGHT, IO_WEIGHT, LIMIT_DISK).
    #[serde(default)]
    pub limits: Limits,
    /// Protections its conf turned off (S_UNSAFE); none by default.
    #[serde(default)]
    pub relaxed: Relaxed,
    /// S_FLAGS.
    pub flags: Flags,
    /// Fixed context number (S_CONTEXT), shown by `vserver-stat`.
    pub context_id: Option<u32>,
    /// Where its cgroups go.
    pub cgroup: CgroupPlace,
}

impl ContextSpec {
    /// The full capability ceiling of the context: the default set plus S_CAPS.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        DEFAULT_CAPABILITIES.iter().copied().map(Capability).chain(self.extra_caps.iter().copied()).collect()
    }

    /// A spec for unit tests: vserver `v1` in `/vservers/v1`, a loopback-only network, nothing else set.
    #[cfg(test)]
    pub(crate) fn sample() -> Self {
        Self {
            name: VserverName::parse("v1").expect("a valid name"),
            root: "/vservers/v1".into(),
            root_device: None,
            hostname: None,
            domainname: None,
            network: Network::Private(vec![]),
            extra_caps: Default::default(),
            nice: None,
            rlimits: vec![],
            nproc: None,
            limits: Default::default(),
            relaxed: Default::default(),
            flags: Default::default(),
            context_id: None,
            cgroup: Default::default(),
        }
    }

    /// The capabilities of S_CAPS that are known ways out of a vserver ([`ESCAPE_CAPABILITIES`]).
    pub fn escape_capabilities(&self) -> Vec<Capability> {
        self.extra_caps.iter().copied().filter(|c| ESCAPE_CAPABILITIES.contains(&c.raw())).collect()
    }

    /// What a start should say about this spec's weakened protections: one sentence per escape capability
    /// in S_CAPS, per S_UNSAFE word. Empty for a default vserver.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .escape_capabilities()
            .into_iter()
            .map(|c| format!("S_CAPS gives {c}, a known way out of a vserver: root inside may reach the host"))
            .collect();
        for word in self.relaxed.words() {
            let what = Relaxed::WORDS.iter().find(|(w, _)| *w == word).map_or("", |(_, what)| what);
            out.push(format!("S_UNSAFE {word}: {what} is off for this vserver"));
        }
        if self.relaxed.hostnet && matches!(self.network, Network::Host) {
            out.push(
                "it shares the host's network namespace: the host's loopback services and abstract unix sockets \
                 are reachable from inside"
                    .to_string(),
            );
        }
        out
    }
}

/// Checks a host or domain name against what `sethostname`/`setdomainname` take.
pub fn check_uts_name(what: &'static str, value: &str) -> Result<(), SpecError> {
    let bad = |reason| SpecError::UtsName { what, value: value.to_string(), reason };
    if value.len() > 64 {
        return Err(bad("longer than 64 bytes"));
    }
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("contains a space or a control character"));
    }
    Ok(())
}

/// Checks an S_NICE value.
pub fn check_nice(n: i32) -> Result<i32, SpecError> {
    if (-20..=19).contains(&n) {
        Ok(n)
    } else {
        Err(SpecError::Nice(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in ["", "..", "a/b", "../x", ".hidden", "-x", "a b", &"x".repeat(65), "a..b"] {
            assert!(VserverName::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["v1", "web-01", "db.prod", "a_b", &"x".repeat(64)] {
            assert_eq!(VserverName::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn addresses_take_prefix_or_netmask() {
        let a = parse_address("192.168.3.1/255.255.255.192").unwrap();
        assert_eq!(a.prefix, Some(26));
        assert_eq!(parse_address("10.0.0.1/24").unwrap().prefix, Some(24));
        assert_eq!(parse_address("10.0.0.1").unwrap().prefix, None);
        assert!(parse_address("10.0.0.1/255.0.255.0").is_err());
        assert!(parse_address("10.0.0.1/33").is_err());
        assert!(parse_address("300.0.0.1").is_err());
        assert_eq!(parse_address("fd00::1/64").unwrap().prefix, Some(64));
    }

    #[test]
    fn ulimit_follows_the_shell() {
        let l = parse_ulimit("-H -u 1000").unwrap();
        assert_eq!(l, vec![Rlimit { resource: Resource::NProc, soft: None, hard: Some(Some(1000)) }]);
        let l = parse_ulimit("-n 4096 -c unlimited").unwrap();
        assert_eq!(l[0].soft, Some(Some(4096)));
        assert_eq!(l[0].hard, Some(Some(4096)));
        assert_eq!(l[1].hard, Some(None));
        let l = parse_ulimit("-Sf 10").unwrap();
        assert_eq!(l[0], Rlimit { resource: Resource::FileSize, soft: Some(Some(5120)), hard: None });
        assert!(parse_ulimit("-u").is_err());
        assert!(parse_ulimit("-z 3").is_err());
        assert!(parse_ulimit("-u lots").is_err());
        assert!(parse_ulimit("1000").is_err());
    }

    #[test]
    fn capabilities_parse_with_or_without_prefix() {
        assert_eq!(parse_capability("CAP_NET_RAW").unwrap().raw(), caps::Capability::CAP_NET_RAW);
        assert_eq!(parse_capability("net_raw").unwrap().raw(), caps::Capability::CAP_NET_RAW);
        assert!(parse_capability("CAP_CHOWN").unwrap() < parse_capability("CAP_NET_RAW").unwrap());
        assert!(parse_capability("CAP_FLY").is_err());
    }
}
