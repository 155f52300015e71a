//! The audit trail at the HTTP edge: the middleware that turns each finished request into typed
//! [`Event`]s (from the typed route, the status, the [`AuditSlot`] the auth middleware and the
//! handlers filled, and a few headers), each written down as one record, and the admin-only
//! `/admin/audit` API.
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
use super::routes::{self, Route};
use super::App;
use crate::audit::{self, query::Params, Record};
use crate::auth::Principal;
use crate::registry::names::Digest;

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
    pub content_length: Option<u64>,
    /// The credential kind tried, from the Authorization header (for failures).
    pub scheme: Option<&'static str>,
}

/// What the middleware keeps of the response.
#[derive(Debug, Clone)]
pub struct ReplyInfo {
    pub status: u16,
    /// Set when the answer is a caught panic (see [`super::panic`]): its message.
    pub panic: Option<String>,
    pub digest: Option<String>,
    pub content_length: Option<u64>,
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
            content_length: text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok()),
            scheme: text(header::AUTHORIZATION.as_str()).map(scheme_of),
        }
    }
}

/// `password`, `token`, `bearer`, `munge` or `other` for an Authorization header value.
fn scheme_of(value: &str) -> &'static str {
    crate::auth::Credential::kind(value)
}

/// Middleware: runs the request, then queues its audit records.
pub async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let info = RequestInfo::of(req.method(), req.uri().path(), req.headers());
    let slot = req.extensions().get::<AuditSlot>().cloned();
    let response = next.run(req).await;
    let headers = response.headers();
    let digest = headers
        .get("docker-content-digest")
        .or_else(|| headers.get(header::ETAG))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|d| Digest::parse(d).is_ok());
    let reply = ReplyInfo {
        panic: response
            .extensions()
            .get::<super::panic::Panicked>()
            .map(|p| p.0.clone()),
        status: response.status().as_u16(),
        digest,
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    };
    let ctx = slot.map(|s| s.get()).unwrap_or_default();
    for r in records(&info, &reply, &ctx) {
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

/// What a finished request did, in the audit trail's terms. [`events`] decides it once, from
/// the typed route, the status and what authentication and the handler put in the
/// [`AuditSlot`]; [`Event::record`] writes it down. Nothing else looks at the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A handler panicked (whatever the route: it is a bug, and the trail must show it).
    Panic { message: &'a str },
    /// Authentication failed: the user name tried, if any, and why.
    AuthFailure { user: Option<&'a str>, why: &'a str },
    /// `/token`: a login, which issued a token or not.
    TokenLogin { issued: bool },
    /// An authenticated `/admin` call: its login, recorded beside what it did.
    AdminLogin { path: &'a str },
    /// An `/admin` call: what the handler named (or the route says) and its object.
    Admin {
        action: &'a str,
        repository: Option<String>,
        reference: String,
    },
    /// A manifest read, push or delete, or a blob delete (`action`: `manifest.pull`, …).
    Repository {
        action: &'static str,
        repository: &'a str,
        reference: &'a str,
        bytes: Option<u64>,
    },
    /// A SIF (or its squashfs partition) served or refused.
    SifFetch {
        repository: Option<&'a str>,
        reference: &'a str,
        squashfs: bool,
    },
}

impl Event<'_> {
    /// The record of this event, with what every record carries (status, client, agent, job, who).
    pub fn record(&self, info: &RequestInfo, reply: &ReplyInfo, ctx: &AuditContext) -> Record {
        let (action, outcome) = match self {
            Event::Panic { .. } => ("request.panic", None),
            Event::AuthFailure { .. } => ("auth.failure", None),
            Event::TokenLogin { issued: true } => ("auth.success", None),
            Event::TokenLogin { issued: false } => ("auth.failure", None),
            Event::AdminLogin { .. } => ("auth.success", Some("ok")),
            Event::Admin { action, .. } => (*action, None),
            Event::Repository { action, .. } => (*action, None),
            Event::SifFetch { .. } => ("sif.fetch", None),
        };
        let mut r = Record::new(
            action,
            outcome.unwrap_or(audit::outcome_of_status(reply.status)),
        );
        r.status = Some(reply.status);
        r.client = ctx.client.map(|c| c.ip().to_string());
        r.user_agent = info.user_agent.clone();
        r.slurm_job_id = info.slurm_job_id.clone();
        if let Some(p) = &ctx.principal {
            r.user = p.user.clone();
            r.uid = p.uid;
            r.auth = Some(p.method.as_str().to_owned());
        }
        match self {
            Event::Panic { message } => {
                r.reference = Some(format!("{} {}", info.method, info.path));
                r.detail = Some((*message).to_owned());
            }
            Event::AuthFailure { user, why } => {
                r.user = user.map(str::to_owned);
                r.auth = info.scheme.map(str::to_owned);
                r.detail = Some((*why).to_owned());
                r.reference = Some(info.path.chars().take(256).collect());
            }
            Event::TokenLogin { issued } => {
                if !issued {
                    r.auth = info.scheme.map(str::to_owned);
                }
            }
            Event::AdminLogin { path } => r.reference = Some((*path).to_owned()),
            Event::Admin {
                repository,
                reference,
                ..
            } => {
                r.repository = repository.clone();
                r.reference = (repository.is_none()).then(|| reference.clone());
            }
            Event::Repository {
                repository,
                reference,
                bytes,
                ..
            } => {
                r.repository = Some((*repository).to_owned());
                r.reference = Some((*reference).to_owned());
                r.digest = reply
                    .digest
                    .clone()
                    .or_else(|| Digest::parse(reference).ok().map(|d| d.as_str().to_owned()));
                r.bytes = *bytes;
            }
            Event::SifFetch {
                repository,
                reference,
                squashfs,
            } => {
                r.repository = repository.map(str::to_owned);
                r.reference = Some(reference.chars().take(256).collect());
                // The SIF's own digest (its ETag) when one was served.
                r.digest = reply.digest.clone().filter(|_| reply.status < 300);
                r.bytes = reply.content_length.filter(|_| reply.status < 300);
                if *squashfs {
                    r.detail = Some("squashfs partition".into());
                }
            }
        }
        r
    }
}

/// The records of one finished request (usually none or one).
pub fn records(info: &RequestInfo, reply: &ReplyInfo, ctx: &AuditContext) -> Vec<Record> {
    events(info, reply, ctx)
        .iter()
        .map(|e| e.record(info, reply, ctx))
        .collect()
}

/// What one finished request did (usually nothing to record, or one event).
pub fn events<'a>(
    info: &'a RequestInfo,
    reply: &'a ReplyInfo,
    ctx: &'a AuditContext,
) -> Vec<Event<'a>> {
    if let Some(message) = &reply.panic {
        return vec![Event::Panic { message }];
    }
    if let Some((user, why)) = &ctx.failure {
        // 401 → denied, 429 → rate-limited, 500 (munged unreachable) → error.
        return vec![Event::AuthFailure {
            user: user.as_deref(),
            why,
        }];
    }
    let path = info.path.as_str();
    if path == "/token" {
        return vec![Event::TokenLogin {
            issued: reply.status == 200,
        }];
    }
    if path.starts_with("/admin/") {
        return admin_events(path, info, reply, ctx);
    }
    if path.starts_with("/ui/") {
        // The web UI names what a request did (a login, a token or build operation); pages
        // and polls are not recorded.
        return ctx
            .action
            .as_deref()
            .map(|action| Event::Admin {
                action,
                repository: None,
                reference: ctx
                    .reference
                    .clone()
                    .unwrap_or_else(|| format!("{} {path}", info.method)),
            })
            .into_iter()
            .collect();
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        return v2_event(rest, &info.method, info, reply)
            .into_iter()
            .collect();
    }
    if let Some(rest) = path.strip_prefix("/sif/") {
        return sif_event(rest, &info.method, reply).into_iter().collect();
    }
    Vec::new()
}

