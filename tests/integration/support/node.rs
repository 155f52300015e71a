//! Harness of the compute-node tests (`compute_node.rs`): the real `hpc-registry fetch|run|cache`
//! run as the unprivileged host users alice and bob (`runuser`), against the real server with
//! MUNGE, with a node cache in a fresh directory; and the registry's own audit trail to count
//! downloads (`sif.fetch` records).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use super::users::*;
use super::*;

/// The binary under test and the repository's `deploy/` tree, copied once per test process into
/// a directory every host user can traverse: the tests run them as alice and bob, and must not
/// depend on the permissions of the checkout (a clone below a 0700 directory is unreadable to
/// them). Removed when the test binary exits.
fn shared_copy() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    extern "C" fn remove_at_exit() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let dir = PathBuf::from(format!("/var/tmp/hpcreg-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("shared test dir");
        std::fs::copy(SERVER_BIN, dir.join("bin/hpc-registry")).expect("copy the binary");
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&deploy)
            .arg(dir.join("deploy"))
            .status()
            .expect("cp deploy/");
        assert!(status.success(), "cannot copy {}", deploy.display());
        let status = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .expect("chmod");
        assert!(
            status.success(),
            "cannot open {} to every user",
            dir.display()
        );
        // SAFETY: registers a plain function; it only removes a directory.
        unsafe {
            libc::atexit(remove_at_exit);
        }
        dir
    })
}

/// The binary under test, where every host user can run it.
pub fn user_bin() -> PathBuf {
    shared_copy().join("bin/hpc-registry")
}

/// A file of the repository's `deploy/` tree, where every host user can read it.
pub fn user_deploy(path: &str) -> PathBuf {
    shared_copy().join("deploy").join(path)
}

/// A node: a cache root that every user may use, and the registry's URL.
pub struct Node {
    pub url: String,
    root: TempDir,
}

impl Node {
    pub fn new(server: &Server) -> Node {
        let root = tempfile::Builder::new()
            .prefix("hpcreg-node-")
            .tempdir_in("/var/tmp")
            .expect("node temp dir");
        // Like /var/tmp: every user may create the cache root in it (the first fetch does).
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        Node {
            url: server.base_url(),
            root,
        }
    }

    /// The cache root (made by the first fetch, 1777).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    /// A scratch directory of the node that every user may write.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
        dir
    }

    /// `hpc-registry ARGS` as host user `user`, with the node's client settings and `envs`.
    pub fn command_as(&self, user: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "env", "-i"])
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .arg(format!(
                "HOME={}",
                self.root.path().join(format!("home-{user}")).display()
            ))
            .arg(format!("HPC_REGISTRY_URL={}", self.url))
            .arg(format!(
                "HPC_REGISTRY_CACHE_DIR={}",
                self.cache_dir().display()
            ))
            .arg("HPC_REGISTRY_CLIENT_CONFIG=/dev/null")
            .arg("RUST_BACKTRACE=0");
        for (k, v) in envs {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(user_bin()).args(args);
        cmd
    }

    /// Runs `hpc-registry ARGS` as `user`; the output whatever the status.
    pub fn run_as(&self, user: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
        run_output(&mut self.command_as(user, args, envs))
    }

    /// `fetch ARGS` as `user` inside a (pretend) Slurm job, which must succeed; returns the
    /// printed path and stderr.
    pub fn fetch_ok(&self, user: &str, args: &[&str]) -> (PathBuf, String) {
        let mut all = vec!["fetch"];
        all.extend_from_slice(args);
        let out = self.run_as(user, &all, &[("SLURM_JOB_ID", "4242")]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "hpc-registry {all:?} as {user} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            out.status
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout must be the path alone: {stdout:?}");
        (PathBuf::from(lines[0]), stderr)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sha256 digest of a file, streamed.
pub fn file_digest(path: &Path) -> String {
    hash_reader(std::fs::File::open(path).unwrap()).unwrap().0
}

/// The `sif.fetch` records of the server's audit trail, once they stop changing (the server
/// writes its records from a queue, a moment after the response).
pub fn sif_fetches(server: &Server) -> Vec<Value> {
    let mut seen = read_sif_fetches(server);
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let now = read_sif_fetches(server);
        if now.len() == seen.len() {
            return now;
        }
        seen = now;
    }
    seen
}

/// The `sif.fetch` records as of now (read offline: the query takes no lock).
fn read_sif_fetches(server: &Server) -> Vec<Value> {
    let dir = server.data_dir().display().to_string();
    let out = cli(
        &[
            "admin",
            "audit",
            "--data-dir",
            &dir,
            "--action",
            "sif.fetch",
            "--json",
        ],
        &[],
        "",
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("audit JSON line"))
        .collect()
}

/// A secure server with MUNGE on, alice and bob as registry users with their host uids.
pub fn munge_server(extra_args: &[&str]) -> Server {
    ensure_munged();
    let alice = ensure_host_user("alice").to_string();
    let bob = ensure_host_user("bob").to_string();
    let mut args = vec!["--munge"];
    args.extend_from_slice(extra_args);
    Server::start_secure(
        &Setup::new()
            .user("alice", &["--uid", &alice])
            .user("bob", &["--uid", &bob]),
        &args,
    )
}

/// Pushes a runnable busybox image (running `cmd`) as alice, with one more incompressible layer
/// of `extra_bytes` when non-zero, so that downloads take a while.
pub fn push_alice_image(server: &Server, dest: &str, cmd: &[&str], extra_bytes: u64) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", cmd);
    if extra_bytes > 0 {
        super::sif::add_big_random_layer(&layout, "1", fresh_seed(), extra_bytes);
    }
    push_alice_layout(server, dest, &layout);
}

/// Pushes the image tagged `1` of the OCI layout at `layout` as alice.
pub fn push_alice_layout(server: &Server, dest: &str, layout: &Path) {
    let alice = Creds::of("alice");
    run(super::sif::skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", alice.user, alice.secret),
        "--format",
        "oci",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/{dest}", server.host()),
    ]));
}
