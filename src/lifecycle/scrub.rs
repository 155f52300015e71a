//! Scrub: re-hash every stored blob (layers, configs, SIFs) and quarantine the ones whose bytes
//! no longer match their digest.
//!
//! Blobs are read in digest order, one page of metadata at a time, and hashed as a stream, so
//! memory stays flat whatever the store size. Reading is throttled to a byte rate so that a scrub
//! never takes the disk away from pulls. A corrupt blob is moved (renamed, same filesystem) to
//! `DATA/quarantine/<alg>/<hex>.<time>` and recorded in `blob_quarantine`, which hides it from
//! reads (404 BLOB_UNKNOWN rather than wrong bytes) until a push of the same digest heals it. A
//! corrupt SIF also loses its `sifs` record and its build job goes back to the queue, so the
//! farm rebuilds it; a corrupt layer is only reported (its owner must push it again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::throttle::Throttle;
use super::{NoWatch, Watch};

use serde::{Deserialize, Serialize};

use crate::config::ScrubConfig;
use crate::meta::{self, Db};
use crate::registry::names::Digest;
use crate::storage::BlobStore;

/// Blobs listed per metadata query.
const PAGE: i64 = 500;

/// `[scrub] rate` in bytes per second (the default, 200 MiB/s, is a fraction of a local NVMe or
/// a parallel filesystem client).
pub fn rate_from_config(config: &ScrubConfig) -> Result<u64, crate::quota::SizeError> {
    crate::quota::parse_size(&config.rate)
}

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("a scrub is already running; wait for its report")]
    Busy,
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("scrub task failed: {0}")]
    Task(String),
}

/// What a scrub found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub scanned_blobs: u64,
    pub scanned_bytes: u64,
    pub rate_bytes_per_sec: u64,
    pub duration_ms: u64,
    pub corrupted: Vec<Corrupted>,
    /// Recorded blobs whose file is gone (reported only: nothing is left to quarantine).
    pub missing: Vec<String>,
    /// Blobs that could not be read for another reason (permissions, I/O errors).
    pub unreadable: Vec<String>,
    /// Namespaces whose usage counters (what quota checks read) disagreed with a recount from
    /// the tables; they were set to the recount. Empty when the incremental accounting is right.
    #[serde(default)]
    pub usage_drift: Vec<meta::UsageDrift>,
}

/// One corrupt blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Corrupted {
    pub digest: String,
    /// `sif` (a built SIF), `enroot` (the enroot image built with a SIF) or `blob` (layer,
    /// config or other pushed blob).
    pub kind: String,
    pub expected_size: i64,
    pub actual_size: u64,
    pub actual_digest: String,
    pub repositories: Vec<String>,
    /// Where the bytes went.
    pub quarantined_to: String,
    /// For a SIF or an enroot image: the image manifest whose build was re-queued.
    pub rebuild: Option<String>,
    /// For an enroot image: its SIF, forgotten and rebuilt with it (so that the SIF, met
    /// corrupt later in the same scrub, is still reported as the SIF it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sif: Option<String>,
    /// For a SIF: its enroot image, forgotten with it (likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroot: Option<String>,
}

/// Only one scrub at a time: two would halve each other's rate limit and double the disk load.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to scrub, held while one runs (a background job holds it across its whole run).
pub struct RunningGuard(());

impl RunningGuard {
    /// Takes the right to scrub, or `Busy` while another scrub holds it.
    pub fn acquire() -> Result<RunningGuard, ScrubError> {
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(ScrubError::Busy);
        }
        Ok(RunningGuard(()))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// Scrubs the whole store at `rate` bytes/s (0: unthrottled). Runs on the blocking pool.
pub async fn run(db: Arc<Db>, store: BlobStore, rate: u64) -> Result<ScrubReport, ScrubError> {
    let guard = RunningGuard::acquire()?;
    let out = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        scrub(&db, &store, rate)
    })
    .await
    .map_err(|e| ScrubError::Task(e.to_string()))?;
    Ok(out?)
}

