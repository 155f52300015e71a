//! Where a command acts: a running server's admin API (`--server`), or the data directory itself
//! while no server runs (offline, under the data-directory lock, every change audited as the OS
//! user who made it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::Value;

use super::remote::{AdminApi, ServerTarget};
use crate::audit::AuditLog;
use crate::auth::manage::{self, Caller, Op};
use crate::config::Config;
use crate::lock::{DataLock, LockError};
use crate::meta::Db;

/// Where the commands act.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub remote: ServerTarget,
    /// Without --server: the data directory to change (the server must be stopped)
    /// [default: data_dir of --config, else ./registry-data].
    #[arg(long, env = "HPC_REGISTRY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (for its data_dir).
    #[arg(long, env = "HPC_REGISTRY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl Target {
    /// The config file's settings, or the defaults without one.
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(match &self.config {
            Some(c) => Config::from_file(c)?,
            None => Config::default(),
        })
    }

    /// The data directory offline commands work on: --data-dir, else the config's, else the
    /// default.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.data_dir {
            Some(d) => d.clone(),
            None => self.config()?.data_dir,
        })
    }
}

/// The data directory, held for the command's lifetime so no server starts meanwhile.
pub struct Offline {
    pub db: Arc<Db>,
    /// Every operation is recorded here, as the OS user who ran it.
    pub audit: Mutex<AuditLog>,
    _lock: DataLock,
}

impl Offline {
    /// Locks the data directory; refused, naming the server's URL, while a server holds it.
    pub fn open(target: &Target) -> anyhow::Result<Offline> {
        let data_dir = target.data_dir()?;
        crate::storage::create_private_dir(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let lock = DataLock::acquire(&data_dir).map_err(|e| match e {
            LockError::Held { .. } => {
                let url = crate::lock::read_holder(&data_dir.join("lock"))
                    .url
                    .unwrap_or_else(|| "URL".into());
                anyhow!(
                    "{e}: a server runs on this data directory, so manage it through its admin API: \
                     --server {url}, with HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD (or HPC_REGISTRY_TOKEN) set"
                )
            }
            other => other.into(),
        })?;
        let db =
            Db::open(&data_dir.join("meta.db")).context("cannot open the metadata database")?;
        // Opened before any change, so a damaged audit log stops the command, not its record.
        let audit = AuditLog::open(&data_dir, Arc::clone(&db))?;
        Ok(Offline {
            db,
            audit: Mutex::new(audit),
            _lock: lock,
        })
    }

    /// Appends one record; `action` names what ran in the error if the record cannot be written.
    pub fn record(&self, record: crate::audit::Record, action: &str) -> anyhow::Result<()> {
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(vec![record])
            .with_context(|| format!("{action} ran, but its audit record was not written"))?;
        Ok(())
    }
}

/// Where identity operations run.
pub enum Backend {
    Offline(Offline),
    // Boxed: it holds the client and its runtime, much larger than the offline handles.
    Remote(Box<AdminApi>),
}

impl Backend {
    pub fn open(target: &Target) -> anyhow::Result<Backend> {
        Ok(match target.remote.online()? {
            Some(api) => Backend::Remote(Box::new(api)),
            None => Backend::Offline(Offline::open(target)?),
        })
    }

    pub fn run(&self, op: Op) -> anyhow::Result<Value> {
        match self {
            Backend::Offline(offline) => {
                let result = manage::execute(&offline.db, &Caller::Local, op.clone());
                let record = match &result {
                    Ok(_) => crate::audit::ops::local_record(&op, "ok", None),
                    Err(e) => {
                        crate::audit::ops::local_record(&op, outcome_of(e), Some(e.to_string()))
                    }
                };
                offline.record(record, op.name())?;
                Ok(result?)
            }
            Backend::Remote(api) => api.run(&op),
        }
    }
}

fn outcome_of(e: &manage::ManageError) -> &'static str {
    use manage::ManageError::*;
    match e {
        NotFound(_) => "not-found",
        Conflict(_) => "conflict",
        Invalid(_) => "invalid",
        Forbidden(_) => "denied",
        Meta(_) | Auth(_) => "error",
    }
}
