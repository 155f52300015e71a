//! Reading the whole log, across its files ([`super::segments`]): records by index position
//! (queries), and the chain check over every file in order (`admin audit verify`).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use super::chain::{self, Report, Start, Verifier};
use super::log::read_line;
use super::segments::{self, Compression, Head, Segment};
use super::{AuditError, Record};
use crate::meta::{self, Db};

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The files of the log whose active file is `active`, each with the seq of its first record
/// (the active file's from its first line; `None` while it is empty).
fn files_of(active: &Path) -> Result<Vec<(Segment, Option<u64>)>, AuditError> {
    let dir = active.parent().unwrap_or(Path::new("."));
    let segs = segments::list(dir).map_err(io_err(dir))?;
    let active_first = segments::first_line(active)
        .map_err(io_err(active))?
        .and_then(|l| serde_json::from_slice::<Head>(&l).ok())
        .map(|h| h.seq);
    Ok(segs
        .into_iter()
        .map(|s| {
            let first = s.first_seq.or(active_first);
            (s, first)
        })
        .collect())
}

/// An open file of the log: seekable when plain, read forward when compressed.
enum Reader {
    Plain(BufReader<File>),
    Stream(Box<dyn BufRead + Send>, u64),
}

impl Reader {
    fn open(seg: &Segment) -> std::io::Result<Reader> {
        Ok(match seg.compression {
            Compression::None => Reader::Plain(BufReader::new(File::open(&seg.path)?)),
            _ => Reader::Stream(segments::open(seg)?, 0),
        })
    }

    /// Whether the line at `offset` can be read from here on.
    fn can_reach(&self, offset: u64) -> bool {
        match self {
            Reader::Plain(_) => true,
            Reader::Stream(_, pos) => *pos <= offset,
        }
    }

    fn line_at(&mut self, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Reader::Plain(r) => {
                r.seek(SeekFrom::Start(offset))?;
                read_line(r)
            }
            Reader::Stream(r, pos) => {
                segments::skip(r, offset - *pos)?;
                let line = read_line(r)?;
                *pos = offset + line.as_ref().map(|l| l.len() as u64 + 1).unwrap_or(0);
                Ok(line)
            }
        }
    }
}

/// Reads the records at `offsets` (`(seq, offset)` in seq order, as the index gives them).
pub fn read_at(active: &Path, offsets: &[(i64, i64)]) -> Result<Vec<Record>, AuditError> {
    let files = files_of(active)?;
    let locate = |seq: u64| {
        files
            .iter()
            .rposition(|(_, first)| first.is_some_and(|f| f <= seq))
    };
    let mut open: Option<(usize, Reader)> = None;
    let mut out = Vec::with_capacity(offsets.len());
    for &(seq, offset) in offsets {
        let (seq, offset) = (seq as u64, offset as u64);
        let corrupt = |path: &Path| AuditError::Corrupt {
            path: path.display().to_string(),
            message: format!(
                "record {seq} is not at byte {offset}: run `hpc-registry admin audit verify`"
            ),
        };
        let Some(i) = locate(seq) else {
            return Err(corrupt(active));
        };
        let seg = &files[i].0;
        let reusable = matches!(&open, Some((j, r)) if *j == i && r.can_reach(offset));
        if !reusable {
            open = Some((i, Reader::open(seg).map_err(io_err(&seg.path))?));
        }
        let Some((_, reader)) = open.as_mut() else {
            return Err(corrupt(&seg.path));
        };
        let line = reader.line_at(offset).map_err(io_err(&seg.path))?;
        let record = line
            .as_deref()
            .and_then(|l| serde_json::from_slice::<Record>(l).ok())
            .filter(|r| r.seq == seq)
            .ok_or_else(|| corrupt(&seg.path))?;
        out.push(record);
    }
    Ok(out)
}

/// Verifies a log: `path` is its active file (every file of its directory is read, in order),
/// or one rotated file (read alone). With `db`, each record is also compared with the index.
pub fn verify(path: &Path, db: Option<&Db>) -> Result<Report, AuditError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let files: Vec<Segment> = if name == segments::ACTIVE || db.is_some() {
        files_of(path)?.into_iter().map(|(s, _)| s).collect()
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        let found = segments::list(dir)
            .map_err(io_err(dir))?
            .into_iter()
            .find(|s| s.path == path);
        vec![found.unwrap_or(Segment {
            path: path.to_path_buf(),
            first_seq: None,
            compression: Compression::None,
        })]
    };
    let several = files.len() > 1 || files.iter().any(|s| s.first_seq.is_some());
    let mut verifier = Verifier::new(Start::AsFound);
    for seg in &files {
        let label = several.then(|| seg.name());
        let reader = segments::open(seg).map_err(io_err(&seg.path))?;
        verifier
            .feed(label.as_deref(), reader)
            .map_err(io_err(&seg.path))?;
    }
    let mut report = verifier.finish();
    check_names(&files, &mut report)?;
    if let Some(db) = db {
        compare_with_index(&files, db, &mut report)?;
    }
    report.problems.sort_by(|a, b| {
        (file_rank(&files, &a.file), a.line).cmp(&(file_rank(&files, &b.file), b.line))
    });
    Ok(report)
}

