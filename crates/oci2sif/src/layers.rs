//! Applies OCI/Docker layer tar streams onto a [`Tree`] with umoci's semantics
//! (`oci/layer/tar_extract.go`, `UnpackEntry`, in its default "DirRootfs" mode without
//! `--keep-dirlinks`, which is how Apptainer calls it).
//!
//! Every entry is hostile input. Entry names only ever become keys in the tree and file bytes only
//! ever go to the [`Spool`]; nothing is created on the host at a path derived from an entry name,
//! so the usual tar-extraction escapes (absolute names, `..`, writing through a symlink, hardlinks
//! to host files) cannot reach the host at all. What remains is to get the *in-tree* result right,
//! which is what umoci's rules below are about.
//!
//! Rules, and the choices made where umoci is ambiguous or host-dependent:
//! * **Names** are cleaned lexically like umoci's `CleanPath`: leading `/` and `./` are dropped,
//!   `.` components vanish and a `..` that would climb above the root is clamped at the root
//!   (`../../etc/x` is `etc/x`). A name that cleans to the root applies a directory's metadata to
//!   the root and fails the layer for any other type (umoci refuses to change the root's type).
//!   Raw empty names are skipped. Components longer than 255 bytes and paths longer than 4096
//!   bytes fail the layer (umoci would get `ENAMETOOLONG`; squashfs cannot store them either).
//! * **Parents** are resolved like `securejoin.SecureJoinVFS`: symlinks met in the parent path are
//!   followed *inside the tree* (relative targets from the symlink's directory, absolute targets
//!   re-rooted at the tree root, `..` clamped at the root), at most 255 hops. Missing parents are
//!   created as directories with mode 0755 owned by 0:0 (umoci uses `0777 & umask`, which is 0755
//!   under the usual umask 022) and the mtime of the entry that needed them (umoci uses "now";
//!   this keeps builds reproducible). A parent path through a non-directory fails the layer
//!   (umoci's `MkdirAll` gets `ENOTDIR`).
//! * **Whiteouts**: any basename starting with `.wh.` is a whiteout and is never materialised.
//!   `.wh.NAME` removes `NAME` (without following it if it is a symlink) and `.wh..wh..opq`
//!   removes every child of its directory, except paths this layer has already extracted or is an
//!   ancestor of ("upper paths", tracked by symlink-resolved path), so entry order within a layer
//!   does not matter. A missing target is a no-op. `.wh.`, `.wh..` and `.wh...` name no valid
//!   entry and are ignored (umoci would remove the directory itself, or its parent).
//! * **Replacement**: unless the existing entry and the new one are both directories, the old
//!   entry (with its subtree) is unlinked and a new inode is created; dir-over-dir keeps the
//!   children and replaces the metadata (xattrs included). A symlink to a directory is replaced
//!   by a directory entry, as umoci does without `--keep-dirlinks`.
//! * **Hardlinks** resolve their target like a parent path (the last component is not followed,
//!   so a link to a symlink links the symlink) and share its inode; no metadata is applied. A
//!   missing target or a directory target fails the layer, as `link(2)` fails in umoci.
//! * **Symlinks** are stored verbatim; an empty target or one longer than 4095 bytes fails the
//!   layer (`symlink(2)` would). Their mode is always 0777, as on Linux.
//! * **Devices and FIFOs** stay tree nodes with their major/minor (umoci in rootless mode would
//!   write an empty file instead; squashfs can store real nodes without root).
//! * **Metadata**: permission bits incl. setuid/setgid/sticky, uid/gid and mtime (PAX overrides
//!   win, a zero mtime stays zero rather than becoming "now"), and `SCHILY.xattr.*` xattrs except
//!   the host-specific ones umoci never applies (`security.selinux`, `system.nfs4_acl`) and
//!   `user.rootlesscontainers`, a rootless-unpack marker that is meaningless next to real owners.
//! * **Entry types** follow Go's `archive/tar`: `'\0'` with a trailing `/` is a directory,
//!   PAX global headers are skipped (umoci would fail on them), GNU sparse files are expanded by
//!   the tar crate, PAX-format sparse files fail the layer (the tar crate cannot expand them), the
//!   reserved "contiguous" type `'7'` is a regular file (as POSIX asks), anything else fails.
//!   Header-only types (directories, links, devices, FIFOs) that declare data bytes fail the layer:
//!   Go skips no data for them while GNU tar and the tar crate do, so such archives mean different
//!   things to different tools.
//!
//! Resource limits: [`LimitSettings`] bounds every resource an entry can make the applier
//! spend, each enforced while streaming and each failing the layer with an error that names its
//! setting:
//! * file bytes unpacked across all layers (a declared size over the cap fails before any byte
//!   is read; data carried by entries that are not regular files is charged too), and, as the
//!   spool holds them, the build's scratch space;
//! * tar entries across all layers, every header counted (also those that materialise nothing);
//! * bytes the tar parser may read by itself between two entries (GNU long names and PAX
//!   headers are buffered in memory by the tar crate): three extension records of
//!   `max_extension_bytes` each, like Go's `archive/tar` caps each at 1 MiB;
//! * xattr bytes per entry and across the image;
//! * entry name, symlink/hardlink target and "upper path" bytes across the image;
//! * path depth, by name and after resolving symlinks in the parent path (which also bounds the
//!   directories one entry can create and the ancestors it marks).
//!
//! Work and memory stay linear in the input: an unlinked inode's id and memory are reused (one
//! name replaced a million times keeps one inode), marking an entry's ancestors upper stops at
//! the first one already marked, and a whiteout walk never re-walks a directory this layer
//! already emptied of lower entries (repeated or nested opaque whiteouts were O(N²)).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::rc::Rc;

use crate::tree::resolve::{self, Rules};
use crate::tree::{is_plain_name, InodeId, Kind, Meta, Spool, Tree, ROOT};

