//! SQL of online garbage collection and retention (driven by `crate::lifecycle`).
//!
//! Every query here is indexed: candidates come from the change tables (`gc_*_candidates`) and
//! from `blobs (ref_count, unreferenced_since)`, in LIMIT batches, so a prune costs what changed
//! since the last one and its memory does not grow with the store.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{now, Result};

/// A manifest GC should look at (it may still be anchored).
#[derive(Debug, Clone)]
pub struct ManifestCandidate {
    pub repository_id: i64,
    pub repository: String,
    pub digest: String,
    pub since: i64,
}

/// Why a manifest must stay, if it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Tagged, listed by an index, or a referrer of an existing subject: losing that anchor
    /// makes it a candidate again, so the candidate row can go.
    Durable,
    /// Only a queued or building SIF job keeps it: re-checked at every prune.
    Job,
}

/// A stored manifest as GC sees it.
#[derive(Debug, Clone)]
pub struct GcManifest {
    pub size: i64,
    pub registry_made: bool,
    pub subject: Option<String>,
}

/// A tag and what retention needs to know about it.
#[derive(Debug, Clone)]
pub struct TagUse {
    pub name: String,
    pub digest: String,
    pub pushed_at: i64,
    /// The latest of: pushed, pulled by tag, manifest pulled by digest or SIF-fetched.
    pub last_used: i64,
}

/// A blob GC may remove.
#[derive(Debug, Clone)]
pub struct BlobCandidate {
    pub digest: String,
    pub size: i64,
}

pub fn add_manifest_candidate(tx: &Transaction, repo: i64, digest: &str, since: i64) -> Result<()> {
    // An earlier "due" time wins: a cascade (since = 0) must not be postponed by a later event.
    tx.prepare_cached(
        "INSERT INTO gc_manifest_candidates (repository_id, digest, since) VALUES (?1, ?2, ?3)
         ON CONFLICT (repository_id, digest) DO UPDATE SET since =
             CASE WHEN excluded.since < gc_manifest_candidates.since THEN excluded.since
                  ELSE gc_manifest_candidates.since END",
    )?
    .execute(params![repo, digest, since])?;
    Ok(())
}

pub fn forget_manifest_candidate(tx: &Transaction, repo: i64, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM gc_manifest_candidates WHERE repository_id = ?1 AND digest = ?2",
    )?
    .execute(params![repo, digest])?;
    Ok(())
}

