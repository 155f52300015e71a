//! Builds as Slurm jobs (issue 11 point 3) on the real one-node Slurm cluster: with
//! `[farm] executor = "slurm"` a pushed image is built by an `sbatch` job running
//! `hpc-registry builder --once` with a one-job credential (Slurm's own `scontrol show job` and
//! the job's output show it ran), and the SIF is ready and runs; a build whose Slurm job is
//! `scancel`ed is noticed, re-queued and completed by a new Slurm job; the one-job credentials
//! are revoked when their jobs end.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::sif::*;
use crate::support::slurm::SlurmCluster;
use crate::support::users::*;
use crate::support::*;

const USER: &str = "alice";
const ADMIN: &str = "ops";

fn status(server: &Server, reference: &str) -> Value {
    let r = send(
        "GET",
        &server.url(&format!("/sif/{reference}/status")),
        &Auth::Basic(&Creds::of(USER)),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    r.json()
}

fn push(server: &Server, work: &Path, repo: &str, message: &str, extra: u64) -> String {
    push_busybox_echo(server, work, USER, repo, message, (11, extra))
}

/// The Slurm job ids the server submitted for `digest`'s build job, from its log.
fn submissions(server: &Server, job: i64) -> Vec<String> {
    log_lines(server, &["SIF build submitted as a Slurm job"])
        .iter()
        .filter(|l| log_field(l, "job").as_deref() == Some(&job.to_string()))
        .filter_map(|l| log_field(l, "slurm_job"))
        .collect()
}

fn wait_until<T>(what: &str, server: &Server, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + BUILD_DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "not {what} after {BUILD_DEADLINE:?}\n--- server log ---\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The id of the build job of image `digest`, from the admin's `/admin/builds`.
fn job_id(server: &Server, digest: &str) -> Option<i64> {
    let v = send(
        "GET",
        &server.url("/admin/builds"),
        &Auth::Basic(&Creds::of(ADMIN)),
        None,
    )
    .json();
    v["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["image"] == digest)?["id"]
        .as_i64()
}

fn job_state(cluster: &SlurmCluster, slurm_job: &str) -> String {
    let info = run(cluster.command("scontrol").args(["show", "job", slurm_job]));
    info.split_whitespace()
        .find_map(|kv| kv.strip_prefix("JobState="))
        .unwrap_or("UNKNOWN")
        .to_owned()
}

#[test]
fn builds_run_as_slurm_jobs_and_a_cancelled_one_is_retried() {
    let cluster = SlurmCluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[farm]\nexecutor = \"slurm\"\nlease_secs = 5\nmax_attempts = 5\nretry_delay_secs = 0\nclaim_wait_secs = 2\n\
             [farm.slurm]\ncpus = 1\nmemory = \"400M\"\ntime_limit = \"15:00\"\nreconcile_secs = 1\nslurm_conf = \"{}\"\npartition = \"debug\"\n",
            cluster.conf_path().display()
        ),
    )
    .unwrap();
    let setup = Setup::new().user(USER, &[]).user(ADMIN, &["--admin"]);
    let server = Server::start_secure(&setup, &["--config", config.to_str().unwrap()]);

    // Push → a Slurm job builds it → ready, and runs.
    let digest = push(&server, tmp.path(), "alice/slurm", "hello-from-slurm", 0);
    let s = wait_until("ready", &server, || {
        let s = status(&server, &digest);
        (s["state"] == "ready").then_some(s)
    });
    let job = job_id(&server, &digest).expect("the build job");
    let slurm_jobs = submissions(&server, job);
    assert_eq!(
        slurm_jobs.len(),
        1,
        "one Slurm job for the build: {slurm_jobs:?}"
    );
    let slurm_job = &slurm_jobs[0];
    assert!(
        s["builder"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("slurm-job{job}-")),
        "the one-job credential's builder holds the job: {s}"
    );
    let state = wait_until("COMPLETED in Slurm", &server, || {
        let st = job_state(&cluster, slurm_job);
        (st == "COMPLETED").then_some(st)
    });
    assert_eq!(state, "COMPLETED");
    let outputs: Vec<_> = fs::read_dir(server.data_dir().join("slurm"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(&format!(".{slurm_job}.out")))
        .collect();
    assert_eq!(outputs.len(), 1, "the Slurm job's output file");
    let out = fs::read_to_string(&outputs[0]).unwrap();
    assert!(
        out.contains(&format!("hpc-registry build job {job}")) && out.contains("accepted"),
        "the Slurm job's output: {out}"
    );
    let r = send(
        "GET",
        &server.url("/sif/alice/slurm:1"),
        &Auth::Basic(&Creds::of(USER)),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    check_runnable_sif(
        "slurm",
        &r.body,
        tmp.path(),
        &["/bin/busybox"],
        "hello-from-slurm\n",
    );
    // Its one-job credential went with the job.
    let builders = wait_until("the credential revoked", &server, || {
        let v = send(
            "GET",
            &server.url("/admin/builders"),
            &Auth::Basic(&Creds::of(ADMIN)),
            None,
        )
        .json();
        let list = v["builders"].as_array().cloned().unwrap_or_default();
        list.is_empty().then_some(list)
    });
    assert!(builders.is_empty());

    // scancel the next build's Slurm job: noticed, re-queued, built by a second Slurm job.
    let digest = push(
        &server,
        tmp.path(),
        "alice/cancelled",
        "hello-after-scancel",
        64 << 20,
    );
    let job = wait_until("queued", &server, || job_id(&server, &digest));
    let first = wait_until("submitted", &server, || {
        submissions(&server, job).first().cloned()
    });
    run(cluster.command("scancel").arg(&first));
    let s = wait_until("ready after the scancel", &server, || {
        let s = status(&server, &digest);
        (s["state"] == "ready").then_some(s)
    });
    let all = submissions(&server, job);
    assert!(
        all.len() >= 2,
        "a new Slurm job after the scancel: {all:?}\n{s}"
    );
    assert_eq!(job_state(&cluster, &first), "CANCELLED");
    assert!(
        !log_lines(&server, &[&format!("Slurm job {first} ended CANCELLED")]).is_empty(),
        "the server did not notice the cancelled Slurm job\n{}",
        server.log()
    );
    let r = send(
        "GET",
        &server.url("/sif/alice/cancelled:1"),
        &Auth::Basic(&Creds::of(USER)),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
}
