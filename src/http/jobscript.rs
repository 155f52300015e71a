//! `GET /api/jobscript/templates`: the site's batch-script templates (`[[ui.templates]]`), for
//! `hpc-registry script` on a login node. Any caller the registry lets in may read them (they
//! are the site's resource shapes, no user's data); where authentication is required, an
//! anonymous caller is asked for it.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::App;
use crate::auth::{Action, Principal};

pub async fn templates(State(app): State<Arc<App>>, principal: Principal) -> Response {
    if let Err(e) = app.access.check(&principal, None, Action::Pull) {
        return e.into_response();
    }
    Json(serde_json::json!({ "templates": &*app.templates.current() })).into_response()
}
