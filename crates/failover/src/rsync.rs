//! Running rsync for replication, through `duct`: the flags a root file system needs, progress and the
//! statistics read from rsync's own output, exit codes in words, and a run that can be killed from another
//! thread. Blocking: async callers run it on a blocking thread.
//!
//! The flags, always set: `-aHAXS` (archive, hard links, ACLs, xattrs, sparse files), `--numeric-ids` (owners
//! as numbers: the vserver's users are not the host's), `--delete` (the copy holds nothing the source does
//! not), `-x` (one file system), `--modify-window=-1` (modification times compared to the nanosecond: at whole
//! seconds a same-size rewrite within one second would be skipped), `--info=progress2,stats2 --no-h`
//! (progress and totals in plain numbers, parsed here).

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The flags of every run, in order.
pub const FLAGS: &[&str] =
    &["-aHAXS", "--numeric-ids", "--delete", "-x", "--modify-window=-1", "--info=progress2,stats2", "--no-h"];

/// The oldest rsync with every flag above (`--info=progress2` came with 3.1.0; `--modify-window=-1`, a
/// nanosecond comparison, with 3.1.3).
pub const MIN_VERSION: (u32, u32, u32) = (3, 1, 3);

/// Lines of rsync's stderr kept for the error message.
const STDERR_LINES: usize = 20;

/// One rsync run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The rsync binary.
    pub rsync_bin: PathBuf,
    /// What to copy (a trailing `/` copies a directory's content).
    pub sources: Vec<PathBuf>,
    /// Where: a local path or `HOST:path`.
    pub dest: String,
    /// The remote shell (`-e`), one string that rsync splits on spaces.
    pub remote_shell: Option<String>,
    /// A pass while the source may change: files vanishing (exit 24) is then accepted.
    pub live: bool,
    /// More arguments, before the sources (filters and the like).
    pub extra_args: Vec<String>,
    /// Give up when no data moves for this long (`--timeout`): a cut link ends the run (exit 30) instead of
    /// hanging it.
    pub io_timeout: Option<Duration>,
}

/// Progress of a run, from `--info=progress2`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Bytes transferred so far.
    pub bytes: u64,
    /// Percent done (of what rsync knows of so far).
    pub percent: u8,
}

/// The totals of a run, from `--info=stats2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files in the source (all types).
    pub files: u64,
    /// Regular files transferred (changed or new).
    pub regular_files_transferred: u64,
    /// Files deleted from the copy.
    pub deleted_files: u64,
    /// Size of all source files.
    pub total_file_size: u64,
    /// Size of the files transferred.
    pub total_transferred_file_size: u64,
    /// Bytes sent as new data.
    pub literal_data: u64,
    /// Bytes found already in the copy.
    pub matched_data: u64,
    /// Bytes sent over the wire.
    pub total_bytes_sent: u64,
    /// Bytes received.
    pub total_bytes_received: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// rsync's exit code (20 or more when killed, see [`explain_exit`]).
    pub exit_code: i32,
    /// How long it took.
    pub duration: Duration,
    /// Its totals, when it printed them.
    pub stats: Option<Stats>,
    /// The last lines of its stderr.
    pub stderr_tail: String,
}

/// A run that did not happen, or broke.
#[derive(Debug, thiserror::Error)]
pub enum RsyncError {
    /// rsync could not be started.
    #[error("cannot run {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading its output failed.
    #[error("reading rsync's output: {0}")]
    Io(#[from] std::io::Error),
    /// Killed by a signal (by [`Running::kill`] or from outside).
    #[error("rsync was killed{}", .signal.map(|s| format!(" by signal {s}")).unwrap_or_default())]
    Killed {
        /// The signal, when known.
        signal: Option<i32>,
    },
    /// `rsync --version` said something unexpected.
    #[error("{bin}: cannot read the version from {text:?}")]
    Version {
        /// The binary.
        bin: PathBuf,
        /// What it printed.
        text: String,
    },
    /// An rsync too old for the flags used.
    #[error("{bin} is rsync {found}; at least {}.{}.{} is needed (--modify-window=-1, --info=progress2)",
            MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2)]
    TooOld {
        /// The binary.
        bin: PathBuf,
        /// Its version.
        found: String,
    },
}

