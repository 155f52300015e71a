//! The status model of a build job as `/sif/…/status` (and a 202 while building) reports it,
//! and the failure report of a job that failed for good. Plain serializable types: the HTTP
//! layer only renders them.

use serde::Serialize;

use crate::meta::{Job, JobState};

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
    pub progress: Option<String>,
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
            progress: job.progress.clone(),
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
        let mut start = log.len().saturating_sub(LOG_TAIL);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        BuildFailed {
            message: format!(
                "building a SIF for {} ({}) failed: {}",
                job.manifest_digest,
                job.platform,
                job.failure.as_deref().unwrap_or("unknown reason")
            ),
            attempts: job.attempts,
            log_tail: log[start..].to_owned(),
        }
    }
}
