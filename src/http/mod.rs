//! The thin HTTP layer: routing, middleware, and translation between requests and the
//! registry's plain types. Nothing below this module knows about HTTP.

pub mod admin;
pub mod admin_ops;
pub mod audit;
pub mod auth;
pub mod builder_api;
pub mod builds;
pub mod distribution;
pub mod errors;
pub mod files;
pub mod jobs;
pub mod jobscript;
pub mod notifications;
pub mod observability;
pub mod panic;
pub mod reload;
pub mod routes;
pub mod sif;
pub mod storage_admin;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::auth::Access;
use crate::farm::Farm;
use crate::lifecycle::Pruner;
use crate::registry::Registry;

/// Everything a request handler may touch.
pub struct App {
    pub registry: Arc<Registry>,
    pub access: Arc<Access>,
    pub farm: Arc<Farm>,
    /// The audit trail's writer.
    pub audit: crate::audit::Auditor,
    /// Online garbage collection, retention and repository deletes.
    pub pruner: Arc<Pruner>,
    /// What `/readyz` checks (and the storage metrics read).
    pub health: Arc<crate::health::Health>,
    /// Namespace quotas and usage, for the admin API.
    pub quotas: crate::quota::Quotas,
    /// Default scrub speed in bytes/s (`[scrub] rate`), so serving keeps its disk bandwidth.
    pub scrub_rate: u64,
    /// The batch-script generator's site templates (`[[ui.templates]]`, validated at start
    /// and at every reload).
    pub templates: crate::jobscript::LiveTemplates,
    /// Live reload of the configuration (`POST /admin/reload`, SIGHUP).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Background admin jobs (`/admin/jobs`: scrub).
    pub jobs: Arc<crate::admin_jobs::Jobs>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

pub fn router(app: Arc<App>) -> Router {
    router_with(app, Router::new())
}

/// [`router`] with more routes (the web UI's) inside the same middleware: audit, metrics, trace.
pub fn router_with(app: Arc<App>, pages: Router<Arc<App>>) -> Router {
    // Routes that act for a caller: authenticated once per request by the middleware.
    let admin = Router::new()
        .route("/admin/prune", any(admin::prune))
        .route("/admin/repositories/{*name}", any(admin::delete_repository))
        .route("/admin/usage", get(storage_admin::usage))
        .route("/admin/quotas", get(storage_admin::list_quotas))
        .route(
            "/admin/quotas/{namespace}",
            get(storage_admin::get_quota)
                .put(storage_admin::set_quota)
                .delete(storage_admin::clear_quota),
        )
        .route("/admin/scrub", axum::routing::post(storage_admin::scrub))
        .route("/admin/builds", get(builds::list))
        .route(
            "/admin/builds/retry-failed",
            axum::routing::post(builds::retry_failed),
        )
        .route(
            "/admin/builds/{id}/{action}",
            axum::routing::post(builds::act),
        )
        .route("/admin/notifications", get(notifications::list))
        .route(
            "/admin/notifications/{id}/retry",
            axum::routing::post(notifications::retry),
        )
        .route(
            "/admin/builders",
            get(builder_api::list).post(builder_api::create),
        )
        .route(
            "/admin/builders/{name}",
            axum::routing::delete(builder_api::revoke),
        )
        .route("/admin/reload", axum::routing::post(reload::reload))
        .route("/admin/jobs", get(jobs::list).post(jobs::start))
        .route("/admin/jobs/{id}", get(jobs::get))
        .route(
            "/admin/jobs/{id}/{action}",
            axum::routing::post(jobs::cancel),
        )
        .route("/admin/{*rest}", any(admin::dispatch))
        // Inside authentication (it reads the principal): read-only credentials only look.
        .route_layer(axum::middleware::from_fn(admin::read_only_guard));
    let authenticated = Router::new()
        .route("/v2", any(distribution::dispatch))
        .route("/v2/", any(distribution::dispatch))
        .route("/v2/{*rest}", any(distribution::dispatch))
        .merge(sif_routes())
        .route("/api/jobscript/templates", get(jobscript::templates))
        .merge(admin)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::authenticate,
        ));
    Router::new()
        .merge(authenticated)
        .merge(pages)
        .route("/token", any(auth::token))
        .merge(builder_routes())
        .route("/healthz", get(observability::healthz))
        .route("/readyz", get(observability::readyz))
        .route("/metrics", get(observability::metrics))
        // Innermost, so the metrics, the audit middleware and the trace see a panic as a 500.
        .layer(panic::layer())
        .layer(axum::middleware::map_response(api_version_header))
        // Inside the seam (it needs the slot), outside everything else (it needs the final status).
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            audit::record,
        ))
        .layer(axum::middleware::from_fn(auth::audit_seam))
        .layer(axum::middleware::from_fn(observability::track_latency))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Every response says which API it speaks (Docker checks this on `/v2/`), and is counted.
async fn api_version_header(method: axum::http::Method, mut response: Response) -> Response {
    crate::telemetry::request(&method, response.status().as_u16());
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

/// `/builder/v1` (outside the main authentication: builders authenticate with their own
/// credential, which nothing else accepts; see `builder_api`).
fn builder_routes() -> Router<Arc<App>> {
    use axum::routing::post;
    Router::new()
        .route("/builder/v1/claim", post(builder_api::claim))
        .route(
            "/builder/v1/jobs/{id}/blobs/{digest}",
            get(builder_api::blob).head(builder_api::blob),
        )
        .route(
            "/builder/v1/jobs/{id}/sif",
            axum::routing::put(builder_api::upload),
        )
        .route(
            "/builder/v1/jobs/{id}/enroot",
            axum::routing::put(builder_api::upload_enroot),
        )
        .route(
            "/builder/v1/jobs/{id}/{action}",
            post(builder_api::job_action),
        )
}

/// `/sif`, with the download metrics inside authentication (they count by auth method).
fn sif_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/sif/{*rest}", get(sif::dispatch).head(sif::dispatch))
        .route_layer(axum::middleware::from_fn(observability::track_sif))
}
