//! The HTTP edge against hostile clients (issue 9, points 4 and 5 and the review's /metrics,
//! audit and upload-staging findings): every input gets an answer, connections that hold the
//! server without sending a request are closed, the metrics label set stays fixed, the audit trail
//! stays small under a storm, and upload bytes count against the quota while they stream.
//! Raw `TcpStream`s where the point is bytes no HTTP client would send. Short timeouts come from
//! a `[server]` section in the test's config file; nothing asserts how long anything took.
//!
//! Run: `cargo test --test integration edge -- --nocapture`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::users::*;
use crate::support::*;

/// Longest a test waits for the server to answer or close (it normally takes a few seconds).
const PATIENCE: Duration = Duration::from_secs(60);

/// A config file with `toml` in a temporary directory (kept alive by the returned guard).
fn config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hpc-registry.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Sends raw bytes and reads the whole answer (the request says `Connection: close`).
fn raw_exchange(server: &Server, request: &[u8]) -> String {
    let mut s = connect(server);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A reset after the answer is still an answer; none at all fails below.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "reading the answer to {:?}: {e}",
            String::from_utf8_lossy(request)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server has closed `s`: a read returns end-of-file or a reset (not a timeout).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // Whatever the server said before closing (hyper may answer 408) is fine.
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Point 4: every input gets an answer
// ---------------------------------------------------------------------------------------------

/// The probe's bytes: an escape cut short by a raw UTF-8 `é`. The old decoder sliced the query
/// inside the character, panicked, and the connection dropped without an answer.
#[test]
fn a_malformed_escape_gets_a_400_not_a_dropped_connection() {
    let server = Server::start();
    for target in [
        &b"/token?service=hpc-registry&scope=%a\xc3\xa9"[..],
        b"/token?scope=%",
        b"/token?scope=%C3%28",
        b"/v2/_catalog?n=%a\xc3\xa9",
        b"/v2/library/x/tags/list?last=%zz",
        b"/sif/library/x:1?platform=%a\xc3\xa9",
    ] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&server, &request);
        let shown = String::from_utf8_lossy(target);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "GET {shown}: expected a 400 answer, got {answer:?}\n--- server log ---\n{}",
            server.log()
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(
            body.contains("escape") || body.contains("UTF-8"),
            "GET {shown}: the message should say what is wrong: {body}"
        );
    }
    // The admin API asks for credentials first (an answer too, and it reveals nothing).
    let answer = raw_exchange(
        &server,
        b"GET /admin/tokens?user=%a\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // And the server is still there.
    let ok = raw_exchange(
        &server,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

// ---------------------------------------------------------------------------------------------
// Point 5: connections that never finish are closed
// ---------------------------------------------------------------------------------------------

const SHORT_TIMEOUTS: &str =
    "[server]\nheader_read_timeout_secs = 2\nkeep_alive_timeout_secs = 3\n\
                              body_idle_timeout_secs = 2\nmax_connections = 1000\n";

/// 300 connections send the start of a request and never finish its head; one sends nothing;
/// one keeps a finished keep-alive exchange open. A normal request works meanwhile, and the
/// server closes all of them by itself.
#[test]
fn unfinished_and_idle_connections_are_closed_and_others_still_served() {
    let (_dir, cfg) = config(SHORT_TIMEOUTS);
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut partial: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let mut silent = connect(&server);
    let mut kept = connect(&server);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let r = http().get(server.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(r.status(), StatusCode::OK);

    for (i, s) in partial.iter_mut().enumerate() {
        assert!(
            closed_by_server(s),
            "connection {i} with an unfinished request head is still open\n{}",
            server.log()
        );
    }
    assert!(
        closed_by_server(&mut silent),
        "a silent connection stays open"
    );
    assert!(
        closed_by_server(&mut kept),
        "an idle keep-alive connection stays open"
    );
}

/// A client that is slow but keeps its request in flight is not cut: a download streams for
/// longer than the keep-alive timeout when the client reads slowly.
#[test]
fn a_request_in_flight_outlives_the_connection_timeouts() {
    let (_dir, cfg) = config(SHORT_TIMEOUTS);
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let repo = format!("edge/{}", unique("slow"));
    let data = random_bytes(16 << 20);
    push_blob(&server, &repo, &data);
    let mut s = connect(&server);
    let digest = sha256_digest(&data);
    write!(
        s,
        "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Read the answer in slices with pauses, for longer than both timeouts together.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    s.read_to_end(&mut got).unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(got.len() - head_end, data.len(), "the download was cut");
    assert_eq!(&got[head_end..], &data[..]);
}

/// Beyond `max_connections`, a new connection waits: it is answered once a slot frees.
#[test]
fn connections_beyond_the_limit_wait_for_a_slot() {
    let (_dir, cfg) = config("[server]\nmax_connections = 4\nheader_read_timeout_secs = 600\n");
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let mut waiting = connect(&server);
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the fifth connection was served while four held every slot: {early:?}"
    );
    drop(held.pop());
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    waiting.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// The same bounds on the TLS accept path.
#[test]
fn unfinished_tls_connections_are_closed_too() {
    hpc_registry::tls::install_provider();
    let ca = TestCa::new();
    let (_dir, cfg) = config(SHORT_TIMEOUTS);
    let mut args = ca.server_args();
    args.extend(["--config".to_owned(), cfg.to_str().unwrap().to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_secure(&Setup::new(), &args);

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca.path("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let open = |head: &[u8]| {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::clone(&tls), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, connect(&server));
        s.write_all(head).unwrap();
        s.flush().unwrap();
        s
    };
    let mut partial: Vec<_> = (0..20)
        .map(|_| open(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    let mut ok = open(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = ok.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for (i, s) in partial.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        };
        assert!(
            closed,
            "TLS connection {i} with an unfinished head is still open"
        );
    }
}

/// A chunked upload whose client stops sending is cut after the body-inactivity timeout; what
/// arrived stays, and the upload resumes from there.
#[test]
fn a_stalled_upload_body_is_cut_and_the_session_resumes() {
    let (_dir, cfg) = config(SHORT_TIMEOUTS);
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let repo = format!("edge/{}", unique("stall"));
    let location = start_upload(&server, &repo);
    let path = location_path(&location);
    let data = random_bytes(3000);
    let mut s = connect(&server);
    write!(
        s,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        1024
    )
    .unwrap();
    s.write_all(&data[..1024]).unwrap();
    s.write_all(b"\r\n").unwrap();
    // ...and nothing more: the server must answer by itself.
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("BLOB_UPLOAD_INVALID") && answer.contains("resume"),
        "{answer}"
    );

    let status = http()
        .get(absolute(&server.base_url(), &location))
        .send()
        .unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["range"].to_str().unwrap(),
        "0-1023",
        "the bytes that arrived are kept"
    );
    let put = http()
        .put(with_query(
            &absolute(&server.base_url(), &location),
            &format!("digest={}", sha256_digest(&data)),
        ))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("1024-{}", data.len() - 1))
        .body(data[1024..].to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text());
    assert_eq!(get_blob(&server, &repo, &sha256_digest(&data)), data);
}

// ---------------------------------------------------------------------------------------------
// /metrics: labels from fixed sets
// ---------------------------------------------------------------------------------------------

#[test]
fn random_methods_do_not_create_metric_series() {
    let server = Server::start();
    let methods: Vec<String> = (0..50)
        .map(|i| format!("X{}{i}", unique("M").replace(['-', '_'], "").to_uppercase()))
        .collect();
    for m in &methods {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = http().request(method, server.url("/v2/")).send().unwrap();
        assert!(r.status().is_client_error(), "{m}: {}", r.status());
    }
    let text = http()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("hpc_registry_http_requests_total{"))
        .collect();
    for m in &methods {
        assert!(
            !text.contains(m.as_str()),
            "method {m} became a label:\n{text}"
        );
    }
    assert!(
        series.iter().any(|l| l.contains("method=\"OTHER\"")),
        "unknown methods are counted as OTHER:\n{text}"
    );
    // At most every standard method and OTHER, times five status classes.
    assert!(series.len() <= 10 * 5, "{} series:\n{text}", series.len());
}

// ---------------------------------------------------------------------------------------------
// Audit: bounded fields and a bounded storm
// ---------------------------------------------------------------------------------------------

fn audit_lines(server: &Server) -> Vec<(usize, Value)> {
    let text = std::fs::read_to_string(server.data_dir().join("audit/audit.jsonl")).unwrap();
    text.lines()
        .map(|l| (l.len(), serde_json::from_str(l).unwrap()))
        .collect()
}

#[test]
fn huge_names_and_paths_make_small_audit_records() {
    let mut server = Server::start();
    // A 300 000-byte user name is a 400 000-byte Authorization header (hyper's limit is ~408 KB).
    let name = "n".repeat(300_000);
    let r = http()
        .get(server.url("/v2/_catalog"))
        .basic_auth(&name, Some("x"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Just under the 64 KiB the `http` crate allows in a request target.
    let long_path = format!("/admin/{}", "p".repeat(65_000));
    let r = http().get(server.url(&long_path)).send().unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    server.terminate();
    let lines = audit_lines(&server);
    let failure = lines
        .iter()
        .find(|(_, v)| v["action"] == "auth.failure")
        .expect("the refused login is recorded");
    assert!(
        failure.0 < 4096,
        "auth.failure record of {} bytes",
        failure.0
    );
    let user = failure.1["user"].as_str().unwrap();
    assert!(user.starts_with("(invalid name, 300000 bytes)"), "{user}");
    let admin = lines
        .iter()
        .find(|(_, v)| v["action"] == "admin.request")
        .expect("the admin request is recorded");
    assert!(admin.0 < 4096, "admin record of {} bytes", admin.0);
    for (len, v) in &lines {
        assert!(
            *len < 4096,
            "a {len}-byte record: {}",
            &v.to_string()[..200]
        );
    }
}

#[test]
fn a_storm_of_refused_requests_writes_a_bounded_trail_with_a_count() {
    let mut server = Server::start_secure(&Setup::new().user("carol", &[]), &[]);
    let storm = 500;
    for i in 0..storm {
        let r = http()
            .get(server.url("/v2/_catalog"))
            .basic_auth(format!("nobody{i}"), Some("wrong"))
            .send()
            .unwrap();
        assert!(
            r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::TOO_MANY_REQUESTS,
            "{}",
            r.status()
        );
    }
    server.terminate();
    let lines = audit_lines(&server);
    let failures = lines
        .iter()
        .filter(|(_, v)| v["action"] == "auth.failure")
        .count();
    let suppressed: u64 = lines
        .iter()
        .filter(|(_, v)| v["action"] == "audit.suppressed")
        .map(|(_, v)| {
            assert_eq!(v["client"], "127.0.0.1", "{v}");
            let d = v["detail"].as_str().unwrap();
            d.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(
        failures < 100,
        "{failures} failure records for one client's storm"
    );
    assert_eq!(
        failures as u64 + suppressed,
        storm,
        "every refused request is either written or counted"
    );
    let bytes: usize = lines.iter().map(|(l, _)| l).sum();
    assert!(
        bytes < 200_000,
        "the storm wrote {bytes} bytes of audit trail"
    );
}

// ---------------------------------------------------------------------------------------------
// Upload staging inside the quota, sessions per user, session lifetime
// ---------------------------------------------------------------------------------------------

fn post_upload(server: &Server, creds: &Creds, repo: &str) -> Reply {
    send(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/")),
        &Auth::Basic(creds),
        None,
    )
}

/// PATCH `len` random bytes as a chunked body (no Content-Length); the reply.
fn patch_unsized(server: &Server, creds: &Creds, location: &str, len: usize) -> Reply {
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(random_bytes(len)));
    let r = http()
        .patch(absolute(&server.base_url(), location))
        .basic_auth(&creds.user, Some(&creds.secret))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .expect("PATCH");
    Reply::from(r)
}

#[test]
fn chunked_uploads_are_cut_at_the_quota_while_streaming() {
    let (_dir, cfg) = config("[quota]\ndefault_user = \"1MiB\"\n");
    let server = Server::start_secure(
        &Setup::new().user("alice", &[]),
        &["--config", cfg.to_str().unwrap()],
    );
    let alice = Creds::of("alice");
    let repo = "alice/big";

    // One body larger than the whole quota, without a length to refuse it up front.
    let r = post_upload(&server, &alice, repo);
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let location = r.header("location").unwrap();
    let r = patch_unsized(&server, &alice, &location, 8 << 20);
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(r.error_codes(), vec!["DENIED"]);
    assert!(
        r.text().contains("quota 1 MiB for alice exceeded"),
        "{}",
        r.text()
    );
    let status = send(
        "GET",
        &absolute(&server.base_url(), &location),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(
        status.status,
        StatusCode::NOT_FOUND,
        "the refused session ended"
    );

    // Two sessions that each fit, but not together: the second is cut by the first's bytes.
    let a = post_upload(&server, &alice, repo)
        .header("location")
        .unwrap();
    let b = post_upload(&server, &alice, repo)
        .header("location")
        .unwrap();
    let r = patch_unsized(&server, &alice, &a, 600 << 10);
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let r = patch_unsized(&server, &alice, &b, 600 << 10);
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert!(r.text().contains("quota"), "{}", r.text());
    // The first is intact and still resumable.
    let status = send(
        "GET",
        &absolute(&server.base_url(), &a),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range").as_deref(), Some("0-614399"));
}

#[test]
fn open_upload_sessions_per_user_are_capped() {
    let (_dir, cfg) = config("[registry]\nmax_upload_sessions_per_user = 3\n");
    let server = Server::start_secure(
        &Setup::new().user("alice", &[]).user("bob", &[]),
        &["--config", cfg.to_str().unwrap()],
    );
    let (alice, bob) = (Creds::of("alice"), Creds::of("bob"));
    let open: Vec<String> = (0..3)
        .map(|_| {
            let r = post_upload(&server, &alice, "alice/x");
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
            r.header("location").unwrap()
        })
        .collect();
    let r = post_upload(&server, &alice, "alice/x");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.describe());
    assert_eq!(r.error_codes(), vec!["DENIED"]);
    assert!(r.text().contains("3 upload sessions open"), "{}", r.text());
    // Another user is not affected, and a cancelled session frees its place.
    let r = post_upload(&server, &bob, "bob/x");
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
    let r = send(
        "DELETE",
        &absolute(&server.base_url(), &open[0]),
        &Auth::Basic(&alice),
        None,
    );
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.describe());
    let r = post_upload(&server, &alice, "alice/x");
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.describe());
}

#[test]
fn the_upload_session_lifetime_is_configurable() {
    let (_dir, cfg) = config("[registry]\nupload_expiry_secs = 2\n");
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let repo = format!("edge/{}", unique("expiry"));
    let location = absolute(&server.base_url(), &start_upload(&server, &repo));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let status = http().get(&location).send().unwrap().status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(
            std::time::Instant::now() < deadline,
            "an upload session with a 2 s lifetime was never removed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
