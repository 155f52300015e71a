//! Test data shared by the metadata tests.

use super::{NewManifest, Reference};

/// An image manifest of `repository` (its namespace the first path component) listing
/// `references`, optionally tagged; its content names its digest.
pub fn image_manifest(
    repository: &str,
    digest: &str,
    references: Vec<Reference>,
    tag: Option<&str>,
) -> NewManifest {
    NewManifest {
        repository: repository.into(),
        namespace: repository.split('/').next().unwrap_or(repository).into(),
        digest: digest.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        kind: "image",
        registry_made: false,
        artifact_type: None,
        subject: None,
        annotations: None,
        content: format!("{{\"m\":\"{digest}\"}}").into_bytes(),
        references,
        tag: tag.map(str::to_owned),
    }
}
