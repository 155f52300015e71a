//! The same tree, spool and options give the same bytes, whatever the thread count.

mod squashfs_support;

use oci2sif::squashfs::{write_squashfs, Compression, SquashfsOptions};
use oci2sif::tree::{Spool, Tree};
use squashfs_support::*;

fn image_bytes(tree: &Tree, spool: &Spool, compression: Compression, threads: usize) -> Vec<u8> {
    let opts = SquashfsOptions {
        compression,
        block_size: 131_072,
        threads,
        mkfs_time: 1_700_000_000,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let size = write_squashfs(tree, spool, &mut out, &opts).unwrap();
    assert_eq!(size, out.get_ref().len() as u64);
    out.into_inner()
}

#[test]
fn thread_count_does_not_change_the_image() {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = rich_tree(&mut spool, 131_072);
    for compression in [
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
    ] {
        let one = image_bytes(&tree, &spool, compression, 1);
        for threads in [1, 2, 3, 8] {
            let again = image_bytes(&tree, &spool, compression, threads);
            assert!(
                one == again,
                "{compression:?} with {threads} threads differs from 1 thread"
            );
        }
    }
}

#[test]
fn image_starts_at_the_writer_position_and_leaves_it_at_the_end() {
    use std::io::{Seek, SeekFrom, Write};
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = rich_tree(&mut spool, 131_072);
    let alone = image_bytes(&tree, &spool, Compression::default(), 2);

    let mut out = std::io::Cursor::new(Vec::new());
    out.write_all(&[0xAA; 12_345]).unwrap();
    let opts = SquashfsOptions {
        threads: 2,
        mkfs_time: 1_700_000_000,
        ..SquashfsOptions::default()
    };
    let size = write_squashfs(&tree, &spool, &mut out, &opts).unwrap();
    assert_eq!(out.stream_position().unwrap(), 12_345 + size);
    out.seek(SeekFrom::End(0)).unwrap();
    assert_eq!(
        &out.get_ref()[12_345..],
        &alone[..],
        "offset image = image alone"
    );
}
