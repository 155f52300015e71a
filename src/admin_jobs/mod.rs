//! Long admin work as background jobs: a scrub (which may take days on a large store), a GC
//! (the sweep of every unreferenced manifest, SIF and blob) and a prune (retention over every
//! repository, then the GC) run as jobs whose progress `admin jobs [ID]` shows, which `admin jobs
//! cancel ID` stops, and which a restarted server resumes from its last checkpoint. Jobs live in
//! `admin_jobs` (`meta::admin_jobs`): params as started, the last progress and checkpoint, and
//! the final report or error.
//!
//! This module is the plumbing, the same for every kind: the row (insert, progress, end), the
//! task, the cancel flag, resume at start-up, waiting for an end. A kind ([`Kind`]: `scrub.rs`,
//! `gc.rs`) supplies its params, how it takes its right to run (one scrub at a time; one GC or
//! prune at a time, the scheduled prune included), and its run function, which reports through
//! [`JobWatch`] (a [`crate::lifecycle::Watch`]): checkpoints and progress written to the row,
//! the cancel flag read between steps.

mod gc;
mod scrub;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::lifecycle::Watch;
use crate::meta::{self, AdminJobRow, Db};

pub use gc::{GcJob, GcParams, GC, PRUNE};
pub use scrub::{ScrubJob, ScrubParams, SCRUB};

/// Who started a scheduled prune (`[gc] interval`), in the job's `created_by`: not a user name
/// (those never hold parentheses).
pub const SCHEDULE: &str = "(schedule)";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "{what} is already running ({holder}); wait for it or cancel it: admin jobs cancel ID"
    )]
    Busy { what: &'static str, holder: String },
    #[error("no job {0}")]
    NotFound(i64),
    #[error("job kind {0:?} does not exist: use scrub, gc or prune")]
    UnknownKind(String),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("job task failed: {0}")]
    Task(String),
    #[error("the server is stopping; start the job again once it is back")]
    Stopping,
}

/// One job, for the admin API: the row, with its JSON columns parsed.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: AdminJobRow,
    pub params: Value,
    pub progress: Option<Value>,
    /// The report of a finished job (of a cancelled one: what it did until then).
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

/// How a run ended, as its kind tells the plumbing.
pub enum Ended {
    /// Its report (JSON).
    Done(Option<String>),
    /// Stopped by a cancel: what it did until then.
    Cancelled(Option<String>),
    Failed(String),
}

impl Ended {
    pub fn done(report: &impl Serialize) -> Ended {
        Ended::Done(serde_json::to_string(report).ok())
    }

    pub fn cancelled(report: &impl Serialize) -> Ended {
        Ended::Cancelled(serde_json::to_string(report).ok())
    }
}

/// What a run gets: its params and checkpoint as saved (JSON; no checkpoint: from the start),
/// and its link to the row.
pub struct Run {
    pub params: String,
    pub checkpoint: Option<String>,
    pub ctl: Arc<Ctl>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// A run that holds its right to run (a kind's guard) and only waits to be started.
pub type Launch = Box<dyn FnOnce(Run) -> BoxFuture + Send>;

/// Wraps a kind's async run function, holding `held` until the run ends.
pub fn launch<H, F, Fut>(held: H, run: F) -> Launch
where
    H: Send + 'static,
    F: FnOnce(H, Run) -> Fut + Send + 'static,
    Fut: Future<Output = Ended> + Send + 'static,
{
    Box::new(move |r| Box::pin(run(held, r)))
}

/// One kind of job.
pub trait Kind: Send + Sync + 'static {
    /// The `kind` column: `scrub`, `gc`, `prune`.
    fn name(&self) -> &'static str;
    /// What holds the right this kind takes, for the Busy message ("a scrub"); kinds sharing it
    /// (gc, prune) say the same.
    fn exclusive(&self) -> &'static str;
    /// Takes the right to run and returns the run holding it; `None` while another holds it.
    fn begin(self: Arc<Self>) -> Option<Launch>;
}

