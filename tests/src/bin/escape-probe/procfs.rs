//! `/proc` and `/sys`: the host's kernel tunables, kernel memory and logs, as a vserver's root sees them.

use std::os::fd::OwnedFd;

use crate::sys::{self, Errno};
use crate::{attempt, denied, escaped, excerpt, reached, refused, Attempt, Verdict, ABSENT};

/// PROC_SUPER_MAGIC: a file of a real procfs (a mask shows another file system, /dev/null's or a tmpfs).
const PROC_MAGIC: i64 = 0x9fa0;

/// The procfs and sysfs attempts.
pub fn attempts() -> Vec<Attempt> {
    vec![
        attempt("procfs", "/proc/sys/kernel/core_pattern opened for writing (the same value written back)", |_| {
            proc_write("/proc/sys/kernel/core_pattern", true)
        }),
        attempt("procfs", "/proc/sys/kernel/modprobe opened for writing (nothing written)", |_| {
            proc_write("/proc/sys/kernel/modprobe", false)
        }),
        attempt("procfs", "/proc/sysrq-trigger opened for writing (nothing written)", |_| {
            proc_write("/proc/sysrq-trigger", false)
        }),
        attempt("procfs", "/proc/kcore read", |_| proc_read("/proc/kcore", "the kernel's memory (ELF header read)")),
        attempt("procfs", "/proc/keys read", |_| proc_read("/proc/keys", "keys of the whole machine listed")),
        attempt("procfs", "/proc/timer_list read", |_| proc_read("/proc/timer_list", "the host's timers listed")),
        attempt("procfs", "/proc/sched_debug read", |_| proc_read("/proc/sched_debug", "the host's scheduler state")),
        attempt("procfs", "/proc/kallsyms shows kernel addresses", |_| kallsyms()),
        attempt("procfs", "/proc/kmsg opened (nothing read)", |_| kmsg()),
        attempt("sysfs", "/sys present", |_| sys_present()),
    ]
}

fn is_real_proc(fd: &OwnedFd) -> bool {
    sys::fs_type(fd).map(|t| t == PROC_MAGIC).unwrap_or(false)
}

/// Opens a procfs file for writing; with `write_back`, writes back exactly what it holds (a no-op that
/// proves the write goes through). A mask (a read-only mount, /dev/null bound over it) is a denial.
fn proc_write(path: &str, write_back: bool) -> Verdict {
    let before = if write_back {
        let Ok(fd) = sys::open(path, libc::O_RDONLY) else { return proc_write(path, false) };
        let mut buf = vec![0u8; 4096];
        match sys::read(&fd, &mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    } else {
        None
    };
    let fd = match sys::open(path, libc::O_WRONLY) {
        Err(e) if refused(e) => return denied(e.name()),
        Err(Errno(libc::ENOENT)) => return denied(format!("{ABSENT} (ENOENT)")),
        Err(e) => return reached(e.name()),
        Ok(fd) => fd,
    };
    if !is_real_proc(&fd) {
        return denied("masked: opens another file, not the kernel's");
    }
    match before {
        Some(value) if !value.is_empty() => match sys::write(&fd, &value) {
            Ok(_) => escaped(format!("opened for writing; wrote back the same value {:?}", excerpt(&value, 64))),
            Err(e) => escaped(format!("opened for writing (writing back the same value: {e})")),
        },
        _ => escaped("opened for writing (nothing written)"),
    }
}

/// Reads the start of a procfs file: host data read is an escape; a mask or a refusal is a denial.
fn proc_read(path: &str, meaning: &str) -> Verdict {
    let fd = match sys::open(path, libc::O_RDONLY) {
        Err(e) if refused(e) => return denied(e.name()),
        Err(Errno(libc::ENOENT)) => return denied(format!("{ABSENT} (ENOENT)")),
        Err(e) => return reached(e.name()),
        Ok(fd) => fd,
    };
    if !is_real_proc(&fd) {
        return denied("masked: opens another file, not the kernel's");
    }
    let mut buf = vec![0u8; 512];
    match sys::read(&fd, &mut buf) {
        Err(e) if refused(e) => denied(format!("opened, read: {e}")),
        Err(e) => reached(format!("opened, read: {e}")),
        Ok(0) => reached("readable, but empty for this reader"),
        Ok(n) if path == "/proc/kcore" => escaped(format!("{meaning}: {n} bytes")),
        Ok(n) => escaped(format!("{meaning}: {}", excerpt(&buf[..n], 80))),
    }
}

fn kallsyms() -> Verdict {
    let fd = match sys::open("/proc/kallsyms", libc::O_RDONLY) {
        Err(e) if refused(e) => return denied(e.name()),
        Err(e) => return denied(format!("{e}: not readable")),
        Ok(fd) => fd,
    };
    if !is_real_proc(&fd) {
        return denied("masked: opens another file, not the kernel's");
    }
    let mut buf = vec![0u8; 4096];
    let n = sys::read(&fd, &mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    let shown = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|a| a.chars().any(|c| c != '0'))
        .map(str::to_string);
    match shown {
        Some(addr) => escaped(format!("kernel addresses shown (e.g. {addr}): KASLR defeated")),
        None => denied("addresses hidden (all zero)"),
    }
}

fn kmsg() -> Verdict {
    // Never read: reading would take the messages away from the host's own log reader.
    match sys::open("/proc/kmsg", libc::O_RDONLY | libc::O_NONBLOCK) {
        Err(e) if refused(e) => denied(e.name()),
        Err(e) => denied(format!("{ABSENT} ({e})")),
        Ok(fd) if !is_real_proc(&fd) => denied("masked: opens another file, not the kernel's"),
        Ok(_) => escaped("the host's kernel log opened for reading"),
    }
}

fn sys_present() -> Verdict {
    let entries: Vec<String> = std::fs::read_dir("/sys")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if std::path::Path::new("/sys/kernel").exists() {
        let writable = sys::open("/sys/kernel/uevent_helper", libc::O_WRONLY).is_ok();
        escaped(format!(
            "sysfs is there ({}){}",
            entries.join(" "),
            if writable { "; /sys/kernel/uevent_helper opens for writing" } else { "" }
        ))
    } else {
        denied(format!("no sysfs inside ({} entries in /sys)", entries.len()))
    }
}

/// Whether the file system type `name` is in /proc/filesystems (mounting an unknown type would make the
/// host's kernel run modprobe).
pub fn kernel_has_fs(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}

/// Whether a procfs file (possibly under another mount point of proc) opens for writing as the kernel's own.
pub fn opens_for_writing(path: &str) -> Result<(), Errno> {
    let fd = sys::open(path, libc::O_WRONLY)?;
    if is_real_proc(&fd) {
        Ok(())
    } else {
        Err(Errno(libc::EACCES))
    }
}

/// Whether a procfs file reads as the kernel's own (not a mask) and gives some bytes.
pub fn readable_proc(path: &str) -> bool {
    let Ok(fd) = sys::open(path, libc::O_RDONLY) else { return false };
    let mut buf = [0u8; 64];
    is_real_proc(&fd) && sys::read(&fd, &mut buf).is_ok_and(|n| n > 0)
}
