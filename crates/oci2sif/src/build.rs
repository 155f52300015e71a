//! The driver: image config + layer streams in, SIF out.
//!
//! Steps, as `apptainer build x.sif docker://…` takes them: apply the layers into a tree,
//! add the `/.singularity.d` files, write the tree as squashfs to a scratch file, then wrap the
//! squashfs and the metadata objects in a SIF. Only the scratch spool and the scratch squashfs
//! touch the disk, both as anonymous files inside `work_dir`.
//!
//! The squashfs compression does not wait for the last layer: the spool compresses every full
//! data block of a large file as the file arrives, on the build's compression threads, with the
//! image's own options (`tree::Spool::packing_in`), and the squashfs writer copies those blocks.
//! Only fragments (files under a block, packed by the final tree) and the tables are left for
//! after the layers.

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::layers::{self, LayerError, LimitSettings, Limits};
use crate::readahead;
use crate::sif::{self, ContainerOptions, SifError};
use crate::singularity::{self, ImageConfigFile, SingularityError};
use crate::squashfs::{self, SquashfsError, SquashfsOptions};
use crate::tree::{Packing, Spool, Tree};

pub use crate::squashfs::Compression;

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
    /// Scratch space; the spool and the temporary squashfs live here.
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
    /// SHA-256 of the SIF file, lowercase hex, computed while it was written.
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
    /// Adding `/.singularity.d`, then writing the squashfs: compressing the fragments (and
    /// whatever was not compressed while unpacking) on `threads` threads, copying the rest.
    pub squashfs: Duration,
    /// Writing (and hashing) the SIF around the squashfs.
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
/// the end of the SIF).
pub fn build_sif<W: Write + Seek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
) -> Result<BuildReport, BuildError> {
    build_outputs(input, opts, out, None)
}

/// Like [`build_sif`], and then writes the enroot image of the same tree (the SIF's root
/// filesystem plus enroot's `/etc/rc`, `/etc/environment` and `/etc/fstab`, see [`crate::enroot`])
/// as a squashfs to `enroot_out`; returns its size with the report.
pub fn build_sif_and_enroot<W: Write + Seek>(
    input: BuildInput<'_>,
    opts: &BuildOptions,
    out: &mut W,
    enroot_out: &mut dyn WriteSeek,
) -> Result<(BuildReport, u64), BuildError> {
    let mut enroot_size = 0;
    let report = build_outputs(input, opts, out, Some((enroot_out, &mut enroot_size)))?;
    Ok((report, enroot_size))
}

fn build_outputs<W: Write + Seek>(
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

    let (mut squashfs_file, squashfs_size) =
        write_squashfs_scratch(&tree, &spool, opts, &squashfs_opts)?;
    let squashed = Instant::now();
    // The spool is no longer needed (unless the enroot image follows): free its disk space
    // before the SIF copy needs as much again.
    let spool = match enroot {
        Some(_) => Some(spool),
        None => {
            drop(spool);
            None
        }
    };
    let partition = Partition {
        file: &mut squashfs_file,
        size: squashfs_size,
        arch: &arch,
    };
    // The scratch squashfs stays on disk while the SIF is written next to it.
    out.seek(SeekFrom::Start(0))?;
    let mut out = Sha256Writer {
        inner: ScratchMeter::new(
            out,
            opts.limits.max_scratch_bytes.saturating_sub(squashfs_size),
        ),
        hasher: Sha256::new(),
    };
    let written = write_sif(&mut out, &metadata, partition, &clock);
    let sif_size = written.map_err(|e| scratch_error(out.inner.exceeded, opts, e))?;
    if let (Some((enroot_out, enroot_size)), Some(mut spool)) = (enroot, spool) {
        crate::enroot::add(&mut tree, &mut spool, &config.config, clock.file_time)?;
        let (out, size) = write_squashfs_metered(&tree, &spool, opts, &squashfs_opts, enroot_out)?;
        out.flush()?;
        *enroot_size = size;
    }
    Ok(BuildReport {
        arch,
        sif_size,
        squashfs_size,
        unpacked_bytes: limits.unpacked_bytes,
        files: count_entries(&tree),
        layers: layer_count,
        sif_sha256: hex::encode(out.hasher.finalize()),
        timings: BuildTimings {
            unpack: unpacked - started,
            squashfs: squashed - unpacked,
            sif: squashed.elapsed(),
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

fn write_squashfs_scratch(
    tree: &Tree,
    spool: &Spool,
    opts: &BuildOptions,
    squashfs_opts: &SquashfsOptions,
) -> Result<(std::fs::File, u64), BuildError> {
    let file =
        tempfile::tempfile_in(&opts.work_dir).map_err(|source| work_dir_error(opts, source))?;
    let (mut file, size) = write_squashfs_metered(tree, spool, opts, squashfs_opts, file)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, size))
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
    let mut writer = BufWriter::new(ScratchMeter::new(out, budget));
    let result = squashfs::write_squashfs(tree, spool, &mut writer, squashfs_opts);
    let exceeded = writer.get_ref().exceeded;
    let size = result.map_err(|e| scratch_error(exceeded, opts, e.into()))?;
    let out = writer
        .into_inner()
        .map_err(|e| scratch_error(exceeded, opts, e.into_error().into()))?
        .inner;
    Ok((out, size))
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

impl<W: Seek> Seek for ScratchMeter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.position = self.inner.seek(pos)?;
        Ok(self.position)
    }
}

/// The scratch squashfs image, positioned at its start.
struct Partition<'a> {
    file: &'a mut std::fs::File,
    size: u64,
    arch: &'a str,
}

/// Writes the four objects of an `apptainer build` SIF front to back, streaming the squashfs in.
fn write_sif<W: Write>(
    out: &mut W,
    metadata: &singularity::SifMetadata,
    squashfs: Partition<'_>,
    clock: &BuildClock,
) -> Result<u64, BuildError> {
    let arch_code = sif::arch_code(squashfs.arch)
        .ok_or_else(|| SingularityError::UnknownArchitecture(Some(squashfs.arch.to_string())))?;
    let mut deffile = &metadata.deffile[..];
    let mut inspect = &metadata.inspect_metadata_json[..];
    let mut oci_config = &metadata.oci_config_json[..];
    let sizes = [
        deffile.len() as u64,
        inspect.len() as u64,
        oci_config.len() as u64,
        squashfs.size,
    ];
    // Exactly the image the writer reported, whatever the scratch file holds beyond it.
    let mut partition = squashfs.file.take(squashfs.size);
    let objects = sif::ApptainerObjects {
        deffile: &mut deffile,
        inspect_metadata: &mut inspect,
        oci_config: &mut oci_config,
        squashfs: &mut partition,
        arch: arch_code,
    };
    let layout = sif::write_container_sized(out, &clock.sif, &mut objects.into_inputs(), &sizes)?;
    Ok(layout.total_size)
}

/// Hashes what goes through it: the SIF's digest comes with the file, without reading it again.
struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
