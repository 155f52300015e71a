//! The spool: an append-only scratch file holding the bytes of every regular file in a
//! [`Tree`](super::Tree).
//!
//! It lives inside the build's work area as an anonymous file, so no tar entry name ever
//! reaches the host filesystem.
//!
//! A spool made with [`Spool::packing_in`] stores every file of at least one squashfs block in
//! its squashfs form instead, as it arrives: cut into blocks, each compressed on a pool of
//! threads (a hole for an all-zero block, the block as is when compression does not make it
//! smaller), exactly as the squashfs data writer would. The writer then copies those blocks,
//! so the compression threads work while the layers are still being applied instead of
//! waiting for the final tree. Files shorter than a block stay raw: they go into fragment
//! blocks, whose packing depends on the final tree. Everyone else reads such a file through
//! [`Spool::reader`] or [`Spool::read_into`], which give the raw bytes back (decompressing).
//!
//! Packed blocks are written to the file in order as their compression finishes, so a packed
//! file's list is complete only after [`Spool::settle`]; reading one before is an error.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Content;
use crate::squashfs::compress::decompress_block;
use crate::squashfs::pool::{BlockPool, UNCOMPRESSED_BLOCK};
use crate::squashfs::Compression;

/// How a packing spool stores large files: the squashfs image's compression and block size
/// (the writer copies the blocks only when its own options match), and the threads compressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    pub compression: Compression,
    pub block_size: u32,
    pub threads: usize,
}

/// One stored data block of a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedBlock {
    /// Where the stored bytes start in the spool file.
    pub offset: u64,
    /// The squashfs size word: 0 for a hole, [`UNCOMPRESSED_BLOCK`] set for a block stored
    /// as is, else the compressed length.
    pub size_word: u32,
}

impl PackedBlock {
    /// Bytes the block occupies in the spool (and in the image).
    pub fn stored_len(self) -> usize {
        (self.size_word & !UNCOMPRESSED_BLOCK) as usize
    }
}

/// The blocks of one packed file, in file order.
#[derive(Debug, Default)]
struct BlockList {
    len: u64,
    blocks: Vec<PackedBlock>,
}

struct Packer {
    pool: BlockPool,
    /// The block list each block in flight belongs to, oldest first.
    in_flight: VecDeque<usize>,
}

pub struct Spool {
    file: File,
    len: u64,
    packing: Option<Packing>,
    /// `None` for a raw spool.
    packer: Option<Packer>,
    lists: Vec<BlockList>,
}

impl Spool {
    /// A spool that stores every file as it is, as an anonymous temporary file in `work_dir`.
    pub fn new_in(work_dir: &Path) -> io::Result<Self> {
        Ok(Spool {
            file: tempfile::tempfile_in(work_dir)?,
            len: 0,
            packing: None,
            packer: None,
            lists: Vec::new(),
        })
    }

    /// A spool that stores files of at least `packing.block_size` bytes as compressed squashfs
    /// data blocks (see the module docs). The options are taken as valid squashfs options.
    pub fn packing_in(work_dir: &Path, packing: Packing) -> io::Result<Self> {
        let mut spool = Spool::new_in(work_dir)?;
        let pool = BlockPool::new(packing.compression, packing.threads, packing.block_size)?;
        spool.packing = Some(packing);
        spool.packer = Some(Packer {
            pool,
            in_flight: VecDeque::new(),
        });
        Ok(spool)
    }

    /// How this spool packs large files, if it does.
    pub fn packing(&self) -> Option<Packing> {
        self.packing
    }

    /// Bytes the spool file holds (stored bytes: packed files count compressed).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies all of `reader` into the spool and returns where it landed. On a packing spool a
    /// file of a block or more is packed; its last blocks may still be compressing when this
    /// returns (see [`settle`](Self::settle)).
    pub fn append(&mut self, reader: &mut impl Read) -> io::Result<Content> {
        let Some(block_size) = self.packing.map(|p| p.block_size as usize) else {
            return self.append_raw(reader);
        };
        let mut block = self.packer_mut().pool.take_buffer();
        let first = read_block(reader, &mut block, block_size);
        if let Err(error) = first {
            self.packer_mut().pool.give_back(block);
            return Err(error);
        }
        if block.len() < block_size {
            // Shorter than a block: a fragment's worth, kept raw for the writer to pack.
            let content = self.append_raw(&mut &block[..]);
            self.packer_mut().pool.give_back(block);
            return content;
        }
        let index = self.lists.len();
        let packed_index = u32::try_from(index)
            .map_err(|_| io::Error::other("more than 2^32 packed files in one spool"))?;
        self.lists.push(BlockList::default());
        let mut len = 0u64;
        loop {
            len += block.len() as u64;
            self.submit(index, block)?;
            block = self.packer_mut().pool.take_buffer();
            let read = read_block(reader, &mut block, block_size);
            if read.is_err() || block.is_empty() {
                self.packer_mut().pool.give_back(block);
                read?;
                break;
            }
        }
        self.lists[index].len = len;
        Ok(Content::Packed {
            index: packed_index,
            len,
        })
    }

