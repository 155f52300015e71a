//! SQL of remote builder credentials (`builders`) and of the Slurm jobs builds run as
//! (`slurm_builds`).

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::Result;

/// One builder credential as stored (the secret only as its SHA-256). Serialized for admins
/// without the token id and the hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuilderRow {
    pub name: String,
    #[serde(skip)]
    pub token_id: String,
    #[serde(skip)]
    pub secret_sha256: String,
    /// The platforms it builds (`os/arch[/variant]`).
    pub platforms: Vec<String>,
    /// A one-job credential (the Slurm executor's): it claims only this job.
    pub job_id: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "name, token_id, secret_sha256, platforms, job_id, created_by, created_at,
     expires_at, last_used_at";

fn builder(r: &Row) -> rusqlite::Result<BuilderRow> {
    let platforms: String = r.get(3)?;
    Ok(BuilderRow {
        name: r.get(0)?,
        token_id: r.get(1)?,
        secret_sha256: r.get(2)?,
        platforms: platforms
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        job_id: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        last_used_at: r.get(8)?,
    })
}

/// Stores a new builder credential; false if the name is taken.
pub fn insert_builder(tx: &Transaction, row: &BuilderRow) -> Result<bool> {
    let n = tx
        .prepare_cached(&format!(
            "INSERT INTO builders ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO NOTHING"
        ))?
        .execute(params![
            row.name,
            row.token_id,
            row.secret_sha256,
            row.platforms.join(","),
            row.job_id,
            row.created_by,
            row.created_at,
            row.expires_at,
            row.last_used_at
        ])?;
    Ok(n > 0)
}

pub fn builder_by_token_id(conn: &Connection, token_id: &str) -> Result<Option<BuilderRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builders WHERE token_id = ?1"
        ))?
        .query_row([token_id], builder)
        .optional()?)
}

/// Every builder credential, by name (one-job credentials included).
pub fn list_builders(conn: &Connection) -> Result<Vec<BuilderRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM builders ORDER BY name"))?
        .query_map([], builder)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Revokes (deletes) builder `name`; false if there was none.
pub fn delete_builder(tx: &Transaction, name: &str) -> Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM builders WHERE name = ?1")?
        .execute([name])?;
    Ok(n > 0)
}

pub fn touch_builder(tx: &Transaction, name: &str, now: i64) -> Result<()> {
    tx.prepare_cached("UPDATE builders SET last_used_at = ?2 WHERE name = ?1")?
        .execute(params![name, now])?;
    Ok(())
}

/// A build running as a Slurm job.
#[derive(Debug, Clone)]
pub struct SlurmBuild {
    pub job_id: i64,
    pub slurm_job: String,
    pub builder: String,
    pub submitted_at: i64,
}

pub fn insert_slurm_build(tx: &Transaction, b: &SlurmBuild) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO slurm_builds (job_id, slurm_job, builder, submitted_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (job_id) DO UPDATE SET slurm_job = excluded.slurm_job,
             builder = excluded.builder, submitted_at = excluded.submitted_at",
    )?
    .execute(params![b.job_id, b.slurm_job, b.builder, b.submitted_at])?;
    Ok(())
}

pub fn list_slurm_builds(conn: &Connection) -> Result<Vec<SlurmBuild>> {
    Ok(conn
        .prepare_cached(
            "SELECT job_id, slurm_job, builder, submitted_at FROM slurm_builds ORDER BY job_id",
        )?
        .query_map([], |r| {
            Ok(SlurmBuild {
                job_id: r.get(0)?,
                slurm_job: r.get(1)?,
                builder: r.get(2)?,
                submitted_at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn delete_slurm_build(tx: &Transaction, job_id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM slurm_builds WHERE job_id = ?1")?
        .execute([job_id])?;
    Ok(())
}
