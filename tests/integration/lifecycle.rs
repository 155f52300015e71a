//! Online garbage collection, retention and deletes against the real server: prunes while pushes
//! and SIF downloads run, dry runs equal to real runs for every retention rule, freed bytes equal
//! to what `du` measures, repository deletes through the admin CLI.
//!
//! Servers run with `[gc] grace = "0s"` so that unreferenced data goes at the next prune, and a
//! farm platform no test image has (`linux/s390x`) unless SIFs are wanted, so random images never
//! queue builds. No timing is asserted; loops are bounded by iteration counts or deadlines.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::sif::*;
use crate::support::users::*;
use crate::support::*;

const NO_BUILDS: &str = "[farm]\nworkers = 0\nplatforms = [\"linux/s390x\"]\n";

/// The real server (`--dev`: anonymous pushes) with a config file and an admin user `boss`.
struct GcServer {
    server: Server,
    _dir: TempDir,
}

impl std::ops::Deref for GcServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for GcServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl GcServer {
    fn start(config: &str) -> GcServer {
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-gc-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        Setup::new().user("boss", &["--admin"]).apply(&data);
        let cfg = dir.path().join("config.toml");
        fs::write(&cfg, config).unwrap();
        let server = Server::start_in(&data, &["--config", cfg.to_str().unwrap()]);
        GcServer { server, _dir: dir }
    }
}

fn boss() -> Creds {
    Creds::of("boss")
}

/// `POST /admin/prune` as the admin; asserts 200 and returns the report.
fn prune(server: &Server, dry_run: bool) -> Value {
    let r = send(
        "POST",
        &server.url(&format!("/admin/prune?dry_run={dry_run}")),
        &Auth::Basic(&boss()),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "prune: {}", r.describe());
    let report = r.json();
    assert_eq!(report["dry_run"], json!(dry_run));
    report
}

/// The actions of a report, comparable across a dry and a real run.
fn actions(report: &Value) -> BTreeSet<(String, String, String, u64, u64)> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["repository"].as_str().unwrap_or("").to_owned(),
                a["reference"].as_str().unwrap().to_owned(),
                a["bytes"].as_u64().unwrap(),
                a["disk_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn refs_of(report: &Value, kind: &str) -> BTreeSet<String> {
    actions(report)
        .into_iter()
        .filter(|a| a.0 == kind)
        .map(|a| a.2)
        .collect()
}

/// A dry run, then the real run: asserts they list exactly the same actions; returns the real.
fn dry_then_real(server: &Server) -> Value {
    let plan = prune(server, true);
    let done = prune(server, false);
    assert_eq!(
        actions(&plan),
        actions(&done),
        "the dry run must list exactly what the real run does\nplan: {plan:#}\nrun: {done:#}"
    );
    done
}

/// Every committed blob file in the store, as digests.
fn blob_files(data_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = data_dir.join("blobs").join("sha256");
    for prefix in fs::read_dir(&root).unwrap() {
        for f in fs::read_dir(prefix.unwrap().path()).unwrap() {
            out.insert(format!(
                "sha256:{}",
                f.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// Bytes the data directory occupies on disk, the metadata database excluded (SQLite keeps its
/// pages for reuse, it never returns them).
fn du(data_dir: &Path) -> u64 {
    let out = run(Command::new("du").args([
        "-s",
        "--block-size=1",
        "--exclude=meta.db*",
        data_dir.to_str().unwrap(),
    ]));
    out.split_whitespace().next().unwrap().parse().unwrap()
}

fn delete(server: &Server, path: &str) -> Reply {
    send("DELETE", &server.url(path), &Auth::None, None)
}

/// An OCI manifest over already-pushed blobs.
fn manifest_over(config: &[u8], layers: &[&[u8]], subject: Option<(&str, usize)>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER_TAR, l)).collect::<Vec<_>>(),
    });
    if let Some((digest, size)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size});
    }
    serde_json::to_vec(&m).unwrap()
}

