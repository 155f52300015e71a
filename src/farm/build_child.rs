//! The build process: `hpc-registry build-child SPEC` (hidden), started by [`super::sandbox`]
//! for every native build, so that an image that exhausts memory or time takes down this
//! process, never the server. Its priority and memory limit were set before it started
//! ([`super::containment`]); it converts the image with `oci2sif` and reports one JSON line on
//! stdout.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::progress::{Meter, Progress};
use crate::config::{CompressionName, FarmConfig};

/// How often the build process reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Read buffer per layer: layers are streamed, never loaded whole.
const LAYER_BUFFER: usize = 1 << 20;

/// What the server asks the build process to build (written to `spec.json` in the workspace).
#[derive(Debug, Serialize, Deserialize)]
pub struct BuildSpec {
    /// `[farm]`: compression, threads, limits, priority.
    pub farm: FarmConfig,
    /// The image config, already read (size-capped) and checked by the server.
    pub config: PathBuf,
    /// Each layer, in manifest order: blobs of the job's repository.
    pub layers: Vec<LayerFile>,
    /// What the SIF's deffile says it was built from (the image digest).
    pub source_ref: String,
    /// Scratch space of this build.
    pub work_dir: PathBuf,
    /// Where the SIF goes.
    pub out: PathBuf,
    /// Where the enroot image of the same tree goes (pyxis's squashfs), if one is wanted:
    /// one conversion, two outputs.
    #[serde(default)]
    pub enroot_out: Option<PathBuf>,
    /// Write the enroot image only: the SIF is converted but its bytes are discarded, never
    /// written (a SIF another backend built gets its enroot image this way).
    #[serde(default)]
    pub enroot_only: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LayerFile {
    pub media_type: String,
    pub digest: String,
    pub path: PathBuf,
    /// Its size as stored (what "bytes expected" counts).
    pub size: u64,
}

/// A progress report (a JSON line on stdout, any number before the [`Outcome`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressLine {
    pub progress: Progress,
}

/// The build process's last word (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    Built {
        log: String,
        /// SHA-256 of the SIF (lowercase hex), taken by the build process as it finishes the
        /// file (read back from the page cache): whoever sends the file on needs no pass of its own.
        sif_sha256: String,
    },
    Failed {
        reason: String,
        log: String,
        permanent: bool,
    },
}

/// The squashfs compression `[farm]` asks for.
pub fn compression(c: &FarmConfig) -> oci2sif::Compression {
    match c.compression {
        CompressionName::Gzip => oci2sif::Compression::Gzip {
            level: c.compression_level.unwrap_or(9).clamp(1, 9) as u32,
        },
        CompressionName::Zstd => oci2sif::Compression::Zstd {
            level: c.compression_level.unwrap_or(3).clamp(1, 22),
        },
    }
}

/// The builder's limits on what an image may make it hold, from `[farm]`.
pub fn limits(c: &FarmConfig) -> oci2sif::layers::LimitSettings {
    oci2sif::layers::LimitSettings {
        max_unpacked_bytes: c.max_unpacked_bytes,
        max_entries: c.max_entries,
        max_extension_bytes: c.max_extension_bytes,
        max_xattr_bytes_per_entry: c.max_xattr_bytes_per_entry,
        max_xattr_bytes: c.max_xattr_bytes,
        max_name_bytes: c.max_name_bytes,
        max_path_depth: c.max_path_depth,
        max_scratch_bytes: c.max_scratch_bytes,
    }
}

/// Compression threads per build (`threads = 0`: every core).
pub fn threads(c: &FarmConfig) -> usize {
    match c.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

/// Entry point of `hpc-registry build-child SPEC`; returns the process's exit code.
pub fn main(spec_path: &Path) -> i32 {
    let spec: BuildSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("build-child: cannot read {}: {e}", spec_path.display());
            return 2;
        }
    };
    let meter = Meter::new(
        spec.layers.len() as u64,
        spec.layers.iter().map(|l| l.size).sum(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (meter, done) = (Arc::clone(&meter), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let line = ProgressLine {
                    progress: meter.snapshot(),
                };
                if !report(&line) {
                    return;
                }
                std::thread::park_timeout(PROGRESS_EVERY);
            }
        })
    };
    let outcome = build(&spec, &meter);
    done.store(true, Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    if report(&outcome) {
        0
    } else {
        2
    }
}

/// Writes one JSON line to stdout; false if the server is gone.
fn report(line: &impl Serialize) -> bool {
    let line = serde_json::to_string(line).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}

