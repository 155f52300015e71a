//! The node-local SIF cache of the compute-node commands, keyed by the SIF's digest.
//!
//! Layout under the root (a node-local disk, `/dev/shm` or `$TMPDIR`; see
//! [`crate::client::config`]):
//!
//! ```text
//! ROOT/                      1777 (sticky, like /tmp), made by root or by the first user
//! ROOT/<uid>/                0700, owned by <uid>: one private cache per user
//! ROOT/<uid>/<hex>.sif       a verified SIF, published by an atomic rename
//! ROOT/<uid>/<hex>.stamp     inode, size and mtime when it was verified (cheap re-checks)
//! ROOT/<uid>/<hex>.lock      held exclusively by the one download of <hex>
//! ROOT/<uid>/<hex>.part      that download in progress; kept for a resume after a crash
//! ROOT/<uid>/<hex>.squashfs  the SIF's root filesystem alone (`fetch --squashfs`)
//! ROOT/<uid>/<hex>.sqsh      an enroot image (pyxis's squashfs, `fetch --enroot`), keyed by
//!                            its own digest and kept like a SIF (stamp, lock, LRU, holds)
//! ```
//!
//! Why one directory per user: the registry decides who may read an image, and a node cannot
//! tell a private image from a public one. A directory only its owner can enter keeps every
//! SIF, private or not, from other users without root and without asking the registry; the cost
//! is one copy per user of an image several users run on one node. The directory is checked
//! (a real directory, owned by the caller, no group or other bits) on every open, so another user
//! who made the root (and may rename entries in it) cannot slip in a directory of their own.
//!
//! Concurrency: the download of one SIF holds `<hex>.lock`, so 16 jobs starting together make
//! one download and 15 cache hits. A job running a SIF holds a shared `flock` on the `.sif`
//! itself; eviction takes it exclusively without waiting, so it never removes a held SIF.
//! Least recently used goes first: every use sets the file's access time explicitly (which
//! `noatime` mounts honour).

mod locks;
mod sweep;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

pub use locks::{keep_across_exec, Mode};
pub use sweep::{prune_all_users, UserSweep};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing the cache directory {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("{0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("{0} is in use by a running job")]
    Held(String),
    #[error("no cached SIF matches {0}")]
    NotCached(String),
}

type Result<T> = std::result::Result<T, CacheError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The 64 hex digits of `sha256:<hex>` (or of bare hex), validated.
pub fn digest_hex(digest: &str) -> Result<String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex.to_owned())
    } else {
        Err(CacheError::BadDigest(digest.to_owned()))
    }
}

/// What a cache entry holds, each kind keyed by its own digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sif,
    /// The enroot image built with a SIF (a squashfs).
    Enroot,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Sif, Kind::Enroot];

    fn ext(self) -> &'static str {
        match self {
            Kind::Sif => "sif",
            Kind::Enroot => "sqsh",
        }
    }
}

/// One user's cache on this node.
#[derive(Debug, Clone)]
pub struct NodeCache {
    dir: PathBuf,
    limit: Option<u64>,
}

/// A cached SIF as `cache ls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub digest: String,
    pub path: PathBuf,
    /// Bytes of the SIF and of its squashfs extract, if any.
    pub bytes: u64,
    /// Seconds since the epoch of its last use.
    pub last_used: i64,
    /// A running job holds it.
    pub held: bool,
}

