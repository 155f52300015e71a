//! Read-only summaries for operations: readiness's write probe and the numbers `/metrics`
//! samples on each scrape. Every query reads an index or a small table, so a scrape every few
//! seconds costs nothing on a large store.

use rusqlite::{Connection, Transaction};

use super::Result;

/// A write that changes nothing: proves the database file, its WAL and the writer connection
/// take a commit (a read-only mount or a full disk fail here, as a push would).
pub fn probe_writable(tx: &Transaction) -> Result<()> {
    tx.execute("UPDATE schema_version SET version = version", [])?;
    Ok(())
}

/// Build jobs per state (`queued`, `building`, `ready`, `failed`).
pub fn build_job_counts(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM build_jobs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `created_at` (unix seconds) of the oldest job still waiting for a worker, if any.
pub fn oldest_queued_job(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row(
        "SELECT MIN(created_at) FROM build_jobs WHERE state = 'queued'",
        [],
        |r| r.get(0),
    )?)
}

/// Bytes charged to all namespaces (blobs, SIFs and manifests; a blob shared by two namespaces
/// counts in both, as for their quotas).
pub fn stored_bytes(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(blob_bytes + manifest_bytes), 0) FROM namespace_usage",
        [],
        |r| r.get(0),
    )?)
}
