//! The merged root filesystem of an image, held as metadata only.
//!
//! Layers are applied into this tree (see `layers`), the `/.singularity.d` files are added to it
//! (see `singularity`), and the squashfs writer walks it (see `squashfs`). File *contents* never
//! live in memory: a regular file points into the [`Spool`], an append-only scratch file inside
//! the build's own work area (a byte range, or a list of compressed squashfs blocks). That is
//! also why no file on the host is ever created at a path derived from a tar entry name: entry
//! names only ever become keys in this tree.
//!
//! Inodes are separate from directory entries so that hardlinks share one inode, as they do on a
//! real filesystem and in squashfs.

use std::collections::BTreeMap;
pub mod resolve;
pub(crate) mod spool;

pub use spool::{Packing, Spool, SpoolReader};

/// Index of an inode in [`Tree::inodes`].
pub type InodeId = usize;

/// The root directory's inode is always 0.
pub const ROOT: InodeId = 0;

/// Ownership, permissions and times of an inode, as recorded in the layer tar headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777`), never the file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records, name → value, sorted.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    pub fn new(mode: u32, uid: u32, gid: u32, mtime: i64) -> Self {
        Meta {
            mode: mode & 0o7777,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Where a regular file's bytes are in the build's [`Spool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `len` bytes at `offset`, as they are.
    Raw { offset: u64, len: u64 },
    /// A file of `len` bytes the spool stored as squashfs data blocks, compressed while the
    /// layers were applied: entry `index` of the spool's block lists (see [`Spool`]).
    Packed { index: u32, len: u64 },
}

impl Content {
    pub const EMPTY: Content = Content::Raw { offset: 0, len: 0 };

    /// The file's size.
    pub fn len(self) -> u64 {
        match self {
            Content::Raw { len, .. } | Content::Packed { len, .. } => len,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Children by name (a single path component, never `.`, `..`, empty, or containing `/`).
    Dir(BTreeMap<Vec<u8>, InodeId>),
    File(Content),
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    pub meta: Meta,
    /// Number of directory entries naming this inode (hardlinks). Directories count 1 here; the
    /// squashfs writer derives the on-disk directory link count itself.
    pub nlink: u32,
}

/// An image's root filesystem: inodes, with directories mapping names to inodes.
///
/// Unreachable inodes (left behind when an entry is removed) are simply skipped by writers,
/// which walk from [`ROOT`].
#[derive(Debug, Clone)]
pub struct Tree {
    pub inodes: Vec<Inode>,
    /// Released (unreachable) inode ids that [`Tree::add_inode`] reuses.
    free: Vec<InodeId>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// A tree holding only an empty root directory (mode 0755, owned by root).
    pub fn new() -> Self {
        Tree {
            inodes: vec![Inode {
                kind: Kind::Dir(BTreeMap::new()),
                meta: Meta::new(0o755, 0, 0, 0),
                nlink: 1,
            }],
            free: Vec::new(),
        }
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    pub fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id]
    }

    /// Adds an unattached inode and returns its id.
    pub fn add_inode(&mut self, kind: Kind, meta: Meta) -> InodeId {
        let inode = Inode {
            kind,
            meta,
            nlink: 0,
        };
        if let Some(id) = self.free.pop() {
            self.inodes[id] = inode;
            return id;
        }
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Drops what an unreachable inode holds and makes its id reusable. The caller guarantees
    /// that no directory names it (`nlink == 0`) and that it releases each id once.
    pub fn release(&mut self, id: InodeId) {
        debug_assert!(id != ROOT && self.inodes[id].nlink == 0);
        self.inodes[id] = Inode {
            kind: Kind::Fifo,
            meta: Meta::new(0, 0, 0, 0),
            nlink: 0,
        };
        self.free.push(id);
    }

    /// Inodes held, reachable or not (released ones excluded).
    pub fn live_inodes(&self) -> usize {
        self.inodes.len() - self.free.len()
    }

    /// The children of a directory inode, or `None` if `dir` is not a directory.
    pub fn children(&self, dir: InodeId) -> Option<&BTreeMap<Vec<u8>, InodeId>> {
        match &self.inodes[dir].kind {
            Kind::Dir(children) => Some(children),
            _ => None,
        }
    }

    /// Looks up one name in a directory, without following symlinks.
    pub fn lookup(&self, dir: InodeId, name: &[u8]) -> Option<InodeId> {
        self.children(dir)?.get(name).copied()
    }

    /// Resolves a `/`-separated path from the root without following any symlink. Empty
    /// components and `.` are skipped; `..` is refused (returns `None`).
    pub fn resolve(&self, path: &[u8]) -> Option<InodeId> {
        resolve::walk(self, path, resolve::Rules::LITERAL)
            .ok()?
            .inode()
    }

    /// Links `child` into directory `dir` under `name`, replacing (and unlinking) whatever was
    /// there. Panics if `dir` is not a directory: callers check first.
    pub fn link(&mut self, dir: InodeId, name: Vec<u8>, child: InodeId) {
        debug_assert!(is_plain_name(&name), "bad entry name {name:?}");
        self.inodes[child].nlink += 1;
        let old = match &mut self.inodes[dir].kind {
            Kind::Dir(children) => children.insert(name, child),
            _ => panic!("link into a non-directory inode {dir}"),
        };
        if let Some(old) = old {
            self.inodes[old].nlink -= 1;
        }
    }

    /// Removes the entry `name` from `dir` (with its whole subtree, which becomes unreachable).
    /// Returns the removed inode, if there was one.
    pub fn unlink(&mut self, dir: InodeId, name: &[u8]) -> Option<InodeId> {
        let removed = match &mut self.inodes[dir].kind {
            Kind::Dir(children) => children.remove(name),
            _ => None,
        }?;
        self.inodes[removed].nlink -= 1;
        Some(removed)
    }

    /// Visits every reachable entry depth-first in name order, parents before children, calling
    /// `f(path, inode)` with the path relative to the root (`b""` for the root itself).
    pub fn walk(&self, mut f: impl FnMut(&[u8], InodeId)) {
        fn go(tree: &Tree, path: &mut Vec<u8>, id: InodeId, f: &mut impl FnMut(&[u8], InodeId)) {
            f(path, id);
            if let Some(children) = tree.children(id) {
                for (name, child) in children {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(name);
                    go(tree, path, *child, f);
                    path.truncate(len);
                }
            }
        }
        go(self, &mut Vec::new(), ROOT, &mut f);
    }
}

/// True for a name that may be a single directory entry.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn link_resolve_unlink() {
        let mut t = Tree::new();
        let etc = t.add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o755, 0, 0, 0));
        t.link(ROOT, b"etc".to_vec(), etc);
        let f = t.add_inode(Kind::File(Content::EMPTY), Meta::new(0o644, 0, 0, 0));
        t.link(etc, b"hosts".to_vec(), f);
        assert_eq!(t.resolve(b"/etc/hosts"), Some(f));
        assert_eq!(t.resolve(b"etc/../etc"), None);
        t.link(ROOT, b"hosts-link".to_vec(), f);
        assert_eq!(t.inode(f).nlink, 2);
        assert_eq!(t.unlink(etc, b"hosts"), Some(f));
        assert_eq!(t.inode(f).nlink, 1);
        let mut seen = Vec::new();
        t.walk(|p, _| seen.push(String::from_utf8_lossy(p).into_owned()));
        assert_eq!(seen, ["", "etc", "hosts-link"]);
    }

    #[test]
    fn spool_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new_in(dir.path()).unwrap();
        let a = s.append_bytes(b"hello").unwrap();
        let b = s.append(&mut &b"world!"[..]).unwrap();
        let mut buf = Vec::new();
        s.read_into(b, &mut buf).unwrap();
        assert_eq!(buf, b"world!");
        let mut out = String::new();
        s.reader(a).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");
    }
}
