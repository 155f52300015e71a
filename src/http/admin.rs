//! `/admin/...`: the management API the `hpc-registry user|group|token` commands use against a
//! running server. Every operation is admin-only, except that users may change their own password
//! and manage their own access tokens. The operations themselves live in
//! [`crate::auth::manage`], shared with the offline CLI.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::admin_ops::OpRoute;
use super::auth::{query_map, AuditSlot};
use super::App;
use crate::audit::event::Event;
use crate::auth::manage::{self, Caller, ManageError, Op};
use crate::auth::{AuthMethod, Principal};
use crate::registry::error::Error;

/// Largest request body (an htpasswd file of a few thousand users fits).
const MAX_BODY: usize = 4 << 20;

/// In front of every `/admin` route: a read-only credential (read-only access token) may only
/// look (`GET`, `HEAD`). One rule by method, so that no route that changes something, today's or
/// a future one, can forget the check (a read-only admin token once deleted repositories).
pub async fn read_only_guard(principal: Principal, req: Request, next: Next) -> Response {
    if principal.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
        tracing::info!(
            user = principal.user.as_deref().unwrap_or("-"),
            method = %req.method(),
            path = req.uri().path(),
            "admin operation refused: read-only credential"
        );
        return error(ManageError::Forbidden(format!(
            "this credential is read-only: {} {} needs a password or a read-write access token",
            req.method(),
            req.uri().path()
        )));
    }
    next.run(req).await
}

/// The audit event of an `/admin` request no handler named. The store-maintenance routes
/// (prune, usage, quotas, scrub, repository deletes) are audited by their route: their action
/// and object follow from the method and path alone, refused or not; so are starting and
/// cancelling jobs when refused before their handler named them (a read-only credential's
/// attempt, by [`read_only_guard`]). Any other request that reached no handler naming it
/// (refused by [`read_only_guard`] or before its operation was known, or on no route) is an
/// `admin.request`.
pub fn route_event(method: &Method, path: &str) -> Event {
    let rest = path.trim_start_matches("/admin/");
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let tail: String = tail.chars().take(256).collect();
    let (action, repository, reference) = match (first, method) {
        ("repositories", &Method::DELETE) => ("repository.delete", Some(tail), None),
        ("quotas", &Method::PUT) if !tail.is_empty() => ("quota.set", None, Some(tail)),
        ("quotas", &Method::DELETE) if !tail.is_empty() => ("quota.delete", None, Some(tail)),
        ("prune", _) => ("admin.prune", None, None),
        ("usage", _) => ("admin.usage", None, None),
        ("quotas", _) => ("admin.quotas", None, None),
        ("scrub", _) => ("admin.scrub", None, None),
        ("jobs", &Method::POST) if tail.is_empty() => ("job.start", None, None),
        ("jobs", &Method::POST) => ("job.cancel", None, Some(tail)),
        _ => ("admin.request", None, None),
    };
    Event::Admin {
        action: action.to_owned(),
        repository,
        reference,
    }
}

pub async fn dispatch(State(app): State<Arc<App>>, principal: Principal, req: Request) -> Response {
    if !principal.is_authenticated() {
        return Error::Unauthorized(
            "the admin API needs a user name and password or access token".into(),
        )
        .into_response();
    }
    if !matches!(
        principal.method,
        AuthMethod::Password | AuthMethod::AccessToken
    ) {
        return error(ManageError::Forbidden(
            "the admin API takes a password or an access token, not a bearer or MUNGE credential"
                .into(),
        ));
    }
    let slot = req.extensions().get::<AuditSlot>().cloned();
    if super::audit::is_api(req.uri().path()) {
        return super::audit::api(&app, &principal, req.method(), req.uri(), slot.as_ref()).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error(ManageError::Invalid(format!(
                "cannot read the request body: {e}"
            )))
        }
    };
    let user = match query_map(&parts.uri) {
        Ok(mut q) => q.remove("user"),
        Err(e) => return error(ManageError::Invalid(e.to_string())),
    };
    let op = match Op::from_http(&parts.method, parts.uri.path(), user, &body) {
        Ok(Some(op)) => op,
        Ok(None) => {
            return error(ManageError::NotFound(format!(
                "no admin operation {} {}",
                parts.method,
                parts.uri.path()
            )))
        }
        Err(e) => return error(e),
    };
    let name = op.name();
    // Remembered password verifications of a user whose password changes or who goes.
    let changed_user = match &op {
        Op::SetPassword { name, .. } | Op::DeleteUser { name } => Some(name.clone()),
        _ => None,
    };
    if let Some(slot) = &slot {
        let (action, reference) = crate::audit::ops::describe(&op);
        slot.note(action, reference);
    }
    let db = Arc::clone(app.access.db());
    let who = principal.user.clone().unwrap_or_default();
    let outcome =
        tokio::task::spawn_blocking(move || manage::execute(&db, &Caller::Remote(&principal), op))
            .await;
    if let Some(user) = &changed_user {
        // Whatever the outcome: dropping entries is always safe.
        app.access.forget_credentials(user);
    }
    match outcome {
        Ok(Ok(value)) => {
            // A new token is known by its id only now: the record names it (never the secret).
            if let (Some(slot), Some(id)) = (&slot, value.get("id").and_then(|v| v.as_str())) {
                if name == "create-token" {
                    slot.note("token.create", Some(id.to_owned()));
                }
            }
            if parts.method != Method::GET {
                tracing::info!(user = %who, op = name, "admin operation");
            }
            let status = if parts.method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(value)).into_response()
        }
        Ok(Err(e)) => {
            tracing::info!(user = %who, op = name, "admin operation refused: {e}");
            error(e)
        }
        Err(e) => Error::Internal(format!("admin task failed: {e}")).into_response(),
    }
}

