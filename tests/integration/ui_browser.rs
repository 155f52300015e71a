//! The web UI in a real browser: Debian's headless Chromium driven by Selenium
//! (tests/browser/ui_flows.py) against the real server, for the flows of issue 13: alice logs
//! in, watches her image's SIF turn ready, copies the run line, generates a `gpu` script with
//! fast storage and downloads it (which the real test Slurm cluster then accepts with
//! `sbatch --test-only`, submitted as alice), and lints a broken script; bob sees nothing of
//! hers; an admin retries a failed build. The browser also takes the README's screenshots (`scripts/screenshots.sh`
//! writes them into docs/screenshots; otherwise they go to a temporary directory).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::slurm::SlurmCluster;
use crate::support::users::*;
use crate::support::*;

const IMAGE: &str = "alice/ui-tool:1";

/// A broken batch script and the lines lint must flag (1-based).
const BROKEN: &str = "#!/bin/bash
#SBATCH --job-name=broken
#SBATCH --time=25:99:00
#SBATCH --memory=4G
#SBATCH --gres=gpu:1
scp login:/home/alice/tool.sif .
hpc-registry run alice/ui-tool:1 -- python3 train.py
";
const BROKEN_LINES: [u64; 4] = [3, 4, 5, 6];

fn wait_job_state(server: &Server, admin: &Creds, repo: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = send(
            "GET",
            &server.url(&format!("/admin/builds?state={state}")),
            &Auth::Basic(admin),
            None,
        );
        let jobs = r.json()["jobs"].as_array().cloned().unwrap_or_default();
        if let Some(j) = jobs.into_iter().find(|j| j["repository"] == repo) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "no {state} job for {repo}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn screenshots_dir(tmp: &Path) -> PathBuf {
    match std::env::var_os("HPCR_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => tmp.join("screenshots"),
    }
}

