//! Shared helpers of the squashfs tests and the squashfs benchmark: a host directory turned into
//! a `Tree` + `Spool` (read-only walk, test and bench code only), a comparable "manifest" of a
//! tree or of an extracted directory, and runners for the real squashfs tools.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use oci2sif::squashfs::{write_squashfs, SquashfsOptions};
use oci2sif::tree::{Content, InodeId, Kind, Meta, Spool, Tree, ROOT};
use sha2::{Digest, Sha256};

/// Linux `dev_t` → (major, minor), as glibc's `major()`/`minor()`.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Builds a tree from a host directory, reading it only. Hardlinked files (same device and
/// inode) become one tree inode linked under every name, as the layer code does for tar links.
pub fn tree_from_dir(root: &Path, spool: &mut Spool) -> Tree {
    let mut tree = Tree::new();
    let meta = fs::symlink_metadata(root).unwrap();
    tree.inode_mut(ROOT).meta = meta_of(&meta);
    let mut seen: HashMap<(u64, u64), InodeId> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), ROOT)];
    while let Some((dir, dir_id)) = stack.pop() {
        for entry in sorted_entries(&dir) {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let name = entry.file_name().as_bytes().to_vec();
            let key = (meta.dev(), meta.ino());
            if !meta.is_dir() && meta.nlink() > 1 {
                if let Some(&id) = seen.get(&key) {
                    tree.link(dir_id, name, id);
                    continue;
                }
            }
            let kind = kind_of(&path, &meta, spool);
            let is_dir = matches!(kind, Kind::Dir(_));
            let id = tree.add_inode(kind, meta_of(&meta));
            tree.link(dir_id, name, id);
            if is_dir {
                stack.push((path, id));
            } else if meta.nlink() > 1 {
                seen.insert(key, id);
            }
        }
    }
    tree
}

fn sorted_entries(dir: &Path) -> Vec<fs::DirEntry> {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    entries
}

fn meta_of(meta: &fs::Metadata) -> Meta {
    Meta::new(meta.mode(), meta.uid(), meta.gid(), meta.mtime())
}

fn kind_of(path: &Path, meta: &fs::Metadata, spool: &mut Spool) -> Kind {
    let ft = meta.file_type();
    if ft.is_dir() {
        Kind::Dir(BTreeMap::new())
    } else if ft.is_file() {
        Kind::File(spool.append(&mut File::open(path).unwrap()).unwrap())
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec())
    } else if ft.is_char_device() || ft.is_block_device() {
        let (major, minor) = split_dev(meta.rdev());
        if ft.is_char_device() {
            Kind::CharDevice { major, minor }
        } else {
            Kind::BlockDevice { major, minor }
        }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    }
}

/// Everything the tests compare about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub sha256: Option<String>,
    pub target: Option<Vec<u8>>,
    pub device: Option<(u32, u32)>,
    /// For a file with several names: the first of them in walk order.
    pub first_link: Option<String>,
}

pub type Manifest = BTreeMap<String, Entry>;

fn sha256_hex(mut reader: impl Read) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// The manifest a tree should produce once written and extracted.
pub fn manifest_of_tree(tree: &Tree, spool: &Spool) -> Manifest {
    let mut links: HashMap<InodeId, u32> = HashMap::new();
    tree.walk(|_, id| *links.entry(id).or_default() += 1);
    let mut first: HashMap<InodeId, String> = HashMap::new();
    let mut manifest = Manifest::new();
    tree.walk(|path, id| {
        let path = String::from_utf8_lossy(path).into_owned();
        let inode = tree.inode(id);
        let (kind, size, sha256, target, device) = match &inode.kind {
            Kind::Dir(_) => ("dir", 0, None, None, None),
            Kind::File(c) => (
                "file",
                c.len(),
                Some(sha256_hex(spool.reader(*c))),
                None,
                None,
            ),
            Kind::Symlink(t) => ("symlink", t.len() as u64, None, Some(t.clone()), None),
            Kind::CharDevice { major, minor } => ("char", 0, None, None, Some((*major, *minor))),
            Kind::BlockDevice { major, minor } => ("block", 0, None, None, Some((*major, *minor))),
            Kind::Fifo => ("fifo", 0, None, None, None),
            Kind::Socket => ("socket", 0, None, None, None),
        };
        let first_link = (kind != "dir" && links[&id] > 1)
            .then(|| first.entry(id).or_insert_with(|| path.clone()).clone());
        let m = &inode.meta;
        manifest.insert(
            path,
            Entry {
                kind,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: m.mtime,
                size,
                sha256,
                target,
                device,
                first_link,
            },
        );
    });
    manifest
}

