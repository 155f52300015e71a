//! Streams a byte range of a blob with positioned reads into pooled buffers.
//!
//! Downloads used to map the file (`mmap`) and hand the mapped window to hyper without a copy.
//! A mapping turns an I/O error into a signal: a blob file truncated on disk, or a page an NFS or
//! Lustre server cannot deliver, raises SIGBUS on the thread that touches it (hyper, rustls)
//! and kills the whole server. Here every byte comes from `pread(2)`, so such a failure is an
//! `io::Error` for one response: the body stops short (the client sees the connection close
//! before `Content-Length` bytes) and the next request is served as usual.
//!
//! The price is one copy (page cache → buffer) in user space. Buffers of [`WINDOW`] bytes come
//! from a pool and go back to it once hyper has written them, so a download neither allocates
//! nor page-faults per window; one read fills a window (one blocking-pool trip per 512 KiB, one
//! for a whole small SIF). Memory stays flat however large the file (at most two windows are in
//! flight per response) and however many clients there are: all downloads together hold at most
//! [`MAX_IN_FLIGHT`] windows (32 MiB). A download past that bound waits (first come, first
//! served) for a window another one has handed to the kernel. 64 compute nodes fetching one SIF
//! used to pin 2 windows of 2 MiB each, 256 MiB; now they share 32 MiB, which still keeps every
//! socket busy on a 10 GbE or loopback link.

use std::io;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::Blob;

/// Bytes read at once per response.
pub const WINDOW: usize = 512 << 10;
/// Windows all responses together may hold (read, or waiting for the socket): 32 MiB.
pub const MAX_IN_FLIGHT: usize = 64;

/// One permit per window in flight; a window's permit goes with its buffer back to the pool.
static IN_FLIGHT: Semaphore = Semaphore::const_new(MAX_IN_FLIGHT);
/// Idle buffers kept for reuse: as many as may be in flight, so none is ever freed.
static BUFFERS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Box<[u8]>>> {
    BUFFERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A window's bytes; the buffer returns to the pool, and its permit to [`IN_FLIGHT`], when hyper
/// drops the `Bytes`.
struct Pooled {
    buf: Option<Box<[u8]>>,
    len: usize,
    _permit: SemaphorePermit<'static>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| &b[..self.len])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut pool = pool();
            if pool.len() < MAX_IN_FLIGHT {
                pool.push(buf);
            }
        }
    }
}

/// The bytes `[start, start + len)` of `blob`, in windows of at most [`WINDOW`]. A read error
/// (or a blob shorter than the range) ends the stream with that error.
pub fn stream(blob: Blob, start: u64, len: u64) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let end = start + len;
    futures_util::stream::unfold(start, move |pos| {
        let blob = blob.clone();
        async move {
            if pos >= end {
                return None;
            }
            let window_end = end.min(pos + WINDOW as u64);
            let permit = match IN_FLIGHT.acquire().await {
                Ok(p) => p,
                Err(e) => return Some((Err(io::Error::other(e)), end)),
            };
            let chunk =
                tokio::task::spawn_blocking(move || read_window(&blob, pos, window_end, permit))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)));
            match chunk {
                Ok(bytes) => Some((Ok(bytes), window_end)),
                Err(e) => {
                    tracing::warn!(
                        "download stopped: reading bytes {pos}..{window_end} of the blob failed: {e}"
                    );
                    // Nothing after a failed window: the response ends here.
                    Some((Err(e), end))
                }
            }
        }
    })
}

/// Reads `[from, to)` of `blob` into a pooled buffer, which keeps `permit` until it is dropped.
fn read_window(
    blob: &Blob,
    from: u64,
    to: u64,
    permit: SemaphorePermit<'static>,
) -> io::Result<Bytes> {
    let want = (to - from) as usize;
    let mut buf = pool()
        .pop()
        .unwrap_or_else(|| vec![0u8; WINDOW].into_boxed_slice());
    // On an error the buffer is dropped rather than pooled: rare, and it keeps this simple.
    blob.read_exact_at(&mut buf[..want], from)?;
    Ok(Bytes::from_owner(Pooled {
        buf: Some(buf),
        len: want,
        _permit: permit,
    }))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    struct TestFile(File);

    impl crate::storage::BlobRead for TestFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
        }
    }

    fn blob(file: File) -> Blob {
        let size = file.metadata().unwrap().len();
        Blob::new(size, TestFile(file))
    }

    async fn collect(file: File, start: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(stream(blob(file), start, len));
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            assert!(chunk.len() <= WINDOW);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn any_range_of_a_file_streams_exactly() {
        let data: Vec<u8> = (0..(WINDOW * 2 + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let n = data.len() as u64;
        let w = WINDOW as u64;
        for (start, len) in [
            (0, n),
            (1, n - 1),
            (4095, 2),
            (w - 1, w + 2),
            (n - 1, 1),
            (5, 0),
        ] {
            let got = collect(f.try_clone().unwrap(), start, len).await.unwrap();
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
        assert_eq!(collect(f, 0, 15).await.unwrap(), b"immutable bytes");
    }

    #[tokio::test]
    async fn downloads_together_hold_at_most_max_in_flight_windows() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; WINDOW * 2]).unwrap();
        let mut streams: Vec<_> = (0..=MAX_IN_FLIGHT)
            .map(|_| Box::pin(stream(blob(f.try_clone().unwrap()), 0, WINDOW as u64 * 2)))
            .collect();
        // Every window a client has not taken off the server yet is one held.
        let mut held = Vec::new();
        for s in &mut streams[..MAX_IN_FLIGHT] {
            held.push(s.next().await.unwrap().unwrap());
        }
        let last = streams.last_mut().unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(300), last.next()).await;
        assert!(waiting.is_err(), "a window past the bound was read");
        // One goes out: the waiting download gets its window.
        held.pop();
        let chunk = last.next().await.unwrap().unwrap();
        assert_eq!(chunk.len(), WINDOW);
    }

    #[tokio::test]
    async fn a_truncated_file_ends_the_stream_with_an_error() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; WINDOW + 100]).unwrap();
        let reader = f.try_clone().unwrap();
        // Truncated after the size was recorded: the second window is short.
        f.set_len(WINDOW as u64 + 10).unwrap();
        let mut s = std::pin::pin!(stream(blob(reader), 0, WINDOW as u64 + 100));
        assert_eq!(s.next().await.unwrap().unwrap().len(), WINDOW);
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(s.next().await.is_none(), "nothing after the error");
    }
}
