//! Edits the image's tree the way Apptainer's `makeBaseEnv`, `makeFile` and `insertDefinition`
//! edit the root filesystem on disk: paths resolve as the kernel would inside a chroot, so an
//! image's own symlinks are followed inside the image and never outside it.

use std::collections::BTreeMap;

use super::scripts::{BOOTSTRAP_HISTORY_PATH, DEFFILE_PATH};
use super::SingularityError;
use crate::tree::resolve::{self, Rules, WalkError};
use crate::tree::{Content, InodeId, Kind, Meta, Spool, Tree, ROOT};

/// Where a path ends up in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// The last component exists: `id` is named `name` in directory `parent`.
    Entry {
        parent: InodeId,
        name: Vec<u8>,
        id: InodeId,
    },
    /// Every directory exists but the last component does not.
    Missing { parent: InodeId, name: Vec<u8> },
    /// The path ends at a directory without naming it (`/`, or a trailing `..`).
    Dir(InodeId),
}

/// Resolves `path` from the root the way the kernel would inside a chroot: every symlink on the
/// way is followed (absolute targets restart at the root, `..` never climbs above it), the last
/// component only if `follow_last`.
pub(super) fn resolve(tree: &Tree, path: &[u8], follow_last: bool) -> Result<Resolved, WalkError> {
    let walked = resolve::walk(tree, path, Rules::chroot(follow_last))?;
    let parent = walked.parent().unwrap_or(ROOT);
    let ends_with_name = walked.ends_with_name;
    let inode = walked.inode();
    let name = walked
        .components
        .into_iter()
        .next_back()
        .map(|(name, _)| name);
    Ok(match (ends_with_name, name, inode) {
        (true, Some(name), Some(id)) => Resolved::Entry { parent, name, id },
        (true, Some(name), None) => Resolved::Missing { parent, name },
        (_, _, inode) => Resolved::Dir(inode.unwrap_or(ROOT)),
    })
}

/// Applies the `/.singularity.d` additions to one tree.
pub(super) struct Editor<'a> {
    pub tree: &'a mut Tree,
    pub spool: &'a mut Spool,
    /// Modification time of everything created or rewritten.
    pub mtime: i64,
}

