//! The scrub job: [`crate::lifecycle::scrub`] from its checkpoint (the last digest and the
//! report so far, saved every page of blobs and at least every two seconds), the cancel read
//! between blobs. A resumed scrub hashes no blob twice: its checkpoint names the last one done.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{launch, Ended, JobWatch, Kind, Launch, Run};
use crate::farm::Farm;
use crate::lifecycle::scrub::{self, Checkpoint, Finished, RunningGuard};
use crate::meta::{self, Db};
use crate::storage::BlobStore;

pub const SCRUB: &str = "scrub";

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

pub struct ScrubJob {
    db: Arc<Db>,
    store: BlobStore,
    /// Woken when a scrub re-queued SIF builds, so idle workers start at once.
    farm: Arc<Farm>,
}

impl ScrubJob {
    pub fn new(db: Arc<Db>, store: BlobStore, farm: Arc<Farm>) -> Arc<ScrubJob> {
        Arc::new(ScrubJob { db, store, farm })
    }

    async fn run(self: Arc<Self>, guard: RunningGuard, run: Run) -> Ended {
        let rate = serde_json::from_str::<ScrubParams>(&run.params)
            .map(|p| p.rate_bytes_per_sec)
            .unwrap_or(0);
        let at: Checkpoint = run
            .checkpoint
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default();
        let job = Arc::clone(&self);
        let outcome = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let totals = job.db.read_blocking(meta::scrub_totals).unwrap_or((0, 0));
            let mut watch = JobWatch::new(run.ctl, move |at: &Checkpoint| ScrubProgress {
                scanned_blobs: at.report.scanned_blobs,
                scanned_bytes: at.report.scanned_bytes,
                total_blobs: totals.0.max(0) as u64,
                total_bytes: totals.1.max(0) as u64,
                corrupted: at.report.corrupted.len() as u64,
            });
            scrub::scrub_from(&job.db, &job.store, rate, at, &mut watch)
        })
        .await;
        match outcome {
            Ok(Ok(Finished::Done(report))) => {
                if report.corrupted.iter().any(|c| c.rebuild.is_some()) {
                    self.farm.jobs.notify_waiters();
                }
                Ended::done(&report)
            }
            Ok(Ok(Finished::Cancelled(at))) => Ended::cancelled(&at.report),
            Ok(Err(e)) => Ended::Failed(e.to_string()),
            Err(e) => Ended::Failed(format!("scrub task failed: {e}")),
        }
    }
}

impl Kind for ScrubJob {
    fn name(&self) -> &'static str {
        SCRUB
    }

    fn exclusive(&self) -> &'static str {
        "a scrub"
    }

    fn begin(self: Arc<Self>) -> Option<Launch> {
        let guard = RunningGuard::acquire().ok()?;
        Some(launch(guard, move |guard, run| self.run(guard, run)))
    }
}
