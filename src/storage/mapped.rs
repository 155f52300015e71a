//! Streams a byte range of an immutable file as memory-mapped windows.
//!
//! Serving through `read(2)` copies every byte twice in user space (kernel → read buffer →
//! response buffer) and costs a blocking-pool trip per 256 KiB read; for a 1 MB SIF that was
//! half of the CPU of a request, and nginx's `sendfile` does neither. A mapped window is handed
//! to hyper as `Bytes` without a copy, so the only copy left is the kernel's into the socket,
//! as with `sendfile`.
//!
//! Memory stays flat however large the file: one window (at most [`WINDOW`]) is mapped at a time
//! per response, and unmapped once hyper has written it. Each window is mapped with
//! `MAP_POPULATE` on the blocking pool, so a cold file is read from disk there and never by a
//! page fault on an async worker thread.
//!
//! Only for files that are never modified in place: blobs and SIFs are content-addressed,
//! written once under a temporary name and renamed; garbage collection unlinks (the mapping keeps
//! the inode alive) and scrub renames. Truncating a mapped file would raise SIGBUS.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

/// Bytes mapped at once per response.
pub const WINDOW: u64 = 4 << 20;

/// A read-only private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading it from any thread is
// as safe as reading a `&[u8]`.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at `offset` (a multiple of the page size).
    fn new(file: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh read-only private mapping of a file descriptor we own; the kernel
        // checks the arguments, and failure is MAP_FAILED, handled below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// The bytes `[start, start + len)` of `file`, in mapped windows of at most [`WINDOW`].
pub fn stream(file: File, start: u64, len: u64) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let file = Arc::new(file);
    let end = start + len;
    futures_util::stream::unfold(start, move |pos| {
        let file = Arc::clone(&file);
        async move {
            if pos >= end {
                return None;
            }
            let window_end = end.min((pos / WINDOW + 1) * WINDOW);
            let chunk = tokio::task::spawn_blocking(move || map_range(&file, pos, window_end))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            Some((chunk, window_end))
        }
    })
}

/// Maps `[from, to)` of `file` (any alignment) as `Bytes`.
fn map_range(file: &File, from: u64, to: u64) -> io::Result<Bytes> {
    let aligned = from - from % page_size();
    let skip = (from - aligned) as usize;
    let map = Mapping::new(file, aligned, (to - aligned) as usize)?;
    Ok(Bytes::from_owner(map).slice(skip..))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    async fn collect(file: File, start: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(stream(file, start, len));
        while let Some(chunk) = s.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() as u64 <= WINDOW);
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[tokio::test]
    async fn any_range_of_a_file_streams_exactly() {
        let data: Vec<u8> = (0..(WINDOW as usize * 2 + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let n = data.len() as u64;
        for (start, len) in [
            (0, n),
            (1, n - 1),
            (4095, 2),
            (WINDOW - 1, WINDOW + 2),
            (n - 1, 1),
            (5, 0),
        ] {
            let got = collect(f.try_clone().unwrap(), start, len).await;
            assert_eq!(
                got,
                &data[start as usize..(start + len) as usize],
                "{start}+{len}"
            );
        }
    }

    #[tokio::test]
    async fn an_unlinked_file_still_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"immutable bytes").unwrap();
        let f = File::open(&path).unwrap();
        // Garbage collection unlinks while a download runs: the open inode stays readable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(collect(f, 0, 15).await, b"immutable bytes");
    }
}
