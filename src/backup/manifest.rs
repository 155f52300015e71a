//! `DEST/backup.json`: what a backup holds, written last (a backup directory without it is
//! incomplete), read first by a restore.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{files, io, BackupError, MANIFEST};
use crate::meta::backup::StoreCounts;

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// One file of the backup with its size and sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup directory.
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    /// Where it came from (config and TLS files: their path on the server host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The audit chain's head in the backup's files, and what the metadata's index knew.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
    /// The last record the snapshot's index holds (a restore indexes the ones after it).
    pub indexed_seq: u64,
}

/// What one run copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    /// Blobs new in DEST, and how: hard links or copies.
    pub blobs_new: u64,
    pub blobs_linked: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs already in DEST from an earlier backup (not copied again).
    pub blobs_present: u64,
    /// Blobs in DEST the store no longer records (removed from DEST).
    pub blobs_removed: u64,
    /// Blobs the snapshot records whose bytes were gone from the store.
    pub blobs_missing: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339 time of the metadata snapshot.
    pub created: String,
    pub hpc_registry_version: String,
    pub schema_version: i64,
    /// The data directory backed up.
    pub data_dir: String,
    pub meta: FileEntry,
    /// `blobs.txt`: `digest size` per line, every blob the snapshot records.
    pub blob_list: FileEntry,
    pub counts: StoreCounts,
    pub audit: Vec<FileEntry>,
    pub audit_head: ChainHead,
    /// The data directory's own files (`token.key`, …), under `files/`.
    pub files: Vec<FileEntry>,
    /// The config file and the TLS files it names, under `config/`.
    pub config: Vec<FileEntry>,
    pub last_run: RunStats,
}

impl Manifest {
    /// Writes `DIR/backup.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| BackupError::Invalid(format!("cannot encode the manifest: {e}")))?;
        files::write_durable(&path, |f| std::io::Write::write_all(f, &text)).map_err(io(&path))
    }

    /// Reads `DIR/backup.json`; a directory without one holds no complete backup.
    pub fn read(dir: &Path) -> Result<Manifest, BackupError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::Invalid(format!(
                    "{} holds no complete backup: {MANIFEST} is missing (a backup that did not finish, or not a backup directory)",
                    dir.display()
                )))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            BackupError::Invalid(format!("{} is not a backup manifest: {e}", path.display()))
        })?;
        if m.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "{} is backup format {}, this build reads format {FORMAT}",
                path.display(),
                m.format
            )));
        }
        Ok(m)
    }
}
