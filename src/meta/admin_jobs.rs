//! SQL of the background admin jobs (`admin_jobs`, see `src/admin_jobs`).

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{now, Result};

/// One job as stored; the JSON columns stay text here (their shape is the job kind's business,
/// and they are not serialized with the row: `admin_jobs::JobView` adds them parsed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminJobRow {
    pub id: i64,
    pub kind: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    #[serde(skip)]
    pub params: String,
    #[serde(skip)]
    pub progress: Option<String>,
    #[serde(skip)]
    pub checkpoint: Option<String>,
    #[serde(skip)]
    pub result: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, kind, state, params, progress, checkpoint, result, error, \
                       cancel_requested, created_by, created_at, updated_at, finished_at";

fn row(r: &Row) -> rusqlite::Result<AdminJobRow> {
    Ok(AdminJobRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        state: r.get(2)?,
        params: r.get(3)?,
        progress: r.get(4)?,
        checkpoint: r.get(5)?,
        result: r.get(6)?,
        error: r.get(7)?,
        cancel_requested: r.get::<_, i64>(8)? != 0,
        created_by: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        finished_at: r.get(12)?,
    })
}

/// A new running job; its id.
pub fn insert_admin_job(tx: &Transaction, kind: &str, params: &str, by: &str) -> Result<i64> {
    let t = now();
    tx.execute(
        "INSERT INTO admin_jobs (kind, state, params, created_by, created_at, updated_at)
         VALUES (?1, 'running', ?2, ?3, ?4, ?4)",
        params![kind, params, by, t],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Progress and checkpoint of a running job.
pub fn save_admin_job_progress(
    tx: &Transaction,
    id: i64,
    progress: &str,
    checkpoint: &str,
) -> Result<()> {
    tx.execute(
        "UPDATE admin_jobs SET progress = ?2, checkpoint = ?3, updated_at = ?4
         WHERE id = ?1 AND state = 'running'",
        params![id, progress, checkpoint, now()],
    )?;
    Ok(())
}

/// Ends a running job in `state` (`done`, `failed`, `cancelled`).
pub fn finish_admin_job(
    tx: &Transaction,
    id: i64,
    state: &str,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    let t = now();
    tx.execute(
        "UPDATE admin_jobs SET state = ?2, result = ?3, error = ?4, updated_at = ?5,
                finished_at = ?5
         WHERE id = ?1 AND state = 'running'",
        params![id, state, result, error, t],
    )?;
    Ok(())
}

/// Asks a running job to stop; whether it was running.
pub fn request_admin_job_cancel(tx: &Transaction, id: i64) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE admin_jobs SET cancel_requested = 1, updated_at = ?2
         WHERE id = ?1 AND state = 'running'",
        params![id, now()],
    )? > 0)
}

pub fn admin_job(conn: &Connection, id: i64) -> Result<Option<AdminJobRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM admin_jobs WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// The newest `limit` jobs, newest first.
pub fn list_admin_jobs(conn: &Connection, limit: i64) -> Result<Vec<AdminJobRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM admin_jobs ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Jobs a stopped server left running, oldest first (a restart resumes them).
pub fn running_admin_jobs(conn: &Connection) -> Result<Vec<AdminJobRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM admin_jobs WHERE state = 'running' ORDER BY id"
    ))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Blobs a scrub reads and their bytes (live, not quarantined): its progress's denominators.
pub fn scrub_totals(conn: &Connection) -> Result<(i64, i64)> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(b.size), 0) FROM blobs b
         WHERE b.gc_state = 'live'
           AND NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = b.digest)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_checkpoints_is_cancelled_and_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::Db::open(&dir.path().join("meta.db")).unwrap();
        let id = db
            .write_blocking(|tx| insert_admin_job(tx, "scrub", "{}", "admin"))
            .unwrap();
        db.write_blocking(|tx| save_admin_job_progress(tx, id, "{\"n\":1}", "{\"after\":\"a\"}"))
            .unwrap();
        assert!(db
            .write_blocking(|tx| request_admin_job_cancel(tx, id))
            .unwrap());
        let running = db.read_blocking(running_admin_jobs).unwrap();
        assert_eq!(running.len(), 1);
        assert!(running[0].cancel_requested);
        assert_eq!(running[0].checkpoint.as_deref(), Some("{\"after\":\"a\"}"));
        db.write_blocking(|tx| finish_admin_job(tx, id, "cancelled", None, None))
            .unwrap();
        db.write_blocking(|tx| finish_admin_job(tx, id, "done", Some("{}"), None))
            .unwrap();
        let job = db.read_blocking(|c| admin_job(c, id)).unwrap().unwrap();
        assert_eq!(
            job.state, "cancelled",
            "a finished job is never finished again"
        );
        assert!(!db
            .write_blocking(|tx| request_admin_job_cancel(tx, id))
            .unwrap());
        assert_eq!(
            db.read_blocking(|c| list_admin_jobs(c, 10)).unwrap().len(),
            1
        );
        assert_eq!(db.read_blocking(scrub_totals).unwrap(), (0, 0));
    }
}