fn admin_events<'a>(
    path: &'a str,
    info: &RequestInfo,
    reply: &ReplyInfo,
    ctx: &'a AuditContext,
) -> Vec<Event<'a>> {
    let mut out = Vec::new();
    let authenticated = ctx
        .principal
        .as_ref()
        .is_some_and(Principal::is_authenticated);
    if authenticated && reply.status != 401 {
        out.push(Event::AdminLogin { path });
    }
    let default_reference = || {
        ctx.reference
            .clone()
            .unwrap_or_else(|| format!("{} {path}", info.method))
    };
    if let Some(action) = ctx.action.as_deref() {
        out.push(Event::Admin {
            action,
            repository: None,
            reference: default_reference(),
        });
        return out;
    }
    // The store-maintenance routes (src/lifecycle, storage_admin) are known by their paths.
    let rest = path.trim_start_matches("/admin/");
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let tail: String = tail.chars().take(256).collect();
    let (action, repository, reference) = match (first, &info.method) {
        ("repositories", &Method::DELETE) => ("repository.delete", Some(tail), String::new()),
        ("quotas", &Method::PUT) if !tail.is_empty() => ("quota.set", None, tail),
        ("quotas", &Method::DELETE) if !tail.is_empty() => ("quota.delete", None, tail),
        ("prune", _) => ("admin.prune", None, default_reference()),
        ("usage", _) => ("admin.usage", None, default_reference()),
        ("quotas", _) => ("admin.quotas", None, default_reference()),
        ("scrub", _) => ("admin.scrub", None, default_reference()),
        _ => ("admin.request", None, default_reference()),
    };
    out.push(Event::Admin {
        action,
        repository,
        reference,
    });
    out
}

