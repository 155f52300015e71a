//! The thin HTTP layer: routing, middleware, and translation between requests and the
//! registry's plain types. Nothing below this module knows about HTTP.

pub mod distribution;
pub mod errors;
pub mod files;
pub mod routes;
pub mod sif;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::auth::Access;
use crate::farm::Farm;
use crate::registry::Registry;

/// Everything a request handler may touch.
pub struct App {
    pub registry: Registry,
    pub access: Arc<Access>,
    pub farm: Arc<Farm>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2", any(distribution::dispatch))
        .route("/v2/", any(distribution::dispatch))
        .route("/v2/{*rest}", any(distribution::dispatch))
        .route("/sif/{*rest}", get(sif::dispatch).head(sif::dispatch))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::map_response(api_version_header))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Every response says which API it speaks; Docker checks this on `/v2/`.
async fn api_version_header(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}
