//! Schema migrations on real stores: one made by the release before numbered migrations
//! (`tests/fixtures/store-v1`, see its `make.py`) upgrades at start, keeps a copy of its database
//! as it was, and serves what it held; one from a "future" build is refused, untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{http, run_output, Server, SERVER_BIN};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1");
/// alice/tool:1 in the fixture (printed by its make.py).
const MANIFEST: &str = "sha256:bb1f88fab323c2fc99d96d9a72c0b5c177903915548935ffc599f807afbf5ea1";
const LAYER: &str = "sha256:9203bdb4128a14dafb9b338b6a117e837e92586610f3d9620aeb25e1f0e6cc34";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A data directory holding the fixture store: its blobs, and `meta.db` loaded from the dump.
fn fixture_store() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hpcreg-v1-")
        .tempdir()
        .unwrap();
    copy_tree(&Path::new(FIXTURE).join("blobs"), &dir.path().join("blobs"));
    let dump = std::fs::read_to_string(Path::new(FIXTURE).join("meta.sql")).unwrap();
    rusqlite::Connection::open(dir.path().join("meta.db"))
        .unwrap()
        .execute_batch(&dump)
        .unwrap();
    dir
}

fn schema_version(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap()
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect()
}

#[test]
fn a_store_from_the_previous_release_upgrades_and_serves() {
    let data = fixture_store();
    assert_eq!(schema_version(&data.path().join("meta.db")), 1);
    let server = Server::start_in(data.path(), &[]);
    let client = http();

    let manifest = client
        .get(server.url("/v2/alice/tool/manifests/1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(manifest.status(), 200, "{}", server.log());
    assert_eq!(
        manifest.headers()["docker-content-digest"]
            .to_str()
            .unwrap(),
        MANIFEST
    );
    let manifest = manifest.bytes().unwrap();
    let layer = client
        .get(server.url(&format!("/v2/alice/tool/blobs/{LAYER}")))
        .send()
        .unwrap();
    assert_eq!(layer.status(), 200);
    let layer = layer.bytes().unwrap();
    assert_eq!(
        format!("sha256:{}", hex_sha256(&layer)),
        LAYER,
        "the blob's bytes"
    );
    let tags: serde_json::Value = client
        .get(server.url("/v2/alice/tool/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));

    // It takes writes too: a second tag on the same manifest (the usage counters, new in this
    // schema, were filled from the old rows).
    let put = client
        .put(server.url("/v2/alice/tool/manifests/2"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201, "{}", server.log());

    let db = data.path().join("meta.db");
    assert_eq!(schema_version(&db), hpc_registry::meta::SCHEMA_VERSION);
    // Schema 6: the enroot images' table, empty (the old store's SIFs, if any, have none).
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let enroot_images: i64 = c
        .query_row("SELECT COUNT(*) FROM enroot_images", [], |r| r.get(0))
        .expect("the enroot_images table of schema 6");
    assert_eq!(enroot_images, 0);
    drop(c);
    let copies = backups(data.path());
    assert_eq!(
        copies.len(),
        1,
        "one copy of the database as it was: {copies:?}"
    );
    assert_eq!(schema_version(&copies[0]), 1);
    assert!(
        server.log().contains("upgrading the metadata schema"),
        "the upgrade is logged:\n{}",
        server.log()
    );
}

#[test]
fn a_store_from_a_future_version_is_refused_and_left_as_it_is() {
    let data = fixture_store();
    let db = data.path().join("meta.db");
    let future = hpc_registry::meta::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO schema_version (version) VALUES (?1)", [future])
        .unwrap();
    let out = run_output(
        Command::new(SERVER_BIN)
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path()),
    );
    assert!(!out.status.success(), "a newer store must not be served");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("schema version {future}"))
            && stderr.contains(&format!("knows {}", hpc_registry::meta::SCHEMA_VERSION))
            && stderr.contains("upgrade hpc-registry"),
        "the refusal names both versions: {stderr}"
    );
    assert_eq!(schema_version(&db), future, "left as it was");
    assert!(backups(data.path()).is_empty());
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
