//! Compressing large files while the layers are applied (`BuildOptions::precompress`) changes
//! no byte of the SIF or of the enroot image: a reproducible build of layers holding every
//! size class around the block size, holes, incompressible data, duplicates, a hardlink, an
//! overwritten and a whited-out file, and a packed `/bin/sh` whose ELF header names the
//! architecture, gives the same files either way.

mod layers_support;
mod squashfs_support;

use std::fs;
use std::io::{Cursor, Read};

use layers_support::LayerTar;
use oci2sif::{
    build_sif, build_sif_and_enroot, build_sif_into, BuildInput, BuildOptions, BuildReport,
    Compression,
};
use squashfs_support::{pattern_bytes as pattern, random_bytes as random, read_write_file};

/// The squashfs block size the builder uses.
const BS: usize = 128 << 10;

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","created":"2024-05-01T12:00:00Z",
"config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["/bin/sh"]}}"#;

/// An arm64 ELF header followed by enough code-like bytes to make the file span blocks.
fn elf_arm64(len: usize) -> Vec<u8> {
    let mut bytes = pattern(len, 99);
    bytes[..20].fill(0);
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2; // 64-bit
    bytes[5] = 1; // little-endian
    bytes[6] = 1;
    bytes[16] = 2; // ET_EXEC
    bytes[18] = 183; // EM_AARCH64
    bytes
}

fn layers() -> Vec<Vec<u8>> {
    let mut sparse = pattern(3 * BS + 11, 7);
    sparse[BS..2 * BS].fill(0);
    let sizes = [
        ("almost-a-block", BS - 1),
        ("one-block", BS),
        ("block-and-a-byte", BS + 1),
        ("three-blocks", 3 * BS),
        ("big", 5 * BS + 12345),
    ];

    let mut first = LayerTar::new();
    first
        .dir("bin", 0o755)
        .dir("usr", 0o755)
        .dir("usr/copies", 0o755);
    first.file("bin/sh", 0o755, &elf_arm64(2 * BS + 3));
    for (i, (name, len)) in sizes.iter().enumerate() {
        let bytes = pattern(*len, i as u64);
        first.file(&format!("usr/{name}"), 0o644, &bytes);
        first.file(&format!("usr/copies/{name}"), 0o600, &bytes);
    }
    // Same sizes, other bytes: hashed, and not taken for duplicates.
    first.file(
        "usr/copies/three-blocks-other",
        0o644,
        &pattern(3 * BS, 1000),
    );
    first.file("usr/sparse", 0o644, &sparse);
    first.file("usr/copies/sparse", 0o644, &sparse);
    first.file("usr/zeros", 0o644, &vec![0; 2 * BS]);
    first.file("usr/copies/zeros", 0o644, &vec![0; 2 * BS]);
    first.file("usr/random", 0o644, &random(2 * BS + 100));
    first.file("usr/copies/random", 0o644, &random(2 * BS + 100));
    first.file("usr/small", 0o644, b"a fragment's worth\n");
    first.hardlink("usr/three-blocks-link", "usr/three-blocks");
    first.file("usr/replaced", 0o644, &pattern(3 * BS, 50));
    first.file("usr/gone", 0o644, &pattern(2 * BS, 51));

    let mut second = LayerTar::new();
    second.dir("usr", 0o755);
    second.whiteout("usr/.wh.gone");
    second.file("usr/replaced", 0o644, &pattern(2 * BS + 5, 52));
    // A later layer's copy of an earlier layer's file.
    second.file("usr/again", 0o644, &pattern(BS + 1, 2));
    vec![first.bytes(), second.bytes()]
}

fn input(layers: &[Vec<u8>]) -> BuildInput<'_> {
    BuildInput {
        config_json: CONFIG.to_vec(),
        layers: layers
            .iter()
            .map(|bytes| oci2sif::LayerInput {
                media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
                reader: Box::new(&bytes[..]) as Box<dyn Read + Send>,
            })
            .collect(),
        source_ref: "127.0.0.1:5000/alice/precompress:1".to_string(),
    }
}

