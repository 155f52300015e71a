//! The node's cache cleaner (`hpc-registry cache prune --all-users`, run by
//! `hpc-registry-cache-clean.timer`): every user's private cache under the root, each pruned to
//! the per-user size cap. Only a process that may enter other users' 0700 directories can do
//! this (root, or the cleaner's dedicated user with `CAP_DAC_OVERRIDE`); it never creates a
//! cache of its own.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{io_at, Entry, NodeCache, Result};

/// What one user's prune removed.
#[derive(Debug)]
pub struct UserSweep {
    pub uid: u32,
    pub removed: Vec<Entry>,
}

/// Prunes every user's cache under `root` to `target` bytes each (held SIFs stay). A root that
/// does not exist yet holds nothing to prune. A directory that is not a well-formed user cache
/// (not named by a uid, a symlink, owned by another uid, open to others) is skipped with a
/// warning, never entered: `fetch` would refuse it as well.
pub fn prune_all_users(root: &Path, target: u64) -> Result<Vec<UserSweep>> {
    let items = match fs::read_dir(root) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(root)(e)),
    };
    let mut swept = Vec::new();
    for item in items {
        let item = item.map_err(io_at(root))?;
        let Some(uid) = item
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = item.path();
        if let Err(why) = user_cache_ok(&dir, uid) {
            tracing::warn!(dir = %dir.display(), %why, "not a user's cache; left alone");
            continue;
        }
        let cache = NodeCache { dir, limit: None };
        let removed = cache.evict_to(target)?;
        swept.push(UserSweep { uid, removed });
    }
    swept.sort_by_key(|s| s.uid);
    Ok(swept)
}

/// The checks `NodeCache::open` makes for its caller's own directory, for the uid in the name.
fn user_cache_ok(dir: &Path, uid: u32) -> std::result::Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.file_type().is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!("owned by uid {}", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("mode {:o}", meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The caller's well-formed cache under `root`: (uid, directory).
    fn my_cache(root: &Path) -> (u32, std::path::PathBuf) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let mine = root.join(me.to_string());
        fs::create_dir(&mine).unwrap();
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o700)).unwrap();
        (me, mine)
    }

    #[test]
    fn a_missing_root_has_nothing_to_prune() {
        let dir = tempfile::tempdir().unwrap();
        let swept = prune_all_users(&dir.path().join("absent"), 0).unwrap();
        assert!(swept.is_empty());
    }

    #[test]
    fn prunes_well_formed_user_caches_and_skips_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let (me, mine) = my_cache(root.path());
        let hex = "ab".repeat(32);
        fs::write(mine.join(format!("{hex}.sif")), b"0123456789").unwrap();
        // Named by another uid than its owner's: skipped, its SIF stays.
        let other = root.path().join((me + 1).to_string());
        fs::create_dir(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(other.join(format!("{hex}.sif")), b"x").unwrap();
        // Not named by a uid: not a cache at all.
        let open = root.path().join("not-a-uid");
        fs::create_dir(&open).unwrap();

        let swept = prune_all_users(root.path(), 0).unwrap();
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert_eq!(swept[0].uid, me);
        assert_eq!(swept[0].removed.len(), 1);
        assert!(!mine.join(format!("{hex}.sif")).exists());
        assert!(other.join(format!("{hex}.sif")).exists());
    }

    #[test]
    fn a_user_cache_under_its_cap_keeps_everything() {
        let root = tempfile::tempdir().unwrap();
        let (me, mine) = my_cache(root.path());
        let sif = mine.join(format!("{}.sif", "cd".repeat(32)));
        fs::write(&sif, b"0123456789").unwrap();
        let swept = prune_all_users(root.path(), 1 << 20).unwrap();
        assert_eq!(swept[0].uid, me);
        assert!(swept[0].removed.is_empty());
        assert!(sif.exists());
    }
}
