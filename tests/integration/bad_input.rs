//! Bad input: every malformed or inconsistent request gets the spec's error (status and
//! `errors[0].code`, distribution-spec v1.1 §Error Codes) and NOTHING partial is stored:
//! afterwards the blob HEADs 404, the manifest GETs 404, the tag list is unchanged, `DIR/blobs` has no
//! new file and `DIR/uploads` keeps no file of the finished or failed upload.
//!
//! Decisions where the spec leaves room, each justified next to its test:
//! * repository names (upper case, `..`, empty components, trailing slash) → 400 `NAME_INVALID`;
//! * a 129-character (or otherwise malformed) tag → 400 `MANIFEST_INVALID` (spec v1.1 has no
//!   `TAG_INVALID`: it lists it only as a legacy Docker schema1 code clients "SHOULD NOT depend on");
//! * digest algorithms other than sha256/sha512 → 400 `DIGEST_INVALID` or `UNSUPPORTED`.
//!
//! Run: `cargo test --test integration bad_input -- --nocapture`

use std::path::Path;

use serde_json::json;

use crate::support::oci::*;
use crate::support::Server;

// ---------------------------------------------------------------------------------------------
// Fixture and assertions
// ---------------------------------------------------------------------------------------------

struct Fx {
    server: Server,
    c: Client,
    repo: String,
}

impl Fx {
    fn new() -> Fx {
        Fx::with_args(&[])
    }

    fn with_args(args: &[&str]) -> Fx {
        let server = Server::start_with(args);
        let c = Client::new(&server.base_url());
        let repo = format!("bad/{}", crate::support::unique("input"));
        Fx { server, c, repo }
    }

    fn dir(&self) -> &Path {
        self.server.data_dir()
    }

    fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot::take(self.dir())
    }

    /// Pushes a blob (POST + PUT) and asserts 201.
    fn push(&self, blob: &TestBlob) {
        let r = self.c.push_blob(&self.repo, blob).unwrap();
        assert_eq!(
            r.status,
            201,
            "pushing a valid blob failed:\n  {}",
            r.describe()
        );
    }

    /// Pushes a random config and layer; returns them and a valid manifest over them.
    fn valid_image(&self) -> (TestBlob, TestBlob, TestBlob) {
        let cfg = random_config();
        let layer = TestBlob::new(random_bytes(777));
        self.push(&cfg);
        self.push(&layer);
        let m = image_manifest(&cfg, &[(MT_OCI_LAYER_GZIP, &layer)]);
        (cfg, layer, m)
    }

    /// `(status, tags)` of the tag list (404 → no tags).
    fn tags(&self) -> (u16, Vec<String>) {
        let (r, t) = self.c.tags(&self.repo).unwrap();
        assert!(
            r.status == 200 || r.status == 404,
            "tag list answered {}:\n  {}",
            r.status,
            r.describe()
        );
        (r.status, t)
    }

    fn assert_blob_absent(&self, digest: &str, what: &str) {
        let r = self.c.head_blob(&self.repo, digest).unwrap();
        assert_eq!(
            r.status,
            404,
            "{what}: blob {digest} must not exist (HEAD):\n  {}",
            r.describe()
        );
        let r = self.c.get_blob(&self.repo, digest).unwrap();
        assert_eq!(
            r.status,
            404,
            "{what}: blob {digest} must not exist (GET):\n  {}",
            r.describe()
        );
        let f = blob_file(self.dir(), digest);
        assert!(
            !f.exists(),
            "{what}: the blob file {} exists in the data dir",
            f.display()
        );
    }

    fn assert_manifest_absent(&self, reference: &str, what: &str) {
        let r = self.c.get_manifest(&self.repo, reference).unwrap();
        assert_eq!(
            r.status,
            404,
            "{what}: manifest {reference} must not exist (GET):\n  {}",
            r.describe()
        );
        let r = self.c.head_manifest(&self.repo, reference).unwrap();
        assert_eq!(
            r.status,
            404,
            "{what}: manifest {reference} must not exist (HEAD):\n  {}",
            r.describe()
        );
    }

    /// No new file in `DIR/blobs`, no leftover file in `DIR/uploads` since `snap`.
    fn assert_nothing_stored_since(&self, snap: &StoreSnapshot, what: &str) {
        let (blobs, uploads) = snap.new_files(self.dir());
        assert!(
            blobs.is_empty(),
            "{what}: new files in DIR/blobs: {blobs:?}"
        );
        assert!(
            uploads.is_empty(),
            "{what}: DIR/uploads still holds files of a finished/failed upload: {uploads:?}"
        );
    }
}

/// Asserts `status` and that `errors[0].code` is one of `codes`.
fn assert_error(r: &Resp, status: u16, codes: &[&str], what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: expected {status} with {codes:?}, got:\n  {}",
        r.describe()
    );
    let code = r.first_code().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        codes.contains(&code.as_str()),
        "{what}: errors[0].code is {code:?}, expected one of {codes:?}:\n  {}",
        r.describe()
    );
}

/// For statuses where the spec names no code (413, 416): a JSON body, if any, must be a spec error body.
fn assert_spec_error_body_if_json(r: &Resp, what: &str) {
    if r.body.is_empty() || serde_json::from_slice::<serde_json::Value>(&r.body).is_err() {
        return;
    }
    let code = r.first_code().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        SPEC_ERROR_CODES.contains(&code.as_str()),
        "{what}: errors[0].code {code:?} is not one of the spec's 14 codes:\n  {}",
        r.describe()
    );
}

fn post_url(fx: &Fx) -> String {
    fx.c.url(&format!("/v2/{}/blobs/uploads/", fx.repo))
}

// ---------------------------------------------------------------------------------------------
// Blob digests
// ---------------------------------------------------------------------------------------------

