//! The README's test command is what CI runs: `.ci/run` runs exactly the command of the README's "Run the
//! tests" block, and that command is a script of this repository that sets up what the tests need.

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The first shell block after `heading` in the README.
fn block_after(readme: &str, heading: &str) -> String {
    let from = readme.find(heading).unwrap_or_else(|| panic!("the README has no {heading:?}"));
    let rest = &readme[from..];
    let start = rest.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    rest[start..start + end].trim().to_string()
}

#[test]
fn ci_runs_exactly_the_readmes_test_command() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let command = block_after(&readme, "## Run the tests");
    assert_eq!(command.lines().count(), 1, "one command: {command:?}");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let commands: Vec<&str> =
        ci.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("set ")).collect();
    assert_eq!(commands.last(), Some(&command.as_str()), ".ci/run ends with the README's test command: {commands:?}");
    let script = repo().join(command.split_whitespace().next().unwrap());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&script).unwrap().permissions());
    assert!(mode & 0o111 != 0, "{} is executable", script.display());
    let checked = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn the_test_script_installs_every_package_the_demo_command_installs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let demo = block_after(&readme, "## Try it");
    let script = std::fs::read_to_string(repo().join("tests/run")).unwrap();
    let from = script.find("\npackages=(").expect("the script's package list") + "\npackages=(".len();
    let listed = &script[from..from + script[from..].find(')').expect("the list's end")];
    let install = demo.split("apt-get install -y").nth(1).expect("the demo command installs packages");
    for package in install.split("&&").next().unwrap().split_whitespace() {
        assert!(listed.split_whitespace().any(|p| p == package), "tests/run installs {package}");
    }
}