/// The manifest of a directory on disk (paths relative to `root`, which itself is "").
pub fn manifest_of_dir(root: &Path) -> Manifest {
    let mut manifest = Manifest::new();
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    walk_dir(root, "", &mut manifest, &mut first);
    manifest
}

fn walk_dir(
    path: &Path,
    rel: &str,
    manifest: &mut Manifest,
    first: &mut HashMap<(u64, u64), String>,
) {
    let meta = fs::symlink_metadata(path).unwrap();
    let ft = meta.file_type();
    let mut entry = Entry {
        kind: "socket",
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        size: 0,
        sha256: None,
        target: None,
        device: None,
        first_link: None,
    };
    if ft.is_dir() {
        entry.kind = "dir";
    } else if ft.is_file() {
        entry.kind = "file";
        entry.size = meta.len();
        entry.sha256 = Some(sha256_hex(File::open(path).unwrap()));
    } else if ft.is_symlink() {
        let target = fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec();
        entry.kind = "symlink";
        entry.size = target.len() as u64;
        entry.target = Some(target);
    } else if ft.is_char_device() || ft.is_block_device() {
        entry.kind = if ft.is_char_device() { "char" } else { "block" };
        entry.device = Some(split_dev(meta.rdev()));
    } else if ft.is_fifo() {
        entry.kind = "fifo";
    }
    if !ft.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        entry.first_link = Some(first.entry(key).or_insert_with(|| rel.to_string()).clone());
    }
    manifest.insert(rel.to_string(), entry);
    if ft.is_dir() {
        for child in sorted_entries(path) {
            let name = String::from_utf8_lossy(child.file_name().as_bytes()).into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            walk_dir(&child.path(), &child_rel, manifest, first);
        }
    }
}

/// Writes the tree to `path` and returns the image size.
pub fn write_image(tree: &Tree, spool: &Spool, path: &Path, opts: &SquashfsOptions) -> u64 {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let size = write_squashfs(tree, spool, &mut out, opts).unwrap();
    drop(out);
    assert_eq!(
        fs::metadata(path).unwrap().len(),
        size,
        "returned size = file size"
    );
    size
}

/// A new file (emptied if it exists) opened for reading and writing, as a SIF output is.
pub fn read_write_file(path: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `unsquashfs -d OUT IMAGE` (as root it keeps owners and creates device nodes).
pub fn extract(image: &Path, out: &Path) {
    run(Command::new("unsquashfs")
        .arg("-q")
        .arg("-n")
        .arg("-d")
        .arg(out)
        .arg(image));
}

/// One line of `unsquashfs -lln`: mode string, "uid/gid", size or "major,minor", path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub mode: String,
    pub owner: String,
    pub size: String,
    pub symlink_target: Option<String>,
}

/// Parses `unsquashfs -lln`, keyed by path relative to the root ("" for the root). Names in
/// the tests contain no spaces, which keeps this parser simple.
pub fn unsquashfs_listing(image: &Path) -> BTreeMap<String, Listed> {
    let text = run(Command::new("unsquashfs").arg("-lln").arg(image));
    let mut listing = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (line, symlink_target) = match line.split_once(" -> ") {
            Some((l, t)) => (l, Some(t.to_string())),
            None => (line, None),
        };
        let mut tokens: Vec<&str> = line.split_whitespace().collect();
        let path = tokens.pop().unwrap();
        let mode = tokens[0].to_string();
        let owner = tokens[1].to_string();
        // devices print "major," "minor" (or "major,minor"), others a single size token
        let size = tokens[2..tokens.len() - 2].concat();
        let rel = path
            .strip_prefix("squashfs-root")
            .unwrap()
            .trim_start_matches('/');
        listing.insert(
            rel.to_string(),
            Listed {
                mode,
                owner,
                size,
                symlink_target,
            },
        );
    }
    listing
}

/// `unsquashfs -s` output.
pub fn superblock_report(image: &Path) -> String {
    run(Command::new("unsquashfs").arg("-s").arg(image))
}

