//! JSON bytes as Go's `encoding/json` writes them, for the objects Apptainer stores
//! (`labels.json`, `inspect-metadata.json`, `oci-config.json`): serde_json's output with Go's
//! extra escapes.

use serde::Serialize;

/// Go's `json.Marshal`.
pub fn go_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(escape_like_go(serde_json::to_string(value)?))
}

/// Go's `json.MarshalIndent(value, "", "\t")`.
pub fn go_json_indented<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf, formatter,
    ))?;
    // serde_json writes valid UTF-8; the lossy conversion never replaces anything.
    Ok(escape_like_go(String::from_utf8_lossy(&buf).into_owned()))
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; serde_json
/// does not. None of them can appear outside a string in JSON, so a plain pass is exact.
fn escape_like_go(json: String) -> Vec<u8> {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_escaping() {
        let value = serde_json::json!({"b": "<&>\u{2028}\u{7f}\u{1}\n", "a": 1});
        assert_eq!(
            go_json(&value).unwrap(),
            b"{\"a\":1,\"b\":\"\\u003c\\u0026\\u003e\\u2028\x7f\\u0001\\n\"}"
        );
    }
}
