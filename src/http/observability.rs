//! The operations endpoints and the request metrics: `/healthz`, `/readyz` (the checks are
//! [`crate::health`]), `/metrics` (the registry is [`crate::telemetry`]), the latency middleware
//! by route template, and the `/sif` download counters (inside authentication, by auth method).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use crate::auth::Principal;
use crate::telemetry;

/// `GET /healthz`: the process answers requests.
pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

/// `GET /readyz`: 200 when every condition holds, else 503 naming the failing ones.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness = app.health.check().await;
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        readiness.to_text(),
    )
        .into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = telemetry::Gauges {
        workers_alive: app.farm.live_workers(),
        disk: app
            .health
            .disk_space()
            .map(|s| (s.total_bytes, s.free_bytes))
            .ok(),
        audit_queued: app.audit.queued(),
    };
    telemetry::render(&app.registry.db, gauges).await
}

/// The route template of a request path: what the router matched, with every name, reference,
/// digest and session id replaced by a placeholder. Unknown paths are `other`.
pub fn route_template(path: &str) -> &'static str {
    match path {
        "/v2" | "/v2/" => return "/v2/",
        "/v2/_catalog" => return "/v2/_catalog",
        "/token" => return "/token",
        "/healthz" => return "/healthz",
        "/readyz" => return "/readyz",
        "/metrics" => return "/metrics",
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        // Repository names contain `/`: the operation is found from the right.
        return if rest.ends_with("/tags/list") {
            "/v2/{name}/tags/list"
        } else if rest.ends_with("/blobs/uploads/") || rest.ends_with("/blobs/uploads") {
            "/v2/{name}/blobs/uploads/"
        } else if rest.contains("/blobs/uploads/") {
            "/v2/{name}/blobs/uploads/{session}"
        } else if rest.contains("/blobs/") {
            "/v2/{name}/blobs/{digest}"
        } else if rest.contains("/manifests/") {
            "/v2/{name}/manifests/{reference}"
        } else if rest.contains("/referrers/") {
            "/v2/{name}/referrers/{digest}"
        } else {
            "/v2/other"
        };
    }
    if let Some(rest) = path.strip_prefix("/sif/") {
        return if rest.ends_with("/status") {
            "/sif/{reference}/status"
        } else if rest.ends_with("/log") {
            "/sif/{reference}/log"
        } else {
            "/sif/{reference}"
        };
    }
    if let Some(rest) = path.strip_prefix("/admin/") {
        let first = rest.split('/').next().unwrap_or_default();
        return match first {
            "prune" => "/admin/prune",
            "repositories" => "/admin/repositories/{name}",
            "usage" => "/admin/usage",
            "quotas" => "/admin/quotas",
            "scrub" => "/admin/scrub",
            "audit" => "/admin/audit",
            "users" => "/admin/users",
            "groups" => "/admin/groups",
            "tokens" => "/admin/tokens",
            _ => "/admin/other",
        };
    }
    "other"
}

/// Middleware: the latency histogram by route template and method (time to the response head;
/// a download's body streams afterwards and is measured by its bytes, not here).
pub async fn track_latency(req: Request, next: Next) -> Response {
    let route = route_template(req.uri().path());
    let method = telemetry::method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    telemetry::request_latency(route, method, started.elapsed());
    response
}

/// Middleware on `/sif` inside authentication: counts successful downloads by the caller's
/// authentication method, and the SIF bytes actually sent (counted as the body streams, so a
/// client that hangs up early is not counted for what it never received).
pub async fn track_sif(req: Request, next: Next) -> Response {
    let auth = req
        .extensions()
        .get::<Principal>()
        .map_or("anonymous", |p| p.method.as_str());
    let is_get = req.method() == Method::GET;
    let response = next.run(req).await;
    let status = response.status();
    // The SIF and squashfs views carry the image digest; status, log and errors do not.
    let is_sif = response.headers().contains_key("x-image-digest");
    if !(is_get && is_sif && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT)) {
        return response;
    }
    telemetry::sif_fetched(auth);
    let (parts, body) = response.into_parts();
    let counter = telemetry::sif_bytes_served();
    Response::from_parts(parts, Body::new(CountingBody::new(body, counter)))
}

/// A body that adds the length of every data frame it yields to a counter, and keeps the inner
/// body's size hint (so the response keeps its `Content-Length`).
struct CountingBody {
    inner: Body,
    counter: metrics::Counter,
    /// Counted but not yet added: one counter update per 1 MiB keeps atomics off the hot path.
    pending: AtomicU64,
}

const FLUSH_EVERY: u64 = 1 << 20;

impl CountingBody {
    fn new(inner: Body, counter: metrics::Counter) -> CountingBody {
        CountingBody {
            inner,
            counter,
            pending: AtomicU64::new(0),
        }
    }

    fn flush(&self) {
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n > 0 {
            self.counter.increment(n);
        }
    }
}

impl http_body::Body for CountingBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = self.pending.fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if n >= FLUSH_EVERY {
                        self.flush();
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.flush(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    /// A body dropped mid-way (the client hung up) still counts what it sent.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_never_carry_names_or_digests() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("/v2/", "/v2/"),
            (
                "/v2/alice/deep/tool/manifests/1.0",
                "/v2/{name}/manifests/{reference}",
            ),
            (
                &format!("/v2/alice/tool/blobs/{d}"),
                "/v2/{name}/blobs/{digest}",
            ),
            ("/v2/alice/tool/blobs/uploads/", "/v2/{name}/blobs/uploads/"),
            (
                "/v2/alice/tool/blobs/uploads/5f0c",
                "/v2/{name}/blobs/uploads/{session}",
            ),
            ("/v2/alice/tool/tags/list", "/v2/{name}/tags/list"),
            (
                &format!("/v2/alice/tool/referrers/{d}"),
                "/v2/{name}/referrers/{digest}",
            ),
            ("/sif/alice/tool:1", "/sif/{reference}"),
            ("/sif/alice/tool:1/status", "/sif/{reference}/status"),
            (
                "/admin/repositories/alice/tool",
                "/admin/repositories/{name}",
            ),
            ("/admin/whatever/alice", "/admin/other"),
            ("/token", "/token"),
            ("/alice/secret-project", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(route_template(path), want, "{path}");
        }
    }
}
