//! `[gc]` and `[[retention]]`, parsed once at start-up so that a typo stops the server with a
//! clear message instead of surfacing at 3 a.m. in the first background prune.

use super::LifecycleError;
use crate::config::{GcConfig, RetentionRule};

/// Upload sessions are never expired younger than this, even with a shorter grace period: a
/// client between two chunks of a slow upload must not lose its session.
pub const MIN_UPLOAD_AGE_SECS: i64 = 600;

#[derive(Debug, Clone)]
pub struct Settings {
    pub grace_secs: i64,
    /// 0: no background prune.
    pub interval_secs: i64,
    /// Minutes after midnight UTC, [start, end); may wrap midnight.
    pub window: Option<(u32, u32)>,
    pub rules: Vec<Rule>,
}

/// One retention policy, parsed.
#[derive(Debug, Clone)]
pub struct Rule {
    pub namespaces: String,
    pub keep_last: Option<usize>,
    pub keep_tags: Vec<String>,
    pub untagged_after_secs: Option<i64>,
    pub unused_after_secs: Option<i64>,
}

impl Settings {
    pub fn from_config(gc: &GcConfig, rules: &[RetentionRule]) -> Result<Settings, LifecycleError> {
        let window = gc.window.as_deref().map(parse_window).transpose()?;
        let rules = rules
            .iter()
            .map(|r| {
                if r.namespaces.is_empty() {
                    return Err(LifecycleError::Config(
                        "every [[retention]] needs namespaces = \"glob\"".into(),
                    ));
                }
                Ok(Rule {
                    namespaces: r.namespaces.clone(),
                    keep_last: r.keep_last,
                    keep_tags: r.keep_tags.clone(),
                    untagged_after_secs: r
                        .untagged_after
                        .as_deref()
                        .map(parse_duration)
                        .transpose()?,
                    unused_after_secs: r.unused_after.as_deref().map(parse_duration).transpose()?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Settings {
            grace_secs: parse_duration(&gc.grace)?,
            interval_secs: parse_duration(&gc.interval)?,
            window,
            rules,
        })
    }

    /// The policy of a repository: the first rule whose glob matches its name.
    pub fn rule_for(&self, repository: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| glob(&r.namespaces, repository))
    }

    /// How long an unanchored manifest of `repository` waits before it goes.
    pub fn untagged_age(&self, repository: &str) -> i64 {
        let policy = self
            .rule_for(repository)
            .and_then(|r| r.untagged_after_secs)
            .unwrap_or(0);
        policy.max(self.grace_secs)
    }

    /// Whether `minute_of_day` (UTC) is inside the configured window (always, without one).
    pub fn in_window(&self, minute_of_day: u32) -> bool {
        match self.window {
            None => true,
            Some((start, end)) if start <= end => minute_of_day >= start && minute_of_day < end,
            Some((start, end)) => minute_of_day >= start || minute_of_day < end,
        }
    }
}

/// `90s`, `30m`, `2h`, `7d`, `1w` (a bare number is seconds): [`crate::timefmt`]'s one parser.
pub fn parse_duration(s: &str) -> Result<i64, LifecycleError> {
    crate::timefmt::parse_duration_secs(s).map_err(|e| LifecycleError::Config(e.to_string()))
}

/// `HH:MM-HH:MM` → minutes after midnight.
fn parse_window(s: &str) -> Result<(u32, u32), LifecycleError> {
    let bad = || {
        LifecycleError::Config(format!(
            "window {s:?} is not HH:MM-HH:MM (UTC), e.g. \"01:00-05:00\""
        ))
    };
    let minutes = |t: &str| -> Result<u32, LifecycleError> {
        let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (minutes(a)?, minutes(b)?);
    if a == b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Shell-like glob: `*` matches any run of characters (`/` included), `?` one character.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    // Iterative matcher with one backtrack point: linear for the patterns admins write.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_windows_and_globs() {
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("0s").unwrap(), 0);
        assert_eq!(parse_duration("15").unwrap(), 15);
        assert!(parse_duration("2 hours").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1h").is_err());
        let gc = GcConfig {
            window: Some("23:00-02:00".into()),
            ..GcConfig::default()
        };
        let s = Settings::from_config(&gc, &[]).unwrap();
        assert!(s.in_window(23 * 60 + 5) && s.in_window(60) && !s.in_window(2 * 60));
        let gc = GcConfig {
            window: Some("01:00-05:00".into()),
            ..GcConfig::default()
        };
        let s = Settings::from_config(&gc, &[]).unwrap();
        assert!(s.in_window(60) && !s.in_window(5 * 60) && !s.in_window(0));
        for bad in ["1-5", "25:00-01:00", "01:00-01:00", "01:00"] {
            let gc = GcConfig {
                window: Some(bad.into()),
                ..GcConfig::default()
            };
            assert!(Settings::from_config(&gc, &[]).is_err(), "{bad}");
        }
        assert!(glob("alice/*", "alice/tools/x"));
        assert!(!glob("alice/*", "alicex/y"));
        assert!(glob("v*", "v1.2"));
        assert!(glob("*", "anything/at/all"));
        assert!(glob("rel-?", "rel-1") && !glob("rel-?", "rel-10"));
        assert!(glob("*-rc*", "1.0-rc2") && !glob("*-rc*", "1.0"));
    }

    #[test]
    fn first_matching_rule_and_untagged_age() {
        let rules = vec![
            RetentionRule {
                namespaces: "alice/*".into(),
                untagged_after: Some("7d".into()),
                ..Default::default()
            },
            RetentionRule {
                namespaces: "*".into(),
                keep_last: Some(3),
                ..Default::default()
            },
        ];
        let s = Settings::from_config(&GcConfig::default(), &rules).unwrap();
        assert_eq!(s.untagged_age("alice/x"), 7 * 86_400);
        assert_eq!(
            s.untagged_age("bob/x"),
            7200,
            "the grace period is the floor"
        );
        assert_eq!(s.rule_for("bob/x").and_then(|r| r.keep_last), Some(3));
    }
}
