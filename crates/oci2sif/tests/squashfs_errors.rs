//! Trees and options that squashfs cannot represent are refused with a typed error, never a
//! panic or a broken image.

mod squashfs_support;

use std::collections::BTreeMap;
use std::io::Cursor;

use oci2sif::squashfs::{write_squashfs, Compression, SquashfsError, SquashfsOptions};
use oci2sif::tree::{Content, Kind, Meta, Spool, Tree, ROOT};
use squashfs_support::scratch_dir;

fn write(tree: &Tree, opts: &SquashfsOptions) -> Result<u64, SquashfsError> {
    let scratch = scratch_dir();
    let spool = Spool::new_in(scratch.path()).unwrap();
    write_squashfs(tree, &spool, &mut Cursor::new(Vec::new()), opts)
}

fn with_node(name: &[u8], kind: Kind) -> Tree {
    let mut tree = Tree::new();
    let id = tree.add_inode(kind, Meta::new(0o644, 0, 0, 0));
    tree.link(ROOT, name.to_vec(), id);
    tree
}

#[test]
fn bad_options_are_refused() {
    let tree = Tree::new();
    for opts in [
        SquashfsOptions {
            block_size: 100_000,
            ..Default::default()
        },
        SquashfsOptions {
            block_size: 2048,
            ..Default::default()
        },
        SquashfsOptions {
            block_size: 2 << 20,
            ..Default::default()
        },
        SquashfsOptions {
            compression: Compression::Gzip { level: 0 },
            ..Default::default()
        },
        SquashfsOptions {
            compression: Compression::Gzip { level: 10 },
            ..Default::default()
        },
        SquashfsOptions {
            compression: Compression::Zstd { level: 0 },
            ..Default::default()
        },
        SquashfsOptions {
            compression: Compression::Zstd { level: 23 },
            ..Default::default()
        },
    ] {
        let err = write(&tree, &opts).unwrap_err();
        assert!(
            matches!(err, SquashfsError::InvalidOptions(_)),
            "{opts:?}: {err}"
        );
    }
}

#[test]
fn zero_threads_means_one() {
    let opts = SquashfsOptions {
        threads: 0,
        ..Default::default()
    };
    assert!(write(&Tree::new(), &opts).is_ok());
}

#[test]
fn names_longer_than_256_bytes_are_refused() {
    let ok = with_node(&[b'a'; 256], Kind::Fifo);
    assert!(write(&ok, &SquashfsOptions::default()).is_ok());
    let too_long = with_node(&[b'a'; 257], Kind::Fifo);
    let err = write(&too_long, &SquashfsOptions::default()).unwrap_err();
    assert!(
        matches!(err, SquashfsError::NameTooLong { len: 257, .. }),
        "{err}"
    );
}

#[test]
fn device_numbers_beyond_the_32_bit_encoding_are_refused() {
    for (major, minor) in [(4096, 0), (0, 1 << 20)] {
        let tree = with_node(b"dev", Kind::CharDevice { major, minor });
        let err = write(&tree, &SquashfsOptions::default()).unwrap_err();
        assert!(
            matches!(err, SquashfsError::DeviceNumberTooLarge { .. }),
            "{err}"
        );
    }
    let largest = with_node(
        b"dev",
        Kind::BlockDevice {
            major: 4095,
            minor: (1 << 20) - 1,
        },
    );
    assert!(write(&largest, &SquashfsOptions::default()).is_ok());
}

#[test]
fn a_directory_cycle_is_refused_not_followed() {
    let mut tree = Tree::new();
    let dir = tree.add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o755, 0, 0, 0));
    tree.link(ROOT, b"a".to_vec(), dir);
    tree.link(dir, b"back".to_vec(), ROOT);
    let err = write(&tree, &SquashfsOptions::default()).unwrap_err();
    assert!(
        matches!(err, SquashfsError::DirectoryLinkedTwice(_)),
        "{err}"
    );

    let mut tree = Tree::new();
    let dir = tree.add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o755, 0, 0, 0));
    tree.link(ROOT, b"a".to_vec(), dir);
    tree.link(ROOT, b"b".to_vec(), dir);
    let err = write(&tree, &SquashfsOptions::default()).unwrap_err();
    assert!(
        matches!(err, SquashfsError::DirectoryLinkedTwice(_)),
        "{err}"
    );
}

#[test]
fn a_file_past_the_end_of_the_spool_is_an_io_error() {
    let tree = with_node(b"f", Kind::File(Content::Raw { offset: 0, len: 10 }));
    let err = write(&tree, &SquashfsOptions::default()).unwrap_err();
    assert!(matches!(err, SquashfsError::Io(_)), "{err}");
    let big = with_node(
        b"f",
        Kind::File(Content::Raw {
            offset: 0,
            len: 1 << 20,
        }),
    );
    let err = write(&big, &SquashfsOptions::default()).unwrap_err();
    assert!(matches!(err, SquashfsError::Io(_)), "{err}");
}

#[test]
fn a_dangling_inode_id_is_refused() {
    let mut tree = Tree::new();
    if let Kind::Dir(children) = &mut tree.inode_mut(ROOT).kind {
        children.insert(b"ghost".to_vec(), 99);
    }
    let err = write(&tree, &SquashfsOptions::default()).unwrap_err();
    assert!(matches!(err, SquashfsError::MalformedTree(_)), "{err}");
}

#[test]
fn a_deep_tree_does_not_overflow_the_stack() {
    let mut tree = Tree::new();
    let mut parent = ROOT;
    for _ in 0..100_000 {
        let dir = tree.add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o755, 0, 0, 0));
        tree.link(parent, b"d".to_vec(), dir);
        parent = dir;
    }
    // A small stack, as a tokio blocking thread might have.
    let image = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let scratch = scratch_dir();
            let spool = Spool::new_in(scratch.path()).unwrap();
            let opts = SquashfsOptions {
                threads: 1,
                ..Default::default()
            };
            let mut out = Cursor::new(Vec::new());
            write_squashfs(&tree, &spool, &mut out, &opts).unwrap();
            out.into_inner()
        })
        .unwrap()
        .join()
        .unwrap();
    let inode_count = u32::from_le_bytes(image[4..8].try_into().unwrap());
    assert_eq!(inode_count, 100_001, "superblock inode count");
}
