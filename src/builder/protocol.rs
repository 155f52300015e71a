//! The builder protocol's client side: one method per `/builder/v1` call.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::client::{error_message, Client};
use crate::farm::backend::Failure;
use crate::farm::progress::ProgressCell;
use crate::farm::remote::{ClaimRequest, ClaimedJob, FailureReport, MAX_LOG_APPEND};
use crate::names::{Digest, Hasher};

/// Longest pause between heartbeats (a third of the lease at most).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A claim that failed: `permanent` when retrying cannot help (the credential is refused).
pub struct ClaimError {
    pub error: anyhow::Error,
    pub permanent: bool,
}

pub enum Upload {
    Accepted(String),
    /// The server verified the SIF and refused it (the attempt failed).
    Refused(String),
    LeaseLost,
    Failed(String),
}

pub struct Protocol {
    client: Client,
    /// This process, in every job route (the lease owner is builder name + instance).
    instance: String,
}

impl Protocol {
    pub fn new(client: Client) -> anyhow::Result<Protocol> {
        let mut id = [0u8; 8];
        crate::auth::random_bytes(&mut id)?;
        Ok(Protocol {
            client,
            instance: hex::encode(id),
        })
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.client.block_on(future)
    }

    fn job_path(&self, job: i64, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!(
            "/builder/v1/jobs/{job}/{rest}{sep}instance={}",
            self.instance
        )
    }

    async fn message(response: reqwest::Response) -> String {
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        format!("{status}: {}", error_message(&value, &bytes))
    }

    /// One claim (the server long-polls): a job, or none yet.
    pub async fn claim(&self, platforms: &[String]) -> Result<Option<ClaimedJob>, ClaimError> {
        let transient = |error: anyhow::Error| ClaimError {
            error,
            permanent: false,
        };
        let body = ClaimRequest {
            instance: self.instance.clone(),
            platforms: platforms.to_vec(),
        };
        let request = self
            .client
            .request(Method::POST, "/builder/v1/claim")
            .map_err(transient)?
            .json(&body);
        let response = self.client.send(request).await.map_err(transient)?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => response
                .json::<ClaimedJob>()
                .await
                .map(Some)
                .map_err(|e| transient(anyhow!("the claimed job does not parse: {e}"))),
            status => {
                let permanent = matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
                );
                let message = Self::message(response).await;
                Err(ClaimError {
                    error: anyhow!("claim refused: {message}"),
                    permanent,
                })
            }
        }
    }

    /// Downloads blob `digest` of `job` to `path`, hashing it; at most `max` bytes.
    pub async fn fetch(
        &self,
        job: i64,
        digest: &str,
        path: &Path,
        max: u64,
    ) -> Result<(), Failure> {
        let fail = |why: String| Failure::transient(format!("cannot fetch {digest}: {why}"), "");
        let expected = Digest::parse(digest).map_err(|e| fail(e.to_string()))?;
        let request = self
            .client
            .request(Method::GET, &self.job_path(job, &format!("blobs/{digest}")))
            .map_err(|e| fail(format!("{e:#}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| fail(format!("{e:#}")))?;
        if !response.status().is_success() {
            return Err(fail(Self::message(response).await));
        }
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut hasher = Hasher::new(expected.algorithm());
        let mut size = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(fail(format!("it is larger than the {max} bytes announced")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        file.flush().await.map_err(|e| fail(e.to_string()))?;
        let got = hasher.finish();
        if got != expected {
            return Err(fail(format!("the bytes received hash to {got}")));
        }
        Ok(())
    }

    /// Appends to the job's log (best effort: a lost log line must not fail a build).
    pub async fn append_log(&self, job: i64, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_LOG_APPEND);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (chunk, more) = rest.split_at(cut);
            rest = more;
            let Ok(request) = self
                .client
                .request(Method::POST, &self.job_path(job, "log"))
            else {
                return;
            };
            let _ = self.client.send(request.body(chunk.to_owned())).await;
        }
    }

    /// Heart-beats `job` with `progress` until the lease is gone; returns then (never while
    /// the job is this builder's). A failed heartbeat is retried: the lease outlasts a few.
    pub async fn keep_lease(&self, job: &ClaimedJob, progress: &ProgressCell) {
        let every = Duration::from_secs((job.lease_secs / 3).max(1) as u64).min(HEARTBEAT_EVERY);
        loop {
            tokio::time::sleep(every).await;
            let body = progress.get().map(|p| p.to_json()).unwrap_or_default();
            let Ok(request) = self
                .client
                .request(Method::POST, &self.job_path(job.job, "heartbeat"))
            else {
                continue;
            };
            match self.client.send(request.body(body)).await {
                Ok(r) if r.status() == StatusCode::CONFLICT => {
                    eprintln!("builder: job {}: the lease is gone; stopping", job.job);
                    return;
                }
                Ok(_) => {}
                Err(e) => eprintln!("builder: job {}: heartbeat failed: {e:#}", job.job),
            }
        }
    }

    /// Streams the SIF at `path` to the server under `digest` (the build's, computed as it
    /// wrote the file; the server checks it against the bytes as they arrive).
    pub async fn upload(&self, job: i64, path: &Path, digest: &Digest) -> Upload {
        self.put_file(job, path, digest, "sif", "SIF").await
    }

    /// Hashes the enroot image at `path` and streams it to the server (before the SIF).
    pub async fn upload_enroot(&self, job: i64, path: &Path) -> Upload {
        let digest = match hash_file(path).await {
            Ok(d) => d,
            Err(e) => return Upload::Failed(format!("cannot read the built enroot image: {e}")),
        };
        self.put_file(job, path, &digest, "enroot", "enroot image")
            .await
    }

    /// Streams the file at `path` to the job's `route` under `digest`; `what` names it.
    async fn put_file(
        &self,
        job: i64,
        path: &Path,
        digest: &Digest,
        route: &str,
        what: &str,
    ) -> Upload {
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => return Upload::Failed(format!("cannot read the built {what}: {e}")),
        };
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        let target = self.job_path(job, &format!("{route}?digest={digest}"));
        let request = match self.client.request(Method::PUT, &target) {
            Ok(r) => r
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream)),
            Err(e) => return Upload::Failed(format!("{e:#}")),
        };
        match self.client.send(request).await {
            Ok(r) if r.status() == StatusCode::CREATED => Upload::Accepted(digest.to_string()),
            Ok(r) if r.status() == StatusCode::CONFLICT => Upload::LeaseLost,
            Ok(r) if r.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                Upload::Refused(Self::message(r).await)
            }
            Ok(r) => Upload::Failed(format!(
                "the {what} upload was answered {}",
                Self::message(r).await
            )),
            Err(e) => Upload::Failed(format!("the {what} upload failed: {e:#}")),
        }
    }

    /// Reports a failed build (best effort: without it, the lease runs out instead).
    pub async fn fail(&self, job: i64, failure: &Failure) {
        let report = FailureReport {
            reason: failure.reason.clone(),
            log: failure.log.clone(),
            permanent: failure.permanent,
        };
        if let Ok(request) = self
            .client
            .request(Method::POST, &self.job_path(job, "fail"))
        {
            if let Err(e) = self.client.send(request.json(&report)).await {
                eprintln!("builder: job {job}: cannot report the failure: {e:#}");
            }
        }
    }
}

/// The sha256 of the file at `path` (the enroot image's upload digest; the SIF's comes from the
/// build, which hashed it as it wrote it).
async fn hash_file(path: &Path) -> std::io::Result<Digest> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Hasher::new(crate::names::Algorithm::Sha256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}