/// The `ls -l` style mode string for a manifest entry.
pub fn mode_string(entry: &Entry) -> String {
    let kind = match entry.kind {
        "dir" => 'd',
        "file" => '-',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        _ => 's',
    };
    let m = entry.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char, unset: char| match (m & x != 0, m & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// A scratch directory under the build's target dir (tests) rather than /tmp, which may be small.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).unwrap()
}

/// A file in the spool holding `len` bytes of a repeatable, partly compressible pattern.
pub fn pattern_content(spool: &mut Spool, len: usize, seed: u64) -> Content {
    spool.append_bytes(&pattern_bytes(len, seed)).unwrap()
}

/// `len` bytes of a repeatable pattern that compresses, but not to nothing.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let word = (state >> 33) as u32;
        // Half the words repeat a short phrase, so blocks compress but not to nothing.
        if word & 1 == 0 {
            bytes.extend_from_slice(b"squashfs ");
        } else {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
    }
    bytes.truncate(len);
    bytes
}

/// `len` bytes that do not compress (xorshift).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Compares two directories' contents, owners, permissions and times through squashfs-tools-ng
/// (a second, independent squashfs reader): `ours` against a mksquashfs image of `reference`.
pub fn assert_same_as_mksquashfs(ours: &Path, reference_dir: &Path, scratch: &Path) {
    let reference = scratch.join("reference.sqfs");
    run(Command::new("mksquashfs")
        .arg(reference_dir)
        .arg(&reference)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-no-xattrs",
            "-comp",
            "zstd",
        ])
        .args(["-Xcompression-level", "1"]));
    run(Command::new("sqfsdiff")
        .arg("--timestamps")
        .arg("--old")
        .arg(&reference)
        .arg("--new")
        .arg(ours));
}

fn dir(tree: &mut Tree, parent: InodeId, name: &str, mode: u32, uid: u32, gid: u32) -> InodeId {
    let id = tree.add_inode(
        Kind::Dir(BTreeMap::new()),
        Meta::new(mode, uid, gid, 1_600_000_000),
    );
    tree.link(parent, name.as_bytes().to_vec(), id);
    id
}

fn node(tree: &mut Tree, parent: InodeId, name: &str, kind: Kind, meta: Meta) -> InodeId {
    let id = tree.add_inode(kind, meta);
    tree.link(parent, name.as_bytes().to_vec(), id);
    id
}

