//! The one way a build process is contained, whichever program it runs (the native
//! `build-child`, or `apptainer build` and everything it starts): `[farm]`'s limits are applied
//! between `fork` and `exec`, before the program runs a single instruction of its own, and hold
//! for all of its descendants.
//!
//! - memory: a child cgroup of the delegated `[farm] cgroup` (`memory.max` on cgroup v2,
//!   `memory.limit_in_bytes` on cgroup v1's memory hierarchy: [`super::cgroup`]), which the
//!   process joins before `exec`; else `RLIMIT_AS`;
//! - wall-clock time: `build_timeout_secs`, then the whole process group is killed;
//! - threads: `GOMAXPROCS` for Go programs (apptainer); each backend passes its own thread flag;
//! - scratch space: a program that bounds its own writes (oci2sif's `max_scratch_bytes`) is
//!   trusted to; for any other, the paths it writes are measured every [`SCRATCH_EVERY`] and the
//!   group is killed once they hold more than `max_scratch_bytes`;
//! - CPU priority: `nice`, optionally `SCHED_IDLE`; and `PR_SET_PDEATHSIG`, so a server killed
//!   outright (its restart re-queues the jobs) leaves no orphan competing for the CPU.
//!
//! Every build runs in its own process group, killed as a whole when the build ends, times out,
//! overflows its scratch space or is dropped (a lost lease): no grandchild outlives its build.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStdout, Command};
use tokio::task::JoinHandle;

use super::backend::Failure;
use super::cgroup::BuildCgroup;
use crate::config::FarmConfig;
use crate::quota::format_size;

/// Bytes of a build's stderr (and of an external program's stdout) kept for the log.
pub const OUTPUT_TAIL: usize = 16 << 10;
/// How often the scratch space of a program that cannot bound it itself is measured.
pub const SCRATCH_EVERY: Duration = Duration::from_millis(500);

/// What one build process is held to.
pub struct Limits<'a> {
    pub farm: &'a FarmConfig,
    /// Where the program writes, measured against `max_scratch_bytes` from outside; empty when
    /// the program bounds its own writes.
    pub watched_scratch: Vec<PathBuf>,
}

/// How a contained process ended (it exited, or was killed by a signal not of our sending).
pub struct Exit<T> {
    pub status: ExitStatus,
    pub stdout: T,
    /// The last [`OUTPUT_TAIL`] bytes.
    pub stderr: String,
    /// The cgroup's OOM killer ended a process of the build.
    pub oom_killed: bool,
    /// What held the build's memory: the cgroup's limit file, or `RLIMIT_AS`.
    pub memory_limit: &'static str,
}

