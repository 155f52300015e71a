//! The compute-node client: `hpc-registry fetch|run|cache` as the unprivileged users alice and
//! bob, against the real server with MUNGE and the real SIF farm, with a node cache on disk.
//! Downloads are counted in the registry's own audit trail (one `sif.fetch` per download).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::node::*;
use crate::support::sif::{check_runnable_sif, BUILD_DEADLINE};
use crate::support::users::*;
use crate::support::*;

/// The SIF's digest is its file name in the cache: `<cache>/<uid>/<hex>.sif`.
fn digest_of_cached(path: &Path) -> String {
    let hex = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_else(|| panic!("no file name: {}", path.display()));
    format!("sha256:{hex}")
}

#[test]
fn fetch_waits_for_the_build_verifies_and_then_hits_the_node_cache() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(
        &server,
        "alice/tool:1",
        &["/bin/sh", "-c", "echo from-the-cache"],
        0,
    );

    // Right after the push: the first fetch waits through the build, then downloads.
    let (sif, stderr) = node.fetch_ok("alice", &["alice/tool:1"]);
    assert!(stderr.contains("downloaded"), "{stderr}");
    let digest = digest_of_cached(&sif);
    assert_eq!(
        file_digest(&sif),
        digest,
        "the cached SIF is not what its name says"
    );
    let uid = ensure_host_user("alice");
    assert_eq!(
        sif.parent().unwrap(),
        node.cache_dir().join(uid.to_string())
    );
    let mode = fs::metadata(sif.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "alice's cache directory");
    assert!(
        !sif.with_extension("part").exists(),
        "the partial download was left behind"
    );

    // The SIF runs: its squashfs loop-mounted and chrooted into, as the farm tests do.
    let work = tempfile::tempdir().unwrap();
    check_runnable_sif(
        "fetched",
        &fs::read(&sif).unwrap(),
        work.path(),
        &["/bin/sh"],
        "from-the-cache\n",
    );

    // Again: a cache hit, the same path, no second download in the audit trail.
    let (again, stderr) = node.fetch_ok("alice", &["alice/tool:1"]);
    assert_eq!(again, sif);
    assert!(stderr.contains("cached"), "{stderr}");
    let fetches = sif_fetches(&server);
    assert_eq!(fetches.len(), 1, "one download, one sif.fetch: {fetches:?}");
    assert_eq!(fetches[0]["user"], "alice", "{fetches:?}");
    assert_eq!(fetches[0]["auth"], "munge", "{fetches:?}");
    assert_eq!(fetches[0]["slurm_job_id"], "4242", "{fetches:?}");
    assert_eq!(fetches[0]["digest"], digest.as_str(), "{fetches:?}");

    // By digest (bare, and name@digest), the same SIF from the cache.
    let manifest = fetches[0]["reference"].as_str().unwrap().to_owned();
    assert_eq!(manifest, "alice/tool:1");
    let alice = Creds::of("alice");
    let status = send(
        "GET",
        &server.url("/sif/alice/tool:1/status"),
        &Auth::Basic(&alice),
        None,
    );
    let image = status.json()["image"].as_str().unwrap().to_owned();
    for reference in [image.clone(), format!("alice/tool@{image}")] {
        let (path, _) = node.fetch_ok("alice", &[&reference]);
        assert_eq!(path, sif, "{reference}");
    }

    // --squashfs: the bare root filesystem, which unsquashfs reads.
    let (squashfs, _) = node.fetch_ok("alice", &["--squashfs", "alice/tool:1"]);
    assert_eq!(squashfs, sif.with_extension("squashfs"));
    let files = crate::support::sif::unsquashfs_list(&squashfs);
    assert!(files.iter().any(|f| f == "/bin/sh"), "{files:?}");
    assert_eq!(
        sif_fetches(&server).len(),
        1,
        "cache hits are not downloads"
    );

    // `cache ls` lists it for alice.
    let out = node.run_as("alice", &["cache", "ls", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["digest"], digest.as_str(), "{listed}");
}

