//! `/admin/jobs`: background admin jobs ([`crate::admin_jobs`]), for administrators.
//! `GET /admin/jobs[?limit=N]`, `GET /admin/jobs/ID`, `POST /admin/jobs` with
//! `{"kind": "scrub", "rate": "200MiB"}` (202 and the job), `POST /admin/jobs/ID/cancel`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::query_map;
use super::storage_admin::admin_writer;
use super::App;
use crate::admin_jobs::{JobError, SCRUB};
use crate::auth::Principal;
use crate::quota::parse_size;
use crate::registry::error::Error;

/// A job error as the admin API answers it.
pub(super) fn job_error(e: JobError) -> Response {
    let (status, code) = match &e {
        JobError::Busy(_) => (StatusCode::CONFLICT, "CONFLICT"),
        JobError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        _ => return Error::Internal(e.to_string()).into_response(),
    };
    super::errors::admin_error(status, code, e.to_string())
}

fn admin_reader(p: &Principal) -> Result<(), Error> {
    super::storage_admin::admin_reader(p, "see admin jobs")
}

fn view(v: impl serde::Serialize, status: StatusCode) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => Error::Internal(e.to_string()).into_response(),
    }
}

pub async fn list(State(app): State<Arc<App>>, principal: Principal, uri: Uri) -> Response {
    if let Err(e) = admin_reader(&principal) {
        return e.into_response();
    }
    let limit = match query_map(&uri).map(|mut q| q.remove("limit")) {
        Ok(None) => 100,
        Ok(Some(l)) => match l.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Error::SizeInvalid(format!("limit {l:?}: use a number from 1 to 10000"))
                    .into_response()
            }
        },
        Err(e) => return e.into_response(),
    };
    match app.jobs.list(limit).await {
        Ok(jobs) => view(json!({ "jobs": jobs }), StatusCode::OK),
        Err(e) => job_error(e),
    }
}

/// `GET /admin/jobs/ID[?wait=SECS]`: with `wait`, answers once the job has ended or after at
/// most SECS (up to 60) seconds, so a client waiting for a job hears of its end at once.
pub async fn get(
    State(app): State<Arc<App>>,
    principal: Principal,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Err(e) = admin_reader(&principal) {
        return e.into_response();
    }
    let Ok(id) = id.parse::<i64>() else {
        return job_error(JobError::NotFound(-1));
    };
    let wait = match query_map(&uri).map(|mut q| q.remove("wait")) {
        Ok(None) => 0,
        Ok(Some(w)) => match w.parse::<u64>() {
            Ok(n) if n <= 60 => n,
            _ => {
                return Error::SizeInvalid(format!("wait {w:?}: use 0 to 60 seconds"))
                    .into_response()
            }
        },
        Err(e) => return e.into_response(),
    };
    let found = match wait {
        0 => app.jobs.get(id).await,
        secs => app.jobs.wait_for(id, Duration::from_secs(secs)).await,
    };
    match found {
        Ok(Some(job)) => view(job, StatusCode::OK),
        Ok(None) => job_error(JobError::NotFound(id)),
        Err(e) => job_error(e),
    }
}

/// `POST /admin/jobs`: starts a job (a scrub); 202 with the job.
pub async fn start(
    State(app): State<Arc<App>>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = admin_writer(&principal, "start admin jobs") {
        return e.into_response();
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Error::SizeInvalid(format!(
                    "the body must be JSON like {{\"kind\": \"scrub\", \"rate\": \"200MiB\"}}: {e}"
                ))
                .into_response()
            }
        }
    };
    let kind = body["kind"].as_str().unwrap_or(SCRUB);
    if kind != SCRUB {
        return Error::Unsupported(format!("job kind {kind:?}: the one kind is \"scrub\""))
            .into_response();
    }
    let rate = match body["rate"].as_str() {
        Some(r) => match parse_size(r) {
            Ok(n) => n,
            Err(e) => return Error::SizeInvalid(format!("rate: {e}")).into_response(),
        },
        None => app.scrub_rate,
    };
    let who = principal.user.clone().unwrap_or_default();
    match app.jobs.start_scrub(rate, &who).await {
        Ok(job) => view(job, StatusCode::ACCEPTED),
        Err(e) => job_error(e),
    }
}

/// `POST /admin/jobs/ID/cancel`: the job stops at its next blob.
pub async fn cancel(
    State(app): State<Arc<App>>,
    principal: Principal,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Err(e) = admin_writer(&principal, "cancel admin jobs") {
        return e.into_response();
    }
    let Ok(id) = id.parse::<i64>() else {
        return job_error(JobError::NotFound(-1));
    };
    if action != "cancel" {
        return Error::Unsupported(format!("no action {action:?} on jobs: use cancel"))
            .into_response();
    }
    match app.jobs.cancel(id).await {
        Ok(job) => view(job, StatusCode::OK),
        Err(e) => job_error(e),
    }
}
