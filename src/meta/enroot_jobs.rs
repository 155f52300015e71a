//! SQL of the enroot-image derivations: ready SIFs that have no enroot image get one derived
//! from the same layers (`enroot_jobs`), queued when `/sif/<ref>/enroot` asks for it or at
//! start-up for every SIF without one. The SIF's own record is never touched.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::jobs::{
    extend_lease, failed_attempt_state, hold_blob, record_failed_attempt, requeue_expired_leases,
    EnrootImage, JobState, Leased,
};
use super::{now, Result};

/// A derivation someone is waiting for (a `/sif/<ref>/enroot` request): claimed before builds.
pub const ENROOT_REQUESTED: i64 = 0;
/// A derivation queued at start-up for a SIF without an enroot image: claimed after every build.
pub const ENROOT_BACKFILL: i64 = 1;

/// One derivation of the enroot image of a ready SIF.
#[derive(Debug, Clone)]
pub struct EnrootJob {
    pub id: i64,
    pub manifest_digest: String,
    pub platform: String,
    pub repository: String,
    pub sif_digest: String,
    pub priority: i64,
    pub state: JobState,
    pub attempts: i64,
    pub progress: Option<String>,
    pub failure: Option<String>,
    pub lease_owner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, manifest_digest, platform, repository, sif_digest, priority, state,
     attempts, progress, failure, lease_owner, created_at, started_at, finished_at";

fn enroot_job(r: &Row) -> rusqlite::Result<EnrootJob> {
    Ok(EnrootJob {
        id: r.get(0)?,
        manifest_digest: r.get(1)?,
        platform: r.get(2)?,
        repository: r.get(3)?,
        sif_digest: r.get(4)?,
        priority: r.get(5)?,
        state: JobState::parse(&r.get::<_, String>(6)?),
        attempts: r.get(7)?,
        progress: r.get(8)?,
        failure: r.get(9)?,
        lease_owner: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

/// The derivation of image `manifest_digest`'s enroot image for `platform`, if any.
pub fn enroot_job_for(
    conn: &Connection,
    manifest_digest: &str,
    platform: &str,
) -> Result<Option<EnrootJob>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM enroot_jobs WHERE manifest_digest = ?1 AND platform = ?2"
        ))?
        .query_row([manifest_digest, platform], enroot_job)
        .optional()?)
}

/// Queues the derivation for SIF `sif_digest` of (`manifest_digest`, `platform`) read through
/// `repository`, once: an existing one stays as it is (a failed one stays failed), except that
/// a request raises a backfill's priority, and a row left by an earlier SIF of the same image
/// (rebuilt since), or a ready one whose image is gone, starts over. Returns true if it is queued now.
pub fn request_enroot_job(
    tx: &Transaction,
    manifest_digest: &str,
    platform: &str,
    repository: &str,
    sif_digest: &str,
    priority: i64,
) -> Result<bool> {
    let t = now();
    let n = tx
        .prepare_cached(
            "INSERT INTO enroot_jobs (manifest_digest, platform, repository, sif_digest, priority,
                                      state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)
             ON CONFLICT (manifest_digest, platform) DO UPDATE SET
                 repository = excluded.repository, sif_digest = excluded.sif_digest,
                 priority = excluded.priority, state = 'queued', attempts = 0, not_before = 0,
                 lease_owner = NULL, lease_expires = NULL, progress = NULL, failure = NULL,
                 log = NULL, created_at = excluded.created_at, started_at = NULL,
                 finished_at = NULL
             WHERE enroot_jobs.sif_digest <> excluded.sif_digest
                OR (enroot_jobs.state = 'ready' AND NOT EXISTS (
                        SELECT 1 FROM enroot_images e WHERE e.sif_digest = excluded.sif_digest))",
        )?
        .execute(params![
            manifest_digest,
            platform,
            repository,
            sif_digest,
            priority,
            t
        ])?;
    tx.prepare_cached(
        "UPDATE enroot_jobs SET priority = ?3
         WHERE manifest_digest = ?1 AND platform = ?2 AND priority > ?3",
    )?
    .execute(params![manifest_digest, platform, priority])?;
    Ok(n > 0)
}

/// Queues a backfill derivation for every ready SIF that has no enroot image and no pending
/// or failed derivation (what a store upgraded from before enroot images holds), and gives every
/// failed derivation of a SIF still without one another try (a start after an admin raised
/// the `[farm]` limit it hit). Returns how many.
pub fn queue_enroot_backfill(tx: &Transaction) -> Result<usize> {
    let retried = tx
        .prepare_cached(
            "UPDATE enroot_jobs SET state = 'queued', attempts = 0, not_before = 0
             WHERE state = 'failed'
               AND EXISTS (SELECT 1 FROM sifs s WHERE s.digest = enroot_jobs.sif_digest)
               AND NOT EXISTS (SELECT 1 FROM enroot_images e
                               WHERE e.sif_digest = enroot_jobs.sif_digest)",
        )?
        .execute([])?;
    let n = tx
        .prepare_cached(
            "INSERT INTO enroot_jobs (manifest_digest, platform, repository, sif_digest, priority,
                                      state, created_at)
             SELECT j.manifest_digest, j.platform, j.repository, s.digest, ?1, 'queued', ?2
             FROM build_jobs j JOIN sifs s ON s.digest = j.sif_digest
             WHERE j.state = 'ready'
               AND NOT EXISTS (SELECT 1 FROM enroot_images e WHERE e.sif_digest = s.digest)
               AND NOT EXISTS (SELECT 1 FROM enroot_jobs d
                               WHERE d.sif_digest = s.digest AND d.state <> 'ready')
             ORDER BY j.id
             ON CONFLICT (manifest_digest, platform) DO UPDATE SET
                 repository = excluded.repository, sif_digest = excluded.sif_digest,
                 state = 'queued', attempts = 0, not_before = 0, lease_owner = NULL,
                 lease_expires = NULL, progress = NULL, failure = NULL, log = NULL,
                 started_at = NULL, finished_at = NULL
             WHERE enroot_jobs.sif_digest <> excluded.sif_digest OR enroot_jobs.state = 'ready'",
        )?
        .execute(params![ENROOT_BACKFILL, now()])?;
    Ok(retried + n)
}

