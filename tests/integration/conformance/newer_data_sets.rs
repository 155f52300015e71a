//! The newer suite's per-data-set sequence: each data set pushed, listed, HEAD/GET, queried for
//! referrers and deleted with the "atomic" checks (HEAD 404 right after a 202 DELETE).

use crate::support::oci::*;

use super::checks::{check_content, check_optional_dcd, check_referrers_index, prefix};
use super::env::Env;
use super::newer_blob_apis::{check_blob_readable, delete_blob_atomic, push_blob_via, BlobApi};
use super::newer_data::{RefGoal, Td};
use super::runner::{Runner, R};

/// run.go's per-data-set sequence: push, list, head, pull, referrers, delete.
pub(super) fn newer_suite_data_set(
    r: &mut Runner,
    e: &mut Env,
    title: &str,
    td: Td,
    advisory: bool,
) {
    r.context(&format!("data: {title}"));
    let repo = e.name.clone();
    let kind = if advisory {
        "[advisory: newer suite run.go data \"Non-distributable Layers\" (Nondistributable=true by default); spec v1.1 §Push lets a registry reject manifests whose blobs it does not hold]"
    } else {
        "[stricter: newer suite run.go data]"
    };
    let td = std::rc::Rc::new(td);
    {
        let (td, repo) = (td.clone(), repo.clone());
        r.it(e, &format!("{kind} push: blobs, manifests by digest (201, Location serves the exact bytes, Docker-Content-Digest, OCI-Subject), tags"), move |e| {
            for b in &td.blobs {
                push_blob_via(&e.c, &repo, b, BlobApi::PostPut)?;
            }
            for (m, mt) in &td.manifests {
                manifest_put_checked(e, &repo, &m.digest, m, mt).map_err(|f| prefix(f, &format!("PUT by digest {}", m.digest)))?;
            }
            for (tag, dig) in &td.tags {
                let (m, mt) = td.manifests.iter().find(|(m, _)| &m.digest == dig).unwrap();
                manifest_put_checked(e, &repo, tag, m, mt).map_err(|f| prefix(f, &format!("PUT by tag {tag}")))?;
            }
            Ok(())
        });
    }
    {
        let (td, repo) = (td.clone(), repo.clone());
        r.it(e, &format!("{kind} tag list: every pushed tag is listed; `last` excludes the first half and keeps the second"), move |e| {
            let (resp, tags) = e.c.tags(&repo)?;
            ensure_status!(resp, 200);
            for (t, _) in &td.tags {
                ensure!(tags.contains(t), "tag {t:?} missing from {tags:?}");
            }
            if tags.len() >= 2 {
                let mut sorted = tags.clone();
                sorted.sort();
                let end = sorted.len() / 2;
                let last = &sorted[end - 1];
                let resp = e.c.get(&with_query(&e.c.url(&format!("/v2/{repo}/tags/list")), "last", last))?;
                ensure_status!(resp, 200);
                let part = tag_list(&resp);
                for t in &sorted[..end] {
                    ensure!(!part.contains(t), "tag {t:?} returned with last={last:?}: {part:?}");
                }
                for t in &sorted[end..] {
                    ensure!(part.contains(t), "tag {t:?} missing with last={last:?}: {part:?}");
                }
            }
            Ok(())
        });
    }
    {
        let (td, repo) = (td.clone(), repo.clone());
        r.it(e, &format!("{kind} HEAD and GET of every tag, manifest and blob: exact bytes, Content-Type, Content-Length, digest header"), move |e| {
            let mut refs: Vec<(String, &TestBlob, &str)> = td.tags.iter().map(|(t, d)| {
                let (m, mt) = td.manifests.iter().find(|(m, _)| &m.digest == d).unwrap();
                (t.clone(), m, mt.as_str())
            }).collect();
            refs.extend(td.manifests.iter().map(|(m, mt)| (m.digest.clone(), m, mt.as_str())));
            for (reference, m, mt) in refs {
                let h = e.c.head_manifest(&repo, &reference)?;
                check_content(&h, &m.content, &m.digest, Some(mt), true).map_err(|f| prefix(f, &format!("HEAD {reference}")))?;
                let g = e.c.get_manifest(&repo, &reference)?;
                check_content(&g, &m.content, &m.digest, Some(mt), false).map_err(|f| prefix(f, &format!("GET {reference}")))?;
            }
            for b in &td.blobs {
                check_blob_readable(&e.c, &repo, b)?;
            }
            Ok(())
        });
    }
    if !td.referrers.is_empty() {
        let (td, repo) = (td.clone(), repo.clone());
        r.it(e, &format!("{kind} referrers: each referrer listed with digest, mediaType, size, artifactType, annotations; every artifactType filter applied"), move |e| {
            for (subject, goals) in &td.referrers {
                let resp = e.c.get(&format!("/v2/{repo}/referrers/{subject}"))?;
                let list = check_referrers_index(&resp)?;
                for g in goals {
                    ensure!(list.iter().any(|d| referrer_matches(d, g)), "referrer {} ({}, artifactType {:?}) missing or different in:\n  {}", g.digest, g.media_type, g.artifact_type, resp.describe());
                }
                let mut types: Vec<&str> = goals.iter().map(|g| g.artifact_type.as_str()).collect();
                types.sort();
                types.dedup();
                for at in types {
                    let url = with_query(&e.c.url(&format!("/v2/{repo}/referrers/{subject}")), "artifactType", at);
                    let resp = e.c.get(&url)?;
                    let list = check_referrers_index(&resp)?;
                    let applied = resp.header("OCI-Filters-Applied").split(',').any(|f| f.trim() == "artifactType");
                    ensure!(applied, "artifactType={at}: no `OCI-Filters-Applied: artifactType`:\n  {}", resp.describe());
                    for g in goals.iter().filter(|g| g.artifact_type == at) {
                        ensure!(list.iter().any(|d| referrer_matches(d, g)), "artifactType={at}: referrer {} missing:\n  {}", g.digest, resp.describe());
                    }
                    for d in &list {
                        let got = d.get("artifactType").and_then(|x| x.as_str()).unwrap_or_default();
                        ensure!(got == at, "artifactType={at}: the filtered list has a referrer of artifactType {got:?}");
                    }
                }
            }
            Ok(())
        });
    }
    {
        let (td, repo) = (td.clone(), repo.clone());
        r.it(e, &format!("{kind} delete: tags (202, then the tag HEADs 404), manifests in reverse order (202, then HEAD 404), blobs (202, then HEAD 404)"), move |e| {
            for (tag, _) in &td.tags {
                let d = e.c.delete(&format!("/v2/{repo}/manifests/{tag}"))?;
                ensure_status!(d, 202, 404);
                if d.status == 202 {
                    let h = e.c.head_manifest(&repo, tag)?;
                    ensure!(h.status == 404, "tag {tag} still HEADs {} right after a 202 DELETE", h.status);
                }
            }
            for (m, _) in td.manifests.iter().rev() {
                let d = e.c.delete(&format!("/v2/{repo}/manifests/{}", m.digest))?;
                ensure_status!(d, 202, 404);
                if d.status == 202 {
                    let h = e.c.head_manifest(&repo, &m.digest)?;
                    ensure!(h.status == 404, "manifest {} still HEADs {} right after a 202 DELETE", m.digest, h.status);
                }
            }
            for b in &td.blobs {
                delete_blob_atomic(&e.c, &repo, &b.digest)?;
            }
            Ok(())
        });
    }
}

