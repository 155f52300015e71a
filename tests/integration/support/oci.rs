//! OCI distribution-spec helpers shared by `conformance.rs` and `bad_input.rs`.
//!
//! * [`Client`] / [`Resp`]: a thin `reqwest::blocking` wrapper that behaves on the wire like the Go
//!   client (reggie/resty) of the official conformance suite: no redirects followed, an explicit
//!   `Content-Length` on every request that carries a body (also an empty one), the suite's
//!   User-Agent, and the response body always read.
//! * [`raw_request`]: a plain HTTP/1.1 request over a TCP socket, for request paths an URL library
//!   would normalise (`..`, `//`).
//! * The suite's data model (`image.go`: [`GoManifest`], [`GoIndex`], [`GoDescriptor`], [`GoImage`]),
//!   serialised like Go's `json.MarshalIndent(v, "", "\t")` (struct field order, `omitempty`,
//!   `[]byte` as base64 and nil `[]byte` as `null`).
//! * Digests, error-body parsing, and data-directory snapshots for "nothing partial was stored" checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;
use serde::Serialize;
use sha2::{Digest as _, Sha256, Sha512};

// ---------------------------------------------------------------------------------------------
// Media types and error codes
// ---------------------------------------------------------------------------------------------

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MT_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const MT_OCTET: &str = "application/octet-stream";

/// The `errorCodes` list of the official suite (`setup.go`): what `ContainElement(errorResponses[0].Code)`
/// accepts. It has the legacy Docker codes `MANIFEST_UNVERIFIED` and `TAG_INVALID` but not `TOOMANYREQUESTS`.
pub const SUITE_ERROR_CODES: [&str; 15] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
];

/// The 14 codes of distribution-spec v1.1 §Error Codes ("The `code` field MUST be one of the following").
pub const SPEC_ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

// ---------------------------------------------------------------------------------------------
// Digests and random data
// ---------------------------------------------------------------------------------------------

