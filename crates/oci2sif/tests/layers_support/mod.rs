//! Shared helpers for the `layers_*` tests: a raw layer-tar writer (so tests can write names the
//! tar crate's safe API refuses, like `../../etc/x`), tree snapshots, and a host watcher proving
//! that applying a layer changed nothing on the host.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci2sif::layers::{apply_layer, LayerError, LayerStats, Limits};
use oci2sif::tree::{InodeId, Kind, Spool, Tree};
use sha2::{Digest, Sha256};

/// Default mtime of test entries (2020-09-13).
pub const MTIME: u64 = 1_600_000_000;

/// Writes layer tars entry by entry, with raw (unvalidated) names.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
            uid: 0,
            gid: 0,
            mtime: MTIME,
        }
    }

    /// Owner of the entries written from now on.
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Mtime of the entries written from now on.
    pub fn mtime(&mut self, mtime: u64) -> &mut Self {
        self.mtime = mtime;
        self
    }

    /// Writes one entry exactly as given; names and link names over 100 bytes get GNU
    /// long-name records first.
    pub fn raw(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        self.raw_sized(name, typeflag, mode, link, data.len() as u64, data)
    }

    /// Like [`raw`](Self::raw) but declaring `size` whatever `data` holds (for truncation and
    /// bomb tests).
    pub fn raw_sized(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        link: &[u8],
        size: u64,
        data: &[u8],
    ) -> &mut Self {
        if name.len() > 100 {
            self.long_record(b'L', name);
        }
        if link.len() > 100 {
            self.long_record(b'K', link);
        }
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            let n = name.len().min(100);
            gnu.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            gnu.linkname[..l].copy_from_slice(&link[..l]);
        }
        // Written raw: `set_entry_type` would turn the old `'\0'` flag into `'0'`.
        header.as_old_mut().linkflag = [typeflag];
        header.set_mode(mode);
        header.set_uid(self.uid);
        header.set_gid(self.gid);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header.set_cksum();
        self.builder.get_mut().extend_from_slice(header.as_bytes());
        self.builder.get_mut().extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.builder
            .get_mut()
            .extend(std::iter::repeat_n(0u8, padding));
        self
    }

    fn long_record(&mut self, typeflag: u8, value: &[u8]) {
        let mut data = value.to_vec();
        data.push(0);
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(tar::EntryType::new(typeflag));
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, &data[..]).unwrap();
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(name.as_bytes(), b'5', mode, b"", b"")
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), b'0', mode, b"", data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'2', 0o777, target.as_bytes(), b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'1', 0o644, target.as_bytes(), b"")
    }

    /// A whiteout entry as Docker and umoci write them: an empty regular file.
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'0', 0o600, b"", b"")
    }

    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.device(name, b'3', mode, major, minor)
    }

    pub fn block_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.device(name, b'4', mode, major, minor)
    }

    fn device(&mut self, name: &str, typeflag: u8, mode: u32, major: u32, minor: u32) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::new(typeflag));
        header.set_mode(mode);
        header.set_uid(self.uid);
        header.set_gid(self.gid);
        header.set_mtime(self.mtime);
        header.set_size(0);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        header.set_cksum();
        self.builder.append(&header, &[][..]).unwrap();
        self
    }

    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(name.as_bytes(), b'6', mode, b"", b"")
    }

    /// A PAX record set for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn bytes(mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        self.builder.into_inner().unwrap()
    }
}

/// A tree built from layers, with the spool and the work directory holding it.
pub struct Applied {
    pub tree: Tree,
    pub spool: Spool,
    pub work: tempfile::TempDir,
    pub stats: Vec<LayerStats>,
    pub limits: Limits,
}

impl Applied {
    pub fn snapshot(&self) -> BTreeMap<String, Node> {
        snapshot(&self.tree, &self.spool)
    }

    pub fn content(&self, path: &str) -> Vec<u8> {
        let inode = self.tree.resolve(path.as_bytes()).expect(path);
        match self.tree.inode(inode).kind {
            Kind::File(content) => {
                let mut buf = Vec::new();
                self.spool.read_into(content, &mut buf).unwrap();
                buf
            }
            ref other => panic!("{path} is not a file: {other:?}"),
        }
    }

    pub fn inode(&self, path: &str) -> InodeId {
        self.tree.resolve(path.as_bytes()).expect(path)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.tree.resolve(path.as_bytes()).is_some()
    }

    pub fn kind(&self, path: &str) -> &Kind {
        &self.tree.inode(self.inode(path)).kind
    }

