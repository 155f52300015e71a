//! The driver: image config + layer streams in, SIF out.
//!
//! Steps, as `apptainer build x.sif docker://…` takes them: apply the layers into a tree,
//! add the `/.singularity.d` files, write the tree as squashfs, wrapped in a SIF with the
//! metadata objects. The squashfs is the SIF's last object and the others' sizes are known
//! before it is written, so it goes straight to its offset in the SIF (no scratch copy); the
//! header follows, and the file is read back once (from the page cache) to hash it. Only the
//! scratch spool touches the disk besides the output, as an anonymous file inside `work_dir`.
//!
//! The squashfs compression does not wait for the last layer: the spool compresses every full
//! data block of a large file as the file arrives, on the build's compression threads, with the
//! image's own options (`tree::Spool::packing_in`), and the squashfs writer copies those blocks.
//! Only fragments (files under a block, packed by the final tree) and the tables are left for
//! after the layers.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::layers::{self, LayerError, LimitSettings, Limits};
use crate::readahead;
use crate::sif::{self, ContainerOptions, SifError};
use crate::singularity::{self, ImageConfigFile, SingularityError};
use crate::squashfs::{self, BytesOnly, ImageSink, SquashfsError, SquashfsOptions};
use crate::tree::{Packing, Spool, Tree};

pub use crate::squashfs::Compression;

/// Read size when the finished SIF is hashed (hundreds of megabytes, from the page cache).
const HASH_BUFFER_LEN: usize = 1 << 20;

/// One layer blob as stored in the registry: its media type and its (still compressed) bytes.
pub struct LayerInput<'a> {
    pub media_type: String,
    pub reader: Box<dyn Read + Send + 'a>,
}

pub struct BuildInput<'a> {
    /// The image config blob, byte for byte.
    pub config_json: Vec<u8>,
    /// The manifest's layers, in manifest order.
    pub layers: Vec<LayerInput<'a>>,
    /// The image reference as users pull it, e.g. `127.0.0.1:5000/alice/tool:1`; it goes after
    /// `from: ` in the definition file and in the labels.
    pub source_ref: String,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub compression: Compression,
    /// Squashfs compression threads.
    pub threads: usize,
    /// Bounds on what the image may make the build hold and write (files, entries, xattrs,
    /// names, path depth, scratch space).
    pub limits: LimitSettings,
    /// Same input, same bytes out: nil UUID, Go zero time in the SIF, and every other clock
    /// (file times, build-date label, squashfs time) taken from the config's `created`.
    pub reproducible: bool,
    /// Scratch space; the spool lives here (the squashfs is written inside the SIF).
    pub work_dir: PathBuf,
    /// Compress the full data blocks of large files while the layers are applied, instead of
    /// after (see `tree::Spool::packing_in`). The output is the same either way; off is for
    /// tests and measurements.
    pub precompress: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            compression: Compression::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: LimitSettings::DEFAULT,
            reproducible: false,
            work_dir: std::env::temp_dir(),
            precompress: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Go `GOARCH` name recorded in the SIF, e.g. `amd64`.
    pub arch: String,
    pub sif_size: u64,
    pub squashfs_size: u64,
    /// Bytes of file content unpacked from the layers.
    pub unpacked_bytes: u64,
    /// Entries in the final filesystem (the root directory not counted).
    pub files: u64,
    /// Layers applied (entries without a layer media type are skipped).
    pub layers: usize,
    /// SHA-256 of the SIF file, lowercase hex, read back once it was written.
    pub sif_sha256: String,
    /// Where the build's time went.
    pub timings: BuildTimings,
}

