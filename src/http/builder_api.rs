//! The builder protocol at the HTTP edge (`/builder/v1`, for `hpc-registry builder`), and the
//! admin API of builder credentials (`/admin/builders`). Handlers authenticate and translate
//! only: the protocol is [`crate::farm::remote`], the credentials [`crate::auth::builder`].
//!
//! Every `/builder/v1` request carries `Authorization: Bearer hpcb_…` (a builder credential;
//! nothing else passes, and a builder credential passes nothing else), and every job route
//! `?instance=` (the builder process, part of the lease owner):
//!
//! - `POST /builder/v1/claim` `{"instance", "platforms"}`: 200 with the job, or 204 after
//!   `[farm] claim_wait_secs` without one (long-poll);
//! - `POST /builder/v1/jobs/{id}/heartbeat` (body: optional progress JSON): 204, 409 once the
//!   lease is gone (stop building);
//! - `POST /builder/v1/jobs/{id}/log` (text, at most 64 KiB): 204;
//! - `GET /builder/v1/jobs/{id}/blobs/{digest}`: the job's config or a layer, 404 for any other;
//! - `PUT /builder/v1/jobs/{id}/enroot?digest=sha256:…` (the enroot image built with the SIF,
//!   streamed, before the SIF): 201, or 422 naming why it was refused (the attempt then failed);
//! - `PUT /builder/v1/jobs/{id}/sif?digest=sha256:…` (the SIF, streamed): 201, or 422 naming
//!   why it was refused (the attempt then failed);
//! - `POST /builder/v1/jobs/{id}/fail` `{"reason", "log", "permanent"}`: 204.
//!
//! Admin (password or access token of an administrator; audited as `builder.*`):
//! `GET /admin/builders`, `POST /admin/builders` `{"name", "platforms", "expires_in"}` (the
//! answer holds the credential, once), `DELETE /admin/builders/{name}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::auth::{authorization, query_map, AuditSlot};
use super::files::{self, Served};
use super::storage_admin::admin_writer;
use super::App;
use crate::auth::builder::{
    self, BuilderAdminError, BuilderAuthError, BuilderIdentity, NewBuilder,
};
use crate::auth::Principal;
use crate::farm::progress::Progress;
use crate::farm::remote::{self, ClaimRequest, FailureReport, RemoteError};
use crate::registry::error::Error;

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({"errors": [{"code": code, "message": message.to_string(), "detail": null}]})),
    )
        .into_response()
}

fn remote_error(e: RemoteError) -> Response {
    let (status, code) = match &e {
        RemoteError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
        RemoteError::NotYours(_) => (StatusCode::CONFLICT, "LEASE_LOST"),
        RemoteError::NotFound(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        RemoteError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "SIF_REFUSED"),
        RemoteError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
        RemoteError::Internal(_) => {
            return Error::Internal(e.to_string()).into_response();
        }
    };
    error(status, code, e)
}

/// The builder calling, or the 401 (audited as an authentication failure).
async fn builder_of(
    app: &Arc<App>,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
    path: &str,
) -> Result<BuilderIdentity, Response> {
    let value = authorization(headers)
        .map_err(IntoResponse::into_response)?
        .map(str::to_owned);
    let db = Arc::clone(&app.farm.db);
    let checked = tokio::task::spawn_blocking(move || {
        builder::authenticate(&db, value.as_deref(), crate::meta::now())
    })
    .await
    .map_err(|e| Error::Internal(format!("builder authentication task: {e}")).into_response())?;
    match checked {
        Ok(who) => Ok(who),
        Err(BuilderAuthError::Meta(e)) => Err(Error::Internal(e.to_string()).into_response()),
        Err(e) => {
            let mut r = crate::audit::Record::new("auth.failure", "denied");
            r.auth = Some("builder".into());
            r.client = client.map(|c| c.ip().to_string());
            r.reference = Some(path.chars().take(256).collect());
            r.detail = Some(e.to_string());
            r.status = Some(401);
            app.audit.record_failure(r, client.map(|c| c.ip())).await;
            let mut response = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e);
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"hpc-registry builders\""),
            );
            Err(response)
        }
    }
}

