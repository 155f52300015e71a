//! The SIF build farm against the real server: images pushed with the Docker engine and skopeo
//! become SIFs that the real `siftool`, `unsquashfs`, a loop mount and a chroot accept and run;
//! builds survive kill -9, are shared by every tag and repository of a digest, run in a bounded
//! pool and are reproducible; `/sif/` honours Range and ETag; every SIF is published as an ORAS
//! artifact that oras-py pulls; the Apptainer backend drives a stand-in `apptainer` that checks
//! its arguments and the OCI layout it is given; broken images fail with BUILD_FAILED; an index
//! gets SIFs for its children of the configured platforms only (attestations never).
//!
//! Nothing here asserts timings: every wait polls with a generous deadline. The server is
//! configured through a `[farm]` TOML file (`--config`), see [`FarmServer`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::sif::*;
use crate::support::*;

/// What the native builder adds to every image, as `unsquashfs -l` lists it.
const SINGULARITY_TREE: &[&str] = &[
    "/.singularity.d",
    "/.singularity.d/runscript",
    "/.singularity.d/env",
    "/.singularity.d/actions",
    "/.singularity.d/actions/run",
    "/.singularity.d/labels.json",
    "/singularity",
    "/etc/hosts",
    "/etc/resolv.conf",
];

const BUSYBOX_FILES: &[&str] = &["/bin", "/bin/busybox", "/bin/sh"];

