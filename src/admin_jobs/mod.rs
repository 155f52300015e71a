//! Long admin work as background jobs: `admin scrub` (which may take days on a large store) runs
//! as a job whose progress `admin jobs [ID]` shows, which `admin jobs cancel ID` stops, and which
//! a restarted server resumes from its last checkpoint. Jobs live in `admin_jobs`
//! (`meta::admin_jobs`): params as started, the last progress and checkpoint (written every
//! page of blobs and at least every two seconds), and the final report or error.
//!
//! Scrub is the one job kind: prune and GC already run in short transactions and finish in
//! minutes, so they stay requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::farm::Farm;
use crate::lifecycle::scrub::{self, Checkpoint, Finished, RunningGuard, ScrubError, Watch};
use crate::meta::{self, AdminJobRow, Db};
use crate::storage::BlobStore;

/// The one job kind so far.
pub const SCRUB: &str = "scrub";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("a scrub is already running (job {0}); wait for it or cancel it")]
    Busy(String),
    #[error("no job {0}")]
    NotFound(i64),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("job task failed: {0}")]
    Task(String),
}

/// A scrub's parameters as started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ScrubParams {
    pub rate_bytes_per_sec: u64,
}

/// A scrub's progress as `admin jobs` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScrubProgress {
    pub scanned_blobs: u64,
    pub scanned_bytes: u64,
    pub total_blobs: u64,
    pub total_bytes: u64,
    pub corrupted: u64,
}

/// One job, for the admin API: the row, with its JSON columns parsed.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: AdminJobRow,
    pub params: Value,
    pub progress: Option<Value>,
    /// The report of a finished job (of a cancelled scrub: what it found until then).
    pub result: Option<Value>,
}

impl JobView {
    fn of(row: AdminJobRow) -> JobView {
        let json = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        JobView {
            params: serde_json::from_str(&row.params).unwrap_or(Value::Null),
            progress: json(&row.progress),
            result: json(&row.result),
            job: row,
        }
    }

    pub fn finished(&self) -> bool {
        self.job.state != "running"
    }
}

/// The jobs of one server.
pub struct Jobs {
    db: Arc<Db>,
    store: BlobStore,
    /// Woken when a scrub re-queued SIF builds, so idle workers start at once.
    farm: Arc<Farm>,
    /// Cancel flags of the jobs running in this process.
    running: Mutex<HashMap<i64, Arc<AtomicBool>>>,
    /// Notified whenever a job ends, for the callers waiting on one.
    ended: tokio::sync::Notify,
}

impl Jobs {
    pub fn new(db: Arc<Db>, store: BlobStore, farm: Arc<Farm>) -> Arc<Jobs> {
        Arc::new(Jobs {
            db,
            store,
            farm,
            running: Mutex::new(HashMap::new()),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// Starts a scrub at `rate` bytes/s as a job; `Busy` while another scrub runs.
    pub async fn start_scrub(self: &Arc<Self>, rate: u64, by: &str) -> Result<JobView, JobError> {
        let guard = match RunningGuard::acquire() {
            Ok(g) => g,
            Err(_) => return Err(JobError::Busy(self.running_ids())),
        };
        let params = serde_json::to_string(&ScrubParams {
            rate_bytes_per_sec: rate,
        })
        .map_err(|e| JobError::Task(e.to_string()))?;
        let by = by.to_owned();
        let id = self
            .db
            .write(move |tx| meta::insert_admin_job(tx, SCRUB, &params, &by))
            .await?;
        tracing::info!(job = id, rate, "scrub job started");
        self.spawn_scrub(id, rate, Checkpoint::default(), guard);
        self.get(id).await?.ok_or(JobError::NotFound(id))
    }

    /// Resumes the jobs a stopped server left running (at start-up).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, JobError> {
        let rows = self.db.read(meta::running_admin_jobs).await?;
        let mut resumed = 0;
        for row in rows {
            let id = row.id;
            let end = |state: &'static str, error: String| {
                let db = Arc::clone(&self.db);
                async move {
                    db.write(move |tx| meta::finish_admin_job(tx, id, state, None, Some(&error)))
                        .await
                }
            };
            if row.kind != SCRUB {
                end("failed", format!("unknown job kind {:?}", row.kind)).await?;
                continue;
            }
            if row.cancel_requested {
                end("cancelled", "cancelled before the restart".into()).await?;
                continue;
            }
            let Ok(guard) = RunningGuard::acquire() else {
                end("failed", "another scrub was resumed first".into()).await?;
                continue;
            };
            let rate = serde_json::from_str::<ScrubParams>(&row.params)
                .map(|p| p.rate_bytes_per_sec)
                .unwrap_or(0);
            let at: Checkpoint = row
                .checkpoint
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_default();
            tracing::info!(job = id, after = %at.after, "resuming a scrub job from its checkpoint");
            self.spawn_scrub(id, rate, at, guard);
            resumed += 1;
        }
        Ok(resumed)
    }

    fn running_ids(&self) -> String {
        let ids: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|id| id.to_string())
            .collect();
        if ids.is_empty() {
            "a synchronous one".into()
        } else {
            ids.join(", ")
        }
    }

