//! Statements of quotas, namespace usage and scrub (see `src/quota` and `src/lifecycle/scrub.rs`).
//!
//! Quota checks read per-namespace counters (`namespace_usage`), kept in the same transaction as
//! every statement that adds or removes a blob link or a manifest (`link_blob`, `unlink_blob`,
//! `put_manifest`, `delete_manifest`, GC's `forget_deleted_blob` and `drop_repository`), through
//! the `count_*` functions below: a check then costs one row read, not a sum over the namespace
//! (0.3–0.75 s with 200,000 links, with every other writer waiting). [`namespace_usage`] is
//! the recount from the tables, which the admin usage report shows and the scrub compares the
//! counters with ([`recount_usage`], which repairs and reports any drift).

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{now, Result};

/// What one namespace occupies, in bytes. A blob linked into several repositories of the
/// namespace counts once; so does a manifest stored in several.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub repositories: i64,
    /// Layers, configs and other blobs that are not built SIFs.
    pub blob_bytes: i64,
    /// Built SIFs and their enroot images (blobs recorded in `sifs` and `enroot_images`).
    pub sif_bytes: i64,
    pub manifest_bytes: i64,
}

impl NamespaceUsage {
    pub fn total(&self) -> i64 {
        self.blob_bytes + self.sif_bytes + self.manifest_bytes
    }
}

/// A quota override set by an admin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaRow {
    pub namespace: String,
    /// `None`: unlimited.
    pub limit_bytes: Option<i64>,
    pub updated_at: i64,
    pub updated_by: String,
}

// The same three aggregates with and without a namespace filter: two statements rather than
// `?1 IS NULL OR ...`, which would keep the planner from using the namespace index.
const REPOS: &str = "SELECT namespace, COUNT(*) FROM repositories";
const BLOBS: &str = "SELECT nb.namespace,
        SUM(CASE WHEN s.digest IS NULL THEN b.size ELSE 0 END),
        SUM(CASE WHEN s.digest IS NULL THEN 0 ELSE b.size END)
    FROM (SELECT DISTINCT r.namespace, rb.digest FROM repository_blobs rb
          JOIN repositories r ON r.id = rb.repository_id";
const BLOBS_TAIL: &str = ") nb
    JOIN blobs b ON b.digest = nb.digest
    LEFT JOIN (SELECT digest FROM sifs UNION SELECT digest FROM enroot_images) s
        ON s.digest = nb.digest
    GROUP BY nb.namespace";
const MANIFESTS: &str = "SELECT nm.namespace, SUM(nm.size)
    FROM (SELECT DISTINCT r.namespace, m.digest, m.size FROM manifests m
          JOIN repositories r ON r.id = m.repository_id";
const MANIFESTS_TAIL: &str = ") nm GROUP BY nm.namespace";

/// Usage of every namespace (`None`) or of one, in namespace order. A namespace with no
/// repository is absent from the list.
pub fn namespace_usage(conn: &Connection, namespace: Option<&str>) -> Result<Vec<NamespaceUsage>> {
    let filter = if namespace.is_some() {
        " WHERE r.namespace = ?1"
    } else {
        ""
    };
    let mut out: std::collections::BTreeMap<String, NamespaceUsage> = Default::default();
    let repos_sql = if namespace.is_some() {
        format!("{REPOS} WHERE namespace = ?1 GROUP BY namespace")
    } else {
        format!("{REPOS} GROUP BY namespace")
    };
    let bind: Vec<&str> = namespace.into_iter().collect();
    let mut stmt = conn.prepare_cached(&repos_sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(bind.iter()))?;
    while let Some(r) = rows.next()? {
        let ns: String = r.get(0)?;
        out.insert(
            ns.clone(),
            NamespaceUsage {
                namespace: ns,
                repositories: r.get(1)?,
                ..Default::default()
            },
        );
    }
    let mut stmt = conn.prepare_cached(&format!("{BLOBS}{filter}{BLOBS_TAIL}"))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(bind.iter()))?;
    while let Some(r) = rows.next()? {
        let ns: String = r.get(0)?;
        if let Some(u) = out.get_mut(&ns) {
            u.blob_bytes = r.get::<_, Option<i64>>(1)?.unwrap_or(0);
            u.sif_bytes = r.get::<_, Option<i64>>(2)?.unwrap_or(0);
        }
    }
    let mut stmt = conn.prepare_cached(&format!("{MANIFESTS}{filter}{MANIFESTS_TAIL}"))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(bind.iter()))?;
    while let Some(r) = rows.next()? {
        let ns: String = r.get(0)?;
        if let Some(u) = out.get_mut(&ns) {
            u.manifest_bytes = r.get::<_, Option<i64>>(1)?.unwrap_or(0);
        }
    }
    Ok(out.into_values().collect())
}