    /// Names directly under a directory, sorted.
    pub fn ls(&self, path: &str) -> Vec<String> {
        let children = self.tree.children(self.inode(path)).expect(path);
        children
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// Applies the layers in order onto a fresh tree.
pub fn apply(layers: &[Vec<u8>]) -> Result<Applied, LayerError> {
    apply_limited(layers, u64::MAX)
}

pub fn apply_limited(layers: &[Vec<u8>], max_bytes: u64) -> Result<Applied, LayerError> {
    let readers: Vec<Box<dyn Read>> = layers
        .iter()
        .map(|l| Box::new(&l[..]) as Box<dyn Read>)
        .collect();
    apply_readers(readers, max_bytes)
}

pub fn apply_readers<'a>(
    layers: Vec<Box<dyn Read + 'a>>,
    max_bytes: u64,
) -> Result<Applied, LayerError> {
    let work = tempfile::tempdir().unwrap();
    let mut applied = Applied {
        tree: Tree::new(),
        spool: Spool::new_in(work.path()).unwrap(),
        work,
        stats: Vec::new(),
        limits: Limits::new(max_bytes),
    };
    for layer in layers {
        let stats = apply_layer(
            &mut applied.tree,
            &mut applied.spool,
            layer,
            &mut applied.limits,
        )?;
        applied.stats.push(stats);
    }
    Ok(applied)
}

/// One reachable tree entry, as compared by the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
    BlockDevice { mode: u32, major: u32, minor: u32 },
    Fifo { mode: u32 },
    Socket,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every reachable entry by path (`""` is the root).
pub fn snapshot(tree: &Tree, spool: &Spool) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    let mut buf = Vec::new();
    tree.walk(|path, id| {
        let inode = tree.inode(id);
        let mode = inode.meta.mode;
        let node = match &inode.kind {
            Kind::Dir(_) => Node::Dir { mode },
            Kind::File(content) => {
                spool.read_into(*content, &mut buf).unwrap();
                Node::File {
                    mode,
                    sha256: sha256_hex(&buf),
                }
            }
            Kind::Symlink(target) => Node::Symlink {
                target: String::from_utf8_lossy(target).into_owned(),
            },
            Kind::CharDevice { major, minor } => Node::CharDevice {
                mode,
                major: *major,
                minor: *minor,
            },
            Kind::BlockDevice { major, minor } => Node::BlockDevice {
                mode,
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => Node::Fifo { mode },
            Kind::Socket => Node::Socket,
        };
        nodes.insert(String::from_utf8_lossy(path).into_owned(), node);
    });
    nodes
}

/// Checks the link-count invariant: every reachable inode's `nlink` equals the number of
/// reachable names it has.
pub fn assert_nlink_consistent(tree: &Tree) {
    let mut names: BTreeMap<InodeId, u32> = BTreeMap::new();
    tree.walk(|path, id| {
        if !path.is_empty() {
            *names.entry(id).or_default() += 1;
        }
    });
    for (id, count) in names {
        assert_eq!(tree.inode(id).nlink, count, "nlink of inode {id}");
    }
}

/// What a host path looked like: its type, permissions, size and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostState {
    file_type: String,
    mode: u32,
    len: u64,
    sha256: Option<String>,
}

/// Snapshot of host paths an attack names (and of a sandbox directory tree), to prove that
/// applying hostile layers changed nothing outside the tree.
pub struct HostWatch {
    /// A directory the tests treat as "outside the work area", holding a sentinel file.
    pub sandbox: tempfile::TempDir,
    paths: Vec<PathBuf>,
    before: BTreeMap<PathBuf, Option<HostState>>,
}

impl HostWatch {
    /// Watches `paths` (absolute, or relative to the test's working directory) plus a fresh
    /// sandbox directory.
    pub fn new(paths: &[&str]) -> Self {
        let sandbox = tempfile::tempdir().unwrap();
        fs::write(sandbox.path().join("sentinel"), b"untouched").unwrap();
        fs::create_dir(sandbox.path().join("etc")).unwrap();
        fs::write(
            sandbox.path().join("etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        let mut watch = HostWatch {
            sandbox,
            paths,
            before: BTreeMap::new(),
        };
        watch.before = watch.states();
        watch
    }

    fn states(&self) -> BTreeMap<PathBuf, Option<HostState>> {
        let mut states = BTreeMap::new();
        for path in &self.paths {
            states.insert(path.clone(), host_state(path));
        }
        collect_tree(self.sandbox.path(), &mut states);
        states
    }

    pub fn assert_unchanged(&self) {
        assert_eq!(self.states(), self.before, "host paths changed");
        for path in &self.paths {
            if self.before[path].is_none() {
                assert!(fs::symlink_metadata(path).is_err(), "{path:?} was created");
            }
        }
    }
}

fn host_state(path: &Path) -> Option<HostState> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).ok()?;
    let sha256 = if meta.is_file() {
        fs::read(path).ok().map(|b| sha256_hex(&b))
    } else {
        None
    };
    Some(HostState {
        file_type: format!("{:?}", meta.file_type()),
        mode: meta.mode(),
        len: meta.len(),
        sha256,
    })
}

fn collect_tree(dir: &Path, states: &mut BTreeMap<PathBuf, Option<HostState>>) {
    states.insert(dir.to_path_buf(), host_state(dir));
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            collect_tree(&path, states);
        } else {
            states.insert(path.clone(), host_state(&path));
        }
    }
}

/// The work directory must hold nothing: the spool is an anonymous file, and nothing else may
/// ever be created there.
pub fn assert_work_dir_empty(work: &Path) {
    let leftovers: Vec<_> = fs::read_dir(work).unwrap().collect();
    assert!(leftovers.is_empty(), "work dir not empty: {leftovers:?}");
}