/// Monolithic PUT whose `?digest=` does not match the body → 400 DIGEST_INVALID, nothing stored
/// (spec §Pushing a blob monolithically: "the `<digest>` MUST match the blob's digest"; code-4).
#[test]
fn bad_input_blob_digest_mismatch_monolithic_put() {
    let fx = Fx::new();
    let body = random_bytes(4096);
    let actual = sha256_of(&body);
    let claimed = sha256_of(b"something else entirely");
    let snap = fx.snapshot();
    let post = fx.c.start_upload(&fx.repo).unwrap();
    assert_eq!(post.status, 202, "{}", post.describe());
    let put =
        fx.c.send(
            "PUT",
            &with_query(&fx.c.url(&post.location_rel()), "digest", &claimed),
            &[("Content-Type", MT_OCTET)],
            Some(body),
        )
        .unwrap();
    assert_error(
        &put,
        400,
        &["DIGEST_INVALID"],
        "PUT with a digest that does not match the body",
    );
    fx.assert_blob_absent(&claimed, "after a digest mismatch");
    fx.assert_blob_absent(&actual, "after a digest mismatch");
    fx.assert_nothing_stored_since(&snap, "after a digest mismatch on PUT");
    assert_eq!(fx.tags().1, Vec::<String>::new());
}

/// Single POST `?digest=` whose digest does not match the body → 400 DIGEST_INVALID (end-4b's 400).
#[test]
fn bad_input_blob_digest_mismatch_post_with_digest() {
    let fx = Fx::new();
    let body = random_bytes(3000);
    let actual = sha256_of(&body);
    let claimed = sha256_of(b"not the body");
    let snap = fx.snapshot();
    let r =
        fx.c.send(
            "POST",
            &with_query(&post_url(&fx), "digest", &claimed),
            &[("Content-Type", MT_OCTET)],
            Some(body),
        )
        .unwrap();
    assert_error(
        &r,
        400,
        &["DIGEST_INVALID"],
        "POST ?digest= with a digest that does not match the body",
    );
    fx.assert_blob_absent(&claimed, "after a POST digest mismatch");
    fx.assert_blob_absent(&actual, "after a POST digest mismatch");
    fx.assert_nothing_stored_since(&snap, "after a digest mismatch on POST");
}

/// The newer suite's "bad digest chunked", "bad digest chunked and put chunk" and "bad digest stream"
/// (api.go `ExpectBadDigest`: the closing PUT must be 400): DIGEST_INVALID, nothing stored.
#[test]
fn bad_input_blob_digest_mismatch_chunked_and_streamed() {
    let fx = Fx::new();
    let snap = fx.snapshot();
    let body = random_bytes(3 * 1024 - 5);
    let claimed = sha256_of(&[body.as_slice(), b"oh no"].concat());
    let actual = sha256_of(&body);
    let n = body.len();
    let cut = [0, 1024, 2048, n];

    // chunked, closed with an empty PUT
    let post =
        fx.c.send(
            "POST",
            &post_url(&fx),
            &[("Content-Length", "0")],
            Some(vec![]),
        )
        .unwrap();
    assert_eq!(post.status, 202, "{}", post.describe());
    let mut loc = post.location_rel();
    for w in cut.windows(2) {
        let range = format!("{}-{}", w[0], w[1] - 1);
        let r =
            fx.c.send(
                "PATCH",
                &loc,
                &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
                Some(body[w[0]..w[1]].to_vec()),
            )
            .unwrap();
        assert_eq!(r.status, 202, "PATCH {range}:\n  {}", r.describe());
        loc = r.location_rel();
    }
    let put =
        fx.c.send(
            "PUT",
            &with_query(&fx.c.url(&loc), "digest", &claimed),
            &[("Content-Type", MT_OCTET)],
            Some(vec![]),
        )
        .unwrap();
    assert_error(
        &put,
        400,
        &["DIGEST_INVALID"],
        "chunked upload closed with a wrong digest",
    );

    // chunked, last chunk in the closing PUT
    let post =
        fx.c.send(
            "POST",
            &post_url(&fx),
            &[("Content-Length", "0")],
            Some(vec![]),
        )
        .unwrap();
    let mut loc = post.location_rel();
    for w in cut[..3].windows(2) {
        let range = format!("{}-{}", w[0], w[1] - 1);
        let r =
            fx.c.send(
                "PATCH",
                &loc,
                &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
                Some(body[w[0]..w[1]].to_vec()),
            )
            .unwrap();
        assert_eq!(r.status, 202, "PATCH {range}:\n  {}", r.describe());
        loc = r.location_rel();
    }
    let range = format!("2048-{}", n - 1);
    let put =
        fx.c.send(
            "PUT",
            &with_query(&fx.c.url(&loc), "digest", &claimed),
            &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
            Some(body[2048..].to_vec()),
        )
        .unwrap();
    assert_error(
        &put,
        400,
        &["DIGEST_INVALID"],
        "chunked upload with the last chunk in a PUT with a wrong digest",
    );

    // streamed PATCH without Content-Range
    let post =
        fx.c.send(
            "POST",
            &post_url(&fx),
            &[("Content-Length", "0")],
            Some(vec![]),
        )
        .unwrap();
    let r =
        fx.c.send(
            "PATCH",
            &post.location_rel(),
            &[("Content-Type", MT_OCTET)],
            Some(body.clone()),
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.describe());
    let put =
        fx.c.send(
            "PUT",
            &with_query(&fx.c.url(&r.location_rel()), "digest", &claimed),
            &[("Content-Type", MT_OCTET)],
            Some(vec![]),
        )
        .unwrap();
    assert_error(
        &put,
        400,
        &["DIGEST_INVALID"],
        "streamed upload closed with a wrong digest",
    );

    fx.assert_blob_absent(&claimed, "after bad-digest chunked/streamed uploads");
    fx.assert_blob_absent(&actual, "after bad-digest chunked/streamed uploads");
    fx.assert_nothing_stored_since(&snap, "after bad-digest chunked/streamed uploads");
}

