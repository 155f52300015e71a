//! The web UI at `/ui/`: server-rendered HTML (maud templates compiled into the binary), every
//! asset embedded, a little JavaScript for live status and copy buttons, served by the same
//! binary as the registry.
//!
//! A client of the registry's own rules: a session ([`session`]) is bound to a password or
//! access-token login made through `auth`'s code path (limits and audit included), the caller is
//! re-resolved on every request, and every page shows only what that caller may read (the
//! catalog's rule; another user's repository is the same 404 as one that does not exist). The
//! session cookie authenticates `/ui/` only, never `/v2`, `/sif` or `/admin`. Handlers are thin:
//! the page data are plain functions over the registry, the farm, `auth::manage`, the quotas and
//! the audit index ([`data`]); the views are maud functions ([`views`]).

// The UI's helpers answer early with a whole page (`Err(Response)`), once per request: boxing
// it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod assets;
pub mod data;
pub mod guard;
pub mod lint;
pub mod login;
pub mod pages;
pub mod script;
pub mod session;
pub mod tokens;
pub mod views;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::http::App;

/// What the UI keeps besides the registry's state.
pub struct Ui {
    pub sessions: session::Sessions,
    /// Whether the listener speaks HTTPS: then the session cookie is `Secure`.
    pub tls: bool,
}

impl Ui {
    pub fn new(lifetimes: session::Lifetimes, tls: bool) -> Ui {
        Ui {
            sessions: session::Sessions::new(lifetimes),
            tls,
        }
    }
}

/// The `/ui` routes, to be merged into the server's router (inside its audit and trace layers).
pub fn router(ui: Arc<Ui>) -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(pages::to_home))
        .route("/ui/", get(pages::home))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/logout", post(login::logout))
        .route("/ui/r/{*name}", get(pages::repository))
        .route("/ui/i/{*reference}", get(pages::image))
        .route("/ui/api/status/{*reference}", get(pages::status_json))
        .route("/ui/api/counters", get(admin::counters_json))
        .route("/ui/script", get(script::page).post(script::generate))
        .route("/ui/lint", get(lint::page).post(lint::check))
        .route("/ui/tokens", get(tokens::page).post(tokens::create))
        .route("/ui/tokens/revoke", post(tokens::revoke))
        .route("/ui/admin", get(admin::overview))
        .route("/ui/admin/", get(admin::overview))
        .route("/ui/admin/users", get(admin::users))
        .route("/ui/admin/usage", get(admin::usage))
        .route("/ui/admin/builds", get(admin::builds))
        .route("/ui/admin/builds/act", post(admin::build_action))
        .route("/ui/admin/audit", get(admin::audit))
        .route("/ui/assets/{file}", get(assets::serve))
        // Not a fallback: the router is merged into the server's, whose unknown paths are not
        // the UI's.
        .route("/ui/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(Extension(ui))
}
