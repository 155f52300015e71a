//! `/ui/tokens`: the caller's access tokens: list, create (scope, expiry; the secret shown
//! once), revoke. The operations are `auth::manage`'s, as for `hpc-registry token` and the
//! admin API, and audited the same way.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::guard::{Posted, Viewer};
use super::views;
use crate::auth::manage::{self, Caller, CreatedToken, ManageError, Op, TokenInfo};
use crate::auth::pat::TokenScope;
use crate::http::auth::AuditSlot;
use crate::http::App;

/// Runs a management operation as the viewer (the audit slot names it, as the admin API's).
pub async fn run_op(
    app: &Arc<App>,
    viewer: &Viewer,
    slot: Option<&AuditSlot>,
    op: Op,
) -> Result<serde_json::Value, ManageError> {
    if let Some(slot) = slot {
        if op.writes() {
            let (action, reference) = crate::audit::ops::describe(&op);
            slot.note(action, reference);
        }
    }
    let db = Arc::clone(app.access.db());
    let principal = viewer.principal.clone();
    tokio::task::spawn_blocking(move || manage::execute(&db, &Caller::Remote(&principal), op))
        .await
        .map_err(|e| ManageError::Invalid(format!("management task failed: {e}")))?
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ManageError> {
    serde_json::from_value(v).map_err(|e| ManageError::Invalid(format!("unexpected answer: {e}")))
}

/// The status a management error answers with.
pub fn manage_status(e: &ManageError) -> StatusCode {
    match e {
        ManageError::NotFound(_) => StatusCode::NOT_FOUND,
        ManageError::Conflict(_) => StatusCode::CONFLICT,
        ManageError::Invalid(_) => StatusCode::BAD_REQUEST,
        ManageError::Forbidden(_) => StatusCode::FORBIDDEN,
        ManageError::Meta(_) | ManageError::Auth(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn render(
    app: &Arc<App>,
    viewer: &Viewer,
    status: StatusCode,
    created: Option<&CreatedToken>,
    error: Option<&str>,
) -> Response {
    let listed = run_op(app, viewer, None, Op::ListTokens { user: None })
        .await
        .and_then(decode::<Vec<TokenInfo>>);
    match listed {
        Ok(tokens) => views::respond(
            status,
            views::tokens::tokens(&viewer.nav(), &tokens, created, error),
        ),
        Err(e) => views::error_page(manage_status(&e), &e.to_string()),
    }
}

/// `GET /ui/tokens`.
pub async fn page(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    render(&app, &viewer, StatusCode::OK, None, None).await
}

/// `POST /ui/tokens`: `description`, `scope` (`read`|`read-write`), `expires_days` (0: never).
pub async fn create(State(app): State<Arc<App>>, posted: Posted) -> Response {
    let slot = posted.viewer.slot.clone();
    let scope = match TokenScope::parse(posted.field("scope")) {
        Some(s) => s,
        None => {
            let e = "choose a scope: read or read-write";
            return render(&app, &posted.viewer, StatusCode::BAD_REQUEST, None, Some(e)).await;
        }
    };
    let expires_days = match posted.field("expires_days").trim() {
        "" => None,
        d => match d.parse::<u32>() {
            Ok(n) if n <= 3650 => Some(n),
            _ => {
                let e = "expiry: a number of days from 0 (never) to 3650";
                return render(&app, &posted.viewer, StatusCode::BAD_REQUEST, None, Some(e)).await;
            }
        },
    };
    let op = Op::CreateToken {
        user: None,
        scope,
        expires_days,
        description: posted.field("description").trim().to_owned(),
    };
    match run_op(&app, &posted.viewer, slot.as_ref(), op)
        .await
        .and_then(decode::<CreatedToken>)
    {
        Ok(created) => {
            if let Some(slot) = &slot {
                slot.note("token.create", Some(created.info.id.clone()));
            }
            render(&app, &posted.viewer, StatusCode::OK, Some(&created), None).await
        }
        Err(e) => {
            let status = manage_status(&e);
            render(&app, &posted.viewer, status, None, Some(&e.to_string())).await
        }
    }
}

/// `POST /ui/tokens/revoke`: `id`.
pub async fn revoke(State(app): State<Arc<App>>, posted: Posted) -> Response {
    let slot = posted.viewer.slot.clone();
    let op = Op::RevokeToken {
        id: posted.field("id").to_owned(),
    };
    match run_op(&app, &posted.viewer, slot.as_ref(), op).await {
        Ok(_) => render(&app, &posted.viewer, StatusCode::OK, None, None).await,
        Err(e) => {
            let status = manage_status(&e);
            render(&app, &posted.viewer, status, None, Some(&e.to_string())).await
        }
    }
}
