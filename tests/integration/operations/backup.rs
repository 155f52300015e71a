//! Online backup and restore: a backup taken while pushes and fetches run, restored into a fresh
//! directory; the restored server serves every image and SIF, and its audit chain verifies. A
//! second backup copies only the new blobs.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::tar_layer;
use crate::support::sif::{sif_get, wait_sif};
use crate::support::users::{cli, cli_output};
use crate::support::*;

/// `admin backup DEST --data-dir DATA --json` → the report.
fn backup(data: &Path, dest: &Path) -> Value {
    let out = cli(
        &[
            "admin",
            "backup",
            dest.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ],
        &[],
        "",
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("backup JSON: {e}: {out}"))
}

#[test]
fn a_backup_taken_under_load_restores_into_a_store_that_serves_everything_and_verifies() {
    let server = Server::start_with(&["--config", &write_config()]);
    let work = tempfile::tempdir().unwrap();

    // Images whose SIFs are built before the backup.
    let mut images = Vec::new();
    let mut sifs = Vec::new();
    for i in 0..2 {
        let repo = format!("backup/tool{i}");
        let layer = tar_layer(work.path());
        push_single_layer_image(&server, &repo, "1", OCI_LAYER_TAR, &layer);
        let sif = wait_sif(&server, &format!("{repo}:1"), Duration::from_secs(120)).reply;
        sifs.push((format!("{repo}:1"), sha256_digest(&sif.body)));
        images.push(push_random_image(&server, &repo, "data", &[4096, 70_000]));
    }

    // Load while the backup runs: pushes of new images and fetches of the old ones.
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let base = server.base_url();
    let mut load = Vec::new();
    {
        let (stop, pushed) = (Arc::clone(&stop), Arc::clone(&pushed));
        let host = server.host();
        let _ = host;
        let srv = ServerRef(base.clone());
        load.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let img = srv.push(&format!("load/r{}", n % 3), &format!("t{n}"));
                pushed.lock().unwrap().push(img);
                n += 1;
            }
        }));
    }
    {
        let stop = Arc::clone(&stop);
        let fetch: Vec<(String, String)> = images
            .iter()
            .flat_map(|i| i.blob_digests().into_iter().map(|d| (i.repo.clone(), d)))
            .collect();
        let base = base.clone();
        load.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for (repo, d) in &fetch {
                    let r = http()
                        .get(format!("{base}/v2/{repo}/blobs/{d}"))
                        .send()
                        .expect("fetch during the backup");
                    assert_eq!(r.status(), StatusCode::OK);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let dest = work.path().join("backup");
    let first = backup(server.data_dir(), &dest);
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().expect("load thread");
    }
    let during = pushed.lock().unwrap().len();
    assert!(during > 0, "no push ran during the backup");
    let run = &first["manifest"]["last_run"];
    assert!(run["blobs_new"].as_u64().unwrap() > 0, "{first:#}");
    assert_eq!(run["blobs_missing"], 0, "{first:#}");
    // DEST is on the data directory's filesystem: every blob is a hard link, nothing copied.
    assert_eq!(run["blobs_copied"], 0, "{first:#}");
    assert!(dest.join("backup.json").is_file());

    // Incremental: after one more image (two new blobs), a backup adds exactly those.
    let settled = backup(server.data_dir(), &dest);
    let extra = push_random_image(&server, "backup/late", "1", &[1000]);
    let third = backup(server.data_dir(), &dest);
    let run = &third["manifest"]["last_run"];
    assert_eq!(run["blobs_new"], 2, "{third:#}");
    assert_eq!(
        run["blobs_present"], settled["manifest"]["counts"]["blobs"],
        "every blob of the earlier backup is reused: {third:#}"
    );

    // Restore: refused over a non-empty directory, then into a fresh one.
    let taken = work.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("x"), b"x").unwrap();
    let out = cli_output(
        &[
            "admin",
            "restore",
            dest.to_str().unwrap(),
            taken.to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let restored = work.path().join("restored");
    let out = cli(
        &[
            "admin",
            "restore",
            dest.to_str().unwrap(),
            restored.to_str().unwrap(),
            "--json",
        ],
        &[],
        "",
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["sifs_checked"].as_u64().unwrap() >= 2, "{report:#}");
    cli(
        &[
            "admin",
            "audit",
            "verify",
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
        "",
    );

    // The restored server serves every image (the load's too) and every SIF, byte for byte.
    drop(server);
    let again = Server::start_in(&restored, &[]);
    let load_images: Vec<PushedImage> = pushed.lock().unwrap().clone();
    for img in images.iter().chain(load_images.iter()).chain([&extra]) {
        img.assert_intact(&again);
    }
    for (reference, digest) in &sifs {
        let r = sif_get(&again, reference);
        assert_eq!(r.status, StatusCode::OK, "{reference}: {}", r.describe());
        assert_eq!(&sha256_digest(&r.body), digest, "{reference}");
    }
}

/// `[farm] workers = 1` and no background prune, as a config file that lives for the test run.
fn write_config() -> String {
    let dir = std::env::temp_dir().join(unique("hpcreg-backup-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, "[farm]\nworkers = 1\n[gc]\ninterval = \"0s\"\n").unwrap();
    path.display().to_string()
}

/// Pushes through the HTTP helpers from another thread (they take a `Server`; this one has only
/// the base URL).
struct ServerRef(String);

impl ServerRef {
    fn push(&self, repo: &str, tag: &str) -> PushedImage {
        let layer = random_bytes(3000);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"nonce": unique("c")}},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        }))
        .unwrap();
        for blob in [&config, &layer] {
            let r = http()
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.0))
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let location = absolute(&self.0, r.headers()["location"].to_str().unwrap());
            let url = with_query(&location, &format!("digest={}", sha256_digest(blob)));
            let r = http()
                .put(url)
                .header("content-type", "application/octet-stream")
                .body(blob.clone())
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let manifest = oci_manifest_bytes(
            &descriptor(OCI_CONFIG, &config),
            &[descriptor(OCI_LAYER_TAR, &layer)],
            None,
        );
        let r = http()
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.0))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        PushedImage {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            digest: sha256_digest(&manifest),
            manifest,
            config,
            layers: vec![layer],
        }
    }
}