pub fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512_of(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// `n` random bytes (fresh every run, like the suite's seeded `randomBlob`).
pub fn random_bytes(n: usize) -> Vec<u8> {
    super::random_bytes(n)
}

/// The suite's `randomString(n)`: letters from `0-9A-Za-z-`.
pub fn random_string(n: usize) -> String {
    const LETTERS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-";
    random_bytes(n)
        .into_iter()
        .map(|b| LETTERS[(b as usize) % LETTERS.len()] as char)
        .collect()
}

/// A blob of the suite: content, its digest, and its length as the string the suite sends.
#[derive(Clone, Debug)]
pub struct TestBlob {
    pub content: Vec<u8>,
    pub digest: String,
}

impl TestBlob {
    pub fn new(content: Vec<u8>) -> TestBlob {
        let digest = sha256_of(&content);
        TestBlob { content, digest }
    }
    pub fn sha512(content: Vec<u8>) -> TestBlob {
        let digest = sha512_of(&content);
        TestBlob { content, digest }
    }
    pub fn len(&self) -> usize {
        self.content.len()
    }
    pub fn len_str(&self) -> String {
        self.content.len().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Go-compatible JSON of the suite's image.go types
// ---------------------------------------------------------------------------------------------

/// `json.MarshalIndent(v, "", "\t")`.
pub fn go_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serialize test document");
    out
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `descriptor` of the suite's image.go (lower-case version used with setup.go's referrers data).
#[derive(Serialize, Clone, Debug, Default)]
pub struct GoDescriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// base64 of the content (`[]byte`, omitempty)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<GoPlatform>,
    #[serde(rename = "artifactType", skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
    /// `[]byte` without omitempty: base64, or `null` when nil.
    #[serde(rename = "newUnspecifiedField")]
    pub new_unspecified_field: Option<String>,
}

impl GoDescriptor {
    pub fn of(media_type: &str, blob: &TestBlob) -> GoDescriptor {
        GoDescriptor {
            media_type: media_type.to_string(),
            digest: blob.digest.clone(),
            size: blob.len() as i64,
            ..Default::default()
        }
    }
    pub fn of_bytes(media_type: &str, bytes: &[u8]) -> GoDescriptor {
        GoDescriptor::of(media_type, &TestBlob::new(bytes.to_vec()))
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct GoPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct GoManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: i64,
    #[serde(rename = "mediaType", skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(rename = "artifactType", skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
    pub config: GoDescriptor,
    pub layers: Vec<GoDescriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<GoDescriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct GoIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: i64,
    #[serde(rename = "mediaType", skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(rename = "artifactType", skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
    pub manifests: Vec<GoDescriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<GoDescriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct GoRootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// `image` (the config) of the suite's image.go.
#[derive(Serialize, Clone, Debug, Default)]
pub struct GoImage {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub author: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub os: String,
    pub rootfs: GoRootFs,
}

/// A fresh, unique image config like the suite's (random author).
pub fn random_config() -> TestBlob {
    let img = GoImage {
        author: random_string(16),
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: GoRootFs {
            kind: "layers".into(),
            diff_ids: vec![],
        },
        ..Default::default()
    };
    TestBlob::new(go_json(&img))
}

/// An image manifest (OCI, with mediaType) over `config` and `layers`, serialised Go-style.
pub fn image_manifest(config: &TestBlob, layers: &[(&str, &TestBlob)]) -> TestBlob {
    let m = GoManifest {
        schema_version: 2,
        media_type: MT_OCI_MANIFEST.into(),
        config: GoDescriptor::of(MT_OCI_CONFIG, config),
        layers: layers
            .iter()
            .map(|(mt, b)| GoDescriptor::of(mt, b))
            .collect(),
        ..Default::default()
    };
    TestBlob::new(go_json(&m))
}

/// The `mediaType` field of a manifest document, if any (the newer suite's `detectMediaType`).
pub fn detect_media_type(body: &[u8]) -> String {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return MT_OCI_MANIFEST.to_string(),
    };
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        if !mt.is_empty() {
            return mt.to_string();
        }
    }
    if v.get("manifests").is_some() {
        MT_OCI_INDEX.to_string()
    } else {
        MT_OCI_MANIFEST.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A response with its body read, and the request that produced it (for failure messages).
#[derive(Clone, Debug)]
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A parsed entry of an OCI error body.
#[derive(Clone, Debug)]
pub struct ErrorEntry {
    pub code: String,
    pub message: String,
    pub detail: serde_json::Value,
}

impl Resp {
    /// First value of header `name` (case-insensitive), like Go's `Header().Get`; "" when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn is_2xx(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("response body is not JSON ({e}): {}", self.describe()))
    }

    /// reggie's `resp.Errors()`: the `errors` array of an OCI error body.
    pub fn errors(&self) -> Result<Vec<ErrorEntry>, String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("error body is not JSON ({e}): {}", self.describe()))?;
        let arr = v
            .get("errors")
            .and_then(|e| e.as_array())
            .ok_or_else(|| format!("error body has no `errors` array: {}", self.describe()))?;
        let mut out = Vec::new();
        for e in arr {
            out.push(ErrorEntry {
                code: e
                    .get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                detail: e.get("detail").cloned().unwrap_or(serde_json::Value::Null),
            });
        }
        Ok(out)
    }

    /// `errors[0].code`, or a description of why there is none.
    pub fn first_code(&self) -> Result<String, String> {
        let errs = self.errors()?;
        errs.first().map(|e| e.code.clone()).ok_or_else(|| {
            format!(
                "error body has an empty `errors` array: {}",
                self.describe()
            )
        })
    }

    /// `Location` resolved against the request URL (absolute), like reggie's `GetAbsoluteLocation`.
    pub fn location_abs(&self) -> Option<String> {
        let loc = self.header("Location");
        if loc.is_empty() {
            return None;
        }
        Url::parse(&self.url)
            .ok()?
            .join(&loc)
            .ok()
            .map(|u| u.to_string())
    }

    /// reggie's `GetRelativeLocation`: path (+ query) of `Location`, host dropped.
    pub fn location_rel(&self) -> String {
        let loc = self.header("Location");
        if loc.is_empty() {
            return String::new();
        }
        match Url::parse(&self.url).ok().and_then(|u| u.join(&loc).ok()) {
            Some(u) => match u.query() {
                Some(q) => format!("{}?{}", u.path(), q),
                None => u.path().to_string(),
            },
            None => loc,
        }
    }

    /// One-paragraph description: request, status, headers, body (truncated).
    pub fn describe(&self) -> String {
        let mut s = format!("{} {} -> {}", self.method, self.url, self.status);
        for (k, v) in &self.headers {
            let k2 = k.to_ascii_lowercase();
            if k2 == "date" {
                continue;
            }
            let _ = write!(s, "\n    {k}: {v}");
        }
        if !self.body.is_empty() {
            let text = String::from_utf8_lossy(&self.body);
            let shown: String = text.chars().take(1500).collect();
            let more = if text.chars().count() > 1500 {
                " ..."
            } else {
                ""
            };
            let _ = write!(s, "\n    body ({} bytes): {shown}{more}", self.body.len());
        }
        s
    }
}

