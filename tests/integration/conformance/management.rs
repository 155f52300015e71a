//! `04_management_test.go`

use crate::support::oci::*;

use super::checks::{check_content, prefix};
use super::env::Env;
use super::runner::{skip, Fail, Runner, R};

pub(super) fn test04_content_management(r: &mut Runner, e: &mut Env) {
    r.describe("Content Management");
    const DEFAULT_TAG_NAME: &str = "tagtest0";
    e.tag_to_delete = String::new();
    e.num_tags = 0;
    e.blob_delete_allowed = true;

    r.context("Setup");
    r.it(e, "Populate registry with test config blob", |e| {
        e.populate_blob(&e.d.configs[3])
    });
    r.it(e, "Populate registry with test layer", |e| {
        e.populate_blob(&e.d.layer)
    });
    r.it(e, "Populate registry with test tag", |e| {
        e.tag_to_delete = DEFAULT_TAG_NAME.to_string();
        let resp = e.put_manifest(&e.tag_to_delete, MT_OCI_MANIFEST, &e.d.manifests[3])?;
        ensure_2xx!(resp);
        Ok(())
    });
    r.it(e, "[extra: issue 11] the build farm has published the derived tag tagtest0.sif (the SIF of manifests[3]) before the tags are counted, and tags/list does not show it", |e| {
        // The official run counts the tags at whatever moment the build lands; waiting for it
        // here makes the counts below always run with the derived tag in place.
        let derived = format!("{}.sif", e.tag_to_delete);
        wait_until_manifest(e, &derived, true)?;
        let (resp, tags) = e.c.tags(&e.name)?;
        ensure_status!(resp, 200);
        ensure!(!tags.contains(&derived), "tags/list shows the derived tag {derived}: {tags:?}");
        Ok(())
    });
    r.it(
        e,
        "Check how many tags there are before anything gets deleted",
        |e| {
            let resp = e.c.get(&e.p("/tags/list"))?;
            ensure_status!(resp, 200);
            let v = resp.json()?;
            ensure!(
                v.get("tags")
                    .map(|t| t.is_array() || t.is_null())
                    .unwrap_or(true),
                "`tags` is not a list:\n  {}",
                resp.describe()
            );
            e.num_tags = tag_list(&resp).len();
            Ok(())
        },
    );

    r.context("Manifest delete");
    r.it(e, "DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)", |e| {
        let resp = e.c.delete(&e.p(&format!("/manifests/{}", e.tag_to_delete)))?;
        ensure_status!(resp, 400, 202, 405);
        if resp.status == 400 {
            let code = resp.first_code()?;
            ensure!(code == "UNSUPPORTED", "errors[0].code is {code:?}, expected UNSUPPORTED:\n  {}", resp.describe());
        }
        Ok(())
    });
    r.it(
        e,
        "DELETE request to manifest (digest) should yield 202 response unless already deleted",
        |e| {
            let resp =
                e.c.delete(&e.p(&format!("/manifests/{}", e.d.manifests[3].digest)))?;
            ensure_status!(resp, 202, 404);
            Ok(())
        },
    );
    r.it(e, "GET request to deleted manifest URL should yield 404 response, unless delete is disallowed", |e| {
        let resp = e.c.get(&e.p(&format!("/manifests/{}", e.d.manifests[3].digest)))?;
        ensure_status!(resp, 404, 200);
        Ok(())
    });
    r.it(e, "[extra: issue 11] the derived tag tagtest0.sif went with tagtest0 (waited for, so that the count below sees the registry after its planner caught up, as the official run does)", |e| {
        wait_until_manifest(e, &format!("{}.sif", e.tag_to_delete), false)
    });
    r.it(
        e,
        "GET request to tags list should reflect manifest deletion",
        |e| {
            let resp = e.c.get(&e.p("/tags/list"))?;
            ensure_status!(resp, 200);
            let v = resp.json()?;
            ensure!(
                v.get("tags")
                    .map(|t| t.is_array() || t.is_null())
                    .unwrap_or(true),
                "`tags` is not a list:\n  {}",
                resp.describe()
            );
            // v1.1.1: `Expect(len(tagList.Tags)).To(Equal(numTags - 1))` (404 only when no
            // tag is left).
            ensure_status!(resp, 200, 404);
            let expect_tags = e
                .num_tags
                .checked_sub(1)
                .ok_or_else(|| "numTags is 0: the setup tag was not listed".to_string())?;
            if resp.status == 404 {
                ensure!(
                    expect_tags == 0,
                    "404 for the tags list, but {expect_tags} tags should be left:\n  {}",
                    resp.describe()
                );
                return Ok(());
            }
            let n = tag_list(&resp).len();
            ensure!(
                n == expect_tags,
                "{n} tags after the delete, expected exactly {expect_tags} (numTags - 1):\n  {}",
                resp.describe()
            );
            Ok(())
        },
    );
    r.it(e, "[extra: spec §Deleting tags/manifests + issue #2] DELETE of a tag removes only that tag (202, then the tag 404s while the manifest and its other tags stay); DELETE by digest (202) removes the manifest and every tag on it; unknown manifests 404 with MANIFEST_UNKNOWN", |e| {
        let name = format!("{}-tagdel", e.name);
        let cfg = random_config();
        let layer = TestBlob::new(random_bytes(300));
        for b in [&cfg, &layer] {
            let resp = e.c.push_blob(&name, b)?;
            ensure_status!(resp, 201);
        }
        let m = image_manifest(&cfg, &[(MT_OCI_LAYER_GZIP, &layer)]);
        for t in ["one", "two"] {
            let resp = e.c.put_manifest(&name, t, MT_OCI_MANIFEST, &m.content)?;
            ensure_status!(resp, 201);
        }
        let resp = e.c.delete(&format!("/v2/{name}/manifests/one"))?;
        ensure_status!(resp, 202);
        ensure_status!(e.c.get_manifest(&name, "one")?, 404);
        ensure_status!(e.c.head_manifest(&name, "one")?, 404);
        let two = e.c.get_manifest(&name, "two")?;
        check_content(&two, &m.content, &m.digest, Some(MT_OCI_MANIFEST), false).map_err(|f| prefix(f, "the other tag after deleting one tag"))?;
        let by_digest = e.c.get_manifest(&name, &m.digest)?;
        check_content(&by_digest, &m.content, &m.digest, Some(MT_OCI_MANIFEST), false).map_err(|f| prefix(f, "the manifest after deleting one tag"))?;
        let (resp, tags) = e.c.tags(&name)?;
        ensure_status!(resp, 200);
        ensure!(tags == vec!["two".to_string()], "tags after deleting `one`: {tags:?}, expected [\"two\"]");
        let resp = e.c.delete(&format!("/v2/{name}/manifests/{}", m.digest))?;
        ensure_status!(resp, 202);
        ensure_status!(e.c.get_manifest(&name, &m.digest)?, 404);
        ensure_status!(e.c.head_manifest(&name, &m.digest)?, 404);
        ensure_status!(e.c.get_manifest(&name, "two")?, 404);
        let (resp, tags) = e.c.tags(&name)?;
        ensure!(resp.status == 200 || resp.status == 404, "tags list after deleting the last manifest: {}", resp.describe());
        ensure!(tags.is_empty(), "tags after deleting the manifest by digest: {tags:?}");
        let resp = e.c.delete(&format!("/v2/{name}/manifests/{}", m.digest))?;
        ensure_status!(resp, 404);
        let code = resp.first_code()?;
        ensure!(code == "MANIFEST_UNKNOWN", "DELETE of an unknown manifest: errors[0].code {code:?}, expected MANIFEST_UNKNOWN");
        Ok(())
    });

    r.context("Blob delete");
    r.it(
        e,
        "DELETE request to blob URL should yield 202 response",
        |e| {
            let resp =
                e.c.delete(&e.p(&format!("/blobs/{}", e.d.configs[3].digest)))?;
            ensure_status!(resp, 202, 404, 405);
            let resp = e.c.delete(&e.p(&format!("/blobs/{}", e.d.layer.digest)))?;
            ensure_status!(resp, 202, 404, 405);
            if resp.status == 405 {
                e.blob_delete_allowed = false;
            }
            Ok(())
        },
    );
    r.it(
        e,
        "GET request to deleted blob URL should yield 404 response",
        |e| {
            if !e.blob_delete_allowed {
                return skip("RunOnlyIf(blobDeleteAllowed)");
            }
            let resp =
                e.c.get(&e.p(&format!("/blobs/{}", e.d.configs[3].digest)))?;
            ensure_status!(resp, 404);
            Ok(())
        },
    );
    r.it(e, "[extra: spec §Deleting Blobs + newer suite api.go BlobDelete atomic] a deleted blob HEADs 404 at once; DELETE of an unknown blob gives 404 BLOB_UNKNOWN", |e| {
        if !e.blob_delete_allowed {
            return skip("blob delete is disallowed");
        }
        ensure_status!(e.c.head_blob(&e.name, &e.d.configs[3].digest)?, 404);
        ensure_status!(e.c.head_blob(&e.name, &e.d.layer.digest)?, 404);
        let resp = e.c.delete(&e.p(&format!("/blobs/{}", e.d.dummy_digest)))?;
        ensure_status!(resp, 404);
        let code = resp.first_code()?;
        ensure!(code == "BLOB_UNKNOWN", "errors[0].code is {code:?}, expected BLOB_UNKNOWN:\n  {}", resp.describe());
        Ok(())
    });
    // "Teardown": no teardown required at this time for content management tests
}

/// Polls `HEAD /v2/<name>/manifests/<reference>` until it answers 200 (`present`) or 404 (not):
/// derived tags appear when a build finishes and go when the planner handles a delete, both
/// asynchronously. Fails after 180 s (a build on a busy two-core machine takes seconds).
pub(super) fn wait_until_manifest(e: &Env, reference: &str, present: bool) -> R {
    let want = if present { 200 } else { 404 };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let resp = e.c.head_manifest(&e.name, reference)?;
        if resp.status == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Fail::Fail(format!(
                "HEAD manifests/{reference} still {} after 180 s, waiting for {want}:\n  {}",
                resp.status,
                resp.describe()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
