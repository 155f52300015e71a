//! Crash safety and memory flatness of the real server process:
//! kill -9 during a large chunked upload and during manifest PUTs, restart on the same data
//! directory, and check that nothing partial is visible and everything acknowledged is intact;
//! push and pull a 1 GiB blob and check the server's RSS stays flat.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use reqwest::blocking::Body;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const MIB: u64 = 1024 * 1024;

/// PATCH bytes `[start, start+len)` of pattern `seed` to the upload at `location` (absolute URL),
/// streamed, with `Content-Range` and `Content-Length`. Asserts 202 and the `Range` that must
/// follow; returns the next absolute location.
fn patch_chunk(server: &Server, location: &str, seed: u64, start: u64, len: u64) -> String {
    let end = start + len - 1;
    let r = Reply::from(
        http()
            .patch(location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(Body::sized(PatternReader::new(seed, start, len), len))
            .send()
            .unwrap_or_else(|e| panic!("PATCH {location} bytes {start}-{end}: {e}")),
    );
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "PATCH {location} bytes {start}-{end}: {}",
        r.describe()
    );
    assert_eq!(
        r.header("range").as_deref(),
        Some(format!("0-{end}").as_str()),
        "Range after PATCH of bytes {start}-{end}"
    );
    let loc = r
        .header("location")
        .unwrap_or_else(|| panic!("PATCH answer without Location: {}", r.describe()));
    absolute(&server.base_url(), &loc)
}

/// Uploads pattern bytes `[from, total)` in `chunk`-sized PATCHes, then the closing PUT with the
/// digest; asserts 201 and the digest headers.
fn finish_upload(
    server: &Server,
    mut location: String,
    seed: u64,
    from: u64,
    total: u64,
    chunk: u64,
    digest: &str,
) {
    let mut offset = from;
    while offset < total {
        let len = chunk.min(total - offset);
        location = patch_chunk(server, &location, seed, offset, len);
        offset += len;
    }
    let r = Reply::from(
        http()
            .put(with_query(&location, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .header("content-length", "0")
            .send()
            .expect("closing PUT"),
    );
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "closing PUT ?digest={digest}: {}",
        r.describe()
    );
    assert_eq!(r.header("docker-content-digest").as_deref(), Some(digest));
}

/// HEAD (size) and GET (streamed and hashed) of a blob; asserts both match.
fn assert_blob_streams(server: &Server, repo: &str, digest: &str, size: u64) {
    let h = http()
        .head(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .expect("HEAD blob");
    assert_eq!(h.status(), StatusCode::OK, "HEAD /v2/{repo}/blobs/{digest}");
    assert_eq!(
        h.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(size.to_string().as_str()),
        "Content-Length of HEAD blob"
    );
    let resp = http()
        .get(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .expect("GET blob");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GET /v2/{repo}/blobs/{digest}"
    );
    let (got, n) = hash_reader(resp).expect("read blob body");
    assert_eq!(n, size, "bytes served for {digest}");
    assert_eq!(got, digest, "digest of the bytes served for {digest}");
}

/// A body that signals once `gate_at` bytes have been handed to the HTTP client, then blocks
/// until released (the test kills the server meanwhile).
struct GatedReader {
    inner: PatternReader,
    sent: u64,
    gate_at: u64,
    reached: Option<mpsc::Sender<Event>>,
    release: mpsc::Receiver<()>,
}

enum Event {
    Reached,
    Done(String),
}

impl Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.gate_at {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(Event::Reached);
                let _ = self.release.recv(); // returns when released or the sender is dropped
            }
        }
        let room = if self.reached.is_some() {
            ((self.gate_at - self.sent) as usize).min(buf.len()).max(1)
        } else {
            buf.len()
        };
        let n = self.inner.read(&mut buf[..room])?;
        self.sent += n as u64;
        Ok(n)
    }
}