/// Runs `cmd` contained by `limits`, its stdout handed to `read_stdout`. A time limit or
/// scratch bound hit is the `Err`, with the reason; any other end is the [`Exit`] for the
/// caller to judge (see [`died`]). Dropping the future kills the process group.
pub async fn run<T: Send + 'static>(
    mut cmd: Command,
    limits: &Limits<'_>,
    read_stdout: impl FnOnce(ChildStdout) -> JoinHandle<T>,
) -> Result<Exit<T>, Failure> {
    let c = limits.farm;
    let cgroup = match &c.cgroup {
        Some(parent) => Some(
            BuildCgroup::create(parent, c.max_memory_bytes).map_err(|e| {
                Failure::transient(
                    format!(
                        "cannot set up the build's cgroup under {} (farm.cgroup): {e}",
                        parent.display()
                    ),
                    "",
                )
            })?,
        ),
        None => None,
    };
    let before_exec = BeforeExec {
        nice: c.nice,
        sched_idle: c.sched_idle,
        // Under a delegated cgroup, its limit is the limit (it counts what is resident, not
        // what is mapped); else the address space is capped.
        max_address_space: (c.cgroup.is_none() && c.max_memory_bytes > 0)
            .then_some(c.max_memory_bytes),
        cgroup_procs: cgroup.as_ref().and_then(BuildCgroup::procs_fd),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // glibc reserves 64 MiB of address space per arena and thread; under RLIMIT_AS that
        // reservation, not use, would hit the limit first.
        .env("MALLOC_ARENA_MAX", "2")
        .env("GOMAXPROCS", super::build_child::threads(c).to_string())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: `BeforeExec::apply` makes only async-signal-safe system calls on values prepared
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || before_exec.apply());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::transient(format!("cannot start the build process: {e}"), ""))?;
    let group = child.id().map(|pid| Group {
        pgid: pid as libc::pid_t,
    });
    // The child held its own descriptor of cgroup.procs until `exec`; this one is done too.
    let cgroup = cgroup.map(|mut cg| {
        cg.close_procs();
        cg
    });
    let stdout = child.stdout.take().map(read_stdout);
    let stderr = child.stderr.take().map(tail);
    let timeout = Duration::from_secs(c.build_timeout_secs.max(1));
    let scratch = watch_scratch(&limits.watched_scratch, c.max_scratch_bytes);
    let status = tokio::select! {
        status = child.wait() => status
            .map_err(|e| Failure::transient(format!("waiting for the build process: {e}"), ""))?,
        () = tokio::time::sleep(timeout) => {
            drop(group);
            let _ = child.kill().await;
            return Err(Failure::transient(
                format!(
                    "exceeded the {} s time limit (farm.build_timeout_secs); the build's processes were killed",
                    c.build_timeout_secs
                ),
                join(stderr).await,
            ));
        }
        used = scratch => {
            drop(group);
            let _ = child.kill().await;
            // The same image writes as much again: a limit of the image's own making.
            let reason = format!(
                "the build writes more than {} bytes to its scratch space (limit set by farm.max_scratch_bytes; {} found); the build's processes were killed",
                c.max_scratch_bytes,
                used
            );
            let stderr = join(stderr).await;
            return Err(Failure {
                log: if stderr.is_empty() { reason.clone() } else { format!("{reason}\n{stderr}") },
                reason,
                permanent: true,
            });
        }
    };
    // Whatever the program left running in the background ends with it, so that its output
    // pipes close and the cgroup empties.
    drop(group);
    let stderr = join(stderr).await;
    let stdout = match stdout {
        Some(task) => task.await.map_err(|e| {
            Failure::transient(format!("reading the build process's output: {e}"), "")
        })?,
        None => {
            return Err(Failure::transient(
                "the build process has no output pipe".into(),
                "",
            ))
        }
    };
    let oom_killed = cgroup.as_ref().is_some_and(|cg| cg.oom_killed(status));
    Ok(Exit {
        status,
        stdout,
        stderr,
        oom_killed,
        memory_limit: cgroup.as_ref().map_or("RLIMIT_AS", |cg| cg.hierarchy.limit),
    })
}

/// Why a contained process ended without its result, when a limit or a signal explains it:
/// the memory limit (the cgroup's OOM kill, or the allocation failure a program reports under
/// `RLIMIT_AS`), or a signal. `None`: it exited with a status of its own.
pub fn died<T>(exit: &Exit<T>, c: &FarmConfig) -> Option<Failure> {
    use std::os::unix::process::ExitStatusExt;
    let stderr = exit.stderr.to_ascii_lowercase();
    let out_of_memory = exit.oom_killed
        // Rust's allocator, glibc (ENOMEM), the Go runtime, mksquashfs and perl say so.
        || stderr.contains("memory allocation of")
        || stderr.contains("cannot allocate memory")
        || stderr.contains("out of memory")
        || stderr.contains("failed to spawn thread");
    let reason = if out_of_memory {
        let killer = if exit.oom_killed {
            "; the kernel's OOM killer ended a process of the build"
        } else {
            ""
        };
        format!(
            "exceeded the {} memory limit (farm.max_memory_bytes, {}){killer}; the build process ended: {}",
            format_size(c.max_memory_bytes),
            exit.memory_limit,
            exit.status
        )
    } else if let Some(signal) = exit.status.signal() {
        format!("the build process was killed by signal {signal}")
    } else {
        return None;
    };
    Some(Failure::transient(reason, exit.stderr.clone()))
}

/// What the child does to itself between `fork` and `exec` (plain values: no allocation).
#[derive(Clone, Copy)]
struct BeforeExec {
    nice: i32,
    sched_idle: bool,
    max_address_space: Option<u64>,
    /// An open `cgroup.procs` of the build's cgroup: writing `0` moves the writer into it.
    cgroup_procs: Option<std::os::fd::RawFd>,
}