/// Hands the first runnable queued derivation of priority `max_priority` or better to `owner`
/// under a lease (requested ones first, then oldest first).
pub fn claim_enroot_job(
    tx: &Transaction,
    owner: &str,
    lease_secs: i64,
    max_priority: i64,
) -> Result<Option<EnrootJob>> {
    let t = now();
    let id: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM enroot_jobs WHERE state = 'queued' AND not_before <= ?1
                 AND priority <= ?2
             ORDER BY priority, id LIMIT 1",
        )?
        .query_row(params![t, max_priority], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.prepare_cached(
        "UPDATE enroot_jobs SET state = 'building', attempts = attempts + 1, lease_owner = ?2,
             lease_expires = ?3, started_at = ?4, progress = 'claimed', failure = NULL
         WHERE id = ?1",
    )?
    .execute(params![id, owner, t + lease_secs, t])?;
    Ok(tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM enroot_jobs WHERE id = ?1"))?
        .query_row([id], enroot_job)
        .optional()?)
}

/// Extends `owner`'s lease on derivation `id`; false once it is no longer `owner`'s.
pub fn enroot_heartbeat(
    tx: &Transaction,
    id: i64,
    owner: &str,
    lease_secs: i64,
    progress: &str,
) -> Result<bool> {
    extend_lease(tx, Leased::Enroot, id, owner, lease_secs, progress)
}

/// How a derivation's result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrootCompletion {
    /// The SIF has its enroot image now.
    Recorded,
    /// The SIF record is gone (GC, a scrub): nothing to attach the image to.
    SifGone,
    /// The derivation is no longer `owner`'s (re-queued after missed heartbeats).
    LeaseLost,
}

/// Records the derived enroot image of derivation `id`'s SIF: its `enroot_images` row (a
/// reference on its blob) and the blob linked into `repository` (counted in `namespace`), and
/// the derivation ready with `log`. A SIF that got an image meanwhile keeps it.
pub fn complete_enroot_job(
    tx: &Transaction,
    id: i64,
    owner: &str,
    namespace: &str,
    image: &EnrootImage,
    log: &str,
) -> Result<EnrootCompletion> {
    let leased: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT sif_digest, repository FROM enroot_jobs
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'",
        )?
        .query_row(params![id, owner], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((sif, repository)) = leased else {
        return Ok(EnrootCompletion::LeaseLost);
    };
    let sif_exists = tx
        .prepare_cached("SELECT 1 FROM sifs WHERE digest = ?1")?
        .query_row([&sif], |_| Ok(()))
        .optional()?
        .is_some();
    if !sif_exists {
        return Ok(EnrootCompletion::SifGone);
    }
    super::link_blob(tx, &repository, namespace, &image.digest, image.size)?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO enroot_images (sif_digest, digest, size) VALUES (?1, ?2, ?3)
             ON CONFLICT (sif_digest) DO NOTHING",
        )?
        .execute(params![sif, image.digest, image.size])?;
    if inserted > 0 {
        hold_blob(tx, &image.digest)?;
    }
    tx.prepare_cached(
        "UPDATE enroot_jobs SET state = 'ready', log = ?2, finished_at = ?3, lease_owner = NULL,
             lease_expires = NULL, progress = 'done'
         WHERE id = ?1",
    )?
    .execute(params![id, log, now()])?;
    Ok(EnrootCompletion::Recorded)
}

/// Records a failed attempt of derivation `id`: re-queued after `retry_after` seconds while
/// attempts remain, else failed for good. Returns the new state (`None`: not `owner`'s).
pub fn fail_enroot_job(
    tx: &Transaction,
    id: i64,
    owner: &str,
    reason: &str,
    log: &str,
    max_attempts: i64,
    retry_after: i64,
) -> Result<Option<JobState>> {
    let Some(state) = failed_attempt_state(tx, Leased::Enroot, id, owner, max_attempts)? else {
        return Ok(None);
    };
    record_failed_attempt(tx, Leased::Enroot, id, state, reason, log, retry_after)?;
    Ok(Some(state))
}

/// Re-queues derivations whose worker stopped heart-beating (or, with `owner_prefix`, every one
/// held by a previous run of this process). Returns how many.
pub fn requeue_expired_enroot(tx: &Transaction, owner_prefix: Option<&str>) -> Result<usize> {
    requeue_expired_leases(tx, Leased::Enroot, owner_prefix)
}

/// How many queued derivations are claimed before `job`.
pub fn enroot_queue_position(conn: &Connection, job: &EnrootJob) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM enroot_jobs WHERE state = 'queued'
                 AND (priority < ?1 OR (priority = ?1 AND id < ?2))",
        )?
        .query_row(params![job.priority, job.id], |r| r.get(0))?)
}

/// The log of derivation `id`.
pub fn enroot_job_log(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT log FROM enroot_jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten())
}
