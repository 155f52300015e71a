//! `hpc-registry fetch REF`: a reference → a verified SIF in the node cache, for compute nodes.
//!
//! 1. `HEAD /sif/REF` until the SIF is ready: a 202 means it is queued or building, so the
//!    build's status (`/sif/REF/status`: state, phase, progress) is shown and the request is
//!    repeated after `Retry-After`, for up to `--wait`. A 422 is a failed build (its reason and
//!    log tail are shown); other refusals are said in one line. Neither HEAD nor the status is
//!    a fetch in the audit trail, so a cache hit records none.
//! 2. The `ETag` of the ready SIF is its digest, the cache's key: a hit needs no download.
//! 3. Otherwise, under the download lock of that digest (one download per node and user), `GET`
//!    into `<hex>.part`, resuming with `Range` + `If-Range` after any interruption, retrying 5xx
//!    and connection errors with exponential back-off and jitter, hashing as it writes; the file
//!    is published by an atomic rename only once its sha256 matches the ETag.

mod download;
pub mod fan_out;
pub mod progress;
pub mod reference;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::header::{CONTENT_LENGTH, ETAG, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::auth::{Auth, Munge};
use crate::client::config::ClientConfig;
use crate::client::{self, Client, Timeouts};
use crate::node_cache::{Kind, NodeCache};
pub use progress::Progress;
pub use reference::ImageRef;

/// Poll interval when the server names none.
const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// Longest pause between two polls, whatever `Retry-After` says.
const MAX_POLL: Duration = Duration::from_secs(60);
/// Transient failures (5xx, connection errors) tolerated in a row before giving up.
const MAX_RETRIES: u32 = 8;

#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    pub platform: Option<String>,
    /// How long to wait for a build; `None`: without limit.
    pub wait: Option<Duration>,
    /// Also extract the squashfs partition (the SIF's bare root filesystem).
    pub squashfs: bool,
    /// Fetch the enroot image built with the SIF (`/sif/REF/enroot`, pyxis's squashfs) instead
    /// of the SIF: cached under its own digest.
    pub enroot: bool,
    /// Re-hash a cached SIF even when its stamp says it is intact.
    pub verify: bool,
}

/// What a fetch produced.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `sha256:…` of the SIF (of the enroot image with [`FetchOptions::enroot`]).
    pub digest: String,
    /// The cached SIF (the cached enroot image with [`FetchOptions::enroot`]).
    pub sif: PathBuf,
    pub squashfs: Option<PathBuf>,
    /// False for a cache hit.
    pub downloaded: bool,
}

/// A fetch that could not finish, with the exit status that says why.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The SIF was not ready within `--wait`: try again later (EX_TEMPFAIL).
    #[error("{0}")]
    NotReady(String),
    /// The registry said no (unknown image, no permission, failed build).
    #[error("{0}")]
    Refused(String),
}

impl FetchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchError::NotReady(_) => 75,
            FetchError::Refused(_) => 1,
        }
    }
}

/// The credentials a node command uses: `HPC_REGISTRY_AUTH` (munge, token, none) forces one;
/// otherwise `HPC_REGISTRY_TOKEN`, else a fresh MUNGE credential per request where munged runs,
/// else the token `hpc-registry login` saved, else none.
pub fn node_auth(config: &ClientConfig) -> anyhow::Result<Auth> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let munge = || Munge::detect(config.munge_socket.clone());
    let saved = || crate::client::credentials::load(config);
    match var("HPC_REGISTRY_AUTH").as_deref() {
        Some("none") => return Ok(Auth::Anonymous),
        Some("munge") => {
            return munge().map(Auth::Munge).ok_or_else(|| {
                anyhow!(
                    "HPC_REGISTRY_AUTH=munge, but munged's socket or the munge program is missing"
                )
            })
        }
        Some("token") => {
            if let Some(token) = var("HPC_REGISTRY_TOKEN") {
                return Ok(Auth::bearer(&token));
            }
            return saved()?.map(|c| Auth::bearer(&c.token)).ok_or_else(|| {
                anyhow!("HPC_REGISTRY_AUTH=token, but there is no HPC_REGISTRY_TOKEN and no saved login")
            });
        }
        Some(other) => bail!("HPC_REGISTRY_AUTH={other:?}: use munge, token or none"),
        None => {}
    }
    if let Some(token) = var("HPC_REGISTRY_TOKEN") {
        return Ok(Auth::bearer(&token));
    }
    if let Some(m) = munge() {
        return Ok(Auth::Munge(m));
    }
    Ok(saved()?
        .map(|c| Auth::bearer(&c.token))
        .unwrap_or(Auth::Anonymous))
}

