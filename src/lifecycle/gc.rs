//! The [`Pruner`]: one prune = retention, then the sweep, in short transactions; a GC is the
//! sweep alone (steps 2–5).
//!
//! 1. Retention deletes the tags its policies expire (their manifests become due at once).
//! 2. Manifests from the change table (`gc_manifest_candidates`) that are due and unanchored go:
//!    not tagged, not listed by an index, not a referrer of an existing manifest, not being built
//!    (the registry's SIF artifacts live exactly as long as their subject). Deleting one drops
//!    its blob references and makes its children and referrers due, so passes repeat until one
//!    deletes nothing.
//! 3. Images no repository holds any more lose their SIF records and jobs (and so the SIF blobs
//!    their reference).
//! 4. Blobs with no reference since before the grace period go: 'deleting' (conditional on
//!    still being unreferenced), unlink under the digest's lock, drop the row and its links. A
//!    manifest PUT naming a 'deleting' blob fails with BLOB_UNKNOWN; an upload of the same bytes
//!    resurrects it (the lock orders it against the unlink).
//! 5. Upload sessions older than the grace period (never younger than ten minutes) go, by the
//!    registry's one expiry rule (`Registry::expire_uploads`, which the server's sweep uses too).
//!
//! A dry run executes 1–4 in one transaction inside a savepoint that is rolled back, stat-ing
//! files instead of unlinking them: its plan is exactly what the real run would do now.
//! Freed bytes are measured with `stat` before each unlink: `st_size` and `st_blocks * 512`.
//!
//! A run reports to a [`Watch`] after every batch ([`Checkpoint`]: the [`Phase`], what was
//! examined and deleted so far) and stops between batches when it asks: every batch is a
//! committed transaction, and a blob is marked, unlinked and forgotten within one batch, so a
//! stopped run leaves the store as consistent as a finished one (a blob a kill left 'deleting'
//! is settled by [`recover_interrupted`] at the next run). Blob deletions may be paced
//! ([`Options::delete_rate`]).

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::retention::{expired_tags, human};
use super::settings::{Settings, MIN_UPLOAD_AGE_SECS};
use super::throttle::Throttle;
use super::{LifecycleError, NoWatch, Watch};
use crate::meta::{self, Anchor, Db};
use crate::registry::names::Digest;
use crate::registry::Registry;
use crate::storage::{guard, BlobStore};

/// Rows handled per transaction: short enough that pushes never wait long on the writer.
const BATCH: i64 = 256;
const SAVEPOINT: &str = "gc_dry_run";
/// How long consumed outbox events are kept (for debugging a hand-off), in seconds.
const CONSUMED_EVENTS_KEPT_SECS: i64 = 24 * 3600;

/// One thing a prune deletes (or, dry, would delete).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Action {
    /// `tag`, `manifest`, `sif`, `blob` or `upload`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Tag name, digest or upload session id.
    pub reference: String,
    pub reason: String,
    /// Logical size (`st_size` for files; stored size for manifests and SIF records).
    pub bytes: u64,
    /// Bytes the filesystem gets back (`st_blocks * 512`); 0 for database rows.
    pub disk_bytes: u64,
}

/// What a run deleted (or, dry, would delete), by kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub tags: usize,
    pub manifests: usize,
    pub sifs: usize,
    pub blobs: usize,
    pub uploads: usize,
    /// Sum of `bytes` of the removed files (blobs, SIFs included, and uploads).
    pub bytes_freed: u64,
    /// Sum of `disk_bytes`: what `du` of the store loses.
    pub disk_bytes_freed: u64,
}

/// What a run looked at: repositories (retention), manifest and image candidates, blobs
/// without references.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Examined {
    pub repositories: u64,
    pub manifests: u64,
    pub images: u64,
    pub blobs: u64,
}

/// What a prune (or GC) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    #[serde(flatten)]
    pub counts: Counts,
    pub examined: Examined,
    pub duration_ms: u64,
    /// What went, and why. A run resumed after a restart lists what it did since (its counts
    /// cover the whole run): the checkpoint it resumed from holds counts only, as a list of
    /// every deletion would make each checkpoint of a long sweep as large as the report.
    pub actions: Vec<Action>,
}

