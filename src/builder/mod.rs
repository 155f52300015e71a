//! `hpc-registry builder`: a build host for a registry. It claims jobs over the builder
//! protocol (`/builder/v1`, see `http::builder_api`) with a builder credential, for its
//! platforms only; fetches the job's config and layers (each checked against its digest);
//! builds in the contained build process the server itself uses ([`crate::farm::sandbox`]:
//! the server's `[farm]` limits, this host's cgroup and thread count); heart-beats the lease
//! with its progress while it builds, and stops when the lease is gone; appends to the job's
//! log; then uploads the enroot image and the SIF as streams, the SIF under the digest the build
//! computed as it wrote the file (no second pass over it here; the server hashes what it
//! receives), or reports the failure, and loops (`--once`: exits after one job). The HTTP client
//! is the shared [`crate::client`].

mod protocol;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{Auth, Client, Timeouts};
use crate::farm::backend::Failure;
use crate::farm::build_child::{BuildSpec, LayerFile};
use crate::farm::progress::ProgressCell;
use crate::farm::remote::ClaimedJob;
use protocol::{Protocol, Upload};

/// What `hpc-registry builder` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: String,
    pub token_file: PathBuf,
    pub cacert: Option<PathBuf>,
    /// Narrows the credential's platforms (empty: all of them).
    pub platforms: Vec<String>,
    pub once: bool,
    /// Where the job's layers and the SIF are staged (a fresh directory per job, removed after).
    pub work_dir: PathBuf,
    /// Compression threads (unset: the server's `[farm] threads`).
    pub threads: Option<usize>,
    /// A delegated cgroup directory, v2 or v1 memory, for the builds' memory limit (unset:
    /// `RLIMIT_AS`).
    pub cgroup: Option<PathBuf>,
}

/// How a job ended, for `--once`'s exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Ready,
    Failed,
    Refused,
    LeaseLost,
}

/// Runs the builder until stopped (or, with `--once`, until one job ended).
pub fn run(options: Options) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&options.token_file)
        .with_context(|| format!("cannot read {}", options.token_file.display()))?;
    let token = token.trim();
    if !token.starts_with(crate::auth::builder::PREFIX) {
        bail!(
            "{} does not hold a builder credential (hpcb_…): create one with `hpc-registry builder-token create`",
            options.token_file.display()
        );
    }
    // Long enough for a claim's long-poll.
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(120),
    };
    let client = Client::new(
        &options.server,
        "--server",
        options.cacert.as_deref(),
        Auth::bearer(token),
        timeouts,
    )?;
    std::fs::create_dir_all(&options.work_dir)
        .with_context(|| format!("cannot create {}", options.work_dir.display()))?;
    let protocol = Protocol::new(client)?;
    // The client's own runtime: the builds run in child processes, so one thread serves.
    protocol.block_on(serve(&protocol, options))
}