/// Basename prefix marking a whiteout entry.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Basename of an opaque-directory whiteout.
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// Longest single name (`NAME_MAX`; squashfs stores at most 256).
const NAME_MAX: usize = 255;
/// Longest path inside the tree and longest symlink target (`PATH_MAX`).
const PATH_MAX: usize = 4096;
/// Xattrs never taken from a layer (see the module docs).
const IGNORED_XATTRS: &[&[u8]] = &[
    b"security.selinux",
    b"system.nfs4_acl",
    b"user.rootlesscontainers",
];
/// Bytes looked at to recognise the compression: the ustar magic sits at offset 257.
const SNIFF_LEN: usize = 512;

/// The bounds on what one build's layers may make the builder hold or do. Every resource an
/// entry can make the applier spend is capped: file bytes, entries, extension records, xattrs,
/// names and symlink targets, path depth (and with it the directories one entry may create and
/// the ancestors it marks). Hitting any of them fails the layer with an error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Regular-file bytes unpacked across all layers (the decompression-bomb guard).
    pub max_unpacked_bytes: u64,
    /// Tar entries across all layers, whiteouts and skipped headers included.
    pub max_entries: u64,
    /// Bytes of one PAX extended header or GNU long name/link record.
    pub max_extension_bytes: u64,
    /// Xattr bytes (names and values) of one entry.
    pub max_xattr_bytes_per_entry: u64,
    /// Xattr bytes across all layers.
    pub max_xattr_bytes: u64,
    /// Entry name and symlink target bytes across all layers.
    pub max_name_bytes: u64,
    /// Components of one entry path.
    pub max_path_depth: usize,
    /// Bytes a build may write to its work directory (spool, scratch squashfs, SIF).
    pub max_scratch_bytes: u64,
}

impl LimitSettings {
    /// Far above any real image (the largest conda/CUDA images hold a few hundred thousand
    /// entries and a few KiB of xattrs), low enough that the tree of a hostile image stays
    /// within a few hundred MiB of memory.
    pub const DEFAULT: LimitSettings = LimitSettings {
        max_unpacked_bytes: 64 << 30,
        max_entries: 2_000_000,
        // Go's archive/tar caps each record at 1 MiB.
        max_extension_bytes: 1 << 20,
        // Linux allows 64 KiB per value and 64 KiB of names per inode.
        max_xattr_bytes_per_entry: 128 << 10,
        max_xattr_bytes: 64 << 20,
        max_name_bytes: 256 << 20,
        max_path_depth: 256,
        max_scratch_bytes: 160 << 30,
    };
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings::DEFAULT
    }
}

/// The limits of one build and what its layers used so far. Pass the same value to every
/// [`apply_layer`] call of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub settings: LimitSettings,
    /// Bytes unpacked so far.
    pub unpacked_bytes: u64,
    /// Tar entries read so far.
    pub entries: u64,
    /// Xattr bytes kept so far.
    pub xattr_bytes: u64,
    /// Name and symlink target bytes kept so far.
    pub name_bytes: u64,
}

impl Limits {
    /// The default limits with `max_unpacked_bytes` as the file-byte cap.
    pub fn new(max_unpacked_bytes: u64) -> Self {
        Limits::with(LimitSettings {
            max_unpacked_bytes,
            ..LimitSettings::DEFAULT
        })
    }

    pub fn with(settings: LimitSettings) -> Self {
        Limits {
            settings,
            unpacked_bytes: 0,
            entries: 0,
            xattr_bytes: 0,
            name_bytes: 0,
        }
    }

    /// File bytes that may still be unpacked: the unpacked cap, and the scratch cap (the spool
    /// holds every unpacked byte), whichever is closer.
    fn remaining(&self) -> u64 {
        let s = &self.settings;
        s.max_unpacked_bytes
            .min(s.max_scratch_bytes)
            .saturating_sub(self.unpacked_bytes)
    }

    fn too_large(&self) -> LayerError {
        let s = &self.settings;
        if s.max_scratch_bytes < s.max_unpacked_bytes {
            LayerError::ScratchFull {
                limit: s.max_scratch_bytes,
            }
        } else {
            LayerError::TooLarge {
                limit: s.max_unpacked_bytes,
            }
        }
    }

    /// Bytes the tar parser may read by itself before the next entry: up to three extension
    /// records (GNU long name, long link, PAX), plus headers and padding.
    fn parser_bytes_per_entry(&self) -> u64 {
        self.settings
            .max_extension_bytes
            .saturating_mul(3)
            .saturating_add(64 * 1024)
    }

    fn count_entry(&mut self) -> Result<(), LayerError> {
        self.entries += 1;
        if self.entries > self.settings.max_entries {
            return Err(LayerError::TooManyEntries {
                limit: self.settings.max_entries,
            });
        }
        Ok(())
    }

    fn charge_names(&mut self, bytes: usize) -> Result<(), LayerError> {
        self.name_bytes = self.name_bytes.saturating_add(bytes as u64);
        if self.name_bytes > self.settings.max_name_bytes {
            return Err(LayerError::NamesTooLarge {
                limit: self.settings.max_name_bytes,
            });
        }
        Ok(())
    }

