//! Manifest parsing, validation and classification.
//!
//! The registry stores the exact bytes it received; parsing here only decides whether to accept
//! them and extracts what the metadata needs (references to check and count, the referrers
//! subject, the artifact type). Four manifest formats are first-class: OCI image manifest, OCI
//! index, Docker v2 schema 2 manifest and Docker manifest list. Docker schema 1 is refused.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::meta::{Reference, ReferenceKind};
use crate::registry::names::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types a registry cannot be expected to hold (their `urls` point elsewhere).
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("Docker schema 1 manifests are not supported: push with a current Docker/podman, or convert with `skopeo copy --format v2s2`")]
    Schema1,
    #[error("schemaVersion must be 2, got {0}")]
    SchemaVersion(i64),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no mediaType field and no Content-Type header: set one of them")]
    NoMediaType,
    #[error("unsupported manifest media type {0:?}: push an OCI image manifest or index, or a Docker v2 manifest or manifest list")]
    UnsupportedMediaType(String),
    #[error("body is not a valid {media_type}: {reason}")]
    Structure { media_type: String, reason: String },
    #[error("descriptor {digest:?}: {reason}")]
    Descriptor { digest: String, reason: String },
}

/// What kind of thing a manifest is, for the build farm and the referrers API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A runnable image manifest (image config, layers).
    Image,
    /// An index or manifest list.
    Index,
    /// Anything else that uses the image manifest format (ORAS artifacts, signatures, SBOMs…).
    Artifact,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Index => "index",
            Kind::Artifact => "artifact",
        }
    }
}

/// A manifest that passed validation.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: String,
    pub kind: Kind,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// JSON object of the manifest's annotations, for the referrers index.
    pub annotations: Option<String>,
    pub references: Vec<Reference>,
}

/// The few top-level fields read before choosing a typed parser.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// Validates `body` sent with `content_type` and extracts its metadata.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, ManifestError> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(essence).filter(|h| !h.is_empty());
    if probe.schema_version == Some(1)
        || DOCKER_SCHEMA1.contains(&header.unwrap_or(""))
        || probe
            .media_type
            .as_deref()
            .is_some_and(|m| DOCKER_SCHEMA1.contains(&m))
    {
        return Err(ManifestError::Schema1);
    }
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::SchemaVersion(0)),
    }
    let media_type = match (header, probe.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch {
                header: h.to_owned(),
                body: b.to_owned(),
            })
        }
        (_, Some(b)) => b.to_owned(),
        (Some(h), None) => h.to_owned(),
        (None, None) => return Err(ManifestError::NoMediaType),
    };
    let structure = |reason: &str| ManifestError::Structure {
        media_type: media_type.clone(),
        reason: reason.to_owned(),
    };
    // The probe's top-level shape must be the media type's before a typed parser runs.
    let (index, shaped, rule) = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => (
            true,
            probe.manifests.is_some() && probe.config.is_none(),
            "an index has a `manifests` array and no `config`",
        ),
        OCI_MANIFEST | DOCKER_MANIFEST => (
            false,
            probe.config.is_some() && probe.manifests.is_none(),
            "an image manifest has a `config` descriptor and no `manifests`",
        ),
        other => return Err(ManifestError::UnsupportedMediaType(other.to_owned())),
    };
    if !shaped {
        return Err(structure(rule));
    }
    let invalid = |e: serde_json::Error| structure(&e.to_string());
    if index {
        let index = serde_json::from_slice(body).map_err(invalid)?;
        parse_index(media_type, index)
    } else {
        let manifest = serde_json::from_slice(body).map_err(invalid)?;
        parse_image_manifest(media_type, manifest)
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn parse_image_manifest(media_type: String, m: ImageManifest) -> Result<Parsed, ManifestError> {
    let config = m.config();
    let config_type = config.media_type().to_string();
    let mut references = vec![reference(config, ReferenceKind::Blob)?];
    for layer in m.layers() {
        let optional = FOREIGN_LAYERS.contains(&layer.media_type().to_string().as_str());
        let kind = if optional {
            ReferenceKind::OptionalBlob
        } else {
            ReferenceKind::Blob
        };
        references.push(reference(layer, kind)?);
    }
    let artifact_type = m.artifact_type().as_ref().map(|t| t.to_string());
    let is_image_config = config_type == OCI_IMAGE_CONFIG || config_type == DOCKER_IMAGE_CONFIG;
    let kind = if artifact_type.is_none() && is_image_config {
        Kind::Image
    } else {
        Kind::Artifact
    };
    Ok(Parsed {
        media_type,
        kind,
        // The referrers API reports the config media type when no artifactType is set.
        artifact_type: artifact_type.or(Some(config_type)),
        subject: subject(m.subject().as_ref())?,
        annotations: annotations_json(m.annotations().as_ref()),
        references: dedup(references),
    })
}

fn parse_index(media_type: String, index: ImageIndex) -> Result<Parsed, ManifestError> {
    let references = index
        .manifests()
        .iter()
        .map(|d| reference(d, ReferenceKind::Manifest))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed {
        media_type,
        kind: Kind::Index,
        artifact_type: index.artifact_type().as_ref().map(|t| t.to_string()),
        subject: subject(index.subject().as_ref())?,
        annotations: annotations_json(index.annotations().as_ref()),
        references: dedup(references),
    })
}

