//! BENCHMARKS, not tests: every function here is `#[ignore]`d, so `cargo test` never runs them;
//! `bench/node-fanout.sh` does (`-- --ignored --nocapture --test-threads 1`) and turns the
//! `BENCH …` lines they print into bench/results/node-fanout.{raw,md} (see BENCHMARKS.md,
//! "Compute nodes: fan-out and start-up"). They run on the real multi-node cluster of the tests
//! ([`NodeCluster`]) and check only that each run did what it claims (the copies verify, the
//! downloads are counted in the audit), never how long it took.
//!
//! - Fan-out: one SIF onto all [`NODES`] nodes of an allocation, `fetch --all-nodes` (one
//!   download, `sbcast`, adopt-and-verify on every node) against every node fetching for itself
//!   at once (`srun --nodes=N hpc-registry fetch`), from empty node caches.
//! - Start-up: a one-node job's time from its first line to its first command (the stand-in
//!   `apptainer` that `hpc-registry run` execs prints when it started), cold node cache against
//!   warm.
//! - Pieces: the parts of `--all-nodes` timed one by one (`srun`, `sbcast` with a few settings, a
//!   local copy, `sha256sum`), to say what dominates.
//!
//! Times are taken inside the jobs (`date +%s.%N`) and by this driver (submission to the job's
//! end as `scontrol` reports it, polled every 250 ms). `BENCH_NODES_MIB` (default 300) sizes the
//! image's random, incompressible layer; `BENCH_NODES_REPS` (default 5) the repetitions.

use std::time::Instant;

use crate::node_cluster::{
    cached_sifs, every_node_has_one_verified_copy, job_env, named_digest, recording_apptainer,
};
use crate::support::cluster::{NodeCluster, NODES};
use crate::support::node::*;
use crate::support::slurm::JobResult;
use crate::support::*;

const IMAGE: &str = "alice/big:1";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The registry with alice's big image, its SIF built (fetched once from the host, so that no
/// measured run waits for the build), and the cluster; prints the SIF's size.
fn setup(bench: &str) -> (Server, NodeCluster, String) {
    let mib = env_number("BENCH_NODES_MIB", 300);
    let server = munge_server(&[]);
    let pushed = Instant::now();
    push_alice_image(&server, IMAGE, &["/bin/true"], mib << 20);
    let host = Node::new(&server);
    let (sif, _) = host.fetch_ok("alice", &[IMAGE]);
    let bytes = std::fs::metadata(&sif).expect("the host's copy").len();
    let digest = named_digest(&sif);
    println!(
        "BENCH info bench={bench} layer_mib={mib} sif_bytes={bytes} digest={digest} push_and_build_s={:.1}",
        pushed.elapsed().as_secs_f64()
    );
    drop(host);
    let cluster = NodeCluster::start(&server);
    (server, cluster, digest)
}

/// Submits `script` as alice and times it from here; panics with the logs unless it completed.
fn timed_job(cluster: &NodeCluster, name: &str, script: &str, args: &[&str]) -> (JobResult, f64) {
    let start = Instant::now();
    let job = cluster.run_job_as_with("alice", name, script, args, &[]);
    let driver = start.elapsed().as_secs_f64();
    assert_eq!(
        job.state,
        "COMPLETED",
        "{name}: {}\n{}\n{}",
        job.output,
        cluster.describe(),
        cluster.logs()
    );
    (job, driver)
}

/// The epoch seconds of the first line of `output` that starts with `prefix` (`PREFIX <s.ns> …`).
fn stamp(output: &str, prefix: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in the job's output:\n{output}"))
}

/// The time of the first `T <s.ns> <stderr line>` whose line contains `needle`.
fn stamp_of_line(output: &str, needle: &str) -> f64 {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("T "))
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no stderr line with {needle:?} in the job's output:\n{output}"))
}

