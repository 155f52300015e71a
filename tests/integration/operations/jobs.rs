//! Scrub as a background job: progress while it runs, resumed from its checkpoint after the
//! server is killed, cancellable; `admin scrub` still starts, waits and prints its report.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{admin_ok, start_dev_with_admin, ADMIN};
use crate::support::users::{send, Auth, Creds};
use crate::support::*;

fn start_job(server: &Server, rate: &str) -> Value {
    let creds = Creds::of(ADMIN);
    let r = send(
        "POST",
        &server.url("/admin/jobs"),
        &Auth::Basic(&creds),
        Some((
            "application/json",
            serde_json::to_vec(&json!({"kind": "scrub", "rate": rate})).unwrap(),
        )),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    r.json()
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