impl BeforeExec {
    fn apply(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls on this process with valid arguments.
        unsafe {
            if let Some(fd) = self.cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if self.nice != 0 {
                check(libc::setpriority(libc::PRIO_PROCESS, 0, self.nice))?;
            }
            if self.sched_idle {
                let param = libc::sched_param { sched_priority: 0 };
                check(libc::sched_setscheduler(0, libc::SCHED_IDLE, &param))?;
            }
            if let Some(limit) = self.max_address_space {
                let limit = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                check(libc::setrlimit(libc::RLIMIT_AS, &limit))?;
            }
        }
        Ok(())
    }
}

/// A build's process group, killed when this is dropped.
struct Group {
    pgid: libc::pid_t,
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: signals our own child's group (its id is the child's pid, which the kernel
        // does not reuse while the group has members).
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }
}

/// Resolves once `paths` hold more than `limit` bytes (the bytes found); never, when there is
/// nothing to watch.
async fn watch_scratch(paths: &[PathBuf], limit: u64) -> u64 {
    if paths.is_empty() || limit == 0 {
        return std::future::pending().await;
    }
    let paths = paths.to_vec();
    loop {
        tokio::time::sleep(SCRATCH_EVERY).await;
        let p = paths.clone();
        let used = tokio::task::spawn_blocking(move || p.iter().map(|p| bytes_under(p)).sum())
            .await
            .unwrap_or(0);
        if used > limit {
            return used;
        }
    }
}

/// Bytes of the regular files at or under `path` (symbolic links not followed; entries that
/// vanish while counted are skipped).
fn bytes_under(path: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file() {
            total = total.saturating_add(meta.len());
        } else if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// The last [`OUTPUT_TAIL`] bytes of `stream`, read to its end.
pub fn tail(mut stream: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * OUTPUT_TAIL {
                kept.drain(..kept.len() - OUTPUT_TAIL);
            }
        }
        let start = kept.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    })
}

async fn join(task: Option<JoinHandle<String>>) -> String {
    match task {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(raw: i32, stderr: &str) -> Exit<()> {
        Exit {
            status: ExitStatus::from_raw(raw),
            stdout: (),
            stderr: stderr.to_owned(),
            oom_killed: false,
            memory_limit: "RLIMIT_AS",
        }
    }

    #[test]
    fn a_death_is_named_by_the_limit_or_signal_that_explains_it() {
        let c = FarmConfig {
            max_memory_bytes: 96 << 20,
            ..FarmConfig::default()
        };
        // mksquashfs, exiting 1 after a failed allocation under RLIMIT_AS.
        let oom = died(&exit(1 << 8, "FATAL ERROR: Out of memory (block)"), &c).unwrap();
        assert!(
            oom.reason
                .starts_with("exceeded the 96 MiB memory limit (farm.max_memory_bytes, RLIMIT_AS)"),
            "{}",
            oom.reason
        );
        assert!(!oom.permanent);
        // The cgroup's OOM killer (v1): the knob it enforced, and who acted.
        let cgroup_oom = Exit {
            oom_killed: true,
            memory_limit: "memory.limit_in_bytes",
            ..exit(libc::SIGKILL, "")
        };
        let oom = died(&cgroup_oom, &c).unwrap();
        assert!(
            oom.reason.starts_with(
                "exceeded the 96 MiB memory limit (farm.max_memory_bytes, memory.limit_in_bytes); \
                 the kernel's OOM killer ended a process of the build"
            ),
            "{}",
            oom.reason
        );
        let killed = died(&exit(libc::SIGSEGV, ""), &c).unwrap();
        assert_eq!(killed.reason, "the build process was killed by signal 11");
        // An error of the program's own is the caller's to word.
        assert!(died(&exit(255 << 8, "FATAL: no such image"), &c).is_none());
    }

    #[test]
    fn scratch_counts_files_below_a_path_and_not_what_links_point_at() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), vec![0u8; 24]).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/link")).unwrap();
        assert_eq!(bytes_under(dir.path()), 1024);
        assert_eq!(bytes_under(&dir.path().join("a/one")), 1000);
        assert_eq!(bytes_under(&dir.path().join("missing")), 0);
    }
}
