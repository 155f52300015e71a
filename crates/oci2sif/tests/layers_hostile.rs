//! Hostile layers, one test per attack. Each asserts that the layer either fails or keeps the
//! entry inside the tree, and that nothing on the host changed: the host paths the attack names
//! (absolute, and relative to the test's working directory), a sandbox directory with a
//! sentinel, and the work directory holding the spool.

mod layers_support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use layers_support::{
    apply, apply_readers, assert_nlink_consistent, assert_work_dir_empty, HostWatch, LayerTar, Node,
};
use oci2sif::layers::{decompress, LayerError};
use oci2sif::tree::Kind;

/// Applies `layers`, checks the host is untouched and returns the outcome.
fn apply_watched(
    watch: &HostWatch,
    layers: &[Vec<u8>],
) -> Result<layers_support::Applied, LayerError> {
    let result = apply(layers);
    if let Ok(applied) = &result {
        assert_work_dir_empty(applied.work.path());
        assert_nlink_consistent(&applied.tree);
    }
    watch.assert_unchanged();
    result
}

/// A name pointing from the test's working directory into the sandbox, the way a naive
/// extractor run in the work area would be tricked into writing there.
fn into_sandbox(watch: &HostWatch, rest: &str) -> String {
    let cwd = std::env::current_dir().unwrap();
    let depth = cwd.components().count();
    format!(
        "{}{}/{rest}",
        "../".repeat(depth),
        watch.sandbox.path().display()
    )
}

#[test]
fn absolute_paths_stay_inside_the_tree() {
    let watch = HostWatch::new(&["/etc/oci2sif-abs", "/oci2sif-abs-root", "/tmp/oci2sif-abs"]);
    let sentinel = format!("{}/sentinel", watch.sandbox.path().display());
    let mut l = LayerTar::new();
    l.file("/etc/oci2sif-abs", 0o644, b"abs")
        .file("/oci2sif-abs-root", 0o644, b"root")
        .file("//tmp///oci2sif-abs", 0o644, b"tmp")
        .file(&sentinel, 0o644, b"overwritten?");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.content("etc/oci2sif-abs"), b"abs");
    assert_eq!(t.content("oci2sif-abs-root"), b"root");
    assert_eq!(t.content("tmp/oci2sif-abs"), b"tmp");
    assert_eq!(t.content(sentinel.trim_start_matches('/')), b"overwritten?");
}

#[test]
fn dotdot_escapes_are_clamped_at_the_root() {
    let watch = HostWatch::new(&[
        "../../etc/oci2sif-x",
        "../etc/oci2sif-x",
        "/etc/oci2sif-x",
        "/etc/oci2sif-y",
    ]);
    let escape = into_sandbox(&watch, "sentinel");
    let mut l = LayerTar::new();
    l.file("../../etc/oci2sif-x", 0o644, b"x")
        .file("a/../../../../../../etc/oci2sif-y", 0o644, b"y")
        .file(&escape, 0o644, b"escaped?")
        .dir("../../../..", 0o700);
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.content("etc/oci2sif-x"), b"x");
    assert_eq!(t.content("etc/oci2sif-y"), b"y");
    let inside = format!("{}/sentinel", watch.sandbox.path().display());
    assert_eq!(t.content(inside.trim_start_matches('/')), b"escaped?");
    assert_eq!(t.tree.inode(oci2sif::tree::ROOT).meta.mode, 0o700);
}

#[test]
fn pax_and_long_name_escapes_are_clamped_too() {
    let watch = HostWatch::new(&["/etc/oci2sif-pax", "/etc/oci2sif-long"]);
    let long = format!("{}etc/oci2sif-long", "../".repeat(60));
    let mut l = LayerTar::new();
    l.pax(&[("path", b"/../../../etc/oci2sif-pax")])
        .file("innocent", 0o644, b"pax")
        .file(&long, 0o644, b"long");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.content("etc/oci2sif-pax"), b"pax");
    assert_eq!(t.content("etc/oci2sif-long"), b"long");
}

