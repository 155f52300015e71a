//! Which tags a retention policy deletes, and why. Pure: the prune feeds it one repository's
//! tags (newest push first) and applies the answer.

use super::settings::{glob, Rule};
use crate::meta::TagUse;

/// A tag the policy deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

/// Tags of one repository that `rule` deletes at time `now`. Tags matching `keep_tags` are
/// never deleted and do not count towards `keep_last`.
pub fn expired_tags(rule: &Rule, tags: &[TagUse], now: i64) -> Vec<Expired> {
    let mut out = Vec::new();
    let mut rank = 0usize;
    for t in tags {
        if rule.keep_tags.iter().any(|p| glob(p, &t.name)) {
            continue;
        }
        rank += 1;
        let reason = match (rule.keep_last, rule.unused_after_secs) {
            (Some(n), _) if rank > n => format!(
                "not among the {n} most recently pushed tags (retention {:?})",
                rule.namespaces
            ),
            (_, Some(age)) if t.last_used < now - age => format!(
                "neither pushed, pulled nor SIF-fetched for more than {} (retention {:?})",
                human(age),
                rule.namespaces
            ),
            _ => continue,
        };
        out.push(Expired {
            tag: t.name.clone(),
            digest: t.digest.clone(),
            reason,
        });
    }
    out
}

/// Seconds as the largest whole unit, for reasons people read.
pub fn human(secs: i64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, pushed_at: i64, last_used: i64) -> TagUse {
        TagUse {
            name: name.into(),
            digest: format!("sha256:{name}"),
            pushed_at,
            last_used,
        }
    }

    fn rule() -> Rule {
        Rule {
            namespaces: "alice/*".into(),
            keep_last: None,
            keep_tags: Vec::new(),
            untagged_after_secs: None,
            unused_after_secs: None,
        }
    }

    #[test]
    fn keep_last_skips_protected_tags() {
        let tags = [
            tag("latest", 50, 50),
            tag("v3", 40, 40),
            tag("nightly-2", 30, 30),
            tag("v1", 20, 20),
            tag("nightly-1", 10, 10),
        ];
        let r = Rule {
            keep_last: Some(1),
            keep_tags: vec!["latest".into(), "v*".into()],
            ..rule()
        };
        let gone: Vec<_> = expired_tags(&r, &tags, 100)
            .into_iter()
            .map(|e| e.tag)
            .collect();
        assert_eq!(gone, vec!["nightly-1"]);
    }

    #[test]
    fn unused_after_uses_the_last_use() {
        let tags = [tag("a", 10, 95), tag("b", 10, 20), tag("c", 10, 10)];
        let r = Rule {
            unused_after_secs: Some(50),
            keep_tags: vec!["c".into()],
            ..rule()
        };
        let gone = expired_tags(&r, &tags, 100);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].tag, "b");
        assert!(gone[0].reason.contains("50s"), "{}", gone[0].reason);
        assert!(
            expired_tags(&rule(), &tags, 100).is_empty(),
            "no rule, no deletes"
        );
        assert_eq!(human(7 * 86_400), "7d");
        assert_eq!(human(5400), "90m");
    }
}
