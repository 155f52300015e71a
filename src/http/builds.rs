//! `/admin/builds`: the build queue for `hpc-registry admin builds` (admin-only; every call
//! audited as `build.list|build.retry|build.cancel`; read-only credentials may only list, by
//! `admin::read_only_guard`). The operations are [`crate::farm::queue`]'s.
//!
//! - `GET /admin/builds[?state=queued|building|ready|failed]`
//! - `POST /admin/builds/{id}/retry`, `POST /admin/builds/retry-failed`
//! - `POST /admin/builds/{id}/cancel`

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::auth::{query_map, AuditSlot};
use super::storage_admin::admin_writer;
use super::App;
use crate::auth::Principal;
use crate::farm::queue::{self, QueueError};
use crate::meta::JobState;
use crate::registry::error::Error;

type Slot = Option<Extension<AuditSlot>>;

fn note(slot: &Slot, action: &str, reference: Option<String>) {
    if let Some(Extension(slot)) = slot {
        slot.note(action, reference);
    }
}

fn admin_reader(p: &Principal) -> Result<(), Error> {
    super::storage_admin::admin_reader(p, "list build jobs")
}

fn queue_error(e: QueueError) -> Response {
    match e {
        QueueError::NotFound(_) => Error::NameUnknown(e.to_string()).into_response(),
        QueueError::WrongState { .. } => {
            super::errors::admin_error(StatusCode::CONFLICT, "CONFLICT", e.to_string())
        }
        QueueError::Meta(e) => Error::Internal(e.to_string()).into_response(),
    }
}

fn answer<T: serde::Serialize>(result: Result<T, QueueError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => queue_error(e),
    }
}

/// `GET /admin/builds[?state=S]`.
pub async fn list(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    uri: Uri,
) -> Response {
    note(&slot, "build.list", None);
    if let Err(e) = admin_reader(&principal) {
        return e.into_response();
    }
    let state = match query_map(&uri).map(|mut q| q.remove("state")) {
        Ok(None) => None,
        Ok(Some(s)) => match JobState::from_name(&s) {
            Some(state) => Some(state),
            None => {
                return Error::QueryInvalid(format!(
                    "state {s:?} is not one of queued, building, ready, failed"
                ))
                .into_response()
            }
        },
        Err(e) => return e.into_response(),
    };
    answer(
        queue::list(&app.farm, state)
            .await
            .map(|jobs| json!({ "jobs": jobs })),
    )
}

/// `POST /admin/builds/{id}/retry|cancel`.
pub async fn act(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return Error::NameInvalid(format!("{id:?} is not a build job id")).into_response();
    };
    let (audit_action, what) = match action.as_str() {
        "retry" => ("build.retry", "retry builds"),
        "cancel" => ("build.cancel", "cancel builds"),
        _ => {
            return Error::NameUnknown(format!("no build job operation {action:?}")).into_response()
        }
    };
    note(&slot, audit_action, Some(format!("job {id}")));
    if let Err(e) = admin_writer(&principal, what) {
        return e.into_response();
    }
    let by = principal
        .user
        .clone()
        .unwrap_or_else(|| "an administrator".into());
    answer(match audit_action {
        "build.retry" => queue::retry(&app.farm, id).await,
        _ => queue::cancel(&app.farm, id, &by).await,
    })
}

/// `POST /admin/builds/retry-failed`.
pub async fn retry_failed(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Slot,
) -> Response {
    note(&slot, "build.retry", Some("every failed job".into()));
    if let Err(e) = admin_writer(&principal, "retry builds") {
        return e.into_response();
    }
    answer(
        queue::retry_failed(&app.farm)
            .await
            .map(|n| json!({ "retried": n })),
    )
}
