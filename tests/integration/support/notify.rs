//! Harness of the notification tests: a real SMTP server ([`SmtpSink`], Python's aiosmtpd) and a
//! webhook receiver that verifies signatures ([`WebhookReceiver`]), both processes on loopback
//! started from `tests/support/*.py`, and a pusher of small buildable images.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::users::{send, Auth, Creds, TestCa};
use super::*;

/// `tests/support/NAME`.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Starts `python3 SCRIPT ARGS` and waits for its `listening on PORT` line.
fn start_python(name: &str, args: &[&str]) -> (Child, u16) {
    // Debian's interpreter, which sees the Debian packages (python3-aiosmtpd), even where another
    // python3 (pyenv) comes first on PATH.
    let python = if Path::new("/usr/bin/python3").is_file() {
        PathBuf::from("/usr/bin/python3")
    } else {
        require_tool("python3")
    };
    let mut cmd = Command::new(python);
    cmd.arg(script(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_managed(cmd, libc::SIGKILL).expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the helper's first line");
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "{name} did not start (printed {line:?}); it needs python3 and, for the SMTP \
                 sink, the Debian package python3-aiosmtpd (scripts/install-test-deps.sh)"
            )
        });
    (child, port)
}

/// A port nothing listens on now (the kernel's pick, released again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Waits up to `limit` for `found` to give something.
pub fn wait_for<T>(limit: Duration, what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = found() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The real SMTP server: every message it accepts is a file.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl SmtpSink {
    /// With `tls`, STARTTLS is offered (with `tls`'s certificate for 127.0.0.1) and required.
    pub fn start(tls: Option<&TestCa>) -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-smtp-")
            .tempdir()
            .unwrap();
        let outdir = dir.path().display().to_string();
        let mut args = vec!["--outdir".to_owned(), outdir];
        if let Some(ca) = tls {
            args.extend([
                "--cert".to_owned(),
                ca.path("server.crt").display().to_string(),
                "--key".to_owned(),
                ca.path("server.key").display().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, port) = start_python("smtp_sink.py", &args);
        SmtpSink { child, port, dir }
    }

    /// Every message received so far (with its `X-Envelope-To` lines), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// The messages whose envelope goes to `address`.
    pub fn messages_to(&self, address: &str) -> Vec<String> {
        let line = format!("X-Envelope-To: {address}\r\n");
        self.messages()
            .into_iter()
            .filter(|m| m.contains(&line))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The webhook receiver: verified events are files named by their id.
pub struct WebhookReceiver {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl WebhookReceiver {
    /// Listens on `port` (0: any), recording into `dir` (which outlives restarts).
    pub fn start(port: u16, secret_file: &Path, dir: &Path) -> WebhookReceiver {
        let port_arg = port.to_string();
        let (child, port) = start_python(
            "webhook_receiver.py",
            &[
                "--outdir",
                dir.to_str().unwrap(),
                "--secret-file",
                secret_file.to_str().unwrap(),
                "--port",
                &port_arg,
            ],
        );
        WebhookReceiver {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The verified events received, each `{"event": …, "content_type": …, "signature": …}`.
    pub fn events(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn counter(&self, name: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(name))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// Events received again under an id already seen.
    pub fn duplicates(&self) -> u64 {
        self.counter("duplicates")
    }

    /// Requests whose signature or timestamp did not verify.
    pub fn rejected(&self) -> u64 {
        self.counter("rejected")
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-file tar layer made by the real `tar`, unique per call (so its SIF builds).
fn tar_layer() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), unique("hello")).unwrap();
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(dir.path())
        .args(["-cf", "-", "hello.txt"])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar failed");
    out.stdout
}

/// Pushes a one-layer linux/amd64 image whose SIF builds; returns its manifest digest.
/// A monolithic blob upload (POST, then PUT with the digest) as `creds`, which must succeed.
pub fn upload_blob_as(server: &Server, creds: &Creds, repo: &str, blob: &[u8]) {
    let auth = Auth::Basic(creds);
    let r = send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        &auth,
        None,
    );
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let location = absolute(&server.base_url(), &r.header("location").expect("Location"));
    let url = with_query(&location, &format!("digest={}", sha256_digest(blob)));
    let r = send(
        "PUT",
        &url,
        &auth,
        Some(("application/octet-stream", blob.to_vec())),
    );
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
}

pub fn push_buildable_as(server: &Server, creds: &Creds, repo: &str, tag: &str) -> String {
    let layer = tar_layer();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
    }))
    .unwrap();
    push_image_as(server, creds, repo, tag, &config, &layer)
}

/// Pushes a one-layer OCI image (`config`, then `layer`, then its manifest) to `REPO:TAG` as
/// `creds`, each step of which must succeed; the manifest's digest.
pub fn push_image_as(
    server: &Server,
    creds: &Creds,
    repo: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
) -> String {
    for blob in [config, layer] {
        upload_blob_as(server, creds, repo, blob);
    }
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, config),
        &[descriptor(OCI_LAYER_TAR, layer)],
        None,
    );
    let r = send(
        "PUT",
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        &Auth::Basic(creds),
        Some((OCI_MANIFEST, manifest.clone())),
    );
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.describe());
    sha256_digest(&manifest)
}
