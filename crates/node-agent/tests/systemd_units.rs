//! The systemd units in `config/`: `systemd-analyze verify` finds nothing to say about them (when it is
//! installed), their commands parse with the real binaries, and they keep the properties the product relies
//! on (the agent stopped alone, after the watchdog; the boot unit after the agent).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = ["vserver-agent.service", "vserver-watchdog.service", "vservers-onboot.service"];

/// Where the units expect the binaries.
const INSTALLED: &str = "/usr/local/sbin/";

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(config_dir().join(name)).unwrap()
}

/// The value of every `key=` line of a unit.
fn values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    text.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_string).collect()
}

/// The directory of the binaries under test (all of a package's binaries are built side by side).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vserver-agent")).parent().unwrap().to_path_buf()
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // As root (CI), tests/run installs it: missing there is a failure, not a skip.
        assert!(!nix::unistd::Uid::effective().is_root(), "systemd-analyze is not installed: tests/run installs it");
        eprintln!("SKIPPED systemd_analyze_verify_accepts_the_units: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    // The units name the installed binaries; verify checks that commands exist, so it sees the built ones.
    let dir = tempfile::tempdir().unwrap();
    let bins = format!("{}/", bin_dir().display());
    let paths: Vec<PathBuf> = UNITS
        .iter()
        .map(|name| {
            let path = dir.path().join(name);
            std::fs::write(&path, unit(name).replace(INSTALLED, &bins)).unwrap();
            path
        })
        .collect();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&paths).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn every_command_of_the_units_parses() {
    for name in UNITS {
        let text = unit(name);
        let commands: Vec<String> = ["ExecStart", "ExecStop"]
            .iter()
            .flat_map(|k| values(&text, k))
            .filter(|c| c.starts_with(INSTALLED))
            .collect();
        assert!(!commands.is_empty(), "{name} runs a command of the product");
        for command in commands {
            let mut words = command.split_whitespace();
            let bin = bin_dir().join(words.next().unwrap().strip_prefix(INSTALLED).unwrap());
            // clap checks every argument before it acts on --help: bad flags fail, good ones print help.
            let out = Command::new(&bin).args(words).arg("--help").output().unwrap();
            assert!(out.status.success(), "{name}: {command}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn the_units_keep_the_products_rules() {
    let agent = unit("vserver-agent.service");
    assert_eq!(values(&agent, "ExecStart"), ["/usr/local/sbin/vserver-agent --config /etc/vservers/agent.toml"]);
    // Stopping the agent stops no vserver; the service manager kills the agent's process alone.
    assert_eq!(values(&agent, "KillMode"), ["process"]);
    assert_eq!(values(&agent, "Restart"), ["always"]);
    // A configuration that cannot be used (exit 2) is not retried.
    assert_eq!(values(&agent, "RestartPreventExitStatus"), [node_agent::exit::USAGE.to_string()]);
    assert_eq!(values(&agent, "Type"), ["notify"]);
    for key in ["Wants", "After"] {
        let v = values(&agent, key).join(" ");
        assert!(v.contains("vserver-watchdog.service") && v.contains("network-online.target"), "{key}={v}");
    }
    assert!(values(&agent, "Requires").is_empty(), "a watchdog restart must not restart the agent");

    let watchdog = unit("vserver-watchdog.service");
    assert!(values(&watchdog, "Before").join(" ").contains("vserver-agent.service"));
    assert_eq!(values(&watchdog, "Type"), ["notify"]);
    assert_eq!(values(&watchdog, "Restart"), ["always"]);

    let onboot = unit("vservers-onboot.service");
    assert_eq!(values(&onboot, "Type"), ["oneshot"]);
    assert_eq!(values(&onboot, "ExecStart"), ["/usr/local/sbin/vserver --all start"]);
    assert!(values(&onboot, "After").join(" ").contains("vserver-agent.service"));
    // Ordering alone: with Requires or BindsTo, stopping the agent would stop every vserver (ExecStop).
    for key in ["Requires", "BindsTo", "Requisite", "PartOf"] {
        assert!(values(&onboot, key).is_empty(), "{key} in vservers-onboot.service");
    }
}
