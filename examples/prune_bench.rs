//! Benchmark of online garbage collection (not a test): prune time and peak memory on a synthetic
//! store, built directly in the metadata database and the blob directory (fast), as
//! `bench/prune.sh` drives it. Each phase is its own process so that the peak RSS it reports
//! (`VmHWM`) is the prune's alone.
//!
//! ```text
//! prune_bench setup  DIR MANIFESTS   # MANIFESTS tagged images of 5 blobs each (config + 4 layers)
//! prune_bench change DIR PERCENT     # untag PERCENT% of the images, push as many new ones
//! prune_bench prune  DIR             # one real prune (grace 0); prints a JSON line
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use hpc_registry::config::GcConfig;
use hpc_registry::lifecycle::{Pruner, Settings};
use hpc_registry::meta::{self, Db, NewManifest, Reference, ReferenceKind};
use hpc_registry::registry::names::Algorithm;
use hpc_registry::registry::{Limits, Registry};
use hpc_registry::storage::BlobStore;

const BLOBS_PER_IMAGE: usize = 5;
const BLOB_BYTES: usize = 512;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (phase, dir) = match (args.get(1), args.get(2)) {
        (Some(p), Some(d)) => (p.as_str(), std::path::PathBuf::from(d)),
        _ => bail!("usage: prune_bench setup|change|prune DIR [N]"),
    };
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    std::fs::create_dir_all(&dir)?;
    let store = BlobStore::open(&dir)?;
    let db = Db::open(&dir.join("meta.db")).context("open meta.db")?;
    match phase {
        "setup" => push_images(&db, &dir, 0, n),
        "change" => change(&db, &dir, n),
        "prune" => prune(db, store),
        other => bail!("unknown phase {other}"),
    }
}

/// Images `first..first+count`, each in repository `bench/r<i % 100>` with tag `t<i>`.
fn push_images(db: &Db, dir: &std::path::Path, first: usize, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    for chunk in (first..first + count).collect::<Vec<_>>().chunks(1000) {
        let mut images = Vec::new();
        for &i in chunk {
            let mut refs = Vec::new();
            for b in 0..BLOBS_PER_IMAGE {
                let mut bytes = vec![0u8; BLOB_BYTES];
                bytes[..16].copy_from_slice(&(i as u64 * 16 + b as u64).to_le_bytes().repeat(2));
                let digest = Algorithm::Sha256.digest(&bytes);
                // A fixture: written straight into the filesystem store's layout
                // (blobs/<alg>/<xx>/<hex>), without the fsyncs of the registry's own path.
                let hex = digest.hex();
                let path = dir.join("blobs/sha256").join(&hex[..2]).join(hex);
                std::fs::create_dir_all(path.parent().context("blob dir")?)?;
                std::fs::write(&path, &bytes)?;
                refs.push((digest.as_str().to_owned(), bytes.len() as i64));
            }
            images.push((i, refs));
        }
        db.write_blocking(|tx| {
            for (i, refs) in &images {
                let repo = format!("bench/r{}", i % 100);
                for (d, size) in refs {
                    meta::link_blob(tx, &repo, "bench", d, *size)?;
                }
                let content = format!("{{\"image\":{i}}}").into_bytes();
                let m = NewManifest {
                    repository: repo.clone(),
                    namespace: "bench".into(),
                    digest: Algorithm::Sha256.digest(&content).as_str().to_owned(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    kind: "image",
                    registry_made: false,
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    content,
                    references: refs
                        .iter()
                        .map(|(d, size)| Reference {
                            digest: d.clone(),
                            size: *size,
                            kind: ReferenceKind::Blob,
                        })
                        .collect(),
                    tag: Some(format!("t{i}")),
                };
                meta::put_manifest(tx, &m)?.map_err(|r| {
                    meta::MetaError::Task(format!("fixture manifest rejected: {r:?}"))
                })?;
            }
            Ok(())
        })?;
    }
    eprintln!(
        "pushed {count} images ({} blobs) in {:.1} s",
        count * BLOBS_PER_IMAGE,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Untags `percent`% of the images and pushes as many new ones.
fn change(db: &Db, dir: &std::path::Path, percent: usize) -> anyhow::Result<()> {
    let total: usize = db.read_blocking(|c| {
        Ok(c.query_row("SELECT COUNT(*) FROM manifests", [], |r| r.get::<_, i64>(0))? as usize)
    })?;
    let count = total * percent / 100;
    let step = (total / count.max(1)).max(1);
    db.write_blocking(|tx| {
        for k in 0..count {
            let i = k * step;
            meta::delete_tag(tx, &format!("bench/r{}", i % 100), &format!("t{i}"))?;
        }
        Ok(())
    })?;
    push_images(db, dir, total, count)
}

fn prune(db: Arc<Db>, store: BlobStore) -> anyhow::Result<()> {
    let gc = GcConfig {
        grace: "0s".into(),
        ..GcConfig::default()
    };
    let pruner = Pruner::new(Settings::from_config(&gc, &[])?);
    let registry = Registry::new(db, store, Limits::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = runtime.block_on(pruner.run(
        &registry,
        hpc_registry::lifecycle::gc::Options::prune(false),
    ))?;
    let secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_owned();
    println!(
        "{}",
        serde_json::json!({
            "seconds": secs, "peak_rss": hwm, "manifests": report.counts.manifests,
            "blobs": report.counts.blobs, "disk_bytes_freed": report.counts.disk_bytes_freed,
        })
    );
    Ok(())
}
