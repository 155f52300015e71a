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
//! same order, so the image is byte for byte the one compressing them here would give.
//!
//! Like mksquashfs, a file whose contents equal an earlier file's is not stored twice: its
//! inode points at the earlier copy. Only files sharing their size with another file are
//! hashed (SHA-256), which on a Debian rootfs is about a tenth of the bytes. A packed file is
//! hashed over its size words and stored blocks instead of its raw bytes: block compression is
//! deterministic and decompression a function, so two packed files of one size have the same
//! blocks exactly when they have the same bytes, and the decisions are the raw hash's. The two
//! kinds of digest are kept apart (a raw file never matches a packed one); a packing spool packs
//! every file of a block or more, so files of one size are all of one kind anyway.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;

use sha2::{Digest, Sha256};

use super::plan::Plan;
use super::pool::BlockPool;
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
pub(super) fn write_data<W: Write>(
    tree: &Tree,
    spool: &Spool,
    plan: &Plan,
    out: &mut PositionedWriter<W>,
    opts: &SquashfsOptions,
) -> Result<DataLayout, SquashfsError> {
    let pool = BlockPool::new(opts.compression, opts.threads, opts.block_size)?;
    let mut pipeline = Pipeline::new(pool, spool, out, opts);
    pipeline.shared_sizes = shared_sizes(tree, plan);
    for &id in &plan.order {
        if let Kind::File(content) = tree.inodes[id].kind {
            pipeline.add_file(id, content)?;
        }
    }
    pipeline.finish()
    // Dropping the pipeline drops the pool, which ends its threads.
}

/// File sizes that occur more than once: only such files can be duplicates.
fn shared_sizes(tree: &Tree, plan: &Plan) -> HashSet<u64> {
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for &id in &plan.order {
        if let Kind::File(content) = tree.inodes[id].kind {
            if !content.is_empty() && !seen.insert(content.len()) {
                shared.insert(content.len());
            }
        }
    }
    shared
}

/// What a queued block becomes once written, in image order.
enum Slot {
    /// A data block of `file` compressing in the pool.
    Block { file: usize },
    /// A fragment block compressing in the pool.
    Fragment,
    /// A data block of `file` the spool already holds in its squashfs form.
    Packed { file: usize, block: PackedBlock },
}

/// Which bytes a duplicate-detection digest covers: a raw and a packed file never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DigestOf {
    Raw,
    Packed,
}

struct Pipeline<'a, 'w, W: Write> {
    pool: BlockPool,
    spool: &'a Spool,
    out: &'a mut PositionedWriter<'w, W>,
    opts: &'a SquashfsOptions,
    block_size: usize,
    /// Queued blocks not yet written, oldest first.
    pending: VecDeque<Slot>,
    fragment_fill: Vec<u8>,
    fragments_issued: u32,
    small_file: Vec<u8>,
    /// A packed block's stored bytes on their way from the spool to the image.
    copy_buffer: Vec<u8>,
    shared_sizes: HashSet<u64>,
    /// First file with each (size, digest) among files of shared sizes.
    first_with_digest: HashMap<(u64, DigestOf, [u8; 32]), usize>,
    layout: DataLayout,
}

impl<'a, 'w, W: Write> Pipeline<'a, 'w, W> {
    fn new(
        pool: BlockPool,
        spool: &'a Spool,
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
            fragments_issued: 0,
            small_file: Vec::new(),
            copy_buffer: Vec::new(),
            shared_sizes: HashSet::new(),
            first_with_digest: HashMap::new(),
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
        let small = len < self.block_size as u64;
        if small {
            self.spool.read_into(content, &mut self.small_file)?;
        }
        // Borrowed from the spool, not from the pipeline that goes on writing.
        let spool: &'a Spool = self.spool;
        let packed = match small {
            true => None,
            false => spool.packed_blocks(content, self.opts.compression, self.opts.block_size),
        };
        if self.shared_sizes.contains(&len) {
            let key = match (small, packed) {
                (true, _) => (len, DigestOf::Raw, Sha256::digest(&self.small_file).into()),
                (false, Some(blocks)) => (len, DigestOf::Packed, self.packed_digest(blocks)?),
                (false, None) => (len, DigestOf::Raw, self.digest(content)?),
            };
            if let Some(&original) = self.first_with_digest.get(&key) {
                self.layout.files[index].same_as = Some(original);
                return Ok(());
            }
            self.first_with_digest.insert(key, index);
        }
        match (small, packed) {
            (true, _) => self.add_to_fragment(index),
            (false, Some(blocks)) => self.add_packed(index, blocks),
            (false, None) => self.add_blocks(index, content),
        }
    }

    fn digest(&mut self, content: Content) -> Result<[u8; 32], SquashfsError> {
        let mut hasher = Sha256::new();
        let mut chunk = self.pool.take_buffer();
        let mut reader = self.spool.reader(content);
        loop {
            read_block(&mut reader, &mut chunk, self.block_size)?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
        }
        self.pool.give_back(chunk);
        Ok(hasher.finalize().into())
    }

    /// The digest of a packed file: each block's size word, then its stored bytes.
    fn packed_digest(&mut self, blocks: &[PackedBlock]) -> Result<[u8; 32], SquashfsError> {
        let mut hasher = Sha256::new();
        for &block in blocks {
            self.spool.read_stored(block, &mut self.copy_buffer)?;
            hasher.update(block.size_word.to_le_bytes());
            hasher.update(&self.copy_buffer);
        }
        Ok(hasher.finalize().into())
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
    fn add_packed(&mut self, file: usize, blocks: &[PackedBlock]) -> Result<(), SquashfsError> {
        for &block in blocks {
            if self.pending.is_empty() {
                self.write_packed(file, block)?;
            } else {
                self.pending.push_back(Slot::Packed { file, block });
            }
        }
        Ok(())
    }

    /// Appends the small file just read into `small_file` to the fragment block being filled.
    fn add_to_fragment(&mut self, file: usize) -> Result<(), SquashfsError> {
        if self.fragment_fill.len() + self.small_file.len() > self.block_size {
            self.issue_fragment()?;
        }
        self.layout.files[file].fragment = Some(FragmentSlice {
            index: self.fragments_issued,
            offset: self.fragment_fill.len() as u32,
        });
        self.fragment_fill.extend_from_slice(&self.small_file);
        Ok(())
    }

    fn issue_fragment(&mut self) -> Result<(), SquashfsError> {
        let fresh = self.pool.take_buffer();
        let full = std::mem::replace(&mut self.fragment_fill, fresh);
        self.fragments_issued = self
            .fragments_issued
            .checked_add(1)
            .ok_or(SquashfsError::Limit("more than 2^32 fragment blocks"))?;
        self.submit(Slot::Fragment, full, false)
    }

    fn submit(
        &mut self,
        slot: Slot,
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
            Slot::Packed { file, block } => return self.write_packed(file, block),
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

    /// Copies one packed block from the spool into the image.
    fn write_packed(&mut self, file: usize, block: PackedBlock) -> Result<(), SquashfsError> {
        let start = self.out.position();
        self.spool.read_stored(block, &mut self.copy_buffer)?;
        self.out.write_all(&self.copy_buffer)?;
        let block_index = self.layout.files[file].block_sizes.len() as u64;
        let block_size = self.block_size as u64;
        let raw_len = (self.layout.files[file].size - block_index * block_size).min(block_size);
        self.record_block(file, start, block.size_word, raw_len as usize);
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
            self.issue_fragment()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        resolve_duplicates(&mut self.layout.files);
        Ok(self.layout)
    }
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
