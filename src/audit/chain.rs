//! The hash chain: each record carries the previous record's hash and its own,
//! `hash = sha256(prev || canonical JSON of the record without "hash")`. Editing a record breaks
//! its hash; removing one breaks the `seq` sequence and the next record's `prev`; removing records
//! at the end is caught by comparing with the database index (which also keeps every hash, so
//! rewriting the whole chain from an edit onwards does not go unnoticed either).
//!
//! The canonical JSON is serde's serialization of [`Record`] (fixed field order, no whitespace)
//! with `hash` as its last field. `verify` hashes the stored line's own bytes up to that field
//! rather than re-encoding a parsed record, so records written by older or newer versions (with
//! fewer or more fields) verify alike, and any byte changed in a line is caught.

use std::io::BufRead;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Record;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash `record` must carry (its own `hash` field is ignored), computed the long way: the
/// tests' reference for [`seal_line`], which the writer uses.
#[cfg(test)]
pub fn hash_of(record: &Record) -> Result<String, serde_json::Error> {
    let body = serde_json::to_vec(&Record {
        hash: String::new(),
        ..record.clone()
    })?;
    let mut h = Sha256::new();
    h.update(record.prev.as_bytes());
    h.update(&body);
    Ok(hex::encode(h.finalize()))
}

/// The chain fields of a stored line, read leniently (whatever else the record holds).
#[derive(Debug, serde::Deserialize)]
pub struct Links {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// The hash a stored line must carry: sha256(prev || the line without its trailing
/// `,"hash":"<hex>"`, closed again with `}`). `None` if the line does not end with a hash field.
pub fn line_hash(prev: &str, line: &[u8]) -> Option<String> {
    const MARKER: &[u8] = b",\"hash\":\"";
    let hex_end = line.len().checked_sub(2)?;
    if &line[hex_end..] != b"\"}" {
        return None;
    }
    let hex_start = hex_end.checked_sub(64)?;
    let marker_start = hex_start.checked_sub(MARKER.len())?;
    if &line[marker_start..hex_start] != MARKER {
        return None;
    }
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(&line[..marker_start]);
    h.update(b"}");
    Some(hex::encode(h.finalize()))
}

/// Links `record` after a record with `prev_seq` and `prev_hash`: fills seq, prev and hash
/// (for tests that build chains record by record).
#[cfg(test)]
pub fn seal(record: &mut Record, prev_seq: u64, prev_hash: &str) -> Result<(), serde_json::Error> {
    seal_line(record, prev_seq, prev_hash, &mut Vec::new())
}

/// [`seal`], and appends the sealed record's line (without its newline) to `out`, serializing
/// the record once: the line is the hashed body with `,"hash":"<hex>"` put before its closing
/// brace (`hash` is the last field and is omitted while empty), which is byte for byte what
/// serializing the sealed record gives. The audit writer does this for every record.
pub fn seal_line(
    record: &mut Record,
    prev_seq: u64,
    prev_hash: &str,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    record.seq = prev_seq + 1;
    record.prev = prev_hash.to_owned();
    record.hash = String::new();
    let start = out.len();
    serde_json::to_writer(&mut *out, &*record)?;
    let mut h = Sha256::new();
    h.update(record.prev.as_bytes());
    h.update(&out[start..]);
    record.hash = hex::encode(h.finalize());
    // serde_json always closes an object with `}`.
    out.pop();
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(record.hash.as_bytes());
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// One thing wrong with the log, by file and 1-based line number within that file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// The file's name (`audit.jsonl`, `audit-000000001001.jsonl.zst`), when several were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub line: u64,
    pub message: String,
}

impl Problem {
    /// `audit-000000001001.jsonl.zst line 7` or `line 7`.
    pub fn place(&self) -> String {
        match &self.file {
            Some(f) => format!("{f} line {}", self.line),
            None => format!("line {}", self.line),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Report {
    /// Complete lines read.
    pub records: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub problems: Vec<Problem>,
    /// A final line without its newline: a write in progress or a crash mid-write (not tampering;
    /// the server drops it at its next start).
    pub incomplete_tail: bool,
    /// The files read, oldest first (rotated ones, then the active file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The seq of the first record read, when it is not 1: older rotated files were archived
    /// elsewhere, and the first record present was checked against the index instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at_seq: Option<u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records a problem, at most [`MAX_PROBLEMS`] of them.
    pub fn problem(&mut self, file: Option<&str>, line: u64, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                file: file.map(str::to_owned),
                line,
                message,
            });
        }
    }
}

/// At most this many problems are listed (one edit is one problem, a shredded file many).
const MAX_PROBLEMS: usize = 100;

/// Where the chain a [`Verifier`] reads begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At seq 1, linking [`GENESIS`]: a whole log.
    Genesis,
    /// Wherever the first record says: one rotated file checked alone, or a log whose oldest
    /// files were archived (its first record's `prev` is then checked by the caller).
    AsFound,
}