#[test]
fn bob_is_refused_alices_image_and_cannot_read_her_cached_sif() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/private:1", &["/bin/true"], 0);
    let (sif, _) = node.fetch_ok("alice", &["alice/private:1"]);

    // The registry refuses bob, in one line, with a failing exit status.
    let out = node.run_as(
        "bob",
        &["fetch", "alice/private:1"],
        &[("SLURM_JOB_ID", "7")],
    );
    assert!(!out.status.success(), "bob fetched alice's image");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line, no HTTP stack: {stderr}"
    );
    assert!(
        stderr.contains("alice/private:1") && stderr.contains("not an image this registry holds"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));

    // On the node, bob can neither read her SIF nor list her cache directory.
    let cat = run_output(
        Command::new("runuser")
            .args(["-u", "bob", "--", "cat"])
            .arg(&sif),
    );
    assert!(!cat.status.success(), "bob read alice's cached SIF");
    let ls = run_output(
        Command::new("runuser")
            .args(["-u", "bob", "--", "ls"])
            .arg(sif.parent().unwrap()),
    );
    assert!(!ls.status.success(), "bob listed alice's cache");
    let out = node.run_as("bob", &["cache", "ls", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]", "bob's own cache is empty");
}

#[test]
fn sixteen_concurrent_fetches_on_one_node_make_one_download() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/herd:1", &["/bin/true"], 8 << 20);
    let children: Vec<_> = (0..16)
        .map(|i| {
            let mut cmd = node.command_as(
                "alice",
                &["fetch", "alice/herd:1"],
                &[("SLURM_JOB_ID", &format!("100{i}"))],
            );
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn fetch")
        })
        .collect();
    let mut paths = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a fetch failed: {}",
            text(&out.stderr)
        );
        paths.push(text(&out.stdout).trim().to_owned());
    }
    paths.dedup();
    assert_eq!(paths.len(), 1, "all fetches print one path: {paths:?}");
    let fetches = sif_fetches(&server);
    assert_eq!(fetches.len(), 1, "16 jobs, 1 download: {fetches:#?}");
    assert_eq!(
        file_digest(Path::new(&paths[0])),
        digest_of_cached(Path::new(&paths[0]))
    );
}

#[test]
fn an_interrupted_download_resumes_and_a_bad_partial_is_caught_by_the_hash() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/big:1", &["/bin/true"], 16 << 20);
    let (sif, _) = node.fetch_ok("alice", &["alice/big:1"]);
    let bytes = fs::read(&sif).unwrap();
    let half = bytes.len() / 2;

    // What a download killed halfway leaves: the first half in <hex>.part, no SIF.
    let out = node.run_as("alice", &["cache", "rm", &digest_of_cached(&sif)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!sif.exists());
    let part = sif.with_extension("part");
    write_as_alice(&part, &bytes[..half]);
    let (again, stderr) = node.fetch_ok("alice", &["alice/big:1"]);
    assert_eq!(again, sif);
    assert!(stderr.contains("resuming at"), "{stderr}");
    assert_eq!(fs::read(&sif).unwrap(), bytes, "the resumed SIF differs");
    let fetches = sif_fetches(&server);
    assert_eq!(fetches.len(), 2, "{fetches:#?}");
    let resumed = fetches
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap_or(0))
        .min()
        .unwrap();
    assert_eq!(
        resumed as usize,
        bytes.len() - half,
        "the resume fetched only the rest: {fetches:#?}"
    );

    // A partial download with a wrong byte: the hash catches it, and the fetch starts over.
    fs::remove_file(&sif).unwrap();
    let mut wrong = bytes[..half].to_vec();
    wrong[half / 2] ^= 0xff;
    write_as_alice(&part, &wrong);
    let (again, stderr) = node.fetch_ok("alice", &["alice/big:1"]);
    assert!(stderr.contains("downloading it again"), "{stderr}");
    assert_eq!(fs::read(&again).unwrap(), bytes);
}

