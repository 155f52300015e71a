//! The audit trail at the HTTP edge: the middleware that writes each finished request's
//! [`Event`]s down as records, and the admin-only `/admin/audit` API.
//!
//! Handlers say what a request did: they emit typed events into the request's [`AuditSlot`]
//! (authentication emits logins and their failures). This middleware only adds what every
//! request has — who and from where (the slot), when, the client's `User-Agent` and
//! `X-Slurm-Job-Id`, and the status — and queues the records, after the response is made.
//!
//! What is recorded (see README "Audit trail"): every authentication failure (429s included),
//! `auth.success` for `/token` and admin API logins (other requests carry `user` and `auth`
//! instead of a separate success record, which would double the log), manifest GET (`manifest.pull`)
//! and HEAD (`manifest.head`: containerd resolves a tag with HEAD, then GETs by digest), manifest
//! and tag pushes and deletes, blob deletes, SIF fetches (not the 202 "still building" polls),
//! and every admin API call. Blob downloads and upload chunks are not recorded: they are many,
//! and the manifest pull names what was read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{query_map, AuditContext, AuditSlot};
use super::App;
use crate::audit::event::{Event, RequestContext};
use crate::audit::{self, query::Params, Record};
use crate::auth::Principal;

/// The header a batch job sets to its `SLURM_JOB_ID`.
const SLURM_JOB_ID: &str = "x-slurm-job-id";
const MAX_USER_AGENT: usize = 256;
const MAX_JOB_ID: usize = 64;

/// What the middleware keeps of the request before the handler consumes it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: Method,
    pub path: String,
    pub user_agent: Option<String>,
    pub slurm_job_id: Option<String>,
}

impl RequestInfo {
    pub fn of(method: &Method, path: &str, headers: &HeaderMap) -> RequestInfo {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        RequestInfo {
            method: method.clone(),
            path: path.to_owned(),
            user_agent: text(header::USER_AGENT.as_str())
                .map(|u| u.chars().take(MAX_USER_AGENT).collect()),
            slurm_job_id: text(SLURM_JOB_ID)
                .map(str::trim)
                .filter(|j| {
                    !j.is_empty()
                        && j.len() <= MAX_JOB_ID
                        && j.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                })
                .map(str::to_owned),
        }
    }

    /// The record of `event` for this request, answered with `status`, by `ctx`'s caller.
    pub fn record(&self, event: &Event, status: u16, ctx: &AuditContext) -> Record {
        event.record(&RequestContext {
            method: self.method.as_str(),
            path: &self.path,
            status,
            principal: ctx.principal.as_ref(),
            client: ctx.client.map(|c| c.ip()),
            user_agent: self.user_agent.as_deref(),
            slurm_job_id: self.slurm_job_id.as_deref(),
        })
    }
}

/// `password`, `token`, `bearer`, `munge` or `other` for an Authorization header value.
#[cfg(test)]
fn scheme_of(value: &str) -> &'static str {
    crate::auth::Credential::kind(value)
}

/// Middleware: runs the request, then queues its audit records.
pub async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let info = RequestInfo::of(req.method(), req.uri().path(), req.headers());
    let slot = req.extensions().get::<AuditSlot>().cloned();
    let response = next.run(req).await;
    let panic = response
        .extensions()
        .get::<super::panic::Panicked>()
        .map(|p| p.0.clone());
    let status = response.status().as_u16();
    let ctx = slot.map(|s| s.get()).unwrap_or_default();
    for event in events(&info, panic, status, &ctx) {
        let r = info.record(&event, status, &ctx);
        if r.outcome == "ok" {
            app.audit.record(r).await;
        } else {
            app.audit
                .record_failure(r, ctx.client.map(|c| c.ip()))
                .await;
        }
    }
    response
}