async fn serve(protocol: &Protocol, options: Options) -> anyhow::Result<()> {
    let mut failures_in_a_row = 0u32;
    loop {
        let claimed = match protocol.claim(&options.platforms).await {
            Ok(c) => {
                failures_in_a_row = 0;
                c
            }
            Err(e) if e.permanent => return Err(e.error),
            Err(e) => {
                // The server restarting, a network blip: back off and claim again.
                failures_in_a_row += 1;
                let wait = Duration::from_secs(u64::from(failures_in_a_row.min(6)) * 5);
                eprintln!(
                    "builder: claiming failed ({:#}); retrying in {wait:?}",
                    e.error
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Some(job) = claimed else { continue };
        eprintln!(
            "builder: job {} attempt {}: {} for {}",
            job.job, job.attempt, job.image, job.platform
        );
        let end = build(protocol, &options, &job).await;
        eprintln!("builder: job {} ended: {end:?}", job.job);
        if options.once {
            return match end {
                JobEnd::Ready => Ok(()),
                other => bail!("job {} ended {other:?}", job.job),
            };
        }
    }
}

/// Builds one claimed job and reports how it ended.
async fn build(protocol: &Protocol, options: &Options, job: &ClaimedJob) -> JobEnd {
    let dir = match tempfile::Builder::new()
        .prefix("hpcr-build-")
        .tempdir_in(&options.work_dir)
    {
        Ok(d) => d,
        Err(e) => {
            let f = Failure::transient(format!("cannot create a build directory: {e}"), "");
            return report_failure(protocol, job, f).await;
        }
    };
    let progress = ProgressCell::default();
    // Returns only once the lease is gone (cancelled, or passed to another builder).
    let lease = protocol.keep_lease(job, &progress);
    tokio::pin!(lease);
    let work = async {
        let spec = stage(protocol, options, job, dir.path()).await?;
        let built = crate::farm::sandbox::run(&spec, &progress).await?;
        protocol.append_log(job.job, &built.log).await;
        Ok::<_, Failure>((spec.out, spec.enroot_out, built.digest))
    };
    // Dropping the build's future kills its process.
    let result = tokio::select! {
        r = work => r,
        () = &mut lease => return JobEnd::LeaseLost,
    };
    // From the built files to the server's answer: sending, and the server's verification and
    // import (it answers once the SIF is ready). The enroot image first: the SIF's upload is
    // what makes the job ready.
    let uploading = Instant::now();
    let uploads = async {
        let (sif, enroot, digest) = result?;
        if let Some(enroot) = enroot.filter(|p| p.exists()) {
            match protocol.upload_enroot(job.job, &enroot).await {
                Upload::Accepted(_) => {}
                other => return Ok(other),
            }
        }
        Ok::<_, Failure>(protocol.upload(job.job, &sif, &digest).await)
    };
    let uploaded = tokio::select! {
        u = uploads => match u {
            Ok(u) => u,
            Err(failure) => return report_failure(protocol, job, failure).await,
        },
        () = &mut lease => return JobEnd::LeaseLost,
    };
    match uploaded {
        Upload::Accepted(digest) => {
            eprintln!(
                "builder: job {}: SIF {digest} accepted (upload {:.2} s)",
                job.job,
                uploading.elapsed().as_secs_f64()
            );
            JobEnd::Ready
        }
        Upload::Refused(why) => {
            eprintln!(
                "builder: job {}: the server refused the upload: {why}",
                job.job
            );
            JobEnd::Refused
        }
        Upload::LeaseLost => JobEnd::LeaseLost,
        Upload::Failed(why) => report_failure(protocol, job, Failure::transient(why, "")).await,
    }
}

async fn report_failure(protocol: &Protocol, job: &ClaimedJob, failure: Failure) -> JobEnd {
    eprintln!("builder: job {} failed: {}", job.job, failure.reason);
    protocol.fail(job.job, &failure).await;
    JobEnd::Failed
}

/// Fetches the config and layers into `dir` and writes the build process's spec.
async fn stage(
    protocol: &Protocol,
    options: &Options,
    job: &ClaimedJob,
    dir: &std::path::Path,
) -> Result<BuildSpec, Failure> {
    let config = dir.join("config.json");
    protocol
        .fetch(
            job.job,
            &job.config.digest,
            &config,
            job.farm.max_config_bytes,
        )
        .await?;
    let mut layers = Vec::with_capacity(job.layers.len());
    for (i, layer) in job.layers.iter().enumerate() {
        let path = dir.join(format!("layer-{}", i + 1));
        protocol
            .fetch(job.job, &layer.digest, &path, layer.size)
            .await?;
        protocol
            .append_log(
                job.job,
                &format!(
                    "fetched layer {}/{}: {} ({} bytes)\n",
                    i + 1,
                    job.layers.len(),
                    layer.digest,
                    layer.size
                ),
            )
            .await;
        layers.push(LayerFile {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            path,
            size: layer.size,
        });
    }
    let mut farm = job.farm.clone();
    // This host's containment, the server's limits.
    farm.cgroup = options.cgroup.clone();
    if let Some(threads) = options.threads {
        farm.threads = threads;
    }
    Ok(BuildSpec {
        farm,
        config,
        layers,
        source_ref: job.image.clone(),
        work_dir: dir.to_path_buf(),
        out: dir.join("image.sif"),
        enroot_out: Some(dir.join("image.enroot.sqsh")),
        enroot_only: false,
    })
}
