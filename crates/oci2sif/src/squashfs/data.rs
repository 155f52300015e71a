//! The data area: file contents cut into blocks, compressed by a pool of threads, written in
//! order.
//!
//! The calling thread reads blocks from the spool, hands them to the workers and writes their
//! results back strictly in the order it handed them out, so the image does not depend on which
//! worker finished first. At most `8 × threads` blocks are in flight, which bounds memory to a
//! few MiB whatever the file sizes. Files smaller than a block are packed together into fragment
//! blocks, as mksquashfs does by default; larger files end with a short block instead.
//!
//! Like mksquashfs, a file whose contents equal an earlier file's is not stored twice: its
//! inode points at the earlier copy. Only files sharing their size with another file are
//! hashed (SHA-256), which on a Debian rootfs is about a tenth of the bytes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread;

use sha2::{Digest, Sha256};

use super::compress::Compressor;
use super::plan::Plan;
use super::tables::PositionedWriter;
use super::{Compression, SquashfsError, SquashfsOptions};
use crate::tree::{Content, InodeId, Kind, Spool, Tree};

/// Set in a data or fragment block's size word when the block is stored uncompressed.
pub(super) const UNCOMPRESSED_BLOCK: u32 = 1 << 24;

/// In-flight blocks per compression thread: enough to keep every worker busy while the writer
/// waits for one block whose thread was descheduled (builds share their cores), small enough
/// to keep memory flat (2 threads: 16 blocks, about 4 MiB with 128 KiB blocks).
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 8;

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
    let threads = opts.threads.max(1);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<io::Result<Done>>();
    let job_rx = Mutex::new(job_rx);
    thread::scope(|scope| {
        for _ in 0..threads {
            let (jobs, done) = (&job_rx, done_tx.clone());
            scope.spawn(move || compress_jobs(jobs, done, opts.compression));
        }
        // Only workers hold senders now, so a dead pool shows up as a closed channel.
        drop(done_tx);
        let mut pipeline = Pipeline::new(job_tx, done_rx, out, threads, opts.block_size);
        pipeline.shared_sizes = shared_sizes(tree, plan);
        for &id in &plan.order {
            if let Kind::File(content) = tree.inodes[id].kind {
                pipeline.add_file(id, content, spool)?;
            }
        }
        pipeline.finish()
        // Dropping the pipeline closes the job channel, which ends the workers.
    })
}

/// File sizes that occur more than once: only such files can be duplicates.
fn shared_sizes(tree: &Tree, plan: &Plan) -> HashSet<u64> {
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for &id in &plan.order {
        if let Kind::File(content) = tree.inodes[id].kind {
            if content.len > 0 && !seen.insert(content.len) {
                shared.insert(content.len);
            }
        }
    }
    shared
}

struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Fragment blocks must hold their bytes even when all zero; data blocks may be holes.
    may_be_sparse: bool,
}

struct Done {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    outcome: Outcome,
}

enum Outcome {
    Sparse,
    Compressed,
    Stored,
}

