//! The newer suite (conformance/run.go + api.go on the main branch, `OCI_VERSION` "1.1" defaults):
//! the blob-API matrix, run for sha256 and for sha512.

use crate::support::oci::*;

use super::checks::{check_content, check_optional_dcd, prefix};
use super::env::Env;
use super::runner::{Fail, Runner, R};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub(super) fn digest(self, b: &[u8]) -> String {
        match self {
            Algo::Sha256 => sha256_of(b),
            Algo::Sha512 => sha512_of(b),
        }
    }
    pub(super) fn blob(self, b: Vec<u8>) -> TestBlob {
        match self {
            Algo::Sha256 => TestBlob::new(b),
            Algo::Sha512 => TestBlob::sha512(b),
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
}

pub(super) const CHUNK_MIN: usize = 1024;

/// The ways the newer suite pushes a blob (api.go).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum BlobApi {
    PostOnly,
    PostPut,
    Chunked { put_last: bool, out_of_order: bool },
    Stream,
}

pub(super) fn push_blob_via(c: &Client, repo: &str, blob: &TestBlob, api: BlobApi) -> R {
    let uploads = c.url(&format!("/v2/{repo}/blobs/uploads/"));
    let (status_resp, loc) = match api {
        BlobApi::PostOnly => {
            let r = c.send(
                "POST",
                &with_query(&uploads, "digest", &blob.digest),
                &[("Content-Type", MT_OCTET)],
                Some(blob.content.clone()),
            )?;
            ensure!(r.status == 201, "single POST ?digest= must be 201 (202 = no single-POST support; issue #2 requires it):\n  {}", r.describe());
            let loc = r
                .location_abs()
                .ok_or_else(|| format!("201 without Location:\n  {}", r.describe()))?;
            (r, loc)
        }
        BlobApi::PostPut => {
            let post = c.send("POST", &uploads, &[], Some(vec![]))?;
            ensure_status!(post, 202);
            let put = c.send(
                "PUT",
                &with_query(&c.url(&post.location_rel()), "digest", &blob.digest),
                &[("Content-Type", MT_OCTET)],
                Some(blob.content.clone()),
            )?;
            ensure_status!(put, 201);
            let loc = put
                .location_abs()
                .ok_or_else(|| format!("201 without Location:\n  {}", put.describe()))?;
            (put, loc)
        }
        BlobApi::Stream => {
            let post = c.send("POST", &uploads, &[("Content-Length", "0")], Some(vec![]))?;
            ensure_status!(post, 202);
            let patch = c.send(
                "PATCH",
                &post.location_rel(),
                &[("Content-Type", MT_OCTET)],
                Some(blob.content.clone()),
            )?;
            ensure_status!(patch, 202);
            ensure!(
                !patch.header("Location").is_empty(),
                "PATCH 202 without Location:\n  {}",
                patch.describe()
            );
            let put = c.send(
                "PUT",
                &with_query(&c.url(&patch.location_rel()), "digest", &blob.digest),
                &[("Content-Type", MT_OCTET)],
                Some(vec![]),
            )?;
            ensure_status!(put, 201);
            let loc = put
                .location_abs()
                .ok_or_else(|| format!("201 without Location:\n  {}", put.describe()))?;
            (put, loc)
        }
        BlobApi::Chunked {
            put_last,
            out_of_order,
        } => {
            let post = c.send("POST", &uploads, &[("Content-Length", "0")], Some(vec![]))?;
            ensure_status!(post, 202);
            let body = &blob.content;
            let n = body.len();
            let mut chunk = n / 3 + 1;
            let min = post.header("OCI-Chunk-Min-Length");
            if let Ok(m) = min.parse::<usize>() {
                chunk = chunk.max(m);
            }
            chunk = chunk.max(CHUNK_MIN).min(n.max(1));
            let mut loc = post.location_rel();
            let mut last: i64 = -1;
            let mut final_resp: Option<Resp> = None;
            while last < n as i64 - 1 {
                if out_of_order {
                    // an out-of-order chunk: skip ahead, or back to the start
                    let mut bad_start = (last + 1) as usize + chunk;
                    if bad_start >= n {
                        bad_start = 0;
                    }
                    let bad_last = (bad_start + chunk - 1).min(n - 1);
                    let (method, url) = if put_last && bad_last == n - 1 {
                        ("PUT", with_query(&c.url(&loc), "digest", &blob.digest))
                    } else {
                        ("PATCH", c.url(&loc))
                    };
                    let range = format!("{bad_start}-{bad_last}");
                    let r = c.send(
                        method,
                        &url,
                        &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
                        Some(body[bad_start..=bad_last].to_vec()),
                    )?;
                    ensure!(r.status == 416, "out-of-order {method} Content-Range {range} (received 0-{last}) must be 416:\n  {}", r.describe());
                    let st = c.get(&loc)?;
                    ensure_status!(st, 204);
                    ensure!(
                        !st.header("Location").is_empty(),
                        "upload status without Location:\n  {}",
                        st.describe()
                    );
                    let range_h = st.header("Range");
                    let end = range_h
                        .strip_prefix("0-")
                        .and_then(|x| x.parse::<i64>().ok());
                    ensure!(
                        end.is_some(),
                        "upload status Range {range_h:?} is not `0-<int>`:\n  {}",
                        st.describe()
                    );
                    if last >= 0 {
                        ensure!(
                            end == Some(last),
                            "upload status Range {range_h:?}, expected \"0-{last}\""
                        );
                    }
                    loc = st.location_rel();
                }
                let start = (last + 1) as usize;
                let end = (start + chunk - 1).min(n - 1);
                let range = format!("{start}-{end}");
                if put_last && end == n - 1 {
                    let r = c.send(
                        "PUT",
                        &with_query(&c.url(&loc), "digest", &blob.digest),
                        &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
                        Some(body[start..=end].to_vec()),
                    )?;
                    ensure_status!(r, 201);
                    final_resp = Some(r);
                } else {
                    let r = c.send(
                        "PATCH",
                        &loc,
                        &[("Content-Type", MT_OCTET), ("Content-Range", &range)],
                        Some(body[start..=end].to_vec()),
                    )?;
                    ensure_status!(r, 202);
                    let rh = r.header("Range");
                    ensure!(
                        rh == format!("0-{end}"),
                        "PATCH {range}: Range is {rh:?}, expected \"0-{end}\""
                    );
                    ensure!(
                        !r.header("Location").is_empty(),
                        "PATCH 202 without Location:\n  {}",
                        r.describe()
                    );
                    loc = r.location_rel();
                }
                last = end as i64;
            }
            let put = match final_resp {
                Some(r) => r,
                None => {
                    let r = c.send(
                        "PUT",
                        &with_query(&c.url(&loc), "digest", &blob.digest),
                        &[("Content-Type", MT_OCTET)],
                        Some(vec![]),
                    )?;
                    ensure_status!(r, 201);
                    r
                }
            };
            let loc = put
                .location_abs()
                .ok_or_else(|| format!("201 without Location:\n  {}", put.describe()))?;
            (put, loc)
        }
    };
    check_optional_dcd(&status_resp, &blob.digest)?;
    // BlobVerifyLocation: the returned Location serves the blob
    let g = c.get(&loc)?;
    ensure!(
        g.status == 200 && g.body == blob.content,
        "the returned Location {loc} does not serve the blob:\n  {}",
        g.describe()
    );
    Ok(())
}

