//! The replica session, for sync and migrate alike: the sender asks the standby to begin (it opens the
//! generation that is not current), copies into it by rsync passes through the tunnel, and commits (the conf
//! travels in the commit, and the copy becomes the standby's current replica) or aborts. Whatever fails once
//! the session is begun closes it, a failed commit included: nothing stays open on the standby, and the error
//! carries what the standby's side of the copy said.

use std::future::Future;
use std::time::Duration;

use crate::peer::{describe, Answer, PeerClient};
use crate::store::GenerationMeta;
use crate::wire::{AbortReply, BeginReply, BeginRequest, CommitRequest, ConfFile, Preflight};

/// How long an abort waits: short, since the standby may be what failed.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The routes of a replica session on a standby.
pub trait SessionPeers: Send + Sync {
    /// `GET /v1/vservers/NAME/preflight`: whether `host` can take a copy (room, rsync, lease).
    fn preflight(&self, host: &str, name: &str) -> impl Future<Output = Answer<Preflight>> + Send;
    /// `POST .../replica/begin`.
    fn begin(&self, host: &str, name: &str, req: &BeginRequest) -> impl Future<Output = Answer<BeginReply>> + Send;
    /// `POST .../replica/commit`.
    fn commit(
        &self,
        host: &str,
        name: &str,
        req: &CommitRequest,
    ) -> impl Future<Output = Answer<GenerationMeta>> + Send;
    /// `POST .../replica/abort`, answered within `timeout`.
    fn abort(
        &self,
        host: &str,
        name: &str,
        req: &CommitRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<AbortReply>> + Send;
}

impl SessionPeers for PeerClient {
    fn preflight(&self, host: &str, name: &str) -> impl Future<Output = Answer<Preflight>> + Send {
        PeerClient::preflight(self, host, name)
    }
    fn begin(&self, host: &str, name: &str, req: &BeginRequest) -> impl Future<Output = Answer<BeginReply>> + Send {
        PeerClient::begin(self, host, name, req)
    }
    fn commit(
        &self,
        host: &str,
        name: &str,
        req: &CommitRequest,
    ) -> impl Future<Output = Answer<GenerationMeta>> + Send {
        PeerClient::commit(self, host, name, req)
    }
    fn abort(
        &self,
        host: &str,
        name: &str,
        req: &CommitRequest,
        timeout: Duration,
    ) -> impl Future<Output = Answer<AbortReply>> + Send {
        PeerClient::abort(self, host, name, req, timeout)
    }
}

/// What a commit records with the copy.
#[derive(Debug, Clone)]
pub struct Commit {
    /// When the copy started (its first pass), ms since the epoch: what the replica is as of.
    pub started_unix_ms: u64,
    /// Whether the copy was made of a stopped or frozen vserver.
    pub consistent: bool,
    /// `sync`, `migrate`...
    pub kind: String,
    /// `NAME.conf` and `NAME.sh`, unless they were copied by rsync into the session.
    pub conf: Option<Vec<ConfFile>>,
}

/// One open replica session with a standby. End it with [`Session::commit`] or [`Session::abort`].
#[derive(Debug)]
#[must_use = "a session is closed by commit or abort"]
pub struct Session<'a, P: SessionPeers> {
    peers: &'a P,
    standby: &'a str,
    vserver: &'a str,
    id: String,
    generation: String,
}

impl<'a, P: SessionPeers> Session<'a, P> {
    /// Asks `standby` to open a session for a copy of `vserver` from `source`.
    pub async fn begin(peers: &'a P, standby: &'a str, vserver: &'a str, source: &str) -> Result<Self, String> {
        let req = BeginRequest { source: source.to_string() };
        let begun = describe(peers.begin(standby, vserver, &req).await, "begin", standby)?;
        Ok(Session { peers, standby, vserver, id: begun.session, generation: begun.generation })
    }

    /// The session's id, which the tunnel names to reach its generation.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The generation of the standby's replica the session fills (`a` or `b`).
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Makes the copy the standby's current replica. A refused or unanswered commit aborts the session.
    pub async fn commit(self, commit: Commit) -> Result<GenerationMeta, String> {
        let req = CommitRequest {
            session: self.id.clone(),
            started_unix_ms: commit.started_unix_ms,
            consistent: commit.consistent,
            kind: Some(commit.kind),
            conf: commit.conf,
        };
        match describe(self.peers.commit(self.standby, self.vserver, &req).await, "commit", self.standby) {
            Ok(meta) => Ok(meta),
            Err(e) => Err(self.abort(e).await),
        }
    }

