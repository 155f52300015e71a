//! The SIF writer and reader checked against the real `siftool` (Debian siftool 2.8) and a real
//! squashfs made by `mksquashfs`, independently of the crate's own squashfs writer.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci2sif::sif::{
    self, ContainerOptions, DataType, FsType, ObjectInput, ObjectKind, PartType, PartitionInfo,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small real squashfs image holding one file.
fn real_squashfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), "hello from squashfs\n").unwrap();
    let image = dir.join("part.sqfs");
    run(Command::new("mksquashfs").arg(&root).arg(&image).args([
        "-noappend",
        "-comp",
        "gzip",
        "-quiet",
    ]));
    image
}

const DEFFILE: &[u8] = b"bootstrap: docker\nfrom: 127.0.0.1:5000/alice/tool:1\n\n";
const INSPECT: &[u8] = br#"{"data":{"attributes":{}},"type":"container"}"#;
const OCI_CONFIG: &[u8] = br#"{"Cmd":["/bin/sh"]}"#;

/// Writes an Apptainer-shaped SIF around `squashfs` with the crate's writer.
fn write_sif(path: &Path, squashfs: &Path, opts: &ContainerOptions) -> sif::SifLayout {
    let mut out = fs::File::create(path).unwrap();
    let mut partition = fs::File::open(squashfs).unwrap();
    let (mut def, mut inspect, mut config) = (DEFFILE, INSPECT, OCI_CONFIG);
    sif::write_container(
        &mut out,
        opts,
        &mut [
            ObjectInput {
                kind: ObjectKind::Deffile,
                name: "",
                data: &mut def,
            },
            ObjectInput {
                kind: ObjectKind::GenericJson,
                name: "inspect-metadata.json",
                data: &mut inspect,
            },
            ObjectInput {
                kind: ObjectKind::GenericJson,
                name: "oci-config.json",
                data: &mut config,
            },
            ObjectInput {
                kind: ObjectKind::Partition {
                    fs: FsType::Squashfs,
                    part: PartType::PrimSys,
                    arch: sif::arch_code("amd64").unwrap(),
                },
                name: "",
                data: &mut partition,
            },
        ],
    )
    .unwrap()
}

/// One row of `siftool list` for an object of group 1 without link.
fn list_row(id: u32, start: usize, end: usize, kind: &str) -> String {
    format!(
        "{id:<5}|{:<8}|{:<8}|{:<26}|{kind}",
        1,
        "NONE",
        format!("{start}-{end}")
    )
}

#[test]
fn siftool_lists_and_dumps_what_the_writer_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = real_squashfs(dir.path());
    let sif_path = dir.path().join("x.sif");
    let opts = ContainerOptions {
        id: sif::random_uuid_v4().unwrap(),
        time: 1_700_000_000,
    };
    let layout = write_sif(&sif_path, &squashfs, &opts);
    let squashfs_len = fs::metadata(&squashfs).unwrap().len();

    let list = run(Command::new("siftool").arg("list").arg(&sif_path));
    let rows: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with(char::is_numeric))
        .collect();
    let end_meta = 32176 + DEFFILE.len() + INSPECT.len() + OCI_CONFIG.len();
    let part_start = end_meta.div_ceil(4096) * 4096;
    let def_end = 32176 + DEFFILE.len();
    let inspect_end = def_end + INSPECT.len();
    let expected = [
        list_row(1, 32176, def_end, "Def.FILE"),
        list_row(2, def_end, inspect_end, "JSON.Generic"),
        list_row(3, inspect_end, end_meta, "JSON.Generic"),
        list_row(
            4,
            part_start,
            part_start + squashfs_len as usize,
            "FS (Squashfs/*System/amd64)",
        ),
    ];
    assert_eq!(rows, expected, "siftool list:\n{list}");

    let header = run(Command::new("siftool").arg("header").arg(&sif_path));
    assert!(header.contains("Primary Architecture: amd64"), "{header}");
    assert!(header.contains("Descriptors Free:     44"), "{header}");
    assert!(header.contains("Data Offset:          32176"), "{header}");
    assert!(header.contains("2023-11-14 22:13:20 +0000 UTC"), "{header}");

    let info = run(Command::new("siftool").args(["info", "2"]).arg(&sif_path));
    let name = info.lines().find_map(|l| l.trim().strip_prefix("Name:"));
    assert_eq!(name.map(str::trim), Some("inspect-metadata.json"), "{info}");

    let dumped = Command::new("siftool")
        .args(["dump", "4"])
        .arg(&sif_path)
        .output()
        .unwrap();
    assert_eq!(dumped.stdout, fs::read(&squashfs).unwrap());
    let dumped_def = Command::new("siftool")
        .args(["dump", "1"])
        .arg(&sif_path)
        .output()
        .unwrap();
    assert_eq!(dumped_def.stdout, DEFFILE);

    assert_eq!(layout.objects[3].offset, part_start as u64);
    assert_eq!(layout.total_size, fs::metadata(&sif_path).unwrap().len());
}

#[test]
fn deterministic_sif_is_byte_identical_and_has_no_times_for_siftool() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = real_squashfs(dir.path());
    let (a, b) = (dir.path().join("a.sif"), dir.path().join("b.sif"));
    write_sif(&a, &squashfs, &ContainerOptions::deterministic());
    write_sif(&b, &squashfs, &ContainerOptions::deterministic());
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

    let header = run(Command::new("siftool").arg("header").arg(&a));
    assert!(
        header.contains("Launch Script:        #!/usr/bin/env run-singularity"),
        "{header}"
    );
    // siftool leaves out what deterministic images leave unset: the nil ID and Go's zero time.
    assert!(!header.contains("ID:"), "{header}");
    assert!(!header.contains("Created At"), "{header}");
}

#[test]
fn reader_understands_a_sif_made_by_siftool() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = real_squashfs(dir.path());
    let def = dir.path().join("def");
    fs::write(&def, DEFFILE).unwrap();
    let sif_path = dir.path().join("t.sif");
    run(Command::new("siftool").arg("new").arg(&sif_path));
    run(Command::new("siftool")
        .args(["add", "--datatype", "1"])
        .arg(&sif_path)
        .arg(&def));
    run(Command::new("siftool")
        .args([
            "add",
            "--datatype",
            "4",
            "--partfs",
            "1",
            "--parttype",
            "2",
            "--partarch",
            "4",
        ])
        .args(["--groupid", "1", "--filename", "rootfs"])
        .arg(&sif_path)
        .arg(&squashfs));

    let bytes = fs::read(&sif_path).unwrap();
    let info = sif::read_descriptors(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(info.arch, Some("arm64"));
    assert_eq!((info.descriptors_total, info.descriptors_free), (48, 46));
    assert_eq!(info.objects.len(), 2);
    let def_object = &info.objects[0];
    assert_eq!(
        (def_object.id, def_object.data_type, def_object.group),
        (1, DataType::Deffile, None)
    );
    assert_eq!(def_object.offset, 32176);
    let part = info.primary_partition().unwrap();
    assert_eq!(
        (part.id, part.group, part.name.as_str()),
        (2, Some(1), "rootfs")
    );
    assert_eq!(
        part.partition,
        Some(PartitionInfo {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimSys,
            arch: Some("arm64")
        })
    );
    let start = part.offset as usize;
    assert_eq!(start % 4096, 0);
    assert_eq!(
        &bytes[start..start + part.size as usize],
        &fs::read(&squashfs).unwrap()[..]
    );
}
