//! `01_pull_test.go`

use crate::support::oci::*;

use super::checks::{check_content, check_optional_dcd, check_suite_error_code, prefix};
use super::data::{INVALID_MANIFEST_CONTENT, NONEXISTENT_MANIFEST, TEST_TAG_NAME};
use super::env::Env;
use super::runner::{skip, Runner};

pub(super) fn test01_pull(r: &mut Runner, e: &mut Env) {
    r.describe("Pull");

    r.context("Setup");
    r.it(e, "[extra: 01_base_api_route_test.go + issue #2] GET request to base API route must return 200 response (with Docker-Distribution-API-Version: registry/2.0)", |e| {
        let resp = e.c.get("/v2/")?;
        ensure_status!(resp, 200);
        let v = resp.header("Docker-Distribution-API-Version");
        ensure!(v == "registry/2.0", "Docker-Distribution-API-Version is {v:?}, expected \"registry/2.0\":\n  {}", resp.describe());
        Ok(())
    });
    r.it(e, "Populate registry with test blob", |e| {
        e.populate_blob(&e.d.configs[0])
    });
    r.it(e, "Populate registry with test blob", |e| {
        e.populate_blob(&e.d.configs[1])
    });
    r.it(e, "Populate registry with test layer", |e| {
        e.populate_blob(&e.d.layer)
    });
    r.it(e, "Populate registry with test manifest", |e| {
        e.tag = TEST_TAG_NAME.to_string();
        let resp = e.put_manifest(&e.tag, MT_OCI_MANIFEST, &e.d.manifests[0])?;
        ensure_2xx!(resp);
        Ok(())
    });
    r.it(e, "Populate registry with test manifest", |e| {
        let resp = e.put_manifest(&e.d.manifests[1].digest, MT_OCI_MANIFEST, &e.d.manifests[1])?;
        ensure_2xx!(resp);
        Ok(())
    });
    r.it(e, "Get tag name from environment", |_| {
        skip("RunOnlyIfNot(runPullSetup): the setup pushed the tag")
    });

    r.context("Pull blobs");
    r.it(
        e,
        "HEAD request to nonexistent blob should result in 404 response",
        |e| {
            let resp = e.c.head(&e.p(&format!("/blobs/{}", e.d.dummy_digest)))?;
            ensure_status!(resp, 404);
            Ok(())
        },
    );
    r.it(e, "HEAD request to existing blob should yield 200", |e| {
        let resp =
            e.c.head(&e.p(&format!("/blobs/{}", e.d.configs[0].digest)))?;
        ensure_status!(resp, 200);
        check_optional_dcd(&resp, &e.d.configs[0].digest)
    });
    r.it(
        e,
        "GET nonexistent blob should result in 404 response",
        |e| {
            let resp = e.c.get(&e.p(&format!("/blobs/{}", e.d.dummy_digest)))?;
            ensure_status!(resp, 404);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to existing blob URL should yield 200",
        |e| {
            let resp =
                e.c.get(&e.p(&format!("/blobs/{}", e.d.configs[0].digest)))?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(e, "[extra: newer suite api.go BlobHeadExists + issue #2] HEAD of an existing blob: no body, Content-Length = size, Docker-Content-Digest = digest", |e| {
        for b in [&e.d.configs[0], &e.d.layer] {
            let resp = e.c.head_blob(&e.name, &b.digest)?;
            check_content(&resp, &b.content, &b.digest, None, true)?;
        }
        Ok(())
    });
    r.it(e, "[extra: newer suite api.go BlobGetExistsFull] GET of an existing blob returns exactly the pushed bytes", |e| {
        for b in [&e.d.configs[0], &e.d.configs[1], &e.d.layer] {
            let resp = e.c.get_blob(&e.name, &b.digest)?;
            check_content(&resp, &b.content, &b.digest, None, false)?;
        }
        Ok(())
    });
    r.it(e, "[extra: newer suite run.go range requests + issue #2] blob GET with Range: single, open and suffix ranges give 206 with Content-Range; unsatisfiable ranges give 416", |e| {
        let name = format!("{}-ranges", e.name);
        let blob = TestBlob::new(random_bytes(2048));
        let put = e.c.push_blob(&name, &blob)?;
        ensure_status!(put, 201);
        let n = blob.len();
        let cases: Vec<(&str, Option<(usize, usize)>)> = vec![
            ("bytes=500-1499", Some((500, 1499))),
            ("bytes=500-", Some((500, n - 1))),
            ("bytes=-500", Some((n - 500, n - 1))),
            ("bytes=2000-5000", Some((2000, n - 1))),
            ("bytes=500-0", None),
            ("bytes=5000-10000", None),
        ];
        for (range, want) in cases {
            let resp = e.c.send("GET", &format!("/v2/{name}/blobs/{}", blob.digest), &[("Range", range)], None)?;
            match want {
                Some((a, b)) => {
                    ensure!(resp.status == 206, "Range {range}: expected 206 Partial Content, got {}:\n  {}", resp.status, resp.describe());
                    ensure!(resp.body == blob.content[a..=b], "Range {range}: body is not bytes {a}-{b} of the blob:\n  {}", resp.describe());
                    let cr = resp.header("Content-Range");
                    ensure!(
                        cr == format!("bytes {a}-{b}/{n}") || cr == format!("bytes {a}-{b}/*"),
                        "Range {range}: Content-Range is {cr:?}, expected \"bytes {a}-{b}/{n}\":\n  {}",
                        resp.describe()
                    );
                    let cl = resp.header("Content-Length");
                    ensure!(cl == (b - a + 1).to_string(), "Range {range}: Content-Length is {cl:?}, expected {}", b - a + 1);
                }
                None => {
                    ensure!(resp.status == 416, "Range {range}: expected 416 Range Not Satisfiable, got {}:\n  {}", resp.status, resp.describe());
                }
            }
        }
        Ok(())
    });

    r.context("Pull manifests");
    r.it(
        e,
        "HEAD request to nonexistent manifest should return 404",
        |e| {
            let resp =
                e.c.head(&e.p(&format!("/manifests/{NONEXISTENT_MANIFEST}")))?;
            ensure_status!(resp, 404);
            Ok(())
        },
    );
    r.it(
        e,
        "HEAD request to manifest[0] path (digest) should yield 200 response",
        |e| {
            let resp = e.get_manifest_accept("HEAD", &e.d.manifests[0].digest)?;
            ensure_status!(resp, 200);
            check_optional_dcd(&resp, &e.d.manifests[0].digest)
        },
    );
    r.it(
        e,
        "HEAD request to manifest[1] path (digest) should yield 200 response",
        |e| {
            let resp = e.get_manifest_accept("HEAD", &e.d.manifests[1].digest)?;
            ensure_status!(resp, 200);
            check_optional_dcd(&resp, &e.d.manifests[1].digest)
        },
    );
    r.it(
        e,
        "HEAD request to manifest path (tag) should yield 200 response",
        |e| {
            ensure!(!e.tag.is_empty(), "Expect(tag).ToNot(BeEmpty()): no tag");
            let resp = e.get_manifest_accept("HEAD", &e.tag)?;
            ensure_status!(resp, 200);
            check_optional_dcd(&resp, &e.d.manifests[0].digest)
        },
    );
    r.it(e, "GET nonexistent manifest should return 404", |e| {
        let resp =
            e.c.get(&e.p(&format!("/manifests/{NONEXISTENT_MANIFEST}")))?;
        ensure_status!(resp, 404);
        Ok(())
    });
    r.it(
        e,
        "GET request to manifest[0] path (digest) should yield 200 response",
        |e| {
            let resp = e.get_manifest_accept("GET", &e.d.manifests[0].digest)?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to manifest[1] path (digest) should yield 200 response",
        |e| {
            let resp = e.get_manifest_accept("GET", &e.d.manifests[1].digest)?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to manifest path (tag) should yield 200 response",
        |e| {
            ensure!(!e.tag.is_empty(), "Expect(tag).ToNot(BeEmpty()): no tag");
            let resp = e.get_manifest_accept("GET", &e.tag)?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(e, "[extra: newer suite api.go ManifestGetExists/ManifestHeadExists + spec §Pulling manifests] manifest GET/HEAD by digest and tag: exact bytes, Content-Type = mediaType, Content-Length, Docker-Content-Digest", |e| {
        let m0 = e.d.manifests[0].clone();
        let m1 = e.d.manifests[1].clone();
        for (reference, m) in [(m0.digest.clone(), &m0), (e.tag.clone(), &m0), (m1.digest.clone(), &m1)] {
            let g = e.get_manifest_accept("GET", &reference)?;
            check_content(&g, &m.content, &m.digest, Some(MT_OCI_MANIFEST), false).map_err(|f| prefix(f, &format!("GET {reference}")))?;
            let h = e.get_manifest_accept("HEAD", &reference)?;
            check_content(&h, &m.content, &m.digest, Some(MT_OCI_MANIFEST), true).map_err(|f| prefix(f, &format!("HEAD {reference}")))?;
        }
        Ok(())
    });
    r.it(e, "[extra: newer suite run.go TestManifestErrors missing-manifest] GET of a never-pushed digest and of a never-pushed tag gives 404", |e| {
        let d = sha256_of(&random_bytes(1024));
        let resp = e.c.get_manifest(&e.name, &d)?;
        ensure_status!(resp, 404);
        let t = format!("missing-{}", random_string(12).to_ascii_lowercase().replace('-', "x"));
        let resp = e.c.get_manifest(&e.name, &t)?;
        ensure_status!(resp, 404);
        Ok(())
    });

    r.context("Error codes");
    r.it(
        e,
        "400 response body should contain OCI-conforming JSON message",
        |e| {
            // v1.1.x sends a GET with a body to the invalid digest reference
            let resp = e.c.send(
                "GET",
                &e.p("/manifests/sha256:totallywrong"),
                &[("Content-Type", MT_OCI_MANIFEST)],
                Some(INVALID_MANIFEST_CONTENT.to_vec()),
            )?;
            ensure_status!(resp, 400, 404);
            if resp.status == 400 {
                check_suite_error_code(&resp)?;
            }
            Ok(())
        },
    );
    r.it(e, "[stricter: 07_error_codes_test.go] 400 response body should contain OCI-conforming JSON message (PUT of invalid content to sha256:totallywrong must be exactly 400)", |e| {
        let resp = e.c.put_manifest(&e.name, "sha256:totallywrong", MT_OCI_MANIFEST, INVALID_MANIFEST_CONTENT)?;
        ensure_status!(resp, 400);
        check_suite_error_code(&resp)
    });

    r.context("Teardown");
    if e.delete_manifest_before_blobs {
        pull_delete_manifests(r, e);
    }
    for (text, idx) in [
        ("Delete config[0] blob created in setup", 0usize),
        ("Delete config[1] blob created in setup", 1),
    ] {
        r.it(e, text, |e| {
            let resp =
                e.c.delete(&e.p(&format!("/blobs/{}", e.d.configs[idx].digest)))?;
            ensure_2xx_or!(resp, 404, 405);
            Ok(())
        });
    }
    r.it(e, "Delete layer blob created in setup", |e| {
        let resp = e.c.delete(&e.p(&format!("/blobs/{}", e.d.layer.digest)))?;
        ensure_2xx_or!(resp, 404, 405);
        Ok(())
    });
    if !e.delete_manifest_before_blobs {
        pull_delete_manifests(r, e);
    }
}

pub(super) fn pull_delete_manifests(r: &mut Runner, e: &mut Env) {
    for (text, idx) in [
        ("Delete manifest[0] created in setup", 0usize),
        ("Delete manifest[1] created in setup", 1),
    ] {
        r.it(e, text, |e| {
            let resp =
                e.c.delete(&e.p(&format!("/manifests/{}", e.d.manifests[idx].digest)))?;
            ensure_2xx_or!(resp, 405);
            Ok(())
        });
    }
}
