//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test
//! (`tests/fuzz_replay.rs`), not an API.
//!
//! Each function takes the raw bytes a client controls, hands them to one parser the way a
//! request does, and checks the few properties every accepted result must have. Errors are
//! expected and ignored; a panic, a hang or an allocation blow-up is a bug in the parser (a
//! request that would get no answer). The parsers themselves stay private to their modules: only
//! these wrappers are public, so the fuzz crate needs nothing else from the library.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::auth::{jwt, munge};
use crate::http::{distribution, files, routes};
use crate::registry::manifests::{self, Kind};
use crate::registry::names::{Digest, Reference, RepositoryName, Tag};
use crate::urlcode;

/// `PUT /v2/<name>/manifests/<ref>`: the input is `<Content-Type>\n<body>` (an empty first line,
/// or no newline at all, means no Content-Type header).
pub fn manifest(data: &[u8]) {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(String::from_utf8_lossy(&data[..i])), &data[i + 1..]),
        None => (None, data),
    };
    let content_type = content_type.as_deref().filter(|c| !c.is_empty());
    let Ok(parsed) = manifests::parse(content_type, body) else {
        return;
    };
    // An accepted manifest names only digests the blob store can use as file names.
    for r in &parsed.references {
        assert!(Digest::parse(&r.digest).is_ok(), "reference {:?}", r.digest);
        assert!(r.size >= 0);
    }
    if let Some(s) = &parsed.subject {
        assert!(Digest::parse(s).is_ok(), "subject {s:?}");
    }
    let is_index = matches!(
        parsed.media_type.as_str(),
        manifests::OCI_INDEX | manifests::DOCKER_MANIFEST_LIST
    );
    assert_eq!(
        is_index,
        parsed.kind == Kind::Index,
        "{}",
        parsed.media_type
    );
}

/// Repository names, tags, digests and references as they come out of a `/v2/` path, and the
/// path router that splits them.
pub fn names(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    if let Ok(name) = RepositoryName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert!(s.starts_with(name.namespace()));
        // A valid name can never climb out of its namespace or hide an empty component.
        assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    }
    if let Ok(tag) = Tag::parse(s) {
        assert_eq!(tag.as_str(), s);
        assert!(!s.contains('/') && !s.contains(':'));
    }
    if let Ok(digest) = Digest::parse(s) {
        assert_eq!(digest.as_str(), s);
        // The hex part becomes a file name in the blob store.
        let hex = digest.hex();
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(format!("{}:{hex}", digest.algorithm().name()), s);
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Some(route) = routes::parse(s) {
        // Every raw part the router hands out is a piece of the path.
        let parts: Vec<&str> = match route {
            routes::Route::Base | routes::Route::Catalog => vec![],
            routes::Route::Tags { name } | routes::Route::UploadStart { name } => vec![name],
            routes::Route::Manifest { name, reference } => vec![name, reference],
            routes::Route::Blob { name, digest } | routes::Route::Referrers { name, digest } => {
                vec![name, digest]
            }
            routes::Route::Upload { name, session } => vec![name, session],
        };
        for p in parts {
            assert!(s.contains(p));
        }
    }
}

/// `Range` on blob and SIF downloads and `Content-Range` on upload PATCHes: the input is the
/// content size (8 bytes, little-endian, when present; the blob size for `Range`, the
/// Content-Length for `Content-Range`) followed by the header value.
pub fn range(data: &[u8]) {
    let (size, value) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (data.len() as u64, data),
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, value.clone());
    match files::byte_range(&headers, size) {
        Ok(Some((start, end))) => assert!(start <= end && end < size, "{start}-{end}/{size}"),
        Ok(None) => {}
        // The 416 answer carries `Content-Range: bytes */<size>`.
        Err(e) => drop(e.into_response()),
    }
    // On a PATCH the size stands for the Content-Length the range is checked against.
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_RANGE, value);
    match distribution::content_range(&headers) {
        Ok(Some(r)) => {
            if distribution::chunk_matches_length(&r, size) {
                assert!(r.start <= r.end);
            }
        }
        Ok(None) => {}
        Err(e) => drop(e.into_response()),
    }
}

/// Query-string and path-segment decoding (`crate::urlcode`, the one decoder every handler
/// uses: `/token`'s `scope` values, the admin API's queries and path segments). The input is the
/// raw query as a client sends it, not necessarily UTF-8. Whatever decodes must encode and decode
/// back to itself, and a refusal is an answer (400), never a panic.
pub fn query(data: &[u8]) {
    if let Ok(pairs) = urlcode::parse_form(data) {
        assert!(pairs.len() <= data.iter().filter(|&&b| b == b'&').count() + 1);
        let again = urlcode::build_form(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let reparsed = urlcode::parse_form(again.as_bytes());
        let kept: Vec<_> = pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect();
        assert_eq!(
            reparsed.ok().map(|p| p
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .collect::<Vec<_>>()),
            Some(kept)
        );
    }
    let _ = urlcode::form_values(data, "scope");
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(decoded) = urlcode::decode_segment(s) {
            assert_eq!(
                urlcode::decode_segment(&urlcode::encode(&decoded)).ok(),
                Some(decoded)
            );
        }
    }
}

/// Key the JWT target signs with; any fixed key does.
const FUZZ_KEY: [u8; 32] = [7; 32];
/// "Now" for token checks, fixed so that a run is reproducible.
const FUZZ_NOW: i64 = 1_700_000_000;

/// Bearer tokens (`Authorization: Bearer <jwt>`). A fuzzer cannot forge HMAC-SHA256, so besides
/// verifying the input as a token, it also splits the input at the first NUL into a header and a
/// payload, signs them with the test key and verifies that, which reaches the claims parser and
/// the validity checks behind the signature.
pub fn jwt(data: &[u8]) {
    let key = jwt::TokenKey::from_bytes(FUZZ_KEY);
    if let Ok(token) = std::str::from_utf8(data) {
        // Only a token signed with the key verifies (the corpus holds one); its claims must be
        // ours and current.
        if let Ok(claims) = key.verify(token, FUZZ_NOW) {
            check_claims(&claims);
        }
    }
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (header, payload) = (&data[..nul], &data[nul + 1..]);
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&FUZZ_KEY)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let Ok(claims) = key.verify(&format!("{signing_input}.{sig}"), FUZZ_NOW) else {
        return;
    };
    check_claims(&claims);
    // What verifies must survive a round trip through the issuer unchanged.
    let again = key.sign(&claims).map(|t| key.verify(&t, FUZZ_NOW));
    assert_eq!(again.ok(), Some(Ok(claims)));
}

fn check_claims(claims: &jwt::Claims) {
    assert!(claims.iss == jwt::SERVICE && claims.aud == jwt::SERVICE);
    assert!(FUZZ_NOW < claims.exp);
}

/// `unmunge --numeric` output as the registry reads it (lossy UTF-8 of stdout), and the
/// credential syntax check that runs before `unmunge` is started.
pub fn unmunge(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(uid) = munge::parse_metadata(&text) {
        // A uid is only ever taken from output that reported success.
        assert!(text.contains("STATUS"), "uid {uid} without a status");
    }
    let _ = munge::well_formed(text.trim());
}
