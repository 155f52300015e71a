//! The inode table and the directory table.
//!
//! Inodes are written in [`Plan::order`], so a directory's children are always written before
//! the directory, whose listing points at them and whose inode points at the listing.

use std::collections::BTreeMap;

use super::data::FileLayout;
use super::metadata::{MetaRef, MetadataWriter, METADATA_SIZE};
use super::plan::Plan;
use super::{Compression, SquashfsError};
use crate::tree::{Inode, InodeId, Kind, Meta, Tree, ROOT};

/// Inode types (`SQUASHFS_*_TYPE`); the extended ("L") variants add fields at the end.
mod inode_type {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEV: u16 = 4;
    pub const CHAR_DEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const EXT_DIR: u16 = 8;
    pub const EXT_FILE: u16 = 9;
}

const NO_FRAGMENT: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;
/// Entries one directory header may cover (`SQUASHFS_DIR_COUNT`).
const MAX_ENTRIES_PER_HEADER: u32 = 256;
/// Bytes of a directory entry before its name.
const ENTRY_LEN: usize = 8;
/// Readers add 3 to a listing's length for the "." and ".." entries they invent.
const DOT_ENTRIES_SIZE: u64 = 3;

pub(super) struct InodeTables {
    pub inode_table: Vec<u8>,
    pub directory_table: Vec<u8>,
    pub root: MetaRef,
}

/// Encodes every planned inode and every directory listing.
pub(super) fn encode_tables(
    tree: &Tree,
    plan: &Plan,
    files: Vec<FileLayout>,
    compression: Compression,
) -> Result<InodeTables, SquashfsError> {
    let mut inodes = MetadataWriter::new(compression)?;
    let mut directories = MetadataWriter::new(compression)?;
    let mut refs = vec![
        MetaRef {
            block: 0,
            offset: 0
        };
        tree.inodes.len()
    ];
    let mut files = files.into_iter();
    let mut bytes = Vec::new();
    for &id in &plan.order {
        let inode = &tree.inodes[id];
        bytes.clear();
        match &inode.kind {
            Kind::Dir(children) => {
                let listing = encode_listing(tree, plan, &refs, children, &directories)?;
                let location = write_listing(&mut directories, &listing)?;
                encode_dir(&mut bytes, plan, id, &inode.meta, &listing, &location)?;
            }
            Kind::File(_) => {
                let layout = files
                    .next()
                    .filter(|layout| layout.inode == id)
                    .ok_or_else(|| {
                        SquashfsError::MalformedTree(format!("no data layout for file inode {id}"))
                    })?;
                encode_file(&mut bytes, plan, id, &inode.meta, &layout);
            }
            _ => encode_special(&mut bytes, plan, id, inode)?,
        }
        refs[id] = inodes.position();
        inodes.write(&bytes)?;
    }
    let root = refs[ROOT];
    Ok(InodeTables {
        inode_table: inodes.finish()?.0,
        directory_table: directories.finish()?.0,
        root,
    })
}

/// The common inode header.
fn put_header(bytes: &mut Vec<u8>, kind: u16, plan: &Plan, id: InodeId, meta: &Meta) {
    put_u16(bytes, kind);
    put_u16(bytes, (meta.mode & 0o7777) as u16);
    put_u16(bytes, plan.id_index(meta.uid));
    put_u16(bytes, plan.id_index(meta.gid));
    // squashfs times are unsigned 32-bit seconds: earlier or later times are clamped.
    put_u32(bytes, meta.mtime.clamp(0, i64::from(u32::MAX)) as u32);
    put_u32(bytes, plan.number[id]);
}

fn encode_file(bytes: &mut Vec<u8>, plan: &Plan, id: InodeId, meta: &Meta, layout: &FileLayout) {
    let (fragment, offset) = layout
        .fragment
        .map_or((NO_FRAGMENT, 0), |slice| (slice.index, slice.offset));
    let links = plan.links[id];
    // The basic file inode has no link count (it means 1), 32-bit positions and no sparse count.
    let fits_basic = links == 1
        && layout.sparse_bytes == 0
        && u32::try_from(layout.blocks_start).is_ok()
        && u32::try_from(layout.size).is_ok();
    if fits_basic {
        put_header(bytes, inode_type::FILE, plan, id, meta);
        put_u32(bytes, layout.blocks_start as u32);
        put_u32(bytes, fragment);
        put_u32(bytes, offset);
        put_u32(bytes, layout.size as u32);
    } else {
        put_header(bytes, inode_type::EXT_FILE, plan, id, meta);
        put_u64(bytes, layout.blocks_start);
        put_u64(bytes, layout.size);
        put_u64(bytes, layout.sparse_bytes);
        put_u32(bytes, links);
        put_u32(bytes, fragment);
        put_u32(bytes, offset);
        put_u32(bytes, NO_XATTR);
    }
    for &size in &layout.block_sizes {
        put_u32(bytes, size);
    }
}