fn v2_event<'a>(
    rest: &'a str,
    m: &Method,
    info: &RequestInfo,
    reply: &ReplyInfo,
) -> Option<Event<'a>> {
    let (repository, reference, action, bytes) = match routes::parse(rest)? {
        Route::Manifest { name, reference } => {
            let by_digest = Digest::parse(reference).is_ok();
            let (action, bytes) = match *m {
                Method::GET => ("manifest.pull", reply.content_length),
                Method::HEAD => ("manifest.head", None),
                Method::PUT if by_digest => ("manifest.push", info.content_length),
                Method::PUT => ("tag.push", info.content_length),
                Method::DELETE if by_digest => ("manifest.delete", None),
                Method::DELETE => ("tag.delete", None),
                _ => return None,
            };
            (name, reference, action, bytes)
        }
        Route::Blob { name, digest } if *m == Method::DELETE => (name, digest, "blob.delete", None),
        _ => return None,
    };
    Some(Event::Repository {
        action,
        repository,
        reference,
        bytes,
    })
}

fn sif_event<'a>(rest: &'a str, m: &Method, reply: &ReplyInfo) -> Option<Event<'a>> {
    use crate::farm::sif_path::{SifPath, View};
    let path = SifPath::parse(rest);
    // HEAD, status and log reads, and "still building" answers are not fetches.
    if *m != Method::GET
        || reply.status == StatusCode::ACCEPTED.as_u16()
        || matches!(path.view, View::Status | View::Log)
    {
        return None;
    }
    Some(Event::SifFetch {
        repository: path.repository(),
        reference: path.reference,
        squashfs: path.view == View::Squashfs,
    })
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

    fn req(method: Method, path: &str) -> RequestInfo {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, "docker/27".parse().unwrap());
        h.insert(SLURM_JOB_ID, "4711".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "512".parse().unwrap());
        RequestInfo::of(&method, path, &h)
    }

    fn reply(status: u16, digest: Option<&str>, len: Option<u64>) -> ReplyInfo {
        ReplyInfo {
            panic: None,
            status,
            digest: digest.map(str::to_owned),
            content_length: len,
        }
    }

    #[test]
    fn a_caught_panic_is_recorded_on_any_route() {
        let mut panicked = reply(500, None, None);
        panicked.panic = Some("index out of bounds".into());
        let d = format!("sha256:{}", "a".repeat(64));
        // A blob GET is otherwise never recorded.
        let path = format!("/v2/a/b/blobs/{d}");
        assert!(records(
            &req(Method::GET, &path),
            &reply(500, None, None),
            &ctx(None)
        )
        .is_empty());
        let r = records(&req(Method::GET, &path), &panicked, &ctx(Some("alice")));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].action, "request.panic");
        assert_eq!(r[0].outcome, "error");
        assert_eq!(r[0].user.as_deref(), Some("alice"));
        assert_eq!(r[0].detail.as_deref(), Some("index out of bounds"));
    }

    #[test]
    fn classifies_requests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let one = |m: Method, p: &str, rep: ReplyInfo| {
            let v = records(&req(m, p), &rep, &ctx(Some("alice")));
            assert!(v.len() <= 1, "{v:?}");
            v.into_iter().next()
        };
        let r = one(
            Method::GET,
            "/v2/alice/tool/manifests/1",
            reply(200, Some(&d), Some(900)),
        )
        .unwrap();
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
        assert_eq!(
            one(
                Method::PUT,
                "/v2/a/b/manifests/1",
                reply(201, Some(&d), None)
            )
            .unwrap()
            .action,
            "tag.push"
        );
        let r = one(
            Method::PUT,
            &format!("/v2/a/b/manifests/{d}"),
            reply(201, Some(&d), None),
        )
        .unwrap();
        assert_eq!((r.action.as_str(), r.bytes), ("manifest.push", Some(512)));
        assert_eq!(
            one(
                Method::DELETE,
                "/v2/a/b/manifests/1",
                reply(202, None, None)
            )
            .unwrap()
            .action,
            "tag.delete"
        );
        let r = one(
            Method::DELETE,
            &format!("/v2/a/b/manifests/{d}"),
            reply(202, None, None),
        )
        .unwrap();
        assert_eq!(
            (r.action.as_str(), r.digest.as_deref()),
            ("manifest.delete", Some(d.as_str()))
        );
        assert_eq!(
            one(
                Method::DELETE,
                &format!("/v2/a/blobs/{d}"),
                reply(202, None, None)
            )
            .unwrap()
            .action,
            "blob.delete"
        );
        assert!(one(
            Method::GET,
            &format!("/v2/a/blobs/{d}"),
            reply(200, Some(&d), Some(5))
        )
        .is_none());
        assert!(one(
            Method::PATCH,
            "/v2/a/blobs/uploads/x",
            reply(202, None, None)
        )
        .is_none());
        let r = one(
            Method::GET,
            "/sif/alice/tool:1",
            reply(206, Some(&d), Some(100)),
        )
        .unwrap();
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
        assert!(one(Method::GET, "/sif/alice/tool:1", reply(202, None, Some(80))).is_none());
        assert!(one(
            Method::GET,
            "/sif/alice/tool:1/status",
            reply(200, None, None)
        )
        .is_none());
        let r = one(
            Method::GET,
            "/v2/alice/tool/manifests/1",
            reply(404, None, None),
        )
        .unwrap();
        assert_eq!(r.outcome, "not-found");
    }

    #[test]
    fn failures_and_logins() {
        let mut c = ctx(None);
        c.failure = Some((Some("alice".into()), "wrong".into()));
        let v = records(&req(Method::GET, "/v2/"), &reply(429, None, None), &c);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (
                v[0].action.as_str(),
                v[0].outcome.as_str(),
                v[0].user.as_deref()
            ),
            ("auth.failure", "rate-limited", Some("alice"))
        );
        let v = records(
            &req(Method::GET, "/token"),
            &reply(200, None, None),
            &ctx(Some("bob")),
        );
        assert_eq!(
            (v[0].action.as_str(), v[0].user.as_deref()),
            ("auth.success", Some("bob"))
        );
        let mut c = ctx(Some("boss"));
        c.action = Some("user.add".into());
        c.reference = Some("carol".into());
        let v = records(
            &req(Method::POST, "/admin/users"),
            &reply(201, None, None),
            &c,
        );
        let actions: Vec<&str> = v.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, vec!["auth.success", "user.add"]);
        assert_eq!(v[1].reference.as_deref(), Some("carol"));
        let v = records(
            &req(Method::DELETE, "/admin/repositories/alice/old"),
            &reply(200, None, None),
            &ctx(Some("boss")),
        );
        assert_eq!(
            (v[1].action.as_str(), v[1].repository.as_deref()),
            ("repository.delete", Some("alice/old"))
        );
        let v = records(
            &req(Method::PUT, "/admin/quotas/proj-x"),
            &reply(200, None, None),
            &ctx(Some("boss")),
        );
        assert_eq!(
            (v[1].action.as_str(), v[1].reference.as_deref()),
            ("quota.set", Some("proj-x"))
        );
        assert!(records(
            &req(Method::GET, "/v2/"),
            &reply(200, None, None),
            &ctx(Some("a"))
        )
        .is_empty());
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
