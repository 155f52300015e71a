//! Human-readable byte sizes, both ways: "50GiB", "1.5 TB", "200M" in; "49.8 GiB" out.
//!
//! Binary suffixes (KiB, MiB, GiB, TiB, and the bare K, M, G, T that quota tools use) are powers
//! of 1024; decimal ones (kB, MB, GB, TB) powers of 1000, so "50GB" means what a disk vendor says.

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size: write a number with an optional unit, e.g. 50GiB, 500MB, 1.5T or 1048576")]
pub struct SizeError {
    input: String,
}

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1_000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

/// Parses a size in bytes. Fractions are allowed with a unit ("1.5GiB"), rounded down to a byte.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: input.to_owned(),
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim().to_ascii_lowercase());
    if number.is_empty() {
        return Err(err());
    }
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(err)?
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(err);
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Formats bytes with the largest binary unit that keeps the number at least 1: "50 GiB" for an
/// exact multiple, else one decimal ("49.8 GiB"), and plain bytes below 1 KiB ("512 B").
pub fn format_size(bytes: u64) -> String {
    const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < NAMES.len() && bytes >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let divisor = 1u64 << (10 * unit);
    if bytes % divisor == 0 {
        format!("{} {}", bytes / divisor, NAMES[unit])
    } else {
        // Truncated, not rounded, so "used" never reads as the limit while it is below it.
        let tenths = (bytes as u128 * 10 / divisor as u128) as u64;
        format!("{}.{} {}", tenths / 10, tenths % 10, NAMES[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_fractional_sizes() {
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("50 GiB"), Ok(50 << 30));
        assert_eq!(parse_size("50G"), Ok(50 << 30));
        assert_eq!(parse_size("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("200mib"), Ok(200 << 20));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "GiB",
            "-1G",
            "1 PB",
            "1.2.3M",
            "x",
            "99999999999999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_with_one_decimal_in_the_largest_unit() {
        assert_eq!(format_size(50 << 30), "50 GiB");
        assert_eq!(format_size((498u64 << 30) / 10 + 1), "49.8 GiB");
        assert_eq!(format_size(614 << 20), "614 MiB");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(0), "0 B");
        // Truncation: just under 1 MiB never prints as "1.0 MiB".
        assert_eq!(format_size((1 << 20) - 1), "1023.9 KiB");
    }
}
