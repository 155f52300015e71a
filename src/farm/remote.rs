//! The remote builders' side of the farm, in plain types (`http::builder_api` is its thin HTTP
//! edge): a builder authenticated by its credential ([`crate::auth::builder`]) claims a job for
//! one of its platforms (long-poll), heart-beats its lease, appends to the job's log, reads the
//! job's config and layers and nothing else, uploads the enroot image built with the SIF and
//! then the SIF as streams, or reports a failure.
//!
//! The server trusts a builder less than itself: an upload is hashed as it arrives (into a
//! scratch file of the blob store, never into memory), must match the digest the builder
//! claims, stay under `[farm] max_sif_bytes`, parse as a SIF with Apptainer's objects and a
//! primary partition of the job's architecture ([`super::intake::verify_remote`]); anything else
//! fails the attempt naming the builder. The enroot image comes first (hashed, digest-checked,
//! squashfs magic, the same size cap) and waits in a scratch directory, at most one per job,
//! for the SIF upload that makes the job ready; a SIF uploaded without one is recorded without
//! one (a builder of an older release). A builder that vanishes loses its lease and the
//! reaper re-queues the job for another. Every action but heartbeats and log appends (a
//! builder's keep-alives, many per build) is audited with the builder's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::backend::{Built, Failure, Workspace};
use super::progress::Progress;
use super::{image, intake, owner, platform, worker, Farm};
use crate::auth::builder::BuilderIdentity;
use crate::config::FarmConfig;
use crate::meta::{self, Job, UNPLANNED_PLATFORM};
use crate::names::{Algorithm, Digest, Hasher};
use crate::storage::Blob;

/// Queued jobs one claim looks through for one its builder can take.
const CLAIM_SCAN: i64 = 200;
/// Largest log text one append carries.
pub const MAX_LOG_APPEND: usize = 64 << 10;
/// Longest job log kept (the tail).
const MAX_LOG_CHARS: i64 = 64 << 10;
/// The backend name recorded for remote builds (they run the native converter).
const BACKEND: &str = "native";

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Invalid(String),
    #[error("build job {0} is not held by this builder (finished, cancelled, or its lease passed to another)")]
    NotYours(i64),
    #[error("{0}")]
    NotFound(String),
    /// The upload was refused; the job's attempt failed with this reason.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl From<meta::MetaError> for RemoteError {
    fn from(e: meta::MetaError) -> Self {
        RemoteError::Internal(e.to_string())
    }
}

/// What a builder asks for when claiming.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// This builder process (random, per process): with the builder's name, the lease owner.
    pub instance: String,
    /// Narrows the credential's platforms (empty: all of them).
    #[serde(default)]
    pub platforms: Vec<String>,
}

/// A blob of the claimed job, to fetch from `/builder/v1/jobs/{job}/blobs/{digest}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobBlob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// A claimed job: what to build, and how (the server's `[farm]` settings and limits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedJob {
    pub job: i64,
    pub attempt: i64,
    pub platform: String,
    /// The image's manifest digest (what the SIF says it was built from).
    pub image: String,
    pub config: JobBlob,
    pub layers: Vec<JobBlob>,
    /// Heart-beat well within this.
    pub lease_secs: i64,
    pub farm: FarmConfig,
}

/// A builder's report of a failed build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureReport {
    pub reason: String,
    #[serde(default)]
    pub log: String,
    #[serde(default)]
    pub permanent: bool,
}

/// What the server recorded for an accepted upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub job: i64,
    pub sif: String,
    pub size: u64,
}

fn check_instance(instance: &str) -> Result<(), RemoteError> {
    let ok = !instance.is_empty()
        && instance.len() <= 64
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Invalid(
            "instance must be 1 to 64 letters, digits or '-'".into(),
        ))
    }
}