/// HEAD + GET of a pushed blob (api.go BlobHeadExists / BlobGetExistsFull, with the required digest header).
pub(super) fn check_blob_readable(c: &Client, repo: &str, blob: &TestBlob) -> R {
    let h = c.head_blob(repo, &blob.digest)?;
    check_content(&h, &blob.content, &blob.digest, None, true)
        .map_err(|f| prefix(f, "blob HEAD"))?;
    let g = c.get_blob(repo, &blob.digest)?;
    check_content(&g, &blob.content, &blob.digest, None, false).map_err(|f| prefix(f, "blob GET"))
}

/// DELETE (202 or 404; 405 = unsupported) then HEAD 404 at once (api.go BlobDelete + atomic).
pub(super) fn delete_blob_atomic(c: &Client, repo: &str, digest: &str) -> R {
    let d = c.delete(&format!("/v2/{repo}/blobs/{digest}"))?;
    ensure_status!(d, 202, 404);
    if d.status == 202 {
        let h = c.head_blob(repo, digest)?;
        ensure!(
            h.status == 404,
            "blob {digest} still HEADs {} right after a 202 DELETE:\n  {}",
            h.status,
            h.describe()
        );
    }
    Ok(())
}

pub(super) fn mount(
    c: &Client,
    repo: &str,
    from: Option<&str>,
    digest: &str,
) -> Result<Resp, String> {
    let mut url = with_query(
        &c.url(&format!("/v2/{repo}/blobs/uploads/")),
        "mount",
        digest,
    );
    if let Some(f) = from {
        url = with_query(&url, "from", f);
    }
    c.send("POST", &url, &[], Some(vec![]))
}