/// Where a scrub stands: blobs up to `after` (in digest order) are done, `report` holds what
/// they showed. A background job saves it as it goes and resumes from it after a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub after: String,
    pub report: ScrubReport,
}

/// How often a long page of blobs is checkpointed at the latest (a scrub checkpoints after every
/// page of blobs too).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How a resumable scrub ended.
pub enum Finished {
    Done(ScrubReport),
    /// Stopped by [`Watch::cancelled`] at this checkpoint.
    Cancelled(Checkpoint),
}

/// Scrubs from `start` on (blocking); the time already spent is in `start.report.duration_ms`.
pub fn scrub_from(
    db: &Db,
    store: &BlobStore,
    rate: u64,
    start: Checkpoint,
    watch: &mut dyn Watch<Checkpoint>,
) -> meta::Result<Finished> {
    let started = Instant::now();
    let spent_before = start.report.duration_ms;
    let mut throttle = Throttle::new(rate);
    let mut at = start;
    at.report.rate_bytes_per_sec = rate;
    let mut last_checkpoint = Instant::now();
    loop {
        let page = db.read_blocking(|c| meta::blobs_to_scrub(c, &at.after, PAGE))?;
        if page.is_empty() {
            break;
        }
        for (digest, size) in page {
            if watch.cancelled() {
                at.report.duration_ms = spent_before + started.elapsed().as_millis() as u64;
                watch.checkpoint(&at);
                return Ok(Finished::Cancelled(at));
            }
            check_blob(db, store, &digest, size, &mut throttle, &mut at.report)?;
            at.after = digest;
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                at.report.duration_ms = spent_before + started.elapsed().as_millis() as u64;
                watch.checkpoint(&at);
                last_checkpoint = Instant::now();
            }
        }
        at.report.duration_ms = spent_before + started.elapsed().as_millis() as u64;
        watch.checkpoint(&at);
        last_checkpoint = Instant::now();
    }
    let mut report = at.report;
    report.usage_drift = recount_usage(db)?;
    report.duration_ms = spent_before + started.elapsed().as_millis() as u64;
    tracing::info!(
        blobs = report.scanned_blobs,
        usage_drift = report.usage_drift.len(),
        bytes = report.scanned_bytes,
        corrupted = report.corrupted.len(),
        missing = report.missing.len(),
        "scrub finished"
    );
    Ok(Finished::Done(report))
}

/// Proves the usage counters against a full recount, one namespace per write transaction (so
/// no commit lands between count and comparison, and writers wait for one namespace at a time),
/// repairing and returning those that drifted.
pub fn recount_usage(db: &Db) -> meta::Result<Vec<meta::UsageDrift>> {
    let mut drift = Vec::new();
    for ns in db.read_blocking(meta::usage_namespaces)? {
        if let Some(d) = db.write_blocking(|tx| meta::recount_usage(tx, &ns))? {
            tracing::warn!(
                namespace = %d.namespace,
                counted = d.counted_bytes,
                actual = d.actual_bytes,
                "usage counters drifted from the recount; repaired"
            );
            drift.push(d);
        }
    }
    Ok(drift)
}

fn scrub(db: &Db, store: &BlobStore, rate: u64) -> meta::Result<ScrubReport> {
    match scrub_from(db, store, rate, Checkpoint::default(), &mut NoWatch)? {
        Finished::Done(report) => Ok(report),
        Finished::Cancelled(at) => Ok(at.report),
    }
}

