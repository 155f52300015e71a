//! Remote builder hosts (issue 11 point 2) on the real server with `workers = 0` (no build in
//! the server) and the real `hpc-registry builder` as separate processes: a pushed busybox image
//! becomes a SIF that a loop mount and a chroot run; a builder killed with -9 mid-build loses
//! its lease and a second builder completes the job; a builder that uploads wrong bytes, a file
//! that is no SIF or a SIF of the wrong architecture, or an enroot image of wrong bytes or no
//! squashfs, is refused and named (played by a raw client of the protocol); an arm64 builder takes arm64 jobs only; a builder credential
//! cannot pull, push, list or administer anything, and a user's credential is not a builder's.
//!
//! No timing is asserted: every wait polls with a generous deadline.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::builder::*;
use crate::support::sif::*;
use crate::support::users::*;
use crate::support::*;

const ADMIN: &str = "ops";
const USER: &str = "alice";
const POLL: Duration = Duration::from_millis(100);

fn start(dir: &Path, farm_keys: &str) -> Server {
    let config = dir.join("config.toml");
    fs::write(&config, format!("[farm]\n{farm_keys}\n")).unwrap();
    let setup = Setup::new().user(USER, &[]).user(ADMIN, &["--admin"]);
    Server::start_secure(&setup, &["--config", config.to_str().unwrap()])
}

fn sif_as_alice(server: &Server, rest: &str) -> Reply {
    send(
        "GET",
        &server.url(&format!("/sif/{rest}")),
        &Auth::Basic(&Creds::of(USER)),
        None,
    )
}

/// `/sif/<reference>/status` as alice.
fn status(server: &Server, reference: &str) -> Value {
    let r = sif_as_alice(server, &format!("{reference}/status"));
    assert_eq!(
        r.status,
        StatusCode::OK,
        "status of {reference}: {}",
        r.describe()
    );
    r.json()
}

fn wait_for(server: &Server, reference: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + BUILD_DEADLINE;
    loop {
        let s = status(server, reference);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "{reference}: not {what} after {BUILD_DEADLINE:?}: {s}\n--- server log ---\n{}",
            server.log()
        );
        thread::sleep(POLL);
    }
}

/// A busybox image (running `echo MESSAGE`) with a `size`-byte random layer on top, pushed by
/// skopeo as alice; its manifest digest.
fn push_busybox(server: &Server, work: &Path, repo: &str, message: &str, size: u64) -> String {
    push_busybox_echo(server, work, USER, repo, message, (7, size))
}

#[test]
fn remote_builders_build_and_a_killed_builder_loses_its_job_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        tmp.path(),
        "workers = 0\nexecutor = \"remote\"\nlease_secs = 3\nclaim_wait_secs = 2\nmax_attempts = 5\nretry_delay_secs = 0",
    );
    let admin = Creds::of(ADMIN);
    let first = create_builder_token(&server, &admin, "host-a", &["linux/amd64"], tmp.path());
    let second = create_builder_token(&server, &admin, "host-b", &["linux/amd64"], tmp.path());

    // Enough layer that the build is surely still running when its builder is killed.
    let digest = push_busybox(
        &server,
        tmp.path(),
        "alice/remote",
        "hello-from-a-builder",
        96 << 20,
    );
    let s = status(&server, &digest);
    assert_eq!(s["state"], "queued", "no builder runs yet: {s}");

    let mut a = BuilderProcess::start(&server, &first, &tmp.path().join("a"), &[]);
    let s = wait_for(&server, &digest, "claimed by host-a", |s| {
        s["state"] == "building" && s["builder"].as_str().unwrap_or("").contains("host-a")
    });
    assert_eq!(s["attempts"], 1, "{s}");
    a.kill9();
    let killed = a.log_text();

    let b = BuilderProcess::start(&server, &second, &tmp.path().join("b"), &[]);
    let s = wait_for(&server, &digest, "ready", |s| s["state"] == "ready");
    assert_eq!(s["attempts"], 2, "the killed attempt and host-b's: {s}");
    assert!(
        s["builder"].as_str().unwrap_or("").contains("host-b"),
        "host-b completed the job: {s}\n--- host-a (killed) ---\n{killed}\n--- host-b ---\n{}",
        b.log_text()
    );
    assert!(
        !log_lines(
            &server,
            &["re-queued 1 SIF builds whose worker stopped responding"]
        )
        .is_empty(),
        "the lease reaper did not re-queue host-a's job"
    );

    let r = sif_as_alice(&server, "alice/remote:1");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    check_runnable_sif(
        "remote",
        &r.body,
        tmp.path(),
        &["/bin/busybox", "/data/random.bin"],
        "hello-from-a-builder\n",
    );
    // The enroot image the builder uploaded before the SIF is served with it.
    let e = sif_as_alice(&server, "alice/remote:1/enroot");
    assert_eq!(e.status, StatusCode::OK, "{}", e.describe());
    assert_eq!(
        &e.body[..4],
        b"hsqs",
        "the remote enroot image is no squashfs"
    );

    // Every builder action is in the audit trail under the builder's name.
    let audit = fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    let by = |user: &str, action: &str| {
        audit.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            v["user"] == user && v["action"] == action && v["auth"] == "builder"
        })
    };
    for (user, action) in [
        ("host-a", "build.start"),
        ("host-a", "builder.fetch"),
        ("host-b", "build.start"),
        ("host-b", "builder.fetch"),
        ("host-b", "builder.upload"),
        ("host-b", "build.end"),
    ] {
        assert!(
            by(user, action),
            "no {action} record by {user} in the audit trail"
        );
    }
    drop(b);
}

