//! Long admin work as background jobs against the real server: scrub, gc and prune jobs show
//! progress while they run, are resumed from their checkpoint after the server is killed, can
//! be cancelled (a GC between batches, leaving every blob it did not delete in place), and only
//! an admin's read-write credential starts or cancels them; `admin scrub|gc|prune` still start,
//! wait and print their report, or return at once with `--detach`.
//!
//! The jobs are made slow deterministically by their own rate limits (a scrub's bytes per second,
//! a GC's blob deletions per second) over a known amount of data, never by sleeping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{admin_ok, admin_output, start_dev_with_admin, ADMIN};
use crate::support::users::{send, Auth, Creds, Setup};
use crate::support::*;

/// `POST /admin/jobs` with `body` as `creds`.
fn post_job(server: &Server, creds: &Creds, body: Value) -> Reply {
    send(
        "POST",
        &server.url("/admin/jobs"),
        &Auth::Basic(creds),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    )
}

/// Starts the job `body` asks for as the admin; asserts 202.
fn start(server: &Server, body: Value) -> Value {
    let r = post_job(server, &Creds::of(ADMIN), body);
    assert_eq!(r.status, 202, "{}", r.describe());
    r.json()
}

fn start_job(server: &Server, rate: &str) -> Value {
    start(server, json!({"kind": "scrub", "rate": rate}))
}

fn job(server: &Server, id: i64) -> Value {
    serde_json::from_str(&admin_ok(
        server,
        &["admin", "jobs", &id.to_string(), "--json"],
    ))
    .unwrap()
}

/// Polls job `id` until `done(job)`; fails after `secs`.
fn wait_job(server: &Server, id: i64, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = job(server, id);
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < until, "job {id} after {secs} s: {j:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_scrub_job_shows_progress_resumes_after_a_kill_and_can_be_cancelled() {
    let (mut server, _dir, _) = start_dev_with_admin("[farm]\nworkers = 0\n");
    // 8 blobs of 1 MiB: at 1 MiB/s the scrub takes about 8 s.
    for i in 0..4 {
        push_random_image(&server, "jobs/data", &format!("t{i}"), &[1 << 20, 1 << 20]);
    }
    let started = start_job(&server, "1MiB");
    let id = started["id"].as_i64().unwrap();
    assert_eq!(started["state"], "running");
    // Progress moves while it runs, and is visible in `admin jobs`.
    let partway = wait_job(&server, id, 30, |j| {
        j["progress"]["scanned_bytes"].as_u64().unwrap_or(0) >= 2 << 20
    });
    let total = partway["progress"]["total_blobs"].as_u64().unwrap();
    assert!(total >= 12, "{partway:#}");
    assert!(
        partway["progress"]["scanned_blobs"].as_u64().unwrap() < total,
        "{partway:#}"
    );
    let listing = admin_ok(&server, &["admin", "jobs"]);
    assert!(
        listing.contains("scrub") && listing.contains("running"),
        "{listing}"
    );

    // Killed mid-way: the restarted server resumes from the checkpoint and finishes, having
    // scanned every blob exactly once.
    server.restart();
    let done = wait_job(&server, id, 60, |j| j["state"] != "running");
    assert_eq!(done["state"], "done", "{done:#}");
    assert!(
        server.log().contains("resuming a scrub job"),
        "no resume in the log"
    );
    assert_eq!(
        done["result"]["scanned_blobs"].as_u64().unwrap(),
        total,
        "{done:#}"
    );
    assert_eq!(done["result"]["corrupted"], json!([]), "{done:#}");

    // Cancelled: it stops, keeping what it found.
    let slow = start_job(&server, "256KiB");
    let id = slow["id"].as_i64().unwrap();
    wait_job(&server, id, 30, |j| !j["progress"].is_null());
    let out = admin_ok(&server, &["admin", "jobs", "cancel", &id.to_string()]);
    assert!(out.contains("cancel requested"), "{out}");
    let ended = wait_job(&server, id, 30, |j| j["state"] != "running");
    assert_eq!(ended["state"], "cancelled", "{ended:#}");
    assert!(
        ended["result"]["scanned_blobs"].as_u64().unwrap() < total,
        "{ended:#}"
    );

    // The synchronous command still prints its report (through a job it waits for).
    let out = admin_ok(&server, &["admin", "scrub"]);
    assert!(out.contains("no corrupted blobs"), "{out}");
}

