//! File copies for backup and restore: durable (fsynced), owner-only, hashed as they stream.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Creates `dir` and its parents, owner-only.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Copies at most `limit` bytes of `src` (all with `None`) to a new owner-only `dst` (replacing
/// it through a temporary file and a rename), fsynced. Returns `(bytes, sha256 hex)`.
pub fn copy_durable(src: &Path, dst: &Path, limit: Option<u64>) -> io::Result<(u64, String)> {
    let input = File::open(src)?;
    let mut input: Box<dyn Read> = match limit {
        Some(n) => Box::new(input.take(n)),
        None => Box::new(input),
    };
    write_durable(dst, |out| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        Ok((total, hex::encode(hasher.finalize())))
    })
}

/// Writes a new owner-only `dst` through `NAME.tmp`, fsync and rename (and fsyncs the directory).
pub fn write_durable<T>(
    dst: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let tmp = dst.with_file_name(format!(".{name}.tmp"));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let value = fill(&mut out)?;
    out.sync_all()?;
    std::fs::rename(&tmp, dst)?;
    sync_parent(dst)?;
    Ok(value)
}

/// The sha256 (hex) and length of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((n, hex::encode(hasher.finalize()))),
            Ok(k) => {
                hasher.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// How a blob got into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Linked,
    Copied,
}

/// Puts `src` at the new path `dst`: a hard link on the same filesystem, else a durable copy.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<Placed> {
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(Placed::Linked),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => {
            copy_durable(src, dst, None)?;
            Ok(Placed::Copied)
        }
    }
}
