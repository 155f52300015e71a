//! The download of one ready SIF (or enroot image) into the cache: resumable, retried,
//! verified, then published.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::{etag_digest, retry_pause, FetchError, ImageRef, Progress, Ready};
use crate::client::{self, Client};
use crate::node_cache::{self, Kind, NodeCache};
use crate::writeback::Writeback;

/// How one attempt ended.
enum Attempt {
    Complete,
    /// Interrupted (connection lost, 5xx): resume from what is on disk.
    Interrupted(String),
    /// What is on disk cannot be resumed (another SIF now, or a range the server refused).
    Restart,
}

/// What is downloaded: from `url`, cached as `kind`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a str,
    pub kind: Kind,
}

/// Downloads the file `ready` names into the cache and returns its published path. The caller
/// holds the download lock.
pub fn download(
    client: &Client,
    cache: &NodeCache,
    image: &ImageRef,
    target: Target<'_>,
    ready: &Ready,
    progress: &mut Progress,
) -> anyhow::Result<PathBuf> {
    let sif_url = target.url;
    let part_path = cache.partial_path(&ready.digest)?;
    let mut part = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&part_path)
        .with_context(|| format!("cannot write {}", part_path.display()))?;
    // What a previous, interrupted run left: hashed again, so the check covers every byte.
    let mut hasher = Sha256::new();
    let mut have = node_cache::hash_into(&mut part, &mut hasher)
        .with_context(|| format!("cannot read {}", part_path.display()))?;
    if have > ready.size {
        (hasher, have) = restart(&mut part)?;
    }
    progress.start_download(&image.text, have, ready.size);
    let mut failures = 0u32;
    let mut restarts = 0u32;
    loop {
        let outcome = attempt(
            client,
            sif_url,
            ready,
            &mut part,
            &mut hasher,
            &mut have,
            progress,
        )?;
        match outcome {
            Attempt::Complete => {}
            Attempt::Interrupted(why) => {
                retry_pause(&mut failures, &why, progress)?;
                continue;
            }
            Attempt::Restart => {
                restarts += 1;
                if restarts > 2 {
                    bail!(
                        "the registry keeps changing the SIF of {} during the download",
                        image.text
                    );
                }
                (hasher, have) = restart(&mut part)?;
                continue;
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize_reset()));
        if actual == ready.digest {
            break;
        }
        restarts += 1;
        progress.note(&format!(
            "the download of {} hashes to {actual}, not {}: downloading it again",
            image.text, ready.digest
        ));
        if restarts > 2 {
            let _ = std::fs::remove_file(&part_path);
            return Err(FetchError::Refused(format!(
                "{}: the SIF served does not match its digest {} (twice); the registry's copy may be damaged (`hpc-registry admin scrub`)",
                image.text, ready.digest
            ))
            .into());
        }
        (hasher, have) = restart(&mut part)?;
    }
    progress.finish();
    drop(part);
    Ok(cache.publish_as(target.kind, &ready.digest, &part_path)?)
}

fn restart(part: &mut File) -> anyhow::Result<(Sha256, u64)> {
    part.set_len(0)?;
    part.seek(SeekFrom::Start(0))?;
    Ok((Sha256::new(), 0))
}

/// One GET from `have` on; appends to `part` and the hash as bytes arrive.
fn attempt(
    client: &Client,
    sif_url: &str,
    ready: &Ready,
    part: &mut File,
    hasher: &mut Sha256,
    have: &mut u64,
    progress: &mut Progress,
) -> anyhow::Result<Attempt> {
    if *have == ready.size && ready.size > 0 {
        return Ok(Attempt::Complete);
    }
    let mut request = client.request(Method::GET, sif_url)?;
    if *have > 0 {
        // If-Range: the rest of *this* SIF, or the whole of whatever the reference means now.
        request = request
            .header(RANGE, format!("bytes={have}-"))
            .header(IF_RANGE, format!("\"{}\"", ready.digest));
    }
    client.block_on(async {
        let mut response = match client.send(request).await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Interrupted(e.to_string())),
        };
        let status = response.status();
        if client::is_transient(status) {
            return Ok(Attempt::Interrupted(format!(
                "the registry answered {status}"
            )));
        }
        let etag = etag_digest(response.headers().get(ETAG));
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let expected = format!("bytes {have}-{}/{}", ready.size - 1, ready.size);
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if etag.as_deref() != Some(ready.digest.as_str()) || range != expected {
                    return Ok(Attempt::Restart);
                }
            }
            StatusCode::OK => {
                if etag.as_deref() != Some(ready.digest.as_str()) {
                    bail!(
                        "the reference now names another SIF ({}): fetch again",
                        etag.unwrap_or_default()
                    );
                }
                if *have > 0 {
                    (*hasher, *have) = restart(part)?;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Attempt::Restart),
            other => {
                let bytes = response.bytes().await.unwrap_or_default();
                let v = serde_json::from_slice(&bytes).unwrap_or_default();
                bail!(
                    "downloading the SIF: {other}: {}",
                    client::error_message(&v, &bytes)
                );
            }
        }
        part.seek(SeekFrom::End(0))?;
        // The cache publishes the file after an fsync: the disk takes it as it arrives.
        let mut writeback = Writeback::at(*have);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Ok(Attempt::Interrupted(client.transport_error(&e).to_string())),
            };
            if *have + chunk.len() as u64 > ready.size {
                return Ok(Attempt::Restart);
            }
            // Disk errors (a full cache) are not worth retrying: they end the fetch.
            part.write_all(&chunk)
                .context("cannot write the download")?;
            hasher.update(&chunk);
            *have += chunk.len() as u64;
            writeback.wrote(part, *have);
            progress.downloaded(*have);
        }
        if *have < ready.size {
            return Ok(Attempt::Interrupted(format!(
                "the download stopped at {} of {} bytes",
                *have, ready.size
            )));
        }
        Ok(Attempt::Complete)
    })
}

/// The SIF's root filesystem (its primary squashfs partition) as a file of its own, beside the
/// SIF in the cache: what enroot/pyxis import.
pub fn extract_squashfs(cache: &NodeCache, digest: &str, sif: &Path) -> anyhow::Result<PathBuf> {
    let target = cache.squashfs_path(digest)?;
    if target.exists() {
        return Ok(target);
    }
    let mut file = File::open(sif).with_context(|| format!("cannot open {}", sif.display()))?;
    let info = oci2sif::sif::read_descriptors(&mut file)
        .map_err(|e| anyhow!("{} is not a readable SIF: {e}", sif.display()))?;
    let partition = info
        .primary_partition()
        .ok_or_else(|| anyhow!("{} has no root filesystem partition", sif.display()))?
        .clone();
    cache.write_atomically(&target, |out| {
        file.seek(SeekFrom::Start(partition.offset))?;
        let copied = std::io::copy(&mut std::io::Read::take(&mut file, partition.size), out)?;
        if copied != partition.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the SIF ends inside its partition",
            ));
        }
        Ok(())
    })?;
    Ok(target)
}