/// Wall time of each step of a build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildTimings {
    /// Decompressing and applying the layers (the decompressor runs a bounded distance ahead
    /// on its own thread), with the compression of every large file's full data blocks on
    /// `threads` threads alongside (unless `precompress` is off).
    pub unpack: Duration,
    /// Adding `/.singularity.d`, then writing the squashfs in place inside the SIF (after the
    /// small metadata objects): compressing the fragments (and whatever was not compressed
    /// while unpacking) on `threads` threads, copying the rest.
    pub squashfs: Duration,
    /// Finishing the SIF around the squashfs: the header, then reading the file back once to
    /// hash it.
    pub sif: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the image config is not valid JSON of the expected shape: {0}")]
    BadConfig(#[source] serde_json::Error),
    #[error(
        "the image has no filesystem layers ({count} manifest entries, none with a layer media \
         type), so there is nothing to convert"
    )]
    NoLayers { count: usize },
    #[error("layer {index} of the image ({media_type}): {source}")]
    Layer {
        /// 1-based position in the manifest.
        index: usize,
        media_type: String,
        #[source]
        source: LayerError,
    },
    #[error("adding Apptainer's files to the image: {0}")]
    Singularity(#[from] SingularityError),
    #[error("writing the squashfs filesystem: {0}")]
    Squashfs(#[from] SquashfsError),
    #[error("writing the SIF file: {0}")]
    Sif(#[from] SifError),
    #[error("cannot use the scratch directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the build writes more than {limit} bytes to its scratch space (limit set by farm.max_scratch_bytes)"
    )]
    ScratchFull { limit: u64 },
    #[error("I/O error while building the SIF: {0}")]
    Io(#[from] io::Error),
}

impl BuildError {
    /// True when the same image would fail the same way again: a limit of the image's own
    /// making. Malformed input and I/O errors are left to the retry policy.
    pub fn is_permanent(&self) -> bool {
        match self {
            BuildError::ScratchFull { .. } => true,
            BuildError::Layer { source, .. } => matches!(
                source,
                LayerError::TooLarge { .. }
                    | LayerError::ScratchFull { .. }
                    | LayerError::TooManyEntries { .. }
                    | LayerError::NamesTooLarge { .. }
                    | LayerError::XattrsTooLarge { .. }
                    | LayerError::EntryXattrsTooLarge { .. }
                    | LayerError::PathTooDeep { .. }
                    | LayerError::ExtensionTooLarge { .. }
            ),
            _ => false,
        }
    }
}

/// Converts one image into a SIF written to `out` from offset 0 (`out` is left positioned at
/// the end of the SIF). The SIF is written out of order (the squashfs in place, the header
/// last) and then read back once to hash it, hence `Read`.
pub fn build_sif<W: Read + Write + Seek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
) -> Result<BuildReport, BuildError> {
    build_outputs(input, opts, &mut BytesOnly(out), None)
}

/// [`build_sif`] into an output that takes file ranges ([`ImageSink`]: a `File` opened for
/// reading and writing, or a wrapper around one): the same bytes, but the data blocks
/// compressed while the layers were applied, most of the image, are copied from the spool
/// into the SIF in the kernel rather than through this process.
pub fn build_sif_into<W: ReadWriteSeek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
) -> Result<BuildReport, BuildError> {
    build_outputs(input, opts, out, None)
}

/// Like [`build_sif`], and then writes the enroot image of the same tree (the SIF's root
/// filesystem plus enroot's `/etc/rc`, `/etc/environment` and `/etc/fstab`, see [`crate::enroot`])
/// as a squashfs to `enroot_out`; returns its size with the report.
pub fn build_sif_and_enroot<W: Read + Write + Seek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
    enroot_out: &mut dyn WriteSeek,
) -> Result<(BuildReport, u64), BuildError> {
    build_sif_and_enroot_into(input, opts, &mut BytesOnly(out), enroot_out)
}

/// [`build_sif_and_enroot`] with the SIF going into an [`ImageSink`], as [`build_sif_into`].
pub fn build_sif_and_enroot_into<W: ReadWriteSeek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
    enroot_out: &mut dyn WriteSeek,
) -> Result<(BuildReport, u64), BuildError> {
    let mut enroot_size = 0;
    let enroot = Some((enroot_out, &mut enroot_size));
    let report = build_outputs(input, opts, out, enroot)?;
    Ok((report, enroot_size))
}

