//! Writes a [`Tree`] as a squashfs 4.0 image, compressing data blocks in parallel.
//!
//! Why our own writer and not `backhand`: backhand compresses on one thread and cannot store
//! hardlinks (it duplicates them), and the SIF build targets need both cores. The on-disk format
//! follows the Linux kernel (`fs/squashfs/squashfs_fs.h`) and mksquashfs's conventions; the
//! tests read the result back with the kernel, squashfs-tools and squashfs-tools-ng.
//!
//! Image layout, in file order (every table offset is relative to the image start):
//! superblock (96 bytes) · compressor options (only for a non-default level) · data and fragment
//! blocks · inode table · directory table · fragment table · id table · zero padding to 4 KiB.
//! There is no export (NFS) table and no xattr table: extended attributes (`Meta::xattrs`) are
//! not stored yet.
//!
//! As with mksquashfs's defaults: files smaller than a block share fragment blocks, all-zero
//! blocks are stored as holes, files with identical contents are stored once, hardlinks are one
//! inode with a link count, and large directories get a lookup index.
//!
//! The output is a function of the tree, the spool contents and the options only: the thread
//! count changes who compresses a block, never the bytes or their order.

pub(crate) mod compress;
mod data;
mod dedup;
mod encode;
mod metadata;
mod plan;
pub(crate) mod pool;
mod sink;
mod tables;

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

pub use sink::{BytesOnly, ImageSink};

use crate::tree::{InodeId, Spool, Tree};

/// Block compressor of the image. Apptainer builds with gzip, so that is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// zlib-wrapped deflate (squashfs compressor id 1, called "gzip" by squashfs-tools), level 1–9.
    Gzip { level: u32 },
    /// Zstandard (squashfs compressor id 6), level 1–22.
    Zstd { level: i32 },
}

impl Default for Compression {
    /// mksquashfs's default, which is what `apptainer build` produces.
    fn default() -> Self {
        Compression::Gzip { level: 9 }
    }
}

/// How to write the image.
#[derive(Debug, Clone)]
pub struct SquashfsOptions {
    pub compression: Compression,
    /// Data block size in bytes: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 is treated as 1. The output does not depend on it.
    pub threads: usize,
    /// Superblock modification time; reproducible builds pass a fixed value.
    pub mkfs_time: u32,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compression: Compression::default(),
            block_size: 128 * 1024,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mkfs_time: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("I/O error while writing the squashfs image: {0}")]
    Io(#[from] io::Error),
    #[error("invalid squashfs options: {0}")]
    InvalidOptions(String),
    #[error("malformed tree: {0}")]
    MalformedTree(String),
    #[error("directory inode {0} is linked more than once (a directory hardlink or a cycle)")]
    DirectoryLinkedTwice(InodeId),
    #[error("entry name {name:?} is {len} bytes long; squashfs allows at most 256")]
    NameTooLong { name: String, len: usize },
    #[error("device {major}:{minor} does not fit squashfs (major ≤ 4095, minor ≤ 1048575)")]
    DeviceNumberTooLarge { major: u32, minor: u32 },
    #[error("the tree uses {0} distinct uid/gid values; squashfs allows at most 65535")]
    TooManyIds(usize),
    #[error("the image exceeds a squashfs limit: {0}")]
    Limit(&'static str),
    #[error("a compression thread stopped unexpectedly")]
    WorkerLost,
}

/// Writes `tree` (contents read from `spool`) as a squashfs 4.0 image to `out`, returning the
/// image size in bytes.
///
/// The image starts at `out`'s current position (so a SIF writer can place it at a partition
/// offset) and `out` is left positioned at its end. The size includes the zero padding to a
/// 4 KiB multiple that mksquashfs also adds, so that the image can be loop-mounted.
pub fn write_squashfs<W: Write + Seek>(
    tree: &Tree,
    spool: &Spool,
    out: &mut W,
    opts: &SquashfsOptions,
) -> Result<u64, SquashfsError> {
    write_squashfs_to(tree, spool, &mut BytesOnly(out), opts)
}

/// [`write_squashfs`] into a file: the blocks the spool holds compressed are copied in the
/// kernel (see [`ImageSink`]). The same bytes as through memory.
pub fn write_squashfs_to_file(
    tree: &Tree,
    spool: &Spool,
    out: &mut File,
    opts: &SquashfsOptions,
) -> Result<u64, SquashfsError> {
    let mut out = io::BufWriter::new(out);
    let size = write_squashfs_to(tree, spool, &mut out, opts)?;
    out.flush()?;
    Ok(size)
}

/// [`write_squashfs`] into any [`ImageSink`].
pub(crate) fn write_squashfs_to<W: ImageSink + Seek>(
    tree: &Tree,
    spool: &Spool,
    out: &mut W,
    opts: &SquashfsOptions,
) -> Result<u64, SquashfsError> {
    validate(opts)?;
    let plan = plan::Plan::new(tree)?;
    let base = out.stream_position()?;
    let mut out = tables::PositionedWriter::new(out);
    out.write_all(&[0; tables::SUPERBLOCK_LEN])?;
    out.write_all(&tables::compressor_options(opts.compression))?;
    let data = data::write_data(tree, spool, &plan, &mut out, opts)?;
    let superblock = tables::write_tables(tree, &plan, data, &mut out, opts)?;
    let image_len = out.pad_to(tables::IMAGE_ALIGN)?;
    let out = out.into_inner();
    out.seek(SeekFrom::Start(base))?;
    out.write_all(&superblock)?;
    out.seek(SeekFrom::Start(base + image_len))?;
    Ok(image_len)
}

pub(crate) fn validate(opts: &SquashfsOptions) -> Result<(), SquashfsError> {
    let bs = opts.block_size;
    if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
        return Err(SquashfsError::InvalidOptions(format!(
            "block size {bs} is not a power of two from 4096 to 1048576"
        )));
    }
    match opts.compression {
        Compression::Gzip { level } if !(1..=9).contains(&level) => Err(
            SquashfsError::InvalidOptions(format!("gzip level {level} is not within 1–9")),
        ),
        Compression::Zstd { level } if !(1..=22).contains(&level) => Err(
            SquashfsError::InvalidOptions(format!("zstd level {level} is not within 1–22")),
        ),
        _ => Ok(()),
    }
}
