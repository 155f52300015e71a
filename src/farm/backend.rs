//! What a build backend is: something that turns one job's image into a SIF file in a
//! workspace, or explains why it cannot. The worker drives a [`Backend`] without knowing which
//! one it is; the backends share these types and nothing else of the worker's.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::progress::ProgressCell;
use super::Farm;
use crate::meta::Job;
use crate::names::Digest;
use crate::storage::BlobStore;

/// One way of building a SIF (`native`, `apptainer`).
pub trait Backend: Send + Sync {
    /// The name recorded with each job and SIF (`[farm] backend`).
    fn name(&self) -> &'static str;

    /// Builds the job's image into a fresh [`Workspace`], keeping its progress up to date.
    fn build<'a>(&'a self, request: BuildRequest<'a>) -> BuildFuture<'a>;
}

/// One build: the farm, the job, and where to report progress.
#[derive(Clone, Copy)]
pub struct BuildRequest<'a> {
    pub farm: &'a Arc<Farm>,
    pub job: &'a Job,
    pub progress: &'a ProgressCell,
}

/// What [`Backend::build`] returns.
pub type BuildFuture<'a> = BoxFuture<'a, Result<Built, Failure>>;

/// What a backend produced.
pub struct Built {
    pub workspace: Workspace,
    pub log: String,
    pub compression: String,
    /// The SIF's digest, when the server already hashed these very bytes itself (a remote
    /// builder's upload is hashed as it streams in); `None`: the import hashes the file.
    pub digest: Option<Digest>,
}

/// Why a build failed: a one-line reason for the status API and the full log.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub log: String,
    /// Retrying cannot help (the image asks for blobs its repository does not hold, or it is
    /// over a limit of the image's own making): the job fails for good at once.
    pub permanent: bool,
}

impl Failure {
    /// A failure that may go away on retry (I/O, a crash, a lost lease), with `log` as its log
    /// (the reason itself when there is no other output).
    pub fn transient(reason: String, log: impl Into<String>) -> Failure {
        let log = log.into();
        Failure {
            log: if log.is_empty() { reason.clone() } else { log },
            reason,
            permanent: false,
        }
    }

    /// A failure that the same image will always hit; the reason is the log.
    pub fn permanent(reason: String) -> Failure {
        Failure {
            log: reason.clone(),
            reason,
            permanent: true,
        }
    }
}

/// Where a build's result and scratch files go before the SIF becomes a blob.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A fresh scratch directory beside the blob store (so the import is a rename).
    pub fn create(store: &BlobStore) -> Result<Workspace, Failure> {
        let dir = store
            .scratch_dir()
            .map_err(|e| Failure::transient(format!("cannot create a build directory: {e}"), ""))?;
        Ok(Workspace { dir })
    }

    pub fn sif_path(&self) -> PathBuf {
        self.dir.path().join("image.sif")
    }

    /// Where the enroot image of the same build goes (pyxis's squashfs). A backend that makes
    /// none leaves it absent, and the SIF is recorded without one.
    pub fn enroot_path(&self) -> PathBuf {
        self.dir.path().join("image.enroot.sqsh")
    }
}
