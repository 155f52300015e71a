//! The handles a backend gives out: an open committed [`Blob`] (positioned reads of any range)
//! and a [`Staged`] upload (an append-only writer).

use std::io;
use std::sync::Arc;

use bytes::Bytes;

/// Positioned reads of one committed blob. Safe to share: every read names its offset, so any
/// number of ranges of one open blob can be read at once.
pub trait BlobRead: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means the end of the blob.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// An open committed blob and its size (taken when it was opened).
#[derive(Clone)]
pub struct Blob {
    pub size: u64,
    source: Arc<dyn BlobRead>,
}

impl Blob {
    pub fn new(size: u64, source: impl BlobRead + 'static) -> Self {
        Blob {
            size,
            source: Arc::new(source),
        }
    }

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the blob ends first (a file
    /// truncated on disk after its size was recorded).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.source.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                        "the blob ends at byte {} but {} bytes were expected (truncated on disk?)",
                        offset + got as u64,
                        offset + buf.len() as u64
                    ),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The whole blob as a sequential reader (for hashing, parsing a config, feeding a build).
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            blob: self.clone(),
            pos: 0,
        }
    }
}

/// [`Blob::reader`]: reads from the start to the end, one positioned read per call.
pub struct BlobReader {
    blob: Blob,
    pos: u64,
}

impl io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.source.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The staged bytes of one upload session, open for appending.
///
/// The upload pipeline hands over whole batches of body frames (megabytes at a time), so an
/// implementation writes them as they are, without buffering or copying them again.
pub trait Staged: Send {
    /// Bytes staged so far (what was there when opened plus what was appended).
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `parts` in order. On an error an unknown prefix of them may have been written;
    /// the caller re-reads [`Staged::len`] from a fresh handle.
    fn append(&mut self, parts: &[Bytes]) -> io::Result<()>;
}
