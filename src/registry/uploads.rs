//! Blob upload sessions: create, append (with the spec's range rules), status, commit, cancel.
//!
//! Bytes stream from the request body through a bounded channel to a blocking thread that writes
//! the staging file and updates the running hash, so the network side and the disk/hash side
//! overlap and memory stays at a few batches per upload whatever the blob size. Body frames
//! (a few KiB to hundreds of KiB each, as hyper reads them) are not sent one by one: the network
//! side copies them into batch buffers of [`BATCH_BYTES`], and the writer hashes each batch and
//! hands it to the store in one write. One thread wake-up and one system call per batch instead
//! of per frame, and one copy in user space, as before (the old 1 MiB `BufWriter`'s). The batch
//! buffers go back to the network side for reuse: holding hyper's frames instead (no copy) made
//! hyper allocate a fresh read buffer for every read, and the page faults of those cost more
//! than the copy (BENCHMARKS.md, "verified pushes"). The running hash
//! lives in memory; after a restart it is recomputed from the staging file on first use, so
//! sessions survive restarts without any metadata write per chunk.
//!
//! Staged bytes count against the namespace's quota while they stream: each namespace has one
//! counter of the bytes its open sessions hold, and a body that would take the namespace past its
//! quota is cut there (403 with the quota message), Content-Length or not. Sessions a restart left
//! behind are counted once they are touched again. One user may hold at most
//! `max_upload_sessions_per_user` open sessions (anonymous dev-mode uploads are not counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::error::{Error, Result};
use super::names::{Algorithm, Digest, Hasher, RepositoryName};
use super::Registry;
use crate::meta;
use crate::quota::Stored;
use crate::storage::StaleUpload;

/// Body bytes gathered before they go to the writer thread at once.
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued between the network and the writer thread: with the one being gathered and
/// the one being written, at most four batch buffers (4 MiB) per upload exist.
const PIPE_DEPTH: usize = 2;

/// Bytes of a refused upload's body read and discarded before answering. A client still writing
/// its body when the error comes otherwise sees a broken pipe instead of the error message
/// (skopeo did, intermittently). Beyond the limit the connection is closed; nothing is written.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// In-memory state of one upload session.
pub(crate) struct Session {
    repository: String,
    len: u64,
    /// `None` after a restart or a failed write; rebuilt from the staging file when needed.
    hasher: Option<Hasher>,
}

pub(crate) type SessionHandle = Arc<tokio::sync::Mutex<Session>>;

/// Staged bytes, charged to one session and to its namespace's in-flight total together.
#[derive(Clone)]
struct Charge {
    session: Arc<AtomicU64>,
    namespace: Arc<AtomicU64>,
}

impl Charge {
    fn add(&self, n: u64) {
        self.session.fetch_add(n, Ordering::AcqRel);
        self.namespace.fetch_add(n, Ordering::AcqRel);
    }

    /// Makes the session's charge `len` (the staging file is the truth).
    fn set(&self, len: u64) {
        let old = self.session.swap(len, Ordering::AcqRel);
        if len >= old {
            self.namespace.fetch_add(len - old, Ordering::AcqRel);
        } else {
            self.namespace.fetch_sub(old - len, Ordering::AcqRel);
        }
    }
}

struct Entry {
    handle: SessionHandle,
    /// The user who opened it (`None`: anonymous, or a session reloaded after a restart).
    owner: Option<String>,
    charge: Charge,
}

#[derive(Default)]
struct SessionMap {
    sessions: HashMap<String, Entry>,
    /// Bytes staged by the open sessions of each namespace.
    staged: HashMap<String, Arc<AtomicU64>>,
}

