//! Turns registry events into build jobs and ORAS tag updates.
//!
//! What gets a job: an image manifest (OCI or Docker v2s2) that has at least one tar layer and
//! whose config names a platform in the configured set. Indexes get no job of their own: their
//! children were pushed first and got theirs. Attestation manifests (in-toto layers), artifacts,
//! `unknown/unknown` and layer-less manifests are skipped.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{access, oras, Farm};
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

/// Handles one batch of pending events; returns how many. An event that cannot be planned (an
/// unreadable config, a corrupt blob) is set aside, as a failed job with its reason where it
/// named an image, and the batch goes on: one bad image never holds up every later push.
pub async fn process_pending(farm: &Arc<Farm>) -> anyhow::Result<usize> {
    let events = farm.db.read(|c| meta::pending_events(c, 0, BATCH)).await?;
    let n = events.len();
    for event in events {
        if let Err(e) = handle(farm, &event).await {
            // The metadata store failing is no fault of this event: the batch is replayed later.
            if e.downcast_ref::<meta::MetaError>().is_some() {
                return Err(e);
            }
            set_aside(farm, &event, &e).await?;
        }
        let id = event.id;
        farm.db
            .write(move |tx| meta::mark_event_consumed(tx, id))
            .await?;
    }
    Ok(n)
}

/// Records why `event` could not be handled: a pushed image gets a failed job (listed by
/// `admin builds`, retried by `admin builds retry`); other events are logged.
async fn set_aside(farm: &Arc<Farm>, event: &Event, error: &anyhow::Error) -> anyhow::Result<()> {
    let reason = format!("cannot plan a SIF build for {}: {error:#}", event.digest);
    tracing::error!(event = event.id, kind = %event.kind, repository = %event.repository, "{reason}");
    if event.kind == "manifest_pushed" {
        let (d, r) = (event.digest.clone(), event.repository.clone());
        farm.db
            .write(move |tx| meta::record_unplannable(tx, &d, &r, &reason))
            .await?;
    }
    Ok(())
}

/// Plans one pushed image of `repository`: queues its job if it is a runnable image of a
/// configured platform, else does nothing. An error means it could not be planned.
pub async fn plan_image(farm: &Arc<Farm>, repository: &str, digest: &str) -> anyhow::Result<()> {
    let platform = match buildable_platform(farm, repository, digest).await {
        Ok(platform) => platform,
        // An image the farm may not read gets no job; later events still run.
        Err(e) if e.is::<access::Refused>() => {
            tracing::warn!(%repository, %digest, "no SIF build: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let Some(platform) = platform.filter(|p| farm.wants_platform(p)) else {
        return Ok(());
    };
    let (d, p, r) = (digest.to_owned(), platform.clone(), repository.to_owned());
    if farm
        .db
        .write(move |tx| meta::enqueue_build(tx, &d, &p, &r))
        .await?
    {
        tracing::info!(%digest, %platform, %repository, "SIF build queued");
        farm.jobs.notify_waiters();
    }
    Ok(())
}

async fn handle(farm: &Arc<Farm>, event: &Event) -> anyhow::Result<()> {
    match event.kind.as_str() {
        "manifest_pushed" => plan_image(farm, &event.repository, &event.digest).await?,
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

/// The platform of a runnable image manifest, or `None` if it is not something to build; an
/// [`access::Refused`] error if `repository` does not hold every blob of the image or its
/// config is over the size limit.
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
    // The config is read, and the image built, on behalf of `repository`: only if it holds
    // every blob the image names (foreign layers included), so that another user's digest in a
    // manifest neither gets a job nor is read here.
    let (r, m) = (repository.to_owned(), image.clone());
    if let Some(unreadable) = farm
        .db
        .read(move |c| access::first_unreadable(c, &r, &m))
        .await?
    {
        return Err(access::Refused(unreadable.reason(repository)).into());
    }
    let config_digest = Digest::parse(image.config().digest().as_ref())?;
    let (store, limit) = (farm.store.clone(), farm.config.max_config_bytes);
    let bytes = match tokio::task::spawn_blocking(move || {
        access::read_config(&store, &config_digest, limit)
    })
    .await?
    {
        Ok(bytes) => bytes,
        Err(e @ access::ConfigError::TooLarge { .. }) => {
            return Err(access::Refused(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
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