/// Orders problems by the file they are in, then by line.
fn file_rank(files: &[Segment], file: &Option<String>) -> usize {
    file.as_ref()
        .and_then(|f| files.iter().position(|s| &s.name() == f))
        .unwrap_or(files.len())
}

/// A rotated file's first record must carry the seq its name says (a file cut at its start, or
/// renamed, is caught), and a chain that does not start at seq 1 must start with a whole
/// rotated file (older files archived), not inside the active one.
fn check_names(files: &[Segment], report: &mut Report) -> Result<(), AuditError> {
    for (i, seg) in files.iter().enumerate() {
        let first = first_record(seg)?;
        let label = (files.len() > 1 || seg.first_seq.is_some()).then(|| seg.name());
        match (seg.first_seq, first) {
            (Some(named), Some(found)) if named != found.seq => report.problem(
                label.as_deref(),
                1,
                format!(
                    "the file's name says its first record is seq {named}, but it is seq {}: records were removed from its start or the file was renamed",
                    found.seq
                ),
            ),
            (None, Some(found)) if i == 0 && found.seq != 1 => {
                report.problem(
                    label.as_deref(),
                    1,
                    format!(
                        "the log starts at seq {} in the active file: the records before it were removed",
                        found.seq
                    ),
                )
            }
            _ => {}
        }
    }
    Ok(())
}

fn first_record(seg: &Segment) -> Result<Option<Head>, AuditError> {
    let mut reader = segments::open(seg).map_err(io_err(&seg.path))?;
    let line = read_line(&mut reader).map_err(io_err(&seg.path))?;
    Ok(line.and_then(|l| serde_json::from_slice::<Head>(&l).ok()))
}

/// Each record's hash against the index's, walking both in seq order (constant memory); the
/// first record's `prev` against the index when older files were archived; and records the
/// index knows after the last one in the files.
fn compare_with_index(files: &[Segment], db: &Db, report: &mut Report) -> Result<(), AuditError> {
    let mut records = Records::new(files);
    let mut indexed_last = 0u64;
    let mut mismatches: Vec<chain::Problem> = Vec::new();
    let first_seq = report.starts_at_seq;
    let mut first_prev: Option<String> = None;
    db.read_blocking(|c| {
        meta::audit_hashes(c, |seq, hash| {
            let seq = seq as u64;
            indexed_last = indexed_last.max(seq);
            if Some(seq + 1) == first_seq {
                first_prev = Some(hash.clone());
            }
            while records.peek().is_some_and(|r| r.2 < seq) {
                records.next();
            }
            if let Some((file, line, s, h)) = records.peek() {
                if *s == seq && *h != hash && mismatches.len() < 100 {
                    mismatches.push(chain::Problem {
                        file: file.clone(),
                        line: *line,
                        message: format!(
                            "seq {seq}: hash differs from the database index: the record was rewritten"
                        ),
                    });
                }
            }
        })
    })?;
    if let Some(e) = records.error.take() {
        return Err(e);
    }
    report.problems.extend(mismatches);
    if let (Some(seq), Some(expected)) = (first_seq, first_prev) {
        let actual = files
            .first()
            .map(first_record)
            .transpose()?
            .flatten()
            .map(|h| h.prev);
        if actual.as_deref() != Some(expected.as_str()) {
            let label = files.first().map(Segment::name);
            report.problem(
                label.as_deref(),
                1,
                format!(
                    "seq {seq}: prev does not match the index's hash of seq {}",
                    seq - 1
                ),
            );
        }
    }
    if indexed_last > report.last_seq {
        let label = (files.len() > 1)
            .then(|| files.last().map(Segment::name))
            .flatten();
        let line = records.last_line;
        report.problem(
            label.as_deref(),
            line + 1,
            format!(
                "the file ends at seq {} but the index knows records up to seq {indexed_last}: records were removed from the end",
                report.last_seq
            ),
        );
    }
    Ok(())
}