/// The platforms this claim may take: the credential's, narrowed by the request.
fn claimable(who: &BuilderIdentity, asked: &[String]) -> Result<Vec<String>, RemoteError> {
    if asked.is_empty() {
        return Ok(who.platforms.clone());
    }
    for p in asked {
        if !who.platforms.iter().any(|mine| platform::matches(mine, p)) {
            return Err(RemoteError::Invalid(format!(
                "builder {} may build {} only, not {p}",
                who.name,
                who.platforms.join(", ")
            )));
        }
    }
    Ok(asked.to_vec())
}

/// Waits up to `[farm] claim_wait_secs` for a job this builder can take and leases it.
pub async fn claim(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    request: &ClaimRequest,
) -> Result<Option<ClaimedJob>, RemoteError> {
    check_instance(&request.instance)?;
    let platforms = claimable(who, &request.platforms)?;
    let owner = owner::remote(&who.name, &request.instance);
    let deadline = Instant::now() + Duration::from_secs(farm.config.claim_wait_secs);
    loop {
        // Registered before looking, so a job queued meanwhile wakes this claim.
        let woken = farm.jobs.notified();
        let (o, p, only, lease) = (
            owner.clone(),
            platforms.clone(),
            who.job_id,
            farm.config.lease_secs,
        );
        let claimed = farm
            .db
            .write(move |tx| {
                let accepts = |j: &Job| {
                    j.platform != UNPLANNED_PLATFORM
                        && only.is_none_or(|id| id == j.id)
                        && p.iter().any(|mine| platform::matches(mine, &j.platform))
                };
                meta::claim_job_matching(tx, &o, BACKEND, lease, CLAIM_SCAN, &accepts)
            })
            .await?;
        if let Some(job) = claimed {
            match describe(farm, &job).await {
                Ok(claimed) => {
                    tracing::info!(job = job.id, builder = %who.name, platform = %job.platform, attempt = job.attempts, "SIF build claimed by a remote builder");
                    worker::audit_build(farm, &owner, &job, "build.start", "started", None, None)
                        .await;
                    return Ok(Some(claimed));
                }
                // The image cannot be built (a blob it names is gone, say): the attempt fails
                // as a local one would, and the builder waits for the next job.
                Err(failure) => {
                    worker::settle(farm, &owner, &job, Duration::ZERO, Err(failure)).await;
                    continue;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), woken).await;
    }
}

/// The claimed job as the builder needs it: its blobs (checked readable by the job's
/// repository) with their sizes.
async fn describe(farm: &Arc<Farm>, job: &Job) -> Result<ClaimedJob, Failure> {
    let image = image::load(farm, job.into()).await?;
    let size_of = |d: &Digest| -> Result<u64, Failure> {
        match farm.store.stat(d) {
            Ok(Some(stat)) => Ok(stat.size),
            Ok(None) => Err(Failure::transient(
                format!("blob {d} is missing from the store"),
                "",
            )),
            Err(e) => Err(Failure::transient(format!("blob {d}: {e}"), "")),
        }
    };
    let config = JobBlob {
        // The builder reads the config as JSON whatever the manifest called it.
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: image.config.as_str().to_owned(),
        size: size_of(&image.config)?,
    };
    let layers = image
        .layers
        .iter()
        .map(|(media_type, d)| {
            Ok(JobBlob {
                media_type: media_type.clone(),
                digest: d.as_str().to_owned(),
                size: size_of(d)?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(ClaimedJob {
        job: job.id,
        attempt: job.attempts,
        platform: job.platform.clone(),
        image: job.manifest_digest.clone(),
        config,
        layers,
        lease_secs: farm.config.lease_secs,
        farm: farm.config.clone(),
    })
}

/// The job `id` if `who` (this instance) holds its lease.
async fn held(
    farm: &Farm,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
) -> Result<(Job, String), RemoteError> {
    check_instance(instance)?;
    let owner = owner::remote(&who.name, instance);
    let o = owner.clone();
    let job = farm
        .db
        .read(move |c| meta::job_leased_to(c, id, &o))
        .await?
        .ok_or(RemoteError::NotYours(id))?;
    Ok((job, owner))
}

/// Extends the lease and records the builder's progress.
pub async fn heartbeat(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    progress: Option<Progress>,
) -> Result<(), RemoteError> {
    check_instance(instance)?;
    let owner = owner::remote(&who.name, instance);
    let report = progress
        .map(|mut p| {
            // Shown by /sif/…/status: keep the phase a short word.
            p.phase = p.phase.chars().take(32).collect();
            p.to_json()
        })
        .unwrap_or_else(|| "building".into());
    if worker::renew_lease(farm, id, &owner, report).await {
        Ok(())
    } else {
        Err(RemoteError::NotYours(id))
    }
}

/// Appends `text` (at most [`MAX_LOG_APPEND`] bytes) to the job's log.
pub async fn append_log(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    text: String,
) -> Result<(), RemoteError> {
    check_instance(instance)?;
    if text.len() > MAX_LOG_APPEND {
        return Err(RemoteError::TooLarge(format!(
            "a log append carries at most {MAX_LOG_APPEND} bytes"
        )));
    }
    let owner = owner::remote(&who.name, instance);
    let appended = farm
        .db
        .write(move |tx| meta::append_job_log(tx, id, &owner, &text, MAX_LOG_CHARS))
        .await?;
    if appended {
        Ok(())
    } else {
        Err(RemoteError::NotYours(id))
    }
}

/// A blob of job `id` (its config or a layer, nothing else) for the builder holding it.
pub async fn blob(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    digest: &str,
) -> Result<Blob, RemoteError> {
    let (job, owner) = held(farm, who, id, instance).await?;
    let not_found = || RemoteError::NotFound(format!("job {id} has no blob {digest}"));
    let digest = Digest::parse(digest).map_err(|_| not_found())?;
    let image = image::load(farm, (&job).into())
        .await
        .map_err(|f| RemoteError::NotFound(f.reason))?;
    if !image.blobs().contains(&digest) {
        audit(
            farm,
            &owner,
            &job,
            "builder.fetch",
            "not-found",
            digest.as_str(),
        )
        .await;
        return Err(not_found());
    }
    let blob = farm
        .store
        .open(&digest)
        .map_err(|e| RemoteError::Internal(format!("cannot open {digest}: {e}")))?
        .ok_or_else(not_found)?;
    audit(farm, &owner, &job, "builder.fetch", "ok", digest.as_str()).await;
    Ok(blob)
}

/// Records the builder's failure report as the attempt's failure (named after the builder).
pub async fn fail(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    report: FailureReport,
) -> Result<(), RemoteError> {
    let (job, owner) = held(farm, who, id, instance).await?;
    let reason: String = report.reason.chars().take(2048).collect();
    let log: String = report.log.chars().take(MAX_LOG_CHARS as usize).collect();
    let failure = Failure {
        reason: format!("builder {}: {reason}", who.name),
        log: if log.is_empty() { reason } else { log },
        permanent: report.permanent,
    };
    worker::settle(farm, &owner, &job, elapsed(&job), Err(failure)).await;
    Ok(())
}

fn elapsed(job: &Job) -> Duration {
    let secs = job.started_at.map_or(0, |s| (meta::now() - s).max(0));
    Duration::from_secs(secs as u64)
}

/// Enroot images uploaded by remote builders, waiting for their job's SIF: at most one per
/// job (a new upload replaces the last), removed when the job's attempt ends either way.
#[derive(Default)]
pub struct EnrootUploads {
    waiting: Mutex<HashMap<i64, (String, Workspace)>>,
}

impl EnrootUploads {
    fn put(&self, job: i64, owner: &str, workspace: Workspace) {
        self.lock().insert(job, (owner.to_owned(), workspace));
    }

    /// The enroot image `owner` uploaded for `job`, if any (its scratch directory goes with it).
    fn take(&self, job: i64, owner: &str) -> Option<Workspace> {
        let mut waiting = self.lock();
        match waiting.get(&job) {
            Some((o, _)) if o == owner => waiting.remove(&job).map(|(_, w)| w),
            _ => None,
        }
    }

    /// Drops whatever waits for `job` (its attempt ended).
    pub(super) fn forget(&self, job: i64) {
        self.lock().remove(&job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (String, Workspace)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Receives the enroot image of job `id` from the builder holding it, claimed to hash to
/// `claimed`: streamed into a scratch file while hashed, checked (digest, size cap, squashfs
/// magic), then kept for the SIF upload. A refusal fails the attempt naming the builder.
pub async fn upload_enroot<S, E>(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    claimed: &str,
    body: S,
) -> Result<u64, RemoteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    const WHAT: &str = "enroot image";
    let (job, owner, claimed, workspace) =
        upload_start(farm, who, id, instance, claimed, WHAT).await?;
    let path = workspace.enroot_path();
    let checked = receive_claimed(farm, &path, body, &claimed, WHAT)
        .await
        .and_then(|size| squashfs_magic(&path).map(|()| size));
    match checked {
        Ok(size) => {
            audit(
                farm,
                &owner,
                &job,
                "builder.upload",
                "ok",
                &format!("enroot image {claimed}"),
            )
            .await;
            farm.enroot_uploads.put(job.id, &owner, workspace);
            Ok(size)
        }
        Err(why) => Err(refuse(farm, who, &owner, &job, WHAT, why).await),
    }
}

/// Receives the SIF of job `id` from the builder holding it, claimed to hash to `claimed`:
/// streamed into a scratch file of the blob store while hashed, then verified; a SIF that
/// passes is imported and the job is ready, anything else fails the attempt naming the builder.
pub async fn upload<S, E>(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    claimed: &str,
    body: S,
) -> Result<Accepted, RemoteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    const WHAT: &str = "SIF";
    let (job, owner, claimed, workspace) =
        upload_start(farm, who, id, instance, claimed, WHAT).await?;
    let path = workspace.sif_path();
    let checked = match receive_claimed(farm, &path, body, &claimed, WHAT).await {
        Ok(size) => {
            let (p, platform) = (path.clone(), job.platform.clone());
            tokio::task::spawn_blocking(move || intake::verify_remote(&p, &platform))
                .await
                .map_err(|e| format!("SIF check task: {e}"))
                .and_then(|r| r)
                .map(|()| size)
        }
        Err(why) => Err(why),
    };
    let size = match checked {
        Ok(size) => size,
        Err(why) => return Err(refuse(farm, who, &owner, &job, WHAT, why).await),
    };
    audit(farm, &owner, &job, "builder.upload", "ok", claimed.as_str()).await;
    // The enroot image this builder sent first goes beside the SIF (a rename: both are scratch
    // of the blob store), where the import looks for it.
    if let Some(enroot) = farm.enroot_uploads.take(job.id, &owner) {
        if let Err(e) = std::fs::rename(enroot.enroot_path(), workspace.enroot_path()) {
            tracing::warn!(
                job = job.id,
                "the uploaded enroot image cannot be taken: {e}"
            );
        }
    }
    let j = job.id;
    let log = farm
        .db
        .read(move |c| meta::job_log(c, j))
        .await?
        .unwrap_or_default();
    let built = Built {
        workspace,
        log,
        compression: format!("{:?}", super::build_child::compression(&farm.config)),
        // Hashed as it streamed in, and equal to the claim: the import need not read it again.
        digest: Some(claimed.clone()),
    };
    match worker::settle(farm, &owner, &job, elapsed(&job), Ok(built)).await {
        Some(sif) => Ok(Accepted {
            job: job.id,
            sif: sif.digest,
            size,
        }),
        None => Err(RemoteError::NotYours(id)),
    }
}

enum Receive {
    TooLarge,
    Failed(String),
}

/// Writes `body` to `path`, hashing it; at most `max` bytes.
async fn receive<S, E>(
    path: &std::path::Path,
    mut body: S,
    max: u64,
) -> Result<(Digest, u64), Receive>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let failed = |e: &dyn std::fmt::Display| Receive::Failed(e.to_string());
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| failed(&e))?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(&e))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(Receive::TooLarge);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| failed(&e))?;
    }
    file.flush().await.map_err(|e| failed(&e))?;
    Ok((hasher.finish(), size))
}

/// The start of an upload from the builder holding job `id`: the job and its lease owner, the
/// digest the upload (`what`: the SIF, the enroot image) claims, parsed, and a fresh scratch
/// workspace of the blob store for it.
async fn upload_start(
    farm: &Farm,
    who: &BuilderIdentity,
    id: i64,
    instance: &str,
    claimed: &str,
    what: &str,
) -> Result<(Job, String, Digest, Workspace), RemoteError> {
    let (job, owner) = held(farm, who, id, instance).await?;
    let claimed = Digest::parse(claimed).map_err(|e| {
        RemoteError::Invalid(format!(
            "the {what}'s digest {claimed:?} is not a digest: {e}"
        ))
    })?;
    let workspace = Workspace::create(&farm.store).map_err(|f| RemoteError::Internal(f.reason))?;
    Ok((job, owner, claimed, workspace))
}

/// [`receive`]s an upload of `what` into `path`, under `[farm] max_sif_bytes`: its size if it
/// hashes to `claimed`, else why it is refused.
async fn receive_claimed<S, E>(
    farm: &Farm,
    path: &std::path::Path,
    body: S,
    claimed: &Digest,
    what: &str,
) -> Result<u64, String>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let max = farm.config.max_sif_bytes;
    match receive(path, body, max).await {
        Ok((digest, size)) if digest != *claimed => Err(format!(
            "the uploaded {what} hashes to {digest}, not the {claimed} it claimed ({size} bytes received)"
        )),
        Ok((_, size)) => Ok(size),
        Err(Receive::TooLarge) => Err(format!(
            "the uploaded {what} is larger than the {max} bytes [farm] max_sif_bytes allows"
        )),
        Err(Receive::Failed(e)) => Err(format!("the upload failed: {e}")),
    }
}