/// Digest algorithms other than sha256/sha512, and malformed digests → 400 DIGEST_INVALID.
///
/// The spec names no code for an algorithm the registry does not support; DIGEST_INVALID ("provided
/// digest did not match uploaded content" — it cannot match: it is not computable here) is what
/// distribution and clients use, and UNSUPPORTED ("the operation is unsupported") is also a
/// defensible reading, so both are accepted. sha512 must work (positive control).
#[test]
fn bad_input_unsupported_or_malformed_digests() {
    let fx = Fx::new();
    let body = random_bytes(1000);
    let snap = fx.snapshot();
    let bad_digests = [
        format!("md5:{}", "0".repeat(32)),
        format!("sha1:{}", hex::encode([7u8; 20])),
        format!("sha384:{}", "a".repeat(96)),
        format!("blake3:{}", "b".repeat(64)),
        "sha256:totallywrong".to_string(),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha512:{}", "c".repeat(64)),
        "nocolon".to_string(),
    ];
    for d in &bad_digests {
        let alg_unsupported =
            !(d.starts_with("sha256:") || d.starts_with("sha512:") || d == "nocolon");
        let codes: &[&str] = if alg_unsupported {
            &["DIGEST_INVALID", "UNSUPPORTED"]
        } else {
            &["DIGEST_INVALID"]
        };
        // POST + PUT
        let post = fx.c.start_upload(&fx.repo).unwrap();
        assert_eq!(post.status, 202, "{}", post.describe());
        let put =
            fx.c.send(
                "PUT",
                &with_query(&fx.c.url(&post.location_rel()), "digest", d),
                &[("Content-Type", MT_OCTET)],
                Some(body.clone()),
            )
            .unwrap();
        assert_error(&put, 400, codes, &format!("PUT ?digest={d}"));
        // The client still holds this session's Location: the registry may end the session (404) or
        // keep it for a retry (204); a kept one is cancelled here, so any file left below is an orphan.
        let st = fx.c.get(&post.location_rel()).unwrap();
        assert!(
            st.status == 404 || st.status == 204,
            "upload status after PUT ?digest={d}:\n  {}",
            st.describe()
        );
        if st.status == 204 {
            let del =
                fx.c.send("DELETE", &post.location_rel(), &[], None)
                    .unwrap();
            assert_eq!(
                del.status,
                204,
                "cancelling the session after PUT ?digest={d}:\n  {}",
                del.describe()
            );
        }
        let (_, leftover) = snap.new_files(fx.dir());
        assert!(
            leftover.is_empty(),
            "after PUT ?digest={d} and the session's end, DIR/uploads holds {leftover:?}"
        );
        // single POST: the client never gets a Location, so nothing may remain
        let r =
            fx.c.send(
                "POST",
                &with_query(&post_url(&fx), "digest", d),
                &[("Content-Type", MT_OCTET)],
                Some(body.clone()),
            )
            .unwrap();
        assert_error(&r, 400, codes, &format!("POST ?digest={d}"));
        let (_, leftover) = snap.new_files(fx.dir());
        assert!(
            leftover.is_empty(),
            "a single POST ?digest={d} was refused with 400 (no Location given to the client) but left an orphaned upload session in DIR/uploads: {leftover:?}"
        );
        // reads of such a digest: not found or bad request, never a 5xx or a hit
        let r = fx.c.get(&format!("/v2/{}/blobs/{d}", fx.repo)).unwrap();
        assert!(
            r.status == 400 || r.status == 404,
            "GET /blobs/{d}: expected 400 or 404:\n  {}",
            r.describe()
        );
    }
    fx.assert_blob_absent(&sha256_of(&body), "after uploads with bad digests");
    fx.assert_nothing_stored_since(&snap, "after uploads with bad digests");

    // positive control: sha512 is supported
    let b512 = TestBlob::sha512(random_bytes(2048));
    let r = fx.c.push_blob(&fx.repo, &b512).unwrap();
    assert_eq!(
        r.status,
        201,
        "a sha512 upload must be accepted:\n  {}",
        r.describe()
    );
    let g = fx.c.get_blob(&fx.repo, &b512.digest).unwrap();
    assert_eq!(g.status, 200, "{}", g.describe());
    assert!(
        g.body == b512.content,
        "GET by sha512 digest returns other bytes"
    );
    let h = fx.c.head_blob(&fx.repo, &b512.digest).unwrap();
    assert_eq!(h.status, 200, "{}", h.describe());
    assert_eq!(h.header("Content-Length"), b512.len_str());
}