/// `(file label, line, seq, hash)` of every parsable record of `files`, in order.
struct Records<'a> {
    files: &'a [Segment],
    next_file: usize,
    reader: Option<(Option<String>, Box<dyn BufRead + Send>, u64)>,
    peeked: Option<(Option<String>, u64, u64, String)>,
    error: Option<AuditError>,
    /// Lines read of the last file opened.
    last_line: u64,
}

impl<'a> Records<'a> {
    fn new(files: &'a [Segment]) -> Records<'a> {
        let mut r = Records {
            files,
            next_file: 0,
            reader: None,
            peeked: None,
            error: None,
            last_line: 0,
        };
        r.advance();
        r
    }

    fn peek(&self) -> Option<&(Option<String>, u64, u64, String)> {
        self.peeked.as_ref()
    }

    fn next(&mut self) {
        self.advance();
    }

    fn advance(&mut self) {
        self.peeked = None;
        let several = self.files.len() > 1 || self.files.iter().any(|s| s.first_seq.is_some());
        loop {
            if self.reader.is_none() {
                let Some(seg) = self.files.get(self.next_file) else {
                    return;
                };
                self.next_file += 1;
                match segments::open(seg) {
                    Ok(r) => {
                        self.last_line = 0;
                        self.reader = Some((several.then(|| seg.name()), r, 0));
                    }
                    Err(e) => {
                        self.error = Some(io_err(&seg.path)(e));
                        return;
                    }
                }
            }
            let Some((label, reader, line)) = self.reader.as_mut() else {
                return;
            };
            match read_line(reader) {
                Ok(Some(bytes)) => {
                    *line += 1;
                    self.last_line = *line;
                    if let Ok(l) = serde_json::from_slice::<chain::Links>(&bytes) {
                        self.peeked = Some((label.clone(), *line, l.seq, l.hash));
                        return;
                    }
                }
                Ok(None) => self.reader = None,
                Err(e) => {
                    self.error = Some(AuditError::Io {
                        path: label.clone().unwrap_or_default(),
                        source: e,
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Record};
    use std::sync::Arc;

    fn rec(i: u64) -> Record {
        let mut r = Record::new("manifest.pull", "ok");
        r.bytes = Some(i);
        r
    }

    #[test]
    fn the_chain_runs_across_rotated_files_compressed_or_not_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let active = dir.path().join(crate::audit::FILE);
        let mut log = AuditLog::open(dir.path(), Arc::clone(&db)).unwrap();
        log.append((0..3).map(rec).collect()).unwrap();
        let first = log.rotate().unwrap().unwrap();
        segments::compress(&first, Compression::Zstd).unwrap();
        log.append((3..5).map(rec).collect()).unwrap();
        let second = log.rotate().unwrap().unwrap();
        assert!(
            log.rotate().unwrap().is_none(),
            "an empty file is not rotated"
        );
        drop(log);
        // Restarted with the last indexed record in a rotated file and an empty active file.
        let mut log = AuditLog::open(dir.path(), Arc::clone(&db)).unwrap();
        log.append((5..7).map(rec).collect()).unwrap();
        drop(log);
        let report = verify(&active, Some(&db)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.records, report.last_seq), (7, 7));
        assert_eq!(report.files.len(), 3);
        let found = db
            .read_blocking(|c| {
                meta::find_audit_events(
                    c,
                    &meta::AuditFilter {
                        limit: 100,
                        ..Default::default()
                    },
                )
            })
            .unwrap();
        let records = read_at(&active, &found).unwrap();
        assert_eq!(
            records.iter().map(|r| r.bytes.unwrap()).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );

        // An edit in the uncompressed rotated file: named with its file and line.
        let text = std::fs::read_to_string(&second).unwrap();
        std::fs::write(&second, text.replacen("\"ok\"", "\"denied\"", 1)).unwrap();
        let report = verify(&active, Some(&db)).unwrap();
        let p = &report.problems[0];
        assert_eq!(p.file.as_deref(), Some("audit-000000000004.jsonl"), "{p:?}");
        assert_eq!(p.line, 1);
        assert!(p.message.contains("edited"), "{p:?}");
        std::fs::write(&second, text).unwrap();

        // A rotated file checked alone starts where its name says.
        let zst = dir.path().join("audit/audit-000000000001.jsonl.zst");
        assert!(verify(&zst, None).unwrap().ok());
        let alone = verify(&second, None).unwrap();
        assert!(alone.ok(), "{:?}", alone.problems);
        assert_eq!(alone.starts_at_seq, Some(4));

        // The oldest file archived away: the rest still verifies against the index.
        std::fs::rename(&zst, dir.path().join("archived.zst")).unwrap();
        let report = verify(&active, Some(&db)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.starts_at_seq, Some(4));
    }
}