#[test]
fn crash_during_large_upload_leaves_no_partial_blob_and_upload_resumes_or_restarts() {
    const TOTAL: u64 = 200 * MIB;
    const CHUNK: u64 = 32 * MIB;
    const ACKED: u64 = 3 * CHUNK; // chunks answered 202 before the crash

    let mut server = Server::start();
    let before = push_random_image(&server, "alice/before", "1", &[MIB as usize, 1000]);
    let other = push_random_image(&server, "bob/other", "v1", &[4096]);

    let seed = fresh_seed();
    let digest = pattern_digest(seed, TOTAL);
    let acked_digest = pattern_digest(seed, ACKED);
    let repo = "alice/big";

    let mut location = start_upload(&server, repo);
    let mut offset = 0;
    while offset < ACKED {
        location = patch_chunk(&server, &location, seed, offset, CHUNK);
        offset += CHUNK;
    }

    // The next PATCH carries the rest (104 MiB); kill -9 once 40 MiB of it have left the client.
    let (ev_tx, ev_rx) = mpsc::channel::<Event>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let patch_url = location.clone();
    let done_tx = ev_tx.clone();
    let sender = thread::spawn(move || {
        let len = TOTAL - ACKED;
        let body = GatedReader {
            inner: PatternReader::new(seed, ACKED, len),
            sent: 0,
            gate_at: 40 * MIB,
            reached: Some(ev_tx),
            release: release_rx,
        };
        let result = http()
            .patch(&patch_url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{ACKED}-{}", TOTAL - 1))
            .body(Body::sized(body, len))
            .send();
        let what = match result {
            Ok(r) => format!("answer {}", r.status()),
            Err(e) => format!("error {e}"),
        };
        let _ = done_tx.send(Event::Done(what));
    });
    match ev_rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Event::Reached) => {}
        Ok(Event::Done(what)) => panic!(
            "the streamed PATCH of bytes {ACKED}-{} ended before the kill point: {what}",
            TOTAL - 1
        ),
        Err(e) => panic!("the streamed PATCH never reached the kill point: {e}"),
    }
    // Give the server a moment to write some of the in-flight chunk to its staging file.
    thread::sleep(Duration::from_millis(300));
    server.kill9();
    drop(release_tx);
    sender.join().expect("PATCH thread");

    server.restart();

    // Everything pushed before is intact.
    before.assert_intact(&server);
    other.assert_intact(&server);

    // Nothing of the interrupted upload is visible as a blob.
    for d in [&digest, &acked_digest] {
        let status = head_blob(&server, repo, d);
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "HEAD /v2/{repo}/blobs/{d} after the crash"
        );
        assert!(
            !server.blob_path(d).exists(),
            "{} exists after the crash",
            server.blob_path(d).display()
        );
    }

    // The session either resumes from what it holds, or is gone and a fresh upload works.
    let status_url = server.url(&location_path(&location));
    let r = Reply::from(http().get(&status_url).send().expect("GET upload status"));
    match r.status {
        StatusCode::NO_CONTENT => {
            let range = r
                .header("range")
                .unwrap_or_else(|| panic!("upload status 204 without Range: {}", r.describe()));
            let end: u64 = range
                .strip_prefix("0-")
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(|| panic!("upload status Range is not `0-<end>`: {range}"));
            let resume_at = end + 1;
            eprintln!(
                "upload session survived the crash: Range {range} ({} MiB of {} acknowledged MiB)",
                resume_at / MIB,
                ACKED / MIB
            );
            assert!(resume_at <= TOTAL, "Range {range} is beyond what was ever sent");
            let loc = r
                .header("location")
                .unwrap_or_else(|| panic!("upload status 204 without Location: {}", r.describe()));
            finish_upload(&server, absolute(&server.base_url(), &loc), seed, resume_at, TOTAL, CHUNK, &digest);
        }
        StatusCode::NOT_FOUND => {
            assert!(
                r.error_codes().iter().any(|c| c == "BLOB_UPLOAD_UNKNOWN"),
                "upload status 404 must carry BLOB_UPLOAD_UNKNOWN: {}",
                r.describe()
            );
            eprintln!("upload session did not survive the crash: restarting the upload");
            let fresh = start_upload(&server, repo);
            finish_upload(&server, fresh, seed, 0, TOTAL, CHUNK, &digest);
        }
        other => panic!(
            "GET {status_url} (upload status after restart): expected 204 with Range or 404 BLOB_UPLOAD_UNKNOWN, got {other}: {}",
            r.describe()
        ),
    }
    assert_blob_streams(&server, repo, &digest, TOTAL);
    before.assert_intact(&server);
}

