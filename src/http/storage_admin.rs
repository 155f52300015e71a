//! `/admin/usage`, `/admin/quotas[/NAMESPACE]` and `/admin/scrub`: storage accounting and
//! integrity for the `hpc-registry admin usage|quota|scrub` commands. Handlers only authorise
//! and translate; the work is in [`crate::quota`] and [`crate::lifecycle::scrub`].
//!
//! Who may do what: admins everything; a user may read the usage and quota of their own
//! namespace and of their groups'. Changing quotas and scrubbing need an admin credential that
//! is not read-only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::query_map;
use super::App;
use crate::auth::{AuthMethod, Principal};
use crate::quota::parse_size;
use crate::registry::error::Error;
use crate::registry::names::RepositoryName;

/// The caller must have logged in the way the admin API accepts.
pub(super) fn authenticated(p: &Principal) -> Result<(), Error> {
    if !p.is_authenticated() {
        return Err(Error::Unauthorized(
            "the admin API needs a user name and password or access token".into(),
        ));
    }
    if !matches!(p.method, AuthMethod::Password | AuthMethod::AccessToken) {
        return Err(Error::Denied(
            "the admin API takes a password or an access token, not a bearer or MUNGE credential"
                .into(),
        ));
    }
    Ok(())
}

/// An admin credential that may read: `what` completes "only administrators may …".
pub(super) fn admin_reader(p: &Principal, what: &str) -> Result<(), Error> {
    authenticated(p)?;
    if !p.admin {
        return Err(Error::Denied(format!("only administrators may {what}")));
    }
    Ok(())
}

/// An admin credential that may change things.
pub(super) fn admin_writer(p: &Principal, what: &str) -> Result<(), Error> {
    admin_reader(p, what)?;
    if p.read_only {
        return Err(Error::Denied(format!(
            "this credential is read-only; {what} needs a read-write one"
        )));
    }
    Ok(())
}

/// Whether `p` may see `namespace`'s usage: admins, its user, members of its group.
fn may_read_namespace(p: &Principal, namespace: &str) -> bool {
    p.admin || p.user.as_deref() == Some(namespace) || p.groups.iter().any(|g| g.group == namespace)
}

/// A namespace is the first component of a repository name and obeys the same rules.
fn parse_namespace(s: &str) -> Result<String, Error> {
    match RepositoryName::parse(s) {
        Ok(r) if r.namespace() == s => Ok(s.to_owned()),
        _ => Err(Error::NameInvalid(format!(
            "{s:?} is not a namespace: one lower-case path component such as a user or group name"
        ))),
    }
}

/// `GET /admin/usage[?namespace=NS]`: admins see every namespace, others their own.
pub async fn usage(State(app): State<Arc<App>>, principal: Principal, uri: Uri) -> Response {
    let result = async {
        authenticated(&principal)?;
        let namespace = match query_map(&uri)?.remove("namespace") {
            Some(ns) => Some(parse_namespace(&ns)?),
            None => None,
        };
        if let Some(ns) = &namespace {
            if !may_read_namespace(&principal, ns) {
                return Err(Error::Denied(format!(
                    "you may see the usage of your own namespaces only, not {ns}"
                )));
            }
        }
        // Admins may ask for everything at once; anyone else gets exactly their own namespaces,
        // each with its own (indexed) query rather than a filtered registry-wide one.
        let wanted: Option<Vec<String>> = match (namespace, principal.admin) {
            (Some(ns), _) => Some(vec![ns]),
            (None, true) => None,
            (None, false) => Some(
                principal
                    .user
                    .iter()
                    .cloned()
                    .chain(principal.groups.iter().map(|g| g.group.clone()))
                    .collect(),
            ),
        };
        let reports = app.quotas.usage(wanted).await?;
        Ok(json!({ "namespaces": reports }))
    }
    .await;
    reply(result)
}

/// `GET /admin/quotas`: the admin-set overrides and the configured defaults.
pub async fn list_quotas(State(app): State<Arc<App>>, principal: Principal) -> Response {
    let result = async {
        authenticated(&principal)?;
        if !principal.admin {
            return Err(Error::Denied(
                "only administrators may list quotas; ask for your own with GET /admin/quotas/NAMESPACE".into(),
            ));
        }
        let rows = app.quotas.overrides().await?;
        let d = app.quotas.defaults();
        Ok(json!({
            "overrides": rows,
            "default_user_bytes": d.user,
            "default_group_bytes": d.group,
        }))
    }
    .await;
    reply(result)
}