fn encode_special(
    bytes: &mut Vec<u8>,
    plan: &Plan,
    id: InodeId,
    inode: &Inode,
) -> Result<(), SquashfsError> {
    let links = plan.links[id];
    let meta = &inode.meta;
    match &inode.kind {
        Kind::Symlink(target) => {
            put_header(bytes, inode_type::SYMLINK, plan, id, meta);
            put_u32(bytes, links);
            put_u32(
                bytes,
                u32::try_from(target.len())
                    .map_err(|_| SquashfsError::Limit("symlink target size"))?,
            );
            bytes.extend_from_slice(target);
        }
        Kind::BlockDevice { major, minor } | Kind::CharDevice { major, minor } => {
            let kind = match inode.kind {
                Kind::BlockDevice { .. } => inode_type::BLOCK_DEV,
                _ => inode_type::CHAR_DEV,
            };
            put_header(bytes, kind, plan, id, meta);
            put_u32(bytes, links);
            put_u32(bytes, encode_device(*major, *minor)?);
        }
        Kind::Fifo | Kind::Socket => {
            let kind = match inode.kind {
                Kind::Fifo => inode_type::FIFO,
                _ => inode_type::SOCKET,
            };
            put_header(bytes, kind, plan, id, meta);
            put_u32(bytes, links);
        }
        Kind::Dir(_) | Kind::File(_) => {
            return Err(SquashfsError::MalformedTree(format!(
                "inode {id} is not a special file"
            )))
        }
    }
    Ok(())
}

/// The Linux "new" 32-bit device encoding, which the kernel decodes with `new_decode_dev`.
fn encode_device(major: u32, minor: u32) -> Result<u32, SquashfsError> {
    if major > 0xfff || minor > 0xf_ffff {
        return Err(SquashfsError::DeviceNumberTooLarge { major, minor });
    }
    Ok((major << 8) | (minor & 0xff) | ((minor & !0xff) << 12))
}

/// The basic type of an entry as a directory entry records it.
fn entry_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir(_) => inode_type::DIR,
        Kind::File(_) => inode_type::FILE,
        Kind::Symlink(_) => inode_type::SYMLINK,
        Kind::BlockDevice { .. } => inode_type::BLOCK_DEV,
        Kind::CharDevice { .. } => inode_type::CHAR_DEV,
        Kind::Fifo => inode_type::FIFO,
        Kind::Socket => inode_type::SOCKET,
    }
}

/// A directory's entries as stored in the directory table.
struct Listing {
    bytes: Vec<u8>,
    /// Uncompressed directory-table position where `bytes` begin.
    start: u64,
    subdirs: u32,
    /// Headers starting each 8 KiB of listing, for the lookup index of large directories.
    index: Vec<IndexPoint>,
}

struct IndexPoint {
    /// Offset of the header within the listing.
    offset: u32,
    first_name: Vec<u8>,
}

/// The header being filled: entries under one header share an inode block and have inode
/// numbers within ±32767 of its base.
struct OpenHeader {
    at: usize,
    count: u32,
    inode_block: u32,
    base_number: u32,
}

