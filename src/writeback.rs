//! Bytes written to a file are handed to the disk as they are written, in runs of
//! [`RUN_BYTES`], for files that are made durable with an `fsync` once complete (a staged
//! upload, a SIF downloaded into a node's cache).
//!
//! A file of a few hundred MiB is far under the kernel's `dirty_background_ratio`, so without
//! this none of it is written until the `fsync`, which then waits for all of it (0.6 s per GiB
//! on the virtual disk here) after the last byte arrived. Started as the bytes come, the disk
//! works while the network does, and the `fsync` waits for the last run only. The pages stay in
//! the page cache, clean: whoever reads the file next still reads memory.

use std::fs::File;
use std::os::fd::AsRawFd;

/// 4 MiB: the largest request the virtual disk takes at once.
pub const RUN_BYTES: u64 = 4 << 20;

/// Where the next run of a file being appended to starts.
#[derive(Debug, Clone, Copy)]
pub struct Writeback {
    from: u64,
}

impl Writeback {
    /// For a file that already holds `len` bytes: its last partial run may not have been handed
    /// over (an earlier request or process wrote it), so it is started again with the next one.
    pub fn at(len: u64) -> Writeback {
        Writeback {
            from: len - len % RUN_BYTES,
        }
    }

    /// `file` now holds `len` bytes: once a run is complete, asks the kernel to start writing
    /// it, without waiting for it.
    pub fn wrote(&mut self, file: &File, len: u64) {
        if len.saturating_sub(self.from) >= RUN_BYTES {
            start(file, self.from, len - self.from);
            self.from = len;
        }
    }
}

/// Only a head start for the `fsync` that makes the bytes durable (and reports any write
/// error): a filesystem that does not support it loses nothing, so its answer is not looked at.
fn start(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: a plain system call on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Bytes of a file still dirty, for the tests of every writer that uses [`Writeback`].
#[cfg(test)]
pub(crate) use tests::dirty_bytes;

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;

    use super::*;

    /// Bytes of `file` in dirty pages, per the kernel's `cachestat(2)` (Linux 6.5); `None`
    /// where there is no such call or the filesystem keeps no dirty state of its own (tmpfs).
    pub(crate) fn dirty_bytes(file: &Path) -> Option<u64> {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct CacheStat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let f = File::open(file).ok()?;
        // SAFETY: statfs is plain data, all zeroes a valid value; fstatfs fills it.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(f.as_raw_fd(), &mut fs) } != 0 || fs.f_type == libc::TMPFS_MAGIC {
            return None;
        }
        let range = Range { off: 0, len: 0 };
        let mut stat = CacheStat::default();
        // SAFETY: cachestat reads `range` and writes `stat`, both live and of the kernel's layout.
        let r = unsafe { libc::syscall(SYS_CACHESTAT, f.as_raw_fd(), &range, &mut stat, 0) };
        // SAFETY: sysconf only reads a setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        (r == 0).then_some(stat.nr_dirty * u64::try_from(page).ok()?)
    }

    #[test]
    fn completed_runs_are_handed_over_and_a_reopened_file_continues_from_its_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let mib = vec![1u8; 1 << 20];
        let mut writeback = Writeback::at(0);
        for n in 1..=9u64 {
            file.write_all(&mib).unwrap();
            writeback.wrote(&file, n << 20);
        }
        let Some(dirty) = dirty_bytes(&path) else {
            eprintln!("skipped: no cachestat(2) here, or the test directory is on tmpfs");
            return;
        };
        // Two runs of 4 MiB handed over; the ninth MiB waits for its run to complete.
        assert_eq!(dirty, 1 << 20, "{} KiB dirty", dirty / 1024);
        // Another writer of the same file starts again at the run that MiB belongs to.
        let mut writeback = Writeback::at(9 << 20);
        for n in 10..=12u64 {
            file.write_all(&mib).unwrap();
            writeback.wrote(&file, n << 20);
        }
        assert_eq!(dirty_bytes(&path).unwrap(), 0);
    }
}
