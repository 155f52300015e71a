//! Remote builders for the farm tests: builder credentials made with the real CLI through the
//! admin API, the real `hpc-registry builder` as a separate process, and a test-only raw client
//! of the `/builder/v1` protocol (to play a builder that lies).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::users::{cli, send, Auth, Creds};
use super::{spawn_managed, Reply, Server, SERVER_BIN};

/// `hpc-registry builder-token create NAME --platform P… --server URL` as admin `admin`; the
/// credential, written to `dir/NAME.token` (0600).
pub fn create_builder_token(
    server: &Server,
    admin: &Creds,
    name: &str,
    platforms: &[&str],
    dir: &Path,
) -> PathBuf {
    let path = dir.join(format!("{name}.token"));
    let url = server.base_url();
    let mut args = vec!["builder-token", "create", name, "--server", url.as_str()];
    for p in platforms {
        args.extend(["--platform", p]);
    }
    let token = cli(
        &args,
        &[
            ("HPC_REGISTRY_USER", admin.user.as_str()),
            ("HPC_REGISTRY_PASSWORD", admin.secret.as_str()),
        ],
        "",
    );
    let token = token.trim();
    assert!(
        token.starts_with("hpcb_"),
        "builder-token create printed {token:?}"
    );
    fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// The real `hpc-registry builder` against `server`, its stderr in `log`.
pub struct BuilderProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl BuilderProcess {
    pub fn start(
        server: &Server,
        token_file: &Path,
        work: &Path,
        extra: &[&str],
    ) -> BuilderProcess {
        fs::create_dir_all(work).unwrap();
        let log = work.join("builder.log");
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("builder")
            .arg("--server")
            .arg(server.base_url())
            .arg("--token-file")
            .arg(token_file)
            .arg("--work-dir")
            .arg(work)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = spawn_managed(cmd, libc::SIGKILL).expect("start hpc-registry builder");
        BuilderProcess { child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BuilderProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A raw client of the builder protocol with one builder credential and instance.
pub struct RawBuilder {
    pub base: String,
    pub token: String,
    pub instance: String,
}

impl RawBuilder {
    pub fn new(server: &Server, token_file: &Path, instance: &str) -> RawBuilder {
        RawBuilder {
            base: server.base_url(),
            token: fs::read_to_string(token_file).unwrap().trim().to_owned(),
            instance: instance.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn job_url(&self, job: i64, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        self.url(&format!(
            "/builder/v1/jobs/{job}/{rest}{sep}instance={}",
            self.instance
        ))
    }

    /// `POST /builder/v1/claim` for `platforms`; the reply.
    pub fn claim(&self, platforms: &[&str]) -> Reply {
        let body = json!({"instance": self.instance, "platforms": platforms});
        send(
            "POST",
            &self.url("/builder/v1/claim"),
            &Auth::Bearer(&self.token),
            Some(("application/json", body.to_string().into_bytes())),
        )
    }

    /// Claims until a job comes (the server long-polls), at most `tries` times.
    pub fn claim_job(&self, platforms: &[&str], tries: usize) -> Value {
        for _ in 0..tries {
            let r = self.claim(platforms);
            match r.status.as_u16() {
                200 => return r.json(),
                204 => continue,
                _ => panic!("claim: {}", r.describe()),
            }
        }
        panic!("no job to claim after {tries} claims");
    }

    pub fn blob(&self, job: i64, digest: &str) -> Reply {
        send(
            "GET",
            &self.job_url(job, &format!("blobs/{digest}")),
            &Auth::Bearer(&self.token),
            None,
        )
    }

    pub fn upload(&self, job: i64, claimed_digest: &str, bytes: Vec<u8>) -> Reply {
        self.upload_part(job, "sif", claimed_digest, bytes)
    }

    /// `PUT /builder/v1/jobs/JOB/PART?digest=…`: `sif` or `enroot`.
    pub fn upload_part(&self, job: i64, part: &str, claimed_digest: &str, bytes: Vec<u8>) -> Reply {
        send(
            "PUT",
            &self.job_url(job, &format!("{part}?digest={claimed_digest}")),
            &Auth::Bearer(&self.token),
            Some(("application/octet-stream", bytes)),
        )
    }

    pub fn heartbeat(&self, job: i64) -> Reply {
        send(
            "POST",
            &self.job_url(job, "heartbeat"),
            &Auth::Bearer(&self.token),
            None,
        )
    }
}
