//! The shared harness of the integration suite.
//!
//! * [`Server`]: the real `hpc-registry serve` binary on a loopback port, with its own data directory,
//!   its log captured to a file, kill -9 / restart, and RSS readings from `/proc`.
//! * [`docker()`]: one private `dockerd` per test binary (vfs, no bridge, no iptables), per
//!   /work/shared/docs/real-peers.md.
//! * [`run`] / [`require_tool`]: run a real program, fail loudly with its output; a missing tool fails the
//!   test with the Debian package to install (never a silent skip).
//! * [`busybox_oci_layout`]: a runnable busybox-static image built with umoci.
//! * HTTP helpers over `reqwest::blocking` ([`http`], [`push_blob`], [`put_manifest`], ...), digests and
//!   deterministic, streamable test data ([`PatternReader`]).
//!
//! Every child process the harness starts is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so nothing outlives the test binary even when it is killed.
#![allow(dead_code)]

pub mod builder;
mod data;
mod docker;
mod http;
mod image;

pub use data::*;
#[allow(unused_imports)]
pub use docker::{docker, Dockerd};
pub use http::*;
pub use image::*;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Path of the server binary built by cargo for this test binary.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_hpc-registry");

/// How long a server may take to print its "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Child processes that die with the test binary
// ---------------------------------------------------------------------------------------------

type SpawnRequest = (Command, libc::c_int, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that it receives `deathsig` when the test binary exits (however it exits).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, so every child is forked
/// from one thread that lives as long as the process.
pub fn spawn_managed(cmd: Command, deathsig: libc::c_int) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, sig, reply) in rx {
                    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn harness-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, deathsig, reply_tx))
        .expect("harness spawner thread is gone");
    reply_rx.recv().expect("harness spawner thread is gone")
}

// ---------------------------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------------------------

/// Which Debian package provides each tool the suite runs.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "docker" | "dockerd" | "containerd" | "runc" => "docker.io",
        "skopeo" => "skopeo",
        "umoci" => "umoci",
        "podman" => "podman",
        "buildah" => "buildah",
        "busybox" => "busybox-static",
        _ => "the package that provides it",
    }
}

/// Full path of `tool` on PATH, or None.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fails the test (never skips) when `tool` is not installed, naming the Debian package to install.
pub fn require_tool(tool: &str) -> PathBuf {
    match find_tool(tool) {
        Some(p) => p,
        None => panic!(
            "`{tool}` is not installed: install the Debian package `{}` \
             (apt-get install -y --no-install-recommends {}; see /work/shared/docs/real-peers.md)",
            package_of(tool),
            package_of(tool)
        ),
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` to completion and returns its output whatever the exit status (fails only when the
/// program cannot be started at all, e.g. not installed).
pub fn run_output(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if !program.contains('/') {
        require_tool(&program);
    }
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run `{}`: {e}", describe(cmd)),
    }
}

/// Runs `cmd`, panics with the command line, stdout and stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = run_output(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` and expects it to FAIL; returns its stderr (panics with the output if it succeeded).
pub fn run_fail(cmd: &mut Command) -> String {
    let out = run_output(cmd);
    if out.status.success() {
        panic!(
            "command unexpectedly succeeded: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// A running `hpc-registry serve` on 127.0.0.1 with a port chosen by the kernel.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    port: u16,
    args: Vec<String>,
    data_dir: PathBuf,
    /// Owns the data directory when the harness made it.
    _data_tmp: Option<TempDir>,
    /// Holds the log file (kept apart from the data directory).
    _log_tmp: TempDir,
    log_path: PathBuf,
    log_file: Arc<Mutex<File>>,
    starts: u32,
}

impl Server {
    /// `serve --dev` on a fresh temporary data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Like [`Server::start`] with extra `serve` arguments (e.g. `["--max-manifest-bytes", "1024"]`).
    pub fn start_with(extra_args: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("hpcreg-data-")
            .tempdir()
            .expect("create temp data dir");
        let data_dir = tmp.path().to_path_buf();
        Self::start_inner(data_dir, Some(tmp), extra_args)
    }

    /// `serve --dev` on a data directory the caller owns (it is not removed on drop).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Self::start_inner(data_dir.to_path_buf(), None, extra_args)
    }

    fn start_inner(data_dir: PathBuf, data_tmp: Option<TempDir>, extra_args: &[&str]) -> Server {
        let log_tmp = tempfile::Builder::new()
            .prefix("hpcreg-log-")
            .tempdir()
            .expect("create temp log dir");
        let log_path = log_tmp.path().join("server.log");
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create server log");
        let mut server = Server {
            child: None,
            pid: 0,
            port: 0,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            data_dir,
            _data_tmp: data_tmp,
            _log_tmp: log_tmp,
            log_path,
            log_file: Arc::new(Mutex::new(log_file)),
            starts: 0,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.starts += 1;
        {
            let mut f = self.log_file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "=== harness: start #{} of {SERVER_BIN} ===", self.starts);
        }
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--dev")
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let cmd_line = describe(&cmd);
        let mut child = spawn_managed(cmd, libc::SIGKILL).unwrap_or_else(|e| {
            panic!("cannot start {cmd_line}: {e} (did `cargo build` make the binary?)")
        });
        let pid = child.id();
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_log_reader(stdout, "out", self.log_file.clone(), port_tx.clone());
        spawn_log_reader(stderr, "err", self.log_file.clone(), port_tx);

        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout)
                | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the reader threads drain what the process printed before it died.
                thread::sleep(Duration::from_millis(200));
                if let Ok(port) = port_rx.try_recv() {
                    // It printed the line and then exited: report that as the failure it is.
                    panic!(
                        "server exited ({status}) right after listening on port {port}: {cmd_line}\n--- server log ---\n{}",
                        self.log()
                    );
                }
                panic!(
                    "server exited ({status}) before printing `listening on http://127.0.0.1:PORT`: {cmd_line}\n--- server log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not print `listening on http://127.0.0.1:PORT` within {START_TIMEOUT:?}: {cmd_line}\n--- server log ---\n{}",
                    self.log()
                );
            }
        };
        self.child = Some(child);
        self.pid = pid;
        self.port = port;
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base_url() + path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// `127.0.0.1:PORT`, the registry host for docker/skopeo/podman references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Path the committed blob `digest` ("sha256:...") has in the data directory.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on unix
            let _ = child.wait();
            let mut f = self.log_file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "=== harness: kill -9 {} ===", self.pid);
        }
    }

    /// SIGTERM the server and wait (up to 30 s, then SIGKILL) for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let mut f = self.log_file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "=== harness: terminated {} ===", self.pid);
        }
    }

    /// Starts the server again on the same data directory (kills it first if it still runs).
    /// The port usually changes: use `base_url()`/`host()` again afterwards.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_else(|e| {
                panic!(
                    "read /proc/{}/status: {e}\n--- server log ---\n{}",
                    self.pid,
                    self.log()
                )
            });
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix(field) {
                let rest = rest.trim_start_matches(':').trim();
                let num = rest.split_whitespace().next().unwrap_or("0");
                return num
                    .parse()
                    .unwrap_or_else(|_| panic!("bad {field} line: {line}"));
            }
        }
        panic!("no {field} in /proc/{}/status", self.pid)
    }

    /// Current resident set size (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// Peak resident set size since the process started (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM")
    }

    /// Current anonymous resident memory (RssAnon: heap, stacks, anonymous mappings; no file
    /// pages) in KiB.
    pub fn anon_rss_kib(&self) -> u64 {
        self.proc_status_kib("RssAnon")
    }

    /// Everything the server printed so far (all starts), stdout and stderr interleaved.
    pub fn log(&self) -> String {
        if let Ok(f) = self.log_file.lock() {
            let _ = (&*f).flush();
        }
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Path of the captured log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            eprintln!(
                "--- server log ({} of {} lines, data dir {}) ---\n{}\n--- end of server log ---",
                tail.len(),
                lines.len(),
                self.data_dir.display(),
                tail.join("\n")
            );
        }
    }
}

