//! The audit trail: one structured [`Record`] per security-relevant event (authentications,
//! pushes, deletes, manifest pulls, SIF fetches, identity changes, admin actions, builds).
//!
//! * [`chain`]: the hash chain over records, and `verify` (the tamper check, on the file alone).
//! * [`event`]: what a request did, as its handler names it, and the record it makes.
//! * [`log`]: the append-only JSON-lines file `DATA/audit/audit.jsonl` and its database index.
//! * [`writer`]: the [`Auditor`] handle the server uses; one thread owns the file.
//! * [`query`]: filters (`--user`, `--repo`, `--action`, `--since`, `--until`) in SQL.
//! * [`ops`]: which record each user/group/token operation produces.
//! * [`time`]: RFC 3339 with milliseconds, and `2h`/`7d` relative bounds.
//! * [`bound`]: size caps on every field; invalid names are stored marked and truncated.
//! * [`throttle`]: per-address limit on failure records, with counted summaries.
//! * [`segments`], [`rotation`], [`walk`]: the rotated files (`audit-<first seq>.jsonl[.zst]`),
//!   when to rotate, and reading or verifying the log across all its files.
//! * [`forward`]: the optional copy of every written record to syslog/journald.

pub mod bound;
pub mod chain;
pub mod event;
pub mod forward;
pub mod log;
pub mod ops;
pub mod query;
pub mod rotation;
pub mod segments;
pub mod throttle;
pub mod time;
pub mod walk;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use log::AuditLog;
pub use writer::Auditor;

/// The file, relative to the data directory.
pub const FILE: &str = "audit/audit.jsonl";

/// One audit record, exactly as stored (one JSON object per line). Every field is always present
/// (`null` when unknown), so consumers can rely on the shape. `seq`, `prev` and `hash` are filled
/// by the log when the record is appended. `hash` must stay the last field (the chain hashes the
/// line up to it); new fields go before `prev` with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1, without gaps.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    /// How the caller authenticated: password, token, bearer, munge, anonymous, local, system.
    pub auth: Option<String>,
    /// Client address (`ip:port`), `local` for the offline CLI.
    pub client: Option<String>,
    pub user_agent: Option<String>,
    /// e.g. `auth.failure`, `manifest.push`, `sif.fetch`, `token.create`, `build.end`.
    pub action: String,
    pub repository: Option<String>,
    pub reference: Option<String>,
    pub digest: Option<String>,
    /// ok, denied, not-found, rate-limited, invalid, error, ready, failed, ...
    pub outcome: String,
    /// The HTTP status answered, for requests.
    pub status: Option<u16>,
    /// Why it failed (never a secret).
    pub detail: Option<String>,
    pub bytes: Option<u64>,
    /// From the `X-Slurm-Job-Id` request header.
    pub slurm_job_id: Option<String>,
    /// `hash` of the previous record (64 zeros for the first).
    #[serde(default)]
    pub prev: String,
    /// sha256(prev || canonical JSON of this record without `hash`), hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// A record of `action` stamped now, with nothing else known yet.
    pub fn new(action: &str, outcome: &str) -> Record {
        Record {
            seq: 0,
            time: time::format_ms(time::now_ms()),
            user: None,
            uid: None,
            auth: None,
            client: None,
            user_agent: None,
            action: action.to_owned(),
            repository: None,
            reference: None,
            digest: None,
            outcome: outcome.to_owned(),
            status: None,
            detail: None,
            bytes: None,
            slurm_job_id: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// Milliseconds since the epoch of `time` (0 if unparsable, which the log never writes).
    pub fn time_ms(&self) -> i64 {
        time::parse_rfc3339(&self.time).unwrap_or(0)
    }
}

/// The outcome word for an HTTP status.
pub fn outcome_of_status(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        401 | 403 => "denied",
        404 => "not-found",
        409 => "conflict",
        429 => "rate-limited",
        400..=499 => "invalid",
        _ => "error",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit log {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}