    /// Closes the session without a new replica (the standby keeps its previous one); returns `why`, with
    /// what the standby's side of the copy said when it said something.
    pub async fn abort(self, why: String) -> String {
        let req = CommitRequest { session: self.id, started_unix_ms: 0, consistent: false, kind: None, conf: None };
        let said = self.peers.abort(self.standby, self.vserver, &req, ABORT_TIMEOUT).await;
        match said.ok().and_then(Result::ok).and_then(|r| r.receiver_errors) {
            Some(receiver) => format!("{why}; {} said: {receiver}", self.standby),
            None => why,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::peer::{Refused, Unreachable};

    /// A standby that records the calls and answers as told.
    #[derive(Default)]
    struct Standby {
        calls: Mutex<Vec<String>>,
        commit_fails: bool,
        receiver_says: Option<String>,
    }

    impl SessionPeers for Standby {
        async fn preflight(&self, _: &str, _: &str) -> Answer<Preflight> {
            Err(Unreachable("not used".into()))
        }
        async fn begin(&self, host: &str, name: &str, req: &BeginRequest) -> Answer<BeginReply> {
            self.calls.lock().unwrap().push(format!("begin {host} {name} from {}", req.source));
            Ok(Ok(BeginReply { session: "s1".into(), generation: "a".into() }))
        }
        async fn commit(&self, _: &str, _: &str, req: &CommitRequest) -> Answer<GenerationMeta> {
            self.calls.lock().unwrap().push(format!("commit {} {:?}", req.session, req.kind));
            if self.commit_fails {
                return Ok(Err(Refused { status: reqwest::StatusCode::CONFLICT, reason: "conf mismatch".into() }));
            }
            Ok(Ok(GenerationMeta {
                source: "h0".into(),
                started_unix_ms: req.started_unix_ms,
                finished_unix_ms: req.started_unix_ms + 1,
                conf_sha256: String::new(),
                consistent: req.consistent,
                kind: req.kind.clone().unwrap_or_default(),
            }))
        }
        async fn abort(&self, _: &str, _: &str, req: &CommitRequest, timeout: Duration) -> Answer<AbortReply> {
            self.calls.lock().unwrap().push(format!("abort {} within {} s", req.session, timeout.as_secs()));
            Ok(Ok(AbortReply { receiver_errors: self.receiver_says.clone() }))
        }
    }

    fn commit() -> Commit {
        Commit { started_unix_ms: 7, consistent: true, kind: "migrate".into(), conf: None }
    }

    #[tokio::test]
    async fn a_commit_makes_the_replica_and_closes_nothing_else() {
        let standby = Standby::default();
        let s = Session::begin(&standby, "h1", "web", "h0").await.unwrap();
        assert_eq!(s.id(), "s1");
        let meta = s.commit(commit()).await.unwrap();
        assert_eq!((meta.started_unix_ms, meta.kind.as_str()), (7, "migrate"));
        assert_eq!(*standby.calls.lock().unwrap(), ["begin h1 web from h0", "commit s1 Some(\"migrate\")"]);
    }

    #[tokio::test]
    async fn a_refused_commit_aborts_the_session_and_says_what_the_standby_said() {
        let standby = Standby { commit_fails: true, receiver_says: Some("disk full".into()), ..Default::default() };
        let s = Session::begin(&standby, "h1", "web", "h0").await.unwrap();
        let e = s.commit(commit()).await.unwrap_err();
        assert!(e.starts_with("commit refused by h1 (409 Conflict): conf mismatch"), "{e}");
        assert!(e.ends_with("; h1 said: disk full"), "{e}");
        assert_eq!(standby.calls.lock().unwrap().last().unwrap(), "abort s1 within 5 s");
    }

    #[tokio::test]
    async fn an_abort_keeps_the_reason_when_the_standby_says_nothing() {
        let standby = Standby::default();
        let s = Session::begin(&standby, "h1", "web", "h0").await.unwrap();
        assert_eq!(s.abort("tree: rsync exit 23".into()).await, "tree: rsync exit 23");
    }
}
