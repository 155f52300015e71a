//! Metadata blocks: the inode, directory, fragment and id tables are each a sequence of blocks
//! holding 8 KiB of uncompressed data, each block prefixed by a 16-bit length word.

use std::io;

use super::compress::Compressor;
use super::Compression;

/// Uncompressed bytes per metadata block (`SQUASHFS_METADATA_SIZE`).
pub(super) const METADATA_SIZE: usize = 8192;

/// Set in a metadata block's length word when the block is stored uncompressed.
const UNCOMPRESSED: u16 = 1 << 15;

/// Where an item starts inside a metadata table: the table-relative offset of the compressed
/// block holding its first byte, and its offset inside that block's uncompressed data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct MetaRef {
    pub block: u64,
    pub offset: u16,
}

impl MetaRef {
    /// The packed form used for the root inode and by the export table.
    pub fn packed(self) -> u64 {
        (self.block << 16) | u64::from(self.offset)
    }
}

/// Builds one metadata table in memory; the tables are small next to the data.
pub(super) struct MetadataWriter {
    compressor: Compressor,
    /// Finished blocks, length word included.
    table: Vec<u8>,
    /// Table-relative start of every finished block, in order.
    block_starts: Vec<u64>,
    /// The block being filled.
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

impl MetadataWriter {
    pub fn new(compression: Compression) -> io::Result<Self> {
        Ok(MetadataWriter {
            compressor: Compressor::new(compression)?,
            table: Vec::new(),
            block_starts: Vec::new(),
            pending: Vec::with_capacity(METADATA_SIZE),
            scratch: Vec::with_capacity(METADATA_SIZE),
        })
    }

    /// Where the next byte written will land.
    pub fn position(&self) -> MetaRef {
        MetaRef {
            block: self.table.len() as u64,
            // Always below METADATA_SIZE: a full block is finished as soon as it fills.
            offset: self.pending.len() as u16,
        }
    }

    /// Total uncompressed bytes written so far.
    pub fn uncompressed_len(&self) -> u64 {
        (self.block_starts.len() * METADATA_SIZE + self.pending.len()) as u64
    }

    /// The table-relative start of the block holding uncompressed byte `position`, which must
    /// already have been written (or be the next byte).
    pub fn block_start_of(&self, position: u64) -> u64 {
        let block = (position / METADATA_SIZE as u64) as usize;
        self.block_starts
            .get(block)
            .copied()
            .unwrap_or(self.table.len() as u64)
    }

    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = METADATA_SIZE - self.pending.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(now);
            bytes = later;
            if self.pending.len() == METADATA_SIZE {
                self.finish_block()?;
            }
        }
        Ok(())
    }

    /// Finishes the last, partial block and returns the table with its block starts.
    pub fn finish(mut self) -> io::Result<(Vec<u8>, Vec<u64>)> {
        if !self.pending.is_empty() {
            self.finish_block()?;
        }
        Ok((self.table, self.block_starts))
    }

    fn finish_block(&mut self) -> io::Result<()> {
        self.block_starts.push(self.table.len() as u64);
        let compressed = self.compressor.compress(&self.pending, &mut self.scratch)?;
        let (word, body) = if compressed {
            (self.scratch.len() as u16, &self.scratch)
        } else {
            (self.pending.len() as u16 | UNCOMPRESSED, &self.pending)
        };
        self.table.extend_from_slice(&word.to_le_bytes());
        self.table.extend_from_slice(body);
        self.pending.clear();
        Ok(())
    }
}

/// A block stored uncompressed, as the compressor options block must be.
pub(super) fn uncompressed_block(body: &[u8]) -> Vec<u8> {
    let mut block = Vec::with_capacity(body.len() + 2);
    block.extend_from_slice(&(body.len() as u16 | UNCOMPRESSED).to_le_bytes());
    block.extend_from_slice(body);
    block
}
