//! Operations: health and readiness probes, Prometheus metrics, structured logs, systemd, the
//! Ansible roles.

mod ansible;
mod health;
mod logs;
mod metrics;
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
