//! Runs one build in its own process (the same binary's hidden `build-child` command), never in
//! the server's address space: with `[farm]`'s memory limit (a child cgroup of the delegated
//! `cgroup` with `memory.max`, else `RLIMIT_AS` set by the child on itself), wall-clock
//! timeout, thread count, scratch bound (oci2sif's `max_scratch_bytes`) and lower CPU priority
//! (`nice`, optionally `SCHED_IDLE`). A process that dies or hits a limit fails its job with
//! that reason, classified transient (retried: a resource limit or a crash) unless the build
//! itself reported an image-made, permanent failure. Dropping the future kills the process.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::backend::Failure;
use super::build_child::{BuildSpec, Outcome, ProgressLine};
use super::progress::ProgressCell;
use crate::quota::format_size;

/// The hidden subcommand that runs [`super::build_child::main`].
pub const CHILD_COMMAND: &str = "build-child";
/// Bytes of the build process's stderr kept for the log.
const STDERR_TAIL: usize = 16 << 10;
/// Longest stdout line read (the outcome carries the build log, itself bounded by oci2sif's
/// output, a few KB).
const MAX_LINE: u64 = 1 << 20;

/// Runs `spec` in a build process; the log on success.
pub async fn run(spec: &BuildSpec, progress: &ProgressCell) -> Result<String, Failure> {
    let c = &spec.farm;
    let spec_path = spec.work_dir.join("spec.json");
    let bytes = serde_json::to_vec(spec)
        .map_err(|e| Failure::transient(format!("cannot write the build spec: {e}"), ""))?;
    tokio::fs::write(&spec_path, bytes)
        .await
        .map_err(|e| Failure::transient(format!("cannot write the build spec: {e}"), ""))?;
    let exe = std::env::current_exe().map_err(|e| {
        Failure::transient(
            format!("cannot find this program to run the build: {e}"),
            "",
        )
    })?;
    let mut child = Command::new(exe)
        .arg(CHILD_COMMAND)
        .arg(&spec_path)
        // glibc reserves 64 MiB of address space per arena and thread; under RLIMIT_AS that
        // reservation, not use, would hit the limit first.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::transient(format!("cannot start the build process: {e}"), ""))?;
    let cgroup = match (&c.cgroup, child.id()) {
        (Some(parent), Some(pid)) => Some(
            BuildCgroup::create(parent, pid, c.max_memory_bytes).map_err(|e| {
                Failure::transient(format!("cannot set up the build's cgroup: {e}"), "")
            })?,
        ),
        _ => None,
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| read_reports(s, progress.clone()));
    let stderr = child.stderr.take().map(tail);
    let timeout = Duration::from_secs(c.build_timeout_secs.max(1));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status
            .map_err(|e| Failure::transient(format!("waiting for the build process: {e}"), ""))?,
        Err(_) => {
            let _ = child.kill().await;
            let stderr = join(stderr).await;
            return Err(Failure::transient(
                format!(
                    "exceeded the {} s time limit (farm.build_timeout_secs); the build process was killed",
                    c.build_timeout_secs
                ),
                stderr,
            ));
        }
    };
    let (outcome, stderr) = (join(stdout).await, join(stderr).await);
    let oom = cgroup.as_ref().is_some_and(BuildCgroup::oom_killed);
    drop(cgroup);
    match serde_json::from_str::<Outcome>(&outcome) {
        Ok(Outcome::Built { log }) if status.success() => Ok(log),
        Ok(Outcome::Failed {
            reason,
            log,
            permanent,
        }) => Err(Failure {
            reason,
            log: with_stderr(log, &stderr),
            permanent,
        }),
        _ => Err(died(
            status,
            oom,
            &stderr,
            c.max_memory_bytes,
            c.cgroup.is_some(),
        )),
    }
}

/// Why a build process ended without its outcome.
fn died(status: ExitStatus, oom: bool, stderr: &str, limit: u64, cgroup: bool) -> Failure {
    use std::os::unix::process::ExitStatusExt;
    let out_of_memory = oom
        || stderr.contains("memory allocation of")
        || stderr.contains("Cannot allocate memory")
        || stderr.contains("failed to spawn thread");
    let reason = if out_of_memory {
        let how = if cgroup { "memory.max" } else { "RLIMIT_AS" };
        format!(
            "exceeded the {} memory limit (farm.max_memory_bytes, {how}); the build process ended: {status}",
            format_size(limit)
        )
    } else if let Some(signal) = status.signal() {
        format!("the build process was killed by signal {signal}")
    } else {
        format!("the build process ended without a result ({status})")
    };
    Failure::transient(reason, stderr.to_owned())
}

fn with_stderr(log: String, stderr: &str) -> String {
    if stderr.trim().is_empty() {
        log
    } else {
        format!("{log}--- build process stderr ---\n{stderr}")
    }
}

/// Reads the build process's stdout to its end: progress lines go to `progress`, and the last
/// other line (the outcome) is returned.
fn read_reports(
    stream: impl AsyncRead + Unpin + Send + 'static,
    progress: ProgressCell,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream.take(64 * MAX_LINE)).lines();
        let mut last = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(report) = serde_json::from_str::<ProgressLine>(&line) {
                progress.set(report.progress);
            } else if line.len() as u64 <= MAX_LINE {
                last = line;
            }
        }
        last
    })
}

/// The last [`STDERR_TAIL`] bytes of `stream`, read to its end.
fn tail(mut stream: impl AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_TAIL {
                kept.drain(..kept.len() - STDERR_TAIL);
            }
        }
        let start = kept.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    })
}

async fn join(task: Option<tokio::task::JoinHandle<String>>) -> String {
    match task {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    }
}

/// A child cgroup of the delegated `[farm] cgroup` holding one build process, removed on drop.
struct BuildCgroup {
    dir: PathBuf,
}

impl BuildCgroup {
    fn create(parent: &Path, pid: u32, max_memory: u64) -> std::io::Result<BuildCgroup> {
        let dir = parent.join(format!("build-{pid}"));
        std::fs::create_dir(&dir)?;
        let cg = BuildCgroup { dir };
        std::fs::write(cg.dir.join("memory.max"), max_memory.to_string())?;
        // No swap either, where the controller offers it: the limit is on memory, not RAM.
        let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string())?;
        Ok(cg)
    }

    fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|events| {
                events
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
