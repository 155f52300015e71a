//! `hpc-registry admin backup DEST` and `admin restore SRC DATA_DIR` ([`crate::backup`]).
//!
//! Backup works on the data directory directly, beside a running server and without its lock:
//! it only reads (the metadata through SQLite's online backup API). Run it on the server host,
//! as the server's user or root.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::output::print_json;
use crate::backup;
use crate::config::Config;
use crate::quota::format_size;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup directory (created if missing; an earlier backup there is updated, copying
    /// only new blobs). It is a complete, consistent backup once the command exits 0.
    pub dest: PathBuf,
    /// The data directory [default: data_dir of --config, else ./registry-data].
    #[arg(long, env = "HPC_REGISTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's config file: saved too, with the TLS files it names.
    #[arg(long, env = "HPC_REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup directory made by `admin backup`.
    pub src: PathBuf,
    /// The new data directory: must not exist, or be empty.
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(c) => Config::from_file(c)?,
        None => Config::default(),
    };
    let data_dir = args.data_dir.clone().unwrap_or(config.data_dir.clone());
    let sources = backup::Sources {
        data_dir,
        config_file: args.config.clone(),
        config_files: config
            .tls
            .cert
            .iter()
            .chain(config.tls.key.iter())
            .cloned()
            .collect(),
    };
    let report = backup::take(&sources, &args.dest)
        .with_context(|| format!("backup into {} failed", args.dest.display()))?;
    if args.json {
        return print_json(&serde_json::to_value(&report)?);
    }
    let m = &report.manifest;
    let r = &m.last_run;
    println!(
        "backup of {} in {} (metadata at {}, schema {})",
        m.data_dir, report.dest, m.created, m.schema_version
    );
    println!(
        "blobs: {} ({}), {} new ({} linked, {} copied, {} copied), {} already present, {} removed",
        m.counts.blobs,
        format_size(m.counts.blob_bytes.max(0) as u64),
        r.blobs_new,
        r.blobs_linked,
        r.blobs_copied,
        format_size(r.bytes_copied),
        r.blobs_present,
        r.blobs_removed
    );
    println!(
        "store: {} repositories, {} manifests, {} tags, {} SIFs, {} users",
        m.counts.repositories, m.counts.manifests, m.counts.tags, m.counts.sifs, m.counts.users
    );
    println!(
        "audit: {} files, chain head seq {}",
        m.audit.len(),
        m.audit_head.seq
    );
    println!(
        "files: {} from the data directory, {} config files; done in {:.1} s",
        m.files.len(),
        m.config.len(),
        r.duration_ms as f64 / 1000.0
    );
    if r.blobs_missing > 0 {
        eprintln!(
            "warning: {} blobs the metadata records had no bytes in the store (run `admin scrub`)",
            r.blobs_missing
        );
    }
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let report = backup::restore(&args.src, &args.data_dir).with_context(|| {
        format!(
            "restore of {} into {} failed",
            args.src.display(),
            args.data_dir.display()
        )
    })?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = report.ok().into();
        print_json(&v)?;
    } else {
        let c = &report.counts;
        println!(
            "restored {} (backup of {}): {} repositories, {} manifests, {} tags, {} SIFs, {} users",
            report.data_dir,
            report.backup_created,
            c.repositories,
            c.manifests,
            c.tags,
            c.sifs,
            c.users
        );
        println!(
            "blobs: {} ({} linked, {} copied); checked: {} blobs of manifests, {} ready SIFs",
            report.blobs,
            report.blobs_linked,
            report.blobs_copied,
            report.manifest_blobs_checked,
            report.sifs_checked
        );
        println!(
            "audit: {} records in {} files, chain {}",
            report.audit.records,
            report.audit.files.len().max(1),
            if report.audit.ok() {
                "intact"
            } else {
                "BROKEN"
            }
        );
        for p in &report.audit.problems {
            println!("audit {}: {}", p.place(), p.message);
        }
        for p in &report.problems {
            println!("PROBLEM {p}");
        }
    }
    if !report.ok() {
        bail!(
            "the restored store in {} is incomplete ({} problem(s)); keep the backup and check it",
            args.data_dir.display(),
            report.problems.len() + report.audit.problems.len()
        );
    }
    Ok(())
}
