//! Measures the squashfs writer (and, for comparison, backhand) on a real directory.
//!
//! ```text
//! squashfs_bench SOURCE_DIR OUT.sqfs [--writer ours|backhand] [--comp gzip|zstd] [--level N]
//!                [--threads N] [--work DIR]
//! ```
//! The directory is first copied into a spool (as layer extraction would), then written; both
//! phases are timed separately. Run it under `/usr/bin/time -v` for the peak RSS.

#[path = "../tests/squashfs_support/mod.rs"]
mod squashfs_support;

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use oci2sif::squashfs::{write_squashfs, Compression, SquashfsOptions};
use oci2sif::tree::{Kind, Spool, Tree};

struct Args {
    source: PathBuf,
    out: PathBuf,
    writer: String,
    compression: Compression,
    threads: usize,
    work: PathBuf,
}

fn parse_args() -> Args {
    let mut positional = Vec::new();
    let (mut writer, mut comp, mut level, mut threads) =
        ("ours".to_string(), "gzip".to_string(), None, 2);
    let mut work = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("option value");
        match arg.as_str() {
            "--writer" => writer = value(),
            "--comp" => comp = value(),
            "--level" => level = Some(value().parse::<i32>().expect("level")),
            "--threads" => threads = value().parse().expect("threads"),
            "--work" => work = PathBuf::from(value()),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let compression = match comp.as_str() {
        "gzip" => Compression::Gzip {
            level: level.unwrap_or(9) as u32,
        },
        "zstd" => Compression::Zstd {
            level: level.unwrap_or(3),
        },
        other => panic!("unknown compressor {other}"),
    };
    let [source, out] = <[PathBuf; 2]>::try_from(positional).expect("SOURCE_DIR OUT.sqfs");
    Args {
        source,
        out,
        writer,
        compression,
        threads,
        work,
    }
}

fn main() {
    let args = parse_args();
    let started = Instant::now();
    let mut spool = Spool::new_in(&args.work).unwrap();
    let tree = squashfs_support::tree_from_dir(&args.source, &mut spool);
    let spooled = started.elapsed();

    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let size = match args.writer.as_str() {
        "ours" => write_ours(&tree, &spool, &args),
        "backhand" => write_backhand(&tree, &spool, &args),
        other => panic!("unknown writer {other}"),
    };
    let written = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "writer={} compression={:?} threads={} spool={:.3}s ({} MB) write={:.3}s write_cpu={:.2}s image={} bytes inodes={}",
        args.writer,
        args.compression,
        args.threads,
        spooled.as_secs_f64(),
        spool.len() / 1_000_000,
        written.as_secs_f64(),
        cpu,
        size,
        tree.inodes.len(),
    );
}

/// User + system CPU time of the whole process (all threads, finished ones included).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

fn write_ours(tree: &Tree, spool: &Spool, args: &Args) -> u64 {
    let opts = SquashfsOptions {
        compression: args.compression,
        threads: args.threads,
        ..SquashfsOptions::default()
    };
    let mut out = BufWriter::new(File::create(&args.out).unwrap());
    write_squashfs(tree, spool, &mut out, &opts).unwrap()
}

/// backhand 0.25 has no hardlinks (each name gets its own copy) and compresses on one thread.
fn write_backhand(tree: &Tree, spool: &Spool, args: &Args) -> u64 {
    use backhand::compression::Compressor;
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

    let mut fs = FilesystemWriter::default();
    let compressor = match args.compression {
        Compression::Gzip { level } => FilesystemCompressor::new(
            Compressor::Gzip,
            Some(backhand::compression::CompressionOptions::Gzip(
                backhand::compression::Gzip {
                    compression_level: level,
                    window_size: 15,
                    strategies: 0,
                },
            )),
        ),
        Compression::Zstd { level } => FilesystemCompressor::new(
            Compressor::Zstd,
            Some(backhand::compression::CompressionOptions::Zstd(
                backhand::compression::Zstd {
                    compression_level: level as u32,
                },
            )),
        ),
    };
    fs.set_compressor(compressor.unwrap());
    fs.set_block_size(131_072);
    let mut paths = Vec::new();
    tree.walk(|path, id| paths.push((format!("/{}", String::from_utf8_lossy(path)), id)));
    for (path, id) in paths {
        let inode = tree.inode(id);
        let m = &inode.meta;
        let header = NodeHeader::new(m.mode as u16, m.uid, m.gid, m.mtime as u32);
        if path == "/" {
            fs.set_root_mode(m.mode as u16);
            continue;
        }
        let device =
            |major: u32, minor: u32| (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        match &inode.kind {
            Kind::Dir(_) => fs.push_dir(&path, header),
            Kind::File(content) => fs.push_file(spool.reader(*content), &path, header),
            Kind::Symlink(target) => {
                fs.push_symlink(String::from_utf8_lossy(target).into_owned(), &path, header)
            }
            Kind::CharDevice { major, minor } => {
                fs.push_char_device(device(*major, *minor), &path, header)
            }
            Kind::BlockDevice { major, minor } => {
                fs.push_block_device(device(*major, *minor), &path, header)
            }
            Kind::Fifo => fs.push_fifo(&path, header),
            Kind::Socket => fs.push_socket(&path, header),
        }
        .unwrap();
    }
    let mut out = BufWriter::new(File::create(&args.out).unwrap());
    fs.write(&mut out).unwrap().1
}
