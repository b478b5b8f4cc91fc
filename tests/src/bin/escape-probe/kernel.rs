//! Calls into the kernel that act on the whole machine (modules, kexec, time, swap, accounting, the kernel
//! log, I/O ports, keyrings) or widen its attack surface (eBPF, perf, userfaultfd, io_uring). Each is made
//! with arguments that fail harmlessly once the permission check is passed.

use crate::sys::{self, Errno};
use crate::{attempt, denied, escaped, permission_probe, reached, refused, Attempt, Outcome, Verdict, ABSENT};

/// A module name that no kernel has.
const NO_SUCH_MODULE: &str = "escape_probe_no_such_module";
/// A path that does not exist, for swapon, swapoff and acct.
const NO_SUCH_FILE: &str = "/escape-probe-no-such-file";

/// KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING.
const USER_KEYRING: i64 = -4;
const SESSION_KEYRING: i64 = -3;
/// keyctl operations used.
const KEYCTL_GET_KEYRING_ID: i32 = 0;
const KEYCTL_UNLINK: i32 = 9;
const KEYCTL_INVALIDATE: i32 = 21;

/// The kernel attempts.
pub fn attempts() -> Vec<Attempt> {
    vec![
        attempt("keyring", "keyctl KEYCTL_GET_KEYRING_ID of the user keyring", |_| user_keyring()),
        attempt("keyring", "add_key to the session keyring (unlinked after)", |_| add_key()),
        attempt("keyring", "request_key (no call-out)", |_| request_key()),
        attempt("kernel", "init_module (empty image)", |_| {
            module_call(sys::init_module_empty(), "a real module would load into the host's kernel")
        }),
        attempt("kernel", "finit_module (descriptor -1)", |_| {
            module_call(sys::finit_module_bad_fd(), "a real module would load into the host's kernel")
        }),
        attempt("kernel", "delete_module (no such module)", |_| {
            module_call(sys::delete_module(NO_SUCH_MODULE), "the host's modules could be removed")
        }),
        attempt("kernel", "kexec_load (unknown flag, too many segments)", |_| {
            permission_probe(sys::kexec_load_invalid(), Outcome::Escaped, "a new kernel could replace the host's")
        }),
        attempt("kernel", "kexec_file_load (unknown flag, descriptors -1)", |_| {
            permission_probe(sys::kexec_file_load_invalid(), Outcome::Escaped, "a new kernel could replace the host's")
        }),
        attempt("kernel", "reboot (wrong magic number)", |_| {
            permission_probe(
                sys::reboot_bad_magic(),
                Outcome::Reached,
                "reboot is allowed; in a PID namespace it only ends that namespace (the vserver)",
            )
        }),
        attempt("kernel", "bpf BPF_PROG_LOAD (a two-instruction socket filter)", |_| {
            opened(sys::bpf_load_trivial(), "an eBPF program loaded into the kernel")
        }),
        attempt("kernel", "perf_event_open of itself (user space only)", |_| {
            opened(sys::perf_cpu_clock(false), "a perf event opened")
        }),
        attempt("kernel", "perf_event_open of every process on CPU 0", |_| match sys::perf_cpu_clock(true) {
            Ok(_) => escaped("a system-wide perf event opened: the host's processes can be measured"),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
        attempt("kernel", "userfaultfd (user-mode faults only)", |_| opened(sys::userfaultfd(), "a userfaultfd made")),
        attempt("kernel", "io_uring_setup (one entry)", |_| opened(sys::io_uring_setup(), "an io_uring ring made")),
        attempt("time", "clock_settime to -1 s (refused by the kernel's value check)", |_| {
            match sys::clock_settime_invalid() {
                Err(e) if refused(e) => denied(e.name()),
                Err(Errno(libc::EINVAL)) => {
                    reached("EINVAL: no filter stopped it; the value is checked before the permission")
                }
                Err(e) => reached(e.name()),
                Ok(_) => escaped("the host's clock was set"),
            }
        }),
        attempt("time", "settimeofday of a time zone out of range", |_| {
            permission_probe(sys::settimeofday_bad_zone(), Outcome::Escaped, "the host's clock could be set")
        }),
        attempt("time", "clock_adjtime of a tick out of range", |_| {
            permission_probe(sys::clock_adjtime_bad_tick(), Outcome::Escaped, "the host's clock could be adjusted")
        }),
        attempt("admin", "swapon (no such file)", |_| {
            permission_probe(sys::swapon(NO_SUCH_FILE), Outcome::Escaped, "the host's swap could be changed")
        }),
        attempt("admin", "swapoff (no such file)", |_| {
            permission_probe(sys::swapoff(NO_SUCH_FILE), Outcome::Escaped, "the host's swap could be turned off")
        }),
        attempt("admin", "acct (no such file)", |_| {
            permission_probe(sys::acct(NO_SUCH_FILE), Outcome::Escaped, "process accounting could be redirected")
        }),
        attempt("admin", "syslog SYSLOG_ACTION_SIZE_BUFFER", |_| match sys::syslog_size() {
            Ok(n) => escaped(format!("the host's kernel log is readable ({n} bytes of buffer)")),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
        attempt("admin", "iopl(3)", |_| match sys::iopl3() {
            Ok(_) => escaped("every I/O port of the machine opened to this process (none touched)"),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
        attempt("admin", "ioperm of port 0x80", |_| match sys::ioperm_0x80() {
            Ok(_) => escaped("an I/O port of the machine opened to this process (not touched)"),
            Err(e) if refused(e) => denied(e.name()),
            Err(e) => reached(e.name()),
        }),
    ]
}

/// A module call: ENOSYS from a kernel built without modules (no /proc/modules) is no protection.
fn module_call(r: sys::SysResult, meaning: &str) -> Verdict {
    match r {
        Err(Errno(libc::ENOSYS)) if !std::path::Path::new("/proc/modules").exists() => {
            denied(format!("{ABSENT}: no loadable modules (ENOSYS)"))
        }
        r => permission_probe(r, Outcome::Escaped, meaning),
    }
}

/// A call that makes a descriptor: refused is denied, made is reached (closed at once).
fn opened(r: Result<std::os::fd::OwnedFd, Errno>, what: &str) -> Verdict {
    match r {
        Ok(_fd) => reached(what),
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(format!("{e}: not refused by a protection")),
    }
}

fn user_keyring() -> Verdict {
    match sys::keyctl(KEYCTL_GET_KEYRING_ID, USER_KEYRING, 0, 0, 0) {
        Ok(id) => {
            let what = sys::keyctl_describe(id).unwrap_or_default();
            escaped(format!("uid 0's user keyring, shared with the host's root: id {id} ({what})"))
        }
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
    }
}

fn add_key() -> Verdict {
    let keyring = sys::keyctl(KEYCTL_GET_KEYRING_ID, SESSION_KEYRING, 0, 0, 0)
        .map(|id| format!("{id} ({})", sys::keyctl_describe(id).unwrap_or_default()))
        .unwrap_or_else(|e| e.name());
    match sys::add_user_key(&format!("escape-probe-{}", std::process::id()), b"x", SESSION_KEYRING) {
        Ok(key) => {
            let _ = sys::keyctl(KEYCTL_UNLINK, key, SESSION_KEYRING, 0, 0);
            let _ = sys::keyctl(KEYCTL_INVALIDATE, key, 0, 0, 0);
            escaped(format!("a key added (and removed) in the session keyring {keyring}, a keyring of uid 0"))
        }
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
    }
}

fn request_key() -> Verdict {
    match sys::request_user_key(&format!("escape-probe-missing-{}", std::process::id())) {
        Ok(id) => reached(format!("found key {id}")),
        Err(Errno(libc::ENOKEY)) => reached("ENOKEY: the keyrings were searched"),
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => reached(e.name()),
    }
}
