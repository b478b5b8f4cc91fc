//! The replication tunnel: rsync between agents over the agents' own authenticated HTTP port, with no sshd
//! and no rsync daemon.
//!
//! The sending agent runs rsync with `-e "vserver-tunnel --url ... --session ..."`. rsync starts that helper
//! with the remote command it wants (`HOST rsync --server OPTIONS . DEST`); the helper sends it to the receiving
//! agent in an upgrade request (`POST /v1/replicas/NAME/rsync`, `Upgrade: vserver-rsync/1`), with the cluster
//! secret, and from then on carries rsync's stdin and stdout over the connection. The receiving agent checks
//! the command the way a restricted key would: only a receiving `rsync --server`, only options from a short
//! list (none naming a path), and only the destination `tree/` or `conf/`, which it resolves itself inside the
//! generation that the sync session is filling. Anything else is refused before rsync runs.

/// The protocol name in the `Upgrade` header.
pub const UPGRADE: &str = "vserver-rsync/1";
/// Header carrying the sync session the rsync belongs to.
pub const SESSION_HEADER: &str = "x-vserver-session";
/// Header carrying the remote command rsync asked for, as a JSON array of strings.
pub const ARGV_HEADER: &str = "x-rsync-argv";

/// Which part of a generation an rsync fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The vserver's tree (`tree/`).
    Tree,
    /// Its conf files (`conf/`).
    Conf,
}

impl Part {
    /// The directory inside a generation.
    pub fn dir(self) -> &'static str {
        match self {
            Part::Tree => "tree/",
            Part::Conf => "conf/",
        }
    }
}

/// A receiving rsync the agent agreed to run: `rsync ARGS . PART` in the generation's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCommand {
    /// `--server` and the checked options, in rsync's order.
    pub args: Vec<String>,
    /// The destination inside the generation.
    pub part: Part,
}

/// Short options a receiving server may get (all flags: none takes an argument). The letters after `e` in
/// the same group are protocol capabilities, not options.
/// (Not `K`, `L`, `k`: following symlinks on the receiving side could write outside the replica.)
const SHORT_FLAGS: &str = "lHogDtpAXrxSvzcIuWnqREOJUhb";

/// Long options a receiving server may get (exact, or `NAME=` followed by a value made of `VALUE_CHARS`).
const LONG_EXACT: &[&str] = &[
    "--delete",
    "--delete-before",
    "--delete-during",
    "--delete-delay",
    "--delete-after",
    "--delete-excluded",
    // Continuous replication's batches: a listed path the sender no longer has is removed from the replica,
    // as --delete would remove it.
    "--delete-missing-args",
    "--numeric-ids",
    "--ignore-errors",
    "--force",
];
const LONG_WITH_VALUE: &[&str] =
    &["--info=", "--compress-level=", "--checksum-choice=", "--compress-choice=", "--timeout="];

fn value_ok(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ',' || c == '-')
}

/// Checks the remote command rsync asked for (`rsync --server ... . DEST`) and returns what the agent will run.
pub fn check_server_argv(argv: &[String]) -> Result<ServerCommand, String> {
    let mut it = argv.iter().map(String::as_str);
    match it.next() {
        Some("rsync") => {}
        other => return Err(format!("the remote command must be rsync, not {other:?}")),
    }
    if it.next() != Some("--server") {
        return Err("the remote command must be `rsync --server`".into());
    }
    let mut args = vec!["--server".to_string()];
    loop {
        let Some(arg) = it.next() else {
            return Err("the remote command has no destination".into());
        };
        if arg == "." {
            break;
        }
        if arg == "--sender" {
            return Err("the tunnel only receives into a replica; it never sends (--sender refused)".into());
        }
        let ok = if let Some(long) = arg.strip_prefix("--") {
            let _ = long;
            LONG_EXACT.contains(&arg) || LONG_WITH_VALUE.iter().any(|p| arg.strip_prefix(p).is_some_and(value_ok))
        } else if let Some(window) = arg.strip_prefix("-@") {
            window.parse::<i64>().is_ok()
        } else if let Some(group) = arg.strip_prefix('-') {
            let (flags, caps) = group.split_once('e').unwrap_or((group, ""));
            !flags.is_empty()
                && flags.chars().all(|c| SHORT_FLAGS.contains(c))
                && caps.chars().all(|c| c.is_ascii_alphabetic() || c == '.')
        } else {
            false
        };
        if !ok {
            return Err(format!("rsync option {arg:?} is not allowed through the tunnel"));
        }
        args.push(arg.to_string());
    }
    let dest = it.next().ok_or("the remote command has no destination")?;
    let part = match dest {
        "tree/" | "tree" => Part::Tree,
        "conf/" | "conf" => Part::Conf,
        other => {
            return Err(format!("destination {other:?} refused: a replica receives only into its own tree/ or conf/"))
        }
    };
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?} after the destination"));
    }
    Ok(ServerCommand { args, part })
}

