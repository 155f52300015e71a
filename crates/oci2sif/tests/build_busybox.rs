//! End to end: a busybox image made with umoci goes through `build_sif`, and the SIF is checked
//! with the real tools: `siftool` lists and dumps it, `unsquashfs` reads its partition, and the
//! partition, loop-mounted at its offset inside the SIF, runs the image's runscript in a chroot.

use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oci2sif::sif::{self, DataType};
use oci2sif::{build_sif, BuildInput, BuildOptions, BuildReport, Compression, LayerInput};

const SOURCE_REF: &str = "127.0.0.1:5000/alice/busybox:1";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// An OCI image layout on disk: the config blob and the layer blobs with their media types.
struct OciImage {
    config: Vec<u8>,
    layers: Vec<(String, PathBuf)>,
}

/// The smallest image that really runs: static busybox as `/bin/busybox` and `/bin/sh`, with
/// an ENTRYPOINT, a CMD and one ENV entry.
fn make_busybox_image(dir: &Path) -> OciImage {
    let layout = dir.join("oci");
    let image = format!("{}:latest", layout.display());
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/busybox",
        "--config.cmd",
        "echo",
        "--config.cmd",
        "hello-from-sif",
        "--config.env",
        "GREETING=hello-env",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    ]));
    read_layout(&layout)
}

fn read_layout(layout: &Path) -> OciImage {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_string(),
                blob(l["digest"].as_str().unwrap()),
            )
        })
        .collect();
    OciImage { config, layers }
}

fn build(image: &OciImage, sif_path: &Path, reproducible: bool) -> BuildReport {
    build_with(image, sif_path, reproducible, None)
}

