//! The data area: file contents cut into blocks, compressed by a pool of threads, written in
//! order.
//!
//! The calling thread reads blocks from the spool, hands them to the pool (`pool.rs`) and writes
//! its results back strictly in the order it handed them out, so the image does not depend on
//! which worker finished first. Files smaller than a block are packed together into fragment
//! blocks, as mksquashfs does by default; larger files end with a short block instead.
//!
//! A large file the spool already packed with this image's compression and block size (see
//! `tree::Spool`) is not compressed again: its stored blocks are copied, in their place in the
//! same order, so the image is byte for byte the one compressing them here would give. Into a
//! plain file they go as file ranges, one per run of consecutive blocks (`sink.rs`).
//!
//! Files whose contents equal an earlier file's are stored once (`dedup.rs`).

use std::collections::VecDeque;

use super::dedup::Duplicates;
use super::plan::Plan;
use super::pool::BlockPool;
use super::sink::ImageSink;
use super::tables::PositionedWriter;
use super::{SquashfsError, SquashfsOptions};
use crate::tree::spool::{read_block, PackedBlock};
use crate::tree::{Content, InodeId, Kind, Spool, Tree};

/// Where one regular file's bytes went.
#[derive(Debug)]
pub(super) struct FileLayout {
    pub inode: InodeId,
    pub size: u64,
    /// Image offset of the first data block (meaningless when there is none).
    pub blocks_start: u64,
    /// On-disk size word of each data block: 0 for an all-zero (sparse) block.
    pub block_sizes: Vec<u32>,
    pub fragment: Option<FragmentSlice>,
    /// Bytes of the file covered by sparse blocks.
    pub sparse_bytes: u64,
    /// Index (in [`DataLayout::files`]) of an earlier file with the same contents, whose data
    /// this one reuses.
    same_as: Option<usize>,
}

/// A small file's bytes inside a fragment block.
#[derive(Debug, Clone, Copy)]
pub(super) struct FragmentSlice {
    pub index: u32,
    pub offset: u32,
}

/// A fragment block as recorded in the fragment table.
#[derive(Debug, Clone, Copy)]
pub(super) struct FragmentBlock {
    pub start: u64,
    pub size_word: u32,
}

pub(super) struct DataLayout {
    /// Every reachable regular file, in [`Plan::order`].
    pub files: Vec<FileLayout>,
    pub fragments: Vec<FragmentBlock>,
}

/// Writes every file's contents and returns where they went.
pub(super) fn write_data<W: ImageSink>(
    tree: &Tree,
    spool: &Spool,
    plan: &Plan,
    out: &mut PositionedWriter<W>,
    opts: &SquashfsOptions,
) -> Result<DataLayout, SquashfsError> {
    let pool = BlockPool::new(opts.compression, opts.threads, opts.block_size)?;
    let duplicates = Duplicates::new(tree, plan, spool, opts.block_size as usize);
    let mut pipeline = Pipeline::new(pool, spool, duplicates, out, opts);
    for &id in &plan.order {
        if let Kind::File(content) = tree.inodes[id].kind {
            pipeline.add_file(id, content)?;
        }
    }
    pipeline.finish()
    // Dropping the pipeline drops the pool, which ends its threads.
}

/// What a queued block becomes once written, in image order.
enum Slot<'a> {
    /// A data block of `file` compressing in the pool.
    Block { file: usize },
    /// A fragment block compressing in the pool.
    Fragment,
    /// Consecutive data blocks of `file` the spool already holds in their squashfs form, one
    /// after the other in the spool file (see [`contiguous_runs`]).
    Packed {
        file: usize,
        blocks: &'a [PackedBlock],
    },
}

struct Pipeline<'a, 'w, W: ImageSink> {
    pool: BlockPool,
    spool: &'a Spool,
    out: &'a mut PositionedWriter<'w, W>,
    opts: &'a SquashfsOptions,
    block_size: usize,
    /// Queued blocks not yet written, oldest first.
    pending: VecDeque<Slot<'a>>,
    fragment_fill: Vec<u8>,
    /// The fragment block after `fragment_fill`, holding the small file just read when it
    /// did not fit the current one (it starts that block unless it is a duplicate).
    next_fill: Vec<u8>,
    fragments_issued: u32,
    /// A packed block's stored bytes on their way from the spool to the image, when the
    /// output takes no file ranges.
    copy_buffer: Vec<u8>,
    duplicates: Duplicates<'a>,
    layout: DataLayout,
}

