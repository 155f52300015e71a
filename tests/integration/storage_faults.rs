//! A blob file that goes bad on disk fails the download reading it, never the server
//! (issue 9: downloads used to map blob files, and a truncated file or an EIO from a network
//! filesystem raised SIGBUS, killing the process with every other transfer in it).
//!
//! The file is truncated while `curl` (rate-limited, so the download is still running) reads it,
//! over HTTPS (rustls reads every byte it encrypts, where a mapping faulted) and over plain
//! HTTP. The download must stop short with an error, the server must keep running and answer
//! the next request, and a download started after the truncation is refused before any byte.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::users::*;
use crate::support::*;

const BLOB_SIZE: usize = 24 << 20;

/// curl with the given TLS/auth arguments.
fn curl(args: &[String]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*"]).args(args);
    cmd
}

/// Pushes `data` to `repo` with curl (POST, then monolithic PUT); returns the digest.
fn push_with_curl(base: &str, args: &[String], repo: &str, data: &Path) -> String {
    let digest = sha256_digest(&fs::read(data).unwrap());
    let out = run_output(curl(args).args([
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("{base}/v2/{repo}/blobs/uploads/"),
    ]));
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let location = headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Location in {headers}"));
    let url = with_query(&absolute(base, &location), &format!("digest={digest}"));
    let code = run(curl(args).args([
        "-X",
        "PUT",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &format!("@{}", data.display()),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]));
    assert_eq!(code.trim(), "201", "PUT blob");
    digest
}

fn status_of(args: &[String], url: &str) -> String {
    run(curl(args).args(["-o", "/dev/null", "-w", "%{http_code}", url]))
        .trim()
        .to_owned()
}

fn truncate_mid_download(server: &mut Server, base: &str, args: &[String], repo: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("blob");
    fs::write(&data, random_bytes(BLOB_SIZE)).unwrap();
    let digest = push_with_curl(base, args, repo, &data);
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let out = tmp.path().join("download");
    // 4 MB/s: the download takes seconds, so the truncation below lands in its middle.
    let mut download = curl(args)
        .args(["--limit-rate", "4M", "-o"])
        .arg(&out)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 2 << 20 {
        assert!(Instant::now() < deadline, "the download did not start");
        assert!(
            download.try_wait().unwrap().is_none(),
            "the download ended before the truncation"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(server.blob_path(&digest))
        .unwrap();
    file.set_len(1 << 20).unwrap();
    let status = download.wait().unwrap();
    let got = fs::metadata(&out).unwrap().len();
    assert!(
        !status.success(),
        "curl reported success for a download of a truncated file ({got} bytes)"
    );
    assert!(got < BLOB_SIZE as u64, "all {got} bytes arrived");
    assert!(
        server.is_running(),
        "the server died when a blob file was truncated under a download\n{}",
        server.log()
    );
    // The next requests are served: the API, and the now short blob is refused up front.
    assert_eq!(status_of(args, &format!("{base}/v2/")), "200");
    assert_eq!(status_of(args, &url), "500", "a short blob file was served");
    assert!(server.is_running());
    let log = server.log();
    assert!(
        log.contains("download stopped") && log.contains("truncated"),
        "the failed read is not logged:\n{log}"
    );
}

#[test]
fn a_blob_truncated_during_an_https_download_fails_only_that_download() {
    let ca = TestCa::new();
    let tls = ca.server_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let mut server = Server::start_secure(&Setup::new().user("alice", &[]), &tls);
    let alice = Creds::of("alice");
    let args = vec![
        "--cacert".to_string(),
        ca.path("ca.crt").display().to_string(),
        "-u".to_string(),
        format!("alice:{}", alice.secret),
    ];
    let base = format!("https://{}", server.host());
    truncate_mid_download(&mut server, &base, &args, "alice/big");
}

#[test]
fn a_blob_truncated_during_an_http_download_fails_only_that_download() {
    let mut server = Server::start();
    let base = server.base_url();
    truncate_mid_download(&mut server, &base, &[], "dev/big");
}
