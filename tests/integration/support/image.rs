//! Real, runnable images built with umoci (per /work/shared/docs/real-peers.md).

use std::path::Path;
use std::process::Command;

use super::{require_tool, run, unique};

/// Where busybox-static installs its static binary.
fn busybox_binary() -> &'static str {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return p;
        }
    }
    panic!("/bin/busybox is missing: install the Debian package `busybox-static`")
}

/// Builds (or adds `tag` to) the OCI image layout `dir`: one layer holding `bin/busybox` (the static
/// binary from busybox-static) and the `bin/sh -> busybox` symlink; config cmd `cmd`, env `PATH=/bin`,
/// linux/amd64. A random label makes every call's config (and image ID) unique, so tests that share
/// the Docker engine never trip over each other's images.
pub fn busybox_oci_layout(dir: &Path, tag: &str, cmd: &[&str]) {
    require_tool("umoci");
    let busybox = busybox_binary();
    if !dir.join("index.json").exists() {
        run(Command::new("umoci").arg("init").arg("--layout").arg(dir));
    }
    let image = format!("{}:{}", dir.display(), tag);
    run(Command::new("umoci").args(["new", "--image", &image]));
    let work = tempfile::Builder::new()
        .prefix("hpcreg-bundle-")
        .tempdir()
        .expect("create bundle temp dir");
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("symlink sh");
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    for c in cmd {
        config.arg("--config.cmd").arg(c);
    }
    config.args([
        "--config.env",
        "PATH=/bin",
        "--architecture",
        "amd64",
        "--os",
        "linux",
        "--config.label",
    ]);
    config.arg(format!("org.hpc-registry.test.nonce={}", unique("n")));
    run(&mut config);
}

/// `skopeo copy oci:DIR:TAG docker-archive:ARCHIVE:REF` (for `docker load -i ARCHIVE`).
pub fn oci_layout_to_docker_archive(dir: &Path, tag: &str, archive: &Path, reference: &str) {
    require_tool("skopeo");
    run(Command::new("skopeo")
        .arg("--insecure-policy")
        .arg("copy")
        .arg(format!("oci:{}:{}", dir.display(), tag))
        .arg(format!(
            "docker-archive:{}:{}",
            archive.display(),
            reference
        )));
}
