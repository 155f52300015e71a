//! The SIF build farm: every runnable image pushed becomes an Apptainer SIF.
//!
//! - [`planner`] consumes the outbox events the registry writes in the same transaction as each
//!   manifest, and queues one job per (manifest digest, platform).
//! - [`worker`] claims jobs under a lease, heart-beats while building and records the result; a
//!   worker that dies loses its lease and the job is re-queued.
//! - [`native`] and [`apptainer`] are the two build backends; both run their build in a process
//!   held by [`containment`] (memory, time, threads, scratch, priority, process group).
//! - [`oras`] publishes each ready SIF as an ORAS artifact (`T.sif`) next to its image.
//!
//! - [`remote`] is the builder hosts' side (claim, heartbeat, log, blobs, upload, fail) that
//!   `http::builder_api` serves at `/builder/v1`; `[farm] executor` says whether builds run in
//!   in-process workers (`local`), on builder hosts only (`remote`) or as Slurm jobs (`slurm`).

pub mod access;
pub mod apptainer;
pub mod backend;
pub mod build_child;
pub mod cgroup;
pub mod containment;
pub mod derive;
pub mod image;
pub mod intake;
pub mod lease;
pub mod native;
pub mod oras;
pub mod owner;
pub mod planner;
pub mod platform;
pub mod progress;
pub mod queue;
pub mod ready;
pub mod remote;
pub mod resolve;
pub mod sandbox;
pub mod sif_path;
pub mod slurm;
pub mod status;
pub mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::{Backend, Executor, FarmConfig};
use crate::meta::Db;
use crate::storage::BlobStore;

/// Shared state of the planner and the workers.
pub struct Farm {
    pub db: Arc<Db>,
    pub store: BlobStore,
    pub config: FarmConfig,
    /// Lease-owner prefix of this process's in-process workers. Jobs still leased under an
    /// earlier process's prefix at start-up were orphaned by a crash and are re-queued at once.
    pub owner_prefix: String,
    /// Woken by the registry after each manifest or tag write (new outbox events).
    pub events: Arc<Notify>,
    /// Woken after each enqueue (new jobs for the workers).
    pub jobs: Notify,
    /// Resolutions of ready SIFs for the `/sif` hot path.
    pub ready: ready::ReadySifs,
    /// Enroot images remote builders uploaded, waiting for their SIF.
    pub enroot_uploads: remote::EnrootUploads,
    /// The audit trail (build start and end), set once by the server after assembly; unset in
    /// tools that run the farm without a server.
    pub audit: std::sync::OnceLock<crate::audit::Auditor>,
    /// In-process worker tasks running now (readiness: `/readyz` needs at least one).
    live_workers: Arc<AtomicUsize>,
}

impl Farm {
    pub fn new(
        db: Arc<Db>,
        store: BlobStore,
        config: FarmConfig,
        events: Arc<Notify>,
    ) -> Arc<Farm> {
        let host = hostname();
        Arc::new(Farm {
            db,
            store,
            config,
            owner_prefix: format!("local:{host}:{}:", uuid::Uuid::new_v4().simple()),
            events,
            jobs: Notify::new(),
            ready: ready::ReadySifs::default(),
            enroot_uploads: remote::EnrootUploads::default(),
            audit: std::sync::OnceLock::new(),
            live_workers: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The platform a plain `/sif/<index digest>` request means.
    pub fn default_platform(&self) -> &str {
        self.config
            .platforms
            .first()
            .map(String::as_str)
            .unwrap_or("linux/amd64")
    }

    pub fn wants_platform(&self, platform: &str) -> bool {
        self.config
            .platforms
            .iter()
            .any(|p| platform::matches(p, platform))
    }

    /// Whether an image of `platform` is the default platform's (gets `T.sif`, not `T.<arch>.sif`).
    pub fn is_default_platform(&self, platform: &str) -> bool {
        platform::matches(self.default_platform(), platform)
    }

    /// Starts the planner, the lease reaper and the in-process workers (or the Slurm
    /// executor); `url` is where this server listens, `data_dir` its data directory.
    pub async fn start(
        self: &Arc<Self>,
        url: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<()> {
        if self.config.backend == Backend::Apptainer {
            match apptainer::check(&self.config.apptainer).await {
                Ok(version) => tracing::info!("SIF builds use {version}"),
                Err(e) => tracing::error!("SIF builds will fail: {e}"),
            }
        }
        let requeued = self
            .db
            .write(move |tx| crate::meta::requeue_expired(tx, Some("local:")))
            .await?;
        if requeued > 0 {
            tracing::info!("re-queued {requeued} SIF builds interrupted by the last shutdown");
        }
        let requeued = self
            .db
            .write(move |tx| crate::meta::requeue_expired_enroot(tx, Some("local:")))
            .await?;
        if requeued > 0 {
            tracing::info!(
                "re-queued {requeued} enroot-image derivations interrupted by the last shutdown"
            );
        }
        derive::queue_backfill(self).await?;
        tokio::spawn(planner::run(Arc::clone(self)));
        // With builder hosts only, the reaper is what keeps the queue moving (a dead builder's
        // job goes to another): it counts as the farm's live worker for readiness.
        let reaper = worker::reap_expired_leases(Arc::clone(self));
        let serving = (self.config.executor == Executor::Remote)
            .then(|| LiveWorker::enter(&self.live_workers));
        tokio::spawn(async move {
            let _alive = serving;
            reaper.await
        });
        // Only the local executor builds in this process; the others leave every build to
        // builder hosts (remote) or to the builders the Slurm jobs run. Enroot-image
        // derivations of stored SIFs always run here (`derive`): one derivation worker beside
        // those executors, not counted as a build worker.
        let workers = match self.config.executor {
            Executor::Local => self.config.workers,
            Executor::Remote | Executor::Slurm => 0,
        };
        for n in 0..workers {
            let alive = LiveWorker::enter(&self.live_workers);
            let owner = format!("{}{n}", self.owner_prefix);
            let run = worker::run(Arc::clone(self), owner, worker::Takes::Everything);
            tokio::spawn(async move {
                // Dropped when the task ends, normally or by a panic (tokio drops its future).
                let _alive = alive;
                run.await
            });
        }
        if workers == 0 {
            let owner = format!("{}derive", self.owner_prefix);
            tokio::spawn(worker::run(
                Arc::clone(self),
                owner,
                worker::Takes::Derivations,
            ));
        }
        if self.config.executor == Executor::Slurm {
            let work_dir = data_dir.join("slurm");
            let alive = LiveWorker::enter(&self.live_workers);
            let run = slurm::run(Arc::clone(self), url.to_owned(), work_dir);
            tokio::spawn(async move {
                let _alive = alive;
                run.await
            });
        }
        tracing::info!(
            workers,
            executor = ?self.config.executor,
            backend = ?self.config.backend,
            platforms = ?self.config.platforms,
            "SIF build farm started"
        );
        Ok(())
    }

    /// How many in-process build workers are running.
    pub fn live_workers(&self) -> usize {
        self.live_workers.load(Ordering::Relaxed)
    }

    pub fn backend_name(&self) -> &'static str {
        worker::backend(self.config.backend).name()
    }
}

/// Counts one running worker task for as long as it lives.
struct LiveWorker(Arc<AtomicUsize>);

impl LiveWorker {
    fn enter(count: &Arc<AtomicUsize>) -> LiveWorker {
        count.fetch_add(1, Ordering::Relaxed);
        LiveWorker(Arc::clone(count))
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
