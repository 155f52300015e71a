//! The files of the audit log: the active `audit.jsonl` and the rotated files before it, named by
//! the seq of their first record so that names sort in chain order:
//! `audit-000000001001.jsonl`, compressed `audit-000000001001.jsonl.zst` (or `.gz`, which an
//! admin may also make by hand with `gzip`). Reading any of them goes through [`open`], which
//! decompresses by the name's suffix.
//!
//! A rotated file is never written again, so compressing it is a copy: `NAME.zst.tmp` written
//! and fsynced, renamed to `NAME.zst`, then `NAME` removed. If both exist (a crash between the
//! last two steps) the uncompressed one is read and the compression is redone.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How rotated files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
}

impl Compression {
    fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    /// By the file name's suffix.
    fn of_name(name: &str) -> Compression {
        if name.ends_with(".zst") {
            Compression::Zstd
        } else if name.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// The chain fields and time of a record, read leniently.
#[derive(Debug, Clone, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub prev: String,
    #[serde(default)]
    pub time: String,
}

impl Head {
    /// Milliseconds since the epoch of `time` (0 if unparsable).
    pub fn time_ms(&self) -> i64 {
        super::time::parse_rfc3339(&self.time).unwrap_or(0)
    }
}

/// The active file's name (see [`super::FILE`]).
pub const ACTIVE: &str = "audit.jsonl";

/// One file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// The seq of its first record, from a rotated file's name; `None` for the active file.
    pub first_seq: Option<u64>,
    pub compression: Compression,
}

impl Segment {
    /// The file name, for reports.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The name a file rotated out with its first record at `first_seq` gets.
pub fn rotated_name(first_seq: u64, compression: Compression) -> String {
    format!("audit-{first_seq:012}.jsonl{}", compression.suffix())
}

/// The first seq a rotated file's name carries, or `None` if the name is not one.
fn parse_rotated(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("audit-")?;
    let (digits, suffix) = rest.split_once(".jsonl")?;
    if !matches!(suffix, "" | ".gz" | ".zst") || digits.is_empty() {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every file of the log in `dir`, oldest first, the active file (if it exists) last. Of a
/// rotated file present both compressed and not, the uncompressed one is listed.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut rotated: Vec<Segment> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(first_seq) = parse_rotated(&name) else {
            continue;
        };
        let seg = Segment {
            path: entry.path(),
            first_seq: Some(first_seq),
            compression: Compression::of_name(&name),
        };
        match rotated.iter_mut().find(|s| s.first_seq == Some(first_seq)) {
            Some(existing) if existing.compression == Compression::None => {}
            Some(existing) if seg.compression == Compression::None => *existing = seg,
            // Two compressed copies (an admin's gzip beside ours): either will do.
            Some(_) => {}
            None => rotated.push(seg),
        }
    }
    rotated.sort_by_key(|s| s.first_seq);
    let active = dir.join(ACTIVE);
    if active.exists() {
        rotated.push(Segment {
            path: active,
            first_seq: None,
            compression: Compression::None,
        });
    }
    Ok(rotated)
}

/// A buffered reader of the records in `seg`, decompressed.
pub fn open(seg: &Segment) -> io::Result<Box<dyn BufRead + Send>> {
    let file = File::open(&seg.path)?;
    Ok(match seg.compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            BufReader::new(file),
        ))),
        Compression::Zstd => Box::new(BufReader::new(zstd::stream::read::Decoder::new(file)?)),
    })
}

/// Compresses the rotated file `path` (uncompressed) in place: `NAME.zst` replaces `NAME`.
pub fn compress(path: &Path, compression: Compression) -> io::Result<PathBuf> {
    if compression == Compression::None {
        return Ok(path.to_path_buf());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let done = path.with_file_name(format!("{name}{}", compression.suffix()));
    let tmp = path.with_file_name(format!("{name}{}.tmp", compression.suffix()));
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut input = File::open(path)?;
    let out = match compression {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            io::copy(&mut input, &mut enc)?;
            enc.finish()?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
            io::copy(&mut input, &mut enc)?;
            enc.finish()?
        }
        Compression::None => unreachable!("returned above"),
    };
    out.sync_all()?;
    std::fs::rename(&tmp, &done)?;
    sync_dir(path)?;
    std::fs::remove_file(path)?;
    sync_dir(path)?;
    Ok(done)
}

/// Compresses every rotated file left uncompressed (a crash mid-compression, or a policy that
/// turned compression on); returns how many.
pub fn compress_pending(dir: &Path, compression: Compression) -> io::Result<usize> {
    if compression == Compression::None {
        return Ok(0);
    }
    let mut n = 0;
    for seg in list(dir)? {
        if seg.first_seq.is_some() && seg.compression == Compression::None {
            compress(&seg.path, compression)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Makes a rename or removal in the directory of `path` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The first complete line of the file at `path` (the active file's first record), if any.
pub fn first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut reader = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok((line.pop() == Some(b'\n')).then_some(line))
}

/// Skips `n` bytes of `reader` (a decompressed stream cannot seek).
pub fn skip(reader: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file is shorter than the index says",
        ));
    }
    Ok(())
}

/// Writes `bytes` to a new owner-only file at `path` (test and tool helper).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order_and_compressed_files_read_back() {
        assert_eq!(
            rotated_name(1001, Compression::Zstd),
            "audit-000000001001.jsonl.zst"
        );
        assert_eq!(parse_rotated("audit-000000001001.jsonl.gz"), Some(1001));
        assert_eq!(parse_rotated("audit-12.jsonl.zst.tmp"), None);
        assert_eq!(parse_rotated("audit.jsonl"), None);
        let dir = tempfile::tempdir().unwrap();
        let text = b"{\"seq\":1}\n{\"seq\":2}\n";
        for (seq, c) in [
            (1, Compression::Zstd),
            (3, Compression::Gzip),
            (5, Compression::None),
        ] {
            let p = dir.path().join(rotated_name(seq, Compression::None));
            write_private(&p, text).unwrap();
            compress(&p, c).unwrap();
        }
        std::fs::write(dir.path().join(ACTIVE), b"").unwrap();
        let segs = list(dir.path()).unwrap();
        let names: Vec<String> = segs.iter().map(Segment::name).collect();
        assert_eq!(
            names,
            [
                "audit-000000000001.jsonl.zst",
                "audit-000000000003.jsonl.gz",
                "audit-000000000005.jsonl",
                "audit.jsonl"
            ]
        );
        for seg in &segs[..3] {
            let mut back = Vec::new();
            open(seg).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, text, "{}", seg.name());
        }
    }
}