    fn spawn_scrub(self: &Arc<Self>, id: i64, rate: u64, at: Checkpoint, guard: RunningGuard) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&cancel));
        let jobs = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            jobs.run_scrub(id, rate, at, cancel);
            jobs.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            jobs.ended.notify_waiters();
        });
    }

    /// Runs a scrub job to its end (blocking) and records how it ended.
    fn run_scrub(&self, id: i64, rate: u64, at: Checkpoint, cancel: Arc<AtomicBool>) {
        let totals = self.db.read_blocking(meta::scrub_totals).unwrap_or((0, 0));
        let mut watch = JobWatch {
            db: &self.db,
            id,
            cancel,
            totals,
        };
        let outcome = scrub::scrub_from(&self.db, &self.store, rate, at, &mut watch);
        let (state, result, error) = match outcome {
            Ok(Finished::Done(report)) => {
                if report.corrupted.iter().any(|c| c.rebuild.is_some()) {
                    self.farm.jobs.notify_waiters();
                }
                ("done", serde_json::to_string(&report).ok(), None)
            }
            Ok(Finished::Cancelled(at)) => (
                "cancelled",
                serde_json::to_string(&at.report).ok(),
                Some("cancelled by an administrator".to_owned()),
            ),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        tracing::info!(job = id, state, "scrub job ended");
        let written = self.db.write_blocking(|tx| {
            meta::finish_admin_job(tx, id, state, result.as_deref(), error.as_deref())
        });
        if let Err(e) = written {
            tracing::error!(job = id, "cannot record the end of the scrub job: {e}");
        }
    }

    pub async fn get(&self, id: i64) -> Result<Option<JobView>, JobError> {
        Ok(self
            .db
            .read(move |c| meta::admin_job(c, id))
            .await?
            .map(JobView::of))
    }

    /// The newest `limit` jobs, newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<JobView>, JobError> {
        let rows = self
            .db
            .read(move |c| meta::list_admin_jobs(c, limit))
            .await?;
        Ok(rows.into_iter().map(JobView::of).collect())
    }

    /// Asks job `id` to stop (at its next blob); the job as it is now.
    pub async fn cancel(&self, id: i64) -> Result<JobView, JobError> {
        let was_running = self
            .db
            .write(move |tx| meta::request_admin_job_cancel(tx, id))
            .await?;
        if was_running {
            if let Some(flag) = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
            {
                flag.store(true, Ordering::SeqCst);
            }
            tracing::info!(job = id, "job cancel requested");
        }
        self.get(id).await?.ok_or(JobError::NotFound(id))
    }

    /// Waits until job `id` has finished (the synchronous `POST /admin/scrub`).
    pub async fn wait(&self, id: i64) -> Result<JobView, JobError> {
        loop {
            if let Some(job) = self.wait_for(id, Duration::from_secs(3600)).await? {
                if job.finished() {
                    return Ok(job);
                }
            }
        }
    }

    /// Job `id` once it has finished, or as it is after `timeout` (a long poll); `None` if
    /// there is no such job.
    pub async fn wait_for(&self, id: i64, timeout: Duration) -> Result<Option<JobView>, JobError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the read, so an end between the two is not missed.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let job = self.get(id).await?;
            match &job {
                Some(j) if !j.finished() && tokio::time::Instant::now() < until => {}
                _ => return Ok(job),
            }
            // Also wakes now and then: a job ended by another process shows in its row only.
            let _ = tokio::time::timeout_at(
                until.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                ended,
            )
            .await;
        }
    }
}

impl From<ScrubError> for JobError {
    fn from(e: ScrubError) -> Self {
        match e {
            ScrubError::Busy => JobError::Busy("a synchronous one".into()),
            ScrubError::Meta(m) => JobError::Meta(m),
            ScrubError::Task(t) => JobError::Task(t),
        }
    }
}

/// A scrub job's link to its row: checkpoints and progress written, cancel read.
struct JobWatch<'a> {
    db: &'a Db,
    id: i64,
    cancel: Arc<AtomicBool>,
    totals: (i64, i64),
}

impl Watch for JobWatch<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn checkpoint(&mut self, at: &Checkpoint) {
        let progress = ScrubProgress {
            scanned_blobs: at.report.scanned_blobs,
            scanned_bytes: at.report.scanned_bytes,
            total_blobs: self.totals.0.max(0) as u64,
            total_bytes: self.totals.1.max(0) as u64,
            corrupted: at.report.corrupted.len() as u64,
        };
        let (Ok(p), Ok(c)) = (serde_json::to_string(&progress), serde_json::to_string(at)) else {
            return;
        };
        let id = self.id;
        if let Err(e) = self
            .db
            .write_blocking(|tx| meta::save_admin_job_progress(tx, id, &p, &c))
        {
            // The scrub goes on; a restart would resume from the checkpoint before.
            tracing::warn!(job = id, "cannot save the scrub's checkpoint: {e}");
        }
    }
}