fn encode_listing(
    tree: &Tree,
    plan: &Plan,
    refs: &[MetaRef],
    children: &BTreeMap<Vec<u8>, InodeId>,
    directories: &MetadataWriter,
) -> Result<Listing, SquashfsError> {
    let start = directories.uncompressed_len();
    let mut listing = Listing {
        bytes: Vec::new(),
        start,
        subdirs: 0,
        index: Vec::new(),
    };
    let mut header: Option<OpenHeader> = None;
    // Listing offset of the last indexed header (the listing start counts as one).
    let mut indexed_at = 0;
    for (name, &child) in children {
        let child_ref = refs[child];
        let inode_block = u32::try_from(child_ref.block)
            .map_err(|_| SquashfsError::Limit("inode table larger than 4 GiB"))?;
        let number = plan.number[child];
        let here = listing.bytes.len();
        // As mksquashfs: every 8 KiB of listing starts an indexed header, so that a lookup
        // decompresses about one metadata block whatever the directory's size.
        let needs_index = here + ENTRY_LEN + name.len() - indexed_at > METADATA_SIZE;
        let reuse = !needs_index
            && header.as_ref().is_some_and(|open| {
                open.count < MAX_ENTRIES_PER_HEADER
                    && open.inode_block == inode_block
                    && i16::try_from(i64::from(number) - i64::from(open.base_number)).is_ok()
            });
        if !reuse {
            if let Some(open) = header.take() {
                close_header(&mut listing.bytes, &open);
            }
            if needs_index {
                indexed_at = here;
                listing.index.push(IndexPoint {
                    offset: here as u32,
                    first_name: name.clone(),
                });
            }
            put_u32(&mut listing.bytes, 0); // entry count, filled in by close_header
            put_u32(&mut listing.bytes, inode_block);
            put_u32(&mut listing.bytes, number);
            header = Some(OpenHeader {
                at: here,
                count: 0,
                inode_block,
                base_number: number,
            });
        }
        if let Some(open) = header.as_mut() {
            let kind = &tree.inodes[child].kind;
            put_u16(&mut listing.bytes, child_ref.offset);
            put_u16(
                &mut listing.bytes,
                (number.wrapping_sub(open.base_number)) as u16,
            );
            put_u16(&mut listing.bytes, entry_type(kind));
            // Names are 1..=256 bytes (checked by the plan), stored as length - 1.
            put_u16(&mut listing.bytes, (name.len() - 1) as u16);
            listing.bytes.extend_from_slice(name);
            open.count += 1;
            if matches!(kind, Kind::Dir(_)) {
                listing.subdirs += 1;
            }
        }
    }
    if let Some(open) = header {
        close_header(&mut listing.bytes, &open);
    }
    Ok(listing)
}

fn close_header(bytes: &mut [u8], open: &OpenHeader) {
    bytes[open.at..open.at + 4].copy_from_slice(&(open.count - 1).to_le_bytes());
}

/// Where a listing landed, and its index with block positions resolved.
struct ListingLocation {
    start: MetaRef,
    /// (offset in listing, directory-table-relative block start, first name)
    index: Vec<(u32, u32, Vec<u8>)>,
}

fn write_listing(
    directories: &mut MetadataWriter,
    listing: &Listing,
) -> Result<ListingLocation, SquashfsError> {
    let start = directories.position();
    directories.write(&listing.bytes)?;
    let index = listing
        .index
        .iter()
        .map(|point| {
            let block = directories.block_start_of(listing.start + u64::from(point.offset));
            let block = u32::try_from(block)
                .map_err(|_| SquashfsError::Limit("directory table larger than 4 GiB"))?;
            Ok((point.offset, block, point.first_name.clone()))
        })
        .collect::<Result<_, SquashfsError>>()?;
    Ok(ListingLocation { start, index })
}

fn encode_dir(
    bytes: &mut Vec<u8>,
    plan: &Plan,
    id: InodeId,
    meta: &Meta,
    listing: &Listing,
    location: &ListingLocation,
) -> Result<(), SquashfsError> {
    let links = 2 + listing.subdirs;
    let size = listing.bytes.len() as u64 + DOT_ENTRIES_SIZE;
    let size = u32::try_from(size).map_err(|_| SquashfsError::Limit("directory listing size"))?;
    let start_block = u32::try_from(location.start.block)
        .map_err(|_| SquashfsError::Limit("directory table larger than 4 GiB"))?;
    // mksquashfs gives the root a parent one past the last inode number.
    let parent = if id == ROOT {
        plan.inode_count() + 1
    } else {
        plan.number[plan.parent[id]]
    };
    if location.index.is_empty() && size <= u32::from(u16::MAX) {
        put_header(bytes, inode_type::DIR, plan, id, meta);
        put_u32(bytes, start_block);
        put_u32(bytes, links);
        put_u16(bytes, size as u16);
        put_u16(bytes, location.start.offset);
        put_u32(bytes, parent);
        return Ok(());
    }
    put_header(bytes, inode_type::EXT_DIR, plan, id, meta);
    put_u32(bytes, links);
    put_u32(bytes, size);
    put_u32(bytes, start_block);
    put_u32(bytes, parent);
    put_u16(
        bytes,
        u16::try_from(location.index.len()).map_err(|_| SquashfsError::Limit("directory index"))?,
    );
    put_u16(bytes, location.start.offset);
    put_u32(bytes, NO_XATTR);
    for (offset, block, name) in &location.index {
        put_u32(bytes, *offset);
        put_u32(bytes, *block);
        put_u32(bytes, (name.len() - 1) as u32);
        bytes.extend_from_slice(name);
    }
    Ok(())
}

pub(super) fn put_u16(bytes: &mut Vec<u8>, value: u16) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

pub(super) fn put_u32(bytes: &mut Vec<u8>, value: u32) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

pub(super) fn put_u64(bytes: &mut Vec<u8>, value: u64) {
    bytes.extend_from_slice(&value.to_le_bytes());
}
