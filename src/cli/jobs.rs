//! `hpc-registry admin jobs [ID]` and `admin jobs cancel ID`: the server's background admin jobs
//! (scrub, gc, prune). `admin scrub|gc|prune` start one here ([`start`]) and, unless
//! `--detach`ed, wait for it, polling its progress instead of holding one HTTP request open for
//! as long as the job takes.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::output::{print_json, table};
use super::remote::{AdminApi, ServerTarget};
use crate::quota::format_size;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// One job, with its progress and report.
    pub id: Option<i64>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: ServerTarget,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Stop a running job at its next step (a scrub keeps what it found so far, a GC what it
    /// freed: it stops between two batches, with the store consistent).
    Cancel {
        id: i64,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(JobsCommand::Cancel { id, target }) => {
            let v =
                target
                    .require()?
                    .call(Method::POST, &format!("/admin/jobs/{id}/cancel"), None)?;
            println!(
                "job {id}: {}",
                if v["state"] == "running" {
                    "cancel requested; it stops at its next step"
                } else {
                    "not running"
                }
            );
            Ok(())
        }
        None => {
            let api = args.target.require()?;
            let v = match args.id {
                Some(id) => api.get_json(&format!("/admin/jobs/{id}"))?,
                None => api.get_json("/admin/jobs")?,
            };
            if args.json {
                return print_json(&v);
            }
            let jobs = match args.id {
                Some(_) => vec![v.clone()],
                None => v["jobs"].as_array().cloned().unwrap_or_default(),
            };
            table(
                &[
                    "ID", "KIND", "STATE", "PROGRESS", "BY", "STARTED", "FINISHED",
                ],
                jobs.iter().map(|j| {
                    let time = |k: &str| {
                        j[k].as_i64()
                            .map(crate::timefmt::rfc3339)
                            .unwrap_or_else(|| "-".into())
                    };
                    vec![
                        j["id"].to_string(),
                        j["kind"].as_str().unwrap_or_default().to_owned(),
                        j["state"].as_str().unwrap_or_default().to_owned(),
                        progress(&j["progress"]),
                        j["created_by"].as_str().unwrap_or_default().to_owned(),
                        time("created_at"),
                        time("finished_at"),
                    ]
                }),
            );
            if let (Some(_), Some(e)) = (args.id, v["error"].as_str()) {
                println!("error: {e}");
            }
            Ok(())
        }
    }
}

/// A job's progress on one line: a scrub's "1200/5000 blobs, 3.1 GiB/20 GiB (15%)"; a GC's or
/// prune's "blobs: examined 12 repositories, 40 manifests, 3 images, 900 blobs; deleted 2 tags,
/// 5 manifests, 0 SIFs, 800 blobs, 0 uploads; 3.1 GiB freed".
fn progress(p: &Value) -> String {
    if p.is_null() {
        return "-".into();
    }
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    if let Some(phase) = p["phase"].as_str() {
        let e = &p["examined"];
        return format!(
            "{phase}: examined {} repositories, {} manifests, {} images, {} blobs; deleted {} \
             tags, {} manifests, {} SIFs, {} blobs, {} uploads; {} freed",
            n(e, "repositories"),
            n(e, "manifests"),
            n(e, "images"),
            n(e, "blobs"),
            n(p, "tags"),
            n(p, "manifests"),
            n(p, "sifs"),
            n(p, "blobs"),
            n(p, "uploads"),
            format_size(n(p, "bytes_freed")),
        );
    }
    let percent = match n(p, "total_bytes") {
        0 => String::new(),
        t => format!(" ({:.0}%)", n(p, "scanned_bytes") as f64 * 100.0 / t as f64),
    };
    format!(
        "{}/{} blobs, {}/{}{percent}",
        n(p, "scanned_blobs"),
        n(p, "total_blobs"),
        format_size(n(p, "scanned_bytes")),
        format_size(n(p, "total_bytes"))
    )
}

/// Starts the job `body` asks for (`{"kind": …, params}`). With `detach`, says which job it is
/// (its JSON with `json`) and returns `None`; else waits for its end and returns its report (the
/// JSON the synchronous request answered).
pub fn start(
    api: &AdminApi,
    body: Value,
    detach: bool,
    json: bool,
) -> anyhow::Result<Option<Value>> {
    let kind = body["kind"].as_str().unwrap_or("job").to_owned();
    let job = api
        .call(Method::POST, "/admin/jobs", Some(body))
        .with_context(|| format!("{kind} failed"))?;
    let Some(id) = job["id"].as_i64() else {
        bail!("the server answered no job id: {job}");
    };
    if detach {
        if json {
            print_json(&job)?;
        } else {
            println!(
                "started {kind} job {id}; follow it with `hpc-registry admin jobs {id}`, stop it \
                 with `hpc-registry admin jobs cancel {id}`"
            );
        }
        return Ok(None);
    }
    loop {
        // A long poll: the server answers as soon as the job ends.
        let j = api.get_json(&format!("/admin/jobs/{id}?wait=30"))?;
        match j["state"].as_str() {
            Some("running") => {}
            Some("done") => return Ok(Some(j["result"].clone())),
            state => bail!(
                "{kind} job {id} {}: {}",
                state.unwrap_or("ended"),
                j["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }
}
