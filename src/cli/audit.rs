//! `hpc-registry admin audit [filters] [--json]` and `hpc-registry admin audit verify`: online
//! through the admin API (`--server`), or offline on the data directory. Offline needs no lock:
//! both only read, so they work beside a running server too. `verify --file F` checks a copy of
//! the file alone, with no database.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::output::table;
use super::target::Target;
use crate::audit::{self, chain::Report, query::Params, Record};
use crate::meta::Db;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only records of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only records of this repository.
    #[arg(long)]
    pub repo: Option<String>,
    /// Only this action (e.g. auth.failure), or a family (auth, manifest, token, build).
    #[arg(long)]
    pub action: Option<String>,
    /// From this time: RFC 3339 (2026-11-26T10:00:00Z), a date, or ago (30m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// The newest N matching records [default: 1000].
    #[arg(long)]
    pub limit: Option<String>,
    /// JSON lines (the records as stored) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain: exits non-zero naming each edited or missing record.
    Verify {
        /// Check this copy alone (no database, no server): an `audit.jsonl` (with the rotated
        /// files beside it), or one rotated file (`audit-<seq>.jsonl[.gz|.zst]`).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AuditCommand::Verify { file, json, target }) => verify(file, json, &target),
        None => query(&args),
    }
}

fn query(args: &AuditArgs) -> anyhow::Result<()> {
    let params = Params {
        user: args.user.clone(),
        repo: args.repo.clone(),
        action: args.action.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        limit: args.limit.clone(),
    };
    let records: Vec<Record> = if let Some(client) = args.target.remote.online()? {
        let q = params.to_query();
        let path = if q.is_empty() {
            "/admin/audit".to_owned()
        } else {
            format!("/admin/audit?{q}")
        };
        serde_json::from_value(client.get_json(&path)?)?
    } else {
        let filter = params
            .to_filter(audit::time::now_ms())
            .map_err(anyhow::Error::msg)?;
        let data_dir = args.target.data_dir()?;
        let db = open_db(&data_dir)?;
        audit::query::run(&data_dir.join(audit::FILE), &db, &filter)?
    };
    if args.json {
        for r in &records {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = records.iter().map(|r| {
        vec![
            r.time.clone(),
            dash(&r.user),
            dash(&r.auth),
            dash(&r.client),
            r.action.clone(),
            dash(&r.repository),
            dash(&r.reference),
            r.digest
                .as_deref()
                .map(|d| d.chars().take(19).collect())
                .unwrap_or_else(|| "-".into()),
            r.outcome.clone(),
            r.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            dash(&r.slurm_job_id),
        ]
    });
    table(
        &[
            "TIME",
            "USER",
            "AUTH",
            "CLIENT",
            "ACTION",
            "REPOSITORY",
            "REFERENCE",
            "DIGEST",
            "OUTCOME",
            "BYTES",
            "JOB",
        ],
        rows,
    );
    Ok(())
}

fn open_db(data_dir: &std::path::Path) -> anyhow::Result<std::sync::Arc<Db>> {
    let path = data_dir.join("meta.db");
    if !path.exists() {
        bail!(
            "{} has no metadata database: is --data-dir right?",
            data_dir.display()
        );
    }
    Db::open(&path).context("cannot open the metadata database")
}

fn verify(file: Option<PathBuf>, json: bool, target: &Target) -> anyhow::Result<()> {
    let (what, report): (String, Report) = match (file, &target.remote.server) {
        (Some(file), _) => {
            if !file.is_file() {
                bail!("{} is not a file", file.display());
            }
            let r = audit::log::verify_file(&file, None)?;
            (file.display().to_string(), r)
        }
        (None, Some(server)) => {
            let v = target.remote.require()?.get_json("/admin/audit/verify")?;
            (
                format!("the audit log of {server}"),
                serde_json::from_value(v)?,
            )
        }
        (None, None) => {
            let data_dir = target.data_dir()?;
            let file = data_dir.join(audit::FILE);
            let db = open_db(&data_dir)?;
            let r = audit::log::verify_file(&file, Some(&db))?;
            (file.display().to_string(), r)
        }
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = report.ok().into();
        println!("{v:#}");
    } else {
        for p in &report.problems {
            println!("{}: {}", p.place(), p.message);
        }
        if let Some(seq) = report.starts_at_seq {
            println!(
                "note: the chain starts at seq {seq}: the files before it were archived (verify them with --file)"
            );
        }
        if report.incomplete_tail {
            println!(
                "note: the last line is incomplete (a write in progress or an interrupted one)"
            );
        }
    }
    if !report.ok() {
        let first = &report.problems[0];
        bail!(
            "{what}: the hash chain is broken ({} problem(s)); first at {}: {}",
            report.problems.len(),
            first.place(),
            first.message
        );
    }
    eprintln!(
        "{what}: {} records, chain intact (last seq {})",
        report.records, report.last_seq
    );
    Ok(())
}