/// Lists every tag of `repo`, following `Link` pagination if the server pages.
fn all_tags(server: &Server, repo: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut url = server.url(&format!("/v2/{repo}/tags/list"));
    for _ in 0..1000 {
        let r = Reply::from(http().get(&url).send().expect("GET tags/list"));
        assert_eq!(r.status, StatusCode::OK, "GET {url}: {}", r.describe());
        let v = r.json();
        if let Some(a) = v["tags"].as_array() {
            tags.extend(a.iter().map(|t| t.as_str().expect("tag string").to_owned()));
        }
        match r.header("link") {
            Some(link) => {
                let target = link
                    .split(';')
                    .next()
                    .unwrap()
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned();
                url = absolute(&server.base_url(), &target);
            }
            None => return tags,
        }
    }
    panic!("tags/list pagination of {repo} does not end");
}

#[derive(Clone)]
struct Attempt {
    body: Vec<u8>,
    digest: String,
    status: Option<StatusCode>,
}

#[test]
fn crash_during_manifest_puts_keeps_every_acknowledged_manifest_and_no_partial_one() {
    const WRITERS: usize = 2;
    const ACK_BEFORE_KILL: usize = 40;
    let t0 = std::time::Instant::now();
    let mut server = Server::start();
    let repo = "alice/app";
    let base = push_random_image(&server, repo, "base", &[2048, 300]);
    let base_manifest: Value = serde_json::from_slice(&base.manifest).unwrap();

    let attempts: Arc<Mutex<BTreeMap<String, Attempt>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.base_url();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let attempts = attempts.clone();
        let stop = stop.clone();
        let url = url.clone();
        let base_manifest = base_manifest.clone();
        writers.push(thread::spawn(move || {
            let client = http();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let tag = format!("w{w}-{i:05}");
                // Sizes vary up to ~384 KiB so the kill lands mid-body too.
                let pad_len = (fresh_seed() % (384 * 1024)) as usize;
                let mut m = base_manifest.clone();
                m["annotations"] = json!({
                    "org.example.n": tag,
                    "org.example.pad": "x".repeat(pad_len),
                });
                let body = serde_json::to_vec(&m).unwrap();
                let digest = sha256_digest(&body);
                attempts.lock().unwrap().insert(
                    tag.clone(),
                    Attempt {
                        body: body.clone(),
                        digest,
                        status: None,
                    },
                );
                let res = client
                    .put(format!("{url}/v2/{repo}/manifests/{tag}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(body)
                    .send();
                match res {
                    Ok(r) => {
                        let status = r.status();
                        attempts.lock().unwrap().get_mut(&tag).unwrap().status = Some(status);
                        if status != StatusCode::CREATED {
                            let body = r.text().unwrap_or_default();
                            panic!("PUT {repo}:{tag} before the crash answered {status}: {body}");
                        }
                    }
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    // Wait for enough acknowledged PUTs, then kill -9 while the writers keep going.
    loop {
        let acked = attempts
            .lock()
            .unwrap()
            .values()
            .filter(|a| a.status == Some(StatusCode::CREATED))
            .count();
        if acked >= ACK_BEFORE_KILL {
            break;
        }
        if writers.iter().all(|w| w.is_finished()) {
            break; // a writer panicked; join below reports it
        }
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!("[{:?}] kill -9 during manifest PUTs", t0.elapsed());
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        if let Err(e) = w.join() {
            std::panic::resume_unwind(e);
        }
    }
    let attempts = attempts.lock().unwrap().clone();
    let acked: Vec<(&String, &Attempt)> = attempts
        .iter()
        .filter(|(_, a)| a.status == Some(StatusCode::CREATED))
        .collect();
    assert!(
        acked.len() >= ACK_BEFORE_KILL,
        "only {} PUTs acknowledged before the kill",
        acked.len()
    );
    eprintln!(
        "{} manifest PUTs attempted, {} acknowledged, {} in flight at the kill",
        attempts.len(),
        acked.len(),
        attempts.values().filter(|a| a.status.is_none()).count()
    );

    server.restart();
    eprintln!("[{:?}] restarted", t0.elapsed());

    base.assert_intact(&server);
    // Every acknowledged manifest is there, byte-identical, by tag and by digest.
    for (tag, a) in &acked {
        for reference in [tag.as_str(), a.digest.as_str()] {
            let r = get_manifest(&server, repo, reference);
            assert_eq!(
                r.status,
                StatusCode::OK,
                "GET acknowledged {repo}:{reference} after the crash: {}",
                r.describe()
            );
            assert!(
                r.body == a.body,
                "{repo}:{reference} is not byte-identical after the crash"
            );
            assert_eq!(
                r.header("docker-content-digest").as_deref(),
                Some(a.digest.as_str())
            );
        }
    }
    // Every listed tag resolves to a complete manifest whose blobs exist; unacknowledged PUTs are
    // either fully there (committed, answer lost) or not at all.
    let listed: BTreeSet<String> = all_tags(&server, repo).into_iter().collect();
    for (tag, _) in &acked {
        assert!(
            listed.contains(*tag),
            "acknowledged tag {tag} missing from tags/list"
        );
    }
    for tag in &listed {
        let r = get_manifest(&server, repo, tag);
        assert_eq!(
            r.status,
            StatusCode::OK,
            "listed tag {tag} does not resolve: {}",
            r.describe()
        );
        // (The farm's derived `T.sif` tags are never listed: one here was "never pushed".)
        if tag != "base" {
            let a = attempts
                .get(tag)
                .unwrap_or_else(|| panic!("tags/list shows {tag}, which was never pushed"));
            assert!(
                r.body == a.body,
                "listed tag {tag} is not the manifest that was PUT"
            );
        }
        let m = r.json();
        let config = m["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned();
        let layers = m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned());
        for d in std::iter::once(config).chain(layers) {
            assert_eq!(
                head_blob(&server, repo, &d),
                StatusCode::OK,
                "blob {d} of listed tag {tag}"
            );
        }
    }
    for (tag, a) in attempts.iter().filter(|(t, _)| !listed.contains(*t)) {
        assert!(
            a.status.is_none(),
            "{tag} was answered {:?} yet is not listed",
            a.status
        );
        for reference in [tag.as_str(), a.digest.as_str()] {
            let r = get_manifest(&server, repo, reference);
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "interrupted PUT of {tag} is half-visible: its tag is not listed but GET {reference} answers {}",
                r.describe()
            );
        }
    }
    eprintln!("[{:?}] checked {} listed tags", t0.elapsed(), listed.len());
    // The registry still takes writes.
    let after = push_random_image(&server, repo, "after", &[100]);
    after.assert_intact(&server);
}

#[test]
fn one_gib_blob_push_and_pull_keeps_server_memory_flat() {
    const TOTAL: u64 = 1024 * MIB;
    const CHUNK: u64 = 64 * MIB;
    const LIMIT_KIB: u64 = 64 * 1024;
    let server = Server::start();
    let repo = "alice/huge";

    // Warm up: one small push and pull, so lazily built state is in the baseline.
    let warm = push_random_image(&server, "alice/warm", "1", &[MIB as usize]);
    warm.assert_intact(&server);

    let seed = fresh_seed();
    let digest = pattern_digest(seed, TOTAL);

    let rss_before = server.rss_kib();
    // Chunked: 16 PATCHes of 64 MiB, then the closing PUT; pulled back streamed and hashed.
    let upload = start_upload(&server, repo);
    finish_upload(&server, upload, seed, 0, TOTAL, CHUNK, &digest);
    let after_chunked_push = server.peak_rss_kib();
    assert_blob_streams(&server, repo, &digest, TOTAL);
    let after_chunked_pull = server.peak_rss_kib();

    // Monolithic: one PUT whose 1 GiB body is streamed from the generator.
    let seed2 = fresh_seed();
    let digest2 = pattern_digest(seed2, TOTAL);
    push_blob_stream(
        &server,
        repo,
        PatternReader::new(seed2, 0, TOTAL),
        TOTAL,
        &digest2,
    );
    let after_monolithic_push = server.peak_rss_kib();
    assert_blob_streams(&server, repo, &digest2, TOTAL);
    let peak = server.peak_rss_kib();
    let rss_after = server.rss_kib();
    eprintln!(
        "server RSS: VmRSS before {rss_before} KiB; VmHWM after chunked push {after_chunked_push} KiB, \
         after pull {after_chunked_pull} KiB, after monolithic push {after_monolithic_push} KiB, after pull {peak} KiB; \
         VmRSS now {rss_after} KiB"
    );
    assert!(
        peak.saturating_sub(rss_before) < LIMIT_KIB,
        "pushing and pulling 1 GiB blobs raised the server's peak RSS by {} KiB (VmRSS before {rss_before} KiB, \
         VmHWM after the chunked push {after_chunked_push} KiB, after its pull {after_chunked_pull} KiB, after the \
         monolithic push {after_monolithic_push} KiB, after its pull {peak} KiB; limit {LIMIT_KIB} KiB)",
        peak.saturating_sub(rss_before)
    );
}
