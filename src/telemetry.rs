//! Prometheus metrics (`GET /metrics`). Labels never carry repository names or users, so the
//! endpoint reveals no private information and its cardinality stays bounded.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once; later calls (tests starting several servers) reuse it.
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            let upkeep = handle.clone();
            // Histograms need periodic upkeep to stay bounded in memory.
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
            let _ = HANDLE.set(handle);
        }
        Err(e) => tracing::warn!("metrics disabled: {e}"),
    }
}

pub async fn render() -> Response {
    match HANDLE.get() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are disabled\n").into_response(),
    }
}

/// Counts a finished HTTP request by method and status class. Both labels come from fixed
/// sets: HTTP allows any token as a method, so one the registry does not know counts as `OTHER`
/// (a client sending random methods must not create a series for each).
pub fn request(method: &axum::http::Method, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("hpc_registry_http_requests_total", "method" => method_label(method), "status" => class).increment(1);
}

/// The metrics label of a request method: the standard ones by name, anything else `OTHER`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Records a finished SIF build.
pub fn build_finished(outcome: &'static str, duration: Duration) {
    metrics::counter!("hpc_registry_sif_builds_total", "outcome" => outcome).increment(1);
    metrics::histogram!("hpc_registry_sif_build_seconds").record(duration.as_secs_f64());
}

/// Bytes of verified blobs committed.
pub fn blob_committed(bytes: u64) {
    metrics::counter!("hpc_registry_blob_bytes_committed_total").increment(bytes);
}