/// The events of one finished request (usually none or one): a panic whatever the request
/// did, else the admin login and what the request did. An admin API request no handler named
/// (refused before its handler ran, or on a route whose action is its path) is named by
/// [`super::admin::route_event`].
pub fn events(
    info: &RequestInfo,
    panic: Option<String>,
    status: u16,
    ctx: &AuditContext,
) -> Vec<Event> {
    if let Some(message) = panic {
        return vec![Event::Panic { message }];
    }
    let event = ctx.event.clone().or_else(|| {
        info.path
            .starts_with("/admin/")
            .then(|| super::admin::route_event(&info.method, &info.path))
    });
    ctx.login
        .iter()
        .filter(|login| login.is_recorded(status))
        .cloned()
        .chain(event)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The admin API: GET /admin/audit?user=&repo=&action=&since=&until=&limit=, GET /admin/audit/verify
// ---------------------------------------------------------------------------------------------

/// Whether `path` is an audit API path (handled by [`api`]).
pub fn is_api(path: &str) -> bool {
    path == "/admin/audit" || path.starts_with("/admin/audit/")
}

pub async fn api(
    app: &Arc<App>,
    principal: &Principal,
    method: &Method,
    uri: &axum::http::Uri,
    slot: Option<&AuditSlot>,
) -> Response {
    let path = uri.path();
    let verify = path == "/admin/audit/verify";
    if let Some(slot) = slot {
        slot.note(
            if verify {
                "audit.verify"
            } else {
                "audit.query"
            },
            None,
        );
    }
    if *method != Method::GET || !(verify || path == "/admin/audit") {
        return json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no admin operation {method} {path}"),
        );
    }
    if !principal.admin || principal.read_only {
        return json_error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "only an administrator may read the audit trail".into(),
        );
    }
    // Read-your-writes: what happened before this request is on disk and indexed.
    app.audit.flush().await;
    let (db, file) = (Arc::clone(app.access.db()), app.audit.path().to_path_buf());
    if verify {
        let report =
            tokio::task::spawn_blocking(move || audit::log::verify_file(&file, Some(&db))).await;
        return match report {
            Ok(Ok(r)) => {
                let ok = r.ok();
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["ok"] = ok.into();
                (StatusCode::OK, axum::Json(v)).into_response()
            }
            Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
        };
    }
    let q = match query_map(uri) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "INVALID", e.to_string()),
    };
    let params = Params {
        user: q.get("user").cloned(),
        repo: q.get("repo").cloned(),
        action: q.get("action").cloned(),
        since: q.get("since").cloned(),
        until: q.get("until").cloned(),
        limit: q.get("limit").cloned(),
    };
    let filter = match params.to_filter(audit::time::now_ms()) {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "INVALID", e),
    };
    match tokio::task::spawn_blocking(move || audit::query::run(&file, &db, &filter)).await {
        Ok(Ok(records)) => (StatusCode::OK, axum::Json(records)).into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
    }
}

