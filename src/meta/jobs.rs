//! SQL of the SIF build queue and of built SIFs.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{now, Result};

/// A read connection as the farm passes it from `Db::read` to the meta functions it calls:
/// named here so that nothing outside `meta` names the SQL crate.
pub use rusqlite::Connection as ReadConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Building,
    Ready,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Building => "building",
            JobState::Ready => "ready",
            JobState::Failed => "failed",
        }
    }

    /// A state's name as the admin API takes it.
    pub fn from_name(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Building,
            JobState::Ready,
            JobState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    pub(super) fn parse(s: &str) -> JobState {
        match s {
            "building" => JobState::Building,
            "ready" => JobState::Ready,
            "failed" => JobState::Failed,
            _ => JobState::Queued,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub manifest_digest: String,
    pub platform: String,
    pub repository: String,
    pub state: JobState,
    pub attempts: i64,
    pub progress: Option<String>,
    pub failure: Option<String>,
    pub sif_digest: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub backend: Option<String>,
    pub builder: Option<String>,
}

const JOB_COLUMNS: &str =
    "id, manifest_digest, platform, repository, state, attempts, progress, failure,
     sif_digest, created_at, started_at, finished_at, backend, builder";

fn job(r: &Row) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        manifest_digest: r.get(1)?,
        platform: r.get(2)?,
        repository: r.get(3)?,
        state: JobState::parse(&r.get::<_, String>(4)?),
        attempts: r.get(5)?,
        progress: r.get(6)?,
        failure: r.get(7)?,
        sif_digest: r.get(8)?,
        created_at: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        backend: r.get(12)?,
        builder: r.get(13)?,
    })
}

/// A built SIF.
#[derive(Debug, Clone)]
pub struct Sif {
    pub digest: String,
    pub manifest_digest: String,
    pub platform: String,
    pub size: i64,
    pub squashfs_offset: i64,
    pub squashfs_size: i64,
    pub backend: String,
    pub builder: String,
    pub compression: String,
    pub duration_ms: i64,
    pub created_at: i64,
    /// The enroot image built with it (`enroot_images`), if any.
    pub enroot: Option<EnrootImage>,
}

/// An enroot image: a squashfs blob of the SIF's tree plus enroot's `/etc` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrootImage {
    pub digest: String,
    pub size: i64,
}

/// Queues a build unless one exists for the digest and platform. Returns true if queued now.
pub fn enqueue_build(
    tx: &Transaction,
    manifest_digest: &str,
    platform: &str,
    repository: &str,
) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO build_jobs (manifest_digest, platform, repository, state, created_at)
             VALUES (?1, ?2, ?3, 'queued', ?4)
             ON CONFLICT (manifest_digest, platform) DO NOTHING",
        )?
        .execute(params![manifest_digest, platform, repository, now()])?;
    Ok(n > 0)
}

pub fn job_for(conn: &Connection, manifest_digest: &str, platform: &str) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE manifest_digest = ?1 AND platform = ?2"
        ))?
        .query_row([manifest_digest, platform], job)
        .optional()?)
}

pub fn job_by_id(conn: &Connection, id: i64) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE id = ?1"
        ))?
        .query_row([id], job)
        .optional()?)
}

/// How many queued jobs are ahead of `id`.
pub fn queue_position(conn: &Connection, id: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM build_jobs WHERE state = 'queued' AND id < ?1")?
        .query_row([id], |r| r.get(0))?)
}

/// Hands the oldest runnable queued job to `owner` under a lease of `lease_secs`.
pub fn claim_job(
    tx: &Transaction,
    owner: &str,
    backend: &str,
    lease_secs: i64,
) -> Result<Option<Job>> {
    let t = now();
    let id: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM build_jobs WHERE state = 'queued' AND not_before <= ?1 ORDER BY id LIMIT 1",
        )?
        .query_row([t], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.prepare_cached(
        "UPDATE build_jobs SET state = 'building', attempts = attempts + 1, lease_owner = ?2,
             lease_expires = ?3, started_at = ?4, backend = ?5, builder = ?2, progress = 'claimed',
             failure = NULL
         WHERE id = ?1",
    )?
    .execute(params![id, owner, t + lease_secs, t, backend])?;
    job_by_id(tx, id)
}