    fn charge_xattrs(&mut self, path: &str, bytes: u64) -> Result<(), LayerError> {
        if bytes > self.settings.max_xattr_bytes_per_entry {
            return Err(LayerError::EntryXattrsTooLarge {
                path: path.to_owned(),
                limit: self.settings.max_xattr_bytes_per_entry,
            });
        }
        self.xattr_bytes = self.xattr_bytes.saturating_add(bytes);
        if self.xattr_bytes > self.settings.max_xattr_bytes {
            return Err(LayerError::XattrsTooLarge {
                limit: self.settings.max_xattr_bytes,
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(
        "layer unpacks to more than {} (limit set by farm.max_unpacked_bytes)",
        human_bytes(*limit)
    )]
    TooLarge { limit: u64 },
    #[error(
        "the image writes more than {} to its build's scratch space (limit set by farm.max_scratch_bytes)",
        human_bytes(*limit)
    )]
    ScratchFull { limit: u64 },
    #[error("the image has more than {limit} entries (limit set by farm.max_entries)")]
    TooManyEntries { limit: u64 },
    #[error(
        "the image's entry names and symlink targets exceed {} (limit set by farm.max_name_bytes)",
        human_bytes(*limit)
    )]
    NamesTooLarge { limit: u64 },
    #[error(
        "the image's extended attributes exceed {} (limit set by farm.max_xattr_bytes)",
        human_bytes(*limit)
    )]
    XattrsTooLarge { limit: u64 },
    #[error(
        "layer entry {path:?}: its extended attributes exceed {} (limit set by farm.max_xattr_bytes_per_entry)",
        human_bytes(*limit)
    )]
    EntryXattrsTooLarge { path: String, limit: u64 },
    #[error(
        "layer entry {path:?}: more than {limit} path components (limit set by farm.max_path_depth)"
    )]
    PathTooDeep { path: String, limit: usize },
    #[error("reading layer: {0}")]
    Read(#[source] io::Error),
    #[error("starting the layer decompressor: {0}")]
    Decompress(#[source] io::Error),
    #[error(
        "malformed layer tar: more than {} of long-name/PAX extension data before one entry \
         (limit set by farm.max_extension_bytes, three records per entry)",
        human_bytes(*limit)
    )]
    ExtensionTooLarge { limit: u64 },
    #[error("malformed layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?}: invalid header: {reason}")]
    InvalidHeader { path: String, reason: String },
    #[error("layer entry {path:?}: unsupported tar entry type {typeflag:?}")]
    UnsupportedEntryType { path: String, typeflag: char },
    #[error("layer entry {path:?}: PAX sparse files are not supported")]
    SparseUnsupported { path: String },
    #[error(
        "layer entry {path:?}: a {kind} entry declares {size} data bytes; \
         tar readers disagree on such archives, so it is refused"
    )]
    HeaderOnlyWithData {
        path: String,
        kind: &'static str,
        size: u64,
    },
    #[error("layer entry {path:?}: file data is truncated ({got} of {expected} bytes)")]
    Truncated {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("layer entry {path:?}: name too long (a component over {NAME_MAX} bytes or a path over {PATH_MAX} bytes)")]
    NameTooLong { path: String },
    #[error("layer entry {path:?}: refusing to change the type of the root directory")]
    RootNotDirectory { path: String },
    #[error("layer entry {path:?}: parent {parent:?} exists and is not a directory")]
    NotADirectory { path: String, parent: String },
    #[error("layer entry {path:?}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("layer entry {path:?}: invalid symlink target ({reason})")]
    InvalidSymlink { path: String, reason: &'static str },
    #[error("layer entry {path:?}: hardlink target {target:?} does not exist in the image")]
    HardlinkTargetMissing { path: String, target: String },
    #[error("layer entry {path:?}: hardlink target {target:?} is a directory")]
    HardlinkToDirectory { path: String, target: String },
    #[error("writing file contents to the spool: {0}")]
    Spool(#[source] io::Error),
}

/// What one [`apply_layer`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries materialised in the tree (including metadata-only root entries; excluding
    /// whiteouts and skipped headers).
    pub entries: u64,
    /// Regular-file bytes written to the spool.
    pub bytes: u64,
    /// Whiteout entries processed (opaque ones included).
    pub whiteouts: u64,
    /// Directory entries the whiteout walks looked at: the work whiteouts cost, which stays
    /// linear in the layer's size however the whiteouts are nested or repeated.
    pub whiteout_steps: u64,
}

/// True for the OCI and Docker layer media types this crate can unpack, including the
/// non-distributable/foreign variants; false for configs, manifests and artifact blobs.
pub fn is_layer_media_type(media_type: &str) -> bool {
    codec_from_media_type(media_type).is_some()
}

/// Compressed bytes read from the blob at once: the decoders' own 32 KiB would be a system call
/// (and a page-cache copy setup) per 32 KiB of a layer.
const COMPRESSED_READ_LEN: usize = 256 * 1024;

/// Picks gzip / zstd / plain tar from the media type (OCI and Docker layer types, `+gzip`/`+zstd`
/// suffixes), falling back to sniffing the magic bytes.
///
/// The magic bytes win when they positively identify a format, because mislabelled layers exist
/// in the wild (uncompressed tars pushed as `…tar.gzip`) and Docker and containerd sniff too. When
/// they identify nothing, the media type decides, and an unknown media type means plain tar.
pub fn decompress<'a>(
    media_type: &str,
    mut reader: Box<dyn Read + Send + 'a>,
) -> Result<Box<dyn Read + Send + 'a>, LayerError> {
    let head = read_head(&mut reader, SNIFF_LEN).map_err(LayerError::Read)?;
    let codec = sniff_codec(&head)
        .or_else(|| codec_from_media_type(media_type))
        .unwrap_or(Codec::Plain);
    let stream = Box::new(io::Cursor::new(head).chain(reader));
    Ok(match codec {
        Codec::Plain => stream,
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            io::BufReader::with_capacity(COMPRESSED_READ_LEN, stream),
        )),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(
                COMPRESSED_READ_LEN,
                stream,
            ))
            .map_err(LayerError::Decompress)?,
        ),
    })
}