fn files_and_tree(extra: &[&'static str]) -> Vec<&'static str> {
    BUSYBOX_FILES
        .iter()
        .chain(SINGULARITY_TREE)
        .chain(extra)
        .copied()
        .collect()
}

/// Polls `GET /v2/<repo>/manifests/<reference>` until it answers 200 with a manifest for which
/// `done` holds; returns (digest, manifest).
fn wait_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let r = get_manifest(server, repo, reference);
        if r.status == StatusCode::OK {
            let m = r.json();
            if done(&m) {
                return (sha256_digest(&r.body), m);
            }
        }
        if Instant::now() > until {
            panic!(
                "GET /v2/{repo}/manifests/{reference}: not {what} after 120 s; last: {}",
                r.describe()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /sif/<reference>` answers 200 with exactly `sif` (no 202: the SIF is ready).
fn assert_sif_is(server: &Server, reference: &str, sif: &[u8]) {
    let r = sif_get(server, reference);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /sif/{reference}: {}",
        r.describe()
    );
    assert!(
        r.body == sif,
        "GET /sif/{reference} served other bytes than expected ({} vs {} bytes)",
        r.body.len(),
        sif.len()
    );
}

/// Checks everything `/sif/<digest>` and its sub-resources say about a ready SIF built from
/// image `digest` with `backend`: same bytes as `sif`, HEAD headers, the ready status, the log,
/// and the squashfs partition `squashfs`.
fn assert_ready_views(server: &Server, digest: &str, sif: &[u8], squashfs: &[u8], backend: &str) {
    let sif_digest = sha256_digest(sif);
    assert_sif_is(server, digest, sif);

    let h = sif_request(server, "HEAD", digest, &[]);
    assert_eq!(
        h.status,
        StatusCode::OK,
        "HEAD /sif/{digest}: {}",
        h.describe()
    );
    assert!(h.body.is_empty(), "HEAD /sif/{digest} has a body");
    assert_eq!(
        h.header("content-length").as_deref(),
        Some(sif.len().to_string().as_str()),
        "Content-Length of HEAD /sif/{digest}: {}",
        h.describe()
    );
    assert_eq!(
        h.header("etag").as_deref(),
        Some(format!("\"{sif_digest}\"").as_str()),
        "ETag of HEAD /sif/{digest} must be the SIF's digest: {}",
        h.describe()
    );

    let s = sif_status(server, digest);
    assert_eq!(s["state"], "ready", "/sif/{digest}/status: {s}");
    assert_eq!(s["image"], digest, "/sif/{digest}/status: {s}");
    assert_eq!(s["platform"], "linux/amd64", "/sif/{digest}/status: {s}");
    assert_eq!(
        s["sif"],
        sif_digest.as_str(),
        "/sif/{digest}/status names another SIF: {s}"
    );
    assert_eq!(s["backend"], backend, "/sif/{digest}/status: {s}");
    assert!(
        s["attempts"].as_i64().is_some_and(|a| a >= 1),
        "/sif/{digest}/status: {s}"
    );

    let log = sif_get(server, &format!("{digest}/log"));
    assert_eq!(
        log.status,
        StatusCode::OK,
        "GET /sif/{digest}/log: {}",
        log.describe()
    );
    assert!(
        log.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "GET /sif/{digest}/log is not text: {}",
        log.describe()
    );
    assert!(
        !log.text().trim().is_empty(),
        "GET /sif/{digest}/log is empty"
    );
    assert!(
        std::str::from_utf8(&log.body).is_ok(),
        "GET /sif/{digest}/log is not UTF-8"
    );

    let sq = sif_get(server, &format!("{digest}/squashfs"));
    assert_eq!(
        sq.status,
        StatusCode::OK,
        "GET /sif/{digest}/squashfs: {}",
        sq.describe()
    );
    assert_eq!(
        sq.body.len(),
        squashfs.len(),
        "GET /sif/{digest}/squashfs length vs `siftool dump`"
    );
    assert!(
        sq.body == squashfs,
        "GET /sif/{digest}/squashfs is not the partition `siftool dump` gives"
    );
    assert_eq!(
        &sq.body[..4],
        b"hsqs",
        "GET /sif/{digest}/squashfs does not start with the squashfs magic"
    );

    // The enroot image built with the SIF: a squashfs of its own, named by its own digest.
    let en = sif_get(server, &format!("{digest}/enroot"));
    assert_eq!(
        en.status,
        StatusCode::OK,
        "GET /sif/{digest}/enroot: {}",
        en.describe()
    );
    assert_eq!(
        &en.body[..4],
        b"hsqs",
        "GET /sif/{digest}/enroot is no squashfs"
    );
    let enroot_digest = sha256_digest(&en.body);
    assert_eq!(
        en.header("etag").as_deref(),
        Some(format!("\"{enroot_digest}\"").as_str()),
        "ETag of /sif/{digest}/enroot must be its digest: {}",
        en.describe()
    );
    assert_eq!(
        en.header("x-sif-digest").as_deref(),
        Some(sif_digest.as_str())
    );
    assert!(
        en.body != squashfs,
        "the enroot image is the bare partition"
    );
    let part = sif_request(
        server,
        "GET",
        &format!("{digest}/enroot"),
        &[("Range", "bytes=0-3")],
    );
    assert_eq!(
        part.status,
        StatusCode::PARTIAL_CONTENT,
        "{}",
        part.describe()
    );
    assert_eq!(part.body, b"hsqs");
}

// ---------------------------------------------------------------------------------------------
// 1. Push to SIF
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_and_skopeo_pushes_become_sifs_that_run() {
    // No in-process worker at first: both jobs are certain to be seen queued (202) before any
    // build runs. The restart with workers then also shows queued jobs surviving a kill -9.
    let mut server = FarmServer::start("workers = 0");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(
        &layout,
        "docker",
        &["/bin/sh", "-c", "echo hello-from-docker"],
    );
    busybox_oci_layout(
        &layout,
        "skopeo",
        &["/bin/sh", "-c", "echo hello-from-skopeo"],
    );

    // The Docker engine: docker load, tag, push (Docker v2 schema 2).
    let d = docker();
    let local = format!("{}:1", unique("hpcreg-test/farm-busybox"));
    let archive = tmp.path().join("busybox.tar");
    oci_layout_to_docker_archive(&layout, "docker", &archive, &local);
    run(d.cmd().arg("load").arg("-i").arg(&archive));
    let remote = format!("{}/alice/busybox:1", server.host());
    run(d.cmd().args(["tag", &local, &remote]));
    run(d.cmd().args(["push", &remote]));
    run(d.cmd().args(["rmi", &remote, &local]));
    let docker_digest = manifest_digest(&server, "alice/busybox", "1");
    assert_eq!(
        get_manifest(&server, "alice/busybox", "1")
            .header("content-type")
            .as_deref(),
        Some(DOCKER_MANIFEST),
        "docker push stores a Docker v2s2 manifest"
    );

    // skopeo, OCI format.
    let skopeo_digest = skopeo_push(&server, &layout, "skopeo", "bob/tool", "2");
    assert_eq!(
        get_manifest(&server, "bob/tool", "2")
            .header("content-type")
            .as_deref(),
        Some(OCI_MANIFEST),
        "skopeo --format oci stores an OCI manifest"
    );

    // Queued: 202 with state, position and Retry-After, by tag and by digest; HEAD too.
    let mut positions = Vec::new();
    for (reference, digest) in [
        ("alice/busybox:1", &docker_digest),
        ("bob/tool:2", &skopeo_digest),
    ] {
        for rest in [reference, digest.as_str()] {
            let r = sif_get(&server, rest);
            let body = check_accepted(&format!("GET /sif/{rest} with no worker running"), &r);
            assert_eq!(body["state"], "queued", "GET /sif/{rest}: {body}");
            assert_eq!(body["image"], digest.as_str(), "GET /sif/{rest}: {body}");
            assert_eq!(body["platform"], "linux/amd64", "GET /sif/{rest}: {body}");
            if rest == reference {
                positions.push(body["position"].as_u64().unwrap());
            }
            let h = sif_request(&server, "HEAD", rest, &[]);
            assert_eq!(
                h.status,
                StatusCode::ACCEPTED,
                "HEAD /sif/{rest} while queued: {}",
                h.describe()
            );
            assert!(
                h.header("retry-after").is_some(),
                "HEAD /sif/{rest} 202 without Retry-After"
            );
        }
        let s = sif_status(&server, digest);
        assert_eq!(s["state"], "queued", "/sif/{digest}/status: {s}");
    }
    assert_eq!(
        positions,
        [0, 1],
        "queue positions of the docker (first) and skopeo (second) pushes"
    );

    // Start two workers (kill -9 and restart on the same data directory).
    server.rewrite_config("workers = 2");
    server.restart();

    for (name, reference, digest, expected) in [
        (
            "docker",
            "alice/busybox:1",
            &docker_digest,
            "hello-from-docker\n",
        ),
        (
            "skopeo",
            "bob/tool:2",
            &skopeo_digest,
            "hello-from-skopeo\n",
        ),
    ] {
        let waited = wait_sif(&server, reference, BUILD_DEADLINE);
        let sif = waited.reply.body;
        let checked = check_runnable_sif(name, &sif, tmp.path(), &files_and_tree(&[]), expected);
        assert_ready_views(&server, digest, &sif, &checked.squashfs, "native");
        let s = sif_status(&server, reference);
        assert_eq!(s["attempts"], 1, "{reference}: one build attempt: {s}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Durability and sharing
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_9_mid_build_then_restart_completes_the_job() {
    const BIG: u64 = 256 * 1024 * 1024;
    // One worker with one compression thread: a 256 MiB incompressible layer keeps it busy long
    // enough to be seen building.
    let mut server = FarmServer::start("workers = 1\nthreads = 1");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "big", &["/bin/sh", "-c", "echo hello-from-big"]);
    let seed = fresh_seed();
    add_big_random_layer(&layout, "big", seed, BIG);
    let digest = skopeo_push(&server, &layout, "big", "alice/big", "1");

    let s = wait_status(&server, &digest, "building", BUILD_DEADLINE, |s| {
        s["state"] != "queued"
    });
    assert_eq!(
        s["state"], "building",
        "the build of a 256 MiB layer ended before the test could kill the server mid-build: {s}"
    );
    assert_eq!(s["attempts"], 1, "{s}");
    server.kill9();
    server.restart();

    let waited = wait_sif(&server, "alice/big:1", Duration::from_secs(900));
    let s = sif_status(&server, &digest);
    assert_eq!(s["state"], "ready", "{s}");
    assert_eq!(
        s["attempts"], 2,
        "the interrupted attempt and the one after the restart: {s}"
    );
    assert!(
        !log_lines(
            &server,
            &["re-queued 1 SIF builds interrupted by the last shutdown"]
        )
        .is_empty(),
        "the restarted server does not say it re-queued the interrupted build"
    );
    assert_eq!(
        log_lines(&server, &["SIF build started", &digest]).len(),
        2,
        "one build started before the kill and one after the restart"
    );

    let sif = waited.reply.body;
    let checked = check_runnable_sif(
        "big",
        &sif,
        tmp.path(),
        &files_and_tree(&["/data", "/data/random.bin"]),
        "hello-from-big\n",
    );
    assert_ready_views(&server, &digest, &sif, &checked.squashfs, "native");
    // The big file in the SIF is byte for byte the one pushed.
    let mount = Mount::squashfs_at(
        &checked.path,
        checked.partition.start,
        &tmp.path().join("big-mnt2"),
    );
    let (got, len) =
        hash_reader(fs::File::open(mount.path().join("data/random.bin")).unwrap()).unwrap();
    assert_eq!(len, BIG, "size of /data/random.bin in the SIF");
    assert_eq!(
        got,
        pattern_digest(seed, BIG),
        "content of /data/random.bin in the SIF"
    );
}

#[test]
fn one_digest_under_two_tags_and_two_repositories_is_built_once() {
    let server = FarmServer::start("workers = 2");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "dup", &["/bin/sh", "-c", "echo hello-from-dup"]);
    let a = skopeo_push(&server, &layout, "dup", "alice/dup", "a");
    let b = skopeo_push(&server, &layout, "dup", "alice/dup", "b");
    let c = skopeo_push(&server, &layout, "dup", "bob/dup", "c");
    assert_eq!(a, b, "the same image pushed twice has one digest");
    assert_eq!(
        a, c,
        "the same image pushed to two repositories has one digest"
    );
    let digest = a;

    let sif = wait_sif(&server, "alice/dup:a", BUILD_DEADLINE).reply.body;
    for reference in ["alice/dup:b", "bob/dup:c", digest.as_str()] {
        let other = wait_sif(&server, reference, BUILD_DEADLINE).reply.body;
        assert!(
            other == sif,
            "GET /sif/{reference} is another SIF than /sif/alice/dup:a"
        );
    }
    let s = sif_status(&server, &digest);
    assert_eq!(s["state"], "ready", "{s}");
    assert_eq!(s["attempts"], 1, "one build attempt for the digest: {s}");
    for reference in ["alice/dup:b", "bob/dup:c"] {
        let other = sif_status(&server, reference);
        assert_eq!(
            other, s,
            "/sif/{reference}/status is not the one job of {digest}"
        );
    }
    assert_eq!(
        log_lines(&server, &["SIF build started", &digest]).len(),
        1,
        "one \"SIF build started\" for {digest} in the server log"
    );

    // The one SIF is published for every tag of the digest, in both repositories.
    for (repo, tag) in [
        ("alice/dup", "a.sif"),
        ("alice/dup", "b.sif"),
        ("bob/dup", "c.sif"),
    ] {
        wait_manifest(
            &server,
            repo,
            tag,
            "the ORAS artifact of the shared SIF",
            |m| m["layers"][0]["digest"] == sha256_digest(&sif).as_str(),
        );
    }

    // Re-pushing and re-tagging later reuses the SIF at once and builds nothing.
    skopeo_push(&server, &layout, "dup", "alice/dup", "a");
    skopeo_push(&server, &layout, "dup", "alice/dup", "d");
    assert_sif_is(&server, "alice/dup:d", &sif);
    // Once the planner has handled the new tag (its ORAS tag appears), still one build.
    wait_manifest(
        &server,
        "alice/dup",
        "d.sif",
        "the ORAS artifact of tag d",
        |m| m["layers"][0]["digest"] == sha256_digest(&sif).as_str(),
    );
    assert_eq!(
        log_lines(&server, &["SIF build started", &digest]).len(),
        1,
        "a re-push rebuilt {digest}"
    );
    assert_eq!(
        log_lines(&server, &["SIF build queued", &digest]).len(),
        1,
        "a re-push re-queued {digest}"
    );
    assert_eq!(sif_status(&server, &digest)["attempts"], 1);
}

#[test]
fn twenty_images_pushed_concurrently_all_become_ready_in_a_bounded_pool() {
    const IMAGES: usize = 20;
    const WORKERS: usize = 2;
    let server = FarmServer::start(&format!("workers = {WORKERS}"));
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "base", &["/bin/sh"]);
    let base = read_layout_image(&layout, "base");
    assert_eq!(base.layers.len(), 1);
    let (layer_type, layer) = base.layers[0].clone();
    let base_config: Value = serde_json::from_slice(&base.config).unwrap();

    // 20 distinct images (own config: CMD and a nonce label) sharing the busybox layer.
    let images: Vec<(String, Vec<u8>, Vec<u8>)> = (0..IMAGES)
        .map(|i| {
            let mut config = base_config.clone();
            config["config"]["Cmd"] =
                json!(["/bin/sh", "-c", format!("echo hello-from-image-{i}")]);
            config["config"]["Labels"]["org.hpc-registry.test.nonce"] = json!(unique("n"));
            let config = serde_json::to_vec(&config).unwrap();
            let manifest = oci_manifest_bytes(
                &descriptor(OCI_CONFIG, &config),
                &[descriptor(&layer_type, &layer)],
                None,
            );
            (format!("alice/many-{i}"), config, manifest)
        })
        .collect();

    let digests: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = images
            .iter()
            .map(|(repo, config, manifest)| {
                let (server, layer) = (&server, &layer);
                scope.spawn(move || {
                    push_blob(server, repo, config);
                    push_blob(server, repo, layer);
                    put_manifest_ok(server, repo, "1", OCI_MANIFEST, manifest)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("push thread"))
            .collect()
    });
    assert_eq!(
        digests.iter().collect::<BTreeSet<_>>().len(),
        IMAGES,
        "20 distinct digests"
    );

    // Sample every status while the builds run, until all are ready.
    let until = Instant::now() + Duration::from_secs(600);
    let mut most_building_in_a_sweep = 0;
    loop {
        let statuses: Vec<Value> = digests.iter().map(|d| sif_status(&server, d)).collect();
        let count = |state: &str| statuses.iter().filter(|s| s["state"] == state).count();
        most_building_in_a_sweep = most_building_in_a_sweep.max(count("building"));
        if let Some(failed) = statuses.iter().find(|s| s["state"] == "failed") {
            panic!("a build failed: {failed}");
        }
        if count("ready") == IMAGES {
            break;
        }
        if Instant::now() > until {
            panic!("not all 20 SIFs ready after 600 s: {statuses:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    // Informational only: a sweep is 20 requests, not a snapshot, so it can see a job that has
    // just finished as building and its successor too. The log below is the exact check.
    eprintln!(
        "most jobs seen building in one sweep of the 20 statuses: {most_building_in_a_sweep}"
    );

    // The pool was bounded: replaying the log, never more than WORKERS builds between their
    // "SIF build started" and their "SIF ready" (each worker logs its job's end before it claims
    // the next one, so the log order is each worker's order).
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    let mut most_running = 0;
    for line in server.log().lines() {
        if line.contains("SIF build started") {
            let job = log_field(line, "job").unwrap_or_else(|| panic!("no job= in {line:?}"));
            *started.entry(job.clone()).or_default() += 1;
            assert!(
                running.insert(job.clone()),
                "job {job} started twice without finishing: {line}"
            );
            most_running = most_running.max(running.len());
            assert!(
                running.len() <= WORKERS,
                "{} builds running at once with workers = {WORKERS}: {running:?} at {line:?}",
                running.len()
            );
        } else if line.contains("SIF ready") || line.contains("SIF build failed") {
            let job = log_field(line, "job").unwrap_or_else(|| panic!("no job= in {line:?}"));
            assert!(
                running.remove(&job),
                "job {job} finished without having started: {line}"
            );
        }
    }
    assert!(
        running.is_empty(),
        "jobs never finished according to the log: {running:?}"
    );
    assert_eq!(started.len(), IMAGES, "jobs started: {started:?}");
    assert!(
        started.values().all(|n| *n == 1),
        "a job was built more than once: {started:?}"
    );
    eprintln!("most builds running at once according to the log: {most_running}");

    // Every SIF is there, and runs its own CMD.
    for (i, digest) in digests.iter().enumerate() {
        let r = sif_get(&server, &format!("alice/many-{i}:1"));
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET /sif/alice/many-{i}:1: {}",
            r.describe()
        );
        assert_eq!(r.header("x-image-digest").as_deref(), Some(digest.as_str()));
        check_runnable_sif(
            &format!("many-{i}"),
            &r.body,
            tmp.path(),
            &files_and_tree(&[]),
            &format!("hello-from-image-{i}\n"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Reproducible mode
// ---------------------------------------------------------------------------------------------

#[test]
fn reproducible_mode_builds_one_digest_to_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "r", &["/bin/sh", "-c", "echo hello-from-repro"]);

    // Reproducible mode is the default: no key in the config.
    let first = FarmServer::start("workers = 1");
    let d1 = skopeo_push(&first, &layout, "r", "alice/repro", "1");
    let sif1 = wait_sif(&first, &d1, BUILD_DEADLINE).reply.body;
    let started1 = sif_status(&first, &d1)["started_at"]
        .as_i64()
        .expect("started_at");
    drop(first);

    // Make sure the second build runs at a later second than the first: equal bytes must not
    // come from equal clocks.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        <= started1 + 1
    {
        thread::sleep(Duration::from_millis(100));
    }
    let second = FarmServer::start("workers = 1");
    let d2 = skopeo_push(&second, &layout, "r", "alice/repro", "1");
    assert_eq!(d1, d2, "the same layout pushed twice has one digest");
    let sif2 = wait_sif(&second, &d2, BUILD_DEADLINE).reply.body;
    let started2 = sif_status(&second, &d2)["started_at"]
        .as_i64()
        .expect("started_at");
    assert!(
        started2 > started1,
        "the second build started at {started2}, the first at {started1}"
    );

    if sif1 != sif2 {
        let first_difference = sif1.iter().zip(&sif2).position(|(a, b)| a != b);
        panic!(
            "two builds of {d1} differ: {} vs {} bytes ({} vs {}), first difference at byte {first_difference:?}",
            sif1.len(),
            sif2.len(),
            sha256_digest(&sif1),
            sha256_digest(&sif2)
        );
    }
    // A nil UUID in the header (bytes 48..64 of the global header: launch script [32], magic
    // [10], version [3], arch [3], then the ID), as Apptainer's deterministic mode writes it;
    // siftool then prints no ID at all.
    assert_eq!(&sif1[32..41], b"SIF_MAGIC", "not a SIF header");
    assert_eq!(
        &sif1[48..64],
        &[0u8; 16],
        "the SIF's UUID is not nil in reproducible mode"
    );
    let path = tmp.path().join("repro.sif");
    fs::write(&path, &sif1).unwrap();
    let header = siftool_header(&path);
    let id = header
        .iter()
        .find(|(k, _)| k == "ID")
        .map(|(_, v)| v.as_str());
    assert!(
        id.is_none() || id == Some("00000000-0000-0000-0000-000000000000"),
        "siftool header shows a UUID: {header:?}"
    );
    assert_apptainer_objects("repro", &siftool_list(&path));
}

// ---------------------------------------------------------------------------------------------
// 4. Range and ETag
// ---------------------------------------------------------------------------------------------

#[test]
fn sif_downloads_honour_range_and_etag() {
    let server = FarmServer::start("workers = 1");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "x", &["/bin/sh"]);
    let digest = skopeo_push(&server, &layout, "x", "alice/ranges", "1");
    let full = wait_sif(&server, &digest, BUILD_DEADLINE).reply;
    let sif = full.body.clone();
    let len = sif.len();
    let sif_digest = sha256_digest(&sif);
    let etag = format!("\"{sif_digest}\"");
    assert!(len > 200, "a SIF of {len} bytes");

    for reference in [digest.as_str(), "alice/ranges:1"] {
        let r = sif_get(&server, reference);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("etag").as_deref(),
            Some(etag.as_str()),
            "ETag of /sif/{reference} = the SIF's digest"
        );
        assert_eq!(
            r.header("docker-content-digest").as_deref(),
            Some(sif_digest.as_str())
        );
        assert_eq!(
            r.header("content-length").as_deref(),
            Some(len.to_string().as_str())
        );
        assert_eq!(r.header("accept-ranges").as_deref(), Some("bytes"));
        assert!(
            r.header("cache-control")
                .unwrap_or_default()
                .contains("immutable"),
            "Cache-Control of /sif/{reference}: {}",
            r.describe()
        );

        // bytes=0-99
        let r = sif_request(&server, "GET", reference, &[("range", "bytes=0-99")]);
        assert_eq!(
            r.status,
            StatusCode::PARTIAL_CONTENT,
            "Range: bytes=0-99 on /sif/{reference}: {}",
            r.describe()
        );
        assert_eq!(r.header("content-range"), Some(format!("bytes 0-99/{len}")));
        assert_eq!(r.header("content-length").as_deref(), Some("100"));
        assert_eq!(r.body, &sif[..100]);
        assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));

        // A suffix range: the last 100 bytes.
        let r = sif_request(&server, "GET", reference, &[("range", "bytes=-100")]);
        assert_eq!(
            r.status,
            StatusCode::PARTIAL_CONTENT,
            "Range: bytes=-100: {}",
            r.describe()
        );
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/{len}", len - 100, len - 1))
        );
        assert_eq!(r.body, &sif[len - 100..]);

        // An open range from the middle.
        let mid = len / 2;
        let r = sif_request(
            &server,
            "GET",
            reference,
            &[("range", &format!("bytes={mid}-"))],
        );
        assert_eq!(
            r.status,
            StatusCode::PARTIAL_CONTENT,
            "Range: bytes={mid}-: {}",
            r.describe()
        );
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {mid}-{}/{len}", len - 1))
        );
        assert_eq!(r.body, &sif[mid..]);

        // Past the end: 416 with the size.
        let r = sif_request(
            &server,
            "GET",
            reference,
            &[("range", &format!("bytes={len}-"))],
        );
        assert_eq!(
            r.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "Range past the end: {}",
            r.describe()
        );
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}")));

        // HEAD with a range.
        let r = sif_request(&server, "HEAD", reference, &[("range", "bytes=0-99")]);
        assert_eq!(
            r.status,
            StatusCode::PARTIAL_CONTENT,
            "HEAD with Range: {}",
            r.describe()
        );
        assert_eq!(r.header("content-length").as_deref(), Some("100"));

        // If-None-Match with the ETag: 304 without a body; with another: 200.
        let r = sif_request(&server, "GET", reference, &[("if-none-match", &etag)]);
        assert_eq!(
            r.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {etag} on /sif/{reference}: {}",
            r.describe()
        );
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
        let r = sif_request(
            &server,
            "GET",
            reference,
            &[("if-none-match", "\"sha256:0000\", \"other\"")],
        );
        assert_eq!(
            r.status,
            StatusCode::OK,
            "If-None-Match with other tags: {}",
            r.describe()
        );
        assert_eq!(r.body, sif);
        let r = sif_request(
            &server,
            "GET",
            reference,
            &[("if-none-match", &format!("\"other\", {etag}"))],
        );
        assert_eq!(
            r.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match listing the ETag second: {}",
            r.describe()
        );
    }

    // The squashfs view honours ranges too, within the partition.
    let sq = sif_get(&server, &format!("{digest}/squashfs"));
    assert_eq!(sq.status, StatusCode::OK);
    let r = sif_request(
        &server,
        "GET",
        &format!("{digest}/squashfs"),
        &[("range", "bytes=0-3")],
    );
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{}", r.describe());
    assert_eq!(r.body, b"hsqs");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-3/{}", sq.body.len()))
    );
    let sq_etag = sq.header("etag").expect("ETag on /squashfs");
    assert_ne!(
        sq_etag, etag,
        "the squashfs view must not share the SIF's ETag"
    );
    let r = sif_request(
        &server,
        "GET",
        &format!("{digest}/squashfs"),
        &[("if-none-match", &sq_etag)],
    );
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{}", r.describe());
}

// ---------------------------------------------------------------------------------------------
// 5. ORAS
// ---------------------------------------------------------------------------------------------

/// Checks the ORAS artifact `manifest` made for image `image_digest` and SIF `sif`.
fn assert_oras_layout(manifest: &Value, image_digest: &str, sif: &[u8]) {
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest}");
    assert_eq!(
        manifest["config"]["mediaType"], SIF_CONFIG_TYPE,
        "{manifest}"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(layers[0]["mediaType"], SIF_LAYER_TYPE, "{manifest}");
    assert_eq!(
        layers[0]["digest"],
        sha256_digest(sif).as_str(),
        "{manifest}"
    );
    assert_eq!(layers[0]["size"], sif.len(), "{manifest}");
    assert_eq!(manifest["subject"]["digest"], image_digest, "{manifest}");
}

#[test]
fn sifs_are_oras_artifacts_that_oras_py_pulls() {
    ensure_oras_py();
    let server = FarmServer::start("workers = 1");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "one", &["/bin/sh", "-c", "echo hello-one"]);
    busybox_oci_layout(&layout, "two", &["/bin/sh", "-c", "echo hello-two"]);
    let repo = "alice/busybox";

    let d1 = skopeo_push(&server, &layout, "one", repo, "1");
    let sif1 = wait_sif(&server, &d1, BUILD_DEADLINE).reply.body;
    let sif1_digest = sha256_digest(&sif1);
    let (art1, m1) = wait_manifest(
        &server,
        repo,
        "1.sif",
        "the ORAS artifact of the first SIF",
        |m| m["layers"][0]["digest"] == sif1_digest.as_str(),
    );
    assert_oras_layout(&m1, &d1, &sif1);
    assert_eq!(
        get_blob(&server, repo, &sif1_digest),
        sif1,
        "the artifact's layer blob is the SIF"
    );

    // oras-py pulls exactly the SIF /sif/<digest> serves.
    let target = format!("{}/{repo}:1.sif", server.host());
    let files = oras_pull(&target, &tmp.path().join("pull1"));
    assert_eq!(files.len(), 1, "oras-py pulled {files:?}");
    let pulled = fs::read(&files[0]).unwrap();
    assert!(
        pulled == sif1,
        "oras-py pull of {target} differs from GET /sif/{d1}"
    );

    // The referrers API lists the artifact, with its artifactType, when asked for that type
    // (unfiltered listings show only client-pushed referrers, by design since 1d184b9).
    {
        let query = "?artifactType=application/vnd.sylabs.sif.config.v1%2Bjson";
        let r = Reply::from(
            http()
                .get(server.url(&format!("/v2/{repo}/referrers/{d1}{query}")))
                .send()
                .unwrap(),
        );
        assert_eq!(
            r.status,
            StatusCode::OK,
            "referrers{query}: {}",
            r.describe()
        );
        let index = r.json();
        let entries = index["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("referrers: {index}"));
        let entry = entries
            .iter()
            .find(|e| e["digest"] == art1.as_str())
            .unwrap_or_else(|| {
                panic!("referrers{query} of {d1} do not list the SIF artifact {art1}: {index}")
            });
        assert_eq!(
            entry["artifactType"], SIF_CONFIG_TYPE,
            "referrers entry: {entry}"
        );
        assert_eq!(entry["mediaType"], OCI_MANIFEST, "referrers entry: {entry}");
        assert_eq!(
            r.header("oci-filters-applied").as_deref(),
            Some("artifactType")
        );
        assert!(
            entries.iter().all(|e| e["artifactType"] == SIF_CONFIG_TYPE),
            "filtered referrers: {index}"
        );
    }

    // 1.sif is a derived tag: it resolves (above) but tags/list shows exactly what clients
    // pushed, pages included.
    let list = |query: &str| -> Value {
        let r = Reply::from(
            http()
                .get(server.url(&format!("/v2/{repo}/tags/list{query}")))
                .send()
                .unwrap(),
        );
        assert_eq!(
            r.status,
            StatusCode::OK,
            "tags/list{query}: {}",
            r.describe()
        );
        r.json()["tags"].clone()
    };
    assert_eq!(list(""), json!(["1"]), "the derived 1.sif is not listed");
    // What skopeo sees: the tag resolves to the artifact, and the tag list is the client's.
    let raw = run(skopeo().args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/{repo}:1.sif", server.host()),
    ]));
    assert_eq!(
        sha256_digest(raw.trim_end().as_bytes()),
        art1,
        "skopeo inspect --raw {repo}:1.sif"
    );
    let listed: Value = serde_json::from_str(&run(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repo}", server.host()),
    ])))
    .expect("skopeo list-tags JSON");
    assert_eq!(listed["Tags"], json!(["1"]), "skopeo list-tags: {listed}");

    // A client's tag of a derived name is the client's: listed, never touched by the farm. On
    // the derived 1.sif it takes the name over; deleted, the derived 1.sif comes back.
    let mine = skopeo_push(&server, &layout, "one", repo, "mine.sif");
    assert_eq!(mine, d1);
    let image = get_manifest(&server, repo, &d1);
    let media_type = image.header("content-type").unwrap();
    let r = put_manifest(&server, repo, "1.sif", &media_type, &image.body);
    assert_eq!(r.status, StatusCode::CREATED, "PUT 1.sif: {}", r.describe());
    assert_eq!(list(""), json!(["1", "1.sif", "mine.sif"]));
    assert_eq!(list("?n=2"), json!(["1", "1.sif"]));
    assert_eq!(list("?n=2&last=1.sif"), json!(["mine.sif"]));
    assert_eq!(
        manifest_digest(&server, repo, "1.sif"),
        d1,
        "the client's 1.sif is the image the client pushed there"
    );
    let r = Reply::from(
        http()
            .delete(server.url(&format!("/v2/{repo}/manifests/1.sif")))
            .send()
            .unwrap(),
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "DELETE 1.sif: {}",
        r.describe()
    );
    let (back, _) = wait_manifest(&server, repo, "1.sif", "the derived tag again", |m| {
        m["config"]["mediaType"] == SIF_CONFIG_TYPE
    });
    assert_eq!(
        back, art1,
        "the derived 1.sif came back as the same artifact"
    );
    assert_eq!(list(""), json!(["1", "mine.sif"]));
    assert_eq!(
        manifest_digest(&server, repo, "mine.sif"),
        d1,
        "the farm left the client's mine.sif alone"
    );

    // Moving tag 1 to another image moves 1.sif once that image's SIF is ready.
    let d2 = skopeo_push(&server, &layout, "two", repo, "1");
    assert_ne!(d1, d2);
    let sif2 = wait_sif(&server, &d2, BUILD_DEADLINE).reply.body;
    assert_sif_is(&server, &format!("{repo}:1"), &sif2);
    let sif2_digest = sha256_digest(&sif2);
    let (art2, m2) = wait_manifest(&server, repo, "1.sif", "moved to the second SIF", |m| {
        m["layers"][0]["digest"] == sif2_digest.as_str()
    });
    assert_oras_layout(&m2, &d2, &sif2);
    assert_ne!(art1, art2);
    let files = oras_pull(&target, &tmp.path().join("pull2"));
    assert_eq!(files.len(), 1, "oras-py pulled {files:?}");
    assert!(
        fs::read(&files[0]).unwrap() == sif2,
        "oras-py pull of {target} after the move is not the new SIF"
    );
    check_runnable_sif(
        "oras-two",
        &sif2,
        tmp.path(),
        &files_and_tree(&[]),
        "hello-two\n",
    );

    // Deleting the image by digest deletes tag 1 with it, and so 1.sif (not only at a prune).
    let r = Reply::from(
        http()
            .delete(server.url(&format!("/v2/{repo}/manifests/{d2}")))
            .send()
            .unwrap(),
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "DELETE {d2}: {}",
        r.describe()
    );
    let until = Instant::now() + Duration::from_secs(60);
    while get_manifest(&server, repo, "1.sif").status != StatusCode::NOT_FOUND {
        assert!(Instant::now() < until, "1.sif outlived its tag 1 by 60 s");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(list(""), json!(["mine.sif"]));
}

// ---------------------------------------------------------------------------------------------
// 6. The Apptainer backend
// ---------------------------------------------------------------------------------------------

/// The stand-in refuses what it should, before it is trusted to check the server.
fn stand_in_self_check(standin: &StandInApptainer, work: &Path) {
    let version = run(Command::new(&standin.path).arg("--version"));
    assert!(version.starts_with("apptainer version"), "{version}");
    let out = work.join("x.sif");

    // Wrong shapes of command line.
    for args in [
        vec!["pull", "x.sif", "docker://busybox"],
        vec!["build", out.to_str().unwrap(), "oci:/tmp:image"],
        vec!["build", "--force", "relative.sif", "oci:/tmp:image"],
        vec![
            "build",
            "--force",
            out.to_str().unwrap(),
            "docker://busybox",
        ],
    ] {
        let o = run_output(Command::new(&standin.path).args(&args));
        assert_eq!(o.status.code(), Some(64), "the stand-in accepted {args:?}");
    }

    // A layout with a layer blob missing is refused; a complete one is accepted.
    let layout = work.join("selfcheck-layout");
    busybox_oci_layout(&layout, "image", &["/bin/sh"]);
    let image = read_layout_image(&layout, "image");
    let layer = image.manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let src = format!("oci:{}:image", layout.display());
    run(Command::new(&standin.path)
        .args(["build", "--force"])
        .arg(&out)
        .arg(&src));
    assert_apptainer_objects("stand-in self-check", &siftool_list(&out));
    let blob = layout
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    fs::remove_file(&blob).unwrap();
    let o = run_output(
        Command::new(&standin.path)
            .args(["build", "--force"])
            .arg(&out)
            .arg(&src),
    );
    assert_eq!(
        o.status.code(),
        Some(64),
        "the stand-in accepted a layout without its layer blob"
    );
    assert!(
        standin.checks().contains("FAIL umoci raw unpack"),
        "{}",
        standin.checks()
    );
    standin.reset();
}

#[test]
fn apptainer_backend_runs_a_stand_in_apptainer_with_the_right_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let standin = StandInApptainer::new();
    stand_in_self_check(&standin, tmp.path());

    let server = FarmServer::start(&format!(
        "workers = 1\nbackend = \"apptainer\"\napptainer = \"{}\"\nmax_attempts = 1",
        standin.path_str()
    ));
    // The server says at start-up which apptainer it found.
    wait_log(
        &server,
        &["apptainer version 1.3.4-hpcreg-standin"],
        Duration::from_secs(60),
    );
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "a", &["/bin/sh", "-c", "echo hello-app"]);
    let digest = skopeo_push(&server, &layout, "a", "alice/app", "1");
    let waited = wait_sif(&server, "alice/app:1", BUILD_DEADLINE);
    let sif = waited.reply.body;

    // What the stand-in made is what is served.
    let checked = check_runnable_sif(
        "apptainer",
        &sif,
        tmp.path(),
        &["/bin/busybox", "/bin/sh", "/.standin-apptainer"],
        "built-by-standin-apptainer\n",
    );
    assert_ready_views(&server, &digest, &sif, &checked.squashfs, "apptainer");

    // It was called with `build --force --mksquashfs-args '-processors N' OUT.sif
    // oci:LAYOUT:image` (N: the server's thread count), LAYOUT beside OUT in a build directory
    // of the data directory, and its checks of the layout passed.
    let calls = standin.calls();
    let builds: Vec<&Vec<String>> = calls
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some("build"))
        .collect();
    assert_eq!(builds.len(), 1, "one `apptainer build`: {calls:?}");
    let build = builds[0];
    assert_eq!(build.len(), 6, "apptainer build arguments: {build:?}");
    assert_eq!(build[1..3], ["--force", "--mksquashfs-args"], "{build:?}");
    let threads = std::thread::available_parallelism().unwrap().get();
    assert_eq!(build[3], format!("-processors {threads}"), "{build:?}");
    let (out_arg, source) = (&build[4], &build[5]);
    let out = Path::new(out_arg);
    assert!(
        out.is_absolute() && out_arg.ends_with(".sif"),
        "output {out:?}"
    );
    let build_dir = out.parent().unwrap();
    assert!(
        build_dir.starts_with(server.data_dir()),
        "the build directory {build_dir:?} is not in the data directory {:?}",
        server.data_dir()
    );
    assert_eq!(
        *source,
        format!("oci:{}:image", build_dir.join("layout").display()),
        "{build:?}"
    );
    assert!(
        !build_dir.exists(),
        "the build directory {build_dir:?} was left behind"
    );
    let checks = standin.checks();
    assert!(
        !checks.contains("FAIL"),
        "the stand-in's checks failed:\n{checks}"
    );
    assert!(
        checks.contains("OK layout") && checks.contains(&format!("OK wrote {out_arg}")),
        "{checks}"
    );
    // It ran contained like a native build: at the builds' niceness (`[farm] nice`, 10 by
    // default), with the thread count for Go's runtime, its temporary files and cache in the
    // build directory (under the scratch bound, removed with it).
    let env = format!(
        "ENV GOMAXPROCS={threads} APPTAINER_TMPDIR={} APPTAINER_CACHEDIR={} NICE=10 MKSQUASHFS_ARGS=-processors {threads}",
        build_dir.join("tmp").display(),
        build_dir.join("cache").display()
    );
    assert!(checks.contains(&env), "expected {env:?} in:\n{checks}");
    assert!(
        calls
            .iter()
            .all(|c| c.first().map(String::as_str) != Some("--version") || c.len() == 1),
        "{calls:?}"
    );

    // The job's log is apptainer's output, with the command line.
    let log = sif_get(&server, &format!("{digest}/log")).text();
    assert!(
        log.contains(&format!("{} build --force", standin.path_str())),
        "job log:\n{log}"
    );
    assert!(
        log.contains("stand-in apptainer: layout ok"),
        "job log:\n{log}"
    );
    // Apptainer writes no enroot image: the native converter derived the one served above.
    assert!(
        log.contains("--- enroot image (native) ---"),
        "job log:\n{log}"
    );
}

#[test]
fn apptainer_backend_without_apptainer_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("not-installed/apptainer");
    let missing = missing.to_str().unwrap();
    let server = FarmServer::start(&format!(
        "workers = 1\nbackend = \"apptainer\"\napptainer = \"{missing}\"\nmax_attempts = 1"
    ));
    // The server says at start-up that builds will fail, and why.
    let startup = wait_log(
        &server,
        &["SIF builds will fail", missing],
        Duration::from_secs(60),
    );
    assert!(startup[0].contains("apptainer"), "{startup:?}");

    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "a", &["/bin/sh"]);
    let digest = skopeo_push(&server, &layout, "a", "alice/app", "1");
    let r = wait_settled(&server, "alice/app:1", BUILD_DEADLINE);
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "GET /sif/alice/app:1: {}",
        r.describe()
    );
    assert_eq!(r.error_codes(), ["BUILD_FAILED"], "{}", r.describe());
    let error = &r.json()["errors"][0];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("apptainer") && message.contains(missing),
        "the failure should say that {missing} (apptainer) cannot be run: {message}"
    );
    let tail = error["detail"]["log_tail"]
        .as_str()
        .unwrap_or_else(|| panic!("no log tail: {error}"));
    assert!(tail.contains("apptainer"), "log tail: {tail}");
    assert_eq!(error["detail"]["attempts"], 1, "{error}");

    let s = sif_status(&server, &digest);
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        s["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("apptainer"),
        "{s}"
    );
    let log = sif_get(&server, &format!("{digest}/log"));
    assert_eq!(log.status, StatusCode::OK);
    assert!(log.text().contains("apptainer"), "job log: {}", log.text());
}

