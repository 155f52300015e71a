//! The block compression pool: data and fragment blocks in, squashfs block forms out, strictly
//! in the order they went in.
//!
//! Two users share it: the spool, which compresses every full data block of a large file while
//! the layers are still being applied (`tree::Spool`), and the data writer (`data.rs`), which
//! compresses what is left (fragments, and files the spool kept raw). Both make the same
//! decision per block (a hole for an all-zero data block, the compressed bytes when they are
//! smaller, else the block as is), so a block compressed early is the block the writer would
//! have produced.
//!
//! At most `8 × threads` blocks are in flight, which bounds memory to a few MiB whatever the
//! file sizes.

use std::collections::BTreeMap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::compress::Compressor;
use super::{Compression, SquashfsError};

/// Set in a data or fragment block's size word when the block is stored uncompressed.
pub(crate) const UNCOMPRESSED_BLOCK: u32 = 1 << 24;

/// In-flight blocks per compression thread: enough to keep every worker busy while the writer
/// waits for one block whose thread was descheduled (builds share their cores), small enough
/// to keep memory flat (2 threads: 16 blocks, about 4 MiB with 128 KiB blocks).
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 8;

struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Fragment blocks must hold their bytes even when all zero; data blocks may be holes.
    may_be_sparse: bool,
}

/// One compressed block, handed back in submission order.
pub(crate) struct Done {
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

impl Done {
    /// The bytes the image holds for this block (none for a hole).
    pub fn stored(&self) -> &[u8] {
        match self.outcome {
            Outcome::Sparse => &[],
            Outcome::Compressed => &self.output,
            Outcome::Stored => &self.input,
        }
    }

    /// The block's squashfs size word: 0 for a hole, else the stored length, flagged
    /// [`UNCOMPRESSED_BLOCK`] when the block is stored as is.
    pub fn size_word(&self) -> u32 {
        match self.outcome {
            Outcome::Sparse => 0,
            Outcome::Compressed => self.output.len() as u32,
            Outcome::Stored => self.input.len() as u32 | UNCOMPRESSED_BLOCK,
        }
    }

    /// Length of the block before compression.
    pub fn raw_len(&self) -> usize {
        self.input.len()
    }
}

pub(crate) struct BlockPool {
    /// `None` once the pool is shutting down.
    jobs: Option<Sender<Job>>,
    done: Receiver<io::Result<Done>>,
    workers: Vec<JoinHandle<()>>,
    window: usize,
    next_seq: u64,
    /// Sequence number of the oldest block not yet handed back.
    next_out: u64,
    /// Results that came back ahead of an older block.
    early: BTreeMap<u64, Done>,
    spare_buffers: Vec<Vec<u8>>,
    block_size: usize,
}

impl BlockPool {
    /// Starts `threads` (at least one) compression threads.
    pub fn new(compression: Compression, threads: usize, block_size: u32) -> io::Result<Self> {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<io::Result<Done>>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut pool = BlockPool {
            jobs: Some(job_tx),
            done: done_rx,
            workers: Vec::with_capacity(threads),
            window: threads * BLOCKS_IN_FLIGHT_PER_THREAD,
            next_seq: 0,
            next_out: 0,
            early: BTreeMap::new(),
            spare_buffers: Vec::new(),
            block_size: block_size as usize,
        };
        for _ in 0..threads {
            let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
            let worker = thread::Builder::new()
                .name("squashfs-compress".into())
                .spawn(move || compress_jobs(&jobs, done, compression))?;
            pool.workers.push(worker);
        }
        // Only workers hold result senders now, so a dead pool shows up as a closed channel.
        Ok(pool)
    }

    /// True when the caller must take the oldest result before submitting another block.
    pub fn is_full(&self) -> bool {
        self.in_flight() >= self.window
    }

    /// Blocks submitted and not yet handed back.
    pub fn in_flight(&self) -> usize {
        (self.next_seq - self.next_out) as usize
    }

    /// A cleared buffer with room for a block, recycled when possible.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut buffer = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block_size));
        buffer.clear();
        buffer
    }

    /// Gives a buffer from [`take_buffer`](Self::take_buffer) back unused.
    pub fn give_back(&mut self, buffer: Vec<u8>) {
        self.spare_buffers.push(buffer);
    }

    /// Queues one block. `may_be_sparse`: an all-zero block becomes a hole (data blocks only).
    pub fn submit(&mut self, input: Vec<u8>, may_be_sparse: bool) -> Result<(), SquashfsError> {
        let job = Job {
            seq: self.next_seq,
            input,
            output: self.take_buffer(),
            may_be_sparse,
        };
        let jobs = self.jobs.as_ref().ok_or(SquashfsError::WorkerLost)?;
        jobs.send(job).map_err(|_| SquashfsError::WorkerLost)?;
        self.next_seq += 1;
        Ok(())
    }

    /// Waits for the oldest block in flight (the caller knows there is one) and hands it back;
    /// pass it to [`recycle`](Self::recycle) once its bytes are written.
    pub fn oldest(&mut self) -> Result<Done, SquashfsError> {
        debug_assert!(self.in_flight() > 0);
        let seq = self.next_out;
        let done = loop {
            if let Some(done) = self.early.remove(&seq) {
                break done;
            }
            let done = self.done.recv().map_err(|_| SquashfsError::WorkerLost)??;
            self.early.insert(done.seq, done);
        };
        self.next_out += 1;
        Ok(done)
    }

    pub fn recycle(&mut self, done: Done) {
        self.spare_buffers.extend([done.input, done.output]);
    }

    /// Frees the recycled buffers (the pool is idle for a while).
    pub fn release_buffers(&mut self) {
        self.spare_buffers = Vec::new();
    }
}

impl Drop for BlockPool {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they finish their current block.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
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