fn check_blob(
    db: &Db,
    store: &BlobStore,
    digest: &str,
    size: i64,
    throttle: &mut Throttle,
    report: &mut ScrubReport,
) -> meta::Result<()> {
    let Ok(expected) = Digest::parse(digest) else {
        // Every recorded digest was validated on the way in; a bad one is a damaged row.
        report.unreadable.push(digest.to_owned());
        return Ok(());
    };
    let hashed = match hash_file(store, &expected, throttle) {
        Ok(Some(h)) => h,
        Ok(None) => {
            // Garbage collection may have removed it since the page was read.
            if db.read_blocking(|c| meta::blob_is_live(c, digest))? {
                tracing::warn!(%digest, "scrub: recorded blob has no file");
                report.missing.push(digest.to_owned());
            }
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(%digest, "scrub: cannot read blob: {e}");
            report.unreadable.push(digest.to_owned());
            return Ok(());
        }
    };
    let (actual, actual_size) = hashed;
    report.scanned_blobs += 1;
    report.scanned_bytes += actual_size;
    if actual == expected && actual_size as i64 == size {
        return Ok(());
    }
    let path = match store.quarantine(&expected, meta::now()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(%digest, "scrub: blob is corrupt but cannot be quarantined: {e}");
            report.unreadable.push(digest.to_owned());
            return Ok(());
        }
    };
    let shown = path;
    let (d, a, p) = (digest.to_owned(), actual.to_string(), shown.clone());
    // Read before the quarantine forgets them: a SIF and its enroot image go together.
    let (enroot_of, enroot_image) = db.read_blocking(|c| {
        Ok((
            meta::sif_of_enroot_image(c, digest)?,
            meta::enroot_image_of_sif(c, digest)?,
        ))
    })?;
    let source = db.write_blocking(move |tx| meta::quarantine_blob(tx, &d, &a, &p))?;
    let repositories = db.read_blocking(|c| meta::repositories_linking(c, digest))?;
    tracing::error!(
        %digest,
        actual = %actual,
        quarantined_to = %shown,
        sif = source.is_some(),
        "scrub: corrupt blob quarantined"
    );
    let rebuild = source.map(|(manifest, platform)| format!("{manifest} ({platform})"));
    // A SIF and its enroot image are forgotten together when the first of them is met: the
    // second, met later, is still what it was, part of that rebuild.
    let partner = report.corrupted.iter().find_map(|c| {
        if c.sif.as_deref() == Some(digest) {
            Some(("sif", c.rebuild.clone(), c.digest.clone()))
        } else if c.enroot.as_deref() == Some(digest) {
            Some(("enroot", c.rebuild.clone(), c.digest.clone()))
        } else {
            None
        }
    });
    let (mut enroot_of, mut enroot_image) = (enroot_of, enroot_image);
    let (kind, rebuild) = match (rebuild, partner, &enroot_of) {
        (Some(r), _, Some(_)) => ("enroot", Some(r)),
        (Some(r), _, None) => ("sif", Some(r)),
        (None, Some(("sif", r, enroot)), _) => {
            enroot_image = Some(enroot);
            ("sif", r)
        }
        (None, Some((kind, r, sif)), _) => {
            enroot_of = Some(sif);
            (kind, r)
        }
        (None, None, _) => ("blob", None),
    };
    report.corrupted.push(Corrupted {
        digest: digest.to_owned(),
        kind: kind.to_owned(),
        expected_size: size,
        actual_size,
        actual_digest: actual.to_string(),
        repositories,
        quarantined_to: shown,
        rebuild,
        sif: enroot_of,
        enroot: enroot_image,
    });
    Ok(())
}

/// Hashes a blob's file with the algorithm of its digest; `None` if the file does not exist.
fn hash_file(
    store: &BlobStore,
    digest: &Digest,
    throttle: &mut Throttle,
) -> std::io::Result<Option<(Digest, u64)>> {
    let Some(blob) = store.open(digest)? else {
        return Ok(None);
    };
    let (hasher, len) =
        crate::storage::hash_reader(blob.reader(), digest.algorithm(), |n| throttle.consumed(n))?;
    Ok(Some((hasher.finish(), len)))
}
