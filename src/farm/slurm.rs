//! `[farm] executor = "slurm"`: every build becomes one `sbatch` job running
//! `hpc-registry builder --once` with a credential for that one job (minted at submission,
//! revoked when the Slurm job or the build ends; a 0600 file the job reads, see
//! `builders/README.md` for why a file and not `--export`). The farm does not schedule: Slurm
//! does. This loop only submits queued jobs (at most `[farm.slurm] max_jobs` at once) and
//! reconciles with Slurm (`squeue`, then `scontrol show job` for the state and reason of a
//! job that left the queue; no accounting needed):
//!
//! - a Slurm job that ended (completed, failed, cancelled, preempted, timed out, lost by
//!   Slurm) while its build was still held by it fails that attempt with Slurm's state and
//!   reason, transient, so the retry policy re-queues it; a build it never claimed is simply
//!   submitted again;
//! - the Slurm job of a build whose image was deleted meanwhile is `scancel`ed and the build
//!   cancelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use super::backend::Failure;
use super::{owner, worker, Farm};
use crate::auth::builder::{self as credentials, NewBuilder};
use crate::config::SlurmConfig;
use crate::meta::{self, Job, JobState, SlurmBuild};

/// The job script used when `[farm.slurm] template` is unset.
const DEFAULT_TEMPLATE: &str = include_str!("../../builders/slurm-build.sbatch");
/// A one-job credential outlives its Slurm job's time limit by at most this (it is revoked
/// when the job ends anyway).
const CREDENTIAL_TTL_SECS: i64 = 7 * 24 * 3600;

/// Slurm job states after which the job runs no more (`scontrol show job`'s `JobState`).
const ENDED: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "PREEMPTED",
    "NODE_FAIL",
    "BOOT_FAIL",
    "OUT_OF_MEMORY",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
];

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlurmState {
    state: String,
    reason: String,
}

/// Runs the Slurm executor until the process ends.
pub async fn run(farm: Arc<Farm>, url: String, default_work_dir: PathBuf) {
    let c = farm.config.slurm.clone();
    let every = Duration::from_secs(c.reconcile_secs.max(1));
    let work_dir = c.work_dir.clone().unwrap_or(default_work_dir);
    if let Err(e) = crate::storage::create_private_dir(&work_dir) {
        tracing::error!("Slurm executor: cannot create {}: {e}", work_dir.display());
        return;
    }
    let server = c.server_url.clone().unwrap_or(url);
    let executor = Executor {
        farm: Arc::clone(&farm),
        config: c,
        work_dir,
        server,
    };
    tracing::info!(server = %executor.server, "SIF builds run as Slurm jobs");
    loop {
        let woken = farm.jobs.notified();
        if let Err(e) = executor.reconcile().await {
            tracing::error!("Slurm executor: {e:#}");
        }
        if let Err(e) = executor.submit().await {
            tracing::error!("Slurm executor: {e:#}");
        }
        let _ = tokio::time::timeout(every, woken).await;
    }
}

struct Executor {
    farm: Arc<Farm>,
    config: SlurmConfig,
    work_dir: PathBuf,
    server: String,
}

