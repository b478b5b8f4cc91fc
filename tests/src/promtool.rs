//! The reference readers of the metrics an agent serves: Prometheus's `promtool check metrics`, which parses
//! and lints the Prometheus text format (0.0.4), and the strict OpenMetrics parser of the Python client
//! (promtool reads only the text format: an OpenMetrics counter's family and its `_total` samples look like
//! two metrics to it). Both come from Debian packages that `tests/run` installs (`prometheus`,
//! `python3-prometheus-client`); where one is missing a root test fails and says so, another skips.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The `promtool` binary of Debian's `prometheus` package.
const PROMTOOL: &str = "/usr/bin/promtool";
/// The system's Python, with Debian's `python3-prometheus-client`.
const PYTHON: &str = "/usr/bin/python3";

/// Reads `text` (stdin) with the OpenMetrics parser, which raises on anything the format forbids.
const PARSE_OPENMETRICS: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
for family in parse(sys.stdin.read()):\n    pass\n";

/// `promtool check metrics` on `text`: `Ok` when it exits 0, else its exit code and complaints. `None`
/// (said on stderr) when promtool is missing and this is not root.
pub fn check_metrics(text: &str) -> Option<Result<(), String>> {
    available(PROMTOOL, &[], "promtool", "prometheus")?;
    Some(run(Command::new(PROMTOOL).args(["check", "metrics"]), text))
}

/// The OpenMetrics parser on `text`: `Ok` when it reads all of it, else its error. `None` (said on stderr)
/// when the parser is missing and this is not root.
pub fn parse_openmetrics(text: &str) -> Option<Result<(), String>> {
    let probe = ["-c", "import prometheus_client.openmetrics.parser"];
    available(PYTHON, &probe, "the OpenMetrics parser", "python3-prometheus-client")?;
    Some(run(Command::new(PYTHON).args(["-c", PARSE_OPENMETRICS]), text))
}

/// `Some(())` when `program` runs (with `probe` as arguments, if any); else `None` after saying the test is
/// skipped, where not root. As root (as CI and `tests/run`) a missing tool is a failure.
fn available(program: &str, probe: &[&str], what: &str, package: &str) -> Option<()> {
    let runs = Path::new(program).exists()
        && (probe.is_empty()
            || Command::new(program).args(probe).stderr(Stdio::null()).status().is_ok_and(|s| s.success()));
    if runs {
        return Some(());
    }
    let why = format!("{what} is missing: `tests/run` installs it (Debian package {package})");
    if nix::unistd::geteuid().is_root() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}, which needs root");
    None
}

/// Runs `command` with `text` on its stdin: `Ok` when it exits 0 and says nothing on stderr.
fn run(command: &mut Command, text: &str) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let fed = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| format!("{command:?}: {e}"))?;
    fed.map_err(|e| format!("writing to {command:?}: {e}"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{command:?} exits {:?}:\n{said}\non:\n{text}", out.status.code()))
    }
}
