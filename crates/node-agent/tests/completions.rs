//! `--completions SHELL` of `vserver`, `vserver-stat` and `vserver-agent`: the scripts are valid shell, name
//! the commands' subcommands and options, and the bash one completes `vserver NAME ACTION` (name first).

use std::path::Path;
use std::process::Command;

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");
const VSERVER_STAT: &str = env!("CARGO_BIN_EXE_vserver-stat");
const VSERVER_AGENT: &str = env!("CARGO_BIN_EXE_vserver-agent");

/// The script `bin --completions shell` prints, written to a file in `dir`.
fn script(dir: &Path, bin: &str, shell: &str) -> (String, std::path::PathBuf) {
    let out = Command::new(bin).args(["--completions", shell]).output().unwrap();
    assert!(out.status.success(), "{bin} --completions {shell}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let name = Path::new(bin).file_name().unwrap().to_str().unwrap();
    let path = dir.join(format!("{name}.{shell}"));
    std::fs::write(&path, &text).unwrap();
    (text, path)
}

fn bash_n(path: &Path) {
    let out = Command::new("bash").arg("-n").arg(path).output().unwrap();
    assert!(out.status.success(), "bash -n {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bash_completions_are_valid_and_name_the_commands_words() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 3] = [
        (
            VSERVER,
            &[
                "complete -F _vserver",
                "start",
                "stop",
                "restart",
                "running",
                "enter",
                "exec",
                "suexec",
                "service",
                "status",
                "sync",
                "migrate",
                "build",
                "--all",
                "--json",
                "--timeout",
                "--vservers-dir",
                "--busybox",
                "--iproot",
                "--completions",
            ],
        ),
        (VSERVER_STAT, &["vserver-stat", "--json", "--takeovers", "--run-dir", "--completions"]),
        (VSERVER_AGENT, &["vserver-agent", "--config", "--check", "--completions"]),
    ];
    for (bin, words) in cases {
        let (text, path) = script(dir.path(), bin, "bash");
        for word in words {
            assert!(text.contains(word), "{bin}'s bash completions mention {word}");
        }
        bash_n(&path);
    }
}

/// What bash offers for `words` (the last one being completed) with `bin`'s script loaded.
fn complete(script: &Path, words: &[&str]) -> Vec<String> {
    complete_with(script, words, &[])
}

/// As [`complete`], with `envs` set.
fn complete_with(script: &Path, words: &[&str], envs: &[(&str, &str)]) -> Vec<String> {
    // The function the script registers for the command (`complete ... -F FUNCTION COMMAND`).
    let text = std::fs::read_to_string(script).unwrap();
    let registration =
        text.lines().map(str::trim).find(|l| l.starts_with("complete ") && l.ends_with(words[0])).unwrap();
    let function = registration.split_whitespace().skip_while(|w| *w != "-F").nth(1).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
         {function} '{}' '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[0],
        words[words.len() - 1],
        words[words.len().saturating_sub(2)],
    );
    let out = Command::new("bash").arg("-c").arg(&line).envs(envs.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completes_a_vservers_action_after_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = script(dir.path(), VSERVER, "bash");
    assert_eq!(complete(&path, &["vserver", "v1", "mi"]), ["migrate"]);
    assert_eq!(complete(&path, &["vserver", "--a"]), ["--all"]);
    let service = complete(&path, &["vserver", "v1", "service", "httpd", ""]);
    for action in ["start", "stop", "restart", "status"] {
        assert!(service.iter().any(|w| w == action), "service actions offered: {service:?}");
    }
    let (_, path) = script(dir.path(), VSERVER_AGENT, "bash");
    assert_eq!(complete(&path, &["vserver-agent", "--ch"]), ["--check"]);
}

#[test]
fn every_shell_gets_a_script() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, option) in [(VSERVER, "timeout"), (VSERVER_STAT, "takeovers"), (VSERVER_AGENT, "config")] {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let (text, _) = script(dir.path(), bin, shell);
            assert!(text.contains("completions") && text.contains(option), "{bin} {shell}: {text}");
        }
    }
}

#[test]
fn completions_take_no_other_words_and_an_unknown_shell_is_bad_usage() {
    for args in [
        &[VSERVER, "--completions", "bash", "v1", "start"][..],
        &[VSERVER, "--completions", "bash", "start"],
        &[VSERVER, "--completions", "tcsh"],
        &[VSERVER_STAT, "--completions", "bash", "--json"],
        &[VSERVER_AGENT, "--completions", "bash", "--check"],
    ] {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The environment does not count as words: a configured agent still prints its completions.
    let out = Command::new(VSERVER_AGENT)
        .args(["--completions", "bash"])
        .env("VSERVER_AGENT_CONFIG", "/nonexistent.toml")
        .output()
        .unwrap();
    assert!(out.status.success());
    // Without a command, `vserver` is still bad usage.
    let out = Command::new(VSERVER).arg("v1").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a command is required"));
}

#[test]
fn bash_completes_the_vservers_configured_here_where_a_name_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = script(dir.path(), VSERVER, "bash");
    let conf = dir.path().join("etc");
    std::fs::create_dir(&conf).unwrap();
    for f in ["web.conf", "db.conf", "wiki.conf", "notes.txt"] {
        std::fs::write(conf.join(f), "").unwrap();
    }
    // The script asks `vserver` on the PATH, as an installed one would.
    let bin_dir = Path::new(VSERVER).parent().unwrap();
    let path_var = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let envs = [("PATH", path_var.as_str()), ("VSERVER_CONF_DIR", conf.to_str().unwrap())];
    assert_eq!(complete_with(&path, &["vserver", ""], &envs), ["db", "web", "wiki"]);
    assert_eq!(complete_with(&path, &["vserver", "w"], &envs), ["web", "wiki"]);
    // The rest is clap's, as before: actions after the name, options where an option goes.
    assert_eq!(complete_with(&path, &["vserver", "web", "mi"], &envs), ["migrate"]);
    assert_eq!(complete_with(&path, &["vserver", "--a"], &envs), ["--all"]);
    // Hosts come from this host's agent: none runs here, so none is offered (and nothing fails).
    let run = dir.path().join("run");
    let envs = [envs[0], envs[1], ("VSERVER_RUN_DIR", run.to_str().unwrap())];
    assert_eq!(complete_with(&path, &["vserver", "web", "migrate", ""], &envs), Vec::<String>::new());
    // `vserver-agent placement set NAME` takes a vserver's name.
    let (_, agent_path) = script(dir.path(), VSERVER_AGENT, "bash");
    assert_eq!(complete_with(&agent_path, &["vserver-agent", "placement", "set", "w"], &envs), ["web", "wiki"]);
}
