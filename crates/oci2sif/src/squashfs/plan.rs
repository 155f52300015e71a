//! The first pass over the tree: which inodes are written, in what order, under what numbers.

use std::collections::btree_map;

use super::SquashfsError;
use crate::tree::{InodeId, Kind, Tree, ROOT};

/// Longest directory entry name squashfs readers accept (`SQUASHFS_NAME_LEN`).
const MAX_NAME_LEN: usize = 256;

/// Most distinct uid/gid values: the superblock counts them in 16 bits.
const MAX_IDS: usize = u16::MAX as usize;

/// Reachable inodes in write order, with their squashfs numbers and link counts.
pub(super) struct Plan {
    /// Depth-first, children in name order, each directory after all its children (its listing
    /// needs their inode positions), each hardlinked inode once, at its first link. File data
    /// is written in this order too, so files of one directory share fragment blocks.
    pub order: Vec<InodeId>,
    /// Squashfs inode number (1-based position in `order`) per tree inode; 0 if unreachable.
    pub number: Vec<u32>,
    /// Reachable directory entries naming each inode. Not [`crate::tree::Inode::nlink`],
    /// which still counts links from removed (unreachable) subtrees.
    pub links: Vec<u32>,
    /// Parent directory of each reachable directory (the root is its own parent here).
    pub parent: Vec<InodeId>,
    /// Distinct uids and gids, sorted: an inode stores indexes into this table.
    pub ids: Vec<u32>,
}

impl Plan {
    /// Walks the tree without recursion, so that no nesting depth can overflow the stack.
    pub fn new(tree: &Tree) -> Result<Self, SquashfsError> {
        let count = tree.inodes.len();
        let mut plan = Plan {
            order: Vec::new(),
            number: vec![0; count],
            links: vec![0; count],
            parent: vec![ROOT; count],
            ids: Vec::new(),
        };
        let mut stack = vec![(ROOT, dir_children(tree, ROOT)?)];
        plan.links[ROOT] = 1;
        while let Some((dir, children)) = stack.last_mut() {
            let dir = *dir;
            match children.next() {
                Some((name, &child)) => {
                    check_name(name)?;
                    let kind = &inode_checked(tree, child)?.kind;
                    plan.links[child] += 1;
                    match kind {
                        Kind::Dir(grandchildren) => {
                            if plan.links[child] > 1 {
                                return Err(SquashfsError::DirectoryLinkedTwice(child));
                            }
                            plan.parent[child] = dir;
                            stack.push((child, grandchildren.iter()));
                        }
                        _ if plan.links[child] == 1 => plan.order.push(child),
                        _ => {}
                    }
                }
                None => {
                    stack.pop();
                    plan.order.push(dir);
                }
            }
        }
        for (position, &id) in plan.order.iter().enumerate() {
            plan.number[id] = u32::try_from(position + 1)
                .map_err(|_| SquashfsError::Limit("more than 2^32 - 1 inodes"))?;
        }
        plan.ids = collect_ids(tree, &plan.order)?;
        Ok(plan)
    }

    /// Index of `id` (a uid or gid of a planned inode) in the id table.
    pub fn id_index(&self, id: u32) -> u16 {
        // Every planned inode's uid and gid went into `ids`, which has at most 65535 entries.
        self.ids.binary_search(&id).map_or(0, |index| index as u16)
    }

    pub fn inode_count(&self) -> u32 {
        self.order.len() as u32
    }
}

fn dir_children(
    tree: &Tree,
    dir: InodeId,
) -> Result<btree_map::Iter<'_, Vec<u8>, InodeId>, SquashfsError> {
    match &inode_checked(tree, dir)?.kind {
        Kind::Dir(children) => Ok(children.iter()),
        _ => Err(SquashfsError::MalformedTree(format!(
            "inode {dir} is not a directory"
        ))),
    }
}

fn inode_checked(tree: &Tree, id: InodeId) -> Result<&crate::tree::Inode, SquashfsError> {
    tree.inodes
        .get(id)
        .ok_or_else(|| SquashfsError::MalformedTree(format!("dangling inode id {id}")))
}

fn check_name(name: &[u8]) -> Result<(), SquashfsError> {
    if name.len() > MAX_NAME_LEN {
        return Err(SquashfsError::NameTooLong {
            name: String::from_utf8_lossy(name).into_owned(),
            len: name.len(),
        });
    }
    if !crate::tree::is_plain_name(name) {
        return Err(SquashfsError::MalformedTree(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn collect_ids(tree: &Tree, order: &[InodeId]) -> Result<Vec<u32>, SquashfsError> {
    let mut ids: Vec<u32> = order
        .iter()
        .flat_map(|&id| {
            let meta = &tree.inodes[id].meta;
            [meta.uid, meta.gid]
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_IDS {
        return Err(SquashfsError::TooManyIds(ids.len()));
    }
    Ok(ids)
}
