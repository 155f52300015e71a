//! `hpc-registry admin jobs [ID]` and `admin jobs cancel ID`: the server's background admin jobs
//! (scrub). `admin scrub` starts one and waits for it here ([`scrub_and_wait`]), polling its
//! progress instead of holding one HTTP request open for as long as the scrub takes.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

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
    /// Stop a running job at its next step (a scrub keeps what it found so far).
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

/// "1200/5000 blobs, 3.1 GiB/20 GiB (15%)".
fn progress(p: &Value) -> String {
    if p.is_null() {
        return "-".into();
    }
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let percent = match n("total_bytes") {
        0 => String::new(),
        t => format!(" ({:.0}%)", n("scanned_bytes") as f64 * 100.0 / t as f64),
    };
    format!(
        "{}/{} blobs, {}/{}{percent}",
        n("scanned_blobs"),
        n("total_blobs"),
        format_size(n("scanned_bytes")),
        format_size(n("total_bytes"))
    )
}

/// Starts a scrub job and waits for it; its report (the JSON the synchronous scrub answered).
pub fn scrub_and_wait(api: &AdminApi, rate: Option<&str>) -> anyhow::Result<Value> {
    let mut body = json!({"kind": "scrub"});
    if let Some(r) = rate {
        body["rate"] = r.into();
    }
    let job = api
        .call(Method::POST, "/admin/jobs", Some(body))
        .context("scrub failed")?;
    let Some(id) = job["id"].as_i64() else {
        bail!("the server answered no job id: {job}");
    };
    loop {
        // A long poll: the server answers as soon as the job ends.
        let j = api.get_json(&format!("/admin/jobs/{id}?wait=30"))?;
        match j["state"].as_str() {
            Some("running") => {}
            Some("done") => return Ok(j["result"].clone()),
            state => bail!(
                "scrub job {id} {}: {}",
                state.unwrap_or("ended"),
                j["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }
}
