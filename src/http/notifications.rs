//! `GET /admin/notifications[?state=pending|delivered|failed|skipped]`: the notification outbox
//! for `hpc-registry admin notifications` (admin-only, audited as `notification.list`). Rows
//! carry the image, the channel, the recipient user, attempts and the last error (never a
//! secret); the work is `crate::notifications::list`.
//!
//! `POST /admin/notifications/{id}/retry`: a failed or skipped row queued again (admin with a
//! read-write credential, audited as `notification.retry`); `crate::notifications::retry`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::auth::{query_map, AuditSlot};
use super::errors::admin_error;
use super::storage_admin::{admin_reader, admin_writer};
use super::App;
use crate::auth::Principal;
use crate::meta::{OutboxState, Retried};
use crate::registry::error::Error;

/// Rows one listing returns at most.
const LIMIT: i64 = 1000;

pub async fn list(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Option<Extension<AuditSlot>>,
    uri: Uri,
) -> Response {
    if let Some(Extension(slot)) = &slot {
        slot.note("notification.list", None);
    }
    if let Err(e) = admin_reader(&principal, "list notifications") {
        return e.into_response();
    }
    let state = match query_map(&uri).map(|mut q| q.remove("state")) {
        Ok(None) => None,
        Ok(Some(s)) => match OutboxState::from_name(&s) {
            Some(state) => Some(state),
            None => {
                return Error::QueryInvalid(format!(
                    "state {s:?} is not one of pending, delivered, failed, skipped"
                ))
                .into_response()
            }
        },
        Err(e) => return e.into_response(),
    };
    match crate::notifications::list(&app.farm, state, LIMIT).await {
        Ok(rows) => Json(json!({ "notifications": rows })).into_response(),
        Err(e) => Error::Internal(e.to_string()).into_response(),
    }
}

pub async fn retry(
    State(app): State<Arc<App>>,
    principal: Principal,
    slot: Option<Extension<AuditSlot>>,
    Path(id): Path<String>,
) -> Response {
    if let Some(Extension(slot)) = &slot {
        slot.note("notification.retry", Some(id.chars().take(32).collect()));
    }
    if let Err(e) = admin_writer(&principal, "send a notification again") {
        return e.into_response();
    }
    let Ok(id) = id.parse::<i64>() else {
        return Error::QueryInvalid(format!(
            "{id:?} is not a notification id (the ID column of `admin notifications`)"
        ))
        .into_response();
    };
    match crate::notifications::retry(&app.farm, id).await {
        Ok(Retried::Requeued(row)) => Json(json!({ "notification": row })).into_response(),
        Ok(Retried::NoSuchRow) => admin_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no notification {id} in the outbox"),
        ),
        Ok(Retried::NotRetryable(state)) => {
            let why = match state.as_str() {
                "pending" => "it is still being delivered",
                "delivered" => "it was delivered (sending it again would deliver it twice)",
                _ => "only failed and skipped notifications are sent again",
            };
            admin_error(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("notification {id} is {state}: {why}"),
            )
        }
        Err(e) => Error::Internal(e.to_string()).into_response(),
    }
}
