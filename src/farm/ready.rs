//! An in-memory index of ready SIFs, for the `/sif` hot path.
//!
//! Compute nodes fetch the same few SIFs all day. Resolving a request from scratch costs an index
//! parse, a config-blob read (the platform) and three metadata reads; for small SIFs that
//! dominated the transfer itself. A ready SIF never changes for a given image digest and
//! platform, so the resolution is remembered here.
//!
//! Authorization is never cached: the caller still resolves the reference through a repository
//! they may read on every request. Entries are validated by opening the SIF file: if garbage
//! collection or scrub removed or quarantined it, the caller forgets the entry and takes the
//! slow path, which sees the current state of the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::meta::Sif;

/// Entries kept before the index starts over; each is a few hundred bytes.
const CAPACITY: usize = 4096;

/// What a `/sif/<image digest>[?platform=]` request resolves to once its build is ready.
#[derive(Debug, Clone)]
pub struct ReadySif {
    /// The runnable image (an index's child for the platform, or the image itself).
    pub image: String,
    pub sif: Sif,
}

/// The request's image digest and its explicit platform (None: the default choice).
type Key = (String, Option<String>);

#[derive(Default)]
pub struct ReadySifs {
    entries: Mutex<HashMap<Key, Arc<ReadySif>>>,
}

impl ReadySifs {
    pub fn get(&self, image: &str, platform: Option<&str>) -> Option<Arc<ReadySif>> {
        let key = (image.to_owned(), platform.map(str::to_owned));
        self.lock().get(&key).cloned()
    }

    pub fn insert(&self, image: &str, platform: Option<&str>, ready: ReadySif) {
        let mut entries = self.lock();
        // A full index starts over rather than tracking recency: the working set of a cluster
        // is small, and refilling costs one slow-path request per SIF.
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            (image.to_owned(), platform.map(str::to_owned)),
            Arc::new(ready),
        );
    }

    pub fn forget(&self, image: &str, platform: Option<&str>) {
        let key = (image.to_owned(), platform.map(str::to_owned));
        self.lock().remove(&key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<ReadySif>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sif(digest: &str) -> Sif {
        Sif {
            digest: digest.into(),
            manifest_digest: "sha256:img".into(),
            platform: "linux/amd64".into(),
            size: 1,
            squashfs_offset: 0,
            squashfs_size: 1,
            backend: "native".into(),
            builder: "t".into(),
            compression: "gzip".into(),
            duration_ms: 0,
            created_at: 0,
        }
    }

    #[test]
    fn keys_include_the_requested_platform() {
        let index = ReadySifs::default();
        let ready = ReadySif {
            image: "sha256:child".into(),
            sif: sif("sha256:a"),
        };
        index.insert("sha256:idx", Some("linux/arm64"), ready);
        assert!(index.get("sha256:idx", None).is_none());
        let hit = index
            .get("sha256:idx", Some("linux/arm64"))
            .expect("cached");
        assert_eq!(hit.image, "sha256:child");
        index.forget("sha256:idx", Some("linux/arm64"));
        assert!(index.is_empty());
    }

    #[test]
    fn a_full_index_starts_over() {
        let index = ReadySifs::default();
        for i in 0..CAPACITY {
            let ready = ReadySif {
                image: format!("sha256:{i}"),
                sif: sif("sha256:a"),
            };
            index.insert(&format!("sha256:{i}"), None, ready);
        }
        assert_eq!(index.len(), CAPACITY);
        let ready = ReadySif {
            image: "sha256:new".into(),
            sif: sif("sha256:a"),
        };
        index.insert("sha256:new", None, ready);
        assert_eq!(index.len(), 1);
    }
}
