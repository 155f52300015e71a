//! The `apptainer build` backend, for sites that want Apptainer's own conversion: the image is
//! exported from the blob store as an OCI layout (blobs hard-linked, not copied) and built with
//! `apptainer build <out.sif> oci:<layout>:image`, contained like a native build
//! ([`super::containment`]: memory limit, timeout killing apptainer and everything it started,
//! `GOMAXPROCS` and `mksquashfs -processors`, scratch bound on its directory, lower priority).
//! The log is kept like a native build's.

use std::path::Path;
use std::sync::Arc;

use tokio::process::Command;

use super::backend::{Backend, BuildFuture, BuildRequest, Built, Failure, Workspace};
use super::containment::{self, Limits};
use super::{image, Farm};
use crate::meta::{self, Job};
use crate::registry::names::Digest;
use crate::storage::BlobStore;

/// Runs `apptainer build` on an exported OCI layout.
pub struct Apptainer;

impl Backend for Apptainer {
    /// `apptainer build` reports nothing measurable: the status shows the elapsed time.
    fn build<'a>(&'a self, request: BuildRequest<'a>) -> BuildFuture<'a> {
        Box::pin(build(request.farm, request.job))
    }

    fn name(&self) -> &'static str {
        "apptainer"
    }
}

/// Confirms the configured apptainer runs and returns its version line.
pub async fn check(apptainer: &Path) -> Result<String, String> {
    match Command::new(apptainer).arg("--version").output().await {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => Err(format!(
            "`{} --version` failed: {}",
            apptainer.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the apptainer backend is configured but `{}` cannot be run ({e}): install Apptainer or set farm.backend = \"native\"",
            apptainer.display()
        )),
    }
}

async fn build(farm: &Arc<Farm>, job: &Job) -> Result<Built, Failure> {
    check(&farm.config.apptainer)
        .await
        .map_err(|reason| Failure::transient(reason, ""))?;
    let image = image::load(farm, job.into()).await?;
    let workspace = Workspace::create(&farm.store)?;
    let layout = workspace.dir.path().join("layout");
    let store = farm.store.clone();
    let export = {
        let layout = layout.clone();
        tokio::task::spawn_blocking(move || {
            export_layout(&store, &layout, &image.manifest, &image.blobs())
        })
    };
    export
        .await
        .map_err(|e| Failure::transient(format!("export task: {e}"), ""))?
        .map_err(|e| {
            Failure::transient(format!("cannot export the image as an OCI layout: {e}"), "")
        })?;

    let out = workspace.sif_path();
    // Apptainer's temporary root filesystem and its layer cache go in the build's own
    // directory: bounded by farm.max_scratch_bytes with the SIF, and removed with it.
    let (tmp, cache) = (
        workspace.dir.path().join("tmp"),
        workspace.dir.path().join("cache"),
    );
    for dir in [&tmp, &cache] {
        tokio::fs::create_dir(dir)
            .await
            .map_err(|e| Failure::transient(format!("cannot create {}: {e}", dir.display()), ""))?;
    }
    let source = format!("oci:{}:image", layout.display());
    let squashfs_args = mksquashfs_args(&farm.config);
    let mut cmd = Command::new(&farm.config.apptainer);
    cmd.args(["build", "--force", "--mksquashfs-args", &squashfs_args])
        .arg(&out)
        .arg(&source)
        .env("APPTAINER_TMPDIR", &tmp)
        .env("TMPDIR", &tmp)
        .env("APPTAINER_CACHEDIR", &cache);
    let command_line = format!(
        "{} build --force --mksquashfs-args '{squashfs_args}' {} {source}",
        farm.config.apptainer.display(),
        out.display()
    );
    let limits = Limits {
        farm: &farm.config,
        watched_scratch: vec![tmp, cache, out.clone()],
    };
    let exit = containment::run(cmd, &limits, containment::tail)
        .await
        .map_err(|f| Failure {
            log: format!("$ {command_line}\n{}", f.log),
            ..f
        })?;
    let log = format!("$ {command_line}\n{}{}", exit.stdout, exit.stderr);
    if !exit.status.success() {
        let failure = containment::died(&exit, &farm.config).unwrap_or_else(|| {
            Failure::transient(format!("apptainer build exited with {}", exit.status), "")
        });
        return Err(Failure { log, ..failure });
    }
    if !out.exists() {
        return Err(Failure::transient(
            "apptainer build reported success but wrote no SIF".into(),
            log,
        ));
    }
    Ok(Built {
        workspace,
        log,
        compression: format!("{:?}", farm.config.compression),
        digest: None,
    })
}

/// What mksquashfs is told: the compression `[farm]` asks for (gzip is apptainer's default)
/// and the build's thread count (mksquashfs would otherwise take every core).
fn mksquashfs_args(c: &crate::config::FarmConfig) -> String {
    let threads = super::build_child::threads(c);
    match c.compression {
        crate::config::CompressionName::Zstd => format!("-comp zstd -processors {threads}"),
        crate::config::CompressionName::Gzip => format!("-processors {threads}"),
    }
}

/// Writes an OCI image layout holding one image, tagged `image`.
fn export_layout(
    store: &BlobStore,
    layout: &Path,
    manifest: &meta::StoredManifest,
    blobs: &[Digest],
) -> std::io::Result<()> {
    let dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for digest in blobs {
        let target = layout
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex());
        std::fs::create_dir_all(target.parent().unwrap_or(&dir))?;
        // A hard link on the filesystem store: the layout costs no copy of the layers.
        if !store.materialize(digest, &target)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("blob {digest} is missing from the store"),
            ));
        }
    }
    let manifest_digest = Digest::parse(&manifest.digest).map_err(std::io::Error::other)?;
    std::fs::write(
        layout
            .join("blobs")
            .join(manifest_digest.algorithm().name())
            .join(manifest_digest.hex()),
        &manifest.content,
    )?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::manifests::OCI_INDEX,
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.content.len(),
            "annotations": {"org.opencontainers.image.ref.name": "image"},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)
}
