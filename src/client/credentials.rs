//! The access token `hpc-registry login` saves for nodes without MUNGE:
//! `~/.config/hpc-registry/credentials.toml` (`HPC_REGISTRY_CREDENTIALS` names another file),
//! mode 0600 in a 0700 directory. A file others can read is refused, not used.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::ClientConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// The registry the token is for.
    pub url: String,
    pub token: String,
}

/// Where the credentials file is.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HPC_REGISTRY_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => bail!("HOME is not set: cannot find the credentials file"),
        },
    };
    Ok(base.join("hpc-registry").join("credentials.toml"))
}

/// The saved token, if there is one for the configured registry (or any, without one).
pub fn load(config: &ClientConfig) -> anyhow::Result<Option<Saved>> {
    let Ok(path) = path() else {
        return Ok(None);
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}): refusing to use it; chmod 600 it, or log in again",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let saved: Saved =
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let same_registry = match config.url.as_deref() {
        Some(url) => url.trim_end_matches('/') == saved.url.trim_end_matches('/'),
        None => true,
    };
    Ok(same_registry.then_some(saved))
}

/// Saves `saved` (replacing the file atomically, 0600 from its first byte).
pub fn save(saved: &Saved) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let dir = path
        .parent()
        .context("the credentials file has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    let tmp = dir.join(".credentials.toml.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(toml::to_string(saved)?.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
