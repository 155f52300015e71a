//! Bytes: the content-addressed blob store and the staging area for uploads.
//!
//! [`Storage`] is the whole interface the rest of the registry uses: open a blob for ranged
//! reads, stage an upload (a writer), commit it under its digest, delete, size, list. It knows
//! nothing about repositories, permissions or metadata: whether a digest may be read through a
//! repository is decided in `meta`. Callers hold a [`BlobStore`] and never see a path; the
//! filesystem store ([`fs::FsStore`]) is the first implementation, and an S3-compatible backend
//! would be a second one.
//!
//! A trait object, not an enum: every call is per request or per multi-MiB window, where one
//! indirect call costs nothing measurable next to the read or the hash (BENCHMARKS.md, storage).
//! The one place a backend's nature matters, the SIF build's need for layer blobs as files, is
//! [`Storage::materialize`]: a hard link on the filesystem store, a download on any other.

pub mod blob;
pub mod fs;
pub mod guard;
pub mod ranges;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use blob::{Blob, BlobRead, Staged};

use crate::names::{Algorithm, Digest, Hasher};

/// What a committed blob occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Its length in bytes.
    pub size: u64,
    /// The space it takes in the backend (allocated blocks on a filesystem), as far as known.
    pub disk_bytes: u64,
}

/// An upload session [`Storage::stale_uploads`] found: what discarding it gives back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaleUpload {
    pub session: String,
    /// Staged bytes plus the session's bookkeeping (its repository file on a filesystem).
    pub size: u64,
    /// The space all that takes in the backend, as far as known.
    pub disk_bytes: u64,
}

/// One page of [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub digest: Digest,
    pub size: u64,
}

/// The operations a blob backend provides. Blocking: callers run them off the async threads.
///
/// Committed blobs are immutable and appear atomically: a reader sees either nothing or the
/// whole verified blob. Uploads are staged under a session id chosen by the caller, survive a
/// restart (the backend remembers each session's repository and length) and become a blob only
/// through [`Storage::commit_upload`], after the caller verified their digest.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Size and footprint of a committed blob, or `None` if its bytes are absent.
    fn stat(&self, digest: &Digest) -> io::Result<Option<Stat>>;

    /// Opens a committed blob for positioned reads of any range, or `None` if absent. An open
    /// blob stays readable after [`Storage::delete`] removed it (a download in flight finishes).
    fn open(&self, digest: &Digest) -> io::Result<Option<Blob>>;

    /// Removes a committed blob; what it occupied, or `None` if it was not there. Only garbage
    /// collection calls this, after the metadata says nothing references the blob.
    fn delete(&self, digest: &Digest) -> io::Result<Option<Stat>>;

    /// Committed blobs in digest order, after `after` (exclusive), at most `limit` of them.
    fn list(&self, after: Option<&Digest>, limit: usize) -> io::Result<Vec<Listed>>;

    /// Moves a committed blob out of the store, where a person can inspect it, for a scrub that
    /// found its bytes corrupt. Returns where it went, for the report and the log.
    fn quarantine(&self, digest: &Digest, now: i64) -> io::Result<String>;

    /// Starts a new, empty upload session for `repository`.
    fn create_upload(&self, session: &str, repository: &str) -> io::Result<()>;

    /// The repository and current length of an upload session, or `None` if it does not exist.
    fn upload_state(&self, session: &str) -> io::Result<Option<(String, u64)>>;

    /// Opens a session's staged bytes for appending at their end.
    fn open_upload(&self, session: &str) -> io::Result<Box<dyn Staged>>;

    /// Reads a session's staged bytes from the start (to re-hash them after a restart).
    fn read_upload(&self, session: &str) -> io::Result<Box<dyn io::Read + Send>>;

    /// Makes a session's staged bytes durable, before the short commit that publishes them.
    fn sync_upload(&self, session: &str) -> io::Result<()>;

    /// Makes a verified upload visible as blob `digest` (durably, atomically). If the blob
    /// already exists (deduplication) the staged copy is dropped.
    fn commit_upload(&self, session: &str, digest: &Digest) -> io::Result<()>;

    /// Drops an upload session (cancel, failed verification, expiry).
    fn discard_upload(&self, session: &str) -> io::Result<()>;

    /// Upload sessions last written before `cutoff` (Unix seconds), in session order, with
    /// what each occupies. Only looks: the one expiry rule, used by the server's sweep and by
    /// every prune (whose dry run reports them), which discard them with
    /// [`Storage::discard_upload`]. Build scratch is not an upload (see below).
    fn stale_uploads(&self, cutoff: i64) -> io::Result<Vec<StaleUpload>>;

    /// Removes build scratch directories last changed before `cutoff` (left behind by a build
    /// that died without cleaning up); returns how many went.
    fn remove_stale_scratch_dirs(&self, cutoff: i64) -> io::Result<usize>;

    /// A local scratch directory for one build, on the same filesystem as the store when the
    /// store is a filesystem (so that [`Storage::import_file`] is a rename).
    fn scratch_dir(&self) -> io::Result<tempfile::TempDir>;

    /// Removes every build scratch directory: at start-up, under the data-directory lock, when
    /// no build can be running. Returns how many there were.
    fn remove_scratch_dirs(&self) -> io::Result<usize>;

    /// Makes a local file (a built SIF, in a [`Storage::scratch_dir`]) blob `digest`, consuming
    /// the file. The caller computed `digest` from the file's bytes.
    fn import_file(&self, path: &Path, digest: &Digest) -> io::Result<()>;

    /// Stores a small blob held in memory (e.g. the `{}` config of an ORAS artifact) if absent.
    fn put_small(&self, bytes: &[u8], digest: &Digest) -> io::Result<()>;

    /// Puts a committed blob's bytes at the local path `target` (which must not exist), for a
    /// tool that reads files rather than streams (the Apptainer backend's OCI layout). The
    /// filesystem store hard-links (no copy, when `target` is on its filesystem); this default,
    /// for any other backend, streams a copy. `Ok(false)` if the blob is absent.
    fn materialize(&self, digest: &Digest, target: &Path) -> io::Result<bool> {
        match self.open(digest)? {
            Some(blob) => write_local_copy(&blob, target).map(|()| true),
            None => Ok(false),
        }
    }
}

