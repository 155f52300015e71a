//! Bytes: the content-addressed blob store and the staging area for uploads.
//!
//! This is the narrow interface the rest of the registry uses. It deliberately knows nothing about
//! repositories, permissions or metadata: whether a digest may be read through a repository is
//! decided in `meta`. Today the only backend is the local filesystem ([`fs::FsStore`]); an
//! S3-compatible backend would sit beside it behind the same operations.

pub mod fs;
pub mod guard;
pub mod ranges;

pub use fs::{BlobFile, FsStore as BlobStore, UploadFile};

/// Creates a data directory (and missing parents) readable by its owner only: it holds every
/// user's private images. An existing directory keeps the mode the admin gave it.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