/// Extends a lease; false if the job is no longer this owner's (it was re-queued).
pub fn heartbeat(
    tx: &Transaction,
    id: i64,
    owner: &str,
    lease_secs: i64,
    progress: &str,
) -> Result<bool> {
    extend_lease(tx, Leased::Builds, id, owner, lease_secs, progress)
}

/// Records a finished build and its SIF; false if the lease was lost meanwhile.
pub fn complete_job(tx: &Transaction, id: i64, owner: &str, sif: &Sif, log: &str) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE build_jobs SET state = 'ready', sif_digest = ?3, log = ?4, finished_at = ?5,
                 lease_owner = NULL, lease_expires = NULL, progress = 'done'
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'",
        )?
        .execute(params![id, owner, sif.digest, log, now()])?;
    if n == 0 {
        return Ok(false);
    }
    let inserted = tx
        .prepare_cached(
        "INSERT INTO sifs (digest, manifest_digest, platform, size, squashfs_offset, squashfs_size,
                           backend, builder, compression, duration_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (digest) DO NOTHING",
    )?
    .execute(params![
        sif.digest,
        sif.manifest_digest,
        sif.platform,
        sif.size,
        sif.squashfs_offset,
        sif.squashfs_size,
        sif.backend,
        sif.builder,
        sif.compression,
        sif.duration_ms,
        sif.created_at
    ])?
        > 0;
    // The SIF record holds a reference on its blob, so the bytes stay while the image exists
    // even when no tag publishes it as an ORAS artifact. GC drops it with the record; the
    // enroot image's row likewise holds one on its blob.
    if inserted {
        hold_blob(tx, &sif.digest)?;
        if let Some(enroot) = &sif.enroot {
            tx.prepare_cached(
                "INSERT INTO enroot_images (sif_digest, digest, size) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![sif.digest, enroot.digest, enroot.size])?;
            hold_blob(tx, &enroot.digest)?;
        }
    }
    // In this transaction: a ready SIF is never left untold by a crash.
    super::enqueue_build_outcome(tx, id, super::BuildOutcome::Ready)?;
    Ok(true)
}

/// Records a failed attempt: re-queued after `retry_after` seconds while attempts remain, else
/// failed for good. Returns the new state.
pub fn fail_job(
    tx: &Transaction,
    id: i64,
    owner: &str,
    reason: &str,
    log: &str,
    max_attempts: i64,
    retry_after: i64,
) -> Result<Option<JobState>> {
    let Some(state) = failed_attempt_state(tx, Leased::Builds, id, owner, max_attempts)? else {
        return Ok(None);
    };
    record_failed_attempt(tx, Leased::Builds, id, state, reason, log, retry_after)?;
    if state == JobState::Failed {
        super::enqueue_build_outcome(tx, id, super::BuildOutcome::Failed)?;
    }
    Ok(Some(state))
}

/// Re-queues jobs whose worker stopped heart-beating (or, with `owner_prefix`, every job held
/// by workers of a previous run of this process). Returns how many.
pub fn requeue_expired(tx: &Transaction, owner_prefix: Option<&str>) -> Result<usize> {
    requeue_expired_leases(tx, Leased::Builds, owner_prefix)
}

/// The two queues whose rows are held under leases: builds and enroot-image derivations. Their
/// tables share the lease columns (`state`, `attempts`, `lease_owner`, `lease_expires`,
/// `progress`, `failure`, `log`, `not_before`, `finished_at`), so one SQL serves both.
#[derive(Debug, Clone, Copy)]
pub(super) enum Leased {
    Builds,
    Enroot,
}

impl Leased {
    fn table(self) -> &'static str {
        match self {
            Leased::Builds => "build_jobs",
            Leased::Enroot => "enroot_jobs",
        }
    }
}

