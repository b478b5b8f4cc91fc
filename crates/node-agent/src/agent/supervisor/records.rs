//! What the supervisor keeps on disk: the intents (`STATE_DIR/intents.json`), the failure accounts
//! (`STATE_DIR/failures.json`) and the agent's incarnation (`STATE_DIR/incarnation`), each written whole or
//! not at all.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex as StdMutex, PoisonError};

use isolate::VserverName;
use tokio::sync::Mutex as AsyncMutex;

use super::error::SupervisorError;
use crate::model::Intent;

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The intents, in memory and in `STATE_DIR/intents.json`; writes are serialized and land on disk before
/// memory changes.
pub(super) struct Intents {
    pub(super) path: PathBuf,
    pub(super) map: StdMutex<BTreeMap<String, Intent>>,
    pub(super) write: AsyncMutex<()>,
}

impl Intents {
    pub(super) fn get(&self, name: &VserverName) -> Option<Intent> {
        lock(&self.map).get(name.as_str()).copied()
    }

    pub(super) async fn set(&self, name: &VserverName, intent: Intent) -> Result<(), SupervisorError> {
        let _w = self.write.lock().await;
        let mut next = lock(&self.map).clone();
        if next.insert(name.to_string(), intent) == Some(intent) {
            return Ok(());
        }
        let path = self.path.clone();
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || save_intents(&path, &to_save))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        saved.map_err(|source| SupervisorError::State { path: self.path.clone(), source })?;
        *lock(&self.map) = next;
        Ok(())
    }
}

/// One vserver's failure account on this host, as `STATE_DIR/failures.json` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Account {
    /// When the agent restarted it after it died on its own, ms since the Unix epoch (those older than the
    /// window are dropped at the next restart).
    #[serde(default)]
    pub(super) restarted_unix_ms: Vec<u64>,
    /// Why it is in error (the restart limit), until an operator clears it.
    #[serde(default)]
    pub(super) error: Option<String>,
    /// When it was fenced on this host, ms since the Unix epoch (counted apart from restarts; those older
    /// than the window are dropped at the next fence).
    #[serde(default)]
    pub(super) fenced_unix_ms: Vec<u64>,
    /// The run the last counted fence ended (its process 1's start time), so one fence reported by the
    /// agent, the watchdog and the keeper counts once.
    #[serde(default)]
    pub(super) last_fenced_run: Option<u64>,
}

/// The failure accounts, in memory and in `STATE_DIR/failures.json`; writes are serialized and land on disk
/// before memory changes.
pub(super) struct Accounts {
    pub(super) path: PathBuf,
    pub(super) map: StdMutex<BTreeMap<String, Account>>,
    pub(super) write: AsyncMutex<()>,
}

impl Accounts {
    pub(super) fn get(&self, name: &VserverName) -> Option<Account> {
        lock(&self.map).get(name.as_str()).cloned()
    }

    /// Changes one account (creating it).
    pub(super) async fn update(&self, name: &VserverName, f: impl FnOnce(&mut Account)) -> Result<(), SupervisorError> {
        let mut account = self.get(name).unwrap_or_default();
        f(&mut account);
        self.set(name, Some(account)).await.map(drop)
    }

    /// Replaces one account (`None` removes it); returns the old one.
    pub(super) async fn set(
        &self,
        name: &VserverName,
        account: Option<Account>,
    ) -> Result<Option<Account>, SupervisorError> {
        let _w = self.write.lock().await;
        let mut next = lock(&self.map).clone();
        let old = match account {
            Some(a) => next.insert(name.to_string(), a),
            None => next.remove(name.as_str()),
        };
        let path = self.path.clone();
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let mut text = serde_json::to_string_pretty(&to_save).map_err(std::io::Error::other)?;
            text.push('\n');
            write_atomic(&path, text.as_bytes(), 0o644)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        saved.map_err(|source| SupervisorError::State { path: self.path.clone(), source })?;
        *lock(&self.map) = next;
        Ok(old)
    }
}

/// Reads `failures.json`; a missing file is no account at all.
pub(super) fn load_accounts(path: &Path) -> std::io::Result<BTreeMap<String, Account>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

pub(super) fn intents_path(state_dir: &Path) -> PathBuf {
    state_dir.join("intents.json")
}

/// Reads `intents.json` (name → "running" | "stopped"); a missing file is no intent at all.
pub(super) fn load_intents(path: &Path) -> std::io::Result<BTreeMap<String, Intent>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

