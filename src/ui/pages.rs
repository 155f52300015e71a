//! The researcher pages' handlers: thin, each one builds its data ([`super::data`]) and renders
//! it ([`super::views`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;

use super::guard::{self, Viewer};
use super::{data, views};
use crate::http::App;
use crate::registry::error::Error;

/// A registry error as a page: what the caller may not read is the same 404 as what does not
/// exist (the errors themselves make no difference between the two).
pub fn fail(e: Error) -> Response {
    let status = match &e {
        Error::NameUnknown(_) | Error::ManifestUnknown(_) => StatusCode::NOT_FOUND,
        Error::NameInvalid(_) | Error::TagInvalid(_) | Error::DigestInvalid(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::Unauthorized(_) | Error::Denied(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match status {
        StatusCode::NOT_FOUND => "No such image or repository (or you may not read it).".into(),
        _ => e.to_string(),
    };
    views::error_page(status, &message)
}

/// What follows `prefix` in the request path, percent-decoded.
pub fn path_rest(uri: &Uri, prefix: &str) -> Result<String, Response> {
    let rest = uri.path().strip_prefix(prefix).unwrap_or("");
    crate::urlcode::decode_segment(rest)
        .map_err(|e| views::error_page(StatusCode::BAD_REQUEST, &format!("malformed path: {e}")))
}

/// `GET /ui`: the home page is `/ui/`.
pub async fn to_home() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the caller's repositories, their groups' and the others they may read.
pub async fn home(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    match data::listing(&app, &viewer.principal).await {
        Ok(listing) => views::respond(StatusCode::OK, views::repos::home(&viewer.nav(), &listing)),
        Err(e) => fail(e),
    }
}

/// `GET /ui/r/<repository>`: its tags with digests, sizes and push times.
pub async fn repository(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> Response {
    let raw = match path_rest(&uri, "/ui/r/") {
        Ok(r) => r,
        Err(r) => return r,
    };
    match data::repository_tags(&app, &viewer.principal, &raw).await {
        Ok((repo, tags)) => views::respond(
            StatusCode::OK,
            views::repos::repository(&viewer.nav(), &repo, &tags),
        ),
        Err(e) => fail(e),
    }
}

/// `GET /ui/i/<repository>:<tag>`: platforms, layers, the SIF's state, the copy lines.
pub async fn image(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let raw = match path_rest(&uri, "/ui/i/") {
        Ok(r) => r,
        Err(r) => return r,
    };
    match data::image_page(&app, &viewer.principal, &raw).await {
        Ok(page) => {
            let lines = data::copy_lines(&guard::request_host(&headers), &page.image);
            views::respond(
                StatusCode::OK,
                views::image::image(&viewer.nav(), &page, &lines),
            )
        }
        Err(e) => fail(e),
    }
}

/// `GET /ui/api/status/<repository>:<tag>`: the SIF's state as JSON, polled by ui.js. The same
/// 404 for what the caller may not read as for what does not exist.
pub async fn status_json(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> Response {
    let raw = match path_rest(&uri, "/ui/api/status/") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let answer = async {
        let image = data::ImageRef::parse(&raw)?;
        data::readable_repository(&app, &viewer.principal, image.repo.as_str())?;
        data::sif_state(&app, &viewer.principal, &image).await
    };
    match answer.await {
        Ok(state) if state.state != "unknown" => {
            // The same fragment the page renders: ui.js swaps it in (escaped here, not there).
            let html = views::image::sif_state(&state).into_string();
            let mut v = serde_json::to_value(&state).unwrap_or_default();
            v["html"] = html.into();
            Json(v).into_response()
        }
        Ok(_) | Err(Error::NameUnknown(_) | Error::ManifestUnknown(_)) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such image (or you may not read it)"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Any other `/ui/…` path.
pub async fn not_found() -> Response {
    views::error_page(StatusCode::NOT_FOUND, "There is no such page.")
}
