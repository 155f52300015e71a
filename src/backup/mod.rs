//! Online backup and restore (`hpc-registry admin backup DEST`, `admin restore SRC DATA_DIR`).
//!
//! A backup is taken beside a serving server, on its data directory, without its lock: it only
//! reads. (The server runs sandboxed with write access to its data directory only, so it could
//! not write DEST itself; and a site's backup job runs on the server host anyway.) What it copies:
//!
//! 1. every blob the store holds, into `DEST/blobs/` (hard links when DEST is on the same
//!    filesystem, else copies; blobs are immutable, so a blob already in DEST is skipped and a
//!    second backup copies only what is new);
//! 2. the metadata, with SQLite's online backup API ([`crate::meta::backup::snapshot`]);
//! 3. the blobs that snapshot records and step 1 did not see (pushed meanwhile); blobs in DEST
//!    that it does not record are removed, so DEST mirrors the store as of the snapshot;
//! 4. the audit log's files, after the snapshot, so they hold every record its index knows (a
//!    restore indexes the rest), with the chain head;
//! 5. the data directory's own files (the token signing key, …) and the config file with the
//!    TLS files it names;
//! 6. last, `DEST/backup.json`, the manifest of what DEST holds. It is removed when a backup
//!    starts, so DEST is consistent exactly when the manifest exists: once the command exits 0.
//!
//! Blobs copied in step 1 that the snapshot still records are the ones it names; a blob removed
//! by garbage collection between steps 1 and 2 is not in the snapshot either. A restore
//! ([`restore`]) copies DEST into a fresh data directory and proves it: every blob of the
//! manifest present with its size, every manifest's blobs and every ready SIF's blob present, the
//! audit chain intact.

mod files;
pub mod manifest;
pub mod restore;
pub mod take;

pub use manifest::Manifest;
pub use restore::{restore, RestoreReport};
pub use take::{take, BackupReport, Sources};

/// Names inside a backup directory.
pub const MANIFEST: &str = "backup.json";
pub const META: &str = "meta.db";
pub const BLOB_LIST: &str = "blobs.txt";
pub const BLOBS: &str = "blobs";
pub const AUDIT: &str = "audit";
pub const FILES: &str = "files";
pub const CONFIG: &str = "config";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Invalid(String),
}

/// Wraps an I/O error with the path it concerns.
fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `DEST/blobs/<alg>/<xx>/<hex>` of `digest`.
fn blob_path(root: &std::path::Path, digest: &crate::names::Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    root.join(BLOBS)
        .join(digest.algorithm().name())
        .join(&hex[..2.min(hex.len())])
        .join(hex)
}
