//! The distribution model, independent of HTTP: what a handler asks for, in plain types.

pub mod error;
pub mod manifests;
/// Names live below the registry (the blob store names files by digest); re-exported here for
/// the paths that grew up with them.
pub use crate::names;
pub mod pulls;
pub mod uploads;

use std::sync::Arc;

use crate::meta::{self, Db, NewManifest, StoredManifest};
use crate::storage::{Blob, BlobStore};
use error::{Error, Result};
use names::{Algorithm, Digest, Reference, RepositoryName, Tag};
use uploads::blocking;

/// Limits a site may tune.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted; larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Largest page of tags or repositories returned at once.
    pub max_page: usize,
    /// Namespace quotas that apply without an admin override (`[quota]`; a reload replaces them).
    pub quota: crate::quota::LiveDefaults,
    /// Upload sessions one user may hold open; 0: no limit.
    pub max_upload_sessions_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_page: 10_000,
            quota: Default::default(),
            max_upload_sessions_per_user: 64,
        }
    }
}

/// The registry's state and operations.
pub struct Registry {
    pub db: Arc<Db>,
    pub store: BlobStore,
    pub limits: Limits,
    sessions: uploads::Sessions,
    pulls: pulls::PullLog,
    /// Notified after every write that adds outbox events, so the build farm reacts at once.
    pub events: Arc<tokio::sync::Notify>,
}

/// A stored manifest was written.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<String>,
}