fn random_config() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap()
}

#[test]
fn prune_sweeps_only_unanchored_data_and_tag_delete_keeps_the_manifest() {
    let server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n{NO_BUILDS}"
    ));
    let repo = "gc/basic";
    let shared = random_bytes(4096);
    let kept = push_random_image(&server, repo, "kept", &[3000]);
    push_blob(&server, repo, &shared);

    // B shares a layer with C; only B's tag is deleted.
    let b_cfg = random_config();
    let b_own = random_bytes(5000);
    push_blob(&server, repo, &b_cfg);
    push_blob(&server, repo, &b_own);
    let b = manifest_over(&b_cfg, &[&shared, &b_own], None);
    let b_digest = put_manifest_ok(&server, repo, "b", OCI_MANIFEST, &b);
    // An index (tagged) over a child pushed by digest only.
    let c_cfg = random_config();
    push_blob(&server, repo, &c_cfg);
    let c = manifest_over(&c_cfg, &[&shared], None);
    let c_digest = put_manifest_ok(&server, repo, &sha256_digest(&c), OCI_MANIFEST, &c);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": c_digest, "size": c.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    let index_digest = put_manifest_ok(&server, repo, "multi", OCI_INDEX, &index);
    // A referrer of `kept` (stays) and one of a manifest that does not exist (goes).
    let sig_cfg = random_config();
    push_blob(&server, repo, &sig_cfg);
    let sig = manifest_over(&sig_cfg, &[], Some((&kept.digest, kept.manifest.len())));
    let sig_digest = put_manifest_ok(&server, repo, &sha256_digest(&sig), OCI_MANIFEST, &sig);
    let ghost = format!("sha256:{}", "0".repeat(64));
    let stray = manifest_over(&sig_cfg, &[], Some((&ghost, 10)));
    let stray_digest = put_manifest_ok(&server, repo, &sha256_digest(&stray), OCI_MANIFEST, &stray);
    // A blob no manifest ever referenced.
    let orphan = push_blob(&server, repo, &random_bytes(7000));

    // DELETE by tag removes the tag only.
    let r = delete(&server, &format!("/v2/{repo}/manifests/b"));
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    assert_eq!(
        get_manifest(&server, repo, "b").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_manifest(&server, repo, &b_digest).status,
        StatusCode::OK
    );

    let done = dry_then_real(&server);
    assert_eq!(
        refs_of(&done, "manifest"),
        BTreeSet::from([b_digest.clone(), stray_digest.clone()])
    );
    assert_eq!(
        refs_of(&done, "blob"),
        BTreeSet::from([sha256_digest(&b_own), sha256_digest(&b_cfg), orphan.clone()])
    );
    assert!(done["disk_bytes_freed"].as_u64().unwrap() >= 5000 + 7000);

    kept.assert_intact(&server);
    for (reference, expect) in [
        (b_digest.as_str(), StatusCode::NOT_FOUND),
        (stray_digest.as_str(), StatusCode::NOT_FOUND),
        (c_digest.as_str(), StatusCode::OK),
        (index_digest.as_str(), StatusCode::OK),
        (sig_digest.as_str(), StatusCode::OK),
    ] {
        assert_eq!(
            get_manifest(&server, repo, reference).status,
            expect,
            "{reference}"
        );
    }
    let files = blob_files(server.data_dir());
    assert!(files.contains(&sha256_digest(&shared)), "shared layer kept");
    assert!(!files.contains(&orphan) && !files.contains(&sha256_digest(&b_own)));
    assert_eq!(head_blob(&server, repo, &orphan), StatusCode::NOT_FOUND);
    // Nothing changed since: the next run finds nothing to do.
    let again = prune(&server, false);
    assert_eq!(again["actions"], json!([]), "{again:#}");

    // Deleting the index makes its child go at the next prune, with the child's own blob.
    let r = delete(&server, &format!("/v2/{repo}/manifests/{index_digest}"));
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let done = dry_then_real(&server);
    assert_eq!(
        refs_of(&done, "manifest"),
        BTreeSet::from([c_digest.clone()])
    );
    // The shared layer goes too: B, its other user, is gone already.
    assert_eq!(
        refs_of(&done, "blob"),
        BTreeSet::from([sha256_digest(&c_cfg), sha256_digest(&shared)])
    );

    // Only admins prune.
    let r = send("POST", &server.url("/admin/prune"), &Auth::None, None);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
}