/// api.go ManifestPut: 201, Location serving the exact bytes with Content-Type and Content-Length,
/// Docker-Content-Digest (if present) = digest, OCI-Subject = subject digest when there is one.
pub(super) fn manifest_put_checked(
    e: &Env,
    repo: &str,
    reference: &str,
    m: &TestBlob,
    mt: &str,
) -> R {
    let put = e.c.put_manifest(repo, reference, mt, &m.content)?;
    ensure_status!(put, 201);
    check_optional_dcd(&put, &m.digest)?;
    let subject = serde_json::from_slice::<serde_json::Value>(&m.content)
        .ok()
        .and_then(|v| {
            v.get("subject")
                .and_then(|s| s.get("digest"))
                .and_then(|d| d.as_str())
                .map(str::to_string)
        });
    if let Some(s) = subject {
        let got = put.header("OCI-Subject");
        ensure!(
            got == s,
            "OCI-Subject is {got:?}, expected {s:?}:\n  {}",
            put.describe()
        );
    }
    let loc = put
        .location_abs()
        .ok_or_else(|| format!("201 without Location:\n  {}", put.describe()))?;
    let g = e.c.send(
        "GET",
        &loc,
        &[("Accept", &format!("{MT_OCI_INDEX}, {MT_OCI_MANIFEST}"))],
        None,
    )?;
    ensure_status!(g, 200);
    ensure!(
        g.body == m.content,
        "the PUT's Location does not serve the exact bytes:\n  {}",
        g.describe()
    );
    ensure!(
        g.header("Content-Type") == mt,
        "Location GET Content-Type {:?}, expected {mt:?}",
        g.header("Content-Type")
    );
    ensure!(
        g.header("Content-Length") == m.len_str(),
        "Location GET Content-Length {:?}, expected {}",
        g.header("Content-Length"),
        m.len()
    );
    Ok(())
}

pub(super) fn referrer_matches(d: &serde_json::Value, g: &RefGoal) -> bool {
    let s = |k: &str| {
        d.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let ann_ok = g.annotations.iter().all(|(k, v)| {
        d.get("annotations")
            .and_then(|a| a.get(k))
            .and_then(|x| x.as_str())
            == Some(v.as_str())
    });
    s("digest") == g.digest
        && s("mediaType") == g.media_type
        && d.get("size").and_then(|x| x.as_u64()) == Some(g.size as u64)
        && s("artifactType") == g.artifact_type
        && ann_ok
}
