//! Bytes: the content-addressed blob store and the staging area for uploads.
//!
//! This is the narrow interface the rest of the registry uses. It deliberately knows nothing about
//! repositories, permissions or metadata: whether a digest may be read through a repository is
//! decided in `meta`. Today the only backend is the local filesystem ([`fs::FsStore`]); an
//! S3-compatible backend would sit beside it behind the same operations.

pub mod fs;

pub use fs::{BlobFile, FsStore as BlobStore, UploadFile};
