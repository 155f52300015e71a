//! A spool that compresses large files while they arrive (`Spool::packing_in`) gives the
//! squashfs writer blocks it copies instead of compressing: the image must be byte for byte the
//! one a raw spool gives, with matching options (blocks copied) and without (blocks decompressed
//! and compressed again).

mod squashfs_support;

use std::fs::{self, File};
use std::io::{Cursor, Read, Write};

use oci2sif::squashfs::{write_squashfs, write_squashfs_to_file, Compression, SquashfsOptions};
use oci2sif::tree::{Content, Kind, Meta, Packing, Spool, Tree, ROOT};
use squashfs_support::{
    extract, manifest_of_dir, manifest_of_tree, pattern_bytes, random_bytes, read_write_file,
    rich_tree, scratch_dir,
};

fn options(compression: Compression, block_size: u32) -> SquashfsOptions {
    SquashfsOptions {
        compression,
        block_size,
        threads: 2,
        mkfs_time: 1_700_000_000,
    }
}

fn image(tree: &Tree, spool: &Spool, compression: Compression, block_size: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    write_squashfs(tree, spool, &mut out, &options(compression, block_size)).unwrap();
    out.into_inner()
}

/// The raw spool's image and the packing spool's, with these options, are the same bytes.
fn assert_same_image(
    raw: (&Tree, &Spool),
    packed: (&Tree, &Spool),
    compression: Compression,
    block_size: u32,
) {
    let expected = image(raw.0, raw.1, compression, block_size);
    let got = image(packed.0, packed.1, compression, block_size);
    let packing = packed.1.packing();
    assert!(
        got == expected,
        "written {compression:?} in {block_size}-byte blocks from a spool packing {packing:?}: \
         the images differ"
    );
}

fn packing(compression: Compression, block_size: u32) -> Packing {
    Packing {
        compression,
        block_size,
        threads: 2,
    }
}

const COMPRESSIONS: [Compression; 2] = [
    Compression::Gzip { level: 9 },
    Compression::Zstd { level: 3 },
];

#[test]
fn packed_blocks_give_the_raw_spools_image() {
    let scratch = scratch_dir();
    for compression in COMPRESSIONS {
        for block_size in [4096u32, 128 << 10] {
            let mut raw = Spool::new_in(scratch.path()).unwrap();
            let raw_tree = rich_tree(&mut raw, block_size as usize);

            let mut packed =
                Spool::packing_in(scratch.path(), packing(compression, block_size)).unwrap();
            let packed_tree = rich_tree(&mut packed, block_size as usize);
            let mut packed_files = 0;
            packed_tree.walk(|_, id| {
                if let Kind::File(Content::Packed { .. }) = packed_tree.inode(id).kind {
                    packed_files += 1;
                }
            });
            assert!(packed_files > 4, "the rich tree has large files to pack");
            assert_same_image(
                (&raw_tree, &raw),
                (&packed_tree, &packed),
                compression,
                block_size,
            );
        }
    }
}

#[test]
fn packed_blocks_of_other_options_are_decompressed_and_compressed_again() {
    let scratch = scratch_dir();
    let block_size = 8192u32;
    let mut raw = Spool::new_in(scratch.path()).unwrap();
    let raw_tree = rich_tree(&mut raw, block_size as usize);
    // Packed with gzip in 8 KiB blocks, written with zstd, and in 4 KiB or 16 KiB blocks.
    let mut packed = Spool::packing_in(
        scratch.path(),
        packing(Compression::Gzip { level: 6 }, block_size),
    )
    .unwrap();
    let packed_tree = rich_tree(&mut packed, block_size as usize);
    for (compression, write_block_size) in [
        (Compression::Zstd { level: 3 }, block_size),
        (Compression::Gzip { level: 6 }, 4096),
        (Compression::Gzip { level: 6 }, 16384),
    ] {
        assert_same_image(
            (&raw_tree, &raw),
            (&packed_tree, &packed),
            compression,
            write_block_size,
        );
    }
}

#[test]
fn a_packed_file_reads_back_as_its_bytes() {
    let scratch = scratch_dir();
    let block_size = 4096u32;
    for compression in COMPRESSIONS {
        let mut spool =
            Spool::packing_in(scratch.path(), packing(compression, block_size)).unwrap();
        let random = random_bytes(3 * 4096 + 7);
        let mut text = b"compressible ".repeat(1000);
        // An all-zero block in the middle becomes a hole.
        text.extend(std::iter::repeat_n(0u8, 8192));
        text.extend_from_slice(b"end");
        let files = [random, text, vec![0; 4096], vec![7; 4095], vec![1; 4097]];
        // Streamed in like layer entries, none read until the spool settles.
        let contents: Vec<Content> = files
            .iter()
            .map(|bytes| spool.append(&mut &bytes[..]).unwrap())
            .collect();
        spool.settle().unwrap();
        for (bytes, content) in files.iter().zip(&contents) {
            assert_eq!(content.len(), bytes.len() as u64);
            let packed = matches!(content, Content::Packed { .. });
            assert_eq!(
                packed,
                bytes.len() >= 4096,
                "packed exactly the large files"
            );
            let mut buf = Vec::new();
            spool.read_into(*content, &mut buf).unwrap();
            assert!(buf == *bytes, "read_into gives the raw bytes");
            let mut head = Vec::new();
            spool
                .reader(*content)
                .take(20)
                .read_to_end(&mut head)
                .unwrap();
            assert_eq!(head, bytes[..20]);
        }
        // Stored compressed: the compressible file takes less room than its bytes.
        let raw_total: usize = files.iter().map(Vec::len).sum();
        assert!(spool.len() < raw_total as u64);
    }
}

