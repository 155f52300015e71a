//! The build queue under trouble and in an administrator's hands (issue 11 point 5), on the real
//! server with real users: an image whose config cannot be read is set aside as a failed job
//! with its reason and does not hold up the next push; `hpc-registry admin builds` lists jobs
//! (state, attempts, reason, builder, durations), retries and cancels them through the
//! admin-only, audited `/admin/builds` API, which read-only credentials may only read.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::sif::BUILD_DEADLINE;
use crate::support::users::*;
use crate::support::*;

const ADMIN: &str = "ops";

fn users() -> Setup {
    Setup::new().user("alice", &[]).user(ADMIN, &["--admin"])
}

/// A secure server whose `[farm]` table is `farm_keys`; the config file lives in `dir`.
fn start(dir: &Path, farm_keys: &str) -> Server {
    let config = dir.join("config.toml");
    fs::write(&config, format!("[farm]\n{farm_keys}\n")).unwrap();
    Server::start_secure(&users(), &["--config", config.to_str().unwrap()])
}

/// A one-file tar layer, made by the real `tar`, unique per call.
fn tar_layer(work: &Path) -> Vec<u8> {
    let dir = work.join(unique("layer"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("hello.txt"), unique("hello")).unwrap();
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&dir)
        .args(["-cf", "-", "hello.txt"])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar failed");
    out.stdout
}

fn config_for(layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }))
    .unwrap()
}

fn upload(server: &Server, creds: &Creds, repo: &str, blob: &[u8]) {
    crate::support::notify::upload_blob_as(server, creds, repo, blob)
}

fn put_manifest_as(server: &Server, creds: &Creds, repo: &str, tag: &str, manifest: &[u8]) {
    let url = server.url(&format!("/v2/{repo}/manifests/{tag}"));
    let r = send(
        "PUT",
        &url,
        &Auth::Basic(creds),
        Some((OCI_MANIFEST, manifest.to_vec())),
    );
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
}

fn manifest_for(config: &[u8], layer: &[u8]) -> Vec<u8> {
    oci_manifest_bytes(
        &descriptor(OCI_CONFIG, config),
        &[descriptor(OCI_LAYER_TAR, layer)],
        None,
    )
}

/// Pushes a buildable one-layer image; returns its manifest digest.
fn push_image(server: &Server, creds: &Creds, repo: &str, tag: &str, work: &Path) -> String {
    let layer = tar_layer(work);
    let config = config_for(&layer);
    upload(server, creds, repo, &config);
    upload(server, creds, repo, &layer);
    let manifest = manifest_for(&config, &layer);
    put_manifest_as(server, creds, repo, tag, &manifest);
    sha256_digest(&manifest)
}

fn sif_as(server: &Server, creds: &Creds, rest: &str) -> Reply {
    send(
        "GET",
        &server.url(&format!("/sif/{rest}")),
        &Auth::Basic(creds),
        None,
    )
}

/// Polls `GET /sif/<reference>` until it is no longer 202.
fn wait_settled_as(server: &Server, creds: &Creds, reference: &str) -> Reply {
    let until = Instant::now() + BUILD_DEADLINE;
    loop {
        let r = sif_as(server, creds, reference);
        if r.status != StatusCode::ACCEPTED || Instant::now() > until {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `hpc-registry admin builds ARGS --server URL` as `creds`.
fn builds_cli(server: &Server, creds: &Creds, args: &[&str]) -> Output {
    let url = server.base_url();
    let mut all = vec!["admin", "builds"];
    all.extend_from_slice(args);
    all.extend(["--server", url.as_str()]);
    cli_output(
        &all,
        &[
            ("HPC_REGISTRY_USER", creds.user.as_str()),
            ("HPC_REGISTRY_PASSWORD", creds.secret.as_str()),
        ],
        "",
    )
}

/// `admin builds ARGS --json` as the admin, which must succeed; the JSON.
fn builds_json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = builds_cli(server, &Creds::of(ADMIN), &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin builds {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("admin builds {args:?}: {e}: {stdout}"))
}

/// The listed jobs of image `digest`.
fn jobs_of(server: &Server, state: Option<&str>, digest: &str) -> Vec<Value> {
    let mut args = vec![];
    if let Some(s) = state {
        args.extend(["--state", s]);
    }
    let v = builds_json(server, &args);
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["image"] == digest)
        .cloned()
        .collect()
}

/// Waits for an audit record with `action` and `outcome` naming `user`.
fn wait_audit(server: &Server, action: &str, user: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let file =
            fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap_or_default();
        let found = file
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["action"] == action && r["user"] == user);
        if let Some(r) = found {
            return r;
        }
        assert!(
            Instant::now() < until,
            "no {action} record by {user} in the audit trail:\n{file}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_poisoned_event_does_not_stop_the_next_push_from_building_and_an_admin_retries_it() {
    let work = tempfile::tempdir().unwrap();
    let server = start(work.path(), "workers = 1\nmax_attempts = 1");
    let alice = Creds::of("alice");

    // The poisoned image: its config blob is accepted, then its file vanishes from the store
    // (a disk fault) before the manifest names it, so the planner cannot read its platform.
    let layer = tar_layer(work.path());
    let config = config_for(&layer);
    upload(&server, &alice, "alice/poison", &config);
    upload(&server, &alice, "alice/poison", &layer);
    let config_path = server.blob_path(&sha256_digest(&config));
    fs::remove_file(&config_path).expect("remove the config blob's file");
    let poison_manifest = manifest_for(&config, &layer);
    put_manifest_as(&server, &alice, "alice/poison", "1", &poison_manifest);
    let poison = sha256_digest(&poison_manifest);

    // The next push still becomes a SIF.
    push_image(&server, &alice, "alice/good", "1", work.path());
    let r = wait_settled_as(&server, &alice, "alice/good:1");
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}\n{}",
        r.describe(),
        server.log()
    );

    // The poisoned image is a failed job with its reason.
    let failed = jobs_of(&server, Some("failed"), &poison);
    assert_eq!(
        failed.len(),
        1,
        "the poisoned image is one failed job: {failed:?}"
    );
    let job = &failed[0];
    let reason = job["failure"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot plan") && reason.contains(&sha256_digest(&config)),
        "the reason names the unreadable config: {job}"
    );
    assert_eq!(job["repository"], "alice/poison");
    // The table names it too.
    let out = builds_cli(&server, &Creds::of(ADMIN), &["--state", "failed"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.lines().next().unwrap_or("").contains("ATTEMPTS") && table.contains(&poison),
        "{table}"
    );
    let good = jobs_of(
        &server,
        Some("ready"),
        &manifest_digest_of(&server, &alice, "alice/good", "1"),
    );
    assert_eq!(good.len(), 1, "{good:?}");
    assert!(
        good[0]["builder"].as_str().is_some_and(|b| !b.is_empty()),
        "{}",
        good[0]
    );
    assert!(good[0]["build_secs"].is_i64(), "{}", good[0]);

    // Once the blob is whole again, an admin retry plans and builds it.
    fs::write(&config_path, &config).unwrap();
    let id = job["id"].to_string();
    let v = builds_json(&server, &["retry", &id]);
    assert_eq!(v["image"], poison, "{v}");
    assert_ne!(v["state"], "failed", "the retried image is planned: {v}");
    let r = wait_settled_as(&server, &alice, "alice/poison:1");
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}\n{}",
        r.describe(),
        server.log()
    );
    wait_audit(&server, "build.retry", ADMIN);
}