/// Extends `owner`'s lease on row `id` of `queue` with its `progress`; false once the row is no
/// longer `owner`'s (it was re-queued).
pub(super) fn extend_lease(
    tx: &Transaction,
    queue: Leased,
    id: i64,
    owner: &str,
    lease_secs: i64,
    progress: &str,
) -> Result<bool> {
    let n = tx
        .prepare_cached(&format!(
            "UPDATE {} SET lease_expires = ?3, progress = ?4
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'",
            queue.table()
        ))?
        .execute(params![id, owner, now() + lease_secs, progress])?;
    Ok(n > 0)
}

/// What a failed attempt of `owner` on row `id` of `queue` leaves: queued again while
/// attempts remain, else failed for good; `None` if the row is not `owner`'s.
pub(super) fn failed_attempt_state(
    tx: &Transaction,
    queue: Leased,
    id: i64,
    owner: &str,
    max_attempts: i64,
) -> Result<Option<JobState>> {
    let attempts: Option<i64> = tx
        .prepare_cached(&format!(
            "SELECT attempts FROM {} WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'",
            queue.table()
        ))?
        .query_row(params![id, owner], |r| r.get(0))
        .optional()?;
    Ok(attempts.map(|a| {
        if a >= max_attempts {
            JobState::Failed
        } else {
            JobState::Queued
        }
    }))
}

/// Records the end of a failed attempt on row `id` of `queue`: `state` (from
/// [`failed_attempt_state`]), its reason and log, not to be claimed for `retry_after` seconds.
pub(super) fn record_failed_attempt(
    tx: &Transaction,
    queue: Leased,
    id: i64,
    state: JobState,
    reason: &str,
    log: &str,
    retry_after: i64,
) -> Result<()> {
    let t = now();
    tx.prepare_cached(&format!(
        "UPDATE {} SET state = ?2, failure = ?3, log = ?4, finished_at = ?5, not_before = ?6,
             lease_owner = NULL, lease_expires = NULL, progress = NULL
         WHERE id = ?1",
        queue.table()
    ))?
    .execute(params![id, state.as_str(), reason, log, t, t + retry_after])?;
    Ok(())
}

/// Re-queues the rows of `queue` whose holder stopped heart-beating (or, with `owner_prefix`,
/// every one held by a previous run of this process). Returns how many.
pub(super) fn requeue_expired_leases(
    tx: &Transaction,
    queue: Leased,
    owner_prefix: Option<&str>,
) -> Result<usize> {
    // `lease_owner LIKE NULL` is never true: without a prefix only expired leases count.
    let n = tx
        .prepare_cached(&format!(
            "UPDATE {} SET state = 'queued', lease_owner = NULL, lease_expires = NULL,
                 progress = NULL
             WHERE state = 'building' AND (lease_expires < ?1 OR lease_owner LIKE ?2)",
            queue.table()
        ))?
        .execute(params![now(), owner_prefix.map(|p| format!("{p}%"))])?;
    Ok(n)
}

/// Puts a failed job back in the queue (a fresh request for it, or an admin retry).
pub fn retry_failed(tx: &Transaction, id: i64) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE build_jobs SET state = 'queued', attempts = 0, not_before = 0 WHERE id = ?1 AND state = 'failed'",
        )?
        .execute([id])?;
    Ok(n > 0)
}

pub fn job_log(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT log FROM build_jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// One more reference on a blob (a SIF record or an enroot image row).
pub(super) fn hold_blob(tx: &Transaction, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE blobs SET ref_count = ref_count + 1, unreferenced_since = NULL WHERE digest = ?1",
    )?
    .execute([digest])?;
    Ok(())
}

pub fn sif_by_digest(conn: &Connection, digest: &str) -> Result<Option<Sif>> {
    Ok(conn
        .prepare_cached(
            "SELECT s.digest, s.manifest_digest, s.platform, s.size, s.squashfs_offset,
                    s.squashfs_size, s.backend, s.builder, s.compression, s.duration_ms,
                    s.created_at, e.digest, e.size
             FROM sifs s LEFT JOIN enroot_images e ON e.sif_digest = s.digest
             WHERE s.digest = ?1",
        )?
        .query_row([digest], |r| {
            Ok(Sif {
                digest: r.get(0)?,
                manifest_digest: r.get(1)?,
                platform: r.get(2)?,
                size: r.get(3)?,
                squashfs_offset: r.get(4)?,
                squashfs_size: r.get(5)?,
                backend: r.get(6)?,
                builder: r.get(7)?,
                compression: r.get(8)?,
                duration_ms: r.get(9)?,
                created_at: r.get(10)?,
                enroot: match (r.get(11)?, r.get(12)?) {
                    (Some(digest), Some(size)) => Some(EnrootImage { digest, size }),
                    _ => None,
                },
            })
        })
        .optional()?)
}

