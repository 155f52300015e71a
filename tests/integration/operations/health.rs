//! `/healthz` and `/readyz` in both states, on the real server.

use super::{get_text, start_with_config};
use crate::support::Server;

#[test]
fn healthz_and_readyz_answer_200_when_every_condition_holds() {
    let server = Server::start();
    let (status, body) = get_text(&server, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Ready once the farm's workers run, which they start just after the listener.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = get_text(&server, "/readyz");
        if status == 200 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 200, "/readyz: {body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "ready", "{body}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("database: ok: writable")),
        "{body}"
    );
    assert!(lines.iter().any(|l| l.starts_with("disk: ok: ")), "{body}");
    assert!(lines.iter().any(|l| l.starts_with("farm: ok: ")), "{body}");
}

/// No build worker: the registry serves pulls (alive) but would never build a SIF (not ready).
#[test]
fn readyz_is_503_with_the_reason_when_no_build_worker_is_alive() {
    let (server, _dir, _) = start_with_config("[farm]\nworkers = 0\n");
    let (status, body) = get_text(&server, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_text(&server, "/readyz");
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(
        body.contains("farm: FAIL: no build worker alive (0 configured in [farm] workers)"),
        "{body}"
    );
    // Only the farm fails: the other conditions are reported as holding.
    assert!(body.contains("database: ok: writable"), "{body}");
    assert!(body.contains("disk: ok: "), "{body}");
}

/// A threshold above what the filesystem can have free: not ready, and the body says why.
#[test]
fn readyz_is_503_with_the_reason_when_free_disk_space_is_below_the_threshold() {
    let (server, _dir, _) = start_with_config("[health]\nmin_free = \"1000000TiB\"\n");
    let (status, body) = get_text(&server, "/readyz");
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    let disk = body
        .lines()
        .find(|l| l.starts_with("disk: "))
        .unwrap_or_default();
    assert!(
        disk.starts_with("disk: FAIL: only ") && disk.contains("[health] min_free"),
        "{body}"
    );
    assert!(body.contains("farm: ok: "), "{body}");
    // The probe says nothing about where the data lives.
    assert!(
        !body.contains(server.data_dir().to_str().unwrap()),
        "{body}"
    );
}

#[test]
fn an_invalid_health_threshold_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[health]\nmin_free = \"lots\"\n").unwrap();
    let data = dir.path().join("data");
    let out = crate::support::run_output(
        std::process::Command::new(crate::support::SERVER_BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--dev", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[health] min_free") && err.contains("\"lots\" is not a size"),
        "{err}"
    );
}
