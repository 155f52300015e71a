//! `/v2/...` handlers: translate HTTP to registry calls and back. No business logic here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::AuditSlot;
use super::errors::range_value;
use super::files;
use super::routes::{self, Route};
use super::App;
use crate::audit::event::{Event, RepositoryAction};
use crate::auth::{Action, Principal};
use crate::registry::error::{Error, Result};
use crate::registry::names::{Digest, Reference, RepositoryName};
use crate::registry::uploads::ChunkRange;
use crate::registry::{self as reg, Page};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Entry point for every `/v2` request.
pub async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    principal: Principal,
    audit: Option<Extension<AuditSlot>>,
    body: Body,
) -> Response {
    let path = uri.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let Some(route) = routes::parse(rest) else {
        return Error::NameUnknown(format!("no such route: {path}")).into_response();
    };
    let audit = audit.map(|Extension(slot)| slot);
    if let Some(event) = audit_event(&route, &method, &headers) {
        // Named before anything can fail; the handler completes it with what it served.
        super::auth::emit(audit.as_ref(), event);
    }
    let query = match super::auth::query_map(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let request = Request {
        app: &app,
        method,
        query,
        headers,
        principal,
        audit,
    };
    request
        .handle(route, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

struct Request<'a> {
    app: &'a App,
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    /// The caller, authenticated by the auth middleware.
    principal: Principal,
    /// Where this request's audit event goes.
    audit: Option<AuditSlot>,
}

impl Request<'_> {
    async fn handle(&self, route: Route<'_>, body: Body) -> Result<Response> {
        let m = &self.method;
        let is = |x: &Method| m == x;
        let read = is(&Method::GET) || is(&Method::HEAD);
        match route {
            Route::Base if read => {
                self.app.access.check(&self.principal, None, Action::Pull)?;
                Ok(json_response(StatusCode::OK, b"{}".to_vec()))
            }
            Route::Catalog if read => self.catalog().await,
            Route::Tags { name } if read => self.tags(&repository(name)?).await,
            Route::Manifest { name, reference } => {
                let repo = repository(name)?;
                let reference = match Reference::parse(reference) {
                    Ok(r) => r,
                    // Nothing can be stored under an invalid reference, so reading or deleting
                    // one finds nothing (404, as the conformance suite expects); only a PUT is
                    // told that the reference itself is invalid.
                    Err(_) if *m != Method::PUT => {
                        return Err(Error::ManifestUnknown(format!(
                            "manifest {reference} is not in repository {repo}"
                        )))
                    }
                    Err(e) => return Err(e.into()),
                };
                match *m {
                    _ if read => self.get_manifest(&repo, &reference).await,
                    Method::PUT => self.put_manifest(&repo, &reference, body).await,
                    Method::DELETE => self.delete_manifest(&repo, &reference).await,
                    _ => unsupported(m),
                }
            }
            Route::Blob { name, digest } => {
                let repo = repository(name)?;
                let digest = Digest::parse(digest)?;
                match *m {
                    _ if read => self.get_blob(&repo, &digest).await,
                    Method::DELETE => self.delete_blob(&repo, &digest).await,
                    _ => unsupported(m),
                }
            }
            Route::UploadStart { name } if is(&Method::POST) => {
                self.start_upload(&repository(name)?, body).await
            }
            Route::Upload { name, session } => {
                let repo = repository(name)?;
                // Every method of a session is part of a push (status polls included).
                if matches!(
                    *m,
                    Method::GET | Method::PATCH | Method::PUT | Method::DELETE
                ) {
                    self.check(&repo, Action::Push)?;
                }
                match *m {
                    Method::GET => self.upload_status(&repo, session).await,
                    Method::PATCH => self.patch_upload(&repo, session, body).await,
                    Method::PUT => self.put_upload(&repo, session, body).await,
                    Method::DELETE => self.cancel_upload(&repo, session).await,
                    _ => unsupported(m),
                }
            }
            Route::Referrers { name, digest } if read => {
                self.referrers(&repository(name)?, digest).await
            }
            _ => unsupported(m),
        }
    }

    /// Completes the audit event with the manifest served or stored (and a pull's size).
    fn audit_served(&self, digest: &str, bytes: Option<u64>) {
        if let Some(slot) = &self.audit {
            slot.amend(|e| e.served(digest, bytes));
        }
    }

    fn check(&self, repo: &RepositoryName, action: Action) -> Result<()> {
        self.app
            .access
            .check(&self.principal, Some(repo), action)
            .map(drop)
    }

    /// For reads: `false` means the caller may not read `repo`, and the handler must answer
    /// exactly as for a repository that does not exist.
    fn readable(&self, repo: &RepositoryName) -> Result<bool> {
        self.app.access.readable(&self.principal, repo)
    }

    fn page_params(&self) -> Result<(Option<String>, Option<usize>)> {
        let n = match self.query.get("n") {
            Some(n) => Some(
                n.parse::<usize>()
                    .map_err(|_| Error::Unsupported(format!("n={n:?} is not a page size")))?,
            ),
            None => None,
        };
        Ok((self.query.get("last").cloned(), n))
    }

    async fn catalog(&self) -> Result<Response> {
        let principal = self.app.access.check(&self.principal, None, Action::Pull)?;
        let (last, n) = self.page_params()?;
        let access = Arc::clone(&self.app.access);
        let page = self
            .app
            .registry
            .catalog(last, n, move |r| access.may_list(&principal, r))
            .await?;
        let link = next_link("/v2/_catalog", &page, n);
        let body = serde_json::json!({ "repositories": page.items });
        Ok(with_link(
            json_response(StatusCode::OK, body.to_string().into_bytes()),
            link,
        ))
    }

    async fn tags(&self, repo: &RepositoryName) -> Result<Response> {
        if !self.readable(repo)? {
            return Err(reg::repository_unknown(repo));
        }
        let (last, n) = self.page_params()?;
        let page = self.app.registry.list_tags(repo, last, n).await?;
        let link = next_link(&format!("/v2/{repo}/tags/list"), &page, n);
        let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
        Ok(with_link(
            json_response(StatusCode::OK, body.to_string().into_bytes()),
            link,
        ))
    }

    async fn get_manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<Response> {
        if !self.readable(repo)? {
            return Err(reg::manifest_unknown(repo, reference));
        }
        let m = self.app.registry.get_manifest(repo, reference).await?;
        let pulled = (self.method == Method::GET).then_some(m.content.len() as u64);
        self.audit_served(&m.digest, pulled);
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, &m.media_type)
            .header(header::CONTENT_LENGTH, m.content.len())
            .header(DOCKER_CONTENT_DIGEST, &m.digest)
            .header(header::ETAG, format!("\"{}\"", m.digest));
        if self.method == Method::HEAD {
            return build(response, Body::empty());
        }
        build(response, Body::from(m.content))
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        body: Body,
    ) -> Result<Response> {
        self.check(repo, Action::Push)?;
        let limit = self.app.registry.limits.max_manifest_bytes;
        let too_large = || {
            Error::PayloadTooLarge(format!(
                "manifest is larger than the limit of {limit} bytes (registry.max_manifest_bytes)"
            ))
        };
        if content_length(&self.headers).is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                Error::ManifestInvalid(format!("could not read the manifest body: {e}"))
            }
        })?;
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let put = self
            .app
            .registry
            .put_manifest(
                repo,
                reference,
                content_type,
                bytes.to_vec(),
                self.principal.user.as_deref(),
            )
            .await?;
        self.audit_served(put.digest.as_str(), None);
        let mut response = Response::builder()
            .status(StatusCode::CREATED)
            .header(
                header::LOCATION,
                format!("/v2/{repo}/manifests/{}", put.digest),
            )
            .header(DOCKER_CONTENT_DIGEST, put.digest.as_str());
        if let Some(subject) = &put.subject {
            response = response.header(OCI_SUBJECT, subject);
        }
        build(response, Body::empty())
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Response> {
        self.check(repo, Action::Delete)?;
        self.app.registry.delete_manifest(repo, reference).await?;
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn get_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Response> {
        if !self.readable(repo)? {
            return Err(reg::blob_unknown(repo, digest));
        }
        let blob = self.app.registry.open_blob(repo, digest).await?;
        let served = files::Served {
            len: blob.size,
            blob,
            offset: 0,
            etag: digest.as_str().to_owned(),
            content_type: "application/octet-stream",
            extra: vec![("docker-content-digest", digest.as_str().to_owned())],
        };
        files::respond(&self.method, &self.headers, served).await
    }

    async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Response> {
        self.check(repo, Action::Delete)?;
        self.app.registry.delete_blob(repo, digest).await?;
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn start_upload(&self, repo: &RepositoryName, body: Body) -> Result<Response> {
        self.check(repo, Action::Push)?;
        let registry = &self.app.registry;
        if let Some(mount) = self.query.get("mount") {
            let digest = Digest::parse(mount)?;
            if let Some(from) = self
                .query
                .get("from")
                .and_then(|f| RepositoryName::parse(f).ok())
            {
                // A source the caller may not read is treated like one that lacks the blob:
                // fall back to a normal upload and reveal nothing.
                let readable = self.app.access.may(&self.principal, Action::Pull, &from);
                if readable && registry.mount_blob(repo, &from, &digest).await? {
                    return blob_created(repo, &digest);
                }
            }
        }
        // Validate before opening a session, so a refused request leaves nothing behind.
        let digest = self
            .query
            .get("digest")
            .map(|d| Digest::parse(d))
            .transpose()?;
        let body = match digest {
            Some(_) => self.precheck(repo, None, digest.as_ref(), body).await?,
            None => body,
        };
        let session = registry
            .start_upload(repo, self.principal.user.as_deref())
            .await?;
        if let Some(digest) = digest {
            let finished = registry
                .finish_upload(repo, &session, &digest, body.into_data_stream())
                .await;
            if let Err(e) = finished {
                // The client never learnt this session's location: drop it rather than let it
                // wait for expiry.
                let _ = registry.cancel_upload(repo, &session).await;
                return Err(e);
            }
            return blob_created(repo, &digest);
        }
        let response = Response::builder()
            .status(StatusCode::ACCEPTED)
            .header(header::LOCATION, upload_location(repo, &session))
            .header(header::RANGE, "0-0")
            .header(DOCKER_UPLOAD_UUID, &session)
            .header(header::CONTENT_LENGTH, 0);
        build(response, Body::empty())
    }

    async fn upload_status(&self, repo: &RepositoryName, session: &str) -> Result<Response> {
        let len = self.app.registry.upload_status(repo, session).await?;
        upload_progress(StatusCode::NO_CONTENT, repo, session, len)
    }

    async fn patch_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        body: Body,
    ) -> Result<Response> {
        let range = content_range(&self.headers)?;
        if let (Some(r), Some(len)) = (range, content_length(&self.headers)) {
            if !chunk_matches_length(&r, len) {
                return Err(Error::SizeInvalid(format!(
                    "Content-Range {}-{} does not match Content-Length {len}",
                    r.start, r.end
                )));
            }
        }
        let body = self.precheck(repo, Some(session), None, body).await?;
        let len = self
            .app
            .registry
            .append_upload(
                repo,
                session,
                range,
                upload_location(repo, session),
                body.into_data_stream(),
            )
            .await?;
        upload_progress(StatusCode::ACCEPTED, repo, session, len)
    }

    async fn put_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        body: Body,
    ) -> Result<Response> {
        let digest = self.query.get("digest").ok_or_else(|| {
            Error::DigestInvalid("PUT to finish an upload needs ?digest=<digest>".into())
        })?;
        let digest = Digest::parse(digest)?;
        if let Some(range) = content_range(&self.headers)? {
            let received = self.app.registry.upload_status(repo, session).await?;
            if range.start != received {
                return Err(Error::RangeNotSatisfiable {
                    received,
                    location: upload_location(repo, session),
                });
            }
        }
        let body = self
            .precheck(repo, Some(session), Some(&digest), body)
            .await?;
        self.app
            .registry
            .finish_upload(repo, session, &digest, body.into_data_stream())
            .await?;
        blob_created(repo, &digest)
    }

    /// The quota pre-check of an upload's declared length: the body back if it may go on;
    /// otherwise the error, after reading the body away (see [`drain`]).
    async fn precheck(
        &self,
        repo: &RepositoryName,
        session: Option<&str>,
        digest: Option<&Digest>,
        body: Body,
    ) -> Result<Body> {
        let incoming = content_length(&self.headers);
        match self
            .app
            .registry
            .precheck_upload(repo, session, digest, incoming)
            .await
        {
            Ok(()) => Ok(body),
            Err(e) => {
                drain(body).await;
                Err(e)
            }
        }
    }

    async fn cancel_upload(&self, repo: &RepositoryName, session: &str) -> Result<Response> {
        self.app.registry.cancel_upload(repo, session).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn referrers(&self, repo: &RepositoryName, digest: &str) -> Result<Response> {
        let readable = self.readable(repo)?;
        let digest = Digest::parse(digest)?;
        let filter = self.query.get("artifactType").cloned();
        let body = if readable {
            self.app
                .registry
                .referrers(repo, &digest, filter.clone())
                .await?
        } else {
            // What a repository without referrers answers.
            reg::referrers_index(Vec::new())?
        };
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, crate::registry::manifests::OCI_INDEX);
        if filter.is_some() {
            response = response.header(OCI_FILTERS_APPLIED, "artifactType");
        }
        build(response, Body::from(body))
    }
}

