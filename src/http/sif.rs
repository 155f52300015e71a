//! `/sif/...`: compute-node jobs fetch ready-to-run SIFs by image digest or by `name:tag`.
//!
//! - `GET|HEAD /sif/<digest>[?platform=os/arch]` and `/sif/<name>:<tag>`: 200 with the SIF
//!   (Range, ETag = the SIF's digest, immutable), 202 with a JSON status while queued or building,
//!   422 with the reason and log tail if the build failed, 404 for unknown images.
//! - `/sif/<ref>/status` (JSON), `/sif/<ref>/log` (text), `/sif/<ref>/squashfs` (the SIF's
//!   squashfs partition alone), `/sif/<ref>/enroot` (the enroot image built with the SIF, for
//!   pyxis: a blob of its own, ETag = its digest; the same 202s, Range and permissions as the
//!   SIF).
//!
//! What a request gets is decided by [`crate::farm::resolve`]; these handlers map its answer
//! to a response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::AuditSlot;
use super::{files, App};
use crate::audit::event::Event;
use crate::auth::Principal;
use crate::farm::ready::ReadySif;
use crate::farm::resolve::{Answer, SifService};
use crate::farm::sif_path::{SifPath, View};
use crate::farm::status::BuildFailed;
use crate::registry::error::{Error, Result};
use crate::storage::Blob;

/// Poll interval suggested to clients while a build runs.
const RETRY_AFTER_SECS: u64 = 2;

pub async fn dispatch(
    State(app): State<Arc<App>>,
    principal: Principal,
    audit: Option<Extension<AuditSlot>>,
    request: Request,
) -> Response {
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    let path = SifPath::of_request(uri.path()).unwrap_or(SifPath::parse(""));
    let mut served = None;
    let response = respond(&app, method, uri, headers, &principal, path, &mut served)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    // A fetch is a GET of the SIF, its squashfs or its enroot image that was not answered
    // "still building".
    let fetch = *method == Method::GET && path.view.is_file();
    if fetch && response.status() != StatusCode::ACCEPTED {
        let ok = response.status().as_u16() < 300;
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let event = Event::SifFetch {
            repository: path.repository().map(str::to_owned),
            reference: path.reference.chars().take(256).collect(),
            digest: served.filter(|_| ok),
            bytes: bytes.filter(|_| ok),
            squashfs: path.view == View::Squashfs,
            enroot: path.view == View::Enroot,
        };
        super::auth::emit(audit.as_ref().map(|Extension(slot)| slot), event);
    }
    response
}

async fn respond(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    principal: &Principal,
    path: SifPath<'_>,
    served: &mut Option<String>,
) -> Result<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Error::Unsupported(format!(
            "{method} is not supported on /sif"
        )));
    }
    let mut query = super::auth::query_map(uri)?;
    let service = SifService {
        farm: &app.farm,
        access: &app.access,
        registry: &app.registry,
    };
    match service
        .answer(principal, path, query.remove("platform"))
        .await?
    {
        Answer::Sif { ready, file } => {
            // The file's own digest names what was fetched (the squashfs alone has none).
            match (path.view, &ready.sif.enroot) {
                (View::Sif, _) => *served = Some(ready.sif.digest.clone()),
                (View::Enroot, Some(e)) => *served = Some(e.digest.clone()),
                _ => {}
            }
            serve(method, headers, &ready, file, path.view).await
        }
        Answer::Status(status) => Ok(json(StatusCode::OK, &status)),
        Answer::Log(log) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
        }
        Answer::Pending(status) => {
            let mut response = json(StatusCode::ACCEPTED, &status);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            Ok(response)
        }
        Answer::Failed(failed) => Ok(build_failed(&failed)),
    }
}

fn build_failed(failed: &BuildFailed) -> Response {
    let body = serde_json::json!({"errors": [{
        "code": "BUILD_FAILED",
        "message": failed.message,
        "detail": {"attempts": failed.attempts, "log_tail": failed.log_tail},
    }]});
    json(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

async fn serve(
    method: &Method,
    headers: &HeaderMap,
    ready: &ReadySif,
    file: Blob,
    view: View,
) -> Result<Response> {
    let sif = &ready.sif;
    let served = match (view, &sif.enroot) {
        (View::Enroot, Some(enroot)) => files::Served {
            len: file.size,
            blob: file,
            offset: 0,
            etag: enroot.digest.clone(),
            content_type: "application/vnd.squashfs",
            extra: vec![
                ("docker-content-digest", enroot.digest.clone()),
                ("x-image-digest", ready.image.clone()),
                ("x-sif-digest", sif.digest.clone()),
            ],
        },
        (View::Squashfs, _) => files::Served {
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

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}