#[test]
fn a_packed_file_cannot_be_read_before_the_spool_settles() {
    let scratch = scratch_dir();
    let mut spool = Spool::packing_in(
        scratch.path(),
        packing(Compression::Zstd { level: 3 }, 4096),
    )
    .unwrap();
    // More blocks than the pool holds in flight, so some are surely still pending or just
    // written: either way reading must not return a shorter file.
    let bytes = vec![5u8; 4096 * 64 + 1];
    let content = spool.append(&mut &bytes[..]).unwrap();
    let mut buf = Vec::new();
    match spool.read_into(content, &mut buf) {
        Ok(()) => panic!("read a packed file with blocks still in flight"),
        Err(e) => assert!(e.to_string().contains("settled"), "{e}"),
    }
    spool.settle().unwrap();
    spool.read_into(content, &mut buf).unwrap();
    assert!(buf == bytes);
}

/// Bytes a SIF puts before its squashfs, not a multiple of anything.
const PREFIX: &[u8] = b"the SIF header and metadata objects come first";

/// A rich tree plus large files streamed in the way layers stream them, each followed at once
/// by small files: those land in the spool between the large file's blocks still compressing,
/// so a packed file's blocks are not all consecutive in the spool file.
fn streamed_tree(spool: &mut Spool, block_size: usize) -> Tree {
    let mut tree = rich_tree(spool, block_size);
    let dir = tree.add_inode(Kind::Dir(Default::default()), Meta::new(0o755, 0, 0, 0));
    tree.link(ROOT, b"streamed".to_vec(), dir);
    for i in 0..4u64 {
        let large = match i % 2 {
            0 => pattern_bytes(40 * block_size + 5 * i as usize, i),
            _ => random_bytes(20 * block_size + 3),
        };
        let small = pattern_bytes(100 + i as usize, 100 + i);
        for (name, bytes) in [("large", large), ("small", small)] {
            let content = spool.append(&mut &bytes[..]).unwrap();
            let id = tree.add_inode(Kind::File(content), Meta::new(0o644, 0, 0, 0));
            tree.link(dir, format!("{name}-{i}").into_bytes(), id);
        }
    }
    spool.settle().unwrap();
    tree
}

#[test]
fn packed_blocks_copied_in_the_kernel_give_the_image_written_through_memory() {
    let scratch = scratch_dir();
    for compression in COMPRESSIONS {
        for block_size in [4096u32, 128 << 10] {
            let mut spool =
                Spool::packing_in(scratch.path(), packing(compression, block_size)).unwrap();
            let tree = streamed_tree(&mut spool, block_size as usize);
            let expected = image(&tree, &spool, compression, block_size);

            // Into a file at an offset, as inside a SIF: file ranges, then bytes after them.
            let path = scratch.path().join("image.sif");
            let mut file = read_write_file(&path);
            file.write_all(PREFIX).unwrap();
            let opts = options(compression, block_size);
            let size = write_squashfs_to_file(&tree, &spool, &mut file, &opts).unwrap();
            drop(file);
            let written = fs::read(&path).unwrap();
            assert_eq!(size, expected.len() as u64);
            assert_eq!(
                &written[..PREFIX.len()],
                PREFIX,
                "the bytes before are kept"
            );
            assert!(
                written[PREFIX.len()..] == expected[..],
                "{compression:?} in {block_size}-byte blocks: the file's image differs"
            );
        }
    }
}

#[test]
fn an_image_written_into_a_file_reads_back_as_the_tree() {
    let scratch = scratch_dir();
    let block_size = 128 << 10;
    let compression = Compression::Zstd { level: 3 };
    let mut spool = Spool::packing_in(scratch.path(), packing(compression, block_size)).unwrap();
    let tree = streamed_tree(&mut spool, block_size as usize);
    let path = scratch.path().join("image.sqfs");
    let mut file = File::create(&path).unwrap();
    write_squashfs_to_file(&tree, &spool, &mut file, &options(compression, block_size)).unwrap();
    drop(file);
    let extracted = scratch.path().join("extracted");
    extract(&path, &extracted);
    let mut got = manifest_of_dir(&extracted);
    let mut want = manifest_of_tree(&tree, &spool);
    // unsquashfs does not create sockets.
    want.retain(|_, e| e.kind != "socket");
    got.retain(|_, e| e.kind != "socket");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, entry) in &want {
        assert_eq!(&got[path], entry, "{path}");
    }
}