// ---------------------------------------------------------------------------------------------
// 7. Failures
// ---------------------------------------------------------------------------------------------

/// Pushes a linux/amd64 image whose single layer is `layer`, labelled `media_type`.
fn push_image_with_layer(
    server: &Server,
    repo: &str,
    tag: &str,
    media_type: &str,
    layer: &[u8],
) -> String {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }))
    .unwrap();
    push_blob(server, repo, &config);
    push_blob(server, repo, layer);
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &config),
        &[descriptor(media_type, layer)],
        None,
    );
    put_manifest_ok(server, repo, tag, OCI_MANIFEST, &manifest)
}

/// `gzip -c` of `data`.
fn gzip(data: &[u8], work: &Path) -> Vec<u8> {
    let path = work.join(unique("gz-input"));
    fs::write(&path, data).unwrap();
    let out = run_output(Command::new("gzip").arg("-c").arg("-n").arg(&path));
    assert!(out.status.success());
    out.stdout
}

/// Asserts `/sif/<reference>` settles on 422 BUILD_FAILED after `attempts` attempts.
fn assert_build_failed(server: &Server, reference: &str, digest: &str, attempts: i64) {
    let r = wait_settled(server, reference, BUILD_DEADLINE);
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "GET /sif/{reference}: {}",
        r.describe()
    );
    assert_eq!(
        r.error_codes(),
        ["BUILD_FAILED"],
        "GET /sif/{reference}: {}",
        r.describe()
    );
    let error = &r.json()["errors"][0];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(digest),
        "the failure should name the image: {message}"
    );
    assert_eq!(error["detail"]["attempts"], attempts, "{error}");
    assert!(
        !error["detail"]["log_tail"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "a failure without its log tail: {error}"
    );
    let s = sif_status(server, digest);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["attempts"], attempts, "{s}");
    let reason = s["failure"].as_str().unwrap_or_default();
    assert!(
        !reason.is_empty() && message.contains(reason),
        "status failure {reason:?} vs message {message:?}"
    );
    // HEAD and the squashfs view say the same.
    assert_eq!(
        sif_request(server, "HEAD", reference, &[]).status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        sif_get(server, &format!("{reference}/squashfs")).status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[test]
fn an_invalid_layer_fails_the_build_with_build_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FarmServer::start("workers = 1\nmax_attempts = 1");

    // Not gzip although labelled so (and not gzip's magic either).
    let mut not_gzip = random_bytes(8192);
    not_gzip[0] = 0;
    let d_gz = push_image_with_layer(&server, "alice/broken", "gz", OCI_LAYER_GZIP, &not_gzip);
    // Valid gzip around something that is not a tar.
    let d_gz_tar = push_image_with_layer(
        &server,
        "alice/broken",
        "gztar",
        OCI_LAYER_GZIP,
        &gzip(&random_bytes(8192), tmp.path()),
    );
    // Plain bytes labelled as an uncompressed tar.
    let mut not_tar = random_bytes(8192);
    not_tar[0] = 0x42;
    let d_tar = push_image_with_layer(&server, "alice/broken", "tar", OCI_LAYER_TAR, &not_tar);

    for (tag, digest) in [("gz", &d_gz), ("gztar", &d_gz_tar), ("tar", &d_tar)] {
        assert_build_failed(&server, &format!("alice/broken:{tag}"), digest, 1);
        assert_eq!(
            log_lines(&server, &["SIF build started", digest]).len(),
            1,
            "max_attempts = 1: one attempt for alice/broken:{tag}"
        );
    }
    assert!(
        get_manifest(&server, "alice/broken", "gz.sif").status == StatusCode::NOT_FOUND,
        "a failed build published an ORAS artifact"
    );

    // Unknown images: 404.
    let unknown = format!("sha256:{}", "0".repeat(64));
    for reference in [unknown.as_str(), "alice/broken:nope", "nobody/nothing:1"] {
        let r = sif_get(&server, reference);
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "GET /sif/{reference}: {}",
            r.describe()
        );
    }

    // With max_attempts = 2 (and no delay) a broken image is tried twice, then fails for good.
    drop(server);
    let server = FarmServer::start("workers = 1\nmax_attempts = 2\nretry_delay_secs = 0");
    let digest = push_image_with_layer(&server, "alice/broken", "gz", OCI_LAYER_GZIP, &not_gzip);
    assert_build_failed(&server, "alice/broken:gz", &digest, 2);
    assert_eq!(
        log_lines(&server, &["SIF build started", &digest]).len(),
        2,
        "two attempts"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. What gets a job: indexes, platforms, attestations
// ---------------------------------------------------------------------------------------------

/// A buildx-style image index pushed by [`push_index`].
struct PushedIndex {
    amd64: String,
    arm64: String,
    attestation: String,
    index: String,
    layer_type: String,
    layer: Vec<u8>,
}

/// Pushes to `repo:tag` a buildx-style index of the busybox image `amd64` of `layout` as
/// linux/amd64, the same files labelled linux/arm64/v8 (as buildx labels arm64 images, in the
/// index and in the config), and an attestation manifest (unknown/unknown, in-toto layer).
fn push_index(server: &Server, layout: &Path, repo: &str, tag: &str) -> PushedIndex {
    let image = read_layout_image(layout, "amd64");
    let (layer_type, layer) = image.layers[0].clone();

    // The linux/amd64 and linux/arm64/v8 children.
    let mut arm_config: Value = serde_json::from_slice(&image.config).unwrap();
    arm_config["architecture"] = json!("arm64");
    arm_config["variant"] = json!("v8");
    let arm_config = serde_json::to_vec(&arm_config).unwrap();
    let arm_manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &arm_config),
        &[descriptor(&layer_type, &layer)],
        None,
    );
    for blob in [&image.config, &layer, &arm_config] {
        push_blob(server, repo, blob);
    }
    let amd64 = put_manifest_ok(
        server,
        repo,
        &sha256_digest(&image.manifest_bytes),
        OCI_MANIFEST,
        &image.manifest_bytes,
    );
    let arm64 = put_manifest_ok(
        server,
        repo,
        &sha256_digest(&arm_manifest),
        OCI_MANIFEST,
        &arm_manifest,
    );

    // A buildx-style attestation manifest for the amd64 image (unknown/unknown, in-toto layer).
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": format!("pkg:docker/{repo}@{tag}"), "digest": {"sha256": amd64.trim_start_matches("sha256:")}}],
        "predicate": {},
    }))
    .unwrap();
    let att_config = serde_json::to_vec(&json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&statement)]},
    }))
    .unwrap();
    push_blob(server, repo, &statement);
    push_blob(server, repo, &att_config);
    let att_manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &att_config),
        &[descriptor("application/vnd.in-toto+json", &statement)],
        None,
    );
    let attestation = put_manifest_ok(
        server,
        repo,
        &sha256_digest(&att_manifest),
        OCI_MANIFEST,
        &att_manifest,
    );

    let mut amd64_entry = descriptor(OCI_MANIFEST, &image.manifest_bytes);
    amd64_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm64_entry = descriptor(OCI_MANIFEST, &arm_manifest);
    arm64_entry["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let mut att_entry = descriptor(OCI_MANIFEST, &att_manifest);
    att_entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    att_entry["annotations"] = json!({
        "vnd.docker.reference.digest": amd64,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [amd64_entry, arm64_entry, att_entry],
    }))
    .unwrap();
    let index_digest = put_manifest_ok(server, repo, tag, OCI_INDEX, &index);
    PushedIndex {
        amd64,
        arm64,
        attestation,
        index: index_digest,
        layer_type,
        layer,
    }
}