/// One image of the stress test: enough to check it is intact afterwards.
#[derive(Clone)]
struct Live {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

#[test]
fn stress_pushes_and_prunes_concurrently_without_dangling_references() {
    let server = Arc::new(GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n{NO_BUILDS}"
    )));
    // A small pool of shared layers makes pushes race the deletion of the very blobs they use.
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..4).map(|_| random_bytes(3000)).collect());
    let live: Arc<Mutex<HashMap<String, Live>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clean_failures = Arc::new(AtomicUsize::new(0));
    let pushed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(25);

    let pushers: Vec<_> = (0..2)
        .map(|w| {
            let (server, pool, live, stop, clean, pushed) = (
                Arc::clone(&server),
                Arc::clone(&pool),
                Arc::clone(&live),
                Arc::clone(&stop),
                Arc::clone(&clean_failures),
                Arc::clone(&pushed),
            );
            thread::spawn(move || {
                let repo = format!("stress/w{w}");
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let config = random_config();
                    let own = random_bytes(2000 + i % 5000);
                    let shared = pool[i % pool.len()].clone();
                    let manifest = manifest_over(&config, &[&shared, &own], None);
                    let tag = format!("t{}", i % 6);
                    // Pushed blobs may be collected before the manifest arrives (grace 0): the
                    // registry must then refuse the manifest with BLOB_UNKNOWN, and a retry works.
                    let digest = loop {
                        for b in [&config, &shared, &own] {
                            push_blob(&server, &repo, b);
                        }
                        let r = put_manifest(&server, &repo, &tag, OCI_MANIFEST, &manifest);
                        if r.status == StatusCode::CREATED {
                            break sha256_digest(&manifest);
                        }
                        let codes = r.error_codes();
                        assert!(
                            codes
                                .iter()
                                .any(|c| c == "MANIFEST_BLOB_UNKNOWN" || c == "BLOB_UNKNOWN"),
                            "manifest PUT failed other than cleanly: {}",
                            r.describe()
                        );
                        clean.fetch_add(1, Ordering::Relaxed);
                    };
                    pushed.fetch_add(1, Ordering::Relaxed);
                    let key = format!("{repo}:{tag}");
                    let mut l = live.lock().unwrap();
                    // The tag moved: the previous image is garbage now.
                    l.insert(
                        key.clone(),
                        Live {
                            repo: repo.clone(),
                            tag: tag.clone(),
                            digest,
                            manifest,
                            blobs: vec![config, shared, own],
                        },
                    );
                    // Now and then delete a tag outright.
                    if i % 7 == 0 {
                        let victim = format!("{repo}:t{}", (i + 3) % 6);
                        if let Some(v) = l.remove(&victim) {
                            drop(l);
                            let r = delete(&server, &format!("/v2/{}/manifests/{}", v.repo, v.tag));
                            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
                        }
                    }
                }
            })
        })
        .collect();
    let pruner = {
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        thread::spawn(move || {
            let mut runs = 0usize;
            let mut freed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let report = prune(&server, false);
                freed += report["disk_bytes_freed"].as_u64().unwrap();
                runs += 1;
                // Paced as before the verified-password memory, when each prune request paid
                // argon2 (~30 ms): unpaced, ~75 prunes/s with grace 0 delete nearly every
                // freshly pushed blob before its manifest arrives and starve the pushers.
                thread::sleep(Duration::from_millis(30));
            }
            (runs, freed)
        })
    };
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.join().expect("pusher");
    }
    let (runs, freed) = pruner.join().expect("pruner");
    assert!(
        runs >= 2 && freed > 0,
        "prunes ran ({runs}) and freed data ({freed})"
    );
    assert!(pushed.load(Ordering::Relaxed) >= 10);
    eprintln!(
        "stress: {} images pushed, {runs} prunes freed {freed} bytes on disk, {} manifest PUTs refused cleanly (BLOB_UNKNOWN) and retried",
        pushed.load(Ordering::Relaxed),
        clean_failures.load(Ordering::Relaxed)
    );

    // Every live manifest and its blobs are present and byte-identical ...
    let live = live.lock().unwrap().clone();
    let mut wanted = BTreeSet::new();
    for v in live.values() {
        let r = get_manifest(&server, &v.repo, &v.tag);
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}:{}: {}",
            v.repo,
            v.tag,
            r.describe()
        );
        assert!(
            r.body == v.manifest,
            "{}:{} is another manifest",
            v.repo,
            v.tag
        );
        assert_eq!(sha256_digest(&r.body), v.digest);
        for b in &v.blobs {
            let d = sha256_digest(b);
            assert!(
                get_blob(&server, &v.repo, &d) == *b,
                "blob {d} of {}:{}",
                v.repo,
                v.tag
            );
            wanted.insert(d);
        }
    }
    // ... and, once a last prune has run, nothing unreferenced is left on disk.
    prune(&server, false);
    let files = blob_files(server.data_dir());
    assert_eq!(
        files,
        wanted,
        "blob files on disk must be exactly the blobs of live manifests (clean push failures seen: {})",
        clean_failures.load(Ordering::Relaxed)
    );
}

