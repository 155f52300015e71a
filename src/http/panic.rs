//! A panic in a handler or middleware becomes a 500 with the spec's error body, a log line and
//! an audit record, never a dropped connection. The layer sits inside the audit middleware, which
//! sees the [`Panicked`] mark on the response and records `request.panic`.

use std::any::Any;

use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::registry::error::Error;

/// On a response made from a caught panic: the panic's message, for the audit record.
#[derive(Debug, Clone)]
pub struct Panicked(pub String);

/// The layer; apply it inside the audit middleware.
pub fn layer() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(respond as fn(Box<dyn Any + Send + 'static>) -> Response)
}

fn respond(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    // `Error::Internal` logs the error and keeps its text out of the body.
    let mut response =
        Error::Internal(format!("request handler panicked: {message}")).into_response();
    response.extensions_mut().insert(Panicked(message));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    /// The layer itself: a panicking handler answers 500 with the spec's body and the mark the
    /// audit middleware records. (Without the layer, hyper drops the connection.)
    #[tokio::test]
    async fn a_panic_becomes_a_500() {
        async fn boom() -> &'static str {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index, as a slicing bug in a parser would do.
            let i = v.len() + 1;
            if v[i] == 0 {
                return "unreachable";
            }
            "unreachable"
        }
        let app = Router::new().route("/boom", get(boom)).layer(layer());
        let req = axum::http::Request::get("/boom")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(req).await.unwrap();
        assert_eq!(response.status(), 500);
        let mark = response.extensions().get::<Panicked>().cloned();
        assert!(mark.is_some_and(|m| m.0.contains("index out of bounds")));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNKNOWN");
    }
}
