//! The data-directory lock: `DATA/lock`, held with `flock` by the server for its whole life and by
//! offline admin commands while they run, so two processes never write one store. The kernel
//! drops the lock when its holder dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is in use by another hpc-registry process{holder}")]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held until dropped.
#[derive(Debug)]
pub struct DataLock {
    file: File,
    path: PathBuf,
}

/// What the holder wrote into the lock file: its pid and, for a server, its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub url: Option<String>,
}

impl DataLock {
    /// Takes the lock of `data_dir` without waiting.
    pub fn acquire(data_dir: &Path) -> Result<DataLock, LockError> {
        let path = data_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = read_holder(&path);
                let mut desc = String::new();
                if let Some(pid) = holder.pid {
                    desc.push_str(&format!(" (pid {pid}"));
                    if let Some(url) = &holder.url {
                        desc.push_str(&format!(", serving {url}"));
                    }
                    desc.push(')');
                }
                return Err(LockError::Held { path, holder: desc });
            }
            return Err(io(err));
        }
        let mut lock = DataLock {
            file,
            path: path.clone(),
        };
        lock.record(None).map_err(io)?;
        Ok(lock)
    }

    /// Notes this process (and the URL it serves) in the lock file, for the error others get.
    pub fn record(&mut self, url: Option<&str>) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        writeln!(self.file, "pid={}", std::process::id())?;
        if let Some(url) = url {
            writeln!(self.file, "url={url}")?;
        }
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads what the current holder of the lock at `path` wrote.
pub fn read_holder(path: &Path) -> Holder {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let mut h = Holder::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            h.pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("url=") {
            h.url = Some(v.trim().to_owned());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = DataLock::acquire(dir.path()).unwrap();
        a.record(Some("http://127.0.0.1:5000")).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts.
        match DataLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => {
                assert!(holder.contains("http://127.0.0.1:5000"), "{holder}")
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(a);
        DataLock::acquire(dir.path()).unwrap();
    }
}