// ------------------------------------------------------------------------------------------------
// Usage counters
// ------------------------------------------------------------------------------------------------

/// A namespace whose counters disagreed with the recount (and were set to it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageDrift {
    pub namespace: String,
    pub counted_bytes: i64,
    pub actual_bytes: i64,
}

/// What the counters say `namespace` uses (blobs, SIFs and manifests), in bytes.
pub fn counted_usage(conn: &Connection, namespace: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT blob_bytes + manifest_bytes FROM namespace_usage WHERE namespace = ?1",
        )?
        .query_row([namespace], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn add_usage(
    tx: &Transaction,
    namespace: &str,
    blob_bytes: i64,
    manifest_bytes: i64,
) -> Result<()> {
    if blob_bytes == 0 && manifest_bytes == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO namespace_usage (namespace, blob_bytes, manifest_bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace) DO UPDATE SET
             blob_bytes = namespace_usage.blob_bytes + excluded.blob_bytes,
             manifest_bytes = namespace_usage.manifest_bytes + excluded.manifest_bytes",
    )?
    .execute(params![namespace, blob_bytes, manifest_bytes])?;
    Ok(())
}

/// Whether a repository of `namespace` other than `repo` links `digest`.
// Written as EXISTS so that the plan walks the (few) links of the digest, through its index, and
// not the repositories of the namespace (thousands in a big one: 10 ms per check with a JOIN).
fn linked_elsewhere(tx: &Transaction, namespace: &str, digest: &str, repo: i64) -> Result<bool> {
    held_elsewhere(tx, "repository_blobs", namespace, digest, repo)
}

/// Whether a repository of `namespace` other than `repo` stores manifest `digest`.
fn stored_elsewhere(tx: &Transaction, namespace: &str, digest: &str, repo: i64) -> Result<bool> {
    held_elsewhere(tx, "manifests", namespace, digest, repo)
}

/// An id no repository has (SQLite's row ids start at 1): "other than" it means any repository.
const NO_REPOSITORY: i64 = 0;

/// Whether a row of `table` (a fixed name: `repository_blobs` or `manifests`, both keyed by
/// repository id and digest) holds `digest` in a repository of `namespace` other than `repo`.
fn held_elsewhere(
    conn: &Connection,
    table: &'static str,
    namespace: &str,
    digest: &str,
    repo: i64,
) -> Result<bool> {
    let sql = format!(
        "SELECT 1 FROM {table} t
         WHERE t.digest = ?2 AND t.repository_id <> ?3 AND EXISTS (
             SELECT 1 FROM repositories r WHERE r.id = t.repository_id AND r.namespace = ?1)
         LIMIT 1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![namespace, digest, repo], |_| Ok(()))
        .optional()?
        .is_some())
}