impl Executor {
    fn command(&self, tool: &str) -> Command {
        let program = match &self.config.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let mut cmd = Command::new(program);
        if let Some(conf) = &self.config.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs a Slurm command; its stdout, or an error with its stderr.
    async fn slurm(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("cannot run {tool}: {e}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "{tool} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Submits runnable queued jobs that have no Slurm job yet.
    async fn submit(&self) -> anyhow::Result<()> {
        let active = self.farm.db.read(meta::list_slurm_builds).await?;
        let room = self.config.max_jobs.saturating_sub(active.len());
        if room == 0 {
            return Ok(());
        }
        let jobs = self
            .farm
            .db
            .read(move |c| meta::runnable_jobs(c, 4 * room as i64 + 16))
            .await?;
        let pending: Vec<Job> = jobs
            .into_iter()
            .filter(|j| j.platform != meta::UNPLANNED_PLATFORM)
            .filter(|j| !active.iter().any(|a| a.job_id == j.id))
            .take(room)
            .collect();
        for job in pending {
            if let Err(e) = self.submit_one(&job).await {
                tracing::error!(
                    job = job.id,
                    "cannot submit the build as a Slurm job: {e:#}"
                );
            }
        }
        Ok(())
    }

    async fn submit_one(&self, job: &Job) -> anyhow::Result<()> {
        let mut suffix = [0u8; 4];
        crate::auth::random_bytes(&mut suffix)?;
        let name = format!("slurm-job{}-{}", job.id, hex::encode(suffix));
        let new = NewBuilder {
            name: name.clone(),
            platforms: vec![job.platform.clone()],
            job_id: Some(job.id),
            expires_at: Some(meta::now() + CREDENTIAL_TTL_SECS),
            created_by: "slurm-executor".into(),
        };
        let db = Arc::clone(&self.farm.db);
        let (token, _) =
            tokio::task::spawn_blocking(move || credentials::create(&db, &new)).await??;
        let token_file = self.work_dir.join(format!("{name}.token"));
        let script = self.work_dir.join(format!("{name}.sbatch"));
        let scratch = self.work_dir.join(format!("{name}.scratch"));
        write_private(&token_file, &format!("{token}\n"))?;
        let template = match &self.config.template {
            Some(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            None => DEFAULT_TEMPLATE.to_owned(),
        };
        let binary = match &self.config.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe()?,
        };
        let text = render(
            &template,
            &[
                ("BINARY", &binary.display().to_string()),
                ("SERVER", &self.server),
                ("TOKEN_FILE", &token_file.display().to_string()),
                ("WORK_DIR", &scratch.display().to_string()),
                ("JOB", &job.id.to_string()),
                ("PLATFORM", &job.platform),
                ("THREADS", &self.config.cpus.to_string()),
            ],
        );
        write_private(&script, &text)?;
        let output = self.work_dir.join(format!("{name}.%j.out"));
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name=hpcr-build-{}", job.id),
            format!("--output={}", output.display()),
            format!("--cpus-per-task={}", self.config.cpus),
            format!("--mem={}", self.config.memory),
            format!("--time={}", self.config.time_limit),
            format!("--comment=hpc-registry build job {}", job.id),
        ];
        for (flag, value) in [
            ("partition", &self.config.partition),
            ("account", &self.config.account),
            ("qos", &self.config.qos),
        ] {
            if let Some(v) = value {
                args.push(format!("--{flag}={v}"));
            }
        }
        args.push(script.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let submitted = self.slurm("sbatch", &refs).await;
        let slurm_job = match submitted {
            // `--parsable`: `ID` or `ID;cluster`.
            Ok(out) => out.trim().split(';').next().unwrap_or("").to_owned(),
            Err(e) => {
                self.forget(&name).await;
                return Err(e);
            }
        };
        if slurm_job.is_empty() || !slurm_job.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            self.forget(&name).await;
            anyhow::bail!("sbatch answered {slurm_job:?}, not a job id");
        }
        let row = SlurmBuild {
            job_id: job.id,
            slurm_job: slurm_job.clone(),
            builder: name.clone(),
            submitted_at: meta::now(),
        };
        self.farm
            .db
            .write(move |tx| meta::insert_slurm_build(tx, &row))
            .await?;
        tracing::info!(job = job.id, slurm_job = %slurm_job, builder = %name, "SIF build submitted as a Slurm job");
        Ok(())
    }

    /// Asks Slurm about every submitted build and acts on those that ended or lost their image.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let active = self.farm.db.read(meta::list_slurm_builds).await?;
        for build in active {
            if let Err(e) = self.reconcile_one(&build).await {
                tracing::warn!(job = build.job_id, slurm_job = %build.slurm_job, "Slurm reconcile: {e:#}");
            }
        }
        Ok(())
    }

    async fn reconcile_one(&self, build: &SlurmBuild) -> anyhow::Result<()> {
        let id = build.job_id;
        let job = self.farm.db.read(move |c| meta::job_by_id(c, id)).await?;
        let image_gone = match &job {
            None => true,
            Some(j) => {
                let d = j.manifest_digest.clone();
                self.farm
                    .db
                    .read(move |c| meta::repositories_with_manifest(c, &d))
                    .await?
                    .is_empty()
            }
        };
        let state = self.state_of(&build.slurm_job).await?;
        let running = state
            .as_ref()
            .is_some_and(|s| !ENDED.contains(&s.state.as_str()));
        let job_state = job.as_ref().map(|j| j.state);
        if image_gone {
            if running {
                self.slurm("scancel", &[&build.slurm_job]).await?;
            }
            let reason = "the image was deleted while it was being built".to_owned();
            if matches!(job_state, Some(JobState::Queued | JobState::Building)) {
                self.farm
                    .db
                    .write(move |tx| meta::cancel_job(tx, id, &reason))
                    .await?;
            }
            tracing::info!(job = id, slurm_job = %build.slurm_job, "the image was deleted: its Slurm build job was cancelled");
            return self.finish(build).await;
        }
        match job_state {
            // Done: the builder reported (or its build was cancelled). The Slurm job ends on
            // its own; one still holding a one-job credential after that has nothing to do.
            Some(JobState::Ready | JobState::Failed) | None => {
                if running {
                    let _ = self.slurm("scancel", &[&build.slurm_job]).await;
                }
                self.finish(build).await
            }
            Some(JobState::Queued | JobState::Building) if running => Ok(()),
            Some(state_now) => {
                let what = match &state {
                    Some(s) if s.reason.is_empty() || s.reason == "None" => {
                        format!("Slurm job {} ended {}", build.slurm_job, s.state)
                    }
                    Some(s) => format!(
                        "Slurm job {} ended {} ({})",
                        build.slurm_job, s.state, s.reason
                    ),
                    None => format!("Slurm job {} vanished from Slurm", build.slurm_job),
                };
                if state_now == JobState::Building {
                    self.fail_held(id, &build.builder, &what).await?;
                }
                tracing::warn!(job = id, slurm_job = %build.slurm_job, "{what} without a result; the build is re-queued");
                self.finish(build).await
            }
        }
    }

    /// Fails the attempt of job `id` if the Slurm job's builder holds it (transient: retried).
    async fn fail_held(&self, id: i64, builder: &str, why: &str) -> anyhow::Result<()> {
        let held = self
            .farm
            .db
            .read(move |c| meta::lease_owner_of(c, id))
            .await?;
        let Some(lease_owner) = held.filter(|o| owner::builder_of(o) == Some(builder)) else {
            return Ok(());
        };
        let Some(job) = self.farm.db.read(move |c| meta::job_by_id(c, id)).await? else {
            return Ok(());
        };
        let elapsed = job.started_at.map_or(0, |s| (meta::now() - s).max(0)) as u64;
        let failure = Failure::transient(format!("{why}; the build is retried"), "");
        worker::settle(
            &self.farm,
            &lease_owner,
            &job,
            Duration::from_secs(elapsed),
            Err(failure),
        )
        .await;
        Ok(())
    }

    /// Forgets a Slurm build: its row, its credential, its files.
    async fn finish(&self, build: &SlurmBuild) -> anyhow::Result<()> {
        let id = build.job_id;
        self.farm
            .db
            .write(move |tx| meta::delete_slurm_build(tx, id))
            .await?;
        self.forget(&build.builder).await;
        Ok(())
    }

    /// Revokes a one-job credential and removes its files.
    async fn forget(&self, name: &str) {
        let db = Arc::clone(&self.farm.db);
        let n = name.to_owned();
        let _ = tokio::task::spawn_blocking(move || credentials::revoke(&db, &n)).await;
        for ext in ["token", "sbatch"] {
            let _ = tokio::fs::remove_file(self.work_dir.join(format!("{name}.{ext}"))).await;
        }
        let _ = tokio::fs::remove_dir_all(self.work_dir.join(format!("{name}.scratch"))).await;
    }

    /// The job's state: `squeue` while Slurm queues or runs it, else `scontrol show job`
    /// (kept `MinJobAge` after it ended); `None` once Slurm forgot it.
    async fn state_of(&self, slurm_job: &str) -> anyhow::Result<Option<SlurmState>> {
        let listed = self
            .slurm("squeue", &["-h", "-j", slurm_job, "-o", "%T|%r"])
            .await
            .unwrap_or_default();
        if let Some(line) = listed.lines().find(|l| !l.trim().is_empty()) {
            let (state, reason) = line.trim().split_once('|').unwrap_or((line.trim(), ""));
            if !ENDED.contains(&state) {
                return Ok(Some(SlurmState {
                    state: state.to_owned(),
                    reason: reason.to_owned(),
                }));
            }
        }
        match self
            .slurm("scontrol", &["show", "job", "-o", slurm_job])
            .await
        {
            Ok(text) => Ok(parse_scontrol(&text)),
            // "Invalid job id specified": Slurm no longer knows the job.
            Err(e) if e.to_string().contains("Invalid job id") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `JobState=` and `Reason=` of `scontrol show job -o` (one line of `key=value` words).
fn parse_scontrol(text: &str) -> Option<SlurmState> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .map(str::to_owned)
    };
    Some(SlurmState {
        state: field("JobState=")?,
        reason: field("Reason=").unwrap_or_default(),
    })
}

/// The template with every `{{KEY}}` replaced.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    text
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses() {
        let t = render(
            "x {{JOB}} {{SERVER}} {{JOB}}",
            &[("JOB", "7"), ("SERVER", "http://h")],
        );
        assert_eq!(t, "x 7 http://h 7");
        assert!(DEFAULT_TEMPLATE.contains("{{TOKEN_FILE}}"));
        let s =
            parse_scontrol("JobId=5 JobName=x JobState=CANCELLED Reason=None Dependency=(null)")
                .unwrap();
        assert_eq!((s.state.as_str(), s.reason.as_str()), ("CANCELLED", "None"));
        assert_eq!(parse_scontrol("nothing"), None);
    }
}
