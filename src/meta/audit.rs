//! The audit index (`audit_events`): one row per record of the JSON-lines audit file.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Result;

/// One indexed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub time_ms: i64,
    pub user: Option<String>,
    pub action: String,
    pub repository: Option<String>,
    pub digest: Option<String>,
    pub outcome: String,
    pub file_offset: i64,
    pub hash: String,
}

pub fn insert_audit_event(tx: &Transaction, r: &AuditRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit_events
           (seq, time_ms, user_name, action, repository, digest, outcome, file_offset, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        r.seq,
        r.time_ms,
        r.user,
        r.action,
        r.repository,
        r.digest,
        r.outcome,
        r.file_offset,
        r.hash
    ])?;
    Ok(())
}

/// `(seq, file_offset, hash)` of the last indexed record.
pub fn last_audit_event(conn: &Connection) -> Result<Option<(i64, i64, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, file_offset, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// `(seq, hash)` of every indexed record in order, for `verify`.
pub fn audit_hashes(conn: &Connection, mut each: impl FnMut(i64, String)) -> Result<()> {
    let mut stmt = conn.prepare("SELECT seq, hash FROM audit_events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        each(row.get(0)?, row.get(1)?);
    }
    Ok(())
}

/// Query filters; `None` matches everything. `action` matches exactly or as a prefix before a
/// dot (`auth` matches `auth.failure`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub repository: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: i64,
}

/// `(seq, file_offset)` of the newest `limit` records matching `f`, oldest first.
pub fn find_audit_events(conn: &Connection, f: &AuditFilter) -> Result<Vec<(i64, i64)>> {
    let mut sql = String::from("SELECT seq, file_offset FROM audit_events WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(u) = &f.user {
        arg(&mut sql, " AND user_name = ?", u.clone().into());
    }
    if let Some(r) = &f.repository {
        arg(&mut sql, " AND repository = ?", r.clone().into());
    }
    if let Some(a) = &f.action {
        arg(&mut sql, " AND (action = ?", a.clone().into());
        arg(&mut sql, " OR action LIKE ?)", format!("{a}.%").into());
    }
    if let Some(s) = f.since_ms {
        arg(&mut sql, " AND time_ms >= ?", s.into());
    }
    if let Some(u) = f.until_ms {
        arg(&mut sql, " AND time_ms <= ?", u.into());
    }
    arg(&mut sql, " ORDER BY seq DESC LIMIT ?", f.limit.into());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    let mut out: Vec<(i64, i64)> = rows.collect::<rusqlite::Result<_>>()?;
    out.reverse();
    Ok(out)
}