    /// Appends a byte slice (the small generated `/.singularity.d` and enroot files). Unlike
    /// [`append`](Self::append) it leaves the spool settled: the editors read what they wrote.
    pub fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<Content> {
        let content = self.append(&mut &bytes[..])?;
        if let Content::Packed { .. } = content {
            self.settle()?;
        }
        Ok(content)
    }

    /// Waits for every block still compressing and writes it, so that every packed file can be
    /// read. The compression threads stay for later appends; their buffers are freed.
    pub fn settle(&mut self) -> io::Result<()> {
        while self
            .packer
            .as_ref()
            .is_some_and(|p| !p.in_flight.is_empty())
        {
            self.write_oldest()?;
        }
        if let Some(packer) = &mut self.packer {
            packer.pool.release_buffers();
        }
        Ok(())
    }

    /// Reads a stored file's raw bytes back into `buf` (cleared first).
    pub fn read_into(&self, content: Content, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        self.append_to(content, buf)
    }

    /// Appends a stored file's raw bytes to `buf` (on an error, `buf` is left as it was).
    pub fn append_to(&self, content: Content, buf: &mut Vec<u8>) -> io::Result<()> {
        let start = buf.len();
        let read = match content {
            Content::Raw { offset, len } => {
                buf.resize(start + len as usize, 0);
                self.file.read_exact_at(&mut buf[start..], offset)
            }
            Content::Packed { len, .. } => {
                buf.reserve_exact(len as usize);
                self.reader(content).read_to_end(buf).map(drop)
            }
        };
        if read.is_err() {
            buf.truncate(start);
        }
        read
    }

    /// A reader over one stored file's raw bytes, for streaming large files without loading
    /// them whole.
    pub fn reader(&self, content: Content) -> SpoolReader<'_> {
        match content {
            Content::Raw { offset, len } => SpoolReader::Raw {
                file: &self.file,
                pos: offset,
                end: offset + len,
            },
            Content::Packed { index, .. } => SpoolReader::Packed(PackedReader {
                spool: self,
                index: index as usize,
                next_block: 0,
                block: Vec::new(),
                pos: 0,
            }),
        }
    }

    /// The stored blocks of a packed file, when they are complete and were made with exactly
    /// `compression` and `block_size` (so that a squashfs writer with those options can copy
    /// them as they are).
    pub(crate) fn packed_blocks(
        &self,
        content: Content,
        compression: Compression,
        block_size: u32,
    ) -> Option<&[PackedBlock]> {
        let Content::Packed { index, .. } = content else {
            return None;
        };
        let packing = self.packing?;
        if packing.compression != compression || packing.block_size != block_size {
            return None;
        }
        self.complete_list(index as usize).ok()
    }

    /// The spool file, for copying stored blocks out of it in the kernel (at offsets from
    /// [`PackedBlock`]s). Its file position is nobody's: every read here is at an offset.
    pub(crate) fn stored_file(&self) -> &File {
        &self.file
    }

    /// Reads one packed block's stored bytes into `buf` (cleared first).
    pub(crate) fn read_stored(&self, block: PackedBlock, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(block.stored_len(), 0);
        self.file.read_exact_at(buf, block.offset)
    }

    fn complete_list(&self, index: usize) -> io::Result<&[PackedBlock]> {
        let (Some(list), Some(packing)) = (self.lists.get(index), self.packing) else {
            return Err(io::Error::other("no such packed file in the spool"));
        };
        if list.blocks.len() as u64 != list.len.div_ceil(u64::from(packing.block_size)) {
            return Err(io::Error::other(
                "a packed file was read before the spool settled",
            ));
        }
        Ok(&list.blocks)
    }

    fn append_raw(&mut self, reader: &mut impl Read) -> io::Result<Content> {
        let offset = self.len;
        self.file.seek(SeekFrom::Start(offset))?;
        let len = io::copy(reader, &mut self.file)?;
        self.len += len;
        Ok(Content::Raw { offset, len })
    }

    fn packer_mut(&mut self) -> &mut Packer {
        self.packer
            .as_mut()
            .expect("only a packing spool packs (packing and packer are set together)")
    }

    /// Queues one block of list `index`, first writing finished blocks while the pool is full.
    fn submit(&mut self, index: usize, block: Vec<u8>) -> io::Result<()> {
        while self.packer_mut().pool.is_full() {
            self.write_oldest()?;
        }
        let packer = self.packer_mut();
        packer.pool.submit(block, true).map_err(io::Error::other)?;
        packer.in_flight.push_back(index);
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it at the end of the spool.
    fn write_oldest(&mut self) -> io::Result<()> {
        let packer = self.packer_mut();
        let done = packer.pool.oldest().map_err(io::Error::other)?;
        let index = packer
            .in_flight
            .pop_front()
            .expect("a block in flight has a list");
        let offset = self.len;
        let stored = done.stored();
        let written = self.file.write_all_at(stored, offset);
        let block = PackedBlock {
            offset,
            size_word: done.size_word(),
        };
        let stored_len = stored.len() as u64;
        self.packer_mut().pool.recycle(done);
        written?;
        self.len += stored_len;
        self.lists[index].blocks.push(block);
        Ok(())
    }
}