#[test]
fn an_index_gets_a_sif_for_its_default_platform_child_only() {
    let server = FarmServer::start("workers = 1");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(
        &layout,
        "amd64",
        &["/bin/sh", "-c", "echo hello-from-index"],
    );
    let repo = "alice/multi";
    let PushedIndex {
        amd64,
        arm64,
        attestation,
        index: index_digest,
        layer_type,
        layer,
    } = push_index(&server, &layout, repo, "latest");

    // The index tag and the index digest both mean the linux/amd64 child.
    let sif = wait_sif(&server, &format!("{repo}:latest"), BUILD_DEADLINE).reply;
    assert_eq!(
        sif.header("x-image-digest").as_deref(),
        Some(amd64.as_str()),
        "{}",
        sif.describe()
    );
    let sif = sif.body;
    check_runnable_sif(
        "index",
        &sif,
        tmp.path(),
        &files_and_tree(&[]),
        "hello-from-index\n",
    );
    assert_sif_is(&server, &index_digest, &sif);
    assert_sif_is(
        &server,
        &format!("{index_digest}?platform=linux/amd64"),
        &sif,
    );
    assert_sif_is(&server, &amd64, &sif);
    let s = sif_status(&server, &index_digest);
    assert_eq!(
        s["image"],
        amd64.as_str(),
        "/sif/<index>/status is the amd64 child's job: {s}"
    );
    let r = sif_get(&server, &format!("{index_digest}?platform=linux/s390x"));
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "an index without that platform: {}",
        r.describe()
    );

    // The ORAS tag of the index tag carries the amd64 SIF, with the child as subject.
    let (_, m) = wait_manifest(
        &server,
        repo,
        "latest.sif",
        "the ORAS artifact of the index tag",
        |m| m["layers"][0]["digest"] == sha256_digest(&sif).as_str(),
    );
    assert_oras_layout(&m, &amd64, &sif);

    // A last image, pushed after everything else: once the planner has queued it, it has handled
    // every earlier event (it takes them in order). The attestation and the platform outside the
    // configured set got no job; the amd64 child got one.
    let sentinel = push_image_with_layer(&server, "alice/sentinel", "1", &layer_type, &layer);
    wait_log(
        &server,
        &["SIF build queued", &sentinel, "repository=alice/sentinel"],
        BUILD_DEADLINE,
    );
    for (what, digest) in [
        ("the attestation", &attestation),
        ("the linux/arm64 child", &arm64),
    ] {
        assert!(
            log_lines(&server, &["SIF build queued", digest]).is_empty(),
            "{what} ({digest}) got a build job"
        );
    }
    assert_eq!(
        log_lines(&server, &["SIF build started", &amd64]).len(),
        1,
        "one build of the amd64 child"
    );
    assert!(
        log_lines(&server, &["SIF build queued", &index_digest]).is_empty(),
        "the index itself got a job"
    );
    // An attestation has no SIF, and asking for one is a client error, not a 202.
    let r = sif_get(&server, &attestation);
    assert!(
        r.status.is_client_error(),
        "GET /sif/<attestation>: {}",
        r.describe()
    );
    assert!(
        log_lines(&server, &["SIF build queued", &attestation]).is_empty(),
        "a request queued the attestation"
    );
}

