//! Scenario: the HTTP API is what `docs/openapi.yaml` says it is. Schemathesis (the version pinned in
//! `tests/schemathesis.txt`, installed by `tests/run`) sends one live agent the schema's examples, inputs the
//! schema allows and inputs it refuses, with every check on: no 5xx, no hang, every status and body as
//! documented, every schema-valid input accepted (2xx, or the 404/409 the schema names) and every invalid one
//! refused. The agent is a throwaway lab host: whatever the run changes goes with the lab.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vserver_lab::agents::{wait_for, Agents, AGENT_PORT};
use vserver_lab::{skip_unless_root, KillOnDrop, Lab};

use crate::{FAST, PATIENCE};

/// The pinned requirement, `schemathesis==X.Y.Z`, as `tests/run` installs it.
const REQUIREMENT: &str = include_str!("../../schemathesis.txt");

/// Test cases per operation and phase: enough to reach every bound and pattern, few enough for a busy CI.
const MAX_EXAMPLES: &str = "20";

/// The seed of the generated inputs: the same cases on every run.
const SEED: &str = "20240611";

/// Longest one request may take before schemathesis reports it: far above anything the agent takes on bad
/// input (it answers at once), so that a hang is a failure and not a stuck suite.
const REQUEST_TIMEOUT_SECS: &str = "60";

/// Longest the whole run may take before it is killed, so that a stuck run cannot block the suite.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The pinned schemathesis: `$VSERVER_SCHEMATHESIS`, else `schemathesis-venv/bin/schemathesis` in the target
/// directory this test runs from (where `tests/run` creates it).
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VSERVER_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(3).map(|dir| dir.join("schemathesis-venv/bin/schemathesis")).find(|p| p.is_file())
}

/// The version of the pinned requirement.
fn pinned_version() -> &'static str {
    REQUIREMENT.lines().find_map(|l| l.trim().strip_prefix("schemathesis==")).expect("tests/schemathesis.txt pins it")
}

#[test]
fn every_operation_answers_as_the_openapi_schema_says_for_valid_and_invalid_input() {
    let test = "every_operation_answers_as_the_openapi_schema_says_for_valid_and_invalid_input";
    if skip_unless_root(test) {
        return;
    }
    let version = pinned_version();
    let bin = schemathesis().unwrap_or_else(|| {
        panic!("schemathesis {version} is not installed: tests/run installs it (into target/schemathesis-venv)")
    });
    let said = Command::new(&bin).arg("--version").output().expect("running schemathesis --version");
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(
        said.split_whitespace().any(|w| w == version),
        "{} is {said:?}, not the pinned {version}: tests/run installs the pinned one",
        bin.display()
    );

    let lab = Lab::new(1).unwrap();
    let agents = Agents::start(&lab, FAST).unwrap();
    // Ready when it answers and the cluster (this one host) has its coordinator: maintenance needs one.
    let ready = || agents.status(0).is_ok_and(|s| s["ownership"]["raft"]["leader"].as_str() == Some("h0"));
    assert!(wait_for(PATIENCE, ready).is_some(), "the agent is ready; log:\n{}", agents.log(0));

    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let url = format!("http://{}:{AGENT_PORT}", lab.hosts[0].addr);
    let mut command = lab.client.command(&bin);
    command
        .arg("run")
        .arg(&schema)
        .args(["--url", &url])
        .args(["--header", &format!("Authorization: Bearer {}", agents.secret())])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--request-timeout", REQUEST_TIMEOUT_SECS])
        .args(["--generation-database", "none", "--no-color"])
        // Nothing of the run (reports, caches) in the repository: it runs in the lab's directory.
        .current_dir(lab.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = KillOnDrop(command.spawn().expect("starting schemathesis"));
    let (mut stdout, mut stderr) = (child.0.stdout.take().unwrap(), child.0.stderr.take().unwrap());
    let out = std::thread::spawn(move || std::io::read_to_string(&mut stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(&mut stderr).unwrap_or_default());
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(child);
    let report = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    eprintln!("schemathesis {version} against h0's agent, {:?}:\n{report}", started.elapsed());
    let status = status.unwrap_or_else(|| panic!("schemathesis still runs after {RUN_LIMIT:?}; so far:\n{report}"));
    assert!(status.success(), "schemathesis found the API unlike its schema ({status}):\n{report}");
    assert!(agents.status(0).is_ok(), "the agent still answers after the run; log:\n{}", agents.log(0));
}
