//! Time for the audit trail: RFC 3339 with milliseconds (UTC) out, RFC 3339 / dates / relative
//! durations (`30m`, `2h`, `7d`) in. Hand-rolled (civil-date arithmetic) to avoid a date crate.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-26T00:41:08.123Z`
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let base = crate::auth::rfc3339(secs);
    format!("{}.{millis:03}Z", base.trim_end_matches('Z'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` (also with a space for `T`) → ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(rest) = rest else {
        return Some(day_ms);
    };
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om) = (num(oh)?, num(om)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (c, sign * (oh * 3600 + om * 60) * 1000)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let millis = match frac {
        Some(f) => {
            num(f)?;
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            num(&f3)?
        }
        None => 0,
    };
    Some(day_ms + ((h * 60 + mi) * 60 + se) * 1000 + millis - offset_ms)
}

/// A `--since`/`--until` bound: RFC 3339 (or a date), or a duration before `now_ms` such as
/// `90s`, `30m`, `2h`, `7d`, `2w`.
pub fn parse_bound(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        if let Some(n) = num(&t[..t.len() - 1]) {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
                    ))
                }
            };
            return n
                .checked_mul(secs * 1000)
                .map(|d| now_ms - d)
                .ok_or_else(|| format!("{s:?} is too long ago"));
        }
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!("{s:?} is neither RFC 3339 (2026-11-26T10:00:00Z, 2026-11-26) nor relative (30m, 2h, 7d)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        for ms in [0, 1, 951_782_400_123, 1_795_644_843_999] {
            assert_eq!(parse_rfc3339(&format_ms(ms)), Some(ms), "{}", format_ms(ms));
        }
        assert_eq!(format_ms(1_795_644_843_007), "2026-11-25T22:14:03.007Z");
        assert_eq!(
            parse_rfc3339("2026-11-25T23:14:03+01:00"),
            Some(1_795_644_843_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T22:14:03.5Z"),
            Some(1_795_644_843_500)
        );
        assert_eq!(parse_rfc3339("1970-01-02"), Some(86_400_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-25T25:00:00Z",
            "2026-11-25T10:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn relative_bounds() {
        let now = 10_000_000_000;
        assert_eq!(parse_bound("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_bound("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_bound("1970-01-01T00:00:01Z", now), Ok(1000));
        assert!(parse_bound("2y", now).is_err());
        assert!(parse_bound("soon", now).is_err());
    }
}
