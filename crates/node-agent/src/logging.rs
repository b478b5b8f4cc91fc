//! The binaries' logs on stderr, as a service manager keeps them: colours only on a terminal; when stderr is
//! the journal (systemd says so in `JOURNAL_STREAM`), each line begins with its syslog priority (`<4>`), which
//! journald reads as the entry's level, and carries no time of its own, journald stamping every entry.
//!
//! What is logged: `VSERVER_LOG` (tracing's filter syntax, e.g. `debug` or `info,failover=debug`), else the
//! binary's default, always after [`QUIET`]. openraft is silenced there: it writes several lines per retry
//! while a peer is unreachable, naming hosts by node id, and the ownership table logs each peer's changes
//! itself, by host name. An operator brings it back with `VSERVER_LOG=info,openraft=debug`.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The directives every filter begins with; `VSERVER_LOG`'s own directives for the same targets win.
pub const QUIET: &str = "openraft=off";

/// Starts logging to stderr, at the level `VSERVER_LOG` gives, else `default` (e.g. `info`). A second call
/// changes nothing.
pub fn init(default: &str) {
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(std::env::var("VSERVER_LOG").ok().as_deref(), default))
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let _ = if journal {
        builder.event_format(SyslogPriority(Format::default().without_time())).try_init()
    } else {
        builder.try_init()
    };
}

/// The filter of `wanted` (`VSERVER_LOG`), or of `default` when it is unset, empty or unreadable, after
/// [`QUIET`].
fn filter(wanted: Option<&str>, default: &str) -> EnvFilter {
    let wanted = wanted.map(str::trim).filter(|w| !w.is_empty());
    wanted
        .and_then(|w| EnvFilter::builder().parse(format!("{QUIET},{w}")).ok())
        .unwrap_or_else(|| EnvFilter::builder().parse_lossy(format!("{QUIET},{default}")))
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` holds its device and inode
/// (`DEV:INODE`), which a child that redirected stderr elsewhere would not match.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else { return false };
    journal_stream_is(&stream, stat.st_dev, stat.st_ino)
}

/// Whether `JOURNAL_STREAM`'s value `stream` names the file of device `dev` and inode `ino`.
fn journal_stream_is(stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = stream.split_once(':') else { return false };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald reads from a line's `<N>` prefix (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that begins each line with the event's syslog priority.
struct SyslogPriority<E>(E);

impl<S, N, E> FormatEvent<S, N> for SyslogPriority<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openraft_is_quiet_unless_the_operator_names_it() {
        let quiet = filter(Some("info"), "warn").to_string();
        assert!(quiet.contains("openraft=off"), "{quiet}");
        let loud = filter(Some("info,openraft=debug"), "warn").to_string();
        assert!(loud.contains("openraft=debug") && !loud.contains("openraft=off"), "{loud}");
        let default = filter(None, "warn").to_string();
        assert!(default.contains("openraft=off") && default.contains("warn"), "{default}");
        assert_eq!(filter(Some("  "), "warn").to_string(), default, "an empty VSERVER_LOG is the default");
        assert_eq!(filter(Some("info,[bad"), "warn").to_string(), default, "so is an unreadable one");
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("8", 8, 12345));
        assert!(!journal_stream_is("", 0, 0));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].map(priority), [3, 4, 6, 7]);
    }
}
