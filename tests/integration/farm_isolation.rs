//! The build farm reads only blobs the job's own repository holds (issue 9, point 3).
//!
//! The attack, as the outside probe ran it: alice pushes a private image with layer D; bob
//! pushes his own config to `bob/steal`, then a manifest whose only layer is D labelled as a
//! non-distributable (or Docker foreign) layer, which a registry accepts without the bytes. The
//! farm used to build that SIF from alice's bytes and `GET /sif/bob/steal:nd` handed bob alice's
//! files. Also covered: bob copying alice's whole manifest (identical digest, so the SIF already
//! exists) must get neither the SIF nor its ORAS tag, and a job whose repository lost a blob
//! after it was queued fails for good with the reason, without retries. Both backends: the
//! native one and the apptainer one (driven through the stand-in `apptainer`).

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::sif::*;
use crate::support::users::*;
use crate::support::*;

const NONDISTRIBUTABLE: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const SECRET: &str = "alice-private-bytes-do-not-leak";

fn alice() -> Creds {
    Creds::of("alice")
}

fn bob() -> Creds {
    Creds::of("bob")
}

/// The secure server (alice and bob, no `--dev`) with the given `[farm]` keys.
fn start(farm_keys: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, format!("[farm]\n{farm_keys}\n")).unwrap();
    let setup = Setup::new().user("alice", &[]).user("bob", &[]);
    let server = Server::start_secure(&setup, &["--config", config.to_str().unwrap()]);
    (server, dir)
}

fn rewrite_config(dir: &tempfile::TempDir, farm_keys: &str) {
    fs::write(
        dir.path().join("config.toml"),
        format!("[farm]\n{farm_keys}\n"),
    )
    .unwrap();
}

/// A gzip-compressed layer tar holding `/secret.txt` with `content`.
fn secret_layer(content: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("secret.txt"), content).unwrap();
    let out = run_output(Command::new("tar").arg("-C").arg(dir.path()).args([
        "--owner=0",
        "--group=0",
        "-czf",
        "-",
        "secret.txt",
    ]));
    assert!(out.status.success(), "tar: {out:?}");
    out.stdout
}

fn config_for(layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }))
    .unwrap()
}

/// Monolithic blob upload as `creds`.
fn push_blob_as(server: &Server, creds: &Creds, repo: &str, blob: &[u8]) {
    let auth = Auth::Basic(creds);
    let r = send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        &auth,
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "POST upload: {}",
        r.describe()
    );
    let location = absolute(&server.base_url(), &r.header("location").expect("Location"));
    let r = send(
        "PUT",
        &with_query(&location, &format!("digest={}", sha256_digest(blob))),
        &auth,
        Some(("application/octet-stream", blob.to_vec())),
    );
    assert_eq!(r.status, StatusCode::CREATED, "PUT blob: {}", r.describe());
}

fn put_manifest_as(
    server: &Server,
    creds: &Creds,
    repo: &str,
    tag: &str,
    media_type: &str,
    manifest: &[u8],
) {
    let r = send(
        "PUT",
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        &Auth::Basic(creds),
        Some((media_type, manifest.to_vec())),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT manifest {repo}:{tag} as {}: {}",
        creds.user,
        r.describe()
    );
}

fn manifest(media_type: &str, config_type: &str, config: &[u8], layers: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": layers,
    }))
    .unwrap()
}

fn sif_as(server: &Server, creds: &Creds, rest: &str) -> Reply {
    send(
        "GET",
        &server.url(&format!("/sif/{rest}")),
        &Auth::Basic(creds),
        None,
    )
}

