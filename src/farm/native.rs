//! The native backend: reads the image's config and layers straight from the blob store and
//! converts them with the `oci2sif` crate. No external tools, no root, no network.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use super::backend::{Backend, BuildFuture, Built, Failure, Workspace};
use super::image::{self, Image};
use super::{access, Farm};
use crate::meta::Job;
use crate::storage::BlobStore;

/// Read buffer per layer: layers are streamed, never loaded whole.
const LAYER_BUFFER: usize = 1 << 20;

/// The built-in converter.
pub struct Native;

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn build<'a>(&'a self, farm: &'a Arc<Farm>, job: &'a Job) -> BuildFuture<'a> {
        Box::pin(async move {
            let image = image::load(farm, job).await?;
            let workspace = Workspace::create(&farm.store)?;
            let options = oci2sif::BuildOptions {
                compression: farm.compression(),
                threads: farm.build_threads(),
                limits: farm.build_limits(),
                reproducible: farm.config.reproducible,
                work_dir: workspace.dir.path().to_path_buf(),
            };
            let compression = format!("{:?}", options.compression);
            let max_config_bytes = farm.config.max_config_bytes;
            let store = farm.store.clone();
            // The digest alone: the SIF then depends only on the image (the same bytes whichever
            // repository pushed it first), and the deffile never names another user's repository.
            let source_ref = job.manifest_digest.clone();
            let out_path = workspace.sif_path();
            let log = tokio::task::spawn_blocking(move || {
                convert(
                    &store,
                    image,
                    source_ref,
                    &options,
                    max_config_bytes,
                    &out_path,
                )
            })
            .await
            .map_err(|e| Failure::transient(format!("build task crashed: {e}"), ""))??;
            Ok(Built {
                workspace,
                log,
                compression,
            })
        })
    }
}

fn convert(
    store: &BlobStore,
    image: Image,
    source_ref: String,
    options: &oci2sif::BuildOptions,
    max_config_bytes: u64,
    out_path: &Path,
) -> Result<String, Failure> {
    let mut log = String::new();
    let config_json =
        access::read_config(store, &image.config, max_config_bytes).map_err(|e| match e {
            access::ConfigError::TooLarge { .. } => Failure::permanent(e.to_string()),
            access::ConfigError::Io { .. } => Failure::transient(e.to_string(), ""),
        })?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for (i, (media_type, digest)) in image.layers.iter().enumerate() {
        let cannot = |e: String| {
            Failure::transient(format!("cannot read layer {} ({digest}): {e}", i + 1), "")
        };
        let blob = store
            .open(digest)
            .map_err(|e| cannot(e.to_string()))?
            .ok_or_else(|| cannot("its bytes are missing from the store".into()))?;
        log.push_str(&format!(
            "layer {}/{}: {digest} ({media_type})\n",
            i + 1,
            image.layers.len()
        ));
        layers.push(oci2sif::LayerInput {
            media_type: media_type.clone(),
            reader: Box::new(BufReader::with_capacity(LAYER_BUFFER, blob.reader())),
        });
    }
    let input = oci2sif::BuildInput {
        config_json,
        layers,
        source_ref,
    };
    let mut out = File::create(out_path)
        .map_err(|e| Failure::transient(format!("cannot create the SIF file: {e}"), ""))?;
    match oci2sif::build_sif(input, options, &mut out) {
        Ok(report) => {
            log.push_str(&format!(
                "built {} bytes: arch {}, {} files, {} bytes unpacked, squashfs {} bytes ({:?})\n",
                report.sif_size,
                report.arch,
                report.files,
                report.unpacked_bytes,
                report.squashfs_size,
                options.compression
            ));
            Ok(log)
        }
        Err(e) => {
            let permanent = e.is_permanent();
            let reason = e.to_string();
            log.push_str(&format!("error: {reason}\n"));
            Err(Failure {
                reason,
                log,
                permanent,
            })
        }
    }
}
