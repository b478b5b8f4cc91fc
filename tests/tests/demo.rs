//! The README's main job, `vserver-lab demo`, run as a newcomer would: the short form end to end (a real
//! crash and a checked takeover), the full form with the migrate back, and Ctrl-C half way; each must leave
//! nothing behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use vserver_lab::skip_unless_root;

fn demo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vserver-lab"));
    cmd.arg("demo").stdin(Stdio::null());
    cmd
}

/// The lab directory and namespaces a transcript names.
fn traces(transcript: &str) -> (Vec<PathBuf>, Vec<String>) {
    let mut dirs = Vec::new();
    let mut namespaces = Vec::new();
    for line in transcript.lines() {
        if let Some(rest) = line.split("(namespace ").nth(1) {
            let ns = rest.split([',', ')']).next().unwrap_or_default().to_string();
            namespaces.push(ns);
        }
        if let Some(rest) = line.split("its files in ").nth(1) {
            dirs.push(PathBuf::from(rest.trim_end_matches(')')));
        }
    }
    (dirs, namespaces)
}

fn assert_removed(transcript: &str) {
    let (dirs, namespaces) = traces(transcript);
    assert_eq!(dirs.len(), 3, "the transcript names each host's directory:\n{transcript}");
    assert_eq!(namespaces.len(), 4, "the transcript names the hosts' and client's namespaces:\n{transcript}");
    for dir in dirs {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    for ns in namespaces {
        assert!(!std::path::Path::new("/run/netns").join(&ns).exists(), "namespace {ns} is left behind");
    }
}

#[test]
fn the_quick_demo_crashes_a_host_shows_the_takeover_and_cleans_up() {
    if skip_unless_root("the_quick_demo_crashes_a_host_shows_the_takeover_and_cleans_up") {
        return;
    }
    let out = demo().arg("--quick").output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed: {errors}\n{transcript}");
    assert!(transcript.contains("h0 crashed"), "{transcript}");
    assert!(transcript.contains("client: answered again after"), "the client got its answer back:\n{transcript}");
    assert!(transcript.contains("h1 runs the vserver now"), "its first standby took it over:\n{transcript}");
    // vserver-stat --takeovers printed the record, with its phases.
    let record = transcript.lines().find(|l| l.contains(" demo ") && l.contains("detect ")).unwrap_or_default();
    assert!(record.contains("h0") && record.contains("h1") && record.contains("start "), "{transcript}");
    assert!(!transcript.contains("Migrate it back"), "the short form skips the migrate back");
    assert_removed(&transcript);
}

#[test]
fn the_full_demo_migrates_the_vserver_home_after_the_takeover() {
    if skip_unless_root("the_full_demo_migrates_the_vserver_home_after_the_takeover") {
        return;
    }
    let out = demo().output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed: {}\n{transcript}", String::from_utf8_lossy(&out.stderr));
    assert!(transcript.contains("set its copy aside at"), "h0 came back and kept its copy:\n{transcript}");
    assert!(transcript.contains("vserver demo migrated to h0; outage"), "{transcript}");
    assert!(transcript.contains("the client was without an answer for"), "{transcript}");
    // The last cluster view: h0 owns and runs it again, at a newer epoch.
    let last = transcript.rsplit("vserver-stat --cluster").next().unwrap();
    let row = last.lines().find(|l| l.starts_with("demo ")).unwrap_or_default();
    assert_eq!(row.split_whitespace().take(4).collect::<Vec<_>>(), ["demo", "h0", "3", "h0"], "{transcript}");
    assert_removed(&transcript);
}

#[test]
fn ctrl_c_half_way_removes_everything_and_says_so() {
    if skip_unless_root("ctrl_c_half_way_removes_everything_and_says_so") {
        return;
    }
    let mut child = demo().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut transcript = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        transcript.push_str(&line);
        transcript.push('\n');
        // The agents run and the vserver is being started: much to clean up.
        if line.starts_with("=== Start it on h0") {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    for line in lines {
        transcript.push_str(&line.unwrap());
        transcript.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "exit code of an interrupted demo: {errors}\n{transcript}");
    assert!(errors.contains("interrupted"), "{errors}");
    assert_removed(&transcript);
}

#[test]
fn a_demo_whose_reader_goes_away_ends_quietly_and_removes_everything() {
    if skip_unless_root("a_demo_whose_reader_goes_away_ends_quietly_and_removes_everything") {
        return;
    }
    let mut child = demo().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut transcript = String::new();
    // `vserver-lab demo | head`: the reader stops once the agents run and the vserver is being started.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        transcript.push_str(&line);
        transcript.push('\n');
        if line.starts_with("=== Start it on h0") {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!errors.contains("panicked"), "no panic: {errors}\n{transcript}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE, as any Unix tool: {:?} {errors}\n{transcript}",
        out.status
    );
    assert_removed(&transcript);
}

#[test]
fn a_kept_demo_stays_up_for_the_real_commands_and_its_script_removes_it() {
    if skip_unless_root("a_kept_demo_stays_up_for_the_real_commands_and_its_script_removes_it") {
        return;
    }
    let out = demo().args(["--quick", "--keep"]).output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the demo failed: {}\n{transcript}", String::from_utf8_lossy(&out.stderr));
    let script = transcript.lines().find_map(|l| l.trim().strip_prefix("sh ")).expect("the removal script");
    // Whatever happens below, the lab goes.
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("sh").arg(&self.0).status();
        }
    }
    let remove = Remove(script.to_string());
    // The printed way into h1 (the new owner) works, and its agent answers for the cluster.
    let enter = transcript.lines().find_map(|l| l.trim().strip_prefix("h1: ")).expect("how to enter h1");
    let command = enter.strip_suffix(" bash").expect("ends with a shell").to_string() + " vserver-stat --cluster";
    let cluster = Command::new("sh").args(["-c", &command]).output().unwrap();
    let view = String::from_utf8_lossy(&cluster.stdout);
    assert!(cluster.status.success(), "{command}: {}", String::from_utf8_lossy(&cluster.stderr));
    assert!(view.lines().any(|l| l.starts_with("demo ") && l.contains(" h1 ")), "{view}");
    // The shell knows its agent's configuration: the agent's own commands work there too.
    let command = enter.strip_suffix(" bash").unwrap().to_string() + " vserver-agent maintenance status";
    let maintenance = Command::new("sh").args(["-c", &command]).output().unwrap();
    assert!(maintenance.status.success(), "{command}: {}", String::from_utf8_lossy(&maintenance.stderr));
    // The printed crash of h1 does what it says: the vserver no longer runs there.
    let crash = transcript.lines().find_map(|l| l.trim().strip_prefix("crash h1: ")).expect("how to crash h1");
    let crashed = Command::new("sh").args(["-c", crash]).output().unwrap();
    assert!(crashed.status.success(), "{crash}: {}", String::from_utf8_lossy(&crashed.stderr));
    let command = enter.strip_suffix(" bash").unwrap().to_string() + " vserver demo running";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running = Command::new("sh").args(["-c", &command]).env("VSERVER_NO_AGENT", "1").output().unwrap();
        if running.status.code() == Some(3) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the vserver still runs on h1 after its crash: {running:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(remove);
    assert_removed(&transcript);
    let (dirs, _) = traces(&transcript);
    let agents = Command::new("pgrep").args(["-f", &dirs[0].parent().unwrap().display().to_string()]).output().unwrap();
    assert!(String::from_utf8_lossy(&agents.stdout).trim().is_empty(), "processes of the lab are left");
}
