//! The admin pages: overview with live counters, users and groups, usage and quotas, the build
//! queue (retry and cancel, the same operations as `admin builds`), and audit search with the
//! filters of `admin audit`. Admins only; read-only admin credentials only look.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::guard::{Posted, Viewer};
use super::tokens::{manage_status, run_op};
use super::views;
use crate::audit::query::Params;
use crate::auth::manage::{GroupInfo, MemberInfo, Op, UserInfo};
use crate::farm::queue::{self, JobSummary, QueueError};
use crate::http::App;
use crate::meta::{self, JobState};

/// Audit records one search shows unless asked for fewer.
const AUDIT_PAGE: i64 = 200;

/// An admin page's query string, strictly decoded (as every other route's); a non-admin is
/// refused first.
fn admin_query(viewer: &Viewer, uri: &Uri) -> Result<HashMap<String, String>, Response> {
    if let Some(r) = refuse(viewer) {
        return Err(r);
    }
    crate::http::auth::query_map(uri)
        .map_err(|e| views::error_page(StatusCode::BAD_REQUEST, &e.to_string()))
}

fn refuse(viewer: &Viewer) -> Option<Response> {
    (!viewer.principal.admin).then(|| {
        views::error_page(
            StatusCode::FORBIDDEN,
            "only administrators may see the admin pages",
        )
    })
}

/// Activity over a window, from the audit index and the build queue (real records, not
/// estimates).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    pub pushes: i64,
    pub fetches: i64,
    pub builds_ready: i64,
    pub builds_failed: i64,
}

/// The overview's numbers: the last hour, the last 24 hours, the queue now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub last_hour: Activity,
    pub last_day: Activity,
    /// Jobs per state now.
    pub queue: Vec<(String, i64)>,
    pub sessions: usize,
}

