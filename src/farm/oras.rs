//! Publishes every ready SIF built from a tagged image `R:T` as an ORAS artifact in `R`, laid
//! out exactly as `apptainer push oras://` does, so `apptainer pull oras://HOST/R:T.sif` works:
//! config `application/vnd.sylabs.sif.config.v1+json` (`{}`), one layer
//! `application/vnd.sylabs.sif.layer.v1.sif` whose blob is the SIF itself (stored once), and
//! `subject` = the image manifest, so it also shows in the referrers API.
//!
//! Tags: `T.sif` for the default platform, `T.<arch>.sif` for the others. They are *derived*
//! tags (`tags.origin = 'registry'`): they resolve for GET/HEAD like any tag, but `tags/list`
//! and retention never see them, so a client's view of the tags is exactly what it pushed (the
//! OCI conformance suite counts them). They follow `T` when it moves and go when it is deleted
//! (by tag or with its manifest). A client may push a tag of the same name: the client's tag
//! wins, is listed like any other and is never touched here; the derived one is not published
//! while it exists and comes back when the client deletes it. Tags ending in `.sif` get no
//! derived tags of their own.
//!
//! These manifests are marked registry-made: the referrers API lists them when the client asks
//! for `artifactType=application/vnd.sylabs.sif.config.v1+json`, and leaves them out of
//! unfiltered listings, which show exactly what clients pushed (what signature and SBOM tools,
//! and the OCI conformance suite, count on).

use std::sync::Arc;

use super::Farm;
use crate::meta::{self, NewManifest, Reference, ReferenceKind};
use crate::registry::manifests::OCI_MANIFEST;
use crate::registry::names::{Algorithm, Digest, Tag};

pub const SIF_CONFIG_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
pub const SIF_LAYER_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
const EMPTY_CONFIG: &[u8] = b"{}";

/// True for names of the form of a derived tag. Such tags (a client's included) get no derived
/// tags of their own: `T.sif.sif` would only confuse.
pub fn is_derived_tag(tag: &str) -> bool {
    tag.ends_with(".sif")
}

/// The ORAS tag for image tag `tag` and a SIF of `platform`.
pub fn derived_tag(farm: &Farm, tag: &str, platform: &str) -> String {
    if farm.is_default_platform(platform) {
        format!("{tag}.sif")
    } else {
        let arch = platform.split('/').nth(1).unwrap_or("unknown");
        format!("{tag}.{arch}.sif")
    }
}

/// Architectures a `T.<arch>.sif` tag can carry (Go's GOARCH names, as in SIF headers).
const ARCHES: [&str; 13] = [
    "386", "amd64", "arm", "arm64", "ppc64", "ppc64le", "mips", "mipsle", "mips64", "mips64le",
    "s390x", "riscv64", "loong64",
];

/// Whether `derived` is one of `tag`'s ORAS tags. Only known architectures count, so that tag
/// `1`'s tags are never confused with `1.2.sif`, the tag of image tag `1.2`.
fn belongs_to(derived: &str, tag: &str) -> bool {
    derived == format!("{tag}.sif")
        || derived
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".sif"))
            .is_some_and(|arch| ARCHES.contains(&arch))
}

/// After a build: (re)publish for every tag, in every repository, that names the image or an
/// index listing it.
pub async fn publish_for_image(farm: &Arc<Farm>, manifest_digest: &str) -> anyhow::Result<()> {
    let d = manifest_digest.to_owned();
    let repositories = farm
        .db
        .read(move |c| meta::repositories_with_manifest(c, &d))
        .await?;
    for repo in repositories {
        let (r, d) = (repo.clone(), manifest_digest.to_owned());
        let tags = farm
            .db
            .read(move |c| {
                let mut tags: Vec<(String, String)> = meta::tags_for_digest(c, &r, &d)?
                    .into_iter()
                    .map(|t| (t, d.clone()))
                    .collect();
                let parents = meta::parents_of(c, &r, &d)?;
                for p in &parents {
                    tags.extend(
                        meta::tags_for_digest(c, &r, p)?
                            .into_iter()
                            .map(|t| (t, p.clone())),
                    );
                }
                Ok(tags)
            })
            .await?;
        for (tag, target) in tags {
            if !is_derived_tag(&tag) {
                publish_for_tag(farm, &repo, &tag, &target).await?;
            }
        }
    }
    Ok(())
}

