//! What readiness (`GET /readyz`, served by `http::observability`) checks, for load balancers,
//! systemd and monitoring. The answer says nothing private: no path, user or repository, only
//! whether each condition holds.
//!
//! Ready means the registry can take a push and turn it into a SIF: the metadata database takes a
//! write, the data directory's filesystem has more than `[health] min_free` left, and at least one
//! build worker is alive. Anything else is a 503 whose body names each failing condition.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::farm::Farm;
use crate::meta::Db;

/// A readiness probe that waits longer than this on the database counts it as not writable
/// (a stuck writer is as bad as a read-only file for pushes).
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` checks, built once by the server.
pub struct Health {
    db: Arc<Db>,
    farm: Arc<Farm>,
    data_dir: PathBuf,
    min_free_bytes: u64,
}

/// Space on the filesystem holding the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// Available to the (unprivileged) server process, not counting root's reserve.
    pub free_bytes: u64,
}

/// The outcome of one readiness probe: each condition with a human-readable line.
#[derive(Debug)]
pub struct Readiness {
    pub checks: Vec<Check>,
}

#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// `ready` or `not ready`, then one `name: ok|FAIL detail` line per condition.
    pub fn to_text(&self) -> String {
        let mut out = String::from(if self.ready() {
            "ready\n"
        } else {
            "not ready\n"
        });
        for c in &self.checks {
            let state = if c.ok { "ok" } else { "FAIL" };
            out.push_str(&format!("{}: {state}: {}\n", c.name, c.detail));
        }
        out
    }
}

impl Health {
    pub fn new(
        db: Arc<Db>,
        farm: Arc<Farm>,
        data_dir: &Path,
        config: &crate::config::HealthConfig,
    ) -> anyhow::Result<Health> {
        let min_free_bytes = crate::quota::parse_size(&config.min_free).map_err(|e| {
            anyhow::anyhow!("[health] min_free in the configuration is invalid: {e}")
        })?;
        Ok(Health {
            db,
            farm,
            data_dir: data_dir.to_path_buf(),
            min_free_bytes,
        })
    }

    /// Space on the data directory's filesystem (also read by the storage metrics).
    pub fn disk_space(&self) -> std::io::Result<DiskSpace> {
        disk_space(&self.data_dir)
    }

    pub async fn check(&self) -> Readiness {
        let mut checks = Vec::with_capacity(3);
        checks.push(self.check_database().await);
        checks.push(self.check_disk());
        checks.push(self.check_farm());
        Readiness { checks }
    }

    async fn check_database(&self) -> Check {
        let probe = self.db.write(crate::meta::probe_writable);
        let (ok, detail) = match tokio::time::timeout(DB_PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => (true, "writable".to_owned()),
            Ok(Err(e)) => (false, format!("a write failed: {e}")),
            Err(_) => (
                false,
                format!("no write completed within {} s", DB_PROBE_TIMEOUT.as_secs()),
            ),
        };
        Check {
            name: "database",
            ok,
            detail,
        }
    }

    fn check_disk(&self) -> Check {
        let size = crate::quota::format_size;
        let (ok, detail) = match self.disk_space() {
            Ok(space) if space.free_bytes > self.min_free_bytes => (
                true,
                format!(
                    "{} free, threshold {}",
                    size(space.free_bytes),
                    size(self.min_free_bytes)
                ),
            ),
            Ok(space) => (
                false,
                format!(
                    "only {} free, at or below the threshold of {} ([health] min_free)",
                    size(space.free_bytes),
                    size(self.min_free_bytes)
                ),
            ),
            Err(e) => (false, format!("cannot read free space: {e}")),
        };
        Check {
            name: "disk",
            ok,
            detail,
        }
    }

    fn check_farm(&self) -> Check {
        let alive = self.farm.live_workers();
        Check {
            name: "farm",
            ok: alive > 0,
            detail: if alive > 0 {
                format!("{alive} build worker(s) alive")
            } else {
                format!(
                    "no build worker alive ({} configured in [farm] workers): pushed images would not become SIFs",
                    self.farm.config.workers
                )
            },
        }
    }
}

/// `statvfs` on `path`.
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable statvfs buffer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    // `fsblkcnt_t` and `c_ulong` are u64 on the 64-bit Linux targets this runs on.
    let unit: u64 = st.f_frsize;
    Ok(DiskSpace {
        total_bytes: st.f_blocks.saturating_mul(unit),
        free_bytes: st.f_bavail.saturating_mul(unit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_of_an_existing_directory() {
        let space = disk_space(Path::new("/")).expect("statvfs /");
        assert!(space.total_bytes > 0);
        assert!(space.free_bytes <= space.total_bytes);
    }

    #[test]
    fn disk_space_of_a_missing_path_is_an_error() {
        assert!(disk_space(Path::new("/nonexistent/hpc-registry-health")).is_err());
    }

    #[test]
    fn text_names_each_failing_condition() {
        let r = Readiness {
            checks: vec![
                Check {
                    name: "database",
                    ok: true,
                    detail: "writable".into(),
                },
                Check {
                    name: "farm",
                    ok: false,
                    detail: "no build worker alive".into(),
                },
            ],
        };
        assert!(!r.ready());
        assert_eq!(
            r.to_text(),
            "not ready\ndatabase: ok: writable\nfarm: FAIL: no build worker alive\n"
        );
    }
}