fn blob_size(tx: &Transaction, digest: &str) -> Result<i64> {
    Ok(tx
        .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
        .query_row([digest], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// After a new link of `digest` into `repo`: the namespace grows by the blob's size unless
/// another of its repositories links it already (the recount counts a digest once).
pub(super) fn count_link(tx: &Transaction, repo: i64, namespace: &str, digest: &str) -> Result<()> {
    if !linked_elsewhere(tx, namespace, digest, repo)? {
        add_usage(tx, namespace, blob_size(tx, digest)?, 0)?;
    }
    Ok(())
}

/// After a link of `digest` was removed from `repo` (the blob row still exists).
pub(super) fn count_unlink(
    tx: &Transaction,
    repo: i64,
    namespace: &str,
    digest: &str,
) -> Result<()> {
    if !linked_elsewhere(tx, namespace, digest, repo)? {
        add_usage(tx, namespace, -blob_size(tx, digest)?, 0)?;
    }
    Ok(())
}

/// Before every link of `digest` goes (GC forgets a deleted blob): each namespace holding it
/// shrinks by its size once.
pub(super) fn count_blob_forgotten(tx: &Transaction, digest: &str) -> Result<()> {
    let size = blob_size(tx, digest)?;
    let namespaces: Vec<String> = tx
        .prepare_cached(
            "SELECT DISTINCT r.namespace FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ?1",
        )?
        .query_map([digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for ns in namespaces {
        add_usage(tx, &ns, -size, 0)?;
    }
    Ok(())
}

/// After manifest `digest` of `size` bytes was stored in `repo`.
pub(super) fn count_manifest_added(
    tx: &Transaction,
    repo: i64,
    namespace: &str,
    digest: &str,
    size: i64,
) -> Result<()> {
    if !stored_elsewhere(tx, namespace, digest, repo)? {
        add_usage(tx, namespace, 0, size)?;
    }
    Ok(())
}

/// After manifest `digest` of `size` bytes was deleted from `repo`.
pub(super) fn count_manifest_removed(
    tx: &Transaction,
    repo: i64,
    digest: &str,
    size: i64,
) -> Result<()> {
    let Some(namespace) = repository_namespace(tx, repo)? else {
        return Ok(());
    };
    if !stored_elsewhere(tx, &namespace, digest, repo)? {
        add_usage(tx, &namespace, 0, -size)?;
    }
    Ok(())
}

/// Before repository `repo`'s remaining links and manifests go with it: what only it held in its
/// namespace is subtracted.
pub(super) fn count_repository_dropped(tx: &Transaction, repo: i64) -> Result<()> {
    let Some(namespace) = repository_namespace(tx, repo)? else {
        return Ok(());
    };
    let blob_bytes: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repository_id = ?1 AND NOT EXISTS (
                 SELECT 1 FROM repository_blobs o JOIN repositories r ON r.id = o.repository_id
                 WHERE o.digest = rb.digest AND r.namespace = ?2 AND o.repository_id <> ?1)",
        )?
        .query_row(params![repo, namespace], |r| r.get(0))?;
    let manifest_bytes: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(m.size), 0) FROM manifests m
             WHERE m.repository_id = ?1 AND NOT EXISTS (
                 SELECT 1 FROM manifests o JOIN repositories r ON r.id = o.repository_id
                 WHERE o.digest = m.digest AND r.namespace = ?2 AND o.repository_id <> ?1)",
        )?
        .query_row(params![repo, namespace], |r| r.get(0))?;
    add_usage(tx, &namespace, -blob_bytes, -manifest_bytes)
}

fn repository_namespace(tx: &Transaction, repo: i64) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("SELECT namespace FROM repositories WHERE id = ?1")?
        .query_row([repo], |r| r.get(0))
        .optional()?)
}

