//! The native backend: reads the image's config and layers straight from the blob store and
//! converts them with the `oci2sif` crate. No external tools, no root, no network.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::worker::{Built, Failure};
use super::{access, Farm, Workspace};
use crate::meta::{self, Job};
use crate::registry::names::{Algorithm, Digest, Hasher};
use crate::storage::BlobStore;

/// Read buffer per layer: layers are streamed, never loaded whole.
const LAYER_BUFFER: usize = 1 << 20;

pub async fn build(farm: &Arc<Farm>, job: &Job) -> Result<Built, Failure> {
    let image = load_image(farm, job).await?;
    let workspace = Workspace {
        dir: farm.store.scratch_dir().map_err(|e| {
            Failure::transient(
                format!("cannot create a build directory: {e}"),
                String::new(),
            )
        })?,
    };
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
    let result = tokio::task::spawn_blocking(move || {
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
    .map_err(|e| Failure::transient(format!("build task crashed: {e}"), String::new()))?;
    match result {
        Ok(log) => Ok(Built {
            workspace,
            log,
            compression,
        }),
        Err(failure) => Err(failure),
    }
}

/// The parts of an image a build needs; every blob named here is one the job's repository
/// holds (see [`super::access`]), so both backends read only those.
pub struct Image {
    pub config: Digest,
    pub layers: Vec<(String, Digest)>,
}

/// Reads the job's manifest from the job's repository and checks that the repository holds
/// the config and every layer; a blob it does not hold fails the build for good.
pub async fn load_image(farm: &Arc<Farm>, job: &Job) -> Result<Image, Failure> {
    let (r, d) = (job.repository.clone(), job.manifest_digest.clone());
    let checked = farm
        .db
        .read(move |c| {
            let Some(stored) = meta::manifest_by_digest(c, &r, &d)? else {
                return Ok(None);
            };
            let manifest =
                serde_json::from_slice::<oci_spec::image::ImageManifest>(&stored.content);
            let unreadable = match &manifest {
                Ok(m) => access::first_unreadable(c, &r, m)?,
                Err(_) => None,
            };
            Ok(Some((manifest, unreadable)))
        })
        .await
        .map_err(|e| plain_failure(format!("cannot read the manifest: {e}")))?;
    let Some((manifest, unreadable)) = checked else {
        return Err(plain_failure(format!(
            "manifest {} is no longer in {}",
            job.manifest_digest, job.repository
        )));
    };
    let manifest = manifest
        .map_err(|e| Failure::permanent(format!("the manifest is not an image manifest: {e}")))?;
    if let Some(unreadable) = unreadable {
        return Err(Failure::permanent(unreadable.reason(&job.repository)));
    }
    let digest = |d: &oci_spec::image::Digest| {
        Digest::parse(d.as_ref())
            .map_err(|e| Failure::permanent(format!("bad digest in manifest: {e}")))
    };
    let config = digest(manifest.config().digest())?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| Ok((l.media_type().to_string(), digest(l.digest())?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(Image { config, layers })
}

fn plain_failure(reason: String) -> Failure {
    Failure::transient(reason.clone(), reason)
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
            access::ConfigError::Io { .. } => plain_failure(e.to_string()),
        })?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for (i, (media_type, digest)) in image.layers.iter().enumerate() {
        let cannot =
            |e: String| plain_failure(format!("cannot read layer {} ({digest}): {e}", i + 1));
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
        .map_err(|e| plain_failure(format!("cannot create the SIF file: {e}")))?;
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

/// A built SIF, hashed and imported into the blob store.
pub struct InspectedSif {
    pub digest: Digest,
    pub size: u64,
    pub squashfs_offset: u64,
    pub squashfs_size: u64,
}

/// Checks that `path` is a SIF with a primary squashfs partition, hashes it and imports it.
pub fn inspect_sif(store: &BlobStore, path: &Path) -> Result<InspectedSif, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let info = oci2sif::sif::read_descriptors(&mut file).map_err(|e| e.to_string())?;
    let part = info
        .primary_partition()
        .ok_or("it has no primary system partition")?;
    let (squashfs_offset, squashfs_size) = (part.offset, part.size);
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut reader =
        BufReader::with_capacity(LAYER_BUFFER, File::open(path).map_err(|e| e.to_string())?);
    let mut buf = vec![0u8; LAYER_BUFFER];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = hasher.finish();
    store
        .import_file(path, &digest)
        .map_err(|e| e.to_string())?;
    Ok(InspectedSif {
        digest,
        size,
        squashfs_offset,
        squashfs_size,
    })
}
