//! Taking a backup: see the module docs of [`super`] for the order of the steps and why.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::manifest::{ChainHead, FileEntry, Manifest, RunStats, FORMAT};
use super::{blob_path, files, io, BackupError};
use super::{AUDIT, BLOBS, BLOB_LIST, CONFIG, FILES, MANIFEST, META};
use crate::audit::segments;
use crate::meta;
use crate::names::Digest;
use crate::storage::BlobStore;

/// Blobs listed per page, from the store and from the snapshot.
const PAGE: usize = 1000;

/// What to back up.
#[derive(Debug, Clone)]
pub struct Sources {
    pub data_dir: PathBuf,
    /// The server's config file, if it has one.
    pub config_file: Option<PathBuf>,
    /// Files the config names (TLS certificate and key).
    pub config_files: Vec<PathBuf>,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub dest: String,
    pub manifest: Manifest,
}

/// Backs `src` up into `dest` (created if missing; an earlier backup there is updated
/// incrementally).
pub fn take(src: &Sources, dest: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let data = &src.data_dir;
    let meta_path = data.join("meta.db");
    if !meta_path.is_file() {
        return Err(BackupError::Invalid(format!(
            "{} has no metadata database: is --data-dir right?",
            data.display()
        )));
    }
    files::private_dir(dest).map_err(io(dest))?;
    let (data_c, dest_c) = (
        data.canonicalize().map_err(io(data))?,
        dest.canonicalize().map_err(io(dest))?,
    );
    if dest_c.starts_with(&data_c) || data_c.starts_with(&dest_c) {
        return Err(BackupError::Invalid(format!(
            "the backup directory {} and the data directory {} must not contain each other",
            dest.display(),
            data.display()
        )));
    }
    // From here until the new manifest is written, DEST is not a complete backup.
    match fs::remove_file(dest.join(MANIFEST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(dest)(e)),
        _ => {}
    }
    files::sync_parent(&dest.join(MANIFEST)).map_err(io(dest))?;
    let store = BlobStore::open(data).map_err(io(data))?;
    let mut stats = RunStats::default();
    let mut touched_dirs = HashSet::new();

    // 1. What the store holds now.
    let mut after: Option<Digest> = None;
    loop {
        let page = store.list(after.as_ref(), PAGE).map_err(io(data))?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        for listed in &page {
            place_blob(
                &store,
                dest,
                &listed.digest,
                listed.size,
                &mut stats,
                &mut touched_dirs,
                true,
            )?;
        }
    }

    // 2. The metadata.
    let snapshot = dest.join(format!(".{META}.snapshot"));
    match fs::remove_file(&snapshot) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&snapshot)(e)),
        _ => {}
    }
    meta::backup::snapshot(&meta_path, &snapshot)?;
    let created = crate::timefmt::rfc3339(meta::now());
    let conn = meta::backup::open_read_only(&snapshot)?;
    let schema_version = meta::backup::schema_version_of(&conn)?;
    let counts = meta::backup::store_counts(&conn)?;
    let indexed_seq = meta::last_audit_event(&conn)?
        .map(|(seq, _, _)| seq as u64)
        .unwrap_or(0);

    // 3. What the snapshot records: the blob list, and blobs pushed since step 1.
    let mut wanted: HashSet<String> = HashSet::new();
    let list_path = dest.join(BLOB_LIST);
    files::write_durable(&list_path, |out| {
        let mut out = std::io::BufWriter::new(out);
        let mut after = String::new();
        loop {
            let page = meta::blobs_to_scrub(&conn, &after, PAGE as i64)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (digest, size) in page {
                let Ok(d) = Digest::parse(&digest) else {
                    continue;
                };
                place_blob(
                    &store,
                    dest,
                    &d,
                    size as u64,
                    &mut stats,
                    &mut touched_dirs,
                    false,
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                writeln!(out, "{digest} {size}")?;
                wanted.insert(digest);
            }
        }
        out.flush()
    })
    .map_err(io(&list_path))?;
    drop(conn);
    let meta_dest = dest.join(META);
    fs::rename(&snapshot, &meta_dest).map_err(io(&meta_dest))?;
    stats.blobs_removed = remove_unwanted_blobs(dest, &wanted)?;
    for dir in &touched_dirs {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }

    // 4. The audit log, after the snapshot: its files hold every record the index knows.
    let (audit, (seq, hash)) = copy_audit(&data.join(AUDIT), &dest.join(AUDIT))?;

    // 5. The data directory's own files, and the config.
    let own = own_files(data)?;
    let files_entries = copy_set(&own, &dest.join(FILES), FILES, false)?;
    let mut config_sources: Vec<PathBuf> = src.config_file.iter().cloned().collect();
    config_sources.extend(src.config_files.iter().cloned());
    let config = copy_set(&config_sources, &dest.join(CONFIG), CONFIG, true)?;

    // 6. The manifest, last.
    let meta_entry = entry(dest, META, None)?;
    let blob_list = entry(dest, BLOB_LIST, None)?;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    let manifest = Manifest {
        format: FORMAT,
        created,
        hpc_registry_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        data_dir: data_c.display().to_string(),
        meta: meta_entry,
        blob_list,
        counts,
        audit,
        audit_head: ChainHead {
            seq,
            hash,
            indexed_seq,
        },
        files: files_entries,
        config,
        last_run: stats,
    };
    manifest.write(dest)?;
    Ok(BackupReport {
        dest: dest_c.display().to_string(),
        manifest,
    })
}

