//! Prometheus metrics (`GET /metrics`) that answer an admin's questions: is the build queue
//! moving, how long do builds and their phases take and why do they fail; how much SIF traffic
//! goes out and to which kind of client; how fast each route answers; how full the disk is and
//! what GC frees; whether quotas refuse pushes; whether the audit writer keeps up.
//!
//! Bounded cardinality by construction: every label value comes from a fixed set (route
//! templates, standard methods or `OTHER`, status classes, build states, failure classes, auth
//! methods, phase names). No repository, user, tag, digest or path ever becomes a label, so the
//! endpoint reveals nothing private and its size does not grow with the store.
//!
//! Gauges that describe the store (queue depth by state, oldest queued job, disk and stored
//! bytes, audit queue) are sampled from their sources on each scrape, so they are never stale.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::meta::Db;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const HTTP_SECONDS: &str = "hpc_registry_http_request_duration_seconds";
const BUILD_SECONDS: &str = "hpc_registry_sif_build_seconds";
const PHASE_SECONDS: &str = "hpc_registry_build_phase_seconds";

/// Request latencies: from a cached manifest (~1 ms) to a slow login or a big PUT (a minute).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Build and phase durations: a tiny image (a second) to a multi-GiB one (hours).
const BUILD_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Installs the global recorder once; later calls (tests starting several servers) reuse it.
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.into()), HTTP_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BUILD_SECONDS.into()), BUILD_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(PHASE_SECONDS.into()), BUILD_BUCKETS));
    match builder.and_then(|b| b.install_recorder()) {
        Ok(handle) => {
            let upkeep = handle.clone();
            // Histograms need periodic upkeep to stay bounded in memory.
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
            let _ = HANDLE.set(handle);
            describe();
        }
        Err(e) => tracing::warn!("metrics disabled: {e}"),
    }
}

/// HELP texts (promtool wants one for every metric) and units.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "hpc_registry_http_requests_total",
        "HTTP requests answered, by method and status class."
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "Time from request to response head, by route template and method."
    );
    describe_counter!(
        "hpc_registry_sif_builds_total",
        "SIF builds finished, by outcome (ready or failed)."
    );
    describe_histogram!(
        BUILD_SECONDS,
        Unit::Seconds,
        "Duration of a whole SIF build attempt, by outcome."
    );
    describe_histogram!(
        PHASE_SECONDS,
        Unit::Seconds,
        "Duration of each phase of a SIF build: convert (image to SIF) and import (hash, store, record)."
    );
    describe_counter!(
        "hpc_registry_build_failures_total",
        "Failed SIF build attempts, by class: permanent (never retried) or transient (retried)."
    );
    describe_gauge!(
        "hpc_registry_build_jobs",
        "SIF build jobs, by state (queued, building, ready, failed)."
    );
    describe_gauge!(
        "hpc_registry_build_oldest_queued_seconds",
        Unit::Seconds,
        "Age of the oldest job waiting for a build worker; 0 when none waits."
    );
    describe_gauge!(
        "hpc_registry_build_workers_alive",
        "In-process build workers running now."
    );
    describe_gauge!(
        "hpc_registry_sqlite_memory_bytes",
        Unit::Bytes,
        "Heap memory SQLite holds now: every connection's page cache, schema and prepared statements."
    );
    describe_counter!(
        "hpc_registry_sif_bytes_served_total",
        Unit::Bytes,
        "Bytes of SIF files (and their squashfs views) sent by /sif."
    );
    describe_counter!(
        "hpc_registry_sif_fetches_total",
        "Successful /sif downloads, by the caller's authentication method."
    );
    describe_counter!(
        "hpc_registry_blob_bytes_committed_total",
        Unit::Bytes,
        "Bytes of verified blobs committed by uploads."
    );
    describe_gauge!(
        "hpc_registry_storage_filesystem_size_bytes",
        Unit::Bytes,
        "Size of the filesystem holding the data directory."
    );
    describe_gauge!(
        "hpc_registry_storage_filesystem_free_bytes",
        Unit::Bytes,
        "Bytes the server may still write on the data directory's filesystem."
    );
    describe_gauge!(
        "hpc_registry_storage_used_bytes",
        Unit::Bytes,
        "Bytes stored for all namespaces (blobs, SIFs, manifests), as quotas count them."
    );
    describe_counter!(
        "hpc_registry_gc_freed_bytes_total",
        Unit::Bytes,
        "Bytes garbage collection removed from disk."
    );
    describe_counter!(
        "hpc_registry_quota_rejections_total",
        "Pushes (blob or manifest) refused for a namespace quota."
    );
    describe_gauge!(
        "hpc_registry_audit_queue_records",
        "Audit records waiting for the writer."
    );
    describe_gauge!(
        "hpc_registry_audit_writer_lag_seconds",
        Unit::Seconds,
        "How long the oldest record of the last written batch waited in the queue."
    );
    describe_counter!(
        "hpc_registry_audit_records_total",
        "Audit records written and indexed."
    );
    describe_counter!(
        "hpc_registry_audit_lost_total",
        "Audit records that could not be queued or written."
    );
    describe_counter!(
        "hpc_registry_audit_backpressure_total",
        "Requests that waited for room in a full audit queue."
    );
    describe_counter!(
        "hpc_registry_audit_suppressed_total",
        "Failure records not written for a client over its rate (counted in summaries)."
    );
}