#[derive(Default)]
pub(crate) struct Sessions(Mutex<SessionMap>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<SessionHandle> {
        self.lock().sessions.get(id).map(|e| Arc::clone(&e.handle))
    }

    fn charge(&self, id: &str) -> Option<Charge> {
        self.lock().sessions.get(id).map(|e| e.charge.clone())
    }

    /// Adds a session holding `len` staged bytes of `namespace` (or returns the one already there).
    fn insert(
        &self,
        id: &str,
        namespace: &str,
        owner: Option<String>,
        len: u64,
        session: SessionHandle,
    ) -> SessionHandle {
        let mut map = self.lock();
        if let Some(e) = map.sessions.get(id) {
            return Arc::clone(&e.handle);
        }
        let ns = Arc::clone(map.staged.entry(namespace.to_owned()).or_default());
        let charge = Charge {
            session: Arc::new(AtomicU64::new(0)),
            namespace: ns,
        };
        charge.add(len);
        map.sessions.insert(
            id.to_owned(),
            Entry {
                handle: Arc::clone(&session),
                owner,
                charge,
            },
        );
        session
    }

    fn owned_by(&self, owner: &str) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|e| e.owner.as_deref() == Some(owner))
            .count()
    }

    /// Forgets a session and releases its charge (its bytes were committed or deleted).
    fn remove(&self, id: &str) {
        let mut map = self.lock();
        if let Some(e) = map.sessions.remove(id) {
            e.charge.set(0);
        }
    }
}

/// An inclusive byte range from a `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

/// What a blob upload POST led to.
pub enum Started {
    /// A session to PATCH/PUT into.
    Session(String),
    /// The blob was mounted (or already present) and is complete.
    Complete(Digest),
}

impl Registry {
    /// Opens a new upload session in `repo` for `owner` (the user; `None` when anonymous),
    /// refused when the owner already holds the most sessions allowed.
    pub async fn start_upload(&self, repo: &RepositoryName, owner: Option<&str>) -> Result<String> {
        let max = self.limits.max_upload_sessions_per_user;
        if let Some(owner) = owner.filter(|_| max > 0) {
            let open = self.sessions.owned_by(owner);
            if open >= max {
                return Err(Error::Denied(format!(
                    "{owner} has {open} upload sessions open, the most allowed: finish or cancel one \
                     (DELETE its Location), or wait until unused ones expire"
                )));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let store = self.store.clone();
        let (sid, name) = (id.clone(), repo.as_str().to_owned());
        blocking(move || store.create_upload(&sid, &name)).await?;
        self.sessions.insert(
            &id,
            repo.namespace(),
            owner.map(str::to_owned),
            0,
            Arc::new(tokio::sync::Mutex::new(Session {
                repository: repo.as_str().to_owned(),
                len: 0,
                hasher: Some(Hasher::new(Algorithm::Sha256)),
            })),
        );
        Ok(id)
    }

    /// Links `digest` from `from` into `repo` if `from` holds it; the caller has already checked
    /// that the client may read `from`. Returns false when a normal upload is needed instead.
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        let (from_name, d) = (from.as_str().to_owned(), digest.as_str().to_owned());
        let (name, ns) = (repo.as_str().to_owned(), repo.namespace().to_owned());
        let defaults = self.limits.quota.get();
        // Check and link in one transaction: a blob GC has marked 'deleting' is not mounted
        // (the client uploads it instead), and one that is live cannot be marked in between.
        // A mount into another namespace costs that namespace the blob's size, like an upload.
        let mounted = self
            .db
            .write(move |tx| {
                let Some(size) = meta::blob_in_repository(tx, &from_name, &d)? else {
                    return Ok(Ok(false));
                };
                if let Err(e) = crate::quota::check_stored(
                    tx,
                    &defaults,
                    &ns,
                    Stored::Blob(&d),
                    size.max(0) as u64,
                )? {
                    return Ok(Err(e));
                }
                meta::link_blob(tx, &name, &ns, &d, size)?;
                Ok(Ok(true))
            })
            .await?;
        mounted.map_err(|e| Error::Denied(e.to_string()))
    }

    /// In one metadata transaction: checks the namespace's quota, runs `place` (which puts the
    /// bytes into the store) and links the blob into `repo`. Checking and linking together keeps
    /// concurrent pushes from both passing the check; placing the bytes only after the check
    /// means a refused upload never reaches the store.
    async fn commit_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: i64,
        place: impl FnOnce(&Digest) -> std::io::Result<()> + Send + 'static,
    ) -> Result<()> {
        enum Outcome {
            Linked,
            OverQuota(crate::quota::Exceeded),
            Storage(std::io::Error),
        }
        let (name, ns, d) = (
            repo.as_str().to_owned(),
            repo.namespace().to_owned(),
            digest.clone(),
        );
        let defaults = self.limits.quota.get();
        let outcome = self
            .db
            .write(move |tx| {
                if let Err(e) = crate::quota::check_stored(
                    tx,
                    &defaults,
                    &ns,
                    Stored::Blob(d.as_str()),
                    size.max(0) as u64,
                )? {
                    return Ok(Outcome::OverQuota(e));
                }
                if let Err(e) = place(&d) {
                    return Ok(Outcome::Storage(e));
                }
                meta::link_blob(tx, &name, &ns, d.as_str(), size)?;
                Ok(Outcome::Linked)
            })
            .await?;
        match outcome {
            Outcome::Linked => Ok(()),
            Outcome::OverQuota(e) => Err(Error::Denied(e.to_string())),
            Outcome::Storage(e) => Err(e.into()),
        }
    }

