//! The loop a build worker runs: claim a job under a lease, build it while heart-beating, then
//! record the SIF (or the failure, with its log) and publish the ORAS artifacts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{self, Built, Failure};
use super::lease::{keep_lease, Leased};
pub(super) use super::lease::{renew_lease, tail};
use super::progress::{phase, Progress, ProgressCell};
use super::{apptainer, derive, intake, native, oras, Farm};
use crate::config::Backend;
use crate::meta::{self, Job, JobState, Sif};
use crate::registry::names::Digest;

/// Idle workers look for runnable jobs this often even without a wake-up (retries become due).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The backend `[farm] backend` names.
pub fn backend(kind: Backend) -> &'static dyn backend::Backend {
    match kind {
        Backend::Native => &native::Native,
        Backend::Apptainer => &apptainer::Apptainer,
    }
}

/// What a worker claimed.
enum Work {
    Build(Job),
    Enroot(meta::EnrootJob),
}

/// What a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// Builds and enroot-image derivations (the local executor's workers).
    Everything,
    /// Enroot-image derivations only (beside builder hosts or Slurm, which take the builds).
    Derivations,
}

/// Claims the next piece of work in one transaction: an enroot-image derivation someone asked
/// for (a job is waiting on it, and it is one conversion), else the oldest build, else a
/// derivation the start-up backfill queued (never ahead of a build).
fn claim_work(
    tx: &meta::Tx,
    takes: Takes,
    owner: &str,
    backend: &str,
    lease: i64,
) -> meta::Result<Option<Work>> {
    if let Some(job) = meta::claim_enroot_job(tx, owner, lease, meta::ENROOT_REQUESTED)? {
        return Ok(Some(Work::Enroot(job)));
    }
    if takes == Takes::Everything {
        if let Some(job) = meta::claim_job(tx, owner, backend, lease)? {
            return Ok(Some(Work::Build(job)));
        }
    }
    Ok(meta::claim_enroot_job(tx, owner, lease, meta::ENROOT_BACKFILL)?.map(Work::Enroot))
}