/// Puts blob `digest` into DEST unless it is there with its size: through the store's
/// `materialize` (a hard link on the filesystem store when DEST is on its filesystem, else a
/// copy), under a temporary name, then renamed. `count_present` counts a blob already there.
fn place_blob(
    store: &BlobStore,
    dest: &Path,
    digest: &Digest,
    size: u64,
    stats: &mut RunStats,
    touched: &mut HashSet<PathBuf>,
    count_present: bool,
) -> Result<(), BackupError> {
    let target = blob_path(dest, digest);
    if fs::metadata(&target).is_ok_and(|m| m.len() == size) {
        if count_present {
            stats.blobs_present += 1;
        }
        return Ok(());
    }
    let dir = target.parent().unwrap_or(dest).to_path_buf();
    files::private_dir(&dir).map_err(io(&dir))?;
    let tmp = dir.join(format!(".{}.tmp", digest.hex()));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    if !store.materialize(digest, &tmp).map_err(io(&tmp))? {
        // Removed by garbage collection since it was listed; if the snapshot records it, the
        // second pass counts it missing.
        if !count_present {
            stats.blobs_missing += 1;
            tracing::warn!(%digest, "backup: the metadata records a blob whose bytes are gone");
        }
        return Ok(());
    }
    let meta = fs::metadata(&tmp).map_err(io(&tmp))?;
    if meta.nlink() > 1 {
        stats.blobs_linked += 1;
    } else {
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        stats.blobs_copied += 1;
        stats.bytes_copied += meta.len();
    }
    stats.blobs_new += 1;
    fs::rename(&tmp, &target).map_err(io(&target))?;
    touched.insert(dir);
    Ok(())
}