pub(super) fn save_intents(path: &Path, intents: &BTreeMap<String, Intent>) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(intents).map_err(std::io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Writes `path` whole or not at all: a temporary file beside it, synced, then renamed over it.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: makes the rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Takes the next incarnation number, kept in `state_dir`: one more than the last, and at least the wall
/// clock's seconds since the Unix epoch, so a host reinstalled with an empty `state_dir` (the runbook's
/// replacement of a dead host) still starts above every incarnation its peers remember of its name.
pub fn next_incarnation(state_dir: &Path) -> std::io::Result<u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    next_incarnation_at(state_dir, now)
}

pub(super) fn next_incarnation_at(state_dir: &Path, now_secs: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("incarnation");
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            // Never start over at 0: peers would take our heartbeats for stale ones.
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = (last + 1).max(now_secs);
    write_atomic(&path, format!("{next}\n").as_bytes(), 0o644)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> VserverName {
        VserverName::parse(n).unwrap()
    }
    #[test]
    fn intents_round_trip_and_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = intents_path(dir.path());
        assert!(load_intents(&path).unwrap().is_empty(), "no file: no intent");
        let mut m = BTreeMap::new();
        m.insert("web".to_string(), Intent::Running);
        m.insert("db".to_string(), Intent::Stopped);
        save_intents(&path, &m).unwrap();
        assert_eq!(load_intents(&path).unwrap(), m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"web\": \"running\"") && text.contains("\"db\": \"stopped\""), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("intents.json")], "no temporary file left");
        // A failed write leaves the old file as it was.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::create_dir(blocked.join("intents.json")).unwrap();
        assert!(save_intents(&blocked.join("intents.json"), &m).is_err());
        assert_eq!(std::fs::read_dir(&blocked).unwrap().count(), 1, "the temporary file is removed");
        std::fs::write(&path, "{\"web\": \"dancing\"}").unwrap();
        assert_eq!(load_intents(&path).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }
    #[tokio::test]
    async fn an_intent_is_on_disk_before_it_is_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = intents_path(dir.path());
        let intents = Intents { path: path.clone(), map: StdMutex::default(), write: AsyncMutex::new(()) };
        intents.set(&name("web"), Intent::Running).await.unwrap();
        assert_eq!(load_intents(&path).unwrap().get("web"), Some(&Intent::Running));
        assert_eq!(intents.get(&name("web")), Some(Intent::Running));
        // When the file cannot be written, the intent is refused and memory keeps the old one.
        let gone = Intents { path: dir.path().join("no/such/dir/intents.json"), ..intents };
        let err = gone.set(&name("web"), Intent::Stopped).await.unwrap_err();
        assert!(matches!(err, SupervisorError::State { .. }), "{err}");
        assert_eq!(gone.get(&name("web")), Some(Intent::Running));
    }
    #[test]
    fn the_incarnation_grows_at_every_start_and_is_never_reset() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(next_incarnation_at(&state, 0).unwrap(), 1);
        assert_eq!(next_incarnation_at(&state, 0).unwrap(), 2);
        // Several starts within one second of the clock still grow.
        assert_eq!(next_incarnation_at(&state, 1000).unwrap(), 1000);
        assert_eq!(next_incarnation_at(&state, 1000).unwrap(), 1001);
        assert_eq!(std::fs::read_to_string(state.join("incarnation")).unwrap(), "1001\n");
        // A clock set back never takes it down.
        assert_eq!(next_incarnation_at(&state, 5).unwrap(), 1002);
        // A reinstalled host (no state) starts from the clock, above what its peers remember.
        let fresh = dir.path().join("fresh");
        assert!(next_incarnation(&fresh).unwrap() > 1_700_000_000);
        std::fs::write(state.join("incarnation"), "garbage").unwrap();
        assert_eq!(next_incarnation(&state).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }
    #[tokio::test]
    async fn the_failure_accounts_land_on_disk_and_a_clear_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failures.json");
        assert!(load_accounts(&path).unwrap().is_empty(), "no file: no account");
        let accounts = Accounts { path: path.clone(), map: StdMutex::default(), write: AsyncMutex::new(()) };
        accounts.update(&name("web"), |a| a.restarted_unix_ms.push(5)).await.unwrap();
        accounts.update(&name("web"), |a| a.error = Some("restarted 1 times in 60 s".into())).await.unwrap();
        let on_disk = load_accounts(&path).unwrap();
        assert_eq!(on_disk["web"].restarted_unix_ms, vec![5]);
        assert_eq!(on_disk["web"].error.as_deref(), Some("restarted 1 times in 60 s"));
        let old = accounts.set(&name("web"), None).await.unwrap().unwrap();
        assert_eq!(old.restarted_unix_ms, vec![5]);
        assert!(load_accounts(&path).unwrap().is_empty() && accounts.get(&name("web")).is_none());
    }
}