/// Makes `tag`'s ORAS tags match what `digest` (an image or an index) has ready now.
pub async fn publish_for_tag(
    farm: &Arc<Farm>,
    repository: &str,
    tag: &str,
    digest: &str,
) -> anyhow::Result<()> {
    let (r, d) = (repository.to_owned(), digest.to_owned());
    // (child manifest digest, sif digest, sif size, platform) for everything ready.
    let ready = farm
        .db
        .read(move |c| {
            let mut sources = vec![d.clone()];
            sources.extend(meta::children_of(c, &r, &d)?);
            let mut ready = Vec::new();
            for source in sources {
                // A repository gets the SIF only of images whose every blob it holds.
                if !super::access::holds_image(c, &r, &source)? {
                    continue;
                }
                for (sif, size, platform) in meta::sifs_for_manifest(c, &source)? {
                    ready.push((source.clone(), sif, size, platform));
                }
            }
            Ok(ready)
        })
        .await?;
    let mut wanted = Vec::new();
    for (source, sif, size, platform) in ready {
        let derived = derived_tag(farm, tag, &platform);
        if Tag::parse(&derived).is_err() {
            tracing::warn!(%repository, %tag, "no ORAS tag for {platform}: {derived:?} would be longer than 128 characters");
            continue;
        }
        if wanted
            .iter()
            .any(|(t, ..): &(String, String, String, i64)| t == &derived)
        {
            continue;
        }
        let (r, t) = (repository.to_owned(), derived.clone());
        if farm
            .db
            .read(move |c| meta::client_tag_exists(c, &r, &t))
            .await?
        {
            // The client's tag of that name wins (meta::put_manifest re-checks in its
            // transaction, for a push landing between this read and that write).
            tracing::info!(%repository, %tag, "not publishing {derived}: a client pushed a tag of that name");
            continue;
        }
        wanted.push((derived, source, sif, size));
    }
    // Drop ORAS tags of `tag` that no longer match (the tag moved to an image not built yet).
    let r = repository.to_owned();
    let existing = farm.db.read(move |c| meta::sif_tags(c, &r)).await?;
    for stale in existing
        .into_iter()
        .filter(|t| belongs_to(t, tag) && !wanted.iter().any(|(w, ..)| w == t))
    {
        let r = repository.to_owned();
        farm.db
            .write(move |tx| meta::delete_tag(tx, &r, &stale))
            .await?;
    }
    for (derived, source, sif, size) in wanted {
        put_artifact(farm, repository, tag, &derived, &source, &sif, size).await?;
    }
    Ok(())
}

/// `tag` was deleted: its ORAS tags go too.
pub async fn remove_derived_tags(
    farm: &Arc<Farm>,
    repository: &str,
    tag: &str,
) -> anyhow::Result<()> {
    let r = repository.to_owned();
    let existing = farm.db.read(move |c| meta::sif_tags(c, &r)).await?;
    for derived in existing.into_iter().filter(|t| belongs_to(t, tag)) {
        let r = repository.to_owned();
        farm.db
            .write(move |tx| meta::delete_tag(tx, &r, &derived))
            .await?;
    }
    Ok(())
}

/// Tag `name` (one of the derived form) was deleted. If it was a client's tag that had displaced
/// a derived one, the derived tag comes back: republish for the tags it may derive from (`1.arm64.sif`
/// is image tag `1`'s arm64 tag, or tag `1.arm64`'s default one). When the derived tag itself
/// went (its base moved or was deleted), this finds nothing new to publish.
pub async fn restore_derived_tag(
    farm: &Arc<Farm>,
    repository: &str,
    name: &str,
) -> anyhow::Result<()> {
    for base in bases_of(name) {
        let (r, b) = (repository.to_owned(), base.to_owned());
        let target = farm
            .db
            .read(move |c| {
                Ok(if meta::client_tag_exists(c, &r, &b)? {
                    meta::tag_digest(c, &r, &b)?
                } else {
                    None
                })
            })
            .await?;
        if let Some(digest) = target {
            publish_for_tag(farm, repository, base, &digest).await?;
        }
    }
    Ok(())
}

/// The tags `derived` may be a derived tag of (the inverse of [`belongs_to`]).
fn bases_of(derived: &str) -> Vec<&str> {
    let Some(stem) = derived.strip_suffix(".sif") else {
        return Vec::new();
    };
    let mut bases = vec![stem];
    if let Some((base, arch)) = stem.rsplit_once('.') {
        if ARCHES.contains(&arch) && !base.is_empty() {
            bases.push(base);
        }
    }
    bases.retain(|b| !b.is_empty() && !is_derived_tag(b));
    bases
}

