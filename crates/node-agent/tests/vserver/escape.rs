//! Scenarios: root inside a vserver tries every known way out, with the lab crate's `escape-probe` (one
//! JSON row per attempt: class, attempt, outcome `denied` | `reached` | `escaped`, detail). A default
//! vserver must deny them all (a few rows may show `reached`, each said why below); with the protections
//! turned off one at a time (S_UNSAFE words, S_CAPS, LIMIT_PIDS) the matrix shows what each one stops, and
//! with everything off the known escapes must succeed, which proves the probe can see an escape at all.
//! Host-side rows: a set-uid program made inside must not run for a host user.
//!
//! The probe is found beside the `vserver` binary under test (`target/debug/escape-probe`, built with the
//! workspace: `cargo build`, or `cargo build -p vserver-lab --bin escape-probe`), or at
//! `$VSERVER_ESCAPE_PROBE`. It runs in busybox trees, which have no C library: the test copies it in with
//! the shared libraries `ldd` lists, at the same paths.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixture::{text, Fixture, VSERVER};

/// Where the probe goes inside the tree.
const PROBE_INSIDE: &str = "/usr/local/sbin/escape-probe";

/// The fork bomb's cap: past the default process limit, so that a missing limit shows.
const FORK_CAP: u64 = isolate::spec::DEFAULT_PIDS_LIMIT + 512;

/// One row of the probe's output.
#[derive(Debug, Clone, serde::Deserialize)]
struct Row {
    class: String,
    attempt: String,
    outcome: String,
    detail: String,
}

impl Row {
    fn key(&self) -> String {
        format!("{}: {}", self.class, self.attempt)
    }
}

/// Rows a default vserver may show as `reached` rather than `denied`, and why. Every other row must be
/// `denied`.
const REACHED_IN_DEFAULT: &[(&str, &str, &str)] = &[
    (
        "kernel",
        "reboot (wrong magic number)",
        "CAP_SYS_BOOT is kept for reboot and halt inside: in a PID namespace reboot(2) only ends the vserver's \
         init (the probe's wrong magic number stops it either way)",
    ),
    (
        "fs",
        "descriptors, working directories and roots of visible processes lead outside the tree",
        "`reached` means files only, no directory: the console log, which the vserver's services get as their \
         output by design (it lives in the host's run directory and nothing bounds its size); a directory \
         outside the tree would open the host's file system and must never be there",
    ),
    (
        "ptrace",
        "PTRACE_SEIZE of the vserver's other processes",
        "root may debug its own vserver's processes, as in any container; process 1 (a host program) is \
         another row and must be denied",
    ),
];

/// The probe binary: `$VSERVER_ESCAPE_PROBE`, else beside the `vserver` binary under test.
fn probe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VSERVER_ESCAPE_PROBE") {
        return p.into();
    }
    let p = Path::new(VSERVER).with_file_name("escape-probe");
    assert!(
        p.is_file(),
        "no escape probe at {}: build it with `cargo build -p vserver-lab --bin escape-probe` (a workspace build \
         makes it too), or set VSERVER_ESCAPE_PROBE",
        p.display()
    );
    p
}

/// Copies the probe into the tree with the shared libraries and loader `ldd` lists, at the same paths.
fn install_probe(root: &Path) {
    let bin = probe_bin();
    let out = Command::new("ldd").arg(&bin).output().expect("run ldd (libc-bin)");
    assert!(out.status.success(), "ldd {}: {}", bin.display(), text(&out));
    let mut files: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            files.push(path.into());
        }
    }
    assert!(!files.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("=>"), "ldd listed nothing usable");
    for lib in files {
        let target = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        // Follows symlinks: the tree gets the library itself under the name the loader asks for.
        std::fs::copy(&lib, &target).unwrap_or_else(|e| panic!("copy {} into the tree: {e}", lib.display()));
    }
    let target = root.join(PROBE_INSIDE.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&bin, &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What the host offers for the probe to reach: an abstract unix socket and a TCP listener on 127.0.0.1,
/// both in host 0's network namespace (where the vserver runs), and a System V message queue in the host's
/// IPC namespace. Connections are never accepted: a completed connect is the proof.
struct HostEndpoints {
    abstract_name: String,
    tcp_port: u16,
    msg_key: i32,
    msg_id: i32,
    _tcp: TcpListener,
    _unix: UnixListener,
}

impl HostEndpoints {
    fn open(f: &Fixture) -> HostEndpoints {
        let abstract_name = vserver_lab::unique("escape-probe-");
        let (tcp, unix) = f
            .host()
            .netns
            .run(|| {
                let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen on the host's 127.0.0.1");
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
                let unix = UnixListener::bind_addr(&addr).expect("bind the host's abstract socket");
                (tcp, unix)
            })
            .expect("enter host 0's network namespace");
        let tcp_port = tcp.local_addr().unwrap().port();
        // A key of this process's own (pid and a counter), made afresh if another queue has it already.
        static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1);
        let (msg_key, msg_id) = loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = ((std::process::id() as i32) << 8) ^ n;
            // SAFETY: msgget(2) with numbers only; IPC_EXCL makes sure the queue is this test's own.
            let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
            if id >= 0 {
                break (key, id);
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "msgget: {e}");
        };
        HostEndpoints { abstract_name, tcp_port, msg_key, msg_id, _tcp: tcp, _unix: unix }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--abstract".into(),
            self.abstract_name.clone(),
            "--tcp".into(),
            self.tcp_port.to_string(),
            "--msg-key".into(),
            self.msg_key.to_string(),
            "--fork-cap".into(),
            FORK_CAP.to_string(),
        ]
    }
}

