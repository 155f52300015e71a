//! The GC and prune jobs: [`crate::lifecycle::Pruner::run_from`] from its checkpoint (phase,
//! counts, and in retention the last repository done), saved in the transaction of every batch,
//! the cancel read between batches. `gc` is the sweep alone, `prune` retention first; both take
//! the pruner's one right to run, so no two (the scheduled prune included) overlap.
//!
//! A resumed job restarts its saved phase from the beginning (retention: after the last
//! repository done): the phases work through the store's own state (candidate tables, reference
//! counts), which the batches before the restart already changed, so nothing is deleted twice
//! and nothing still referenced is touched; only the candidates' queries are repeated. A dry run
//! keeps nothing (one transaction, rolled back), so it starts over.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{launch, Ended, JobWatch, Kind, Launch, Run};
use crate::lifecycle::gc::{Checkpoint, Counts, Examined, Finished, Options, Phase, Running};
use crate::lifecycle::Pruner;
use crate::registry::Registry;

pub const GC: &str = "gc";
pub const PRUNE: &str = "prune";

/// A GC's or prune's parameters as started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcParams {
    #[serde(default)]
    pub dry_run: bool,
    /// Blob deletions per second at most (0: unpaced).
    #[serde(default)]
    pub delete_rate: u64,
}

/// A GC's or prune's progress as `admin jobs` shows it: the phase, what it examined, what it
/// deleted and freed so far.
#[derive(Debug, Clone, Serialize)]
pub struct GcProgress {
    pub phase: Phase,
    pub examined: Examined,
    #[serde(flatten)]
    pub deleted: Counts,
    pub duration_ms: u64,
}

impl GcProgress {
    fn of(at: &Checkpoint) -> GcProgress {
        GcProgress {
            phase: at.phase,
            examined: at.examined,
            deleted: at.counts,
            duration_ms: at.duration_ms,
        }
    }
}

pub struct GcJob {
    pruner: Arc<Pruner>,
    registry: Arc<Registry>,
    /// Retention first: a prune; without: a GC.
    retention: bool,
}

impl GcJob {
    /// The `gc` job (`retention: false`) or the `prune` job.
    pub fn new(pruner: Arc<Pruner>, registry: Arc<Registry>, retention: bool) -> Arc<GcJob> {
        Arc::new(GcJob {
            pruner,
            registry,
            retention,
        })
    }

    async fn run(self: Arc<Self>, running: Running, run: Run) -> Ended {
        let params: GcParams = match serde_json::from_str(&run.params) {
            Ok(p) => p,
            Err(e) => return Ended::Failed(format!("the job's params do not parse: {e}")),
        };
        let start = match (&run.checkpoint, params.dry_run) {
            (Some(c), false) => serde_json::from_str(c).unwrap_or_default(),
            _ => Checkpoint::default(),
        };
        let options = Options {
            retention: self.retention,
            dry_run: params.dry_run,
            delete_rate: params.delete_rate,
        };
        let watch = JobWatch::new(run.ctl, GcProgress::of);
        let outcome = self
            .pruner
            .run_from(&running, &self.registry, options, start, Box::new(watch))
            .await;
        match outcome {
            Ok(Finished::Done(report)) => Ended::done(&report),
            Ok(Finished::Cancelled(report)) => Ended::cancelled(&report),
            Err(e) => Ended::Failed(e.to_string()),
        }
    }
}

impl Kind for GcJob {
    fn name(&self) -> &'static str {
        if self.retention {
            PRUNE
        } else {
            GC
        }
    }

    fn exclusive(&self) -> &'static str {
        "a garbage collection (gc or prune)"
    }

    fn begin(self: Arc<Self>) -> Option<Launch> {
        let running = self.pruner.try_begin()?;
        Some(launch(running, move |running, run| self.run(running, run)))
    }
}
