//! Quotas, usage and scrub against the real server (no `--dev`: users made by the real CLI,
//! quotas changed and scrubs run by the real `hpc-registry admin ...` commands through the admin
//! API). Images are pushed over HTTP with credentials and with skopeo; SIFs are built by the
//! real farm. Nothing here asserts timings.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::sif::{log_lines, skopeo};
use crate::support::users::*;
use crate::support::*;

const ADMIN: &str = "ops";

/// `hpc-registry admin ARGS --server URL` as `creds` (the admin by default); the output whatever
/// the status.
fn admin_cli_as(server: &Server, creds: &Creds, args: &[&str]) -> std::process::Output {
    let url = server.base_url();
    let mut all = vec!["admin"];
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

/// `hpc-registry admin ARGS` as the admin; fails the test if it fails; returns stdout.
fn admin_cli(server: &Server, args: &[&str]) -> String {
    let out = admin_cli_as(server, &Creds::of(ADMIN), args);
    assert!(
        out.status.success(),
        "hpc-registry admin {args:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `admin usage NAMESPACE --json` → that namespace's entry.
fn usage_of(server: &Server, namespace: &str) -> Value {
    let out = admin_cli(server, &["usage", namespace, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("usage JSON: {e}: {out}"));
    let list = v["namespaces"].as_array().expect("namespaces").clone();
    assert_eq!(list.len(), 1, "usage of {namespace}: {v}");
    list[0].clone()
}

/// The registry's size format: largest binary unit, one truncated decimal unless exact.
fn human(bytes: u64) -> String {
    let names = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < names.len() && bytes >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let div = 1u64 << (10 * unit);
    if bytes % div == 0 {
        format!("{} {}", bytes / div, names[unit])
    } else {
        let tenths = bytes * 10 / div;
        format!("{}.{} {}", tenths / 10, tenths % 10, names[unit])
    }
}

/// POST + monolithic PUT of one blob as `creds`; the PUT's reply and the upload URL.
fn upload(server: &Server, creds: &Creds, repo: &str, data: &[u8]) -> (Reply, String) {
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
    let put = send(
        "PUT",
        &with_query(&location, &format!("digest={}", sha256_digest(data))),
        &auth,
        Some(("application/octet-stream", data.to_vec())),
    );
    (put, location)
}

/// Like [`upload`] with a chunked body (no Content-Length), so only the commit-time check can
/// refuse it; returns the PUT's status.
fn upload_unsized(server: &Server, creds: &Creds, repo: &str, data: &[u8]) -> StatusCode {
    let r = send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        &Auth::Basic(creds),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "POST upload: {}",
        r.describe()
    );
    let location = absolute(&server.base_url(), &r.header("location").expect("Location"));
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.to_vec()));
    let req = http()
        .put(with_query(
            &location,
            &format!("digest={}", sha256_digest(data)),
        ))
        .basic_auth(&creds.user, Some(&creds.secret))
        .header("content-type", "application/octet-stream")
        .body(body);
    let r = Reply::from(req.send().expect("PUT blob"));
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::FORBIDDEN,
        "{}",
        r.describe()
    );
    r.status
}

fn upload_ok(server: &Server, creds: &Creds, repo: &str, data: &[u8]) {
    let (r, _) = upload(server, creds, repo, data);
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT blob to {repo}: {}",
        r.describe()
    );
}

/// A config naming `layers`; unique per call.
fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"nonce": unique("q")}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>()},
    }))
    .unwrap()
}

fn manifest_for(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| descriptor(OCI_LAYER_TAR, l))
        .collect();
    oci_manifest_bytes(&descriptor(OCI_CONFIG, config), &layers, None)
}

fn put_manifest_as(server: &Server, creds: &Creds, repo: &str, tag: &str, body: &[u8]) -> Reply {
    send(
        "PUT",
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        &Auth::Basic(creds),
        Some((OCI_MANIFEST, body.to_vec())),
    )
}

