//! Larger checks on real directories of this machine: a tree built from a host directory
//! (read-only) is written, extracted with `unsquashfs`, and must equal the source, and
//! squashfs-tools-ng must find it identical to mksquashfs's image of the same directory.

mod squashfs_support;

use std::path::Path;

use oci2sif::squashfs::{Compression, SquashfsOptions};
use oci2sif::tree::Spool;
use squashfs_support::*;

fn host_round_trip(source: &Path, compression: Compression) {
    assert!(
        source.is_dir(),
        "{} is part of the machine image",
        source.display()
    );
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = tree_from_dir(source, &mut spool);
    let image = scratch.path().join("image.sqfs");
    let opts = SquashfsOptions {
        compression,
        block_size: 131_072,
        threads: 2,
        mkfs_time: 0,
    };
    write_image(&tree, &spool, &image, &opts);

    let extracted = scratch.path().join("extracted");
    extract(&image, &extracted);
    let want = manifest_of_dir(source);
    let got = manifest_of_dir(&extracted);
    assert_eq!(got.len(), want.len(), "entry count");
    for (path, entry) in &want {
        assert_eq!(got.get(path), Some(entry), "entry {path:?}");
    }
    assert_same_as_mksquashfs(&image, source, scratch.path());
}

/// Tens of thousands of small files and symlinks in deep directories: metadata-heavy.
#[test]
fn man_pages_round_trip_with_gzip() {
    host_round_trip(Path::new("/usr/share/man"), Compression::Gzip { level: 6 });
}

/// Few, large binaries: many data blocks per file.
#[test]
fn gcc_libexec_round_trips_with_zstd() {
    host_round_trip(Path::new("/usr/lib/gcc"), Compression::Zstd { level: 3 });
}
