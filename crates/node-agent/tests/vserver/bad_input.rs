//! Scenarios: bad names and bad conf files are refused early and clearly, and nothing changes.

use crate::fixture::{text, Fixture};

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn invalid_names_are_refused_before_anything_is_touched() {
    let Some(f) = Fixture::new("invalid_names_are_refused_before_anything_is_touched", "") else { return };
    let before = (listing(&f.host().vservers_dir), listing(&f.host().conf_dir));
    let long = "x".repeat(65);
    for bad in ["../escape", "a/b", "..", "", long.as_str(), "-rf"] {
        for action in [&["start"][..], &["stop"], &["status"], &["build", "--busybox"], &["exec", "true"]] {
            let mut args = vec![bad];
            args.extend_from_slice(action);
            let out = f.vserver_raw(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
            assert!(!String::from_utf8_lossy(&out.stderr).is_empty(), "{args:?} says why");
        }
    }
    assert_eq!(before, (listing(&f.host().vservers_dir), listing(&f.host().conf_dir)), "nothing was created");
    assert!(!f.host().vservers_dir.parent().unwrap().join("escape").exists());
}

#[test]
fn a_malformed_conf_is_refused_with_file_and_line() {
    let Some(f) = Fixture::new("a_malformed_conf_is_refused_with_file_and_line", "") else { return };
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    let line = conf.lines().count() + 1;
    std::fs::write(f.conf(), format!("{conf}S_HOSTNAME=\"unterminated\n")).unwrap();
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let want = format!("{}:{line}:", f.conf().display());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&want), "the error names {want}: {}", text(&out));
    assert_eq!(f.vserver(&["running"]).status.code(), Some(3), "nothing started");
}

#[test]
fn shell_syntax_in_a_conf_is_refused_never_run() {
    let Some(f) = Fixture::new("shell_syntax_in_a_conf_is_refused_never_run", "") else { return };
    let marker = f.lab.dir().join("pwned");
    let conf = std::fs::read_to_string(f.conf()).unwrap();
    std::fs::write(f.conf(), format!("{conf}S_HOSTNAME=\"$(touch {})\"\n", marker.display())).unwrap();
    let out = f.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(!marker.exists(), "the conf was never run by a shell");
}

#[test]
fn unknown_keys_are_warned_about_and_kept() {
    let Some(f) = Fixture::new("unknown_keys_are_warned_about_and_kept", "S_FANCY=\"yes\"") else { return };
    let out = f.vserver(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("S_FANCY") && err.contains(&format!("{}:", f.conf().display())),
        "warning names key and place: {err}"
    );
}

#[test]
fn a_vserver_without_conf_is_unknown() {
    let Some(f) = Fixture::new("a_vserver_without_conf_is_unknown", "") else { return };
    let out = f.vserver_raw(&["nosuchvserver", "start"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchvserver.conf"));
    let out = f.vserver(&["build", "--busybox"]);
    assert_eq!(out.status.code(), Some(5), "building over an existing vserver is refused: {}", text(&out));
}
