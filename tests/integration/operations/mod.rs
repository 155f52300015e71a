//! Operations: health and readiness probes, Prometheus metrics, structured logs, systemd,
//! online backup and restore, audit rotation, live reload, background admin jobs, the Ansible
//! roles.

mod ansible;
mod backup;
mod health;
mod jobs;
mod logs;
mod metrics;
mod reload;
mod rotation;
mod syslog;
mod systemd;

use std::path::PathBuf;

use tempfile::TempDir;

use crate::support::Server;

/// Starts `serve --dev --config FILE` with FILE holding `toml`; the directory lives as long as
/// the returned guard.
fn start_with_config(toml: &str) -> (Server, TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("hpcreg-ops-config-")
        .tempdir()
        .expect("temp config dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    let server = Server::start_with(&["--config", path.to_str().expect("utf-8 temp path")]);
    (server, dir, path)
}

/// `GET path` without credentials: (status, body).
fn get_text(server: &Server, path: &str) -> (u16, String) {
    let resp = crate::support::http()
        .get(server.url(path))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

/// The admin of [`start_dev_with_admin`], and its credentials.
const ADMIN: &str = "boss";

/// `serve --dev` (anonymous pushes) on a data directory that has an admin user `boss` (password
/// `boss-password`) for the admin API, with `toml` as its config file.
fn start_dev_with_admin(toml: &str) -> (Server, TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("hpcreg-ops-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    crate::support::users::Setup::new()
        .user(ADMIN, &["--admin"])
        .apply(&data);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).expect("write config");
    let server = Server::start_in(
        &data,
        &["--config", config.to_str().expect("utf-8 temp path")],
    );
    (server, dir, config)
}

/// `hpc-registry ARGS` (an `admin ...` command) against `server` as the admin.
fn admin_output(server: &Server, args: &[&str]) -> std::process::Output {
    let url = server.base_url();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", url.as_str()]);
    let creds = crate::support::users::Creds::of(ADMIN);
    crate::support::users::cli_output(
        &all,
        &[
            ("HPC_REGISTRY_USER", creds.user.as_str()),
            ("HPC_REGISTRY_PASSWORD", creds.secret.as_str()),
        ],
        "",
    )
}

/// Like [`admin_output`]; fails the test if the command fails; returns stdout.
fn admin_ok(server: &Server, args: &[&str]) -> String {
    let out = admin_output(server, args);
    assert!(
        out.status.success(),
        "hpc-registry {args:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-file tar layer made by the real `tar`, unique per call (so the farm builds a SIF).
fn tar_layer(work: &std::path::Path) -> Vec<u8> {
    let root = work.join(crate::support::unique("rootfs"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/motd"),
        crate::support::unique("ops test image"),
    )
    .unwrap();
    let out = crate::support::run_output(
        std::process::Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg("-")
            .arg("."),
    );
    assert!(out.status.success(), "tar failed");
    out.stdout
}

/// Sends SIGHUP to the server.
fn sighup(server: &Server) {
    // SAFETY: kill(2) on the pid of a child this test started.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {}", server.pid());
}