#[test]
fn configured_linux_arm64_builds_the_arm64_v8_child_of_an_index() {
    // The issue's example configuration: linux/arm64 too. buildx labels arm64 images
    // linux/arm64/v8 (index platform and config), which is linux/arm64.
    let server = FarmServer::start("workers = 1\nplatforms = [\"linux/amd64\", \"linux/arm64\"]");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "amd64", &["/bin/sh", "-c", "echo hello-arm"]);
    let repo = "alice/arm";
    let pushed = push_index(&server, &layout, repo, "latest");

    // Once the planner has queued a sentinel pushed last, it has handled the index's children.
    let sentinel = push_image_with_layer(
        &server,
        "alice/sentinel",
        "1",
        &pushed.layer_type,
        &pushed.layer,
    );
    wait_log(
        &server,
        &["SIF build queued", &sentinel, "repository=alice/sentinel"],
        BUILD_DEADLINE,
    );
    assert!(
        !log_lines(&server, &["SIF build queued", &pushed.arm64, "repository=alice/arm"]).is_empty(),
        "with platforms = [\"linux/amd64\", \"linux/arm64\"], the linux/arm64/v8 child {} of the pushed index got no build job",
        pushed.arm64
    );

    // /sif/<index>?platform=linux/arm64 is that child's SIF.
    let reference = format!("{}?platform=linux/arm64", pushed.index);
    let r = wait_sif(&server, &reference, BUILD_DEADLINE).reply;
    assert_eq!(
        r.header("x-image-digest").as_deref(),
        Some(pushed.arm64.as_str()),
        "{}",
        r.describe()
    );
    let path = tmp.path().join("arm64.sif");
    fs::write(&path, &r.body).unwrap();
    let objects = siftool_list(&path);
    assert!(
        objects
            .iter()
            // Like `apptainer build`, the builder takes the partition arch from the ELF machine
            // of /bin/sh; this fixture's arm64 child reuses the host's x86-64 busybox layer.
            .any(|o| o.kind == "FS (Squashfs/*System/amd64)"),
        "the arm64 SIF's partition: {objects:?}"
    );
    // And its ORAS tag is T.<arch>.sif.
    let sif_digest = sha256_digest(&r.body);
    wait_manifest(
        &server,
        repo,
        "latest.arm64.sif",
        "the arm64 SIF's ORAS artifact",
        |m| m["layers"][0]["digest"] == sif_digest.as_str(),
    );
}
