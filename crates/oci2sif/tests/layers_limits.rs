//! Hostile layers that try to exhaust the builder rather than escape it: millions of entries,
//! huge PAX xattrs, long names and symlink targets, deep paths, repeated and nested opaque
//! whiteouts, one name replaced over and over. Each must fail with an error naming the limit
//! (after reading no more of the stream than the limit allows), or finish with bounded work and
//! memory. The big streams are generated entry by entry while the applier reads them, never held
//! whole, so the tests stay fast and small.

mod layers_support;

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use layers_support::{apply, assert_nlink_consistent, LayerTar};
use oci2sif::layers::{apply_layer, LayerError, LimitSettings, Limits};
use oci2sif::tree::{Spool, Tree};

/// Appends one ustar entry (GNU long-name/long-link records first when needed) to `out`.
fn entry(out: &mut Vec<u8>, name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) {
    for (flag, value) in [(b'L', name), (b'K', link)] {
        if value.len() > 100 {
            let mut record = value.to_vec();
            record.push(0);
            header(out, b"././@LongLink", flag, b"", record.len() as u64);
            padded(out, &record);
        }
    }
    header(
        out,
        &name[..name.len().min(100)],
        typeflag,
        &link[..link.len().min(100)],
        data.len() as u64,
    );
    padded(out, data);
}

fn header(out: &mut Vec<u8>, name: &[u8], typeflag: u8, link: &[u8], size: u64) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    h.as_old_mut().linkflag = [typeflag];
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

fn padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
}

/// A PAX extended header carrying `records` for the entry that follows.
fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts itself.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    header(out, b"PaxHeaders/x", b'x', b"", data.len() as u64);
    padded(out, &data);
}

/// A layer tar of `count` entries, each written by `make(i, buf)` when the reader gets there.
/// `consumed` counts the bytes handed out, to show where the applier stopped.
struct Generated<F> {
    count: u64,
    next: u64,
    make: F,
    buf: Vec<u8>,
    pos: usize,
    finished: bool,
    consumed: Rc<Cell<u64>>,
}

fn generated<F: FnMut(u64, &mut Vec<u8>)>(count: u64, make: F) -> (Generated<F>, Rc<Cell<u64>>) {
    let consumed = Rc::new(Cell::new(0));
    let stream = Generated {
        count,
        next: 0,
        make,
        buf: Vec::new(),
        pos: 0,
        finished: false,
        consumed: consumed.clone(),
    };
    (stream, consumed)
}

impl<F: FnMut(u64, &mut Vec<u8>)> Read for Generated<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.next < self.count {
                (self.make)(self.next, &mut self.buf);
                self.next += 1;
            } else if !self.finished {
                self.buf.resize(1024, 0);
                self.finished = true;
            } else {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.consumed.set(self.consumed.get() + n as u64);
        Ok(n)
    }
}

/// Applies one layer stream with `settings`; the tree and the outcome.
fn apply_with(
    settings: LimitSettings,
    layer: impl Read,
) -> (Tree, Result<oci2sif::layers::LayerStats, LayerError>) {
    let work = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    let mut spool = Spool::new_in(work.path()).unwrap();
    let result = apply_layer(&mut tree, &mut spool, layer, &mut Limits::with(settings));
    (tree, result)
}

#[test]
fn millions_of_empty_entries_stop_at_the_entry_limit() {
    let limit = 1_000_000;
    let settings = LimitSettings {
        max_entries: limit,
        ..LimitSettings::DEFAULT
    };
    // Three million empty files (a thousand names in eight directories, replaced over and
    // over, so that the test's own memory stays small).
    let (stream, consumed) = generated(3_000_000, |i, buf| {
        entry(
            buf,
            format!("d{}/{}", i % 8, i % 1000).as_bytes(),
            b'0',
            b"",
            b"",
        )
    });
    let (_, result) = apply_with(settings, stream);
    let err = result.unwrap_err();
    assert!(
        matches!(err, LayerError::TooManyEntries { limit: l } if l == limit),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the image has more than 1000000 entries (limit set by farm.max_entries)"
    );
    // It stopped at the limit: one header block per entry, a few blocks of read-ahead at most.
    assert!(
        consumed.get() <= (limit + 16) * 512,
        "read {} bytes for a limit of {limit} entries",
        consumed.get()
    );
}