pub async fn run(farm: Arc<Farm>, owner: String, takes: Takes) {
    loop {
        let claim = {
            let (o, backend, lease) = (owner.clone(), farm.backend_name(), farm.config.lease_secs);
            farm.db
                .write(move |tx| claim_work(tx, takes, &o, backend, lease))
                .await
        };
        match claim {
            Ok(Some(Work::Build(job))) => build_one(&farm, &owner, job).await,
            Ok(Some(Work::Enroot(job))) => derive::derive_one(&farm, &owner, job).await,
            Ok(None) => {
                let _ = tokio::time::timeout(IDLE_POLL, farm.jobs.notified()).await;
            }
            Err(e) => {
                tracing::error!("build worker {owner}: cannot claim a job: {e}");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

async fn build_one(farm: &Arc<Farm>, owner: &str, job: Job) {
    tracing::info!(job = job.id, digest = %job.manifest_digest, platform = %job.platform, attempt = job.attempts, "SIF build started");
    let started = Instant::now();
    audit_build(farm, owner, &job, "build.start", "started", None, None).await;
    let progress = ProgressCell::default();
    let mut heartbeat = tokio::spawn(keep_lease(
        Arc::clone(farm),
        Leased::Build,
        job.id,
        owner.to_owned(),
        started,
        progress.clone(),
    ));
    // The heartbeat ends only when the lease is gone (an admin cancelled the job, or it was
    // re-queued after missed heartbeats): then the build stops, its result would not count.
    let result = tokio::select! {
        built = backend(farm.config.backend).build(backend::BuildRequest {
            farm,
            job: &job,
            progress: &progress,
        }) => built,
        _ = &mut heartbeat => Err(Failure::transient(
            "the build lost its lease (cancelled, or re-queued after missed heartbeats)".into(),
            "",
        )),
    };
    // A backend that makes no enroot image (apptainer): the native converter derives it from
    // the same layers, contained and streamed like any native build. A failure there costs the
    // enroot image only (logged), never the SIF.
    let result = match result {
        Ok(mut built) if !built.workspace.enroot_path().exists() => {
            let derived = tokio::select! {
                d = native::derive_enroot(farm, (&job).into(), &built.workspace, &progress) => d,
                _ = &mut heartbeat => Err(Failure::transient("the build lost its lease".into(), "")),
            };
            match derived {
                Ok(log) => built
                    .log
                    .push_str(&format!("--- enroot image (native) ---\n{log}")),
                Err(f) => {
                    // What a failed build child left is no image.
                    let _ = std::fs::remove_file(built.workspace.enroot_path());
                    tracing::warn!(job = job.id, reason = %f.reason, "deriving the enroot image failed; the SIF is recorded without one");
                    built
                        .log
                        .push_str(&format!("--- no enroot image: {} ---\n{}", f.reason, f.log));
                }
            }
            Ok(built)
        }
        other => other,
    };
    heartbeat.abort();
    settle(farm, owner, &job, started.elapsed(), result).await;
}

/// Records the end of one attempt, whoever built it (an in-process worker or a remote builder
/// holding the lease as `owner`): imports a built SIF and marks the job ready, then publishes
/// the ORAS artifacts; or records the failure (retried or failed for good). Audited and
/// counted either way. Returns the SIF when the job became ready.
pub(super) async fn settle(
    farm: &Arc<Farm>,
    owner: &str,
    job: &Job,
    elapsed: Duration,
    result: Result<Built, Failure>,
) -> Option<Sif> {
    let duration_ms = elapsed.as_millis() as i64;
    crate::telemetry::build_phase("convert", elapsed);
    // Whatever a remote builder uploaded for this attempt is taken by now, or of no use.
    farm.enroot_uploads.forget(job.id);
    let outcome = match result {
        Ok(built) => {
            let importing = Instant::now();
            let finished = finish(farm, owner, job, built, duration_ms).await;
            crate::telemetry::build_phase("import", importing.elapsed());
            finished
        }
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(sif) => {
            crate::telemetry::build_finished("ready", elapsed);
            tracing::info!(job = job.id, sif = %sif.digest, size = sif.size, duration_ms, builder = owner, "SIF ready");
            let detail = format!("sif {} in {duration_ms} ms", sif.digest);
            audit_build(
                farm,
                owner,
                job,
                "build.end",
                "ready",
                Some(sif.size as u64),
                Some(detail),
            )
            .await;
            if let Err(e) = oras::publish_for_image(farm, &job.manifest_digest).await {
                tracing::error!(job = job.id, "publishing the ORAS artifact failed: {e:#}");
            }
            Some(sif)
        }
        Err(failure) => {
            crate::telemetry::build_finished("failed", elapsed);
            crate::telemetry::build_failed(failure.permanent);
            let (id, o, reason, log) = (
                job.id,
                owner.to_owned(),
                failure.reason.clone(),
                tail(&failure.log),
            );
            // A permanent failure uses up every attempt at once.
            let max = if failure.permanent {
                0
            } else {
                farm.config.max_attempts
            };
            let delay = farm.config.retry_delay_secs;
            let state = farm
                .db
                .write(move |tx| meta::fail_job(tx, id, &o, &reason, &log, max, delay))
                .await;
            // `failed` for good, `retry` when another attempt follows.
            let outcome = match state {
                Ok(Some(JobState::Failed)) => "failed",
                Ok(Some(_)) => "retry",
                // The job was no longer this worker's (cancelled or re-queued).
                Ok(None) => "lost",
                Err(_) => "error",
            };
            let detail = Some(failure.reason.chars().take(512).collect());
            audit_build(farm, owner, job, "build.end", outcome, None, detail).await;
            match state {
                Ok(Some(JobState::Failed)) => {
                    tracing::warn!(job = job.id, reason = %failure.reason, "SIF build failed for good")
                }
                Ok(Some(_)) => {
                    tracing::warn!(job = job.id, reason = %failure.reason, "SIF build failed; will retry")
                }
                Ok(None) => {
                    tracing::warn!(job = job.id, reason = %failure.reason, "SIF build stopped: the job is no longer this worker's")
                }
                Err(e) => tracing::error!(job = job.id, "cannot record build failure: {e}"),
            }
            None
        }
    }
}

/// Hashes the built SIF (unless the server already did), makes it a blob and marks the job ready, in that order, so a crash in
/// between leaves at worst an unreferenced blob, never a ready job without its file.
async fn finish(
    farm: &Arc<Farm>,
    owner: &str,
    job: &Job,
    built: Built,
    duration_ms: i64,
) -> Result<Sif, Failure> {
    let fail = |reason: String| Failure::transient(reason, built.log.clone());
    let verifying = Progress::phase(phase::VERIFYING).to_json();
    if !renew_lease(farm, job.id, owner, verifying).await {
        return Err(fail(
            "the job is no longer this worker's (cancelled or re-queued)".into(),
        ));
    }
    let (path, enroot_path) = (built.workspace.sif_path(), built.workspace.enroot_path());
    let store = farm.store.clone();
    let known = built.digest.clone();
    let (inspected, enroot) = tokio::task::spawn_blocking(move || {
        let sif = intake::import_sif(&store, &path, known.as_ref())
            .map_err(|e| format!("the built SIF is unusable: {e}"))?;
        // A backend that makes no enroot image leaves none: the SIF is recorded without.
        let enroot = match enroot_path.exists() {
            true => Some(
                intake::import_enroot(&store, &enroot_path)
                    .map_err(|e| format!("the built enroot image is unusable: {e}"))?,
            ),
            false => None,
        };
        Ok::<_, String>((sif, enroot))
    })
    .await
    .map_err(|e| fail(format!("SIF import task: {e}")))?
    .map_err(fail)?;
    let sif = Sif {
        digest: inspected.digest.as_str().to_owned(),
        manifest_digest: job.manifest_digest.clone(),
        platform: job.platform.clone(),
        size: inspected.size as i64,
        squashfs_offset: inspected.squashfs_offset as i64,
        squashfs_size: inspected.squashfs_size as i64,
        backend: farm.backend_name().to_owned(),
        builder: owner.to_owned(),
        compression: built.compression.clone(),
        duration_ms,
        created_at: meta::now(),
        enroot: enroot.map(|e| meta::EnrootImage {
            digest: e.digest.as_str().to_owned(),
            size: e.size as i64,
        }),
    };
    let record = sif.clone();
    let (id, o, log, repo) = (
        job.id,
        owner.to_owned(),
        tail(&built.log),
        job.repository.clone(),
    );
    let namespace = repo.split('/').next().unwrap_or(&repo).to_owned();
    // A reproducible build of a re-pushed image yields the very SIF GC may be removing: under
    // the digest's lock, the file must still be there when the blob is linked (resurrected).
    // Likewise its enroot image (both locks at once: they are striped).
    let mut outputs = vec![sif.digest.as_str()];
    outputs.extend(sif.enroot.as_ref().map(|e| e.digest.as_str()));
    let _locked = crate::storage::guard::lock_all(&outputs).await;
    for digest in outputs {
        let file = Digest::parse(digest)
            .map_err(|e| fail(format!("digest of a built file: {e}")))
            .and_then(|d| {
                farm.store
                    .stat(&d)
                    .map_err(|e| fail(format!("built file {d}: {e}")))
            })?;
        if file.is_none() {
            return Err(fail(format!(
                "the built file {digest} was removed by garbage collection before it was recorded; the retry rebuilds it"
            )));
        }
    }
    let completed = farm
        .db
        .write(move |tx| {
            // The SIF is a blob of the image's repository, which is what ORAS pulls read; its
            // enroot image too, so the namespace's usage counts it.
            meta::link_blob(tx, &repo, &namespace, &record.digest, record.size)?;
            if let Some(e) = &record.enroot {
                meta::link_blob(tx, &repo, &namespace, &e.digest, e.size)?;
            }
            meta::complete_job(tx, id, &o, &record, &log)
        })
        .await
        .map_err(|e| fail(format!("cannot record the SIF: {e}")))?;
    if !completed {
        return Err(fail(
            "the build took too long and its lease passed to another worker".into(),
        ));
    }
    Ok(sif)
}

/// One build record: `user` is `system` for an in-process worker, the builder's name (auth
/// `builder`) for a remote one; `digest` the image's manifest digest, `reference` its
/// platform, `bytes` the SIF's size.
pub(super) async fn audit_build(
    farm: &Farm,
    owner: &str,
    job: &Job,
    action: &str,
    outcome: &str,
    bytes: Option<u64>,
    detail: Option<String>,
) {
    let Some(audit) = farm.audit.get() else {
        return;
    };
    let mut r = crate::audit::Record::new(action, outcome);
    match super::owner::builder_of(owner) {
        Some(builder) => {
            r.user = Some(builder.to_owned());
            r.auth = Some("builder".into());
            r.client = Some("remote".into());
        }
        None => {
            r.user = Some("system".into());
            r.auth = Some("system".into());
            r.client = Some("local".into());
        }
    }
    r.repository = Some(job.repository.clone());
    r.reference = Some(job.platform.clone());
    r.digest = Some(job.manifest_digest.clone());
    r.bytes = bytes;
    r.detail = Some(match detail {
        Some(d) => format!("job {} attempt {}: {d}", job.id, job.attempts),
        None => format!("job {} attempt {}", job.id, job.attempts),
    });
    audit.record(r).await;
}

/// Re-queues jobs whose workers stopped heart-beating (crashed remote builders, hung hosts).
pub async fn reap_expired_leases(farm: Arc<Farm>) {
    let every = Duration::from_secs((farm.config.lease_secs / 2).max(1) as u64);
    loop {
        tokio::time::sleep(every).await;
        let requeued = farm
            .db
            .write(|tx| {
                Ok((
                    meta::requeue_expired(tx, None)?,
                    meta::requeue_expired_enroot(tx, None)?,
                ))
            })
            .await;
        match requeued {
            Ok((0, 0)) => {}
            Ok((builds, derivations)) => {
                if builds > 0 {
                    tracing::warn!("re-queued {builds} SIF builds whose worker stopped responding");
                }
                if derivations > 0 {
                    tracing::warn!(
                        "re-queued {derivations} enroot-image derivations whose worker stopped responding"
                    );
                }
                farm.jobs.notify_waiters();
            }
            Err(e) => tracing::error!("lease reaper: {e}"),
        }
    }
}
