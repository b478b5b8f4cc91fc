//! Completion of the names a command line takes: the vservers configured on this host and the hosts of the
//! cluster. clap writes the scripts for the commands' words; for bash, [`with_names`] wraps its function in
//! one that offers names where a name goes, which the script asks for with `vserver --complete-names KIND`.

use crate::agent_client;
use crate::dirs::Dirs;
use crate::model::StatusReport;

/// What `--complete-names` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Names {
    /// The vservers with a conf file on this host.
    Vservers,
    /// This host and its peers, as its agent knows them (none without an agent).
    Hosts,
}

/// The names of `kind`, one per line. Never fails: a completion offers what it can.
pub fn list(dirs: &Dirs, kind: Names) -> Vec<String> {
    match kind {
        Names::Vservers => dirs.configured().map(|(names, _)| names.iter().map(|n| n.to_string()).collect()),
        Names::Hosts => Ok(hosts(dirs)),
    }
    .unwrap_or_default()
}

fn hosts(dirs: &Dirs) -> Vec<String> {
    let Some(agent) = agent_client::find(&dirs.run_dir) else { return Vec::new() };
    let Ok(reply) = agent.request("GET", "/v1/status") else { return Vec::new() };
    let Ok(status) = serde_json::from_str::<StatusReport>(&reply.body) else { return Vec::new() };
    let mut names: Vec<String> = status.peers.into_iter().map(|p| p.name).collect();
    names.push(status.node.name);
    names.sort();
    names
}

/// Where a name goes on `command`'s line, by the word before it: (that word, or `""` for the first word
/// after the command, the kind of name).
fn places(command: &str) -> &'static [(&'static str, &'static str)] {
    match command {
        "vserver" => &[("", "vservers"), ("migrate", "hosts")],
        "vserver-agent" => &[
            ("evacuate", "hosts"),
            ("remove", "hosts"),
            ("--host", "hosts"),
            ("set", "vservers"),
            ("--primary", "hosts"),
        ],
        _ => &[],
    }
}

/// clap's bash script for `command`, its function renamed and wrapped by one that offers the names of
/// [`places`] (listed by `vserver --complete-names`) and leaves every other word to clap's.
pub fn with_names(script: &str, command: &str) -> String {
    let places = places(command);
    if places.is_empty() {
        return script.to_string();
    }
    let function = format!("_{}", command.replace('-', "__"));
    let inner = format!("{function}_words");
    let mut out = script.replacen(&format!("{function}() {{"), &format!("{inner}() {{"), 1);
    let mut cases = String::new();
    for (before, kind) in places {
        let test = if before.is_empty() {
            "$COMP_CWORD -eq 1 && $cur != -*".to_string()
        } else {
            format!("$prev == {before}")
        };
        cases.push_str(&format!(
            "    if [[ {test} ]]; then\n        \
             COMPREPLY=( $(compgen -W \"$(vserver --complete-names {kind} 2>/dev/null)\" -- \"$cur\") )\n        \
             return 0\n    fi\n"
        ));
    }
    out.push_str(&format!(
        "\n# Names where a name goes: the vservers configured here, the hosts this host's agent knows.\n\
         {function}() {{\n    local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         {cases}    {inner} \"$@\"\n}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_commands_with_names_are_wrapped() {
        let script = "_vserver__stat() {\n}\ncomplete -F _vserver__stat vserver-stat\n";
        assert_eq!(with_names(script, "vserver-stat"), script);
        let wrapped = with_names("_vserver() {\n    :\n}\ncomplete -F _vserver vserver\n", "vserver");
        assert!(wrapped.starts_with("_vserver_words() {"), "{wrapped}");
        assert!(wrapped.contains("complete -F _vserver vserver"), "{wrapped}");
        assert!(wrapped.contains("--complete-names hosts") && wrapped.contains("$prev == migrate"), "{wrapped}");
    }
}