/// [`build`], also writing the enroot image to `enroot` when given.
fn build_with(
    image: &OciImage,
    sif_path: &Path,
    reproducible: bool,
    enroot: Option<&Path>,
) -> BuildReport {
    let work_dir = tempfile::tempdir().unwrap();
    let layers = image
        .layers
        .iter()
        .map(|(media_type, path)| LayerInput {
            media_type: media_type.clone(),
            reader: Box::new(fs::File::open(path).unwrap()) as Box<dyn Read + Send>,
        })
        .collect();
    let input = BuildInput {
        config_json: image.config.clone(),
        layers,
        source_ref: SOURCE_REF.to_string(),
    };
    let opts = BuildOptions {
        compression: Compression::Gzip { level: 9 },
        threads: 2,
        limits: oci2sif::layers::LimitSettings {
            max_unpacked_bytes: 1 << 30,
            ..Default::default()
        },
        reproducible,
        work_dir: work_dir.path().to_path_buf(),
        precompress: true,
    };
    // Read and write: the SIF is read back once written, to hash it.
    let mut out = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(sif_path)
        .unwrap();
    match enroot {
        None => build_sif(input, &opts, &mut out).unwrap(),
        Some(path) => {
            let mut enroot = fs::File::create(path).unwrap();
            let (report, size) =
                oci2sif::build_sif_and_enroot(input, &opts, &mut out, &mut enroot).unwrap();
            assert_eq!(size, fs::metadata(path).unwrap().len());
            report
        }
    }
}

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn squashfs_at(image: &Path, offset: u64, dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "squashfs", "-o"])
            .arg(format!("loop,ro,offset={offset}"))
            .arg(image)
            .arg(dir));
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `args` chrooted into the mount with a minimal environment.
    fn chroot(&self, args: &[&str]) -> String {
        // Absolute: with PATH=/bin in its environment, Command would look for chroot there.
        stdout(
            Command::new("/usr/sbin/chroot")
                .arg(&self.dir)
                .args(args)
                .env_clear()
                .env("PATH", "/bin"),
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn busybox_image_becomes_a_sif_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_busybox_image(dir.path());
    let sif_path = dir.path().join("busybox.sif");
    let report = build(&image, &sif_path, false);

    assert_eq!(report.arch, "amd64");
    assert_eq!(report.layers, 1);
    assert_eq!(report.sif_size, fs::metadata(&sif_path).unwrap().len());
    assert!(report.unpacked_bytes >= fs::metadata("/bin/busybox").unwrap().len());
    assert!(
        report.files > 20,
        "busybox, sh and the /.singularity.d files: {report:?}"
    );

    let list = stdout(Command::new("siftool").arg("list").arg(&sif_path));
    let types: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with(char::is_numeric))
        .filter_map(|l| l.rsplit('|').next())
        .collect();
    assert_eq!(
        types,
        [
            "Def.FILE",
            "JSON.Generic",
            "JSON.Generic",
            "FS (Squashfs/*System/amd64)"
        ],
        "{list}"
    );

    let bytes = fs::read(&sif_path).unwrap();
    let info = sif::read_descriptors(&mut Cursor::new(&bytes)).unwrap();
    assert_ne!(info.id, [0; 16], "a normal build gets a random UUID");
    let partition = info.primary_partition().unwrap();
    assert_eq!(partition.offset % 4096, 0);
    assert_eq!(partition.size, report.squashfs_size);
    assert_eq!(partition.offset + partition.size, report.sif_size);
    assert_eq!(info.objects[0].data_type, DataType::Deffile);

    check_metadata_objects(&sif_path);
    check_partition_listing(dir.path(), &sif_path);

    let mount = Mount::squashfs_at(&sif_path, partition.offset, &dir.path().join("mnt"));
    assert_eq!(
        mount.chroot(&["/.singularity.d/runscript"]),
        "hello-from-sif\n"
    );
    assert_eq!(
        mount.chroot(&["/.singularity.d/runscript", "echo", "with args"]),
        "with args\n"
    );
    assert_eq!(mount.chroot(&["/singularity"]), "hello-from-sif\n");
    assert_eq!(
        mount.chroot(&["/.singularity.d/actions/run"]),
        "hello-from-sif\n"
    );
    assert_eq!(
        mount.chroot(&[
            "/.singularity.d/actions/exec",
            "/bin/sh",
            "-c",
            "echo $GREETING:$LD_LIBRARY_PATH"
        ]),
        "hello-env:/.singularity.d/libs\n"
    );
    let bind_targets =
        "[ -f /etc/hosts ] && [ ! -s /etc/hosts ] && [ -f /etc/resolv.conf ] && echo empty";
    assert_eq!(mount.chroot(&["/bin/sh", "-c", bind_targets]), "empty\n");
}

fn check_metadata_objects(sif_path: &Path) {
    let dump = |id: &str| run(Command::new("siftool").args(["dump", id]).arg(sif_path)).stdout;
    assert_eq!(
        dump("1"),
        format!("bootstrap: docker\nfrom: {SOURCE_REF}\n\n").as_bytes()
    );

    let inspect: serde_json::Value = serde_json::from_slice(&dump("2")).unwrap();
    let attributes = &inspect["data"]["attributes"];
    assert_eq!(inspect["type"], "container");
    assert_eq!(
        attributes["labels"]["org.label-schema.usage.singularity.deffile.from"],
        SOURCE_REF
    );
    assert_eq!(attributes["labels"]["org.label-schema.build-arch"], "amd64");
    assert!(attributes["runscript"]
        .as_str()
        .unwrap()
        .contains("eval \"set ${SINGULARITY_OCI_RUN}\""));
    assert_eq!(
        attributes["environment"]["/.singularity.d/env/10-docker2singularity.sh"],
        "#!/bin/sh\nexport GREETING=\"${GREETING:-\"hello-env\"}\""
    );

    assert_eq!(
        String::from_utf8(dump("3")).unwrap(),
        r#"{"Cmd":["echo","hello-from-sif"],"Entrypoint":["/bin/busybox"],"Env":["GREETING=hello-env"]}"#
    );
}

