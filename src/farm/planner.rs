//! Turns registry events into build jobs and ORAS tag updates.
//!
//! What gets a job: an image manifest (OCI or Docker v2s2) that has at least one tar layer and
//! whose config names a platform in the configured set. Indexes get no job of their own: their
//! children were pushed first and got theirs. Attestation manifests (in-toto layers), artifacts,
//! `unknown/unknown` and layer-less manifests are skipped.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{oras, Farm};
use crate::meta::{self, Event};
use crate::registry::manifests::{self, Kind};
use crate::registry::names::Digest;

/// Safety net for missed wake-ups; normally the registry notifies at once.
const POLL: Duration = Duration::from_secs(2);
const BATCH: i64 = 200;

pub async fn run(farm: Arc<Farm>) {
    loop {
        match process_pending(&farm).await {
            Ok(0) => {
                let _ = tokio::time::timeout(POLL, farm.events.notified()).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("build planner: {e:#}");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Handles one batch of pending events; returns how many.
pub async fn process_pending(farm: &Arc<Farm>) -> anyhow::Result<usize> {
    let events = farm.db.read(|c| meta::pending_events(c, 0, BATCH)).await?;
    let n = events.len();
    for event in events {
        handle(farm, &event).await?;
        let id = event.id;
        farm.db
            .write(move |tx| meta::mark_event_consumed(tx, id))
            .await?;
    }
    Ok(n)
}

async fn handle(farm: &Arc<Farm>, event: &Event) -> anyhow::Result<()> {
    match event.kind.as_str() {
        "manifest_pushed" => {
            if let Some(platform) =
                buildable_platform(farm, &event.repository, &event.digest).await?
            {
                if farm.wants_platform(&platform) {
                    let (d, p, r) = (
                        event.digest.clone(),
                        platform.clone(),
                        event.repository.clone(),
                    );
                    if farm
                        .db
                        .write(move |tx| meta::enqueue_build(tx, &d, &p, &r))
                        .await?
                    {
                        tracing::info!(digest = %event.digest, %platform, repository = %event.repository, "SIF build queued");
                        farm.jobs.notify_waiters();
                    }
                }
            }
        }
        "tag_pushed" => {
            if let Some(tag) = &event.tag {
                if !oras::is_derived_tag(tag) {
                    oras::publish_for_tag(farm, &event.repository, tag, &event.digest).await?;
                }
            }
        }
        "tag_deleted" => {
            if let Some(tag) = &event.tag {
                if oras::is_derived_tag(tag) {
                    // A client's `T.sif` may have displaced the derived one: bring it back.
                    oras::restore_derived_tag(farm, &event.repository, tag).await?;
                } else {
                    oras::remove_derived_tags(farm, &event.repository, tag).await?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Deserialize)]
struct ConfigPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

/// The platform of a runnable image manifest, or `None` if it is not something to build.
pub async fn buildable_platform(
    farm: &Arc<Farm>,
    repository: &str,
    digest: &str,
) -> anyhow::Result<Option<String>> {
    let (r, d) = (repository.to_owned(), digest.to_owned());
    let Some(stored) = farm
        .db
        .read(move |c| meta::manifest_by_digest(c, &r, &d))
        .await?
    else {
        return Ok(None);
    };
    let parsed = match manifests::parse(Some(&stored.media_type), &stored.content) {
        Ok(p) => p,
        Err(_) => return Ok(None),
    };
    if parsed.kind != Kind::Image {
        return Ok(None);
    }
    let image: oci_spec::image::ImageManifest = serde_json::from_slice(&stored.content)?;
    if !image
        .layers()
        .iter()
        .any(|l| oci2sif::layers::is_layer_media_type(l.media_type().as_ref()))
    {
        return Ok(None);
    }
    let config_digest = Digest::parse(image.config().digest().as_ref())?;
    let store = farm.store.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(store.blob_path(&config_digest)))
        .await??;
    let config: ConfigPlatform = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let (Some(os), Some(arch)) = (config.os, config.architecture) else {
        return Ok(None);
    };
    if os == "unknown" || arch == "unknown" {
        return Ok(None);
    }
    Ok(Some(match config.variant.filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }))
}
