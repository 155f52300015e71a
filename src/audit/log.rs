//! The append-only audit file and its index. One [`AuditLog`] owns `DATA/audit/audit.jsonl`:
//! the server's writer thread, or the offline CLI (which holds the data-directory lock, so the
//! two never write at once).
//!
//! Order of a batch: lines appended and fsynced first, index rows committed second. So the index
//! never names a record the file may lose; a crash between the two leaves records the index lacks,
//! which [`AuditLog::open`] indexes from the file at the next start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{self, GENESIS};
use super::{AuditError, Record};
use crate::meta::{self, AuditRow, Db};

pub struct AuditLog {
    path: PathBuf,
    file: File,
    db: Arc<Db>,
    last_seq: u64,
    last_hash: String,
    /// File length: where the next line starts.
    len: u64,
}

impl AuditLog {
    /// Opens (creating) the log in `data_dir`, resumes the chain from the last indexed record and
    /// indexes any records after it. Refuses to open a file that disagrees with its index (it was
    /// truncated or edited): that needs an administrator, not a silently restarted chain.
    pub fn open(data_dir: &Path, db: Arc<Db>) -> Result<AuditLog, AuditError> {
        let path = data_dir.join(super::FILE);
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        // Who did what is private: owner-only, like the database.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut log = AuditLog {
            path,
            file,
            db,
            last_seq: 0,
            last_hash: GENESIS.to_owned(),
            len: 0,
        };
        log.resume()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, message: String) -> AuditError {
        AuditError::Corrupt {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn io(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn resume(&mut self) -> Result<(), AuditError> {
        let file_len = self.file.metadata().map_err(|e| self.io(e))?.len();
        let indexed = self.db.read_blocking(meta::last_audit_event)?;
        let mut reader = BufReader::new(self.file.try_clone().map_err(|e| self.io(e))?);
        let mut offset = 0u64;
        if let Some((seq, at, hash)) = indexed {
            let at = at as u64;
            reader.seek(SeekFrom::Start(at)).map_err(|e| self.io(e))?;
            let line = read_line(&mut reader).map_err(|e| self.io(e))?;
            let record = line
                .as_deref()
                .and_then(|l| serde_json::from_slice::<Record>(l).ok());
            match record {
                Some(r) if r.seq == seq as u64 && r.hash == hash => {}
                _ => {
                    return Err(self.corrupt(format!(
                        "record {seq} of the index is not at byte {at} of the file ({file_len} bytes): \
                         the file was truncated, replaced or edited. Check it with \
                         `hpc-registry admin audit verify`, keep it as evidence, and move it and the \
                         audit_events rows aside before starting again"
                    )))
                }
            }
            self.last_seq = seq as u64;
            self.last_hash = hash;
            offset = at + line.map(|l| l.len() as u64 + 1).unwrap_or(0);
        }
        // Records after the index (a crash between fsync and commit): index them now.
        let mut pending = Vec::new();
        loop {
            let Some(line) = read_line(&mut reader).map_err(|e| self.io(e))? else {
                break;
            };
            let record: Record = serde_json::from_slice(&line)
                .map_err(|e| self.corrupt(format!("unreadable record at byte {offset}: {e}")))?;
            if record.seq != self.last_seq + 1 || record.prev != self.last_hash {
                return Err(self.corrupt(format!(
                    "record at byte {offset} (seq {}) does not follow seq {}",
                    record.seq, self.last_seq
                )));
            }
            self.last_seq = record.seq;
            self.last_hash = record.hash.clone();
            pending.push((record, offset));
            offset += line.len() as u64 + 1;
        }
        if offset < file_len {
            // A partial last line: a crash mid-write. It was never acknowledged; drop it.
            tracing::warn!(
                "audit log {}: dropping {} bytes of an incomplete last record",
                self.path.display(),
                file_len - offset
            );
            self.file.set_len(offset).map_err(|e| self.io(e))?;
            self.file.sync_all().map_err(|e| self.io(e))?;
        }
        self.len = offset;
        if !pending.is_empty() {
            tracing::info!(
                "audit log: indexing {} records written before the last stop",
                pending.len()
            );
            self.index(&pending)?;
        }
        Ok(())
    }

    /// Seals `records` into the chain, appends them, fsyncs, then indexes them. Returns them sealed.
    pub fn append(&mut self, mut records: Vec<Record>) -> Result<Vec<Record>, AuditError> {
        if records.is_empty() {
            return Ok(records);
        }
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(records.len());
        let (mut seq, mut hash) = (self.last_seq, self.last_hash.clone());
        for r in &mut records {
            chain::seal(r, seq, &hash)?;
            let offset = self.len + buf.len() as u64;
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
            placed.push((r.clone(), offset));
            seq = r.seq;
            hash = r.hash.clone();
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
        {
            // Cut back whatever part made it, so the file stays a valid chain.
            let _ = self.file.set_len(self.len);
            return Err(self.io(e));
        }
        self.len += buf.len() as u64;
        self.last_seq = seq;
        self.last_hash = hash;
        self.index(&placed)?;
        Ok(records)
    }

    fn index(&self, placed: &[(Record, u64)]) -> Result<(), AuditError> {
        self.db.write_blocking(|tx| {
            for (r, offset) in placed {
                meta::insert_audit_event(
                    tx,
                    &AuditRow {
                        seq: r.seq as i64,
                        time_ms: r.time_ms(),
                        user: r.user.clone(),
                        action: r.action.clone(),
                        repository: r.repository.clone(),
                        digest: r.digest.clone(),
                        outcome: r.outcome.clone(),
                        file_offset: *offset as i64,
                        hash: r.hash.clone(),
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// One line without its newline; `None` at the end or for a final line lacking its newline.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.pop() == Some(b'\n') {
        Ok(Some(line))
    } else {
        Ok(None)
    }
}

/// Reads the records at `offsets` of the file at `path`.
pub fn read_at(path: &Path, offsets: &[(i64, i64)]) -> Result<Vec<Record>, AuditError> {
    let io = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let mut out = Vec::with_capacity(offsets.len());
    for (seq, offset) in offsets {
        reader.seek(SeekFrom::Start(*offset as u64)).map_err(io)?;
        let line = read_line(&mut reader).map_err(io)?;
        let record = line
            .as_deref()
            .and_then(|l| serde_json::from_slice::<Record>(l).ok())
            .filter(|r| r.seq == *seq as u64)
            .ok_or_else(|| AuditError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "record {seq} is not at byte {offset}: run `hpc-registry admin audit verify`"
                ),
            })?;
        out.push(record);
    }
    Ok(out)
}

/// Verifies the file at `path`; with `db`, also compares it with the index (records removed at
/// the end, or a chain rewritten from an edit onwards).
pub fn verify_file(path: &Path, db: Option<&Db>) -> Result<chain::Report, AuditError> {
    let io = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let mut report = match &file {
        Some(f) => chain::verify(BufReader::new(f.take(u64::MAX))).map_err(io)?,
        None => chain::Report {
            last_hash: GENESIS.to_owned(),
            ..Default::default()
        },
    };
    let Some(db) = db else {
        return Ok(report);
    };
    // Hashes by seq from the file, then compared with the index's.
    let mut file_hashes = std::collections::HashMap::new();
    if let Some(f) = &file {
        let mut reader = BufReader::new(f.try_clone().map_err(io)?);
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut n = 0u64;
        while let Some(line) = read_line(&mut reader).map_err(io)? {
            n += 1;
            if let Ok(r) = serde_json::from_slice::<chain::Links>(&line) {
                file_hashes.insert(r.seq, (n, r.hash));
            }
        }
    }
    let mut indexed_last = 0u64;
    let mut mismatches = Vec::new();
    db.read_blocking(|c| {
        meta::audit_hashes(c, |seq, hash| {
            let seq = seq as u64;
            indexed_last = indexed_last.max(seq);
            if let Some((line, h)) = file_hashes.get(&seq) {
                if *h != hash && mismatches.len() < 100 {
                    mismatches.push(chain::Problem {
                        line: *line,
                        message: format!(
                            "seq {seq}: hash differs from the database index: the record was rewritten"
                        ),
                    });
                }
            }
        })
    })?;
    report.problems.extend(mismatches);
    if indexed_last > report.last_seq {
        report.problems.push(chain::Problem {
            line: report.records + 1,
            message: format!(
                "the file ends at seq {} but the index knows records up to seq {indexed_last}: records were removed from the end",
                report.last_seq
            ),
        });
    }
    report.problems.sort_by_key(|p| p.line);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str) -> Record {
        let mut r = Record::new("manifest.push", "ok");
        r.user = Some(user.into());
        r.repository = Some(format!("{user}/tool"));
        r
    }

    #[test]
    fn appends_resumes_reindexes_and_detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let path = dir.path().join(crate::audit::FILE);
        {
            let mut log = AuditLog::open(dir.path(), Arc::clone(&db)).unwrap();
            let out = log.append(vec![rec("a"), rec("b")]).unwrap();
            assert_eq!(out[1].seq, 2);
            assert_eq!(out[1].prev, out[0].hash);
        }
        // Resumed: the chain continues.
        let mut log = AuditLog::open(dir.path(), Arc::clone(&db)).unwrap();
        log.append(vec![rec("c")]).unwrap();
        let report = verify_file(&path, Some(&db)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.last_seq, 3);
        drop(log);

        // A record written but not indexed (crash between fsync and commit) and a torn line.
        let mut extra = rec("d");
        chain::seal(&mut extra, 3, &report.last_hash).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "{}", serde_json::to_string(&extra).unwrap()).unwrap();
        write!(f, "{{\"seq\":5,").unwrap();
        drop(f);
        let mut log = AuditLog::open(dir.path(), Arc::clone(&db)).unwrap();
        log.append(vec![rec("e")]).unwrap();
        let filter = meta::AuditFilter {
            user: Some("d".into()),
            limit: 10,
            ..Default::default()
        };
        let found = db
            .read_blocking(|c| meta::find_audit_events(c, &filter))
            .unwrap();
        let records = read_at(&path, &found).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].seq, 4);
        let report = verify_file(&path, Some(&db)).unwrap();
        assert!(report.ok() && report.last_seq == 5, "{report:?}");
        drop(log);

        // The last line removed: the file alone cannot tell, the index can; the server refuses.
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.trim_end().rfind('\n').unwrap() + 1;
        std::fs::write(&path, &text[..cut]).unwrap();
        assert!(verify_file(&path, None).unwrap().ok());
        let report = verify_file(&path, Some(&db)).unwrap();
        assert!(!report.ok());
        assert!(report.problems[0].message.contains("removed from the end"));
        assert!(matches!(
            AuditLog::open(dir.path(), db),
            Err(AuditError::Corrupt { .. })
        ));
    }
}
