//! `escape-probe`: run inside a vserver as root, it tries every known way out of a container and prints one
//! JSON object per attempt: `{"class", "attempt", "outcome", "detail"}`, where `outcome` is
//!
//! - `denied`: a protection refused it (an error such as EPERM, EACCES, EROFS, ENOSYS, a masked file, a
//!   limit), or it led nowhere (the `..` climb stayed inside);
//! - `reached`: nothing stopped the call, but by itself it touches only the vserver or the kernel's attack
//!   surface (a user namespace, an eBPF program, a mount in its own namespace), or it was stopped only by
//!   the deliberately invalid argument of a call whose value check comes before its permission check;
//! - `escaped`: it read or could change something of the host: a host directory listed, a host disk read, a
//!   kernel tunable open for writing, or a privileged call that got past its permission check and failed
//!   only on the probe's deliberately invalid argument.
//!
//! It never harms the host, whatever protection is off: it writes only values already there (the core
//! pattern, written back as read), opens devices read-only and reads at most a sector, never writes a
//! device or `/proc/sysrq-trigger` (opening it for writing is the proof), passes invalid arguments to the
//! dangerous calls so that they fail harmlessly once allowed (kexec with an unknown flag and too many
//! segments, `acct` of a missing file, `reboot` with a wrong magic number...), runs every attempt in a
//! forked child (namespaces, roots and privileges it changes die with it), and removes what it creates.
//!
//! Arguments (all optional): `--abstract NAME` and `--tcp PORT` (an abstract unix socket and a TCP port
//! the host listens on at 127.0.0.1), `--msg-key KEY` (a host System V message queue), `--fork-cap N`
//! (processes the fork bomb stops at, default 5000), `--only TEXT` (attempts whose class or name holds
//! TEXT).

mod files;
mod kernel;
mod mounts;
mod network;
mod processes;
mod procfs;
mod sys;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use serde_json::json;

use crate::sys::{Ended, Errno, Forked};

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A protection refused it, or it led nowhere.
    Denied,
    /// Nothing stopped it, but it touches only the vserver or the kernel's attack surface.
    Reached,
    /// It read or could change something of the host.
    Escaped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Denied => "denied",
            Outcome::Reached => "reached",
            Outcome::Escaped => "escaped",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Denied, Outcome::Reached, Outcome::Escaped].into_iter().find(|o| o.as_str() == s)
    }
}

/// An attempt's outcome and what it saw (an errno, what was read).
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// What the call answered or what was read.
    pub detail: String,
}

/// A refusal, or a way that led nowhere.
pub fn denied(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::Denied, detail: detail.into() }
}

/// A call that got through without reaching the host.
pub fn reached(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::Reached, detail: detail.into() }
}

/// A way out.
pub fn escaped(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::Escaped, detail: detail.into() }
}

/// How a detail starts when the kernel lacks what an attempt needs (nothing to escape through, but no
/// protection either): the matrix shows such rows apart.
pub const ABSENT: &str = "absent from this kernel";

/// Errors by which a protection refuses a call: missing capability or permission, a read-only mount, a
/// filter answering ENOSYS.
pub fn refused(e: Errno) -> bool {
    matches!(e.0, libc::EPERM | libc::EACCES | libc::EROFS | libc::ENOSYS)
}

/// The verdict for a call whose permission check comes before its argument checks and that was given an
/// invalid argument: a refusal is `denied`; any other error means the permission was granted and only the
/// probe's bad argument stopped it, so a real call would have worked: `granted` (escaped or reached).
pub fn permission_probe(r: sys::SysResult, granted: Outcome, meaning: &str) -> Verdict {
    match r {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => Verdict { outcome: granted, detail: format!("{e} after the permission check: {meaning}") },
        Ok(v) => Verdict { outcome: granted, detail: format!("returned {v}: {meaning}") },
    }
}

/// What the probe was told and what it noted before the attempts.
pub struct Ctx {
    /// An abstract unix socket name the host listens on.
    pub abstract_name: Option<String>,
    /// A TCP port the host listens on at 127.0.0.1.
    pub tcp_port: Option<u16>,
    /// A host System V message queue key.
    pub msg_key: Option<i32>,
    /// How many processes the fork bomb makes at most.
    pub fork_cap: usize,
    /// (device, inode) of the vserver's root, as the probe sees `/` before any attempt.
    pub root: (u64, u64),
    /// The probe's own directory, in the vserver's `/tmp`, removed at the end.
    pub scratch: String,
    /// The probe's own pid (attempts run in children; process rows leave it alone).
    pub probe_pid: i32,
}

