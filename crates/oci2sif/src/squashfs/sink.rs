//! Where an image goes: any `Write`, or a plain file that can take byte ranges of the spool
//! file in the kernel.
//!
//! Most of an image's bytes are data blocks the spool already holds compressed (see
//! `tree::Spool`); they are copied as they are. Through memory that is a read into this process
//! and a write back out, two copies of every byte. Into a plain file it is one
//! `copy_file_range` per run of a file's consecutive blocks (std's `io::copy` between files,
//! which falls back to splicing or to a copy through memory where the kernel cannot), one copy
//! in the kernel and no system call per block.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// An image output. [`append_file_range`](Self::append_file_range) is the fast path for
/// stored blocks; an output that cannot take it says so and gets the bytes instead.
pub trait ImageSink: Write {
    /// Appends the `len` bytes of `src` at `offset` to the output. Returns false, having
    /// written nothing, when this output only takes bytes (the caller then writes them).
    ///
    /// Moves `src`'s file position, which no reader of the spool relies on (they read at
    /// offsets).
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool>;
}

/// Any `Write + Seek` as an image output that takes bytes only (reads pass through: a SIF
/// is read back to hash it).
pub struct BytesOnly<W>(pub W);

impl<W: Read> Read for BytesOnly<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<W: Write> Write for BytesOnly<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Seek> Seek for BytesOnly<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<W: Write> ImageSink for BytesOnly<W> {
    fn append_file_range(&mut self, _: &File, _: u64, _: u64) -> io::Result<bool> {
        Ok(false)
    }
}

impl ImageSink for File {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        let mut src = src;
        src.seek(SeekFrom::Start(offset))?;
        // std copies file to file with copy_file_range (then sendfile, then through memory).
        let copied = io::copy(&mut src.take(len), self)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the spool ends {} bytes into a {len}-byte range", copied),
            ));
        }
        Ok(true)
    }
}

impl<T: ImageSink + ?Sized> ImageSink for &mut T {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        (**self).append_file_range(src, offset, len)
    }
}

impl<T: ImageSink + ?Sized> ImageSink for Box<T> {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        (**self).append_file_range(src, offset, len)
    }
}

impl<T: ImageSink> ImageSink for BufWriter<T> {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        // What is buffered goes first, or the range would land before it.
        self.flush()?;
        self.get_mut().append_file_range(src, offset, len)
    }
}