impl Job {
    /// The exact arguments of the run (after the binary).
    pub fn argv(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = FLAGS.iter().map(OsString::from).collect();
        if let Some(t) = self.io_timeout {
            args.push(format!("--timeout={}", t.as_secs().max(1)).into());
        }
        if let Some(shell) = &self.remote_shell {
            args.push("-e".into());
            args.push(shell.into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args.extend(self.sources.iter().map(|s| s.clone().into_os_string()));
        args.push(self.dest.clone().into());
        args
    }

    /// Starts the run.
    pub fn start(&self) -> Result<Running, RsyncError> {
        // As an OsString, not a Path: duct runs a bare Path from the current directory, skipping PATH.
        let reader = duct::cmd(self.rsync_bin.as_os_str().to_owned(), self.argv())
            .stdin_null()
            .stderr_capture()
            .unchecked()
            .reader()
            .map_err(|source| RsyncError::Spawn { bin: self.rsync_bin.clone(), source })?;
        Ok(Running { reader: Arc::new(reader), started: Instant::now() })
    }

    /// Runs to the end, calling `progress` as rsync reports it.
    pub fn run(&self, progress: impl FnMut(Progress)) -> Result<Outcome, RsyncError> {
        self.start()?.wait(progress)
    }
}

/// A running rsync.
pub struct Running {
    reader: Arc<duct::ReaderHandle>,
    started: Instant,
}

/// Kills a [`Running`] rsync from another thread.
#[derive(Clone)]
pub struct Killer(Arc<duct::ReaderHandle>);

impl Killer {
    /// Kills the rsync (its wait then returns [`RsyncError::Killed`]).
    pub fn kill(&self) {
        let _ = self.0.kill();
    }
}

impl Running {
    /// A handle that kills this run from another thread.
    pub fn killer(&self) -> Killer {
        Killer(Arc::clone(&self.reader))
    }

    /// Reads rsync's output to its end, calling `progress` at each progress record, and returns the outcome.
    pub fn wait(self, mut progress: impl FnMut(Progress)) -> Result<Outcome, RsyncError> {
        let mut out = String::new();
        let mut record = Vec::new();
        let mut buf = [0u8; 8192];
        let mut reader: &duct::ReaderHandle = &self.reader;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The reader reports a non-zero exit as an error only when checked; unchecked, an error
                    // here is a real I/O error or a kill.
                    return match self.reader.try_wait() {
                        Ok(Some(output)) => Ok(self.outcome(output, &out)),
                        _ => Err(RsyncError::Io(e)),
                    };
                }
            };
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    let line = String::from_utf8_lossy(&record).to_string();
                    record.clear();
                    if let Some(p) = parse_progress(&line) {
                        progress(p);
                    } else if !line.trim().is_empty() {
                        out.push_str(&line);
                        out.push('\n');
                    }
                } else {
                    record.push(b);
                }
            }
        }
        let output = loop {
            match self.reader.try_wait()? {
                Some(o) => break o.clone(),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let outcome = self.outcome(&output, &out);
        match output.status.code() {
            Some(_) => Ok(outcome),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Err(RsyncError::Killed { signal: output.status.signal() })
            }
        }
    }

    fn outcome(&self, output: &std::process::Output, stdout: &str) -> Outcome {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
        Outcome {
            exit_code: output.status.code().unwrap_or(20),
            duration: self.started.elapsed(),
            stats: parse_stats(stdout),
            stderr_tail: tail,
        }
    }
}

fn number(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(|c| *c != ',').collect();
    digits.parse().ok()
}

/// A `--info=progress2` record: `BYTES PERCENT% RATE TIME [(xfr#N, to-chk=M/T)]`.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let mut words = line.split_whitespace();
    let bytes = number(words.next()?)?;
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = words.next()?;
    if !rate.ends_with("/s") {
        return None;
    }
    Some(Progress { bytes, percent })
}

/// The `--info=stats2` summary (`None` if rsync did not print one, e.g. when it failed early).
pub fn parse_stats(text: &str) -> Option<Stats> {
    let mut s = Stats::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let first = value.split_whitespace().next().and_then(number);
        let Some(v) = first else { continue };
        let field = match key.trim() {
            "Number of files" => &mut s.files,
            "Number of regular files transferred" => &mut s.regular_files_transferred,
            "Number of deleted files" => &mut s.deleted_files,
            "Total file size" => &mut s.total_file_size,
            "Total transferred file size" => &mut s.total_transferred_file_size,
            "Literal data" => &mut s.literal_data,
            "Matched data" => &mut s.matched_data,
            "Total bytes sent" => &mut s.total_bytes_sent,
            "Total bytes received" => &mut s.total_bytes_received,
            _ => continue,
        };
        *field = v;
        seen = true;
    }
    seen.then_some(s)
}

/// rsync's exit code in words an operator can act on.
pub fn explain_exit(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "syntax or usage error (a bug here: the command line was refused)",
        2 => "protocol incompatibility between the two rsyncs",
        3 => "errors selecting input/output files or directories (a path is missing or not a directory)",
        4 => "an action not supported by the other side (e.g. ACLs or xattrs on a file system without them)",
        5 => "error starting the client-server protocol",
        6 => "the daemon cannot append to its log file",
        10 => "error in socket I/O",
        11 => "error in file I/O (often: the destination's file system is full or read-only)",
        12 => "error in the rsync protocol data stream (the connection or the other side died)",
        13 => "errors with program diagnostics",
        14 => "error in the interprocess communication code",
        20 => "rsync was interrupted or killed by a signal",
        21 => "some error returned by waitpid()",
        22 => "error allocating memory buffers",
        23 => {
            "partial transfer: some files could not be read or written (permissions, I/O errors, a full file \
               system); the copy is incomplete"
        }
        24 => "some source files vanished during the copy (normal while the vserver runs)",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send or receive",
        35 => "timeout waiting for a daemon connection",
        255 => "the remote shell (the tunnel) failed: it could not connect or was refused",
        _ => "unknown rsync exit code",
    }
}

