//! The build queue as an administrator sees it: list jobs, retry failed ones, cancel queued or
//! running ones. Plain types and errors; `/admin/builds` maps them to HTTP and
//! `hpc-registry admin builds` calls that.

use std::sync::Arc;

use serde::Serialize;

use super::status::JobStatus;
use super::{planner, Farm};
use crate::meta::{self, Job, JobState, UNPLANNED_PLATFORM};

/// Most jobs one listing returns (newest first).
pub const MAX_LISTED: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no build job {0}")]
    NotFound(i64),
    #[error("build job {id} is {state}: {action}")]
    WrongState {
        id: i64,
        state: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
}

/// One job as `admin builds` lists it: its status as `/sif/…/status` reports it, and who
/// builds it for which repository, and how long it waited and ran.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: i64,
    pub repository: String,
    /// Who holds or last held the job (a worker, a builder host, a Slurm job).
    pub builder: Option<String>,
    #[serde(flatten)]
    pub status: JobStatus,
    /// Seconds from queueing to the (last) start.
    pub waited_secs: Option<i64>,
    /// Seconds the last attempt ran (so far, while building).
    pub build_secs: Option<i64>,
}

impl JobSummary {
    fn of(job: Job, now: i64) -> JobSummary {
        let end = match job.state {
            JobState::Building => now,
            _ => job.finished_at.unwrap_or(now),
        };
        JobSummary {
            id: job.id,
            waited_secs: job.started_at.map(|s| (s - job.created_at).max(0)),
            build_secs: job.started_at.map(|s| (end - s).max(0)),
            status: JobStatus::of(&job, None),
            repository: job.repository,
            builder: job.builder,
        }
    }
}

/// Jobs, newest first, optionally only those in `state`.
pub async fn list(
    farm: &Arc<Farm>,
    state: Option<JobState>,
) -> Result<Vec<JobSummary>, QueueError> {
    let jobs = farm
        .db
        .read(move |c| meta::list_jobs(c, state, MAX_LISTED))
        .await?;
    let now = meta::now();
    Ok(jobs.into_iter().map(|j| JobSummary::of(j, now)).collect())
}

/// Puts failed job `id` back in the queue with fresh attempts. A job whose image could not be
/// planned is planned again instead (it may fail again, with the new reason). Returns the
/// job's summary afterwards.
pub async fn retry(farm: &Arc<Farm>, id: i64) -> Result<JobSummary, QueueError> {
    let job = farm
        .db
        .read(move |c| meta::job_by_id(c, id))
        .await?
        .ok_or(QueueError::NotFound(id))?;
    if job.state != JobState::Failed {
        return Err(QueueError::WrongState {
            id,
            state: job.state.as_str(),
            action: "only failed jobs are retried",
        });
    }
    if job.platform == UNPLANNED_PLATFORM {
        return replan(farm, job).await;
    }
    farm.db.write(move |tx| meta::retry_failed(tx, id)).await?;
    farm.jobs.notify_waiters();
    tracing::info!(job = id, "SIF build re-queued by an administrator");
    summary(farm, id).await
}

/// Retries every failed job; returns how many were re-queued or planned again.
pub async fn retry_failed(farm: &Arc<Farm>) -> Result<usize, QueueError> {
    let ids = farm.db.read(meta::failed_job_ids).await?;
    let mut n = 0;
    for id in ids {
        match retry(farm, id).await {
            Ok(_) => n += 1,
            // Retried or removed meanwhile by someone else.
            Err(QueueError::NotFound(_) | QueueError::WrongState { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Ends queued or building job `id` as failed, naming `by`; a worker still building it loses
/// its lease and stops.
pub async fn cancel(farm: &Arc<Farm>, id: i64, by: &str) -> Result<JobSummary, QueueError> {
    let reason = format!("cancelled by {by}");
    let before = farm
        .db
        .write(move |tx| {
            let before = meta::job_by_id(tx, id)?.map(|j| j.state);
            Ok((before, meta::cancel_job(tx, id, &reason)?))
        })
        .await?;
    match before {
        (None, _) => Err(QueueError::NotFound(id)),
        (Some(state), None) => Err(QueueError::WrongState {
            id,
            state: state.as_str(),
            action: "only queued or building jobs are cancelled",
        }),
        (Some(_), Some(was)) => {
            tracing::info!(job = id, was = was.as_str(), %by, "SIF build cancelled");
            summary(farm, id).await
        }
    }
}

/// Plans an unplanned job's image again: its failed record goes, and the planner queues the
/// real job (or records the image as unplannable again, with today's reason).
async fn replan(farm: &Arc<Farm>, job: Job) -> Result<JobSummary, QueueError> {
    let id = job.id;
    farm.db
        .write(move |tx| meta::delete_failed_job(tx, id))
        .await?;
    let (repo, digest) = (job.repository.clone(), job.manifest_digest.clone());
    if let Err(e) = planner::plan_image(farm, &repo, &digest).await {
        let reason = format!("cannot plan a SIF build for {digest}: {e:#}");
        let (d, r) = (digest.clone(), repo.clone());
        farm.db
            .write(move |tx| meta::record_unplannable(tx, &d, &r, &reason))
            .await?;
    }
    // The job now known for the image: the queued one, or the unplanned one again.
    let d = digest.clone();
    let jobs = farm
        .db
        .read(move |c| meta::jobs_for_manifest(c, &d))
        .await?;
    let now = meta::now();
    jobs.into_iter()
        .next()
        .map(|j| JobSummary::of(j, now))
        .ok_or(QueueError::NotFound(id))
}

async fn summary(farm: &Arc<Farm>, id: i64) -> Result<JobSummary, QueueError> {
    let job = farm
        .db
        .read(move |c| meta::job_by_id(c, id))
        .await?
        .ok_or(QueueError::NotFound(id))?;
    Ok(JobSummary::of(job, meta::now()))
}