/// PUT of a manifest under a digest reference that is not its digest (the newer suite's
/// "Bad Digest Image": the manifest plus trailing whitespace) → 400 DIGEST_INVALID, nothing stored.
#[test]
fn bad_input_manifest_digest_reference_mismatch() {
    let fx = Fx::new();
    let (_, _, m) = fx.valid_image();
    let mut body = m.content.clone();
    body.extend_from_slice(b"  ");
    let r =
        fx.c.put_manifest(&fx.repo, &m.digest, MT_OCI_MANIFEST, &body)
            .unwrap();
    assert_error(
        &r,
        400,
        &["DIGEST_INVALID"],
        "PUT /manifests/<digest of other bytes>",
    );
    fx.assert_manifest_absent(&m.digest, "after a manifest digest mismatch");
    fx.assert_manifest_absent(&sha256_of(&body), "after a manifest digest mismatch");
    assert_eq!(fx.tags().1, Vec::<String>::new());
    // the newer suite: pushing to "sha256:baddigeststring" is 400, pulling it 404 or 400
    let r =
        fx.c.put_manifest(
            &fx.repo,
            "sha256:baddigeststring",
            MT_OCI_MANIFEST,
            &m.content,
        )
        .unwrap();
    assert_eq!(
        r.status,
        400,
        "PUT /manifests/sha256:baddigeststring:\n  {}",
        r.describe()
    );
    let r =
        fx.c.get_manifest(&fx.repo, "sha256:baddigeststring")
            .unwrap();
    assert!(
        r.status == 404 || r.status == 400,
        "GET /manifests/sha256:baddigeststring:\n  {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// A manifest referencing a blob (layer or config) or a child manifest the repository does not hold →
/// 400 MANIFEST_BLOB_UNKNOWN (spec §Push: "it MUST result in one or more MANIFEST_BLOB_UNKNOWN errors").
#[test]
fn bad_input_manifest_references_missing_blob() {
    let fx = Fx::new();
    let cfg = random_config();
    let layer = TestBlob::new(random_bytes(300));
    fx.push(&cfg);
    fx.push(&layer);
    // a blob that exists in ANOTHER repository is still unknown to this one (blob↔repository links)
    let other = format!("{}-other", fx.repo);
    let foreign = TestBlob::new(random_bytes(400));
    let r = fx.c.push_blob(&other, &foreign).unwrap();
    assert_eq!(r.status, 201, "{}", r.describe());
    let missing_layer = TestBlob::new(random_bytes(500));
    let missing_cfg = random_config();
    let snap = fx.snapshot();
    let tags_before = fx.tags();

    let m = image_manifest(&cfg, &[(MT_OCI_LAYER_GZIP, &missing_layer)]);
    let r =
        fx.c.put_manifest(&fx.repo, "missing-layer", MT_OCI_MANIFEST, &m.content)
            .unwrap();
    assert_error(
        &r,
        400,
        &["MANIFEST_BLOB_UNKNOWN"],
        "manifest whose layer was never pushed",
    );
    fx.assert_manifest_absent(&m.digest, "after MANIFEST_BLOB_UNKNOWN");
    fx.assert_manifest_absent("missing-layer", "after MANIFEST_BLOB_UNKNOWN");

    let m2 = image_manifest(&missing_cfg, &[(MT_OCI_LAYER_GZIP, &layer)]);
    let r =
        fx.c.put_manifest(&fx.repo, &m2.digest, MT_OCI_MANIFEST, &m2.content)
            .unwrap();
    assert_error(
        &r,
        400,
        &["MANIFEST_BLOB_UNKNOWN"],
        "manifest whose config was never pushed",
    );
    fx.assert_manifest_absent(&m2.digest, "after MANIFEST_BLOB_UNKNOWN (config)");

    let m3 = image_manifest(&cfg, &[(MT_OCI_LAYER_GZIP, &foreign)]);
    let r =
        fx.c.put_manifest(&fx.repo, "foreign-layer", MT_OCI_MANIFEST, &m3.content)
            .unwrap();
    assert_error(
        &r,
        400,
        &["MANIFEST_BLOB_UNKNOWN"],
        "manifest whose layer exists only in another repository",
    );
    fx.assert_manifest_absent(
        "foreign-layer",
        "after MANIFEST_BLOB_UNKNOWN (foreign layer)",
    );

    // an index whose child manifest was never pushed
    let child = image_manifest(&cfg, &[]);
    let idx = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": child.digest, "size": child.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    });
    let idx_bytes = serde_json::to_vec(&idx).unwrap();
    let r =
        fx.c.put_manifest(&fx.repo, "missing-child", MT_OCI_INDEX, &idx_bytes)
            .unwrap();
    assert_error(
        &r,
        400,
        &["MANIFEST_BLOB_UNKNOWN"],
        "index whose child manifest was never pushed",
    );
    fx.assert_manifest_absent("missing-child", "after MANIFEST_BLOB_UNKNOWN (index)");
    fx.assert_manifest_absent(
        &sha256_of(&idx_bytes),
        "after MANIFEST_BLOB_UNKNOWN (index)",
    );

    fx.assert_blob_absent(&missing_layer.digest, "after MANIFEST_BLOB_UNKNOWN");
    for method in ["HEAD", "GET"] {
        let r =
            fx.c.send(
                method,
                &format!("/v2/{}/blobs/{}", fx.repo, foreign.digest),
                &[],
                None,
            )
            .unwrap();
        assert_eq!(
            r.status,
            404,
            "another repository's blob must not be readable through this one ({method}):\n  {}",
            r.describe()
        );
    }
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after rejected manifests");
}

/// Not JSON, truncated JSON, JSON that is no manifest → 400 MANIFEST_INVALID (code-6).
#[test]
fn bad_input_manifest_invalid_json() {
    let fx = Fx::new();
    let (cfg, layer, m) = fx.valid_image();
    let truncated = &m.content[..m.content.len() / 2];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"blablabla".to_vec()),
        ("truncated JSON", truncated.to_vec()),
        ("empty body", vec![]),
        ("a JSON array", b"[]".to_vec()),
        ("a JSON string", b"\"manifest\"".to_vec()),
        ("an empty object", b"{}".to_vec()),
        ("schemaVersion 3", serde_json::to_vec(&json!({"schemaVersion": 3, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg.digest, "size": cfg.len()}, "layers": []})).unwrap()),
        ("config is not a descriptor", serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": "sha256:nope", "layers": []})).unwrap()),
        ("layers is not a list", serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg.digest, "size": cfg.len()}, "layers": {"a": 1}})).unwrap()),
        ("descriptor digest malformed", serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": "sha256:xyz", "size": cfg.len()},
            "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.len()}]})).unwrap()),
        ("negative size", serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg.digest, "size": -1}, "layers": []})).unwrap()),
    ];
    let snap = fx.snapshot();
    let tags_before = fx.tags();
    for (i, (what, body)) in cases.iter().enumerate() {
        let tag = format!("invalid{i}");
        let r =
            fx.c.put_manifest(&fx.repo, &tag, MT_OCI_MANIFEST, body)
                .unwrap();
        assert_error(
            &r,
            400,
            &["MANIFEST_INVALID"],
            &format!("manifest PUT with {what}"),
        );
        fx.assert_manifest_absent(&tag, what);
        fx.assert_manifest_absent(&sha256_of(body), what);
    }
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after invalid manifests");
}