    /// Refuses, before a byte of it is written, an upload whose declared length (`incoming`,
    /// from Content-Length) cannot fit in the namespace's quota; a refused session ends. Only a
    /// pre-filter on a read connection: the binding check is the one in the commit transaction.
    /// Without a digest (a PATCH) the bytes are assumed new: clients check for blobs the
    /// namespace holds (HEAD or mount) before uploading them.
    pub async fn precheck_upload(
        &self,
        repo: &RepositoryName,
        session: Option<&str>,
        digest: Option<&Digest>,
        incoming: Option<u64>,
    ) -> Result<()> {
        let Some(incoming) = incoming.filter(|n| *n > 0) else {
            return Ok(());
        };
        let received = match session {
            Some(id) => self.upload_status(repo, id).await?,
            None => 0,
        };
        let needs = received.saturating_add(incoming);
        let (ns, d, defaults) = (
            repo.namespace().to_owned(),
            digest.map(|d| d.as_str().to_owned()),
            self.limits.quota.get(),
        );
        let verdict = self
            .db
            .read(move |c| match d {
                Some(d) => crate::quota::check_stored(c, &defaults, &ns, Stored::Blob(&d), needs),
                None => crate::quota::check(c, &defaults, &ns, needs),
            })
            .await?;
        match verdict {
            Ok(()) => Ok(()),
            Err(exceeded) => {
                if let Some(id) = session {
                    self.cancel_upload(repo, id).await?;
                }
                Err(Error::Denied(exceeded.to_string()))
            }
        }
    }