/// The HTTP client of the mirrored suite.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base_url: &str) -> Client {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("distribution-spec-conformance-tests")
            .timeout(Duration::from_secs(300))
            .build()
            .expect("build reqwest client");
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// `path_or_url` as an absolute URL: absolute URLs stay, paths are put under the base URL.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else if path_or_url.starts_with('/') {
            format!("{}{}", self.base, path_or_url)
        } else {
            format!("{}/{}", self.base, path_or_url)
        }
    }

    /// Sends one request. `body: Some(..)` always goes with an explicit `Content-Length` (also 0),
    /// as Go's client does for POST/PUT/PATCH.
    pub fn send(
        &self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let url = self.url(path_or_url);
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("bad method {method}: {e}"))?;
        let mut rb = self.http.request(m, &url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            {
                rb = rb.header("Content-Length", b.len().to_string());
            }
            rb = rb.body(b);
        }
        let resp = rb
            .send()
            .map_err(|e| format!("{method} {url}: transport error: {e:#}"))?;
        let status = resp.status().as_u16();
        let hdrs: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .bytes()
            .map_err(|e| format!("{method} {url}: reading the response body: {e:#}"))?
            .to_vec();
        Ok(Resp {
            method: method.to_string(),
            url,
            status,
            headers: hdrs,
            body,
        })
    }

    pub fn get(&self, p: &str) -> Result<Resp, String> {
        self.send("GET", p, &[], None)
    }
    pub fn head(&self, p: &str) -> Result<Resp, String> {
        self.send("HEAD", p, &[], None)
    }
    pub fn delete(&self, p: &str) -> Result<Resp, String> {
        self.send("DELETE", p, &[], None)
    }

    /// POST `/v2/<name>/blobs/uploads/` with an empty body (`Content-Length: 0`).
    pub fn start_upload(&self, name: &str) -> Result<Resp, String> {
        self.send(
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            &[],
            Some(vec![]),
        )
    }

    /// POST then PUT `content` with `?digest=`; returns the PUT response. Errors only on transport
    /// failures or a POST without `Location`.
    pub fn push_blob_with_digest(
        &self,
        name: &str,
        content: &[u8],
        digest: &str,
    ) -> Result<Resp, String> {
        let post = self.start_upload(name)?;
        if post.header("Location").is_empty() {
            return Err(format!(
                "POST of an upload session returned no Location: {}",
                post.describe()
            ));
        }
        let url = with_query(&self.url(&post.location_rel()), "digest", digest);
        self.send(
            "PUT",
            &url,
            &[("Content-Type", MT_OCTET)],
            Some(content.to_vec()),
        )
    }

    pub fn push_blob(&self, name: &str, blob: &TestBlob) -> Result<Resp, String> {
        self.push_blob_with_digest(name, &blob.content, &blob.digest)
    }

    /// PUT a manifest with an explicit Content-Type.
    pub fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Resp, String> {
        self.send(
            "PUT",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Content-Type", content_type)],
            Some(body.to_vec()),
        )
    }

    pub fn get_manifest(&self, name: &str, reference: &str) -> Result<Resp, String> {
        self.send(
            "GET",
            &format!("/v2/{name}/manifests/{reference}"),
            &[(
                "Accept",
                &format!(
                    "{MT_OCI_MANIFEST}, {MT_OCI_INDEX}, {MT_DOCKER_MANIFEST}, {MT_DOCKER_LIST}"
                ),
            )],
            None,
        )
    }

    pub fn head_manifest(&self, name: &str, reference: &str) -> Result<Resp, String> {
        self.send(
            "HEAD",
            &format!("/v2/{name}/manifests/{reference}"),
            &[(
                "Accept",
                &format!(
                    "{MT_OCI_MANIFEST}, {MT_OCI_INDEX}, {MT_DOCKER_MANIFEST}, {MT_DOCKER_LIST}"
                ),
            )],
            None,
        )
    }

    pub fn head_blob(&self, name: &str, digest: &str) -> Result<Resp, String> {
        self.head(&format!("/v2/{name}/blobs/{digest}"))
    }

    pub fn get_blob(&self, name: &str, digest: &str) -> Result<Resp, String> {
        self.get(&format!("/v2/{name}/blobs/{digest}"))
    }

    /// `GET /v2/<name>/tags/list` → (response, tags) ; tags empty when the body does not parse.
    pub fn tags(&self, name: &str) -> Result<(Resp, Vec<String>), String> {
        let r = self.get(&format!("/v2/{name}/tags/list"))?;
        let tags = tag_list(&r);
        Ok((r, tags))
    }
}

/// The suite's `getTagList`: `tags` of a tag-list body, empty when it does not parse.
pub fn tag_list(r: &Resp) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("tags").cloned())
        .and_then(|t| t.as_array().cloned())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets query parameter `k=v` on `url` (replacing an existing `k`), like resty's `SetQueryParam`.