impl Report {
    fn push(&mut self, a: Action) {
        let c = &mut self.counts;
        match a.kind {
            "tag" => c.tags += 1,
            "manifest" => c.manifests += 1,
            "sif" => c.sifs += 1,
            "blob" => c.blobs += 1,
            "upload" => c.uploads += 1,
            _ => {}
        }
        if matches!(a.kind, "blob" | "upload") {
            c.bytes_freed += a.bytes;
            c.disk_bytes_freed += a.disk_bytes;
        }
        self.actions.push(a);
    }
}

/// What one run does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Options {
    /// Apply the retention policies first (a prune); without, the sweep alone (a GC).
    pub retention: bool,
    /// Plan only: the report of what would go, nothing deleted.
    pub dry_run: bool,
    /// Blob deletions per second at most (0: as fast as the store goes).
    pub delete_rate: u64,
}

impl Options {
    /// `admin prune`: retention, then the sweep.
    pub fn prune(dry_run: bool) -> Options {
        Options {
            retention: true,
            dry_run,
            delete_rate: 0,
        }
    }
}

/// The steps of a run, in order (a GC starts at `manifests`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Retention policies, repository by repository.
    #[default]
    Retention,
    /// Unanchored manifests (passes until one deletes nothing).
    Manifests,
    /// SIF records of images no repository holds.
    Sifs,
    /// Blobs without references, marked, unlinked and forgotten batch by batch.
    Blobs,
    /// Stale upload sessions.
    Uploads,
}

/// Where a run stands, saved after every batch. A resumed run starts the saved phase again from
/// its beginning, except retention, which goes on after the last repository done. Restarting a
/// phase is safe and cheap because the state a phase works through is the store itself, not the
/// run's memory: a deleted manifest or blob is no longer a candidate, the change tables hold
/// what is still due, and retention's rules give the same answer on tags already trimmed
/// (`keep_last` keeps the same newest tags, `unused_after` the same used ones). Retention alone
/// walks every repository by name, so it keeps its place.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub phase: Phase,
    /// In `retention`: repositories up to this name (in name order) are done.
    pub after: String,
    pub counts: Counts,
    pub examined: Examined,
    /// Time spent until this checkpoint, across restarts.
    pub duration_ms: u64,
}

/// How a watched run ended.
#[derive(Debug)]
pub enum Finished {
    Done(Report),
    /// Stopped by [`Watch::cancelled`] between two batches: what it did until then.
    Cancelled(Report),
}

/// The right to run a prune or GC (one at a time, background and admin runs alike), held for
/// the whole run.
pub struct Running {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// A deleted repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryDeleted {
    pub repository: String,
    pub manifests: usize,
}

pub struct Pruner {
    /// Replaced whole by a reload; a running prune keeps the settings it started with.
    settings: std::sync::RwLock<Arc<Settings>>,
    /// One prune at a time (background and admin runs alike): see [`Running`].
    running: Arc<tokio::sync::Mutex<()>>,
}

/// What every step needs.
struct Ctx<'a> {
    settings: &'a Settings,
    store: &'a BlobStore,
    now: i64,
    options: Options,
    started: Instant,
    /// Time spent before a resume.
    spent_ms: u64,
}

impl Ctx<'_> {
    fn blob_cutoff(&self) -> i64 {
        self.now - self.settings.grace_secs
    }

    fn duration_ms(&self) -> u64 {
        self.spent_ms + self.started.elapsed().as_millis() as u64
    }

    /// The checkpoint of `report` in `phase`.
    fn at(&self, phase: Phase, after: &str, report: &Report) -> Checkpoint {
        Checkpoint {
            phase,
            after: after.to_owned(),
            counts: report.counts,
            examined: report.examined,
            duration_ms: self.duration_ms(),
        }
    }

    /// Blobs per batch: paced deletions come in batches of about a second, so that a cancel,
    /// checked between batches, takes effect within one.
    fn blob_batch(&self) -> i64 {
        blob_batch(self.options.delete_rate)
    }
}