/// Polls `/sif/<rest>` as `creds` until it answers something other than 202.
fn settled_as(server: &Server, creds: &Creds, rest: &str) -> Reply {
    let deadline = Instant::now() + BUILD_DEADLINE;
    loop {
        let r = sif_as(server, creds, rest);
        if r.status != StatusCode::ACCEPTED {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "GET /sif/{rest} still 202 after {BUILD_DEADLINE:?}: {}",
            r.describe()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Alice's private image: one gzip layer holding the secret. Returns (layer, manifest digest).
fn push_alice_private(server: &Server, repo: &str, layer_type: &str) -> (Vec<u8>, Vec<u8>, String) {
    let layer = secret_layer(SECRET);
    let config = config_for(&layer);
    push_blob_as(server, &alice(), repo, &config);
    push_blob_as(server, &alice(), repo, &layer);
    let m = manifest(
        OCI_MANIFEST,
        OCI_CONFIG,
        &config,
        &[descriptor(layer_type, &layer)],
    );
    put_manifest_as(server, &alice(), repo, "1", OCI_MANIFEST, &m);
    (layer, config, sha256_digest(&m))
}

/// Asserts a `/sif` answer is a refusal that names the blob and the rule, and carries no byte
/// of alice's layer.
fn assert_refused(r: &Reply, what: &str, digest: &str, repo: &str) {
    assert_ne!(
        r.status,
        StatusCode::OK,
        "{what}: bob got a SIF: {}",
        r.describe()
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains(SECRET),
        "{what}: the answer carries alice's bytes"
    );
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{what}: {}",
        r.describe()
    );
    assert_eq!(
        r.error_codes(),
        ["MANIFEST_BLOB_UNKNOWN"],
        "{what}: {}",
        r.describe()
    );
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(digest) && message.contains(&format!("not a blob of {repo}")),
        "{what}: the refusal should name {digest} and {repo}: {message}"
    );
}

/// Bob's two manifests naming alice's layer D without holding it.
fn bob_steals(server: &Server, d_layer: &[u8]) -> (String, String) {
    let d = sha256_digest(d_layer);
    let config = config_for(d_layer);
    push_blob_as(server, &bob(), "bob/steal", &config);
    let layer = json!({"mediaType": NONDISTRIBUTABLE, "digest": d, "size": d_layer.len()});
    let nd = manifest(OCI_MANIFEST, OCI_CONFIG, &config, &[layer]);
    put_manifest_as(server, &bob(), "bob/steal", "nd", OCI_MANIFEST, &nd);
    // The Docker flavour, in a Docker manifest with a Docker config.
    let docker_config = config_for(d_layer);
    push_blob_as(server, &bob(), "bob/steal", &docker_config);
    let layer = json!({"mediaType": DOCKER_FOREIGN, "digest": d, "size": d_layer.len(),
        "urls": ["https://example.invalid/layer"]});
    let foreign = manifest(DOCKER_MANIFEST, DOCKER_CONFIG, &docker_config, &[layer]);
    put_manifest_as(
        server,
        &bob(),
        "bob/steal",
        "foreign",
        DOCKER_MANIFEST,
        &foreign,
    );
    (sha256_digest(&nd), sha256_digest(&foreign))
}

fn check_bob_cannot_read_alices_layer(server: &Server) {
    let (d_layer, _, alice_digest) = push_alice_private(server, "alice/private", OCI_LAYER_GZIP);
    let d = sha256_digest(&d_layer);
    // Bob cannot read alice's repository at all.
    let r = sif_as(server, &bob(), "alice/private:1");
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());

    let (nd, foreign) = bob_steals(server, &d_layer);
    for (tag, digest) in [("nd", &nd), ("foreign", &foreign)] {
        let what = format!("GET /sif/bob/steal:{tag}");
        assert_refused(
            &settled_as(server, &bob(), &format!("bob/steal:{tag}")),
            &what,
            &d,
            "bob/steal",
        );
        // By digest, and the other views, the same.
        for rest in [
            digest.to_string(),
            format!("bob/steal:{tag}/squashfs"),
            format!("bob/steal:{tag}/status"),
            format!("bob/steal:{tag}/log"),
        ] {
            assert_refused(&sif_as(server, &bob(), &rest), &rest, &d, "bob/steal");
        }
        // The farm queued no build for it, and never will.
        assert!(
            log_lines(server, &["SIF build started", digest]).is_empty(),
            "a build of bob/steal:{tag} started"
        );
        assert_eq!(
            get_manifest_as(server, &bob(), "bob/steal", &format!("{tag}.sif")),
            StatusCode::NOT_FOUND,
            "bob/steal:{tag}.sif was published"
        );
    }
    // Alice's own image still builds and serves her file.
    let r = settled_as(server, &alice(), "alice/private:1");
    assert_eq!(r.status, StatusCode::OK, "alice's SIF: {}", r.describe());
    assert!(!alice_digest.is_empty());
}

