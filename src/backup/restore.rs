//! Restoring a backup into a fresh data directory, then proving it complete.

use std::fs;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::files::{self, Placed};
use super::manifest::{FileEntry, Manifest};
use super::{blob_path, io, BackupError, AUDIT, BLOB_LIST, FILES, META};
use crate::audit::{self, chain::Report, AuditLog};
use crate::lock::DataLock;
use crate::meta::{self, Db};
use crate::names::Digest;
use crate::storage::BlobStore;

/// What a restore did and found. `problems` empty: the restored store is complete.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub data_dir: String,
    /// When the backup's metadata snapshot was taken.
    pub backup_created: String,
    pub counts: meta::backup::StoreCounts,
    pub blobs: u64,
    pub blobs_linked: u64,
    pub blobs_copied: u64,
    /// Distinct blobs manifests reference, and ready SIFs, each checked present.
    pub manifest_blobs_checked: u64,
    pub sifs_checked: u64,
    pub audit: Report,
    pub problems: Vec<String>,
    pub duration_ms: u64,
}

impl RestoreReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.audit.ok()
    }
}

/// At most this many missing things are named one by one.
const MAX_NAMED: usize = 20;

/// Restores the backup in `src` into `data_dir`, which must not exist or be empty.
pub fn restore(src: &Path, data_dir: &Path) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let manifest = Manifest::read(src)?;
    match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Invalid(format!(
                    "{} is not empty: a restore goes into a fresh directory (never over a store)",
                    data_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(data_dir)(e)),
    }
    crate::storage::create_private_dir(data_dir).map_err(io(data_dir))?;
    // No server may start on it half-restored.
    let _lock = DataLock::acquire(data_dir)
        .map_err(|e| BackupError::Invalid(format!("cannot lock {}: {e}", data_dir.display())))?;
    let mut problems = Vec::new();

    // The files, each checked against the manifest as it is copied.
    let meta_path = data_dir.join(META);
    restore_file(src, &manifest.meta, &meta_path, &mut problems)?;
    files::private_dir(&data_dir.join(AUDIT)).map_err(io(data_dir))?;
    for e in &manifest.audit {
        let name = e.name.strip_prefix(&format!("{AUDIT}/")).unwrap_or(&e.name);
        restore_file(src, e, &data_dir.join(AUDIT).join(name), &mut problems)?;
    }
    for e in &manifest.files {
        let name = e.name.strip_prefix(&format!("{FILES}/")).unwrap_or(&e.name);
        restore_file(src, e, &data_dir.join(name), &mut problems)?;
    }

    // The blobs of the list, each present with its size, into the new store.
    let list = src.join(BLOB_LIST);
    let (_, list_sha) = files::sha256_file(&list).map_err(io(&list))?;
    if list_sha != manifest.blob_list.sha256 {
        problems.push(format!("{BLOB_LIST} does not match the manifest's sha256"));
    }
    let store = BlobStore::open(data_dir).map_err(io(data_dir))?;
    let scratch = store.scratch_dir().map_err(io(data_dir))?;
    let (mut blobs, mut linked, mut copied, mut missing) = (0u64, 0u64, 0u64, 0usize);
    let reader = std::io::BufReader::new(fs::File::open(&list).map_err(io(&list))?);
    for line in reader.lines() {
        let line = line.map_err(io(&list))?;
        let Some((digest, size)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(d), Ok(size)) = (Digest::parse(digest), size.parse::<u64>()) else {
            problems.push(format!("{BLOB_LIST}: unreadable line {line:?}"));
            continue;
        };
        let from = blob_path(src, &d);
        match fs::metadata(&from) {
            Ok(m) if m.len() == size => {}
            found => {
                missing += 1;
                if missing <= MAX_NAMED {
                    problems.push(match found {
                        Ok(m) => format!(
                            "blob {digest}: {} bytes in the backup, {size} recorded",
                            m.len()
                        ),
                        Err(_) => format!("blob {digest}: not in the backup"),
                    });
                }
                continue;
            }
        }
        let staged = scratch.path().join(d.hex());
        match files::link_or_copy(&from, &staged).map_err(io(&from))? {
            Placed::Linked => linked += 1,
            Placed::Copied => copied += 1,
        }
        store.import_file(&staged, &d).map_err(io(&staged))?;
        blobs += 1;
    }
    if missing > MAX_NAMED {
        problems.push(format!("… and {} more blobs missing", missing - MAX_NAMED));
    }
    drop(scratch);

    // The metadata (migrated if the backup is older), the audit index caught up, then proofs.
    let db = Db::open(&meta_path)?;
    if let Err(e) = AuditLog::open(data_dir, Arc::clone(&db)) {
        problems.push(format!("the audit log cannot be opened: {e}"));
    }
    let audit = audit::log::verify_file(&data_dir.join(audit::FILE), Some(&db))?;
    let (manifest_blobs_checked, sifs_checked) = check_blobs(&db, &store, &mut problems)?;
    let counts = db.read_blocking(meta::backup::store_counts)?;
    Ok(RestoreReport {
        data_dir: data_dir.display().to_string(),
        backup_created: manifest.created,
        counts,
        blobs,
        blobs_linked: linked,
        blobs_copied: copied,
        manifest_blobs_checked,
        sifs_checked,
        audit,
        problems,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Copies one file of the backup to `to`, checking its size and sha256.
fn restore_file(
    src: &Path,
    entry: &FileEntry,
    to: &Path,
    problems: &mut Vec<String>,
) -> Result<(), BackupError> {
    let from = src.join(&entry.name);
    let (bytes, sha256) = files::copy_durable(&from, to, None).map_err(io(&from))?;
    if bytes != entry.bytes || sha256 != entry.sha256 {
        problems.push(format!(
            "{}: {bytes} bytes with sha256 {sha256}, the manifest says {} bytes with {}",
            entry.name, entry.bytes, entry.sha256
        ));
    }
    Ok(())
}

/// Every blob a manifest references and every ready SIF's blob must be in the store with its
/// recorded size; returns how many of each were checked.
fn check_blobs(
    db: &Db,
    store: &BlobStore,
    problems: &mut Vec<String>,
) -> Result<(u64, u64), BackupError> {
    let mut missing = Vec::new();
    let mut check = |what: &str, digest: &str, size: Option<i64>| {
        let found = Digest::parse(digest)
            .ok()
            .and_then(|d| store.size(&d).ok().flatten());
        let ok = match (found, size) {
            (Some(f), Some(s)) => f as i64 == s,
            (Some(_), None) => false,
            (None, _) => false,
        };
        if !ok {
            missing.push(format!(
                "{what} {digest}: {}",
                match (found, size) {
                    (None, _) => "not in the restored store".to_owned(),
                    (Some(_), None) => "the metadata has no blob row for it".to_owned(),
                    (Some(f), Some(s)) => format!("{f} bytes stored, {s} recorded"),
                }
            ));
        }
    };
    let (mut blobs, mut sifs) = (0u64, 0u64);
    db.read_blocking(|c| {
        meta::backup::each_manifest_blob(c, |d, size| {
            blobs += 1;
            check("blob of a manifest", &d, size);
        })?;
        meta::backup::each_sif(c, |d, size| {
            sifs += 1;
            check("ready SIF", &d, Some(size));
        })
    })?;
    let n = missing.len();
    problems.extend(missing.into_iter().take(MAX_NAMED));
    if n > MAX_NAMED {
        problems.push(format!("… and {} more", n - MAX_NAMED));
    }
    Ok((blobs, sifs))
}