/// Content-Type that disagrees with the body's `mediaType` → 400 MANIFEST_INVALID (spec §Pushing
/// Manifests: "If a manifest includes a `mediaType` field, clients MUST set the Content-Type header to
/// the value specified by the `mediaType` field").
#[test]
fn bad_input_manifest_content_type_disagrees_with_media_type() {
    let fx = Fx::new();
    let (_, _, m) = fx.valid_image();
    let r =
        fx.c.put_manifest(&fx.repo, "ok", MT_OCI_MANIFEST, &m.content)
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.describe());
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MT_OCI_INDEX,
        "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": m.digest, "size": m.len()}]
    }))
    .unwrap();
    let tags_before = fx.tags();
    let snap = fx.snapshot();
    let cases: Vec<(&str, &str, &[u8])> = vec![
        (
            "OCI manifest sent as an OCI index",
            MT_OCI_INDEX,
            &m.content,
        ),
        (
            "OCI manifest sent as a Docker v2 manifest",
            MT_DOCKER_MANIFEST,
            &m.content,
        ),
        (
            "OCI manifest sent as a Docker manifest list",
            MT_DOCKER_LIST,
            &m.content,
        ),
        ("OCI index sent as an OCI manifest", MT_OCI_MANIFEST, &idx),
        (
            "OCI index sent as a Docker manifest list",
            MT_DOCKER_LIST,
            &idx,
        ),
    ];
    for (i, (what, ct, body)) in cases.iter().enumerate() {
        let tag = format!("mismatch{i}");
        let r = fx.c.put_manifest(&fx.repo, &tag, ct, body).unwrap();
        assert_error(&r, 400, &["MANIFEST_INVALID"], what);
        fx.assert_manifest_absent(&tag, what);
    }
    fx.assert_manifest_absent(&sha256_of(&idx), "the mismatched index");
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after Content-Type/mediaType mismatches");
}

/// Docker schema 1 (signed and unsigned) → 400 MANIFEST_INVALID with a message that says schema 1
/// (issue #2: "Reject Docker schema 1 with a clear MANIFEST_INVALID message").
#[test]
fn bad_input_docker_schema1_rejected_clearly() {
    let fx = Fx::new();
    let layer = TestBlob::new(random_bytes(256));
    fx.push(&layer);
    let unsigned = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 1,
        "name": fx.repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer.digest}],
        "history": [{"v1Compatibility": "{\"id\":\"e45a5af57b00862e5ef5782a9925979a02ba2b12dff832fd0991335f4a11e5c5\"}"}]
    }))
    .unwrap();
    let mut signed_v: serde_json::Value = serde_json::from_slice(&unsigned).unwrap();
    signed_v["signatures"] = json!([{
        "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "x", "y": "y"}, "alg": "ES256"},
        "signature": "c2lnbmF0dXJl",
        "protected": "cHJvdGVjdGVk"
    }]);
    let signed = serde_json::to_vec_pretty(&signed_v).unwrap();
    let snap = fx.snapshot();
    let tags_before = fx.tags();
    for (ct, body) in [
        (MT_DOCKER_SCHEMA1_SIGNED, &signed),
        (MT_DOCKER_SCHEMA1, &unsigned),
        ("application/json", &unsigned),
    ] {
        let r = fx.c.put_manifest(&fx.repo, "old", ct, body).unwrap();
        assert_error(
            &r,
            400,
            &["MANIFEST_INVALID"],
            &format!("Docker schema 1 as {ct}"),
        );
        let errs = r.errors().unwrap();
        let text = format!("{} {}", errs[0].message, errs[0].detail).to_ascii_lowercase();
        assert!(
            ["schema 1", "schema1", "schemaversion 1", "schema version 1", "schemaversion: 1", "schemaversion=1", "v1 manifest"]
                .iter()
                .any(|k| text.contains(k)),
            "the MANIFEST_INVALID message must say that Docker schema 1 is not supported, got {:?} / {}",
            errs[0].message,
            errs[0].detail
        );
        fx.assert_manifest_absent("old", "after a schema 1 push");
        fx.assert_manifest_absent(&sha256_of(body), "after a schema 1 push");
    }
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after schema 1 pushes");
}

