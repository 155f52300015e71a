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
    let mut refs = vec![MetaRef::default(); tree.inodes.len()];
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
    entries: usize,
    /// Bytes of the entries alone, headers not counted.
    entry_bytes: usize,
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
    let mut builder = ListingBuilder::new(directories.uncompressed_len());
    for (name, &child) in children {
        builder.add(
            name,
            refs[child],
            plan.number[child],
            &tree.inodes[child].kind,
        )?;
    }
    Ok(builder.finish())
}

struct ListingBuilder {
    listing: Listing,
    header: Option<OpenHeader>,
    /// Listing offset of the last indexed header (the listing start counts as one).
    indexed_at: usize,
}

impl ListingBuilder {
    fn new(start: u64) -> Self {
        ListingBuilder {
            listing: Listing {
                bytes: Vec::new(),
                start,
                subdirs: 0,
                entries: 0,
                entry_bytes: 0,
                index: Vec::new(),
            },
            header: None,
            indexed_at: 0,
        }
    }

    fn add(
        &mut self,
        name: &[u8],
        inode: MetaRef,
        number: u32,
        kind: &Kind,
    ) -> Result<(), SquashfsError> {
        let inode_block = u32::try_from(inode.block)
            .map_err(|_| SquashfsError::Limit("inode table larger than 4 GiB"))?;
        let here = self.listing.bytes.len();
        // As mksquashfs: every 8 KiB of listing starts an indexed header, so that a lookup
        // decompresses about one metadata block whatever the directory's size.
        let needs_index = here + ENTRY_LEN + name.len() - self.indexed_at > METADATA_SIZE;
        if needs_index || !self.open_header_fits(inode_block, number) {
            self.close_header();
            if needs_index {
                self.indexed_at = here;
                self.listing.index.push(IndexPoint {
                    offset: here as u32,
                    first_name: name.to_vec(),
                });
            }
            self.open_header(inode_block, number);
        }
        self.push_entry(name, inode.offset, number, kind);
        Ok(())
    }

    fn open_header_fits(&self, inode_block: u32, number: u32) -> bool {
        self.header.as_ref().is_some_and(|open| {
            open.count < MAX_ENTRIES_PER_HEADER
                && open.inode_block == inode_block
                && i16::try_from(i64::from(number) - i64::from(open.base_number)).is_ok()
        })
    }

    fn open_header(&mut self, inode_block: u32, base_number: u32) {
        let bytes = &mut self.listing.bytes;
        let at = bytes.len();
        put_u32(bytes, 0); // entry count, filled in by close_header
        put_u32(bytes, inode_block);
        put_u32(bytes, base_number);
        self.header = Some(OpenHeader {
            at,
            count: 0,
            inode_block,
            base_number,
        });
    }

    fn push_entry(&mut self, name: &[u8], inode_offset: u16, number: u32, kind: &Kind) {
        let Some(open) = self.header.as_mut() else {
            return; // unreachable: add opens a header first
        };
        let bytes = &mut self.listing.bytes;
        put_u16(bytes, inode_offset);
        // Signed 16-bit difference, checked by open_header_fits.
        put_u16(bytes, number.wrapping_sub(open.base_number) as u16);
        put_u16(bytes, entry_type(kind));
        // Names are 1..=256 bytes (checked by the plan), stored as length - 1.
        put_u16(bytes, (name.len() - 1) as u16);
        bytes.extend_from_slice(name);
        open.count += 1;
        self.listing.entries += 1;
        self.listing.entry_bytes += ENTRY_LEN + name.len();
        if matches!(kind, Kind::Dir(_)) {
            self.listing.subdirs += 1;
        }
    }

    /// Records the entry count of the open header, if any.
    fn close_header(&mut self) {
        if let Some(open) = self.header.take() {
            let count = (open.count - 1).to_le_bytes();
            self.listing.bytes[open.at..open.at + 4].copy_from_slice(&count);
        }
    }

    fn finish(mut self) -> Listing {
        self.close_header();
        self.listing
    }
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
    let parent = parent_number(plan, id);
    // mksquashfs's rule, which squashfs-tools-ng's sqfsdiff holds us to: directories of more
    // than 256 entries or 8 KiB of entries are extended even when they need no index.
    let extended = listing.entries > MAX_ENTRIES_PER_HEADER as usize
        || listing.entry_bytes >= METADATA_SIZE
        || !location.index.is_empty()
        || size > u32::from(u16::MAX);
    if !extended {
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
    put_dir_index(bytes, &location.index);
    Ok(())
}

fn parent_number(plan: &Plan, dir: InodeId) -> u32 {
    if dir == ROOT {
        // mksquashfs gives the root a parent one past the last inode number.
        plan.inode_count() + 1
    } else {
        plan.number[plan.parent[dir]]
    }
}

/// The extended directory inode's index: (listing offset, block start, name) per entry.
fn put_dir_index(bytes: &mut Vec<u8>, index: &[(u32, u32, Vec<u8>)]) {
    for (offset, block, name) in index {
        put_u32(bytes, *offset);
        put_u32(bytes, *block);
        put_u32(bytes, (name.len() - 1) as u32);
        bytes.extend_from_slice(name);
    }
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
