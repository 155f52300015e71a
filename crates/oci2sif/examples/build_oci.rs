//! Builds a SIF from an image in an OCI layout, as one process: the build alone, without a
//! registry around it, the way a contained build process runs it. For `bench/sif-build.sh`.
//!
//! ```text
//! build_oci LAYOUT TAG OUT.sif [--comp gzip|zstd] [--level N] [--threads N] [--work DIR]
//!           [--reproducible]
//! ```
//! Prints one line: `build_s=… unpack_s=… squashfs_s=… sif_s=… sif_bytes=… sha256=…`. Run it
//! under `/usr/bin/time` for the peak RSS.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci2sif::{build_sif_into, BuildInput, BuildOptions, Compression, LayerInput};

struct Args {
    layout: PathBuf,
    tag: String,
    out: PathBuf,
    options: BuildOptions,
}

fn parse_args() -> Args {
    let mut positional = Vec::new();
    let (mut comp, mut level) = ("gzip".to_string(), None);
    let mut options = BuildOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("option value");
        match arg.as_str() {
            "--comp" => comp = value(),
            "--level" => level = Some(value()),
            "--threads" => options.threads = value().parse().expect("--threads N"),
            "--work" => options.work_dir = PathBuf::from(value()),
            "--reproducible" => options.reproducible = true,
            other => positional.push(other.to_string()),
        }
    }
    let [layout, tag, out] =
        <[String; 3]>::try_from(positional).expect("usage: build_oci LAYOUT TAG OUT.sif [options]");
    options.compression = match comp.as_str() {
        "gzip" => Compression::Gzip {
            level: level.map_or(9, |l| l.parse().expect("--level N")),
        },
        "zstd" => Compression::Zstd {
            level: level.map_or(3, |l| l.parse().expect("--level N")),
        },
        other => panic!("unknown compression {other}"),
    };
    Args {
        layout: layout.into(),
        tag,
        out: out.into(),
        options,
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read JSON")).expect("parse JSON")
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("digest");
    layout.join("blobs").join(algorithm).join(hex)
}

fn main() {
    let args = parse_args();
    let index = json(&args.layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == args.tag.as_str())
        .expect("tag in index.json");
    let manifest = json(&blob(
        &args.layout,
        manifest["digest"].as_str().expect("digest"),
    ));
    let config_json = fs::read(blob(
        &args.layout,
        manifest["config"]["digest"].as_str().expect("config"),
    ))
    .expect("config blob");
    let layers = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| {
            let file = File::open(blob(
                &args.layout,
                layer["digest"].as_str().expect("digest"),
            ))
            .expect("layer blob");
            LayerInput {
                media_type: layer["mediaType"].as_str().expect("mediaType").to_string(),
                reader: Box::new(BufReader::with_capacity(1 << 20, file)) as Box<dyn Read + Send>,
            }
        })
        .collect();
    let input = BuildInput {
        config_json,
        layers,
        source_ref: format!("bench/{}:1", args.tag),
    };
    let started = Instant::now();
    // Read and write: the SIF is read back once written, to hash it.
    let mut out = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.out)
        .expect("create the SIF");
    let report = build_sif_into(input, &args.options, &mut out).expect("build");
    let t = report.timings;
    println!(
        "build_s={:.3} unpack_s={:.3} squashfs_s={:.3} sif_s={:.3} sif_bytes={} sha256={}",
        started.elapsed().as_secs_f64(),
        t.unpack.as_secs_f64(),
        t.squashfs.as_secs_f64(),
        t.sif.as_secs_f64(),
        report.sif_size,
        report.sif_sha256
    );
}