/// Applies one (decompressed) layer tar stream onto the tree with umoci's semantics (see the
/// module docs). On error the tree is left partially updated; the build is expected to fail.
pub fn apply_layer(
    tree: &mut Tree,
    spool: &mut Spool,
    tar: impl Read,
    limits: &mut Limits,
) -> Result<LayerStats, LayerError> {
    let budget = ParserBudget::default();
    let mut archive = tar::Archive::new(BudgetedReader {
        inner: tar,
        budget: budget.clone(),
    });
    let mut entries = archive.entries().map_err(LayerError::Tar)?;
    let parser_budget = limits.parser_bytes_per_entry();
    let mut applier = Applier {
        tree,
        spool,
        limits,
        upper: HashSet::new(),
        opaque: HashSet::new(),
        stats: LayerStats::default(),
    };
    loop {
        budget.restrict(parser_budget);
        let mut entry = match entries.next() {
            None => break,
            Some(entry) => entry.map_err(|e| budget.classify(e, parser_budget))?,
        };
        budget.lift();
        // Every header counts, also those that materialise nothing: millions of skipped
        // headers cost the builder time as much as millions of files.
        applier.limits.count_entry()?;
        if let Some(header) = parse_header(&mut entry)? {
            let xattr_bytes = header
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum();
            applier
                .limits
                .charge_xattrs(&header.display_name(), xattr_bytes)?;
            applier.apply(&header, &mut entry)?;
        }
        // Whatever the entry did not consume is read here, charged to the limits, rather than
        // skipped by the tar crate under the parser budget.
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        applier.drain(&mut entry, &path)?;
    }
    Ok(applier.stats)
}

// ---------------------------------------------------------------------------------------------
// Compression

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Plain,
    Gzip,
    Zstd,
}

/// The codec a layer media type declares, or `None` if it is not a layer media type.
fn codec_from_media_type(media_type: &str) -> Option<Codec> {
    const OCI: [&str; 2] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ];
    const DOCKER: [&str; 2] = [
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
    ];
    let media_type = media_type.trim();
    for base in OCI {
        if let Some(rest) = media_type.strip_prefix(base) {
            return codec_from_suffix(rest, '+');
        }
    }
    for base in DOCKER {
        if let Some(rest) = media_type.strip_prefix(base) {
            return codec_from_suffix(rest, '.');
        }
    }
    None
}

fn codec_from_suffix(suffix: &str, separator: char) -> Option<Codec> {
    match suffix.strip_prefix(separator) {
        None if suffix.is_empty() => Some(Codec::Plain),
        Some("gzip") => Some(Codec::Gzip),
        Some("zstd") => Some(Codec::Zstd),
        _ => None,
    }
}

/// The codec the first bytes prove, if any.
fn sniff_codec(head: &[u8]) -> Option<Codec> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Codec::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Codec::Zstd)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(Codec::Plain)
    } else {
        None
    }
}

/// Reads up to `len` bytes, fewer only at end of stream.
fn read_head(reader: &mut dyn Read, len: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

// ---------------------------------------------------------------------------------------------
// Stream guards

#[derive(Debug, Clone, Copy)]
struct BudgetState {
    remaining: u64,
    /// The parser asked for more than its budget.
    exhausted: bool,
    /// The underlying stream (network, decompressor) failed.
    read_failed: bool,
}

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            remaining: u64::MAX,
            exhausted: false,
            read_failed: false,
        }
    }
}

/// How many bytes the tar parser may still read on its own, shared between [`apply_layer`] and
/// the [`BudgetedReader`] the parser reads through. `u64::MAX` means unlimited (while an entry's
/// data is being read, which [`Metered`] accounts for instead).
#[derive(Clone, Default)]
struct ParserBudget(Rc<Cell<BudgetState>>);

impl ParserBudget {
    fn restrict(&self, bytes: u64) {
        self.0.set(BudgetState {
            remaining: bytes,
            ..BudgetState::default()
        });
    }

    fn lift(&self) {
        self.0.set(BudgetState::default());
    }

    /// Turns a parser error into the right [`LayerError`].
    fn classify(&self, error: io::Error, limit: u64) -> LayerError {
        let state = self.0.get();
        if state.exhausted {
            LayerError::ExtensionTooLarge { limit }
        } else if state.read_failed {
            LayerError::Read(error)
        } else {
            LayerError::Tar(error)
        }
    }

    fn note_read_failure(&self) {
        let mut state = self.0.get();
        state.read_failed = true;
        self.0.set(state);
    }
}

struct BudgetedReader<R> {
    inner: R,
    budget: ParserBudget,
}

impl<R: Read> Read for BudgetedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.budget.0.get();
        if state.remaining == 0 && !buf.is_empty() {
            state.exhausted = true;
            self.budget.0.set(state);
            return Err(io::Error::other("tar extension data over budget"));
        }
        let want = buf
            .len()
            .min(usize::try_from(state.remaining).unwrap_or(usize::MAX));
        let n = self
            .inner
            .read(&mut buf[..want])
            .inspect_err(|_| self.budget.note_read_failure())?;
        if state.remaining != u64::MAX {
            state.remaining -= n as u64;
            self.budget.0.set(state);
        }
        Ok(n)
    }
}

/// Counts entry data against [`Limits`] as it streams, and remembers whether a failure came
/// from the cap or from the layer stream (so that spool write errors can be told apart).
struct Metered<'l, R> {
    inner: R,
    limits: &'l mut Limits,
    over_limit: bool,
    read_error: bool,
}

impl<'l, R: Read> Metered<'l, R> {
    fn new(inner: R, limits: &'l mut Limits) -> Self {
        Metered {
            inner,
            limits,
            over_limit: false,
            read_error: false,
        }
    }

    /// Turns an error from copying this reader somewhere into the right [`LayerError`].
    fn classify(&self, error: io::Error) -> LayerError {
        if self.over_limit {
            self.limits.too_large()
        } else if self.read_error {
            LayerError::Read(error)
        } else {
            LayerError::Spool(error)
        }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Asking for one byte past the cap lets a stream that ends exactly at the cap pass
        // while one more byte is noticed without reading any further.
        let allowed = self.limits.remaining().saturating_add(1);
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want]).inspect_err(|_| {
            self.read_error = true;
        })?;
        if n as u64 > self.limits.remaining() {
            self.over_limit = true;
            return Err(io::Error::other("unpacked size limit reached"));
        }
        self.limits.unpacked_bytes += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Tar headers

/// The type of a layer entry, once tar-format details are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

