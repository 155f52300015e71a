//! Compute-node jobs: a real one-node Slurm cluster runs batch jobs as unprivileged users; each
//! job fetches a SIF with nothing but `munge -n`, and is authorised as its owner.

use std::path::Path;

use crate::support::slurm::SlurmCluster;
use crate::support::users::*;
use crate::support::*;

/// The batch script a researcher would write: a fresh MUNGE credential per request, polling
/// while the SIF is still being built (202), the job id sent along for the audit trail.
fn fetch_script(url: &str, sif: &Path, headers: &Path) -> String {
    format!(
        r#"#!/bin/sh
set -u
echo "user=$(id -un) job=$SLURM_JOB_ID"
i=0
while :; do
  code=$(curl -sS -o "{sif}" -D "{headers}" -w '%{{http_code}}' \
    -H "Authorization: MUNGE $(munge -n)" -H "X-Slurm-Job-Id: $SLURM_JOB_ID" "{url}")
  [ "$code" = 202 ] || break
  i=$((i + 1))
  [ "$i" -lt 600 ] || {{ echo "still building after 300 s"; exit 3; }}
  sleep 0.5
done
echo "status=$code"
[ "$code" = 200 ]
"#,
        sif = sif.display(),
        headers = headers.display(),
    )
}

#[test]
fn a_slurm_job_fetches_its_owners_sif_with_munge_and_nobody_elses() {
    let cluster = SlurmCluster::start();
    let alice_uid = ensure_host_user("alice");
    ensure_host_user("bob");
    let uid = alice_uid.to_string();
    let server = Server::start_secure(&Setup::new().user("alice", &["--uid", &uid]), &["--munge"]);
    let alice = Creds::of("alice");

    push_busybox_ok(
        &server,
        &alice,
        "alice/tool:1",
        &["/bin/sh", "-c", "echo from-slurm"],
    );
    let url = server.url("/sif/alice/tool:1");

    // alice's job, right after the push: it waits for the build, then gets the SIF.
    let out = cluster.out_dir();
    let (sif, headers) = (out.join("alice.sif"), out.join("alice.headers"));
    let job = cluster.run_job_as("alice", "alice-fetch", &fetch_script(&url, &sif, &headers));
    assert_eq!(
        job.state,
        "COMPLETED",
        "alice's job {}:\n{}\n{}",
        job.id,
        job.output,
        server.log()
    );
    assert!(
        job.output.contains(&format!("user=alice job={}", job.id)),
        "the job ran as its owner: {}",
        job.output
    );
    assert!(job.output.contains("status=200"), "{}", job.output);
    let bytes = std::fs::read(&sif).expect("the job's SIF");
    assert!(
        bytes.windows(9).take(128).any(|w| w == b"SIF_MAGIC"),
        "not a SIF ({} bytes)",
        bytes.len()
    );
    let header_text = std::fs::read_to_string(&headers).expect("the job's response headers");
    let etag = header_text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("etag")
                .then(|| v.trim().trim_matches('"').to_owned())
        })
        .expect("an ETag on the SIF response");
    assert_eq!(sha256_digest(&bytes), etag, "the SIF arrived whole");

    // bob's job asks for alice's SIF with bob's credential: refused like a missing image.
    let (sif, headers) = (out.join("bob.sif"), out.join("bob.headers"));
    let job = cluster.run_job_as("bob", "bob-fetch", &fetch_script(&url, &sif, &headers));
    assert_eq!(job.state, "FAILED", "bob's job {}:\n{}", job.id, job.output);
    assert!(job.output.contains("user=bob"), "{}", job.output);
    assert!(job.output.contains("status=404"), "{}", job.output);
}
