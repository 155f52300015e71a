//! What the commands print: aligned tables and pretty JSON on standard output.

use serde_json::Value;

pub fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Prints `rows` under `header`, each column as wide as its widest cell (the last one unpadded).
pub fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A list the server answered: as it came with `--json`, else a table of `header` with one
/// row per item.
pub fn list<T: serde::de::DeserializeOwned>(
    value: Value,
    json: bool,
    header: &[&str],
    row: impl Fn(T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{value:#}");
        return Ok(());
    }
    let items: Vec<T> = serde_json::from_value(value)?;
    table(header, items.into_iter().map(row));
    Ok(())
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