/// The SIF file, telling the meter when the writing phase begins. oci2sif writes the squashfs
/// in place while it compresses, and the header (at offset 0) last, once the squashfs is
/// complete: that write starts the phase. Reads are the SIF being hashed when it is done.
struct SifOut<'a> {
    file: File,
    meter: &'a Meter,
    position: u64,
}

impl Write for SifOut<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.position == 0 {
            self.meter.writing();
        }
        let n = self.file.write(buf)?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for SifOut<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.position = self.file.seek(pos)?;
        Ok(self.position)
    }
}

/// The data blocks the spool already compressed go in as file ranges, in the kernel (never at
/// offset 0: the header is what starts the writing phase).
impl oci2sif::ImageSink for SifOut<'_> {
    fn append_file_range(&mut self, src: &File, offset: u64, len: u64) -> std::io::Result<bool> {
        let appended = self.file.append_file_range(src, offset, len)?;
        if appended {
            self.position += len;
        }
        Ok(appended)
    }
}

impl Read for SifOut<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// A SIF nobody wants ([`BuildSpec::enroot_only`]): bytes counted and dropped, seeks tracked.
/// It reads back as zeros (the digest of such a build describes nothing and is not used).
#[derive(Default)]
struct Discard {
    position: u64,
    end: u64,
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.position += buf.len() as u64;
        self.end = self.end.max(self.position);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ranges are counted and dropped like bytes, without reading them.
impl oci2sif::ImageSink for Discard {
    fn append_file_range(&mut self, _: &File, _: u64, len: u64) -> std::io::Result<bool> {
        self.position += len;
        self.end = self.end.max(self.position);
        Ok(true)
    }
}

impl Read for Discard {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for Discard {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

fn failed(reason: String, log: String, permanent: bool) -> Outcome {
    Outcome::Failed {
        reason,
        log,
        permanent,
    }
}

fn build(spec: &BuildSpec, meter: &Arc<Meter>) -> Outcome {
    let mut log = String::new();
    let config_json = match std::fs::read(&spec.config) {
        Ok(b) => b,
        Err(e) => return failed(format!("cannot read the image config: {e}"), log, false),
    };
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let file = match File::open(&layer.path) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("cannot read layer {} ({}): {e}", i + 1, layer.digest);
                return failed(reason, log, false);
            }
        };
        log.push_str(&format!(
            "layer {}/{}: {} ({})\n",
            i + 1,
            spec.layers.len(),
            layer.digest,
            layer.media_type
        ));
        layers.push(oci2sif::LayerInput {
            media_type: layer.media_type.clone(),
            reader: Box::new(meter.reader(i as u64, BufReader::with_capacity(LAYER_BUFFER, file))),
        });
    }
    let options = oci2sif::BuildOptions {
        compression: compression(&spec.farm),
        threads: threads(&spec.farm),
        limits: limits(&spec.farm),
        reproducible: spec.farm.reproducible,
        work_dir: spec.work_dir.clone(),
        precompress: true,
    };
    let input = oci2sif::BuildInput {
        config_json,
        layers,
        source_ref: spec.source_ref.clone(),
    };
    let mut out: Box<dyn oci2sif::build::ReadWriteSeek + '_> = if spec.enroot_only {
        Box::new(Discard::default())
    } else {
        // Read back to hash it, hence read and write.
        match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spec.out)
        {
            Ok(file) => Box::new(SifOut {
                file,
                meter,
                position: 0,
            }),
            Err(e) => return failed(format!("cannot create the SIF file: {e}"), log, false),
        }
    };
    let built = match &spec.enroot_out {
        Some(path) => match File::create(path) {
            Ok(mut enroot) => {
                oci2sif::build_sif_and_enroot_into(input, &options, &mut out, &mut enroot)
                    .map(|(report, size)| (report, Some(size)))
            }
            Err(e) => {
                return failed(
                    format!("cannot create the enroot image file: {e}"),
                    log,
                    false,
                )
            }
        },
        None => oci2sif::build_sif_into(input, &options, &mut out).map(|report| (report, None)),
    };
    match built {
        Ok((report, enroot_size)) => {
            log.push_str(&format!(
                "built {} bytes: arch {}, {} files, {} bytes unpacked, squashfs {} bytes ({:?})\n",
                report.sif_size,
                report.arch,
                report.files,
                report.unpacked_bytes,
                report.squashfs_size,
                options.compression
            ));
            if let Some(size) = enroot_size {
                log.push_str(&format!("enroot image: squashfs {size} bytes\n"));
            }
            Outcome::Built {
                log,
                sif_sha256: report.sif_sha256,
            }
        }
        Err(e) => {
            let reason = e.to_string();
            log.push_str(&format!("error: {reason}\n"));
            failed(reason, log, e.is_permanent())
        }
    }
}
