//! `--log-format json`: every line the server writes is one JSON object with a timestamp, a
//! level, a target and the message.

use crate::support::*;

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let server = Server::start_with(&["--log-format", "json"]);
    // A request and a push, so the log has more than start-up lines.
    push_blob(&server, "logs/json", &random_bytes(1000));
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("=== harness"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "{log}");
    let mut listening = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}\n--- log ---\n{log}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        listening |= message.starts_with("listening on http://127.0.0.1:");
    }
    assert!(listening, "no `listening on` message:\n{log}");
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = run_output(std::process::Command::new(SERVER_BIN).args([
        "serve",
        "--log-format",
        "xml",
        "--help",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}