fn get_manifest_as(server: &Server, creds: &Creds, repo: &str, reference: &str) -> StatusCode {
    send(
        "GET",
        &server.url(&format!("/v2/{repo}/manifests/{reference}")),
        &Auth::Basic(creds),
        None,
    )
    .status
}

#[test]
fn bob_cannot_build_a_sif_from_alices_private_layer() {
    let (server, _dir) = start("workers = 1\nmax_attempts = 3\nretry_delay_secs = 0");
    check_bob_cannot_read_alices_layer(&server);
}

#[test]
fn bob_cannot_build_from_alices_layer_with_the_apptainer_backend() {
    let standin = StandInApptainer::new();
    let (server, _dir) = start(&format!(
        "workers = 1\nbackend = \"apptainer\"\napptainer = \"{}\"\nmax_attempts = 3\nretry_delay_secs = 0",
        standin.path_str()
    ));
    let d_layer = secret_layer(SECRET);
    let d = sha256_digest(&d_layer);
    let config = config_for(&d_layer);
    push_blob_as(&server, &alice(), "alice/private", &config);
    push_blob_as(&server, &alice(), "alice/private", &d_layer);
    let (nd, foreign) = bob_steals(&server, &d_layer);
    for (tag, digest) in [("nd", &nd), ("foreign", &foreign)] {
        let what = format!("GET /sif/bob/steal:{tag}");
        assert_refused(
            &settled_as(&server, &bob(), &format!("bob/steal:{tag}")),
            &what,
            &d,
            "bob/steal",
        );
        assert!(log_lines(&server, &["SIF build started", digest]).is_empty());
    }
    // No layout was exported for apptainer: it was never asked to build.
    assert!(
        standin
            .calls()
            .iter()
            .all(|c| c.first().map(String::as_str) != Some("build")),
        "apptainer was asked to build: {:?}",
        standin.calls()
    );
}

#[test]
fn a_copy_of_alices_manifest_gets_neither_her_sif_nor_its_oras_tag() {
    let (server, _dir) = start("workers = 1\nmax_attempts = 3\nretry_delay_secs = 0");
    // Alice's image has a non-distributable layer whose bytes she did push: it builds.
    let (d_layer, config, digest) = push_alice_private(&server, "alice/app", NONDISTRIBUTABLE);
    let r = settled_as(&server, &alice(), "alice/app:1");
    assert_eq!(r.status, StatusCode::OK, "alice's SIF: {}", r.describe());
    let sif_digest = r.header("docker-content-digest").expect("SIF digest");
    wait_until(|| get_manifest_as(&server, &alice(), "alice/app", "1.sif") == StatusCode::OK);

    // Bob pushes the same config and the very same manifest bytes: same digest, same job.
    push_blob_as(&server, &bob(), "bob/copy", &config);
    let m = manifest(
        OCI_MANIFEST,
        OCI_CONFIG,
        &config,
        &[descriptor(NONDISTRIBUTABLE, &d_layer)],
    );
    assert_eq!(sha256_digest(&m), digest);
    put_manifest_as(&server, &bob(), "bob/copy", "1", OCI_MANIFEST, &m);
    let d = sha256_digest(&d_layer);
    for rest in [
        "bob/copy:1".to_string(),
        digest.clone(),
        "bob/copy:1/squashfs".into(),
    ] {
        // Twice: the second request would be the cached fast path.
        for _ in 0..2 {
            assert_refused(&sif_as(&server, &bob(), &rest), &rest, &d, "bob/copy");
        }
    }
    // No ORAS tag for bob, and the SIF blob is not his to pull.
    let r = send(
        "GET",
        &server.url("/v2/bob/copy/tags/list"),
        &Auth::Basic(&bob()),
        None,
    );
    assert!(
        !r.text().contains("1.sif"),
        "tags of bob/copy: {}",
        r.text()
    );
    assert_eq!(
        get_manifest_as(&server, &bob(), "bob/copy", "1.sif"),
        StatusCode::NOT_FOUND
    );
    let r = send(
        "GET",
        &server.url(&format!("/v2/bob/copy/blobs/{sif_digest}")),
        &Auth::Basic(&bob()),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "bob pulled the SIF blob: {}",
        r.describe()
    );
}

fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + BUILD_DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not met in {BUILD_DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A job whose repository no longer holds one of its blobs when the build starts fails for
/// good with the reason, after one attempt although three are allowed.
fn check_lost_blob_fails_the_build_for_good(
    server: &mut Server,
    dir: &tempfile::TempDir,
    keys: &str,
) {
    let layer = secret_layer("bob's own bytes");
    let config = config_for(&layer);
    push_blob_as(server, &bob(), "bob/mine", &config);
    push_blob_as(server, &bob(), "bob/mine", &layer);
    let m = manifest(
        OCI_MANIFEST,
        OCI_CONFIG,
        &config,
        &[descriptor(OCI_LAYER_GZIP, &layer)],
    );
    put_manifest_as(server, &bob(), "bob/mine", "1", OCI_MANIFEST, &m);
    let digest = sha256_digest(&m);
    wait_log(server, &["SIF build queued", &digest], BUILD_DEADLINE);
    let d = sha256_digest(&layer);
    let r = send(
        "DELETE",
        &server.url(&format!("/v2/bob/mine/blobs/{d}")),
        &Auth::Basic(&bob()),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "DELETE blob: {}",
        r.describe()
    );
    // Now a worker may take the job.
    rewrite_config(dir, keys);
    server.restart_secure();
    // The worker's line names the job and the reason (which names the blob).
    let failed = wait_log(server, &["SIF build failed for good", &d], BUILD_DEADLINE);
    assert!(
        failed[0].contains("not a blob of bob/mine"),
        "the failure should name the blob and the rule: {failed:?}"
    );
    assert_eq!(
        log_lines(server, &["SIF build started", &digest]).len(),
        1,
        "a permanent failure is not retried"
    );
}

#[test]
fn a_build_whose_repository_lost_a_blob_fails_for_good() {
    let (mut server, dir) = start("workers = 0");
    check_lost_blob_fails_the_build_for_good(
        &mut server,
        &dir,
        "workers = 1\nmax_attempts = 3\nretry_delay_secs = 0",
    );
}

#[test]
fn a_build_whose_repository_lost_a_blob_fails_for_good_with_the_apptainer_backend() {
    let standin = StandInApptainer::new();
    let (mut server, dir) = start("workers = 0");
    check_lost_blob_fails_the_build_for_good(
        &mut server,
        &dir,
        &format!(
            "workers = 1\nbackend = \"apptainer\"\napptainer = \"{}\"\nmax_attempts = 3\nretry_delay_secs = 0",
            standin.path_str()
        ),
    );
    assert!(
        standin
            .calls()
            .iter()
            .all(|c| c.first().map(String::as_str) != Some("build")),
        "apptainer was asked to build: {:?}",
        standin.calls()
    );
}
