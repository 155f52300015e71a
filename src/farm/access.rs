//! What the farm may read on behalf of a repository: only blobs that repository holds.
//!
//! The blob store is shared by every repository (a blob is stored once, whoever pushed it), so a
//! digest alone is no permission. A manifest may name blobs it was not made to prove it holds:
//! foreign and non-distributable layers are accepted at push without their bytes (their `urls`
//! point elsewhere). Whenever the farm reads a blob for a repository (a build's config and
//! layers, the config a `/sif` request or the planner reads for the platform, the SIF an ORAS
//! artifact or a `/sif` answer hands out) the rule is the same: the repository must hold every
//! blob it is built from, linked in `repository_blobs`. Checking the rule here, in one place,
//! keeps the build, the planner, `/sif` and ORAS from drifting apart.

use crate::meta::{self, ReadConnection as Connection};

/// A blob of an image that its repository does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// `the config` or `layer 2 (<media type>)`.
    pub what: String,
    pub digest: String,
}

impl Unreadable {
    /// The reason a build or a request reports.
    pub fn reason(&self, repository: &str) -> String {
        format!(
            "{} {} is not a blob of {repository}: a build reads only blobs its own repository \
             holds (push the layer's bytes to {repository}, foreign and non-distributable layers \
             included)",
            self.what, self.digest
        )
    }
}

/// The first blob of `manifest` (config, then layers in order) that `repository` does not hold.
pub fn first_unreadable(
    conn: &Connection,
    repository: &str,
    manifest: &oci_spec::image::ImageManifest,
) -> meta::Result<Option<Unreadable>> {
    let config = manifest.config().digest().to_string();
    if meta::blob_in_repository(conn, repository, &config)?.is_none() {
        return Ok(Some(Unreadable {
            what: "the config".into(),
            digest: config,
        }));
    }
    for (i, layer) in manifest.layers().iter().enumerate() {
        let digest = layer.digest().to_string();
        if meta::blob_in_repository(conn, repository, &digest)?.is_none() {
            return Ok(Some(Unreadable {
                what: format!("layer {} ({})", i + 1, layer.media_type()),
                digest,
            }));
        }
    }
    Ok(None)
}

/// Whether `repository` holds the image manifest `digest` and every blob it names. `false` for
/// anything that is not a stored image manifest of the repository.
pub fn holds_image(conn: &Connection, repository: &str, digest: &str) -> meta::Result<bool> {
    let Some(stored) = meta::manifest_by_digest(conn, repository, digest)? else {
        return Ok(false);
    };
    let Ok(manifest) = serde_json::from_slice::<oci_spec::image::ImageManifest>(&stored.content)
    else {
        return Ok(false);
    };
    Ok(first_unreadable(conn, repository, &manifest)?.is_none())
}

/// Why an image config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the image config {digest} is {size} bytes, over the {limit}-byte limit (farm.max_config_bytes)"
    )]
    TooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("cannot read the image config {digest}: {source}")]
    Io {
        digest: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a config blob whole, refusing one over `limit` bytes before reading it (a config is
/// JSON read into memory on every build and every slow `/sif` request; nothing bounded it).
/// The caller checks first that the repository holds the blob.
pub fn read_config(
    store: &crate::storage::BlobStore,
    digest: &crate::registry::names::Digest,
    limit: u64,
) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        digest: digest.as_str().to_owned(),
        source,
    };
    let blob = store.open(digest).map_err(io)?.ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the blob's bytes are missing from the store",
        ))
    })?;
    let size = blob.size;
    let too_large = |size| ConfigError::TooLarge {
        digest: digest.as_str().to_owned(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may have grown since the stat (it never should: blobs are immutable).
    blob.reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A blob the farm refuses to read for a repository (not held, or a config over the limit):
/// the image gets no SIF and the caller says why, rather than failing as an internal error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