/// The registry client of the node commands: the site's URL and CA, the node's credentials,
/// and the Slurm job id when inside a job (for the audit trail).
pub fn node_client(config: &ClientConfig) -> anyhow::Result<Client> {
    let saved = crate::client::credentials::load(config)?;
    let url = match (config.url.as_deref(), &saved) {
        (Some(_), _) => config.url()?.to_owned(),
        (None, Some(s)) => s.url.clone(),
        (None, None) => config.url()?.to_owned(),
    };
    let client = Client::new(
        &url,
        "the registry URL",
        config.cacert.as_deref(),
        node_auth(config)?,
        Timeouts::default(),
    )?;
    match std::env::var("SLURM_JOB_ID") {
        Ok(job) if !job.is_empty() => client.with_header("x-slurm-job-id", &job),
        _ => Ok(client),
    }
}

/// Fetches `image` into `cache`; see the module documentation.
pub fn fetch(
    client: &Client,
    cache: &NodeCache,
    image: &ImageRef,
    options: &FetchOptions,
    progress: &mut Progress,
) -> anyhow::Result<Fetched> {
    let query = match &options.platform {
        Some(p) => format!("?platform={}", crate::urlcode::encode(p)),
        None => String::new(),
    };
    let (kind, view) = match options.enroot {
        true => (Kind::Enroot, "/enroot"),
        false => (Kind::Sif, ""),
    };
    let sif_url = format!("/sif/{}{view}{query}", image.sif_path);
    let status_url = format!("/sif/{}/status{query}", image.sif_path);
    let ready = wait_until_ready(client, image, &sif_url, &status_url, options, progress)?;
    if options.verify {
        // A stamp can be forged by whoever can write the file; --verify trusts only the hash.
        if let Ok(stamp) = cache.sif_path(&ready.digest) {
            let _ = std::fs::remove_file(stamp.with_extension("stamp"));
        }
    }
    let (sif, downloaded) = match cache.lookup_as(kind, &ready.digest)? {
        Some(path) => (path, false),
        None => {
            let _lock = cache.lock_download(&ready.digest)?;
            // Another job on this node may have downloaded it while we waited for the lock.
            match cache.lookup_as(kind, &ready.digest)? {
                Some(path) => (path, false),
                None => {
                    for e in cache.make_room(ready.size)? {
                        progress.note(&format!("evicted {} from the cache", e.digest));
                    }
                    let target = download::Target {
                        url: &sif_url,
                        kind,
                    };
                    let path = download::download(client, cache, image, target, &ready, progress)?;
                    (path, true)
                }
            }
        }
    };
    let squashfs = if options.squashfs && !options.enroot {
        Some(download::extract_squashfs(cache, &ready.digest, &sif)?)
    } else {
        None
    };
    Ok(Fetched {
        digest: ready.digest,
        sif,
        squashfs,
        downloaded,
    })
}

/// A SIF the registry is ready to serve.
#[derive(Debug, Clone)]
pub struct Ready {
    pub digest: String,
    pub size: u64,
}

fn wait_until_ready(
    client: &Client,
    image: &ImageRef,
    sif_url: &str,
    status_url: &str,
    options: &FetchOptions,
    progress: &mut Progress,
) -> anyhow::Result<Ready> {
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        let head =
            client.block_on(async { client.send(client.request(Method::HEAD, sif_url)?).await });
        let response = match head {
            Ok(r) => r,
            Err(e) => {
                retry_pause(&mut failures, &e.to_string(), progress)?;
                continue;
            }
        };
        let status = response.status();
        if client::is_transient(status) {
            retry_pause(
                &mut failures,
                &format!("the registry answered {status}"),
                progress,
            )?;
            continue;
        }
        failures = 0;
        match status {
            StatusCode::OK => {
                let digest = etag_digest(response.headers().get(ETAG)).ok_or_else(|| {
                    anyhow!(
                        "the registry sent the SIF of {} without its digest (ETag)",
                        image.text
                    )
                })?;
                let size = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                return Ok(Ready { digest, size });
            }
            StatusCode::ACCEPTED => {
                let pause = retry_after(response.headers().get(RETRY_AFTER));
                let status = get_json(client, status_url).unwrap_or(Value::Null);
                progress.building(&image.text, &status);
                let waited = started.elapsed();
                let limit = options.wait.unwrap_or(Duration::MAX);
                if waited >= limit {
                    let describe = progress::describe_status(&status);
                    return Err(FetchError::NotReady(match options.wait {
                        Some(w) if w.is_zero() => format!(
                            "{}: {describe}; not waiting outside a Slurm job: run again later, or wait with --wait 30m",
                            image.text
                        ),
                        _ => format!(
                            "{}: {describe} after waiting {}s (--wait); run again later",
                            image.text,
                            waited.as_secs()
                        ),
                    })
                    .into());
                }
                thread::sleep(pause.min(limit - waited));
            }
            StatusCode::UNPROCESSABLE_ENTITY => return Err(build_failed(client, image, sif_url)),
            _ => return Err(refused(client, image, [status_url, sif_url], status)),
        }
    }
}

