//! `/sif/...`: compute-node jobs fetch ready-to-run SIFs by image digest or by `name:tag`.
//!
//! - `GET|HEAD /sif/<digest>[?platform=os/arch]` and `/sif/<name>:<tag>`: 200 with the SIF
//!   (Range, ETag = the SIF's digest, immutable), 202 with a JSON status while queued or building,
//!   422 with the reason and log tail if the build failed, 404 for unknown images.
//! - `/sif/<ref>/status` (JSON), `/sif/<ref>/log` (text), `/sif/<ref>/squashfs` (the squashfs
//!   partition alone, for enroot/pyxis).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{files, App};
use crate::auth::{Action, Principal};
use crate::farm::ready::ReadySif;
use crate::farm::{access, planner, platform};
use crate::meta::{self, Job, JobState};
use crate::registry::error::{Error, Result};
use crate::registry::manifests::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::registry::names::{Digest, RepositoryName, Tag};
use crate::storage::Blob;

/// Poll interval suggested to clients while a build runs.
const RETRY_AFTER_SECS: u64 = 2;
/// Bytes of build log included in a failure response.
const LOG_TAIL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Sif,
    Status,
    Log,
    Squashfs,
}

pub async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    principal: Principal,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return Error::Unsupported(format!("{method} is not supported on /sif")).into_response();
    }
    let query = match super::auth::query_map(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let rest = uri.path().strip_prefix("/sif/").unwrap_or("");
    handle(
        &app,
        &method,
        &headers,
        &principal,
        rest,
        query.get("platform").cloned(),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    app: &Arc<App>,
    method: &Method,
    headers: &HeaderMap,
    principal: &Principal,
    rest: &str,
    platform: Option<String>,
) -> Result<Response> {
    let (reference, view) = split_view(rest);
    let (repo, digest) = resolve(app, principal, reference).await?;
    if matches!(view, View::Sif | View::Squashfs) {
        if let Some(ready) = app
            .farm
            .ready
            .get(&repo, digest.as_str(), platform.as_deref())
        {
            match open_sif(app, &ready).await? {
                Some(file) => {
                    note_use(app, &repo, reference, &ready.image);
                    return serve(method, headers, &ready, file, view).await;
                }
                // Removed or quarantined since: the slow path sees what the job says now.
                None => app
                    .farm
                    .ready
                    .forget(&repo, digest.as_str(), platform.as_deref()),
            }
        }
    }
    let requested = (digest.as_str().to_owned(), platform.clone());
    let (digest, platform) = select_platform(app, &repo, digest, platform).await?;
    let job = find_or_enqueue(app, &repo, &digest, &platform).await?;
    match view {
        View::Status => Ok(json(StatusCode::OK, status_body(app, &job).await?)),
        View::Log => {
            let log = job_log(app, job.id).await?;
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
        }
        View::Sif | View::Squashfs => match job.state {
            JobState::Ready => {
                note_use(app, &repo, reference, &job.manifest_digest);
                let ready = ready_sif(app, &job).await?;
                let file = open_sif(app, &ready).await?.ok_or_else(|| {
                    Error::Internal(format!(
                        "SIF {} is recorded but its file is missing; run `hpc-registry admin scrub`",
                        ready.sif.digest
                    ))
                })?;
                let response = serve(method, headers, &ready, file, view).await?;
                app.farm
                    .ready
                    .insert(&repo, &requested.0, requested.1.as_deref(), ready);
                Ok(response)
            }
            JobState::Queued | JobState::Building => {
                let mut response = json(StatusCode::ACCEPTED, status_body(app, &job).await?);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
                Ok(response)
            }
            JobState::Failed => failed(app, &job).await,
        },
    }
}

/// A SIF fetch is a use of the image for retention's `unused_after`: of the image itself and of
/// the tag asked for (batched like pulls, never a write per download).
fn note_use(app: &App, repo: &RepositoryName, reference: &str, image: &str) {
    app.registry.record_sif_fetch(repo, image);
    if Digest::parse(reference).is_err() {
        if let Some((_, tag)) = reference.rsplit_once(':') {
            app.registry.record_sif_fetch(repo, tag);
        }
    }
}

fn split_view(rest: &str) -> (&str, View) {
    for (suffix, view) in [
        ("/status", View::Status),
        ("/log", View::Log),
        ("/squashfs", View::Squashfs),
    ] {
        if let Some(r) = rest.strip_suffix(suffix) {
            return (r, view);
        }
    }
    (rest, View::Sif)
}

fn not_found(what: &str) -> Error {
    Error::ManifestUnknown(format!(
        "{what} is not an image this registry holds (or you may not read it)"
    ))
}

/// Finds a repository the caller may read that holds the image, and the image's digest.
async fn resolve(
    app: &Arc<App>,
    principal: &Principal,
    reference: &str,
) -> Result<(RepositoryName, Digest)> {
    // Callers who did not authenticate (where that is required) are asked to, whatever they ask for.
    app.access.check(principal, None, Action::Pull)?;
    if let Ok(digest) = Digest::parse(reference) {
        let d = digest.as_str().to_owned();
        let repos = app
            .farm
            .db
            .read(move |c| meta::repositories_with_manifest(c, &d))
            .await?;
        // A digest is readable only through a repository the caller may read; otherwise it
        // answers exactly like an unknown digest.
        for name in repos {
            if let Ok(repo) = RepositoryName::parse(&name) {
                if app.access.may(principal, Action::Pull, &repo) {
                    return Ok((repo, digest));
                }
            }
        }
        return Err(not_found(reference));
    }
    let (name, tag) = reference.rsplit_once(':').ok_or_else(|| {
        Error::NameInvalid(format!(
            "{reference:?} is neither a digest nor <repository>:<tag>"
        ))
    })?;
    let repo = RepositoryName::parse(name)?;
    let tag = Tag::parse(tag)?;
    if !app.access.readable(principal, &repo)? {
        return Err(not_found(reference));
    }
    let (r, t) = (repo.as_str().to_owned(), tag.as_str().to_owned());
    let digest = app
        .farm
        .db
        .read(move |c| meta::tag_digest(c, &r, &t))
        .await?
        .ok_or_else(|| not_found(reference))?;
    Ok((repo, Digest::parse(&digest)?))
}

/// For an index, picks the child for the requested (or default) platform.
async fn select_platform(
    app: &Arc<App>,
    repo: &RepositoryName,
    digest: Digest,
    requested: Option<String>,
) -> Result<(Digest, String)> {
    let (r, d) = (repo.as_str().to_owned(), digest.as_str().to_owned());
    let stored = app
        .farm
        .db
        .read(move |c| meta::manifest_by_digest(c, &r, &d))
        .await?
        .ok_or_else(|| not_found(digest.as_str()))?;
    let (digest, requested) =
        if stored.media_type == OCI_INDEX || stored.media_type == DOCKER_MANIFEST_LIST {
            let platform = requested.unwrap_or_else(|| app.farm.default_platform().to_owned());
            let index: oci_spec::image::ImageIndex = serde_json::from_slice(&stored.content)
                .map_err(|e| Error::Internal(format!("stored index unreadable: {e}")))?;
            let child = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform()
                        .as_ref()
                        .is_some_and(|p| platform::matches(&platform, &platform_string(p)))
                })
                .ok_or_else(|| {
                    Error::ManifestUnknown(format!("image index {digest} has no {platform} image"))
                })?;
            // The child's own config decides its platform below, exactly as the planner keys jobs.
            (Digest::parse(child.digest().as_ref())?, Some(platform))
        } else {
            (digest, requested)
        };
    // Also the access rule: a repository gets a SIF (even one another repository's build
    // made) only if it holds every blob the image is built from.
    let platform = planner::buildable_platform(&app.farm, repo.as_str(), digest.as_str())
        .await
        .map_err(|e| match e.downcast::<access::Refused>() {
            Ok(refused) => Error::ManifestBlobUnknown(format!("no SIF for {digest}: {refused}")),
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

fn platform_string(p: &oci_spec::image::Platform) -> String {
    let base = format!("{}/{}", p.os(), p.architecture());
    match p.variant().as_deref() {
        Some(v) if !v.is_empty() => format!("{base}/{v}"),
        _ => base,
    }
}

async fn find_or_enqueue(
    app: &Arc<App>,
    repo: &RepositoryName,
    digest: &Digest,
    platform: &str,
) -> Result<Job> {
    let (d, p, r) = (
        digest.as_str().to_owned(),
        platform.to_owned(),
        repo.as_str().to_owned(),
    );
    // The common case, a job that exists, is a read: compute nodes poll and fetch this route
    // all day, and a write transaction would cost an fsync per request.
    let existing = {
        let (d, p) = (d.clone(), p.clone());
        app.farm.db.read(move |c| meta::job_for(c, &d, &p)).await?
    };
    if let Some(job) = existing {
        return Ok(job);
    }
    let job = app
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
        app.farm.jobs.notify_waiters();
    }
    Ok(job)
}

async fn status_body(app: &Arc<App>, job: &Job) -> Result<serde_json::Value> {
    let id = job.id;
    let position = if job.state == JobState::Queued {
        Some(
            app.farm
                .db
                .read(move |c| meta::queue_position(c, id))
                .await?,
        )
    } else {
        None
    };
    Ok(serde_json::json!({
        "image": job.manifest_digest,
        "platform": job.platform,
        "state": job.state.as_str(),
        "position": position,
        "progress": job.progress,
        "attempts": job.attempts,
        "sif": job.sif_digest,
        "failure": job.failure,
        "backend": job.backend,
        "queued_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }))
}

async fn job_log(app: &Arc<App>, id: i64) -> Result<String> {
    Ok(app
        .farm
        .db
        .read(move |c| meta::job_log(c, id))
        .await?
        .unwrap_or_default())
}

async fn failed(app: &Arc<App>, job: &Job) -> Result<Response> {
    let log = job_log(app, job.id).await?;
    let mut start = log.len().saturating_sub(LOG_TAIL);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let body = serde_json::json!({"errors": [{
        "code": "BUILD_FAILED",
        "message": format!("building a SIF for {} ({}) failed: {}", job.manifest_digest, job.platform,
            job.failure.as_deref().unwrap_or("unknown reason")),
        "detail": {"attempts": job.attempts, "log_tail": &log[start..]},
    }]});
    Ok(json(StatusCode::UNPROCESSABLE_ENTITY, body))
}

/// The SIF record of a ready job.
async fn ready_sif(app: &Arc<App>, job: &Job) -> Result<ReadySif> {
    let sif_digest = job
        .sif_digest
        .clone()
        .ok_or_else(|| Error::Internal(format!("job {} is ready without a SIF", job.id)))?;
    let d = sif_digest.clone();
    let sif = app
        .farm
        .db
        .read(move |c| meta::sif_by_digest(c, &d))
        .await?
        .ok_or_else(|| Error::Internal(format!("SIF {sif_digest} has no record")))?;
    Ok(ReadySif {
        image: job.manifest_digest.clone(),
        sif,
    })
}

async fn open_sif(app: &Arc<App>, ready: &ReadySif) -> Result<Option<Blob>> {
    let digest = Digest::parse(&ready.sif.digest)?;
    let store = app.farm.store.clone();
    let file = tokio::task::spawn_blocking(move || store.open(&digest))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    // A SIF file cut short on disk is not the SIF: refuse before sending a byte.
    match file {
        Some(f) if f.size != ready.sif.size as u64 => Err(Error::Internal(format!(
            "SIF {} is recorded as {} bytes but its file holds {}; run `hpc-registry admin scrub`",
            ready.sif.digest, ready.sif.size, f.size
        ))),
        other => Ok(other),
    }
}

async fn serve(
    method: &Method,
    headers: &HeaderMap,
    ready: &ReadySif,
    file: Blob,
    view: View,
) -> Result<Response> {
    let sif = &ready.sif;
    let served = match view {
        View::Squashfs => files::Served {
            blob: file,
            offset: sif.squashfs_offset as u64,
            len: sif.squashfs_size as u64,
            etag: format!("{}-squashfs", sif.digest),
            content_type: "application/octet-stream",
            extra: vec![("x-image-digest", ready.image.clone())],
        },
        _ => files::Served {
            len: file.size,
            blob: file,
            offset: 0,
            etag: sif.digest.clone(),
            content_type: "application/vnd.sylabs.sif",
            extra: vec![
                ("docker-content-digest", sif.digest.clone()),
                ("x-image-digest", ready.image.clone()),
            ],
        },
    };
    files::respond(method, headers, served).await
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
