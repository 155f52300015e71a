//! The statements the registry runs, one function each, named after what they answer.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{now, Result};

/// A manifest as stored: the exact bytes and how to label them.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// Just enough about a manifest to answer a HEAD.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
}

/// What a new manifest references, checked and counted inside the write transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub digest: String,
    /// The size the manifest declares for it.
    pub size: i64,
    pub kind: ReferenceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    Blob,
    /// A blob that the registry need not hold (foreign / non-distributable layers).
    OptionalBlob,
    Manifest,
}

impl ReferenceKind {
    fn column(self) -> &'static str {
        match self {
            ReferenceKind::Blob => "blob",
            // Not counted in `blobs.ref_count` (the registry need not hold it), so it must not
            // be decremented when the manifest goes either.
            ReferenceKind::OptionalBlob => "foreign",
            ReferenceKind::Manifest => "manifest",
        }
    }
}

/// A manifest about to be stored.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repository: String,
    pub namespace: String,
    pub digest: String,
    pub media_type: String,
    pub kind: &'static str,
    /// True for manifests the registry itself makes (the ORAS SIF artifacts).
    pub registry_made: bool,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub annotations: Option<String>,
    pub content: Vec<u8>,
    pub references: Vec<Reference>,
    pub tag: Option<String>,
}

/// Why a manifest could not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRejection {
    /// A referenced blob or child manifest is not in the repository.
    Missing { digest: String, kind: ReferenceKind },
    /// A descriptor's size disagrees with the stored content.
    SizeMismatch {
        digest: String,
        declared: i64,
        actual: i64,
    },
}

/// One entry of a referrers response.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// An outbox event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub repository: String,
    pub digest: String,
    pub tag: Option<String>,
    pub media_type: Option<String>,
}

pub fn repository_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn ensure_repository(tx: &Transaction, name: &str, namespace: &str) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO repositories (name, namespace, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, namespace, now()])?;
    Ok(tx
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// Records a committed blob (once) and links it into a repository.
pub fn link_blob(
    tx: &Transaction,
    repository: &str,
    namespace: &str,
    digest: &str,
    size: i64,
) -> Result<()> {
    let repo = ensure_repository(tx, repository, namespace)?;
    let t = now();
    // A blob that GC was deleting is brought back to life by a new upload of the same bytes.
    tx.prepare_cached(
        "INSERT INTO blobs (digest, size, created_at, ref_count, unreferenced_since, gc_state)
         VALUES (?1, ?2, ?3, 0, ?3, 'live')
         ON CONFLICT (digest) DO UPDATE SET gc_state = 'live',
             unreferenced_since = CASE WHEN blobs.ref_count = 0 THEN ?3 ELSE NULL END",
    )?
    .execute(params![digest, size, t])?;
    let linked = tx
        .prepare_cached(
            "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )?
        .execute(params![repo, digest, t])?;
    if linked > 0 {
        super::quota::count_link(tx, repo, namespace, digest)?;
    }
    // Fresh verified bytes heal a blob that a scrub quarantined.
    tx.prepare_cached("DELETE FROM blob_quarantine WHERE digest = ?1")?
        .execute([digest])?;
    Ok(())
}

/// The size of a blob if `repository` holds it (and GC is not removing it).
pub fn blob_in_repository(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT b.size FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repository_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1 AND rb.digest = ?2 AND b.gc_state = 'live'
               AND NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = b.digest)",
        )?
        .query_row([repository, digest], |r| r.get(0))
        .optional()?)
}

/// Removes a blob from a repository (the bytes stay until GC finds them unreferenced).
pub fn unlink_blob(tx: &Transaction, repository: &str, digest: &str) -> Result<bool> {
    let found: Option<(i64, String)> = tx
        .prepare_cached("SELECT id, namespace FROM repositories WHERE name = ?1")?
        .query_row([repository], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((repo, namespace)) = found else {
        return Ok(false);
    };
    let n = tx
        .prepare_cached("DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2")?
        .execute(params![repo, digest])?;
    if n > 0 {
        super::quota::count_unlink(tx, repo, &namespace, digest)?;
    }
    Ok(n > 0)
}

/// Resolves a tag to the manifest digest it points at.
pub fn tag_digest(conn: &Connection, repository: &str, tag: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ?1 AND t.name = ?2",
        )?
        .query_row([repository, tag], |r| r.get(0))
        .optional()?)
}