impl<'a, 'w, W: ImageSink> Pipeline<'a, 'w, W> {
    fn new(
        pool: BlockPool,
        spool: &'a Spool,
        duplicates: Duplicates<'a>,
        out: &'a mut PositionedWriter<'w, W>,
        opts: &'a SquashfsOptions,
    ) -> Self {
        let block_size = opts.block_size as usize;
        Pipeline {
            pool,
            spool,
            out,
            opts,
            block_size,
            pending: VecDeque::new(),
            fragment_fill: Vec::with_capacity(block_size),
            next_fill: Vec::new(),
            fragments_issued: 0,
            copy_buffer: Vec::new(),
            duplicates,
            layout: DataLayout {
                files: Vec::new(),
                fragments: Vec::new(),
            },
        }
    }

    fn add_file(&mut self, id: InodeId, content: Content) -> Result<(), SquashfsError> {
        let index = self.layout.files.len();
        let len = content.len();
        self.layout.files.push(FileLayout {
            inode: id,
            size: len,
            blocks_start: 0,
            block_sizes: Vec::new(),
            fragment: None,
            sparse_bytes: 0,
            same_as: None,
        });
        if len == 0 {
            return Ok(());
        }
        if len < self.block_size as u64 {
            return self.add_small(index, content);
        }
        // Borrowed from the spool, not from the pipeline that goes on writing.
        let spool: &'a Spool = self.spool;
        let packed = spool.packed_blocks(content, self.opts.compression, self.opts.block_size);
        let original = match packed {
            Some(blocks) => self.duplicates.packed(index, len, blocks)?,
            None => self.duplicates.raw(index, content)?,
        };
        if original.is_some() {
            self.layout.files[index].same_as = original;
            return Ok(());
        }
        match packed {
            Some(blocks) => self.add_packed(index, blocks),
            None => self.add_blocks(index, content),
        }
    }

    /// Reads a small file straight into the fragment block it goes into (one copy, none
    /// through a staging buffer), unless it duplicates an earlier file.
    fn add_small(&mut self, file: usize, content: Content) -> Result<(), SquashfsError> {
        let fits = self.fragment_fill.len() + content.len() as usize <= self.block_size;
        let fill = match fits {
            true => &mut self.fragment_fill,
            false => {
                if self.next_fill.capacity() == 0 {
                    self.next_fill = self.pool.take_buffer();
                }
                &mut self.next_fill
            }
        };
        let offset = fill.len();
        self.spool.append_to(content, fill)?;
        let original = self.duplicates.small(file, content, &fill[offset..]);
        if !matches!(original, Ok(None)) {
            fill.truncate(offset);
            self.layout.files[file].same_as = original?;
            return Ok(());
        }
        if !fits {
            let next = std::mem::take(&mut self.next_fill);
            self.issue_fragment(next)?;
        }
        self.layout.files[file].fragment = Some(FragmentSlice {
            index: self.fragments_issued,
            offset: offset as u32,
        });
        Ok(())
    }

    fn add_blocks(&mut self, file: usize, content: Content) -> Result<(), SquashfsError> {
        let spool = self.spool;
        let mut reader = spool.reader(content);
        loop {
            let mut block = self.pool.take_buffer();
            read_block(&mut reader, &mut block, self.block_size)?;
            if block.is_empty() {
                self.pool.give_back(block);
                return Ok(());
            }
            self.submit(Slot::Block { file }, block, true)?;
        }
    }

    /// Queues the packed blocks of a file, to be copied in their turn.
    fn add_packed(&mut self, file: usize, blocks: &'a [PackedBlock]) -> Result<(), SquashfsError> {
        for run in contiguous_runs(blocks) {
            if self.pending.is_empty() {
                self.write_packed(file, run)?;
            } else {
                self.pending.push_back(Slot::Packed { file, blocks: run });
            }
        }
        Ok(())
    }

    /// Hands the fragment block being filled to the pool; `next` is filled from now on.
    fn issue_fragment(&mut self, next: Vec<u8>) -> Result<(), SquashfsError> {
        let full = std::mem::replace(&mut self.fragment_fill, next);
        self.fragments_issued = self
            .fragments_issued
            .checked_add(1)
            .ok_or(SquashfsError::Limit("more than 2^32 fragment blocks"))?;
        self.submit(Slot::Fragment, full, false)
    }

