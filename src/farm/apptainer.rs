//! The `apptainer build` backend, for sites that want Apptainer's own conversion: the image is
//! exported from the blob store as an OCI layout (blobs hard-linked, not copied) and built with
//! `apptainer build <out.sif> oci:<layout>:image`. The log is kept like a native build's.

use std::path::Path;
use std::sync::Arc;

use tokio::process::Command;

use super::native::load_image;
use super::worker::{Built, Failure};
use super::{Farm, Workspace};
use crate::meta::{self, Job};
use crate::registry::names::Digest;
use crate::storage::BlobStore;

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

pub async fn build(farm: &Arc<Farm>, job: &Job) -> Result<Built, Failure> {
    check(&farm.config.apptainer)
        .await
        .map_err(|reason| Failure::transient(reason.clone(), reason))?;
    let image = load_image(farm, job).await?;
    let workspace = Workspace {
        dir: farm
            .store
            .scratch_dir()
            .map_err(|e| failure(format!("cannot create a build directory: {e}"), ""))?,
    };
    let (r, d) = (job.repository.clone(), job.manifest_digest.clone());
    let manifest = farm
        .db
        .read(move |c| meta::manifest_by_digest(c, &r, &d))
        .await
        .map_err(|e| failure(format!("cannot read the manifest: {e}"), ""))?
        .ok_or_else(|| failure("the manifest disappeared".into(), ""))?;
    let layout = workspace.dir.path().join("layout");
    let store = farm.store.clone();
    let blobs: Vec<Digest> = std::iter::once(image.config.clone())
        .chain(image.layers.iter().map(|(_, d)| d.clone()))
        .collect();
    let export = {
        let layout = layout.clone();
        tokio::task::spawn_blocking(move || export_layout(&store, &layout, &manifest, &blobs))
    };
    export
        .await
        .map_err(|e| failure(format!("export task: {e}"), ""))?
        .map_err(|e| failure(format!("cannot export the image as an OCI layout: {e}"), ""))?;

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
        .map_err(|e| failure(format!("cannot run {command_line}: {e}"), ""))?;
    let log = format!(
        "$ {command_line}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(failure(
            format!("apptainer build exited with {}", output.status),
            &log,
        ));
    }
    if !out.exists() {
        return Err(failure(
            "apptainer build reported success but wrote no SIF".into(),
            &log,
        ));
    }
    Ok(Built {
        workspace,
        log,
        compression: format!("{:?}", farm.config.compression),
    })
}

fn failure(reason: String, log: &str) -> Failure {
    let log = if log.is_empty() {
        reason.clone()
    } else {
        log.to_owned()
    };
    Failure::transient(reason, log)
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