/// Whether a run that ended with `code` may become a replica: 0 always; 24 (files vanished) only on a live
/// pass, where the source changes under rsync; 23 and everything else never.
pub fn accepted(code: i32, live: bool) -> bool {
    code == 0 || (code == 24 && live)
}

/// The version of `bin` (`rsync --version`), refused if older than [`MIN_VERSION`].
pub fn version(bin: &std::path::Path) -> Result<(u32, u32, u32), RsyncError> {
    let out = duct::cmd(bin.as_os_str().to_owned(), ["--version"])
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .map_err(|source| RsyncError::Spawn { bin: bin.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let bad = || RsyncError::Version { bin: bin.to_path_buf(), text: text.lines().next().unwrap_or("").to_string() };
    let word = text.split_whitespace().skip_while(|w| *w != "version").nth(1).ok_or_else(bad)?;
    let mut parts = word.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>());
    let v = (
        parts.next().ok_or_else(bad)?.map_err(|_| bad())?,
        parts.next().unwrap_or(Ok(0)).map_err(|_| bad())?,
        parts.next().unwrap_or(Ok(0)).map_err(|_| bad())?,
    );
    if v < MIN_VERSION {
        return Err(RsyncError::TooOld { bin: bin.to_path_buf(), found: format!("{}.{}.{}", v.0, v.1, v.2) });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "Number of files: 3 (reg: 2, dir: 1)\nNumber of created files: 3 (reg: 2, dir: 1)\n\
        Number of deleted files: 0\nNumber of regular files transferred: 2\nTotal file size: 30000002 bytes\n\
        Total transferred file size: 30000002 bytes\nLiteral data: 30000002 bytes\nMatched data: 0 bytes\n\
        File list size: 0\nFile list generation time: 0.001 seconds\nFile list transfer time: 0.000 seconds\n\
        Total bytes sent: 30007497\nTotal bytes received: 68\n\nsent 30007497 bytes  received 68 bytes\n";

    #[test]
    fn stats_and_progress_parse_from_rsyncs_own_output() {
        let s = parse_stats(STATS).unwrap();
        assert_eq!((s.files, s.regular_files_transferred), (3, 2));
        assert_eq!((s.total_file_size, s.total_transferred_file_size), (30_000_002, 30_000_002));
        assert_eq!((s.total_bytes_sent, s.total_bytes_received, s.matched_data), (30_007_497, 68, 0));
        // With thousands separators too (rsync without --no-h).
        let s = parse_stats("Total bytes sent: 1,234,567\n").unwrap();
        assert_eq!(s.total_bytes_sent, 1_234_567);
        assert!(parse_stats("rsync: connection unexpectedly closed\n").is_none());
        let p = parse_progress("       30000000  99%  635.09MB/s    0:00:00 (xfr#1, to-chk=1/3)").unwrap();
        assert_eq!(p, Progress { bytes: 30_000_000, percent: 99 });
        assert_eq!(parse_progress("          32,768   0%    0.00kB/s    0:00:00  ").unwrap().bytes, 32_768);
        assert!(parse_progress("Number of files: 3").is_none());
        assert!(parse_progress("sent 30007497 bytes  received 68 bytes").is_none());
    }

    #[test]
    fn exit_codes_are_explained_and_classified() {
        assert!(explain_exit(23).contains("partial transfer"));
        assert!(explain_exit(24).contains("vanished"));
        assert!(explain_exit(12).contains("died"));
        assert!(accepted(0, false) && accepted(0, true));
        assert!(accepted(24, true) && !accepted(24, false));
        assert!(!accepted(23, true) && !accepted(12, true));
    }

    #[test]
    fn the_argv_holds_every_flag_then_the_shell_filters_sources_and_destination() {
        let job = Job {
            rsync_bin: "rsync".into(),
            sources: vec!["/vservers/web/".into()],
            dest: "h1:tree/".into(),
            remote_shell: Some("vserver-tunnel --url http://h1:7070".into()),
            live: true,
            extra_args: vec!["--exclude=*".into()],
            io_timeout: None,
        };
        let argv: Vec<String> = job.argv().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(&argv[..FLAGS.len()], FLAGS);
        assert_eq!(
            argv[FLAGS.len()..],
            ["-e", "vserver-tunnel --url http://h1:7070", "--exclude=*", "/vservers/web/", "h1:tree/"]
        );
    }

    #[test]
    fn the_rsync_on_path_is_found_and_new_enough() {
        // Found on PATH by its bare name, as the agent runs it by default.
        let v = version(std::path::Path::new("rsync")).unwrap();
        assert!(v >= MIN_VERSION, "{v:?}");
    }
}