    fn submit(
        &mut self,
        slot: Slot<'a>,
        input: Vec<u8>,
        may_be_sparse: bool,
    ) -> Result<(), SquashfsError> {
        while self.pool.is_full() {
            self.write_oldest()?;
        }
        self.pool.submit(input, may_be_sparse)?;
        self.pending.push_back(slot);
        Ok(())
    }

    /// Writes the oldest queued block, waiting for the pool if it is still compressing.
    fn write_oldest(&mut self) -> Result<(), SquashfsError> {
        let Some(slot) = self.pending.pop_front() else {
            return Ok(());
        };
        let file = match slot {
            Slot::Packed { file, blocks } => return self.write_packed(file, blocks),
            Slot::Block { file } => Some(file),
            Slot::Fragment => None,
        };
        let done = self.pool.oldest()?;
        let start = self.out.position();
        self.out.write_all(done.stored())?;
        match file {
            Some(file) => self.record_block(file, start, done.size_word(), done.raw_len()),
            None => self.layout.fragments.push(FragmentBlock {
                start,
                size_word: done.size_word(),
            }),
        }
        self.pool.recycle(done);
        Ok(())
    }

    /// Copies a run of packed blocks (consecutive in the spool) into the image: as one file
    /// range when the output takes them, else block by block through memory.
    fn write_packed(&mut self, file: usize, run: &[PackedBlock]) -> Result<(), SquashfsError> {
        let spool = self.spool;
        let start = self.out.position();
        let len: u64 = run.iter().map(|block| block.stored_len() as u64).sum();
        let appended = match run.first() {
            Some(first) if len > 0 => {
                self.out
                    .append_file_range(spool.stored_file(), first.offset, len)?
            }
            _ => false,
        };
        let mut at = start;
        for &block in run {
            if !appended {
                spool.read_stored(block, &mut self.copy_buffer)?;
                self.out.write_all(&self.copy_buffer)?;
            }
            let block_index = self.layout.files[file].block_sizes.len() as u64;
            let block_size = self.block_size as u64;
            let raw_len = (self.layout.files[file].size - block_index * block_size).min(block_size);
            self.record_block(file, at, block.size_word, raw_len as usize);
            at += block.stored_len() as u64;
        }
        Ok(())
    }

    fn record_block(&mut self, file: usize, start: u64, size_word: u32, raw_len: usize) {
        let file = &mut self.layout.files[file];
        if file.block_sizes.is_empty() {
            file.blocks_start = start;
        }
        if size_word == 0 {
            file.sparse_bytes += raw_len as u64;
        }
        file.block_sizes.push(size_word);
    }

    fn finish(mut self) -> Result<DataLayout, SquashfsError> {
        if !self.fragment_fill.is_empty() {
            self.issue_fragment(Vec::new())?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        resolve_duplicates(&mut self.layout.files);
        Ok(self.layout)
    }
}

/// Splits a packed file's blocks where one does not start in the spool where the one before
/// ends: the spool writes a file's blocks in order, but a small file appended while they were
/// compressing lands between them.
fn contiguous_runs(blocks: &[PackedBlock]) -> impl Iterator<Item = &[PackedBlock]> {
    blocks.chunk_by(|a, b| a.offset + a.stored_len() as u64 == b.offset)
}

/// Points every duplicate at its original's data, now that all of it has been written.
fn resolve_duplicates(files: &mut [FileLayout]) {
    for index in 0..files.len() {
        // An original comes before its duplicates and is never a duplicate itself.
        if let Some(original) = files[index].same_as {
            let (before, rest) = files.split_at_mut(index);
            let (original, file) = (&before[original], &mut rest[0]);
            file.blocks_start = original.blocks_start;
            file.block_sizes.clone_from(&original.block_sizes);
            file.fragment = original.fragment;
            file.sparse_bytes = original.sparse_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(offset: u64, size_word: u32) -> PackedBlock {
        PackedBlock { offset, size_word }
    }

    #[test]
    fn runs_split_where_the_spool_holds_something_else_between_blocks() {
        let stored = super::super::pool::UNCOMPRESSED_BLOCK | 4096;
        let blocks = [
            block(0, 100),
            block(100, 0), // a hole: no bytes, and the run goes on
            block(100, stored),
            block(4196, 50),
            block(4300, 70), // a small file's 54 bytes came first
            block(4370, 0),
            block(9000, 10),
        ];
        let runs: Vec<&[PackedBlock]> = contiguous_runs(&blocks).collect();
        assert_eq!(runs, [&blocks[..4], &blocks[4..6], &blocks[6..]]);
    }
}
