//! Time for the audit trail: RFC 3339 with milliseconds (UTC) out, RFC 3339 / dates / relative
//! durations (`30m`, `2h`, `7d`) in. The parsers are [`crate::timefmt`]'s; this module only adds
//! the `--since`/`--until` grammar (a time, or a duration before now).

pub use crate::timefmt::{now_ms, parse_rfc3339_ms as parse_rfc3339, rfc3339_ms as format_ms};

/// A `--since`/`--until` bound: RFC 3339 (or a date), or a duration before `now_ms` such as
/// `90s`, `30m`, `2h`, `7d`, `2w`.
pub fn parse_bound(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    // A number and one letter is relative; anything else must be a time.
    let relative = t.len() > 1
        && t.ends_with(|c: char| c.is_ascii_alphabetic())
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if relative {
        let secs = crate::timefmt::parse_duration_secs(t).map_err(|e| e.to_string())?;
        return secs
            .checked_mul(1000)
            .map(|d| now_ms - d)
            .ok_or_else(|| format!("{s:?} is too long ago"));
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
