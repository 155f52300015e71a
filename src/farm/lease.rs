//! Build leases: a worker (or a remote builder, through `remote`) holds a job of either queue
//! (`build_jobs`, `enroot_jobs`) under a lease it renews with its progress; and the bounded log
//! tail every attempt keeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::ProgressCell;
use super::Farm;
use crate::meta;

/// Longest wait between progress reports (and heartbeats) of a building job.
const PROGRESS_EVERY_SECS: i64 = 2;
/// Longest build log kept per job; the tail is what explains a failure.
const MAX_LOG: usize = 64 * 1024;

/// Which queue a lease is on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Leased {
    /// A SIF build (`build_jobs`).
    Build,
    /// An enroot-image derivation (`enroot_jobs`).
    Enroot,
}

/// Renews the lease on job `id` of `leased` with its progress until the lease is gone.
pub(super) async fn keep_lease(
    farm: Arc<Farm>,
    leased: Leased,
    id: i64,
    owner: String,
    started: Instant,
    progress: ProgressCell,
) {
    // Often enough for the status a compute node polls, and at least thrice per lease.
    let every = (farm.config.lease_secs / 3).clamp(1, PROGRESS_EVERY_SECS);
    let every = Duration::from_secs(every as u64);
    loop {
        tokio::time::sleep(every).await;
        let report = match progress.get() {
            Some(p) => p.to_json(),
            None => format!("building for {} s", started.elapsed().as_secs()),
        };
        if !renew(&farm, leased, id, &owner, report).await {
            return;
        }
    }
}

/// Extends `owner`'s lease on build job `id` and records `progress`; false once the job is no
/// longer this owner's.
pub(super) async fn renew_lease(farm: &Farm, id: i64, owner: &str, progress: String) -> bool {
    renew(farm, Leased::Build, id, owner, progress).await
}

/// [`renew_lease`] on either queue.
pub(super) async fn renew(
    farm: &Farm,
    leased: Leased,
    id: i64,
    owner: &str,
    progress: String,
) -> bool {
    let (o, lease) = (owner.to_owned(), farm.config.lease_secs);
    match farm
        .db
        .write(move |tx| match leased {
            Leased::Build => meta::heartbeat(tx, id, &o, lease, &progress),
            Leased::Enroot => meta::enroot_heartbeat(tx, id, &o, lease, &progress),
        })
        .await
    {
        Ok(renewed) => renewed,
        Err(e) => {
            tracing::warn!(job = id, "heartbeat failed: {e}");
            true
        }
    }
}

/// The end of a build log, at most [`MAX_LOG`] bytes.
pub(super) fn tail(log: &str) -> String {
    if log.len() <= MAX_LOG {
        return log.to_owned();
    }
    let mut start = log.len() - MAX_LOG;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    format!("[… earlier output dropped …]\n{}", &log[start..])
}
