//! When the active audit file is rotated (`[audit] rotate_bytes`, `rotate_age`) and how rotated
//! files are compressed (`[audit] compress`). The writer thread checks [`Policy::due`] after
//! each batch and once a minute; rotated files are compressed by one thread of their own, so
//! writing never waits for it.

use std::path::PathBuf;
use std::sync::mpsc;

use super::segments::{self, Compression};
use crate::config::AuditConfig;

/// The parsed `[audit]` rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Rotate once the active file holds this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate once the active file's first record is this old (milliseconds).
    pub max_age_ms: Option<i64>,
    pub compression: Compression,
}

impl Policy {
    /// Parses `[audit]`; the error names the bad setting.
    pub fn from_config(c: &AuditConfig) -> Result<Policy, String> {
        let max_bytes = c
            .rotate_bytes
            .as_deref()
            .map(|s| {
                crate::quota::parse_size(s)
                    .map_err(|e| format!("[audit] rotate_bytes: {e}"))
                    .and_then(|n| match n {
                        0 => Err("[audit] rotate_bytes must be more than 0".to_owned()),
                        n => Ok(n),
                    })
            })
            .transpose()?;
        let max_age_ms = c
            .rotate_age
            .as_deref()
            .map(|s| {
                crate::timefmt::parse_duration_secs(s)
                    .map_err(|e| format!("[audit] rotate_age: {e}"))
                    .and_then(|n| match n {
                        0 => Err("[audit] rotate_age must be more than 0s".to_owned()),
                        n => Ok(n * 1000),
                    })
            })
            .transpose()?;
        let compression = match c.compress.as_str() {
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => {
                return Err(format!(
                    "[audit] compress = {other:?}: use \"zstd\", \"gzip\" or \"none\""
                ))
            }
        };
        Ok(Policy {
            max_bytes,
            max_age_ms,
            compression,
        })
    }

    /// Whether an active file of `len` bytes whose first record is from `first_ms` is due.
    pub fn due(&self, len: u64, first_ms: Option<i64>, now_ms: i64) -> bool {
        if len == 0 {
            return false;
        }
        self.max_bytes.is_some_and(|m| len >= m)
            || matches!((self.max_age_ms, first_ms), (Some(age), Some(first)) if now_ms - first >= age)
    }
}

/// The compressing thread: first the rotated files a crash left uncompressed, then each file
/// sent to it, one at a time (two compressions of one file never overlap).
pub fn start_compressor(dir: PathBuf, compression: Compression) -> mpsc::Sender<PathBuf> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let spawned = std::thread::Builder::new()
        .name("audit-compress".into())
        .spawn(move || {
            match segments::compress_pending(&dir, compression) {
                Ok(0) => {}
                Ok(n) => tracing::info!("audit: compressed {n} rotated files left uncompressed"),
                Err(e) => tracing::warn!("audit: cannot compress rotated files: {e}"),
            }
            for path in rx {
                if let Err(e) = segments::compress(&path, compression) {
                    // The file stays, uncompressed and complete: nothing is lost.
                    tracing::warn!("audit: cannot compress {}: {e}", path.display());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("audit: cannot start the compressing thread: {e}");
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_rotation_is_due_by_size_or_age() {
        let c = AuditConfig {
            rotate_bytes: Some("1KiB".into()),
            rotate_age: Some("1h".into()),
            compress: "gzip".into(),
            ..AuditConfig::default()
        };
        let p = Policy::from_config(&c).unwrap();
        assert_eq!(p.max_bytes, Some(1024));
        assert_eq!(p.max_age_ms, Some(3_600_000));
        assert_eq!(p.compression, Compression::Gzip);
        assert!(!p.due(0, Some(0), i64::MAX));
        assert!(p.due(1024, Some(0), 1));
        assert!(!p.due(10, Some(0), 3_599_999));
        assert!(p.due(10, Some(0), 3_600_000));
        let bad = AuditConfig {
            compress: "lz4".into(),
            ..AuditConfig::default()
        };
        assert!(Policy::from_config(&bad).unwrap_err().contains("compress"));
        let zero = AuditConfig {
            rotate_bytes: Some("0".into()),
            ..AuditConfig::default()
        };
        assert!(Policy::from_config(&zero).is_err());
        assert_eq!(
            Policy::from_config(&AuditConfig::default()).unwrap(),
            Policy::default()
        );
    }
}