impl EntryKind {
    fn name(&self) -> &'static str {
        match self {
            EntryKind::File => "regular file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::Hardlink(_) => "hardlink",
            EntryKind::CharDevice { .. } => "character device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "FIFO",
        }
    }
}

/// One entry's header, owned and validated.
#[derive(Debug)]
struct EntryHeader {
    name: Vec<u8>,
    kind: EntryKind,
    meta: Meta,
    size: u64,
}

impl EntryHeader {
    fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Reads and validates an entry's header; `None` for headers that carry nothing to apply
/// (PAX global headers, stray extension headers, empty names).
fn parse_header<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<EntryHeader>, LayerError> {
    let name = until_nul(&entry.path_bytes()).to_vec();
    let path = String::from_utf8_lossy(&name).into_owned();
    let typeflag = entry.header().as_old().linkflag[0];
    let Some(kind) = entry_kind(entry, typeflag, &name, &path)? else {
        return Ok(None);
    };
    if name.is_empty() {
        return Ok(None);
    }
    let size = entry.size();
    if size != 0 && kind != EntryKind::File {
        return Err(LayerError::HeaderOnlyWithData {
            path,
            kind: kind.name(),
            size,
        });
    }
    let meta = entry_meta(entry, &kind, &path)?;
    Ok(Some(EntryHeader {
        name,
        kind,
        meta,
        size,
    }))
}

/// Mode, owner, mtime and xattrs of an entry, with PAX overrides applied.
fn entry_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    kind: &EntryKind,
    path: &str,
) -> Result<Meta, LayerError> {
    let invalid = |reason: String| LayerError::InvalidHeader {
        path: path.to_owned(),
        reason,
    };
    let header = entry.header();
    let raw = header.as_old();
    let mode =
        or_zero_if_blank(&raw.mode, header.mode()).map_err(|e| invalid(format!("mode: {e}")))?;
    let uid = id_field(or_zero_if_blank(&raw.uid, header.uid()))
        .map_err(|e| invalid(format!("uid: {e}")))?;
    let gid = id_field(or_zero_if_blank(&raw.gid, header.gid()))
        .map_err(|e| invalid(format!("gid: {e}")))?;
    let header_mtime =
        or_zero_if_blank(&raw.mtime, header.mtime()).map_err(|e| invalid(format!("mtime: {e}")))?;
    let pax = read_pax(entry).map_err(|e| invalid(format!("PAX records: {e}")))?;
    if pax.sparse {
        return Err(LayerError::SparseUnsupported {
            path: path.to_owned(),
        });
    }
    let mtime = match pax.mtime {
        Some(mtime) => mtime,
        None => i64::try_from(header_mtime).map_err(|e| invalid(format!("mtime: {e}")))?,
    };
    // Symlinks have no mode of their own on Linux (umoci never chmods them).
    let mode = if matches!(kind, EntryKind::Symlink(_)) {
        0o777
    } else {
        mode
    };
    let mut meta = Meta::new(mode, uid, gid, mtime);
    meta.xattrs = pax.xattrs;
    Ok(meta)
}

/// Maps a typeflag to an [`EntryKind`] the way Go's `archive/tar` does; `None` to skip.
fn entry_kind<R: Read>(
    entry: &tar::Entry<'_, R>,
    typeflag: u8,
    name: &[u8],
    path: &str,
) -> Result<Option<EntryKind>, LayerError> {
    let header = entry.header();
    let device = || -> Result<(u32, u32), LayerError> {
        let invalid = |e: io::Error| LayerError::InvalidHeader {
            path: path.to_owned(),
            reason: format!("device numbers: {e}"),
        };
        let (raw_major, raw_minor) = match (header.as_ustar(), header.as_gnu()) {
            (Some(ustar), _) => (&ustar.dev_major[..], &ustar.dev_minor[..]),
            (None, Some(gnu)) => (&gnu.dev_major[..], &gnu.dev_minor[..]),
            (None, None) => (&[][..], &[][..]),
        };
        let major = or_zero_if_blank(
            raw_major,
            header.device_major().map(Option::unwrap_or_default),
        )
        .map_err(invalid)?;
        let minor = or_zero_if_blank(
            raw_minor,
            header.device_minor().map(Option::unwrap_or_default),
        )
        .map_err(invalid)?;
        Ok((major, minor))
    };
    let link_name = || {
        entry
            .link_name_bytes()
            .map(|l| until_nul(&l).to_vec())
            .unwrap_or_default()
    };
    Ok(Some(match typeflag {
        // Old (pre-POSIX) archives mark directories only with a trailing slash.
        b'\0' if name.ends_with(b"/") => EntryKind::Dir,
        b'\0' | b'0' | b'7' | b'S' => EntryKind::File,
        b'1' => EntryKind::Hardlink(link_name()),
        b'2' => EntryKind::Symlink(link_name()),
        b'3' => {
            let (major, minor) = device()?;
            EntryKind::CharDevice { major, minor }
        }
        b'4' => {
            let (major, minor) = device()?;
            EntryKind::BlockDevice { major, minor }
        }
        b'5' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        // Global PAX headers carry no entry; the others only reach us from pre-POSIX headers
        // that the tar crate does not treat as extensions.
        b'g' | b'x' | b'L' | b'K' => return Ok(None),
        other => {
            return Err(LayerError::UnsupportedEntryType {
                path: path.to_owned(),
                typeflag: char::from(other),
            })
        }
    }))
}

/// The parts of an entry's PAX records the tar crate leaves to us.
#[derive(Default)]
struct PaxFields {
    mtime: Option<i64>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    sparse: bool,
}

fn read_pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<PaxFields> {
    let mut fields = PaxFields::default();
    let Some(records) = entry.pax_extensions()? else {
        return Ok(fields);
    };
    for record in records {
        let record = record?;
        let key = record.key_bytes();
        if key == b"mtime" {
            fields.mtime = Some(parse_pax_time(record.value_bytes())?);
        } else if key.starts_with(b"GNU.sparse.") {
            fields.sparse = true;
        } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            if !name.is_empty() && !IGNORED_XATTRS.contains(&name) {
                fields
                    .xattrs
                    .insert(name.to_vec(), record.value_bytes().to_vec());
            }
        }
    }
    Ok(fields)
}

