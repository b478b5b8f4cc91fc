//! `vserver-watchdog`: the host's last line of fencing. The agent arms it and pets it; when the petting
//! stops for the armed timeout (the agent is frozen, hung, killed and not back), it kills every vserver of
//! the host through its cgroup and sets their interfaces down first, so that nothing of them answers any
//! more, not even ARP. A separate, minimal process, because an agent that is paused cannot fence itself.
//!
//! Optionally it also keeps the kernel's watchdog device (`--device /dev/watchdog`) fed for as long as it
//! runs itself: should this process hang or die, the machine resets.
//!
//! Protocol, one line per request on the Unix socket `RUN_DIR/watchdog.sock` (root only), one line back:
//! `arm MS` (the deadline is MS from now, and each `pet` moves it again), `pet`, `pet MS` (the deadline is
//! MS from now: the agent gives what is left of its lease), `disarm` (a clean stop of the agent's guard),
//! `status` (`armed REMAINING_MS`, `disarmed`, or `fenced UNIX_MS VSERVERS`). Closing the connection changes
//! nothing: an agent that dies leaves the watchdog armed, and a restarted agent that
//! pets in time finds its vservers untouched.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use isolate::cgroup::Cgroups;
use node_agent::dirs::Dirs;

/// Kills this host's vservers when the agent stops petting it.
///
/// The agent arms it over the socket (`arm MS`) and pets it (`pet`); when no pet comes for MS, every
/// vserver of the host has its interfaces set down and is killed through its cgroup (`cgroup.kill`), so an
/// agent that is frozen or hung cannot leave a vserver running that another host is about to take over.
/// Requests, one line each: `arm MS`, `pet`, `disarm`, `status`.
#[derive(Debug, Parser)]
#[command(name = "vserver-watchdog", version)]
struct Cli {
    #[command(flatten)]
    dirs: Dirs,
    /// The socket the agent talks to (default: RUN_DIR/watchdog.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A kernel watchdog device to keep fed while this process runs (e.g. /dev/watchdog).
    #[arg(long)]
    device: Option<PathBuf>,
    /// How often the device is fed, ms.
    #[arg(long, default_value_t = 1000)]
    device_interval_ms: u64,
}

/// Shortest and longest timeout `arm` accepts, ms.
const ARM_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

#[derive(Debug, Clone, Copy)]
enum Guard {
    Disarmed,
    Armed { deadline: Instant, timeout: Duration },
    Fenced { at_unix_ms: u128, vservers: usize },
}

struct Shared {
    guard: Mutex<Guard>,
    changed: Condvar,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vserver-watchdog: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Guard> {
    shared.guard.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context;
    let socket = cli.socket.clone().unwrap_or_else(|| cli.dirs.run_dir.join("watchdog.sock"));
    let place = cli.dirs.cgroup();
    // The cgroup layout must be readable now, not found broken at the moment of fencing.
    Cgroups::list(&place).with_context(|| format!("cannot list the vservers' cgroups under {}", place.parent))?;
    let listener = bind(&socket)?;
    let mut device = match &cli.device {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open the watchdog device {}", path.display()))?,
        ),
        None => None,
    };
    for sig in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_signal),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &action) }.context("installing the signal handlers")?;
    }
    let shared = Arc::new(Shared { guard: Mutex::new(Guard::Disarmed), changed: Condvar::new() });
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new().name("accept".into()).spawn(move || accept(listener, shared))?;
    }
    eprintln!("vserver-watchdog: listening on {} (disarmed until the agent arms it)", socket.display());
    // Under systemd (`Type=notify`): the socket is there, so the agent, ordered after this unit, finds it.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        eprintln!("vserver-watchdog: cannot tell the service manager that it is ready: {e}");
    }
    let feed_every = Duration::from_millis(cli.device_interval_ms.max(10));
    let mut fed = Instant::now() - feed_every;
    while !STOP.load(Ordering::SeqCst) {
        if let Some(dev) = device.as_mut() {
            if fed.elapsed() >= feed_every {
                if let Err(e) = dev.write_all(b"\0").and_then(|()| dev.flush()) {
                    eprintln!("vserver-watchdog: cannot feed the watchdog device: {e}");
                }
                fed = Instant::now();
            }
        }
        let guard = lock(&shared);
        let now = Instant::now();
        let expired = matches!(*guard, Guard::Armed { deadline, .. } if deadline <= now);
        if !expired {
            let wait = match *guard {
                Guard::Armed { deadline, .. } => deadline - now,
                _ => Duration::from_millis(200),
            };
            let wait = wait.min(Duration::from_millis(200)).min(feed_every);
            drop(shared.changed.wait_timeout(guard, wait).unwrap_or_else(|e| e.into_inner()));
            continue;
        }
        let Guard::Armed { timeout, .. } = *guard else { continue };
        drop(guard);
        eprintln!("vserver-watchdog: no pet for {} ms: fencing this host's vservers", timeout.as_millis());
        let vservers = node_agent::fence::fence_all(&place, |line| eprintln!("vserver-watchdog: {line}"));
        let at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut guard = lock(&shared);
        // A pet or an arm that came while fencing does not undo it: the vservers are dead.
        *guard = Guard::Fenced { at_unix_ms, vservers };
    }
    if let Some(dev) = device.as_mut() {
        // The magic close: the kernel stops expecting feeds (where the driver allows it).
        let _ = dev.write_all(b"V");
    }
    if matches!(*lock(&shared), Guard::Armed { .. }) {
        eprintln!("vserver-watchdog: stopped while armed: this host's vservers are no longer guarded");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Binds the socket (root only), replacing a stale one that nothing listens on.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            anyhow::bail!("another watchdog already listens on {}", socket.display());
        }
        std::fs::remove_file(socket).with_context(|| format!("cannot remove the stale {}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    Ok(listener)
}

fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming().flatten() {
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new().name("client".into()).spawn(move || serve(conn, &shared));
    }
}