/// `GET /admin/quotas/NAMESPACE`: limit (and where it comes from) with the current usage.
pub async fn get_quota(
    State(app): State<Arc<App>>,
    principal: Principal,
    Path(namespace): Path<String>,
) -> Response {
    let result = async {
        authenticated(&principal)?;
        let ns = parse_namespace(&namespace)?;
        if !may_read_namespace(&principal, &ns) {
            return Err(Error::Denied(format!(
                "you may see the quota of your own namespaces only, not {ns}"
            )));
        }
        quota_of(&app, ns).await
    }
    .await;
    reply(result)
}

async fn quota_of(app: &App, ns: String) -> Result<Value, Error> {
    let report = app
        .quotas
        .report(ns)
        .await?
        .ok_or_else(|| Error::Internal("usage report of a namespace came back empty".into()))?;
    serde_json::to_value(report).map_err(|e| Error::Internal(e.to_string()))
}

/// `PUT /admin/quotas/NAMESPACE` with `{"limit": "50GiB"}` (or `"unlimited"`): takes effect for
/// the next commit in that namespace. Usage above a new, lower limit stays; new pushes are refused.
pub async fn set_quota(
    State(app): State<Arc<App>>,
    principal: Principal,
    Path(namespace): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        admin_writer(&principal, "change quotas")?;
        let ns = parse_namespace(&namespace)?;
        let body: Value = serde_json::from_slice(&body).map_err(|e| {
            Error::SizeInvalid(format!(
                "the body must be JSON like {{\"limit\": \"50GiB\"}}: {e}"
            ))
        })?;
        let limit = match body.get("limit") {
            Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => None,
            Some(Value::String(s)) => {
                Some(parse_size(s).map_err(|e| Error::SizeInvalid(e.to_string()))?)
            }
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                Error::SizeInvalid(format!("limit {n} is not a whole number of bytes"))
            })?),
            _ => {
                return Err(Error::SizeInvalid(
                    "the body must name the limit: {\"limit\": \"50GiB\"} or {\"limit\": \"unlimited\"}".into(),
                ))
            }
        };
        let limit = limit
            .map(i64::try_from)
            .transpose()
            .map_err(|_| Error::SizeInvalid("limit is too large".into()))?;
        let who = principal.user.clone().unwrap_or_default();
        app.quotas.set(ns.clone(), limit, who.clone()).await?;
        tracing::info!(user = %who, namespace = %ns, limit = ?limit, "quota set");
        quota_of(&app, ns).await
    }
    .await;
    reply(result)
}

/// `DELETE /admin/quotas/NAMESPACE`: back to the configured default.
pub async fn clear_quota(
    State(app): State<Arc<App>>,
    principal: Principal,
    Path(namespace): Path<String>,
) -> Response {
    let result = async {
        admin_writer(&principal, "change quotas")?;
        let ns = parse_namespace(&namespace)?;
        let cleared = app.quotas.clear(ns.clone()).await?;
        let who = principal.user.clone().unwrap_or_default();
        tracing::info!(user = %who, namespace = %ns, cleared, "quota override cleared");
        let mut v = quota_of(&app, ns).await?;
        v["cleared"] = cleared.into();
        Ok(v)
    }
    .await;
    reply(result)
}

/// `POST /admin/scrub[?rate=200MiB]`: re-hashes the whole store and answers with the report when
/// done. It runs as a background job ([`crate::admin_jobs`]) this request waits for; `admin
/// scrub` starts the job and polls it instead (`/admin/jobs`). One scrub at a time: 409.
pub async fn scrub(State(app): State<Arc<App>>, principal: Principal, uri: Uri) -> Response {
    let rate = async {
        admin_writer(&principal, "scrub the store")?;
        match query_map(&uri)?.remove("rate") {
            Some(r) => parse_size(&r).map_err(|e| Error::SizeInvalid(format!("rate: {e}"))),
            None => Ok(app.scrub_rate),
        }
    }
    .await;
    let rate = match rate {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let who = principal.user.clone().unwrap_or_default();
    tracing::info!(user = %who, rate, "scrub started");
    let params = crate::admin_jobs::ScrubParams {
        rate_bytes_per_sec: rate,
    };
    super::jobs::run_and_report(&app, crate::admin_jobs::SCRUB, &params, &who).await
}

fn reply(result: Result<Value, Error>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}
