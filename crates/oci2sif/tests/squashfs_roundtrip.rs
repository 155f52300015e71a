//! Round trips through real squashfs readers: squashfs-tools (`unsquashfs -lln`, `-s`, `-d`),
//! squashfs-tools-ng (`sqfsdiff`) and, when the test runs as root, the Linux kernel itself.

mod squashfs_support;

use std::path::Path;
use std::process::Command;

use oci2sif::squashfs::{Compression, SquashfsOptions};
use oci2sif::tree::Spool;
use squashfs_support::*;

fn options(compression: Compression, block_size: u32) -> SquashfsOptions {
    SquashfsOptions {
        compression,
        block_size,
        threads: 2,
        mkfs_time: 1_700_000_000,
    }
}

fn round_trip(compression: Compression, block_size: u32, compressor_name: &str) {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = rich_tree(&mut spool, block_size as usize);
    let expected = manifest_of_tree(&tree, &spool);
    let image = scratch.path().join("image.sqfs");
    let size = write_image(&tree, &spool, &image, &options(compression, block_size));
    assert_eq!(size % 4096, 0, "image is padded to 4 KiB");

    let report = superblock_report(&image);
    assert!(
        report.contains(&format!("Compression {compressor_name}\n")),
        "{report}"
    );
    assert!(
        report.contains(&format!("Block size {block_size}\n")),
        "{report}"
    );
    assert!(
        report.contains(&format!("Number of inodes {}\n", count_inodes(&expected))),
        "{report}"
    );

    check_listing(&image, &expected);

    let extracted = scratch.path().join("extracted");
    extract(&image, &extracted);
    let mut got = manifest_of_dir(&extracted);
    // unsquashfs does not create sockets; the listing and the kernel mount check them.
    let mut want = expected.clone();
    want.retain(|_, e| e.kind != "socket");
    got.retain(|_, e| e.kind != "socket");
    assert_manifests_equal(&got, &want);

    assert_same_as_mksquashfs(&image, &extracted, scratch.path());
}

/// Distinct inodes: hardlinked names count once.
fn count_inodes(manifest: &Manifest) -> usize {
    manifest
        .iter()
        .filter(|(path, e)| {
            e.first_link
                .as_deref()
                .is_none_or(|first| first == path.as_str())
        })
        .count()
}

fn check_listing(image: &Path, expected: &Manifest) {
    let listing = unsquashfs_listing(image);
    assert_eq!(
        listing.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "paths listed by unsquashfs -lln"
    );
    for (path, want) in expected {
        let got = &listing[path];
        assert_eq!(got.mode, mode_string(want), "mode of {path:?}");
        assert_eq!(
            got.owner,
            format!("{}/{}", want.uid, want.gid),
            "owner of {path:?}"
        );
        match (want.kind, want.device) {
            // unsquashfs -lln prints only the old 8-bit major/minor split; check small ones.
            (_, Some((major, minor))) if minor < 256 => {
                assert_eq!(got.size, format!("{major},{minor}"), "device of {path:?}")
            }
            ("file" | "symlink", _) => {
                assert_eq!(got.size, want.size.to_string(), "size of {path:?}")
            }
            _ => {}
        }
        let target = want
            .target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned());
        assert_eq!(got.symlink_target, target, "symlink target of {path:?}");
    }
}

fn assert_manifests_equal(got: &Manifest, want: &Manifest) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "paths"
    );
    for (path, want_entry) in want {
        assert_eq!(&got[path], want_entry, "entry {path:?}");
    }
}

#[test]
fn gzip_round_trip_keeps_every_node_kind() {
    round_trip(Compression::Gzip { level: 9 }, 131_072, "gzip");
}

#[test]
fn zstd_round_trip_keeps_every_node_kind() {
    round_trip(Compression::Zstd { level: 3 }, 65_536, "zstd");
}

#[test]
fn non_default_levels_are_recorded_in_compressor_options() {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = rich_tree(&mut spool, 4096);
    for (compression, line) in [
        (Compression::Gzip { level: 1 }, "compression-level 1\n"),
        (Compression::Zstd { level: 19 }, "compression-level 19\n"),
    ] {
        let image = scratch.path().join("image.sqfs");
        write_image(&tree, &spool, &image, &options(compression, 4096));
        let report = superblock_report(&image);
        assert!(report.contains(line), "{report}");
        let extracted = scratch.path().join("x");
        extract(&image, &extracted);
        std::fs::remove_dir_all(&extracted).unwrap();
    }
}

