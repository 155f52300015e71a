//! The SQL metadata store. Nothing outside this module writes SQL.
//!
//! SQLite is the embedded default (WAL, `synchronous=FULL`). One writer connection serialises
//! writes (SQLite allows one writer at a time anyway); readers come from a small pool and run
//! concurrently with the writer thanks to WAL. All calls are blocking: async callers go through
//! [`Db::read`] / [`Db::write`], which run them on tokio's blocking pool.

mod admin_jobs;
mod audit;
pub mod backup;
mod browse;
mod builders;
mod enroot_jobs;
mod gc;
mod jobs;
mod migrate;
mod notifications;
mod queries;
mod quota;
mod stats;
#[cfg(test)]
mod testing;
mod users;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction};

pub use admin_jobs::*;
pub use audit::*;
pub use browse::*;
pub use builders::*;
pub use enroot_jobs::*;
pub use gc::*;
pub use jobs::*;
pub use notifications::*;
pub use queries::*;
pub use quota::*;
pub use stats::*;
pub use users::*;

const SCHEMA: &str = include_str!("schema.sql");
use migrate::migrate;
pub use migrate::SCHEMA_VERSION;
/// Reader connections kept open. Async reads wait for one of them rather than opening more:
/// opening a connection costs more than a typical query, and a burst of connections only adds
/// threads on a machine whose cores are already busy. (Blocking callers outside the async path
/// may still open extra connections, closed afterwards.)
const READER_POOL: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata database {path} has schema version {found}, this build knows {SCHEMA_VERSION}: upgrade hpc-registry")]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("metadata task failed: {0}")]
    Task(String),
    #[error("cannot restrict {0} to its owner: {1}")]
    Io(PathBuf, std::io::Error),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A read of the metadata, as [`Db::read`] hands it out. Code outside `meta` that runs several
/// meta functions in one snapshot names this, never the SQL engine, and only passes it on to
/// meta functions (tests/architecture.rs checks that nothing outside meta runs SQL on it).
pub type Conn = Connection;
/// A write transaction of the metadata, as [`Db::write`] hands it out (see [`Conn`]): a quota
/// check inside the commit it guards, a batch of GC steps.
pub type Tx<'c> = Transaction<'c>;

pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Bounds concurrent [`Db::read`]s to the pool's size.
    read_slots: tokio::sync::Semaphore,
    /// See [`Db::identity_generation`].
    identity: AtomicU64,
    /// Set by the writer connection's update hook when a row of [`IDENTITY_TABLES`] changes.
    identity_touched: Arc<AtomicBool>,
}

/// The tables that say who a caller is and what they may do: authentication caches resolved
/// callers until one of them changes (see [`Db::identity_generation`]).
const IDENTITY_TABLES: [&str; 4] = ["users", "user_groups", "group_members", "access_tokens"];

impl Db {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Arc<Db>> {
        let mut writer = connect(path, true)?;
        // Password and token hashes live here: owner-only, like token.key. SQLite gives the
        // -wal and -shm files the database file's mode.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| MetaError::Io(path.to_path_buf(), e))?;
        }
        migrate(&writer, path)?;
        // Every write goes through this one connection, so its hook sees every identity change,
        // whichever module made it (and cascaded deletes change a parent table too).
        let identity_touched = Arc::new(AtomicBool::new(false));
        let touched = Arc::clone(&identity_touched);
        writer.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, _| {
                if IDENTITY_TABLES.contains(&table) {
                    touched.store(true, Ordering::SeqCst);
                }
            },
        ))?;
        Ok(Arc::new(Db {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READER_POOL),
            identity: AtomicU64::new(0),
            identity_touched,
        }))
    }

    /// A number that grows after every committed write to users, groups, memberships or access
    /// tokens. Read it *before* reading identities: what was read stays true while it is unchanged.
    pub fn identity_generation(&self) -> u64 {
        self.identity.load(Ordering::SeqCst)
    }

    /// Runs `f` in one write transaction, committed if `f` returns `Ok`.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let out = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        // After the commit (or the rollback: a harmless extra bump), so that a reader that read
        // the generation before the old rows always sees it change.
        if self.identity_touched.swap(false, Ordering::SeqCst) {
            self.identity.fetch_add(1, Ordering::SeqCst);
        }
        out
    }

    /// Runs `f` on a pooled read connection.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.path, false)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        out
    }

    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || db.write_blocking(f))
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?
    }

    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?;
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || db.read_blocking(f))
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?
    }
}

fn connect(path: &Path, writer: bool) -> Result<Connection> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    // The query planner stability guarantee: plans never depend on bound values. Without it,
    // SQLite marks a statement with an `= ?` term it estimates by value as "re-prepare when
    // rebound", and rusqlite clears the bindings of every statement it puts back in its cache,
    // which expires it: every cached query was parsed and planned again on each use (40 % of a
    // manifest GET's instructions, bench/callgrind-manifest.py). Nothing here gains from
    // value-specific plans: no ANALYZE statistics, and no `LIKE ?` that an index could serve.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Bytes of heap SQLite holds, over every connection of the process.
pub fn sqlite_memory_used() -> i64 {
    // SAFETY: a read of SQLite's global memory statistics; no connection is involved.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// Current time in Unix seconds, the unit of every timestamp column.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A store written by the build before `tags.origin` existed opens, and its derived tags
    /// become derived (hidden from listings) while its client tags stay listed.
    #[test]
    fn a_store_from_before_tag_origins_opens_with_its_derived_tags_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let (before, tags_and_after) = SCHEMA
            .split_once("CREATE TABLE IF NOT EXISTS tags")
            .unwrap();
        let old_schema = format!(
            "{before}CREATE TABLE IF NOT EXISTS tags{}",
            tags_and_after.replacen(
                "    origin          TEXT NOT NULL DEFAULT 'client',\n",
                "",
                1
            )
        );
        assert_ne!(
            old_schema, SCHEMA,
            "the old tags table has no origin column"
        );
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&old_schema).unwrap();
            c.execute_batch(
                "INSERT INTO schema_version (version) VALUES (1);
                 INSERT INTO repositories (id, name, namespace, created_at) VALUES (1, 'alice/x', 'alice', 0);
                 INSERT INTO manifests (repository_id, digest, media_type, kind, origin, size, content, pushed_at)
                     VALUES (1, 'sha256:img', 'm', 'image', 'client', 1, x'00', 0),
                            (1, 'sha256:art', 'm', 'artifact', 'registry', 1, x'00', 0);
                 INSERT INTO tags (repository_id, name, digest, pushed_at)
                     VALUES (1, '1', 'sha256:img', 0), (1, '1.sif', 'sha256:art', 0);",
            )
            .unwrap();
            assert!(c.prepare("SELECT origin FROM tags").is_err());
        }
        for _ in 0..2 {
            // Twice: the second open finds the column and changes nothing.
            let db = Db::open(&path).unwrap();
            let listed = db
                .read_blocking(|c| list_tags(c, "alice/x", None, 10))
                .unwrap()
                .unwrap();
            assert_eq!(listed, ["1"]);
            let derived = db
                .read_blocking(|c| tag_digest(c, "alice/x", "1.sif"))
                .unwrap();
            assert_eq!(derived.as_deref(), Some("sha256:art"));
        }
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        // An existing world-readable database (from an older version) is tightened too.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = Db::open(&path).unwrap();
        db.write_blocking(|tx| Ok(tx.execute("CREATE TABLE t (x BIGINT)", [])?))
            .unwrap();
        for file in ["meta.db", "meta.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
}
