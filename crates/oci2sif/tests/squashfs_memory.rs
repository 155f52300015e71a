//! Memory stays bounded by the blocks in flight, not by file or image size. This is the only
//! test in its binary, so no other test's allocations move the process's peak.

mod squashfs_support;

use std::io::Read;

use oci2sif::squashfs::{Compression, SquashfsOptions};
use oci2sif::tree::{Kind, Meta, Spool, Tree, ROOT};
use squashfs_support::*;

/// Peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `len` bytes of compressible pseudo-random data, generated as they are read.
struct Generated {
    left: u64,
    state: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize) & !7;
        for word in buf[..n].chunks_exact_mut(8) {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            // Keep 3 random bytes of 8 so that the data compresses about 2:1, like a rootfs.
            let bytes = (self.state >> 40).to_le_bytes();
            word.copy_from_slice(&bytes);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_file_is_streamed_not_loaded() {
    const FILE_LEN: u64 = 384 << 20;
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let mut tree = Tree::new();
    let mut source = Generated {
        left: FILE_LEN,
        state: 1,
    };
    let content = spool.append(&mut source).unwrap();
    assert_eq!(content.len(), FILE_LEN);
    let id = tree.add_inode(Kind::File(content), Meta::new(0o644, 0, 0, 0));
    tree.link(ROOT, b"large".to_vec(), id);

    let before = peak_rss_kib();
    let opts = SquashfsOptions {
        compression: Compression::Zstd { level: 3 },
        block_size: 131_072,
        threads: 2,
        mkfs_time: 0,
    };
    let image = scratch.path().join("image.sqfs");
    let size = write_image(&tree, &spool, &image, &opts);
    let growth_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("peak RSS grew by {growth_mib} MiB while writing a {size}-byte image");
    assert!(size > FILE_LEN / 4, "the data really went into the image");
    // 2 threads × 8 blocks in flight × (input + output) is 4 MiB; compressor contexts and
    // thread stacks add a few MiB more. A writer that loaded the file would add 384.
    assert!(
        growth_mib < 48,
        "peak RSS grew by {growth_mib} MiB while writing"
    );
}