/// Scrape-time numbers the caller reads from the running server (plain values, so this module
/// depends on none of their owners).
pub struct Gauges {
    pub workers_alive: usize,
    /// (size, free) bytes of the data directory's filesystem, if readable.
    pub disk: Option<(u64, u64)>,
    pub audit_queued: usize,
}

/// `GET /metrics`: samples the store's gauges from `db`, sets `gauges`, then renders the text
/// exposition format.
pub async fn render(db: &Arc<Db>, gauges: Gauges) -> Response {
    let Some(handle) = HANDLE.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are disabled\n").into_response();
    };
    sample(db, gauges).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// Build states; a row in any other state (none exists) would not become a label.
const JOB_STATES: [&str; 4] = ["queued", "building", "ready", "failed"];

async fn sample(db: &Arc<Db>, g: Gauges) {
    let counts = db
        .read(|c| {
            let counts = crate::meta::build_job_counts(c)?;
            let oldest = crate::meta::oldest_queued_job(c)?;
            let stored = crate::meta::stored_bytes(c)?;
            Ok((counts, oldest, stored))
        })
        .await;
    match counts {
        Ok((counts, oldest, stored)) => {
            for state in JOB_STATES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("hpc_registry_build_jobs", "state" => state).set(n as f64);
            }
            let age = oldest.map_or(0, |t| (crate::meta::now() - t).max(0));
            metrics::gauge!("hpc_registry_build_oldest_queued_seconds").set(age as f64);
            metrics::gauge!("hpc_registry_storage_used_bytes").set(stored.max(0) as f64);
        }
        Err(e) => tracing::warn!("metrics: cannot read the build queue: {e}"),
    }
    metrics::gauge!("hpc_registry_build_workers_alive").set(g.workers_alive as f64);
    if let Some((size, free)) = g.disk {
        metrics::gauge!("hpc_registry_storage_filesystem_size_bytes").set(size as f64);
        metrics::gauge!("hpc_registry_storage_filesystem_free_bytes").set(free as f64);
    }
    metrics::gauge!("hpc_registry_audit_queue_records").set(g.audit_queued as f64);
    metrics::gauge!("hpc_registry_sqlite_memory_bytes")
        .set(crate::meta::sqlite_memory_used() as f64);
}

/// Counts a finished HTTP request by method and status class. Both labels come from fixed
/// sets: HTTP allows any token as a method, so one the registry does not know counts as `OTHER`
/// (a client sending random methods must not create a series for each).
pub fn request(method: &Method, status: u16) {
    metrics::counter!("hpc_registry_http_requests_total", "method" => method_label(method), "status" => status_class(status)).increment(1);
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The metrics label of a request method: the standard ones by name, anything else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
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

/// A finished request's latency (to its response head) by route template and method.
pub fn request_latency(route: &'static str, method: &'static str, elapsed: Duration) {
    metrics::histogram!(HTTP_SECONDS, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
}

/// A successful SIF download by a caller authenticated with `auth` (a fixed method name).
pub fn sif_fetched(auth: &'static str) {
    metrics::counter!("hpc_registry_sif_fetches_total", "auth" => auth).increment(1);
}

/// The counter of SIF bytes sent, for a body that counts as it streams.
pub fn sif_bytes_served() -> metrics::Counter {
    metrics::counter!("hpc_registry_sif_bytes_served_total")
}

/// Records a finished SIF build.
pub fn build_finished(outcome: &'static str, duration: Duration) {
    metrics::counter!("hpc_registry_sif_builds_total", "outcome" => outcome).increment(1);
    metrics::histogram!(BUILD_SECONDS, "outcome" => outcome).record(duration.as_secs_f64());
}

/// A build phase's duration; `phase` is one of a fixed set named at the call sites.
pub fn build_phase(phase: &'static str, duration: Duration) {
    metrics::histogram!(PHASE_SECONDS, "phase" => phase).record(duration.as_secs_f64());
}

/// A failed build attempt: `permanent` failures are never retried.
pub fn build_failed(permanent: bool) {
    let class = if permanent { "permanent" } else { "transient" };
    metrics::counter!("hpc_registry_build_failures_total", "class" => class).increment(1);
}

/// Bytes of verified blobs committed.
pub fn blob_committed(bytes: u64) {
    metrics::counter!("hpc_registry_blob_bytes_committed_total").increment(bytes);
}

/// Bytes a prune removed from disk.
pub fn gc_freed(disk_bytes: u64) {
    metrics::counter!("hpc_registry_gc_freed_bytes_total").increment(disk_bytes);
}

/// A push refused for its namespace's quota.
pub fn quota_rejected() {
    metrics::counter!("hpc_registry_quota_rejections_total").increment(1);
}

/// How long the oldest record of a batch the audit writer just wrote had waited.
pub fn audit_written(oldest_wait: Duration) {
    metrics::gauge!("hpc_registry_audit_writer_lag_seconds").set(oldest_wait.as_secs_f64());
}
