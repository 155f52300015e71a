//! Live reload: a changed retention policy applies after SIGHUP; a broken config is refused
//! (SIGHUP and `admin reload`) while the old one stays; an open keep-alive connection survives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{admin_ok, admin_output, sighup, start_dev_with_admin, ADMIN};
use crate::support::sif::wait_log;
use crate::support::*;

const KEEP_5: &str = "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n[[retention]]\nnamespaces = \"rel/*\"\nkeep_last = 5\n";
const KEEP_1: &str = "[gc]\ngrace = \"0s\"\ninterval = \"0s\"\n[[retention]]\nnamespaces = \"rel/*\"\nkeep_last = 1\n";

fn tags(server: &Server) -> Vec<String> {
    let v: serde_json::Value = http()
        .get(server.url("/v2/rel/app/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    user_tags(
        &v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
    )
}

/// One `GET /healthz` on an open HTTP/1.1 connection; the status line.
fn get_on(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    status.trim().to_owned()
}

/// SIGHUP, then the log line saying the new configuration is in force.
fn sighup_reloaded(server: &Server) {
    sighup(server);
    wait_log(server, &["configuration reloaded"], Duration::from_secs(20));
}

/// `admin reload` refused: its standard error.
fn reload_refused(server: &Server) -> String {
    let out = admin_output(server, &["admin", "reload"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

/// `admin reload --json` accepted, `section` among what it applied: its answer.
fn reload_applying(server: &Server, section: &str) -> serde_json::Value {
    let out = admin_ok(server, &["admin", "reload", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == section),
        "{v}"
    );
    v
}

#[test]
fn sighup_applies_a_new_retention_policy_refuses_a_broken_config_and_keeps_connections() {
    let (server, _dir, config) = start_dev_with_admin(KEEP_5);
    for i in 0..3 {
        push_random_image(&server, "rel/app", &format!("v{i}"), &[100]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    admin_ok(&server, &["admin", "prune"]);
    assert_eq!(tags(&server).len(), 3, "keep_last = 5 keeps all three");

    let mut stream = TcpStream::connect(server.host()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert!(get_on(&mut stream, &mut reader).contains("200"));

    std::fs::write(&config, KEEP_1).unwrap();
    sighup_reloaded(&server);
    admin_ok(&server, &["admin", "prune"]);
    assert_eq!(tags(&server), ["v2"], "keep_last = 1 after the reload");
    // The keep-alive connection opened before the reload still serves.
    assert!(get_on(&mut stream, &mut reader).contains("200"));

    // A file that does not parse: refused, by SIGHUP and by `admin reload`, the old one stays.
    std::fs::write(&config, "[[retention]\nkeep_last = ").unwrap();
    sighup(&server);
    wait_log(
        &server,
        &["SIGHUP", "configuration refused"],
        Duration::from_secs(20),
    );
    let err = reload_refused(&server);
    assert!(
        err.contains("configuration refused") && err.contains("invalid"),
        "{err}"
    );
    // A file that parses but fails validation: refused too, naming the setting.
    std::fs::write(&config, "[gc]\ngrace = \"soon\"\n").unwrap();
    let err = reload_refused(&server);
    assert!(err.contains("soon"), "{err}");
    // Still serving, on the policy of the last good reload (keep_last = 1).
    push_random_image(&server, "rel/app", "v3", &[100]);
    admin_ok(&server, &["admin", "prune"]);
    assert_eq!(tags(&server), ["v3"]);
    assert!(get_on(&mut stream, &mut reader).contains("200"));

    // A good file again, through the admin API: what was applied, and what needs a restart.
    std::fs::write(&config, format!("{KEEP_5}[farm]\nworkers = 2\n")).unwrap();
    let v = reload_applying(&server, "retention");
    assert_eq!(v["restart_needed"], serde_json::json!(["farm"]), "{v}");
    let _ = Instant::now();
}

/// The names of the site templates the server hands `hpc-registry script` and the UI.
fn template_names(server: &Server) -> Vec<String> {
    let admin = crate::support::users::Creds::of(ADMIN);
    let r = crate::support::users::send(
        "GET",
        &server.url("/api/jobscript/templates"),
        &crate::support::users::Auth::Basic(&admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

const TINY: &str =
    "[[ui.templates]]\nname = \"tiny\"\ncpus = 1\nmemory = \"100M\"\ntime = \"00:05:00\"\n";

#[test]
fn a_reload_replaces_the_ui_templates_and_refuses_a_bad_one() {
    let (server, _dir, config) = start_dev_with_admin(TINY);
    assert_eq!(template_names(&server), ["tiny"]);

    // A new site template, by SIGHUP: the generator offers it at once.
    let two = format!(
        "{TINY}[[ui.templates]]\nname = \"wide\"\ncpus = 2\nmemory = \"1G\"\ntime = \"01:00:00\"\ngres = \"gpu:1\"\n"
    );
    std::fs::write(&config, &two).unwrap();
    sighup_reloaded(&server);
    assert_eq!(template_names(&server), ["tiny", "wide"]);

    // A template no #SBATCH line can carry: refused, naming it; the running ones stay.
    std::fs::write(
        &config,
        "[[ui.templates]]\nname = \"broken\"\ncpus = 1\nmemory = \"lots\"\ntime = \"00:05:00\"\n",
    )
    .unwrap();
    let err = reload_refused(&server);
    assert!(
        err.contains("configuration refused") && err.contains("broken"),
        "{err}"
    );
    assert_eq!(template_names(&server), ["tiny", "wide"]);

    // No templates at all: back to the built-in shapes.
    std::fs::write(&config, "").unwrap();
    reload_applying(&server, "ui.templates");
    assert_eq!(template_names(&server), ["small", "medium", "large", "gpu"]);
}
