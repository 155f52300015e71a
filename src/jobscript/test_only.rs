//! `sbatch --test-only`: Slurm's own opinion of a script (would it be accepted, when would it
//! start), where `sbatch` is on PATH. The script goes in on standard input; nothing is queued.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `sbatch --test-only` said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestOnly {
    /// Slurm would accept the job.
    pub accepted: bool,
    /// Its words (sbatch writes them to standard error), trimmed.
    pub message: String,
}

/// Slurm's clients answer within their MessageTimeout (10 s by default) and a retry or two.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `sbatch` on PATH, if any.
pub fn sbatch_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sbatch"))
        .find(|p| p.is_file())
}

/// Runs `sbatch --test-only` on `script` (with `extra_args` first, e.g. a `--chdir`); `None`
/// when sbatch is not installed here. An error is a failure to run it at all.
pub fn sbatch_test_only(script: &str, extra_args: &[&str]) -> std::io::Result<Option<TestOnly>> {
    let Some(sbatch) = sbatch_program() else {
        return Ok(None);
    };
    let mut child = Command::new(sbatch)
        .arg("--test-only")
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = script.to_owned();
    // sbatch may refuse before reading all of the script: write from a thread, ignore EPIPE.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.join();
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let message = format!("{}\n{}", err.trim(), out.trim()).trim().to_owned();
    Ok(Some(match status {
        Some(s) => TestOnly {
            accepted: s.success(),
            message,
        },
        None => TestOnly {
            accepted: false,
            message: format!("sbatch --test-only did not answer within {TIMEOUT:?}: {message}"),
        },
    }))
}