/// Whole seconds of a PAX time (`[-]secs[.frac]`), rounded towards the past like Go's `Unix()`.
fn parse_pax_time(value: &[u8]) -> io::Result<i64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad PAX time");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let has_fraction = frac.bytes().any(|b| b != b'0');
    if text.starts_with('-') && has_fraction {
        secs.checked_sub(1).ok_or_else(bad)
    } else {
        Ok(secs)
    }
}

/// Go's tar reader reads a numeric field holding only NULs and spaces as zero, where the tar
/// crate reports an error; some writers leave unused fields blank.
fn or_zero_if_blank<T: Default>(raw: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        Ok(T::default())
    } else {
        parsed
    }
}

fn id_field(value: io::Result<u64>) -> io::Result<u32> {
    u32::try_from(value?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "over 2^32-1"))
}

/// The bytes before the first NUL, as C strings (and Go's tar reader) read them.
fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Paths

/// Splits a name into components, cleaned like umoci's `CleanPath`: empty and `.` components
/// vanish and `..` removes the previous component, never climbing above the root.
fn clean_components(name: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts
}

fn join_path<T: AsRef<[u8]>>(components: &[T]) -> Vec<u8> {
    let mut path = Vec::new();
    for component in components {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(component.as_ref());
    }
    path
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(parent.len() + 1 + name.len());
    path.extend_from_slice(parent);
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path resolved inside the tree: symlink-free components from the root and, if the path
/// exists, its inode.
struct Resolved {
    components: Vec<Vec<u8>>,
    inode: Option<InodeId>,
}

/// Resolves `components` from the root following symlinks inside the tree, the way
/// `securejoin.SecureJoinVFS` does on disk (see [`Rules::SECURE_JOIN`]): the result may name
/// something that does not exist yet. `None` on a symlink loop.
fn secure_join(tree: &Tree, components: &[&[u8]]) -> Option<Resolved> {
    let walked = resolve::walk_components(tree, components, Rules::SECURE_JOIN).ok()?;
    let inode = walked.inode();
    Some(Resolved {
        components: walked.names(),
        inode,
    })
}

// ---------------------------------------------------------------------------------------------
// Applying entries

struct Applier<'a> {
    tree: &'a mut Tree,
    spool: &'a mut Spool,
    limits: &'a mut Limits,
    /// Symlink-resolved paths this layer extracted, and all their ancestors.
    upper: HashSet<Vec<u8>>,
    /// Symlink-resolved directories whose lower children this layer already removed (opaque
    /// whiteouts, whiteouts of upper directories). Everything below them now is upper, so a
    /// second whiteout walk there would find nothing to remove: skipping it keeps whiteouts
    /// linear in the layer's size instead of quadratic (nested or repeated opaque whiteouts).
    opaque: HashSet<InodeId>,
    stats: LayerStats,
}