fn json_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::RepositoryAction;
    use crate::auth::AuthMethod;

    fn ctx(user: Option<&str>) -> AuditContext {
        AuditContext {
            client: Some("10.0.0.7:4242".parse().unwrap()),
            principal: user.map(|u| Principal {
                user: Some(u.into()),
                uid: Some(1000),
                method: AuthMethod::Bearer,
                ..Principal::anonymous()
            }),
            ..AuditContext::default()
        }
    }

    /// `ctx` after its handler emitted `event`.
    fn emitted(mut c: AuditContext, event: Event) -> AuditContext {
        c.event = Some(event);
        c
    }

    fn req(method: Method, path: &str) -> RequestInfo {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, "docker/27".parse().unwrap());
        h.insert(SLURM_JOB_ID, "4711".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "512".parse().unwrap());
        RequestInfo::of(&method, path, &h)
    }

    /// The records the middleware writes for a request answered with `status`.
    fn records(
        info: &RequestInfo,
        panic: Option<&str>,
        status: u16,
        ctx: &AuditContext,
    ) -> Vec<Record> {
        events(info, panic.map(str::to_owned), status, ctx)
            .iter()
            .map(|e| info.record(e, status, ctx))
            .collect()
    }

    /// The event a `/v2` handler emits for a manifest or blob request, completed with what it
    /// served (`digest`, and a pull's `bytes`).
    fn repo_event(
        action: RepositoryAction,
        path: (&str, &str),
        pushed: Option<u64>,
        served: Option<(&str, Option<u64>)>,
    ) -> Event {
        let mut e = Event::repository(action, path.0, path.1, pushed);
        if let Some((digest, bytes)) = served {
            e.served(digest, bytes);
        }
        e
    }

    fn sif_event(reference: &str, served: Option<(&str, u64)>) -> Event {
        Event::SifFetch {
            repository: crate::farm::sif_path::SifPath::parse(reference)
                .repository()
                .map(str::to_owned),
            reference: reference.to_owned(),
            digest: served.map(|s| s.0.to_owned()),
            bytes: served.map(|s| s.1),
            squashfs: false,
            enroot: false,
        }
    }

    #[test]
    fn a_caught_panic_is_recorded_on_any_route() {
        let d = format!("sha256:{}", "a".repeat(64));
        // A blob GET is otherwise never recorded (its handler emits nothing).
        let path = format!("/v2/a/b/blobs/{d}");
        assert!(records(&req(Method::GET, &path), None, 500, &ctx(None)).is_empty());
        let r = records(
            &req(Method::GET, &path),
            Some("index out of bounds"),
            500,
            &ctx(Some("alice")),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].action, "request.panic");
        assert_eq!(r[0].outcome, "error");
        assert_eq!(r[0].user.as_deref(), Some("alice"));
        assert_eq!(r[0].detail.as_deref(), Some("index out of bounds"));
    }

    #[test]
    fn records_what_handlers_emit() {
        use RepositoryAction::*;
        let d = format!("sha256:{}", "a".repeat(64));
        let one = |m: Method, p: &str, status: u16, event: Option<Event>| {
            let c = match event {
                Some(e) => emitted(ctx(Some("alice")), e),
                None => ctx(Some("alice")),
            };
            let v = records(&req(m, p), None, status, &c);
            assert!(v.len() <= 1, "{v:?}");
            v.into_iter().next()
        };
        let pulled = repo_event(
            ManifestPull,
            ("alice/tool", "1"),
            None,
            Some((&d, Some(900))),
        );
        let r = one(Method::GET, "/v2/alice/tool/manifests/1", 200, Some(pulled)).unwrap();
        assert_eq!(
            (
                r.action.as_str(),
                r.repository.as_deref(),
                r.reference.as_deref(),
                r.digest.as_deref(),
                r.bytes
            ),
            (
                "manifest.pull",
                Some("alice/tool"),
                Some("1"),
                Some(d.as_str()),
                Some(900)
            )
        );
        assert_eq!(
            (
                r.user.as_deref(),
                r.uid,
                r.auth.as_deref(),
                r.client.as_deref()
            ),
            (Some("alice"), Some(1000), Some("bearer"), Some("10.0.0.7"))
        );
        assert_eq!(
            (r.user_agent.as_deref(), r.slurm_job_id.as_deref()),
            (Some("docker/27"), Some("4711"))
        );
        let tagged = repo_event(TagPush, ("a/b", "1"), Some(512), Some((&d, None)));
        assert_eq!(
            one(Method::PUT, "/v2/a/b/manifests/1", 201, Some(tagged))
                .unwrap()
                .action,
            "tag.push"
        );
        let pushed = repo_event(ManifestPush, ("a/b", &d), Some(512), Some((&d, None)));
        let r = one(
            Method::PUT,
            &format!("/v2/a/b/manifests/{d}"),
            201,
            Some(pushed),
        )
        .unwrap();
        assert_eq!((r.action.as_str(), r.bytes), ("manifest.push", Some(512)));
        let untagged = repo_event(TagDelete, ("a/b", "1"), None, None);
        assert_eq!(
            one(Method::DELETE, "/v2/a/b/manifests/1", 202, Some(untagged))
                .unwrap()
                .action,
            "tag.delete"
        );
        let deleted = repo_event(ManifestDelete, ("a/b", &d), None, None);
        let r = one(
            Method::DELETE,
            &format!("/v2/a/b/manifests/{d}"),
            202,
            Some(deleted),
        )
        .unwrap();
        assert_eq!(
            (r.action.as_str(), r.digest.as_deref()),
            ("manifest.delete", Some(d.as_str()))
        );
        let blob = repo_event(BlobDelete, ("a", &d), None, None);
        assert_eq!(
            one(Method::DELETE, &format!("/v2/a/blobs/{d}"), 202, Some(blob))
                .unwrap()
                .action,
            "blob.delete"
        );
        assert!(one(Method::GET, &format!("/v2/a/blobs/{d}"), 200, None).is_none());
        assert!(one(Method::PATCH, "/v2/a/blobs/uploads/x", 202, None).is_none());
        let fetched = sif_event("alice/tool:1", Some((&d, 100)));
        let r = one(Method::GET, "/sif/alice/tool:1", 206, Some(fetched)).unwrap();
        assert_eq!(
            (
                r.action.as_str(),
                r.repository.as_deref(),
                r.digest.as_deref(),
                r.bytes,
                r.outcome.as_str()
            ),
            (
                "sif.fetch",
                Some("alice/tool"),
                Some(d.as_str()),
                Some(100),
                "ok"
            )
        );
        // "Still building" and status reads: the /sif handler emits nothing.
        assert!(one(Method::GET, "/sif/alice/tool:1", 202, None).is_none());
        assert!(one(Method::GET, "/sif/alice/tool:1/status", 200, None).is_none());
        let missing = repo_event(ManifestPull, ("alice/tool", "1"), None, None);
        let r = one(
            Method::GET,
            "/v2/alice/tool/manifests/1",
            404,
            Some(missing),
        )
        .unwrap();
        assert_eq!(r.outcome, "not-found");
    }

    #[test]
    fn failures_and_logins() {
        let c = emitted(
            ctx(None),
            Event::AuthFailure {
                user: Some("alice".into()),
                why: "wrong".into(),
                scheme: Some("password"),
            },
        );
        let v = records(&req(Method::GET, "/v2/"), None, 429, &c);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (
                v[0].action.as_str(),
                v[0].outcome.as_str(),
                v[0].user.as_deref()
            ),
            ("auth.failure", "rate-limited", Some("alice"))
        );
        let login = Event::TokenLogin {
            issued: true,
            scheme: Some("password"),
        };
        let v = records(
            &req(Method::GET, "/token"),
            None,
            200,
            &emitted(ctx(Some("bob")), login),
        );
        assert_eq!(
            (v[0].action.as_str(), v[0].user.as_deref()),
            ("auth.success", Some("bob"))
        );
        // An admin call: authentication emitted its login, the handler what it did.
        let admin = |user: &str, event: Option<Event>| {
            let mut c = ctx(Some(user));
            c.login = Some(Event::AdminLogin);
            c.event = event;
            c
        };
        let added = Event::Admin {
            action: "user.add".into(),
            repository: None,
            reference: Some("carol".into()),
        };
        let v = records(
            &req(Method::POST, "/admin/users"),
            None,
            201,
            &admin("boss", Some(added)),
        );
        let actions: Vec<&str> = v.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, vec!["auth.success", "user.add"]);
        assert_eq!(v[1].reference.as_deref(), Some("carol"));
        // The store-maintenance routes are named by their route.
        let v = records(
            &req(Method::DELETE, "/admin/repositories/alice/old"),
            None,
            200,
            &admin("boss", None),
        );
        assert_eq!(
            (v[1].action.as_str(), v[1].repository.as_deref()),
            ("repository.delete", Some("alice/old"))
        );
        let v = records(
            &req(Method::PUT, "/admin/quotas/proj-x"),
            None,
            200,
            &admin("boss", None),
        );
        assert_eq!(
            (v[1].action.as_str(), v[1].reference.as_deref()),
            ("quota.set", Some("proj-x"))
        );
        // A login refused with 401 is no success; a request no handler named is still audited.
        let v = records(
            &req(Method::GET, "/admin/nothing"),
            None,
            401,
            &admin("boss", None),
        );
        let v: Vec<(&str, Option<&str>)> = v
            .iter()
            .map(|r| (r.action.as_str(), r.reference.as_deref()))
            .collect();
        assert_eq!(v, vec![("admin.request", Some("GET /admin/nothing"))]);
        assert!(records(&req(Method::GET, "/v2/"), None, 200, &ctx(Some("a"))).is_empty());
    }

    #[test]
    fn schemes_and_junk_job_ids() {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        assert_eq!(scheme_of(&format!("Basic {b}")), "password");
        assert_eq!(scheme_of("MUNGE abc"), "munge");
        assert_eq!(scheme_of("Bearer eyJ"), "bearer");
        let mut h = HeaderMap::new();
        h.insert(SLURM_JOB_ID, "1; rm -rf /".parse().unwrap());
        assert_eq!(RequestInfo::of(&Method::GET, "/", &h).slurm_job_id, None);
    }
}
