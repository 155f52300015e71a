//! Batch scripts (issue 13, points 4 and 5) against the real server, as alice and bob on a
//! "login node" (the real `hpc-registry script|lint` run as the host users, authenticated with
//! MUNGE): the generator takes the site's templates from the server, every generated script
//! passes `sbatch --test-only` on the real one-node Slurm cluster and is lint-clean; the lint
//! reports each image as the caller sees it (ready, failed, another user's private image said
//! exactly like a missing one).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::Instant;

use reqwest::StatusCode;

use crate::support::node::*;
use crate::support::sif::BUILD_DEADLINE;
use crate::support::slurm::SlurmCluster;
use crate::support::users::*;
use crate::support::*;

/// Polls `/sif/<reference>/status` as `creds` until its state is `want`.
fn wait_state(server: &Server, creds: &Creds, reference: &str, want: &str) {
    let until = Instant::now() + BUILD_DEADLINE;
    loop {
        let r = send(
            "GET",
            &server.url(&format!("/sif/{reference}/status")),
            &Auth::Basic(creds),
            None,
        );
        assert_eq!(r.status, StatusCode::OK, "{reference}: {}", r.describe());
        let state = r.json()["state"].as_str().unwrap_or_default().to_owned();
        if state == want {
            return;
        }
        assert!(
            Instant::now() < until && (state == "queued" || state == "building"),
            "{reference} is {state}, not {want}: {}\n{}",
            r.describe(),
            server.log()
        );
        thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs `hpc-registry ARGS` as `user` on the node with `envs`; (status, stdout, stderr).
fn as_user(
    node: &Node,
    user: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let out = node.run_as(user, args, envs);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn lint_reports_each_image_as_its_caller_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "[farm]\nmax_attempts = 1\n");
    let server = munge_server(&["--config", &config]);
    let node = Node::new(&server);
    let (alice, bob) = (Creds::of("alice"), Creds::of("bob"));
    push_alice_image(&server, "alice/tool:1", &["/bin/true"], 0);
    // Random "layers" that are no tar: their builds fail.
    push_as(&server, &alice, "alice/broken", "1");
    push_as(&server, &bob, "bob/private", "1");
    wait_state(&server, &alice, "alice/tool:1", "ready");
    wait_state(&server, &alice, "alice/broken:1", "failed");
    wait_state(&server, &bob, "bob/private:1", "failed");

    let script = "#!/bin/bash\n\
#SBATCH --time=1h\n\
#SBATCH --comment=\"hpc-registry: alice/tool:1 alice/broken:1\"\n\
hpc-registry run alice/tool:1 -- true\n\
hpc-registry run alice/broken:1\n\
hpc-registry run bob/private:1\n\
hpc-registry run alice/nothing:1\n";
    let work = node.scratch("lint");
    let file = work.join("job.sbatch");
    fs::write(&file, script).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let f = file.display().to_string();

    let (code, stdout, stderr) = as_user(&node, "alice", &["lint", "--no-test-only", &f], &[]);
    assert_eq!(code, Some(1), "alice's lint: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let prefixes: Vec<String> = lines
        .iter()
        .map(|l| l.split(": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    assert_eq!(
        prefixes,
        [
            format!("{f}:2: error[E-time]"),
            format!("{f}:3: error[E-image-failed]"),
            format!("{f}:5: error[E-image-failed]"),
            format!("{f}:6: error[E-image-unknown]"),
            format!("{f}:7: error[E-image-unknown]"),
        ],
        "alice's findings:\n{stdout}\n{stderr}"
    );
    // Another user's private image reads exactly like one that does not exist.
    assert_eq!(
        lines[3].replace("bob/private:1", "X"),
        lines[4]
            .replace("alice/nothing:1", "X")
            .replace(":7:", ":6:"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("alice/broken:1") && lines[2].contains("failed to build"),
        "{stdout}"
    );

    // bob sees his own image (failed) and nothing of alice's; from standard input, as JSON.
    let mut cmd = node.command_as("bob", &["lint", "--no-test-only", "--json", "-"], &[]);
    let out = run_with_stdin(&mut cmd, script);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let found: Vec<(u64, String)> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["file"], "stdin", "{v}");
            (
                v["line"].as_u64().unwrap(),
                v["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect: Vec<(u64, String)> = [
        (2, "E-time"),
        (3, "E-image-unknown"),
        (3, "E-image-unknown"),
        (4, "E-image-unknown"),
        (5, "E-image-unknown"),
        (6, "E-image-failed"),
        (7, "E-image-unknown"),
    ]
    .iter()
    .map(|(l, c)| (*l, c.to_string()))
    .collect();
    assert_eq!(found, expect, "bob's findings: {}", text(&out.stdout));

    // Offline: only what the script itself shows.
    let (code, stdout, _) = as_user(
        &node,
        "alice",
        &["lint", "--offline", "--no-test-only", &f],
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(":2: error[E-time]"), "{stdout}");
}

/// Templates that fit the test cluster's one node (2 CPUs, 2000 MB, partition `debug`, two
/// count-only GPUs).
const FITTING_TEMPLATES: &str = r#"
[[ui.templates]]
name = "small"
cpus = 1
memory = "500M"
time = "10"

[[ui.templates]]
name = "medium"
partition = "debug"
cpus = 2
memory = "1G"
time = "30:00"

[[ui.templates]]
name = "large"
cpus = 2
memory = "1900M"
time = "1-00"

[[ui.templates]]
name = "gpu"
cpus = 2
memory = "1G"
time = "01:00:00"
gres = "gpu:1"
"#;

#[test]
fn generated_scripts_pass_sbatch_test_only_and_lint_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), FITTING_TEMPLATES);
    let server = munge_server(&["--config", &config]);
    let node = Node::new(&server);
    let cluster = SlurmCluster::start_with_gpus(2);
    push_alice_image(&server, "alice/tool:1", &["/bin/true"], 0);
    wait_state(&server, &Creds::of("alice"), "alice/tool:1", "ready");

    // The templates come from the server, to an authenticated caller only.
    let r = send(
        "GET",
        &server.url("/api/jobscript/templates"),
        &Auth::None,
        None,
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.describe());
    let r = send(
        "GET",
        &server.url("/api/jobscript/templates"),
        &Auth::Basic(&Creds::of("bob")),
        None,
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(
        r.json()["templates"][1]["partition"],
        "debug",
        "{}",
        r.describe()
    );

    let out_dir = cluster.out_dir();
    let slurm_conf = format!("{}", out_dir.parent().unwrap().join("slurm.conf").display());
    let sbatch_env = [("SLURM_CONF", slurm_conf.as_str())];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "small",
            vec!["--template", "small", "--", "echo", "hello $USER"],
        ),
        (
            "medium",
            vec![
                "--template",
                "medium",
                "--mail-user",
                "alice@example.org",
                "--array",
                "0-3%2",
            ],
        ),
        ("large", vec!["--template", "large", "--bind", "/var/tmp"]),
        (
            "gpu",
            vec!["--template", "gpu", "--gpus", "2", "--", "nvidia-smi"],
        ),
        (
            "gpu-fast",
            vec![
                "--template",
                "gpu",
                "--fast-storage",
                "--input",
                "/var/tmp/in",
                "--result",
                "out",
                "--job-name",
                "train",
                "--",
                "python",
                "train.py",
                "--task=$SLURM_ARRAY_TASK_ID",
            ],
        ),
    ];
    for (name, extra) in cases {
        let path = out_dir.join(format!("{name}.sbatch"));
        let p = path.display().to_string();
        let mut args = vec!["script", "--image", "alice/tool:1", "-o", &p];
        args.extend(extra);
        let (code, stdout, stderr) = as_user(&node, "alice", &args, &[]);
        assert_eq!(code, Some(0), "script {name}: {stdout}\n{stderr}");
        assert!(
            !stderr.contains("built-in templates"),
            "{name} fell back: {stderr}"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "{name} is not read-only");
        let text = fs::read_to_string(&path).unwrap();
        if name.starts_with("gpu") {
            assert!(
                text.contains("#SBATCH --gres=gpu:2\n") || text.contains("#SBATCH --gres=gpu:1\n"),
                "{text}"
            );
            assert!(text.contains(" --nv "), "{text}");
        }
        if name == "medium" {
            assert!(text.contains("#SBATCH --partition=debug\n"), "{text}");
        }

        let out = run_output(
            cluster
                .command("runuser")
                .args(["-u", "alice", "--", "sbatch", "--test-only"])
                .arg(&path),
        );
        assert!(
            out.status.success(),
            "sbatch --test-only {name}: {}\n{text}\n{}",
            text_of(&out.stderr),
            cluster.logs()
        );
        // The lint (with its own sbatch --test-only) finds nothing to say.
        let (code, stdout, stderr) = as_user(&node, "alice", &["lint", &p], &sbatch_env);
        assert_eq!(code, Some(0), "lint {name}: {stdout}\n{stderr}\n{text}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "lint {name}: {stdout}");
        assert!(
            lines[0].starts_with(&format!(
                "{p}: info[sbatch-test-only]: sbatch --test-only accepts it"
            )),
            "{stdout}"
        );
    }
    // A script Slurm refuses: the lint says what sbatch said, and fails.
    let refused = out_dir.join("refused.sbatch");
    fs::write(
        &refused,
        "#!/bin/bash\n#SBATCH --cpus-per-task=64\nhpc-registry run alice/tool:1\n",
    )
    .unwrap();
    fs::set_permissions(&refused, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, _) = as_user(
        &node,
        "alice",
        &["lint", refused.to_str().unwrap()],
        &sbatch_env,
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error[sbatch-test-only]: sbatch --test-only refuses it"),
        "{stdout}"
    );

    // Without a reachable registry: the built-in templates, with a note.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = as_user(
        &node,
        "alice",
        &["script", "--image", "alice/tool:1", "--template", "large"],
        &[("HPC_REGISTRY_URL", closed.as_str())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("built-in templates"), "{stderr}");
    assert!(stdout.contains("#SBATCH --mem=128G\n"), "{stdout}");
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[test]
fn a_bad_template_in_the_config_stops_the_server_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[[ui.templates]]\nname = \"week\"\ncpus = 4\nmemory = \"8GB\"\ntime = \"7-00\"\n",
    );
    let out = run_output(
        std::process::Command::new(SERVER_BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config", &config])
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    );
    assert!(!out.status.success());
    let stderr = text_of(&out.stderr);
    assert!(
        stderr.contains("\"week\"") && stderr.contains("memory") && stderr.contains("8GB"),
        "{stderr}"
    );
}