/// The `?instance=` of a job route (the builder process that claimed the job).
fn instance(uri: &Uri) -> Result<String, RemoteError> {
    query_map(uri)
        .map_err(|e| RemoteError::Invalid(e.to_string()))?
        .remove("instance")
        .ok_or_else(|| {
            RemoteError::Invalid(
                "job routes need ?instance= (the builder process that claimed the job)".into(),
            )
        })
}

fn job_id(id: &str) -> Result<i64, RemoteError> {
    id.parse()
        .map_err(|_| RemoteError::Invalid(format!("{id:?} is not a build job id")))
}

/// The request's audit slot, for the client address.
type Client = Option<Extension<AuditSlot>>;

fn address(client: &Client) -> Option<SocketAddr> {
    client
        .as_ref()
        .and_then(|Extension(slot)| slot.get().client)
}

/// The builder calling a job route, the job's id and the `?instance=`.
async fn job_caller(
    app: &Arc<App>,
    headers: &HeaderMap,
    client: &Client,
    id: &str,
    uri: &Uri,
) -> Result<(BuilderIdentity, i64, String), Response> {
    let who = builder_of(app, headers, address(client), uri.path()).await?;
    let (id, instance) = job_id(id)
        .and_then(|id| Ok((id, instance(uri)?)))
        .map_err(remote_error)?;
    Ok((who, id, instance))
}

/// `POST /builder/v1/claim`.
pub async fn claim(
    State(app): State<Arc<App>>,
    client: Client,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let who = match builder_of(&app, &headers, address(&client), "/builder/v1/claim").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let request: ClaimRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID",
                format!("claim body: {e}"),
            )
        }
    };
    match remote::claim(&app.farm, &who, &request).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => remote_error(e),
    }
}

/// `POST /builder/v1/jobs/{id}/{heartbeat|log|fail}`.
pub async fn job_action(
    State(app): State<Arc<App>>,
    client: Client,
    Path((id, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, id, instance) = match job_caller(&app, &headers, &client, &id, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let done = match action.as_str() {
        "heartbeat" => {
            let progress = if body.is_empty() {
                None
            } else {
                match serde_json::from_slice::<Progress>(&body) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, "INVALID", format!("progress: {e}"))
                    }
                }
            };
            remote::heartbeat(&app.farm, &who, id, &instance, progress).await
        }
        "log" => match String::from_utf8(body.to_vec()) {
            Ok(text) => remote::append_log(&app.farm, &who, id, &instance, text).await,
            Err(_) => return error(StatusCode::BAD_REQUEST, "INVALID", "the log is not UTF-8"),
        },
        "fail" => match serde_json::from_slice::<FailureReport>(&body) {
            Ok(report) => remote::fail(&app.farm, &who, id, &instance, report).await,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID",
                    format!("failure report: {e}"),
                )
            }
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no builder operation {action:?}"),
            )
        }
    };
    match done {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => remote_error(e),
    }
}

