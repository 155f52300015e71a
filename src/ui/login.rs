//! Logging in and out. A login goes through `auth` exactly like a Basic (or bearer access token)
//! credential on any other route: the same failed-login limiter, the same principal cache, and
//! the same audit records (`auth.failure`; `auth.success` for a session opened).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::guard::{self, Posted};
use super::session::{self, same_token};
use super::views;
use crate::auth::{pat, AuthMethod};
use crate::http::auth::AuditSlot;
use crate::http::App;
use crate::registry::error::Error;

/// `GET /ui/login`: the form, with a fresh login token in a cookie and a hidden field.
pub async fn form(req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = match guard::ui_of(&parts) {
        Ok(ui) => ui,
        Err(r) => return r,
    };
    if guard::session_cookie(&parts.headers).is_some_and(|c| ui.sessions.touch(&c).is_some()) {
        return Redirect::to("/ui/").into_response();
    }
    login_page(ui.tls, StatusCode::OK, "", None)
}

/// The login page with a new login token (cookie and field), answered with `status`.
fn login_page(tls: bool, status: StatusCode, user: &str, error: Option<&str>) -> Response {
    let token = match session::random_token() {
        Ok(t) => hex::encode(t),
        Err(e) => return views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut r = views::respond(status, views::login::login(&token, user, error));
    if let Ok(v) = HeaderValue::from_str(&session::login_cookie(Some(&token), tls)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /ui/login`: checks the login token, authenticates, opens a session.
pub async fn submit(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ui = match guard::ui_of(&parts) {
        Ok(ui) => ui,
        Err(r) => return r,
    };
    let fields = match guard::read_form(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let expected = guard::cookie(&parts.headers, session::LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_token(field("login_csrf"), &expected) {
        return views::error_page(
            StatusCode::FORBIDDEN,
            "this login form has expired or did not come from this site: open the login page again",
        );
    }
    let (user, secret) = (field("user").trim(), field("secret"));
    if secret.is_empty() {
        return login_page(
            ui.tls,
            StatusCode::BAD_REQUEST,
            user,
            Some("enter a password or an access token"),
        );
    }
    // The header value the same credential would carry on `/v2`: the same code path.
    let authorization = if user.is_empty() && pat::looks_like_token(secret) {
        format!("Bearer {secret}")
    } else {
        format!("Basic {}", STANDARD.encode(format!("{user}:{secret}")))
    };
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let slot = parts.extensions.get::<AuditSlot>().cloned();
    let outcome = app
        .access
        .authenticate(Some(&authorization), client, false)
        .await;
    let outcome = outcome.and_then(|p| match p.method {
        AuthMethod::Password | AuthMethod::AccessToken => Ok(p),
        _ => Err(Error::Unauthorized(
            "log in with a password or an access token".into(),
        )),
    });
    let principal = match outcome {
        Ok(p) => p,
        Err(e) => {
            let shown = (!user.is_empty()).then(|| user.to_owned());
            if let Some(slot) = &slot {
                slot.emit(crate::audit::event::Event::AuthFailure {
                    user: shown,
                    why: e.to_string(),
                    scheme: None,
                });
            }
            let status = match &e {
                Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
                Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut r = login_page(ui.tls, status, user, Some(&e.to_string()));
            if let Error::TooManyRequests { retry_after } = e {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            return r;
        }
    };
    let binding = match app.access.bind_session(&principal).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return login_page(
                ui.tls,
                StatusCode::UNAUTHORIZED,
                user,
                Some("this login cannot open a session: use a password or an access token"),
            )
        }
        Err(e) => return views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let opened = match ui.sessions.open(binding) {
        Ok(o) => o,
        Err(e) => return views::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Some(slot) = &slot {
        slot.0.lock().unwrap_or_else(|p| p.into_inner()).principal = Some(principal.clone());
        slot.note("auth.success", Some("ui login".into()));
    }
    tracing::info!(
        user = principal.user.as_deref().unwrap_or("-"),
        method = principal.method.as_str(),
        "UI session opened"
    );
    let max = ui.sessions.lifetimes().max;
    let mut r = Redirect::to("/ui/").into_response();
    for c in [
        session::session_cookie(Some(&opened.id), ui.tls, max),
        session::login_cookie(None, ui.tls),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `POST /ui/logout`: ends the session on the server and clears the cookie.
pub async fn logout(posted: Posted) -> Response {
    let v = &posted.viewer;
    v.ui.sessions.close(&v.cookie);
    tracing::info!(user = v.user(), "UI session closed");
    let mut r = Redirect::to("/ui/login").into_response();
    let gone = session::session_cookie(None, v.ui.tls, std::time::Duration::ZERO);
    if let Ok(v) = HeaderValue::from_str(&gone) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
