//! `02_push_test.go`

use crate::support::oci::*;

use super::checks::{check_content, check_optional_dcd};
use super::data::{chunked_blob, EMPTY_LAYER_TEST_TAG, NONEXISTENT_MANIFEST};
use super::env::Env;
use super::runner::{skip, Runner};

pub(super) fn test02_push(r: &mut Runner, e: &mut Env) {
    r.describe("Push");
    // "Setup": no setup required at this time for push tests

    r.context("Blob Upload Streamed");
    r.it(
        e,
        "PATCH request with blob in body should yield 202 response",
        |e| {
            let post = e.c.start_upload(&e.name)?;
            ensure!(
                !post.header("Location").is_empty(),
                "POST returned no Location:\n  {}",
                post.describe()
            );
            let resp = e.c.send(
                "PATCH",
                &post.location_rel(),
                &[("Content-Type", MT_OCTET)],
                Some(e.d.blob_a.content.clone()),
            )?;
            ensure_status!(resp, 202);
            e.last = Some(resp);
            Ok(())
        },
    );
    r.it(
        e,
        "PUT request to session URL with digest should yield 201 response",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "Expect(lastResponse).ToNot(BeNil())".to_string())?;
            // The suite sets `Content-Length: <len of blob A>` but sends no body; Go's transport then
            // sends `Content-Length: 0`, which is what goes on the wire here too.
            let url = with_query(&e.c.url(&last.location_rel()), "digest", &e.d.blob_a.digest);
            let resp =
                e.c.send("PUT", &url, &[("Content-Type", MT_OCTET)], Some(vec![]))?;
            ensure_status!(resp, 201);
            ensure!(
                !resp.header("Location").is_empty(),
                "201 without Location:\n  {}",
                resp.describe()
            );
            Ok(())
        },
    );
    r.it(e, "[extra: newer suite api.go BlobPatchStream/BlobVerifyLocation] the streamed blob is readable, byte for byte, in the repository", |e| {
        let resp = e.c.get_blob(&e.name, &e.d.blob_a.digest)?;
        check_content(&resp, &e.d.blob_a.content, &e.d.blob_a.digest, None, false)
    });

    r.context("Blob Upload Monolithic");
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
        "POST request with digest and blob should yield a 201 or 202",
        |e| {
            let cfg = e.d.configs[1].clone();
            let url = with_query(&e.c.url(&e.p("/blobs/uploads/")), "digest", &cfg.digest);
            let resp = e.c.send(
                "POST",
                &url,
                &[
                    ("Content-Type", MT_OCTET),
                    ("Content-Length", &cfg.len_str()),
                ],
                Some(cfg.content.clone()),
            )?;
            let loc = resp.header("Location");
            ensure!(!loc.is_empty(), "no Location:\n  {}", resp.describe());
            ensure_status!(resp, 201, 202);
            e.last = Some(resp);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to blob URL from prior request should yield 200 or 404 based on response code",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "Expect(lastResponse).ToNot(BeNil())".to_string())?;
            let resp =
                e.c.get(&e.p(&format!("/blobs/{}", e.d.configs[1].digest)))?;
            if last.status == 202 {
                ensure_status!(resp, 404);
            } else {
                ensure_status!(resp, 200);
            }
            Ok(())
        },
    );
    r.it(e, "POST request should yield a session ID", |e| {
        let resp = e.c.start_upload(&e.name)?;
        ensure_status!(resp, 202);
        e.last = Some(resp);
        Ok(())
    });
    r.it(e, "PUT upload of a blob should yield a 201 Response", |e| {
        let last = e
            .last
            .clone()
            .ok_or_else(|| "no lastResponse".to_string())?;
        let cfg = e.d.configs[1].clone();
        let url = with_query(&e.c.url(&last.location_rel()), "digest", &cfg.digest);
        let resp = e.c.send(
            "PUT",
            &url,
            &[
                ("Content-Type", MT_OCTET),
                ("Content-Length", &cfg.len_str()),
            ],
            Some(cfg.content.clone()),
        )?;
        ensure!(
            !resp.header("Location").is_empty(),
            "no Location:\n  {}",
            resp.describe()
        );
        ensure_status!(resp, 201);
        Ok(())
    });
    r.it(
        e,
        "GET request to existing blob should yield 200 response",
        |e| {
            let resp =
                e.c.get(&e.p(&format!("/blobs/{}", e.d.configs[1].digest)))?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(
        e,
        "PUT upload of a layer blob should yield a 201 Response",
        |e| {
            let post = e.c.start_upload(&e.name)?;
            let url = with_query(&e.c.url(&post.location_rel()), "digest", &e.d.layer.digest);
            let resp = e.c.send(
                "PUT",
                &url,
                &[
                    ("Content-Type", MT_OCTET),
                    ("Content-Length", &e.d.layer.len_str()),
                ],
                Some(e.d.layer.content.clone()),
            )?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location:\n  {}",
                resp.describe()
            );
            ensure_status!(resp, 201);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to existing layer should yield 200 response",
        |e| {
            let resp = e.c.get(&e.p(&format!("/blobs/{}", e.d.layer.digest)))?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(e, "[stricter: 03_blob_upload_monolithic_test.go] POST request with digest and blob should yield a 201 (single-POST upload of a new blob; its Location serves the blob)", |e| {
        let blob = TestBlob::new(random_bytes(512));
        let url = with_query(&e.c.url(&e.p("/blobs/uploads/")), "digest", &blob.digest);
        let resp = e.c.send("POST", &url, &[("Content-Type", MT_OCTET)], Some(blob.content.clone()))?;
        ensure_status!(resp, 201);
        let loc = resp.location_abs().ok_or_else(|| format!("201 without Location:\n  {}", resp.describe()))?;
        let get = e.c.get(&loc)?;
        ensure!(get.status == 200 && get.body == blob.content, "GET of the returned Location does not serve the blob:\n  {}", get.describe());
        check_optional_dcd(&resp, &blob.digest)
    });

    r.context("Blob Upload Chunked");
    r.it(e, "Out-of-order blob upload should return 416", |e| {
        let post = e.c.send(
            "POST",
            &e.p("/blobs/uploads/"),
            &[("Content-Length", "0")],
            Some(vec![]),
        )?;
        ensure!(
            !post.header("Location").is_empty(),
            "no Location:\n  {}",
            post.describe()
        );
        // rebuild chunked blob if min size is above our chunk size
        let min = post.header("OCI-Chunk-Min-Length");
        if !min.is_empty() {
            let min: usize = min
                .parse()
                .map_err(|_| format!("OCI-Chunk-Min-Length {min:?} is not an integer"))?;
            if min > e.d.blob_b_chunk1.len() {
                e.d.setup_chunked_blob(min * 2 - 2);
            }
        }
        let resp = e.c.send(
            "PATCH",
            &post.location_rel(),
            &[
                ("Content-Type", MT_OCTET),
                ("Content-Length", &e.d.blob_b_chunk2.len().to_string()),
                ("Content-Range", &e.d.blob_b_chunk2_range),
            ],
            Some(e.d.blob_b_chunk2.clone()),
        )?;
        ensure_status!(resp, 416);
        Ok(())
    });
    r.it(e, "PATCH request with first chunk should return 202", |e| {
        let post = e.c.send(
            "POST",
            &e.p("/blobs/uploads/"),
            &[("Content-Length", "0")],
            Some(vec![]),
        )?;
        ensure!(
            !post.header("Location").is_empty(),
            "no Location:\n  {}",
            post.describe()
        );
        e.prev = Some(post.clone());
        let resp = e.c.send(
            "PATCH",
            &post.location_rel(),
            &[
                ("Content-Type", MT_OCTET),
                ("Content-Length", &e.d.blob_b_chunk1.len().to_string()),
                ("Content-Range", &e.d.blob_b_chunk1_range),
            ],
            Some(e.d.blob_b_chunk1.clone()),
        )?;
        ensure_status!(resp, 202);
        let range = resp.header("Range");
        ensure!(
            range == e.d.blob_b_chunk1_range,
            "Range is {range:?}, expected {:?}:\n  {}",
            e.d.blob_b_chunk1_range,
            resp.describe()
        );
        e.last = Some(resp);
        Ok(())
    });
    r.it(e, "Retry previous blob chunk should return 416", |e| {
        let prev = e
            .prev
            .clone()
            .ok_or_else(|| "no prevResponse".to_string())?;
        let resp = e.c.send(
            "PATCH",
            &prev.location_rel(),
            &[
                ("Content-Type", MT_OCTET),
                ("Content-Length", &e.d.blob_b_chunk1.len().to_string()),
                ("Content-Range", &e.d.blob_b_chunk1_range),
            ],
            Some(e.d.blob_b_chunk1.clone()),
        )?;
        ensure_status!(resp, 416);
        Ok(())
    });
    r.it(
        e,
        "Get on stale blob upload should return 204 with a range and location",
        |e| {
            let prev = e
                .prev
                .clone()
                .ok_or_else(|| "no prevResponse".to_string())?;
            let resp = e.c.get(&prev.location_rel())?;
            ensure_status!(resp, 204);
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location:\n  {}",
                resp.describe()
            );
            let range = resp.header("Range");
            ensure!(
                range == e.d.blob_b_chunk1_range,
                "Range is {range:?}, expected {:?}:\n  {}",
                e.d.blob_b_chunk1_range,
                resp.describe()
            );
            e.last = Some(resp);
            Ok(())
        },
    );
    r.it(
        e,
        "PATCH request with second chunk should return 202",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "no lastResponse".to_string())?;
            let resp = e.c.send(
                "PATCH",
                &last.location_rel(),
                &[
                    ("Content-Length", &e.d.blob_b_chunk2.len().to_string()),
                    ("Content-Range", &e.d.blob_b_chunk2_range),
                    ("Content-Type", MT_OCTET),
                ],
                Some(e.d.blob_b_chunk2.clone()),
            )?;
            let loc = resp.header("Location");
            e.second_chunk = Some(resp.clone());
            ensure_status!(resp, 202);
            ensure!(!loc.is_empty(), "no Location:\n  {}", resp.describe());
            e.last = Some(resp);
            Ok(())
        },
    );
    r.it(e, "PUT request with digest should return 201", |e| {
        let last = e
            .last
            .clone()
            .ok_or_else(|| "no lastResponse".to_string())?;
        let url = with_query(&e.c.url(&last.location_rel()), "digest", &e.d.blob_b.digest);
        let resp = e.c.send(
            "PUT",
            &url,
            &[("Content-Length", "0"), ("Content-Type", MT_OCTET)],
            Some(vec![]),
        )?;
        ensure_status!(resp, 201);
        ensure!(
            !resp.header("Location").is_empty(),
            "no Location:\n  {}",
            resp.describe()
        );
        Ok(())
    });
    r.it(e, "[extra: spec §Pushing a blob in chunks] every chunk's 202 carries Range: 0-<end-of-range> (second chunk), and the blob reads back byte for byte", |e| {
        let second = e.second_chunk.clone().ok_or_else(|| "no second-chunk response".to_string())?;
        let want = format!("0-{}", e.d.blob_b.len() - 1);
        let got = second.header("Range");
        ensure!(got == want, "Range after the second chunk is {got:?}, expected {want:?}:\n  {}", second.describe());
        let resp = e.c.get_blob(&e.name, &e.d.blob_b.digest)?;
        check_content(&resp, &e.d.blob_b.content, &e.d.blob_b.digest, None, false)
    });
    r.it(
        e,
        "[stricter: 04_blob_upload_chunked_test.go] PUT request with final chunk should return 201",
        |e| {
            let (blob, c1, c2, r1, r2) = chunked_blob(42);
            let post = e.c.send(
                "POST",
                &e.p("/blobs/uploads/"),
                &[("Content-Length", "0")],
                Some(vec![]),
            )?;
            ensure!(
                !post.header("Location").is_empty(),
                "no Location:\n  {}",
                post.describe()
            );
            let patch = e.c.send(
                "PATCH",
                &post.location_rel(),
                &[("Content-Type", MT_OCTET), ("Content-Range", &r1)],
                Some(c1),
            )?;
            ensure_status!(patch, 202);
            let url = with_query(&e.c.url(&patch.location_rel()), "digest", &blob.digest);
            let put = e.c.send(
                "PUT",
                &url,
                &[("Content-Range", &r2), ("Content-Type", MT_OCTET)],
                Some(c2),
            )?;
            ensure!(
                !put.header("Location").is_empty(),
                "no Location:\n  {}",
                put.describe()
            );
            ensure_status!(put, 201);
            let get = e.c.get_blob(&e.name, &blob.digest)?;
            check_content(&get, &blob.content, &blob.digest, None, false)
        },
    );
    r.it(e, "[extra: newer suite api.go BlobPatchChunked(OutOfOrderChunks)] after a 416 on a fresh session, GET of the session gives 204 with Location and Range 0-<n>, and the upload can proceed", |e| {
        let (blob, c1, c2, r1, r2) = chunked_blob(42);
        let post = e.c.send("POST", &e.p("/blobs/uploads/"), &[("Content-Length", "0")], Some(vec![]))?;
        let bad = e.c.send("PATCH", &post.location_rel(), &[("Content-Type", MT_OCTET), ("Content-Range", &r2)], Some(c2.clone()))?;
        ensure_status!(bad, 416);
        let st = e.c.get(&post.location_rel())?;
        ensure_status!(st, 204);
        ensure!(!st.header("Location").is_empty(), "no Location:\n  {}", st.describe());
        let range = st.header("Range");
        let ok = range.strip_prefix("0-").map(|n| n.parse::<i64>().is_ok()).unwrap_or(false);
        ensure!(ok, "Range {range:?} is not `0-<int>`:\n  {}", st.describe());
        let p1 = e.c.send("PATCH", &st.location_rel(), &[("Content-Type", MT_OCTET), ("Content-Range", &r1)], Some(c1))?;
        ensure_status!(p1, 202);
        let p2 = e.c.send("PATCH", &p1.location_rel(), &[("Content-Type", MT_OCTET), ("Content-Range", &r2)], Some(c2))?;
        ensure_status!(p2, 202);
        let url = with_query(&e.c.url(&p2.location_rel()), "digest", &blob.digest);
        let put = e.c.send("PUT", &url, &[("Content-Type", MT_OCTET)], Some(vec![]))?;
        ensure_status!(put, 201);
        Ok(())
    });
    r.it(e, "[extra: issue #2 upload cancel + newer suite api.go BlobPostCancel] DELETE of an upload session gives 204, then the session is gone (404 BLOB_UPLOAD_UNKNOWN)", |e| {
        let post = e.c.start_upload(&e.name)?;
        ensure_status!(post, 202);
        let patch = e.c.send("PATCH", &post.location_rel(), &[("Content-Type", MT_OCTET), ("Content-Range", "0-9")], Some(random_bytes(10)))?;
        ensure_status!(patch, 202);
        let del = e.c.send("DELETE", &patch.location_rel(), &[("Content-Length", "0")], Some(vec![]))?;
        ensure_status!(del, 204);
        let st = e.c.get(&patch.location_rel())?;
        ensure_status!(st, 404);
        let code = st.first_code()?;
        ensure!(code == "BLOB_UPLOAD_UNKNOWN", "errors[0].code is {code:?}, expected BLOB_UPLOAD_UNKNOWN:\n  {}", st.describe());
        Ok(())
    });

    r.context("Cross-Repository Blob Mount");
    r.it(
        e,
        "Cross-mounting of a blob without the from argument should yield session id",
        |e| {
            let url = with_query(
                &e.c.url(&format!("/v2/{}/blobs/uploads/", e.cross)),
                "mount",
                &e.d.dummy_digest,
            );
            let resp = e.c.send("POST", &url, &[], Some(vec![]))?;
            ensure_status!(resp, 202);
            ensure!(
                resp.location_abs().is_some(),
                "no Location:\n  {}",
                resp.describe()
            );
            Ok(())
        },
    );
    r.it(
        e,
        "POST request to mount another repository's blob should return 201 or 202",
        |e| {
            let url = with_query(
                &e.c.url(&format!("/v2/{}/blobs/uploads/", e.cross)),
                "mount",
                &e.d.blob_a.digest,
            );
            let url = with_query(&url, "from", &e.name);
            let resp = e.c.send("POST", &url, &[], Some(vec![]))?;
            ensure_status!(resp, 201, 202);
            e.last = Some(resp);
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to test digest within cross-mount namespace should return 200",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "no lastResponse".to_string())?;
            if last.status != 201 {
                return skip("RunOnlyIf(lastResponse.StatusCode() == http.StatusCreated)");
            }
            let want = format!("/v2/{}/blobs/{}", e.cross, e.d.blob_a.digest);
            let got = last.location_rel();
            ensure!(
                got == want,
                "GetRelativeLocation() is {got:?}, expected {want:?}:\n  {}",
                last.describe()
            );
            let resp = e.c.get(&got)?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(
        e,
        "Cross-mounting of nonexistent blob should yield session id",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "no lastResponse".to_string())?;
            if last.status != 202 {
                return skip("RunOnlyIf(lastResponse.StatusCode() == http.StatusAccepted)");
            }
            let want = format!("/v2/{}/blobs/uploads/", e.cross);
            ensure!(
                last.location_rel().starts_with(&want),
                "Location {:?} does not start with {want:?}",
                last.location_rel()
            );
            Ok(())
        },
    );
    r.it(
        e,
        "Cross-mounting without from, and automatic content discovery enabled should return a 201",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "no lastResponse".to_string())?;
            match e.automatic_crossmount {
                None => {
                    return skip(
                        "RunOnlyIf(runAutomaticCrossmountTest): OCI_AUTOMATIC_CROSSMOUNT is unset",
                    )
                }
                Some(false) => return skip("RunOnlyIf(automaticCrossmountEnabled)"),
                Some(true) if last.status != 201 => {
                    return skip("RunOnlyIf(lastResponse.StatusCode() == http.StatusCreated)")
                }
                _ => {}
            }
            let url = with_query(
                &e.c.url(&format!("/v2/{}/blobs/uploads/", e.cross)),
                "mount",
                &e.d.blob_a.digest,
            );
            let resp = e.c.send("POST", &url, &[], Some(vec![]))?;
            ensure_status!(resp, 201);
            Ok(())
        },
    );
    r.it(
        e,
        "Cross-mounting without from, and automatic content discovery disabled should return a 202",
        |e| {
            let last = e
                .last
                .clone()
                .ok_or_else(|| "no lastResponse".to_string())?;
            match e.automatic_crossmount {
                None => {
                    return skip(
                        "RunOnlyIf(runAutomaticCrossmountTest): OCI_AUTOMATIC_CROSSMOUNT is unset",
                    )
                }
                Some(true) => return skip("RunOnlyIfNot(automaticCrossmountEnabled)"),
                Some(false) if last.status != 201 => {
                    return skip("RunOnlyIf(lastResponse.StatusCode() == http.StatusCreated)")
                }
                _ => {}
            }
            let url = with_query(
                &e.c.url(&format!("/v2/{}/blobs/uploads/", e.cross)),
                "mount",
                &e.d.blob_a.digest,
            );
            let resp = e.c.send("POST", &url, &[], Some(vec![]))?;
            ensure_status!(resp, 202);
            Ok(())
        },
    );
    r.it(e, "[extra: issue #2 cross-mount + newer suite run.go \"mount missing\"] mounting a digest the source repository does not hold gives the 202 fallback with an upload session", |e| {
        let never = TestBlob::new(random_bytes(64));
        let url = with_query(&e.c.url(&format!("/v2/{}/blobs/uploads/", e.cross)), "mount", &never.digest);
        let url = with_query(&url, "from", &e.name);
        let resp = e.c.send("POST", &url, &[], Some(vec![]))?;
        ensure_status!(resp, 202);
        let want = format!("/v2/{}/blobs/uploads/", e.cross);
        ensure!(resp.location_rel().starts_with(&want), "Location {:?} is not an upload session under {want:?}", resp.location_rel());
        // The session is usable: finish it with the content.
        let put = e.c.send("PUT", &with_query(&e.c.url(&resp.location_rel()), "digest", &never.digest), &[("Content-Type", MT_OCTET)], Some(never.content.clone()))?;
        ensure_status!(put, 201);
        Ok(())
    });
    r.it(e, "[extra: spec §Mounting a blob + issue #2] a blob mounted with 201 is readable through the target repository, byte for byte", |e| {
        let last = e.last.clone().ok_or_else(|| "no lastResponse".to_string())?;
        if last.status != 201 {
            return skip("the mount answered 202");
        }
        check_optional_dcd(&last, &e.d.blob_a.digest)?;
        let resp = e.c.get_blob(&e.cross, &e.d.blob_a.digest)?;
        check_content(&resp, &e.d.blob_a.content, &e.d.blob_a.digest, None, false)
    });

    r.context("Manifest Upload");
    r.it(e, "GET nonexistent manifest should return 404", |e| {
        let resp =
            e.c.get(&e.p(&format!("/manifests/{NONEXISTENT_MANIFEST}")))?;
        ensure_status!(resp, 404);
        Ok(())
    });
    r.it(e, "PUT should accept a manifest upload", |e| {
        for i in 0..4 {
            let tag = format!("test{i}");
            let resp = e.put_manifest(&tag, MT_OCI_MANIFEST, &e.d.manifests[1])?;
            if i == 0 {
                e.first_manifest_put = Some(resp.clone());
            }
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location (tag {tag}):\n  {}",
                resp.describe()
            );
            ensure_status!(resp, 201);
        }
        Ok(())
    });
    r.it(
        e,
        "Registry should accept a manifest upload with no layers",
        |e| {
            let resp = e.put_manifest(
                EMPTY_LAYER_TEST_TAG,
                MT_OCI_MANIFEST,
                &e.d.empty_layer_manifest,
            )?;
            if resp.status == 201 {
                let loc = resp.header("Location");
                e.empty_layer_manifest_ref = loc.clone();
                ensure!(!loc.is_empty(), "no Location:\n  {}", resp.describe());
            } else {
                e.warn(&format!(
                    "image manifest with no layers is not supported: {}",
                    resp.describe()
                ));
            }
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to manifest URL (digest) should yield 200 response",
        |e| {
            let resp = e.get_manifest_accept("GET", &e.d.manifests[1].digest)?;
            ensure_status!(resp, 200);
            Ok(())
        },
    );
    r.it(e, "[extra: newer suite api.go ManifestPut + spec §Pushing Manifests] PUT answers Docker-Content-Digest = digest, and its Location serves the exact bytes with Content-Type and Content-Length", |e| {
        let put = e.first_manifest_put.clone().ok_or_else(|| "no manifest PUT response".to_string())?;
        let m = e.d.manifests[1].clone();
        let dcd = put.header("Docker-Content-Digest");
        ensure!(dcd == m.digest, "Docker-Content-Digest of the PUT is {dcd:?}, expected {}:\n  {}", m.digest, put.describe());
        let loc = put.location_abs().ok_or_else(|| format!("no Location:\n  {}", put.describe()))?;
        let get = e.c.send("GET", &loc, &[("Accept", &format!("{MT_OCI_INDEX}, {MT_OCI_MANIFEST}"))], None)?;
        check_content(&get, &m.content, &m.digest, Some(MT_OCI_MANIFEST), false)
    });
    r.it(e, "[extra: spec §Pulling manifests] the manifest without mediaType is served with the Content-Type it was pushed with, byte for byte", |e| {
        if e.empty_layer_manifest_ref.is_empty() {
            return skip("the no-layers manifest was not accepted");
        }
        let m = e.d.empty_layer_manifest.clone();
        let get = e.get_manifest_accept("GET", EMPTY_LAYER_TEST_TAG)?;
        check_content(&get, &m.content, &m.digest, Some(MT_OCI_MANIFEST), false)
    });

    r.context("Teardown");
    if e.delete_manifest_before_blobs {
        push_delete_manifests(r, e);
    }
    r.it(e, "Delete config blob created in tests", |e| {
        let resp =
            e.c.delete(&e.p(&format!("/blobs/{}", e.d.configs[1].digest)))?;
        ensure_2xx_or!(resp, 404, 405);
        Ok(())
    });
    r.it(e, "Delete layer blob created in setup", |e| {
        let resp = e.c.delete(&e.p(&format!("/blobs/{}", e.d.layer.digest)))?;
        ensure_2xx_or!(resp, 404, 405);
        Ok(())
    });
    if !e.delete_manifest_before_blobs {
        push_delete_manifests(r, e);
    }
}

pub(super) fn push_delete_manifests(r: &mut Runner, e: &mut Env) {
    r.it(e, "Delete manifest created in tests", |e| {
        let resp =
            e.c.delete(&e.p(&format!("/manifests/{}", e.d.manifests[1].digest)))?;
        ensure_2xx_or!(resp, 405);
        if !e.empty_layer_manifest_ref.is_empty() {
            let resp =
                e.c.delete(&e.p(&format!("/manifests/{}", e.d.empty_layer_manifest.digest)))?;
            ensure_2xx_or!(resp, 405);
        }
        Ok(())
    });
}
