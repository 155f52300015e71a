//! Runs one native build in its own process (the same binary's hidden `build-child` command),
//! never in the server's address space, contained by [`super::containment`] like every build
//! process: `[farm]`'s memory limit, wall-clock timeout, lower CPU priority and process group;
//! its thread count and scratch bound (oci2sif's `max_scratch_bytes`) are in the spec it reads.
//! A process that dies or hits a limit fails its job with that reason, classified transient
//! (retried: a resource limit or a crash) unless the build itself reported an image-made,
//! permanent failure. Dropping the future kills the process.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::backend::Failure;
use super::build_child::{BuildSpec, Outcome, ProgressLine};
use super::containment::{self, Limits};
use super::progress::ProgressCell;
use crate::names::Digest;

/// The hidden subcommand that runs [`super::build_child::main`].
pub const CHILD_COMMAND: &str = "build-child";
/// Longest stdout line read (the outcome carries the build log, itself bounded by oci2sif's
/// output, a few KB).
const MAX_LINE: u64 = 1 << 20;

/// What a build process made: the SIF at the spec's `out`.
pub struct ChildBuilt {
    pub log: String,
    /// The SIF's digest, hashed by the build as it wrote the file.
    pub digest: Digest,
}

/// Runs `spec` in a build process.
pub async fn run(spec: &BuildSpec, progress: &ProgressCell) -> Result<ChildBuilt, Failure> {
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
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_COMMAND).arg(&spec_path);
    // oci2sif counts its own writes against max_scratch_bytes, exactly: nothing to watch.
    let limits = Limits {
        farm: c,
        watched_scratch: Vec::new(),
    };
    let progress = progress.clone();
    let exit = containment::run(cmd, &limits, move |s| read_reports(s, progress)).await?;
    match serde_json::from_str::<Outcome>(&exit.stdout) {
        Ok(Outcome::Built { log, sif_sha256 }) if exit.status.success() => {
            let digest = Digest::parse(&format!("sha256:{sif_sha256}")).map_err(|e| {
                Failure::transient(format!("the build reported a bad SIF digest: {e}"), "")
            })?;
            Ok(ChildBuilt { log, digest })
        }
        Ok(Outcome::Failed {
            reason,
            log,
            permanent,
        }) => Err(Failure {
            reason,
            log: with_stderr(log, &exit.stderr),
            permanent,
        }),
        _ => Err(containment::died(&exit, c).unwrap_or_else(|| {
            Failure::transient(
                format!("the build process ended without a result ({})", exit.status),
                exit.stderr.clone(),
            )
        })),
    }
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