/// The downloads (`sif.fetch` records) the registry audited for `job`.
fn downloads_of(server: &Server, job: &JobResult) -> usize {
    sif_fetches(server)
        .iter()
        .filter(|f| f["slurm_job_id"] == job.id.as_str())
        .count()
}

/// One download, `sbcast`, adopt on every node; stderr lines timestamped as they come, so the
/// phases can be told apart.
const ALL_NODES_JOB: &str = r#"#!/bin/bash
set -o pipefail
echo "T0 $(date +%s.%N)"
hpc-registry fetch --all-nodes alice/big:1 2>&1 >/dev/null | while IFS= read -r line; do echo "T $(date +%s.%N) $line"; done
rc=$?
echo "T1 $(date +%s.%N)"
exit $rc
"#;

/// Every node fetches for itself, all at once; each node says when it started and finished.
const INDEPENDENT_JOB: &str = r#"#!/bin/bash
echo "T0 $(date +%s.%N)"
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 bash -c 'a=$(date +%s.%N); hpc-registry fetch --quiet alice/big:1 >/dev/null || exit 1; echo "N $SLURMD_NODENAME $a $(date +%s.%N)"'
rc=$?
echo "T1 $(date +%s.%N)"
exit $rc
"#;

#[test]
#[ignore = "benchmark: run by bench/node-fanout.sh"]
fn bench_nodes_fanout_all_nodes_vs_independent_fetches() {
    let (server, cluster, digest) = setup("fanout");
    let export = job_env(&cluster, &[]);
    let nodes = format!("--nodes={NODES}");
    let reps = env_number("BENCH_NODES_REPS", 5);
    for rep in 1..=reps {
        // Interleaved, and the order flips every repetition.
        let mut modes = ["all-nodes", "independent"];
        if rep % 2 == 0 {
            modes.reverse();
        }
        for mode in modes {
            cluster.wipe_node_disks();
            let script = if mode == "all-nodes" {
                ALL_NODES_JOB
            } else {
                INDEPENDENT_JOB
            };
            let name = format!("fanout-{mode}-{rep}");
            let (job, driver) = timed_job(&cluster, &name, script, &[&export, &nodes]);
            let out = &job.output;
            let (t0, t1) = (stamp(out, "T0 "), stamp(out, "T1 "));
            // Sanity, not timing: a verified copy on every node, and the downloads claimed.
            assert_eq!(every_node_has_one_verified_copy(&cluster), digest, "{out}");
            let downloads = downloads_of(&server, &job);
            let mut line = format!(
                "BENCH fanout mode={mode} rep={rep} job={} job_s={:.3} driver_s={driver:.3} downloads={downloads}",
                job.id,
                t1 - t0
            );
            if mode == "all-nodes" {
                assert!(out.contains("with sbcast"), "no sbcast: {out}");
                assert_eq!(downloads, 1, "{out}");
                let fetched = stamp_of_line(out, "(downloaded)");
                let spread = stamp_of_line(out, "with sbcast");
                line += &format!(
                    " download_s={:.3} init_sbcast_s={:.3} adopt_s={:.3}",
                    fetched - t0,
                    spread - fetched,
                    t1 - spread
                );
            } else {
                assert_eq!(downloads, NODES, "{out}");
                let mut per_node: Vec<String> = out
                    .lines()
                    .filter_map(|l| l.strip_prefix("N "))
                    .map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        let (a, b): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                        format!("{}:{:.3}", f[0], b - a)
                    })
                    .collect();
                per_node.sort();
                assert_eq!(per_node.len(), NODES, "{out}");
                line += &format!(" per_node_s={}", per_node.join(","));
            }
            println!("{line}");
        }
    }
    println!("BENCH done bench=fanout");
}