fn check_partition_listing(dir: &Path, sif_path: &Path) {
    let squashfs = dir.join("partition.sqfs");
    let dumped = run(Command::new("siftool").args(["dump", "4"]).arg(sif_path)).stdout;
    fs::write(&squashfs, dumped).unwrap();
    let listing = stdout(Command::new("unsquashfs").arg("-l").arg(&squashfs));
    for path in [
        "bin/busybox",
        "bin/sh",
        "singularity",
        "environment",
        ".run",
        "etc/hosts",
        "etc/resolv.conf",
        "var/tmp",
        ".singularity.d/runscript",
        ".singularity.d/startscript",
        ".singularity.d/labels.json",
        ".singularity.d/Singularity",
        ".singularity.d/libs",
        ".singularity.d/actions/exec",
        ".singularity.d/env/10-docker2singularity.sh",
        ".singularity.d/env/94-appsbase.sh",
        ".singularity.d/env/99-runtimevars.sh",
    ] {
        let line = format!("squashfs-root/{path}");
        assert!(
            listing.lines().any(|l| l == line),
            "{path} missing from:\n{listing}"
        );
    }
}

#[test]
fn reproducible_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_busybox_image(dir.path());
    let (a, b) = (dir.path().join("a.sif"), dir.path().join("b.sif"));
    let report = build(&image, &a, true);
    build(&image, &b, true);
    let bytes = fs::read(&a).unwrap();
    assert!(
        bytes == fs::read(&b).unwrap(),
        "two reproducible builds differ"
    );
    assert_eq!(bytes.len() as u64, report.sif_size);

    let info = sif::read_descriptors(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(info.id, [0; 16]);
    assert_eq!(info.created_at, sif::GO_ZERO_TIME);
    assert!(info
        .objects
        .iter()
        .all(|o| o.created_at == sif::GO_ZERO_TIME));
}

#[test]
fn the_reported_digest_is_the_sha256_of_the_file() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let image = make_busybox_image(dir.path());
    let path = dir.path().join("a.sif");
    let report = build(&image, &path, false);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(report.sif_sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(bytes.len() as u64, report.sif_size);
}

#[test]
fn the_enroot_image_is_the_same_tree_with_enroots_rc_environment_and_fstab() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_busybox_image(dir.path());
    let sif_path = dir.path().join("busybox.sif");
    let enroot = dir.path().join("busybox.sqsh");
    let report = build_with(&image, &sif_path, false, Some(&enroot));
    assert_eq!(report.sif_size, fs::metadata(&sif_path).unwrap().len());

    let cat = |path: &str| {
        stdout(
            Command::new("unsquashfs")
                .arg("-cat")
                .arg(&enroot)
                .arg(path),
        )
    };
    let environment = cat("etc/environment");
    assert!(
        environment.lines().any(|l| l == "GREETING=hello-env"),
        "{environment}"
    );
    let rc = cat("etc/rc");
    assert!(rc.contains("cd \"/\" && unset OLDPWD || exit 1\n"), "{rc}");
    assert!(rc.contains("    exec '/bin/busybox' \"$@\"\n"), "{rc}");
    assert!(
        rc.contains("    exec '/bin/busybox' 'echo' 'hello-from-sif'\n"),
        "{rc}"
    );
    assert_eq!(cat("etc/fstab"), "", "no VOLUME, no mounts");
    assert!(cat("etc/rc.local").starts_with("# This file is sourced by /etc/rc"));

    // What enroot does at start: /etc/rc with `enroot start`'s command, or none.
    let mount = Mount::squashfs_at(&enroot, 0, &dir.path().join("mnt"));
    assert_eq!(mount.chroot(&["/bin/sh", "/etc/rc"]), "hello-from-sif\n");
    assert_eq!(
        mount.chroot(&["/bin/sh", "/etc/rc", "echo", "from enroot start"]),
        "from enroot start\n"
    );
}