#[test]
fn skipped_headers_count_as_entries_too() {
    // PAX global headers materialise nothing, but each costs a parse.
    let (stream, _) = generated(10_000, |_, buf| header(buf, b"g", b'g', b"", 0));
    let settings = LimitSettings {
        max_entries: 1000,
        ..LimitSettings::DEFAULT
    };
    let (_, result) = apply_with(settings, stream);
    let err = result.unwrap_err();
    assert!(
        matches!(err, LayerError::TooManyEntries { limit: 1000 }),
        "{err}"
    );
}

#[test]
fn replacing_one_name_over_and_over_keeps_one_inode() {
    // A file, a directory and a symlink take turns at the same name: every entry unlinks the
    // previous inode (and its subtree). Replaced inodes are reused, not accumulated.
    let (stream, _) = generated(300_000, |i, buf| match i % 3 {
        0 => entry(buf, b"x", b'0', b"", b""),
        1 => {
            entry(buf, b"x/", b'5', b"", b"");
        }
        _ => entry(buf, b"x", b'2', b"target", b""),
    });
    let (tree, result) = apply_with(LimitSettings::DEFAULT, stream);
    result.unwrap();
    assert!(
        tree.inodes.len() <= 4,
        "300000 replacements left {} inodes",
        tree.inodes.len()
    );
    assert_nlink_consistent(&tree);
    // The last entry (i = 299999, i % 3 == 2) is the symlink.
    let x = tree.resolve(b"x").unwrap();
    assert!(matches!(&tree.inode(x).kind, oci2sif::tree::Kind::Symlink(t) if t == b"target"));
}

#[test]
fn removed_directories_free_their_whole_subtree() {
    let mut lower = LayerTar::new();
    for i in 0..2000 {
        lower.file(&format!("big/{i}"), 0o644, b"");
    }
    lower.hardlink("big/link-to-0", "big/0");
    let mut upper = LayerTar::new();
    upper.whiteout(".wh.big");
    for i in 0..2000 {
        upper.file(&format!("new/{i}"), 0o644, b"");
    }
    let applied = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    // The 2001 inodes of `big` (a hardlinked file counted once) are reused by `new`.
    assert!(
        applied.tree.inodes.len() <= 2003,
        "{} inodes",
        applied.tree.inodes.len()
    );
    assert_eq!(applied.tree.live_inodes(), 2002, "root, new, 2000 files");
    assert_nlink_consistent(&applied.tree);
}

#[test]
fn one_huge_pax_xattr_hits_the_per_entry_limit() {
    let value = vec![b'v'; 900 << 10];
    let mut layer = Vec::new();
    pax(&mut layer, &[("SCHILY.xattr.user.big", &value)]);
    entry(&mut layer, b"f", b'0', b"", b"");
    layer.resize(layer.len() + 1024, 0);
    let (_, result) = apply_with(LimitSettings::DEFAULT, &layer[..]);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, LayerError::EntryXattrsTooLarge { path, limit } if path == "f" && *limit == 128 << 10),
        "{err}"
    );
    assert!(
        err.to_string().contains("farm.max_xattr_bytes_per_entry"),
        "{err}"
    );
}

#[test]
fn many_large_pax_xattrs_hit_the_image_limit() {
    let value = vec![b'v'; 100 << 10];
    let entries = 2000;
    let (stream, consumed) = generated(entries, move |i, buf| {
        pax(buf, &[("SCHILY.xattr.user.big", &value)]);
        entry(buf, format!("f{i}").as_bytes(), b'0', b"", b"");
    });
    let (_, result) = apply_with(LimitSettings::DEFAULT, stream);
    let err = result.unwrap_err();
    assert!(
        matches!(err, LayerError::XattrsTooLarge { limit } if limit == 64 << 20),
        "{err}"
    );
    // Stopped at 64 MiB of xattrs, not after all 200 MiB.
    assert!(consumed.get() < 70 << 20, "read {} bytes", consumed.get());
}

