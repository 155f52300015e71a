//! One private Docker engine per test binary, started lazily exactly as in
//! /work/shared/docs/real-peers.md: own socket, data root and exec root, vfs storage, no bridge,
//! no iptables, no IP forwarding. It is stopped (SIGTERM, then SIGKILL) and its directory removed
//! when the test binary exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::{require_tool, run_output, spawn_managed};

pub struct Dockerd {
    root: PathBuf,
    host: String,
    config_dir: PathBuf,
    log_path: PathBuf,
    pid: u32,
    child: Mutex<Option<Child>>,
}

static DOCKERD: OnceLock<Dockerd> = OnceLock::new();

/// The shared Docker engine (started on first use). Tests sharing it must use unique image names.
pub fn docker() -> &'static Dockerd {
    DOCKERD.get_or_init(Dockerd::start)
}

extern "C" fn stop_dockerd_at_exit() {
    if let Some(d) = DOCKERD.get() {
        d.shutdown();
    }
}

impl Dockerd {
    fn start() -> Dockerd {
        require_tool("dockerd");
        require_tool("docker");
        require_tool("containerd");
        require_tool("runc");
        let root = tempfile::Builder::new()
            .prefix("hpcreg-docker-")
            .tempdir()
            .expect("create dockerd temp dir")
            .keep();
        let config_dir = root.join("client-config");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(config_dir.join("config.json"), "{}\n").unwrap();
        let socket = root.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let log_path = root.join("dockerd.log");
        let log = std::fs::File::create(&log_path).expect("create dockerd log");
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(root.join("root"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(&host)
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SIGTERM when the test binary dies: dockerd then stops its containerd too.
        let child = spawn_managed(cmd, libc::SIGTERM).expect("start dockerd");
        let pid = child.id();
        let d = Dockerd {
            root,
            host,
            config_dir,
            log_path,
            pid,
            child: Mutex::new(Some(child)),
        };
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(stop_dockerd_at_exit);
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = run_output(d.cmd().arg("info"));
            if out.status.success() {
                break;
            }
            let exited = d
                .child
                .lock()
                .unwrap()
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited || Instant::now() > deadline {
                let why = if exited {
                    "exited"
                } else {
                    "did not become ready in 90 s"
                };
                let log = d.log();
                d.shutdown();
                panic!(
                    "dockerd {why}; last `docker info` stderr:\n{}\n--- dockerd log ---\n{log}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        d
    }

    /// A `docker` command talking to this engine (DOCKER_HOST set, private client config).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config_dir)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        c
    }

    /// `unix://.../docker.sock`
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A directory private to this engine's run (removed with it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// dockerd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn shutdown(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut child) = child else { return };
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Err(_) => break,
                Ok(None) => {}
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Never recurse into something still mounted under the root.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.to_string_lossy().into_owned();
        let busy = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|mp| mp.starts_with(root.as_str()));
        if !busy {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("harness: leaving {root} in place: something is still mounted under it");
        }
    }
}
