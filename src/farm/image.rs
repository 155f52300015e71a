//! Loading a job's image for a build: its manifest, read from the job's repository, and the
//! config and layer digests it names, each one checked to be a blob that repository holds
//! ([`super::access`]), so every backend reads only those.

use std::sync::Arc;

use super::backend::Failure;
use super::{access, Farm};
use crate::meta::{self, Job, StoredManifest};
use crate::registry::names::Digest;

/// The parts of an image a build needs.
pub struct Image {
    /// The manifest's exact bytes as stored (the apptainer backend exports them).
    pub manifest: StoredManifest,
    pub config: Digest,
    /// (media type, digest) of each layer, in order.
    pub layers: Vec<(String, Digest)>,
}

impl Image {
    /// The config, then every layer.
    pub fn blobs(&self) -> Vec<Digest> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().map(|(_, d)| d.clone()))
            .collect()
    }
}

/// Which image a build (or an enroot-image derivation) reads: a manifest, through a
/// repository that holds it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub repository: &'a str,
    pub manifest_digest: &'a str,
}

impl<'a> From<&'a Job> for Source<'a> {
    fn from(job: &'a Job) -> Source<'a> {
        Source {
            repository: &job.repository,
            manifest_digest: &job.manifest_digest,
        }
    }
}

/// Reads the image's manifest from its repository and checks that the repository holds the
/// config and every layer; a blob it does not hold fails the build for good.
pub async fn load(farm: &Arc<Farm>, job: Source<'_>) -> Result<Image, Failure> {
    let (r, d) = (job.repository.to_owned(), job.manifest_digest.to_owned());
    let checked = farm
        .db
        .read(move |c| {
            let Some(stored) = meta::manifest_by_digest(c, &r, &d)? else {
                return Ok(None);
            };
            let manifest =
                serde_json::from_slice::<oci_spec::image::ImageManifest>(&stored.content);
            let unreadable = match &manifest {
                Ok(m) => access::first_unreadable(c, &r, m)?,
                Err(_) => None,
            };
            Ok(Some((stored, manifest, unreadable)))
        })
        .await
        .map_err(|e| Failure::transient(format!("cannot read the manifest: {e}"), ""))?;
    let Some((stored, manifest, unreadable)) = checked else {
        return Err(Failure::transient(
            format!(
                "manifest {} is no longer in {}",
                job.manifest_digest, job.repository
            ),
            "",
        ));
    };
    let manifest = manifest
        .map_err(|e| Failure::permanent(format!("the manifest is not an image manifest: {e}")))?;
    if let Some(unreadable) = unreadable {
        return Err(Failure::permanent(unreadable.reason(job.repository)));
    }
    let digest = |d: &oci_spec::image::Digest| {
        Digest::parse(d.as_ref())
            .map_err(|e| Failure::permanent(format!("bad digest in manifest: {e}")))
    };
    let config = digest(manifest.config().digest())?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| Ok((l.media_type().to_string(), digest(l.digest())?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(Image {
        manifest: stored,
        config,
        layers,
    })
}
