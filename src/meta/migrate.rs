//! Numbered schema migrations, applied when the store opens.
//!
//! `schema.sql` is the whole current schema: a new store runs it and starts at
//! [`SCHEMA_VERSION`]. A store at an older version first gets a copy of its database, taken with
//! SQLite's online backup API (`meta.db.v<old>-<unix time>.bak`, owner-only, beside it); then
//! every migration after its version runs, in order, in one transaction with the version rows
//! they write, so a crash or an error leaves the store as it was. A store at a newer version
//! than this build knows is refused with both versions named, and left untouched.
//!
//! Writing a migration: append to [`MIGRATIONS`] (its number is one more than the last), change
//! `schema.sql` to match, and keep the step idempotent against the current `schema.sql` (create
//! with `IF NOT EXISTS`, add columns with [`add_column`], which probes first): migration 2 runs
//! the current `schema.sql`, so a later table or column may already be there.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction};

use super::{quota, MetaError, Result, SCHEMA};

/// The version this build writes and knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

struct Migration {
    version: i64,
    apply: fn(&Transaction) -> Result<()>,
}

/// Every migration, oldest first; version 1 is the first schema that was numbered.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        apply: create_current_schema,
    },
    Migration {
        version: 2,
        apply: to_2_everything_added_while_the_schema_said_1,
    },
    Migration {
        version: 3,
        apply: to_3_notifications,
    },
    Migration {
        version: 4,
        apply: to_4_builders_and_slurm_jobs,
    },
    Migration {
        version: 5,
        apply: to_5_admin_jobs,
    },
    Migration {
        version: 6,
        apply: to_6_enroot_images,
    },
    Migration {
        version: 7,
        apply: to_7_enroot_jobs,
    },
];

/// A new store: the whole current schema (later migrations have nothing left to do).
fn create_current_schema(tx: &Transaction) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    Ok(())
}

/// The schema said version 1 through nine changes, so a version-1 store may lack any table,
/// index or column added meanwhile: create what is missing, add `tags.origin` (marking the
/// farm's `*.sif` tags on registry-made manifests as derived), and fill the usage counters by
/// one full count if their table is new.
fn to_2_everything_added_while_the_schema_said_1(tx: &Transaction) -> Result<()> {
    restore_missing(tx)?;
    add_column(
        tx,
        "tags",
        "origin",
        "TEXT NOT NULL DEFAULT 'client'",
        // Older builds refused client pushes to `*.sif` tags, so every such tag on a
        // registry-made manifest is one of the farm's derived ORAS tags.
        "UPDATE tags SET origin = 'registry' WHERE name LIKE '%.sif' AND EXISTS (
             SELECT 1 FROM manifests m WHERE m.repository_id = tags.repository_id
             AND m.digest = tags.digest AND m.origin = 'registry')",
    )
}

/// Notifications: the users' e-mail address and channels (none by default: opt-in), and the
/// pushers and outbox tables (created by `restore_missing` from `schema.sql`).
fn to_3_notifications(tx: &Transaction) -> Result<()> {
    restore_missing(tx)?;
    add_column(tx, "users", "email", "TEXT", "")?;
    add_column(tx, "users", "notify", "TEXT NOT NULL DEFAULT 'none'", "")
}

/// Remote builder credentials (`builders`) and the Slurm jobs builds run as (`slurm_builds`):
/// new tables only, at the end of `schema.sql`, which creates what is missing.
fn to_4_builders_and_slurm_jobs(tx: &Transaction) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    Ok(())
}

/// The background admin jobs (`admin_jobs`: scrub with progress, checkpoint and cancel): a new
/// table only, which `schema.sql` creates `IF NOT EXISTS`.
fn to_5_admin_jobs(tx: &Transaction) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    Ok(())
}

/// The enroot images built with SIFs (`enroot_images`): a new table only. SIFs built before
/// have none (version 7 derives them).
fn to_6_enroot_images(tx: &Transaction) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    Ok(())
}

/// The derivations of enroot images for SIFs without one (`enroot_jobs`): a new table only;
/// the server queues them at start (`meta::queue_enroot_backfill`).
fn to_7_enroot_jobs(tx: &Transaction) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    Ok(())
}

/// Creates every table and index of `schema.sql` that is missing, and fills the usage counters
/// by one full count if their table was.
fn restore_missing(tx: &Transaction) -> Result<()> {
    let had_counters = table_exists(tx, "namespace_usage")?;
    tx.execute_batch(SCHEMA)?;
    if !had_counters {
        quota::backfill_usage(tx)?;
    }
    Ok(())
}

