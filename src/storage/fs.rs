//! The filesystem blob store.
//!
//! Layout under the data directory:
//! - `blobs/<alg>/<first two hex>/<hex>`: committed, verified, immutable blobs;
//! - `uploads/<session id>`: bytes of an upload in progress, on the same filesystem so that
//!   committing is an atomic `rename(2)`;
//! - `uploads/<session id>.repo`: the repository the session belongs to, so a session survives a
//!   restart without a metadata write per upload.
//!
//! A blob becomes visible only after its bytes were hashed, matched the client's digest, were
//! fsynced and renamed into place, and the directory entry was fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::names::{Algorithm, Digest, Hasher};

/// Size of reads when re-hashing a staged upload after a restart.
const REHASH_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FsStore {
    blobs: PathBuf,
    uploads: PathBuf,
}

/// An open, committed blob and its size.
pub struct BlobFile {
    pub file: File,
    pub size: u64,
}

/// The staging file of an upload session, opened for appending. Writes are buffered so that the
/// small frames HTTP delivers become large writes; call [`UploadFile::flush`] when done.
pub struct UploadFile {
    file: BufWriter<File>,
    len: u64,
}

/// Write buffer of an upload in progress.
const UPLOAD_BUFFER: usize = 1 << 20;

impl FsStore {
    /// Opens (creating if needed) the store below `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let store = FsStore {
            blobs: data_dir.join("blobs"),
            uploads: data_dir.join("uploads"),
        };
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(store.blobs.join(alg.name()))?;
        }
        fs::create_dir_all(&store.uploads)?;
        Ok(store)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
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

    /// Size of a committed blob, if its bytes are present.
    pub fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<BlobFile>> {
        match File::open(self.blob_path(digest)) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some(BlobFile { file, size }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a committed blob's bytes. Only garbage collection calls this, after the
    /// metadata says nothing references the blob.
    pub fn delete_blob(&self, digest: &Digest) -> io::Result<u64> {
        let path = self.blob_path(digest);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        fs::remove_file(&path)?;
        Ok(size)
    }

    /// Starts the staging file of a new upload session for `repository`.
    pub fn create_upload(&self, session: &str, repository: &str) -> io::Result<()> {
        File::create(self.upload_path(session))?;
        fs::write(self.upload_repo_path(session), repository)
    }

    /// The repository and current length of an upload session, or `None` if it does not exist.
    pub fn upload_state(&self, session: &str) -> io::Result<Option<(String, u64)>> {
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

    /// Opens an upload's staging file for appending at its current end.
    pub fn open_upload(&self, session: &str) -> io::Result<UploadFile> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.upload_path(session))?;
        let len = file.seek(SeekFrom::End(0))?;
        Ok(UploadFile {
            file: BufWriter::with_capacity(UPLOAD_BUFFER, file),
            len,
        })
    }

    /// Recomputes the running hash of a staged upload, after a restart lost the in-memory state.
    pub fn rehash_upload(&self, session: &str, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
        let mut file = File::open(self.upload_path(session))?;
        let mut hasher = Hasher::new(algorithm);
        let mut buf = vec![0u8; REHASH_CHUNK];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok((hasher, len));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    }

    /// Flushes a staged upload's data to disk (before the short commit that renames it).
    pub fn sync_upload(&self, session: &str) -> io::Result<()> {
        File::open(self.upload_path(session))?.sync_all()
    }

    /// Moves a committed blob's bytes out of the store, to
    /// `DATA/quarantine/<alg>/<hex>.<unix seconds>` (same filesystem: a rename), for a scrub that
    /// found them corrupt. Returns where they went.
    pub fn quarantine_blob(&self, digest: &Digest, now: i64) -> io::Result<PathBuf> {
        let dir = self.quarantine_dir().join(digest.algorithm().name());
        fs::create_dir_all(&dir)?;
        let target = dir.join(format!("{}.{now}", digest.hex()));
        let source = self.blob_path(digest);
        fs::rename(&source, &target)?;
        if let Some(parent) = source.parent() {
            File::open(parent)?.sync_all()?;
        }
        File::open(&dir)?.sync_all()?;
        Ok(target)
    }

    /// `DATA/quarantine`: corrupt bytes a scrub moved away, kept for inspection.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.blobs
            .parent()
            .unwrap_or(&self.blobs)
            .join("quarantine")
    }

    /// Makes a verified upload visible as blob `digest`: fsync, rename into place, fsync the
    /// directory. If the blob already exists (deduplication), the staged copy is dropped.
    pub fn commit_upload(&self, session: &str, digest: &Digest) -> io::Result<()> {
        let staged = self.upload_path(session);
        let target = self.blob_path(digest);
        let dir = target.parent().unwrap_or(&self.blobs).to_path_buf();
        if target.exists() {
            self.discard_upload(session)?;
            return Ok(());
        }
        File::open(&staged)?.sync_all()?;
        fs::create_dir_all(&dir)?;
        fs::rename(&staged, &target)?;
        File::open(&dir)?.sync_all()?;
        remove_if_present(&self.upload_repo_path(session))
    }

    /// A scratch directory on the blob store's filesystem, for files that will be imported as
    /// blobs (built SIFs) or that only live during one build.
    pub fn scratch_dir(&self) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(&self.uploads)
    }

    /// Removes every build scratch directory. Called at start-up, under the data-directory lock,
    /// when no build can be running: whatever is there was left by a crash.
    pub fn remove_scratch_dirs(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.uploads)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && entry.file_name().to_string_lossy().starts_with("scratch-")
            {
                fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Makes a file the store did not receive through an upload (a built SIF) a blob. The caller
    /// computed `digest` from the file's bytes.
    pub fn import_file(&self, path: &Path, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        if target.exists() {
            return remove_if_present(path);
        }
        File::open(path)?.sync_all()?;
        let dir = target.parent().unwrap_or(&self.blobs).to_path_buf();
        fs::create_dir_all(&dir)?;
        fs::rename(path, &target)?;
        File::open(&dir)?.sync_all()
    }

    /// Writes a small blob (e.g. the `{}` config of an ORAS artifact) if it is not there yet.
    pub fn put_small(&self, bytes: &[u8], digest: &Digest) -> io::Result<()> {
        if self.blob_path(digest).exists() {
            return Ok(());
        }
        let mut staged = tempfile::NamedTempFile::new_in(&self.uploads)?;
        staged.write_all(bytes)?;
        let (_, path) = staged.keep().map_err(|e| e.error)?;
        self.import_file(&path, digest)
    }

    /// Drops an upload session's files (cancel, failed verification, expiry).
    pub fn discard_upload(&self, session: &str) -> io::Result<()> {
        remove_if_present(&self.upload_path(session))?;
        remove_if_present(&self.upload_repo_path(session))
    }

    /// Upload sessions whose staging file was last written before `cutoff` (Unix seconds).
    /// Build scratch directories that old (left behind by a crash) are removed on the way.
    pub fn stale_uploads(&self, cutoff: i64) -> io::Result<Vec<String>> {
        let mut stale = Vec::new();
        for entry in fs::read_dir(&self.uploads)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                if name.starts_with("scratch-") && modified_secs(&entry)? < cutoff {
                    fs::remove_dir_all(entry.path())?;
                }
                continue;
            }
            if name.ends_with(".repo") {
                continue;
            }
            if modified_secs(&entry)? < cutoff {
                stale.push(name);
            }
        }
        Ok(stale)
    }
}