/// Checks the chain over one or more JSON-lines files read in order (rotated files, then the
/// active one): the first record of each file must link the last record of the one before.
/// Each record is checked against the *stored* hash of its predecessor, so one edited or removed
/// line is reported once, at its own line.
pub struct Verifier {
    report: Report,
    prev_seq: u64,
    /// `None` once a line could not be parsed (its hash is unknown), or before the first record
    /// of a chain read [`Start::AsFound`].
    prev_hash: Option<String>,
    seen_any: bool,
    start: Start,
}

impl Verifier {
    pub fn new(start: Start) -> Verifier {
        Verifier {
            report: Report {
                last_hash: GENESIS.to_owned(),
                ..Report::default()
            },
            prev_seq: 0,
            prev_hash: Some(GENESIS.to_owned()),
            seen_any: false,
            start,
        }
    }

    /// Reads the next file of the chain; `name` labels its problems (`None`: a single stream).
    pub fn feed(&mut self, name: Option<&str>, mut reader: impl BufRead) -> std::io::Result<()> {
        if let Some(n) = name {
            self.report.files.push(n.to_owned());
        }
        if self.report.incomplete_tail {
            // A file follows one whose last line was cut off: that was no write in progress.
            let last = self.report.files.len().saturating_sub(2);
            let file = self.report.files.get(last).cloned();
            self.report.problem(
                file.as_deref(),
                0,
                "the file ends with an incomplete line, but a newer file follows it".into(),
            );
            self.report.incomplete_tail = false;
        }
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.pop() != Some(b'\n') {
                // The last line has no newline yet.
                self.report.incomplete_tail = true;
                break;
            }
            n += 1;
            self.report.records += 1;
            self.check_line(name, n, &line);
        }
        self.report.last_seq = self.prev_seq;
        self.report.last_hash = self.prev_hash.clone().unwrap_or_default();
        Ok(())
    }

    fn check_line(&mut self, file: Option<&str>, n: u64, line: &[u8]) {
        let record: Links = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                self.report
                    .problem(file, n, format!("not an audit record: {e}"));
                self.prev_seq += 1;
                // Its hash is unknown: the next record's `prev` cannot be checked.
                self.prev_hash = None;
                self.seen_any = true;
                return;
            }
        };
        if !self.seen_any && self.start == Start::AsFound && record.seq != 1 {
            // The chain starts here: its predecessor is not in what was read.
            self.prev_seq = record.seq.saturating_sub(1);
            self.prev_hash = Some(record.prev.clone());
            self.report.starts_at_seq = Some(record.seq);
        }
        self.seen_any = true;
        if record.seq != self.prev_seq + 1 {
            self.report.problem(
                file,
                n,
                format!(
                    "seq {} follows seq {}: {} record(s) missing or reordered",
                    record.seq,
                    self.prev_seq,
                    record.seq.abs_diff(self.prev_seq + 1)
                ),
            );
        } else if self.prev_hash.as_ref().is_some_and(|h| *h != record.prev) {
            self.report.problem(
                file,
                n,
                format!(
                    "seq {}: prev does not match the previous record's hash: a record before it was removed or altered",
                    record.seq
                ),
            );
        }
        match line_hash(&record.prev, line) {
            Some(h) if h == record.hash => {}
            Some(_) => self.report.problem(
                file,
                n,
                format!("seq {}: hash mismatch: the record was edited", record.seq),
            ),
            None => self.report.problem(
                file,
                n,
                format!("seq {}: the line does not end with its hash", record.seq),
            ),
        }
        self.prev_seq = record.seq;
        self.prev_hash = Some(record.hash);
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Checks the chain of one JSON-lines stream that starts at seq 1.
pub fn verify(reader: impl BufRead) -> std::io::Result<Report> {
    let mut v = Verifier::new(Start::Genesis);
    v.feed(None, reader)?;
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        (0..n)
            .map(|i| {
                let mut r = Record::new("manifest.pull", "ok");
                r.user = Some(format!("user{i}"));
                r.bytes = Some(i * 10);
                seal(&mut r, i, &prev).unwrap();
                prev = r.hash.clone();
                serde_json::to_string(&r).unwrap()
            })
            .collect()
    }

    fn check(lines: &[String]) -> Report {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        verify(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_line_hash_is_the_sealed_hash() {
        let mut r = Record::new("auth.failure", "denied");
        r.detail = Some("quote \" and unicode é".into());
        seal(&mut r, 0, GENESIS).unwrap();
        let line = serde_json::to_vec(&r).unwrap();
        assert_eq!(line_hash(&r.prev, &line), Some(r.hash.clone()));
        // Whitespace is a change too: the stored bytes are what is hashed.
        let spaced = serde_json::to_vec_pretty(&r).unwrap();
        assert_ne!(line_hash(&r.prev, &spaced), Some(r.hash));
        assert_eq!(line_hash(GENESIS, b"{}"), None);
    }

    #[test]
    fn intact_chain_verifies() {
        let lines = chain(5);
        let r = check(&lines);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.records, r.last_seq), (5, 5));
        assert!(!r.incomplete_tail);
        assert!(check(&[]).ok());
    }

    #[test]
    fn an_edited_record_is_found_at_its_line() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("\"user2\"", "\"mallory\"");
        let r = check(&lines);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].line, 3);
        assert!(r.problems[0].message.contains("edited"));
    }

    #[test]
    fn a_removed_record_is_found() {
        let mut lines = chain(5);
        lines.remove(1);
        let r = check(&lines);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].line, 2);
        assert!(r.problems[0].message.contains("missing"));
    }

    /// The writer's one-pass line is exactly the sealed record serialized, and verifies.
    #[test]
    fn a_sealed_line_is_the_sealed_record_serialized() {
        let lines = chain(2);
        let last: Record = serde_json::from_str(&lines[1]).unwrap();
        let mut r: Record = serde_json::from_str(&lines[0]).unwrap();
        r.user = Some("name with \"quotes\" and \u{e9}".into());
        let mut line = b"[earlier bytes]".to_vec();
        seal_line(&mut r, last.seq, &last.hash, &mut line).unwrap();
        let line = &line["[earlier bytes]".len()..];
        assert_eq!(line, serde_json::to_vec(&r).unwrap());
        assert_eq!(r.hash, hash_of(&r).unwrap());
        assert_eq!(line_hash(&last.hash, line), Some(r.hash.clone()));
        let mut lines = lines;
        lines.push(String::from_utf8(line.to_vec()).unwrap());
        let report = check(&lines);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_recomputed_hash_still_breaks_the_next_link() {
        let mut lines = chain(4);
        let mut r: Record = serde_json::from_str(&lines[1]).unwrap();
        r.outcome = "denied".into();
        r.hash = hash_of(&r).unwrap();
        lines[1] = serde_json::to_string(&r).unwrap();
        let report = check(&lines);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].line, 3);
    }

    #[test]
    fn garbage_and_extra_fields_are_problems_and_a_partial_tail_is_not() {
        let mut lines = chain(3);
        lines[0] = lines[0].replace("{\"seq\"", "{\"evil\":1,\"seq\"");
        lines[2] = "not json".into();
        let r = check(&lines);
        assert_eq!(
            r.problems.iter().map(|p| p.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let mut text: String = chain(2).iter().map(|l| format!("{l}\n")).collect();
        text.push_str("{\"seq\":3,");
        let r = verify(text.as_bytes()).unwrap();
        assert!(r.ok() && r.incomplete_tail && r.records == 2);
    }
}