#[test]
fn repository_delete_then_prune_frees_what_du_measures() {
    let mut server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n{NO_BUILDS}"
    ));
    let shared = random_bytes(300_000);
    let mut doomed = Vec::new();
    for t in ["1", "2", "3"] {
        doomed.push(push_random_image(
            &server,
            "acct/doomed",
            t,
            &[400_000, 123_457],
        ));
    }
    // A second repository shares a layer with the doomed one: it must survive intact.
    push_blob(&server, "acct/doomed", &shared);
    let cfg = random_config();
    push_blob(&server, "acct/doomed", &cfg);
    put_manifest_ok(
        &server,
        "acct/doomed",
        "shared",
        OCI_MANIFEST,
        &manifest_over(&cfg, &[&shared], None),
    );
    let survivor_cfg = random_config();
    push_blob(&server, "acct/kept", &survivor_cfg);
    push_blob(&server, "acct/kept", &shared);
    let survivor_manifest = manifest_over(&survivor_cfg, &[&shared], None);
    put_manifest_ok(&server, "acct/kept", "1", OCI_MANIFEST, &survivor_manifest);
    // Settle anything unrelated first, so the measured prune frees only the repository.
    prune(&server, false);

    let env = [
        ("HPC_REGISTRY_SERVER", server.base_url()),
        ("HPC_REGISTRY_USER", "boss".to_owned()),
        ("HPC_REGISTRY_PASSWORD", Creds::of("boss").secret),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The data-directory lock keeps an offline prune off a served store.
    let out = cli_output(
        &[
            "admin",
            "prune",
            "--data-dir",
            server.data_dir().to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&server.base_url()),
        "the refusal names the running server: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let before = du(server.data_dir());
    let deleted: Value = serde_json::from_str(&cli(
        &["admin", "repo", "delete", "acct/doomed", "--json"],
        &env,
        "",
    ))
    .unwrap();
    assert_eq!(deleted["manifests"], json!(4));
    let r = send(
        "GET",
        &server.url("/v2/acct/doomed/tags/list"),
        &Auth::None,
        None,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
    let report: Value =
        serde_json::from_str(&cli(&["admin", "prune", "--json"], &env, "")).unwrap();
    let after = du(server.data_dir());
    let reported = report["disk_bytes_freed"].as_u64().unwrap();
    let measured = before - after;
    // 3 configs + 6 layers + the shared-manifest config; the shared layer stays.
    assert_eq!(report["blobs"], json!(10), "{report:#}");
    assert!(reported >= 3 * (400_000 + 123_457));
    assert!(
        measured.abs_diff(reported) <= 4096,
        "du fell by {measured} bytes, the prune reported {reported}"
    );
    for img in &doomed {
        for d in img.blob_digests() {
            assert!(!server.blob_path(&d).exists(), "{d} left on disk");
        }
    }
    let r = get_manifest(&server, "acct/kept", "1");
    assert_eq!(r.status, StatusCode::OK);
    assert!(get_blob(&server, "acct/kept", &sha256_digest(&shared)) == shared);
    // An unknown repository is a clean 404.
    let out = cli_output(&["admin", "repo", "delete", "acct/doomed"], &env, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // With the server stopped, the same commands work on the data directory under its lock,
    // and are audited as the OS user who ran them.
    server.terminate();
    let dd = server.data_dir().to_str().unwrap().to_owned();
    cli(
        &["admin", "repo", "delete", "acct/kept", "--data-dir", &dd],
        &[],
        "",
    );
    let report: Value = serde_json::from_str(&cli(
        &["admin", "prune", "--json", "--data-dir", &dd],
        &[],
        "",
    ))
    .unwrap();
    assert_eq!(report["dry_run"], json!(false), "{report:#}");
    let audit = cli(&["admin", "audit", "--json", "--data-dir", &dd], &[], "");
    let local: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["client"] == json!("local"))
        .collect();
    let find = |action: &str| {
        local
            .iter()
            .find(|r| r["action"] == json!(action))
            .unwrap_or_else(|| panic!("no local {action} record in:\n{audit}"))
    };
    let deleted = find("repository.delete");
    assert_eq!(deleted["reference"], json!("acct/kept"));
    assert_eq!(deleted["outcome"], json!("ok"));
    assert_eq!(deleted["auth"], json!("local"));
    assert_eq!(find("admin.prune")["outcome"], json!("ok"));
    cli(&["admin", "audit", "verify", "--data-dir", &dd], &[], "");
}

/// Pushes a tiny image tagged `tag` into `repo`.
fn push_tagged(server: &Server, repo: &str, tag: &str) -> PushedImage {
    push_random_image(server, repo, tag, &[512])
}

fn tags_of(server: &Server, repo: &str) -> BTreeSet<String> {
    let r = send(
        "GET",
        &server.url(&format!("/v2/{repo}/tags/list")),
        &Auth::None,
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    r.json()["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn retention_keep_last_and_keep_tags_dry_run_equals_real_run() {
    let server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[[retention]]\nnamespaces = \"ret/*\"\n\
         keep_last = 2\nkeep_tags = [\"stable\", \"v*\"]\n\n{NO_BUILDS}"
    ));
    // pushed_at has a resolution of one second: space the pushes so the order is certain.
    let mut images = HashMap::new();
    for t in ["stable", "v1", "n1", "n2", "n3", "n4"] {
        images.insert(t, push_tagged(&server, "ret/app", t));
        thread::sleep(Duration::from_millis(1100));
    }
    let outside: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|t| push_tagged(&server, "other/app", t))
        .collect();
    let done = dry_then_real(&server);
    assert_eq!(
        refs_of(&done, "tag"),
        BTreeSet::from(["n1".into(), "n2".into()])
    );
    assert_eq!(
        refs_of(&done, "manifest"),
        BTreeSet::from([images["n1"].digest.clone(), images["n2"].digest.clone()])
    );
    assert_eq!(
        refs_of(&done, "blob").len(),
        4,
        "config and layer of n1 and n2"
    );
    assert_eq!(
        tags_of(&server, "ret/app"),
        BTreeSet::from(["stable", "v1", "n3", "n4"].map(String::from))
    );
    for t in ["stable", "v1", "n3", "n4"] {
        images[t].assert_intact(&server);
    }
    for img in &outside {
        img.assert_intact(&server);
    }
}

#[test]
fn retention_unused_after_dry_run_equals_real_run() {
    let server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[[retention]]\nnamespaces = \"idle/*\"\n\
         unused_after = \"5s\"\n\n{NO_BUILDS}"
    ));
    let stale = push_tagged(&server, "idle/app", "stale");
    let used = push_tagged(&server, "idle/app", "used");
    thread::sleep(Duration::from_secs(7));
    // A pull is a use (the prune writes out the batched pull times first).
    assert_eq!(
        get_manifest(&server, "idle/app", "used").status,
        StatusCode::OK
    );
    let done = dry_then_real(&server);
    assert_eq!(refs_of(&done, "tag"), BTreeSet::from(["stale".to_owned()]));
    assert_eq!(
        refs_of(&done, "manifest"),
        BTreeSet::from([stale.digest.clone()])
    );
    assert_eq!(
        tags_of(&server, "idle/app"),
        BTreeSet::from(["used".to_owned()])
    );
    used.assert_intact(&server);
}