fn reference(d: &Descriptor, kind: ReferenceKind) -> Result<Reference, ManifestError> {
    let digest = valid_digest(d)?;
    let size = i64::try_from(d.size()).map_err(|_| ManifestError::Descriptor {
        digest: digest.clone(),
        reason: "size out of range".into(),
    })?;
    Ok(Reference { digest, size, kind })
}

fn valid_digest(d: &Descriptor) -> Result<String, ManifestError> {
    let text = d.digest().to_string();
    Digest::parse(&text)
        .map(|d| d.as_str().to_owned())
        .map_err(|e| ManifestError::Descriptor {
            digest: text,
            reason: e.to_string(),
        })
}

fn subject(d: Option<&Descriptor>) -> Result<Option<String>, ManifestError> {
    d.map(valid_digest).transpose()
}

fn annotations_json(a: Option<&std::collections::HashMap<String, String>>) -> Option<String> {
    let a = a.filter(|a| !a.is_empty())?;
    // Sorted so the referrers response is stable.
    let sorted: std::collections::BTreeMap<_, _> = a.iter().collect();
    serde_json::to_string(&sorted).ok()
}

/// A manifest may name the same blob twice (e.g. two identical empty layers); count it once.
fn dedup(mut refs: Vec<Reference>) -> Vec<Reference> {
    let mut seen = std::collections::HashSet::new();
    refs.retain(|r| seen.insert(r.digest.clone()));
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(media_type: &str, config_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{D2}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D1}","size":0}}]}}"#
        )
    }

    #[test]
    fn classifies_images_artifacts_and_indexes() {
        let p = parse(
            Some(OCI_MANIFEST),
            image(OCI_MANIFEST, OCI_IMAGE_CONFIG).as_bytes(),
        )
        .unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.references.len(), 2);
        let p = parse(None, image(DOCKER_MANIFEST, DOCKER_IMAGE_CONFIG).as_bytes()).unwrap();
        assert_eq!(p.kind, Kind::Image);
        let p = parse(
            None,
            image(OCI_MANIFEST, "application/vnd.sylabs.sif.config.v1+json").as_bytes(),
        )
        .unwrap();
        assert_eq!(p.kind, Kind::Artifact);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.sylabs.sif.config.v1+json")
        );
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":7}}]}}"#
        );
        let p = parse(Some(OCI_INDEX), idx.as_bytes()).unwrap();
        assert_eq!(p.kind, Kind::Index);
        assert_eq!(p.references[0].kind, ReferenceKind::Manifest);
    }

    #[test]
    fn refuses_bad_manifests() {
        assert!(matches!(parse(None, b"{nope"), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(None, br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            parse(
                Some(OCI_INDEX),
                image(OCI_MANIFEST, OCI_IMAGE_CONFIG).as_bytes()
            ),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(
                Some("application/json"),
                br#"{"schemaVersion":2,"config":{}}"#
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let md5 = image(OCI_MANIFEST, OCI_IMAGE_CONFIG).replace(D1, "md5:0123");
        assert!(parse(None, md5.as_bytes()).is_err());
        // An index body sent as an image manifest.
        let idx = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#);
        assert!(matches!(
            parse(None, idx.as_bytes()),
            Err(ManifestError::Structure { .. })
        ));
    }
}
