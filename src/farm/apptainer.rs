//! The `apptainer build` backend, for sites that want Apptainer's own conversion: the image is
//! exported from the blob store as an OCI layout (blobs hard-linked, not copied) and built with
//! `apptainer build <out.sif> oci:<layout>:image`. The log is kept like a native build's.

use std::path::Path;
use std::sync::Arc;

use tokio::process::Command;

use super::backend::{Backend, BuildFuture, BuildRequest, Built, Failure, Workspace};
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
    let source = format!("oci:{}:image", layout.display());
    let mut cmd = Command::new(&farm.config.apptainer);
    cmd.arg("build").arg("--force");
    if farm.config.compression == crate::config::CompressionName::Zstd {
        cmd.args(["--mksquashfs-args", "-comp zstd"]);
    }
    cmd.arg(&out).arg(&source).kill_on_drop(true);
    let command_line = format!(
        "{} build --force {} {source}",
        farm.config.apptainer.display(),
        out.display()
    );
    let output = cmd
        .output()
        .await
        .map_err(|e| Failure::transient(format!("cannot run {command_line}: {e}"), ""))?;
    let log = format!(
        "$ {command_line}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Failure::transient(
            format!("apptainer build exited with {}", output.status),
            log,
        ));
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
    })
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
