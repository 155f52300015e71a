//! The shipped systemd units pass `systemd-analyze verify` (no warning at all) and rate `OK` or
//! better in `systemd-analyze security`; the server tells a `$NOTIFY_SOCKET` it opened that it is
//! ready, then pings the watchdog.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const UNITS: [&str; 4] = [
    "hpc-registry.service",
    "hpc-registry-builder.service",
    "hpc-registry-cache-clean.service",
    "hpc-registry-cache-clean.timer",
];

/// The units as shipped, with the binary path pointed at the one cargo built (verify checks
/// that `ExecStart` is executable).
fn units_in(dir: &Path) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    for unit in UNITS {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        std::fs::write(
            dir.join(unit),
            text.replace("/usr/local/bin/hpc-registry", SERVER_BIN),
        )
        .unwrap();
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_security() {
    let analyze = require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    let out = run_output(
        Command::new(&analyze)
            .current_dir(dir.path())
            .args(["verify", "--man=no"])
            .args(UNITS.iter().map(|u| format!("./{u}"))),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys are only warnings for systemd: any output at all fails here.
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = std::fs::read_to_string(dir.path().join(unit)).unwrap();
        for key in [
            "ProtectSystem=strict",
            "NoNewPrivileges=true",
            "PrivateTmp=true",
            "ReadWritePaths=",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        assert!(
            text.lines().any(|l| l.starts_with("User=hpc-registry")),
            "{unit}: no dedicated user"
        );
        // One writable path: the unit's own data (or cache) directory, nothing else.
        let writable: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ReadWritePaths="))
            .flat_map(str::split_whitespace)
            .collect();
        assert_eq!(writable.len(), 1, "{unit}: ReadWritePaths {writable:?}");
        assert!(
            writable[0].starts_with("/var/lib/hpc-registry")
                || writable[0] == "/var/cache/hpc-registry",
            "{unit}: writes {writable:?}"
        );
        for key in [
            "ProtectHome=true",
            "PrivateDevices=true",
            "ProtectKernelTunables=true",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        // No capability, except the cache cleaner's CAP_DAC_OVERRIDE (to enter the users'
        // private caches).
        let bounding = text
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .unwrap_or_else(|| panic!("{unit}: no CapabilityBoundingSet="));
        let allowed = if *unit == "hpc-registry-cache-clean.service" {
            "CAP_DAC_OVERRIDE"
        } else {
            ""
        };
        assert_eq!(bounding, allowed, "{unit}: capabilities");
        let out = run_output(
            Command::new(&analyze)
                .current_dir(dir.path())
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(format!("./{unit}")),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let verdict = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no verdict for {unit}:\n{text}"));
        assert!(
            verdict.contains(" OK") || verdict.contains(" SAFE"),
            "{unit}: {verdict}"
        );
    }
    let server = std::fs::read_to_string(dir.path().join("hpc-registry.service")).unwrap();
    assert!(
        server.contains("Type=notify") && server.contains("WatchdogSec="),
        "{server}"
    );
}

/// Receives one datagram, or `None` after `wait`.
fn receive(socket: &UnixDatagram, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn the_server_sends_ready_then_watchdog_pings_to_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--dev", "--data-dir"])
        .arg(&data)
        .env("NOTIFY_SOCKET", &socket_path)
        // Half a second: pings every 250 ms.
        .env("WATCHDOG_USEC", "500000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_managed(cmd, libc::SIGKILL).expect("start the server");
    let started = Instant::now();
    let first = receive(&socket, Duration::from_secs(60));
    let first = first.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no notification within 60 s")
    });
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.first(), Some(&"READY=1"), "{first:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=listening on http://127.0.0.1:")),
        "{first:?}"
    );
    // Ready means ready: the port it names answers.
    let port: u16 = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("port in STATUS");
    let resp = http()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut pings = 0;
    while pings < 3 {
        match receive(&socket, Duration::from_secs(10)) {
            Some(m) if m == "WATCHDOG=1" => pings += 1,
            Some(other) => panic!("unexpected notification {other:?}"),
            None => panic!("no watchdog ping within 10 s (after {pings})"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    // A stop says STOPPING=1 before the process exits.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        match receive(&socket, Duration::from_secs(5)) {
            Some(m) => stopping = m == "STOPPING=1",
            None => break,
        }
    }
    let _ = child.wait();
    assert!(stopping, "no STOPPING=1 after SIGTERM");
}