/// One attempt: its class, its name, and the function that makes it (in a forked child).
pub struct Attempt {
    /// Class of escape (`procfs`, `devices`...).
    pub class: &'static str,
    /// What is tried; stable across hosts and runs (details go in the verdict).
    pub name: &'static str,
    /// Makes the attempt.
    pub run: fn(&Ctx) -> Verdict,
}

/// Shorthand for the attempt tables of the modules.
pub const fn attempt(class: &'static str, name: &'static str, run: fn(&Ctx) -> Verdict) -> Attempt {
    Attempt { class, name, run }
}

fn main() {
    let mut ctx = Ctx {
        abstract_name: None,
        tcp_port: None,
        msg_key: None,
        fork_cap: 5000,
        root: (0, 0),
        scratch: format!("/tmp/escape-probe-{}", std::process::id()),
        probe_pid: std::process::id() as i32,
    };
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--abstract" => ctx.abstract_name = Some(value()),
            "--tcp" => ctx.tcp_port = Some(value().parse().unwrap_or_else(|_| usage("--tcp takes a port"))),
            "--msg-key" => ctx.msg_key = Some(value().parse().unwrap_or_else(|_| usage("--msg-key takes a number"))),
            "--fork-cap" => ctx.fork_cap = value().parse().unwrap_or_else(|_| usage("--fork-cap takes a number")),
            "--only" => only = Some(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // A call that hangs must not hang the test that runs the probe.
    sys::alarm(120);
    let meta = std::fs::metadata("/").unwrap_or_else(|e| fail(&format!("stat /: {e}")));
    ctx.root = (meta.dev(), meta.ino());
    if let Err(e) = std::fs::create_dir_all(&ctx.scratch) {
        fail(&format!("mkdir {}: {e}", ctx.scratch));
    }

    let mut all: Vec<Attempt> = Vec::new();
    all.extend(files::attempts());
    all.extend(procfs::attempts());
    all.extend(files::device_attempts());
    all.extend(kernel::attempts());
    all.extend(namespaces_and_mounts());
    all.extend(processes::attempts());
    all.extend(network::attempts(&ctx));
    all.extend(processes::limit_attempts());

    let stdout = std::io::stdout();
    for a in all {
        if only.as_deref().is_some_and(|o| !a.class.contains(o) && !a.name.contains(o)) {
            continue;
        }
        let v = in_child(&ctx, a.run);
        let line = json!({"class": a.class, "attempt": a.name, "outcome": v.outcome.as_str(), "detail": v.detail});
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    files::cleanup(&ctx);
}

fn namespaces_and_mounts() -> Vec<Attempt> {
    let mut v = mounts::namespace_attempts();
    v.extend(mounts::attempts());
    v
}

fn usage(msg: &str) -> ! {
    eprintln!("escape-probe: {msg}");
    eprintln!("usage: escape-probe [--abstract NAME] [--tcp PORT] [--msg-key KEY] [--fork-cap N] [--only TEXT]");
    std::process::exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("escape-probe: {msg}");
    std::process::exit(1)
}

/// Runs `run` in a forked child, which reports its verdict on a pipe: whatever it changes (namespaces,
/// root, credentials, I/O privileges, tracees) ends with it. A child killed by a signal is reported too: by
/// SIGSYS, a system-call filter refused the call (denied).
fn in_child(ctx: &Ctx, run: fn(&Ctx) -> Verdict) -> Verdict {
    let (r, w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return reached(format!("probe could not make a pipe: {e}")),
    };
    match sys::fork() {
        Err(e) => reached(format!("probe could not fork: {e}")),
        Ok(Forked::Child) => {
            drop(r);
            let v = run(ctx);
            let mut f = std::fs::File::from(w);
            let _ = f.write_all(format!("{}\t{}", v.outcome.as_str(), v.detail.replace(['\t', '\n'], " ")).as_bytes());
            drop(f);
            sys::exit_now(0)
        }
        Ok(Forked::Parent(pid)) => {
            drop(w);
            let mut text = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut text);
            let ended = sys::wait(pid).map(|(_, e)| e);
            if let Some((o, d)) = text.split_once('\t') {
                if let Some(outcome) = Outcome::parse(o) {
                    return Verdict { outcome, detail: d.to_string() };
                }
            }
            match ended {
                Some(Ended::Signalled(libc::SIGSYS)) => denied("killed by SIGSYS (a system-call filter)"),
                Some(Ended::Signalled(s)) => reached(format!("the attempt was killed by signal {s}")),
                Some(Ended::Exited(c)) => reached(format!("the attempt exited {c} without a verdict")),
                None => reached("the attempt vanished without a verdict"),
            }
        }
    }
}

/// The first `n` bytes of `bytes` as text, for details.
pub fn excerpt(bytes: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(n)]).replace(['\n', '\t'], " ");
    s.trim().to_string()
}