impl Pruner {
    pub fn new(settings: Settings) -> Pruner {
        Pruner {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// New `[gc]`/`[[retention]]` settings (a reload): the next prune uses them.
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// The right to run, if no prune or GC runs now (a background job holds it for its run).
    pub fn try_begin(&self) -> Option<Running> {
        let guard = Arc::clone(&self.running).try_lock_owned().ok()?;
        Some(Running { _guard: guard })
    }

    /// Runs a prune or GC (or plans one) to its end; waits for a running one to finish first.
    pub async fn run(
        &self,
        registry: &Registry,
        options: Options,
    ) -> Result<Report, LifecycleError> {
        let running = Running {
            _guard: Arc::clone(&self.running).lock_owned().await,
        };
        let start = Checkpoint::default();
        match self
            .run_from(&running, registry, options, start, Box::new(NoWatch))
            .await?
        {
            Finished::Done(report) | Finished::Cancelled(report) => Ok(report),
        }
    }

    /// Runs from `start` (a saved [`Checkpoint`]; the default one starts afresh), reporting to
    /// `watch`, while the caller's [`Running`] keeps every other prune and GC off.
    pub async fn run_from(
        &self,
        _running: &Running,
        registry: &Registry,
        options: Options,
        start: Checkpoint,
        watch: Box<dyn Watch<Checkpoint> + Send>,
    ) -> Result<Finished, LifecycleError> {
        let started = Instant::now();
        // Retention judges by last use: write out the batched pull and SIF-fetch times first.
        registry
            .flush_pulls()
            .await
            .map_err(|e| LifecycleError::Registry(e.to_string()))?;
        let (db, store, settings) = (
            Arc::clone(&registry.db),
            registry.store.clone(),
            self.settings(),
        );
        let grace_secs = settings.grace_secs;
        let dry_run = options.dry_run;
        let mut report = Report {
            dry_run,
            counts: start.counts,
            examined: start.examined,
            ..Report::default()
        };
        let spent_ms = start.duration_ms;
        let (outcome, mut watch, mut report) = tokio::task::spawn_blocking(move || {
            let mut watch = watch;
            let mut phase = start.phase;
            if !options.retention {
                phase = phase.max(Phase::Manifests);
            }
            let ctx = Ctx {
                settings: &settings,
                store: &store,
                now: meta::now(),
                options,
                started,
                spent_ms,
            };
            let outcome = if dry_run {
                plan(&db, &ctx, &mut report, &*watch)
            } else {
                sweep(&db, &ctx, (phase, start.after), &mut report, &mut *watch)
            };
            if !dry_run && matches!(outcome, Ok(true)) {
                // Where a resume goes on: only the uploads are left.
                watch.checkpoint(&ctx.at(Phase::Uploads, "", &report));
            }
            (outcome, watch, report)
        })
        .await
        .map_err(|e| LifecycleError::Task(e.to_string()))?;
        let finish = |report: &mut Report| {
            report.duration_ms = spent_ms + started.elapsed().as_millis() as u64;
        };
        if !outcome? || watch.cancelled() {
            finish(&mut report);
            tracing::info!(dry_run, blobs = report.counts.blobs, "prune cancelled");
            return Ok(Finished::Cancelled(report));
        }
        let upload_age = grace_secs.max(MIN_UPLOAD_AGE_SECS);
        let stale = registry
            .expire_uploads(upload_age.max(0) as u64, dry_run)
            .await
            .map_err(|e| LifecycleError::Registry(e.to_string()))?;
        let reason = format!(
            "upload session untouched for more than {}",
            human(upload_age)
        );
        for upload in stale {
            report.push(Action {
                kind: "upload",
                repository: None,
                reference: upload.session,
                reason: reason.clone(),
                bytes: upload.size,
                disk_bytes: upload.disk_bytes,
            });
        }
        if !dry_run {
            let cutoff = meta::now() - CONSUMED_EVENTS_KEPT_SECS;
            while registry
                .db
                .write(move |tx| meta::forget_consumed_events(tx, cutoff, BATCH * 16))
                .await?
                > 0
            {}
            crate::telemetry::gc_freed(report.counts.disk_bytes_freed);
        }
        finish(&mut report);
        watch.checkpoint(&Checkpoint {
            phase: Phase::Uploads,
            after: String::new(),
            counts: report.counts,
            examined: report.examined,
            duration_ms: report.duration_ms,
        });
        let c = &report.counts;
        tracing::info!(
            dry_run,
            retention = options.retention,
            tags = c.tags,
            manifests = c.manifests,
            sifs = c.sifs,
            blobs = c.blobs,
            uploads = c.uploads,
            bytes_freed = c.bytes_freed,
            disk_bytes_freed = c.disk_bytes_freed,
            duration_ms = report.duration_ms,
            "prune finished"
        );
        Ok(Finished::Done(report))
    }

    /// Deletes a repository: its manifests (reference counts drop), tags, blob links and the
    /// repository itself. The bytes go at the first prune after the grace period.
    pub async fn delete_repository(
        &self,
        registry: &Registry,
        name: &str,
    ) -> Result<RepositoryDeleted, LifecycleError> {
        let mut total = 0usize;
        // Large repositories go in batches so that pushes elsewhere are not held up; the last
        // transaction removes whatever is left (a push racing the delete included).
        loop {
            let n = name.to_owned();
            let step = registry
                .db
                .write(move |tx| {
                    let Some(id) = meta::repository_id(tx, &n)? else {
                        return Ok(None);
                    };
                    let digests = meta::repository_manifests(tx, id, BATCH)?;
                    for d in &digests {
                        meta::delete_manifest(tx, &n, d)?;
                    }
                    if (digests.len() as i64) < BATCH {
                        meta::drop_repository(tx, id)?;
                        return Ok(Some((digests.len(), true)));
                    }
                    Ok(Some((digests.len(), false)))
                })
                .await?;
            match step {
                None if total == 0 => return Err(LifecycleError::NoSuchRepository(name.into())),
                None => break,
                Some((n, done)) => {
                    total += n;
                    if done {
                        break;
                    }
                }
            }
        }
        registry.events.notify_one();
        tracing::info!(repository = %name, manifests = total, "repository deleted");
        Ok(RepositoryDeleted {
            repository: name.to_owned(),
            manifests: total,
        })
    }
}

/// The dry run: everything in one transaction, rolled back; false if cancelled. It saves no
/// checkpoint: inside its one transaction a save would be rolled back with the plan (and a
/// resumed dry run starts over, nothing of it having been kept).
fn plan(
    db: &Db,
    ctx: &Ctx,
    report: &mut Report,
    watch: &dyn Watch<Checkpoint>,
) -> Result<bool, LifecycleError> {
    let completed = db.write_blocking(|tx| {
        meta::savepoint(tx, SAVEPOINT)?;
        let outcome = (|| {
            let mut after = String::new();
            let mut retention = ctx.options.retention;
            while retention {
                if watch.cancelled() {
                    return Ok(false);
                }
                retention = retention_batch(tx, ctx, &mut after, report)?;
            }
            loop {
                if watch.cancelled() {
                    return Ok(false);
                }
                if manifest_pass(tx, ctx, report)? == 0 {
                    break;
                }
            }
            let mut after = String::new();
            loop {
                if watch.cancelled() {
                    return Ok(false);
                }
                if !image_batch(tx, &mut after, report)? {
                    break;
                }
            }
            loop {
                if watch.cancelled() {
                    return Ok(false);
                }
                let blobs = meta::blob_candidates(tx, ctx.blob_cutoff(), BATCH)?;
                if blobs.is_empty() {
                    return Ok(true);
                }
                report.examined.blobs += blobs.len() as u64;
                for b in blobs {
                    if meta::mark_blob_deleting(tx, &b.digest, ctx.blob_cutoff())? {
                        let (bytes, disk_bytes) = measure_blob(ctx.store, &b.digest);
                        meta::forget_deleted_blob(tx, &b.digest)?;
                        report.push(blob_action(&b.digest, bytes, disk_bytes, ctx));
                    }
                }
            }
        })();
        meta::rollback_to(tx, SAVEPOINT)?;
        outcome
    })?;
    Ok(completed)
}

/// The real run from `phase` (in retention, after the repository `after`): the same steps, each
/// batch its own transaction, which also saves the checkpoint after it. False if cancelled
/// (between two batches).
fn sweep(
    db: &Db,
    ctx: &Ctx,
    (mut phase, mut after): (Phase, String),
    report: &mut Report,
    watch: &mut dyn Watch<Checkpoint>,
) -> Result<bool, LifecycleError> {
    recover_interrupted(db, ctx)?;
    if phase == Phase::Retention {
        loop {
            if watch.cancelled() {
                return Ok(false);
            }
            let more = db.write_blocking(|tx| {
                let more = retention_batch(tx, ctx, &mut after, report)?;
                watch.checkpoint_in(tx, &ctx.at(phase, &after, report));
                Ok(more)
            })?;
            if !more {
                break;
            }
        }
        phase = Phase::Manifests;
        watch.checkpoint(&ctx.at(phase, "", report));
    }
    if phase == Phase::Manifests {
        loop {
            // A pass walks the due candidates once; cascades it causes are due at once and are
            // picked up by the next pass.
            let mut deleted = 0;
            let mut cursor = None;
            loop {
                if watch.cancelled() {
                    return Ok(false);
                }
                let (seen, d) = db.write_blocking(|tx| {
                    let done = manifest_batch(tx, ctx, &mut cursor, report)?;
                    watch.checkpoint_in(tx, &ctx.at(phase, "", report));
                    Ok(done)
                })?;
                deleted += d;
                if (seen as i64) < BATCH {
                    break;
                }
            }
            if deleted == 0 {
                break;
            }
        }
        phase = Phase::Sifs;
        watch.checkpoint(&ctx.at(phase, "", report));
    }
    if phase == Phase::Sifs {
        let mut after = String::new();
        loop {
            if watch.cancelled() {
                return Ok(false);
            }
            let more = db.write_blocking(|tx| {
                let more = image_batch(tx, &mut after, report)?;
                watch.checkpoint_in(tx, &ctx.at(phase, "", report));
                Ok(more)
            })?;
            if !more {
                break;
            }
        }
        phase = Phase::Blobs;
        watch.checkpoint(&ctx.at(phase, "", report));
    }
    if phase == Phase::Blobs {
        return sweep_blobs(db, ctx, report, watch);
    }
    Ok(true)
}

/// Blobs without references since before the grace period, batch by batch: marked 'deleting'
/// (only if still unreferenced), unlinked under the digest's lock, then forgotten in the
/// transaction that saves the checkpoint. The cancel is checked before a batch is marked, never
/// inside one. False if cancelled.
fn sweep_blobs(
    db: &Db,
    ctx: &Ctx,
    report: &mut Report,
    watch: &mut dyn Watch<Checkpoint>,
) -> Result<bool, LifecycleError> {
    let mut pace = Throttle::new(ctx.options.delete_rate);
    let batch = ctx.blob_batch();
    loop {
        if watch.cancelled() {
            return Ok(false);
        }
        let cutoff = ctx.blob_cutoff();
        let blobs = db.read_blocking(|c| meta::blob_candidates(c, cutoff, batch))?;
        if blobs.is_empty() {
            return Ok(true);
        }
        report.examined.blobs += blobs.len() as u64;
        let marked: Vec<String> = db.write_blocking(|tx| {
            let mut marked = Vec::new();
            for b in &blobs {
                if meta::mark_blob_deleting(tx, &b.digest, cutoff)? {
                    marked.push(b.digest.clone());
                }
            }
            Ok(marked)
        })?;
        let mut removed = Vec::new();
        for digest in marked {
            let _locked = guard::lock_blocking(&digest);
            // An upload of the same bytes may have resurrected it since it was marked.
            if db
                .read_blocking(|c| meta::blob_gc_state(c, &digest))?
                .as_deref()
                != Some("deleting")
            {
                continue;
            }
            let (bytes, disk_bytes) = remove_blob(ctx.store, &digest)?;
            removed.push((digest, bytes, disk_bytes));
        }
        db.write_blocking(|tx| {
            for (digest, bytes, disk_bytes) in &removed {
                if meta::forget_deleted_blob(tx, digest)? {
                    report.push(blob_action(digest, *bytes, *disk_bytes, ctx));
                }
            }
            watch.checkpoint_in(tx, &ctx.at(Phase::Blobs, "", report));
            Ok(())
        })?;
        // Paced once the batch is settled, outside every lock and transaction.
        pace.consumed(removed.len() as u64);
    }
}

/// Blobs a crash left 'deleting': gone if their file is gone, else live again.
fn recover_interrupted(db: &Db, ctx: &Ctx) -> Result<(), LifecycleError> {
    loop {
        let stuck = db.read_blocking(|c| meta::blobs_in_state_deleting(c, BATCH))?;
        if stuck.is_empty() {
            return Ok(());
        }
        for digest in &stuck {
            let _locked = guard::lock_blocking(digest);
            let present = blob_present(ctx.store, digest);
            db.write_blocking(|tx| {
                if present {
                    meta::revive_blob(tx, digest)
                } else {
                    meta::forget_deleted_blob(tx, digest).map(|_| ())
                }
            })?;
        }
    }
}

/// Retention for up to 64 repositories after `after`; true while more may follow.
fn retention_batch(
    tx: &meta::Tx,
    ctx: &Ctx,
    after: &mut String,
    report: &mut Report,
) -> meta::Result<bool> {
    if !ctx
        .settings
        .rules
        .iter()
        .any(|r| r.keep_last.is_some() || r.unused_after_secs.is_some())
    {
        return Ok(false);
    }
    const REPOS: i64 = 64;
    let repos = meta::repositories_page(tx, after, REPOS)?;
    report.examined.repositories += repos.len() as u64;
    for (id, name) in &repos {
        after.clone_from(name);
        let Some(rule) = ctx.settings.rule_for(name) else {
            continue;
        };
        let tags = meta::tag_uses(tx, *id)?;
        for e in expired_tags(rule, &tags, ctx.now) {
            if meta::retention_delete_tag(tx, name, &e.tag)? {
                report.push(Action {
                    kind: "tag",
                    repository: Some(name.clone()),
                    reference: e.tag,
                    reason: format!("{} (was {})", e.reason, e.digest),
                    bytes: 0,
                    disk_bytes: 0,
                });
            }
        }
    }
    Ok(repos.len() as i64 == REPOS)
}

/// One full pass over the due manifest candidates inside `tx` (dry runs); returns deletions.
fn manifest_pass(tx: &meta::Tx, ctx: &Ctx, report: &mut Report) -> meta::Result<usize> {
    let mut cursor = None;
    let mut deleted = 0;
    loop {
        let (seen, d) = manifest_batch(tx, ctx, &mut cursor, report)?;
        deleted += d;
        if (seen as i64) < BATCH {
            return Ok(deleted);
        }
    }
}

/// Up to BATCH due candidates after `cursor`: (seen, deleted).
fn manifest_batch(
    tx: &meta::Tx,
    ctx: &Ctx,
    cursor: &mut Option<(i64, i64, String)>,
    report: &mut Report,
) -> meta::Result<(usize, usize)> {
    let candidates = meta::manifest_candidates(tx, ctx.blob_cutoff(), cursor.as_ref(), BATCH)?;
    report.examined.manifests += candidates.len() as u64;
    let mut deleted = 0;
    for c in &candidates {
        *cursor = Some((c.since, c.repository_id, c.digest.clone()));
        let age = ctx.settings.untagged_age(&c.repository);
        if c.since > ctx.now - age {
            continue; // A longer untagged_after applies to this repository: not yet.
        }
        let Some(m) = meta::gc_manifest(tx, c.repository_id, &c.digest)? else {
            meta::forget_manifest_candidate(tx, c.repository_id, &c.digest)?;
            continue;
        };
        match meta::manifest_anchor(tx, c.repository_id, &c.digest, &m)? {
            Some(Anchor::Durable) => {
                meta::forget_manifest_candidate(tx, c.repository_id, &c.digest)?;
            }
            Some(Anchor::Job) => {}
            None => {
                meta::delete_manifest(tx, &c.repository, &c.digest)?;
                let reason = if m.registry_made {
                    "SIF artifact whose image is gone".to_owned()
                } else if c.since == 0 {
                    "its tags, index or subject were deleted".to_owned()
                } else {
                    format!(
                        "untagged and unreferenced for more than {}",
                        human(age.max(0))
                    )
                };
                report.push(Action {
                    kind: "manifest",
                    repository: Some(c.repository.clone()),
                    reference: c.digest.clone(),
                    reason,
                    bytes: m.size.max(0) as u64,
                    disk_bytes: 0,
                });
                deleted += 1;
            }
        }
    }
    Ok((candidates.len(), deleted))
}

/// Up to BATCH image candidates after `after`; true while more may follow.
fn image_batch(tx: &meta::Tx, after: &mut String, report: &mut Report) -> meta::Result<bool> {
    let images = meta::image_candidates(tx, after, BATCH)?;
    report.examined.images += images.len() as u64;
    for image in &images {
        after.clone_from(image);
        let gone = !meta::manifest_exists_anywhere(tx, image)?;
        if gone {
            for (kind, sif, size) in meta::drop_image_sifs(tx, image)? {
                report.push(Action {
                    kind,
                    repository: None,
                    reference: sif,
                    reason: format!("built from {image}, which no repository holds any more"),
                    bytes: size.max(0) as u64,
                    disk_bytes: 0,
                });
            }
        }
        // A build still running for a gone image records its SIF when it ends: keep looking.
        if !(gone && meta::image_building(tx, image)?) {
            meta::forget_image_candidate(tx, image)?;
        }
    }
    Ok(images.len() as i64 == BATCH)
}

fn blob_action(digest: &str, bytes: u64, disk_bytes: u64, ctx: &Ctx) -> Action {
    Action {
        kind: "blob",
        repository: None,
        reference: digest.to_owned(),
        reason: format!(
            "unreferenced for more than {}",
            human(ctx.settings.grace_secs)
        ),
        bytes,
        disk_bytes,
    }
}

/// Blobs per batch at `rate` deletions per second (0: unpaced).
fn blob_batch(rate: u64) -> i64 {
    match rate {
        0 => BATCH,
        rate => (rate.min(BATCH as u64) as i64).max(1),
    }
}

// A row whose digest does not parse cannot name stored bytes; its row still goes.

/// (size, disk bytes) of a blob's stored bytes; zeros if they are missing.
fn measure_blob(store: &BlobStore, digest: &str) -> (u64, u64) {
    Digest::parse(digest)
        .ok()
        .and_then(|d| store.stat(&d).ok().flatten())
        .map_or((0, 0), |s| (s.size, s.disk_bytes))
}

fn blob_present(store: &BlobStore, digest: &str) -> bool {
    Digest::parse(digest).is_ok_and(|d| store.stat(&d).is_ok_and(|s| s.is_some()))
}

/// Removes a blob's stored bytes; what they occupied (zeros if they were already gone).
fn remove_blob(store: &BlobStore, digest: &str) -> std::io::Result<(u64, u64)> {
    let Ok(d) = Digest::parse(digest) else {
        return Ok((0, 0));
    };
    Ok(store.delete(&d)?.map_or((0, 0), |s| (s.size, s.disk_bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_batches_last_about_a_second_and_checkpoints_name_their_phase() {
        assert_eq!(blob_batch(0), BATCH);
        assert_eq!(blob_batch(2), 2);
        assert_eq!(blob_batch(1_000_000), BATCH);
        // A GC skips retention: phases are ordered, and a GC's start is the max with manifests.
        assert!(Phase::Retention < Phase::Manifests && Phase::Blobs < Phase::Uploads);
        assert_eq!(Phase::default().max(Phase::Manifests), Phase::Manifests);
        assert_eq!(Phase::Blobs.max(Phase::Manifests), Phase::Blobs);
        let at = Checkpoint {
            phase: Phase::Blobs,
            counts: Counts {
                blobs: 3,
                bytes_freed: 30,
                ..Counts::default()
            },
            ..Checkpoint::default()
        };
        let json = serde_json::to_value(&at).unwrap();
        assert_eq!(json["phase"], "blobs");
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), at);
        // The report keeps its flat counters (what `admin prune --json` always printed).
        let report = serde_json::to_value(Report {
            counts: at.counts,
            ..Report::default()
        })
        .unwrap();
        assert_eq!(report["blobs"], 3);
        assert_eq!(report["bytes_freed"], 30);
    }
}
