//! The append-only audit file and its index. One [`AuditLog`] owns `DATA/audit/audit.jsonl`:
//! the server's writer thread, or the offline CLI (which holds the data-directory lock, so the
//! two never write at once).
//!
//! Order of a batch: lines appended and fsynced first, index rows committed second. So the index
//! never names a record the file may lose; a crash between the two leaves records the index lacks,
//! which [`AuditLog::open`] indexes from the file at the next start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{self, GENESIS};
use super::segments;
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
    /// Seq and time (ms) of the active file's first record, for rotation.
    first: Option<(u64, i64)>,
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
            first: None,
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
        let first = segments::first_line(&self.path)
            .map_err(|e| self.io(e))?
            .and_then(|l| serde_json::from_slice::<segments::Head>(&l).ok());
        self.first = first.as_ref().map(|h| (h.seq, h.time_ms()));
        let rotated_out = indexed
            .as_ref()
            .is_some_and(|(seq, ..)| first.as_ref().is_none_or(|f| f.seq > *seq as u64));
        if let (true, Some((seq, _, hash))) = (rotated_out, &indexed) {
            // The last indexed record was rotated out: this file continues it (or is empty).
            self.resume_after_rotation(*seq as u64, hash, first.as_ref())?;
        } else if let Some((seq, at, hash)) = indexed {
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
            self.index(pending.iter().map(|(r, o)| (r, *o)))?;
        }
        Ok(())
    }

    /// Resumes after the last indexed record `seq`, which is in a rotated file: records after it
    /// in rotated files (written, then rotated, before the index caught up, as in a backup
    /// restored from an index snapshot older than its files) are indexed, and the active file
    /// must be empty or continue the chain.
    fn resume_after_rotation(
        &mut self,
        seq: u64,
        hash: &str,
        first: Option<&segments::Head>,
    ) -> Result<(), AuditError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let rotated: Vec<segments::Segment> = segments::list(&dir)
            .map_err(|e| self.io(e))?
            .into_iter()
            .filter(|s| s.first_seq.is_some())
            .collect();
        if !rotated
            .iter()
            .any(|s| s.first_seq.is_some_and(|f| f <= seq))
        {
            return Err(self.corrupt(format!(
                "the index ends at record {seq}, which is in no file of the log: the log was \
                 truncated or replaced. Check it with `hpc-registry admin audit verify`"
            )));
        }
        self.last_seq = seq;
        self.last_hash = hash.to_owned();
        for (i, seg) in rotated.iter().enumerate() {
            let next_first = rotated
                .get(i + 1)
                .and_then(|s| s.first_seq)
                .unwrap_or(u64::MAX);
            if next_first <= self.last_seq + 1 {
                continue;
            }
            let pending = self.unindexed_in(seg)?;
            if !pending.is_empty() {
                tracing::info!(
                    "audit log: indexing {} records of {}",
                    pending.len(),
                    seg.name()
                );
                self.index(pending.iter().map(|(r, o)| (r, *o)))?;
            }
        }
        let follows = first.is_none_or(|f| f.seq == self.last_seq + 1 && f.prev == self.last_hash);
        if !follows {
            return Err(self.corrupt(format!(
                "the active file does not continue the chain at record {}: the log was \
                 truncated, replaced or edited. Check it with `hpc-registry admin audit verify`",
                self.last_seq
            )));
        }
        Ok(())
    }

    /// The records of a rotated file after `last_seq`, linked to it, with their offsets.
    fn unindexed_in(&mut self, seg: &segments::Segment) -> Result<Vec<(Record, u64)>, AuditError> {
        let io = |e| AuditError::Io {
            path: seg.path.display().to_string(),
            source: e,
        };
        let mut reader = segments::open(seg).map_err(io)?;
        let (mut offset, mut pending) = (0u64, Vec::new());
        while let Some(line) = read_line(&mut reader).map_err(io)? {
            let at = offset;
            offset += line.len() as u64 + 1;
            let Ok(record) = serde_json::from_slice::<Record>(&line) else {
                return Err(AuditError::Corrupt {
                    path: seg.path.display().to_string(),
                    message: format!("unreadable record at byte {at}"),
                });
            };
            if record.seq <= self.last_seq {
                continue;
            }
            if record.seq != self.last_seq + 1 || record.prev != self.last_hash {
                return Err(AuditError::Corrupt {
                    path: seg.path.display().to_string(),
                    message: format!(
                        "record at byte {at} (seq {}) does not follow seq {}",
                        record.seq, self.last_seq
                    ),
                });
            }
            self.last_seq = record.seq;
            self.last_hash = record.hash.clone();
            pending.push((record, at));
        }
        Ok(pending)
    }

    /// Bytes in the active file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the active file holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The time (ms) of the active file's first record, if it holds one.
    pub fn first_time_ms(&self) -> Option<i64> {
        self.first.map(|(_, t)| t)
    }

    /// Renames the active file to its rotated name (after its first record's seq) and starts a
    /// new one; the chain goes on in it. Returns the rotated file, `None` if there was nothing to
    /// rotate. Between two batches only, so every record of the rotated file is indexed.
    pub fn rotate(&mut self) -> Result<Option<PathBuf>, AuditError> {
        let Some((first_seq, _)) = self.first else {
            return Ok(None);
        };
        let rotated = self.path.with_file_name(segments::rotated_name(
            first_seq,
            segments::Compression::None,
        ));
        let io = |e| AuditError::Io {
            path: rotated.display().to_string(),
            source: e,
        };
        self.file.sync_all().map_err(io)?;
        std::fs::rename(&self.path, &rotated).map_err(io)?;
        segments::sync_dir(&self.path).map_err(io)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        segments::sync_dir(&self.path).map_err(|e| self.io(e))?;
        self.len = 0;
        self.first = None;
        Ok(Some(rotated))
    }

    /// Seals `records` into the chain, appends them, fsyncs, then indexes them. Returns them sealed.
    pub fn append(&mut self, mut records: Vec<Record>) -> Result<Vec<Record>, AuditError> {
        if records.is_empty() {
            return Ok(records);
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        let (mut seq, mut hash) = (self.last_seq, self.last_hash.clone());
        for r in &mut records {
            offsets.push(self.len + buf.len() as u64);
            chain::seal_line(r, seq, &hash, &mut buf)?;
            buf.push(b'\n');
            seq = r.seq;
            hash.clone_from(&r.hash);
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
        if self.first.is_none() {
            self.first = records.first().map(|r| (r.seq, r.time_ms()));
        }
        self.len += buf.len() as u64;
        self.last_seq = seq;
        self.last_hash = hash;
        self.index(records.iter().zip(offsets))?;
        Ok(records)
    }

    /// Indexes each record at its file offset.
    fn index<'r>(
        &self,
        placed: impl IntoIterator<Item = (&'r Record, u64)>,
    ) -> Result<(), AuditError> {
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
                        file_offset: offset as i64,
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
pub(super) fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.pop() == Some(b'\n') {
        Ok(Some(line))
    } else {
        Ok(None)
    }
}

/// Reads the records at `offsets` (`(seq, offset)` from the index, in seq order) of the log
/// whose active file is `path`, in whichever of its files each is.
pub fn read_at(path: &Path, offsets: &[(i64, i64)]) -> Result<Vec<Record>, AuditError> {
    super::walk::read_at(path, offsets)
}

/// Verifies the log whose active file is `path` (and its rotated files), or one rotated file
/// alone; with `db`, also compares it with the index (records removed at the end, or a chain
/// rewritten from an edit onwards).
pub fn verify_file(path: &Path, db: Option<&Db>) -> Result<chain::Report, AuditError> {
    super::walk::verify(path, db)
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