impl Drop for HostEndpoints {
    fn drop(&mut self) {
        // SAFETY: msgctl(2) IPC_RMID takes no buffer (NULL); the queue is this test's own.
        unsafe { libc::msgctl(self.msg_id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// A started busybox vserver for `conf_extra`, without IPROOT (a loopback-only network of its own, or the
/// host's with S_UNSAFE hostnet), with the probe inside and a sleeping service for the ptrace rows.
fn probe_vserver(test: &str, conf_extra: &str) -> Option<Fixture> {
    let f = Fixture::new(test, conf_extra)?;
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    let conf: String = conf.lines().filter(|l| !l.starts_with("IPROOT=")).map(|l| format!("{l}\n")).collect();
    std::fs::write(f.conf(), conf).unwrap();
    install_probe(&f.root());
    f.add_service("sleeper", 10, "sleep 100000 &", "killall sleep");
    f.start();
    Some(f)
}

/// Runs the probe inside `f` as root and returns its rows.
fn run_probe(f: &Fixture) -> Vec<Row> {
    let endpoints = HostEndpoints::open(f);
    // Run as a careless caller would: with a host directory open on descriptor 3, not close-on-exec (a shell's
    // `3<dir`). The product must not hand it to the command inside (runc's CVE-2024-21626 was such a leak).
    let out = f
        .command("/bin/sh")
        .args(["-c", "exec 3<\"$0\"; exec \"$@\""])
        .arg(f.lab.dir())
        .args([VSERVER, f.name.as_str(), "exec", PROBE_INSIDE])
        .args(endpoints.args())
        .output()
        .expect("run vserver exec");
    let rows: Vec<Row> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("probe line {l:?}: {e}\n{}", text(&out))))
        .collect();
    assert!(out.status.success() && rows.len() > 50, "the probe ran to its end: {}", text(&out));
    rows
}

#[test]
fn a_default_vserver_holds_against_every_escape() {
    let Some(f) = probe_vserver("a_default_vserver_holds_against_every_escape", "") else { return };
    let rows = run_probe(&f);
    for r in &rows {
        println!("{:8} {} ({})", r.outcome, r.key(), r.detail);
    }
    let mut failures = Vec::new();
    for r in &rows {
        let allowed_reached = REACHED_IN_DEFAULT.iter().any(|(c, a, _)| *c == r.class && *a == r.attempt);
        let ok = r.outcome == "denied" || (allowed_reached && r.outcome == "reached");
        if !ok {
            failures.push(format!("  {} -> {} ({})", r.key(), r.outcome, r.detail));
        }
    }
    assert!(
        failures.is_empty(),
        "a default vserver let {} of {} attempts through:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// A host user (nobody) runs `program` (a set-uid-root busybox named `id`) from the host's side of the tree;
/// the run must be refused (the vservers directory is not traversable by others). Any run is the failure,
/// whatever `id` prints (this busybox drops the set-uid privilege for `id`; a program made for it would not).
fn assert_host_user_cannot_run(program: &Path) {
    // setpriv looks the program up before its capabilities are gone: a shell, already unprivileged, execs it.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", "exec \"$0\""])
        .arg(program)
        .output()
        .expect("run setpriv (util-linux)");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "a host user ran the set-uid-root program {} made inside a vserver: {}",
        program.display(),
        text(&out)
    );
}

#[test]
fn setuid_programs_made_inside_do_not_run_for_host_users() {
    let Some(f) = Fixture::new("setuid_programs_made_inside_do_not_run_for_host_users", "") else { return };
    // The lab's directory stands for / on a real host: traversable by everyone, so that only the product's
    // own barrier can stop the host user.
    std::fs::set_permissions(f.lab.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&f.host().dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.start();
    f.exec(&["sh", "-c", "cp /bin/busybox /tmp/id && chmod 4755 /tmp/id"]);
    let made = f.root().join("tmp/id");
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o4755), "root inside made a set-uid-root program");
    assert_host_user_cannot_run(&made);

    // The same program in a replica, where the product keeps standby copies (VSERVERS_DIR/.replicas by
    // default), made as a sync would: the store's staging generation, the file copied with its mode.
    let name = isolate::VserverName::parse(&f.name).unwrap();
    let store = failover::store::ReplicaStore::new(f.host().vservers_dir.join(".replicas"));
    let staging = store.begin(&name).unwrap();
    let copy = staging.dir.join("tree/id");
    std::fs::copy(&made, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_host_user_cannot_run(&copy);
}

/// The configurations of the matrix: a name (the column) and what it adds to the conf.
fn configurations() -> Vec<(&'static str, String)> {
    // Only those the host's root holds itself: a vserver cannot be given more (this machine's root lacks
    // CAP_SYS_RESOURCE, for one).
    let escape_caps: Vec<String> = isolate::spec::ESCAPE_CAPABILITIES
        .iter()
        .filter(|c| caps::has_cap(None, caps::CapSet::Bounding, **c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    let caps = format!("S_CAPS=\"{}\"", escape_caps.join(" "));
    let words = ["seccomp", "userns", "devices", "procfs", "hostnet"];
    let mut v = vec![("default", String::new())];
    for w in words {
        v.push((w, format!("S_UNSAFE={w}")));
    }
    v.push(("caps", caps.clone()));
    v.push(("pids", "LIMIT_PIDS=unlimited".into()));
    v.push(("all off", format!("S_UNSAFE=\"{}\"\n{caps}\nLIMIT_PIDS=unlimited", words.join(" "))));
    v
}

/// The matrix as a markdown table: one row per attempt, one column per configuration, and a legend.
fn markdown(columns: &[&str], results: &[BTreeMap<String, Row>], order: &[String]) -> String {
    let mut out = format!("| attempt | {} |\n|---|{}\n", columns.join(" | "), "---|".repeat(columns.len()));
    for key in order {
        let cells: Vec<&str> = results
            .iter()
            .map(|r| match r.get(key) {
                None => "-",
                // The probe's mark for a kernel without the feature: no protection was needed here.
                Some(row) if row.outcome == "denied" && row.detail.starts_with("absent from this kernel") => "absent",
                Some(row) => row.outcome.as_str(),
            })
            .collect();
        out.push_str(&format!("| {} | {} |\n", key.replace('|', "\\|"), cells.join(" | ")));
    }
    out.push_str(
        "\ndenied: a protection refused it; reached: nothing stopped the call, but it touches only the vserver or \
         the kernel's attack surface; escaped: it read or could change something of the host; absent: this \
         kernel lacks what the attempt needs.\n",
    );
    out
}

/// What this host's kernel and machine offer at all: an escape the host's own root cannot make (no
/// /proc/kcore in this kernel, a disk the machine's own policy keeps closed) is not expected from inside.
#[derive(Debug)]
struct HostCan {
    /// The tree is on ext4, whose root directory is inode 2 (the handle the shocker row forges).
    shocker: bool,
    /// The host's root can open the disk holding the tree read-only.
    read_disk: bool,
    sysrq: bool,
    kcore: bool,
    load_modules: bool,
}

impl HostCan {
    fn probe(tree: &Path) -> HostCan {
        let ext4 = nix::sys::statfs::statfs(tree)
            .map(|s| s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC)
            .unwrap_or(false);
        let dev = std::fs::metadata(tree).unwrap().dev();
        let disk = format!("/dev/block/{}:{}", nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        HostCan {
            shocker: ext4,
            read_disk: nix::sys::stat::major(dev) != 0 && std::fs::File::open(&disk).is_ok(),
            sysrq: Path::new("/proc/sysrq-trigger").exists(),
            kcore: Path::new("/proc/kcore").exists(),
            load_modules: Path::new("/proc/modules").exists(),
        }
    }

    /// What the matrix cannot show on this host, for the notes under the table.
    fn notes(&self) -> Vec<&'static str> {
        [
            (self.shocker, "the tree is not on ext4: the shocker row cannot forge its file system's root handle"),
            (
                self.read_disk,
                "this machine's own root cannot open the disk holding the tree: the disk rows stay denied",
            ),
            (self.sysrq, "this kernel has no /proc/sysrq-trigger"),
            (self.kcore, "this kernel has no /proc/kcore"),
            (self.load_modules, "this kernel has no loadable modules"),
        ]
        .into_iter()
        .filter(|(can, _)| !can)
        .map(|(_, note)| note)
        .collect()
    }
}

#[test]
fn what_each_layer_stops() {
    if vserver_lab::skip_unless_root("what_each_layer_stops") {
        return;
    }
    let configs = configurations();
    let mut results: Vec<BTreeMap<String, Row>> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut host = None;
    for (column, extra) in &configs {
        let f = probe_vserver("what_each_layer_stops", extra).expect("root checked above");
        host.get_or_insert_with(|| HostCan::probe(&f.root()));
        let rows = run_probe(&f);
        for r in &rows {
            if !order.contains(&r.key()) {
                order.push(r.key());
            }
        }
        results.push(rows.into_iter().map(|r| (r.key(), r)).collect());
        drop(f);
        eprintln!("escape matrix: {column} done");
    }
    let columns: Vec<&str> = configs.iter().map(|(c, _)| *c).collect();
    let host = host.unwrap();
    let mut table = markdown(&columns, &results, &order);
    for note in host.notes() {
        table.push_str(&format!("On this host, {note}.\n"));
    }
    println!("{table}");
    if let Some(path) = std::env::var_os("VSERVER_ESCAPE_MATRIX") {
        std::fs::write(&path, &table).unwrap();
    }
    let all_off = results.last().unwrap();
    let outcome = |config: &BTreeMap<String, Row>, key: &str| -> (String, String) {
        let row = config.get(key).unwrap_or_else(|| panic!("no row {key:?} in the probe's output"));
        (row.outcome.clone(), row.detail.clone())
    };
    let column = |name: &str| &results[columns.iter().position(|c| *c == name).unwrap()];

    // With everything off, the known escapes succeed: the probe can tell an escape from a denial. Those the
    // host's own root cannot make here are left out, and said so.
    let mut expected: Vec<(&str, &str)> = vec![
        ("procfs: /proc/sys/kernel/core_pattern opened for writing (the same value written back)", "escaped"),
        ("procfs: /proc/timer_list read", "escaped"),
        ("devices: mknod c 10:232 (/dev/kvm) in /dev and open", "escaped"),
        ("keyring: keyctl KEYCTL_GET_KEYRING_ID of the user keyring", "escaped"),
        ("userns: unshare(CLONE_NEWUSER)", "reached"),
        ("mount: mount a tmpfs", "reached"),
        ("cgroup: mount cgroup2 and open the root's cgroup.procs for writing", "escaped"),
        ("sysfs: mount sysfs", "escaped"),
        ("exe: read /proc/1/exe", "escaped"),
        ("ptrace: PTRACE_SEIZE of process 1", "escaped"),
        ("network: connect to a TCP service on the host's 127.0.0.1", "escaped"),
        ("network: connect to the host's abstract unix socket", "escaped"),
        ("limits: fork bomb (bounded by the probe)", "escaped"),
    ];
    if !Path::new("/dev/kvm").exists() {
        expected.retain(|(k, _)| !k.contains("/dev/kvm"));
    }
    for (can, key) in [
        (host.shocker, "fs: open_by_handle_at of the file system's root inode (shocker: ext4 inode 2)"),
        (host.read_disk, "devices: mknod b (the disk holding /) in /tmp, read a sector"),
        (host.read_disk, "devices: mknod b (the disk holding /) in /dev, read a sector"),
        (host.sysrq, "procfs: /proc/sysrq-trigger opened for writing (nothing written)"),
        (host.kcore, "procfs: /proc/kcore read"),
        (host.load_modules, "kernel: init_module (empty image)"),
    ] {
        if can {
            expected.push((key, "escaped"));
        }
    }
    let mut failures = Vec::new();
    for (key, want) in &expected {
        let (got, detail) = outcome(all_off, key);
        if got != *want {
            failures.push(format!("  all off: {key} -> {got}, expected {want} ({detail})"));
        }
    }
    // Each protection alone is what stops its own escapes (the others stay on).
    let mut alone = vec![
        ("procfs", "procfs: /proc/sys/kernel/core_pattern opened for writing (the same value written back)", "escaped"),
        ("hostnet", "network: connect to a TCP service on the host's 127.0.0.1", "escaped"),
        ("userns", "userns: unshare(CLONE_NEWUSER)", "reached"),
        ("seccomp", "keyring: keyctl KEYCTL_GET_KEYRING_ID of the user keyring", "escaped"),
        ("pids", "limits: fork bomb (bounded by the probe)", "escaped"),
    ];
    if host.read_disk {
        alone.push(("devices", "devices: mknod b (the disk holding /) in /dev, read a sector", "escaped"));
    } else if Path::new("/dev/kvm").exists() {
        alone.push(("devices", "devices: mknod c 10:232 (/dev/kvm) in /dev and open", "escaped"));
    }
    for (config, key, want) in alone {
        let (got, detail) = outcome(column(config), key);
        if got != want {
            failures.push(format!("  {config} off: {key} -> {got}, expected {want} ({detail})"));
        }
    }
    assert!(failures.is_empty(), "the matrix does not show the known escapes:\n{}\n\n{table}", failures.join("\n"));
}
