//! Audit queries: validated filters from the CLI or the admin API, run as SQL on the index, then
//! the matching records read from the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{log, time, AuditError, Record};
use crate::meta::{self, AuditFilter, Db};

/// Records returned when no limit is given.
pub const DEFAULT_LIMIT: i64 = 1000;
/// The most one query returns.
pub const MAX_LIMIT: i64 = 100_000;

/// Filters as typed (`--since 2h`, `?action=auth`): all optional text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub user: Option<String>,
    pub repo: Option<String>,
    pub action: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
}

impl Params {
    /// The query string of the admin API (`user=...&since=...`).
    pub fn to_query(&self) -> String {
        let pairs = [
            ("user", &self.user),
            ("repo", &self.repo),
            ("action", &self.action),
            ("since", &self.since),
            ("until", &self.until),
            ("limit", &self.limit),
        ];
        crate::urlcode::build_form(
            pairs
                .iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))),
        )
    }

    /// Checks and converts the filters; the error names the bad one.
    pub fn to_filter(&self, now_ms: i64) -> Result<AuditFilter, String> {
        let bound = |name: &str, v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| time::parse_bound(s, now_ms).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let action = text(&self.action);
        if let Some(a) = &action {
            // Also keeps LIKE wildcards out of the prefix match.
            if !a
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                return Err(format!(
                    "action {a:?}: use an action like auth.failure or a prefix like auth"
                ));
            }
        }
        let limit = match self.limit.as_deref().filter(|s| !s.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(format!("limit {s:?}: use a number from 1 to {MAX_LIMIT}")),
            },
        };
        let filter = AuditFilter {
            user: text(&self.user),
            repository: text(&self.repo),
            action,
            since_ms: bound("since", &self.since)?,
            until_ms: bound("until", &self.until)?,
            limit,
        };
        if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms) {
            if s > u {
                return Err("since is after until".into());
            }
        }
        Ok(filter)
    }
}

/// The newest `filter.limit` matching records of the audit file `file`, oldest first.
pub fn run(file: &Path, db: &Db, filter: &AuditFilter) -> Result<Vec<Record>, AuditError> {
    let found = db.read_blocking(|c| meta::find_audit_events(c, filter))?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    log::read_at(file, &found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        let p = |action: &str, since: &str, limit: &str| Params {
            action: Some(action.into()),
            since: Some(since.into()),
            limit: Some(limit.into()),
            ..Params::default()
        };
        let f = p("auth", "2h", "5").to_filter(10_000_000).unwrap();
        assert_eq!(f.since_ms, Some(10_000_000 - 7_200_000));
        assert_eq!(f.limit, 5);
        assert!(p("auth%", "", "").to_filter(0).is_err());
        assert!(p("", "someday", "").to_filter(0).is_err());
        assert!(p("", "", "0").to_filter(0).is_err());
        assert_eq!(Params::default().to_filter(0).unwrap().limit, DEFAULT_LIMIT);
        let q = Params {
            user: Some("a b".into()),
            since: Some("2026-01-01T00:00:00+01:00".into()),
            ..Params::default()
        };
        assert_eq!(
            q.to_query(),
            "user=a%20b&since=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
    }
}