/// Pushes config, layers and manifest; asserts success; returns (config, manifest).
fn push_image(
    server: &Server,
    creds: &Creds,
    repo: &str,
    tag: &str,
    layers: &[&[u8]],
) -> (Vec<u8>, Vec<u8>) {
    let config = config_for(layers);
    upload_ok(server, creds, repo, &config);
    for l in layers {
        upload_ok(server, creds, repo, l);
    }
    let manifest = manifest_for(&config, layers);
    let r = put_manifest_as(server, creds, repo, tag, &manifest);
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT manifest {repo}:{tag}: {}",
        r.describe()
    );
    (config, manifest)
}

/// Staging files of upload sessions (regular files in DATA/uploads).
fn upload_sessions(data_dir: &Path) -> Vec<String> {
    fs::read_dir(data_dir.join("uploads"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn users() -> Setup {
    Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user(ADMIN, &["--admin"])
}

#[test]
fn over_quota_pushes_are_refused_whole_shared_layers_count_once_and_quotas_change_live() {
    let server = Server::start_secure(&users(), &[]);
    let alice = Creds::of("alice");

    // Two images sharing a base layer, in two repositories of alice's namespace.
    let base = random_bytes(20 * 1024);
    let (la, lb) = (random_bytes(10 * 1024), random_bytes(6 * 1024));
    let (ca, ma) = push_image(&server, &alice, "alice/one", "1", &[&base, &la]);
    let (cb, mb) = push_image(&server, &alice, "alice/two", "1", &[&base, &lb]);
    // The same manifest under a second tag and in a third repository adds nothing new but
    // its repository.
    upload_ok(&server, &alice, "alice/three", &ca);
    upload_ok(&server, &alice, "alice/three", &base);
    upload_ok(&server, &alice, "alice/three", &la);
    let r = put_manifest_as(&server, &alice, "alice/three", "copy", &ma);
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());

    let blobs = (base.len() + la.len() + lb.len() + ca.len() + cb.len()) as u64;
    let manifests = (ma.len() + mb.len()) as u64;
    let u = usage_of(&server, "alice");
    assert_eq!(
        u["blob_bytes"].as_u64(),
        Some(blobs),
        "base layer counted once: {u}"
    );
    assert_eq!(u["manifest_bytes"].as_u64(), Some(manifests), "{u}");
    assert_eq!(u["sif_bytes"].as_u64(), Some(0), "{u}");
    assert_eq!(u["total_bytes"].as_u64(), Some(blobs + manifests), "{u}");
    assert_eq!(u["repositories"].as_u64(), Some(3), "{u}");
    assert!(u["quota_bytes"].is_null(), "no quota yet: {u}");
    let used = blobs + manifests;

    // A quota of 64 KiB: alice uses about 38 KiB; a 40 KiB layer does not fit.
    let out = admin_cli(&server, &["quota", "set", "alice", "64KiB"]);
    assert!(out.contains("64 KiB"), "quota set output: {out}");
    let u = usage_of(&server, "alice");
    assert_eq!(u["quota_bytes"].as_u64(), Some(64 * 1024), "{u}");
    assert_eq!(u["quota_source"], "override", "{u}");

    let big = random_bytes(40 * 1024);
    let big_digest = sha256_digest(&big);
    let config = config_for(&[&big]);
    upload_ok(&server, &alice, "alice/big", &config);
    let used = used + config.len() as u64;
    let (refused, location) = upload(&server, &alice, "alice/big", &big);
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "{}",
        refused.describe()
    );
    assert_eq!(
        refused.error_codes(),
        vec!["DENIED"],
        "{}",
        refused.describe()
    );
    let message = refused.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        message,
        format!(
            "quota 64 KiB for alice exceeded: {} used, push needs 40 KiB",
            human(used)
        )
    );
    // Nothing of the refused upload stays: no blob file, no link, no session, no manifest.
    assert!(
        !server.blob_path(&big_digest).exists(),
        "refused blob reached the store"
    );
    let head = send(
        "HEAD",
        &server.url(&format!("/v2/alice/big/blobs/{big_digest}")),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(head.status, StatusCode::NOT_FOUND, "{}", head.describe());
    let status = send("GET", &location, &Auth::Basic(&alice), None);
    assert_eq!(
        status.status,
        StatusCode::NOT_FOUND,
        "session must end: {}",
        status.describe()
    );
    assert_eq!(upload_sessions(server.data_dir()), Vec::<String>::new());
    // A chunked upload declaring its length is refused at the PATCH, before it is stored.
    let r = send(
        "POST",
        &server.url("/v2/alice/big/blobs/uploads/"),
        &Auth::Basic(&alice),
        None,
    );
    let chunked = absolute(&server.base_url(), &r.header("location").expect("Location"));
    let r = send(
        "PATCH",
        &chunked,
        &Auth::Basic(&alice),
        Some(("application/octet-stream", big.clone())),
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(
        r.json()["errors"][0]["message"].as_str(),
        Some(message.as_str())
    );
    let r = send("GET", &chunked, &Auth::Basic(&alice), None);
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "session must end: {}",
        r.describe()
    );
    assert_eq!(upload_sessions(server.data_dir()), Vec::<String>::new());

    let manifest = manifest_for(&config, &[&big]);
    let r = put_manifest_as(&server, &alice, "alice/big", "1", &manifest);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.describe());
    let r = send(
        "GET",
        &server.url("/v2/alice/big/manifests/1"),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
    assert_eq!(
        usage_of(&server, "alice")["total_bytes"].as_u64(),
        Some(used)
    );

    // Already-held digests cost nothing, even near the limit: a mount and a re-tag still work.
    let r = send(
        "POST",
        &server.url(&format!(
            "/v2/alice/four/blobs/uploads/?mount={}&from=alice/one",
            sha256_digest(&base)
        )),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "mount of a held blob: {}",
        r.describe()
    );
    let r = put_manifest_as(&server, &alice, "alice/one", "again", &ma);
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());

    // Only admins change quotas; users see their own namespace's usage only.
    let out = admin_cli_as(&server, &alice, &["quota", "set", "alice", "1GiB"]);
    assert!(!out.status.success(), "alice raised her own quota");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only administrators"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = send(
        "GET",
        &server.url("/admin/usage?namespace=alice"),
        &Auth::Basic(&Creds::of("bob")),
        None,
    );
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "bob saw alice's usage: {}",
        r.describe()
    );
    push_as(&server, &Creds::of("bob"), "bob/tool", "1");
    let r = send(
        "GET",
        &server.url("/admin/usage"),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    let names: Vec<String> = r.json()["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, vec!["alice"], "alice sees only her namespace");
    let out = admin_cli_as(&server, &alice, &["quota", "set", "alice", "lots"]);
    assert!(!out.status.success());

    // The admin raises the quota live: the very same push now succeeds.
    admin_cli(&server, &["quota", "set", "alice", "1MiB"]);
    upload_ok(&server, &alice, "alice/big", &big);
    let r = put_manifest_as(&server, &alice, "alice/big", "1", &manifest);
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
    let u = usage_of(&server, "alice");
    assert_eq!(
        u["total_bytes"].as_u64(),
        Some(used + big.len() as u64 + manifest.len() as u64),
        "{u}"
    );

    // A real client over the quota gets the message; `quota clear` lifts the override.
    admin_cli(&server, &["quota", "set", "alice", "100KiB"]);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh"]);
    let push = |dest: &str| {
        run_output(skopeo().args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice:{}", alice.secret),
            "--format",
            "oci",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{}/{dest}", server.host()),
        ]))
    };
    let out = push("alice/busybox:1");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "skopeo pushed over the quota:\n{text}"
    );
    assert!(
        text.contains("quota 100 KiB for alice exceeded:") && text.contains("push needs"),
        "skopeo should show the quota message:\n{text}"
    );
    assert_eq!(upload_sessions(server.data_dir()), Vec::<String>::new());
    let out = admin_cli(&server, &["quota", "clear", "alice"]);
    assert!(out.contains("unlimited"), "{out}");
    let out = push("alice/busybox:1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The table output names the namespace and its quota.
    let out = admin_cli(&server, &["usage"]);
    assert!(out.contains("NAMESPACE") && out.contains("alice"), "{out}");
}

