//! Streams a byte range of a blob as an HTTP response, with `Range` (single and suffix ranges →
//! 206, unless `If-Range` names other content: then 200), `ETag`/`If-None-Match` (304) and
//! immutable caching. Blobs and SIFs both use it.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

use crate::registry::error::{Error, Result};

/// A blob (or a window of one) to serve.
pub struct Served {
    pub blob: crate::storage::Blob,
    /// Where the served content starts in the blob (non-zero for a SIF's squashfs partition).
    pub offset: u64,
    pub len: u64,
    /// Strong validator, already quoted-free (e.g. the digest).
    pub etag: String,
    pub content_type: &'static str,
    /// Extra headers such as `Docker-Content-Digest`.
    pub extra: Vec<(&'static str, String)>,
}

pub async fn respond(method: &Method, request: &HeaderMap, served: Served) -> Result<Response> {
    let etag = format!("\"{}\"", served.etag);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, served.content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    for (name, value) in &served.extra {
        builder = builder.header(*name, value);
    }
    if if_none_match(request, &etag) {
        return build(builder.status(StatusCode::NOT_MODIFIED), Body::empty());
    }
    // A Range whose If-Range names other content is ignored: the client gets it all (200).
    let range = if if_range_holds(request, &etag) {
        byte_range(request, served.len)?
    } else {
        None
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, served.len),
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if let Some((start, end)) = range {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{}", served.len),
        );
    }
    if method == Method::HEAD {
        return build(builder, Body::empty());
    }
    // Positioned reads, never a mapping: a bad disk read fails this response, not the process
    // (see storage::ranges).
    let stream = crate::storage::ranges::stream(served.blob, served.offset + start, len);
    build(builder, Body::from_stream(stream))
}

fn build(builder: axum::http::response::Builder, body: Body) -> Result<Response> {
    builder
        .body(body)
        .map_err(|e| Error::Internal(format!("building response: {e}")))
}

fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// RFC 9110 §13.1.5: a `Range` counts only while `If-Range` (when sent) still names this
/// content. Entity tags compare strongly (so `W/"…"` never matches); an HTTP-date never matches
/// either, because these responses carry no `Last-Modified` it could be compared with.
fn if_range_holds(request: &HeaderMap, etag: &str) -> bool {
    match request.get(header::IF_RANGE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| v.trim() == etag),
    }
}

/// A single `Range: bytes=a-b`, `bytes=a-` or `bytes=-n`, as an inclusive range within `size`.
/// Multiple ranges are answered with the whole content, which RFC 9110 allows.
pub fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let invalid = || Error::InvalidRange { size };
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| invalid())?;
        if n == 0 || size == 0 {
            return Err(invalid());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| invalid())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| invalid())?
                .min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Err(invalid());
        }
        (start, end)
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        byte_range(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=-500", 100).unwrap(), Some((0, 99)));
        assert_eq!(range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert!(range("bytes=100-", 100).is_err());
        assert_eq!(range("bytes=0-1,5-6", 100).unwrap(), None);
    }

    #[test]
    fn if_range_compares_entity_tags_strongly_and_never_matches_a_date() {
        let holds = |v: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(header::IF_RANGE, HeaderValue::from_str(v).unwrap());
            }
            if_range_holds(&h, "\"sha256:ab\"")
        };
        assert!(holds(None));
        assert!(holds(Some("\"sha256:ab\"")));
        assert!(holds(Some(" \"sha256:ab\" ")));
        assert!(
            !holds(Some("W/\"sha256:ab\"")),
            "a weak tag is no strong match"
        );
        assert!(!holds(Some("\"sha256:cd\"")));
        assert!(!holds(Some("sha256:ab")), "an entity tag is quoted");
        assert!(
            !holds(Some("Wed, 02 Dec 2026 10:00:00 GMT")),
            "no Last-Modified is sent"
        );
    }
}