/// Removes the blobs of DEST the snapshot does not record; returns how many.
fn remove_unwanted_blobs(dest: &Path, wanted: &HashSet<String>) -> Result<u64, BackupError> {
    let root = dest.join(BLOBS);
    let mut removed = 0;
    for alg in read_names(&root)? {
        for prefix in read_names(&root.join(&alg))? {
            let dir = root.join(&alg).join(&prefix);
            for hex in read_names(&dir)? {
                if wanted.contains(&format!("{alg}:{hex}")) {
                    continue;
                }
                let path = dir.join(&hex);
                fs::remove_file(&path).map_err(io(&path))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn read_names(dir: &Path) -> Result<Vec<String>, BackupError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(io(dir))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Copies the audit files; the set is listed again afterwards and the copy redone if a
/// rotation or compression changed it meanwhile. Returns the entries and the chain head.
fn copy_audit(src: &Path, dst: &Path) -> Result<(Vec<FileEntry>, (u64, String)), BackupError> {
    files::private_dir(dst).map_err(io(dst))?;
    for _ in 0..5 {
        let before = segments::list(src).map_err(io(src))?;
        let mut entries = Vec::new();
        let mut vanished = false;
        for seg in &before {
            let name = seg.name();
            let target = dst.join(&name);
            let rel = format!("{AUDIT}/{name}");
            let rotated = seg.first_seq.is_some();
            if rotated {
                let same = match (fs::metadata(&seg.path), fs::metadata(&target)) {
                    (Ok(a), Ok(b)) => a.len() == b.len(),
                    _ => false,
                };
                if !same {
                    match files::copy_durable(&seg.path, &target, None) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            vanished = true;
                            break;
                        }
                        Err(e) => return Err(io(&seg.path)(e)),
                    }
                }
            } else {
                // The active file grows while we read: copy what it holds now, whole lines only.
                let len = fs::metadata(&seg.path).map_err(io(&seg.path))?.len();
                files::copy_durable(&seg.path, &target, Some(len)).map_err(io(&seg.path))?;
                cut_to_last_line(&target)?;
            }
            entries.push(entry(dst.parent().unwrap_or(dst), &rel, None)?);
        }
        let after = segments::list(src).map_err(io(src))?;
        if vanished
            || after
                .iter()
                .filter(|s| s.first_seq.is_some())
                .ne(before.iter().filter(|s| s.first_seq.is_some()))
        {
            continue;
        }
        let keep: HashSet<String> = before.iter().map(|s| s.name()).collect();
        for name in read_names(dst)? {
            if !keep.contains(&name) {
                let p = dst.join(&name);
                fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        let head = chain_head(&segments::list(dst).map_err(io(dst))?)?;
        return Ok((entries, head));
    }
    Err(BackupError::Invalid(
        "the audit log rotated during each of five attempts to copy it; try again".into(),
    ))
}

/// Truncates the file at `path` after its last newline (a record being written is left out).
fn cut_to_last_line(path: &Path) -> Result<(), BackupError> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(io(path))?;
        f.read_exact(chunk).map_err(io(path))?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                f.set_len(keep).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
            }
            return Ok(());
        }
        end = start;
    }
    f.set_len(0).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The seq and hash of the last record in `segs` (the newest file holding one).
fn chain_head(segs: &[segments::Segment]) -> Result<(u64, String), BackupError> {
    for seg in segs.iter().rev() {
        let reader = segments::open(seg).map_err(io(&seg.path))?;
        let mut last = None;
        for line in reader.split(b'\n') {
            let line = line.map_err(io(&seg.path))?;
            if !line.is_empty() {
                last = Some(line);
            }
        }
        if let Some(line) = last {
            let links: crate::audit::chain::Links = serde_json::from_slice(&line).map_err(|e| {
                BackupError::Invalid(format!(
                    "{}: last record unreadable: {e}",
                    seg.path.display()
                ))
            })?;
            return Ok((links.seq, links.hash));
        }
    }
    Ok((0, crate::audit::chain::GENESIS.to_owned()))
}

/// The data directory's own small files: keys and the like, not the store's parts.
fn own_files(data: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    for name in read_names(data)? {
        let skip = name == "lock"
            || name == META
            || name.starts_with("meta.db-")
            || name.ends_with(".bak")
            || name.starts_with('.');
        let path = data.join(&name);
        if !skip && fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `sources` into `dir` (named `rel/<file name>`), replacing what an earlier backup left
/// there; `record_source` keeps each file's original path in the manifest.
fn copy_set(
    sources: &[PathBuf],
    dir: &Path,
    rel: &str,
    record_source: bool,
) -> Result<Vec<FileEntry>, BackupError> {
    files::private_dir(dir).map_err(io(dir))?;
    let mut entries = Vec::new();
    let mut names = HashSet::new();
    for src in sources {
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BackupError::Invalid(format!("{} is not a file", src.display())))?;
        let mut name = base.clone();
        let mut n = 1;
        while !names.insert(name.clone()) {
            n += 1;
            name = format!("{n}-{base}");
        }
        let (bytes, sha256) = files::copy_durable(src, &dir.join(&name), None).map_err(io(src))?;
        entries.push(FileEntry {
            name: format!("{rel}/{name}"),
            bytes,
            sha256,
            source: record_source.then(|| src.display().to_string()),
        });
    }
    for stale in read_names(dir)? {
        if !names.contains(&stale) {
            let p = dir.join(&stale);
            fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(entries)
}

fn entry(root: &Path, rel: &str, source: Option<String>) -> Result<FileEntry, BackupError> {
    let path = root.join(rel);
    let (bytes, sha256) = files::sha256_file(&path).map_err(io(&path))?;
    Ok(FileEntry {
        name: rel.to_owned(),
        bytes,
        sha256,
        source,
    })
}
