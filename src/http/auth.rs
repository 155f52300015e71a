//! Authentication at the HTTP edge: the middleware that authenticates each request once, the
//! Docker token endpoint `/token`, the `WWW-Authenticate` challenges, and the request-scoped
//! [`AuditSlot`] a later audit middleware reads (who, from where, with what credential).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::{self, Route};
use super::App;
use crate::audit::event::Event;
use crate::auth::{jwt, Anonymous, Credential, Principal};
use crate::registry::error::Error;
use crate::registry::names::RepositoryName;

/// What the audit trail will say of a request: who, from where (filled by authentication), and
/// what it did (the [`Event`] its handler, or authentication, emitted). Readable after the
/// handler ran by the audit middleware, which adds the status.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pub client: Option<SocketAddr>,
    pub principal: Option<Principal>,
    /// An authenticated admin API call's login, recorded before what it did.
    pub login: Option<Event>,
    /// What the request did. A later emission replaces an earlier one: a handler names its
    /// action before it can fail, and completes it once it knows what it served.
    pub event: Option<Event>,
}

/// The request-scoped slot holding [`AuditContext`], in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(pub Arc<Mutex<AuditContext>>);

impl AuditSlot {
    fn update(&self, f: impl FnOnce(&mut AuditContext)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Says what this request did (replacing what it said before).
    pub fn emit(&self, event: Event) {
        self.update(|c| c.event = Some(event));
    }

    /// Completes the event emitted before (the handler learnt what it served).
    pub fn amend(&self, f: impl FnOnce(&mut Event)) {
        self.update(|c| {
            if let Some(e) = c.event.as_mut() {
                f(e)
            }
        });
    }

    /// Names an admin API call's action and its object (the request line when `None`).
    pub fn note(&self, action: &str, reference: Option<String>) {
        self.emit(Event::Admin {
            action: action.to_owned(),
            repository: None,
            reference,
        });
    }

    pub fn get(&self) -> AuditContext {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Emits `event` into the request's slot, if it has one.
pub fn emit(slot: Option<&AuditSlot>, event: Event) {
    if let Some(slot) = slot {
        slot.emit(event);
    }
}

/// The kind of credential a request's `Authorization` header holds, for the audit trail.
fn scheme(headers: &HeaderMap) -> Option<&'static str> {
    authorization(headers).ok().flatten().map(Credential::kind)
}

/// The audit event of a failed authentication.
fn auth_failure(headers: &HeaderMap, e: &Error) -> Event {
    Event::AuthFailure {
        user: basic_user(headers),
        why: e.to_string(),
        scheme: scheme(headers),
    }
}

/// Outermost layer: gives every request an [`AuditSlot`] with the client address.
pub async fn audit_seam(mut req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let slot = AuditSlot::default();
    slot.update(|c| c.client = client);
    req.extensions_mut().insert(slot);
    next.run(req).await
}

/// The authenticated caller, for handlers: put there by [`authenticate`]; a route without that
/// middleware sees an anonymous caller (the least privilege), never an error.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous))
    }
}

/// The `Authorization` header's value: `Ok(None)` without one, an error for one that is not text.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::Unauthorized("malformed Authorization header".into()))
        })
        .transpose()
}

/// The user name a request's Basic credentials name, if any (for the audit trail of a failure).
fn basic_user(headers: &HeaderMap) -> Option<String> {
    Credential::basic_user(authorization(headers).ok()??)
}

fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Authenticates `/v2`, `/sif` and `/admin` requests once, records the outcome in the audit slot,
/// and turns 401 answers into Docker's Bearer challenge for the resource asked for.
pub async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // The batch-script templates are read on login nodes with the node commands' MUNGE too.
    let read_route = matches!(*req.method(), Method::GET | Method::HEAD)
        && (path.starts_with("/v2")
            || path.starts_with("/sif/")
            || path == "/api/jobscript/templates");
    let client = client_ip(&req);
    let slot = req.extensions().get::<AuditSlot>().cloned();
    // What the challenge needs, kept before the request moves on: it is written only into a
    // 401, so it is not formatted for the other answers (most of them).
    let challenge_source = (!path.starts_with("/admin")).then(|| ChallengeSource {
        host: req.headers().get(header::HOST).cloned(),
        authority: req.uri().authority().cloned(),
        method: req.method().clone(),
    });
    let outcome = match authorization(req.headers()) {
        Ok(value) => app.access.authenticate(value, client, read_route).await,
        Err(e) => Err(e),
    };
    let challenge = |source: Option<ChallengeSource>| {
        source.map(|s| bearer_challenge(&app, &s, scope_of(&s.method, &path)))
    };
    let principal = match outcome {
        Ok(p) => p,
        Err(e) => {
            emit(slot.as_ref(), auth_failure(req.headers(), &e));
            return with_challenge(e.into_response(), challenge(challenge_source));
        }
    };
    if let Some(slot) = &slot {
        let login = (path.starts_with("/admin/") && principal.is_authenticated())
            .then_some(Event::AdminLogin);
        slot.update(|c| {
            c.principal = Some(principal.clone());
            c.login = login;
        });
    }
    req.extensions_mut().insert(principal);
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        with_challenge(response, challenge(challenge_source))
    } else {
        response
    }
}

/// The parts of a request its bearer challenge is made of.
struct ChallengeSource {
    host: Option<HeaderValue>,
    authority: Option<axum::http::uri::Authority>,
    method: Method,
}

fn with_challenge(mut response: Response, challenge: Option<HeaderValue>) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        if let Some(v) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    response
}