pub fn manifest_by_digest(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Option<StoredManifest>> {
    stored_manifest(
        conn,
        "SELECT m.digest, m.media_type, m.content FROM manifests m
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ?1 AND m.digest = ?2",
        [repository, digest],
    )
}

pub fn manifest_by_tag(
    conn: &Connection,
    repository: &str,
    tag: &str,
) -> Result<Option<StoredManifest>> {
    stored_manifest(conn, MANIFEST_BY_TAG, [repository, tag])
}

/// The query behind every pull by tag (the hot path of a job start).
const MANIFEST_BY_TAG: &str = "SELECT m.digest, m.media_type, m.content FROM tags t
     JOIN repositories r ON r.id = t.repository_id
     JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
     WHERE r.name = ?1 AND t.name = ?2";

/// The one manifest `sql` (selecting digest, media type, content) finds, if any.
fn stored_manifest(
    conn: &Connection,
    sql: &str,
    params: [&str; 2],
) -> Result<Option<StoredManifest>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params, |r| {
            Ok(StoredManifest {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                content: r.get(2)?,
            })
        })
        .optional()?)
}

pub fn manifest_head(
    conn: &Connection,
    repository: &str,
    digest: &str,
) -> Result<Option<ManifestHead>> {
    Ok(conn
        .prepare_cached(
            "SELECT m.digest, m.media_type, m.size FROM manifests m
             JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = ?1 AND m.digest = ?2",
        )?
        .query_row([repository, digest], |r| {
            Ok(ManifestHead {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                size: r.get(2)?,
            })
        })
        .optional()?)
}

/// Stores a manifest, its references, its tag and the outbox events in one transaction.
/// Re-pushing identical bytes only refreshes the push time (and moves the tag).
pub fn put_manifest(tx: &Transaction, m: &NewManifest) -> Result<Result<(), ManifestRejection>> {
    let repo = ensure_repository(tx, &m.repository, &m.namespace)?;
    if let Some(rejection) = check_references(tx, repo, &m.references)? {
        return Ok(Err(rejection));
    }
    let t = now();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO manifests (repository_id, digest, media_type, kind, artifact_type, subject,
                                    annotations, size, content, pushed_at, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )?
        .execute(params![
            repo,
            m.digest,
            m.media_type,
            m.kind,
            m.artifact_type,
            m.subject,
            m.annotations,
            m.content.len() as i64,
            m.content,
            t,
            if m.registry_made { "registry" } else { "client" }
        ])?
        > 0;
    if inserted {
        super::quota::count_manifest_added(
            tx,
            repo,
            &m.namespace,
            &m.digest,
            m.content.len() as i64,
        )?;
        for r in &m.references {
            let added = tx
                .prepare_cached(
                    "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, target_kind)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![repo, m.digest, r.digest, r.kind.column()])?;
            // A digest listed twice (config = layer, a repeated layer) is one reference row, so
            // it counts once: delete_manifest decrements once per row.
            if added > 0 && r.kind == ReferenceKind::Blob {
                tx.prepare_cached(
                    "UPDATE blobs SET ref_count = ref_count + 1, unreferenced_since = NULL WHERE digest = ?1",
                )?
                .execute([&r.digest])?;
            }
        }
        insert_event(
            tx,
            "manifest_pushed",
            &m.repository,
            &m.digest,
            None,
            Some(&m.media_type),
        )?;
        // Pushed without a tag (index children, referrers, push by digest): GC looks at it once
        // the grace period has passed, by which time its index or subject usually exists.
        if m.tag.is_none() {
            super::gc::add_manifest_candidate(tx, repo, &m.digest, t)?;
        }
    } else {
        tx.prepare_cached(
            "UPDATE manifests SET pushed_at = ?3 WHERE repository_id = ?1 AND digest = ?2",
        )?
        .execute(params![repo, m.digest, t])?;
    }
    if let Some(tag) = &m.tag {
        let previous: Option<(String, String)> = tx
            .prepare_cached(
                "SELECT digest, origin FROM tags WHERE repository_id = ?1 AND name = ?2",
            )?
            .query_row(params![repo, tag], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let origin = tag_origin(m.registry_made);
        if m.registry_made && previous.as_ref().is_some_and(|(_, o)| o == "client") {
            // A client tag of this name wins: the derived tag is not published (and the
            // manifest just stored is unanchored, so GC takes it after the grace period).
            super::gc::add_manifest_candidate(tx, repo, &m.digest, t)?;
            return Ok(Ok(()));
        }
        if let Some((previous, _)) = previous.filter(|(p, _)| p != &m.digest) {
            // The tag moved away: the old manifest may have lost its last anchor.
            super::gc::add_manifest_candidate(tx, repo, &previous, t)?;
        }
        // A client push of a name the registry derived takes the name over (origin 'client').
        tx.prepare_cached(
            "INSERT INTO tags (repository_id, name, digest, pushed_at, origin) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest,
                 pushed_at = excluded.pushed_at, origin = excluded.origin",
        )?
        .execute(params![repo, tag, m.digest, t, origin])?;
        insert_event(
            tx,
            "tag_pushed",
            &m.repository,
            &m.digest,
            Some(tag),
            Some(&m.media_type),
        )?;
    }
    Ok(Ok(()))
}

/// The `tags.origin` of a tag written with a manifest.
fn tag_origin(registry_made: bool) -> &'static str {
    if registry_made {
        "registry"
    } else {
        "client"
    }
}

/// Whether `repository` has a tag `tag` that a client pushed (derived tags never shadow one).
pub fn client_tag_exists(conn: &Connection, repository: &str, tag: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ?1 AND t.name = ?2 AND t.origin = 'client'",
        )?
        .query_row([repository, tag], |_| Ok(()))
        .optional()?
        .is_some())
}

