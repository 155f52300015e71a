//! What `admin backup` and `admin restore` (`src/backup`) need of the metadata: a consistent copy
//! of a serving store, taken with SQLite's online backup API from a read-only connection (the
//! server keeps writing meanwhile), and the facts a restore checks the blob store against.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{connect, migrate, MetaError, Result};

/// Copies the store at `source` (which a server may be writing) into the new owner-only file
/// `dest`, as one self-contained file (rollback journal, no `-wal` beside it).
pub fn snapshot(source: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| MetaError::Io(dest.to_path_buf(), e))?;
    let conn = connect(source, false)?;
    migrate::copy_online(&conn, dest)?;
    let copy = Connection::open(dest)?;
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    copy.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// A read-only connection on a snapshot (or any store) at `path`.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    connect(path, false)
}

/// The schema version the store open as `conn` is at.
pub fn schema_version_of(conn: &Connection) -> Result<i64> {
    migrate::stored_version(conn)
}

/// How much a store holds, for a backup's manifest and a restore's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreCounts {
    pub repositories: i64,
    pub manifests: i64,
    /// Pushed tags (the farm's derived `*.sif` tags not counted).
    pub tags: i64,
    pub sifs: i64,
    pub blobs: i64,
    pub blob_bytes: i64,
    pub users: i64,
    pub audit_records: i64,
}

pub fn store_counts(conn: &Connection) -> Result<StoreCounts> {
    let one = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(StoreCounts {
        repositories: one("SELECT COUNT(*) FROM repositories")?,
        manifests: one("SELECT COUNT(*) FROM manifests")?,
        tags: one("SELECT COUNT(*) FROM tags WHERE origin = 'client'")?,
        sifs: one("SELECT COUNT(*) FROM sifs")?,
        blobs: one("SELECT COUNT(*) FROM blobs WHERE gc_state = 'live'")?,
        blob_bytes: one("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE gc_state = 'live'")?,
        users: one("SELECT COUNT(*) FROM users")?,
        audit_records: one("SELECT COUNT(*) FROM audit_events")?,
    })
}

/// Every blob a manifest references (config, layers) with its recorded size (`None`: the blob
/// has no row at all), quarantined ones left out (a scrub moved them away on purpose).
pub fn each_manifest_blob(conn: &Connection, each: impl FnMut(String, Option<i64>)) -> Result<()> {
    each_pair(
        conn,
        "SELECT DISTINCT r.target_digest, b.size FROM manifest_references r
         LEFT JOIN blobs b ON b.digest = r.target_digest
         WHERE r.target_kind = 'blob'
           AND NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = r.target_digest)
         ORDER BY r.target_digest",
        each,
    )
}

/// Every ready SIF and enroot image: its blob digest and size, quarantined ones left out.
pub fn each_sif(conn: &Connection, each: impl FnMut(String, i64)) -> Result<()> {
    each_pair(
        conn,
        "SELECT digest, size FROM (
             SELECT digest, size FROM sifs UNION SELECT digest, size FROM enroot_images) s
         WHERE NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = s.digest)
         ORDER BY s.digest",
        each,
    )
}

/// Streams the two columns of every row of `sql` into `each`.
fn each_pair<A, B>(conn: &Connection, sql: &str, mut each: impl FnMut(A, B)) -> Result<()>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
{
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(params![])?;
    while let Some(row) = rows.next()? {
        each(row.get(0)?, row.get(1)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_an_open_store_is_a_readable_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let db = super::super::Db::open(&path).unwrap();
        let copy = dir.path().join("copy.db");
        snapshot(&path, &copy).unwrap();
        assert!(!dir.path().join("copy.db-wal").exists());
        let conn = open_read_only(&copy).unwrap();
        assert_eq!(
            schema_version_of(&conn).unwrap(),
            super::super::SCHEMA_VERSION
        );
        assert_eq!(store_counts(&conn).unwrap(), StoreCounts::default());
        assert!(
            snapshot(&path, &copy).is_err(),
            "an existing file is never overwritten"
        );
        drop(db);
    }
}