/// The audit event of a `/v2` request, if it is one the trail records: a manifest read, push or
/// delete, or a blob delete, with the repository and reference as the request gave them (valid
/// or not) and a push's declared length.
fn audit_event(route: &Route, method: &Method, headers: &HeaderMap) -> Option<Event> {
    match *route {
        Route::Manifest { name, reference } => {
            let action = manifest_action(method, reference)?;
            let pushed = matches!(
                action,
                RepositoryAction::ManifestPush | RepositoryAction::TagPush
            );
            let bytes = content_length(headers).filter(|_| pushed);
            Some(Event::repository(action, name, reference, bytes))
        }
        Route::Blob { name, digest } if *method == Method::DELETE => Some(Event::repository(
            RepositoryAction::BlobDelete,
            name,
            digest,
            None,
        )),
        _ => None,
    }
}

/// What a manifest request under `reference` does, for the audit trail (`None`: nothing
/// audited, a method the route does not have).
fn manifest_action(method: &Method, reference: &str) -> Option<RepositoryAction> {
    use RepositoryAction::*;
    let by_digest = Digest::parse(reference).is_ok();
    Some(match *method {
        Method::GET => ManifestPull,
        Method::HEAD => ManifestHead,
        Method::PUT if by_digest => ManifestPush,
        Method::PUT => TagPush,
        Method::DELETE if by_digest => ManifestDelete,
        Method::DELETE => TagDelete,
        _ => return None,
    })
}