fn table_exists(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Adds `table.column` with `definition` unless it is there, then runs `backfill` for the rows
/// the older build wrote. A probe rather than `ADD COLUMN IF NOT EXISTS` (PostgreSQL has it,
/// SQLite does not).
fn add_column(
    tx: &Transaction,
    table: &str,
    column: &str,
    definition: &str,
    backfill: &str,
) -> Result<()> {
    let probe = format!("SELECT {column} FROM {table} LIMIT 0");
    if tx.prepare(&probe).is_ok() {
        return Ok(());
    }
    tx.execute_batch(&format!(
        "ALTER TABLE {table} ADD COLUMN {column} {definition}; {backfill};"
    ))?;
    Ok(())
}

/// The version of the store `conn` holds: 0 for a new (empty) database.
pub(super) fn stored_version(conn: &Connection) -> Result<i64> {
    if !table_exists(conn, "schema_version")? {
        return Ok(0);
    }
    let found: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    // A table without a row: a version-1 build that crashed before recording its version.
    Ok(found.unwrap_or(1))
}

/// Brings the database at `path` (open as `conn`) to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let found = stored_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(MetaError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
        });
    }
    if found == SCHEMA_VERSION {
        // Cheap, and a store damaged by hand (a dropped table or index) gets back what the code
        // relies on, its usage counters filled by one count: what every start did before
        // migrations were numbered.
        let tx = conn.unchecked_transaction()?;
        restore_missing(&tx)?;
        return Ok(tx.commit()?);
    }
    let pending: Vec<&Migration> = if found == 0 {
        // New: the current schema is every migration at once.
        vec![&MIGRATIONS[0]]
    } else {
        let copy = backup(conn, path, found)?;
        tracing::info!(
            "upgrading the metadata schema of {} from version {found} to {SCHEMA_VERSION}; \
             the database as it was is in {}",
            path.display(),
            copy.display()
        );
        MIGRATIONS.iter().filter(|m| m.version > found).collect()
    };
    let tx = conn.unchecked_transaction()?;
    for m in pending {
        (m.apply)(&tx)?;
    }
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

/// Copies the database with the online backup API into a new owner-only file beside it.
fn backup(conn: &Connection, path: &Path, version: i64) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "meta.db".into());
    let copy = path.with_file_name(format!("{name}.v{version}-{}.bak", super::now()));
    let io = |e| MetaError::Io(copy.clone(), e);
    // Created first, owner-only: the copy holds password and token hashes too.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&copy)
        .map_err(io)?;
    copy_online(conn, &copy)?;
    Ok(copy)
}

/// Copies the database open as `conn` into the existing (empty) file `dest` with SQLite's online
/// backup API, page batch by page batch (writers proceed between batches), and fsyncs it. Also
/// `admin backup`'s copy of a serving store.
pub(super) fn copy_online(conn: &Connection, dest: &Path) -> Result<()> {
    let mut target = Connection::open(dest)?;
    rusqlite::backup::Backup::new(conn, &mut target)?.run_to_completion(
        1024,
        std::time::Duration::ZERO,
        None,
    )?;
    target.close().map_err(|(_, e)| e)?;
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| MetaError::Io(dest.to_path_buf(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backups(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".bak"))
            .collect();
        out.sort();
        out
    }

    fn version_of(path: &Path) -> i64 {
        stored_version(&Connection::open(path).unwrap()).unwrap()
    }

    #[test]
    fn a_new_store_starts_at_the_current_version_without_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        super::super::Db::open(&path).unwrap();
        assert_eq!(version_of(&path), SCHEMA_VERSION);
        assert!(backups(dir.path()).is_empty());
    }

    #[test]
    fn an_older_store_is_copied_then_upgraded_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL);
                 INSERT INTO schema_version (version) VALUES (1);
                 CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                     namespace TEXT NOT NULL, created_at BIGINT NOT NULL);
                 INSERT INTO repositories VALUES (1, 'alice/x', 'alice', 0);",
            )
            .unwrap();
        }
        super::super::Db::open(&path).unwrap();
        assert_eq!(version_of(&path), SCHEMA_VERSION);
        let copies = backups(dir.path());
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(version_of(&copies[0]), 1, "the copy is the store as it was");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copies[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = Connection::open(&path).unwrap();
        let usage: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM namespace_usage WHERE blob_bytes + manifest_bytes > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(usage, 0, "counters exist (and count nothing here)");
        // Opening again changes nothing and copies nothing.
        drop(c);
        super::super::Db::open(&path).unwrap();
        assert_eq!(backups(dir.path()).len(), 1);
    }

    #[test]
    fn a_newer_store_is_refused_naming_both_versions_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        super::super::Db::open(&path).unwrap();
        let future = SCHEMA_VERSION + 7;
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO schema_version (version) VALUES (?1)", [future])
            .unwrap();
        let e = super::super::Db::open(&path).err().expect("refused");
        let message = e.to_string();
        assert!(
            message.contains(&format!("schema version {future}"))
                && message.contains(&format!("knows {SCHEMA_VERSION}")),
            "{message}"
        );
        assert_eq!(version_of(&path), future);
        assert!(backups(dir.path()).is_empty());
    }

    #[test]
    fn versions_are_numbered_one_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }
}
