//! Which files are stored once: like mksquashfs, a file whose contents equal an earlier file's
//! is not stored twice, its inode points at the earlier copy.
//!
//! Only files sharing their size with another file can be duplicates, which on a Debian rootfs
//! is about a tenth of the bytes.
//!
//! Small files (under a block, the fragments' files) are most of those. They are in memory
//! anyway, so they are keyed by size and CRC-32, an order of magnitude cheaper than SHA-256,
//! and a match is confirmed by comparing the bytes with the earlier file's: the decisions are
//! those of equal contents, as a cryptographic digest's would be. CRC-32 collisions are easy to
//! make on purpose (any files of one length built from two colliding blocks share a CRC), so a
//! hostile layer could fill one (size, CRC) bucket with thousands of distinct files and make
//! every new one compare against all of them; a bucket therefore keeps at most
//! [`MAX_CANDIDATES`] contents, and a file beyond that is stored as it is (never deduplicated
//! wrongly, only not deduplicated).
//!
//! Large files are hashed (SHA-256). A packed file is hashed over its size words and stored
//! blocks instead of its raw bytes: block compression is deterministic and decompression a
//! function, so two packed files of one size have the same blocks exactly when they have the
//! same bytes. The two kinds of digest are kept apart (a raw file never matches a packed one);
//! a packing spool packs every file of a block or more, so files of one size are all of one
//! kind anyway.

use std::collections::{HashMap, HashSet};
use std::io;

use sha2::{Digest, Sha256};

use super::plan::Plan;
use crate::tree::spool::{read_block, PackedBlock};
use crate::tree::{Content, Kind, Spool, Tree};

/// Distinct contents compared per (size, CRC-32): real images have one, collisions by chance
/// a second; more is a layer made to collide.
const MAX_CANDIDATES: usize = 4;

/// Which bytes a large file's digest covers: a raw and a packed file never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DigestOf {
    Raw,
    Packed,
}

/// Files are named by their index in the data layout (plan order).
pub(super) struct Duplicates<'a> {
    spool: &'a Spool,
    block_size: usize,
    shared_sizes: HashSet<u64>,
    /// First large file with each (size, kind, digest).
    first_large: HashMap<(u64, DigestOf, [u8; 32]), usize>,
    /// Small files with distinct contents, first of each, by (size, CRC-32): more than one
    /// only when two contents share a CRC.
    first_small: HashMap<(u64, u32), Vec<(usize, Content)>>,
    /// An earlier file's bytes, to compare; or a large file's, to hash.
    buffer: Vec<u8>,
}

impl<'a> Duplicates<'a> {
    pub fn new(tree: &Tree, plan: &Plan, spool: &'a Spool, block_size: usize) -> Self {
        Duplicates {
            spool,
            block_size,
            shared_sizes: shared_sizes(tree, plan),
            first_large: HashMap::new(),
            first_small: HashMap::new(),
            buffer: Vec::new(),
        }
    }

    /// The earlier file that small file `index` (`content`, whose bytes are `bytes`)
    /// duplicates, if any; else it is an original from now on.
    pub fn small(
        &mut self,
        index: usize,
        content: Content,
        bytes: &[u8],
    ) -> io::Result<Option<usize>> {
        let len = content.len();
        if !self.shared_sizes.contains(&len) {
            return Ok(None);
        }
        let mut crc = flate2::Crc::new();
        crc.update(bytes);
        let candidates = self.first_small.entry((len, crc.sum())).or_default();
        for &(original, original_content) in candidates.iter() {
            self.spool.read_into(original_content, &mut self.buffer)?;
            if self.buffer == bytes {
                return Ok(Some(original));
            }
        }
        if candidates.len() < MAX_CANDIDATES {
            candidates.push((index, content));
        }
        Ok(None)
    }

    /// The earlier file that packed file `index` (`len` bytes stored as `blocks`) duplicates.
    pub fn packed(
        &mut self,
        index: usize,
        len: u64,
        blocks: &[PackedBlock],
    ) -> io::Result<Option<usize>> {
        if !self.shared_sizes.contains(&len) {
            return Ok(None);
        }
        // Each block's size word, then its stored bytes.
        let mut hasher = Sha256::new();
        for &block in blocks {
            self.spool.read_stored(block, &mut self.buffer)?;
            hasher.update(block.size_word.to_le_bytes());
            hasher.update(&self.buffer);
        }
        Ok(self.large(index, (len, DigestOf::Packed, hasher.finalize().into())))
    }

    /// The earlier file that large raw file `index` duplicates.
    pub fn raw(&mut self, index: usize, content: Content) -> io::Result<Option<usize>> {
        let len = content.len();
        if !self.shared_sizes.contains(&len) {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        let mut reader = self.spool.reader(content);
        loop {
            read_block(&mut reader, &mut self.buffer, self.block_size)?;
            if self.buffer.is_empty() {
                break;
            }
            hasher.update(&self.buffer);
        }
        Ok(self.large(index, (len, DigestOf::Raw, hasher.finalize().into())))
    }

    fn large(&mut self, index: usize, key: (u64, DigestOf, [u8; 32])) -> Option<usize> {
        match self.first_large.get(&key) {
            Some(&original) => Some(original),
            None => {
                self.first_large.insert(key, index);
                None
            }
        }
    }
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
