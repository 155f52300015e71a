//! The compute-node pieces inside a real (one-node) Slurm cluster, as alice: the prolog's
//! prefetch (deploy/slurm/prolog.d), the sbatch templates (deploy/slurm/templates) and the
//! pyxis importer's contract (deploy/pyxis).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::node::*;
use crate::support::slurm::SlurmCluster;
use crate::support::*;

/// A file of `deploy/`, where alice (and slurmd) can read it.
fn deploy(path: &str) -> PathBuf {
    user_deploy(path)
}

/// The directory of the binary under test, for PATH.
fn bin_dir() -> String {
    user_bin().parent().unwrap().display().to_string()
}

/// A site client config every user can read: the registry's URL and the node cache.
fn client_config(node: &Node, dir: &Path) -> PathBuf {
    let path = dir.join("client.toml");
    fs::write(
        &path,
        format!(
            "url = \"{}\"\n[cache]\ndir = \"{}\"\n",
            node.url,
            node.cache_dir().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn public_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn the_prolog_prefetches_as_the_jobs_user_so_that_the_jobs_fetch_is_a_cache_hit() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    let dir = public_dir("hpcreg-prolog-");
    let config = client_config(&node, dir.path());
    let config = config.to_str().unwrap();
    push_alice_image(&server, "alice/tool:1", &["/bin/true"], 0);
    // slurmd gives a prolog an environment of its own making, so the site's settings come from
    // a wrapper, as an installation without /etc/hpc-registry/client.toml would do it.
    let prolog = dir.path().join("prolog");
    fs::write(
        &prolog,
        format!(
            "#!/bin/sh\nexport HPC_REGISTRY_CLIENT_CONFIG={config} HPC_REGISTRY_BIN={} HPC_REGISTRY_PREFETCH_TIMEOUT=240\nexec {} \"$@\"\n",
            user_bin().display(),
            deploy("slurm/prolog.d/hpc-registry-prefetch").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&prolog, fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = SlurmCluster::start_with(
        &format!(
            "Prolog={}\nPrologFlags=Alloc\nPrologEpilogTimeout=300",
            prolog.display()
        ),
        &[],
    );
    let export = format!(
        "--export=PATH={}:/usr/bin:/bin,HPC_REGISTRY_CLIENT_CONFIG={config}",
        bin_dir()
    );
    let script = "#!/bin/bash\n#SBATCH --comment=\"hpc-registry: alice/tool:1\"\nhpc-registry fetch alice/tool:1\n";
    let job = cluster.run_job_as_with("alice", "prefetched", script, &[&export], &[]);
    assert_eq!(job.state, "COMPLETED", "{}\n{}", job.output, cluster.logs());
    assert!(
        job.output.contains("(cached)"),
        "the job's fetch was no cache hit:\n{}",
        job.output
    );
    let fetches = sif_fetches(&server);
    assert_eq!(
        fetches.len(),
        1,
        "one download, by the prolog: {fetches:#?}"
    );
    assert_eq!(
        fetches[0]["user"], "alice",
        "the prolog fetched as the job's user: {fetches:#?}"
    );
    assert_eq!(fetches[0]["auth"], "munge");
    assert_eq!(fetches[0]["slurm_job_id"], job.id.as_str());
    assert!(
        fetches[0]["user_agent"]
            .as_str()
            .unwrap_or_default()
            .contains("prolog"),
        "the download was not the prolog's: {fetches:#?}"
    );

    // A job naming an image nobody has: the prolog logs it, the job runs, the node stays up.
    let script =
        "#!/bin/bash\n#SBATCH --comment=\"hpc-registry: alice/missing:1\"\necho still-ran\n";
    let job = cluster.run_job_as_with("alice", "unprefetchable", script, &[&export], &[]);
    assert_eq!(job.state, "COMPLETED", "{}\n{}", job.output, cluster.logs());
    assert!(job.output.contains("still-ran"), "{}", job.output);
    let state = run(cluster.command("sinfo").args(["-h", "-o", "%t"]));
    assert_eq!(
        state.trim(),
        "idle",
        "the failed prefetch drained the node\n{}",
        cluster.logs()
    );
}

/// A stand-in `apptainer` for batch jobs: prints its arguments.
fn echo_apptainer(dir: &Path) -> PathBuf {
    let path = dir.join("apptainer");
    fs::write(&path, "#!/bin/sh\necho \"apptainer $*\"\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn every_template_passes_sbatch_test_only_and_small_runs_to_completion() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    let dir = public_dir("hpcreg-templates-");
    let config = client_config(&node, dir.path());
    let cluster = SlurmCluster::start();
    // The test node has 2 CPUs, 2000 MB and no GPUs: the site-tunable numbers are overridden
    // at submission, as a site would tune them.
    let fit = ["--nodes=1", "--cpus-per-task=1", "--mem=500M", "--time=10"];
    for template in ["small", "medium", "large", "gpu", "fast-storage"] {
        let path = deploy(&format!("slurm/templates/{template}.sbatch"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("hpc-registry run"),
            "{template} does not use hpc-registry run"
        );
        assert!(!text.contains("scp "), "{template} copies with scp");
        let mut cmd = cluster.command("runuser");
        cmd.args(["-u", "alice", "--", "sbatch", "--test-only"])
            .args(fit);
        if template == "gpu" {
            cmd.arg("--gres=none");
        }
        let out = run_output(cmd.arg(&path));
        assert!(
            out.status.success(),
            "sbatch --test-only {template}: {}\n{}",
            text_of(&out.stderr),
            cluster.logs()
        );
    }

    push_alice_image(&server, "alice/tool:1", &["/bin/true"], 0);
    let apptainer = echo_apptainer(dir.path());
    let export = format!(
        "--export=PATH={}:/usr/bin:/bin,HPC_REGISTRY_CLIENT_CONFIG={},HPC_REGISTRY_APPTAINER={},IMAGE=alice/tool:1",
        bin_dir(),
        config.display(),
        apptainer.display()
    );
    let script = fs::read_to_string(deploy("slurm/templates/small.sbatch")).unwrap();
    let mut args = vec![export.as_str()];
    args.extend_from_slice(&fit);
    let job = cluster.run_job_as_with("alice", "small", &script, &args, &[]);
    assert_eq!(job.state, "COMPLETED", "{}\n{}", job.output, cluster.logs());
    let line = job
        .output
        .lines()
        .find(|l| l.starts_with("apptainer "))
        .unwrap_or_else(|| panic!("apptainer did not run:\n{}", job.output));
    assert!(line.starts_with("apptainer run "), "{line}");
    assert!(
        line.contains(&node.cache_dir().display().to_string()),
        "{line}"
    );
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `unsquashfs -cat IMAGE PATH`: one file of a squashfs, read by the real tool.
fn unsquashfs_cat(image: &Path, path: &str) -> String {
    require_tool("unsquashfs");
    text_of(&run_output(Command::new("unsquashfs").arg("-cat").arg(image).arg(path)).stdout)
}

#[test]
fn the_pyxis_importer_prints_only_an_enroot_image_path_and_fails_cleanly() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    // An image with ENTRYPOINT, CMD, ENV and a VOLUME: what `enroot import` turns into
    // /etc/rc, /etc/environment and /etc/fstab.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["echo $GREETING from $0"]);
    run(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:1", layout.display()))
        .args([
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.env",
            "GREETING=hello-pyxis",
            "--config.volume",
            "/data",
        ]));
    push_alice_layout(&server, "alice/tool:1", &layout);
    let importer = deploy("pyxis/hpc-registry-importer");
    let importer_as = |args: &[&str]| {
        let mut cmd = node.command_as(
            "alice",
            &[],
            &[
                ("SLURM_JOB_ID", "31"),
                ("SLURM_STEP_ID", "0"),
                ("HPC_REGISTRY_BIN", user_bin().to_str().unwrap()),
            ],
        );
        // command_as ends with the binary: run the importer instead, with the same environment.
        let mut argv: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.pop();
        argv.push(importer.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        cmd = Command::new("runuser");
        cmd.args(&argv);
        run_output(&mut cmd)
    };
    let mut paths = Vec::new();
    for uri in [
        "registry.example:5000#alice/tool:1",
        "alice@registry.example#alice/tool:1",
        "alice/tool:1",
    ] {
        let out = importer_as(&["get", uri]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "get {uri}: {}",
            text_of(&out.stderr)
        );
        let stdout = text_of(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout must be the path alone: {stdout:?}");
        assert!(
            stdout.ends_with('\n') && !lines[0].trim().is_empty(),
            "{stdout:?}"
        );
        let path = PathBuf::from(lines[0]);
        assert!(path.is_absolute() && path.is_file(), "{stdout}");
        paths.push(path);
    }
    // One image, cached once (by the enroot image's own digest), whatever the URI's form.
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    let image = &paths[0];
    assert_eq!(
        image
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|h| format!("sha256:{h}")),
        Some(file_digest(image)),
        "the cached file is not what its name says"
    );
    // The registry serves the same bytes as the enroot image of the SIF's image.
    let served = http()
        .head(server.url("/sif/alice/tool:1/enroot"))
        .basic_auth("alice", Some("alice-password"))
        .send()
        .unwrap();
    assert_eq!(served.status(), 200);
    let etag = served.headers().get("etag").and_then(|v| v.to_str().ok());
    assert_eq!(etag, Some(format!("\"{}\"", file_digest(image)).as_str()));

    // The files enroot reads, read back by the real tool.
    let files = crate::support::sif::unsquashfs_list(image);
    assert!(files.iter().any(|f| f == "/bin/sh"), "{files:?}");
    let rc = unsquashfs_cat(image, "/etc/rc");
    assert!(
        rc.contains("    exec '/bin/sh' '-c' \"$@\"\n"),
        "/etc/rc must exec the entrypoint with the arguments:\n{rc}"
    );
    assert!(
        rc.contains("    exec '/bin/sh' '-c' 'echo $GREETING from $0'\n"),
        "/etc/rc must exec the entrypoint with CMD without arguments:\n{rc}"
    );
    let environment = unsquashfs_cat(image, "/etc/environment");
    let env_lines: Vec<&str> = environment.lines().collect();
    assert!(
        env_lines.contains(&"GREETING=hello-pyxis") && env_lines.contains(&"PATH=/bin"),
        "/etc/environment must hold the image's ENV:\n{environment}"
    );
    let fstab = unsquashfs_cat(image, "/etc/fstab");
    assert_eq!(
        fstab, "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n",
        "/etc/fstab must bind the VOLUME"
    );
    // And /etc/rc does what it says, in the image, with the environment enroot would set.
    let mount = crate::support::sif::Mount::squashfs_at(image, 0, &tmp.path().join("mnt"));
    let start = "set -a; . /etc/environment; set +a; exec /bin/sh /etc/rc \"$@\"";
    let out = mount.chroot(&["/bin/sh", "-c", start, "rc"]);
    assert_eq!(
        text_of(&out.stdout),
        "hello-pyxis from /bin/sh\n",
        "{}",
        text_of(&out.stderr)
    );
    let out = mount.chroot(&["/bin/sh", "-c", start, "rc", "echo args: $GREETING"]);
    assert_eq!(
        text_of(&out.stdout),
        "args: hello-pyxis\n",
        "{}",
        text_of(&out.stderr)
    );
    drop(mount);

    let out = importer_as(&["get", "alice/missing:1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown image: {}",
        text_of(&out.stderr)
    );
    assert!(text_of(&out.stdout).is_empty(), "{}", text_of(&out.stdout));
    let stderr = text_of(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains("alice/missing:1"), "{stderr}");
    // release: nothing per step, so it succeeds however often, and the cached image stays.
    for _ in 0..2 {
        let out = importer_as(&["release"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "release: {}",
            text_of(&out.stderr)
        );
        assert!(text_of(&out.stdout).is_empty());
    }
    assert!(image.is_file(), "release removed the cached image");
    for bad in [
        &[][..],
        &["get"],
        &["get", "a:1", "b:1"],
        &["import", "a:1"],
    ] {
        let out = importer_as(bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            text_of(&out.stderr)
        );
        assert!(text_of(&out.stdout).is_empty(), "{bad:?}");
        assert!(text_of(&out.stderr).contains("usage"), "{bad:?}");
    }
}