#[test]
#[ignore = "benchmark: run by bench/node-fanout.sh"]
fn bench_nodes_startup_warm_vs_cold_cache() {
    let (server, cluster, digest) = setup("startup");
    let apptainer = recording_apptainer(&cluster.out_dir());
    let export = job_env(&cluster, &[("HPC_REGISTRY_APPTAINER", &apptainer)]);
    let script =
        format!("#!/bin/bash\necho \"T0 $(date +%s.%N)\"\nhpc-registry run {IMAGE} -- /bin/true\n");
    let reps = env_number("BENCH_NODES_REPS", 5);
    for rep in 1..=reps {
        // A different node each time; cold (its disk just emptied), then warm (what cold left).
        let node = &cluster.nodes()[(rep as usize - 1) % NODES];
        cluster.wipe_node_disks();
        for mode in ["cold", "warm"] {
            let name = format!("startup-{mode}-{rep}");
            let nodelist = format!("--nodelist={node}");
            let (job, driver) = timed_job(&cluster, &name, &script, &[&export, &nodelist]);
            let out = &job.output;
            let first = stamp(out, "apptainer exec'd at ") - stamp(out, "T0 ");
            assert!(out.contains(&format!("apptainer ran on {node}")), "{out}");
            let expected = if mode == "cold" {
                "(downloaded)"
            } else {
                "(cached)"
            };
            assert!(
                out.contains(expected),
                "{mode} start was not {expected}: {out}"
            );
            let downloads = downloads_of(&server, &job);
            assert_eq!(downloads, usize::from(mode == "cold"), "{out}");
            let copies = cached_sifs(&cluster, "alice")
                .into_iter()
                .find(|(n, _)| n == node)
                .map(|(_, sifs)| sifs)
                .unwrap_or_default();
            assert_eq!(copies.len(), 1, "{node}: {copies:?}");
            assert_eq!(file_digest(&copies[0]), digest, "{node}");
            println!(
                "BENCH startup mode={mode} rep={rep} node={node} job={} first_command_s={first:.3} driver_s={driver:.3} downloads={downloads}",
                job.id
            );
        }
    }
    println!("BENCH done bench=startup");
}

/// Where the time of `--all-nodes` goes, piece by piece, in one 3-node job with the SIF already
/// on the batch node: an `srun` across the nodes, `sbcast` of the SIF (default block size, and
/// larger blocks), a plain local copy of it (the shared disk's write rate), and sha256 of it on
/// one node and on every node at once (the adopt step's verification).
const PIECES_JOB: &str = r#"#!/bin/bash
set -e
sif=$(hpc-registry fetch --quiet alice/big:1)
dest=$BENCH_NODE_LOCAL/pieces
piece() { local name=$1; shift; local a; a=$(date +%s.%N); "$@" >/dev/null; echo "P $name $a $(date +%s.%N)"; }
piece srun_true srun --nodes=3 --ntasks-per-node=1 /bin/true
piece sbcast_default sbcast --force "$sif" "$dest.a"
piece sbcast_size_64m sbcast --force --size=64m "$sif" "$dest.b"
piece sbcast_fanout_1 sbcast --force --fanout=1 "$sif" "$dest.c"
piece cp_local cp "$sif" "$dest.d"
piece sha256_one_node sha256sum "$sif"
piece sha256_every_node srun --nodes=3 --ntasks-per-node=1 sha256sum "$dest.a"
"#;

#[test]
#[ignore = "benchmark: run by bench/node-fanout.sh"]
fn bench_nodes_sbcast_pieces() {
    let (_server, cluster, _digest) = setup("pieces");
    let local = cluster.node_local();
    let export = job_env(&cluster, &[("BENCH_NODE_LOCAL", &local)]);
    let nodes = format!("--nodes={NODES}");
    let reps = env_number("BENCH_NODES_REPS", 5);
    for rep in 1..=reps {
        cluster.wipe_node_disks();
        let name = format!("pieces-{rep}");
        let (job, _) = timed_job(&cluster, &name, PIECES_JOB, &[&export, &nodes]);
        for l in job.output.lines().filter_map(|l| l.strip_prefix("P ")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            println!("BENCH pieces mode={} rep={rep} s={:.3}", f[0], b - a);
        }
    }
    println!("BENCH done bench=pieces");
}