/// A server for GC jobs: no grace period (unreferenced data goes at once), no background prune,
/// no builds; `ret/*` keeps its newest tag only. Users: the admin, and `carol`, who is none.
fn start_gc_server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("hpcreg-ops-gc-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    Setup::new()
        .user(ADMIN, &["--admin"])
        .user("carol", &[])
        .apply(&data);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n\n[farm]\nworkers = 0\n\
         platforms = [\"linux/s390x\"]\n\n[[retention]]\nnamespaces = \"ret/*\"\nkeep_last = 1\n",
    )
    .expect("write config");
    let server = Server::start_in(&data, &["--config", config.to_str().unwrap()]);
    (server, dir)
}

/// `n` blobs no manifest names, of distinct sizes, in `repo`: (digest, size) each.
fn loose_blobs(server: &Server, repo: &str, n: usize) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| {
            let data = random_bytes(1000 + i);
            (push_blob(server, repo, &data), data.len() as u64)
        })
        .collect()
}

/// The references of a report's actions of `kind`.
fn refs(report: &Value, kind: &str) -> BTreeSet<String> {
    report["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {report:#}"))
        .iter()
        .filter(|a| a["kind"] == kind)
        .map(|a| a["reference"].as_str().unwrap().to_owned())
        .collect()
}

fn ended(server: &Server, id: i64, secs: u64) -> Value {
    wait_job(server, id, secs, |j| j["state"] != "running")
}

fn id_of(job: &Value) -> i64 {
    job["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no job id in {job:#}"))
}