impl Editor<'_> {
    fn new_dir(&mut self, parent: InodeId, name: Vec<u8>) -> InodeId {
        let meta = Meta::new(0o755, 0, 0, self.mtime);
        let id = self.tree.add_inode(Kind::Dir(BTreeMap::new()), meta);
        self.tree.link(parent, name, id);
        id
    }

    /// [`resolve`], creating missing directories on the way (as `MkdirAll` does).
    fn resolve_creating_dirs(
        &mut self,
        path: &str,
        follow_last: bool,
    ) -> Result<Resolved, SingularityError> {
        // Each round creates one directory; the bound only guards against a logic error.
        for _ in 0..1024 {
            match resolve(self.tree, path.as_bytes(), follow_last) {
                Err(WalkError::MissingDir { parent, name }) => {
                    self.new_dir(parent, name);
                }
                other => return other.map_err(|e| path_error(path, e, "a directory")),
            }
        }
        Err(SingularityError::SymlinkLoop(path.to_string()))
    }

    /// `mkdirAllInRootfs`: creates `path` (0755, root) unless something, even a symlink, is
    /// already there.
    pub(super) fn make_dir_unless_present(&mut self, path: &str) -> Result<(), SingularityError> {
        if let Resolved::Missing { parent, name } = self.resolve_creating_dirs(path, false)? {
            self.new_dir(parent, name);
        }
        Ok(())
    }

    /// A directory that must exist, following symlinks (created if absent); an error if the
    /// image has something else there.
    fn existing_dir(&mut self, path: &str) -> Result<InodeId, SingularityError> {
        self.make_dir_unless_present(path)?;
        match self.resolve_creating_dirs(path, true)? {
            Resolved::Entry { id, .. } | Resolved::Dir(id) if self.tree.children(id).is_some() => {
                Ok(id)
            }
            _ => Err(conflict(
                path,
                "something other than a directory",
                "a directory",
            )),
        }
    }

    /// Root-level symlink: created if absent, retargeted if it points elsewhere, and left alone
    /// if the image has something else there.
    pub(super) fn ensure_root_symlink(&mut self, name: &str, target: &str) {
        let wanted = Kind::Symlink(target.as_bytes().to_vec());
        match self.tree.lookup(ROOT, name.as_bytes()) {
            Some(id) if self.tree.inode(id).kind == wanted => {}
            Some(id) if !matches!(self.tree.inode(id).kind, Kind::Symlink(_)) => {}
            _ => {
                let id = self
                    .tree
                    .add_inode(wanted, Meta::new(0o777, 0, 0, self.mtime));
                self.tree.link(ROOT, name.as_bytes().to_vec(), id);
            }
        }
    }

    /// Writes a file the way `makeFile` does with overwrite on: an existing regular file (also
    /// through a symlink) gets the new mode and contents but keeps its owner, anything missing
    /// is created root-owned. A symlink that leads nowhere usable is replaced by the file, so
    /// that bind-mount targets like `/etc/resolv.conf` always exist.
    pub(super) fn put_file(
        &mut self,
        path: &str,
        mode: u32,
        bytes: &[u8],
    ) -> Result<(), SingularityError> {
        let content = self.spool.append_bytes(bytes)?;
        match self.resolve_creating_dirs(path, false)? {
            Resolved::Missing { parent, name } => self.create_file(parent, name, mode, content),
            Resolved::Entry { parent, name, id } => match self.tree.inode(id).kind {
                Kind::File(_) => self.rewrite_file(id, mode, content),
                Kind::Symlink(_) => self.put_through_symlink(path, parent, name, mode, content)?,
                _ => {
                    return Err(conflict(
                        path,
                        kind_name(&self.tree.inode(id).kind),
                        "a file",
                    ))
                }
            },
            Resolved::Dir(_) => return Err(conflict(path, "a directory", "a file")),
        }
        Ok(())
    }

    fn put_through_symlink(
        &mut self,
        path: &str,
        link_parent: InodeId,
        link_name: Vec<u8>,
        mode: u32,
        content: Content,
    ) -> Result<(), SingularityError> {
        match resolve(self.tree, path.as_bytes(), true) {
            Ok(Resolved::Entry { id, .. }) if matches!(self.tree.inode(id).kind, Kind::File(_)) => {
                self.rewrite_file(id, mode, content);
            }
            Ok(Resolved::Missing { parent, name }) => self.create_file(parent, name, mode, content),
            Ok(Resolved::Entry { id, .. }) => {
                return Err(conflict(
                    path,
                    kind_name(&self.tree.inode(id).kind),
                    "a file",
                ));
            }
            Ok(Resolved::Dir(_)) => return Err(conflict(path, "a directory", "a file")),
            Err(_) => self.create_file(link_parent, link_name, mode, content),
        }
        Ok(())
    }

    fn create_file(&mut self, parent: InodeId, name: Vec<u8>, mode: u32, content: Content) {
        let id = self
            .tree
            .add_inode(Kind::File(content), Meta::new(mode, 0, 0, self.mtime));
        self.tree.link(parent, name, id);
    }

    fn rewrite_file(&mut self, id: InodeId, mode: u32, content: Content) {
        let inode = self.tree.inode_mut(id);
        inode.kind = Kind::File(content);
        inode.meta.mode = mode;
        inode.meta.mtime = self.mtime;
    }

    /// `insertDefinition`: an image that already carries a definition file (one built by
    /// Apptainer) keeps it as `bootstrap_history/Apptainer<N>`.
    pub(super) fn keep_previous_deffile(&mut self) -> Result<(), SingularityError> {
        let Ok(Resolved::Entry { parent, name, id }) =
            resolve(self.tree, DEFFILE_PATH.as_bytes(), false)
        else {
            return Ok(());
        };
        let history = self.existing_dir(BOOTSTRAP_HISTORY_PATH)?;
        let index = self.tree.children(history).map_or(0, |c| c.len());
        self.tree.unlink(parent, &name);
        self.tree
            .link(history, format!("Apptainer{index}").into_bytes(), id);
        Ok(())
    }
}

pub(super) fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir(_) => "a directory",
        Kind::File(_) => "a file",
        Kind::Symlink(_) => "a symlink",
        Kind::CharDevice { .. } => "a character device",
        Kind::BlockDevice { .. } => "a block device",
        Kind::Fifo => "a FIFO",
        Kind::Socket => "a socket",
    }
}

pub(super) fn conflict(path: &str, found: &'static str, needed: &'static str) -> SingularityError {
    SingularityError::Conflict {
        path: path.to_string(),
        found,
        needed,
    }
}

fn path_error(path: &str, error: WalkError, needed: &'static str) -> SingularityError {
    match error {
        WalkError::Loop => SingularityError::SymlinkLoop(path.to_string()),
        WalkError::NotADirectory | WalkError::MissingDir { .. } | WalkError::DotDot => {
            conflict(path, "a non-directory on the way", needed)
        }
    }
}