/// The children (index entries) and referrers of `digest` become due at once: the manifest
/// they hang from is being deleted, a decision already made.
pub fn add_dependents_as_candidates(tx: &Transaction, repo: i64, digest: &str) -> Result<()> {
    let mut dependents: Vec<String> = tx
        .prepare_cached(
            "SELECT target_digest FROM manifest_references
             WHERE repository_id = ?1 AND manifest_digest = ?2 AND target_kind = 'manifest'",
        )?
        .query_map(params![repo, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    dependents.extend(
        tx.prepare_cached(
            "SELECT digest FROM manifests WHERE repository_id = ?1 AND subject = ?2",
        )?
        .query_map(params![repo, digest], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?,
    );
    for d in dependents {
        add_manifest_candidate(tx, repo, &d, 0)?;
    }
    Ok(())
}

pub fn add_image_candidate(tx: &Transaction, digest: &str, since: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO gc_image_candidates (digest, since) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
    )?
    .execute(params![digest, since])?;
    Ok(())
}

/// Up to `limit` manifest candidates due by `cutoff`, after the keyset `after` (since, repo, digest).
pub fn manifest_candidates(
    conn: &Connection,
    cutoff: i64,
    after: Option<&(i64, i64, String)>,
    limit: i64,
) -> Result<Vec<ManifestCandidate>> {
    let (s, r, d) = after
        .cloned()
        .unwrap_or((i64::MIN, i64::MIN, String::new()));
    Ok(conn
        .prepare_cached(
            "SELECT c.repository_id, COALESCE(r.name, ''), c.digest, c.since
             FROM gc_manifest_candidates c LEFT JOIN repositories r ON r.id = c.repository_id
             WHERE c.since <= ?1
               AND (c.since > ?2 OR (c.since = ?2 AND (c.repository_id > ?3
                    OR (c.repository_id = ?3 AND c.digest > ?4))))
             ORDER BY c.since, c.repository_id, c.digest LIMIT ?5",
        )?
        .query_map(params![cutoff, s, r, d, limit], |row| {
            Ok(ManifestCandidate {
                repository_id: row.get(0)?,
                repository: row.get(1)?,
                digest: row.get(2)?,
                since: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn gc_manifest(conn: &Connection, repo: i64, digest: &str) -> Result<Option<GcManifest>> {
    Ok(conn
        .prepare_cached(
            "SELECT size, origin, subject FROM manifests WHERE repository_id = ?1 AND digest = ?2",
        )?
        .query_row(params![repo, digest], |r| {
            Ok(GcManifest {
                size: r.get(0)?,
                registry_made: r.get::<_, String>(1)? == "registry",
                subject: r.get(2)?,
            })
        })
        .optional()?)
}

fn exists(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<bool> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(p, |_| Ok(()))
        .optional()?
        .is_some())
}

/// What keeps manifest `digest` of repository `repo` alive, if anything. The registry's own
/// SIF artifacts live while their subject exists and an ORAS tag (`T.sif`) publishes them (one
/// that lost its tag to a moved `T` is unreachable); a client manifest stays while it is
/// tagged, listed by an index, a referrer of an existing manifest, or being built.
pub fn manifest_anchor(
    conn: &Connection,
    repo: i64,
    digest: &str,
    m: &GcManifest,
) -> Result<Option<Anchor>> {
    let subject_exists = match &m.subject {
        Some(s) => exists(
            conn,
            "SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2",
            params![repo, s],
        )?,
        None => false,
    };
    let tagged = exists(
        conn,
        "SELECT 1 FROM tags WHERE repository_id = ?1 AND digest = ?2",
        params![repo, digest],
    )?;
    if m.registry_made {
        return Ok((subject_exists && tagged).then_some(Anchor::Durable));
    }
    if subject_exists
        || tagged
        || exists(
            conn,
            "SELECT 1 FROM manifest_references
             WHERE repository_id = ?1 AND target_digest = ?2 AND target_kind = 'manifest'",
            params![repo, digest],
        )?
    {
        return Ok(Some(Anchor::Durable));
    }
    if exists(
        conn,
        "SELECT 1 FROM build_jobs WHERE manifest_digest = ?1 AND state IN ('queued', 'building')",
        [digest],
    )? {
        return Ok(Some(Anchor::Job));
    }
    Ok(None)
}

/// Up to `limit` image candidates after `after` (digest order).
pub fn image_candidates(conn: &Connection, after: &str, limit: i64) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT digest FROM gc_image_candidates WHERE digest > ?1 ORDER BY digest LIMIT ?2",
        )?
        .query_map(params![after, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn forget_image_candidate(tx: &Transaction, digest: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM gc_image_candidates WHERE digest = ?1")?
        .execute([digest])?;
    Ok(())
}

/// Whether a SIF of image `digest` is being built (its result is dropped at a later prune).
pub fn image_building(conn: &Connection, digest: &str) -> Result<bool> {
    exists(
        conn,
        "SELECT 1 FROM build_jobs WHERE manifest_digest = ?1 AND state = 'building'",
        [digest],
    )
}

/// Whether any repository holds manifest `digest`.
pub fn manifest_exists_anywhere(conn: &Connection, digest: &str) -> Result<bool> {
    exists(conn, "SELECT 1 FROM manifests WHERE digest = ?1", [digest])
}

/// Drops the SIF records (with their enroot images) and finished/queued jobs of an image no
/// repository holds. Returns what was dropped (`"sif"` or `"enroot"`, digest, size); their
/// blobs lose the record's reference. A job still building is left to finish (its result is
/// dropped at a later prune).
pub fn drop_image_sifs(tx: &Transaction, image: &str) -> Result<Vec<(&'static str, String, i64)>> {
    let sifs: Vec<(String, i64)> = tx
        .prepare_cached("SELECT digest, size FROM sifs WHERE manifest_digest = ?1")?
        .query_map([image], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let t = now();
    let mut dropped = Vec::with_capacity(sifs.len() * 2);
    for (sif, size) in sifs {
        if let Some((enroot, enroot_size)) = drop_sif_record(tx, &sif, t)? {
            dropped.push(("enroot", enroot, enroot_size));
        }
        dropped.push(("sif", sif, size));
    }
    tx.prepare_cached("DELETE FROM build_jobs WHERE manifest_digest = ?1 AND state <> 'building'")?
        .execute([image])?;
    Ok(dropped)
}

/// Deletes the record of SIF `sif` and its enroot image's row, releasing the reference each
/// held on its blob; returns the enroot image (digest, size) it had.
pub(super) fn drop_sif_record(
    tx: &Transaction,
    sif: &str,
    t: i64,
) -> Result<Option<(String, i64)>> {
    let enroot: Option<(String, i64)> = tx
        .prepare_cached("SELECT digest, size FROM enroot_images WHERE sif_digest = ?1")?
        .query_row([sif], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((digest, _)) = &enroot {
        tx.prepare_cached("DELETE FROM enroot_images WHERE sif_digest = ?1")?
            .execute([sif])?;
        release_blob(tx, digest, t)?;
    }
    // A derivation for a SIF that is gone has nothing left to complete.
    tx.prepare_cached("DELETE FROM enroot_jobs WHERE sif_digest = ?1")?
        .execute([sif])?;
    tx.prepare_cached("DELETE FROM sifs WHERE digest = ?1")?
        .execute([sif])?;
    release_blob(tx, sif, t)?;
    Ok(enroot)
}

/// One reference on a blob is gone.
fn release_blob(tx: &Transaction, digest: &str, t: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE blobs SET ref_count = ref_count - 1,
             unreferenced_since = CASE WHEN ref_count - 1 <= 0 THEN ?2 ELSE unreferenced_since END
         WHERE digest = ?1",
    )?
    .execute(params![digest, t])?;
    Ok(())
}

/// Up to `limit` blobs unreferenced since `cutoff` or earlier and still live.
pub fn blob_candidates(conn: &Connection, cutoff: i64, limit: i64) -> Result<Vec<BlobCandidate>> {
    Ok(conn
        .prepare_cached(
            "SELECT digest, size FROM blobs
             WHERE ref_count = 0 AND unreferenced_since <= ?1 AND gc_state = 'live'
             ORDER BY unreferenced_since, digest LIMIT ?2",
        )?
        .query_map(params![cutoff, limit], |r| {
            Ok(BlobCandidate {
                digest: r.get(0)?,
                size: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Step 1 of a blob's removal: 'deleting', only if nothing referenced it meanwhile. From now
/// on a manifest PUT naming it fails with BLOB_UNKNOWN and a mount is refused.
pub fn mark_blob_deleting(tx: &Transaction, digest: &str, cutoff: i64) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE blobs SET gc_state = 'deleting'
             WHERE digest = ?1 AND ref_count = 0 AND unreferenced_since <= ?2 AND gc_state = 'live'",
        )?
        .execute(params![digest, cutoff])?;
    Ok(n > 0)
}

/// The blob's GC state, if it exists.
pub fn blob_gc_state(conn: &Connection, digest: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT gc_state FROM blobs WHERE digest = ?1")?
        .query_row([digest], |r| r.get(0))
        .optional()?)
}

/// Step 3: the bytes are gone; drop the row and every repository link, unless an upload of the
/// same bytes resurrected it meanwhile (then it is 'live' again and stays). True if dropped.
pub fn forget_deleted_blob(tx: &Transaction, digest: &str) -> Result<bool> {
    if blob_gc_state(tx, digest)?.as_deref() != Some("deleting") {
        return Ok(false);
    }
    super::quota::count_blob_forgotten(tx, digest)?;
    tx.prepare_cached("DELETE FROM repository_blobs WHERE digest = ?1")?
        .execute([digest])?;
    tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1 AND gc_state = 'deleting'")?
        .execute([digest])?;
    Ok(true)
}

/// Blobs left 'deleting' by a crash between the steps: back to 'live' if their file survived
/// (the caller checks), so the next prune reconsiders them.
pub fn blobs_in_state_deleting(conn: &Connection, limit: i64) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT digest FROM blobs WHERE gc_state = 'deleting' LIMIT ?1")?
        .query_map([limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Repositories after `after` (name order), with ids, for retention.
pub fn repositories_page(conn: &Connection, after: &str, limit: i64) -> Result<Vec<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT id, name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?
        .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The client tags of a repository (not the registry's derived tags), newest push first.
pub fn tag_uses(conn: &Connection, repo: i64) -> Result<Vec<TagUse>> {
    Ok(conn
        .prepare_cached(
            "SELECT t.name, t.digest, t.pushed_at, t.last_pulled_at, m.last_pulled_at
             FROM tags t LEFT JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
             WHERE t.repository_id = ?1 AND t.origin = 'client'
             ORDER BY t.pushed_at DESC, t.name",
        )?
        .query_map([repo], |r| {
            Ok(TagUse {
                name: r.get(0)?,
                digest: r.get(1)?,
                pushed_at: r.get(2)?,
                // Computed here: multi-argument MAX is SQLite's, GREATEST PostgreSQL's.
                last_used: [
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                ]
                .into_iter()
                .max()
                .unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Deletes a tag on behalf of retention: its manifest becomes due at once (the policy decided).
pub fn retention_delete_tag(tx: &Transaction, repository: &str, tag: &str) -> Result<bool> {
    let Some(repo) = super::repository_id(tx, repository)? else {
        return Ok(false);
    };
    let Some(digest) = super::tag_digest(tx, repository, tag)? else {
        return Ok(false);
    };
    super::delete_tag(tx, repository, tag)?;
    add_manifest_candidate(tx, repo, &digest, 0)?;
    Ok(true)
}

/// Up to `limit` manifest digests of a repository (for deleting it).
pub fn repository_manifests(conn: &Connection, repo: i64, limit: i64) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT digest FROM manifests WHERE repository_id = ?1 LIMIT ?2")?
        .query_map(params![repo, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Removes what is left of a repository (tags, blob links, candidates, the row). Manifests must
/// have been deleted with [`super::delete_manifest`] first, so reference counts are right.
pub fn drop_repository(tx: &Transaction, repo: i64) -> Result<()> {
    super::quota::count_repository_dropped(tx, repo)?;
    for sql in [
        "DELETE FROM tags WHERE repository_id = ?1",
        "DELETE FROM repository_blobs WHERE repository_id = ?1",
        "DELETE FROM gc_manifest_candidates WHERE repository_id = ?1",
        "DELETE FROM repositories WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([repo])?;
    }
    Ok(())
}

/// Savepoints make a dry run: the whole prune runs in one transaction that is rolled back, so
/// the plan is exactly what the run would do. Portable (PostgreSQL has the same statements).
/// Removes up to `limit` outbox events the farm consumed before `cutoff`; returns how many.
/// The outbox is a hand-off, not a history (the audit trail is that), so it must not grow forever.
pub fn forget_consumed_events(tx: &Transaction, cutoff: i64, limit: i64) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events
             WHERE consumed_at IS NOT NULL AND consumed_at < ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![cutoff, limit])?)
}

pub fn savepoint(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute_batch(&format!("SAVEPOINT {name}"))?;
    Ok(())
}

pub fn rollback_to(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute_batch(&format!(
        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
    ))?;
    Ok(())
}

/// A blob left 'deleting' by a crash whose file survived: live again, reconsidered later.
pub fn revive_blob(tx: &Transaction, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE blobs SET gc_state = 'live', unreferenced_since = ?2 WHERE digest = ?1 AND gc_state = 'deleting'",
    )?
    .execute(params![digest, now()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{
        delete_manifest, link_blob, put_manifest, Db, ManifestRejection, NewManifest, Reference,
        ReferenceKind,
    };

    fn manifest(digest: &str, refs: &[(&str, ReferenceKind)], tag: Option<&str>) -> NewManifest {
        let references = refs
            .iter()
            .map(|(d, kind)| Reference {
                digest: (*d).into(),
                size: 1,
                kind: *kind,
            })
            .collect();
        NewManifest {
            content: b"{}".to_vec(),
            ..crate::meta::testing::image_manifest("alice/x", digest, references, tag)
        }
    }

    fn ref_count(db: &Db, digest: &str) -> i64 {
        db.read_blocking(|c| {
            Ok(c.query_row(
                "SELECT ref_count FROM blobs WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )?)
        })
        .unwrap()
    }

    /// Claims the job of image `sha256:m1` as `w` and records SIF `sha256:s` with enroot
    /// image `sha256:e` (7 bytes).
    fn build_with_enroot(db: &Db) {
        db.write_blocking(|tx| {
            crate::meta::enqueue_build(tx, "sha256:m1", "linux/amd64", "alice/x")?;
            let job = crate::meta::claim_job(tx, "w", "native", 60)?.expect("a job to claim");
            let sif = crate::meta::Sif {
                digest: "sha256:s".into(),
                manifest_digest: "sha256:m1".into(),
                platform: "linux/amd64".into(),
                size: 1,
                squashfs_offset: 0,
                squashfs_size: 1,
                backend: "native".into(),
                builder: "w".into(),
                compression: "gzip".into(),
                duration_ms: 0,
                created_at: 0,
                enroot: Some(crate::meta::EnrootImage {
                    digest: "sha256:e".into(),
                    size: 7,
                }),
            };
            assert!(crate::meta::complete_job(tx, job.id, "w", &sif, "log")?);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_enroot_image_is_held_and_dropped_with_its_sif() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        db.write_blocking(|tx| {
            for d in ["sha256:l", "sha256:s", "sha256:e"] {
                link_blob(tx, "alice/x", "alice", d, 1)?;
            }
            Ok(())
        })
        .unwrap();
        let m = manifest("sha256:m1", &[("sha256:l", ReferenceKind::Blob)], Some("1"));
        db.write_blocking(|tx| put_manifest(tx, &m))
            .unwrap()
            .unwrap();
        build_with_enroot(&db);
        assert_eq!(
            (ref_count(&db, "sha256:s"), ref_count(&db, "sha256:e")),
            (1, 1)
        );
        let sif = db
            .read_blocking(|c| crate::meta::sif_by_digest(c, "sha256:s"))
            .unwrap()
            .unwrap();
        assert_eq!(
            sif.enroot.map(|e| (e.digest, e.size)),
            Some(("sha256:e".into(), 7))
        );

        // A corrupt enroot image is a corrupt build: both records go, the job is queued again.
        let source = db
            .write_blocking(|tx| crate::meta::quarantine_blob(tx, "sha256:e", "sha256:x", "/q"))
            .unwrap();
        assert_eq!(source, Some(("sha256:m1".into(), "linux/amd64".into())));
        assert_eq!(
            (ref_count(&db, "sha256:s"), ref_count(&db, "sha256:e")),
            (0, 0)
        );
        assert!(db
            .read_blocking(|c| crate::meta::sif_by_digest(c, "sha256:s"))
            .unwrap()
            .is_none());

        // Rebuilt, then the image is deleted: GC drops the SIF and its enroot image together.
        build_with_enroot(&db);
        assert_eq!(
            (ref_count(&db, "sha256:s"), ref_count(&db, "sha256:e")),
            (1, 1)
        );
        db.write_blocking(|tx| delete_manifest(tx, "alice/x", "sha256:m1"))
            .unwrap();
        let dropped = db
            .write_blocking(|tx| drop_image_sifs(tx, "sha256:m1"))
            .unwrap();
        assert_eq!(
            dropped,
            vec![
                ("enroot", "sha256:e".to_owned(), 7),
                ("sif", "sha256:s".to_owned(), 1)
            ]
        );
        assert_eq!(
            (ref_count(&db, "sha256:s"), ref_count(&db, "sha256:e")),
            (0, 0)
        );
        let left: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row("SELECT COUNT(*) FROM enroot_images", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn reference_counts_and_the_deleting_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        db.write_blocking(|tx| {
            link_blob(tx, "alice/x", "alice", "sha256:a", 1)?;
            link_blob(tx, "alice/x", "alice", "sha256:b", 1)
        })
        .unwrap();
        // A digest listed twice is one reference; a foreign layer is none.
        let m = manifest(
            "sha256:m1",
            &[
                ("sha256:a", ReferenceKind::Blob),
                ("sha256:a", ReferenceKind::Blob),
                ("sha256:foreign", ReferenceKind::OptionalBlob),
            ],
            Some("1"),
        );
        db.write_blocking(|tx| put_manifest(tx, &m))
            .unwrap()
            .unwrap();
        assert_eq!(ref_count(&db, "sha256:a"), 1);
        db.write_blocking(|tx| delete_manifest(tx, "alice/x", "sha256:m1"))
            .unwrap();
        assert_eq!(ref_count(&db, "sha256:a"), 0);
        // Deleting the manifest made its digest an image candidate (its SIFs may go).
        assert_eq!(
            db.read_blocking(|c| image_candidates(c, "", 10)).unwrap(),
            vec!["sha256:m1".to_owned()]
        );

        // 'deleting' blocks a manifest PUT (BLOB_UNKNOWN upstream) ...
        let cutoff = now() + 1;
        assert!(db
            .write_blocking(|tx| mark_blob_deleting(tx, "sha256:b", cutoff))
            .unwrap());
        let m2 = manifest("sha256:m2", &[("sha256:b", ReferenceKind::Blob)], None);
        let rejected = db.write_blocking(|tx| put_manifest(tx, &m2)).unwrap();
        assert!(matches!(rejected, Err(ManifestRejection::Missing { .. })));
        // ... an upload of the same bytes resurrects it, and GC then leaves the row alone.
        db.write_blocking(|tx| link_blob(tx, "alice/x", "alice", "sha256:b", 1))
            .unwrap();
        assert_eq!(
            db.read_blocking(|c| blob_gc_state(c, "sha256:b"))
                .unwrap()
                .as_deref(),
            Some("live")
        );
        assert!(!db
            .write_blocking(|tx| forget_deleted_blob(tx, "sha256:b"))
            .unwrap());
        db.write_blocking(|tx| put_manifest(tx, &m2))
            .unwrap()
            .unwrap();
        // Referenced blobs cannot be marked.
        assert!(!db
            .write_blocking(|tx| mark_blob_deleting(tx, "sha256:b", cutoff))
            .unwrap());
        // The untagged push is a manifest candidate; the tag move leaves one for the old digest.
        let cands = db
            .read_blocking(|c| manifest_candidates(c, i64::MAX, None, 10))
            .unwrap();
        assert_eq!(cands.len(), 1);
        assert_eq!(cands[0].digest, "sha256:m2");
    }

    #[test]
    fn consumed_events_are_forgotten_pending_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        // Two manifests pushed: two outbox events; the farm consumes the first.
        db.write_blocking(|tx| {
            link_blob(tx, "alice/x", "alice", "sha256:a", 1)?;
            for m in ["sha256:m1", "sha256:m2"] {
                let r = put_manifest(tx, &manifest(m, &[("sha256:a", ReferenceKind::Blob)], None))?;
                assert!(r.is_ok());
            }
            Ok(())
        })
        .unwrap();
        let pending = db
            .read_blocking(|c| crate::meta::pending_events(c, 0, 10))
            .unwrap();
        assert!(pending.len() >= 2, "{pending:?}");
        let first = pending[0].id;
        db.write_blocking(|tx| crate::meta::mark_event_consumed(tx, first))
            .unwrap();
        // Not yet past the cutoff: kept.
        let gone = db
            .write_blocking(|tx| forget_consumed_events(tx, now() - 60, 100))
            .unwrap();
        assert_eq!(gone, 0);
        let gone = db
            .write_blocking(|tx| forget_consumed_events(tx, now() + 60, 100))
            .unwrap();
        assert_eq!(gone, 1);
        let left = db
            .read_blocking(|c| crate::meta::pending_events(c, 0, 10))
            .unwrap();
        assert_eq!(left.len(), pending.len() - 1, "pending events stay");
    }
}