pub(super) fn newer_suite_blob_matrix(r: &mut Runner, e: &mut Env, algo: Algo) {
    r.context(&format!("{} blobs", algo.name()));
    let repo = e.name.clone();
    let repo2 = format!("{}-repo2", e.name);
    r.it(
        e,
        "[extra: newer suite run.go get-missing] GET of a never-pushed blob gives 404",
        |e| {
            let d = algo.digest(&random_bytes(512));
            ensure_status!(e.c.get_blob(&repo, &d)?, 404);
            Ok(())
        },
    );
    let apis: Vec<(&str, BlobApi, usize)> = vec![
        ("post only", BlobApi::PostOnly, 512),
        ("post+put", BlobApi::PostPut, 512),
        (
            "chunked single",
            BlobApi::Chunked {
                put_last: false,
                out_of_order: false,
            },
            512,
        ),
        ("stream", BlobApi::Stream, 512),
        (
            "chunked multi",
            BlobApi::Chunked {
                put_last: false,
                out_of_order: false,
            },
            CHUNK_MIN * 3 - 5,
        ),
        (
            "chunked multi and put chunk",
            BlobApi::Chunked {
                put_last: true,
                out_of_order: false,
            },
            CHUNK_MIN * 3 - 5,
        ),
        (
            "chunked out-of-order",
            BlobApi::Chunked {
                put_last: false,
                out_of_order: true,
            },
            CHUNK_MIN * 3 - 5,
        ),
        (
            "chunked out-of-order and put chunk",
            BlobApi::Chunked {
                put_last: true,
                out_of_order: true,
            },
            CHUNK_MIN * 3 - 5,
        ),
    ];
    for (name, api, size) in apis {
        let text = format!("[stricter: newer suite run.go TestBlobAPIs] {name}: push, HEAD, GET, DELETE (+HEAD 404)");
        let (repo, algo) = (repo.clone(), algo);
        r.it(e, &text, move |e| {
            let blob = algo.blob(random_bytes(size));
            push_blob_via(&e.c, &repo, &blob, api)?;
            check_blob_readable(&e.c, &repo, &blob)?;
            delete_blob_atomic(&e.c, &repo, &blob.digest)
        });
    }
    {
        let (repo, repo2) = (repo.clone(), repo2.clone());
        r.it(e, "[stricter: newer suite run.go TestBlobAPIs] mount: push to repo2, POST ?mount=&from=repo2 into repo1 gives 201, readable in repo1", move |e| {
            let blob = algo.blob(random_bytes(512));
            push_blob_via(&e.c, &repo2, &blob, BlobApi::PostPut)?;
            let m = mount(&e.c, &repo, Some(&repo2), &blob.digest)?;
            ensure!(m.status == 201, "mount from a repository holding the blob must be 201 (issue #2: cross-repository mount):\n  {}", m.describe());
            let loc = m.location_abs().ok_or_else(|| format!("201 without Location:\n  {}", m.describe()))?;
            check_optional_dcd(&m, &blob.digest)?;
            let g = e.c.get(&loc)?;
            ensure!(g.status == 200 && g.body == blob.content, "mount Location does not serve the blob:\n  {}", g.describe());
            check_blob_readable(&e.c, &repo, &blob)?;
            delete_blob_atomic(&e.c, &repo, &blob.digest)?;
            check_blob_readable(&e.c, &repo2, &blob).map_err(|f| prefix(f, "the source repository after deleting the mounted copy"))?;
            delete_blob_atomic(&e.c, &repo2, &blob.digest)
        });
    }
    {
        let (repo, repo2) = (repo.clone(), repo2.clone());
        r.it(e, "[advisory: newer suite run.go \"mount anonymous\"; spec v1.1 lets the registry answer 202] mount without `from` of a blob held by another repository gives 201", move |e| {
            let blob = algo.blob(random_bytes(512));
            push_blob_via(&e.c, &repo2, &blob, BlobApi::PostPut)?;
            let m = mount(&e.c, &repo, None, &blob.digest)?;
            let res = if m.status == 201 {
                Ok(())
            } else {
                Err(Fail::Fail(format!("mount without `from` answered {} (the newer suite, whose 1.1 defaults set MountAnonymous=true, fails anything but 201):\n  {}", m.status, m.describe())))
            };
            let _ = e.c.delete(&format!("/v2/{repo}/blobs/{}", blob.digest));
            let _ = e.c.delete(&format!("/v2/{repo2}/blobs/{}", blob.digest));
            res
        });
    }
    {
        let (repo, repo2) = (repo.clone(), repo2.clone());
        r.it(e, "[stricter: newer suite run.go \"mount missing\"] mount from a repository that does not hold the blob gives 202 (an upload session), never 201", move |e| {
            let blob = algo.blob(random_bytes(512));
            let m = mount(&e.c, &repo, Some(&repo2), &blob.digest)?;
            ensure!(m.status == 202, "mount of a blob repo2 does not hold must be 202:\n  {}", m.describe());
            let put = e.c.send("PUT", &with_query(&e.c.url(&m.location_rel()), "digest", &blob.digest), &[("Content-Type", MT_OCTET)], Some(blob.content.clone()))?;
            ensure_status!(put, 201);
            check_blob_readable(&e.c, &repo, &blob)?;
            delete_blob_atomic(&e.c, &repo, &blob.digest)
        });
    }
    {
        let repo = repo.clone();
        r.it(e, "[extra: newer suite run.go \"post cancel\" (UploadCancel, 1.1+dev) + issue #2] POST then DELETE of the session gives 204; the blob does not exist", move |e| {
            let blob = algo.blob(random_bytes(512));
            let post = e.c.start_upload(&repo)?;
            ensure_status!(post, 202);
            let d = e.c.send("DELETE", &post.location_rel(), &[("Content-Length", "0")], Some(vec![]))?;
            ensure_status!(d, 204);
            ensure_status!(e.c.get_blob(&repo, &blob.digest)?, 404);
            Ok(())
        });
    }
    for (name, content) in [("empty", Vec::new()), ("emptyJSON", b"{}".to_vec())] {
        let repo = repo.clone();
        r.it(
            e,
            &format!(
                "[stricter: newer suite run.go blob data] {name} blob: push, HEAD, GET, DELETE"
            ),
            move |e| {
                let blob = algo.blob(content);
                push_blob_via(&e.c, &repo, &blob, BlobApi::PostPut)?;
                check_blob_readable(&e.c, &repo, &blob)?;
                delete_blob_atomic(&e.c, &repo, &blob.digest)
            },
        );
    }
}
