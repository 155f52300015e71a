//! What a `/sif` request gets, free of HTTP: the reference is resolved through a repository the
//! caller may read (reference → image → platform child of an index → job), a missing job is
//! queued, and the answer is a ready SIF to stream, the job's status, its log, or its failure.
//! The `/sif` handlers only map an [`Answer`] to a response.

use std::sync::Arc;

use super::ready::ReadySif;
use super::sif_path::{SifPath, View};
use super::status::{BuildFailed, JobStatus};
use super::{access, planner, platform, Farm};
use crate::auth::{Access, Action, Principal};
use crate::meta::{self, Job, JobState};
use crate::registry::error::{Error, Result};
use crate::registry::manifests::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::registry::names::{Digest, RepositoryName, Tag};
use crate::registry::Registry;
use crate::storage::Blob;

/// The answer to a `/sif` request.
pub enum Answer {
    /// The SIF is ready: stream `file`, the SIF (or its squashfs partition, for
    /// [`View::Squashfs`]), or its enroot image for [`View::Enroot`].
    Sif { ready: Arc<ReadySif>, file: Blob },
    /// [`View::Status`]: the job's status, whatever its state.
    Status(JobStatus),
    /// [`View::Log`]: the build log.
    Log(String),
    /// The SIF is queued or being built.
    Pending(JobStatus),
    /// The build failed for good.
    Failed(BuildFailed),
}

/// Resolves `/sif` requests for the farm; borrows what the server holds.
pub struct SifService<'a> {
    pub farm: &'a Arc<Farm>,
    pub access: &'a Access,
    pub registry: &'a Registry,
}

