//! Processes: the host program behind process 1 (`/proc/N/exe`, runc's CVE-2019-5736), tracing and reading
//! other processes, and a fork bomb bounded by the probe itself.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys::{self, Errno, Forked};
use crate::{attempt, denied, escaped, reached, refused, Attempt, Ctx, Verdict};

/// The process attempts.
pub fn attempts() -> Vec<Attempt> {
    vec![
        attempt("exe", "open /proc/N/exe for writing, every visible N (nothing written)", exe_write),
        attempt("exe", "read /proc/1/exe", |_| exe_read()),
        attempt("ptrace", "PTRACE_SEIZE of process 1", |_| match sys::ptrace_seize(1) {
            // This child exits right away, which detaches it; the seized process was never stopped.
            Ok(_) => escaped("process 1, the host's vinit, can be traced: its memory and descriptors are open"),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
        attempt("ptrace", "PTRACE_SEIZE of the vserver's other processes", ptrace_others),
        attempt("ptrace", "process_vm_readv of process 1", |_| vm_read_init()),
        attempt("ptrace", "kcmp of a descriptor of process 1", |_| {
            match sys::kcmp_file0(std::process::id() as i32, 1) {
                Ok(_) | Err(Errno(libc::EBADF)) => reached("process 1's descriptors can be compared"),
                Err(e) if refused(e) || e.0 == libc::ESRCH => denied(e.name()),
                Err(e) => reached(e.name()),
            }
        }),
    ]
}

/// The fork bomb, made last.
pub fn limit_attempts() -> Vec<Attempt> {
    vec![attempt("limits", "fork bomb (bounded by the probe)", fork_bomb)]
}

/// Pids visible in /proc other than this child's and the probe's own.
fn others(ctx: &Ctx) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.retain(|&p| p != me && p != ctx.probe_pid && p != sys::getppid());
    pids.sort_unstable();
    pids
}

fn exe_write(ctx: &Ctx) -> Verdict {
    let mut opened = Vec::new();
    let mut busy = Vec::new();
    let mut refusals = Vec::new();
    let mut inside = 0;
    for pid in others(ctx) {
        let link = format!("/proc/{pid}/exe");
        match std::fs::read_link(&link) {
            Err(e) => {
                refusals.push(format!("{pid}: {e}"));
                continue;
            }
            // A program of the vserver's own tree: root inside may write its own files anyway.
            Ok(target) if same_file(Path::new(&link), &target) => {
                inside += 1;
                continue;
            }
            Ok(_) => {}
        }
        // O_WRONLY without O_TRUNC: opening changes nothing, and nothing is ever written.
        match sys::open(&link, libc::O_WRONLY) {
            Ok(_) => opened.push(pid.to_string()),
            Err(Errno(libc::ETXTBSY)) => busy.push(pid.to_string()),
            Err(e) => refusals.push(format!("{pid}: {e}")),
        }
    }
    let inside = format!("{inside} processes run programs of the tree");
    if !opened.is_empty() {
        escaped(format!("host programs of processes {} opened for writing; {inside}", opened.join(" ")))
    } else if !busy.is_empty() {
        reached(format!(
            "host programs of processes {} only refused as running (ETXTBSY); {}; {inside}",
            busy.join(" "),
            refusals.join(", ")
        ))
    } else {
        denied(format!("{}; {inside}", refusals.join(", ")))
    }
}

/// Whether two paths name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

fn exe_read() -> Verdict {
    let target = match std::fs::read_link("/proc/1/exe") {
        Ok(t) => t,
        Err(e) => return denied(format!("readlink: {e}")),
    };
    let fd = match sys::open("/proc/1/exe", libc::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) if refused(e) => return denied(e.name()),
        Err(e) => return reached(e.name()),
    };
    let mut magic = [0u8; 4];
    let n = sys::read(&fd, &mut magic).unwrap_or(0);
    if same_file(Path::new("/proc/1/exe"), &target) {
        reached(format!("process 1 runs {}, a program of the vserver's own tree", target.display()))
    } else {
        escaped(format!("read {n} bytes of {}, the host program of process 1 (outside the tree)", target.display()))
    }
}

fn ptrace_others(ctx: &Ctx) -> Verdict {
    let pids: Vec<i32> = others(ctx).into_iter().filter(|&p| p != 1).collect();
    if pids.is_empty() {
        return denied("no other process visible to try");
    }
    let mut seized = Vec::new();
    let mut refusals = Vec::new();
    for pid in pids {
        match sys::ptrace_seize(pid) {
            Ok(_) => seized.push(pid.to_string()),
            Err(e) => refusals.push(format!("{pid}: {e}")),
        }
    }
    // This child exits now, which detaches it from every process it seized (none was stopped).
    if seized.is_empty() {
        denied(refusals.join(", "))
    } else {
        reached(format!("the vserver's own processes {} can be traced", seized.join(" ")))
    }
}

fn vm_read_init() -> Verdict {
    let maps = std::fs::read_to_string("/proc/1/maps").unwrap_or_default();
    let addr = maps
        .lines()
        .find(|l| l.split_whitespace().nth(1).is_some_and(|p| p.starts_with('r')))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .unwrap_or(0x40_0000);
    match sys::process_vm_read(1, addr, 8) {
        Ok(bytes) => escaped(format!("read {} bytes of process 1's memory at {addr:#x}", bytes.len())),
        Err(e) if refused(e) || e.0 == libc::ESRCH => denied(e.name()),
        Err(e) => escaped(format!("{e} at a guessed address, after the permission check: process 1's memory is open")),
    }
}

/// Forks children that wait on a pipe until `fork_cap` or a refusal, then closes the pipe (they all exit)
/// and reaps them.
fn fork_bomb(ctx: &Ctx) -> Verdict {
    let (r, w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return reached(format!("pipe: {e}")),
    };
    let mut made = 0usize;
    let mut stop = None;
    while made < ctx.fork_cap {
        match sys::fork() {
            Ok(Forked::Child) => {
                drop(w);
                let mut b = [0u8; 1];
                // Returns at end of file: when the bomb's leader closes (or loses) the write end.
                let _ = sys::read(&r, &mut b);
                sys::exit_now(0)
            }
            Ok(Forked::Parent(_)) => made += 1,
            Err(e) => {
                stop = Some(e);
                break;
            }
        }
    }
    drop(w);
    drop(r);
    while sys::wait(-1).is_some() {}
    match stop {
        Some(Errno(libc::EAGAIN)) => denied(format!("limited at {made} processes (EAGAIN)")),
        Some(e) => denied(format!("limited at {made} processes ({e})")),
        None => escaped(format!("not limited up to {made} processes (the probe's cap)")),
    }
}