/// A one-file image (no ELF, so its SIF's architecture is the config's `arch`), uploaded blob
/// by blob as alice; its manifest digest.
fn push_plain_image(server: &Server, repo: &str, arch: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello.txt"), unique("hello")).unwrap();
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(dir.path())
        .args(["-cf", "-", "hello.txt"])
        .output()
        .expect("tar");
    assert!(out.status.success());
    let layer = out.stdout;
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
    }))
    .unwrap();
    crate::support::notify::push_image_as(server, &Creds::of(USER), repo, "1", &config, &layer)
}

/// A credential refused: 401, or 429 once its use as a password (Basic) counted as enough
/// failed logins.
fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS
}

/// The admin's view of job `id`.
fn job(server: &Server, id: i64) -> Value {
    let r = send(
        "GET",
        &server.url("/admin/builds"),
        &Auth::Basic(&Creds::of(ADMIN)),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no job {id}"))
}

/// A dishonest upload: what it is, the part uploaded (`sif`, `enroot`), its bytes, the digest
/// claimed for them (`None`: their own), and what the refusal must say.
type Dishonest = (
    &'static str,
    &'static str,
    Vec<u8>,
    Option<String>,
    &'static str,
);

#[test]
fn uploads_are_verified_and_builders_are_confined() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        tmp.path(),
        "workers = 0\nexecutor = \"remote\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nlease_secs = 30\nclaim_wait_secs = 1\nmax_attempts = 10\nretry_delay_secs = 0",
    );
    let admin = Creds::of(ADMIN);
    let arm_token = create_builder_token(&server, &admin, "arm-host", &["linux/arm64"], tmp.path());
    let liar_token = create_builder_token(&server, &admin, "liar", &["linux/amd64"], tmp.path());

    // The amd64 job is queued first; the arm64 builder still takes only the arm64 one.
    let amd = push_plain_image(&server, "alice/amd", "amd64");
    let arm = push_plain_image(&server, "alice/arm", "arm64");
    let mut honest =
        BuilderProcess::start(&server, &arm_token, &tmp.path().join("arm"), &["--once"]);
    let until = Instant::now() + BUILD_DEADLINE;
    let exit = loop {
        if let Some(exit) = honest.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "builder --once still running");
        thread::sleep(POLL);
    };
    assert!(
        exit.success(),
        "builder --once: {exit}\n{}",
        honest.log_text()
    );
    let s = status(&server, &arm);
    assert_eq!(s["state"], "ready", "{s}");
    let s = status(&server, &amd);
    assert_eq!(
        s["state"], "queued",
        "the arm64 builder left the amd64 job alone: {s}"
    );
    let r = sif_as_alice(&server, &arm);
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    let arm_sif = r.body;

    // A builder asking for a platform its credential does not name is refused.
    let liar = RawBuilder::new(&server, &liar_token, "raw-1");
    let r = liar.claim(&["linux/arm64"]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.describe());

    // Five dishonest uploads (three SIFs, two enroot images), each refused with the builder
    // named; the job is re-queued.
    let cases: [Dishonest; 5] = [
        (
            "wrong bytes",
            "sif",
            b"these are not the bytes".to_vec(),
            Some(sha256_digest(b"other")),
            "hashes to",
        ),
        (
            "not a SIF",
            "sif",
            b"plain text, correctly hashed".to_vec(),
            None,
            "not a SIF",
        ),
        (
            "wrong architecture",
            "sif",
            arm_sif.clone(),
            None,
            "built for arm64",
        ),
        (
            "enroot image of wrong bytes",
            "enroot",
            b"these are not the bytes".to_vec(),
            Some(sha256_digest(b"other")),
            "sent an unusable enroot image: the uploaded enroot image hashes to",
        ),
        (
            "enroot image that is no squashfs",
            "enroot",
            b"plain text, correctly hashed".to_vec(),
            None,
            "sent an unusable enroot image: it is not a squashfs image (no hsqs magic)",
        ),
    ];
    for (attempt, (what, part, bytes, claimed, why)) in cases.into_iter().enumerate() {
        let claimed = claimed.unwrap_or_else(|| sha256_digest(&bytes));
        let job_json = liar.claim_job(&["linux/amd64"], 20);
        assert_eq!(job_json["image"], amd.as_str(), "{job_json}");
        assert_eq!(job_json["attempt"], attempt as i64 + 1, "{job_json}");
        let id = job_json["job"].as_i64().unwrap();
        if attempt == 0 {
            // The job's own blobs and nothing else.
            let config = job_json["config"]["digest"].as_str().unwrap();
            let r = liar.blob(id, config);
            assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
            assert_eq!(sha256_digest(&r.body), config);
            let other = sif_as_alice(&server, &format!("{arm}/status"));
            assert_eq!(other.status, StatusCode::OK);
            let arm_sif_digest = sha256_digest(&arm_sif);
            for foreign in [arm_sif_digest.as_str(), arm.as_str(), amd.as_str()] {
                let r = liar.blob(id, foreign);
                assert_eq!(
                    r.status,
                    StatusCode::NOT_FOUND,
                    "{foreign}: {}",
                    r.describe()
                );
            }
            // Another instance of the same builder does not hold the lease.
            let other = RawBuilder::new(&server, &liar_token, "raw-2");
            assert_eq!(other.heartbeat(id).status, StatusCode::CONFLICT);
            assert_eq!(liar.heartbeat(id).status, StatusCode::NO_CONTENT);
        }
        let r = liar.upload_part(id, part, &claimed, bytes);
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            r.describe()
        );
        let text = r.text();
        assert!(
            text.contains("liar") && text.contains(why),
            "{what}: {text}"
        );
        let j = job(&server, id);
        assert_eq!(
            j["state"], "queued",
            "{what}: re-queued for another builder: {j}"
        );
        let failure = j["failure"].as_str().unwrap_or("");
        assert!(
            failure.contains("builder liar") && failure.contains(why),
            "{what}: {j}"
        );
    }
    assert_ne!(status(&server, &amd)["state"], "ready");

    // A builder credential passes no other route.
    let token = fs::read_to_string(&liar_token).unwrap().trim().to_owned();
    let bearer = Auth::Bearer(&token);
    let as_basic = Creds::new("liar", &token);
    for (method, path) in [
        ("GET", "/v2/".to_owned()),
        ("GET", "/v2/_catalog".to_owned()),
        ("GET", "/v2/alice/amd/tags/list".to_owned()),
        ("GET", format!("/v2/alice/amd/manifests/{amd}")),
        ("POST", "/v2/liar/x/blobs/uploads/".to_owned()),
        ("POST", "/v2/alice/amd/blobs/uploads/".to_owned()),
        ("GET", "/sif/alice/amd:1".to_owned()),
        ("GET", "/admin/builds".to_owned()),
        ("GET", "/admin/builders".to_owned()),
        ("GET", "/admin/users".to_owned()),
    ] {
        for auth in [&bearer, &Auth::Basic(&as_basic)] {
            let r = send(method, &server.url(&path), auth, None);
            assert!(
                refused(r.status),
                "{method} {path} with {auth:?}: {}",
                r.describe()
            );
        }
    }
    let r = send(
        "GET",
        &server.url("/token?service=x&scope=repository:alice/amd:pull"),
        &Auth::Basic(&as_basic),
        None,
    );
    assert!(refused(r.status), "/token: {}", r.describe());
    // … and a user's (even an admin's) is not a builder credential.
    for creds in [Creds::of(USER), Creds::of(ADMIN)] {
        let r = send(
            "POST",
            &server.url("/builder/v1/claim"),
            &Auth::Basic(&creds),
            Some(("application/json", br#"{"instance":"x"}"#.to_vec())),
        );
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{}: {}",
            creds.user,
            r.describe()
        );
    }
    // A revoked credential stops working at once.
    let r = send(
        "DELETE",
        &server.url("/admin/builders/liar"),
        &Auth::Basic(&admin),
        None,
    );
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.describe());
    assert_eq!(liar.claim(&[]).status, StatusCode::UNAUTHORIZED);
}