impl NodeCache {
    /// Opens (creating it if needed) the calling user's cache under `root`; `limit` caps its size.
    pub fn open(root: &Path, limit: Option<u64>) -> Result<NodeCache> {
        ensure_root(root)?;
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = root.join(uid.to_string());
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_at(&dir)(e)),
        }
        let meta = fs::symlink_metadata(&dir).map_err(io_at(&dir))?;
        let unsafe_dir = |why: String| CacheError::Unsafe {
            path: dir.clone(),
            why,
        };
        if !meta.file_type().is_dir() {
            return Err(unsafe_dir("not a directory".into()));
        }
        if meta.uid() != uid {
            return Err(unsafe_dir(format!(
                "owned by uid {}, not {uid}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(unsafe_dir(format!(
                "mode {:o}: others could read it",
                meta.mode() & 0o777
            )));
        }
        Ok(NodeCache { dir, limit })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hex: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{hex}.{ext}"))
    }

    pub fn sif_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.path(&digest_hex(digest)?, "sif"))
    }

    pub fn squashfs_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.path(&digest_hex(digest)?, "squashfs"))
    }

    /// Where the download of `digest` writes (and resumes).
    pub fn partial_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.path(&digest_hex(digest)?, "part"))
    }

    /// The cached SIF of `digest` if it is there and intact. A file changed since it was
    /// verified (size, inode or mtime differ from its stamp) is hashed again; a corrupt one is
    /// removed (if nobody holds it) and reported as absent, so the caller fetches it again.
    pub fn lookup(&self, digest: &str) -> Result<Option<PathBuf>> {
        self.lookup_as(Kind::Sif, digest)
    }

    /// [`NodeCache::lookup`] for an entry of `kind`.
    pub fn lookup_as(&self, kind: Kind, digest: &str) -> Result<Option<PathBuf>> {
        let hex = digest_hex(digest)?;
        let sif = self.path(&hex, kind.ext());
        let meta = match fs::metadata(&sif) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&sif)(e)),
        };
        let stamp = fs::read_to_string(self.path(&hex, "stamp")).unwrap_or_default();
        if stamp.trim() != stamp_of(&meta) {
            let actual = sha256_file(&sif)?;
            if actual != hex {
                tracing::warn!(path = %sif.display(), actual = %actual, "cached SIF is corrupt; fetching it again");
                self.remove_unheld(&hex)?;
                return Ok(None);
            }
            self.write_stamp(&hex, &meta)?;
        }
        touch(&sif);
        Ok(Some(sif))
    }

    /// Waits for the right to download `digest` (one download per SIF per user and node).
    pub fn lock_download(&self, digest: &str) -> Result<File> {
        let path = self.path(&digest_hex(digest)?, "lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        locks::lock(&file, Mode::Exclusive).map_err(io_at(&path))?;
        Ok(file)
    }

    /// Makes room for `incoming` more bytes under the size cap (least recently used first,
    /// never a held SIF). Returns what it removed.
    pub fn make_room(&self, incoming: u64) -> Result<Vec<Entry>> {
        match self.limit {
            Some(limit) => self.evict_to(limit.saturating_sub(incoming)),
            None => Ok(Vec::new()),
        }
    }

    /// Where a copy of `digest` made by someone else (sbcast) waits for [`NodeCache::adopt`].
    pub fn incoming_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.path(&digest_hex(digest)?, "incoming"))
    }

    /// Takes the copy at `incoming` as the SIF of `digest` once its sha256 matches; removes it
    /// either way. False if it was damaged (or there is none): the caller fetches instead.
    pub fn adopt(&self, digest: &str, incoming: &Path) -> Result<bool> {
        let hex = digest_hex(digest)?;
        if self.lookup(digest)?.is_some() {
            let _ = fs::remove_file(incoming);
            return Ok(true);
        }
        if !incoming.is_file() {
            return Ok(false);
        }
        if sha256_file(incoming)? != hex {
            let _ = fs::remove_file(incoming);
            return Ok(false);
        }
        self.publish(digest, incoming)?;
        Ok(true)
    }

    /// Publishes the verified download at `partial` as the SIF of `digest` (atomic rename).
    pub fn publish(&self, digest: &str, partial: &Path) -> Result<PathBuf> {
        self.publish_as(Kind::Sif, digest, partial)
    }

    /// [`NodeCache::publish`] for an entry of `kind`.
    pub fn publish_as(&self, kind: Kind, digest: &str, partial: &Path) -> Result<PathBuf> {
        let hex = digest_hex(digest)?;
        let sif = self.path(&hex, kind.ext());
        File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(io_at(partial))?;
        fs::set_permissions(partial, fs::Permissions::from_mode(0o600)).map_err(io_at(partial))?;
        fs::rename(partial, &sif).map_err(io_at(&sif))?;
        let meta = fs::metadata(&sif).map_err(io_at(&sif))?;
        self.write_stamp(&hex, &meta)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.dir))?;
        Ok(sif)
    }

    /// Writes `path`'s atomic replacement from `write` (into a temporary file beside it).
    pub fn write_atomically(
        &self,
        path: &Path,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(io_at(&self.dir))?;
        write(tmp.as_file_mut())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_at(path))?;
        tmp.persist(path).map_err(|e| io_at(path)(e.error))?;
        Ok(())
    }

    /// Holds the cached SIF at `path` for as long as the returned file stays open (across
    /// `exec` with [`keep_across_exec`]). `None` if it was evicted or replaced meanwhile.
    pub fn hold(&self, path: &Path) -> Result<Option<File>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(path)(e)),
        };
        locks::lock(&file, Mode::Shared).map_err(io_at(path))?;
        // An eviction may have unlinked it between our open and our lock.
        let held = file.metadata().map_err(io_at(path))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(Some(file)),
            _ => Ok(None),
        }
    }

    /// Every cached SIF, least recently used first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let item = item.map_err(io_at(&self.dir))?;
            let name = item.file_name();
            let Some(hex) = name.to_str().and_then(|n| {
                Kind::ALL
                    .iter()
                    .find_map(|k| n.strip_suffix(k.ext())?.strip_suffix('.'))
            }) else {
                continue;
            };
            if digest_hex(hex).is_err() {
                continue;
            }
            let path = item.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let squashfs = fs::metadata(self.path(hex, "squashfs")).map_or(0, |m| m.len());
            entries.push(Entry {
                digest: format!("sha256:{hex}"),
                held: is_held(&path),
                bytes: meta.len() + squashfs,
                last_used: meta.atime(),
                path,
            });
        }
        entries.sort_by_key(|e| (e.last_used, e.digest.clone()));
        Ok(entries)
    }

    /// Removes the entries whose digest starts with `prefix` (`sha256:` optional); refuses
    /// held ones.
    pub fn remove(&self, prefix: &str) -> Result<Vec<Entry>> {
        let prefix = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        let matching: Vec<Entry> = self
            .list()?
            .into_iter()
            .filter(|e| e.digest["sha256:".len()..].starts_with(prefix))
            .collect();
        if matching.is_empty() || prefix.is_empty() {
            return Err(CacheError::NotCached(prefix.to_owned()));
        }
        for e in &matching {
            if !self.remove_unheld(&e.digest["sha256:".len()..])? {
                return Err(CacheError::Held(e.digest.clone()));
            }
        }
        Ok(matching)
    }

    /// Evicts least recently used SIFs until at most `target` bytes stay (held ones stay
    /// whatever their age), and removes abandoned downloads. Returns what went.
    pub fn evict_to(&self, target: u64) -> Result<Vec<Entry>> {
        self.remove_abandoned_parts()?;
        let entries = self.list()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut removed = Vec::new();
        for e in entries {
            if total <= target {
                break;
            }
            if self.remove_unheld(&e.digest["sha256:".len()..])? {
                total = total.saturating_sub(e.bytes);
                removed.push(e);
            }
        }
        Ok(removed)
    }

    /// Partial downloads nobody is downloading that were last written a day ago or more.
    fn remove_abandoned_parts(&self) -> Result<()> {
        const ABANDONED: Duration = Duration::from_secs(86_400);
        for item in fs::read_dir(&self.dir).map_err(io_at(&self.dir))? {
            let item = item.map_err(io_at(&self.dir))?;
            let name = item.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
                continue;
            };
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= ABANDONED);
            let lock_path = self.path(hex, "lock");
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            if old && locks::try_lock(&lock, Mode::Exclusive).unwrap_or(false) {
                let _ = fs::remove_file(item.path());
            }
        }
        Ok(())
    }

    /// Removes the entry of `hex` (SIF or enroot image) with its stamp and squashfs unless a
    /// job holds it; false if held.
    fn remove_unheld(&self, hex: &str) -> Result<bool> {
        let mut found = None;
        for kind in Kind::ALL {
            let path = self.path(hex, kind.ext());
            match File::open(&path) {
                Ok(f) => {
                    found = Some((path, f));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        let Some((sif, file)) = found else {
            return Ok(true);
        };
        if !locks::try_lock(&file, Mode::Exclusive).map_err(io_at(&sif))? {
            return Ok(false);
        }
        for ext in ["sif", "sqsh", "stamp", "squashfs"] {
            let path = self.path(hex, ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(true)
    }

    fn write_stamp(&self, hex: &str, meta: &fs::Metadata) -> Result<()> {
        let path = self.path(hex, "stamp");
        let stamp = stamp_of(meta);
        self.write_atomically(&path, |f| f.write_all(stamp.as_bytes()))
    }
}

/// The cache root: made sticky and world-writable (like /tmp) when this call creates it.
fn ensure_root(root: &Path) -> Result<()> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(CacheError::Unsafe {
                path: root.to_owned(),
                why: "not a directory".into(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(root)(e)),
    }
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    match fs::create_dir(root) {
        Ok(()) => {
            fs::set_permissions(root, fs::Permissions::from_mode(0o1777)).map_err(io_at(root))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_at(root)(e)),
    }
}

fn stamp_of(meta: &fs::Metadata) -> String {
    format!(
        "{} {} {}.{}",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn is_held(path: &Path) -> bool {
    File::open(path)
        .and_then(|f| locks::try_lock(&f, Mode::Exclusive))
        .map(|free| !free)
        .unwrap_or(false)
}

/// Marks `path` as used now for the LRU order: sets its access time only (mtime stays, so the
/// stamp stays valid), explicitly, which works on `noatime` and `relatime` mounts too.
fn touch(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a valid C string and two timespecs; failure only costs LRU accuracy.
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0);
    }
}

/// The lowercase hex sha256 of the file at `path`, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    hash_into(&mut file, &mut hasher).map_err(io_at(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds everything `reader` yields into `hasher`; returns the byte count.
pub fn hash_into(reader: &mut impl Read, hasher: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}