/// Runs a checked receiving rsync in `dir` with its stdin and stdout on the upgraded connection, until it
/// ends or the session is cancelled (its rsync is then killed).
pub async fn receive(
    on_upgrade: hyper::upgrade::OnUpgrade,
    command: ServerCommand,
    dir: std::path::PathBuf,
    rsync_bin: std::path::PathBuf,
    active: super::replication::ActiveGuard,
    mut cancel: tokio::sync::watch::Receiver<bool>,
    vserver: String,
) {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upgraded = match on_upgrade.await {
        Ok(u) => hyper_util::rt::TokioIo::new(u),
        Err(e) => return tracing::warn!(vserver, error = %e, "tunnel: the connection was not upgraded"),
    };
    let spawned = tokio::process::Command::new(&rsync_bin)
        .args(&command.args)
        .arg(".")
        .arg(command.part.dir())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return tracing::error!(vserver, bin = %rsync_bin.display(), error = %e, "tunnel: cannot run rsync"),
    };
    let (mut stdin, stdout, mut stderr) =
        (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (from_net, mut to_net) = tokio::io::split(upgraded);
    const BUF: usize = 256 * 1024;
    let upstream = tokio::spawn(async move {
        let mut from_net = tokio::io::BufReader::with_capacity(BUF, from_net);
        let _ = tokio::io::copy_buf(&mut from_net, &mut stdin).await;
        let _ = stdin.shutdown().await;
    });
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut text).await;
        text
    });
    let downstream = async {
        let mut stdout = tokio::io::BufReader::with_capacity(BUF, stdout);
        let _ = tokio::io::copy_buf(&mut stdout, &mut to_net).await;
        let _ = to_net.shutdown().await;
    };
    let status = tokio::select! {
        (_, status) = async { tokio::join!(downstream, child.wait()) } => status.ok(),
        () = cancelled(&mut cancel) => {
            tracing::warn!(vserver, "tunnel: session cancelled; its rsync is killed");
            let _ = child.kill().await;
            None
        }
    };
    upstream.abort();
    let stderr = errors.await.unwrap_or_default();
    match status {
        Some(s) if s.success() => tracing::debug!(vserver, part = command.part.dir(), "tunnel: rsync done"),
        Some(s) => {
            tracing::warn!(vserver, part = command.part.dir(), status = %s, stderr = stderr.trim(), "tunnel: rsync failed");
            let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = said[said.len().saturating_sub(3)..].join("; ");
            active.report(if tail.is_empty() { format!("its rsync ended with {s}") } else { tail });
        }
        None => {}
    }
}

/// Resolves once the session is cancelled (never if its sender is gone without cancelling).
async fn cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn what_our_own_rsync_sends_is_accepted() {
        let ok = check_server_argv(&argv(
            "rsync --server -lHogDtpAXrxSe.iLsfxCIvu --delete -@-1 --numeric-ids --info=STATS2 --timeout=60 . tree/",
        ))
        .unwrap();
        assert_eq!(ok.part, Part::Tree);
        assert_eq!(ok.args[0], "--server");
        assert_eq!(ok.args.len(), 7);
        let conf = check_server_argv(&argv("rsync --server -lHogDtpAXrSe.iLsfxCIvu --delete --numeric-ids . conf/"));
        assert_eq!(conf.unwrap().part, Part::Conf);
    }

    #[test]
    fn a_batch_deletes_what_it_lists_and_nothing_writes_a_replica_in_place() {
        // What a continuous replication batch's rsync sends (rsync 3.2 and later).
        let batch = "rsync --server -lHogDtpAXrRxSe.iLsfxCIvu --delete --delete-missing-args --numeric-ids . tree/";
        assert!(check_server_argv(&argv(batch)).is_ok());
        // Points in time share the replica's files: a receiver writing into them in place would change the
        // points too.
        for in_place in ["--inplace", "--append", "--append-verify"] {
            let asked = format!("rsync --server -lHogDtpAXrxSe.iLsfxCIvu {in_place} . tree/");
            assert!(check_server_argv(&argv(&asked)).is_err(), "{in_place}");
        }
    }

    #[test]
    fn other_paths_senders_and_path_options_are_refused() {
        for bad in [
            "rsync --server -logDtpre.iLsfxCIvu . /etc/",
            "rsync --server -logDtpre.iLsfxCIvu . ../x/tree/",
            "rsync --server -logDtpre.iLsfxCIvu . tree/../../etc",
            "rsync --server --sender -logDtpre.iLsfxCIvu . tree/",
            "rsync --server -logDtpre.iLsfxCIvu --temp-dir=/tmp . tree/",
            "rsync --server -logDtpre.iLsfxCIvu --log-file=/etc/passwd . tree/",
            "rsync --server -logDtpre.iLsfxCIvu --link-dest=/ . tree/",
            "rsync --server -T/tmp -logDtpre.iLsfxCIvu . tree/",
            "rsync --server -logDtprKe.iLsfxCIvu . tree/",
            "rsync --server -logDtpre.iLsfxCIvu --info=../x . tree/",
            "rsync --server -logDtpre.iLsfxCIvu . tree/ extra",
            "rsync --server -logDtpre.iLsfxCIvu",
            "sh -c rm",
            "rsync --daemon . tree/",
        ] {
            assert!(check_server_argv(&argv(bad)).is_err(), "{bad} must be refused");
        }
        let err = check_server_argv(&argv("rsync --server -logDtpre.iLsfxCIvu . /etc/")).unwrap_err();
        assert!(err.contains("/etc/"), "{err}");
    }
}
