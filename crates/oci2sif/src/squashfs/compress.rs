//! One compressor context per thread, for data blocks and metadata blocks alike.

use std::io;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use super::Compression;

/// Squashfs compressor ids (`ZLIB_COMPRESSION`, `ZSTD_COMPRESSION`).
pub(super) fn compressor_id(compression: Compression) -> u16 {
    match compression {
        Compression::Gzip { .. } => 1,
        Compression::Zstd { .. } => 6,
    }
}

pub(super) enum Compressor {
    Zlib(Box<Compress>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Compressor {
    pub fn new(compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            // Squashfs "gzip" is a zlib stream (RFC 1950 header + deflate), 32 KiB window.
            Compression::Gzip { level } => Compressor::Zlib(Box::new(Compress::new(
                flate2::Compression::new(level),
                true,
            ))),
            Compression::Zstd { level } => {
                Compressor::Zstd(Box::new(zstd::bulk::Compressor::new(level)?))
            }
        })
    }

    /// Compresses `input` into `output` (replacing its contents). Returns false when the
    /// compressed form would not be smaller, in which case squashfs stores the block as is and
    /// `output` holds nothing useful.
    pub fn compress(&mut self, input: &[u8], output: &mut Vec<u8>) -> io::Result<bool> {
        output.clear();
        match self {
            Compressor::Zlib(zlib) => {
                zlib.reset();
                // Room for exactly the input: running out of it means "not worth compressing".
                output.reserve_exact(input.len());
                let status = zlib
                    .compress_vec(input, output, FlushCompress::Finish)
                    .map_err(io::Error::other)?;
                Ok(status == Status::StreamEnd && output.len() < input.len())
            }
            Compressor::Zstd(zstd) => {
                output.reserve_exact(zstd::zstd_safe::compress_bound(input.len()));
                zstd.compress_to_buffer(input, output)?;
                Ok(output.len() < input.len())
            }
        }
    }
}

/// Turns a compressed data block back into its `raw_len` bytes (the spool's reader of files it
/// stored compressed). Anything but exactly `raw_len` bytes is an error: the spool wrote the
/// block itself, so a mismatch means the scratch file changed under the build.
pub(crate) fn decompress_block(
    compression: Compression,
    stored: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.reserve_exact(raw_len);
    match compression {
        Compression::Gzip { .. } => {
            let mut zlib = Decompress::new(true);
            let status = zlib
                .decompress_vec(stored, out, FlushDecompress::Finish)
                .map_err(io::Error::other)?;
            if status != Status::StreamEnd {
                return Err(io::Error::other("a spooled gzip block does not end"));
            }
        }
        Compression::Zstd { .. } => {
            zstd::bulk::Decompressor::new()?.decompress_to_buffer(stored, out)?;
        }
    }
    if out.len() != raw_len {
        return Err(io::Error::other(format!(
            "a spooled block decompresses to {} bytes, not {raw_len}",
            out.len()
        )));
    }
    Ok(())
}