/// Writes `bytes` to `path` in alice's cache (as root, then handed to alice).
fn write_as_alice(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    run(Command::new("chown").arg("alice").arg(path));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_corrupted_cache_file_is_detected_and_fetched_again() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/rot:1", &["/bin/true"], 0);
    let (sif, _) = node.fetch_ok("alice", &["alice/rot:1"]);
    let good = fs::read(&sif).unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(&sif).unwrap();
    f.seek(SeekFrom::Start(good.len() as u64 / 2)).unwrap();
    f.write_all(b"bitrot").unwrap();
    drop(f);
    let (again, stderr) = node.fetch_ok("alice", &["alice/rot:1"]);
    assert_eq!(again, sif);
    assert!(
        stderr.contains("downloaded"),
        "the corrupt file was used: {stderr}"
    );
    assert_eq!(fs::read(&sif).unwrap(), good);
    assert_eq!(sif_fetches(&server).len(), 2);
}

/// A stand-in `apptainer` that records its arguments, checks that the SIF is held (an exclusive
/// lock on it must fail), and waits for `release` to exist before it exits.
fn stand_in_apptainer(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("apptainer");
    fs::write(
        &path,
        format!(
            r#"#!/bin/sh
printf '%s\n' "$@" > {dir}/argv
for a in "$@"; do case "$a" in *.sif) sif="$a";; esac; done
if flock -n -x "$sif" true; then echo not-held > {dir}/held; else echo held > {dir}/held; fi
touch {dir}/started
i=0; while [ ! -e {dir}/release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
exit 7
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_execs_apptainer_on_the_cached_sif_holds_it_and_eviction_spares_it() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/run:1", &["/bin/true"], 0);
    push_alice_image(&server, "alice/other:1", &["/bin/true"], 0);
    let (other, _) = node.fetch_ok("alice", &["alice/other:1"]);
    let scratch = node.scratch("apptainer");
    let apptainer = stand_in_apptainer(&scratch);
    let mut cmd = node.command_as(
        "alice",
        &[
            "run",
            "alice/run:1",
            "--nv",
            "--bind",
            "/scratch:/data",
            "--",
            "python",
            "-c",
            "print(1)",
        ],
        &[
            ("SLURM_JOB_ID", "55"),
            ("HPC_REGISTRY_APPTAINER", apptainer.to_str().unwrap()),
        ],
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(&scratch.join("started"));

    // While it runs: the exact command line, the SIF held, and a prune to zero spares it.
    let argv = fs::read_to_string(scratch.join("argv")).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(argv.len(), 8, "{argv:?}");
    assert_eq!(
        &argv[..4],
        ["exec", "--nv", "--bind", "/scratch:/data"],
        "{argv:?}"
    );
    let sif = Path::new(argv[4]);
    assert!(sif.starts_with(node.cache_dir()), "{argv:?}");
    assert_eq!(&argv[5..], ["python", "-c", "print(1)"], "{argv:?}");
    assert_eq!(
        fs::read_to_string(scratch.join("held")).unwrap().trim(),
        "held"
    );
    let out = node.run_as("alice", &["cache", "prune", "--max-size", "0"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        sif.exists(),
        "eviction removed a held SIF: {}",
        text(&out.stderr)
    );
    assert!(
        !other.exists(),
        "the unheld SIF stayed: {}",
        text(&out.stderr)
    );
    let out = node.run_as("alice", &["cache", "rm", &digest_of_cached(sif)], &[]);
    assert!(!out.status.success(), "cache rm removed a held SIF");

    // apptainer's exit status is the command's; afterwards the SIF is free to go.
    fs::write(scratch.join("release"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = node.run_as("alice", &["cache", "prune", "--max-size", "0"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!sif.exists(), "a released SIF stayed after prune");

    // Without a command: `apptainer run SIF`.
    for f in ["started", "release"] {
        let _ = fs::remove_file(scratch.join(f));
    }
    fs::write(scratch.join("release"), "").unwrap();
    let out = node.run_as(
        "alice",
        &["run", "alice/run:1"],
        &[
            ("SLURM_JOB_ID", "56"),
            ("HPC_REGISTRY_APPTAINER", apptainer.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let argv = fs::read_to_string(scratch.join("argv")).unwrap();
    assert_eq!(argv.lines().collect::<Vec<_>>()[0], "run", "{argv}");
    assert_eq!(argv.lines().count(), 2, "{argv}");
}

#[test]
fn a_failed_build_exits_non_zero_with_its_reason_and_log_and_unready_outside_a_job_says_so() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    // A random "layer" that is no tar: its build fails.
    push_as(&server, &Creds::of("alice"), "alice/broken", "1");
    let out = node.run_as(
        "alice",
        &["fetch", "alice/broken:1"],
        &[("SLURM_JOB_ID", "9")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(
        stderr.contains("--- end of the build log ---"),
        "no log tail: {stderr}"
    );
    assert!(text(&out.stdout).is_empty());

    // An unknown image: one line.
    let out = node.run_as(
        "alice",
        &["fetch", "alice/nothing:1"],
        &[("SLURM_JOB_ID", "9")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn outside_a_job_fetch_does_not_wait_for_a_build_unless_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // No build workers: the SIF stays queued.
    fs::write(&config, "[farm]\nworkers = 0\n").unwrap();
    let server = munge_server(&["--config", config.to_str().unwrap()]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/queued:1", &["/bin/true"], 0);
    let out = node.run_as("alice", &["fetch", "alice/queued:1"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("queued") && stderr.contains("--wait"),
        "{stderr}"
    );
    let started = std::time::Instant::now();
    let out = node.run_as("alice", &["fetch", "--wait", "3s", "alice/queued:1"], &[]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < BUILD_DEADLINE);
}

#[test]
fn a_range_with_a_stale_if_range_gets_the_whole_sif_or_blob() {
    let server = munge_server(&[]);
    let node = Node::new(&server);
    push_alice_image(&server, "alice/ranged:1", &["/bin/true"], 0);
    let (sif, _) = node.fetch_ok("alice", &["alice/ranged:1"]);
    let alice = Creds::of("alice");
    let manifest = with_auth(
        http()
            .get(server.url("/v2/alice/ranged/manifests/1"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json"),
        &Auth::Basic(&alice),
    )
    .send()
    .unwrap();
    let manifest: serde_json::Value = manifest.json().unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob_url = server.url(&format!("/v2/alice/ranged/blobs/{layer}"));
    let sif_digest = digest_of_cached(&sif);
    let sif_bytes = fs::read(&sif).unwrap();
    let blob_bytes = get_blob_as(&blob_url, &alice);
    let stale = format!("\"sha256:{}\"", "0".repeat(64));
    for (url, etag, whole) in [
        (
            server.url("/sif/alice/ranged:1"),
            sif_digest.as_str(),
            &sif_bytes,
        ),
        (blob_url.clone(), layer.as_str(), &blob_bytes),
    ] {
        let ranged = |if_range: Option<&str>| {
            let mut req =
                with_auth(http().get(&url), &Auth::Basic(&alice)).header("range", "bytes=10-");
            if let Some(v) = if_range {
                req = req.header("if-range", v);
            }
            let r = req.send().unwrap();
            (r.status().as_u16(), r.bytes().unwrap().to_vec())
        };
        let current = format!("\"{etag}\"");
        assert_eq!(ranged(None), (206, whole[10..].to_vec()), "{url}");
        assert_eq!(ranged(Some(&current)), (206, whole[10..].to_vec()), "{url}");
        for validator in [
            stale.clone(),
            format!("W/{current}"),
            "Wed, 02 Dec 2026 10:00:00 GMT".to_owned(),
        ] {
            assert_eq!(
                ranged(Some(&validator)),
                (200, whole.to_vec()),
                "{url} with If-Range {validator}"
            );
        }
    }
}

fn get_blob_as(url: &str, creds: &Creds) -> Vec<u8> {
    let r = with_auth(http().get(url), &Auth::Basic(creds))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r.bytes().unwrap().to_vec()
}
