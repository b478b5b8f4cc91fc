//! `vserver ... | head`: a command whose reader goes away (its stdout a pipe with no reader left) ends quietly,
//! killed by SIGPIPE like any Unix tool, instead of panicking (exit 101) on its next line. Each command here
//! prints to stdout through the ordinary print path; a normal run shows it has something to print.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");
const VSERVER_STAT: &str = env!("CARGO_BIN_EXE_vserver-stat");
const VSERVER_AGENT: &str = env!("CARGO_BIN_EXE_vserver-agent");

/// A configuration `vserver-agent --check` finds good, everything under `dir`.
fn agent_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), "0123456789abcdef0123\n").unwrap();
    let d = dir.display();
    let text = format!(
        "node = \"h1\"\nlisten = \"127.0.0.1:1\"\nsecret_file = \"{d}/secret\"\ninsecure_plain_http = true\nvservers_dir = \"{d}/vservers\"\n\
         conf_dir = \"{d}/conf\"\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\ncgroup_parent = \"{}\"\n",
        vserver_lab::unique("closedout"),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The commands under test, each printing at least a line on stdout, with directories under `dir` (empty:
/// no vserver, so nothing of the machine is touched).
fn commands(dir: &Path) -> Vec<Command> {
    for sub in ["vservers", "conf", "run", "state"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let dirs = |c: &mut Command| {
        c.arg("--vservers-dir").arg(dir.join("vservers"));
        c.arg("--conf-dir").arg(dir.join("conf"));
        c.arg("--run-dir").arg(dir.join("run"));
    };
    let mut vserver = Command::new(VSERVER);
    vserver.args(["--all", "status", "--json"]);
    dirs(&mut vserver);
    let mut stat = Command::new(VSERVER_STAT);
    dirs(&mut stat);
    let mut agent = Command::new(VSERVER_AGENT);
    agent.arg("--config").arg(agent_config(dir)).arg("--check");
    let mut all = vec![vserver, stat, agent];
    for c in &mut all {
        c.env("VSERVER_LOG", "error").env("VSERVER_NO_AGENT", "1").stdin(Stdio::null());
    }
    all
}

/// What the command says, for assertion messages.
fn shown(c: &Command, out: &Output) -> String {
    format!(
        "{:?} {:?}: {:?}\nstdout: {}\nstderr: {}",
        c.get_program(),
        c.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_closed_pipe_on_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for mut c in commands(dir.path()) {
        let out = c.output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "it prints when read: {}", shown(&c, &out));

        // A pipe whose read end is closed before the command starts: its first write finds no reader.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        c.stdout(Stdio::from(write)).stderr(Stdio::piped());
        let out = c.output().unwrap();
        let said = shown(&c, &out);
        assert_ne!(out.status.code(), Some(101), "no panic: {said}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "no panic: {said}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE, as any Unix tool: {said}");
        assert!(out.stderr.is_empty(), "nothing said: {said}");
    }
}

#[test]
fn a_closed_pipe_on_stderr_ends_the_command_quietly() {
    let mut c = Command::new(VSERVER);
    c.args(["bad/name", "status"]).stdin(Stdio::null());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage, said on stderr: {}", shown(&c, &out));
    assert!(!out.stderr.is_empty(), "{}", shown(&c, &out));

    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    c.stderr(Stdio::from(write)).stdout(Stdio::piped());
    let out = c.output().unwrap();
    let said = shown(&c, &out);
    assert_ne!(out.status.code(), Some(101), "no panic: {said}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE, as any Unix tool: {said}");
    assert!(out.stdout.is_empty(), "nothing said: {said}");
}
