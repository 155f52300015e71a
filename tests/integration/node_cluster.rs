//! The compute-node commands on a real multi-node Slurm cluster on this machine
//! ([`NodeCluster`]: slurmctld and three slurmd, each node in its own network namespace with its
//! own local disk), as the unprivileged users alice and bob, against the real registry with MUNGE.
//! Downloads are counted in the registry's audit trail (one `sif.fetch` per download).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::cluster::{NodeCluster, NODES};
use crate::support::node::*;
use crate::support::sif::check_runnable_sif;
use crate::support::users::ensure_host_user;
use crate::support::*;

/// `--export=…` for a job: the site's client config, the binary on PATH, and `more`.
pub(crate) fn job_env(cluster: &NodeCluster, more: &[(&str, &Path)]) -> String {
    let mut export = format!(
        "--export=PATH={}:/usr/bin:/bin,HPC_REGISTRY_CLIENT_CONFIG={}",
        user_bin().parent().unwrap().display(),
        cluster.client_config().display()
    );
    for (k, v) in more {
        export += &format!(",{k}={}", v.display());
    }
    export
}

/// A stand-in `apptainer` (Apptainer cannot be installed here) that records its arguments, one a
/// line, in `DIR/apptainer.<node>.argv`, and says where it ran. Its first act prints the time
/// it was exec'd (`apptainer exec'd at <epoch s.ns>`), the "first command" of the start-up
/// benchmark (bench_nodes.rs).
pub(crate) fn recording_apptainer(dir: &Path) -> PathBuf {
    let path = dir.join("apptainer");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"apptainer exec'd at $(date +%s.%N)\"\nprintf '%s\\n' \"$@\" > {dir}/apptainer.$SLURMD_NODENAME.argv\necho \"apptainer ran on $SLURMD_NODENAME\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The SIFs in `user`'s cache on every node: `(node, [paths as seen from here])`.
pub(crate) fn cached_sifs(cluster: &NodeCluster, user: &str) -> Vec<(String, Vec<PathBuf>)> {
    let uid = ensure_host_user(user);
    cluster
        .node_caches()
        .into_iter()
        .map(|(node, root)| {
            let mut sifs: Vec<PathBuf> = fs::read_dir(root.join(uid.to_string()))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            sifs.retain(|p| p.extension().is_some_and(|e| e == "sif"));
            (node, sifs)
        })
        .collect()
}

/// The SIF's digest is its name in the cache: `<hex>.sif`.
pub(crate) fn named_digest(path: &Path) -> String {
    format!("sha256:{}", path.file_stem().unwrap().to_string_lossy())
}

#[test]
fn alices_job_runs_her_prefetched_image_on_its_node_and_bobs_job_is_refused() {
    let server = munge_server(&[]);
    push_alice_image(
        &server,
        "alice/tool:1",
        &["/bin/sh", "-c", "echo from-node-two"],
        0,
    );
    let cluster = NodeCluster::start(&server);
    let apptainer = recording_apptainer(&cluster.out_dir());
    let export = job_env(&cluster, &[("HPC_REGISTRY_APPTAINER", &apptainer)]);

    // The comment names the image, so the prolog on n2 fetches it (as alice) before the job.
    let script = "#!/bin/bash\n#SBATCH --comment=\"hpc-registry: alice/tool:1\"\nhpc-registry run alice/tool:1 --bind /tmp:/data -- /bin/sh -c 'echo hi'\n";
    let job = cluster.run_job_as_with("alice", "runs", script, &[&export, "--nodelist=n2"], &[]);
    let context = || format!("{}\n{}\n{}", job.output, cluster.describe(), cluster.logs());
    assert_eq!(job.state, "COMPLETED", "{}", context());
    assert!(job.output.contains("apptainer ran on n2"), "{}", context());
    assert!(
        job.output.contains("(cached)"),
        "the job's fetch was no cache hit: {}",
        context()
    );
    let argv = fs::read_to_string(cluster.out_dir().join("apptainer.n2.argv")).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(argv.len(), 7, "{argv:?}");
    assert_eq!(&argv[..3], ["exec", "--bind", "/tmp:/data"], "{argv:?}");
    assert_eq!(&argv[4..], ["/bin/sh", "-c", "echo hi"], "{argv:?}");
    let sif = Path::new(argv[3]);
    let uid = ensure_host_user("alice");
    assert_eq!(
        sif.parent().unwrap(),
        cluster.cache_root().join(uid.to_string()),
        "{argv:?}"
    );

    // The SIF is on n2's own disk (and nowhere else), intact, and it runs.
    let on_n2 = cluster.on_node("n2", sif);
    assert_eq!(file_digest(&on_n2), named_digest(sif));
    for (node, sifs) in cached_sifs(&cluster, "alice") {
        let expected = usize::from(node == "n2");
        assert_eq!(sifs.len(), expected, "{node}: {sifs:?}");
    }
    let work = tempfile::tempdir().unwrap();
    check_runnable_sif(
        "on-n2",
        &fs::read(&on_n2).unwrap(),
        work.path(),
        &["/bin/sh"],
        "from-node-two\n",
    );

    // One download: the prolog's, as alice, with MUNGE, for this job.
    let fetches = sif_fetches(&server);
    assert_eq!(fetches.len(), 1, "{fetches:#?}");
    assert_eq!(fetches[0]["user"], "alice", "{fetches:#?}");
    assert_eq!(fetches[0]["auth"], "munge", "{fetches:#?}");
    assert_eq!(fetches[0]["slurm_job_id"], job.id.as_str(), "{fetches:#?}");
    assert_eq!(fetches[0]["digest"], named_digest(sif).as_str());
    assert!(
        fetches[0]["user_agent"]
            .as_str()
            .unwrap_or_default()
            .contains("prolog"),
        "the download was not the prolog's: {fetches:#?}"
    );

    // bob's job names her image too: his prolog prefetch and his own fetch are refused, his
    // job fails with the registry's one line, and every node stays up.
    let script = "#!/bin/bash\n#SBATCH --comment=\"hpc-registry: alice/tool:1\"\nhpc-registry fetch alice/tool:1\n";
    let job = cluster.run_job_as_with("bob", "refused", script, &[&export], &[]);
    assert_eq!(job.state, "FAILED", "{}\n{}", job.output, cluster.logs());
    assert!(
        job.output.contains("alice/tool:1")
            && job.output.contains("not an image this registry holds"),
        "{}",
        job.output
    );
    for (node, sifs) in cached_sifs(&cluster, "bob") {
        assert!(sifs.is_empty(), "bob has alice's SIF on {node}: {sifs:?}");
    }
    assert_eq!(sif_fetches(&server).len(), 1, "bob downloaded something");
    cluster.wait_until_idle(NODES);
}

#[test]
fn fetch_all_nodes_puts_a_verified_copy_on_every_node_with_sbcast_or_without() {
    let server = munge_server(&[]);
    push_alice_image(&server, "alice/wide:1", &["/bin/true"], 4 << 20);
    let cluster = NodeCluster::start(&server);
    let nodes = format!("--nodes={NODES}");
    let script = "#!/bin/bash\nhpc-registry fetch --all-nodes alice/wide:1\n";

    // With sbcast: one download, broadcast, verified on every node.
    let export = job_env(&cluster, &[]);
    let job = cluster.run_job_as_with("alice", "wide", script, &[&export, &nodes], &[]);
    assert_eq!(job.state, "COMPLETED", "{}\n{}", job.output, cluster.logs());
    assert!(job.output.contains("with sbcast"), "{}", job.output);
    let digest = every_node_has_one_verified_copy(&cluster);
    let fetches = sif_fetches(&server);
    assert_eq!(
        fetches.len(),
        1,
        "sbcast, not {NODES} downloads: {fetches:#?}"
    );
    assert_eq!(fetches[0]["digest"], digest.as_str());

    // Without sbcast (a site that cannot use it): every node fetches for itself, after a
    // random pause.
    cluster.wipe_node_disks();
    let export = job_env(&cluster, &[("HPC_REGISTRY_SBCAST", Path::new("none"))]);
    let job = cluster.run_job_as_with("alice", "wide-nosbcast", script, &[&export, &nodes], &[]);
    assert_eq!(job.state, "COMPLETED", "{}\n{}", job.output, cluster.logs());
    assert!(
        job.output.contains("every node fetches for itself"),
        "{}",
        job.output
    );
    assert_eq!(every_node_has_one_verified_copy(&cluster), digest);
    // The batch node's own fetch, then the other nodes' (the batch node's second is a hit).
    let fetches = sif_fetches(&server);
    let this_job: Vec<_> = fetches
        .iter()
        .filter(|f| f["slurm_job_id"] == job.id.as_str())
        .collect();
    assert_eq!(this_job.len(), NODES, "{fetches:#?}");
}

/// Every node's cache holds alice's SIF once, named by its true digest, and no broadcast copy
/// is left unadopted; returns the digest.
pub(crate) fn every_node_has_one_verified_copy(cluster: &NodeCluster) -> String {
    let mut digests = Vec::new();
    for (node, sifs) in cached_sifs(cluster, "alice") {
        assert_eq!(sifs.len(), 1, "{node}: {sifs:?}");
        assert_eq!(file_digest(&sifs[0]), named_digest(&sifs[0]), "{node}");
        let dir = sifs[0].parent().unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "incoming" || e == "part")
            })
            .collect();
        assert!(leftovers.is_empty(), "{node}: {leftovers:?}");
        digests.push(named_digest(&sifs[0]));
    }
    digests.dedup();
    assert_eq!(
        digests.len(),
        1,
        "the nodes hold different SIFs: {digests:?}"
    );
    digests.remove(0)
}

