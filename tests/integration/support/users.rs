//! Harness of the multi-user tests (`auth.rs`):
//!
//! * [`Server::start_secure`]: the real server WITHOUT `--dev` (authentication required), its
//!   users, groups and tokens created beforehand by the real CLI in offline mode ([`Setup`]);
//!   optionally over TLS with a throw-away CA made by the `openssl` CLI ([`TestCa`]).
//! * [`Creds`] and HTTP helpers that authenticate with Basic, Bearer or MUNGE headers.
//! * A private Docker client configuration per user ([`DockerUser`]), so logins never mix.
//! * MUNGE: munged started when it is not running (as in /work/shared/docs/real-peers.md), host
//!   users created with `useradd` when missing, credentials made with `runuser -u USER -- munge -n`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::RequestBuilder;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;

// ---------------------------------------------------------------------------------------------
// Users and the offline CLI
// ---------------------------------------------------------------------------------------------

/// A user name and password (or access token) for Basic authentication.
#[derive(Debug, Clone)]
pub struct Creds {
    pub user: String,
    pub secret: String,
}

impl Creds {
    pub fn new(user: &str, secret: &str) -> Creds {
        Creds {
            user: user.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// The password every test user gets: `<name>-password`.
    pub fn of(user: &str) -> Creds {
        Creds::new(user, &format!("{user}-password"))
    }
}

/// Runs `hpc-registry ARGS` with `stdin` fed to it; returns the output whatever the status.
pub fn cli_output(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("HPC_REGISTRY_SERVER")
        .env_remove("HPC_REGISTRY_USER")
        .env_remove("HPC_REGISTRY_PASSWORD")
        .env_remove("HPC_REGISTRY_TOKEN")
        .envs(envs.iter().copied());
    run_with_stdin(&mut cmd, stdin)
}

/// Runs `hpc-registry ARGS` and fails the test if it fails; returns stdout.
pub fn cli(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> String {
    let out = cli_output(args, envs, stdin);
    assert!(
        out.status.success(),
        "hpc-registry {args:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` with `input` on its standard input (the harness's `run` closes stdin).
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    // Written from another thread: a child that does not read stdin must not block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for child");
    let _ = writer.join();
    out
}

/// What to create in a fresh data directory before the server starts, with the offline CLI.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    /// `(name, extra args of user add)`; the password is always `<name>-password`.
    pub users: Vec<(String, Vec<String>)>,
    /// `(group, read-write members, read-only members)`.
    pub groups: Vec<(String, Vec<String>, Vec<String>)>,
}

impl Setup {
    pub fn new() -> Setup {
        Setup::default()
    }

    pub fn user(mut self, name: &str, extra: &[&str]) -> Setup {
        self.users.push((
            name.to_owned(),
            extra.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    pub fn group(mut self, name: &str, members: &[&str], read_only: &[&str]) -> Setup {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        self.groups
            .push((name.to_owned(), v(members), v(read_only)));
        self
    }

    /// Runs the CLI in offline mode on `data_dir`.
    pub fn apply(&self, data_dir: &Path) {
        let dd = data_dir.to_str().expect("utf-8 data dir");
        for (name, extra) in &self.users {
            let mut args = vec![
                "user",
                "add",
                name.as_str(),
                "--password-stdin",
                "--data-dir",
                dd,
            ];
            args.extend(extra.iter().map(String::as_str));
            cli(&args, &[], &format!("{}\n", Creds::of(name).secret));
        }
        for (group, members, read_only) in &self.groups {
            cli(&["group", "add", group, "--data-dir", dd], &[], "");
            let mut args = vec!["group", "members", group.as_str(), "--data-dir", dd];
            for m in members {
                args.extend(["--add", m.as_str()]);
            }
            for m in read_only {
                args.extend(["--add-read-only", m.as_str()]);
            }
            cli(&args, &[], "");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server without --dev
// ---------------------------------------------------------------------------------------------

impl Server {
    /// `serve` WITHOUT `--dev` on a fresh data directory prepared by `setup` (offline CLI).
    pub fn start_secure(setup: &Setup, extra_args: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("hpcreg-data-")
            .tempdir()
            .expect("create temp data dir");
        setup.apply(tmp.path());
        let log_tmp = tempfile::Builder::new()
            .prefix("hpcreg-log-")
            .tempdir()
            .expect("create temp log dir");
        let log_path = log_tmp.path().join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create server log");
        let mut server = Server {
            child: None,
            pid: 0,
            port: 0,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            data_dir: tmp.path().to_path_buf(),
            _data_tmp: Some(tmp),
            _log_tmp: log_tmp,
            log_path,
            log_file: std::sync::Arc::new(Mutex::new(log_file)),
            starts: 0,
        };
        server.spawn_secure();
        server
    }

    /// Like the harness's `spawn`, without `--dev`, accepting an `https://` listening line too.
    fn spawn_secure(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_managed(cmd, libc::SIGKILL).expect("start hpc-registry serve");
        let (tx, rx) = mpsc::channel::<u16>();
        for (pipe, name) in [
            (
                Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
                "out",
            ),
            (
                Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
                "err",
            ),
        ] {
            let (log, tx) = (self.log_file.clone(), tx.clone());
            thread::Builder::new()
                .name(format!("secure-log-{name}"))
                .spawn(move || {
                    let mut sent = false;
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        let line = strip_ansi(&line);
                        {
                            let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                            let _ = writeln!(f, "{line}");
                        }
                        if !sent {
                            if let Some(port) = parse_secure_port(&line) {
                                sent = true;
                                let _ = tx.send(port);
                            }
                        }
                    }
                })
                .expect("spawn log thread");
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            if let Ok(port) = rx.recv_timeout(Duration::from_millis(100)) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "server exited ({status}) before listening\n--- server log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "server did not start within {START_TIMEOUT:?}\n--- server log ---\n{}",
                    self.log()
                );
            }
        };
        self.pid = child.id();
        self.child = Some(child);
        self.port = port;
    }

    /// Kills the server and starts it again without `--dev` on the same data directory.
    pub fn restart_secure(&mut self) {
        self.kill9();
        self.spawn_secure();
    }

    /// Stops the server and starts it again without `--dev` on the same data directory, with
    /// `args` instead of the arguments it had.
    pub fn restart_secure_with(&mut self, args: &[&str]) {
        self.terminate();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.spawn_secure();
    }

    /// `https://127.0.0.1:PORT`
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// `listening on http[s]://127.0.0.1:PORT ...` → PORT
fn parse_secure_port(line: &str) -> Option<u16> {
    let at = line.find("listening on http")?;
    let rest = &line[at..];
    let rest = &rest[rest.find("://127.0.0.1:")? + "://127.0.0.1:".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok().filter(|p| *p != 0)
}

// ---------------------------------------------------------------------------------------------
// HTTP with credentials
// ---------------------------------------------------------------------------------------------

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth<'a> {
    None,
    Basic(&'a Creds),
    Bearer(&'a str),
    Munge(&'a str),
}

/// Adds `auth` to a request.
pub fn with_auth(req: RequestBuilder, auth: &Auth) -> RequestBuilder {
    match auth {
        Auth::None => req,
        Auth::Basic(c) => req.basic_auth(&c.user, Some(&c.secret)),
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Munge(m) => req.header("authorization", format!("MUNGE {m}")),
    }
}

/// Sends `method url` with `auth`; returns the reply whatever the status.
pub fn send(method: &str, url: &str, auth: &Auth, body: Option<(&str, Vec<u8>)>) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = with_auth(http().request(method.clone(), url), auth);
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    Reply::from(req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}")))
}

/// A client like [`http`] whose connections come from `source` (e.g. 127.0.0.2: every 127/8
/// address is loopback), so that a test can be two clients at different addresses.
pub fn http_from(source: std::net::IpAddr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .local_address(source)
        .build()
        .expect("build reqwest client")
}

/// The claims of a JWT (not verified: only to look at what was granted).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// One small OCI image pushed with credentials: its manifest and blob digests.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub repo: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config_digest: String,
    pub layer_digest: String,
}

/// Pushes a config, one random layer and a manifest tagged `tag` to `repo` as `creds` (monolithic
/// uploads); asserts every step succeeds.
pub fn push_as(server: &Server, creds: &Creds, repo: &str, tag: &str) -> Pushed {
    let auth = Auth::Basic(creds);
    let layer = random_bytes(2048);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"nonce": unique("c")}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
    }))
    .unwrap();
    for blob in [&config, &layer] {
        let digest = sha256_digest(blob);
        let r = send(
            "POST",
            &server.url(&format!("/v2/{repo}/blobs/uploads/")),
            &auth,
            None,
        );
        assert_eq!(
            r.status,
            StatusCode::ACCEPTED,
            "POST upload to {repo} as {}: {}",
            creds.user,
            r.describe()
        );
        let location = absolute(&server.base_url(), &r.header("location").expect("Location"));
        let r = send(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &auth,
            Some(("application/octet-stream", blob.to_vec())),
        );
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "PUT blob to {repo} as {}: {}",
            creds.user,
            r.describe()
        );
    }
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &config),
        &[descriptor(OCI_LAYER_TAR, &layer)],
        None,
    );
    let r = send(
        "PUT",
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        &auth,
        Some((OCI_MANIFEST, manifest.clone())),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "PUT manifest {repo}:{tag} as {}: {}",
        creds.user,
        r.describe()
    );
    Pushed {
        repo: repo.to_owned(),
        digest: sha256_digest(&manifest),
        manifest,
        config_digest: sha256_digest(&config),
        layer_digest: sha256_digest(&layer),
    }
}

/// The first error code and the message of an error reply, with `replace` substituted by `X` so
/// that errors about different digests or names can be compared for their shape.
pub fn error_shape(r: &Reply, replace: &[&str]) -> (u16, String, String) {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut message = v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for s in replace {
        message = message.replace(s, "X");
    }
    (
        r.status.as_u16(),
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        message,
    )
}

// ---------------------------------------------------------------------------------------------
// Docker, per user
// ---------------------------------------------------------------------------------------------

/// The shared Docker engine with a private client configuration (credential store) for one user.
pub struct DockerUser {
    config: TempDir,
}

impl Default for DockerUser {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerUser {
    pub fn new() -> DockerUser {
        let config = tempfile::Builder::new()
            .prefix("hpcreg-docker-cfg-")
            .tempdir()
            .unwrap();
        std::fs::write(config.path().join("config.json"), "{}\n").unwrap();
        DockerUser { config }
    }