/// A failed build: the reason and the tail of the build log (`GET` repeats the request to read
/// the body HEAD had no room for).
fn build_failed(client: &Client, image: &ImageRef, sif_url: &str) -> anyhow::Error {
    let body = get_json(client, sif_url).unwrap_or(Value::Null);
    let error = &body["errors"][0];
    let message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("building the SIF of {} failed", image.text));
    let tail = error["detail"]["log_tail"].as_str().unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(20).collect();
    let mut text = message;
    if !tail.is_empty() {
        text.push_str("\n--- end of the build log ---\n");
        for line in tail.iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
    }
    FetchError::Refused(text.trim_end().to_owned()).into()
}

/// An unknown image, an unreadable one, bad credentials: one line with the registry's words,
/// read from the status (`urls[0]`), or from the file's URL (`urls[1]`, one byte at most) when
/// the image is fine but its file is refused (a SIF built without an enroot image).
fn refused(
    client: &Client,
    image: &ImageRef,
    urls: [&str; 2],
    status: StatusCode,
) -> anyhow::Error {
    let message = client
        .block_on(async {
            let mut message = String::new();
            for url in urls {
                let request = client.request(Method::GET, url)?.header(RANGE, "bytes=0-0");
                let r = client.send(request).await?;
                let failed = !r.status().is_success();
                let bytes = r.bytes().await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                message = client::error_message(&v, &bytes);
                if failed {
                    break;
                }
            }
            anyhow::Ok(message)
        })
        .unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => format!(" (sent {})", client.auth().kind()),
        _ => String::new(),
    };
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message
    };
    // The registry's message usually names the reference already.
    let text = if message.contains(&image.text) || message.contains(&image.sif_path) {
        format!("{message}{hint}")
    } else {
        format!("{}: {message}{hint}", image.text)
    };
    FetchError::Refused(text).into()
}

fn get_json(client: &Client, path: &str) -> anyhow::Result<Value> {
    client.block_on(async {
        let r = client.send(client.request(Method::GET, path)?).await?;
        let bytes = r.bytes().await.map_err(|e| client.transport_error(&e))?;
        serde_json::from_slice(&bytes).context("the registry's answer is not JSON")
    })
}

/// `"sha256:…"` → `sha256:…`.
fn etag_digest(v: Option<&reqwest::header::HeaderValue>) -> Option<String> {
    let tag = v?
        .to_str()
        .ok()?
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    crate::node_cache::digest_hex(tag).ok()?;
    Some(tag.to_owned())
}

/// `Retry-After` in whole seconds (the registry's form), bounded to 1 s … [`MAX_POLL`].
fn retry_after(v: Option<&reqwest::header::HeaderValue>) -> Duration {
    v.and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).clamp(Duration::from_secs(1), MAX_POLL))
        .unwrap_or(DEFAULT_POLL)
}

/// Sleeps before the next try after a transient failure, or gives up after [`MAX_RETRIES`].
fn retry_pause(failures: &mut u32, why: &str, progress: &mut Progress) -> anyhow::Result<()> {
    *failures += 1;
    if *failures > MAX_RETRIES {
        bail!("giving up after {MAX_RETRIES} retries: {why}");
    }
    let pause = backoff(*failures);
    progress.note(&format!(
        "{why}; retrying in {:.1}s ({}/{MAX_RETRIES})",
        pause.as_secs_f64(),
        failures
    ));
    thread::sleep(pause);
    Ok(())
}

/// Exponential back-off from 0.5 s, at most 30 s, with "equal jitter" (half fixed, half random)
/// so that the nodes of a job that failed together do not retry together.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(Duration::from_secs(30));
    let random = getrandom::u64().unwrap_or(0) % (ceiling.as_millis() as u64 / 2 + 1);
    ceiling / 2 + Duration::from_millis(random)
}