impl Applier<'_> {
    fn apply(&mut self, header: &EntryHeader, data: &mut impl Read) -> Result<(), LayerError> {
        let components = clean_components(&header.name);
        // Checked before resolving too, so that an absurdly long name is reported as such
        // rather than as a symlink loop once it exhausts the resolution budget.
        check_path_length(&components, header)?;
        self.check_depth(components.len(), header)?;
        let Some((name, parent)) = components.split_last() else {
            return self.apply_root(header);
        };
        let resolved_parent = self.resolve(parent, header)?;
        if name.starts_with(WHITEOUT_PREFIX) {
            self.stats.whiteouts += 1;
            self.whiteout(&resolved_parent, name);
            return Ok(());
        }
        check_name_lengths(&resolved_parent.components, name, header)?;
        // Symlinks in the parent path may resolve deeper than the name itself reads.
        self.check_depth(resolved_parent.components.len() + 1, header)?;
        let target_len = match &header.kind {
            EntryKind::Symlink(target) | EntryKind::Hardlink(target) => target.len(),
            _ => 0,
        };
        self.limits.charge_names(header.name.len() + target_len)?;
        let dir = self.make_parents(&resolved_parent.components, header)?;
        self.clobber(dir, name, &header.kind);
        match &header.kind {
            EntryKind::Dir => self.put_dir(dir, name, header),
            EntryKind::File => self.put_file(dir, name, header, data)?,
            EntryKind::Hardlink(target) => self.put_hardlink(dir, name, target, header)?,
            EntryKind::Symlink(target) => {
                check_symlink_target(target, header)?;
                let kind = Kind::Symlink(target.clone());
                self.put_node(dir, name, kind, header);
            }
            EntryKind::CharDevice { major, minor } => {
                let kind = Kind::CharDevice {
                    major: *major,
                    minor: *minor,
                };
                self.put_node(dir, name, kind, header);
            }
            EntryKind::BlockDevice { major, minor } => {
                let kind = Kind::BlockDevice {
                    major: *major,
                    minor: *minor,
                };
                self.put_node(dir, name, kind, header);
            }
            EntryKind::Fifo => self.put_node(dir, name, Kind::Fifo, header),
        }
        let mut path = resolved_parent.components;
        path.push(name.to_vec());
        self.mark_upper(&path)?;
        self.stats.entries += 1;
        Ok(())
    }

    /// An entry naming the root itself: only a directory may, and it only updates metadata.
    fn apply_root(&mut self, header: &EntryHeader) -> Result<(), LayerError> {
        if header.kind != EntryKind::Dir {
            return Err(LayerError::RootNotDirectory {
                path: header.display_name(),
            });
        }
        self.tree.inode_mut(ROOT).meta = header.meta.clone();
        self.stats.entries += 1;
        Ok(())
    }

    fn check_depth(&self, depth: usize, header: &EntryHeader) -> Result<(), LayerError> {
        let limit = self.limits.settings.max_path_depth;
        if depth > limit {
            return Err(LayerError::PathTooDeep {
                path: header.display_name(),
                limit,
            });
        }
        Ok(())
    }

    fn resolve(&self, components: &[&[u8]], header: &EntryHeader) -> Result<Resolved, LayerError> {
        secure_join(self.tree, components).ok_or_else(|| LayerError::SymlinkLoop {
            path: header.display_name(),
        })
    }

    fn whiteout(&mut self, parent: &Resolved, name: &[u8]) {
        let Some(dir) = parent.inode.filter(|id| self.tree.children(*id).is_some()) else {
            return;
        };
        if self.already_opaque(&parent.components) {
            // Nothing lower is left below: neither an opaque walk nor a plain whiteout (whose
            // victim, if any, is upper and keeps its upper content) has anything to remove.
            return;
        }
        let parent_path = join_path(&parent.components);
        if name == OPAQUE_WHITEOUT {
            self.remove_lower_children(dir, parent_path);
            return;
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if !is_plain_name(target) {
            return;
        }
        let Some(victim) = self.tree.lookup(dir, target) else {
            return;
        };
        let victim_path = child_path(&parent_path, target);
        if !self.upper.contains(&victim_path) {
            remove_entry(self.tree, dir, target);
        } else if self.tree.children(victim).is_some() {
            self.remove_lower_children(victim, victim_path);
        }
    }

    /// Whether the directory at `components` (symlink-free, from the root) or one of its
    /// ancestors already had its lower children removed in this layer.
    fn already_opaque(&self, components: &[Vec<u8>]) -> bool {
        let mut at = ROOT;
        if self.opaque.contains(&at) {
            return true;
        }
        for name in components {
            match self.tree.lookup(at, name) {
                Some(child) => at = child,
                None => return false,
            }
            if self.opaque.contains(&at) {
                return true;
            }
        }
        false
    }

    /// Removes everything below `dir` that this layer did not extract, keeping the upper paths
    /// and descending into upper directories (umoci's whiteout walk). Directories walked before
    /// in this layer are skipped: nothing lower is left below them.
    fn remove_lower_children(&mut self, dir: InodeId, dir_path: Vec<u8>) {
        let mut stack = vec![(dir, dir_path)];
        while let Some((dir, dir_path)) = stack.pop() {
            let children: Vec<(Vec<u8>, InodeId)> = match self.tree.children(dir) {
                Some(children) => children.iter().map(|(n, id)| (n.clone(), *id)).collect(),
                None => continue,
            };
            for (name, child) in children {
                self.stats.whiteout_steps += 1;
                let path = child_path(&dir_path, &name);
                if !self.upper.contains(&path) {
                    remove_entry(self.tree, dir, &name);
                } else if self.tree.children(child).is_some() && !self.opaque.contains(&child) {
                    stack.push((child, path));
                }
            }
            // Inode ids, not paths: checking an ancestor chain then costs lookups, not hashing
            // every prefix of a long path. An id freed and reused within the layer names a
            // directory created by this layer, whose whole content is upper: opaque is true.
            self.opaque.insert(dir);
        }
    }

    /// Walks the resolved parent path from the root, creating missing directories.
    fn make_parents(
        &mut self,
        components: &[Vec<u8>],
        header: &EntryHeader,
    ) -> Result<InodeId, LayerError> {
        let mut dir = ROOT;
        for (depth, name) in components.iter().enumerate() {
            dir = match self.tree.lookup(dir, name) {
                Some(child) if self.tree.children(child).is_some() => child,
                Some(_) => {
                    return Err(LayerError::NotADirectory {
                        path: header.display_name(),
                        parent: lossy(&join_path(&components[..=depth])),
                    })
                }
                None => {
                    let meta = Meta::new(0o755, 0, 0, header.meta.mtime);
                    let child = self.tree.add_inode(Kind::Dir(BTreeMap::new()), meta);
                    self.tree.link(dir, name.clone(), child);
                    child
                }
            };
        }
        Ok(dir)
    }

    /// Unlinks whatever `name` is unless both it and the new entry are directories.
    fn clobber(&mut self, dir: InodeId, name: &[u8], kind: &EntryKind) {
        let Some(existing) = self.tree.lookup(dir, name) else {
            return;
        };
        let both_dirs = *kind == EntryKind::Dir && self.tree.children(existing).is_some();
        if !both_dirs {
            remove_entry(self.tree, dir, name);
        }
    }

    fn put_dir(&mut self, dir: InodeId, name: &[u8], header: &EntryHeader) {
        match self.tree.lookup(dir, name) {
            Some(existing) => self.tree.inode_mut(existing).meta = header.meta.clone(),
            None => self.put_node(dir, name, Kind::Dir(BTreeMap::new()), header),
        }
    }

    fn put_node(&mut self, dir: InodeId, name: &[u8], kind: Kind, header: &EntryHeader) {
        let inode = self.tree.add_inode(kind, header.meta.clone());
        self.tree.link(dir, name.to_vec(), inode);
    }

    fn put_file(
        &mut self,
        dir: InodeId,
        name: &[u8],
        header: &EntryHeader,
        data: &mut impl Read,
    ) -> Result<(), LayerError> {
        // A declared size over the cap fails before a single byte is decompressed.
        if header.size > self.limits.remaining() {
            return Err(self.limits.too_large());
        }
        let mut metered = Metered::new(data, self.limits);
        let content = self
            .spool
            .append(&mut metered)
            .map_err(|e| metered.classify(e))?;
        if content.len() != header.size {
            return Err(LayerError::Truncated {
                path: header.display_name(),
                expected: header.size,
                got: content.len(),
            });
        }
        self.stats.bytes += content.len();
        self.put_node(dir, name, Kind::File(content), header);
        Ok(())
    }

    fn put_hardlink(
        &mut self,
        dir: InodeId,
        name: &[u8],
        target: &[u8],
        header: &EntryHeader,
    ) -> Result<(), LayerError> {
        let target_components = clean_components(target);
        check_path_length(&target_components, header)?;
        let missing = || LayerError::HardlinkTargetMissing {
            path: header.display_name(),
            target: lossy(target),
        };
        let is_dir = || LayerError::HardlinkToDirectory {
            path: header.display_name(),
            target: lossy(target),
        };
        // Like umoci, only the target's parent is resolved: a link to a symlink links the
        // symlink itself, as link(2) does.
        let Some((target_name, target_parent)) = target_components.split_last() else {
            return Err(is_dir());
        };
        let parent = self.resolve(target_parent, header)?;
        let inode = parent
            .inode
            .and_then(|parent| self.tree.lookup(parent, target_name))
            .ok_or_else(missing)?;
        if self.tree.children(inode).is_some() {
            return Err(is_dir());
        }
        self.tree.link(dir, name.to_vec(), inode);
        Ok(())
    }

    /// Marks `path` and its ancestors upper. Deepest first, stopping at the first one already
    /// marked (its ancestors are too), so an entry under a known directory costs one insert,
    /// not one per ancestor; the bytes kept are charged like names.
    fn mark_upper(&mut self, path: &[Vec<u8>]) -> Result<(), LayerError> {
        let full = join_path(path);
        let mut end = full.len();
        for component in path.iter().rev() {
            let prefix = &full[..end];
            if self.upper.contains(prefix) {
                break;
            }
            self.limits.charge_names(prefix.len())?;
            self.upper.insert(prefix.to_vec());
            end = end.saturating_sub(component.len() + 1);
        }
        Ok(())
    }

    /// Reads and discards the rest of an entry's data, charging it to the limits.
    fn drain(&mut self, data: &mut impl Read, path: &str) -> Result<(), LayerError> {
        let mut metered = Metered::new(data, self.limits);
        match io::copy(&mut metered, &mut io::sink()) {
            Ok(_) => Ok(()),
            Err(_) if metered.over_limit => Err(metered.limits.too_large()),
            Err(e) => Err(LayerError::Read(io::Error::new(
                e.kind(),
                format!("entry {path:?}: {e}"),
            ))),
        }
    }
}