    pub fn cmd(&self) -> Command {
        let mut c = docker().cmd();
        c.env("DOCKER_CONFIG", self.config.path());
        c
    }

    /// `docker login HOST -u USER --password-stdin`.
    pub fn login(&self, host: &str, creds: &Creds) -> Output {
        run_with_stdin(
            self.cmd()
                .args(["login", host, "-u", &creds.user, "--password-stdin"]),
            &format!("{}\n", creds.secret),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// MUNGE and host users
// ---------------------------------------------------------------------------------------------

/// Makes sure munged answers (starting it as in real-peers.md when it does not).
pub fn ensure_munged() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        for tool in ["munge", "unmunge", "munged"] {
            assert!(
                find_tool(tool).is_some() || Path::new("/usr/sbin/munged").exists(),
                "`{tool}` is not installed: install the Debian package `munge`"
            );
        }
        if munge_works() {
            return;
        }
        std::fs::create_dir_all("/run/munge").expect("create /run/munge");
        run(Command::new("chown").args(["munge:munge", "/run/munge"]));
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "munge", "--", "/usr/sbin/munged", "-F"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Left running for the rest of the test binary; it dies with it (SIGTERM).
        let child = spawn_managed(cmd, libc::SIGTERM).expect("start munged");
        std::mem::forget(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !munge_works() {
            assert!(
                Instant::now() < deadline,
                "munged did not come up within 20 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    });
}

fn munge_works() -> bool {
    let Ok(out) = Command::new("munge")
        .arg("-n")
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    out.status.success()
        && run_with_stdin(
            Command::new("unmunge").arg("-n"),
            &String::from_utf8_lossy(&out.stdout),
        )
        .status
        .success()
}

/// Creates the unprivileged host user `name` when missing; returns its uid.
pub fn ensure_host_user(name: &str) -> u32 {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let id = || {
        Command::new("id")
            .args(["-u", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    if id().is_none() {
        run(Command::new("useradd").args([
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]));
    }
    let out = id().unwrap_or_else(|| panic!("host user {name} missing after useradd"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

/// Creates host group `group` (gid >= 1000) when missing and puts `users` in it.
pub fn ensure_host_group(group: &str, users: &[&str]) {
    let exists = Command::new("getent")
        .args(["group", group])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        run(Command::new("groupadd").arg(group));
    }
    for u in users {
        ensure_host_user(u);
        run(Command::new("usermod").args(["-aG", group, u]));
    }
}

/// A fresh MUNGE credential encoded by host user `user` (`runuser -u USER -- munge -n`).
pub fn munge_credential(user: &str) -> String {
    run(Command::new("runuser").args(["-u", user, "--", "munge", "-n"]))
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A throw-away CA and a server certificate for 127.0.0.1, made with the `openssl` CLI.
pub struct TestCa {
    dir: TempDir,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-ca-")
            .tempdir()
            .unwrap();
        let p = |f: &str| dir.path().join(f);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=hpc-registry test CA",
            ])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        run(Command::new("openssl")
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.crt")));
        // A containers/image certificate directory: *.crt files are trusted CAs.
        std::fs::create_dir(p("certs.d")).unwrap();
        std::fs::copy(p("ca.crt"), p("certs.d/ca.crt")).unwrap();
        TestCa { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `--tls-cert CERT --tls-key KEY`
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("server.crt").display().to_string(),
            "--tls-key".into(),
            self.path("server.key").display().to_string(),
        ]
    }
}

/// `skopeo copy`s a fresh runnable busybox image (running `cmd`) to `<server>/<dest>` over
/// plain HTTP, authenticating as `creds` (Docker's token flow), and returns skopeo's output:
/// the caller decides whether a refusal is the point.
pub fn skopeo_push_busybox(server: &Server, creds: &Creds, dest: &str, cmd: &[&str]) -> Output {
    let tmp = tempfile::tempdir().expect("temp dir");
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", cmd);
    skopeo_copy_as(server, creds, &layout, dest)
}

/// `skopeo copy --format oci oci:LAYOUT:1 docker://<server>/<dest>` as `creds`; skopeo's output.
pub fn skopeo_copy_as(server: &Server, creds: &Creds, layout: &Path, dest: &str) -> Output {
    run_output(super::sif::skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", creds.user, creds.secret),
        "--format",
        "oci",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/{dest}", server.host()),
    ]))
}

/// [`skopeo_push_busybox`] that must succeed.
pub fn push_busybox_ok(server: &Server, creds: &Creds, dest: &str, cmd: &[&str]) {
    let out = skopeo_push_busybox(server, creds, dest, cmd);
    assert!(
        out.status.success(),
        "skopeo push to {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_https_listening_lines() {
        assert_eq!(
            parse_secure_port("INFO x: listening on https://127.0.0.1:4431 with data"),
            Some(4431)
        );
        assert_eq!(
            parse_secure_port("listening on http://127.0.0.1:80"),
            Some(80)
        );
        assert_eq!(parse_secure_port("listening on http://127.0.0.1:0"), None);
    }
}
