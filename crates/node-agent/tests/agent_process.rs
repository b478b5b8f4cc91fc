//! `vserver-agent` as the service manager sees it: its exit codes (2 for a configuration that cannot be used,
//! 1 for a failure once started, 0 for a clean stop) and its readiness notification (`Type=notify`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const VSERVER_AGENT: &str = env!("CARGO_BIN_EXE_vserver-agent");

/// A configuration of one host alone, everything under `dir`, listening on `listen`.
fn config(dir: &Path, listen: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), "0123456789abcdef0123\n").unwrap();
    let d = dir.display();
    let text = format!(
        "node = \"h1\"\nlisten = \"{listen}\"\nsecret_file = \"{d}/secret\"\ninsecure_plain_http = true\nvservers_dir = \"{d}/vservers\"\n\
         conf_dir = \"{d}/conf\"\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\ncgroup_parent = \"{}\"\n",
        vserver_lab::unique("agentproc"),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_configuration_that_cannot_be_used_exits_2_and_a_failure_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &Path, check: bool| {
        let mut cmd = Command::new(VSERVER_AGENT);
        cmd.arg("--config").arg(config).env("VSERVER_LOG", "error");
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&dir.path().join("missing.toml"), false);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the reason is said once: {err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = config(dir.path(), &busy.local_addr().unwrap().to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}bogus = 1\n")).unwrap();
    let (code, err) = run(&path, false);
    assert_eq!(code, Some(2), "an unknown key: {err}");
    assert!(err.contains("bogus"), "{err}");
    assert_eq!(run(&path, true).0, Some(2), "--check agrees");
    // A cluster file that cannot be used: --check sees it too.
    std::fs::write(dir.path().join("cluster.toml"), "[vservers.v1]\nprimary = \"h9\"\n").unwrap();
    std::fs::write(&path, format!("cluster_file = \"cluster.toml\"\n{text}")).unwrap();
    let (code, err) = run(&path, true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("vservers.v1.primary"), "{err}");
    let (code, err) = run(&path, false);
    assert_eq!(code, Some(2), "{err}");
    // A good configuration whose port is taken: a failure once started.
    std::fs::write(&path, &text).unwrap();
    assert_eq!(run(&path, true).0, Some(0));
    let (code, err) = run(&path, false);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn the_agent_tells_the_service_manager_it_is_ready_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &free_port());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let agent = Command::new(VSERVER_AGENT)
        .arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("VSERVER_LOG", "error")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within a minute");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means reachable: the vserver command finds the agent's socket.
    assert!(dir.path().join("run/agent.sock").exists() && dir.path().join("run/agent.json").exists());
    // SIGTERM right away is a clean stop, not a kill.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    let out = agent.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("run/agent.json").exists(), "the agent withdrew its announcement");
}
