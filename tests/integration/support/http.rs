//! Small blocking-HTTP helpers for talking distribution-spec to a [`Server`].
//!
//! They assert only what every caller needs (the upload flow's success statuses); tests that check
//! error behaviour use [`http()`] directly.

use std::io::Read;

use reqwest::blocking::{Body, Client, Response};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{sha256_digest, Server};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type, for `Accept`.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// A blocking client for loopback tests: no overall timeout (big blobs), no proxy, no redirects
/// followed (tests see exactly what the server answered), no idle connections kept (servers are
/// killed and ports reused). One client is shared by the whole binary: building one per request
/// is slow (oci-client's TLS feature makes every build load the system's root certificates).
pub fn http() -> Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .timeout(None)
                .connect_timeout(std::time::Duration::from_secs(10))
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .expect("build reqwest client")
        })
        .clone()
}

/// Names of the form of the registry's derived tags: `T.sif` (and `T.<arch>.sif`), the ORAS
/// artifact of the SIF its build farm made from tag `T`. Derived tags resolve but are never
/// listed, so a listing shows one only if a client pushed it.
pub fn is_registry_owned_tag(tag: &str) -> bool {
    tag.ends_with(".sif")
}

/// `tags` as listed, checked to hold none of the registry's derived tags: `tags/list` shows
/// exactly the tags clients pushed (for callers that pushed no `*.sif` tag themselves).
pub fn user_tags<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_owned()).collect();
    assert!(
        !tags.iter().any(|t| is_registry_owned_tag(t)),
        "tags/list shows a derived tag: {tags:?}"
    );
    tags
}

/// Status, headers and body of a response (body read fully).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn from(resp: Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `code`s of a distribution-spec error body.
    pub fn error_codes(&self) -> Vec<String> {
        error_codes(&self.body)
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        let mut body = self.text();
        if body.len() > 2000 {
            body.truncate(2000);
            body.push_str("...");
        }
        format!("{} headers={:?} body={}", self.status, self.headers, body)
    }
}

/// The `code`s of a distribution-spec error body (`{"errors":[{"code":..}]}`); empty if none.
pub fn error_codes(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return vec![];
    };
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a `Location` header value (absolute or relative) into an absolute URL on `base`.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// The path-and-query part of a `Location` (so it can be reused after a restart on a new port).
pub fn location_path(location: &str) -> String {
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_owned(),
            None => "/".to_owned(),
        }
    } else {
        location.to_owned()
    }
}

/// Appends `key=value` to `url`'s query.
pub fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

/// POST `/v2/<repo>/blobs/uploads/`; asserts 202 and returns the absolute upload URL (`Location`).
pub fn start_upload(server: &Server, repo: &str) -> String {
    let r = Reply::from(
        http()
            .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .expect("POST upload"),
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "POST /v2/{repo}/blobs/uploads/: {}",
        r.describe()
    );
    let loc = r
        .header("location")
        .unwrap_or_else(|| panic!("upload POST without Location: {}", r.describe()));
    absolute(&server.base_url(), &loc)
}