/// A layer (or config) descriptor whose size differs from the stored blob → 400 MANIFEST_INVALID.
#[test]
fn bad_input_manifest_descriptor_size_mismatch() {
    let fx = Fx::new();
    let (cfg, layer, good) = fx.valid_image();
    let r =
        fx.c.put_manifest(&fx.repo, &good.digest, MT_OCI_MANIFEST, &good.content)
            .unwrap();
    assert_eq!(r.status, 201, "{}", r.describe());
    let snap = fx.snapshot();
    let tags_before = fx.tags();
    let with_sizes = |cfg_size: i64, layer_size: i64| -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg.digest, "size": cfg_size},
            "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer.digest, "size": layer_size}]
        }))
        .unwrap()
    };
    let (c, l) = (cfg.len() as i64, layer.len() as i64);
    for (what, body) in [
        ("layer size + 1", with_sizes(c, l + 1)),
        ("layer size - 1", with_sizes(c, l - 1)),
        ("layer size 0", with_sizes(c, 0)),
        ("config size + 1", with_sizes(c + 1, l)),
    ] {
        let r =
            fx.c.put_manifest(&fx.repo, "sized", MT_OCI_MANIFEST, &body)
                .unwrap();
        assert_error(
            &r,
            400,
            &["MANIFEST_INVALID"],
            &format!("descriptor {what}"),
        );
        fx.assert_manifest_absent("sized", what);
        fx.assert_manifest_absent(&sha256_of(&body), what);
    }
    // an index whose child descriptor has the wrong size
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MT_OCI_INDEX,
        "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": good.digest, "size": good.len() + 7}]
    }))
    .unwrap();
    let r =
        fx.c.put_manifest(&fx.repo, "sized-index", MT_OCI_INDEX, &idx)
            .unwrap();
    assert_error(
        &r,
        400,
        &["MANIFEST_INVALID"],
        "index child descriptor with the wrong size",
    );
    fx.assert_manifest_absent("sized-index", "index child size mismatch");
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after descriptor size mismatches");
}

/// `--max-manifest-bytes 1024`: a 2 KiB manifest → 413 (spec §Pushing Manifests), nothing stored;
/// a manifest under the limit is accepted.
#[test]
fn bad_input_oversized_manifest_is_413() {
    let fx = Fx::with_args(&["--max-manifest-bytes", "1024"]);
    let cfg = random_config();
    fx.push(&cfg);
    let snap = fx.snapshot();
    let tags_before = fx.tags();
    let big = padded_manifest(&cfg, 2048);
    assert_eq!(big.len(), 2048);
    let r =
        fx.c.put_manifest(&fx.repo, "big", MT_OCI_MANIFEST, &big.content)
            .unwrap();
    assert_eq!(
        r.status,
        413,
        "a 2 KiB manifest over a 1024-byte limit:\n  {}",
        r.describe()
    );
    assert_spec_error_body_if_json(&r, "413 on an oversized manifest");
    fx.assert_manifest_absent("big", "after a 413");
    fx.assert_manifest_absent(&big.digest, "after a 413");
    let r =
        fx.c.put_manifest(&fx.repo, &big.digest, MT_OCI_MANIFEST, &big.content)
            .unwrap();
    assert_eq!(
        r.status,
        413,
        "PUT by digest of a 2 KiB manifest over the limit:\n  {}",
        r.describe()
    );
    fx.assert_manifest_absent(&big.digest, "after a 413 by digest");
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after oversized manifests");

    let small = padded_manifest(&cfg, 1000);
    let r =
        fx.c.put_manifest(&fx.repo, "small", MT_OCI_MANIFEST, &small.content)
            .unwrap();
    assert_eq!(
        r.status,
        201,
        "a 1000-byte manifest under a 1024-byte limit must be accepted:\n  {}",
        r.describe()
    );
}

/// With default settings a manifest of exactly 4 MiB is accepted and served byte for byte (spec:
/// "Client and registry implementations SHOULD expect to be able to support manifest pushes of at least
/// 4 megabytes"; issue #2: "Accept manifests of at least 4 MiB").
#[test]
fn bad_input_four_mib_manifest_is_accepted_by_default() {
    let fx = Fx::new();
    let cfg = random_config();
    fx.push(&cfg);
    let m = padded_manifest(&cfg, 4 * 1024 * 1024);
    assert_eq!(m.len(), 4 * 1024 * 1024);
    let r =
        fx.c.put_manifest(&fx.repo, "four-mib", MT_OCI_MANIFEST, &m.content)
            .unwrap();
    assert_eq!(
        r.status,
        201,
        "a 4 MiB manifest must be accepted:\n  {}",
        r.describe()
    );
    let g = fx.c.get_manifest(&fx.repo, "four-mib").unwrap();
    assert_eq!(g.status, 200, "{}", g.describe());
    assert!(
        g.body == m.content,
        "the 4 MiB manifest does not read back byte for byte"
    );
    assert_eq!(g.header("Docker-Content-Digest"), m.digest);
}

/// An OCI image manifest over `cfg` with no layers, padded with one annotation to exactly `size` bytes.
fn padded_manifest(cfg: &TestBlob, size: usize) -> TestBlob {
    let build = |pad: usize| -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg.digest, "size": cfg.len()},
            "layers": [],
            "annotations": {"org.hpc-registry.test.padding": "x".repeat(pad)}
        }))
        .unwrap()
    };
    let base = build(0).len();
    assert!(
        size >= base,
        "cannot pad a manifest to {size} bytes (minimum {base})"
    );
    let body = build(size - base);
    assert_eq!(body.len(), size);
    TestBlob::new(body)
}

// ---------------------------------------------------------------------------------------------
// Names and tags
// ---------------------------------------------------------------------------------------------