async fn put_artifact(
    farm: &Arc<Farm>,
    repository: &str,
    tag: &str,
    derived: &str,
    source: &str,
    sif: &str,
    size: i64,
) -> anyhow::Result<()> {
    let config_digest = Algorithm::Sha256.digest(EMPTY_CONFIG);
    // Both blobs are linked (a 'deleting' one resurrected) below: hold their GC locks from the
    // file checks to the commit so a prune cannot unlink them in between.
    let _locked = crate::storage::guard::lock_all(&[config_digest.as_str(), sif]).await;
    let store = farm.store.clone();
    let (cd, sd) = (config_digest.clone(), Digest::parse(sif)?);
    let sif_present = tokio::task::spawn_blocking(move || {
        store.put_small(EMPTY_CONFIG, &cd)?;
        store.stat(&sd)
    })
    .await??
    .is_some();
    if !sif_present {
        // The image and its SIF were deleted meanwhile: nothing to publish.
        return Ok(());
    }
    let (r, s) = (repository.to_owned(), source.to_owned());
    let Some(subject) = farm
        .db
        .read(move |c| meta::manifest_head(c, &r, &s))
        .await?
    else {
        return Ok(());
    };
    let base = repository.rsplit('/').next().unwrap_or(repository);
    let title = format!("{base}_{tag}.sif");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SIF_CONFIG_TYPE, "digest": config_digest.as_str(), "size": EMPTY_CONFIG.len()},
        "layers": [{
            "mediaType": SIF_LAYER_TYPE,
            "digest": sif,
            "size": size,
            "annotations": {"org.opencontainers.image.title": title},
        }],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    });
    let content = serde_json::to_vec(&manifest)?;
    let digest: Digest = Algorithm::Sha256.digest(&content);
    let namespace = repository
        .split('/')
        .next()
        .unwrap_or(repository)
        .to_owned();
    let new = NewManifest {
        repository: repository.to_owned(),
        namespace: namespace.clone(),
        digest: digest.as_str().to_owned(),
        media_type: OCI_MANIFEST.to_owned(),
        kind: "artifact",
        registry_made: true,
        artifact_type: Some(SIF_CONFIG_TYPE.to_owned()),
        subject: Some(source.to_owned()),
        annotations: None,
        content,
        references: vec![
            Reference {
                digest: config_digest.as_str().to_owned(),
                size: EMPTY_CONFIG.len() as i64,
                kind: ReferenceKind::Blob,
            },
            Reference {
                digest: sif.to_owned(),
                size,
                kind: ReferenceKind::Blob,
            },
        ],
        tag: Some(derived.to_owned()),
    };
    let (r, cfg, sif_digest) = (
        repository.to_owned(),
        config_digest.as_str().to_owned(),
        sif.to_owned(),
    );
    let outcome = farm
        .db
        .write(move |tx| {
            meta::link_blob(tx, &r, &namespace, &cfg, EMPTY_CONFIG.len() as i64)?;
            meta::link_blob(tx, &r, &namespace, &sif_digest, size)?;
            meta::put_manifest(tx, &new)
        })
        .await?;
    match outcome {
        Ok(()) => {
            tracing::info!(%repository, tag = %derived, sif = %sif, "published SIF as ORAS artifact");
            Ok(())
        }
        Err(rejection) => {
            anyhow::bail!("ORAS artifact for {repository}:{derived} rejected: {rejection:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tags_belong_to_their_tag_only() {
        assert!(belongs_to("1.sif", "1"));
        assert!(belongs_to("1.arm64.sif", "1"));
        assert!(!belongs_to("1.2.sif", "1.2.3"));
        assert!(!belongs_to("1.2.sif", "1"), "1.2.sif is tag 1.2's");
        assert!(!belongs_to("10.sif", "1"));
    }

    #[test]
    fn bases_of_inverts_belongs_to() {
        assert_eq!(bases_of("1.sif"), ["1"]);
        assert_eq!(bases_of("1.arm64.sif"), ["1.arm64", "1"]);
        assert_eq!(bases_of("1.2.sif"), ["1.2"], "2 is no architecture");
        assert!(bases_of("latest").is_empty());
        assert!(bases_of(".sif").is_empty());
        assert!(
            bases_of("x.sif.sif").is_empty(),
            "x.sif gets no derived tags"
        );
        for name in ["1.sif", "1.arm64.sif", "v1.2.3.s390x.sif"] {
            for base in bases_of(name) {
                assert!(belongs_to(name, base), "{name} / {base}");
            }
        }
    }
}