/// A tree with every kind of node and every size class of file, for `block_size` blocks.
pub fn rich_tree(spool: &mut Spool, block_size: usize) -> Tree {
    let bs = block_size;
    let mut t = Tree::new();
    t.inode_mut(ROOT).meta = Meta::new(0o755, 0, 0, 1_700_000_000);
    let bin = dir(&mut t, ROOT, "bin", 0o755, 0, 0);
    let usr = dir(&mut t, ROOT, "usr", 0o755, 0, 0);
    let lib = dir(&mut t, usr, "lib", 0o755, 0, 0);
    let deep = dir(&mut t, lib, "deep", 0o700, 1000, 1000);
    let deeper = dir(&mut t, deep, "er", 0o2775, 1000, 50);
    let dev = dir(&mut t, ROOT, "dev", 0o755, 0, 0);
    let run_dir = dir(&mut t, ROOT, "run", 0o755, 0, 0);
    dir(&mut t, ROOT, "tmp", 0o1777, 0, 0);
    dir(&mut t, ROOT, "empty-dir", 0o555, 7, 8);

    let file =
        |spool: &mut Spool, len: usize, seed: u64| Kind::File(pattern_content(spool, len, seed));
    node(
        &mut t,
        ROOT,
        "empty",
        Kind::File(Content::EMPTY),
        Meta::new(0o644, 0, 0, 0),
    );
    let small = spool.append_bytes(b"hello, squashfs\n").unwrap();
    node(
        &mut t,
        ROOT,
        "small",
        Kind::File(small),
        Meta::new(0o600, 1000, 1000, 1_234_567_890),
    );
    let k = file(spool, bs * 5 + bs / 2 + 17, 1);
    node(&mut t, usr, "big", k, Meta::new(0o644, 0, 0, 1_500_000_000));
    let k = file(spool, bs * 3, 2);
    node(
        &mut t,
        usr,
        "exact",
        k,
        Meta::new(0o640, 0, 42, 1_500_000_001),
    );
    let k = file(spool, bs - 1, 3);
    node(&mut t, usr, "almost-a-block", k, Meta::new(0o644, 0, 0, 1));
    let k = file(spool, bs, 4);
    node(&mut t, usr, "one-block", k, Meta::new(0o644, 0, 0, 2));
    let zeros = spool.append_bytes(&vec![0; bs * 2 + 100]).unwrap();
    node(
        &mut t,
        usr,
        "zeros",
        Kind::File(zeros),
        Meta::new(0o644, 0, 0, 3),
    );
    let mixed = {
        let mut bytes = vec![0u8; bs * 3];
        bytes[bs..bs + 5].copy_from_slice(b"data!");
        spool.append_bytes(&bytes).unwrap()
    };
    node(
        &mut t,
        usr,
        "sparse-middle",
        Kind::File(mixed),
        Meta::new(0o644, 0, 0, 4),
    );
    node(
        &mut t,
        bin,
        "su",
        Kind::File(small),
        Meta::new(0o4755, 0, 0, 5),
    );
    node(
        &mut t,
        bin,
        "wall",
        Kind::File(small),
        Meta::new(0o2755, 0, 5, 6),
    );

    // duplicates (separate inodes, same bytes): stored once, read back by every name
    let k = file(spool, bs * 5 + bs / 2 + 17, 1);
    node(&mut t, deep, "big-copy", k, Meta::new(0o600, 0, 0, 20));
    let k = file(spool, bs * 3, 2);
    node(&mut t, deep, "exact-copy", k, Meta::new(0o600, 0, 0, 21));
    let copy = spool.append_bytes(b"hello, squashfs\n").unwrap();
    node(
        &mut t,
        deep,
        "small-copy",
        Kind::File(copy),
        Meta::new(0o600, 0, 0, 22),
    );
    let copy = spool.append_bytes(&vec![0; bs * 2 + 100]).unwrap();
    node(
        &mut t,
        deep,
        "zeros-copy",
        Kind::File(copy),
        Meta::new(0o600, 0, 0, 23),
    );
    let same_size = spool.append_bytes(b"hello, SQUASHFS\n").unwrap();
    node(
        &mut t,
        deep,
        "same-size-other-bytes",
        Kind::File(same_size),
        Meta::new(0o600, 0, 0, 24),
    );

    // hardlinks: a small (fragment) file and a multi-block file, each with three names
    let k = file(spool, 300, 5);
    let hl_small = node(&mut t, lib, "hl-small", k, Meta::new(0o644, 33, 33, 7));
    t.link(bin, b"hl-small-2".to_vec(), hl_small);
    t.link(deeper, b"hl-small-3".to_vec(), hl_small);
    let k = file(spool, bs * 2 + 5, 6);
    let hl_big = node(&mut t, lib, "hl-big", k, Meta::new(0o755, 0, 0, 8));
    t.link(ROOT, b"hl-big-2".to_vec(), hl_big);

    node(
        &mut t,
        lib,
        "rel-link",
        Kind::Symlink(b"../../small".to_vec()),
        Meta::new(0o777, 0, 0, 9),
    );
    node(
        &mut t,
        ROOT,
        "abs-link",
        Kind::Symlink(b"/usr/lib/deep".to_vec()),
        Meta::new(0o777, 3, 4, 10),
    );
    node(
        &mut t,
        ROOT,
        "dangling",
        Kind::Symlink(b"nowhere/at/all".to_vec()),
        Meta::new(0o777, 0, 0, 11),
    );
    node(
        &mut t,
        dev,
        "null",
        Kind::CharDevice { major: 1, minor: 3 },
        Meta::new(0o666, 0, 0, 12),
    );
    node(
        &mut t,
        dev,
        "sda",
        Kind::BlockDevice { major: 8, minor: 0 },
        Meta::new(0o660, 0, 6, 13),
    );
    node(
        &mut t,
        dev,
        "nvme-part",
        Kind::BlockDevice {
            major: 259,
            minor: 70_000,
        },
        Meta::new(0o660, 0, 6, 14),
    );
    node(
        &mut t,
        run_dir,
        "fifo",
        Kind::Fifo,
        Meta::new(0o600, 100_000, 100_001, 15),
    );
    node(
        &mut t,
        run_dir,
        "sock",
        Kind::Socket,
        Meta::new(0o755, 0, 0, 16),
    );

    // A directory whose listing spans several metadata blocks and headers (> 256 entries),
    // so the writer must split headers and index it.
    let many = dir(&mut t, ROOT, "many", 0o755, 0, 0);
    for i in 0..700u64 {
        let name = format!("entry-{i:04}-{}", "x".repeat((i % 150) as usize));
        let kind = if i % 7 == 0 {
            Kind::Symlink(format!("target-{i}").into_bytes())
        } else {
            file(spool, (i as usize * 37) % 3000, i + 100)
        };
        let mode = if i % 7 == 0 { 0o777 } else { 0o644 };
        node(
            &mut t,
            many,
            &name,
            kind,
            Meta::new(mode, (i % 3) as u32, 0, i as i64),
        );
    }
    t
}