pub fn with_query(url: &str, k: &str, v: &str) -> String {
    let mut u = match Url::parse(url) {
        Ok(u) => u,
        Err(_) => return format!("{url}?{k}={v}"),
    };
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(kk, _)| kk != k)
        .map(|(a, b)| (a.into_owned(), b.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (a, b) in &kept {
            q.append_pair(a, b);
        }
        q.append_pair(k, v);
    }
    u.to_string()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 (for paths that URL libraries normalise)
// ---------------------------------------------------------------------------------------------

/// Sends `METHOD path HTTP/1.1` literally over TCP to `base_url`'s host and reads the response.
/// `path` is put on the wire byte for byte (no dot-segment removal, no `//` collapsing).
pub fn raw_request(
    base_url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let u = Url::parse(base_url).map_err(|e| format!("bad base url {base_url}: {e}"))?;
    let host = format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port_or_known_default().unwrap_or(80)
    );
    let mut s = TcpStream::connect(&host).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: distribution-spec-conformance-tests\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    let sends_body = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if sends_body {
        let _ = write!(req, "Content-Length: {}\r\n", body.len());
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write request: {e}"))?;
    s.write_all(body).map_err(|e| format!("write body: {e}"))?;
    let mut raw = Vec::new();
    // Read until the server closes (Connection: close); tolerate a reset after a complete response.
    let _ = s.read_to_end(&mut raw);
    parse_raw_response(
        method,
        &format!("{}{}", base_url.trim_end_matches('/'), path),
        &raw,
    )
}

fn parse_raw_response(method: &str, url: &str, raw: &[u8]) -> Result<Resp, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "{method} {url}: incomplete HTTP response ({} bytes): {:?}",
                raw.len(),
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {url}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    if method == "HEAD" {
        body.clear();
    }
    Ok(Resp {
        method: method.to_string(),
        url: url.to_string(),
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Data-directory snapshots ("nothing partial is stored")
// ---------------------------------------------------------------------------------------------

/// Every regular file under `dir` (recursively), relative to `dir`; empty if `dir` does not exist.
pub fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(base, &p, out),
                Ok(_) => {
                    out.insert(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
                }
                Err(_) => {}
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Files under `DIR/blobs` and `DIR/uploads` at one moment.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    pub blobs: BTreeSet<PathBuf>,
    pub uploads: BTreeSet<PathBuf>,
}

impl StoreSnapshot {
    pub fn take(data_dir: &Path) -> StoreSnapshot {
        StoreSnapshot {
            blobs: files_under(&data_dir.join("blobs")),
            uploads: files_under(&data_dir.join("uploads")),
        }
    }

    /// Files of `blobs/` and `uploads/` that exist now but did not at `self`.
    pub fn new_files(&self, data_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let now = StoreSnapshot::take(data_dir);
        (
            now.blobs.difference(&self.blobs).cloned().collect(),
            now.uploads.difference(&self.uploads).cloned().collect(),
        )
    }
}

/// The committed-blob path of a sha256/sha512 digest: `DIR/blobs/<alg>/<2 hex>/<hex>`.
pub fn blob_file(data_dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    let prefix = if hex.len() >= 2 { &hex[..2] } else { hex };
    data_dir.join("blobs").join(alg).join(prefix).join(hex)
}

#[cfg(test)]
mod oci_helper_self_tests {
    use super::*;

    #[test]
    fn harness_go_json_matches_go_marshal_indent() {
        let d = GoDescriptor::of_bytes(MT_OCI_EMPTY, b"{}");
        let m = GoManifest {
            schema_version: 2,
            config: d.clone(),
            layers: vec![],
            ..Default::default()
        };
        let text = String::from_utf8(go_json(&m)).unwrap();
        let want = "{\n\t\"schemaVersion\": 2,\n\t\"config\": {\n\t\t\"mediaType\": \"application/vnd.oci.empty.v1+json\",\n\t\t\"digest\": \"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\",\n\t\t\"size\": 2,\n\t\t\"newUnspecifiedField\": null\n\t},\n\t\"layers\": []\n}";
        assert_eq!(text, want);
    }

    #[test]
    fn harness_with_query_and_locations() {
        assert_eq!(
            with_query(
                "http://h:1/v2/a/blobs/uploads/x?_state=s",
                "digest",
                "sha256:ab"
            ),
            "http://h:1/v2/a/blobs/uploads/x?_state=s&digest=sha256%3Aab"
        );
        let r = Resp {
            method: "POST".into(),
            url: "http://h:1/v2/a/blobs/uploads/".into(),
            status: 202,
            headers: vec![("Location".into(), "/v2/a/blobs/uploads/u1?x=1".into())],
            body: vec![],
        };
        assert_eq!(r.location_rel(), "/v2/a/blobs/uploads/u1?x=1");
        assert_eq!(
            r.location_abs().unwrap(),
            "http://h:1/v2/a/blobs/uploads/u1?x=1"
        );
    }

    #[test]
    fn harness_raw_response_parsing() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let r = parse_raw_response("GET", "http://x/", raw).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.body, b"hello");
    }
}