/// Repositories holding manifest `digest` (the caller filters by permission).
pub fn repositories_with_manifest(conn: &Connection, digest: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT r.name FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE m.digest = ?1 ORDER BY r.name",
        )?
        .query_map([digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Client tags in `repository` that point at `digest`.
pub fn tags_for_digest(conn: &Connection, repository: &str, digest: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ?1 AND t.digest = ?2 AND t.origin = 'client' ORDER BY t.name",
        )?
        .query_map([repository, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Indexes in `repository` that list `child` (to publish `T.sif` for an index tag `T`).
pub fn parents_of(conn: &Connection, repository: &str, child: &str) -> Result<Vec<String>> {
    index_links(conn, IndexSide::Parents, repository, child)
}

/// Ready SIFs built from manifest `digest` (one per platform).
pub fn sifs_for_manifest(conn: &Connection, digest: &str) -> Result<Vec<(String, i64, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT digest, size, platform FROM sifs WHERE manifest_digest = ?1 ORDER BY platform",
        )?
        .query_map([digest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Child manifests listed by index `digest` in `repository`.
pub fn children_of(conn: &Connection, repository: &str, digest: &str) -> Result<Vec<String>> {
    index_links(conn, IndexSide::Children, repository, digest)
}

/// Which end of an index → child reference [`index_links`] looks for.
#[derive(Clone, Copy)]
enum IndexSide {
    Parents,
    Children,
}

/// The manifests at `side` of `repository`'s index references whose other end is `digest`.
fn index_links(
    conn: &Connection,
    side: IndexSide,
    repository: &str,
    digest: &str,
) -> Result<Vec<String>> {
    let (wanted, known) = match side {
        IndexSide::Parents => ("manifest_digest", "target_digest"),
        IndexSide::Children => ("target_digest", "manifest_digest"),
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT mr.{wanted} FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id
             WHERE r.name = ?1 AND mr.{known} = ?2 AND mr.target_kind = 'manifest'"
        ))?
        .query_map([repository, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The derived tags of `repository` (the farm's ORAS tags; never a client's, whatever its name).
pub fn sif_tags(conn: &Connection, repository: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ?1 AND t.origin = 'registry'",
        )?
        .query_map([repository], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The platform of a job recorded for an image the planner could not plan (its config could not
/// be read, so its platform is unknown). Such a job is failed from the start; a retry plans the
/// image again.
pub const UNPLANNED_PLATFORM: &str = "unknown";

/// Records that the image `manifest_digest` of `repository` could not be planned, as a failed
/// job with `reason` (kept up to date when it happens again; a job being built is left alone).
pub fn record_unplannable(
    tx: &Transaction,
    manifest_digest: &str,
    repository: &str,
    reason: &str,
) -> Result<()> {
    let t = now();
    tx.prepare_cached(
        "INSERT INTO build_jobs (manifest_digest, platform, repository, state, failure, log,
                                 created_at, finished_at)
         VALUES (?1, ?2, ?3, 'failed', ?4, ?4, ?5, ?5)
         ON CONFLICT (manifest_digest, platform) DO UPDATE SET state = 'failed',
             repository = excluded.repository, failure = excluded.failure, log = excluded.log,
             finished_at = excluded.finished_at
         WHERE build_jobs.state <> 'building'",
    )?
    .execute(params![
        manifest_digest,
        UNPLANNED_PLATFORM,
        repository,
        reason,
        t
    ])?;
    Ok(())
}

/// Jobs, newest first, optionally only those in `state`.
pub fn list_jobs(conn: &Connection, state: Option<JobState>, limit: i64) -> Result<Vec<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE (?1 IS NULL OR state = ?1)
             ORDER BY id DESC LIMIT ?2"
        ))?
        .query_map(params![state.map(JobState::as_str), limit], job)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Ids of every failed job (for an admin's `retry --failed`).
pub fn failed_job_ids(conn: &Connection) -> Result<Vec<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM build_jobs WHERE state = 'failed' ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Ends a queued or building job as failed with `reason` (an admin's cancel); its lease goes,
/// so a worker still building it cannot record a result. Returns the state it had, `None` if
/// it was neither queued nor building.
pub fn cancel_job(tx: &Transaction, id: i64, reason: &str) -> Result<Option<JobState>> {
    let Some(before) = job_by_id(tx, id)? else {
        return Ok(None);
    };
    let n = tx
        .prepare_cached(
            "UPDATE build_jobs SET state = 'failed', failure = ?2, finished_at = ?3,
                 lease_owner = NULL, lease_expires = NULL, progress = NULL
             WHERE id = ?1 AND state IN ('queued', 'building')",
        )?
        .execute(params![id, reason, now()])?;
    Ok((n > 0).then_some(before.state))
}

/// Removes a failed job (an unplanned one, before its image is planned again).
pub fn delete_failed_job(tx: &Transaction, id: i64) -> Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM build_jobs WHERE id = ?1 AND state = 'failed'")?
        .execute([id])?;
    Ok(n > 0)
}

/// Every job of image `manifest_digest` (one per platform), newest first.
pub fn jobs_for_manifest(conn: &Connection, manifest_digest: &str) -> Result<Vec<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE manifest_digest = ?1 ORDER BY id DESC"
        ))?
        .query_map([manifest_digest], job)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Like [`claim_job`], for a builder that takes only some jobs (a remote builder's platforms, a
/// one-job credential): the oldest runnable queued job `accepts` takes, among the first
/// `scan` runnable ones. The build log starts empty (a remote builder appends to it).
pub fn claim_job_matching(
    tx: &Transaction,
    owner: &str,
    backend: &str,
    lease_secs: i64,
    scan: i64,
    accepts: &dyn Fn(&Job) -> bool,
) -> Result<Option<Job>> {
    let candidates: Vec<Job> = tx
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE state = 'queued' AND not_before <= ?1
             ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![now(), scan], job)?
        .collect::<rusqlite::Result<_>>()?;
    let Some(chosen) = candidates.into_iter().find(|j| accepts(j)) else {
        return Ok(None);
    };
    let t = now();
    tx.prepare_cached(
        "UPDATE build_jobs SET state = 'building', attempts = attempts + 1, lease_owner = ?2,
             lease_expires = ?3, started_at = ?4, backend = ?5, builder = ?2, progress = 'claimed',
             failure = NULL, log = ''
         WHERE id = ?1 AND state = 'queued'",
    )?
    .execute(params![chosen.id, owner, t + lease_secs, t, backend])?;
    job_by_id(tx, chosen.id)
}

/// Job `id` if it is being built under `owner`'s lease.
pub fn job_leased_to(conn: &Connection, id: i64, owner: &str) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'"
        ))?
        .query_row(params![id, owner], job)
        .optional()?)
}

/// Appends `text` to the log of job `id` while `owner` holds it, keeping the last `max_chars`
/// characters; false once the job is no longer `owner`'s.
pub fn append_job_log(
    tx: &Transaction,
    id: i64,
    owner: &str,
    text: &str,
    max_chars: i64,
) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE build_jobs SET log = substr(coalesce(log, '') || ?3, -?4)
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'building'",
        )?
        .execute(params![id, owner, text, max_chars])?;
    Ok(n > 0)
}

/// Queued jobs that are runnable now, oldest first (what the Slurm executor submits).
pub fn runnable_jobs(conn: &Connection, limit: i64) -> Result<Vec<Job>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM build_jobs WHERE state = 'queued' AND not_before <= ?1
             ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![now(), limit], job)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Who holds the lease on job `id`, if it is being built.
pub fn lease_owner_of(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT lease_owner FROM build_jobs WHERE id = ?1 AND state = 'building'")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten())
}
