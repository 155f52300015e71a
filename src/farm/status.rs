//! The status model of a build job as `/sif/…/status` (and a 202 while building) reports it,
//! and the failure report of a job that failed for good. Plain serializable types: the HTTP
//! layer only renders them.

use serde::Serialize;

use super::progress::Progress;
use crate::meta::{EnrootJob, Job, JobState};

/// Bytes of build log included in a failure report.
const LOG_TAIL: usize = 4096;

/// A job's state for clients polling for their SIF.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub image: String,
    pub platform: String,
    pub state: &'static str,
    /// Queued jobs ahead of this one (queued jobs only).
    pub position: Option<i64>,
    /// How far the build is (phase, layers and bytes done, ETA) while building.
    pub progress: Option<Progress>,
    /// Who holds the job (a worker of this server, a builder host, a Slurm job).
    pub builder: Option<String>,
    pub attempts: i64,
    pub sif: Option<String>,
    pub failure: Option<String>,
    pub backend: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl JobStatus {
    pub fn of(job: &Job, position: Option<i64>) -> JobStatus {
        JobStatus {
            image: job.manifest_digest.clone(),
            platform: job.platform.clone(),
            state: job.state.as_str(),
            position: position.filter(|_| job.state == JobState::Queued),
            progress: job.progress.as_deref().map(Progress::from_column),
            builder: job.builder.clone(),
            attempts: job.attempts,
            sif: job.sif_digest.clone(),
            failure: job.failure.clone(),
            backend: job.backend.clone(),
            queued_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

impl JobStatus {
    /// The status of the derivation of a ready SIF's enroot image (`sif` is that SIF, which
    /// stays as it is whatever the derivation does).
    pub fn of_derivation(job: &EnrootJob, position: Option<i64>) -> JobStatus {
        JobStatus {
            image: job.manifest_digest.clone(),
            platform: job.platform.clone(),
            state: job.state.as_str(),
            position: position.filter(|_| job.state == JobState::Queued),
            progress: job.progress.as_deref().map(Progress::from_column),
            builder: job.lease_owner.clone(),
            attempts: job.attempts,
            sif: Some(job.sif_digest.clone()),
            failure: job.failure.clone(),
            backend: Some("native (enroot image)".to_owned()),
            queued_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// Why there is no SIF: the job failed for good.
#[derive(Debug, Clone)]
pub struct BuildFailed {
    pub message: String,
    pub attempts: i64,
    /// The end of the build log.
    pub log_tail: String,
}

impl BuildFailed {
    pub fn of(job: &Job, log: &str) -> BuildFailed {
        let message = format!(
            "building a SIF for {} ({}) failed: {}",
            job.manifest_digest,
            job.platform,
            job.failure.as_deref().unwrap_or("unknown reason")
        );
        BuildFailed::with_log(message, job.attempts, log)
    }

    /// The derivation of a SIF's enroot image failed for good (the SIF is unaffected).
    pub fn of_derivation(job: &EnrootJob, log: &str) -> BuildFailed {
        let message = format!(
            "deriving the enroot image of {} ({}) failed: {}; its SIF {} is unaffected: run \
             it with apptainer (`hpc-registry run`); the server tries again when it restarts",
            job.manifest_digest,
            job.platform,
            job.failure.as_deref().unwrap_or("unknown reason"),
            job.sif_digest
        );
        BuildFailed::with_log(message, job.attempts, log)
    }

    fn with_log(message: String, attempts: i64, log: &str) -> BuildFailed {
        let mut start = log.len().saturating_sub(LOG_TAIL);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        BuildFailed {
            message,
            attempts,
            log_tail: log[start..].to_owned(),
        }
    }
}