#[test]
fn duplicate_contents_are_stored_once() {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let opts = options(Compression::Zstd { level: 3 }, 131_072);
    let image = scratch.path().join("image.sqfs");
    let mut sizes = Vec::new();
    for copies in [1, 3] {
        let mut tree = oci2sif::tree::Tree::new();
        for copy in 0..copies {
            // Same seed, same bytes: 40 blocks that do not compress to nothing.
            let content = pattern_content(&mut spool, 40 * 131_072 + 999, 7);
            let id = tree.add_inode(
                oci2sif::tree::Kind::File(content),
                oci2sif::tree::Meta::new(0o644, 0, 0, 0),
            );
            tree.link(oci2sif::tree::ROOT, format!("copy-{copy}").into_bytes(), id);
        }
        sizes.push(write_image(&tree, &spool, &image, &opts));
        let extracted = scratch.path().join(format!("x{copies}"));
        extract(&image, &extracted);
        assert_eq!(manifest_of_dir(&extracted).len(), copies + 1);
    }
    assert_eq!(
        sizes[0], sizes[1],
        "two more copies add only inodes, within the 4 KiB padding"
    );
    assert!(superblock_report(&image).contains("Duplicates are removed"));
}

/// Two 16-byte messages with the same CRC-32 (a birthday search: about 8 pairs are expected
/// among 2^18 messages).
fn crc32_collision() -> (Vec<u8>, Vec<u8>) {
    let message = |i: u64| {
        let mut bytes = i.to_le_bytes().to_vec();
        bytes.extend_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        bytes
    };
    let mut seen = std::collections::HashMap::new();
    for i in 0..1u64 << 18 {
        let mut crc = flate2::Crc::new();
        crc.update(&message(i));
        if let Some(j) = seen.insert(crc.sum(), i) {
            return (message(j), message(i));
        }
    }
    panic!("no CRC-32 collision among 2^18 messages");
}

#[test]
fn small_files_of_one_size_and_crc_are_told_apart_by_their_bytes() {
    // Small files are matched by size and CRC-32 first: a match must still be the same bytes.
    let (a, b) = crc32_collision();
    assert_ne!(a, b);
    round_trip_files(&[("a", &a), ("b", &b), ("b-copy", &b), ("a-copy", &a)]);
}

#[test]
fn many_small_files_made_to_share_a_crc_are_all_stored_exactly() {
    // Blocks from a colliding pair make 2^k distinct files of one length and one CRC-32: what a
    // hostile layer would use to make duplicate detection quadratic. Each stays itself, and
    // copies of the first and the last are stored right too.
    let (a, b) = crc32_collision();
    let files: Vec<Vec<u8>> = (0..32u32)
        .map(|bits| {
            (0..5)
                .flat_map(|i| {
                    if bits >> i & 1 == 1 {
                        b.clone()
                    } else {
                        a.clone()
                    }
                })
                .collect()
        })
        .collect();
    let crc = |bytes: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(bytes);
        crc.sum()
    };
    assert!(files.iter().all(|f| crc(f) == crc(&files[0])));
    let mut named: Vec<(String, &[u8])> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("f{i:02}"), f.as_slice()))
        .collect();
    named.push(("f00-copy".into(), &files[0]));
    named.push(("f31-copy".into(), &files[31]));
    let named: Vec<(&str, &[u8])> = named.iter().map(|(n, f)| (n.as_str(), *f)).collect();
    round_trip_files(&named);
}

/// Writes `files` (name, bytes) into the root of an image and checks that unsquashfs gives
/// each back exactly.
fn round_trip_files(files: &[(&str, &[u8])]) {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let mut tree = oci2sif::tree::Tree::new();
    for (name, bytes) in files {
        let content = spool.append_bytes(bytes).unwrap();
        let id = tree.add_inode(
            oci2sif::tree::Kind::File(content),
            oci2sif::tree::Meta::new(0o644, 0, 0, 0),
        );
        tree.link(oci2sif::tree::ROOT, name.as_bytes().to_vec(), id);
    }
    let image = scratch.path().join("image.sqfs");
    write_image(
        &tree,
        &spool,
        &image,
        &options(Compression::Gzip { level: 9 }, 4096),
    );
    let extracted = scratch.path().join("extracted");
    extract(&image, &extracted);
    for (name, bytes) in files {
        assert_eq!(
            &std::fs::read(extracted.join(name)).unwrap(),
            bytes,
            "{name}"
        );
    }
}

/// The kernel is the reader that matters at run time. Loop mounts need root (and a loop
/// device), which CI and the developer machines have; elsewhere the test says why it skipped.
#[test]
fn kernel_mounts_the_image_and_sees_the_same_tree() {
    let scratch = scratch_dir();
    let mut spool = Spool::new_in(scratch.path()).unwrap();
    let tree = rich_tree(&mut spool, 131_072);
    let expected = manifest_of_tree(&tree, &spool);
    for compression in [
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
    ] {
        let image = scratch.path().join("image.sqfs");
        write_image(&tree, &spool, &image, &options(compression, 131_072));
        let mountpoint = scratch.path().join("mnt");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&image)
            .arg(&mountpoint)
            .output()
            .unwrap();
        if !mounted.status.success() {
            eprintln!(
                "SKIPPED kernel mount check: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return;
        }
        let mount = Unmount(&mountpoint);
        let got = manifest_of_dir(&mountpoint);
        drop(mount);
        assert_manifests_equal(&got, &expected);
    }
}

/// Unmounts when dropped, so a failed check does not leave the image mounted.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}