    /// Finds the session, checking that it belongs to `repo`; reloads it after a restart.
    async fn session(&self, repo: &RepositoryName, id: &str) -> Result<SessionHandle> {
        if let Some(s) = self.sessions.get(id) {
            if s.lock().await.repository == repo.as_str() {
                return Ok(s);
            }
            return Err(Error::BlobUploadUnknown(id.to_owned()));
        }
        // Session ids are UUIDs we generated; anything else cannot name a staging file.
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(Error::BlobUploadUnknown(id.to_owned()));
        }
        let store = self.store.clone();
        let sid = id.to_owned();
        match blocking(move || store.upload_state(&sid)).await? {
            Some((repository, len)) if repository == repo.as_str() => Ok(self.sessions.insert(
                id,
                repo.namespace(),
                None,
                len,
                Arc::new(tokio::sync::Mutex::new(Session {
                    repository,
                    len,
                    hasher: None,
                })),
            )),
            _ => Err(Error::BlobUploadUnknown(id.to_owned())),
        }
    }

    /// Bytes received so far by a session.
    pub async fn upload_status(&self, repo: &RepositoryName, id: &str) -> Result<u64> {
        let s = self.session(repo, id).await?;
        let len = s.lock().await.len;
        Ok(len)
    }

    /// Appends a chunk. With a `Content-Range`, the chunk must start exactly where the upload
    /// ends; otherwise 416 tells the client how much was received.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: &str,
        range: Option<ChunkRange>,
        location: String,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let handle = self.session(repo, id).await?;
        let mut session = handle.lock().await;
        if let Some(r) = range {
            if r.start != session.len || r.end < r.start {
                return Err(Error::RangeNotSatisfiable {
                    received: session.len,
                    location,
                });
            }
        }
        self.write_chunk(repo, id, &mut session, body).await?;
        Ok(session.len)
    }

    /// Appends a final chunk (may be empty), verifies the digest and commits the blob.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: &str,
        digest: &Digest,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let handle = self.session(repo, id).await?;
        let mut session = handle.lock().await;
        self.write_chunk(repo, id, &mut session, body).await?;
        let computed = match session.hasher.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => {
                let (store, sid, alg) = (self.store.clone(), id.to_owned(), digest.algorithm());
                blocking(move || store.rehash_upload(&sid, alg))
                    .await?
                    .0
                    .finish()
            }
        };
        if &computed != digest {
            // Nothing of a failed upload stays behind.
            self.discard(id).await?;
            return Err(Error::DigestInvalid(format!(
                "uploaded content has digest {computed}, not {digest}: the upload was discarded, retry it"
            )));
        }
        let size = session.len as i64;
        // The expensive fsync of the data happens here, outside the metadata write lock; the
        // one in `commit_upload` then finds nothing left to flush.
        let (store, sid) = (self.store.clone(), id.to_owned());
        blocking(move || store.sync_upload(&sid)).await?;
        let (store, sid) = (self.store.clone(), id.to_owned());
        // From the existence check in commit_upload to the link (which resurrects a blob GC is
        // removing), GC must not unlink this digest's file.
        let _locked = crate::storage::guard::lock(digest.as_str()).await;
        let outcome = self
            .commit_link(repo, digest, size, move |d| store.commit_upload(&sid, d))
            .await;
        match outcome {
            Ok(()) => {
                crate::telemetry::blob_committed(size as u64);
                self.sessions.remove(id);
                Ok(())
            }
            Err(e @ Error::Denied(_)) => {
                // Refused for the quota: the session ends and nothing of it stays.
                self.discard(id).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Cancels a session and drops its bytes.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &str) -> Result<()> {
        let handle = self.session(repo, id).await?;
        let _guard = handle.lock().await;
        self.discard(id).await
    }

    /// Upload sessions untouched for `max_age_secs`, as [`crate::storage::Storage::stale_uploads`]
    /// finds them, discarded unless `dry_run`: the one expiry rule, for the server's periodic
    /// sweep and for every prune (whose dry run only reports them).
    pub async fn expire_uploads(
        &self,
        max_age_secs: u64,
        dry_run: bool,
    ) -> Result<Vec<StaleUpload>> {
        let (cutoff, store) = (age_cutoff(max_age_secs), self.store.clone());
        let stale = blocking(move || store.stale_uploads(cutoff)).await?;
        if !dry_run {
            for upload in &stale {
                self.discard(&upload.session).await?;
            }
        }
        Ok(stale)
    }

    /// Removes build scratch directories untouched for `max_age_secs` (a build that died without
    /// cleaning up); returns how many went. Not uploads, but swept on the same schedule.
    pub async fn remove_stale_scratch(&self, max_age_secs: u64) -> Result<usize> {
        let (cutoff, store) = (age_cutoff(max_age_secs), self.store.clone());
        blocking(move || store.remove_stale_scratch_dirs(cutoff)).await
    }

    async fn discard(&self, id: &str) -> Result<()> {
        self.sessions.remove(id);
        let (store, sid) = (self.store.clone(), id.to_owned());
        blocking(move || store.discard_upload(&sid)).await
    }

    /// The namespace's quota limit and usage (`None`: no limit), from the quota check itself:
    /// asking it for `u64::MAX` bytes makes any limit refuse, and the refusal carries both.
    async fn quota_room(&self, namespace: &str) -> Result<Option<(u64, u64)>> {
        let (ns, defaults) = (namespace.to_owned(), self.limits.quota.get());
        let verdict = self
            .db
            .read(move |c| crate::quota::check(c, &defaults, &ns, u64::MAX))
            .await?;
        Ok(verdict.err().map(|e| (e.limit, e.used)))
    }

    /// Streams `body` onto the end of the session's staging file, hashing as it goes, and cuts
    /// it where the namespace's staged bytes would pass its quota (the session then ends).
    async fn write_chunk<S, E>(
        &self,
        repo: &RepositoryName,
        id: &str,
        session: &mut Session,
        mut body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let mut file = {
            let (store, sid) = (self.store.clone(), id.to_owned());
            blocking(move || store.open_upload(&sid)).await?
        };
        // The file is the truth: a write that failed half-way (or a crash) may have left more
        // bytes than the in-memory state knows of.
        if file.len() != session.len {
            session.len = file.len();
            session.hasher = None;
        }
        let charge = self
            .sessions
            .charge(id)
            .ok_or_else(|| Error::BlobUploadUnknown(id.to_owned()))?;
        charge.set(session.len);
        let room = self.quota_room(repo.namespace()).await?;
        let mut hasher = session.hasher.take();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(PIPE_DEPTH);
        // Written batches come back to be filled again: no allocation (and no page faults)
        // per batch once the first few exist.
        let (recycle, mut recycled) = tokio::sync::mpsc::channel::<Vec<u8>>(PIPE_DEPTH + 1);
        let writer = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            while let Some(mut batch) = rx.blocking_recv() {
                if let Err(e) = file.append(&batch) {
                    result = Err(e);
                    break;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&batch);
                }
                batch.clear();
                let _ = recycle.try_send(batch);
            }
            (file.len(), hasher, result)
        });
        let mut receive_error = None;
        let mut over_quota = None;
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        'body: while let Some(frame) = body.next().await {
            match frame {
                Ok(chunk) => {
                    let n = chunk.len() as u64;
                    if let Some((limit, used)) = room {
                        let staged = charge.namespace.load(Ordering::Acquire).saturating_add(n);
                        if used.saturating_add(staged) > limit {
                            crate::telemetry::quota_rejected();
                            over_quota = Some(crate::quota::Exceeded {
                                namespace: repo.namespace().to_owned(),
                                limit,
                                used,
                                needs: staged,
                            });
                            break;
                        }
                    }
                    // Charged before it is written: concurrent uploads to the namespace see it.
                    charge.add(n);
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        let take = rest.len().min(BATCH_BYTES - batch.len());
                        batch.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if batch.len() == BATCH_BYTES {
                            let next = recycled
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
                            if tx.send(std::mem::replace(&mut batch, next)).await.is_err() {
                                break 'body;
                            }
                        }
                    }
                }
                Err(e) => {
                    receive_error = Some(e.to_string());
                    break;
                }
            }
        }
        // What arrived before the body ended (or was cut) is stored: the client may resume.
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        let (len, hasher, written) = writer
            .await
            .map_err(|e| Error::Internal(format!("upload writer: {e}")))?;
        session.len = len;
        charge.set(len);
        // After a failed write the hash no longer matches the file; rebuild it lazily.
        session.hasher = if written.is_ok() { hasher } else { None };
        written?;
        if let Some(exceeded) = over_quota {
            // Refused for the quota: the session ends and nothing of it stays, as when the
            // declared length is refused up front. The client reads the answer, not a reset.
            drain(body).await;
            self.discard(id).await?;
            return Err(Error::Denied(exceeded.to_string()));
        }
        if let Some(e) = receive_error {
            return Err(Error::BlobUploadInvalid(format!(
                "request body ended early ({e}); {len} bytes are stored: check the upload status and resume"
            )));
        }
        Ok(())
    }
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes of a refused body (see there).
pub async fn drain<S, E>(mut body: S)
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// Runs blocking storage work off the async threads.
/// The Unix time `max_age_secs` ago.
fn age_cutoff(max_age_secs: u64) -> i64 {
    meta::now().saturating_sub(i64::try_from(max_age_secs).unwrap_or(i64::MAX))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("storage task: {e}")))?
        .map_err(Error::from)
}