/// Unlinks `name` from `dir` and, when that drops the last name of a directory, releases the
/// names held by its now unreachable subtree, so that every reachable inode's `nlink` keeps
/// counting only reachable names (a hardlink partner inside a removed directory must not
/// inflate the link count the squashfs writer records).
fn remove_entry(tree: &mut Tree, dir: InodeId, name: &[u8]) {
    let Some(removed) = tree.unlink(dir, name) else {
        return;
    };
    let mut orphans = vec![removed];
    // A file linked twice inside a removed directory is met twice: free it once.
    let mut freed = HashSet::new();
    while let Some(inode) = orphans.pop() {
        if tree.inode(inode).nlink != 0 || !freed.insert(inode) {
            continue;
        }
        if let Kind::Dir(children) = &mut tree.inode_mut(inode).kind {
            for child in std::mem::take(children).into_values() {
                let child_inode = tree.inode_mut(child);
                child_inode.nlink = child_inode.nlink.saturating_sub(1);
                orphans.push(child);
            }
        }
        // Unreachable now: its memory (xattrs, symlink target, children) goes, and its id is
        // reused, so replacing one name a million times keeps one inode, not a million.
        tree.release(inode);
    }
}

fn check_path_length(components: &[&[u8]], header: &EntryHeader) -> Result<(), LayerError> {
    if components.iter().map(|c| c.len() + 1).sum::<usize>() > PATH_MAX + 1 {
        return Err(LayerError::NameTooLong {
            path: header.display_name(),
        });
    }
    Ok(())
}

fn check_name_lengths(
    parent: &[Vec<u8>],
    name: &[u8],
    header: &EntryHeader,
) -> Result<(), LayerError> {
    let too_long = parent.iter().any(|c| c.len() > NAME_MAX)
        || name.len() > NAME_MAX
        || parent.iter().map(|c| c.len() + 1).sum::<usize>() + name.len() > PATH_MAX;
    if too_long || name.contains(&0) {
        return Err(LayerError::NameTooLong {
            path: header.display_name(),
        });
    }
    Ok(())
}

fn check_symlink_target(target: &[u8], header: &EntryHeader) -> Result<(), LayerError> {
    let reason = if target.is_empty() {
        "empty"
    } else if target.len() >= PATH_MAX {
        "longer than 4095 bytes"
    } else {
        return Ok(());
    };
    Err(LayerError::InvalidSymlink {
        path: header.display_name(),
        reason,
    })
}

/// Formats a byte count for messages: `4.0 GiB`, `512 B`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_components_clamps_at_root() {
        let clean = |s: &str| join_path(&clean_components(s.as_bytes()));
        assert_eq!(clean("/etc/passwd"), b"etc/passwd");
        assert_eq!(clean("./a/./b/"), b"a/b");
        assert_eq!(clean("../../etc/x"), b"etc/x");
        assert_eq!(clean("a/../../b"), b"b");
        assert_eq!(clean("/.."), b"");
        assert_eq!(clean("./"), b"");
    }

    #[test]
    fn media_types() {
        for layer in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert!(is_layer_media_type(layer), "{layer}");
        }
        for other in [
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.sylabs.sif.layer.v1.sif",
            "",
        ] {
            assert!(!is_layer_media_type(other), "{other}");
        }
    }

    #[test]
    fn pax_times_round_towards_the_past() {
        assert_eq!(parse_pax_time(b"1700000000.75").unwrap(), 1_700_000_000);
        assert_eq!(parse_pax_time(b"-1.5").unwrap(), -2);
        assert_eq!(parse_pax_time(b"-1.000").unwrap(), -1);
        assert!(parse_pax_time(b"12x").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