#[test]
fn long_symlink_targets_and_names_hit_the_name_limit() {
    let target = "t/".repeat(2000);
    let (stream, consumed) = generated(100_000, move |i, buf| {
        let name = format!("{}{i}", "n".repeat(200));
        entry(buf, name.as_bytes(), b'2', target.as_bytes(), b"");
    });
    let settings = LimitSettings {
        max_name_bytes: 16 << 20,
        ..LimitSettings::DEFAULT
    };
    let (_, result) = apply_with(settings, stream);
    let err = result.unwrap_err();
    assert!(
        matches!(err, LayerError::NamesTooLarge { limit } if limit == 16 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("farm.max_name_bytes"), "{err}");
    // About 4.7 KiB per entry on the wire; 16 MiB of names is ~3800 entries of 100000.
    assert!(consumed.get() < 32 << 20, "read {} bytes", consumed.get());
}

#[test]
fn deep_paths_hit_the_depth_limit_by_name_and_through_symlinks() {
    let mut layer = LayerTar::new();
    layer.file(&format!("{}f", "a/".repeat(300)), 0o644, b"");
    let err = apply(&[layer.bytes()]).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, LayerError::PathTooDeep { limit: 256, .. }),
        "{err}"
    );

    // 200 components, then a symlink to them, then 100 more through the symlink: the name has
    // 102 components but resolves to 301.
    let chain = "a/".repeat(200);
    let mut layer = LayerTar::new();
    layer.dir(&chain, 0o755).symlink("l", &chain).file(
        &format!("l/{}f", "b/".repeat(100)),
        0o644,
        b"",
    );
    let err = apply(&[layer.bytes()]).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, LayerError::PathTooDeep { limit: 256, .. }),
        "{err}"
    );
}

#[test]
fn repeated_opaque_whiteouts_in_one_directory_are_linear() {
    let n = 20_000;
    let mut lower = LayerTar::new();
    for i in 0..n {
        lower.file(&format!("d/lower{i}"), 0o644, b"");
    }
    // n upper files, then the same opaque whiteout n times: each used to walk all n children
    // (n² = 4e8 steps); after the first walk the directory is known to hold nothing lower.
    let mut upper = LayerTar::new();
    for i in 0..n {
        upper.file(&format!("d/upper{i}"), 0o644, b"");
    }
    for _ in 0..n {
        upper.whiteout("d/.wh..wh..opq");
    }
    let applied = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    let stats = applied.stats[1];
    assert_eq!(stats.whiteouts, n);
    assert!(
        stats.whiteout_steps <= 2 * n,
        "{} whiteout steps for {n} lower and {n} upper entries",
        stats.whiteout_steps
    );
    let children = applied
        .tree
        .children(applied.tree.resolve(b"d").unwrap())
        .unwrap();
    assert_eq!(children.len() as u64, n, "only the upper files remain");
    assert!(children.keys().all(|k| k.starts_with(b"upper")));
}

#[test]
fn nested_opaque_whiteouts_innermost_first_are_linear() {
    let depth = 200;
    let files = 50;
    let level = |k: usize| "c/".repeat(k);
    let mut lower = LayerTar::new();
    for k in 1..=depth {
        lower.file(&format!("{}lower", level(k)), 0o644, b"");
    }
    let mut upper = LayerTar::new();
    for k in 1..=depth {
        for f in 0..files {
            upper.file(&format!("{}u{f}", level(k)), 0o644, b"");
        }
    }
    // Innermost first: each walk used to descend through every deeper level again.
    for k in (1..=depth).rev() {
        upper.whiteout(&format!("{}.wh..wh..opq", level(k)));
    }
    let applied = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    let stats = applied.stats[1];
    let upper_entries = (depth * files) as u64;
    assert!(
        stats.whiteout_steps <= 2 * upper_entries,
        "{} whiteout steps for {upper_entries} upper entries",
        stats.whiteout_steps
    );
    for k in 1..=depth {
        let dir = level(k);
        assert!(
            !applied.exists(&format!("{dir}lower")),
            "{dir}lower survived"
        );
        assert!(applied.exists(&format!("{dir}u0")), "{dir}u0 was removed");
    }
}