impl UploadFile {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn modified_secs(entry: &fs::DirEntry) -> io::Result<i64> {
    Ok(entry
        .metadata()?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_commit_dedup_and_restart_rehash() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.create_upload("s1", "alice/x").unwrap();
        let mut up = store.open_upload("s1").unwrap();
        up.append(b"hello ").unwrap();
        up.append(b"world").unwrap();
        up.flush().unwrap();
        drop(up);
        assert_eq!(
            store.upload_state("s1").unwrap(),
            Some(("alice/x".into(), 11))
        );
        let (hasher, len) = store.rehash_upload("s1", Algorithm::Sha256).unwrap();
        let digest = hasher.finish();
        assert_eq!(len, 11);
        assert_eq!(digest, Algorithm::Sha256.digest(b"hello world"));
        store.commit_upload("s1", &digest).unwrap();
        assert_eq!(store.stat(&digest).unwrap(), Some(11));
        assert_eq!(store.upload_state("s1").unwrap(), None);
        // A second upload of the same bytes is deduplicated and its staging file removed.
        store.create_upload("s2", "bob/y").unwrap();
        let mut up = store.open_upload("s2").unwrap();
        up.append(b"hello world").unwrap();
        up.flush().unwrap();
        store.commit_upload("s2", &digest).unwrap();
        assert_eq!(store.upload_state("s2").unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }

    #[test]
    fn stale_uploads_and_crash_scratch_dirs_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.create_upload("old", "alice/x").unwrap();
        let scratch = store.scratch_dir().unwrap().keep();
        let future = crate::meta::now() + 10;
        assert_eq!(
            store.stale_uploads(future - 3600).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(store.stale_uploads(future).unwrap(), vec!["old".to_owned()]);
        assert!(
            !scratch.exists(),
            "a crashed build's scratch dir is removed"
        );
        store.discard_upload("old").unwrap();
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }
}