#[test]
fn retention_untagged_after_dry_run_equals_real_run() {
    let server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[[retention]]\nnamespaces = \"slow/*\"\n\
         untagged_after = \"1h\"\n\n{NO_BUILDS}"
    ));
    // The same untagged manifest pushed by digest into a repository with a one-hour policy and
    // into one without a policy (the grace period, 0 s, applies).
    let cfg = random_config();
    let layer = random_bytes(1000);
    let m = manifest_over(&cfg, &[&layer], None);
    let mut digest = String::new();
    for repo in ["slow/app", "fast/app"] {
        push_blob(&server, repo, &cfg);
        push_blob(&server, repo, &layer);
        digest = put_manifest_ok(&server, repo, &sha256_digest(&m), OCI_MANIFEST, &m);
    }
    let done = dry_then_real(&server);
    let gone: Vec<_> = done["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "manifest")
        .map(|a| {
            (
                a["repository"].as_str().unwrap(),
                a["reference"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(gone, vec![("fast/app", digest.as_str())]);
    // The blobs stay: the manifest kept in slow/app references them.
    assert_eq!(refs_of(&done, "blob"), BTreeSet::new());
    assert_eq!(
        get_manifest(&server, "slow/app", &digest).status,
        StatusCode::OK
    );
    assert_eq!(
        get_manifest(&server, "fast/app", &digest).status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn sif_downloads_succeed_during_prunes_and_a_deleted_image_takes_its_sif_and_enroot_image_along() {
    // A SIF download is a use of the image: `unused_after` must not expire a tag whose SIF is
    // fetched while nobody pulls the image itself.
    let server = GcServer::start(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[[retention]]\nnamespaces = \"sifs/tool\"\n\
         unused_after = \"5s\"\n\n[farm]\nworkers = 1\nthreads = 1\n",
    );
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = layout_dir.path().join("layout");
    busybox_oci_layout(&layout, "gc", &["/bin/sh", "-c", "echo hello-from-gc"]);
    let digest = skopeo_push(&server, &layout, "gc", "sifs/tool", "1");
    let sif = wait_sif(&server, &digest, BUILD_DEADLINE).reply;
    let sif_digest = sif.header("docker-content-digest").expect("SIF digest");
    assert_eq!(sha256_digest(&sif.body), sif_digest);
    // Its enroot image, a blob of its own.
    let enroot = sif_get(&server, &format!("{digest}/enroot"));
    assert_eq!(enroot.status, StatusCode::OK, "{}", enroot.describe());
    let enroot_digest = sha256_digest(&enroot.body);
    // The ORAS artifact exists once published.
    wait_tag(&server, "sifs/tool", "1.sif");

    let stop = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let (server_url, stop, digest, sif_digest) = (
            server.base_url(),
            Arc::clone(&stop),
            digest.clone(),
            sif_digest.clone(),
        );
        thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) || n == 0 {
                for reference in [digest.as_str(), "sifs/tool:1"] {
                    let r = Reply::from(
                        http()
                            .get(format!("{server_url}/sif/{reference}"))
                            .send()
                            .expect("GET /sif"),
                    );
                    assert_eq!(
                        r.status,
                        StatusCode::OK,
                        "GET /sif/{reference} during prune: {}",
                        r.describe()
                    );
                    assert_eq!(sha256_digest(&r.body), sif_digest, "SIF bytes");
                    n += 1;
                }
            }
            n
        })
    };
    // Prunes with real garbage to sweep, while the downloads run.
    for i in 0..8 {
        let img = push_tagged(&server, "sifs/junk", &format!("j{i}"));
        let r = delete(&server, &format!("/v2/sifs/junk/manifests/{}", img.digest));
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let report = prune(&server, false);
        assert!(
            !refs_of(&report, "blob").contains(&sif_digest),
            "{report:#}"
        );
        assert!(
            !refs_of(&report, "blob").contains(&enroot_digest),
            "a referenced enroot image was collected: {report:#}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let fetched = fetcher.join().expect("fetcher");
    assert!(fetched >= 2);
    assert!(blob_files(server.data_dir()).contains(&sif_digest));
    assert!(blob_files(server.data_dir()).contains(&enroot_digest));

    // For longer than `unused_after`, only the SIF is fetched (by digest); a second tag, of an
    // image nobody builds (s390x) or fetches, is the control.
    let cfg = serde_json::to_vec(&json!({
        "architecture": "s390x", "os": "linux", "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    push_blob(&server, "sifs/tool", &cfg);
    put_manifest_ok(
        &server,
        "sifs/tool",
        "idle",
        OCI_MANIFEST,
        &manifest_over(&cfg, &[], None),
    );
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert_eq!(sif_get(&server, &digest).status, StatusCode::OK);
        thread::sleep(Duration::from_millis(500));
    }
    let done = dry_then_real(&server);
    assert_eq!(
        refs_of(&done, "tag"),
        BTreeSet::from(["idle".to_owned()]),
        "{done:#}"
    );
    assert!(tags_of(&server, "sifs/tool").contains("1"));
    let artifact = manifest_digest(&server, "sifs/tool", "1.sif");

    // Deleting the source image takes its SIF, the SIF's ORAS artifact and the job along at the
    // next prune, and nothing rebuilds it.
    let r = delete(&server, &format!("/v2/sifs/tool/manifests/{digest}"));
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let done = dry_then_real(&server);
    assert_eq!(refs_of(&done, "sif"), BTreeSet::from([sif_digest.clone()]));
    assert!(refs_of(&done, "blob").contains(&sif_digest), "{done:#}");
    assert_eq!(
        refs_of(&done, "enroot"),
        BTreeSet::from([enroot_digest.clone()])
    );
    assert!(refs_of(&done, "blob").contains(&enroot_digest), "{done:#}");
    assert_eq!(
        refs_of(&done, "manifest"),
        BTreeSet::from([artifact]),
        "the ORAS artifact: {done:#}"
    );
    assert!(!blob_files(server.data_dir()).contains(&sif_digest));
    assert!(!blob_files(server.data_dir()).contains(&enroot_digest));
    assert_eq!(
        get_manifest(&server, "sifs/tool", "1.sif").status,
        StatusCode::NOT_FOUND
    );
    let r = sif_get(&server, &digest);
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.describe());
}

fn wait_tag(server: &Server, repo: &str, tag: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while get_manifest(server, repo, tag).status != StatusCode::OK {
        assert!(Instant::now() < until, "{repo}:{tag} never appeared");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_background_prune_runs_on_its_interval() {
    let server = GcServer::start(&format!(
        "[gc]\ngrace = \"0s\"\ninterval = \"1s\"\n{NO_BUILDS}"
    ));
    let kept = push_tagged(&server, "bg/app", "kept");
    let gone = push_tagged(&server, "bg/app", "gone");
    let r = delete(&server, "/v2/bg/app/manifests/gone");
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    // No admin call: the scheduled run must sweep the untagged manifest and its blobs.
    let until = Instant::now() + Duration::from_secs(60);
    while get_manifest(&server, "bg/app", &gone.digest).status == StatusCode::OK {
        assert!(
            Instant::now() < until,
            "the background prune never swept {}",
            gone.digest
        );
        thread::sleep(Duration::from_millis(200));
    }
    let until = Instant::now() + Duration::from_secs(60);
    while gone
        .blob_digests()
        .iter()
        .any(|d| server.blob_path(d).exists())
    {
        assert!(
            Instant::now() < until,
            "the background prune left {}'s blobs",
            gone.digest
        );
        thread::sleep(Duration::from_millis(200));
    }
    kept.assert_intact(&server);
}

#[test]
fn retention_that_deletes_a_tag_takes_its_derived_sif_tag_along_and_never_counts_derived_tags() {
    // keep_last = 1 over client tags: derived `T.sif` tags neither count towards it nor are
    // deleted by it, and the one that hangs on a deleted tag goes with it.
    let server = GcServer::start(
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[[retention]]\nnamespaces = \"sifs/ret\"\n\
         keep_last = 1\n\n[farm]\nworkers = 1\nthreads = 1\n",
    );
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = layout_dir.path().join("layout");
    busybox_oci_layout(
        &layout,
        "r",
        &["/bin/sh", "-c", "echo hello-from-retention"],
    );
    let digest = skopeo_push(&server, &layout, "r", "sifs/ret", "1");
    wait_sif(&server, &digest, BUILD_DEADLINE);
    wait_tag(&server, "sifs/ret", "1.sif");
    // pushed_at has a resolution of one second: space the pushes so the order is certain.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(skopeo_push(&server, &layout, "r", "sifs/ret", "2"), digest);
    wait_tag(&server, "sifs/ret", "2.sif");
    let artifact1 = manifest_digest(&server, "sifs/ret", "1.sif");
    assert_eq!(
        tags_of(&server, "sifs/ret"),
        BTreeSet::from(["1".to_owned(), "2".to_owned()])
    );

    let done = dry_then_real(&server);
    assert_eq!(
        refs_of(&done, "tag"),
        BTreeSet::from(["1".to_owned()]),
        "only the older client tag goes: {done:#}"
    );
    assert_eq!(
        tags_of(&server, "sifs/ret"),
        BTreeSet::from(["2".to_owned()])
    );
    let until = Instant::now() + Duration::from_secs(60);
    while get_manifest(&server, "sifs/ret", "1.sif").status != StatusCode::NOT_FOUND {
        assert!(Instant::now() < until, "1.sif outlived tag 1 by 60 s");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get_manifest(&server, "sifs/ret", "2.sif").status,
        StatusCode::OK
    );
    // The artifact 1.sif published is unanchored once 1.sif is gone: a prune takes it (the first
    // one already, if the planner dropped 1.sif before its sweep), and nothing else.
    let again = dry_then_real(&server);
    let mut swept = refs_of(&done, "manifest");
    swept.extend(refs_of(&again, "manifest"));
    assert_eq!(swept, BTreeSet::from([artifact1]), "{done:#}\n{again:#}");
    assert_eq!(
        get_manifest(&server, "sifs/ret", &digest).status,
        StatusCode::OK
    );
}
