//! The registry's errors, one variant per distribution-spec error code (plus the few HTTP-only
//! outcomes). `http::errors` turns them into status codes and spec error bodies.

use crate::meta::MetaError;
use crate::registry::manifests::ManifestError;
use crate::registry::names::NameError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BlobUnknown(String),
    #[error("{0}")]
    BlobUploadInvalid(String),
    #[error("upload session {0:?} does not exist for this repository (it was finished, cancelled or expired): start a new upload")]
    BlobUploadUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    ManifestBlobUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    TagInvalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("too many requests: retry after {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// A chunk that does not start where the upload ends; `received` bytes are stored.
    #[error("chunk must start at byte {received}: resume from there (see the Range header)")]
    RangeNotSatisfiable { received: u64, location: String },
    /// A Range request outside the blob.
    #[error("requested range is outside the blob of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A query string or path that does not decode (see `crate::urlcode`).
    #[error("{0}")]
    QueryInvalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("storage: {e}"))
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::ManifestInvalid(e.to_string())
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Repository(_) => Error::NameInvalid(e.to_string()),
            NameError::Tag(_) => Error::TagInvalid(e.to_string()),
            NameError::Digest(_) => Error::DigestInvalid(e.to_string()),
            NameError::Algorithm(_) => Error::DigestInvalid(e.to_string()),
        }
    }
}
