//! The filesystem blob store, the first [`Storage`] implementation.
//!
//! Layout under the data directory:
//! - `blobs/<alg>/<first two hex>/<hex>`: committed, verified, immutable blobs;
//! - `uploads/<session id>`: bytes of an upload in progress, on the same filesystem so that
//!   committing is an atomic `rename(2)`;
//! - `uploads/<session id>.repo`: the repository the session belongs to, so a session survives a
//!   restart without a metadata write per upload;
//! - `scratch/scratch-*`: build scratch directories, apart from upload sessions (a running build
//!   never looks like a leftover upload) but on the same filesystem (built SIFs are imported by a
//!   rename);
//! - `quarantine/<alg>/<hex>.<time>`: corrupt bytes a scrub moved away.
//!
//! A blob becomes visible only after its bytes were hashed, matched the client's digest, were
//! fsynced and renamed into place, and the directory entry was fsynced. Reads are `pread(2)` on
//! the open file (see `ranges`), so an open blob stays readable after it is unlinked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Blob, BlobRead, Listed, Staged, StaleUpload, Stat, Storage};
use crate::names::{Algorithm, Digest};
use crate::writeback::Writeback;

#[derive(Debug, Clone)]
pub struct FsStore {
    blobs: PathBuf,
    uploads: PathBuf,
    scratch: PathBuf,
}

/// An upload's staging file, opened for appending. Unbuffered: the pipeline hands over
/// megabyte batches, each written with one `write(2)`.
struct StagedFile {
    file: File,
    len: u64,
    /// The staged bytes go to the disk as they arrive ([`crate::writeback`]).
    writeback: Writeback,
}

/// A committed blob's open file.
struct BlobFile(File);

impl BlobRead for BlobFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
}

impl FsStore {
    /// Opens (creating if needed) the store below `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let store = FsStore {
            blobs: data_dir.join("blobs"),
            uploads: data_dir.join("uploads"),
            scratch: data_dir.join("scratch"),
        };
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(store.blobs.join(alg.name()))?;
        }
        fs::create_dir_all(&store.uploads)?;
        fs::create_dir_all(&store.scratch)?;
        Ok(store)
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, session: &str) -> PathBuf {
        self.uploads.join(session)
    }

    fn upload_repo_path(&self, session: &str) -> PathBuf {
        self.uploads.join(format!("{session}.repo"))
    }

    /// `DATA/quarantine`: corrupt bytes a scrub moved away, kept for inspection.
    fn quarantine_dir(&self) -> PathBuf {
        self.blobs
            .parent()
            .unwrap_or(&self.blobs)
            .join("quarantine")
    }

    /// Renames `staged` into place as blob `digest` and makes both durable; if the blob is
    /// already there (deduplication), `staged` is removed instead.
    fn publish(&self, staged: &Path, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        if target.exists() {
            return remove_if_present(staged);
        }
        File::open(staged)?.sync_all()?;
        let dir = target.parent().unwrap_or(&self.blobs).to_path_buf();
        fs::create_dir_all(&dir)?;
        fs::rename(staged, &target)?;
        File::open(&dir)?.sync_all()
    }
}