/// `GET /builder/v1/jobs/{id}/blobs/{digest}`.
pub async fn blob(
    State(app): State<Arc<App>>,
    client: Client,
    Path((id, digest)): Path<(String, String)>,
    uri: Uri,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let (who, id, instance) = match job_caller(&app, &headers, &client, &id, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let blob = match remote::blob(&app.farm, &who, id, &instance, &digest).await {
        Ok(b) => b,
        Err(e) => return remote_error(e),
    };
    let len = blob.size;
    let served = Served {
        blob,
        offset: 0,
        len,
        etag: digest.clone(),
        content_type: "application/octet-stream",
        extra: vec![("docker-content-digest", digest)],
    };
    files::respond(&method, &headers, served)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /builder/v1/jobs/{id}/sif?instance=…&digest=sha256:…`.
pub async fn upload(
    State(app): State<Arc<App>>,
    client: Client,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (who, id, instance) = match job_caller(&app, &headers, &client, &id, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let claimed = match claimed_digest(&uri, "the SIF's sha256") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let stream = body.into_data_stream();
    match remote::upload(&app.farm, &who, id, &instance, &claimed, stream).await {
        Ok(accepted) => (StatusCode::CREATED, Json(accepted)).into_response(),
        Err(e) => remote_error(e),
    }
}

/// The `?digest=` an upload claims (`what` names it in the refusal).
fn claimed_digest(uri: &Uri, what: &str) -> Result<String, Box<Response>> {
    match query_map(uri).map(|mut q| q.remove("digest")) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("the upload needs ?digest= ({what})"),
        ))),
        Err(e) => Err(Box::new(e.into_response())),
    }
}

/// `PUT /builder/v1/jobs/{id}/enroot?instance=…&digest=sha256:…`.
pub async fn upload_enroot(
    State(app): State<Arc<App>>,
    client: Client,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (who, id, instance) = match job_caller(&app, &headers, &client, &id, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let claimed = match claimed_digest(&uri, "the enroot image's sha256") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let stream = body.into_data_stream();
    match remote::upload_enroot(&app.farm, &who, id, &instance, &claimed, stream).await {
        Ok(size) => (StatusCode::CREATED, Json(json!({"job": id, "size": size}))).into_response(),
        Err(e) => remote_error(e),
    }
}

type Slot = Option<Extension<AuditSlot>>;

fn note(slot: &Slot, action: &str, reference: Option<String>) {
    if let Some(Extension(slot)) = slot {
        slot.note(action, reference);
    }
}

fn admin_error(e: BuilderAdminError) -> Response {
    match e {
        BuilderAdminError::Invalid(m) => error(StatusCode::BAD_REQUEST, "INVALID", m),
        BuilderAdminError::Exists(_) => error(StatusCode::CONFLICT, "CONFLICT", e),
        BuilderAdminError::NotFound(_) => error(StatusCode::NOT_FOUND, "NOT_FOUND", e),
        other => Error::Internal(other.to_string()).into_response(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BuilderAdminError> + Send + 'static,
) -> Result<T, BuilderAdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BuilderAdminError::Invalid(format!("task: {e}")))?
}

/// `GET /admin/builders`.
pub async fn list(State(app): State<Arc<App>>, principal: Principal, slot: Slot) -> Response {
    note(&slot, "builder.list", None);
    if let Err(e) = admin_writer(&principal, "list builders") {
        return e.into_response();
    }
    let db = Arc::clone(&app.farm.db);
    match blocking(move || builder::list(&db)).await {
        Ok(list) => Json(json!({ "builders": list })).into_response(),
        Err(e) => admin_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    pub platforms: Vec<String>,
    /// A duration (`90d`, `12h`); unset: never expires.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// `POST /admin/builders`.
pub async fn create(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    Json(body): Json<CreateBody>,
) -> Response {
    note(&slot, "builder.create", Some(body.name.clone()));
    if let Err(e) = admin_writer(&principal, "create builders") {
        return e.into_response();
    }
    let expires_at = match body
        .expires_in
        .as_deref()
        .map(crate::timefmt::parse_duration_secs)
    {
        None => None,
        Some(Ok(secs)) => Some(crate::meta::now() + secs),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "INVALID", e),
    };
    let new = NewBuilder {
        name: body.name,
        platforms: body.platforms,
        job_id: None,
        expires_at,
        created_by: principal.user.unwrap_or_default(),
    };
    let db = Arc::clone(&app.farm.db);
    match blocking(move || builder::create(&db, &new)).await {
        Ok((token, summary)) => (
            StatusCode::CREATED,
            Json(json!({ "builder": summary, "token": token })),
        )
            .into_response(),
        Err(e) => admin_error(e),
    }
}

/// `DELETE /admin/builders/{name}`.
pub async fn revoke(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    Path(name): Path<String>,
) -> Response {
    note(&slot, "builder.revoke", Some(name.clone()));
    if let Err(e) = admin_writer(&principal, "revoke builders") {
        return e.into_response();
    }
    let db = Arc::clone(&app.farm.db);
    match blocking(move || builder::revoke(&db, &name)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => admin_error(e),
    }
}
