//! The site's client configuration, `/etc/hpc-registry/client.toml` (another file with
//! `HPC_REGISTRY_CLIENT_CONFIG`), read by the compute-node commands (`fetch`, `run`, `cache`,
//! `login`). Every key is optional; environment variables override the file:
//!
//! ```toml
//! url = "https://registry.example:5000"   # HPC_REGISTRY_URL
//! cacert = "/etc/hpc-registry/ca.crt"      # HPC_REGISTRY_CACERT
//! munge_socket = "/run/munge/munge.socket.2"
//!
//! [cache]
//! dir = "/local/hpc-registry"              # HPC_REGISTRY_CACHE_DIR; node-local disk, /dev/shm, $TMPDIR
//! max_size = "200GiB"                      # HPC_REGISTRY_CACHE_MAX_SIZE; per user, LRU
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Where the site file lives unless `HPC_REGISTRY_CLIENT_CONFIG` names another.
pub const SITE_FILE: &str = "/etc/hpc-registry/client.toml";
/// The cache's root when the site names none: survives reboots on most nodes, unlike /tmp.
pub const DEFAULT_CACHE_DIR: &str = "/var/tmp/hpc-registry";

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub url: Option<String>,
    pub cacert: Option<PathBuf>,
    pub munge_socket: Option<PathBuf>,
    #[serde(default)]
    pub cache: CacheConfig,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub dir: Option<PathBuf>,
    /// A size such as `200GiB`; no limit without it.
    pub max_size: Option<String>,
}

impl ClientConfig {
    /// The site file (when it exists) with the environment's overrides applied.
    pub fn load() -> anyhow::Result<ClientConfig> {
        let (path, named) = match std::env::var_os("HPC_REGISTRY_CLIENT_CONFIG") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), true),
            _ => (PathBuf::from(SITE_FILE), false),
        };
        let mut config = if named || path.exists() {
            Self::from_file(&path)?
        } else {
            ClientConfig::default()
        };
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("HPC_REGISTRY_URL") {
            config.url = Some(v);
        }
        if let Some(v) = var("HPC_REGISTRY_CACERT") {
            config.cacert = Some(v.into());
        }
        if let Some(v) = var("HPC_REGISTRY_CACHE_DIR") {
            config.cache.dir = Some(v.into());
        }
        if let Some(v) = var("HPC_REGISTRY_CACHE_MAX_SIZE") {
            config.cache.max_size = Some(v);
        }
        config.cache_limit()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<ClientConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the client config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// The registry's URL, or a message saying where to set it.
    pub fn url(&self) -> anyhow::Result<&str> {
        match self.url.as_deref() {
            Some(u) => Ok(u.trim_end_matches('/')),
            None => bail!(
                "no registry URL: set HPC_REGISTRY_URL, or `url = \"https://…\"` in {SITE_FILE}"
            ),
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
    }

    /// The cache's size cap in bytes, if any.
    pub fn cache_limit(&self) -> anyhow::Result<Option<u64>> {
        self.cache
            .max_size
            .as_deref()
            .map(|s| {
                crate::quota::parse_size(s)
                    .map_err(|e| anyhow::anyhow!("cache max_size {s:?}: {e}"))
            })
            .transpose()
    }
}