fn error(e: ManageError) -> Response {
    let (status, code) = match &e {
        ManageError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ManageError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
        ManageError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID"),
        ManageError::Forbidden(_) => (StatusCode::FORBIDDEN, "DENIED"),
        ManageError::Meta(_) | ManageError::Auth(_) => {
            return Error::Internal(e.to_string()).into_response();
        }
    };
    let body =
        serde_json::json!({"errors": [{"code": code, "message": e.to_string(), "detail": null}]});
    (status, axum::Json(body)).into_response()
}

/// The lifecycle routes are admin-only, with a password or an access token (like the rest of
/// the admin API); `Some` is the response refusing the caller.
fn refuse_non_admin(principal: &Principal) -> Option<Response> {
    if !principal.is_authenticated() {
        return Some(
            Error::Unauthorized(
                "the admin API needs a user name and password or access token".into(),
            )
            .into_response(),
        );
    }
    if !matches!(
        principal.method,
        AuthMethod::Password | AuthMethod::AccessToken
    ) {
        return Some(error(ManageError::Forbidden(
            "the admin API takes a password or an access token, not a bearer or MUNGE credential"
                .into(),
        )));
    }
    if !principal.admin {
        return Some(error(ManageError::Forbidden(
            "only administrators may prune or delete repositories".into(),
        )));
    }
    None
}

/// `POST /admin/prune[?dry_run=true]`: runs (or, dry, plans) a prune as a background job
/// ([`crate::admin_jobs`]) this request waits for; answers its report. 409 while a GC or prune
/// runs (the scheduled one included). `admin prune` starts the job and polls it instead.
pub async fn prune(State(app): State<Arc<App>>, principal: Principal, req: Request) -> Response {
    if let Some(refused) = refuse_non_admin(&principal) {
        return refused;
    }
    if req.method() != Method::POST {
        return error(ManageError::NotFound(format!(
            "no admin operation {} /admin/prune (use POST)",
            req.method()
        )));
    }
    let query = match query_map(req.uri()) {
        Ok(q) => q,
        Err(e) => return error(ManageError::Invalid(e.to_string())),
    };
    let dry_run = match query.get("dry_run").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return error(ManageError::Invalid(format!(
                "dry_run={other:?}: use true or false"
            )))
        }
    };
    let who = principal.user.clone().unwrap_or_default();
    tracing::info!(user = %who, dry_run, "admin operation: prune");
    let params = crate::admin_jobs::GcParams {
        dry_run,
        delete_rate: 0,
    };
    super::jobs::run_and_report(&app, crate::admin_jobs::PRUNE, &params, &who).await
}

/// `DELETE /admin/repositories/<name>`: removes a repository (tags, manifests, links); its bytes
/// go at the first prune after the grace period.
pub async fn delete_repository(
    State(app): State<Arc<App>>,
    principal: Principal,
    req: Request,
) -> Response {
    if let Some(refused) = refuse_non_admin(&principal) {
        return refused;
    }
    if req.method() != Method::DELETE {
        return error(ManageError::NotFound(format!(
            "no admin operation {} {} (use DELETE)",
            req.method(),
            req.uri().path()
        )));
    }
    let raw = req
        .uri()
        .path()
        .strip_prefix("/admin/repositories/")
        .unwrap_or("");
    let name = match crate::registry::names::RepositoryName::parse(raw) {
        Ok(n) => n,
        Err(e) => return Error::from(e).into_response(),
    };
    let who = principal.user.clone().unwrap_or_default();
    match app
        .pruner
        .delete_repository(&app.registry, name.as_str())
        .await
    {
        Ok(deleted) => {
            tracing::info!(user = %who, repository = %name, "admin operation: repository delete");
            (StatusCode::OK, axum::Json(deleted)).into_response()
        }
        Err(crate::lifecycle::LifecycleError::NoSuchRepository(r)) => {
            Error::NameUnknown(format!("repository {r} does not exist")).into_response()
        }
        Err(e) => Error::Internal(format!("repository delete failed: {e}")).into_response(),
    }
}