fn repository(name: &str) -> Result<RepositoryName> {
    Ok(RepositoryName::parse(name)?)
}

fn unsupported(method: &Method) -> Result<Response> {
    Err(Error::Unsupported(format!(
        "{method} is not supported on this route"
    )))
}

fn build(builder: axum::http::response::Builder, body: Body) -> Result<Response> {
    builder
        .body(body)
        .map_err(|e| Error::Internal(format!("building response: {e}")))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn blob_created(repo: &RepositoryName, digest: &Digest) -> Result<Response> {
    let response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .header(DOCKER_CONTENT_DIGEST, digest.as_str())
        .header(header::CONTENT_LENGTH, 0);
    build(response, Body::empty())
}

fn upload_location(repo: &RepositoryName, session: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{session}")
}

fn upload_progress(
    status: StatusCode,
    repo: &RepositoryName,
    session: &str,
    len: u64,
) -> Result<Response> {
    let response = Response::builder()
        .status(status)
        .header(header::LOCATION, upload_location(repo, session))
        .header(header::RANGE, range_value(len))
        .header(DOCKER_UPLOAD_UUID, session)
        .header(header::CONTENT_LENGTH, 0);
    build(response, Body::empty())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `Content-Range: <start>-<end>` on a PATCH (some clients prefix `bytes `).
pub(crate) fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        Error::BlobUploadInvalid(format!(
            "malformed Content-Range {v:?}: expected <start>-<end>"
        ))
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| bad())?;
    Ok(Some(ChunkRange { start, end }))
}