/// Whether the file at `path` starts with the squashfs magic (an enroot image is one).
fn squashfs_magic(path: &std::path::Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
    {
        Ok(()) if &magic == b"hsqs" => Ok(()),
        Ok(()) => Err("it is not a squashfs image (no hsqs magic)".into()),
        Err(e) => Err(format!("cannot read it back: {e}")),
    }
}

/// Fails the attempt of `job` because builder `who` sent an unusable `what` (audited, retried
/// under the policy by any builder); the refusal to answer it with.
async fn refuse(
    farm: &Arc<Farm>,
    who: &BuilderIdentity,
    owner: &str,
    job: &Job,
    what: &str,
    why: String,
) -> RemoteError {
    let reason = format!("builder {} sent an unusable {what}: {why}", who.name);
    audit(farm, owner, job, "builder.upload", "refused", &reason).await;
    let failure = Failure::transient(reason.clone(), "");
    worker::settle(farm, owner, job, elapsed(job), Err(failure)).await;
    RemoteError::Refused(reason)
}

/// One record of a builder action: the builder's name as the user, auth `builder`.
async fn audit(farm: &Farm, owner: &str, job: &Job, action: &str, outcome: &str, detail: &str) {
    let Some(audit) = farm.audit.get() else {
        return;
    };
    let mut r = crate::audit::Record::new(action, outcome);
    r.user = owner::builder_of(owner).map(str::to_owned);
    r.auth = Some("builder".into());
    r.repository = Some(job.repository.clone());
    r.reference = Some(job.platform.clone());
    r.digest = Some(job.manifest_digest.clone());
    r.detail = Some(format!(
        "job {} attempt {}: {}",
        job.id,
        job.attempts,
        detail.chars().take(512).collect::<String>()
    ));
    audit.record(r).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_plain_words() {
        assert!(check_instance("a-1").is_ok());
        assert!(check_instance("a:1").is_err() && check_instance("").is_err());
    }
}
