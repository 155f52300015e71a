//! One typed configuration: embedded defaults ← TOML file ← `HPC_REGISTRY_*` environment ←
//! command-line flags (clap merges the last two; see `main.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::Anonymous;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. The default keeps a fresh install private to the machine.
    pub listen: SocketAddr,
    /// Blobs, uploads, the metadata database and SIFs live here.
    pub data_dir: PathBuf,
    pub registry: RegistryConfig,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Largest manifest accepted (the spec asks for at least 4 MiB); larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Upload sessions untouched for this long are removed.
    pub upload_expiry_secs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// What unauthenticated callers may do: `none` (default), `read` or `read-write`.
    pub anonymous: Anonymous,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("registry-data"),
            registry: RegistryConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_expiry_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("--dev opens anonymous read-write access and is only allowed on a loopback address, not {0}; use --listen 127.0.0.1:PORT")]
    DevNotLoopback(SocketAddr),
}

impl Config {
    /// Reads a TOML config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Turns on development mode: anonymous read-write, refused unless listening on loopback.
    pub fn enable_dev_mode(&mut self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::DevNotLoopback(self.listen));
        }
        self.auth.anonymous = Anonymous::ReadWrite;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "listen = \"0.0.0.0:5001\"\n[registry]\nmax_manifest_bytes = 10\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen.port(), 5001);
        assert_eq!(c.registry.max_manifest_bytes, 10);
        assert_eq!(c.data_dir, PathBuf::from("registry-data"));
        let mut c2 = c.clone();
        assert!(matches!(
            c2.enable_dev_mode(),
            Err(ConfigError::DevNotLoopback(_))
        ));
        std::fs::write(&p, "lisen = \"x\"\n").unwrap();
        assert!(Config::from_file(&p).is_err());
    }
}