#[test]
fn gc_and_prune_jobs_run_detached_and_report_what_they_freed() {
    let (server, _dir) = start_gc_server();
    let kept = push_random_image(&server, "keep/app", "1", &[3000, 4000]);
    let loose = loose_blobs(&server, "loose/blobs", 5);

    // A detached GC: the command returns with the job, which `admin jobs ID` follows to its end.
    let started: Value =
        serde_json::from_str(&admin_ok(&server, &["admin", "gc", "--detach", "--json"])).unwrap();
    assert_eq!(started["kind"], "gc", "{started:#}");
    let id = id_of(&started);
    let done = ended(&server, id, 60);
    assert_eq!(done["state"], "done", "{done:#}");
    let report = &done["result"];
    let digests: BTreeSet<String> = loose.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(refs(report, "blob"), digests, "{report:#}");
    assert_eq!(report["blobs"], 5, "{report:#}");
    assert_eq!(
        report["bytes_freed"].as_u64().unwrap(),
        loose.iter().map(|(_, n)| n).sum::<u64>(),
        "{report:#}"
    );
    assert_eq!(report["tags"], 0, "a GC applies no retention: {report:#}");
    for (d, _) in &loose {
        assert!(!server.blob_path(d).exists(), "{d} is still on disk");
    }
    kept.assert_intact(&server);
    // The progress is the last checkpoint's: the phase it reached and what it freed.
    let progress = &done["progress"];
    assert_eq!(progress["phase"], "uploads", "{done:#}");
    assert_eq!(progress["blobs"], 5, "{done:#}");
    assert!(
        progress["examined"]["blobs"].as_u64().unwrap() >= 5,
        "{done:#}"
    );
    let listing = admin_ok(&server, &["admin", "jobs"]);
    assert!(
        listing.contains("gc") && listing.contains("done") && listing.contains("uploads:"),
        "{listing}"
    );

    // A prune: retention first. Its dry run, as a job too, plans exactly what it then does.
    let old = push_random_image(&server, "ret/app", "old", &[5000]);
    push_random_image(&server, "ret/app", "new", &[6000]);
    let plan = start(&server, json!({"kind": "prune", "dry_run": true}));
    let plan = ended(&server, id_of(&plan), 60);
    assert_eq!(plan["state"], "done", "{plan:#}");
    assert_eq!(plan["result"]["dry_run"], true, "{plan:#}");
    assert!(server.blob_path(&old.blob_digests()[1]).exists());
    let started: Value = serde_json::from_str(&admin_ok(
        &server,
        &["admin", "prune", "--detach", "--json"],
    ))
    .unwrap();
    assert_eq!(started["kind"], "prune", "{started:#}");
    let done = ended(&server, id_of(&started), 60);
    assert_eq!(done["state"], "done", "{done:#}");
    let report = &done["result"];
    for kind in ["tag", "manifest", "blob"] {
        assert_eq!(
            refs(report, kind),
            refs(&plan["result"], kind),
            "the dry run planned other {kind}s: {report:#}"
        );
    }
    assert_eq!(refs(report, "tag"), BTreeSet::from(["old".to_owned()]));
    assert_eq!(
        refs(report, "manifest"),
        BTreeSet::from([old.digest.clone()])
    );
    let old_blobs: BTreeSet<String> = old.blob_digests().into_iter().collect();
    assert_eq!(refs(report, "blob"), old_blobs, "{report:#}");
    assert_eq!(
        report["bytes_freed"].as_u64().unwrap(),
        (old.config.len() + old.layers.iter().map(Vec::len).sum::<usize>()) as u64,
        "{report:#}"
    );
    assert!(
        done["progress"]["examined"]["repositories"]
            .as_u64()
            .unwrap()
            >= 3,
        "{done:#}"
    );
    for d in &old_blobs {
        assert!(!server.blob_path(d).exists(), "{d} is still on disk");
    }
    kept.assert_intact(&server);

    // The synchronous forms wait for their job and print the report as before.
    for (args, says) in [
        (&["admin", "gc"][..], "; freed 0 bytes"),
        (&["admin", "prune", "--dry-run"][..], "; would free 0 bytes"),
    ] {
        let out = admin_output(&server, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    let r = send(
        "POST",
        &server.url("/admin/prune?dry_run=true"),
        &Auth::Basic(&Creds::of(ADMIN)),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["dry_run"], true);
}

#[test]
fn a_gc_job_is_cancelled_between_batches_and_only_admins_may_start_or_cancel_jobs() {
    let (server, _dir) = start_gc_server();
    let kept = push_random_image(&server, "keep/app", "1", &[3000]);
    // 60 blobs at 2 deletions per second: about 30 s, in batches of 2.
    let loose = loose_blobs(&server, "loose/blobs", 60);
    let job = start(&server, json!({"kind": "gc", "delete_rate": 2}));
    let id = id_of(&job);
    let partway = wait_job(&server, id, 60, |j| {
        j["progress"]["blobs"].as_u64().unwrap_or(0) >= 2
    });
    assert_eq!(partway["progress"]["phase"], "blobs", "{partway:#}");

    // One GC at a time: another is refused, naming the running job.
    for body in [json!({"kind": "gc"}), json!({"kind": "prune"})] {
        let r = post_job(&server, &Creds::of(ADMIN), body);
        assert_eq!(r.status, 409, "{}", r.describe());
        assert!(r.text().contains(&format!("job {id}")), "{}", r.describe());
    }
    let r = send(
        "POST",
        &server.url("/admin/prune"),
        &Auth::Basic(&Creds::of(ADMIN)),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.describe());

    // Neither a user who is no admin nor an admin's read-only token starts or cancels jobs.
    let carol = Creds::of("carol");
    let body = serde_json::to_vec(&json!({"scope": "read", "description": "ro"})).unwrap();
    let r = send(
        "POST",
        &server.url("/admin/tokens"),
        &Auth::Basic(&Creds::of(ADMIN)),
        Some(("application/json", body)),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let read_only = Creds::new(ADMIN, r.json()["token"].as_str().expect("token"));
    for who in [&carol, &read_only] {
        let r = post_job(&server, who, json!({"kind": "scrub"}));
        assert_eq!(r.status, 403, "{}: {}", who.user, r.describe());
        let r = send(
            "POST",
            &server.url(&format!("/admin/jobs/{id}/cancel")),
            &Auth::Basic(who),
            None,
        );
        assert_eq!(r.status, 403, "{}: {}", who.user, r.describe());
    }
    let r = send(
        "GET",
        &server.url(&format!("/admin/jobs/{id}")),
        &Auth::Basic(&read_only),
        None,
    );
    assert_eq!(
        r.status,
        200,
        "an admin's read-only token may look: {}",
        r.describe()
    );
    assert_eq!(r.json()["state"], "running", "{}", r.describe());

    // The admin cancels: the GC stops between two batches.
    let out = admin_ok(&server, &["admin", "jobs", "cancel", &id.to_string()]);
    assert!(out.contains("cancel requested"), "{out}");
    let done = ended(&server, id, 60);
    assert_eq!(done["state"], "cancelled", "{done:#}");
    let report = &done["result"];
    let deleted = refs(report, "blob");
    assert!(
        !deleted.is_empty() && deleted.len() < loose.len(),
        "{} of {} deleted: {done:#}",
        deleted.len(),
        loose.len()
    );
    assert_eq!(report["blobs"].as_u64().unwrap(), deleted.len() as u64);
    // The store is consistent: what the report names is gone, the rest is served as before.
    for (d, size) in &loose {
        if deleted.contains(d) {
            assert!(!server.blob_path(d).exists(), "{d} deleted but on disk");
        } else {
            let served = get_blob(&server, "loose/blobs", d);
            assert_eq!(served.len() as u64, *size, "{d} kept but not served whole");
        }
    }
    kept.assert_intact(&server);
    // A new GC takes the rest.
    let rest: Value = serde_json::from_str(&admin_ok(&server, &["admin", "gc", "--json"])).unwrap();
    assert_eq!(
        rest["blobs"].as_u64().unwrap() as usize,
        loose.len() - deleted.len(),
        "{rest:#}"
    );
    kept.assert_intact(&server);

    // Starting and cancelling are audited, refusals included.
    let url = server.base_url();
    let admin = Creds::of(ADMIN);
    let env = [
        ("HPC_REGISTRY_USER", admin.user.as_str()),
        ("HPC_REGISTRY_PASSWORD", admin.secret.as_str()),
    ];
    let until = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let out = crate::support::users::cli(
            &[
                "admin", "audit", "--json", "--action", "job", "--server", &url,
            ],
            &env,
            "",
        );
        let records: Vec<Value> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let has = |action: &str, user: &str, outcome: &str| {
            records
                .iter()
                .any(|r| r["action"] == action && r["user"] == user && r["outcome"] == outcome)
        };
        if (has("job.cancel", ADMIN, "ok") && has("job.cancel", "carol", "denied"))
            || Instant::now() > until
        {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let find = |action: &str, user: &str, outcome: &str| {
        records
            .iter()
            .find(|r| r["action"] == action && r["user"] == user && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {action} by {user} ({outcome}) in {records:#?}"))
    };
    for action in ["job.start", "job.cancel"] {
        assert!(
            records.iter().any(|r| r["action"] == action
                && r["user"] == ADMIN
                && r["outcome"] == "ok"
                && r["reference"] == format!("gc job {id}")),
            "no {action} of gc job {id}: {records:#?}"
        );
    }
    find("job.start", "carol", "denied");
    find("job.cancel", "carol", "denied");
    find("job.start", ADMIN, "conflict");
    let refused_read_only = records
        .iter()
        .filter(|r| r["action"] == "job.cancel" && r["outcome"] == "denied")
        .count();
    assert!(refused_read_only >= 2, "{records:#?}");
}

#[test]
fn a_gc_job_killed_or_stopped_mid_sweep_is_resumed_and_finishes() {
    let (mut server, _dir) = start_gc_server();
    let kept = push_random_image(&server, "keep/app", "1", &[3000]);
    // 40 blobs at 4 deletions per second: about 10 s.
    let loose = loose_blobs(&server, "loose/blobs", 40);
    let job = start(&server, json!({"kind": "gc", "delete_rate": 4}));
    let id = id_of(&job);
    let partway = wait_job(&server, id, 60, |j| {
        j["progress"]["blobs"].as_u64().unwrap_or(0) >= 4
    });
    let before = partway["progress"]["blobs"].as_u64().unwrap();
    assert!(before < loose.len() as u64, "{partway:#}");

    server.restart();
    let done = ended(&server, id, 120);
    assert_eq!(done["state"], "done", "{done:#}");
    assert!(
        server.log().contains("resuming a gc job"),
        "no resume in the log"
    );
    for (d, _) in &loose {
        assert!(!server.blob_path(d).exists(), "{d} is still on disk");
    }
    kept.assert_intact(&server);
    // The counts go on from the checkpoint: at least what was saved before the kill, at most
    // every blob (a batch deleted after the last checkpoint is in neither).
    let blobs = done["result"]["blobs"].as_u64().unwrap();
    assert!(
        (before..=loose.len() as u64).contains(&blobs),
        "{before} before the kill, {blobs} in the report: {done:#}"
    );
    // The resumed run lists what it deleted itself, which the checkpoint had not counted.
    let listed = refs(&done["result"], "blob").len() as u64;
    assert!(listed + before <= blobs, "{done:#}");

    // Stopped (SIGTERM) mid-way: the job pauses at its checkpoint instead of ending, and the
    // next start resumes it.
    let loose = loose_blobs(&server, "loose/more", 40);
    let id = id_of(&start(&server, json!({"kind": "gc", "delete_rate": 4})));
    wait_job(&server, id, 60, |j| {
        j["progress"]["blobs"].as_u64().unwrap_or(0) >= 4
    });
    server.terminate();
    assert!(
        server.log().contains("paused for the shutdown"),
        "the stopping server did not pause the job"
    );
    server.restart();
    let done = ended(&server, id, 120);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(
        done["result"]["blobs"], 40,
        "a pause loses no count: {done:#}"
    );
    for (d, _) in &loose {
        assert!(!server.blob_path(d).exists(), "{d} is still on disk");
    }
    kept.assert_intact(&server);
}
