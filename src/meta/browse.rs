//! What the web UI reads that no other caller needs: a repository's tags with what they name,
//! and the hourly activity counters of the admin overview.

use rusqlite::{params, Connection};

use super::Result;

/// A client tag with the manifest it names.
#[derive(Debug, Clone)]
pub struct TagDetail {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// The manifest's own size in bytes.
    pub manifest_size: i64,
    /// When the tag was last pushed (Unix seconds).
    pub pushed_at: i64,
    /// The manifest's bytes (small: manifests are capped at push), for its layers and platforms.
    pub content: Vec<u8>,
}

/// Up to `limit` client tags of `repository` in lexical order with their manifests; `None` if
/// the repository is unknown. Derived tags (the ORAS `T.sif`) are left out, as in `tags/list`.
pub fn repository_tags(
    conn: &Connection,
    repository: &str,
    limit: i64,
) -> Result<Option<Vec<TagDetail>>> {
    let Some(repo) = super::repository_id(conn, repository)? else {
        return Ok(None);
    };
    let rows = conn
        .prepare_cached(
            "SELECT t.name, t.digest, m.media_type, m.size, t.pushed_at, m.content FROM tags t
             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
             WHERE t.repository_id = ?1 AND t.origin = 'client'
             ORDER BY t.name LIMIT ?2",
        )?
        .query_map(params![repo, limit], |r| {
            Ok(TagDetail {
                tag: r.get(0)?,
                digest: r.get(1)?,
                media_type: r.get(2)?,
                manifest_size: r.get(3)?,
                pushed_at: r.get(4)?,
                content: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(rows))
}

/// Successful audit records per action since `since_ms` (from the audit index).
pub fn audit_action_counts(conn: &Connection, since_ms: i64) -> Result<Vec<(String, i64)>> {
    Ok(conn
        .prepare_cached(
            "SELECT action, COUNT(*) FROM audit_events WHERE time_ms >= ?1 AND outcome = 'ok'
             GROUP BY action ORDER BY action",
        )?
        .query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Build jobs that finished since `since` (Unix seconds), per final state.
pub fn finished_builds(conn: &Connection, since: i64) -> Result<Vec<(String, i64)>> {
    Ok(conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM build_jobs
             WHERE finished_at IS NOT NULL AND finished_at >= ?1 AND state IN ('ready', 'failed')
             GROUP BY state ORDER BY state",
        )?
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}
