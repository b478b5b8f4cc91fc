//! Root smoke tests of the benchmarks. `bench start`: the product, the floor and LXC variants start, answer and
//! stop, and the report holds their timings and ratios (a variant whose command is missing is skipped, saying
//! why). A bench ended by a signal takes its lab down. `bench scale` measures its smallest cluster.

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vserver_lab::bench::{run_scale_bench, run_start, ScaleOptions, StartOptions, Variant};
use vserver_lab::skip_unless_root;

fn has_lxc() -> bool {
    Command::new("lxc-create")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_variant_starts_two_services_that_answer_then_stop() {
    if skip_unless_root("every_variant_starts_two_services_that_answer_then_stop") {
        return;
    }
    let mut variants = vec![Variant::Floor];
    if vserver_lab::vserver_bin().is_some() {
        variants.insert(0, Variant::Vserver);
    } else {
        eprintln!("vserver part skipped: no vserver binary beside the test (cargo build -p node-agent)");
    }
    if has_lxc() {
        variants.push(Variant::Lxc);
    } else {
        eprintln!("lxc part skipped: no lxc-create (apt-get install lxc)");
    }
    let options = StartOptions { count: 2, variants: variants.clone(), answer_timeout: Duration::from_secs(20) };
    let report = run_start(&options, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.variants.len(), variants.len());
    for v in &report.variants {
        assert_eq!(v.error, None, "{:?} failed", v.variant);
        assert_eq!(v.runs, 2);
        assert_eq!(v.stop_ms.len(), 2);
        assert!(v.median_start_ms.is_some_and(|ms| ms > 0.0));
    }
    let table = report.table();
    assert!(table.contains("faster than LXC:"), "{table}");
    if variants.contains(&Variant::Vserver) && variants.contains(&Variant::Lxc) {
        assert!(table.contains("vserver/lxc"), "the ratio against LXC is printed: {table}");
    }
}

#[test]
fn an_interrupted_run_says_so() {
    if skip_unless_root("an_interrupted_run_says_so") {
        return;
    }
    let options = StartOptions { count: 1, variants: vec![Variant::Floor], answer_timeout: Duration::from_secs(5) };
    let err = run_start(&options, &AtomicBool::new(true)).unwrap_err();
    assert!(err.is::<vserver_lab::bench::Interrupted>(), "{err:#}");
}

/// The agents `bench agent`'s lab started (the bench's children running `vserver-agent`).
fn agents_of(bench: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(bench) && String::from_utf8_lossy(&cmdline).contains("vserver-agent")
        })
        .collect()
}

/// `kill` (SIGTERM, as `timeout` and service managers send) stops a bench as Ctrl-C does: the lab is taken
/// down, no agent of it is left running.
#[test]
fn a_bench_ended_by_sigterm_leaves_no_agent_behind() {
    if skip_unless_root("a_bench_ended_by_sigterm_leaves_no_agent_behind") {
        return;
    }
    if vserver_lab::vserver_bin().is_none() {
        panic!("no agent binary beside the test (cargo build --workspace)");
    }
    use std::io::BufRead;
    let mut bench = Command::new(env!("CARGO_BIN_EXE_vserver-lab"))
        .args(["bench", "agent", "--idle", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = bench.id();
    // Reads the bench's lines on a thread of its own until the idle window starts.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = bench.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = String::new();
    let idle = loop {
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.contains("idle for") => break true,
            Ok(line) => said.push_str(&format!("{line}\n")),
            Err(_) => break false,
        }
    };
    let agents = agents_of(pid);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = bench.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let left: Vec<u32> =
        agents.iter().copied().filter(|a| std::path::Path::new(&format!("/proc/{a}")).exists()).collect();
    for a in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*a as i32), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(idle, "the bench never reached its idle window:\n{said}");
    assert_eq!(agents.len(), 6, "the lab's six agents were found: {agents:?}");
    let status = status.expect("the bench did not end within 120 s of SIGTERM");
    assert!(!status.success(), "an interrupted bench says so by its exit status");
    assert!(left.is_empty(), "agents {left:?} of the bench's lab still ran after it ended");
}

/// `bench scale` on its smallest cluster: the switch's ports receive on kernel threads whose CPU is reported
/// apart, the agents are measured at rest with no false suspicion, and the crashed host's vservers all come back
/// on their standby.
#[test]
fn the_scale_bench_measures_a_small_cluster_and_its_recovery() {
    if skip_unless_root("the_scale_bench_measures_a_small_cluster_and_its_recovery") {
        return;
    }
    let options = ScaleOptions {
        sizes: vec![3],
        idle: Duration::from_secs(2),
        run_dirs_on_disk: false,
        delivery_in_sender: false,
    };
    let report = run_scale_bench(&options, &AtomicBool::new(false)).unwrap();
    let table = report.table();
    let [row] = report.rows.as_slice() else { panic!("one row for one size:\n{table}") };
    assert_eq!(row.hosts, 3, "{table}");
    assert!(row.network_cpu.is_some(), "the network's kernel threads are reported:\n{table}");
    assert!(table.contains("frames delivered by kernel threads"), "{table}");
    assert!(row.frames_per_sec > 0.0, "frames crossed the switch:\n{table}");
    assert!(row.voter_cpu_max > 0.0 && row.rss_voter_max_mib > 0.0, "the voters are measured:\n{table}");
    assert_eq!(row.false_suspicions, 0, "{table}");
    assert_eq!(row.not_recovered, 0, "every vserver of the crashed host came back:\n{table}");
    let phases: Vec<&str> = row.recovery_phases_ms.iter().map(|(p, _)| p.as_str()).collect();
    assert!(phases.contains(&"detect") && phases.contains(&"start"), "the takeovers' phases: {phases:?}\n{table}");
    assert!(table.contains("recovery phases at 3 hosts"), "{table}");
}