/// `Bearer realm="<scheme>://<host>/token",service="hpc-registry"[,scope="..."]`.
fn bearer_challenge(app: &App, source: &ChallengeSource, scope: Option<String>) -> HeaderValue {
    let scheme = if app.access.tls { "https" } else { "http" };
    let host = source
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| source.authority.as_ref().map(|a| a.to_string()))
        // Only host characters: the value is echoed into a header.
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let mut v = format!(
        "Bearer realm=\"{scheme}://{host}/token\",service=\"{}\"",
        jwt::SERVICE
    );
    if let Some(scope) = scope {
        v.push_str(&format!(",scope=\"{scope}\""));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The Docker token scope a request needs, from its method and path.
fn scope_of(method: &Method, path: &str) -> Option<String> {
    let actions = match *method {
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => "pull,push",
    };
    if let Some(rest) = path.strip_prefix("/v2/") {
        let name = match routes::parse(rest)? {
            Route::Base => return None,
            Route::Catalog => return Some("registry:catalog:*".into()),
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => name,
        };
        // Upload sessions are part of a push even when polled with GET.
        let actions = match routes::parse(rest)? {
            Route::Upload { .. } | Route::UploadStart { .. } => "pull,push",
            _ => actions,
        };
        let name = RepositoryName::parse(name).ok()?;
        return Some(format!("repository:{name}:{actions}"));
    }
    let name = crate::farm::sif_path::SifPath::of_request(path)?.repository()?;
    let name = RepositoryName::parse(name).ok()?;
    Some(format!("repository:{name}:pull"))
}

/// `GET /token?service=hpc-registry&scope=repository:alice/x:pull,push[&scope=...]`: exchanges
/// Basic credentials (password or access token) for a short-lived bearer token granting what the
/// policy allows of the requested scopes. Without credentials, an anonymous token when anonymous
/// access is on.
pub async fn token(State(app): State<Arc<App>>, req: Request) -> Response {
    let slot = req.extensions().get::<AuditSlot>().cloned();
    let client = client_ip(&req);
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    let (response, failed) =
        token_response(&app, method, uri, headers, client, slot.as_ref()).await;
    let event = failed.unwrap_or_else(|| Event::TokenLogin {
        issued: response.status() == StatusCode::OK,
        scheme: scheme(headers),
    });
    emit(slot.as_ref(), event);
    response
}

/// `/token`'s answer, and the audit event of a failed authentication if that was the answer.
async fn token_response(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    slot: Option<&AuditSlot>,
) -> (Response, Option<Event>) {
    let basic = || HeaderValue::from_static("Basic realm=\"hpc-registry\"");
    if method != Method::GET && method != Method::HEAD {
        let e = Error::Unsupported(format!("{method} /token: use GET"));
        return (e.into_response(), None);
    }
    // Bad syntax is answered before credentials are looked at: it is the same 400 for everyone.
    let scopes = match crate::urlcode::form_values(uri.query().unwrap_or("").as_bytes(), "scope") {
        Ok(s) => s,
        Err(e) => return (query_error(e).into_response(), None),
    };
    let principal = if headers.contains_key(header::AUTHORIZATION) {
        let outcome = match authorization(headers) {
            Ok(value) => app.access.authenticate(value, client, false).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(p) => p,
            Err(e) => {
                let failed = auth_failure(headers, &e);
                return (
                    with_challenge(e.into_response(), Some(basic())),
                    Some(failed),
                );
            }
        }
    } else if app.access.policy().anonymous != Anonymous::None {
        Principal::anonymous()
    } else {
        let e = Error::Unauthorized("log in: /token needs Basic credentials".into());
        return (with_challenge(e.into_response(), Some(basic())), None);
    };
    if let Some(slot) = slot {
        slot.update(|c| c.principal = Some(principal.clone()));
    }
    let response = match app.access.issue_token(&principal, &scopes) {
        Ok(t) => (StatusCode::OK, axum::Json(t)).into_response(),
        Err(e) => e.into_response(),
    };
    (response, None)
}

/// Parses the query of a URI into single values (last one wins), for handlers that need no
/// lists. A query that does not decode (a broken `%` escape, not UTF-8) is a 400 for the caller.
pub fn query_map(uri: &Uri) -> Result<HashMap<String, String>, Error> {
    crate::urlcode::parse_form_map(uri.query().unwrap_or("").as_bytes()).map_err(query_error)
}

/// The client's answer for a query string that does not decode.
pub fn query_error(e: crate::urlcode::UrlError) -> Error {
    Error::QueryInvalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_from_requests() {
        let s = |m: Method, p: &str| scope_of(&m, p);
        assert_eq!(
            s(Method::GET, "/v2/alice/x/manifests/1").as_deref(),
            Some("repository:alice/x:pull")
        );
        assert_eq!(
            s(Method::POST, "/v2/alice/x/blobs/uploads/").as_deref(),
            Some("repository:alice/x:pull,push")
        );
        assert_eq!(
            s(Method::DELETE, "/v2/alice/x/manifests/sha256:ab").as_deref(),
            Some("repository:alice/x:delete")
        );
        assert_eq!(s(Method::GET, "/v2/").as_deref(), None);
        assert_eq!(
            s(Method::GET, "/v2/_catalog").as_deref(),
            Some("registry:catalog:*")
        );
        assert_eq!(
            s(Method::GET, "/sif/alice/x:1/status").as_deref(),
            Some("repository:alice/x:pull")
        );
        let digest = format!("/sif/sha256:{}", "a".repeat(64));
        assert_eq!(s(Method::GET, &digest), None);
    }

    #[test]
    fn repeated_query_values() {
        assert_eq!(
            crate::urlcode::form_values(
                b"service=hpc-registry&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=registry:catalog:*",
                "scope"
            )
            .unwrap(),
            vec!["repository:a/b:pull,push", "registry:catalog:*"]
        );
    }
}