/// Repository names with upper case, `..`/`.` components, empty components (`a//b`), a trailing or
/// leading slash, or bad separators → 400 NAME_INVALID on every endpoint, and nothing is stored.
///
/// Why 400 NAME_INVALID and not 404 NAME_UNKNOWN: every request below has the full shape
/// `/v2/<name>/{manifests,blobs,tags}/...`, so the router finds the `<name>` segment (the name is
/// everything between `/v2/` and the endpoint suffix) and only the name fails the spec's grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`. The spec has a code for
/// exactly that, code-8 NAME_INVALID "invalid repository name"; NAME_UNKNOWN ("repository name not known
/// to registry") would claim a valid name that merely does not exist yet — and would let a client
/// believe a push to that name could succeed. 404 is right only where no endpoint matches at all
/// (e.g. `/v2/Alice` with no suffix), which is not tested here. The requests go over a raw socket so
/// that `..`, `.` and `//` reach the server unnormalised, as a hostile client would send them.
#[test]
fn bad_input_invalid_repository_names() {
    let fx = Fx::new();
    let base = fx.server.base_url();
    let cfg = random_config();
    let m = image_manifest(&cfg, &[]);
    let bad_names = [
        "Upper/case",
        "alice/Tool",
        "ALICE",
        "alice/../bob",
        "../alice",
        "alice/..",
        "..",
        "alice/./tool",
        "a//b",
        "alice/tool/",
        "/alice/tool",
        "alice/-tool",
        "alice/tool-",
        "alice/to..ol",
        "alice/tool___x",
        "alice/to%2Fol",
        "alice/tool@1",
    ];
    let snap = fx.snapshot();
    for name in bad_names {
        let what = |ep: &str| format!("name {name:?}, {ep}");
        let r = raw_request(
            &base,
            "PUT",
            &format!("/v2/{name}/manifests/latest"),
            &[("Content-Type", MT_OCI_MANIFEST)],
            &m.content,
        )
        .unwrap();
        assert_error(&r, 400, &["NAME_INVALID"], &what("PUT manifest"));
        let r = raw_request(
            &base,
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            &[],
            b"",
        )
        .unwrap();
        assert_error(&r, 400, &["NAME_INVALID"], &what("POST blob upload"));
        let r = raw_request(
            &base,
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={}", cfg.digest),
            &[("Content-Type", MT_OCTET)],
            &cfg.content,
        )
        .unwrap();
        assert_error(
            &r,
            400,
            &["NAME_INVALID"],
            &what("POST blob upload with digest"),
        );
        let r = raw_request(&base, "GET", &format!("/v2/{name}/tags/list"), &[], b"").unwrap();
        assert_error(&r, 400, &["NAME_INVALID"], &what("GET tags/list"));
        let r = raw_request(
            &base,
            "GET",
            &format!("/v2/{name}/manifests/latest"),
            &[],
            b"",
        )
        .unwrap();
        assert_error(&r, 400, &["NAME_INVALID"], &what("GET manifest"));
        let r = raw_request(
            &base,
            "HEAD",
            &format!("/v2/{name}/blobs/{}", cfg.digest),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(
            r.status,
            400,
            "{}: expected 400:\n  {}",
            what("HEAD blob"),
            r.describe()
        );
        let r = raw_request(
            &base,
            "GET",
            &format!("/v2/{name}/referrers/{}", m.digest),
            &[],
            b"",
        )
        .unwrap();
        assert_error(&r, 400, &["NAME_INVALID"], &what("GET referrers"));
    }
    // a name longer than 255 characters
    let long = format!("a/{}", "b".repeat(300));
    let r =
        fx.c.put_manifest(&long, "latest", MT_OCI_MANIFEST, &m.content)
            .unwrap();
    assert_error(
        &r,
        400,
        &["NAME_INVALID"],
        "a 302-character repository name",
    );

    fx.assert_nothing_stored_since(&snap, "after requests with invalid names");
    let cat = fx.c.get("/v2/_catalog").unwrap();
    if cat.status == 200 {
        let repos: Vec<String> = cat
            .json()
            .ok()
            .and_then(|v| v.get("repositories").cloned())
            .and_then(|r| r.as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            repos.is_empty(),
            "invalid names created repositories: {repos:?}"
        );
    }
    // positive control: valid names with every separator kind work
    for good in ["a", "a0/b1", "a.b/c_d/e__f/g-h/i--j", "x/y/z/w"] {
        let r = fx.c.push_blob(good, &cfg).unwrap();
        assert_eq!(
            r.status,
            201,
            "valid name {good:?} must work:\n  {}",
            r.describe()
        );
    }
}

/// A tag of 129 characters, or one outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` → 400
/// MANIFEST_INVALID, nothing tagged; 128 characters is fine.
///
/// Spec v1.1 §Pulling manifests: "`<reference>` as a tag MUST be at most 128 characters in length and
/// MUST match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}". §Error Codes: "The `code` field MUST be one of the
/// following" 14 codes — TAG_INVALID is not among them (the spec mentions it only as a legacy Docker
/// schema1 code clients "SHOULD NOT depend on"). Of the 14, MANIFEST_INVALID (code-6) is the one for a
/// manifest PUT the registry refuses as malformed; NAME_INVALID is about the repository name.
#[test]
fn bad_input_invalid_tags() {
    let fx = Fx::new();
    let (_, _, m) = fx.valid_image();
    let snap = fx.snapshot();
    let tags_before = fx.tags();
    let t129 = format!("t{}", "a".repeat(128));
    assert_eq!(t129.len(), 129);
    for tag in [
        t129.as_str(),
        ".dotfirst",
        "-dashfirst",
        "has+plus",
        "has%20space",
    ] {
        let r =
            fx.c.put_manifest(&fx.repo, tag, MT_OCI_MANIFEST, &m.content)
                .unwrap();
        assert_error(
            &r,
            400,
            &["MANIFEST_INVALID"],
            &format!("PUT manifest with tag {tag:?} ({} chars)", tag.len()),
        );
    }
    fx.assert_manifest_absent(&m.digest, "after PUTs with invalid tags");
    assert_eq!(fx.tags(), tags_before, "the tag list changed");
    fx.assert_nothing_stored_since(&snap, "after PUTs with invalid tags");

    let t128 = format!("T_{}", "9.-a".repeat(31) + "xx");
    assert_eq!(t128.len(), 128);
    let r =
        fx.c.put_manifest(&fx.repo, &t128, MT_OCI_MANIFEST, &m.content)
            .unwrap();
    assert_eq!(
        r.status,
        201,
        "a 128-character tag must be accepted:\n  {}",
        r.describe()
    );
    assert_eq!(fx.tags().1, vec![t128.clone()]);
    let g = fx.c.get_manifest(&fx.repo, &t128).unwrap();
    assert_eq!(g.status, 200, "{}", g.describe());
}

// ---------------------------------------------------------------------------------------------
// Chunked uploads
// ---------------------------------------------------------------------------------------------

/// An out-of-order PATCH → 416 with a `Range` header of what was received (spec §Pushing a blob in
/// chunks: "If a chunk is uploaded out of order, the registry MUST respond with a 416"; the received
/// range is what a client needs to resume), and the upload is still usable afterwards.
#[test]
fn bad_input_out_of_order_patch_is_416_and_upload_survives() {
    let fx = Fx::new();
    let blob = TestBlob::new(random_bytes(30));
    let snap = fx.snapshot();
    let post =
        fx.c.send(
            "POST",
            &post_url(&fx),
            &[("Content-Length", "0")],
            Some(vec![]),
        )
        .unwrap();
    assert_eq!(post.status, 202, "{}", post.describe());
    let loc = post.location_rel();

    let p1 =
        fx.c.send(
            "PATCH",
            &loc,
            &[("Content-Type", MT_OCTET), ("Content-Range", "0-9")],
            Some(blob.content[..10].to_vec()),
        )
        .unwrap();
    assert_eq!(p1.status, 202, "{}", p1.describe());
    assert_eq!(
        p1.header("Range"),
        "0-9",
        "Range after the first chunk:\n  {}",
        p1.describe()
    );
    let loc = p1.location_rel();

    for (range, a, b, what) in [
        ("20-29", 20usize, 30usize, "a chunk that skips ahead"),
        ("5-14", 5, 15, "a chunk that overlaps what was received"),
        ("0-9", 0, 10, "the first chunk again"),
    ] {
        let r =
            fx.c.send(
                "PATCH",
                &loc,
                &[("Content-Type", MT_OCTET), ("Content-Range", range)],
                Some(blob.content[a..b].to_vec()),
            )
            .unwrap();
        assert_eq!(
            r.status,
            416,
            "{what} (Content-Range {range}) must be 416:\n  {}",
            r.describe()
        );
        assert_eq!(
            r.header("Range"),
            "0-9",
            "{what}: the 416 must carry Range: 0-9 (what was received):\n  {}",
            r.describe()
        );
        assert_spec_error_body_if_json(&r, "416 on an out-of-order chunk");
    }
    let st = fx.c.get(&loc).unwrap();
    assert_eq!(
        st.status,
        204,
        "upload status after 416s:\n  {}",
        st.describe()
    );
    assert_eq!(st.header("Range"), "0-9", "{}", st.describe());
    assert!(!st.header("Location").is_empty(), "{}", st.describe());

    let p2 =
        fx.c.send(
            "PATCH",
            &st.location_rel(),
            &[("Content-Type", MT_OCTET), ("Content-Range", "10-19")],
            Some(blob.content[10..20].to_vec()),
        )
        .unwrap();
    assert_eq!(
        p2.status,
        202,
        "the upload must still accept the right next chunk:\n  {}",
        p2.describe()
    );
    assert_eq!(p2.header("Range"), "0-19", "{}", p2.describe());
    let put =
        fx.c.send(
            "PUT",
            &with_query(&fx.c.url(&p2.location_rel()), "digest", &blob.digest),
            &[("Content-Type", MT_OCTET), ("Content-Range", "20-29")],
            Some(blob.content[20..].to_vec()),
        )
        .unwrap();
    assert_eq!(put.status, 201, "{}", put.describe());
    let g = fx.c.get_blob(&fx.repo, &blob.digest).unwrap();
    assert_eq!(g.status, 200, "{}", g.describe());
    assert!(
        g.body == blob.content,
        "the blob assembled after 416s is not the sent bytes"
    );
    let (_, uploads) = snap.new_files(fx.dir());
    assert!(
        uploads.is_empty(),
        "DIR/uploads still holds files of the finished upload: {uploads:?}"
    );
    assert!(
        blob_file(fx.dir(), &blob.digest).is_file(),
        "the committed blob is not at DIR/blobs/sha256/<2 hex>/<hex>"
    );

    // a fresh session: the first chunk not starting at 0 is out of order too
    let post =
        fx.c.send(
            "POST",
            &post_url(&fx),
            &[("Content-Length", "0")],
            Some(vec![]),
        )
        .unwrap();
    let r =
        fx.c.send(
            "PATCH",
            &post.location_rel(),
            &[("Content-Type", MT_OCTET), ("Content-Range", "10-19")],
            Some(blob.content[10..20].to_vec()),
        )
        .unwrap();
    assert_eq!(
        r.status,
        416,
        "a first chunk at 10-19 must be 416:\n  {}",
        r.describe()
    );
    let st = fx.c.get(&post.location_rel()).unwrap();
    assert_eq!(st.status, 204, "{}", st.describe());
    let range = st.header("Range");
    assert!(
        range
            .strip_prefix("0-")
            .map(|n| n.parse::<i64>().is_ok())
            .unwrap_or(false),
        "Range {range:?} of an empty session is not `0-<n>`"
    );
    let del =
        fx.c.send("DELETE", &post.location_rel(), &[], None)
            .unwrap();
    assert_eq!(
        del.status,
        204,
        "cancelling the session:\n  {}",
        del.describe()
    );
    let (blobs, uploads) = snap.new_files(fx.dir());
    assert!(
        uploads.is_empty(),
        "DIR/uploads still holds files of a cancelled upload: {uploads:?}"
    );
    assert_eq!(
        blobs.len(),
        1,
        "DIR/blobs: only the one finished blob is new: {blobs:?}"
    );
}