/// `GET /v2/<repo>/manifests/<tag>`'s digest as `creds`.
fn manifest_digest_of(server: &Server, creds: &Creds, repo: &str, tag: &str) -> String {
    let url = server.url(&format!("/v2/{repo}/manifests/{tag}"));
    let r = send("HEAD", &url, &Auth::Basic(creds), None);
    r.header("docker-content-digest").expect("digest")
}

#[test]
fn admins_cancel_and_retry_builds_others_and_read_only_tokens_cannot() {
    let work = tempfile::tempdir().unwrap();
    // No workers: the job stays queued until cancelled.
    let server = start(work.path(), "workers = 0");
    let (alice, admin) = (Creds::of("alice"), Creds::of(ADMIN));
    let digest = push_image(&server, &alice, "alice/tool", "1", work.path());
    let until = Instant::now() + Duration::from_secs(60);
    let job = loop {
        if let Some(j) = jobs_of(&server, Some("queued"), &digest).pop() {
            break j;
        }
        assert!(Instant::now() < until, "no queued job for {digest}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = job["id"].as_i64().expect("id");

    // alice is no admin: she may neither list nor act.
    for args in [vec![], vec!["cancel".to_owned(), id.to_string()]] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = builds_cli(&server, &alice, &args);
        assert!(
            !out.status.success(),
            "alice: admin builds {args:?} succeeded"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("403"),
            "{out:?}"
        );
    }
    // An admin's read-only token lists but cannot cancel.
    let body = serde_json::to_vec(&json!({"scope": "read", "description": "ro"})).unwrap();
    let r = send(
        "POST",
        &server.url("/admin/tokens"),
        &Auth::Basic(&admin),
        Some(("application/json", body)),
    );
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
    let read_only = Creds::new(ADMIN, r.json()["token"].as_str().expect("token"));
    let r = send(
        "GET",
        &server.url("/admin/builds?state=queued"),
        &Auth::Basic(&read_only),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    for path in [
        format!("/admin/builds/{id}/cancel"),
        format!("/admin/builds/{id}/retry"),
        "/admin/builds/retry-failed".into(),
    ] {
        let r = send("POST", &server.url(&path), &Auth::Basic(&read_only), None);
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "POST {path} with a read-only token: {}",
            r.describe()
        );
    }
    let r = send(
        "GET",
        &server.url("/admin/builds?state=bogus"),
        &Auth::Basic(&admin),
        None,
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.describe());

    // The admin cancels: the job fails naming them, and /sif says so.
    let v = builds_json(&server, &["cancel", &id.to_string()]);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["failure"], format!("cancelled by {ADMIN}"), "{v}");
    let r = sif_as(&server, &alice, "alice/tool:1");
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        r.describe()
    );
    assert!(r.text().contains("cancelled by ops"), "{}", r.describe());
    // A failed job cannot be cancelled again; an unknown one is not found.
    let out = builds_cli(&server, &admin, &["cancel", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{out:?}"
    );
    let out = builds_cli(&server, &admin, &["cancel", "999999"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    wait_audit(&server, "build.cancel", ADMIN);

    // retry --failed puts it back in the queue.
    let v = builds_json(&server, &["retry", "--failed"]);
    assert_eq!(v["retried"], 1, "{v}");
    let queued = jobs_of(&server, Some("queued"), &digest);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["attempts"], 0);
}