impl Storage for FsStore {
    fn stat(&self, digest: &Digest) -> io::Result<Option<Stat>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(stat_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        match File::open(self.blob_path(digest)) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some(Blob::new(size, BlobFile(file))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, digest: &Digest) -> io::Result<Option<Stat>> {
        let path = self.blob_path(digest);
        let stat = match fs::metadata(&path) {
            Ok(m) => stat_of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(stat)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, after: Option<&Digest>, limit: usize) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        // Algorithms, prefix directories and file names each sort like the digests they make.
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            if after.is_some_and(|a| a.algorithm() > alg) {
                continue;
            }
            let floor = after.filter(|a| a.algorithm() == alg).map(Digest::hex);
            for prefix in sorted_names(&self.blobs.join(alg.name()))? {
                if floor.is_some_and(|f| prefix.as_str() < &f[..2]) {
                    continue;
                }
                let dir = self.blobs.join(alg.name()).join(&prefix);
                for hex in sorted_names(&dir)? {
                    if floor.is_some_and(|f| hex.as_str() <= f) {
                        continue;
                    }
                    // Anything that is not a digest's file (an admin's stray copy) is no blob.
                    let Ok(digest) = Digest::parse(&format!("{}:{hex}", alg.name())) else {
                        continue;
                    };
                    if !hex.starts_with(&prefix) {
                        continue;
                    }
                    let Some(stat) = self.stat(&digest)? else {
                        continue;
                    };
                    out.push(Listed {
                        digest,
                        size: stat.size,
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// To `DATA/quarantine/<alg>/<hex>.<unix seconds>` (same filesystem: a rename).
    fn quarantine(&self, digest: &Digest, now: i64) -> io::Result<String> {
        let dir = self.quarantine_dir().join(digest.algorithm().name());
        fs::create_dir_all(&dir)?;
        let target = dir.join(format!("{}.{now}", digest.hex()));
        let source = self.blob_path(digest);
        fs::rename(&source, &target)?;
        if let Some(parent) = source.parent() {
            File::open(parent)?.sync_all()?;
        }
        File::open(&dir)?.sync_all()?;
        Ok(target.display().to_string())
    }

    fn create_upload(&self, session: &str, repository: &str) -> io::Result<()> {
        File::create(self.upload_path(session))?;
        fs::write(self.upload_repo_path(session), repository)
    }

    fn upload_state(&self, session: &str) -> io::Result<Option<(String, u64)>> {
        let repository = match fs::read_to_string(self.upload_repo_path(session)) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match fs::metadata(self.upload_path(session)) {
            Ok(m) => Ok(Some((repository, m.len()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_upload(&self, session: &str) -> io::Result<Box<dyn Staged>> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(self.upload_path(session))?;
        let len = file.seek(SeekFrom::End(0))?;
        Ok(Box::new(StagedFile {
            file,
            len,
            writeback: Writeback::at(len),
        }))
    }

    fn read_upload(&self, session: &str) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(File::open(self.upload_path(session))?))
    }

    fn sync_upload(&self, session: &str) -> io::Result<()> {
        File::open(self.upload_path(session))?.sync_all()
    }

    fn commit_upload(&self, session: &str, digest: &Digest) -> io::Result<()> {
        self.publish(&self.upload_path(session), digest)?;
        remove_if_present(&self.upload_repo_path(session))
    }

    fn discard_upload(&self, session: &str) -> io::Result<()> {
        remove_if_present(&self.upload_path(session))?;
        remove_if_present(&self.upload_repo_path(session))
    }

    fn stale_uploads(&self, cutoff: i64) -> io::Result<Vec<StaleUpload>> {
        let mut stale = Vec::new();
        for entry in fs::read_dir(&self.uploads)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".repo") {
                continue;
            }
            // Uploads finish (rename) and start all the time: a vanished entry is not an error.
            let Some(m) = metadata_if_present(&entry)? else {
                continue;
            };
            if !m.is_file() || mtime_secs(&m) >= cutoff {
                continue;
            }
            let repo = match fs::metadata(self.upload_repo_path(&name)) {
                Ok(r) => stat_of(&r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Stat {
                    size: 0,
                    disk_bytes: 0,
                },
                Err(e) => return Err(e),
            };
            let own = stat_of(&m);
            stale.push(StaleUpload {
                session: name,
                size: own.size + repo.size,
                disk_bytes: own.disk_bytes + repo.disk_bytes,
            });
        }
        stale.sort();
        Ok(stale)
    }

    fn remove_stale_scratch_dirs(&self, cutoff: i64) -> io::Result<usize> {
        let mut removed = 0;
        // Older stores kept build scratch in `uploads/`.
        for dir in [&self.scratch, &self.uploads] {
            for entry in scratch_entries(dir)? {
                let Some(m) = metadata_if_present(&entry)? else {
                    continue;
                };
                if mtime_secs(&m) < cutoff {
                    fs::remove_dir_all(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn scratch_dir(&self) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(&self.scratch)
    }

    fn remove_scratch_dirs(&self) -> io::Result<usize> {
        let mut removed = 0;
        for dir in [&self.scratch, &self.uploads] {
            for entry in scratch_entries(dir)? {
                fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn import_file(&self, path: &Path, digest: &Digest) -> io::Result<()> {
        self.publish(path, digest)
    }

    fn put_small(&self, bytes: &[u8], digest: &Digest) -> io::Result<()> {
        if self.blob_path(digest).exists() {
            return Ok(());
        }
        let mut staged = tempfile::NamedTempFile::new_in(&self.uploads)?;
        staged.write_all(bytes)?;
        let (_, path) = staged.keep().map_err(|e| e.error)?;
        self.publish(&path, digest)
    }

    /// A hard link: no copy, when `target` is on the store's filesystem (a build's scratch
    /// directory is); a copy otherwise.
    fn materialize(&self, digest: &Digest, target: &Path) -> io::Result<bool> {
        let source = self.blob_path(digest);
        match fs::hard_link(&source, target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !source.exists() => Ok(false),
            Err(_) => match fs::copy(&source, target) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        }
    }
}

impl Staged for StagedFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        // Counted as it goes, so that after a failed write `len` still matches the file.
        while !bytes.is_empty() {
            match self.file.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.len += n as u64;
                    bytes = &bytes[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.writeback.wrote(&self.file, self.len);
        Ok(())
    }
}

fn stat_of(m: &fs::Metadata) -> Stat {
    Stat {
        size: m.len(),
        disk_bytes: m.blocks() * 512,
    }
}

/// The entry names of `dir` in byte order; none if it does not exist or is not a directory.
fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// An entry's metadata, or `None` if it vanished since the directory was read.
fn metadata_if_present(entry: &fs::DirEntry) -> io::Result<Option<fs::Metadata>> {
    match entry.metadata() {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Last modification, in Unix seconds (0 for a time before the epoch).
fn mtime_secs(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The build scratch directories (`scratch-*`) directly in `dir`.
fn scratch_entries(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && entry.file_name().to_string_lossy().starts_with("scratch-")
        {
            found.push(entry);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::storage::BlobStore;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(FsStore::open(dir.path()).unwrap());
        (dir, store)
    }

    fn stage(store: &BlobStore, session: &str, parts: &[&[u8]]) {
        store.create_upload(session, "alice/x").unwrap();
        let mut up = store.open_upload(session).unwrap();
        for part in parts {
            up.append(part).unwrap();
        }
    }

    #[test]
    fn upload_commit_dedup_and_restart_rehash() {
        let (dir, store) = store();
        stage(&store, "s1", &[b"hello ", b"world"]);
        assert_eq!(
            store.upload_state("s1").unwrap(),
            Some(("alice/x".into(), 11))
        );
        // Appending again continues at the end.
        assert_eq!(store.open_upload("s1").unwrap().len(), 11);
        let (hasher, len) = store.rehash_upload("s1", Algorithm::Sha256).unwrap();
        let digest = hasher.finish();
        assert_eq!(len, 11);
        assert_eq!(digest, Algorithm::Sha256.digest(b"hello world"));
        store.commit_upload("s1", &digest).unwrap();
        assert_eq!(store.size(&digest).unwrap(), Some(11));
        assert_eq!(store.upload_state("s1").unwrap(), None);
        // A second upload of the same bytes is deduplicated and its staging file removed.
        stage(&store, "s2", &[b"hello world"]);
        store.commit_upload("s2", &digest).unwrap();
        assert_eq!(store.upload_state("s2").unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }

    #[test]
    fn staged_bytes_go_to_the_disk_as_they_arrive_not_at_the_commit() {
        let (dir, store) = store();
        let mib = vec![7u8; 1 << 20];
        stage(&store, "s", &vec![&mib[..]; 16]);
        let staged = dir.path().join("uploads").join("s");
        // Only the run not yet handed over may still be dirty; the rest is under writeback or
        // written (without it, all 16 MiB would wait for the commit's fsync, 30 s at least).
        let at_most_one_run_dirty = || {
            let dirty = crate::writeback::dirty_bytes(&staged)?;
            assert!(
                dirty <= crate::writeback::RUN_BYTES,
                "{} KiB of the staged bytes are still dirty",
                dirty / 1024
            );
            Some(())
        };
        if at_most_one_run_dirty().is_none() {
            eprintln!("skipped: no cachestat(2) here, or the test directory is on tmpfs");
            return;
        }
        // A reopened session hands over the run it continues too.
        let mut up = store.open_upload("s").unwrap();
        for _ in 0..6 {
            up.append(&mib).unwrap();
        }
        at_most_one_run_dirty().unwrap();
    }

    #[test]
    fn appends_continue_at_the_end_after_reopening() {
        let (_dir, store) = store();
        stage(&store, "s", &[b"first "]);
        let mut up = store.open_upload("s").unwrap();
        assert_eq!(up.len(), 6);
        up.append(b"second").unwrap();
        assert_eq!(up.len(), 12);
        let mut staged = Vec::new();
        store
            .read_upload("s")
            .unwrap()
            .read_to_end(&mut staged)
            .unwrap();
        assert_eq!(staged, b"first second");
    }

    #[test]
    fn blobs_read_list_materialize_and_delete() {
        let (dir, store) = store();
        let mut digests = Vec::new();
        for content in [&b"one"[..], b"two", b"three"] {
            let d = Algorithm::Sha256.digest(content);
            store.put_small(content, &d).unwrap();
            digests.push(d);
        }
        let d512 = Algorithm::Sha512.digest(b"four");
        store.put_small(b"four", &d512).unwrap();
        digests.push(d512);
        digests.sort();
        // A stray file in the store is not a blob.
        fs::write(dir.path().join("blobs/sha256/stray"), b"x").unwrap();
        let all: Vec<Digest> = store
            .list(None, 100)
            .unwrap()
            .into_iter()
            .map(|l| l.digest)
            .collect();
        assert_eq!(all, digests);
        let page = store.list(Some(&digests[1]), 2).unwrap();
        assert_eq!(
            page.iter().map(|l| &l.digest).collect::<Vec<_>>(),
            vec![&digests[2], &digests[3]]
        );

        let three = Algorithm::Sha256.digest(b"three");
        let blob = store.open(&three).unwrap().unwrap();
        assert_eq!(blob.size, 5);
        let mut read = String::new();
        blob.reader().read_to_string(&mut read).unwrap();
        assert_eq!(read, "three");
        let mut two = [0u8; 2];
        blob.read_exact_at(&mut two, 3).unwrap();
        assert_eq!(&two, b"ee");
        assert!(blob.read_exact_at(&mut two, 4).is_err(), "past the end");

        let linked = dir.path().join("uploads/linked");
        assert!(store.materialize(&three, &linked).unwrap());
        assert_eq!(fs::read(&linked).unwrap(), b"three");
        let absent = Algorithm::Sha256.digest(b"absent");
        assert!(!store
            .materialize(&absent, &dir.path().join("uploads/none"))
            .unwrap());

        let removed = store.delete(&three).unwrap().unwrap();
        assert_eq!(removed.size, 5);
        assert!(removed.disk_bytes > 0);
        assert_eq!(store.delete(&three).unwrap(), None);
        assert_eq!(store.stat(&three).unwrap(), None);
        // The open handle still reads the unlinked blob (a download in flight finishes).
        blob.read_exact_at(&mut two, 0).unwrap();
        assert_eq!(&two, b"th");
        // The copy that `materialize` makes for a backend without hard links.
        let one = store
            .open(&Algorithm::Sha256.digest(b"one"))
            .unwrap()
            .unwrap();
        let copied = dir.path().join("uploads/copied");
        crate::storage::write_local_copy(&one, &copied).unwrap();
        assert_eq!(fs::read(&copied).unwrap(), b"one");
    }

    #[test]
    fn stale_uploads_and_crash_scratch_dirs_are_found() {
        let (dir, store) = store();
        store.create_upload("old", "alice/x").unwrap();
        let scratch = store.scratch_dir().unwrap().keep();
        let future = crate::meta::now() + 10;
        let stale = |cutoff| -> Vec<String> {
            let found = store.stale_uploads(cutoff).unwrap();
            found.into_iter().map(|s| s.session).collect()
        };
        assert_eq!(stale(future - 3600), Vec::<String>::new());
        assert_eq!(stale(future), vec!["old".to_owned()]);
        // Finding stale uploads only looks (a dry-run prune calls it): scratch is no upload.
        assert!(scratch.exists(), "listing removed a scratch dir");
        let found = store.stale_uploads(future).unwrap();
        assert_eq!(
            found[0].size,
            "alice/x".len() as u64,
            "the .repo file counts"
        );
        assert_eq!(store.remove_stale_scratch_dirs(future - 3600).unwrap(), 0);
        assert_eq!(store.remove_stale_scratch_dirs(future).unwrap(), 1);
        assert!(
            !scratch.exists(),
            "a crashed build's scratch dir is removed"
        );
        store.discard_upload("old").unwrap();
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }
}
