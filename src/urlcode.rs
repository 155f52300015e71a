//! Percent-encoding of URL parts: the one decoder for query strings (`application/x-www-form-
//! urlencoded`) and path segments, and the one encoder the CLI and the admin-API mapping use.
//!
//! Built on the `percent-encoding` and `form_urlencoded` crates (axum compiles them in anyway).
//! Those crates are lenient: a stray `%` passes through and invalid UTF-8 becomes U+FFFD. Here both
//! are errors, so a request whose query or path does not say one thing is refused (400) instead of
//! being read as something the client did not write. Nothing here panics on any input (fuzzed).

use std::borrow::Cow;
use std::collections::HashMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// What is left unescaped when encoding: the RFC 3986 unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a query string or path segment cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "invalid percent-escape at byte {at} of {what}: '%' must be followed by two hex digits"
    )]
    BadEscape { what: &'static str, at: usize },
    #[error("{what} does not decode to UTF-8 text")]
    NotUtf8 { what: &'static str },
}

/// Parses a query string (`a=1&b=x%20y&b=z`) into its pairs, in order, repeated keys kept.
/// `+` is a space; a pair without `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
pub fn parse_form(query: &[u8]) -> Result<Vec<(String, String)>, UrlError> {
    let mut pairs = Vec::new();
    let mut offset = 0;
    for part in query.split(|b| *b == b'&') {
        let start = offset;
        offset += part.len() + 1;
        if part.is_empty() {
            continue;
        }
        let (key, value, value_at) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..], start + eq + 1),
            None => (part, &part[part.len()..], start + part.len()),
        };
        pairs.push((
            decode(key, true, "the query", start)?,
            decode(value, true, "the query", value_at)?,
        ));
    }
    Ok(pairs)
}

/// [`parse_form`] into single values: the last of a repeated key wins.
pub fn parse_form_map(query: &[u8]) -> Result<HashMap<String, String>, UrlError> {
    Ok(parse_form(query)?.into_iter().collect())
}

/// All values of `key` in a query string, in order (Docker repeats `scope`).
pub fn form_values(query: &[u8], key: &str) -> Result<Vec<String>, UrlError> {
    Ok(parse_form(query)?
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect())
}

/// Decodes one path segment (`+` stays a plus there).
pub fn decode_segment(segment: &str) -> Result<String, UrlError> {
    decode(segment.as_bytes(), false, "the path", 0)
}

/// Encodes a path segment or a query value: everything but the unreserved characters is escaped.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A query string from pairs, each key and value encoded with [`encode`].
pub fn build_form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// The one decoder: checks every escape, maps `+` to a space in forms, then percent-decodes and
/// insists on UTF-8. `base` is where `raw` starts in its input, for the error message.
fn decode(
    raw: &[u8],
    plus_is_space: bool,
    what: &'static str,
    base: usize,
) -> Result<String, UrlError> {
    let mut i = 0;
    while let Some(p) = raw[i..].iter().position(|b| *b == b'%') {
        let at = i + p;
        let hex = raw.get(at + 1..at + 3);
        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(UrlError::BadEscape {
                what,
                at: base + at,
            });
        }
        i = at + 3;
    }
    let raw: Cow<[u8]> = if plus_is_space && raw.contains(&b'+') {
        // `form_urlencoded` does the same replacement, but decodes invalid UTF-8 lossily.
        Cow::Owned(
            raw.iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&raw).collect();
    String::from_utf8(bytes).map_err(|_| UrlError::NotUtf8 { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let pairs = parse_form(
            b"service=hpc-registry&scope=repository%3Aa%2Fb%3Apull%2Cpush&&scope=x+y&flag",
        )
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("service".into(), "hpc-registry".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
                ("scope".into(), "x y".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert_eq!(
            form_values(b"scope=a&x=1&scope=b%2B", "scope").unwrap(),
            vec!["a", "b+"]
        );
        assert_eq!(parse_form(b"").unwrap(), vec![]);
        assert_eq!(
            parse_form("é=ü".as_bytes()).unwrap(),
            vec![("é".into(), "ü".into())]
        );
    }

    /// The probe's input: an escape cut short by a multi-byte character (the old decoder sliced
    /// the `&str` inside `é` and panicked).
    #[test]
    fn malformed_escapes_and_utf8_are_errors() {
        let probe = b"service=hpc-registry&scope=%a\xc3\xa9";
        assert_eq!(
            parse_form(probe),
            Err(UrlError::BadEscape {
                what: "the query",
                at: 27
            })
        );
        assert!(parse_form("scope=%aé".as_bytes()).is_err());
        assert!(parse_form(b"a=100%").is_err());
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%C3%28").is_err());
        assert!(parse_form(b"a=\xff").is_err());
        assert!(decode_segment("100%").is_err());
    }

    #[test]
    fn encode_round_trips() {
        for s in ["a b/c", "100%", "é+&=?#", "alice", ""] {
            assert_eq!(decode_segment(&encode(s)).unwrap(), s);
            let q = build_form([("k", s)]);
            assert_eq!(
                parse_form(q.as_bytes()).unwrap(),
                vec![("k".into(), s.into())]
            );
        }
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(decode_segment("a+b").unwrap(), "a+b");
    }
}
