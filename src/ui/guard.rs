//! What stands in front of every UI handler: the security headers of every `/ui` response, the
//! session check that turns a cookie into the caller ([`Viewer`]), and the CSRF check of every
//! form post ([`Posted`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::session::{self, Session};
use super::{views, Ui};
use crate::auth::Principal;
use crate::http::auth::AuditSlot;
use crate::http::App;

/// Largest form body: a pasted batch script fits many times over.
pub const MAX_FORM: usize = 1 << 20;

/// No inline script, no framing, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Middleware: the security headers of every `/ui` response; pages are never cached (assets
/// set their own `Cache-Control`).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// The UI's state, which the router puts in every request's extensions.
pub fn ui_of(parts: &Parts) -> Result<Arc<Ui>, Response> {
    parts
        .extensions
        .get::<Arc<Ui>>()
        .cloned()
        .ok_or_else(|| views::error_page(StatusCode::INTERNAL_SERVER_ERROR, "UI state missing"))
}

/// The value of the session cookie a request carries.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, session::COOKIE)
}

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    session::cookie_value(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

/// The logged-in caller of a UI request: a live session whose login still holds, and the
/// principal it resolves to now.
pub struct Viewer {
    pub principal: Principal,
    pub session: Session,
    /// The session cookie's value (for logout).
    pub cookie: String,
    pub ui: Arc<Ui>,
    /// The request's audit slot, for handlers that name what they did.
    pub slot: Option<AuditSlot>,
}

impl Viewer {
    pub fn user(&self) -> &str {
        self.principal.user.as_deref().unwrap_or("")
    }

    /// What the page chrome needs (who, admin, the logout form's token).
    pub fn nav(&self) -> views::Nav {
        views::Nav {
            user: self.user().to_owned(),
            admin: self.principal.admin,
            csrf: self.session.csrf.clone(),
        }
    }
}

/// A request without a live session: pages send the browser to the login form, the JSON API
/// answers 401, and a form post 403.
fn no_session(parts: &Parts) -> Response {
    if parts.uri.path().starts_with("/ui/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "log in at /ui/login"})),
        )
            .into_response();
    }
    if parts.method != axum::http::Method::GET && parts.method != axum::http::Method::HEAD {
        return views::error_page(
            StatusCode::FORBIDDEN,
            "no session: log in again, then repeat what you did",
        );
    }
    Redirect::to("/ui/login").into_response()
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let ui = ui_of(parts)?;
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(no_session(parts));
        };
        let Some(session) = ui.sessions.touch(&cookie) else {
            return Err(no_session(parts));
        };
        let principal = match app
            .access
            .resume_session(&session.key, &session.binding)
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => {
                // The password changed, the token went, or the user did: the session ends.
                ui.sessions.close(&cookie);
                return Err(no_session(parts));
            }
            Err(e) => {
                return Err(views::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &e.to_string(),
                ))
            }
        };
        let slot = parts.extensions.get::<AuditSlot>().cloned();
        if let Some(slot) = &slot {
            slot.0.lock().unwrap_or_else(|p| p.into_inner()).principal = Some(principal.clone());
        }
        Ok(Viewer {
            principal,
            session,
            cookie,
            ui,
            slot,
        })
    }
}

/// A form post of a logged-in caller whose CSRF token matched; its fields.
pub struct Posted {
    pub viewer: Viewer,
    pub fields: HashMap<String, String>,
}

impl Posted {
    /// A field's value, `""` when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The field every form carries with the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

impl FromRequest<Arc<App>> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, app).await?;
        let fields = read_form(body).await?;
        let sent = fields.get(CSRF_FIELD).map(String::as_str).unwrap_or("");
        if !session::same_token(sent, &viewer.session.csrf) {
            tracing::info!(
                user = viewer.user(),
                path = parts.uri.path(),
                "UI form refused: missing or wrong CSRF token"
            );
            return Err(views::error_page(
                StatusCode::FORBIDDEN,
                "this form has no valid CSRF token: reload the page and try again",
            ));
        }
        Ok(Posted { viewer, fields })
    }
}

/// Reads an `application/x-www-form-urlencoded` body of at most [`MAX_FORM`] bytes.
pub async fn read_form(body: axum::body::Body) -> Result<HashMap<String, String>, Response> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        views::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is larger than 1 MiB",
        )
    })?;
    crate::urlcode::parse_form_map(&bytes)
        .map_err(|e| views::error_page(StatusCode::BAD_REQUEST, &format!("malformed form: {e}")))
}

/// The host name the browser used (for the copy lines), checked to be only host characters.
pub fn request_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost")
        .to_owned()
}
