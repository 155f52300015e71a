//! `POST /admin/reload`: re-reads the configuration ([`crate::reload`]); admins with a
//! read-write credential only. 200 with what was applied, 422 with the reason it was refused.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::storage_admin::admin_writer;
use super::App;
use crate::auth::Principal;
use crate::registry::error::Error;

pub async fn reload(State(app): State<Arc<App>>, principal: Principal) -> Response {
    if let Err(e) = admin_writer(&principal, "reload the configuration") {
        return e.into_response();
    }
    let who = principal.user.clone().unwrap_or_default();
    let reloader = Arc::clone(&app.reloader);
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(outcome)) => {
            tracing::info!(user = %who, "reload requested through the admin API");
            outcome.log();
            (StatusCode::OK, Json(json!(outcome))).into_response()
        }
        Ok(Err(refused)) => {
            tracing::error!(user = %who, "reload: {refused}");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"errors": [{"code": "CONFIG_INVALID", "message": refused.to_string(), "detail": null}]})),
            )
                .into_response()
        }
        Err(e) => Error::Internal(e.to_string()).into_response(),
    }
}