#[test]
fn symlink_to_absolute_host_dir_then_write_through_stays_inside() {
    let watch = HostWatch::new(&["/etc/passwd", "/etc/shadow", "/etc/oci2sif-through"]);
    let mut l = LayerTar::new();
    l.symlink("a", "/etc")
        .file("a/passwd", 0o644, b"pwned::0:0::/:/bin/sh\n")
        .file("a/oci2sif-through", 0o644, b"t")
        .symlink("sandbox", watch.sandbox.path().to_str().unwrap())
        .file("sandbox/sentinel", 0o644, b"overwritten?");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.content("etc/passwd"), b"pwned::0:0::/:/bin/sh\n");
    assert!(matches!(t.kind("a"), Kind::Symlink(target) if target == b"/etc"));
    let inside = format!("{}/sentinel", watch.sandbox.path().display());
    assert_eq!(t.content(inside.trim_start_matches('/')), b"overwritten?");
}

#[test]
fn symlink_climbing_out_then_write_through_stays_inside() {
    let watch = HostWatch::new(&["../../../x", "/x", "../x", "/oci2sif-up"]);
    let mut l = LayerTar::new();
    l.symlink("a", "../../..")
        .file("a/x", 0o644, b"x")
        .dir("deep/er", 0o755)
        .symlink("deep/er/up", "../../../../../../..")
        .file("deep/er/up/oci2sif-up", 0o644, b"up");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.content("x"), b"x");
    assert_eq!(t.content("oci2sif-up"), b"up");
}

