//! The native backend: converts the image with the `oci2sif` crate in a contained build process
//! ([`super::sandbox`]), reading the config and layers straight from the blob store. No
//! external tools, no root, no network.

use super::backend::{Backend, BuildFuture, BuildRequest, Built, Failure, Workspace};
use super::build_child::{self, BuildSpec, LayerFile};
use crate::names::Digest;
use crate::storage::BlobStore;
use std::path::{Path, PathBuf};

use super::{access, image, sandbox};

/// The built-in converter.
pub struct Native;

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn build<'a>(&'a self, request: BuildRequest<'a>) -> BuildFuture<'a> {
        let BuildRequest {
            farm,
            job,
            progress,
        } = request;
        Box::pin(async move {
            let workspace = Workspace::create(&farm.store)?;
            let (config, layers) = stage(farm, job.into(), &workspace).await?;
            let spec = BuildSpec {
                farm: farm.config.clone(),
                config,
                layers,
                // The digest alone: the SIF then depends only on the image (the same bytes
                // whichever repository pushed it first), and the deffile never names another
                // user's repository.
                source_ref: job.manifest_digest.clone(),
                work_dir: workspace.dir.path().to_path_buf(),
                out: workspace.sif_path(),
                enroot_out: Some(workspace.enroot_path()),
                enroot_only: false,
            };
            let built = sandbox::run(&spec, progress).await?;
            Ok(Built {
                workspace,
                log: built.log,
                compression: format!("{:?}", build_child::compression(&farm.config)),
                // The build process's digest is its word: the server hashes what it imports.
                digest: None,
            })
        })
    }
}

/// Builds the enroot image of `image` into `workspace` (its [`Workspace::enroot_path`]) with
/// the native converter in the same contained build process, writing no SIF: how a SIF that
/// another backend built (apptainer), or one built before enroot images, gets its enroot
/// image. Returns the build's log.
pub(super) async fn derive_enroot(
    farm: &std::sync::Arc<super::Farm>,
    image: image::Source<'_>,
    workspace: &Workspace,
    progress: &super::progress::ProgressCell,
) -> Result<String, Failure> {
    let (config, layers) = stage(farm, image, workspace).await?;
    let spec = BuildSpec {
        farm: farm.config.clone(),
        config,
        layers,
        source_ref: image.manifest_digest.to_owned(),
        work_dir: workspace.dir.path().to_path_buf(),
        out: workspace.dir.path().join("unwritten.sif"),
        enroot_out: Some(workspace.enroot_path()),
        enroot_only: true,
    };
    Ok(sandbox::run(&spec, progress).await?.log)
}

/// Puts a job's config (read here, size-capped, so the build process gets checked bytes) and
/// layers into `workspace` for the build process: what it reads.
pub(super) async fn stage(
    farm: &std::sync::Arc<super::Farm>,
    source: image::Source<'_>,
    workspace: &Workspace,
) -> Result<(PathBuf, Vec<LayerFile>), Failure> {
    let image = image::load(farm, source).await?;
    let (store, config_digest) = (farm.store.clone(), image.config.clone());
    let limit = farm.config.max_config_bytes;
    let config_json =
        tokio::task::spawn_blocking(move || access::read_config(&store, &config_digest, limit))
            .await
            .map_err(|e| Failure::transient(format!("config read task: {e}"), ""))?
            .map_err(|e| match e {
                access::ConfigError::TooLarge { .. } => Failure::permanent(e.to_string()),
                access::ConfigError::Io { .. } => Failure::transient(e.to_string(), ""),
            })?;
    let config = workspace.dir.path().join("config.json");
    tokio::fs::write(&config, config_json)
        .await
        .map_err(|e| Failure::transient(format!("cannot stage the config: {e}"), ""))?;
    // The build process reads local files: the store puts each layer in the workspace (a hard
    // link on the filesystem store, a streamed copy elsewhere).
    let (store, dir) = (farm.store.clone(), workspace.dir.path().to_path_buf());
    let wanted = image.layers.clone();
    let layers = tokio::task::spawn_blocking(move || stage_layers(&store, &dir, &wanted))
        .await
        .map_err(|e| Failure::transient(format!("layer staging task: {e}"), ""))??;
    Ok((config, layers))
}

/// Puts each layer blob in `dir` as `layer-<n>` for the build process.
fn stage_layers(
    store: &BlobStore,
    dir: &Path,
    layers: &[(String, Digest)],
) -> Result<Vec<LayerFile>, Failure> {
    let mut staged = Vec::with_capacity(layers.len());
    for (i, (media_type, digest)) in layers.iter().enumerate() {
        let cannot = |e: String| {
            Failure::transient(format!("cannot read layer {} ({digest}): {e}", i + 1), "")
        };
        let path = dir.join(format!("layer-{}", i + 1));
        if !store
            .materialize(digest, &path)
            .map_err(|e| cannot(e.to_string()))?
        {
            return Err(cannot("its bytes are missing from the store".into()));
        }
        let size = std::fs::metadata(&path)
            .map_err(|e| cannot(e.to_string()))?
            .len();
        staged.push(LayerFile {
            media_type: media_type.clone(),
            digest: digest.as_str().to_owned(),
            path,
            size,
        });
    }
    Ok(staged)
}