/// Namespaces with counters or repositories, in order (what a recount walks).
pub fn usage_namespaces(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT namespace FROM namespace_usage UNION SELECT DISTINCT namespace FROM repositories
         ORDER BY 1",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Recounts `namespace` from the tables and sets its counters to the result; returns the drift
/// if the counters were wrong. Run in a write transaction, so no commit lands in between.
pub fn recount_usage(tx: &Transaction, namespace: &str) -> Result<Option<UsageDrift>> {
    let actual = namespace_usage(tx, Some(namespace))?
        .into_iter()
        .next()
        .unwrap_or_default();
    let counted: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT blob_bytes, manifest_bytes FROM namespace_usage WHERE namespace = ?1",
        )?
        .query_row([namespace], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let actual_blobs = actual.blob_bytes + actual.sif_bytes;
    if counted.unwrap_or((0, 0)) == (actual_blobs, actual.manifest_bytes) {
        return Ok(None);
    }
    tx.prepare_cached(
        "INSERT INTO namespace_usage (namespace, blob_bytes, manifest_bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace) DO UPDATE SET
             blob_bytes = excluded.blob_bytes, manifest_bytes = excluded.manifest_bytes",
    )?
    .execute(params![namespace, actual_blobs, actual.manifest_bytes])?;
    Ok(Some(UsageDrift {
        namespace: namespace.to_owned(),
        counted_bytes: counted.map_or(0, |(b, m)| b + m),
        actual_bytes: actual.total(),
    }))
}

/// Fills the counters of a store that had none (the table was just created): one full count.
pub(super) fn backfill_usage(tx: &Transaction) -> Result<()> {
    for u in namespace_usage(tx, None)? {
        tx.prepare_cached(
            "INSERT INTO namespace_usage (namespace, blob_bytes, manifest_bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (namespace) DO UPDATE SET
                 blob_bytes = excluded.blob_bytes, manifest_bytes = excluded.manifest_bytes",
        )?
        .execute(params![u.namespace, u.blob_bytes + u.sif_bytes, u.manifest_bytes])?;
    }
    Ok(())
}

/// Whether any repository of `namespace` links `digest` (then a new link costs nothing).
pub fn blob_linked_in_namespace(conn: &Connection, namespace: &str, digest: &str) -> Result<bool> {
    held_elsewhere(conn, "repository_blobs", namespace, digest, NO_REPOSITORY)
}

/// Whether any repository of `namespace` stores manifest `digest`.
pub fn manifest_in_namespace(conn: &Connection, namespace: &str, digest: &str) -> Result<bool> {
    held_elsewhere(conn, "manifests", namespace, digest, NO_REPOSITORY)
}

pub fn quota_row(conn: &Connection, namespace: &str) -> Result<Option<QuotaRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT namespace, limit_bytes, updated_at, updated_by FROM quotas WHERE namespace = ?1",
        )?
        .query_row([namespace], quota_from_row)
        .optional()?)
}

pub fn list_quotas(conn: &Connection) -> Result<Vec<QuotaRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT namespace, limit_bytes, updated_at, updated_by FROM quotas ORDER BY namespace",
    )?;
    let rows = stmt.query_map([], quota_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn quota_from_row(r: &rusqlite::Row) -> rusqlite::Result<QuotaRow> {
    Ok(QuotaRow {
        namespace: r.get(0)?,
        limit_bytes: r.get(1)?,
        updated_at: r.get(2)?,
        updated_by: r.get(3)?,
    })
}

pub fn set_quota(tx: &Transaction, namespace: &str, limit: Option<i64>, by: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO quotas (namespace, limit_bytes, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (namespace) DO UPDATE SET limit_bytes = excluded.limit_bytes,
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )?
    .execute(params![namespace, limit, now(), by])?;
    Ok(())
}

pub fn clear_quota(tx: &Transaction, namespace: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM quotas WHERE namespace = ?1")?
        .execute([namespace])?
        > 0)
}

/// Whether `name` is a user (`Some(true)`), a group (`Some(false)`) or neither.
pub fn namespace_owner_is_user(conn: &Connection, name: &str) -> Result<Option<bool>> {
    if super::user_by_name(conn, name)?.is_some() {
        return Ok(Some(true));
    }
    if super::group_exists(conn, name)? {
        return Ok(Some(false));
    }
    Ok(None)
}

// ------------------------------------------------------------------------------------------------
// Scrub
// ------------------------------------------------------------------------------------------------

/// One page of live, not quarantined blobs after `after` (digest order): (digest, size).
pub fn blobs_to_scrub(conn: &Connection, after: &str, limit: i64) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.digest, b.size FROM blobs b
         WHERE b.digest > ?1 AND b.gc_state = 'live'
           AND NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = b.digest)
         ORDER BY b.digest LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether the blob is still recorded and live (GC may have removed it since it was listed).
