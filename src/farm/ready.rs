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
use crate::registry::names::RepositoryName;

/// Entries kept before the index starts over; each is a few hundred bytes.
const CAPACITY: usize = 4096;

/// What a `/sif/<image digest>[?platform=]` request resolves to once its build is ready.
#[derive(Debug, Clone)]
pub struct ReadySif {
    /// The runnable image (an index's child for the platform, or the image itself).
    pub image: String,
    pub sif: Sif,
}

/// The repository the request resolved through, the request's image digest and its explicit
/// platform (None: the default choice). The repository is part of the key because whether a
/// repository may have an image's SIF (it holds every blob the SIF is built from) is checked
/// on the slow path, per repository.
type Key = (String, String, Option<String>);

fn key(repository: &RepositoryName, image: &str, platform: Option<&str>) -> Key {
    (
        repository.as_str().to_owned(),
        image.to_owned(),
        platform.map(str::to_owned),
    )
}

#[derive(Default)]
pub struct ReadySifs {
    entries: Mutex<HashMap<Key, Arc<ReadySif>>>,
}

impl ReadySifs {
    pub fn get(
        &self,
        repository: &RepositoryName,
        image: &str,
        platform: Option<&str>,
    ) -> Option<Arc<ReadySif>> {
        self.lock().get(&key(repository, image, platform)).cloned()
    }

    pub fn insert(
        &self,
        repository: &RepositoryName,
        image: &str,
        platform: Option<&str>,
        ready: ReadySif,
    ) -> Arc<ReadySif> {
        let ready = Arc::new(ready);
        let mut entries = self.lock();
        // A full index starts over rather than tracking recency: the working set of a cluster
        // is small, and refilling costs one slow-path request per SIF.
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key(repository, image, platform), Arc::clone(&ready));
        ready
    }

    pub fn forget(&self, repository: &RepositoryName, image: &str, platform: Option<&str>) {
        self.lock().remove(&key(repository, image, platform));
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
            enroot: None,
        }
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).unwrap()
    }

    #[test]
    fn keys_include_the_requested_platform_and_the_repository() {
        let index = ReadySifs::default();
        let alice = repo("alice/app");
        let ready = ReadySif {
            image: "sha256:child".into(),
            sif: sif("sha256:a"),
        };
        index.insert(&alice, "sha256:idx", Some("linux/arm64"), ready);
        assert!(index.get(&alice, "sha256:idx", None).is_none());
        // Another repository naming the same digest goes through the slow path's checks.
        assert!(index
            .get(&repo("bob/copy"), "sha256:idx", Some("linux/arm64"))
            .is_none());
        let hit = index
            .get(&alice, "sha256:idx", Some("linux/arm64"))
            .expect("cached");
        assert_eq!(hit.image, "sha256:child");
        index.forget(&alice, "sha256:idx", Some("linux/arm64"));
        assert!(index.is_empty());
    }

    #[test]
    fn a_full_index_starts_over() {
        let index = ReadySifs::default();
        let alice = repo("alice/app");
        for i in 0..CAPACITY {
            let ready = ReadySif {
                image: format!("sha256:{i}"),
                sif: sif("sha256:a"),
            };
            index.insert(&alice, &format!("sha256:{i}"), None, ready);
        }
        assert_eq!(index.len(), CAPACITY);
        let ready = ReadySif {
            image: "sha256:new".into(),
            sif: sif("sha256:a"),
        };
        index.insert(&alice, "sha256:new", None, ready);
        assert_eq!(index.len(), 1);
    }
}