#[test]
fn every_template_passes_sbatch_test_only_and_small_and_large_run_on_the_cluster() {
    let server = munge_server(&[]);
    push_alice_image(&server, "alice/tool:1", &["/bin/true"], 0);
    let cluster = NodeCluster::start(&server);
    // The test nodes have 2 CPUs, 2000 MB and no GPUs: the site-tunable numbers are overridden
    // at submission, as a site would tune them.
    let fit = ["--cpus-per-task=1", "--mem=500M", "--time=10"];
    let templates = user_deploy("slurm/templates");
    let mut names: Vec<PathBuf> = fs::read_dir(&templates)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for path in &names {
        let mut cmd = cluster.command("runuser");
        cmd.args(["-u", "alice", "--", "sbatch", "--test-only"])
            .args(fit);
        if path.file_stem().is_some_and(|s| s == "gpu") {
            cmd.arg("--gres=none");
        }
        let out = run_output(cmd.arg(path));
        assert!(
            out.status.success(),
            "sbatch --test-only {}: {}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
    }

    let apptainer = recording_apptainer(&cluster.out_dir());
    let export = job_env(&cluster, &[("HPC_REGISTRY_APPTAINER", &apptainer)]);
    // The templates are single-task scripts (`hpc-registry run` on the batch host; the generator
    // in src/jobscript has no node count), so each runs on one node.
    for (template, nodes) in [("small", 1), ("large", 1)] {
        let script = fs::read_to_string(templates.join(format!("{template}.sbatch"))).unwrap();
        let mut args = vec![export.clone(), format!("--nodes={nodes}")];
        args.extend(fit.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let job = cluster.run_job_as_with("alice", template, &script, &args, &[]);
        assert_eq!(
            job.state,
            "COMPLETED",
            "{template}: {}\n{}",
            job.output,
            cluster.logs()
        );
        let ran = job
            .output
            .lines()
            .filter(|l| l.starts_with("apptainer ran on "))
            .count();
        assert_eq!(ran, nodes, "{template}: {}", job.output);
    }
    // Each job ran a cached copy on its node (fetched by its prolog).
    let with_copy = cached_sifs(&cluster, "alice")
        .into_iter()
        .filter(|(_, sifs)| sifs.len() == 1)
        .count();
    assert!(with_copy >= 1, "{:?}", cached_sifs(&cluster, "alice"));
}