/// A job's link to its row: its cancel flag, and where its checkpoints and progress go.
pub struct Ctl {
    db: Arc<Db>,
    id: i64,
    cancel: Arc<AtomicBool>,
}

impl Ctl {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Writes progress and checkpoint inside `tx`. A failure is logged, not returned: the job
    /// goes on, and a restart would resume from the checkpoint before.
    fn save_in(&self, tx: &meta::Tx, progress: &impl Serialize, checkpoint: &impl Serialize) {
        let (Ok(p), Ok(c)) = (
            serde_json::to_string(progress),
            serde_json::to_string(checkpoint),
        ) else {
            return;
        };
        if let Err(e) = meta::save_admin_job_progress(tx, self.id, &p, &c) {
            tracing::warn!(job = self.id, "cannot save the job's checkpoint: {e}");
        }
    }

    fn save(&self, progress: &impl Serialize, checkpoint: &impl Serialize) {
        let saved = self.db.write_blocking(|tx| {
            self.save_in(tx, progress, checkpoint);
            Ok(())
        });
        if let Err(e) = saved {
            tracing::warn!(job = self.id, "cannot save the job's checkpoint: {e}");
        }
    }
}

/// The [`Watch`] of a job: checkpoints of type `C` saved with the progress `progress` makes of
/// them; the cancel flag read.
pub struct JobWatch<C, P, F> {
    ctl: Arc<Ctl>,
    progress: F,
    _types: PhantomData<fn(&C) -> P>,
}

impl<C, P, F: Fn(&C) -> P> JobWatch<C, P, F> {
    pub fn new(ctl: Arc<Ctl>, progress: F) -> Self {
        JobWatch {
            ctl,
            progress,
            _types: PhantomData,
        }
    }
}

impl<C: Serialize, P: Serialize, F: Fn(&C) -> P> Watch<C> for JobWatch<C, P, F> {
    fn cancelled(&self) -> bool {
        self.ctl.cancelled()
    }

    fn checkpoint(&mut self, at: &C) {
        self.ctl.save(&(self.progress)(at), at);
    }

    fn checkpoint_in(&mut self, tx: &meta::Tx, at: &C) {
        self.ctl.save_in(tx, &(self.progress)(at), at);
    }
}

/// A job running in this process.
struct Running {
    exclusive: &'static str,
    cancel: Arc<AtomicBool>,
}

/// The jobs of one server.
pub struct Jobs {
    db: Arc<Db>,
    kinds: Vec<Arc<dyn Kind>>,
    running: Mutex<HashMap<i64, Running>>,
    /// Notified whenever a job ends, for the callers waiting on one.
    ended: tokio::sync::Notify,
    /// The server is stopping: a job that stops now is paused, not cancelled ([`Jobs::pause`]).
    stopping: AtomicBool,
}

impl Jobs {
    pub fn new(db: Arc<Db>, kinds: Vec<Arc<dyn Kind>>) -> Arc<Jobs> {
        Arc::new(Jobs {
            db,
            kinds,
            running: Mutex::new(HashMap::new()),
            ended: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        })
    }