fn serve(conn: UnixStream, shared: &Shared) {
    let Ok(mut out) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let answer = answer(line.trim(), shared);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Carries out one request and says how it went.
fn answer(request: &str, shared: &Shared) -> String {
    let mut words = request.split_whitespace();
    let mut guard = lock(shared);
    let reply = match (words.next(), words.next(), words.next()) {
        (Some("arm"), Some(ms), None) => match ms.parse::<u64>() {
            Ok(ms) if ARM_RANGE.contains(&ms) => {
                let timeout = Duration::from_millis(ms);
                *guard = Guard::Armed { deadline: Instant::now() + timeout, timeout };
                format!("ok armed {ms}")
            }
            _ => format!(
                "error the timeout must be a number of ms from {} to {}, not {ms:?}",
                ARM_RANGE.start(),
                ARM_RANGE.end()
            ),
        },
        // `pet MS`: the next pet is due within MS (the agent's lease decides it), armed or not before.
        (Some("pet"), Some(ms), None) => match (ms.parse::<u64>(), *guard) {
            (_, Guard::Fenced { at_unix_ms, vservers }) => {
                format!("error fenced at {at_unix_ms}: {vservers} vservers killed; arm again to guard new ones")
            }
            (Ok(ms), _) if ms <= *ARM_RANGE.end() => {
                let timeout = Duration::from_millis(ms);
                *guard = Guard::Armed { deadline: Instant::now() + timeout, timeout };
                "ok".to_string()
            }
            _ => format!("error the time to the next pet must be a number of ms up to {}, not {ms:?}", ARM_RANGE.end()),
        },
        (Some("pet"), None, None) => match *guard {
            Guard::Armed { timeout, .. } => {
                *guard = Guard::Armed { deadline: Instant::now() + timeout, timeout };
                "ok".to_string()
            }
            Guard::Disarmed => "error not armed".to_string(),
            Guard::Fenced { at_unix_ms, vservers } => {
                format!("error fenced at {at_unix_ms}: {vservers} vservers killed; arm again to guard new ones")
            }
        },
        (Some("disarm"), None, None) => {
            if !matches!(*guard, Guard::Fenced { .. }) {
                *guard = Guard::Disarmed;
            }
            "ok disarmed".to_string()
        }
        (Some("status"), None, None) => match *guard {
            Guard::Disarmed => "disarmed".to_string(),
            Guard::Armed { deadline, .. } => {
                format!("armed {}", deadline.saturating_duration_since(Instant::now()).as_millis())
            }
            Guard::Fenced { at_unix_ms, vservers } => format!("fenced {at_unix_ms} {vservers}"),
        },
        _ => format!("error unknown request {request:?} (arm MS, pet, pet MS, disarm, status)"),
    };
    drop(guard);
    shared.changed.notify_all();
    reply
}