#[test]
fn default_user_quota_from_the_config_applies_until_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "[quota]\ndefault_user = \"16KiB\"\n").unwrap();
    let server = Server::start_secure(&users(), &["--config", config.to_str().unwrap()]);
    let bob = Creds::of("bob");
    let u = usage_of(&server, "bob");
    assert_eq!(u["quota_bytes"].as_u64(), Some(16 * 1024), "{u}");
    assert_eq!(u["quota_source"], "default-user", "{u}");
    let (r, _) = upload(&server, &bob, "bob/x", &random_bytes(20 * 1024));
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert!(
        r.describe()
            .contains("quota 16 KiB for bob exceeded: 0 B used, push needs 20 KiB"),
        "{}",
        r.describe()
    );
    // "unlimited" overrides the default.
    admin_cli(&server, &["quota", "set", "bob", "unlimited"]);
    upload_ok(&server, &bob, "bob/x", &random_bytes(20 * 1024));
    let out = admin_cli(&server, &["quota", "get", "bob"]);
    assert!(out.contains("unlimited (override)"), "{out}");
}

#[test]
fn concurrent_pushes_cannot_overshoot_together_and_manifest_bytes_count() {
    let server = Server::start_secure(&users(), &[]);
    let alice = Creds::of("alice");
    admin_cli(&server, &["quota", "set", "alice", "100KiB"]);

    // Eight 30 KiB uploads at once into a 100 KiB quota: exactly three fit, whatever the order.
    let blobs: Vec<Vec<u8>> = (0..8).map(|_| random_bytes(30 * 1024)).collect();
    let statuses: Vec<StatusCode> = thread::scope(|s| {
        let handles: Vec<_> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (server, alice) = (&server, &alice);
                s.spawn(move || upload_unsized(server, alice, &format!("alice/c{i}"), b))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted: Vec<usize> = (0..8)
        .filter(|i| statuses[*i] == StatusCode::CREATED)
        .collect();
    assert_eq!(accepted.len(), 3, "statuses: {statuses:?}");
    for (i, b) in blobs.iter().enumerate() {
        let in_store = server.blob_path(&sha256_digest(b)).exists();
        if accepted.contains(&i) {
            assert!(in_store, "accepted blob {i} missing");
        } else {
            assert_eq!(statuses[i], StatusCode::FORBIDDEN, "blob {i}");
            assert!(!in_store, "refused blob {i} reached the store");
        }
    }
    assert_eq!(upload_sessions(server.data_dir()), Vec::<String>::new());
    let used = 3 * 30 * 1024u64;
    assert_eq!(
        usage_of(&server, "alice")["total_bytes"].as_u64(),
        Some(used)
    );

    // Manifest bytes count: with the quota set to exactly the usage, the manifest is refused...
    let layer = &blobs[accepted[0]];
    let repo = format!("alice/c{}", accepted[0]);
    let config = config_for(&[layer]);
    admin_cli(&server, &["quota", "set", "alice", "1MiB"]);
    upload_ok(&server, &alice, &repo, &config);
    let used = used + config.len() as u64;
    admin_cli(&server, &["quota", "set", "alice", &used.to_string()]);
    let manifest = manifest_for(&config, &[layer]);
    let r = put_manifest_as(&server, &alice, &repo, "1", &manifest);
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(
        r.json()["errors"][0]["message"],
        format!(
            "quota {} for alice exceeded: {} used, push needs {}",
            human(used),
            human(used),
            human(manifest.len() as u64)
        )
    );
    let r = send(
        "GET",
        &server.url(&format!("/v2/{repo}/manifests/1")),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
    // ...and fits once the quota leaves exactly its size.
    let limit = used + manifest.len() as u64;
    admin_cli(&server, &["quota", "set", "alice", &limit.to_string()]);
    let r = put_manifest_as(&server, &alice, &repo, "1", &manifest);
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
    let u = usage_of(&server, "alice");
    assert_eq!(u["total_bytes"].as_u64(), Some(limit), "{u}");
    assert_eq!(
        u["manifest_bytes"].as_u64(),
        Some(manifest.len() as u64),
        "{u}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scrub
// ---------------------------------------------------------------------------------------------

/// Polls `/sif/<reference>/status` as `creds` until `state` is ready; returns the status.
fn wait_ready(server: &Server, creds: &Creds, reference: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let r = send(
            "GET",
            &server.url(&format!("/sif/{reference}/status")),
            &Auth::Basic(creds),
            None,
        );
        if r.status == StatusCode::OK && r.json()["state"] == "ready" {
            return r.json();
        }
        assert!(
            r.status == StatusCode::OK
                && matches!(r.json()["state"].as_str(), Some("queued" | "building")),
            "waiting for the SIF of {reference}: {}",
            r.describe()
        );
        assert!(
            Instant::now() < until,
            "no SIF for {reference}: {}",
            r.describe()
        );
        thread::sleep(Duration::from_millis(250));
    }
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let at = (offset as usize).min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn scrub_quarantines_a_flipped_layer_and_a_flipped_sif_and_the_sif_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "[farm]\nworkers = 1\n").unwrap();
    let server = Server::start_secure(&users(), &["--config", config.to_str().unwrap()]);
    let alice = Creds::of("alice");

    // A runnable image (it gets a SIF) and, elsewhere, an image whose layer we corrupt.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh"]);
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("alice:{}", alice.secret),
        "--format",
        "oci",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/alice/busybox:1", server.host()),
    ]));
    let status = wait_ready(&server, &alice, "alice/busybox:1");
    let sif_digest = status["sif"].as_str().expect("sif digest").to_owned();
    let pushed = push_as(&server, &alice, "alice/data", "1");
    let layer_bytes = {
        let r = send(
            "GET",
            &server.url(&format!("/v2/alice/data/blobs/{}", pushed.layer_digest)),
            &Auth::Basic(&alice),
            None,
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
        r.body.to_vec()
    };
    let sif_size = fs::metadata(server.blob_path(&sif_digest)).unwrap().len();
    let enroot_of = || {
        let r = send(
            "GET",
            &server.url("/sif/alice/busybox:1/enroot"),
            &Auth::Basic(&alice),
            None,
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", sha256_digest(&r.body)))
        );
        sha256_digest(&r.body)
    };
    let enroot_digest = enroot_of();
    let enroot_size = fs::metadata(server.blob_path(&enroot_digest))
        .unwrap()
        .len();
    let u = usage_of(&server, "alice");
    assert_eq!(
        u["sif_bytes"].as_u64(),
        Some(sif_size + enroot_size),
        "the SIF and its enroot image count: {u}"
    );

    // A clean store scrubs clean.
    let clean: Value =
        serde_json::from_str(&admin_cli(&server, &["scrub", "--json"])).expect("scrub JSON");
    assert_eq!(clean["corrupted"], json!([]), "{clean}");
    assert!(clean["scanned_blobs"].as_u64().unwrap_or(0) >= 5, "{clean}");

    // One flipped bit in the layer's file and one in the middle of the SIF's.
    flip_byte(&server.blob_path(&pushed.layer_digest), 100);
    flip_byte(&server.blob_path(&sif_digest), sif_size / 2);
    // And one in the enroot image: quarantined too (whichever of the two the scrub meets first
    // drops the SIF's record and re-queues its build).
    flip_byte(&server.blob_path(&enroot_digest), enroot_size / 2);
    let out = admin_cli(&server, &["scrub", "--rate", "50MiB", "--json"]);
    let report: Value = serde_json::from_str(&out).expect("scrub JSON");
    let corrupted = report["corrupted"].as_array().expect("corrupted").clone();
    assert_eq!(corrupted.len(), 3, "{report}");
    assert!(!server.blob_path(&enroot_digest).exists(), "{report}");
    let find = |d: &str| {
        corrupted
            .iter()
            .find(|c| c["digest"] == d)
            .unwrap_or_else(|| panic!("{d} not reported: {report}"))
            .clone()
    };
    let layer = find(&pushed.layer_digest);
    assert_eq!(layer["kind"], "blob", "{layer}");
    assert_eq!(layer["repositories"], json!(["alice/data"]), "{layer}");
    assert!(layer["rebuild"].is_null(), "{layer}");
    let sif = find(&sif_digest);
    // Whichever of the SIF and its enroot image the scrub met first, each is named for what
    // it is (the scrub's order follows the digests, which differ from build to build).
    assert_eq!(sif["kind"], "sif", "{sif}");
    let enroot = find(&enroot_digest);
    assert_eq!(enroot["kind"], "enroot", "{enroot}");
    assert_eq!(enroot["sif"], json!(sif_digest), "{enroot}");
    assert_eq!(sif["enroot"], json!(enroot_digest), "{sif}");
    assert_eq!(enroot["rebuild"], sif["rebuild"], "one rebuild: {report}");
    assert!(
        sif["rebuild"]
            .as_str()
            .unwrap_or_default()
            .contains(status["image"].as_str().unwrap()),
        "{sif}"
    );
    // Both files left the store for the quarantine, flipped bytes and all.
    for c in [&layer, &sif] {
        let digest = c["digest"].as_str().unwrap();
        assert!(
            !server.blob_path(digest).exists(),
            "{digest} still in the store"
        );
        let q = Path::new(c["quarantined_to"].as_str().unwrap());
        assert!(
            q.starts_with(server.data_dir().join("quarantine").join("sha256")),
            "{q:?}"
        );
        let bytes = fs::read(q).expect("quarantined file");
        assert_ne!(sha256_digest(&bytes), digest);
        assert_eq!(sha256_digest(&bytes), c["actual_digest"].as_str().unwrap());
    }

    // Reads never return the corrupt bytes: the layer answers 404 until it is pushed again; the
    // SIF answers 404 until the farm has rebuilt it (which may already have happened: a build
    // takes well under a second here), then the rebuilt, intact bytes.
    for method in ["HEAD", "GET"] {
        let r = send(
            method,
            &server.url(&format!("/v2/alice/data/blobs/{}", pushed.layer_digest)),
            &Auth::Basic(&alice),
            None,
        );
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} layer: {}",
            r.describe()
        );
    }
    let r = send(
        "GET",
        &server.url(&format!("/v2/alice/busybox/blobs/{sif_digest}")),
        &Auth::Basic(&alice),
        None,
    );
    match r.status {
        StatusCode::NOT_FOUND => assert_eq!(r.error_codes(), vec!["BLOB_UNKNOWN"]),
        StatusCode::OK => assert_eq!(sha256_digest(&r.body), sif_digest, "corrupt SIF served"),
        _ => panic!("GET quarantined SIF: {}", r.describe()),
    }

    // The farm rebuilds the SIF; what /sif serves now hashes to what its status names.
    let image = status["image"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(180);
    while log_lines(&server, &["SIF build started", &image]).len() < 2 {
        assert!(Instant::now() < until, "no rebuild:\n{}", server.log());
        thread::sleep(Duration::from_millis(250));
    }
    let rebuilt = wait_ready(&server, &alice, "alice/busybox:1");
    let new_digest = rebuilt["sif"].as_str().expect("rebuilt sif").to_owned();
    let r = send(
        "GET",
        &server.url("/sif/alice/busybox:1"),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(sha256_digest(&r.body), new_digest);
    // Its enroot image was rebuilt with it (intact: its bytes hash to its ETag).
    assert_eq!(enroot_of(), enroot_digest, "a reproducible rebuild");

    // Pushing the layer again heals it.
    upload_ok(&server, &alice, "alice/data", &layer_bytes);
    let r = send(
        "GET",
        &server.url(&format!("/v2/alice/data/blobs/{}", pushed.layer_digest)),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(sha256_digest(&r.body), pushed.layer_digest);

    // And the store scrubs clean again; scrubbing is for admins only.
    let again: Value =
        serde_json::from_str(&admin_cli(&server, &["scrub", "--json"])).expect("scrub JSON");
    assert_eq!(again["corrupted"], json!([]), "{again}");
    let out = admin_cli_as(&server, &alice, &["scrub"]);
    assert!(!out.status.success(), "alice scrubbed");
}

// ---------------------------------------------------------------------------------------------
// Usage counters
// ---------------------------------------------------------------------------------------------

/// `admin scrub --json` as the admin: the report.
fn scrub_report(server: &Server) -> Value {
    let out = admin_cli(server, &["scrub", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("scrub JSON: {e}: {out}"))
}

/// Runs one SQL statement on the stopped server's metadata with the sqlite3 CLI.
fn sqlite(data_dir: &Path, sql: &str) -> String {
    run(Command::new(require_tool("sqlite3"))
        .arg(data_dir.join("meta.db"))
        .arg(sql))
}

#[test]
fn usage_counters_equal_the_recount_after_pushes_mounts_deletes_prunes_and_sif_builds() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        "[farm]\nworkers = 1\n[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n[quota]\ndefault_user = \"1GiB\"\n",
    )
    .unwrap();
    let mut server = Server::start_secure(&users(), &["--config", config.to_str().unwrap()]);
    let (alice, admin) = (Creds::of("alice"), Creds::of(ADMIN));

    // A runnable image with a SIF built by the farm (its blob is linked into alice/busybox).
    push_busybox_ok(&server, &alice, "alice/busybox:1", &["/bin/sh"]);
    wait_ready(&server, &alice, "alice/busybox:1");
    // Images sharing a layer across repositories of one namespace, a re-push, a re-tag.
    let shared = random_bytes(3000);
    push_image(
        &server,
        &alice,
        "alice/a",
        "1",
        &[&shared, &random_bytes(1000)],
    );
    push_image(&server, &alice, "alice/b", "1", &[&shared]);
    let (_, m2) = push_image(&server, &alice, "alice/b", "2", &[&random_bytes(500)]);
    assert_eq!(
        put_manifest_as(&server, &alice, "alice/b", "2-again", &m2).status,
        StatusCode::CREATED
    );
    // Mounts: within the namespace (costs nothing) and into another one (costs there).
    let mount = |creds: &Creds, to: &str, from: &str, digest: &str| {
        let r = send(
            "POST",
            &server.url(&format!(
                "/v2/{to}/blobs/uploads/?mount={digest}&from={from}"
            )),
            &Auth::Basic(creds),
            None,
        );
        assert_eq!(r.status, StatusCode::CREATED, "mount: {}", r.describe());
    };
    mount(&alice, "alice/c", "alice/a", &sha256_digest(&shared));
    mount(&admin, "ops/copy", "alice/a", &sha256_digest(&shared));
    // Deletes: a manifest by digest, a blob link, then a whole repository.
    let r = send(
        "DELETE",
        &server.url(&format!("/v2/alice/b/manifests/{}", sha256_digest(&m2))),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let r = send(
        "DELETE",
        &server.url(&format!("/v2/alice/c/blobs/{}", sha256_digest(&shared))),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    push_image(
        &server,
        &alice,
        "alice/doomed",
        "1",
        &[&shared, &random_bytes(700)],
    );
    admin_cli(&server, &["repo", "delete", "alice/doomed"]);
    // A prune (grace 0) sweeps what the deletes left unreferenced.
    let pruned: Value = serde_json::from_str(&admin_cli(&server, &["prune", "--json"])).unwrap();
    assert!(pruned["blobs"].as_u64().unwrap_or(0) > 0, "{pruned}");

    let report = scrub_report(&server);
    assert_eq!(report["usage_drift"], json!([]), "{report}");
    let alice_total = usage_of(&server, "alice")["total_bytes"].as_u64().unwrap();
    assert!(alice_total > 0);

    // The comparison is real: a counter changed behind the server's back is reported and
    // repaired, and quota checks use the repaired value.
    server.terminate();
    sqlite(
        server.data_dir(),
        "UPDATE namespace_usage SET blob_bytes = blob_bytes + 12345 WHERE namespace = 'alice'",
    );
    server.restart_secure();
    let report = scrub_report(&server);
    assert_eq!(
        report["usage_drift"],
        json!([{
            "namespace": "alice",
            "counted_bytes": alice_total + 12345,
            "actual_bytes": alice_total,
        }]),
        "{report}"
    );
    assert_eq!(scrub_report(&server)["usage_drift"], json!([]));
    let out = admin_cli(&server, &["scrub"]);
    assert!(out.contains("usage counters match the recount"), "{out}");

    // A store from before the counters existed gets them filled at start.
    server.terminate();
    sqlite(server.data_dir(), "DROP TABLE namespace_usage");
    server.restart_secure();
    assert_eq!(scrub_report(&server)["usage_drift"], json!([]));
    assert_eq!(
        usage_of(&server, "alice")["total_bytes"].as_u64(),
        Some(alice_total)
    );
}
