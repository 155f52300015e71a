//! `GET /admin/notifications[?state=pending|delivered|failed|skipped]`: the notification outbox
//! for `hpc-registry admin notifications` (admin-only, audited as `notification.list`). Rows
//! carry the image, the channel, the recipient user, attempts and the last error (never a
//! secret); the work is `crate::notifications::list`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::auth::{query_map, AuditSlot};
use super::storage_admin::admin_reader;
use super::App;
use crate::auth::Principal;
use crate::meta::OutboxState;
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
