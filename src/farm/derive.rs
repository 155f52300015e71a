//! Enroot images for SIFs that have none: a SIF built before the registry made enroot images
//! (a store upgraded from an earlier release), or an apptainer build whose derivation failed.
//! The SIF is never rebuilt (jobs pin it by digest): the native converter writes the enroot
//! image alone from the same layers ([`native::derive_enroot`], the code an apptainer build
//! uses, in the same contained build process under `[farm]`'s limits), and it is recorded
//! beside the SIF. The queue is `enroot_jobs` (durable, one per image and platform), fed by
//! `/sif/<ref>/enroot` requests ([`super::resolve`]) and by the start-up backfill
//! ([`queue_backfill`]); the farm's in-process workers run it (`super::worker`). Builder
//! hosts do not: the layers are already in this server's store, and the builder protocol (and
//! every builder deployed at a site) stays as it is.

use std::sync::Arc;
use std::time::Instant;

use super::backend::{Failure, Workspace};
use super::lease::{self, Leased};
use super::progress::ProgressCell;
use super::{image, intake, native, Farm};
use crate::meta::{self, EnrootCompletion, EnrootImage, EnrootJob, JobState};
use crate::registry::names::Digest;

/// Queues a low-priority derivation for every ready SIF without an enroot image, once per
/// start (a failed one is tried again: a restart is how an admin's raised `[farm]` limit takes
/// effect). Run at start-up: after an upgrade the whole store gets enroot images, behind every
/// build, without an admin's step.
pub async fn queue_backfill(farm: &Farm) -> anyhow::Result<usize> {
    let queued = farm.db.write(meta::queue_enroot_backfill).await?;
    if queued > 0 {
        tracing::info!(
            queued,
            "queued enroot-image derivations for SIFs built without one (after every build)"
        );
        farm.jobs.notify_waiters();
    }
    Ok(queued)
}

/// Runs derivation `job` under `owner`'s lease and records its result.
pub(super) async fn derive_one(farm: &Arc<Farm>, owner: &str, job: EnrootJob) {
    tracing::info!(job = job.id, digest = %job.manifest_digest, platform = %job.platform, sif = %job.sif_digest, attempt = job.attempts, "enroot image derivation started");
    let started = Instant::now();
    let progress = ProgressCell::default();
    let mut heartbeat = tokio::spawn(lease::keep_lease(
        Arc::clone(farm),
        Leased::Enroot,
        job.id,
        owner.to_owned(),
        started,
        progress.clone(),
    ));
    let result = tokio::select! {
        derived = derive(farm, &job, &progress) => derived,
        _ = &mut heartbeat => Err(Failure::transient(
            "the derivation lost its lease (re-queued after missed heartbeats)".into(),
            "",
        )),
    };
    heartbeat.abort();
    let result = match result {
        Ok((image, log)) => record(farm, owner, &job, image, log).await,
        Err(failure) => Err(failure),
    };
    if let Err(failure) = result {
        fail(farm, owner, &job, failure).await;
    }
}

/// Derives the enroot image into a fresh workspace and imports it as a blob.
async fn derive(
    farm: &Arc<Farm>,
    job: &EnrootJob,
    progress: &ProgressCell,
) -> Result<(EnrootImage, String), Failure> {
    let workspace = Workspace::create(&farm.store)?;
    let source = image::Source {
        repository: &job.repository,
        manifest_digest: &job.manifest_digest,
    };
    let log = native::derive_enroot(farm, source, &workspace, progress).await?;
    let (store, path) = (farm.store.clone(), workspace.enroot_path());
    let imported = tokio::task::spawn_blocking(move || intake::import_enroot(&store, &path))
        .await
        .map_err(|e| Failure::transient(format!("enroot image import task: {e}"), log.clone()))?
        .map_err(|e| {
            Failure::transient(
                format!("the derived enroot image is unusable: {e}"),
                log.clone(),
            )
        })?;
    let image = EnrootImage {
        digest: imported.digest.as_str().to_owned(),
        size: imported.size as i64,
    };
    Ok((image, log))
}

/// Records the image beside its SIF. Under the digest's lock, like a build's outputs: GC may be
/// removing the very same bytes (an identical image of another SIF).
async fn record(
    farm: &Arc<Farm>,
    owner: &str,
    job: &EnrootJob,
    image: EnrootImage,
    log: String,
) -> Result<(), Failure> {
    let cannot = |reason: String| Failure::transient(reason, log.clone());
    let digest =
        Digest::parse(&image.digest).map_err(|e| cannot(format!("digest of the image: {e}")))?;
    let _locked = crate::storage::guard::lock_all(&[image.digest.as_str()]).await;
    if farm
        .store
        .stat(&digest)
        .map_err(|e| cannot(format!("enroot image {digest}: {e}")))?
        .is_none()
    {
        return Err(cannot(format!(
            "the enroot image {digest} was removed by garbage collection before it was recorded; the retry derives it again"
        )));
    }
    let (id, o, namespace, kept) = (
        job.id,
        owner.to_owned(),
        job.repository
            .split('/')
            .next()
            .unwrap_or(&job.repository)
            .to_owned(),
        lease::tail(&log),
    );
    let recorded = image.clone();
    let completion = farm
        .db
        .write(move |tx| meta::complete_enroot_job(tx, id, &o, &namespace, &recorded, &kept))
        .await
        .map_err(|e| cannot(format!("cannot record the enroot image: {e}")))?;
    match completion {
        EnrootCompletion::Recorded => {
            tracing::info!(job = job.id, sif = %job.sif_digest, enroot = %image.digest, size = image.size, "enroot image derived");
            Ok(())
        }
        EnrootCompletion::SifGone => Err(Failure::permanent(format!(
            "SIF {} was removed before its enroot image was recorded",
            job.sif_digest
        ))),
        EnrootCompletion::LeaseLost => {
            tracing::warn!(
                job = job.id,
                "enroot image derived, but the derivation is no longer this worker's"
            );
            Ok(())
        }
    }
}

/// Records a failed attempt: retried like a build (`max_attempts`, `retry_delay_secs`), a
/// permanent failure at once for good. The SIF is untouched either way.
async fn fail(farm: &Farm, owner: &str, job: &EnrootJob, failure: Failure) {
    let max = if failure.permanent {
        0
    } else {
        farm.config.max_attempts
    };
    let (id, o, reason, log, delay) = (
        job.id,
        owner.to_owned(),
        failure.reason.clone(),
        lease::tail(&failure.log),
        farm.config.retry_delay_secs,
    );
    let state = farm
        .db
        .write(move |tx| meta::fail_enroot_job(tx, id, &o, &reason, &log, max, delay))
        .await;
    match state {
        Ok(Some(JobState::Failed)) => {
            tracing::warn!(job = job.id, sif = %job.sif_digest, reason = %failure.reason, "enroot image derivation failed for good; the SIF stays as it is")
        }
        Ok(Some(_)) => {
            tracing::warn!(job = job.id, reason = %failure.reason, "enroot image derivation failed; will retry")
        }
        Ok(None) => {
            tracing::warn!(job = job.id, reason = %failure.reason, "enroot image derivation stopped: it is no longer this worker's")
        }
        Err(e) => tracing::error!(job = job.id, "cannot record the derivation's failure: {e}"),
    }
}
