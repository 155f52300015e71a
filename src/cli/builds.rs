//! `hpc-registry admin builds`: the SIF build queue of a running server, through its admin API
//! (`/admin/builds`): list jobs (`--state`), `retry ID|--failed`, `cancel ID`.

use anyhow::bail;
use axum::http::Method;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::remote::ServerTarget;

/// `admin builds [--state S] [retry ID|--failed | cancel ID]`.
#[derive(Args, Debug)]
pub struct BuildsArgs {
    #[command(subcommand)]
    pub action: Option<BuildsAction>,
    /// Only jobs in this state: queued, building, ready or failed.
    #[arg(long)]
    pub state: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub target: ServerTarget,
}

#[derive(Subcommand, Debug)]
pub enum BuildsAction {
    /// Put a failed job back in the queue (`--failed`: every failed job).
    Retry {
        /// The job's id (from `admin builds`).
        id: Option<i64>,
        #[arg(long, conflicts_with = "id")]
        failed: bool,
    },
    /// Stop a queued or building job; it is marked failed, naming you.
    Cancel { id: i64 },
}

pub fn run(args: BuildsArgs) -> anyhow::Result<()> {
    let client = args.target.require()?;
    let (method, path) = match &args.action {
        None => match &args.state {
            Some(s) => (
                Method::GET,
                format!("/admin/builds?state={}", crate::urlcode::encode(s)),
            ),
            None => (Method::GET, "/admin/builds".to_owned()),
        },
        Some(BuildsAction::Retry { id: Some(id), .. }) => {
            (Method::POST, format!("/admin/builds/{id}/retry"))
        }
        Some(BuildsAction::Retry { failed: true, .. }) => {
            (Method::POST, "/admin/builds/retry-failed".to_owned())
        }
        Some(BuildsAction::Retry { .. }) => bail!("admin builds retry takes a job id or --failed"),
        Some(BuildsAction::Cancel { id }) => (Method::POST, format!("/admin/builds/{id}/cancel")),
    };
    let what = method.to_string();
    let v = client.json(method, &path, None, &what)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match (&args.action, v.get("jobs").and_then(Value::as_array)) {
        (None, Some(jobs)) => print_jobs(jobs),
        _ if v.get("retried").is_some() => println!("{} failed jobs retried", v["retried"]),
        _ => print_jobs(std::slice::from_ref(&v)),
    }
    Ok(())
}

fn print_jobs(jobs: &[Value]) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let secs = |v: &Value| v.as_i64().map_or("-".to_owned(), |s| format!("{s}s"));
    super::output::table(
        &[
            "ID",
            "STATE",
            "ATTEMPTS",
            "REPOSITORY",
            "PLATFORM",
            "BUILDER",
            "WAITED",
            "BUILD",
            "IMAGE",
            "REASON",
        ],
        jobs.iter().map(|j| {
            vec![
                j["id"].to_string(),
                text(&j["state"]),
                j["attempts"].to_string(),
                text(&j["repository"]),
                text(&j["platform"]),
                text(&j["builder"]),
                secs(&j["waited_secs"]),
                secs(&j["build_secs"]),
                text(&j["image"]),
                text(&j["failure"]),
            ]
        }),
    );
}