fn activity(actions: &[(String, i64)], builds: &[(String, i64)]) -> Activity {
    let count = |names: &[&str]| -> i64 {
        actions
            .iter()
            .filter(|(a, _)| names.contains(&a.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let built = |state: &str| -> i64 {
        builds
            .iter()
            .filter(|(s, _)| s == state)
            .map(|(_, n)| n)
            .sum()
    };
    Activity {
        pushes: count(&["manifest.push", "tag.push"]),
        fetches: count(&["manifest.pull", "sif.fetch"]),
        builds_ready: built("ready"),
        builds_failed: built("failed"),
    }
}

/// Reads the counters (the audit queue is flushed first, so what happened is counted).
pub async fn counters(app: &Arc<App>, sessions: usize) -> meta::Result<Counters> {
    app.audit.flush().await;
    let now_ms = crate::audit::time::now_ms();
    let now = meta::now();
    let (hour, day, queue) = app
        .registry
        .db
        .read(move |c| {
            let hour = (
                meta::audit_action_counts(c, now_ms - 3_600_000)?,
                meta::finished_builds(c, now - 3600)?,
            );
            let day = (
                meta::audit_action_counts(c, now_ms - 86_400_000)?,
                meta::finished_builds(c, now - 86_400)?,
            );
            Ok((hour, day, meta::build_job_counts(c)?))
        })
        .await?;
    Ok(Counters {
        last_hour: activity(&hour.0, &hour.1),
        last_day: activity(&day.0, &day.1),
        queue,
        sessions,
    })
}

/// `GET /ui/admin/`: counters (live), links to the other pages.
pub async fn overview(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    if let Some(r) = refuse(&viewer) {
        return r;
    }
    match counters(&app, viewer.ui.sessions.count()).await {
        Ok(c) => views::respond(StatusCode::OK, views::admin::overview(&viewer.nav(), &c)),
        Err(e) => views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /ui/api/counters`: the overview's numbers as JSON (ui.js polls it).
pub async fn counters_json(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    if !viewer.principal.admin {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "administrators only"})),
        )
            .into_response();
    }
    match counters(&app, viewer.ui.sessions.count()).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /ui/admin/users`: users, groups and their members.
pub async fn users(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    if let Some(r) = refuse(&viewer) {
        return r;
    }
    let load = async {
        let users: Vec<UserInfo> = decode(run_op(&app, &viewer, None, Op::ListUsers).await?)?;
        let groups: Vec<GroupInfo> = decode(run_op(&app, &viewer, None, Op::ListGroups).await?)?;
        let mut members = Vec::with_capacity(groups.len());
        for g in &groups {
            let op = Op::GroupMembers {
                group: g.name.clone(),
            };
            let m: Vec<MemberInfo> = decode(run_op(&app, &viewer, None, op).await?)?;
            members.push(m);
        }
        Ok::<_, crate::auth::manage::ManageError>((users, groups, members))
    };
    match load.await {
        Ok((users, groups, members)) => views::respond(
            StatusCode::OK,
            views::admin::users(&viewer.nav(), &users, &groups, &members),
        ),
        Err(e) => views::error_page(manage_status(&e), &e.to_string()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> Result<T, crate::auth::manage::ManageError> {
    serde_json::from_value(v)
        .map_err(|e| crate::auth::manage::ManageError::Invalid(format!("unexpected answer: {e}")))
}

/// `GET /ui/admin/usage`: every namespace's usage against its quota.
pub async fn usage(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    if let Some(r) = refuse(&viewer) {
        return r;
    }
    match app.quotas.usage(None).await {
        Ok(reports) => views::respond(StatusCode::OK, views::admin::usage(&viewer.nav(), &reports)),
        Err(e) => views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /ui/admin/builds[?state=…]`: the build queue.
pub async fn builds(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> Response {
    let q = match admin_query(&viewer, &uri) {
        Ok(q) => q,
        Err(r) => return r,
    };
    builds_page(&app, &viewer, q.get("state").map(String::as_str), None).await
}

async fn builds_page(
    app: &Arc<App>,
    viewer: &Viewer,
    state: Option<&str>,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let state = state.filter(|s| !s.is_empty());
    let filter = match state.map(JobState::from_name) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => {
            return views::error_page(
                StatusCode::BAD_REQUEST,
                "state: one of queued, building, ready, failed",
            )
        }
    };
    let (status, message) = notice.unzip();
    match queue::list(&app.farm, filter).await {
        Ok(jobs) => views::respond(
            status.unwrap_or(StatusCode::OK),
            views::admin::builds(&viewer.nav(), &jobs, state, message.as_deref()),
        ),
        Err(e) => views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /ui/admin/builds/act`: `id` and `action` (`retry`|`cancel`), audited as
/// `build.retry`/`build.cancel` like `/admin/builds`.
pub async fn build_action(State(app): State<Arc<App>>, posted: Posted) -> Response {
    let slot = posted.viewer.slot.clone();
    let viewer = &posted.viewer;
    if let Some(r) = refuse(viewer) {
        return r;
    }
    let Ok(id) = posted.field("id").parse::<i64>() else {
        return views::error_page(StatusCode::BAD_REQUEST, "id: a build job number");
    };
    let audit_action = match posted.field("action") {
        "retry" => "build.retry",
        "cancel" => "build.cancel",
        _ => return views::error_page(StatusCode::BAD_REQUEST, "action: retry or cancel"),
    };
    if let Some(slot) = &slot {
        slot.note(audit_action, Some(format!("job {id}")));
    }
    if viewer.principal.read_only {
        return views::error_page(
            StatusCode::FORBIDDEN,
            "this session's token is read-only: log in with a password or a read-write token",
        );
    }
    let by = viewer.user().to_owned();
    let done: Result<JobSummary, QueueError> = match audit_action {
        "build.retry" => queue::retry(&app.farm, id).await,
        _ => queue::cancel(&app.farm, id, &by).await,
    };
    let notice = match done {
        Ok(j) => (
            StatusCode::OK,
            format!("job {} is {} now", j.id, j.status.state),
        ),
        Err(e @ QueueError::NotFound(_)) => (StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ QueueError::WrongState { .. }) => (StatusCode::CONFLICT, e.to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let state = posted.fields.get("state").cloned();
    builds_page(&app, viewer, state.as_deref(), Some(notice)).await
}

/// `GET /ui/admin/audit?user=&repo=&action=&since=&until=&limit=`: as `admin audit`.
pub async fn audit(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> Response {
    let q = match admin_query(&viewer, &uri) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let field = |k: &str| q.get(k).cloned().filter(|v| !v.is_empty());
    let params = Params {
        user: field("user"),
        repo: field("repo"),
        action: field("action"),
        since: field("since").or_else(|| Some("24h".into())),
        until: field("until"),
        limit: field("limit").or_else(|| Some(AUDIT_PAGE.to_string())),
    };
    let filter = match params.to_filter(crate::audit::time::now_ms()) {
        Ok(f) => f,
        Err(e) => {
            return views::respond(
                StatusCode::BAD_REQUEST,
                views::admin::audit(&viewer.nav(), &params, &[], Some(&e)),
            )
        }
    };
    app.audit.flush().await;
    let (db, file) = (Arc::clone(app.access.db()), app.audit.path().to_path_buf());
    match tokio::task::spawn_blocking(move || crate::audit::query::run(&file, &db, &filter)).await {
        Ok(Ok(mut records)) => {
            records.reverse();
            views::respond(
                StatusCode::OK,
                views::admin::audit(&viewer.nav(), &params, &records, None),
            )
        }
        Ok(Err(e)) => views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