/// One page of a listing, and whether more follows.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Registry {
    pub fn new(db: Arc<Db>, store: BlobStore, limits: Limits) -> Self {
        Registry {
            db,
            store,
            limits,
            sessions: Default::default(),
            pulls: Default::default(),
            events: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Size of `digest` if `repo` holds it.
    pub async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        let (name, d) = (repo.as_str().to_owned(), digest.as_str().to_owned());
        let size = self
            .db
            .read(move |c| meta::blob_in_repository(c, &name, &d))
            .await?;
        size.map(|s| s as u64)
            .ok_or_else(|| blob_unknown(repo, digest))
    }

    /// Opens `digest` for reading through `repo`.
    pub async fn open_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Blob> {
        let recorded = self.blob_size(repo, digest).await?;
        let (store, d) = (self.store.clone(), digest.clone());
        let blob = blocking(move || store.open(&d)).await?.ok_or_else(|| {
            // Metadata says present, bytes are gone: report it, never serve something else.
            Error::Internal(format!(
                "blob {digest} is recorded but its file is missing; run `hpc-registry admin scrub`"
            ))
        })?;
        // A file cut short (or grown) on disk is not the blob: refuse before sending a byte.
        if blob.size != recorded {
            return Err(Error::Internal(format!(
                "blob {digest} is recorded as {recorded} bytes but its file holds {}; run `hpc-registry admin scrub`",
                blob.size
            )));
        }
        Ok(blob)
    }

    /// Removes `digest` from `repo`.
    pub async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let (name, d) = (repo.as_str().to_owned(), digest.as_str().to_owned());
        if self
            .db
            .write(move |tx| meta::unlink_blob(tx, &name, &d))
            .await?
        {
            Ok(())
        } else {
            Err(Error::BlobUnknown(format!(
                "blob {digest} is not in repository {repo}"
            )))
        }
    }

    /// Fetches a manifest by tag or digest and notes the pull for retention.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let (name, r) = (repo.as_str().to_owned(), reference.clone());
        let found = self
            .db
            .read(move |c| match &r {
                Reference::Tag(t) => meta::manifest_by_tag(c, &name, t.as_str()),
                Reference::Digest(d) => meta::manifest_by_digest(c, &name, d.as_str()),
            })
            .await?;
        let m = found.ok_or_else(|| manifest_unknown(repo, reference))?;
        self.pulls.record(repo.as_str(), &reference.to_string());
        Ok(m)
    }

    /// Validates and stores a manifest (exact bytes), its tag and its "pushed" event, and who
    /// pushed it (`pusher`, told when its SIF is ready or failed).
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
        pusher: Option<&str>,
    ) -> Result<PutManifest> {
        let parsed = manifests::parse(content_type, &body)?;
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = algorithm.digest(&body);
        if let Reference::Digest(expected) = reference {
            if expected != &digest {
                return Err(Error::DigestInvalid(format!(
                    "manifest body has digest {digest}, not {expected}"
                )));
            }
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str().to_owned()),
            Reference::Digest(_) => None,
        };
        let new = NewManifest {
            repository: repo.as_str().to_owned(),
            namespace: repo.namespace().to_owned(),
            digest: digest.as_str().to_owned(),
            media_type: parsed.media_type,
            kind: parsed.kind.as_str(),
            registry_made: false,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.clone(),
            annotations: parsed.annotations,
            content: body,
            references: parsed.references,
            tag,
        };
        let defaults = self.limits.quota.get();
        let pusher = pusher.map(str::to_owned);
        let outcome = self
            .db
            .write(move |tx| {
                let size = new.content.len() as u64;
                if let Err(e) = crate::quota::check_stored(
                    tx,
                    &defaults,
                    &new.namespace,
                    crate::quota::Stored::Manifest(&new.digest),
                    size,
                )? {
                    return Ok(Err(e));
                }
                let stored = meta::put_manifest(tx, &new)?;
                if let (Ok(()), Some(user)) = (&stored, &pusher) {
                    meta::record_pusher(tx, &new.repository, &new.digest, user)?;
                }
                Ok(Ok(stored))
            })
            .await?;
        let outcome = match outcome {
            Ok(stored) => stored,
            Err(exceeded) => return Err(Error::Denied(exceeded.to_string())),
        };
        self.events.notify_one();
        match outcome {
            Ok(()) => Ok(PutManifest {
                digest,
                subject: parsed.subject,
            }),
            Err(meta::ManifestRejection::Missing { digest, kind }) => Err(Error::ManifestBlobUnknown(match kind {
                meta::ReferenceKind::Manifest => {
                    format!("child manifest {digest} is not in repository {repo}: push it first")
                }
                _ => format!("blob {digest} is not in repository {repo}: push or mount it first"),
            })),
            Err(meta::ManifestRejection::SizeMismatch { digest, declared, actual }) => {
                Err(Error::ManifestInvalid(format!(
                    "descriptor for {digest} declares {declared} bytes but the stored content has {actual}"
                )))
            }
        }
    }

    /// Deletes a manifest (by digest) or only a tag (by tag).
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        let (name, r) = (repo.as_str().to_owned(), reference.clone());
        let deleted = self
            .db
            .write(move |tx| match &r {
                Reference::Tag(t) => meta::delete_tag(tx, &name, t.as_str()),
                Reference::Digest(d) => meta::delete_manifest(tx, &name, d.as_str()),
            })
            .await?;
        if deleted {
            self.events.notify_one();
            Ok(())
        } else {
            Err(manifest_unknown(repo, reference))
        }
    }

    /// One page of tags in lexical order; `NAME_UNKNOWN` for an unknown repository.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<String>,
        n: Option<usize>,
    ) -> Result<Page> {
        let limit = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        let name = repo.as_str().to_owned();
        // One extra row tells whether a next page exists.
        let tags = self
            .db
            .read(move |c| meta::list_tags(c, &name, last.as_deref(), limit as i64 + 1))
            .await?
            .ok_or_else(|| repository_unknown(repo))?;
        Ok(page(tags, limit))
    }

    /// One page of repository names; `visible` filters what the caller may see.
    pub async fn catalog(
        &self,
        last: Option<String>,
        n: Option<usize>,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Page> {
        let limit = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        let items = self
            .db
            .read(move |c| {
                // Filtering happens after the SQL page, so keep reading pages until this one is full.
                let mut out = Vec::new();
                let mut cursor = last;
                loop {
                    let batch = meta::list_repositories(c, cursor.as_deref(), 1000)?;
                    let done = batch.len() < 1000;
                    cursor = batch.last().cloned();
                    out.extend(batch.into_iter().filter(|r| visible(r)));
                    if done || out.len() > limit {
                        return Ok(out);
                    }
                }
            })
            .await?;
        Ok(page(items, limit))
    }

    /// The referrers of `subject` in `repo`, as an OCI image index body.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<String>,
    ) -> Result<Vec<u8>> {
        let (name, s) = (repo.as_str().to_owned(), subject.as_str().to_owned());
        let rows = self
            .db
            .read(move |c| meta::referrers(c, &name, &s, artifact_type.as_deref()))
            .await?;
        referrers_index(rows)
    }

    /// Notes a SIF fetch as a use of the image (retention's `unused_after`), batched like pulls.
    pub fn record_sif_fetch(&self, repo: &RepositoryName, reference: &str) {
        self.pulls.record(repo.as_str(), reference);
    }

    /// Writes pending last-pull times; called periodically and at shutdown.
    pub async fn flush_pulls(&self) -> Result<()> {
        let batch = self.pulls.take();
        if !batch.is_empty() {
            self.db
                .write(move |tx| meta::record_pulls(tx, &batch))
                .await?;
        }
        Ok(())
    }
}

fn page(mut items: Vec<String>, limit: usize) -> Page {
    let more = items.len() > limit;
    items.truncate(limit);
    Page { items, more }
}

// The not-found errors, in one place: the HTTP layer answers with the very same ones for a
// repository the caller may not read, so that it is indistinguishable from a missing one.

pub fn manifest_unknown(repo: &RepositoryName, reference: &Reference) -> Error {
    Error::ManifestUnknown(format!("manifest {reference} is not in repository {repo}"))
}

pub fn blob_unknown(repo: &RepositoryName, digest: &Digest) -> Error {
    Error::BlobUnknown(format!("blob {digest} is not in repository {repo}"))
}

pub fn repository_unknown(repo: &RepositoryName) -> Error {
    Error::NameUnknown(format!("repository {repo} is not known to this registry"))
}

/// A referrers response (an OCI image index) listing `rows`.
pub fn referrers_index(rows: Vec<meta::Referrer>) -> Result<Vec<u8>> {
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = t.into();
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifests::OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&index).map_err(|e| Error::Internal(e.to_string()))
}

/// Parses a tag from a path segment (exposed for the HTTP layer's tag checks).
pub fn parse_tag(s: &str) -> Result<Tag> {
    Ok(Tag::parse(s)?)
}
