//! Audit forwarding to syslog: with `[audit] syslog` set, every record written to the audit
//! file also reaches that socket (a real Unix datagram socket standing in for journald's
//! `/dev/log`), as the same JSON line the file holds, in syslog(3)'s framing; a reload moves it
//! to another socket or turns it off.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{admin_ok, start_dev_with_admin};
use crate::support::*;

/// Datagrams from `socket` until one carries a record of `action` on `repo`; (the whole
/// message, the record's JSON text).
fn wait_record(socket: &UnixDatagram, action: &str, repo: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no {action} record for {repo} arrived; got:\n{}",
            seen.join("\n")
        );
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(message.clone());
        let (_, json) = message
            .split_once("]: ")
            .unwrap_or_else(|| panic!("not syslog(3) framing: {message}"));
        let record: Value = serde_json::from_str(json).expect("a JSON record");
        if record["action"] == action && record["repository"] == repo {
            let json = json.to_owned();
            return (message, json);
        }
    }
}

fn listen(path: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(path).expect("bind the stand-in syslog socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

#[test]
fn records_are_forwarded_to_syslog_as_written_and_a_reload_moves_or_stops_it() {
    let sockets = tempfile::tempdir().unwrap();
    let (first, second) = (sockets.path().join("log"), sockets.path().join("log2"));
    let syslog = listen(&first);
    let (server, _dir, config) = start_dev_with_admin(&format!(
        "[audit]\nsyslog = \"{}\"\nsyslog_facility = \"local3\"\n",
        first.display()
    ));
    push_random_image(&server, "fwd/app", "1", &[100]);

    let (message, json) = wait_record(&syslog, "tag.push", "fwd/app");
    // local3 (19) * 8 + informational (6); syslog(3)'s "<PRI>Mmm dd hh:mm:ss TAG[PID]: ".
    assert!(message.starts_with("<158>"), "{message}");
    assert!(
        message.contains(&format!(" hpc-registry-audit[{}]: ", server.pid())),
        "{message}"
    );
    // The same line as in the audit file: seq, prev and hash included.
    let file = std::fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    assert!(
        file.lines().any(|l| l == json),
        "the forwarded record is not a line of the audit file:\n{json}"
    );

    // A reload to another socket: records go there from now on.
    let moved = listen(&second);
    std::fs::write(
        &config,
        format!("[audit]\nsyslog = \"{}\"\n", second.display()),
    )
    .unwrap();
    admin_ok(&server, &["admin", "reload"]);
    push_random_image(&server, "fwd/app", "2", &[100]);
    let (message, _) = wait_record(&moved, "tag.push", "fwd/app");
    assert!(
        message.starts_with("<86>"),
        "authpriv by default: {message}"
    );

    // A facility syslog does not have: refused, forwarding stays where it is.
    std::fs::write(
        &config,
        format!(
            "[audit]\nsyslog = \"{}\"\nsyslog_facility = \"mail\"\n",
            first.display()
        ),
    )
    .unwrap();
    let out = super::admin_output(&server, &["admin", "reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("syslog_facility"),
        "{err}"
    );
    push_random_image(&server, "fwd/other", "1", &[100]);
    wait_record(&moved, "tag.push", "fwd/other");

    // Off: the audit file goes on, the socket hears nothing more of the new push.
    std::fs::write(&config, "").unwrap();
    admin_ok(&server, &["admin", "reload"]);
    push_random_image(&server, "fwd/quiet", "1", &[100]);
    let mut buf = vec![0u8; 1 << 16];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(n) = moved.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !text.contains("fwd/quiet"),
                "forwarded after it was turned off: {text}"
            );
        }
    }
    let file = std::fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    assert!(file.contains("fwd/quiet"), "the audit file still records");
}