impl SifService<'_> {
    /// Answers `path` (with `?platform=` as `platform`) for `principal`.
    pub async fn answer(
        &self,
        principal: &Principal,
        path: SifPath<'_>,
        platform: Option<String>,
    ) -> Result<Answer> {
        let view = path.view;
        let (repo, digest) = self.resolve(principal, path).await?;
        let ready = &self.farm.ready;
        if view.is_file() {
            // A SIF without an enroot image takes the slow path, which derives one.
            let hit = ready
                .get(&repo, digest.as_str(), platform.as_deref())
                .filter(|hit| view != View::Enroot || hit.sif.enroot.is_some());
            if let Some(hit) = hit {
                match self.open_file(&hit, view, path.reference).await? {
                    Some(file) => {
                        self.note_use(&repo, path, &hit.image);
                        return Ok(Answer::Sif { ready: hit, file });
                    }
                    // Removed or quarantined since: the slow path sees what the job says now.
                    None => ready.forget(&repo, digest.as_str(), platform.as_deref()),
                }
            }
        }
        let requested = (digest.as_str().to_owned(), platform.clone());
        let (digest, platform) = self.select_platform(&repo, digest, platform).await?;
        let job = self.find_or_enqueue(&repo, &digest, &platform).await?;
        match view {
            View::Status => Ok(Answer::Status(self.status(&job).await?)),
            View::Log => Ok(Answer::Log(self.job_log(job.id).await?)),
            View::Sif | View::Squashfs | View::Enroot => match job.state {
                JobState::Ready => {
                    let mut sif = self.ready_sif(&job).await?;
                    if view == View::Enroot && sif.sif.enroot.is_none() {
                        match self.derivation(&repo, &sif).await? {
                            Derivation::Done(derived) => sif = derived,
                            Derivation::Waiting(answer) => return Ok(answer),
                        }
                    }
                    self.note_use(&repo, path, &job.manifest_digest);
                    let file = self.open_file(&sif, view, path.reference).await?.ok_or_else(|| {
                        Error::Internal(format!(
                            "SIF {} is recorded but its file is missing; run `hpc-registry admin scrub`",
                            sif.sif.digest
                        ))
                    })?;
                    let sif = ready.insert(&repo, &requested.0, requested.1.as_deref(), sif);
                    Ok(Answer::Sif { ready: sif, file })
                }
                JobState::Queued | JobState::Building => {
                    Ok(Answer::Pending(self.status(&job).await?))
                }
                JobState::Failed => {
                    let log = self.job_log(job.id).await?;
                    Ok(Answer::Failed(BuildFailed::of(&job, &log)))
                }
            },
        }
    }

    /// A SIF fetch is a use of the image for retention's `unused_after`: of the image itself
    /// and of the tag asked for (batched like pulls, never a write per download).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&meta::ReadConnection) -> meta::Result<T> + Send + 'static,
    ) -> Result<T> {
        Ok(self.farm.db.read(f).await?)
    }

    fn note_use(&self, repo: &RepositoryName, path: SifPath<'_>, image: &str) {
        self.registry.record_sif_fetch(repo, image);
        if let Some(tag) = path.tag() {
            self.registry.record_sif_fetch(repo, tag);
        }
    }

    /// Finds a repository the caller may read that holds the image, and the image's digest.
    async fn resolve(
        &self,
        principal: &Principal,
        path: SifPath<'_>,
    ) -> Result<(RepositoryName, Digest)> {
        let reference = path.reference;
        // Callers who did not authenticate (where that is required) are asked to, whatever they
        // ask for.
        self.access.check(principal, None, Action::Pull)?;
        if let Ok(digest) = Digest::parse(reference) {
            let d = digest.as_str().to_owned();
            let repos = self
                .read(move |c| meta::repositories_with_manifest(c, &d))
                .await?;
            // A digest is readable only through a repository the caller may read; otherwise
            // it answers exactly like an unknown digest.
            let readable = repos
                .iter()
                .filter_map(|name| RepositoryName::parse(name).ok())
                .find(|repo| self.access.may(principal, Action::Pull, repo));
            return readable
                .map(|repo| (repo, digest))
                .ok_or_else(|| not_found(reference));
        }
        let (name, tag) = path.tagged().ok_or_else(|| {
            Error::NameInvalid(format!(
                "{reference:?} is neither a digest nor <repository>:<tag>"
            ))
        })?;
        let repo = RepositoryName::parse(name)?;
        let tag = Tag::parse(tag)?;
        if !self.access.readable(principal, &repo)? {
            return Err(not_found(reference));
        }
        let (r, t) = (repo.as_str().to_owned(), tag.as_str().to_owned());
        let digest = self
            .read(move |c| meta::tag_digest(c, &r, &t))
            .await?
            .ok_or_else(|| not_found(reference))?;
        Ok((repo, Digest::parse(&digest)?))
    }

    /// For an index, picks the child for the requested (or default) platform.
    async fn select_platform(
        &self,
        repo: &RepositoryName,
        digest: Digest,
        requested: Option<String>,
    ) -> Result<(Digest, String)> {
        let (r, d) = (repo.as_str().to_owned(), digest.as_str().to_owned());
        let stored = self
            .read(move |c| meta::manifest_by_digest(c, &r, &d))
            .await?
            .ok_or_else(|| not_found(digest.as_str()))?;
        let is_index = stored.media_type == OCI_INDEX || stored.media_type == DOCKER_MANIFEST_LIST;
        let (digest, requested) = if is_index {
            let platform = requested.unwrap_or_else(|| self.farm.default_platform().to_owned());
            let child = index_child(&stored.content, &platform, &digest)?;
            // The child's own config decides its platform below, exactly as the planner keys
            // jobs.
            (child, Some(platform))
        } else {
            (digest, requested)
        };
        // Also the access rule: a repository gets a SIF (even one another repository's build
        // made) only if it holds every blob the image is built from.
        let platform = planner::buildable_platform(self.farm, repo.as_str(), digest.as_str())
            .await
            .map_err(|e| match e.downcast::<access::Refused>() {
                Ok(refused) => {
                    Error::ManifestBlobUnknown(format!("no SIF for {digest}: {refused}"))
                }
                Err(e) => Error::Internal(e.to_string()),
            })?
            .ok_or_else(|| {
                Error::ManifestInvalid(format!(
                    "{digest} is not a runnable image (an artifact, an attestation or an image without layers): there is no SIF for it"
                ))
            })?;
        if let Some(requested) = requested.filter(|r| !platform::matches(r, &platform)) {
            return Err(Error::ManifestUnknown(format!(
                "{digest} is a {platform} image, not {requested}"
            )));
        }
        Ok((digest, platform))
    }

    async fn find_or_enqueue(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        platform: &str,
    ) -> Result<Job> {
        let (d, p, r) = (
            digest.as_str().to_owned(),
            platform.to_owned(),
            repo.as_str().to_owned(),
        );
        // The common case, a job that exists, is a read: compute nodes poll and fetch this
        // route all day, and a write transaction would cost an fsync per request.
        let existing = {
            let (d, p) = (d.clone(), p.clone());
            self.read(move |c| meta::job_for(c, &d, &p)).await?
        };
        if let Some(job) = existing {
            return Ok(job);
        }
        let job = self
            .farm
            .db
            .write(move |tx| {
                // An image that exists but has no job yet (pushed before the farm ran, or a
                // platform outside the configured set) gets one now.
                if meta::enqueue_build(tx, &d, &p, &r)? {
                    tracing::info!(digest = %d, platform = %p, "SIF build queued on request");
                }
                meta::job_for(tx, &d, &p)
            })
            .await?
            .ok_or_else(|| Error::Internal("job vanished after enqueue".into()))?;
        if job.state == JobState::Queued {
            self.farm.jobs.notify_waiters();
        }
        Ok(job)
    }

    /// The enroot image of a ready SIF that has none (built before the registry made them, or
    /// an apptainer build whose derivation failed): its derivation, queued now if it is not
    /// (once per image and platform; a request goes ahead of the start-up backfill), answered
    /// like a build: pending while it runs, its failure once it failed for good. The SIF is
    /// never rebuilt. The derivation reads the layers through `repo`, which the caller may read
    /// and which holds them all ([`Self::select_platform`] checked).
    async fn derivation(&self, repo: &RepositoryName, sif: &ReadySif) -> Result<Derivation> {
        let (d, p) = (sif.image.clone(), sif.sif.platform.clone());
        let existing = {
            let (d, p) = (d.clone(), p.clone());
            self.read(move |c| meta::enroot_job_for(c, &d, &p)).await?
        };
        // The common case of a poll is a read; only a new (or re-prioritised, or outdated) one
        // takes a write.
        // A ready one seen here derived an image that is gone: it starts over.
        let current = existing.filter(|j| {
            j.sif_digest == sif.sif.digest
                && j.priority == meta::ENROOT_REQUESTED
                && j.state != JobState::Ready
        });
        let job = match current {
            Some(job) => job,
            None => {
                let (r, s) = (repo.as_str().to_owned(), sif.sif.digest.clone());
                let job = self
                    .farm
                    .db
                    .write(move |tx| {
                        if meta::request_enroot_job(tx, &d, &p, &r, &s, meta::ENROOT_REQUESTED)? {
                            tracing::info!(digest = %d, platform = %p, sif = %s, "enroot image derivation queued on request");
                        }
                        meta::enroot_job_for(tx, &d, &p)
                    })
                    .await?
                    .ok_or_else(|| Error::Internal("derivation vanished after enqueue".into()))?;
                self.farm.jobs.notify_waiters();
                job
            }
        };
        match job.state {
            JobState::Queued | JobState::Building => {
                let position = match job.state {
                    JobState::Queued => {
                        let queued = job.clone();
                        Some(
                            self.read(move |c| meta::enroot_queue_position(c, &queued))
                                .await?,
                        )
                    }
                    _ => None,
                };
                Ok(Derivation::Waiting(Answer::Pending(
                    JobStatus::of_derivation(&job, position),
                )))
            }
            JobState::Failed => {
                let id = job.id;
                let log = self
                    .read(move |c| meta::enroot_job_log(c, id))
                    .await?
                    .unwrap_or_default();
                Ok(Derivation::Waiting(Answer::Failed(
                    BuildFailed::of_derivation(&job, &log),
                )))
            }
            // Recorded since the SIF was read: read it again.
            JobState::Ready => {
                let d = sif.sif.digest.clone();
                let again = self
                    .read(move |c| meta::sif_by_digest(c, &d))
                    .await?
                    .filter(|s| s.enroot.is_some())
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the enroot image of SIF {} is recorded as derived but has no record",
                            sif.sif.digest
                        ))
                    })?;
                Ok(Derivation::Done(ReadySif {
                    image: sif.image.clone(),
                    sif: again,
                }))
            }
        }
    }

    async fn status(&self, job: &Job) -> Result<JobStatus> {
        let id = job.id;
        let position = match job.state {
            JobState::Queued => Some(self.read(move |c| meta::queue_position(c, id)).await?),
            _ => None,
        };
        Ok(JobStatus::of(job, position))
    }

    async fn job_log(&self, id: i64) -> Result<String> {
        Ok(self
            .read(move |c| meta::job_log(c, id))
            .await?
            .unwrap_or_default())
    }

    /// The SIF record of a ready job.
    async fn ready_sif(&self, job: &Job) -> Result<ReadySif> {
        let sif_digest = job
            .sif_digest
            .clone()
            .ok_or_else(|| Error::Internal(format!("job {} is ready without a SIF", job.id)))?;
        let d = sif_digest.clone();
        let sif = self
            .read(move |c| meta::sif_by_digest(c, &d))
            .await?
            .ok_or_else(|| Error::Internal(format!("SIF {sif_digest} has no record")))?;
        Ok(ReadySif {
            image: job.manifest_digest.clone(),
            sif,
        })
    }

    /// Opens the file `view` serves: the enroot image for [`View::Enroot`], else the SIF.
    /// `reference` names the image in the refusal of a SIF built without an enroot image.
    async fn open_file(
        &self,
        ready: &ReadySif,
        view: View,
        reference: &str,
    ) -> Result<Option<Blob>> {
        let (what, digest, size) = match (view, &ready.sif.enroot) {
            (View::Enroot, Some(e)) => ("enroot image", &e.digest, e.size),
            // `answer` derives a missing one first.
            (View::Enroot, None) => {
                return Err(Error::Internal(format!(
                    "the SIF of {reference} has no enroot image"
                )))
            }
            _ => ("SIF", &ready.sif.digest, ready.sif.size),
        };
        let parsed = Digest::parse(digest)?;
        let store = self.farm.store.clone();
        let file = tokio::task::spawn_blocking(move || store.open(&parsed))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        // A file cut short on disk is not the file: refuse before sending a byte.
        match file {
            Some(f) if f.size != size as u64 => Err(Error::Internal(format!(
                "{what} {digest} is recorded as {size} bytes but its file holds {}; run `hpc-registry admin scrub`",
                f.size
            ))),
            other => Ok(other),
        }
    }
}

/// Where a ready SIF's missing enroot image stands.
enum Derivation {
    /// Derived: the SIF's record with it.
    Done(ReadySif),
    /// Still running, or failed: the answer to give.
    Waiting(Answer),
}

fn not_found(what: &str) -> Error {
    Error::ManifestUnknown(format!(
        "{what} is not an image this registry holds (or you may not read it)"
    ))
}

/// The child of the image index `content` for `platform`.
fn index_child(content: &[u8], platform: &str, index: &Digest) -> Result<Digest> {
    let parsed: oci_spec::image::ImageIndex = serde_json::from_slice(content)
        .map_err(|e| Error::Internal(format!("stored index unreadable: {e}")))?;
    let child = parsed
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| platform::matches(platform, &platform::of_oci(p)))
        })
        .ok_or_else(|| {
            Error::ManifestUnknown(format!("image index {index} has no {platform} image"))
        })?;
    Ok(Digest::parse(child.digest().as_ref())?)
}