fn build_outputs<W: ReadWriteSeek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
    enroot: Option<(&mut dyn WriteSeek, &mut u64)>,
) -> Result<BuildReport, BuildError> {
    let config: ImageConfigFile =
        serde_json::from_slice(&input.config_json).map_err(BuildError::BadConfig)?;
    let clock = BuildClock::new(&config, opts.reproducible)?;
    let squashfs_opts = squashfs_options(opts, &clock);
    // Checked before any block is compressed with them.
    squashfs::validate(&squashfs_opts)?;
    let mut tree = Tree::new();
    let spool = match opts.precompress {
        true => Spool::packing_in(
            &opts.work_dir,
            Packing {
                compression: squashfs_opts.compression,
                block_size: squashfs_opts.block_size,
                threads: squashfs_opts.threads,
            },
        ),
        false => Spool::new_in(&opts.work_dir),
    };
    let mut spool = spool.map_err(|source| work_dir_error(opts, source))?;

    let mut limits = Limits::with(opts.limits);
    let started = Instant::now();
    let layer_count = apply_layers(&mut tree, &mut spool, input.layers, &mut limits)?;
    // The last blocks compressed while unpacking are written before anything reads the files.
    spool.settle()?;
    let unpacked = Instant::now();

    let arch = singularity::detect_arch(&tree, &spool, &config.architecture)?;
    let metadata = singularity::add(
        &mut tree,
        &mut spool,
        &singularity::Input {
            config: &config,
            source_ref: &input.source_ref,
            arch: &arch,
            build_time: clock.file_time,
        },
    )?;

    // The SIF is written in place: the squashfs goes straight to its partition offset (the
    // spool is still on disk meanwhile: both count against the scratch budget), then the
    // header; then the finished file is read back once, from the page cache, to hash it.
    let mut meter = ScratchMeter::new(
        &mut *out,
        opts.limits.max_scratch_bytes.saturating_sub(spool.len()),
    );
    let written = write_sif(&mut meter, &metadata, &arch, &clock, |out| {
        let size = write_squashfs_into(&tree, &spool, &squashfs_opts, out)?;
        Ok((size, Instant::now()))
    });
    let exceeded = meter.exceeded;
    let (sif_size, squashfs_size, squashed) =
        written.map_err(|e| scratch_error(exceeded, opts, e))?;
    let files = count_entries(&tree);
    let (sif_sha256, finished) = match enroot {
        None => {
            // Nothing reads the spool or the tree any more. Closing the spool frees its page
            // cache (hundreds of MB on a large image), which takes about half as long as the hash:
            // done on the other core while this one hashes.
            let scratch = (spool, tree);
            let sif_sha256 = thread::scope(|scope| {
                scope.spawn(move || drop(scratch));
                sha256_of(out, sif_size)
            })?;
            // (the scope waited for the spool to close: it is part of the build's time)
            (sif_sha256, Instant::now())
        }
        Some((enroot_out, enroot_size)) => {
            let sif_sha256 = sha256_of(out, sif_size)?;
            let finished = Instant::now();
            crate::enroot::add(&mut tree, &mut spool, &config.config, clock.file_time)?;
            let (out, size) =
                write_squashfs_metered(&tree, &spool, opts, &squashfs_opts, enroot_out)?;
            out.flush()?;
            *enroot_size = size;
            (sif_sha256, finished)
        }
    };
    Ok(BuildReport {
        arch,
        sif_size,
        squashfs_size,
        unpacked_bytes: limits.unpacked_bytes,
        files,
        layers: layer_count,
        sif_sha256,
        timings: BuildTimings {
            unpack: unpacked - started,
            squashfs: squashed - unpacked,
            sif: finished - squashed,
        },
    })
}

/// The times a build stamps into its output.
struct BuildClock {
    /// mtime of the added files and the build-date label.
    file_time: i64,
    /// Squashfs superblock time.
    mkfs_time: u32,
    /// SIF header and descriptor times, and the image UUID.
    sif: ContainerOptions,
}