#[test]
fn symlink_written_in_a_later_layer_is_still_resolved_inside() {
    let watch = HostWatch::new(&["/etc/oci2sif-later"]);
    let mut lower = LayerTar::new();
    lower.dir("etc", 0o755).symlink("etc/link", "/etc");
    let mut upper = LayerTar::new();
    upper.file("etc/link/link/link/oci2sif-later", 0o644, b"l");
    let t = apply_watched(&watch, &[lower.bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.content("etc/oci2sif-later"), b"l");
}

#[test]
fn symlink_loops_fail_without_spinning() {
    let watch = HostWatch::new(&["/etc/oci2sif-loop"]);
    let mut l = LayerTar::new();
    l.symlink("a", "b/c/d")
        .symlink("b", "a/../a")
        .file("a/oci2sif-loop", 0o644, b"x");
    let err = apply_watched(&watch, &[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::SymlinkLoop { .. }), "{err}");
}

#[test]
fn hardlink_to_host_file_by_relative_escape_is_refused() {
    let watch = HostWatch::new(&["/etc/passwd", "../../etc/passwd"]);
    let mut l = LayerTar::new();
    l.hardlink("stolen", "../../etc/passwd");
    let err = apply_watched(&watch, &[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HardlinkTargetMissing { .. }),
        "{err}"
    );
}

#[test]
fn hardlink_to_host_file_by_absolute_path_is_refused() {
    let watch = HostWatch::new(&["/etc/shadow"]);
    let mut l = LayerTar::new();
    l.hardlink("stolen", "/etc/shadow");
    let err = apply_watched(&watch, &[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HardlinkTargetMissing { .. }),
        "{err}"
    );
}

#[test]
fn hardlink_escape_resolves_to_the_tree_copy_only() {
    let watch = HostWatch::new(&["/etc/shadow", "/etc/passwd"]);
    let mut l = LayerTar::new();
    l.file("etc/shadow", 0o600, b"image shadow")
        .hardlink("via-dotdot", "../../../../etc/shadow")
        .symlink("s", "/etc")
        .hardlink("via-symlink", "s/shadow");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    assert_eq!(t.inode("via-dotdot"), t.inode("etc/shadow"));
    assert_eq!(t.inode("via-symlink"), t.inode("etc/shadow"));
    assert_eq!(t.content("via-dotdot"), b"image shadow");
}

#[test]
fn hardlink_through_symlink_pointing_outside_is_refused() {
    let watch = HostWatch::new(&["/etc/shadow"]);
    let sandbox = watch.sandbox.path().to_str().unwrap().to_owned();
    let mut l = LayerTar::new();
    l.symlink("out", &sandbox).hardlink("h", "out/sentinel");
    let err = apply_watched(&watch, &[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HardlinkTargetMissing { .. }),
        "{err}"
    );
}

#[test]
fn special_files_become_tree_nodes_only() {
    let watch = HostWatch::new(&["/dev/oci2sif-mem", "/dev/oci2sif-sda", "/tmp/oci2sif-fifo"]);
    let mut l = LayerTar::new();
    l.char_device("/dev/oci2sif-mem", 0o666, 1, 1)
        .block_device("../../dev/oci2sif-sda", 0o666, 8, 0)
        .fifo("/tmp/oci2sif-fifo", 0o666)
        .owner(0, 0)
        .file("usr/bin/rootshell", 0o4777, b"#!/bin/sh\n");
    let t = apply_watched(&watch, &[l.bytes()]).unwrap();
    let snap = t.snapshot();
    assert_eq!(
        snap["dev/oci2sif-mem"],
        Node::CharDevice {
            mode: 0o666,
            major: 1,
            minor: 1
        }
    );
    assert_eq!(
        snap["dev/oci2sif-sda"],
        Node::BlockDevice {
            mode: 0o666,
            major: 8,
            minor: 0
        }
    );
    assert_eq!(snap["tmp/oci2sif-fifo"], Node::Fifo { mode: 0o666 });
    assert_eq!(t.tree.inode(t.inode("usr/bin/rootshell")).meta.mode, 0o4777);
}

#[test]
fn unknown_entry_types_are_refused() {
    let watch = HostWatch::new(&["/etc/oci2sif-contig"]);
    let mut l = LayerTar::new();
    l.raw(b"etc/oci2sif-volume", b'V', 0o644, b"", b"");
    let err = apply_watched(&watch, &[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::UnsupportedEntryType { .. }),
        "{err}"
    );
}

#[test]
fn whiteouts_cannot_remove_outside_or_above_the_root() {
    let watch = HostWatch::new(&["/etc/passwd"]);
    let mut lower = LayerTar::new();
    lower
        .file("etc/passwd", 0o644, b"p")
        .file("keep", 0o644, b"k");
    let mut upper = LayerTar::new();
    upper
        .whiteout("../../../.wh.etc")
        .whiteout(".wh..")
        .whiteout(".wh...")
        .whiteout("../.wh..wh..opq");
    let t = apply_watched(&watch, &[lower.bytes(), upper.bytes()]).unwrap();
    // `../../../.wh.etc` is `.wh.etc` at the root: the tree's etc goes, the host's stays.
    assert!(!t.exists("etc"));
    // The opaque whiteout at the (clamped) root empties the root, and only the root.
    assert!(t.ls("").is_empty());
}

#[test]
fn decompression_bomb_hits_the_cap_early() {
    // 256 MiB of zeros compresses to about 256 KiB; the cap is 16 MiB.
    const FILE: u64 = 256 << 20;
    let mut header = tar::Header::new_gnu();
    header.set_path("bomb").unwrap();
    header.set_size(FILE);
    header.set_mode(0o644);
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(FILE >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    let blob = gz.finish().unwrap();

    let watch = HostWatch::new(&[]);
    let consumed = Arc::new(AtomicU64::new(0));
    let source = CountingReader(std::io::Cursor::new(blob.clone()), consumed.clone());
    let layer = decompress(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Box::new(source),
    )
    .unwrap();
    let err = apply_readers(vec![layer], 16 << 20).err().unwrap();
    assert!(matches!(err, LayerError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("16.0 MiB"), "{err}");
    // The size check fires on the header: only the first compressed block(s) were read.
    assert!(
        consumed.load(Ordering::SeqCst) < blob.len() as u64 / 4,
        "read {} of {} compressed bytes",
        consumed.load(Ordering::SeqCst),
        blob.len()
    );
    watch.assert_unchanged();
}

#[test]
fn many_small_files_bomb_hits_the_cumulative_cap() {
    let mut l = LayerTar::new();
    let chunk = vec![0u8; 64 << 10];
    for i in 0..64 {
        l.file(&format!("f{i}"), 0o644, &chunk);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l.bytes()).unwrap();
    let blob = gz.finish().unwrap();
    let layer = decompress(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Box::new(std::io::Cursor::new(blob)),
    )
    .unwrap();
    let err = apply_readers(vec![layer], 1 << 20).err().unwrap();
    assert!(
        matches!(err, LayerError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
}

struct CountingReader<R>(R, Arc<AtomicU64>);

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}
