//! Everything after the data area, and the superblock that points at it.

use std::fs::File;
use std::io::{self, Write};

use super::compress::compressor_id;
use super::data::DataLayout;
use super::encode::{encode_tables, put_u16, put_u32, put_u64};
use super::metadata::{uncompressed_block, MetadataWriter};
use super::plan::Plan;
use super::sink::ImageSink;
use super::{Compression, SquashfsError, SquashfsOptions};
use crate::tree::Tree;

pub(super) const SUPERBLOCK_LEN: usize = 96;
/// mksquashfs pads images to 4 KiB so that they can be loop-mounted.
pub(super) const IMAGE_ALIGN: u64 = 4096;

const MAGIC: u32 = 0x7371_7368; // "hsqs"
const NO_TABLE: u64 = u64::MAX;

/// Superblock flags (`SQUASHFS_*` bit numbers in the kernel's squashfs_fs.h).
const FLAG_DUPLICATES_REMOVED: u16 = 1 << 6;
const FLAG_NO_XATTRS: u16 = 1 << 9;
const FLAG_COMPRESSOR_OPTIONS: u16 = 1 << 10;

/// mksquashfs writes a compressor options block only when they differ from these defaults.
const GZIP_DEFAULT_LEVEL: u32 = 9;
const GZIP_WINDOW_BITS: u16 = 15;
const ZSTD_DEFAULT_LEVEL: i32 = 15;

/// Tracks the image-relative position of everything written.
pub(super) struct PositionedWriter<'a, W: Write> {
    inner: &'a mut W,
    position: u64,
}

impl<'a, W: Write> PositionedWriter<'a, W> {
    pub fn new(inner: &'a mut W) -> Self {
        PositionedWriter { inner, position: 0 }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Appends zeros up to a multiple of `align` and returns the new position.
    pub fn pad_to(&mut self, align: u64) -> io::Result<u64> {
        let padding = self.position.next_multiple_of(align) - self.position;
        self.write_all(&vec![0; padding as usize])?;
        Ok(self.position)
    }

    pub fn into_inner(self) -> &'a mut W {
        self.inner
    }
}

impl<W: ImageSink> PositionedWriter<'_, W> {
    /// Appends `len` bytes of `src` at `offset` if the output takes file ranges (see
    /// [`ImageSink`]); false, with nothing written, if it does not.
    pub fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        let appended = self.inner.append_file_range(src, offset, len)?;
        if appended {
            self.position += len;
        }
        Ok(appended)
    }
}

/// The compressor options block that follows the superblock, if the level is not the default.
/// Readers need none of it to decompress; `unsquashfs -s` shows the level from it.
pub(super) fn compressor_options(compression: Compression) -> Vec<u8> {
    let mut body = Vec::new();
    match compression {
        Compression::Gzip { level } if level != GZIP_DEFAULT_LEVEL => {
            put_u32(&mut body, level);
            put_u16(&mut body, GZIP_WINDOW_BITS);
            put_u16(&mut body, 0); // strategies: default only
        }
        Compression::Zstd { level } if level != ZSTD_DEFAULT_LEVEL => {
            put_u32(&mut body, level as u32);
        }
        _ => return Vec::new(),
    }
    uncompressed_block(&body)
}

/// Writes the inode, directory, fragment and id tables and returns the superblock for them.
pub(super) fn write_tables<W: Write>(
    tree: &Tree,
    plan: &Plan,
    data: DataLayout,
    out: &mut PositionedWriter<W>,
    opts: &SquashfsOptions,
) -> Result<Vec<u8>, SquashfsError> {
    let fragment_entries = fragment_entries(&data);
    let fragment_count = u32::try_from(data.fragments.len())
        .map_err(|_| SquashfsError::Limit("more than 2^32 fragment blocks"))?;
    let tables = encode_tables(tree, plan, data.files, opts.compression)?;
    let inode_table_start = out.position();
    out.write_all(&tables.inode_table)?;
    let directory_table_start = out.position();
    out.write_all(&tables.directory_table)?;
    let fragment_table_start = write_indexed_table(out, &fragment_entries, opts.compression)?;
    let id_entries: Vec<u8> = plan.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    let id_table_start = write_indexed_table(out, &id_entries, opts.compression)?;
    let bytes_used = out.position();

    let mut flags = FLAG_NO_XATTRS | FLAG_DUPLICATES_REMOVED;
    if !compressor_options(opts.compression).is_empty() {
        flags |= FLAG_COMPRESSOR_OPTIONS;
    }
    let mut sb = Vec::with_capacity(SUPERBLOCK_LEN);
    put_u32(&mut sb, MAGIC);
    put_u32(&mut sb, plan.inode_count());
    put_u32(&mut sb, opts.mkfs_time);
    put_u32(&mut sb, opts.block_size);
    put_u32(&mut sb, fragment_count);
    put_u16(&mut sb, compressor_id(opts.compression));
    put_u16(&mut sb, opts.block_size.trailing_zeros() as u16);
    put_u16(&mut sb, flags);
    put_u16(&mut sb, plan.ids.len() as u16);
    put_u16(&mut sb, 4); // version 4.0
    put_u16(&mut sb, 0);
    put_u64(&mut sb, tables.root.packed());
    put_u64(&mut sb, bytes_used);
    put_u64(&mut sb, id_table_start);
    put_u64(&mut sb, NO_TABLE); // xattr id table
    put_u64(&mut sb, inode_table_start);
    put_u64(&mut sb, directory_table_start);
    put_u64(&mut sb, fragment_table_start);
    put_u64(&mut sb, NO_TABLE); // export (inode lookup) table
    Ok(sb)
}

/// Fragment table entries: start (u64), size word (u32), unused (u32).
fn fragment_entries(data: &DataLayout) -> Vec<u8> {
    let mut entries = Vec::with_capacity(data.fragments.len() * 16);
    for fragment in &data.fragments {
        put_u64(&mut entries, fragment.start);
        put_u32(&mut entries, fragment.size_word);
        put_u32(&mut entries, 0);
    }
    entries
}

/// Writes `entries` as metadata blocks followed by the list of their image offsets, and
/// returns where that list starts (which is what the superblock records). An empty table
/// writes nothing and returns the current position, as readers check table order with it.
fn write_indexed_table<W: Write>(
    out: &mut PositionedWriter<W>,
    entries: &[u8],
    compression: Compression,
) -> Result<u64, SquashfsError> {
    if entries.is_empty() {
        return Ok(out.position());
    }
    let mut blocks = MetadataWriter::new(compression)?;
    blocks.write(entries)?;
    let (table, block_starts) = blocks.finish()?;
    let table_start = out.position();
    out.write_all(&table)?;
    let index_start = out.position();
    let mut index = Vec::with_capacity(block_starts.len() * 8);
    for start in block_starts {
        put_u64(&mut index, table_start + start);
    }
    out.write_all(&index)?;
    Ok(index_start)
}