#[test]
fn researcher_and_admin_flows_in_headless_chromium() {
    // Debian's Python, which has Debian's python3-selenium (a pyenv or venv python3 on PATH
    // would not).
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.is_file(),
        "/usr/bin/python3 is not installed: run scripts/install-test-deps.sh"
    );
    for tool in ["chromium", "chromedriver"] {
        assert!(
            find_tool(tool).is_some(),
            "`{tool}` is not installed: run scripts/install-test-deps.sh (chromium chromium-driver python3-selenium)"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    // One attempt: the broken image fails at once, for the admin to retry. The site's `gpu`
    // template fits the test cluster's one node (2 CPUs, 2000 MB, one GPU).
    std::fs::write(
        &config,
        "[farm]\nmax_attempts = 1\n\n[[ui.templates]]\nname = \"small\"\ncpus = 1\n\
         memory = \"500M\"\ntime = \"00:10:00\"\n\n[[ui.templates]]\nname = \"gpu\"\n\
         cpus = 2\nmemory = \"1G\"\ntime = \"00:30:00\"\ngres = \"gpu:1\"\n",
    )
    .unwrap();
    let setup = Setup::new()
        .user("alice", &[])
        .user("bob", &[])
        .user("boss", &["--admin"]);
    let server = Server::start_secure(&setup, &["--config", config.to_str().unwrap()]);
    let (alice, boss) = (Creds::of("alice"), Creds::of("boss"));
    // First an image whose layer is no tar: its build fails at once, for the admin to retry.
    push_as(&server, &alice, "alice/broken", "1");
    let failed = wait_job_state(&server, &boss, "alice/broken", "failed");
    let failed_id = failed["id"].as_i64().expect("job id");
    // Then a runnable one with 48 MiB more to convert, so that its SIF is still being built
    // when alice opens its page (the browser starts right away) and she sees it turn ready.
    crate::support::node::push_alice_image(&server, IMAGE, &["sh", "-c", "echo hello"], 48 << 20);

    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let broken = work.path().join("broken.sbatch");
    std::fs::write(&broken, BROKEN).unwrap();
    let shots = screenshots_dir(work.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui_flows.py");
    let started = Instant::now();
    let out = run_output(
        Command::new(python)
            .arg(&script)
            .env("UI_BASE", server.base_url())
            .env("UI_IMAGE", IMAGE)
            .env("UI_DOWNLOADS", &downloads)
            .env("UI_SCREENSHOTS", &shots)
            .env(
                "UI_PASSWORDS",
                "alice=alice-password,bob=bob-password,boss=boss-password",
            )
            .env("UI_BROKEN_SCRIPT", &broken)
            .env("UI_FAILED_JOB", failed_id.to_string()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser flows failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server log ---\n{}",
        out.status,
        server.log()
    );
    eprintln!("browser flows took {:?}", started.elapsed());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("JSON");
    let text = |k: &str| seen[k].as_str().unwrap_or_default().to_owned();

    eprintln!(
        "the SIF was {:?} when alice opened the page; flows: {}s, {}s, {}s",
        text("first_state"),
        seen["alice_flows_secs"],
        seen["bob_flows_secs"],
        seen["admin_flows_secs"]
    );
    // alice: her image, its SIF turning ready, the copy lines.
    assert_eq!(seen["alice_home_lists_image"], true, "{seen}");
    assert!(text("sif_digest").starts_with("sha256:"), "{seen}");
    let run_line = format!("hpc-registry run {IMAGE}");
    assert_eq!(text("run_field"), run_line);
    assert_eq!(text("clipboard"), run_line, "the clipboard: {seen}");
    assert_eq!(
        text("pull_line"),
        format!("apptainer pull oras://{}/{IMAGE}.sif", server.host())
    );
    assert_eq!(
        text("pyxis_line"),
        format!("srun --container-image={IMAGE}")
    );

    // The generator: a read-only gpu script with fast storage, downloaded as shown.
    let generated = text("generated");
    assert_eq!(seen["script_readonly"], true);
    for want in ["--gres=gpu:1", "--nv", "rsync", "hpc-registry run", IMAGE] {
        assert!(generated.contains(want), "{want} missing:\n{generated}");
    }
    let downloaded = std::fs::read_to_string(text("download")).expect("downloaded script");
    assert_eq!(
        downloaded.trim_end(),
        generated.trim_end().replace("\r\n", "\n")
    );
    // The downloaded script, submitted by alice to the test suite's real Slurm cluster (its
    // one node has 2 CPUs, 2000 MB and a GPU, which the site's gpu template fits): Slurm
    // accepts it as it is.
    ensure_host_user("alice");
    let cluster = SlurmCluster::start_with_gpus(1);
    let submitted = cluster.out_dir().join("ui-gpu.sbatch");
    std::fs::copy(text("download"), &submitted).expect("copy the downloaded script");
    std::fs::set_permissions(&submitted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_output(
        cluster
            .command("runuser")
            .args(["-u", "alice", "--", "sbatch", "--test-only"])
            .arg(&submitted),
    );
    assert!(
        out.status.success(),
        "sbatch --test-only refused the downloaded gpu script: {}\n{downloaded}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    // sbatch --test-only answers on stderr: "Job N to start at … using C processors on nodes …".
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to start at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice_images: Vec<String> = serde_json::from_value(seen["alice_generator_images"].clone())
        .expect("alice's generator images");
    assert!(alice_images.iter().any(|i| i == IMAGE), "{alice_images:?}");

    // lint marks the bad lines.
    let flagged: Vec<u64> = serde_json::from_value(seen["lint_flagged_lines"].clone()).unwrap();
    for line in BROKEN_LINES {
        assert!(flagged.contains(&line), "line {line} not flagged: {seen}");
    }
    assert!(
        !flagged.contains(&1) && !flagged.contains(&2),
        "{flagged:?}"
    );

    // bob: nothing of alice's, in lists, by URL or in the generator.
    assert!(!text("bob_home").contains("alice"), "{seen}");
    assert_eq!(text("bob_image_page"), text("bob_missing_page"));
    assert!(text("bob_image_page").starts_with("404"), "{seen}");
    let bob_images = seen["bob_generator_images"].to_string();
    assert!(!bob_images.contains("alice"), "{bob_images}");

    // The admin retried the failed build: the queue took it back, and the trail says who.
    assert!(text("admin_failed_row").contains("alice/broken"), "{seen}");
    assert!(
        text("admin_notice").contains(&format!("job {failed_id}")),
        "{seen}"
    );
    let r = send(
        "GET",
        &server.url("/admin/audit?action=build.retry"),
        &Auth::Basic(&boss),
        None,
    );
    let retries = r.json();
    assert!(
        retries
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["user"] == "boss")),
        "{retries}"
    );
    for name in ["image", "generator", "lint"] {
        assert!(shots.join(format!("{name}.png")).is_file(), "no {name}.png");
    }
}
