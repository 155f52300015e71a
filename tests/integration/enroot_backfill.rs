//! Enroot images for SIFs that have none (built before the registry made them): the real server
//! derives one on the first `/sif/<ref>/enroot` request (202s, then the image) or, at start-up,
//! for every such SIF; a failed derivation answers like a failed build; the SIF itself is never
//! rebuilt or changed, and permissions stay those of the SIF.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::sif::*;
use crate::support::users::*;
use crate::support::*;

const ALICE: &str = "alice";
const BOB: &str = "bob";
const REFERENCE: &str = "alice/tool:1";

fn get_as(server: &Server, user: &str, rest: &str) -> Reply {
    send(
        "GET",
        &server.url(&format!("/sif/{rest}")),
        &Auth::Basic(&Creds::of(user)),
        None,
    )
}

/// Polls `GET /sif/<rest>` as `user` until it stops answering 202 (each 202 checked like a
/// build's); returns that reply and how many 202s came first.
fn settle_as(server: &Server, user: &str, rest: &str) -> (Reply, usize) {
    let until = Instant::now() + BUILD_DEADLINE;
    let mut accepted = 0;
    loop {
        let r = get_as(server, user, rest);
        if r.status != StatusCode::ACCEPTED {
            return (r, accepted);
        }
        check_accepted(&format!("GET /sif/{rest}"), &r);
        accepted += 1;
        assert!(
            Instant::now() < until,
            "GET /sif/{rest} still 202 after {BUILD_DEADLINE:?}: {}\n{}",
            r.describe(),
            server.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// What a store from before enroot images holds for this SIF: no `enroot_images` row, no
/// enroot blob (row, repository link, file). Done on the database and the blob store directly,
/// as an upgrade finds them.
fn forget_enroot_image(server: &Server, sif: &str, enroot: &str) {
    let db = rusqlite::Connection::open(server.data_dir().join("meta.db")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.execute("DELETE FROM enroot_images WHERE sif_digest = ?1", [sif])
        .unwrap();
    db.execute("DELETE FROM repository_blobs WHERE digest = ?1", [enroot])
        .unwrap();
    db.execute("DELETE FROM blobs WHERE digest = ?1", [enroot])
        .unwrap();
    std::fs::remove_file(server.blob_path(enroot)).unwrap();
}

fn has_enroot_row(server: &Server, sif: &str) -> bool {
    let db = rusqlite::Connection::open_with_flags(
        server.data_dir().join("meta.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    db.query_row(
        "SELECT COUNT(*) FROM enroot_images WHERE sif_digest = ?1",
        [sif],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

/// The SIF as alice fetches it: (its digest as served, the digest of its bytes).
fn sif_as_served(server: &Server) -> (String, String) {
    let r = get_as(server, ALICE, REFERENCE);
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    (
        r.header("docker-content-digest").expect("digest header"),
        sha256_digest(&r.body),
    )
}

/// Checks an enroot image with the real `unsquashfs`: `/etc/rc` runs the image's command.
fn check_enroot_image(work: &Path, reply: &Reply, message: &str) -> String {
    assert_eq!(
        &reply.body[..4],
        b"hsqs",
        "no squashfs: {}",
        reply.describe()
    );
    let digest = sha256_digest(&reply.body);
    assert_eq!(
        reply.header("etag").as_deref(),
        Some(format!("\"{digest}\"").as_str())
    );
    let path = work.join(unique("enroot.sqsh"));
    std::fs::write(&path, &reply.body).unwrap();
    require_tool("unsquashfs");
    let rc = run_output(
        Command::new("unsquashfs")
            .arg("-cat")
            .arg(&path)
            .arg("etc/rc"),
    );
    let rc = String::from_utf8_lossy(&rc.stdout).into_owned();
    assert!(
        rc.contains(message),
        "etc/rc of the derived image does not run the image's command:\n{rc}"
    );
    digest
}

#[test]
fn sifs_without_an_enroot_image_get_one_derived_on_request_and_at_start_without_a_rebuild() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    let farm = |keys: &str| std::fs::write(&config, format!("[farm]\n{keys}\n")).unwrap();
    farm("max_attempts = 1");
    let args = ["--config", config.to_str().unwrap()];
    let setup = Setup::new().user(ALICE, &[]).user(BOB, &[]);
    let mut server = Server::start_secure(&setup, &args);
    let message = unique("derived");
    push_busybox_echo(&server, work.path(), ALICE, "alice/tool", &message, (0, 0));
    let (built, _) = settle_as(&server, ALICE, REFERENCE);
    assert_eq!(built.status, StatusCode::OK, "{}", built.describe());
    let (sif, sif_bytes) = sif_as_served(&server);
    assert_eq!(sif, sif_bytes);
    let first = get_as(&server, ALICE, &format!("{REFERENCE}/enroot"));
    assert_eq!(first.status, StatusCode::OK, "{}", first.describe());
    let built_enroot = sha256_digest(&first.body);

    // 1. On request: the SIF loses its enroot image; the next request derives one.
    forget_enroot_image(&server, &sif, &built_enroot);
    let r = get_as(&server, ALICE, &format!("{REFERENCE}/enroot"));
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "a SIF without an enroot image: {}",
        r.describe()
    );
    let pending = check_accepted("GET /sif/alice/tool:1/enroot", &r);
    assert_eq!(pending["sif"].as_str(), Some(sif.as_str()), "{pending}");
    // Another user gets what they get for the SIF: not found, and no derivation of their own.
    let bob_sif = get_as(&server, BOB, REFERENCE);
    let bob_enroot = get_as(&server, BOB, &format!("{REFERENCE}/enroot"));
    assert_eq!(
        bob_sif.status,
        StatusCode::NOT_FOUND,
        "{}",
        bob_sif.describe()
    );
    assert_eq!(
        bob_enroot.status,
        bob_sif.status,
        "{}",
        bob_enroot.describe()
    );
    let (derived, _) = settle_as(&server, ALICE, &format!("{REFERENCE}/enroot"));
    assert_eq!(derived.status, StatusCode::OK, "{}", derived.describe());
    check_enroot_image(work.path(), &derived, &message);
    assert_eq!(
        derived.header("x-sif-digest").as_deref(),
        Some(sif.as_str())
    );
    assert_eq!(
        sif_as_served(&server),
        (sif.clone(), sif.clone()),
        "the SIF is unchanged"
    );

    // 2. A derivation that fails (a [farm] limit the image is over) answers like a failed
    //    build, and the SIF is still served as it was.
    server.terminate();
    forget_enroot_image(&server, &sif, &sha256_digest(&derived.body));
    farm("max_attempts = 1\nmax_unpacked_bytes = 4096");
    server.restart_secure_with(&args);
    let (failed, _) = settle_as(&server, ALICE, &format!("{REFERENCE}/enroot"));
    assert_eq!(
        failed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}\n{}",
        failed.describe(),
        server.log()
    );
    let body = failed.json();
    assert_eq!(body["errors"][0]["code"], "BUILD_FAILED", "{body}");
    let said = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("enroot image") && said.contains(&sif),
        "the failure names the derivation and the SIF it spares: {said}"
    );
    assert_eq!(sif_as_served(&server), (sif.clone(), sif.clone()));

    // 3. At start-up: with the limit lifted, the server derives every missing image by itself
    //    (the failed one again), before anyone asks.
    farm("max_attempts = 1");
    server.restart_secure_with(&args);
    let until = Instant::now() + BUILD_DEADLINE;
    while !has_enroot_row(&server, &sif) {
        assert!(
            Instant::now() < until,
            "no enroot image derived at start-up after {BUILD_DEADLINE:?}:\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let r = get_as(&server, ALICE, &format!("{REFERENCE}/enroot"));
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    check_enroot_image(work.path(), &r, &message);
    assert_eq!(sif_as_served(&server), (sif.clone(), sif));
}
