//! The two clocks formats a build meets: the image config's RFC 3339 `created`, and the
//! build-date label Go's `time.Now().Format(...)` writes. Both through the `time` crate.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses an RFC 3339 timestamp (the image config's `created`) into Unix seconds, dropping
/// fractions. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Go's build-date label: `<Weekday>_<D>_<Month>_<YYYY>_<H>:<M>:<S>_<TZ>`, nothing padded.
/// Always in UTC here: the builder runs on servers whose local zone says nothing about the image.
/// A time outside the years ±9999 (which no build clock reaches: it is now or a parsed
/// RFC 3339 year) is labelled as the Unix epoch.
pub fn build_date_label(unix: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{}_{}_{}_{}_{}:{}:{}_UTC",
        at.weekday(),
        at.day(),
        at.month(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sif;

    #[test]
    fn build_date_label_is_unpadded() {
        assert_eq!(build_date_label(0), "Thursday_1_January_1970_0:0:0_UTC");
        assert_eq!(
            build_date_label(951_782_400 + 3_723),
            "Tuesday_29_February_2000_1:2:3_UTC"
        );
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(sif::GO_ZERO_TIME)
        );
        assert_eq!(parse_rfc3339("2023-11-14"), None);
        assert_eq!(parse_rfc3339("2023-13-14T22:13:20Z"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20"), None);
    }
}
