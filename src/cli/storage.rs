//! `hpc-registry admin usage|quota|scrub`: storage accounting and integrity of a running server
//! (a scrub is a background job: [`super::jobs`]),
//! through its admin API (`--server`, credentials from HPC_REGISTRY_TOKEN, or HPC_REGISTRY_USER
//! and HPC_REGISTRY_PASSWORD). These act on live state the server owns, so there is no offline
//! mode.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::output::{print_json, table};
use super::remote::{AdminApi, ServerTarget};
use crate::quota::{format_size, parse_size};

/// Storage operations of `hpc-registry admin`.
#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Bytes used per namespace (blobs, SIFs, manifests), with the quota of each.
    Usage {
        /// One namespace (a user or group name) [default: every namespace you may see].
        namespace: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Show or change a namespace's quota (takes effect at once).
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Re-hash every blob and SIF; quarantine corrupt ones and rebuild corrupt SIFs.
    Scrub {
        /// Read rate limit per second, e.g. 200MiB [default: the server's `[scrub] rate`].
        #[arg(long, value_parser = parse_rate)]
        rate: Option<String>,
        /// Start the job and return at once (follow it with `admin jobs ID`).
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: ServerTarget,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set the quota of NAMESPACE: a size such as 50GiB, 500GB, 1.5T, or "unlimited".
    Set { namespace: String, limit: String },
    /// Show the quota of NAMESPACE, where it comes from, and the usage.
    Get {
        namespace: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove NAMESPACE's override: the configured default applies again.
    Clear { namespace: String },
    /// List the overrides and the configured defaults.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse_rate(s: &str) -> Result<String, String> {
    parse_size(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Runs one storage command.
pub fn run(command: StorageCommand) -> anyhow::Result<()> {
    match command {
        StorageCommand::Usage {
            namespace,
            json,
            target,
        } => {
            let path = match &namespace {
                Some(ns) => format!("/admin/usage?namespace={}", crate::urlcode::encode(ns)),
                None => "/admin/usage".to_owned(),
            };
            let v = target.require()?.call(Method::GET, &path, None)?;
            if json {
                return print_json(&v);
            }
            let rows = v["namespaces"].as_array().cloned().unwrap_or_default();
            table(
                &[
                    "NAMESPACE",
                    "REPOS",
                    "BLOBS",
                    "SIFS",
                    "MANIFESTS",
                    "TOTAL",
                    "QUOTA",
                    "USED",
                ],
                rows.iter().map(|r| {
                    vec![
                        r["namespace"].as_str().unwrap_or_default().to_owned(),
                        r["repositories"].as_i64().unwrap_or(0).to_string(),
                        bytes(&r["blob_bytes"]),
                        bytes(&r["sif_bytes"]),
                        bytes(&r["manifest_bytes"]),
                        bytes(&r["total_bytes"]),
                        limit(&r["quota_bytes"]),
                        percent(&r["total_bytes"], &r["quota_bytes"]),
                    ]
                }),
            );
            Ok(())
        }
        StorageCommand::Quota { command, target } => quota(&target.require()?, command),
        StorageCommand::Scrub {
            rate,
            detach,
            json,
            target,
        } => {
            // A background job on the server, polled until it ends (`admin jobs` shows it).
            let mut body = json!({"kind": "scrub"});
            if let Some(r) = rate {
                body["rate"] = r.into();
            }
            let Some(v) = super::jobs::start(&target.require()?, body, detach, json)? else {
                return Ok(());
            };
            if json {
                return print_json(&v);
            }
            print_scrub(&v);
            Ok(())
        }
    }
}

fn quota(client: &AdminApi, command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Set { namespace, limit } => {
            if !limit.eq_ignore_ascii_case("unlimited") {
                parse_size(&limit)?;
            }
            let v = client.call(
                Method::PUT,
                &format!("/admin/quotas/{}", crate::urlcode::encode(&namespace)),
                Some(json!({ "limit": limit })),
            )?;
            println!("quota of {namespace}: {}", describe_quota(&v));
            Ok(())
        }
        QuotaCommand::Get { namespace, json } => {
            let v = client.call(
                Method::GET,
                &format!("/admin/quotas/{}", crate::urlcode::encode(&namespace)),
                None,
            )?;
            if json {
                return print_json(&v);
            }
            println!("quota of {namespace}: {}", describe_quota(&v));
            Ok(())
        }
        QuotaCommand::Clear { namespace } => {
            let v = client.call(
                Method::DELETE,
                &format!("/admin/quotas/{}", crate::urlcode::encode(&namespace)),
                None,
            )?;
            let what = if v["cleared"].as_bool() == Some(true) {
                "override removed"
            } else {
                "had no override"
            };
            println!("{namespace}: {what}; quota now {}", describe_quota(&v));
            Ok(())
        }
        QuotaCommand::List { json } => {
            let v = client.call(Method::GET, "/admin/quotas", None)?;
            if json {
                return print_json(&v);
            }
            println!(
                "defaults: user {}, group {}",
                limit(&v["default_user_bytes"]),
                limit(&v["default_group_bytes"])
            );
            let rows = v["overrides"].as_array().cloned().unwrap_or_default();
            table(
                &["NAMESPACE", "QUOTA", "SET BY", "SET AT"],
                rows.iter().map(|r| {
                    vec![
                        r["namespace"].as_str().unwrap_or_default().to_owned(),
                        limit(&r["limit_bytes"]),
                        r["updated_by"].as_str().unwrap_or_default().to_owned(),
                        crate::auth::rfc3339(r["updated_at"].as_i64().unwrap_or(0)),
                    ]
                }),
            );
            Ok(())
        }
    }
}

/// "50 GiB (override), 1.2 GiB used (2.4%)"
fn describe_quota(v: &Value) -> String {
    let source = v["quota_source"].as_str().unwrap_or("none");
    format!(
        "{} ({source}), {} used{}",
        limit(&v["quota_bytes"]),
        bytes(&v["total_bytes"]),
        match percent(&v["total_bytes"], &v["quota_bytes"]).as_str() {
            "-" => String::new(),
            p => format!(" ({p})"),
        }
    )
}

fn print_scrub(v: &Value) {
    println!(
        "scrubbed {} blobs, {} in {:.1} s (rate limit {}/s)",
        v["scanned_blobs"].as_u64().unwrap_or(0),
        bytes(&v["scanned_bytes"]),
        v["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        bytes(&v["rate_bytes_per_sec"]),
    );
    let corrupted = v["corrupted"].as_array().cloned().unwrap_or_default();
    if corrupted.is_empty() {
        println!("no corrupted blobs");
    }
    for c in &corrupted {
        let repos: Vec<&str> = c["repositories"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "CORRUPT {} {} (hashes to {}), in {}; quarantined to {}{}",
            c["kind"].as_str().unwrap_or("blob"),
            c["digest"].as_str().unwrap_or_default(),
            c["actual_digest"].as_str().unwrap_or_default(),
            if repos.is_empty() {
                "no repository".to_owned()
            } else {
                repos.join(", ")
            },
            c["quarantined_to"].as_str().unwrap_or_default(),
            match c["rebuild"].as_str() {
                Some(m) => format!("; rebuild queued for {m}"),
                None => "; push it again to heal it".to_owned(),
            }
        );
    }
    for (key, what) in [
        ("missing", "MISSING (recorded, file gone)"),
        ("unreadable", "UNREADABLE"),
    ] {
        for d in v[key].as_array().cloned().unwrap_or_default() {
            println!("{what} {}", d.as_str().unwrap_or_default());
        }
    }
    let drift = v["usage_drift"].as_array().cloned().unwrap_or_default();
    if drift.is_empty() {
        println!("usage counters match the recount");
    }
    for d in &drift {
        println!(
            "USAGE DRIFT {}: counted {}, recounted {} (counters repaired)",
            d["namespace"].as_str().unwrap_or_default(),
            d["counted_bytes"].as_i64().unwrap_or(0),
            d["actual_bytes"].as_i64().unwrap_or(0),
        );
    }
}

fn bytes(v: &Value) -> String {
    format_size(v.as_u64().unwrap_or(0))
}

fn limit(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => format_size(n),
        None => "unlimited".to_owned(),
    }
}

fn percent(used: &Value, quota: &Value) -> String {
    match (used.as_u64(), quota.as_u64()) {
        (Some(u), Some(q)) if q > 0 => format!("{:.1}%", u as f64 * 100.0 / q as f64),
        _ => "-".to_owned(),
    }
}
