//! The native backend: converts the image with the `oci2sif` crate in a contained build process
//! ([`super::sandbox`]), reading the config and layers straight from the blob store. No
//! external tools, no root, no network.

use super::backend::{Backend, BuildFuture, BuildRequest, Built, Failure, Workspace};
use super::build_child::{self, BuildSpec, LayerFile};
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
            let image = image::load(farm, job).await?;
            let workspace = Workspace::create(&farm.store)?;
            // The config is read here, size-capped, so the build process gets checked bytes.
            let (store, config_digest) = (farm.store.clone(), image.config.clone());
            let limit = farm.config.max_config_bytes;
            let config_json = tokio::task::spawn_blocking(move || {
                access::read_config(&store, &config_digest, limit)
            })
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
            let spec = BuildSpec {
                farm: farm.config.clone(),
                config,
                layers: image
                    .layers
                    .iter()
                    .map(|(media_type, digest)| LayerFile {
                        media_type: media_type.clone(),
                        digest: digest.as_str().to_owned(),
                        path: farm.store.blob_path(digest),
                        size: farm.store.stat(digest).ok().flatten().unwrap_or(0),
                    })
                    .collect(),
                // The digest alone: the SIF then depends only on the image (the same bytes
                // whichever repository pushed it first), and the deffile never names another
                // user's repository.
                source_ref: job.manifest_digest.clone(),
                work_dir: workspace.dir.path().to_path_buf(),
                out: workspace.sif_path(),
            };
            let log = sandbox::run(&spec, progress).await?;
            Ok(Built {
                workspace,
                log,
                compression: format!("{:?}", build_child::compression(&farm.config)),
            })
        })
    }
}
