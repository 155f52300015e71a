//! `hpc-registry admin prune|repo delete`: garbage collection, retention and repository deletes
//! (src/lifecycle), through `--server`'s admin API or offline on the data directory (refused,
//! naming the server, while a server holds it).

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::output::table;
use super::target::{Offline, Target};
use crate::lifecycle::Pruner;
use crate::registry::Registry;

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

/// `admin prune [--dry-run]`.
pub fn prune(dry_run: bool, json: bool, target: &Target) -> anyhow::Result<()> {
    let report = online_or_offline(
        target,
        (
            Method::POST,
            format!("/admin/prune?dry_run={dry_run}"),
            "prune",
        ),
        ("admin.prune", Some(format!("dry_run={dry_run}"))),
        move |pruner, registry| async move {
            Ok(serde_json::to_value(pruner.run(&registry, dry_run).await?)?)
        },
    )?;
    print_prune_report(&report, json)
}

/// `admin repo delete NAME`.
pub fn repo(command: RepoCommand, target: &Target) -> anyhow::Result<()> {
    let RepoCommand::Delete { name, json } = command;
    crate::registry::names::RepositoryName::parse(&name)?;
    let deleted = online_or_offline(
        target,
        (
            Method::DELETE,
            format!("/admin/repositories/{name}"),
            "repo delete",
        ),
        ("repository.delete", Some(name.clone())),
        move |pruner, registry| async move {
            Ok(serde_json::to_value(
                pruner.delete_repository(&registry, &name).await?,
            )?)
        },
    )?;
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

/// Runs a command through `--server`'s admin API (`method path`, named `what` in errors), or,
/// without a server, `f` on the data directory under its lock (no server may run meanwhile),
/// recording `audit` (action, reference) in the audit trail as the OS user, like every offline
/// change.
fn online_or_offline<F, Fut>(
    target: &Target,
    (method, path, what): (Method, String, &str),
    audit: (&str, Option<String>),
    f: F,
) -> anyhow::Result<Value>
where
    F: FnOnce(Arc<Pruner>, Arc<Registry>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    if let Some(api) = target.remote.online()? {
        return api.json(method, &path, None, what);
    }
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
