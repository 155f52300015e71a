//! `/admin/jobs`: background admin jobs ([`crate::admin_jobs`]), for administrators.
//! `GET /admin/jobs[?limit=N]`, `GET /admin/jobs/ID[?wait=SECS]`, `POST /admin/jobs` with
//! `{"kind": "scrub", "rate": "200MiB"}`, `{"kind": "gc"}` or `{"kind": "prune", "dry_run":
//! true}` (gc and prune also take `"delete_rate": N`, blobs per second) answering 202 and the
//! job, `POST /admin/jobs/ID/cancel`. Starting and cancelling are audited as `job.start` and
//! `job.cancel`, with the kind and id.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{query_map, AuditSlot};
use super::storage_admin::admin_writer;
use super::App;
use crate::admin_jobs::{GcParams, JobError, JobView, ScrubParams, GC, PRUNE, SCRUB};
use crate::auth::Principal;
use crate::quota::parse_size;
use crate::registry::error::Error;

type Slot = Option<Extension<AuditSlot>>;

fn note(slot: &Slot, action: &str, reference: String) {
    if let Some(Extension(slot)) = slot {
        slot.note(action, Some(reference));
    }
}

/// "prune job 12", as the audit trail names a job.
fn named(job: &JobView) -> String {
    format!("{} job {}", job.job.kind, job.job.id)
}

/// A job error as the admin API answers it.
pub(super) fn job_error(e: JobError) -> Response {
    let (status, code) = match &e {
        JobError::Busy { .. } => (StatusCode::CONFLICT, "CONFLICT"),
        JobError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        JobError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        JobError::UnknownKind(_) => return Error::Unsupported(e.to_string()).into_response(),
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

/// The kind and params a `POST /admin/jobs` body asks for (`kind` defaults to scrub, the one
/// kind there was at first).
fn start_request(body: &Value, scrub_rate: u64) -> Result<(&'static str, Value), Error> {
    match body["kind"].as_str().unwrap_or(SCRUB) {
        SCRUB => {
            let rate = match &body["rate"] {
                Value::Null => scrub_rate,
                Value::String(r) => {
                    parse_size(r).map_err(|e| Error::SizeInvalid(format!("rate: {e}")))?
                }
                other => {
                    return Err(Error::SizeInvalid(format!(
                        "rate {other}: use a size per second such as \"200MiB\""
                    )))
                }
            };
            let params = ScrubParams {
                rate_bytes_per_sec: rate,
            };
            Ok((SCRUB, json_of(&params)?))
        }
        kind @ (GC | PRUNE) => {
            let dry_run = match &body["dry_run"] {
                Value::Null => false,
                Value::Bool(b) => *b,
                other => {
                    return Err(Error::SizeInvalid(format!(
                        "dry_run {other}: use true or false"
                    )))
                }
            };
            let delete_rate = match &body["delete_rate"] {
                Value::Null => 0,
                v => v.as_u64().ok_or_else(|| {
                    Error::SizeInvalid(format!(
                        "delete_rate {v}: use a whole number of blobs per second (0: unpaced)"
                    ))
                })?,
            };
            let params = GcParams {
                dry_run,
                delete_rate,
            };
            Ok((if kind == GC { GC } else { PRUNE }, json_of(&params)?))
        }
        other => Err(Error::Unsupported(format!(
            "job kind {other:?}: use \"scrub\", \"gc\" or \"prune\""
        ))),
    }
}

/// Typed params as the JSON the job row keeps.
fn json_of(params: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(params).map_err(|e| Error::Internal(e.to_string()))
}

/// `POST /admin/jobs`: starts a job; 202 with the job.
pub async fn start(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                note(&slot, "job.start", "(unreadable body)".into());
                return Error::SizeInvalid(format!(
                    "the body must be JSON like {{\"kind\": \"gc\"}}: {e}"
                ))
                .into_response();
            }
        }
    };
    let asked = body["kind"]
        .as_str()
        .unwrap_or(SCRUB)
        .chars()
        .take(64)
        .collect();
    note(&slot, "job.start", asked);
    if let Err(e) = admin_writer(&principal, "start admin jobs") {
        return e.into_response();
    }
    let (kind, params) = match start_request(&body, app.scrub_rate) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let who = principal.user.clone().unwrap_or_default();
    match app.jobs.start(kind, &params, &who).await {
        Ok(job) => {
            note(&slot, "job.start", named(&job));
            view(job, StatusCode::ACCEPTED)
        }
        Err(e) => job_error(e),
    }
}

/// Runs a job of `kind` and answers its report once it has ended (`POST /admin/scrub` and
/// `/admin/prune`, whose callers wait for the report); 409 while a job holding the same right
/// runs.
pub(super) async fn run_and_report(
    app: &App,
    kind: &str,
    params: &impl Serialize,
    who: &str,
) -> Response {
    match app.jobs.run(kind, params, who).await {
        Ok(done) if done.job.state == "done" => {
            (StatusCode::OK, Json(done.result.unwrap_or(Value::Null))).into_response()
        }
        Ok(done) => Error::Internal(format!(
            "{} job {} {}: {}",
            done.job.kind,
            done.job.id,
            done.job.state,
            done.job.error.unwrap_or_default()
        ))
        .into_response(),
        Err(e) => job_error(e),
    }
}

/// `POST /admin/jobs/ID/cancel`: the job stops at its next step.
pub async fn cancel(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    note(&slot, "job.cancel", id.chars().take(64).collect());
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
        Ok(job) => {
            note(&slot, "job.cancel", named(&job));
            view(job, StatusCode::OK)
        }
        Err(e) => job_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_body_names_a_kind_and_its_params() {
        let (kind, p) = start_request(&json!({}), 7).unwrap();
        assert_eq!((kind, p), (SCRUB, json!({"rate_bytes_per_sec": 7})));
        let (kind, p) = start_request(&json!({"kind": "scrub", "rate": "1KiB"}), 7).unwrap();
        assert_eq!(
            (kind, p["rate_bytes_per_sec"].clone()),
            (SCRUB, json!(1024))
        );
        let (kind, p) = start_request(&json!({"kind": "gc"}), 7).unwrap();
        assert_eq!((kind, p), (GC, json!({"dry_run": false, "delete_rate": 0})));
        let body = json!({"kind": "prune", "dry_run": true, "delete_rate": 50});
        let (kind, p) = start_request(&body, 7).unwrap();
        assert_eq!(
            (kind, p),
            (PRUNE, json!({"dry_run": true, "delete_rate": 50}))
        );
        for bad in [
            json!({"kind": "defrag"}),
            json!({"kind": "gc", "dry_run": "yes"}),
            json!({"kind": "prune", "delete_rate": -1}),
            json!({"kind": "scrub", "rate": 5}),
            json!({"kind": "scrub", "rate": "fast"}),
        ] {
            assert!(start_request(&bad, 7).is_err(), "{bad}");
        }
    }
}