/// Streams `blob` into a new local file at `target`, durably ([`Storage::materialize`]'s copy).
pub fn write_local_copy(blob: &Blob, target: &Path) -> io::Result<()> {
    let mut out = std::fs::File::create_new(target)?;
    io::copy(&mut blob.reader(), &mut out)?;
    out.sync_all()
}

/// The store handle the registry, farm and lifecycle share: cheap to clone, any backend.
#[derive(Debug, Clone)]
pub struct BlobStore(Arc<dyn Storage>);

impl BlobStore {
    /// The filesystem store below `data_dir` (created if needed): the configured backend today.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        Ok(Self::new(fs::FsStore::open(data_dir)?))
    }

    pub fn new(backend: impl Storage + 'static) -> Self {
        BlobStore(Arc::new(backend))
    }

    /// Size of a committed blob, if its bytes are present.
    pub fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(self.0.stat(digest)?.map(|s| s.size))
    }

    /// Recomputes the running hash of a staged upload (after a restart lost it from memory).
    pub fn rehash_upload(&self, session: &str, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
        hash_reader(self.0.read_upload(session)?, algorithm, |_| {})
    }
}

impl std::ops::Deref for BlobStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Size of the reads that hash a stream (a staged upload, a blob being scrubbed).
pub const HASH_CHUNK: usize = 1 << 20;

/// Hashes everything `reader` yields; `progress` sees each chunk's length (for rate limits).
pub fn hash_reader(
    mut reader: impl io::Read,
    algorithm: Algorithm,
    mut progress: impl FnMut(u64),
) -> io::Result<(Hasher, u64)> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok((hasher, len)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
        progress(n as u64);
    }
}

/// Creates a data directory (and missing parents) readable by its owner only: it holds every
/// user's private images. An existing directory keeps the mode the admin gave it.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