/// Reads `pipe` line by line into the log file; reports the port of the first
/// `listening on http://127.0.0.1:PORT` line.
fn spawn_log_reader<R: Read + Send + 'static>(
    pipe: R,
    stream: &'static str,
    log: Arc<Mutex<File>>,
    port_tx: mpsc::Sender<u16>,
) {
    thread::Builder::new()
        .name(format!("server-log-{stream}"))
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            let mut sent = false;
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = strip_ansi(&String::from_utf8_lossy(&buf));
                {
                    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = f.write_all(line.as_bytes());
                    if !line.ends_with('\n') {
                        let _ = f.write_all(b"\n");
                    }
                }
                if !sent {
                    if let Some(port) = parse_listening_port(&line) {
                        sent = true;
                        let _ = port_tx.send(port);
                    }
                }
            }
        })
        .expect("spawn log reader thread");
}

/// Removes ANSI escape sequences (colour codes) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `... listening on http://127.0.0.1:PORT ...` → PORT
fn parse_listening_port(line: &str) -> Option<u16> {
    const NEEDLE: &str = "listening on http://127.0.0.1:";
    let at = line.find(NEEDLE)? + NEEDLE.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let after = &rest[end..];
    // The address ends with whitespace, the end of the line, or a path slash.
    if !(after.is_empty() || after.starts_with(char::is_whitespace) || after.starts_with('/')) {
        return None;
    }
    rest[..end].parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod harness_self_tests {
    use super::*;

    #[test]
    fn harness_parses_listening_line() {
        assert_eq!(
            parse_listening_port("2025-01-01T00:00:00Z  INFO hpc_registry: listening on http://127.0.0.1:40123 data=/x"),
            Some(40123)
        );
        assert_eq!(
            parse_listening_port("listening on http://127.0.0.1:5000"),
            Some(5000)
        );
        assert_eq!(
            parse_listening_port("listening on http://127.0.0.1:5000\n"),
            Some(5000)
        );
        assert_eq!(
            parse_listening_port("listening on http://127.0.0.1:0"),
            None
        );
        assert_eq!(
            parse_listening_port("listening on http://127.0.0.1:50x"),
            None
        );
        assert_eq!(strip_ansi("\u{1b}[2mlistening\u{1b}[0m on"), "listening on");
    }
}

pub mod cluster;
pub mod node;
pub mod notify;
pub mod oci;
pub mod sif;
pub mod slurm;
pub mod users;
