//! Time as text, one function per concept: RFC 3339 timestamps (on the `time` crate, whose
//! `Rfc3339` format parses and prints exactly the RFC's grammar) and the durations the config and
//! the CLI take (`90s`, `30m`, `2h`, `7d`, `2w`), which are one small function here: `humantime`
//! would accept far more (`2 hours`, `1y 2M`, months of 30.44 days) than the documented syntax,
//! and tests pin some of those as errors.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn utc(nanos: i128) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// `2024-01-02T03:04:05Z` for Unix seconds (Docker wants RFC 3339 in `issued_at`; the CLI prints
/// times this way). Outside years 0–9999 (which no clock here reaches) the seconds themselves.
pub fn rfc3339(secs: i64) -> String {
    utc(i128::from(secs) * 1_000_000_000)
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// `2026-11-26T00:41:08.123Z` for Unix milliseconds (the audit trail's record times).
pub fn rfc3339_ms(ms: i64) -> String {
    let whole = rfc3339(ms.div_euclid(1000));
    format!(
        "{}.{:03}Z",
        whole.trim_end_matches('Z'),
        ms.rem_euclid(1000)
    )
}

/// `Dec  3 08:04:05` for Unix milliseconds, in UTC: the timestamp of a syslog message as
/// `syslog(3)` writes it (RFC 3164: abbreviated month, space-padded day, no year).
pub fn syslog_stamp(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
    );
    utc(i128::from(ms) * 1_000_000)
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 date-time (`T`, `t` or a space between, `Z` or
/// `±HH:MM`, optional fraction) → Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let parsed = if s.len() == 10 {
        OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339)
    } else {
        OffsetDateTime::parse(s, &Rfc3339)
    };
    let nanos = parsed.ok()?.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000_000)).ok()
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration: write a number followed by s, m, h, d or w (e.g. \"2h\", \"90d\")"
)]
pub struct DurationError(pub String);

/// `90s`, `30m`, `2h`, `7d`, `1w` → seconds; a bare number is seconds.
pub fn parse_duration_secs(s: &str) -> Result<i64, DurationError> {
    let bad = || DurationError(s.to_owned());
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_refuse_what_is_not_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for ms in [0, 1, 951_782_400_123, 1_795_644_843_999] {
            assert_eq!(
                parse_rfc3339_ms(&rfc3339_ms(ms)),
                Some(ms),
                "{}",
                rfc3339_ms(ms)
            );
        }
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-25 22:14:03z"),
            Some(1_795_644_843_000)
        );
        for bad in ["2026-1-05", "2026-11-25T22:14Z", "20261125", "2026-02-30"] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_take_one_unit_or_none() {
        assert_eq!(parse_duration_secs("2w"), Ok(14 * 86_400));
        assert_eq!(parse_duration_secs(" 30m "), Ok(1800));
        for bad in ["", "m", "2y", "1h30m", "-1s", "99999999999999999999w"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }
}