/// Pushes `data` as a blob (POST, then one monolithic PUT `?digest=`); asserts 201 and the
/// `Docker-Content-Digest`; returns the digest.
pub fn push_blob(server: &Server, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let upload = start_upload(server, repo);
    let r = Reply::from(
        http()
            .put(with_query(&upload, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .expect("PUT blob"),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT blob {digest} to {repo}: {}",
        r.describe()
    );
    if let Some(d) = r.header("docker-content-digest") {
        assert_eq!(d, digest, "Docker-Content-Digest of blob PUT");
    }
    digest
}

/// Pushes a blob streamed from `reader` (`len` bytes, digest known in advance) with one monolithic PUT.
pub fn push_blob_stream<R: Read + Send + 'static>(
    server: &Server,
    repo: &str,
    reader: R,
    len: u64,
    digest: &str,
) {
    let upload = start_upload(server, repo);
    let r = Reply::from(
        http()
            .put(with_query(&upload, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(Body::sized(reader, len))
            .send()
            .expect("PUT blob"),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT streamed blob {digest} to {repo}: {}",
        r.describe()
    );
}

/// PUT a manifest; returns the reply whatever the status.
pub fn put_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Reply {
    Reply::from(
        http()
            .put(server.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .expect("PUT manifest"),
    )
}

/// PUT a manifest; asserts 201 and that `Docker-Content-Digest` is the body's sha256; returns it.
pub fn put_manifest_ok(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let digest = sha256_digest(body);
    let r = put_manifest(server, repo, reference, media_type, body);
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT /v2/{repo}/manifests/{reference} ({media_type}): {}",
        r.describe()
    );
    assert_eq!(
        r.header("docker-content-digest").as_deref(),
        Some(digest.as_str()),
        "Docker-Content-Digest of manifest PUT {repo}:{reference}"
    );
    digest
}

/// GET a manifest with every manifest type accepted.
pub fn get_manifest(server: &Server, repo: &str, reference: &str) -> Reply {
    Reply::from(
        http()
            .get(server.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", ACCEPT_ALL_MANIFESTS)
            .send()
            .expect("GET manifest"),
    )
}

/// HEAD a blob; returns the status.
pub fn head_blob(server: &Server, repo: &str, digest: &str) -> StatusCode {
    http()
        .head(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .expect("HEAD blob")
        .status()
}

/// GET a blob and return its bytes (asserts 200).
pub fn get_blob(server: &Server, repo: &str, digest: &str) -> Vec<u8> {
    let r = Reply::from(
        http()
            .get(server.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .expect("GET blob"),
    );
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /v2/{repo}/blobs/{digest}: {}",
        r.describe()
    );
    r.body
}

/// A descriptor for `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(data), "size": data.len()})
}

/// Canonical bytes of an OCI image manifest over the given descriptors.
pub fn oci_manifest_bytes(config: &Value, layers: &[Value], annotations: Option<Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// An image pushed by [`push_random_image`].
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

impl PushedImage {
    /// Digests of config and layers.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(sha256_digest(&self.config))
            .chain(self.layers.iter().map(|l| sha256_digest(l)))
            .collect()
    }

    /// Asserts the manifest (by tag and by digest) and every blob are served byte-identical.
    pub fn assert_intact(&self, server: &Server) {
        for reference in [self.tag.as_str(), self.digest.as_str()] {
            let r = get_manifest(server, &self.repo, reference);
            assert_eq!(
                r.status,
                StatusCode::OK,
                "GET manifest {}:{reference}: {}",
                self.repo,
                r.describe()
            );
            assert!(
                r.body == self.manifest,
                "manifest {}:{reference} is not byte-identical",
                self.repo
            );
            assert_eq!(
                r.header("docker-content-digest").as_deref(),
                Some(self.digest.as_str())
            );
        }
        for blob in std::iter::once(&self.config).chain(self.layers.iter()) {
            let d = sha256_digest(blob);
            let got = get_blob(server, &self.repo, &d);
            assert!(
                got == *blob,
                "blob {d} in {} is not byte-identical",
                self.repo
            );
        }
    }
}

/// Pushes a linux/amd64 OCI image whose one layer is `layer` (labelled `media_type`), so the
/// farm builds it when the layer is a real tar; returns the manifest digest.
pub fn push_single_layer_image(
    server: &Server,
    repo: &str,
    tag: &str,
    media_type: &str,
    layer: &[u8],
) -> String {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"nonce": super::unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }))
    .expect("config JSON");
    push_blob(server, repo, &config);
    push_blob(server, repo, layer);
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &config),
        &[descriptor(media_type, layer)],
        None,
    );
    put_manifest_ok(server, repo, tag, OCI_MANIFEST, &manifest)
}

/// Pushes a small OCI image (config + `layer_sizes.len()` random layers) and tags it.
pub fn push_random_image(
    server: &Server,
    repo: &str,
    tag: &str,
    layer_sizes: &[usize],
) -> PushedImage {
    let layers: Vec<Vec<u8>> = layer_sizes
        .iter()
        .map(|n| super::random_bytes(*n))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Labels": {"nonce": super::unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>()},
    }))
    .unwrap();
    push_blob(server, repo, &config);
    for l in &layers {
        push_blob(server, repo, l);
    }
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &config),
        &layers
            .iter()
            .map(|l| descriptor(OCI_LAYER_TAR, l))
            .collect::<Vec<_>>(),
        None,
    );
    let digest = put_manifest_ok(server, repo, tag, OCI_MANIFEST, &manifest);
    PushedImage {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest,
        digest,
        config,
        layers,
    }
}