fn compress_jobs(jobs: &Mutex<Receiver<Job>>, done: Sender<io::Result<Done>>, c: Compression) {
    let mut compressor = match Compressor::new(c) {
        Ok(compressor) => compressor,
        Err(error) => {
            let _ = done.send(Err(error));
            return;
        }
    };
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panic must reach the writer as an error: it would otherwise wait forever for
        // this block while the other workers keep the result channel open.
        let result = panic::catch_unwind(AssertUnwindSafe(|| compress_job(&mut compressor, job)))
            .unwrap_or_else(|_| Err(io::Error::other("block compression panicked")));
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

fn compress_job(compressor: &mut Compressor, mut job: Job) -> io::Result<Done> {
    let outcome = if job.may_be_sparse && is_all_zero(&job.input) {
        Outcome::Sparse
    } else if compressor.compress(&job.input, &mut job.output)? {
        Outcome::Compressed
    } else {
        Outcome::Stored
    };
    Ok(Done {
        seq: job.seq,
        input: job.input,
        output: job.output,
        outcome,
    })
}

fn is_all_zero(bytes: &[u8]) -> bool {
    // OR-folding fixed chunks vectorizes well; checking between chunks stops early on data.
    bytes
        .chunks(4096)
        .all(|chunk| chunk.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// What an issued job will become once written.
enum Slot {
    Block { file: usize },
    Fragment,
}

struct Pipeline<'a, 'w, W: Write> {
    jobs: Sender<Job>,
    done: Receiver<io::Result<Done>>,
    out: &'a mut PositionedWriter<'w, W>,
    window: usize,
    block_size: usize,
    /// Issued jobs not yet written, oldest first.
    pending: VecDeque<Slot>,
    next_seq: u64,
    /// Results that came back ahead of an older job.
    early: BTreeMap<u64, Done>,
    spare_buffers: Vec<Vec<u8>>,
    fragment_fill: Vec<u8>,
    fragments_issued: u32,
    small_file: Vec<u8>,
    shared_sizes: HashSet<u64>,
    /// First file with each (size, SHA-256) among files of shared sizes.
    first_with_digest: HashMap<(u64, [u8; 32]), usize>,
    layout: DataLayout,
}

impl<'a, 'w, W: Write> Pipeline<'a, 'w, W> {
    fn new(
        jobs: Sender<Job>,
        done: Receiver<io::Result<Done>>,
        out: &'a mut PositionedWriter<'w, W>,
        threads: usize,
        block_size: u32,
    ) -> Self {
        let block_size = block_size as usize;
        Pipeline {
            jobs,
            done,
            out,
            window: threads * BLOCKS_IN_FLIGHT_PER_THREAD,
            block_size,
            pending: VecDeque::new(),
            next_seq: 0,
            early: BTreeMap::new(),
            spare_buffers: Vec::new(),
            fragment_fill: Vec::with_capacity(block_size),
            fragments_issued: 0,
            small_file: Vec::new(),
            shared_sizes: HashSet::new(),
            first_with_digest: HashMap::new(),
            layout: DataLayout {
                files: Vec::new(),
                fragments: Vec::new(),
            },
        }
    }

    fn add_file(
        &mut self,
        id: InodeId,
        content: Content,
        spool: &Spool,
    ) -> Result<(), SquashfsError> {
        let index = self.layout.files.len();
        self.layout.files.push(FileLayout {
            inode: id,
            size: content.len,
            blocks_start: 0,
            block_sizes: Vec::new(),
            fragment: None,
            sparse_bytes: 0,
            same_as: None,
        });
        if content.len == 0 {
            return Ok(());
        }
        let small = content.len < self.block_size as u64;
        if small {
            spool.read_into(content, &mut self.small_file)?;
        }
        if self.shared_sizes.contains(&content.len) {
            let digest = if small {
                Sha256::digest(&self.small_file).into()
            } else {
                self.digest(content, spool)?
            };
            if let Some(&original) = self.first_with_digest.get(&(content.len, digest)) {
                self.layout.files[index].same_as = Some(original);
                return Ok(());
            }
            self.first_with_digest.insert((content.len, digest), index);
        }
        if small {
            self.add_to_fragment(index)
        } else {
            self.add_blocks(index, content, spool)
        }
    }

    fn digest(&mut self, content: Content, spool: &Spool) -> Result<[u8; 32], SquashfsError> {
        let mut hasher = Sha256::new();
        let mut chunk = self.take_buffer();
        for part in blocks_of(content, self.block_size as u64) {
            spool.read_into(part, &mut chunk)?;
            hasher.update(&chunk);
        }
        self.spare_buffers.push(chunk);
        Ok(hasher.finalize().into())
    }

    fn add_blocks(
        &mut self,
        file: usize,
        content: Content,
        spool: &Spool,
    ) -> Result<(), SquashfsError> {
        for part in blocks_of(content, self.block_size as u64) {
            let mut block = self.take_buffer();
            spool.read_into(part, &mut block)?;
            self.submit(Slot::Block { file }, block, true)?;
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
        let fresh = self.take_buffer();
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
        while self.pending.len() >= self.window {
            self.write_oldest()?;
        }
        let job = Job {
            seq: self.next_seq,
            input,
            output: self.take_buffer(),
            may_be_sparse,
        };
        self.jobs.send(job).map_err(|_| SquashfsError::WorkerLost)?;
        self.pending.push_back(slot);
        self.next_seq += 1;
        Ok(())
    }

    /// Waits for the oldest issued job and writes it.
    fn write_oldest(&mut self) -> Result<(), SquashfsError> {
        let Some(slot) = self.pending.pop_front() else {
            return Ok(());
        };
        let seq = self.next_seq - self.pending.len() as u64 - 1;
        let done = loop {
            if let Some(done) = self.early.remove(&seq) {
                break done;
            }
            let done = self.done.recv().map_err(|_| SquashfsError::WorkerLost)??;
            self.early.insert(done.seq, done);
        };
        let start = self.out.position();
        let (bytes, size_word) = match done.outcome {
            Outcome::Sparse => (&[][..], 0),
            Outcome::Compressed => (&done.output[..], done.output.len() as u32),
            Outcome::Stored => (
                &done.input[..],
                done.input.len() as u32 | UNCOMPRESSED_BLOCK,
            ),
        };
        self.out.write_all(bytes)?;
        match slot {
            Slot::Block { file } => {
                let file = &mut self.layout.files[file];
                if file.block_sizes.is_empty() {
                    file.blocks_start = start;
                }
                if let Outcome::Sparse = done.outcome {
                    file.sparse_bytes += done.input.len() as u64;
                }
                file.block_sizes.push(size_word);
            }
            Slot::Fragment => self
                .layout
                .fragments
                .push(FragmentBlock { start, size_word }),
        }
        self.spare_buffers.extend([done.input, done.output]);
        Ok(())
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let mut buffer = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block_size));
        buffer.clear();
        buffer
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

/// A file's bytes cut into consecutive pieces of at most `block_size`.
fn blocks_of(content: Content, block_size: u64) -> impl Iterator<Item = Content> {
    (0..content.len.div_ceil(block_size)).map(move |i| {
        let offset = i * block_size;
        Content {
            offset: content.offset + offset,
            len: (content.len - offset).min(block_size),
        }
    })
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