impl BuildClock {
    fn new(config: &ImageConfigFile, reproducible: bool) -> io::Result<Self> {
        if reproducible {
            // Apptainer's reproducible builds take SOURCE_DATE_EPOCH from the config's
            // `created`; an image without one gets the Unix epoch.
            let created = singularity::parse_rfc3339(&config.created).unwrap_or(0);
            return Ok(BuildClock {
                file_time: created,
                mkfs_time: created.clamp(0, i64::from(u32::MAX)) as u32,
                sif: ContainerOptions::deterministic(),
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(BuildClock {
            file_time: now,
            mkfs_time: now.clamp(0, i64::from(u32::MAX)) as u32,
            sif: ContainerOptions {
                id: sif::random_uuid_v4()?,
                time: now,
            },
        })
    }
}

/// Decompresses and applies every layer with a layer media type, in order; other manifest
/// entries (e.g. foreign or attestation blobs) are skipped as Apptainer skips them.
fn apply_layers(
    tree: &mut Tree,
    spool: &mut Spool,
    layers: Vec<LayerInput<'_>>,
    limits: &mut Limits,
) -> Result<usize, BuildError> {
    let count = layers.len();
    let mut applied = 0;
    for (position, layer) in layers.into_iter().enumerate() {
        if !layers::is_layer_media_type(&layer.media_type) {
            continue;
        }
        let layer_error = |source| BuildError::Layer {
            index: position + 1,
            media_type: layer.media_type.clone(),
            source,
        };
        let tar = layers::decompress(&layer.media_type, layer.reader).map_err(layer_error)?;
        apply_read_ahead(tree, spool, tar, limits).map_err(layer_error)?;
        applied += 1;
    }
    if applied == 0 {
        return Err(BuildError::NoLayers { count });
    }
    Ok(applied)
}

/// Applies one decompressed layer while a second thread decompresses ahead of it.
fn apply_read_ahead(
    tree: &mut Tree,
    spool: &mut Spool,
    tar: Box<dyn Read + Send + '_>,
    limits: &mut Limits,
) -> Result<(), LayerError> {
    thread::scope(|scope| {
        let (reader, decompressor) = readahead::spawn(scope, tar);
        // The reader is dropped when apply_layer returns, which ends the decompressor thread
        // even when the layer failed half way.
        let applied = layers::apply_layer(tree, spool, reader, limits);
        let joined = decompressor.join();
        applied?;
        joined.map_err(|_| {
            LayerError::Read(io::Error::other("the layer decompressor thread panicked"))
        })
    })
}

/// The squashfs options of both images a build writes (the SIF's and the enroot image), and of
/// the blocks its spool compresses ahead.
fn squashfs_options(opts: &BuildOptions, clock: &BuildClock) -> SquashfsOptions {
    SquashfsOptions {
        compression: opts.compression,
        threads: opts.threads.max(1),
        mkfs_time: clock.mkfs_time,
        ..SquashfsOptions::default()
    }
}

/// Writes `tree` as squashfs into `out` within the scratch budget (the spool, still on disk,
/// counts too); returns `out` and the squashfs size.
fn write_squashfs_metered<W: Write + Seek>(
    tree: &Tree,
    spool: &Spool,
    opts: &BuildOptions,
    squashfs_opts: &SquashfsOptions,
    out: W,
) -> Result<(W, u64), BuildError> {
    // The spool is still on disk while the squashfs is written: both count (packed files with
    // their compressed size, which is what the spool file holds).
    let budget = opts.limits.max_scratch_bytes.saturating_sub(spool.len());
    let mut meter = ScratchMeter::new(BytesOnly(out), budget);
    let written = write_squashfs_into(tree, spool, squashfs_opts, &mut meter);
    let size = written.map_err(|e| scratch_error(meter.exceeded, opts, e))?;
    Ok((meter.inner.0, size))
}

/// Writes `tree` as squashfs at `out`'s position, buffered; returns the image size.
fn write_squashfs_into<W: ImageSink + Seek>(
    tree: &Tree,
    spool: &Spool,
    squashfs_opts: &SquashfsOptions,
    out: &mut W,
) -> Result<u64, BuildError> {
    let mut writer = BufWriter::new(out);
    let size = squashfs::write_squashfs_to(tree, spool, &mut writer, squashfs_opts)?;
    writer.flush()?;
    Ok(size)
}

fn scratch_error(exceeded: bool, opts: &BuildOptions, error: BuildError) -> BuildError {
    if exceeded {
        BuildError::ScratchFull {
            limit: opts.limits.max_scratch_bytes,
        }
    } else {
        error
    }
}

/// Where the enroot image goes: a file, or anything else that seeks.
pub trait WriteSeek: Write + Seek {}
impl<T: Write + Seek> WriteSeek for T {}

/// Where the SIF goes in [`build_sif_into`]: a file, or anything else that seeks, reads back
/// what was written and takes file ranges ([`ImageSink`]; wrap a plain writer in
/// [`BytesOnly`], as [`build_sif`] does).
pub trait ReadWriteSeek: Read + Write + Seek + ImageSink {}
impl<T: Read + Write + Seek + ImageSink> ReadWriteSeek for T {}

/// Refuses writes that would take a file past `budget` bytes, so one build cannot fill the
/// disk its scratch directory is on; remembers that it refused, to name the limit.
struct ScratchMeter<W> {
    inner: W,
    budget: u64,
    position: u64,
    exceeded: bool,
}

impl<W> ScratchMeter<W> {
    fn new(inner: W, budget: u64) -> Self {
        ScratchMeter {
            inner,
            budget,
            position: 0,
            exceeded: false,
        }
    }
}

impl<W: Write> Write for ScratchMeter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.position.saturating_add(buf.len() as u64) > self.budget {
            self.exceeded = true;
            return Err(io::Error::other("scratch space limit reached"));
        }
        let n = self.inner.write(buf)?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: ImageSink> ImageSink for ScratchMeter<W> {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> io::Result<bool> {
        if self.position.saturating_add(len) > self.budget {
            self.exceeded = true;
            return Err(io::Error::other("scratch space limit reached"));
        }
        let appended = self.inner.append_file_range(src, offset, len)?;
        if appended {
            self.position += len;
        }
        Ok(appended)
    }
}

impl<W: Seek> Seek for ScratchMeter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.position = self.inner.seek(pos)?;
        Ok(self.position)
    }
}

/// Writes the four objects of an `apptainer build` SIF into `out` from offset 0, the squashfs
/// in place by `write_squashfs` (given `out` at the partition offset; returns the image size
/// and whatever else it measured); returns the SIF size, the squashfs size and that measure.
fn write_sif<W: Write + Seek, T>(
    out: &mut W,
    metadata: &singularity::SifMetadata,
    arch: &str,
    clock: &BuildClock,
    write_squashfs: impl FnOnce(&mut W) -> Result<(u64, T), BuildError>,
) -> Result<(u64, u64, T), BuildError> {
    let arch_code = sif::arch_code(arch)
        .ok_or_else(|| SingularityError::UnknownArchitecture(Some(arch.to_string())))?;
    let mut deffile = &metadata.deffile[..];
    let mut inspect = &metadata.inspect_metadata_json[..];
    let mut oci_config = &metadata.oci_config_json[..];
    let sizes = [
        deffile.len() as u64,
        inspect.len() as u64,
        oci_config.len() as u64,
    ];
    let objects = sif::ApptainerObjects {
        deffile: &mut deffile,
        inspect_metadata: &mut inspect,
        oci_config: &mut oci_config,
        // Not read: the squashfs is written in place.
        squashfs: &mut io::empty(),
        arch: arch_code,
    };
    let mut squashfs = None;
    let layout = sif::write_container_last_in_place(
        out,
        &clock.sif,
        &mut objects.into_inputs(),
        &sizes,
        |out| {
            let (size, measured) = write_squashfs(out)?;
            squashfs = Some(measured);
            Ok::<_, BuildError>(size)
        },
    )?;
    let squashfs_size = layout.objects.last().map_or(0, |o| o.size);
    let measured = squashfs.expect("the squashfs was written when the SIF was");
    Ok((layout.total_size, squashfs_size, measured))
}

/// SHA-256 of the first `len` bytes of `file` (lowercase hex), read once front to back: the
/// SIF was written out of order, so its digest is taken when it is complete (from the page
/// cache, just written).
fn sha256_of<F: Read + Seek>(file: &mut F, len: u64) -> Result<String, BuildError> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_LEN];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(BuildError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the SIF file ends {left} bytes short of the {len} bytes written"),
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn count_entries(tree: &Tree) -> u64 {
    let mut count = 0;
    tree.walk(|path, _| count += u64::from(!path.is_empty()));
    count
}

fn work_dir_error(opts: &BuildOptions, source: io::Error) -> BuildError {
    BuildError::WorkDir {
        path: opts.work_dir.clone(),
        source,
    }
}