/// Fills `block` (whatever it held is replaced) with up to `block_size` bytes: less only at the end of `reader`.
pub(crate) fn read_block(
    reader: &mut impl Read,
    block: &mut Vec<u8>,
    block_size: usize,
) -> io::Result<()> {
    // Reads as large as the reader gives (a tar entry hands out what its buffer holds), not in
    // the small steps `read_to_end` starts with.
    block.resize(block_size, 0);
    let mut filled = 0;
    while filled < block_size {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                block.truncate(filled);
                return Err(e);
            }
        }
    }
    block.truncate(filled);
    Ok(())
}

/// Streams one file's raw bytes out of a [`Spool`] with positioned reads (no shared cursor).
pub enum SpoolReader<'a> {
    Raw { file: &'a File, pos: u64, end: u64 },
    Packed(PackedReader<'a>),
}

/// Decompresses a packed file block by block.
pub struct PackedReader<'a> {
    spool: &'a Spool,
    index: usize,
    next_block: usize,
    /// The current block's raw bytes, of which `pos` have been read.
    block: Vec<u8>,
    pos: usize,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SpoolReader::Raw { file, pos, end } => {
                let want = buf.len().min((*end - *pos) as usize);
                if want == 0 {
                    return Ok(0);
                }
                let n = file.read_at(&mut buf[..want], *pos)?;
                if n == 0 {
                    // The content says there is more: the spool is shorter than the tree
                    // claims, which must not pass for a shorter file.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *pos += n as u64;
                Ok(n)
            }
            SpoolReader::Packed(packed) => packed.read(buf),
        }
    }
}

impl Read for PackedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.block.len() && !self.load_next()? {
            return Ok(0);
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl PackedReader<'_> {
    /// Decompresses the next block into `block`; false at the end of the file.
    fn load_next(&mut self) -> io::Result<bool> {
        let spool = self.spool;
        let blocks = spool.complete_list(self.index)?;
        let Some(&block) = blocks.get(self.next_block) else {
            return Ok(false);
        };
        let packing = spool.packing.expect("a packed file is in a packing spool");
        let block_size = u64::from(packing.block_size);
        let start = self.next_block as u64 * block_size;
        let raw_len = (spool.lists[self.index].len - start).min(block_size) as usize;
        self.next_block += 1;
        self.pos = 0;
        if block.size_word == 0 {
            self.block.clear();
            self.block.resize(raw_len, 0);
        } else if block.size_word & UNCOMPRESSED_BLOCK != 0 {
            spool.read_stored(block, &mut self.block)?;
        } else {
            let mut stored = Vec::new();
            spool.read_stored(block, &mut stored)?;
            decompress_block(packing.compression, &stored, raw_len, &mut self.block)?;
        }
        Ok(true)
    }
}