fn check_references(
    tx: &Transaction,
    repo: i64,
    refs: &[Reference],
) -> Result<Option<ManifestRejection>> {
    for r in refs {
        let actual: Option<i64> = match r.kind {
            ReferenceKind::OptionalBlob => continue,
            ReferenceKind::Blob => tx
                .prepare_cached(
                    "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repository_id = ?1 AND rb.digest = ?2 AND b.gc_state = 'live'
                       AND NOT EXISTS (SELECT 1 FROM blob_quarantine q WHERE q.digest = b.digest)",
                )?
                .query_row(params![repo, r.digest], |row| row.get(0))
                .optional()?,
            ReferenceKind::Manifest => tx
                .prepare_cached(
                    "SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                )?
                .query_row(params![repo, r.digest], |row| row.get(0))
                .optional()?,
        };
        match actual {
            None => {
                return Ok(Some(ManifestRejection::Missing {
                    digest: r.digest.clone(),
                    kind: r.kind,
                }))
            }
            Some(actual) if actual != r.size => {
                return Ok(Some(ManifestRejection::SizeMismatch {
                    digest: r.digest.clone(),
                    declared: r.size,
                    actual,
                }))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

fn insert_event(
    tx: &Transaction,
    kind: &str,
    repository: &str,
    digest: &str,
    tag: Option<&str>,
    media_type: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (kind, repository, digest, tag, media_type, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![kind, repository, digest, tag, media_type, now()])?;
    Ok(())
}

/// Deletes a manifest and every tag pointing at it. Returns false if it was not there.
pub fn delete_manifest(tx: &Transaction, repository: &str, digest: &str) -> Result<bool> {
    let Some(repo) = repository_id(tx, repository)? else {
        return Ok(false);
    };
    let blobs: Vec<String> = tx
        .prepare_cached(
            "SELECT target_digest FROM manifest_references
             WHERE repository_id = ?1 AND manifest_digest = ?2 AND target_kind = 'blob'",
        )?
        .query_map(params![repo, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Its children and referrers lose an anchor; GC re-checks them at the next prune.
    super::gc::add_dependents_as_candidates(tx, repo, digest)?;
    let size: Option<i64> = tx
        .prepare_cached("SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .query_row(params![repo, digest], |r| r.get(0))
        .optional()?;
    let n = tx
        .prepare_cached("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .execute(params![repo, digest])?;
    let Some(size) = size.filter(|_| n > 0) else {
        return Ok(false);
    };
    super::quota::count_manifest_removed(tx, repo, digest, size)?;
    let t = now();
    for blob in blobs {
        tx.prepare_cached(
            "UPDATE blobs SET ref_count = ref_count - 1,
                 unreferenced_since = CASE WHEN ref_count - 1 <= 0 THEN ?2 ELSE unreferenced_since END
             WHERE digest = ?1",
        )?
        .execute(params![blob, t])?;
    }
    // Each tag that goes with the manifest is announced like a tag delete, so that what hangs on
    // it goes too (the farm drops `T.sif` when `T` goes, whichever way `T` was removed).
    let tags: Vec<String> = tx
        .prepare_cached("SELECT name FROM tags WHERE repository_id = ?1 AND digest = ?2")?
        .query_map(params![repo, digest], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND digest = ?2")?
        .execute(params![repo, digest])?;
    for tag in &tags {
        insert_event(tx, "tag_deleted", repository, digest, Some(tag), None)?;
    }
    super::gc::forget_manifest_candidate(tx, repo, digest)?;
    // If no repository holds the digest any more, its SIFs go at the next prune.
    super::gc::add_image_candidate(tx, digest, t)?;
    insert_event(tx, "manifest_deleted", repository, digest, None, None)?;
    Ok(true)
}

/// Deletes one tag (the manifest stays). Returns false if there was no such tag.
pub fn delete_tag(tx: &Transaction, repository: &str, tag: &str) -> Result<bool> {
    let Some(digest) = tag_digest(tx, repository, tag)? else {
        return Ok(false);
    };
    tx.prepare_cached(
        "DELETE FROM tags WHERE name = ?2 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
    )?
    .execute([repository, tag])?;
    if let Some(repo) = repository_id(tx, repository)? {
        super::gc::add_manifest_candidate(tx, repo, &digest, now())?;
    }
    insert_event(tx, "tag_deleted", repository, &digest, Some(tag), None)?;
    Ok(true)
}

/// Up to `limit` client tags after `last`, in lexical (byte) order; `None` if the repository is
/// unknown. Derived tags (`origin = 'registry'`) are left out in SQL, so `n`/`last` pages are
/// exact: a client sees precisely the tags it pushed.
pub fn list_tags(
    conn: &Connection,
    repository: &str,
    last: Option<&str>,
    limit: i64,
) -> Result<Option<Vec<String>>> {
    let Some(repo) = repository_id(conn, repository)? else {
        return Ok(None);
    };
    let tags = conn
        .prepare_cached(
            "SELECT name FROM tags WHERE repository_id = ?1 AND origin = 'client' AND name > ?2
             ORDER BY name LIMIT ?3",
        )?
        .query_map(params![repo, last.unwrap_or(""), limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(tags))
}

/// Up to `limit` repository names after `last`, in lexical order.
pub fn list_repositories(conn: &Connection, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?
        .query_map(params![last.unwrap_or(""), limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Manifests in `repository` whose subject is `subject`, optionally of one artifact type.
/// Without a filter only client-pushed manifests are listed: the SIF artifacts the registry
/// derives itself appear when asked for by their artifact type, so that tools walking the
/// referrers of an image (signatures, SBOMs) see exactly what users pushed.
pub fn referrers(
    conn: &Connection,
    repository: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<Vec<Referrer>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ?1 AND m.subject = ?2
           AND ((?3 IS NULL AND m.origin = 'client') OR m.artifact_type = ?3)
         ORDER BY m.digest",
    )?;
    let rows = stmt.query_map(params![repository, subject, artifact_type], |r| {
        Ok(Referrer {
            digest: r.get(0)?,
            media_type: r.get(1)?,
            size: r.get(2)?,
            artifact_type: r.get(3)?,
            annotations: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Last-pull times, flushed in batches so that pulls never wait on a write.
pub fn record_pulls(tx: &Transaction, pulls: &[(String, String, i64)]) -> Result<()> {
    for (repository, reference, at) in pulls {
        let repo = match repository_id(tx, repository)? {
            Some(r) => r,
            None => continue,
        };
        if reference.contains(':') {
            tx.prepare_cached(
                "UPDATE manifests SET last_pulled_at = ?3 WHERE repository_id = ?1 AND digest = ?2",
            )?
            .execute(params![repo, reference, at])?;
        } else {
            tx.prepare_cached(
                "UPDATE tags SET last_pulled_at = ?3 WHERE repository_id = ?1 AND name = ?2",
            )?
            .execute(params![repo, reference, at])?;
            tx.prepare_cached(
                "UPDATE manifests SET last_pulled_at = ?3 WHERE repository_id = ?1
                 AND digest = (SELECT digest FROM tags WHERE repository_id = ?1 AND name = ?2)",
            )?
            .execute(params![repo, reference, at])?;
            // A pull of a derived tag (`T.sif`) is a use of the image it was built from, and of
            // the indexes listing that image, so retention's `unused_after` sees it through `T`.
            tx.prepare_cached(
                "UPDATE manifests SET last_pulled_at = ?3 WHERE repository_id = ?1
                 AND digest IN (
                     SELECT m.subject FROM tags t
                     JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                     WHERE t.repository_id = ?1 AND t.name = ?2 AND t.origin = 'registry'
                     UNION
                     SELECT mr.manifest_digest FROM manifest_references mr
                     JOIN manifests m ON m.repository_id = mr.repository_id AND m.subject = mr.target_digest
                     JOIN tags t ON t.repository_id = m.repository_id AND t.digest = m.digest
                     WHERE mr.repository_id = ?1 AND mr.target_kind = 'manifest'
                       AND t.name = ?2 AND t.origin = 'registry')",
            )?
            .execute(params![repo, reference, at])?;
        }
    }
    Ok(())
}

/// Unconsumed events after `after_id`, oldest first.
pub fn pending_events(conn: &Connection, after_id: i64, limit: i64) -> Result<Vec<Event>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, kind, repository, digest, tag, media_type FROM events
             WHERE consumed_at IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after_id, limit], |r| {
            Ok(Event {
                id: r.get(0)?,
                kind: r.get(1)?,
                repository: r.get(2)?,
                digest: r.get(3)?,
                tag: r.get(4)?,
                media_type: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn mark_event_consumed(tx: &Transaction, id: i64) -> Result<()> {
    tx.prepare_cached("UPDATE events SET consumed_at = ?2 WHERE id = ?1")?
        .execute(params![id, now()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{pending_events, repository_id, tag_uses, Db};

    fn manifest(digest: &str, tag: &str, registry_made: bool) -> NewManifest {
        NewManifest {
            repository: "alice/x".into(),
            namespace: "alice".into(),
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            kind: if registry_made { "artifact" } else { "image" },
            registry_made,
            artifact_type: None,
            subject: registry_made.then(|| "sha256:image".to_owned()),
            annotations: None,
            content: digest.as_bytes().to_vec(),
            references: Vec::new(),
            tag: Some(tag.into()),
        }
    }

    fn put(db: &Db, m: NewManifest) {
        db.write_blocking(|tx| put_manifest(tx, &m))
            .unwrap()
            .unwrap();
    }

    fn tags(db: &Db, last: Option<&str>, n: i64) -> Vec<String> {
        db.read_blocking(|c| list_tags(c, "alice/x", last, n))
            .unwrap()
            .unwrap()
    }

    /// A cached statement is planned once per connection, not once per use: rebinding it must
    /// not expire it (see `meta::connect`, the query planner stability guarantee).
    #[test]
    fn a_cached_pull_query_is_not_prepared_again_on_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        put(&db, manifest("sha256:image", "a", false));
        put(&db, manifest("sha256:other", "b", false));
        let reprepared = db
            .read_blocking(|c| {
                for tag in ["a", "b", "a", "missing", "b"] {
                    manifest_by_tag(c, "alice/x", tag)?;
                }
                let stmt = c.prepare_cached(MANIFEST_BY_TAG)?;
                Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .unwrap();
        assert_eq!(reprepared, 0, "the pull query was parsed and planned again");
        let found = db
            .read_blocking(|c| manifest_by_tag(c, "alice/x", "b"))
            .unwrap()
            .unwrap();
        assert_eq!(found.digest, "sha256:other");
    }

    #[test]
    fn derived_tags_resolve_but_are_never_listed_or_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        put(&db, manifest("sha256:image", "a", false));
        put(&db, manifest("sha256:image", "b", false));
        put(&db, manifest("sha256:artifact", "a.sif", true));
        put(&db, manifest("sha256:artifact", "a.arm64.sif", true));
        put(&db, manifest("sha256:image", "c", false));
        assert_eq!(tags(&db, None, 100), ["a", "b", "c"]);
        // Pages are exact: derived tags between client ones take no room in a page.
        assert_eq!(tags(&db, None, 2), ["a", "b"]);
        assert_eq!(tags(&db, Some("a"), 1), ["b"]);
        assert_eq!(tags(&db, Some("b"), 2), ["c"]);
        // They resolve like any tag.
        let found = db
            .read_blocking(|c| manifest_by_tag(c, "alice/x", "a.sif"))
            .unwrap()
            .unwrap();
        assert_eq!(found.digest, "sha256:artifact");
        // Retention sees client tags only.
        let repo = db
            .read_blocking(|c| repository_id(c, "alice/x"))
            .unwrap()
            .unwrap();
        let mut used: Vec<String> = db
            .read_blocking(|c| tag_uses(c, repo))
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        used.sort();
        assert_eq!(used, ["a", "b", "c"]);
    }

    #[test]
    fn a_client_tag_wins_over_a_derived_tag_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        put(&db, manifest("sha256:image", "a", false));
        put(&db, manifest("sha256:artifact", "a.sif", true));
        assert_eq!(tags(&db, None, 100), ["a"]);
        // The client takes the name over: listed, and pointing where the client said.
        put(&db, manifest("sha256:mine", "a.sif", false));
        assert_eq!(tags(&db, None, 100), ["a", "a.sif"]);
        let tag = |db: &Db| {
            db.read_blocking(|c| tag_digest(c, "alice/x", "a.sif"))
                .unwrap()
                .unwrap()
        };
        assert_eq!(tag(&db), "sha256:mine");
        assert!(db
            .read_blocking(|c| client_tag_exists(c, "alice/x", "a.sif"))
            .unwrap());
        // A later publication of the derived tag leaves the client's alone.
        put(&db, manifest("sha256:artifact2", "a.sif", true));
        assert_eq!(tag(&db), "sha256:mine");
        assert_eq!(tags(&db, None, 100), ["a", "a.sif"]);
        // Once the client deletes it, the derived tag can be published again (and is hidden).
        db.write_blocking(|tx| delete_tag(tx, "alice/x", "a.sif"))
            .unwrap();
        put(&db, manifest("sha256:artifact2", "a.sif", true));
        assert_eq!(tag(&db), "sha256:artifact2");
        assert_eq!(tags(&db, None, 100), ["a"]);
    }

    #[test]
    fn a_pull_of_a_derived_tag_is_a_use_of_its_image_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        put(&db, manifest("sha256:image", "a", false));
        let mut index = manifest("sha256:index", "i", false);
        index.kind = "index";
        index.references = vec![Reference {
            digest: "sha256:image".into(),
            size: "sha256:image".len() as i64,
            kind: ReferenceKind::Manifest,
        }];
        put(&db, index);
        put(&db, manifest("sha256:artifact", "a.sif", true));
        let later = now() + 1000;
        db.write_blocking(|tx| record_pulls(tx, &[("alice/x".into(), "a.sif".into(), later)]))
            .unwrap();
        let repo = db
            .read_blocking(|c| repository_id(c, "alice/x"))
            .unwrap()
            .unwrap();
        let uses = db.read_blocking(|c| tag_uses(c, repo)).unwrap();
        for tag in ["a", "i"] {
            let used = uses.iter().find(|u| u.name == tag).unwrap();
            assert_eq!(used.last_used, later, "tag {tag}");
        }
    }

    #[test]
    fn deleting_a_manifest_announces_each_of_its_tags_as_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        put(&db, manifest("sha256:image", "a", false));
        put(&db, manifest("sha256:image", "b", false));
        db.write_blocking(|tx| delete_manifest(tx, "alice/x", "sha256:image"))
            .unwrap();
        let mut deleted: Vec<String> = db
            .read_blocking(|c| pending_events(c, 0, 100))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "tag_deleted")
            .filter_map(|e| e.tag)
            .collect();
        deleted.sort();
        // The farm removes `a.sif` and `b.sif` on these, as after a tag delete.
        assert_eq!(deleted, ["a", "b"]);
    }
}
