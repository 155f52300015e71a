//! `hpc-registry admin prune|gc|repo delete`: retention, garbage collection and repository
//! deletes (src/lifecycle), through `--server`'s admin API (a prune or GC is a background job
//! there, waited for unless `--detach`ed: [`super::jobs`]) or offline on the data directory
//! (refused, naming the server, while a server holds it).

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::output::table;
use super::target::{Offline, Target};
use crate::lifecycle::gc::Options;
use crate::lifecycle::Pruner;
use crate::registry::Registry;

/// `admin prune` and `admin gc`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// List exactly what would go, and why, without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete at most N blobs per second (0: as fast as the store goes), to spare a parallel
    /// filesystem's metadata server during a large sweep.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub delete_rate: u64,
    /// Start the job on the server and return at once (follow it with `admin jobs ID`).
    #[arg(long)]
    pub detach: bool,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Delete a repository: tags, manifests (and their SIF artifacts), blob links. The bytes go
    /// at the first prune after the grace period.
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// `admin prune` (`retention`) or `admin gc`: online a job the command waits for (or, with
/// `--detach`, leaves running), offline a run in this process.
pub fn sweep(retention: bool, args: SweepArgs) -> anyhow::Result<()> {
    let kind = if retention { "prune" } else { "gc" };
    let options = Options {
        retention,
        dry_run: args.dry_run,
        delete_rate: args.delete_rate,
    };
    if let Some(api) = args.target.remote.online()? {
        let body = json!({"kind": kind, "dry_run": args.dry_run, "delete_rate": args.delete_rate});
        return match super::jobs::start(&api, body, args.detach, args.json)? {
            Some(report) => print_prune_report(&report, args.json),
            None => Ok(()),
        };
    }
    if args.detach {
        bail!("--detach needs --server: without a server the {kind} runs in this command");
    }
    let report = offline(
        &args.target,
        (
            &format!("admin.{kind}"),
            Some(format!("dry_run={}", args.dry_run)),
        ),
        move |pruner, registry| async move {
            Ok(serde_json::to_value(pruner.run(&registry, options).await?)?)
        },
    )?;
    print_prune_report(&report, args.json)
}

/// `admin repo delete NAME`.
pub fn repo(command: RepoCommand, target: &Target) -> anyhow::Result<()> {
    let RepoCommand::Delete { name, json } = command;
    crate::registry::names::RepositoryName::parse(&name)?;
    let deleted = match target.remote.online()? {
        Some(api) => api.json(
            Method::DELETE,
            &format!("/admin/repositories/{name}"),
            None,
            "repo delete",
        )?,
        None => offline(
            target,
            ("repository.delete", Some(name.clone())),
            move |pruner, registry| async move {
                Ok(serde_json::to_value(
                    pruner.delete_repository(&registry, &name).await?,
                )?)
            },
        )?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&deleted)?);
    } else {
        eprintln!(
            "deleted repository {} ({} manifests); its bytes go at the first prune after the grace period",
            deleted["repository"].as_str().unwrap_or_default(),
            deleted["manifests"]
        );
    }
    Ok(())
}

/// Runs `f` on the data directory under its lock (no server may run meanwhile), recording
/// `audit` (action, reference) in the audit trail as the OS user, like every offline change.
fn offline<F, Fut>(target: &Target, audit: (&str, Option<String>), f: F) -> anyhow::Result<Value>
where
    F: FnOnce(Arc<Pruner>, Arc<Registry>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let (action, reference) = audit;
    let config = target.config()?;
    let data = Offline::open(target)?;
    let data_dir = target.data_dir.clone().unwrap_or(config.data_dir.clone());
    let store = crate::storage::BlobStore::open(&data_dir)
        .with_context(|| format!("cannot open blob store in {}", data_dir.display()))?;
    let settings = crate::lifecycle::Settings::from_config(&config.gc, &config.retention)?;
    let pruner = Arc::new(Pruner::new(settings));
    let registry = Arc::new(Registry::new(
        Arc::clone(&data.db),
        store,
        crate::registry::Limits::default(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(f(pruner, registry));
    let record = match &result {
        Ok(_) => crate::audit::ops::local_action(action, reference, "ok", None),
        Err(e) => crate::audit::ops::local_action(action, reference, "error", Some(e.to_string())),
    };
    data.record(record, action)?;
    result
}

fn print_prune_report(report: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let empty = Vec::new();
    let actions = report["actions"].as_array().unwrap_or(&empty);
    table(
        &["KIND", "REPOSITORY", "REFERENCE", "BYTES", "REASON"],
        actions.iter().map(|a| {
            vec![
                a["kind"].as_str().unwrap_or_default().to_owned(),
                a["repository"].as_str().unwrap_or("-").to_owned(),
                a["reference"].as_str().unwrap_or_default().to_owned(),
                a["bytes"].to_string(),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        }),
    );
    let verb = if report["dry_run"].as_bool() == Some(true) {
        "would free"
    } else {
        "freed"
    };
    eprintln!(
        "{} tags, {} manifests, {} SIFs, {} blobs, {} uploads; {verb} {} bytes ({} on disk) in {} ms",
        report["tags"],
        report["manifests"],
        report["sifs"],
        report["blobs"],
        report["uploads"],
        report["bytes_freed"],
        report["disk_bytes_freed"],
        report["duration_ms"]
    );
    Ok(())
}