/// Whether an inclusive `Content-Range` covers exactly `len` bytes. Checked arithmetic: `0-<u64::MAX>`
/// covers 2^64 bytes, which no Content-Length can state (a plain `+ 1` overflowed, found by fuzzing).
pub(crate) fn chunk_matches_length(r: &ChunkRange, len: u64) -> bool {
    r.end.checked_sub(r.start).and_then(|d| d.checked_add(1)) == Some(len)
}

/// `Link: <path?last=X&n=N>; rel="next"` when the page was full.
fn next_link(path: &str, page: &Page, n: Option<usize>) -> Option<String> {
    if !page.more {
        return None;
    }
    let last = page.items.last()?;
    let n = n.map(|n| format!("&n={n}")).unwrap_or_default();
    Some(format!("<{path}?last={last}{n}>; rel=\"next\""))
}

fn with_link(mut response: Response, link: Option<String>) -> Response {
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

/// Reads and discards the body of an upload refused before its bytes were stored, such as one
/// over quota (see [`crate::registry::uploads::DRAIN_LIMIT`]).
async fn drain(body: Body) {
    crate::registry::uploads::drain(body.into_data_stream()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_requests_name_their_audit_action() {
        let d = format!("sha256:{}", "a".repeat(64));
        let name = |m: Method, r: &str| manifest_action(&m, r).map(RepositoryAction::name);
        assert_eq!(name(Method::GET, "1"), Some("manifest.pull"));
        assert_eq!(name(Method::HEAD, &d), Some("manifest.head"));
        assert_eq!(name(Method::PUT, "1"), Some("tag.push"));
        assert_eq!(name(Method::PUT, &d), Some("manifest.push"));
        assert_eq!(name(Method::DELETE, "1"), Some("tag.delete"));
        assert_eq!(name(Method::DELETE, &d), Some("manifest.delete"));
        assert_eq!(name(Method::PATCH, "1"), None);
    }
}