    fn kind(&self, name: &str) -> Option<&Arc<dyn Kind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }

    /// Starts a job of kind `kind` with `params`; `Busy` while a job holding the same right runs.
    pub async fn start<P: Serialize>(
        self: &Arc<Self>,
        kind: &str,
        params: &P,
        by: &str,
    ) -> Result<JobView, JobError> {
        let kind = Arc::clone(
            self.kind(kind)
                .ok_or_else(|| JobError::UnknownKind(kind.to_owned()))?,
        );
        if self.stopping.load(Ordering::SeqCst) {
            return Err(JobError::Stopping);
        }
        let Some(launch) = Arc::clone(&kind).begin() else {
            return Err(self.busy(kind.exclusive()));
        };
        let params = serde_json::to_string(params).map_err(|e| JobError::Task(e.to_string()))?;
        let (name, by) = (kind.name(), by.to_owned());
        let p = params.clone();
        let id = self
            .db
            .write(move |tx| meta::insert_admin_job(tx, name, &p, &by))
            .await?;
        tracing::info!(job = id, kind = name, %params, "admin job started");
        self.spawn(&*kind, id, launch, params, None);
        self.get(id).await?.ok_or(JobError::NotFound(id))
    }

    /// Resumes the jobs a stopped server left running (at start-up), each from its checkpoint.
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
            let Some(kind) = self.kind(&row.kind).cloned() else {
                end("failed", format!("unknown job kind {:?}", row.kind)).await?;
                continue;
            };
            if row.cancel_requested {
                end("cancelled", "cancelled before the restart".into()).await?;
                continue;
            }
            let Some(launch) = Arc::clone(&kind).begin() else {
                let error = format!("{} was resumed first", kind.exclusive());
                end("failed", error).await?;
                continue;
            };
            tracing::info!(
                job = id,
                kind = kind.name(),
                "resuming a {} job from its checkpoint",
                kind.name()
            );
            self.spawn(&*kind, id, launch, row.params, row.checkpoint);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The Busy error of `exclusive`, naming the jobs that hold it.
    fn busy(&self, exclusive: &'static str) -> JobError {
        let mut ids: Vec<i64> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.exclusive == exclusive)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let holder = match ids.as_slice() {
            [] => "not as a job of this server".to_owned(),
            ids => {
                let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
                format!("job {}", ids.join(", "))
            }
        };
        JobError::Busy {
            what: exclusive,
            holder,
        }
    }

    fn spawn(
        self: &Arc<Self>,
        kind: &dyn Kind,
        id: i64,
        launch: Launch,
        params: String,
        checkpoint: Option<String>,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Running {
                    exclusive: kind.exclusive(),
                    cancel: Arc::clone(&cancel),
                },
            );
        let ctl = Arc::new(Ctl {
            db: Arc::clone(&self.db),
            id,
            cancel,
        });
        let run = Run {
            params,
            checkpoint,
            ctl,
        };
        let (jobs, name) = (Arc::clone(self), kind.name());
        tokio::spawn(async move {
            // Its own task, so that a panic in a run still ends the job's row.
            let ended = match tokio::spawn(launch(run)).await {
                Ok(ended) => ended,
                Err(e) => Ended::Failed(format!("the job's task failed: {e}")),
            };
            let (state, result, error) = match ended {
                Ended::Done(report) => ("done", report, None),
                Ended::Cancelled(report) => (
                    "cancelled",
                    report,
                    Some("cancelled by an administrator".to_owned()),
                ),
                Ended::Failed(e) => ("failed", None, Some(e)),
            };
            if state == "cancelled" && jobs.paused(id).await {
                tracing::info!(
                    job = id,
                    kind = name,
                    "admin job paused for the shutdown at its checkpoint; the next start resumes it"
                );
            } else {
                tracing::info!(job = id, kind = name, state, "admin job ended");
                let written = jobs
                    .db
                    .write(move |tx| {
                        meta::finish_admin_job(tx, id, state, result.as_deref(), error.as_deref())
                    })
                    .await;
                if let Err(e) = written {
                    tracing::error!(job = id, "cannot record the end of the job: {e}");
                }
            }
            jobs.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            jobs.ended.notify_waiters();
        });
    }

    /// Whether job `id`, stopped by its cancel flag, was paused by [`Jobs::pause`] rather than
    /// cancelled by an administrator (whose request is in its row).
    async fn paused(&self, id: i64) -> bool {
        if !self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        match self.get(id).await {
            Ok(Some(job)) => !job.job.cancel_requested,
            _ => false,
        }
    }

    /// At shutdown: stops every job of this process at its next step, leaving its row running
    /// with its checkpoint so that the next start resumes it, and returns once all have stopped.
    /// Without this, a job's blocking task would go on after the server released the
    /// data-directory lock (a new server could then run a second GC on the same store), and
    /// the process would not exit before the job's end.
    pub async fn pause(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let left: Vec<i64> = {
                let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                for job in running.values() {
                    job.cancel.store(true, Ordering::SeqCst);
                }
                running.keys().copied().collect()
            };
            if left.is_empty() {
                return;
            }
            tracing::info!(jobs = ?left, "waiting for admin jobs to reach a checkpoint");
            let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
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

    /// Asks job `id` to stop (at its next step); the job as it is now.
    pub async fn cancel(&self, id: i64) -> Result<JobView, JobError> {
        let was_running = self
            .db
            .write(move |tx| meta::request_admin_job_cancel(tx, id))
            .await?;
        if was_running {
            if let Some(job) = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
            {
                job.cancel.store(true, Ordering::SeqCst);
            }
            tracing::info!(job = id, "job cancel requested");
        }
        self.get(id).await?.ok_or(JobError::NotFound(id))
    }

    /// Starts a job and waits for its end (the synchronous `POST /admin/scrub|prune`).
    pub async fn run<P: Serialize>(
        self: &Arc<Self>,
        kind: &str,
        params: &P,
        by: &str,
    ) -> Result<JobView, JobError> {
        let job = self.start(kind, params, by).await?;
        self.wait(job.job.id).await
    }

    /// The scheduled prune (`[gc] interval`): a prune job, waited for. Refused while an admin's
    /// GC or prune runs (this interval's run is then skipped).
    pub async fn scheduled_prune(self: &Arc<Self>) {
        let params = GcParams::default();
        match self.run(PRUNE, &params, SCHEDULE).await {
            Ok(job) if job.job.state == "done" => {}
            Ok(job) => tracing::warn!(
                job = job.job.id,
                state = %job.job.state,
                error = job.job.error.as_deref().unwrap_or(""),
                "background prune did not finish"
            ),
            Err(e @ JobError::Busy { .. }) => tracing::info!("background prune skipped: {e}"),
            Err(e) => tracing::warn!("background prune failed: {e}"),
        }
    }

    /// Waits until job `id` has finished.
    pub async fn wait(&self, id: i64) -> Result<JobView, JobError> {
        loop {
            if let Some(job) = self.wait_for(id, Duration::from_secs(3600)).await? {
                if job.finished() {
                    return Ok(job);
                }
            } else {
                return Err(JobError::NotFound(id));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use serde::Deserialize;
    use tokio::sync::Semaphore;

    use super::*;

    /// A kind that counts to `until`, one step per permit of `gate`, checkpointing each; a
    /// cancel stops it while it waits for a permit.
    struct Gated {
        gate: Arc<Semaphore>,
        busy: Arc<AtomicBool>,
    }

    struct Held(Arc<AtomicBool>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Until {
        until: u64,
    }

    #[derive(Serialize, Deserialize, Default)]
    struct Count {
        n: u64,
    }

    impl Kind for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        fn exclusive(&self) -> &'static str {
            "a gated count"
        }
        fn begin(self: Arc<Self>) -> Option<Launch> {
            if self.busy.swap(true, Ordering::SeqCst) {
                return None;
            }
            let held = Held(Arc::clone(&self.busy));
            Some(launch(held, move |held, run| async move {
                let _held = held;
                let until = serde_json::from_str::<Until>(&run.params).unwrap().until;
                let mut at: Count = run
                    .checkpoint
                    .as_deref()
                    .map(|c| serde_json::from_str(c).unwrap())
                    .unwrap_or_default();
                let mut watch = JobWatch::new(run.ctl, |c: &Count| Count { n: c.n });
                while at.n < until {
                    // Each step waits for a permit, stopping meanwhile when cancelled.
                    loop {
                        if watch.cancelled() {
                            return Ended::cancelled(&at);
                        }
                        if let Ok(permit) = self.gate.try_acquire() {
                            permit.forget();
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    at.n += 1;
                    // A small blocking write, on a runtime with a thread to spare.
                    watch.checkpoint(&at);
                }
                Ended::done(&at)
            }))
        }
    }

    async fn progress_n(jobs: &Jobs, id: i64, n: u64) {
        for _ in 0..500 {
            let job = jobs.get(id).await.unwrap().unwrap();
            if job.progress.as_ref().and_then(|p| p["n"].as_u64()) == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} never reached {n}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_plumbing_for_every_kind_busy_cancel_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let gate = Arc::new(Semaphore::new(1));
        let kind = Arc::new(Gated {
            gate: Arc::clone(&gate),
            busy: Arc::new(AtomicBool::new(false)),
        });
        let jobs = Jobs::new(Arc::clone(&db), vec![kind.clone() as Arc<dyn Kind>]);

        let job = jobs
            .start("gated", &Until { until: 3 }, "admin")
            .await
            .unwrap();
        let id = job.job.id;
        assert_eq!(job.job.state, "running");
        progress_n(&jobs, id, 1).await;
        match jobs.start("gated", &Until { until: 3 }, "admin").await {
            Err(JobError::Busy { what, holder }) => {
                assert_eq!(what, "a gated count");
                assert_eq!(holder, format!("job {id}"));
            }
            other => panic!("a second run started: {:?}", other.map(|j| j.job)),
        }
        assert!(matches!(
            jobs.start("nope", &Until { until: 1 }, "admin").await,
            Err(JobError::UnknownKind(_))
        ));

        // Cancelled: it stops before its next step, keeping what it did.
        jobs.cancel(id).await.unwrap();
        let ended = jobs.wait(id).await.unwrap();
        assert_eq!(ended.job.state, "cancelled");
        assert_eq!(ended.result.unwrap()["n"], 1);

        // Left running by a stopped server: resumed from its checkpoint; an unknown kind and a
        // job whose cancel was asked for end instead.
        let left = db
            .write_blocking(|tx| {
                let id = meta::insert_admin_job(tx, "gated", "{\"until\":4}", "admin")?;
                meta::save_admin_job_progress(tx, id, "{\"n\":3}", "{\"n\":3}")?;
                Ok(id)
            })
            .unwrap();
        let unknown = db
            .write_blocking(|tx| meta::insert_admin_job(tx, "vanished", "{}", "admin"))
            .unwrap();
        let asked = db
            .write_blocking(|tx| {
                let id = meta::insert_admin_job(tx, "gated", "{\"until\":9}", "admin")?;
                meta::request_admin_job_cancel(tx, id)?;
                Ok(id)
            })
            .unwrap();
        assert_eq!(jobs.resume().await.unwrap(), 1);
        gate.add_permits(1);
        let resumed = jobs.wait(left).await.unwrap();
        assert_eq!(resumed.job.state, "done");
        assert_eq!(
            resumed.result.unwrap()["n"],
            4,
            "one step after the checkpoint"
        );
        let unknown = jobs.get(unknown).await.unwrap().unwrap();
        assert_eq!(unknown.job.state, "failed");
        assert!(unknown.job.error.unwrap().contains("vanished"));
        assert_eq!(
            jobs.get(asked).await.unwrap().unwrap().job.state,
            "cancelled"
        );
        // The right to run is back once the jobs ended.
        assert!(kind.clone().begin().is_some());

        // A stopping server pauses its jobs: the row stays running with its checkpoint, and
        // the next server resumes it.
        let job = jobs
            .start("gated", &Until { until: 3 }, "admin")
            .await
            .unwrap();
        gate.add_permits(1);
        progress_n(&jobs, job.job.id, 1).await;
        jobs.pause().await;
        let paused = jobs.get(job.job.id).await.unwrap().unwrap();
        assert_eq!(paused.job.state, "running");
        assert!(matches!(
            jobs.start("gated", &Until { until: 1 }, "admin").await,
            Err(JobError::Stopping)
        ));
        let next = Jobs::new(Arc::clone(&db), vec![kind.clone() as Arc<dyn Kind>]);
        assert_eq!(next.resume().await.unwrap(), 1);
        gate.add_permits(2);
        let resumed = next.wait(job.job.id).await.unwrap();
        assert_eq!(resumed.job.state, "done");
        assert_eq!(resumed.result.unwrap()["n"], 3);
    }
}