pub fn blob_is_live(conn: &Connection, digest: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1 AND gc_state = 'live'")?
        .query_row([digest], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Repositories linking `digest`, by name.
pub fn repositories_linking(conn: &Connection, digest: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
         WHERE rb.digest = ?1 ORDER BY r.name",
    )?;
    let rows = stmt.query_map([digest], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a quarantined SIF was built from: (manifest digest, platform).
pub type SifSource = (String, String);

/// Hides a corrupt blob from reads. For a SIF, also forgets the SIF and puts its build job(s)
/// back in the queue so the farm rebuilds it. Returns the SIF's source when it was one.
pub fn quarantine_blob(
    tx: &Transaction,
    digest: &str,
    actual_digest: &str,
    path: &str,
) -> Result<Option<SifSource>> {
    tx.prepare_cached(
        "INSERT INTO blob_quarantine (digest, actual_digest, path, detected_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (digest) DO UPDATE SET actual_digest = excluded.actual_digest,
             path = excluded.path, detected_at = excluded.detected_at",
    )?
    .execute(params![digest, actual_digest, path, now()])?;
    // A corrupt enroot image is its SIF's build output too: the SIF is rebuilt with it.
    let source: Option<(String, SifSource)> = tx
        .prepare_cached(
            "SELECT digest, manifest_digest, platform FROM sifs WHERE digest = ?1
             UNION ALL
             SELECT s.digest, s.manifest_digest, s.platform
             FROM enroot_images e JOIN sifs s ON s.digest = e.sif_digest WHERE e.digest = ?1
             LIMIT 1",
        )?
        .query_row([digest], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .optional()?;
    let Some((sif, source)) = source else {
        return Ok(None);
    };
    // The SIF record held a reference on its blob (see `complete_job`), its enroot row one on
    // its own; a rebuild to the same digests takes them again.
    super::gc::drop_sif_record(tx, &sif, now())?;
    tx.prepare_cached(
        "UPDATE build_jobs SET state = 'queued', attempts = 0, not_before = 0, sif_digest = NULL,
             lease_owner = NULL, lease_expires = NULL, progress = NULL, failure = NULL,
             finished_at = NULL
         WHERE sif_digest = ?1 AND state = 'ready'",
    )?
    .execute([&sif])?;
    Ok(Some(source))
}

/// The SIF whose enroot image `digest` is, if it is one.
pub fn sif_of_enroot_image(conn: &Connection, digest: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT sif_digest FROM enroot_images WHERE digest = ?1")?
        .query_row([digest], |r| r.get(0))
        .optional()?)
}

/// The enroot image built with SIF `digest`, if it has one.
pub fn enroot_image_of_sif(conn: &Connection, digest: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT digest FROM enroot_images WHERE sif_digest = ?1")?
        .query_row([digest], |r| r.get(0))
        .optional()?)
}

/// Whether `digest` is in quarantine.
pub fn is_quarantined(conn: &Connection, digest: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM blob_quarantine WHERE digest = ?1")?
        .query_row([digest], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Db;

    /// Fills a store: `repos` repositories in namespace `big` linking `links` blobs each out of
    /// `distinct` (so blobs are shared), one manifest per repository, a SIF every 10th, and
    /// `others` small namespaces beside it.
    fn fill(db: &Db, repos: i64, links: i64, distinct: i64, others: i64) {
        db.write_blocking(|tx| {
            let t = now();
            for b in 0..distinct {
                tx.execute(
                    "INSERT INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)",
                    params![format!("sha256:{b:064x}"), 1000 + b, t],
                )?;
                if b % 10 == 0 {
                    tx.execute(
                        "INSERT INTO sifs (digest, manifest_digest, platform, size, squashfs_offset, squashfs_size,
                             backend, builder, compression, duration_ms, created_at)
                         VALUES (?1, 'm', 'linux/amd64', ?2, 0, 0, 'native', 'b', 'gzip', 0, 0)",
                        params![format!("sha256:{b:064x}"), 1000 + b],
                    )?;
                }
            }
            for r in 0..repos + others {
                let ns = if r < repos { "big".to_owned() } else { format!("ns{r}") };
                tx.execute(
                    "INSERT INTO repositories (id, name, namespace, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![r + 1, format!("{ns}/r{r}"), ns, t],
                )?;
                let n = if r < repos { links } else { 3 };
                for l in 0..n {
                    tx.execute(
                        "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                        params![r + 1, format!("sha256:{:064x}", (r * 7 + l * 13) % distinct), t],
                    )?;
                }
                tx.execute(
                    "INSERT INTO manifests (repository_id, digest, media_type, kind, size, content, pushed_at)
                     VALUES (?1, ?2, 'x', 'image', 500, x'00', ?3)",
                    params![r + 1, format!("sha256:m{r:063x}"), t],
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn usage_counts_shared_blobs_once_and_splits_sifs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        // 4 repositories x 5 links over 6 distinct blobs: every blob is linked, each counted once.
        fill(&db, 4, 5, 6, 2);
        let u = db
            .read_blocking(|c| namespace_usage(c, Some("big")))
            .unwrap();
        assert_eq!(u.len(), 1);
        let sizes: i64 = (0..6).map(|b| 1000 + b).sum();
        // Blob 0 is the only SIF among the six (every 10th is one): 1000 bytes.
        assert_eq!(u[0].sif_bytes, 1000);
        assert_eq!(u[0].blob_bytes + u[0].sif_bytes, sizes);
        assert_eq!(u[0].manifest_bytes, 4 * 500);
        assert_eq!(u[0].repositories, 4);
        let all = db.read_blocking(|c| namespace_usage(c, None)).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0], u[0]);
    }

    #[test]
    fn quarantining_a_sif_requeues_its_build_and_releases_its_reference() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        fill(&db, 1, 1, 1, 0);
        db.write_blocking(|tx| {
            let sif = format!("sha256:{:064x}", 0);
            // As `complete_job` leaves it: the SIF record holds one reference.
            tx.execute("UPDATE blobs SET ref_count = 1 WHERE digest = ?1", [&sif])?;
            tx.execute(
                "INSERT INTO build_jobs (manifest_digest, platform, repository, state, attempts, sif_digest, created_at)
                 VALUES ('m', 'linux/amd64', 'big/r0', 'ready', 1, ?1, 0)",
                [&sif],
            )?;
            let source = quarantine_blob(tx, &sif, "sha256:other", "/q")?;
            assert_eq!(source, Some(("m".to_owned(), "linux/amd64".to_owned())));
            let (refs, state, attempts, kept): (i64, String, i64, Option<String>) = tx.query_row(
                "SELECT b.ref_count, j.state, j.attempts, j.sif_digest FROM blobs b, build_jobs j
                 WHERE b.digest = ?1",
                [&sif],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            assert_eq!((refs, state.as_str(), attempts, kept), (0, "queued", 0, None));
            assert!(is_quarantined(tx, &sif)?);
            assert!(blobs_to_scrub(tx, "", 10)?.is_empty());
            // Fresh bytes of the same digest heal it.
            crate::meta::link_blob(tx, "big/r0", "big", &sif, 1000)?;
            assert!(!is_quarantined(tx, &sif)?);
            Ok(())
        })
        .unwrap();
    }

    /// Every namespace's counters equal the recount (the recount would repair them: the test
    /// fails on the first drift).
    fn assert_counters_match(db: &Db, step: &str) {
        let namespaces = db.read_blocking(usage_namespaces).unwrap();
        for ns in namespaces {
            let drift = db.write_blocking(|tx| recount_usage(tx, &ns)).unwrap();
            assert_eq!(drift, None, "after {step}");
        }
    }

    fn manifest(
        repo: &str,
        digest: &str,
        blobs: &[(&str, i64)],
        tag: Option<&str>,
    ) -> crate::meta::NewManifest {
        let references = blobs
            .iter()
            .map(|(d, size)| crate::meta::Reference {
                digest: (*d).into(),
                size: *size,
                kind: crate::meta::ReferenceKind::Blob,
            })
            .collect();
        crate::meta::testing::image_manifest(repo, digest, references, tag)
    }

    #[test]
    fn counters_follow_links_manifests_deletes_and_gc_and_a_recount_repairs_drift() {
        use crate::meta::{
            delete_manifest, drop_repository, forget_deleted_blob, link_blob, mark_blob_deleting,
            put_manifest, repository_id, unlink_blob,
        };
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let counted = |ns: &str| db.read_blocking(|c| counted_usage(c, ns)).unwrap();
        db.write_blocking(|tx| {
            // The same layer in two repositories of a namespace, and in another namespace.
            for (repo, ns) in [("alice/a", "alice"), ("alice/b", "alice"), ("bob/x", "bob")] {
                link_blob(tx, repo, ns, "sha256:shared", 1000)?;
            }
            link_blob(tx, "alice/a", "alice", "sha256:own", 10)?;
            link_blob(tx, "alice/a", "alice", "sha256:own", 10)?; // a re-push links nothing new
            Ok(())
        })
        .unwrap();
        assert_eq!(counted("alice"), 1010);
        assert_eq!(counted("bob"), 1000);
        assert_counters_match(&db, "links");
        let m1 = manifest(
            "alice/a",
            "sha256:m1",
            &[("sha256:shared", 1000), ("sha256:own", 10)],
            Some("1"),
        );
        let m1_len = m1.content.len() as i64;
        db.write_blocking(|tx| {
            put_manifest(tx, &m1)?.unwrap();
            put_manifest(tx, &m1)?.unwrap(); // re-push: counted once
                                             // The same manifest in another repository of the namespace: still once.
            put_manifest(
                tx,
                &manifest("alice/b", "sha256:m1", &[("sha256:shared", 1000)], None),
            )?
            .unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(counted("alice"), 1010 + m1_len);
        assert_counters_match(&db, "manifests");
        db.write_blocking(|tx| {
            assert!(delete_manifest(tx, "alice/a", "sha256:m1")?);
            // Still stored in alice/b: nothing subtracted yet.
            Ok(())
        })
        .unwrap();
        assert_eq!(counted("alice"), 1010 + m1_len);
        db.write_blocking(|tx| {
            assert!(delete_manifest(tx, "alice/b", "sha256:m1")?);
            assert!(unlink_blob(tx, "alice/b", "sha256:shared")?);
            assert!(!unlink_blob(tx, "alice/b", "sha256:shared")?);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            counted("alice"),
            1010,
            "alice/a still links the shared layer"
        );
        assert_counters_match(&db, "deletes");
        // GC removes the shared blob from everywhere.
        db.write_blocking(|tx| {
            tx.execute("UPDATE blobs SET ref_count = 0, unreferenced_since = 0", [])?;
            assert!(mark_blob_deleting(tx, "sha256:shared", 0)?);
            assert!(forget_deleted_blob(tx, "sha256:shared")?);
            Ok(())
        })
        .unwrap();
        assert_eq!((counted("alice"), counted("bob")), (10, 0));
        assert_counters_match(&db, "gc");
        // A repository dropped with a manifest and a link only it holds.
        db.write_blocking(|tx| {
            link_blob(tx, "alice/z", "alice", "sha256:z", 5)?;
            put_manifest(
                tx,
                &manifest("alice/z", "sha256:mz", &[("sha256:z", 5)], Some("1")),
            )?
            .unwrap();
            let id = repository_id(tx, "alice/z")?.unwrap();
            drop_repository(tx, id)
        })
        .unwrap();
        assert_eq!(counted("alice"), 10);
        assert_counters_match(&db, "dropped repository");

        // Drift (e.g. a row changed by hand) is reported once, and repaired.
        db.write_blocking(|tx| {
            tx.execute(
                "UPDATE namespace_usage SET blob_bytes = 99 WHERE namespace = 'alice'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let drift = db.write_blocking(|tx| recount_usage(tx, "alice")).unwrap();
        assert_eq!(
            drift,
            Some(UsageDrift {
                namespace: "alice".into(),
                counted_bytes: 99,
                actual_bytes: 10
            })
        );
        assert_counters_match(&db, "repair");
    }

    #[test]
    fn a_store_without_counters_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let db = Db::open(&path).unwrap();
            fill(&db, 4, 5, 6, 2);
            db.write_blocking(|tx| Ok(tx.execute_batch("DROP TABLE namespace_usage")?))
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let u = db
            .read_blocking(|c| namespace_usage(c, Some("big")))
            .unwrap();
        assert_eq!(
            db.read_blocking(|c| counted_usage(c, "big")).unwrap(),
            u[0].total()
        );
        assert_counters_match(&db, "backfill");
    }

    /// Not a timing assertion: a blob commit (quota check + link, one write transaction) into a
    /// namespace of 200,000 blob links with a quota, the old way (summing the namespace) and with
    /// the counters. `bench/quota-commit.sh` runs it.
    #[test]
    #[ignore]
    fn quota_commit_in_a_large_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let started = std::time::Instant::now();
        // 5,000 repositories x 40 links = 200,000 links over 100,000 distinct blobs.
        fill(&db, 5_000, 40, 100_000, 100);
        db.write_blocking(|tx| {
            recount_usage(tx, "big")?;
            set_quota(tx, "big", Some(1 << 50), "bench")
        })
        .unwrap();
        let links: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                     WHERE r.namespace = 'big'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        eprintln!("filled {links} links in {:?}", started.elapsed());
        let defaults = crate::quota::QuotaDefaults::default();
        // (whole commit, the check alone) per variant: the namespace summed as `quota::check`
        // did before the counters, the counter, and no check at all (the commit's own floor:
        // the WAL fsync of `synchronous=FULL`).
        let mut runs: [(Vec<std::time::Duration>, Vec<std::time::Duration>); 3] =
            Default::default();
        for i in 0..20 {
            for (variant, (commits, checks)) in runs.iter_mut().enumerate() {
                let digest = format!("sha256:new{variant}{i:060x}");
                let t = std::time::Instant::now();
                let check = db
                    .write_blocking(|tx| {
                        let c = std::time::Instant::now();
                        match variant {
                            0 => assert!(namespace_usage(tx, Some("big"))?[0].total() > 0),
                            1 => crate::quota::check_stored(
                                tx,
                                &defaults,
                                "big",
                                crate::quota::Stored::Blob(&digest),
                                100,
                            )?
                            .unwrap(),
                            _ => {}
                        }
                        let check = c.elapsed();
                        crate::meta::link_blob(tx, "big/r0", "big", &digest, 100)?;
                        Ok(check)
                    })
                    .unwrap();
                commits.push(t.elapsed());
                checks.push(check);
            }
        }
        for (name, (commits, checks)) in ["namespace summed", "usage counter", "no quota check"]
            .iter()
            .zip(runs.iter_mut())
        {
            commits.sort();
            checks.sort();
            eprintln!(
                "commit with {name:>16}: median {:?} (min {:?}, max {:?}); the check alone: median {:?}",
                commits[commits.len() / 2],
                commits[0],
                commits[commits.len() - 1],
                checks[checks.len() / 2]
            );
        }
        let drift = db.write_blocking(|tx| recount_usage(tx, "big")).unwrap();
        assert_eq!(drift, None, "the counter stayed right through the commits");
    }

    /// Not a timing assertion: prints how long the usage queries take on a large store.
    /// `cargo test --lib usage_query_on_a_large_store -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn usage_query_on_a_large_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let started = std::time::Instant::now();
        fill(&db, 5_000, 40, 100_000, 5_000);
        eprintln!("filled in {:?}", started.elapsed());
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let u = db
                .read_blocking(|c| namespace_usage(c, Some("big")))
                .unwrap();
            eprintln!("namespace_usage(big): {:?} {:?}", t.elapsed(), u[0]);
            let t = std::time::Instant::now();
            let u = db
                .read_blocking(|c| namespace_usage(c, Some("ns5001")))
                .unwrap();
            eprintln!("namespace_usage(small): {:?} {:?}", t.elapsed(), u[0]);
            let t = std::time::Instant::now();
            let all = db.read_blocking(|c| namespace_usage(c, None)).unwrap();
            eprintln!("namespace_usage(all {}): {:?}", all.len(), t.elapsed());
        }
    }
}