fn options(work: &std::path::Path, compression: Compression, precompress: bool) -> BuildOptions {
    BuildOptions {
        compression,
        threads: 2,
        reproducible: true,
        work_dir: work.to_path_buf(),
        precompress,
        ..BuildOptions::default()
    }
}

fn build(
    layers: &[Vec<u8>],
    compression: Compression,
    precompress: bool,
) -> (BuildReport, Vec<u8>, Vec<u8>) {
    let work = tempfile::tempdir().unwrap();
    let opts = options(work.path(), compression, precompress);
    let (mut sif, mut enroot) = (Cursor::new(Vec::new()), Cursor::new(Vec::new()));
    let (report, _) = build_sif_and_enroot(input(layers), &opts, &mut sif, &mut enroot).unwrap();
    (report, sif.into_inner(), enroot.into_inner())
}

#[test]
fn a_sif_built_into_a_file_is_the_one_built_through_memory() {
    // Into a file the packed blocks are copied in the kernel; the bytes must not change.
    let layers = layers();
    let work = tempfile::tempdir().unwrap();
    for compression in [
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 9 },
    ] {
        let opts = options(work.path(), compression, true);
        let mut memory = Cursor::new(Vec::new());
        let expected = build_sif(input(&layers), &opts, &mut memory).unwrap();
        let path = work.path().join("image.sif");
        let mut file = read_write_file(&path);
        let report = build_sif_into(input(&layers), &opts, &mut file).unwrap();
        drop(file);
        assert_eq!(report.sif_sha256, expected.sif_sha256, "{compression:?}");
        assert!(
            fs::read(&path).unwrap() == memory.into_inner(),
            "{compression:?}: the SIFs differ"
        );
    }
}

#[test]
fn precompressed_and_raw_builds_write_the_same_bytes() {
    let layers = layers();
    for compression in [
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 9 },
    ] {
        let (raw_report, raw_sif, raw_enroot) = build(&layers, compression, false);
        let (report, sif, enroot) = build(&layers, compression, true);
        assert_eq!(
            report.arch, "arm64",
            "the packed /bin/sh's ELF header was read"
        );
        assert_eq!(report.sif_sha256, raw_report.sif_sha256, "{compression:?}");
        assert!(sif == raw_sif, "{compression:?}: the SIFs differ");
        assert!(
            enroot == raw_enroot,
            "{compression:?}: the enroot images differ"
        );
        assert_eq!(report.unpacked_bytes, raw_report.unpacked_bytes);
        assert_eq!(report.squashfs_size, raw_report.squashfs_size);
    }
}

#[test]
fn the_precompressed_enroot_image_unpacks_to_the_layers_files() {
    // The enroot image is a plain squashfs: squashfs-tools reads it back.
    let layers = layers();
    let (_, _, enroot) = build(&layers, Compression::Zstd { level: 3 }, true);
    let dir = squashfs_support::scratch_dir();
    let image = dir.path().join("enroot.sqfs");
    fs::write(&image, enroot).unwrap();
    let root = dir.path().join("root");
    squashfs_support::extract(&image, &root);
    let read = |path: &str| fs::read(root.join(path)).unwrap();
    assert!(
        read("usr/replaced") == pattern(2 * BS + 5, 52),
        "the later layer's file"
    );
    assert!(!root.join("usr/gone").exists(), "whited out");
    assert!(read("usr/big") == pattern(5 * BS + 12345, 4));
    assert!(read("usr/copies/block-and-a-byte") == pattern(BS + 1, 2));
    assert!(read("usr/again") == pattern(BS + 1, 2));
    assert!(read("usr/three-blocks-link") == pattern(3 * BS, 3));
    assert!(read("usr/copies/three-blocks-other") == pattern(3 * BS, 1000));
    assert!(read("usr/random") == random(2 * BS + 100));
    assert!(read("usr/zeros") == vec![0; 2 * BS]);
    let mut sparse = pattern(3 * BS + 11, 7);
    sparse[BS..2 * BS].fill(0);
    assert!(read("usr/copies/sparse") == sparse);
    assert_eq!(read("bin/sh")[..4], *b"\x7fELF");
}
