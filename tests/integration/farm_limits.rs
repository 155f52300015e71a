//! Hostile images against the builder's limits, on the real server (issue 9, "hostile images
//! exhaust the server"; issue 11's memory-bomb test), and the same limits on the `apptainer`
//! backend's builds (a stand-in `apptainer` that overruns each of them).
//!
//! Two small gzip layers that unpack to a bomb: 1.5 million empty entries under one name, and
//! 1500 entries carrying a 100 KiB PAX xattr each. Each build must fail for good (one attempt
//! of three) with a reason naming the limit, while the server's resident memory stays flat and
//! a push and a SIF download made during the bomb builds succeed. Limits are set in `[farm]`
//! below the defaults only so the test runs in seconds; the defaults are unit-tested in
//! `crates/oci2sif/tests/layers_limits.rs`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::sif::*;
use crate::support::*;

/// One ustar header (`typeflag`, `size` data bytes follow).
fn ustar(out: &mut Vec<u8>, name: &str, typeflag: u8, size: usize) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size as u64);
    octal(&mut h, 136, 12, 1_600_000_000);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// `gzip -1` of the tar that `write(i, buf)` produces for i in 0..count, then the end blocks;
/// streamed through gzip, never held whole.
fn gzip_stream(count: usize, write: impl Fn(usize, &mut Vec<u8>) + Send + 'static) -> Vec<u8> {
    let mut gzip = Command::new("gzip")
        .args(["-1", "-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = gzip.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..count {
            write(i, &mut buf);
            if buf.len() >= 1 << 20 {
                stdin.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        buf.resize(buf.len() + 1024, 0);
        stdin.write_all(&buf).unwrap();
    });
    let out = gzip.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A PAX record `"<len> <key>=<value>\n"`.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A gzip layer of one small file, `hello.txt`: an image any limit lets build.
fn hello_layer() -> Vec<u8> {
    let mut tar = Vec::new();
    ustar(&mut tar, "hello.txt", b'0', 6);
    tar.extend_from_slice(b"hello\n");
    pad(&mut tar);
    tar.resize(tar.len() + 1024, 0);
    gzip_stream(1, move |_, buf| buf.extend_from_slice(&tar))
}

fn push_layer_image(server: &Server, repo: &str, tag: &str, layer: &[u8]) -> String {
    push_labelled_layer_image(server, repo, tag, layer, "")
}

/// [`push_layer_image`] with `label` among the config's labels.
fn push_labelled_layer_image(
    server: &Server,
    repo: &str,
    tag: &str,
    layer: &[u8],
    label: &str,
) -> String {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Labels": {"nonce": unique("c"), "label": label}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }))
    .unwrap();
    push_blob(server, repo, &config);
    push_blob(server, repo, layer);
    let manifest = oci_manifest_bytes(
        &descriptor(OCI_CONFIG, &config),
        &[descriptor(OCI_LAYER_GZIP, layer)],
        None,
    );
    put_manifest_ok(server, repo, tag, OCI_MANIFEST, &manifest)
}

/// Samples the server's RSS every 50 ms until stopped; returns the highest value seen.
struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let (stop, max) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, m) = (stop.clone(), max.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        m.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch { stop, max, thread }
    }

    /// Stops, and asserts that the server's RSS stayed within 48 MiB of `baseline` during
    /// `what`.
    fn assert_flat(self, baseline: u64, what: &str) {
        let peak = self.stop();
        assert!(
            peak.saturating_sub(baseline) < 48 << 10,
            "server RSS went from {baseline} KiB to {peak} KiB during {what}"
        );
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.max.load(Ordering::Relaxed)
    }
}

fn assert_failed_for_limit(server: &Server, reference: &str, needle: &str) {
    let r = wait_settled(server, reference, BUILD_DEADLINE);
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        r.describe()
    );
    let error = &r.json()["errors"][0];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "GET /sif/{reference}: the failure should name the limit ({needle}): {message}"
    );
    assert_eq!(
        error["detail"]["attempts"], 1,
        "a limit of the image's own making is not retried: {error}"
    );
}

#[test]
fn memory_bomb_images_fail_on_limits_while_the_server_stays_flat_and_serves() {
    let server = FarmServer::start(
        "workers = 1\nmax_attempts = 3\nretry_delay_secs = 0\nmax_entries = 500000\nmax_xattr_bytes = 16777216",
    );
    // A small image built first: its SIF is downloaded during the bomb builds.
    let small = hello_layer();
    push_layer_image(&server, "dev/small", "1", &small);
    let sif = wait_sif(&server, "dev/small:1", BUILD_DEADLINE).reply.body;

    // 1.5 million empty files, all named `x`: a few MB of gzip.
    let entries = gzip_stream(1_500_000, |_, buf| ustar(buf, "x", b'0', 0));
    // 1500 files with a 100 KiB xattr each: 150 MiB of xattrs, a few hundred KB of gzip.
    let xattrs = gzip_stream(1500, |i, buf| {
        let record = pax_record("SCHILY.xattr.user.bomb", &vec![b'v'; 100 << 10]);
        ustar(buf, "PaxHeaders/x", b'x', record.len());
        buf.extend_from_slice(&record);
        pad(buf);
        ustar(buf, &format!("f{i}"), b'0', 0);
    });
    assert!(entries.len() < 32 << 20 && xattrs.len() < 32 << 20);

    let baseline = server.rss_kib();
    let watch = RssWatch::start(server.pid());
    let d_entries = push_layer_image(&server, "dev/bomb", "entries", &entries);
    let d_xattrs = push_layer_image(&server, "dev/bomb", "xattrs", &xattrs);
    wait_log(&server, &["SIF build started", &d_entries], BUILD_DEADLINE);

    // While the bombs build: a push and a SIF download.
    let pushed = push_random_image(&server, "dev/other", "1", &[64 << 10]);
    assert!(!pushed.digest.is_empty());
    let r = sif_get(&server, "dev/small:1");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(
        r.body, sif,
        "the SIF downloaded during the bomb builds differs"
    );

    assert_failed_for_limit(
        &server,
        "dev/bomb:entries",
        "more than 500000 entries (limit set by farm.max_entries)",
    );
    assert_failed_for_limit(&server, "dev/bomb:xattrs", "farm.max_xattr_bytes");
    watch.assert_flat(baseline, "the bomb builds");
    for digest in [&d_entries, &d_xattrs] {
        assert_eq!(
            log_lines(&server, &["SIF build started", digest]).len(),
            1,
            "one attempt for {digest}"
        );
    }
    // The server still builds and serves.
    let r = sif_get(&server, "dev/small:1");
    assert_eq!(r.status, StatusCode::OK);
}

/// `count` empty files with distinct names (the tree must hold every one): a bomb for the
/// build's memory, not for its entry limit.
fn distinct_entries(count: usize) -> Vec<u8> {
    gzip_stream(count, |i, buf| ustar(buf, &format!("d/{i:07}"), b'0', 0))
}

fn assert_failed_transiently(server: &Server, reference: &str, needle: &str, attempts: i64) {
    let r = wait_settled(server, reference, BUILD_DEADLINE);
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        r.describe()
    );
    let error = &r.json()["errors"][0];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "GET /sif/{reference}: the failure should name the limit ({needle}): {message}\n{}",
        server.log()
    );
    assert_eq!(
        error["detail"]["attempts"], attempts,
        "a resource limit is retried under the policy: {error}"
    );
}

#[test]
fn a_build_over_the_memory_limit_dies_in_its_own_process_and_is_retried_while_the_server_serves() {
    // 96 MiB of address space is plenty for a small image and far too little for 1.5 million
    // distinct entries (about 600 MB resident unbounded).
    let server = FarmServer::start(&format!(
        "workers = 1\nmax_attempts = 2\nretry_delay_secs = 0\nmax_memory_bytes = {}",
        96u64 << 20
    ));
    let small = hello_layer();
    push_layer_image(&server, "dev/small", "1", &small);
    let sif = wait_sif(&server, "dev/small:1", BUILD_DEADLINE).reply.body;

    let bomb = distinct_entries(1_500_000);
    let baseline = server.rss_kib();
    let watch = RssWatch::start(server.pid());
    let digest = push_layer_image(&server, "dev/bomb", "memory", &bomb);
    wait_log(&server, &["SIF build started", &digest], BUILD_DEADLINE);
    let pushed = push_random_image(&server, "dev/other", "1", &[64 << 10]);
    assert!(!pushed.digest.is_empty());
    let r = sif_get(&server, "dev/small:1");
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
    assert_eq!(
        r.body, sif,
        "the SIF downloaded during the bomb build differs"
    );

    assert_failed_transiently(
        &server,
        "dev/bomb:memory",
        "exceeded the 96 MiB memory limit",
        2,
    );
    watch.assert_flat(baseline, "the bomb build");
    let r = sif_get(&server, "dev/small:1");
    assert_eq!(r.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// A delegated memory cgroup: cgroup v2, or cgroup v1's memory hierarchy
// ---------------------------------------------------------------------------------------------

/// A fresh cgroup directory for one test, under the test process's own memory cgroup, whose
/// children get the memory controller: what an admin delegates as `[farm] cgroup`. Removed on
/// drop (the test asserts it was left empty).
struct TestCgroup {
    dir: std::path::PathBuf,
    /// The limit file of its hierarchy: `memory.max` or `memory.limit_in_bytes`.
    limit: &'static str,
}

/// The cgroup mounts of /proc/self/mountinfo: (root, mount point, filesystem type, super options).
fn cgroup_mounts() -> Vec<(String, String, String, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some((
                left.get(3)?.to_string(),
                left.get(4)?.to_string(),
                right.first()?.to_string(),
                right.get(2).unwrap_or(&"").to_string(),
            ))
        })
        .filter(|(_, _, fstype, _)| fstype.starts_with("cgroup"))
        .collect()
}

/// Where this process's cgroup `path` (from /proc/self/cgroup) is, on a mount of `root`.
fn cgroup_dir(mount_root: &str, mount_point: &str, path: &str) -> Option<std::path::PathBuf> {
    let relative = path.strip_prefix(mount_root.trim_end_matches('/'))?;
    Some(std::path::Path::new(mount_point).join(relative.trim_start_matches('/')))
}

impl TestCgroup {
    /// Or why this machine has no memory cgroup for the test to delegate.
    fn create() -> Result<TestCgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = cgroup_mounts();
        let name = unique("hpcreg-test");
        let mut why = Vec::new();
        // cgroup v2: our cgroup must already give its children memory (the test does not
        // change the machine's cgroups), so that the test's directory can give it to builds.
        let v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
        let v2_mount = mounts.iter().find(|m| m.2 == "cgroup2");
        match (v2, v2_mount) {
            (Some(path), Some((root, point, _, _))) => match cgroup_dir(root, point, path) {
                Some(ours) => {
                    let enabled = std::fs::read_to_string(ours.join("cgroup.subtree_control"))
                        .unwrap_or_default();
                    if enabled.split_whitespace().any(|c| c == "memory") {
                        let dir = ours.join(&name);
                        match std::fs::create_dir(&dir).and_then(|()| {
                            std::fs::write(dir.join("cgroup.subtree_control"), "+memory")
                        }) {
                            Ok(()) => {
                                return Ok(TestCgroup {
                                    dir,
                                    limit: "memory.max",
                                })
                            }
                            Err(e) => {
                                let _ = std::fs::remove_dir(&dir);
                                why.push(format!("cgroup v2: {}: {e}", dir.display()));
                            }
                        }
                    } else {
                        why.push(format!(
                            "cgroup v2: {} does not enable memory for its children",
                            ours.display()
                        ));
                    }
                }
                None => why.push(format!("cgroup v2: {path} is outside the mount")),
            },
            _ => why.push("cgroup v2: not mounted".to_owned()),
        }
        // cgroup v1: the memory hierarchy, which has no rule against processes in a parent.
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        });
        let v1_mount = mounts
            .iter()
            .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == "memory"));
        match (v1, v1_mount) {
            (Some(path), Some((root, point, _, _))) => match cgroup_dir(root, point, path) {
                Some(ours) if ours.join("memory.limit_in_bytes").exists() => {
                    let dir = ours.join(&name);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {
                            return Ok(TestCgroup {
                                dir,
                                limit: "memory.limit_in_bytes",
                            })
                        }
                        Err(e) => why.push(format!("cgroup v1 memory: {}: {e}", dir.display())),
                    }
                }
                _ => why.push(format!("cgroup v1 memory: no memory cgroup at {path}")),
            },
            _ => why.push("cgroup v1 memory: not mounted".to_owned()),
        }
        Err(why.join("; "))
    }

    /// [`TestCgroup::create`], or `None` after saying on stderr why the test is skipped.
    fn for_test() -> Option<TestCgroup> {
        match TestCgroup::create() {
            Ok(cg) => {
                eprintln!("farm.cgroup = {} ({})", cg.dir.display(), cg.limit);
                Some(cg)
            }
            Err(why) => {
                eprintln!("skipped: no writable memory cgroup to delegate as farm.cgroup ({why})");
                None
            }
        }
    }

    /// The failure reason of a build the kernel's OOM killer ended under a `limit` cgroup.
    fn oom_reason(&self, limit: &str) -> String {
        format!(
            "exceeded the {limit} memory limit (farm.max_memory_bytes, {}); the kernel's OOM killer ended a process of the build",
            self.limit
        )
    }

    /// Removes the directory, which the server must have left empty.
    fn remove(self) {
        std::fs::remove_dir(&self.dir)
            .unwrap_or_else(|e| panic!("the test's cgroup {}: {e}", self.dir.display()));
    }

    /// The build cgroups the server made here and has not removed.
    fn builds(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("build-"))
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A failed test's leftovers: best effort, the machine's cgroups stay tidy.
        for build in self.builds() {
            let dir = self.dir.join(build);
            for _ in 0..50 {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: a plain signal to a process of the test's build cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                if std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A process seen in one of the server's build cgroups: its command line and its address space
/// limit (from /proc/<pid>/limits).
#[derive(Debug)]
struct Member {
    cgroup: String,
    cmdline: String,
    address_space: String,
}

/// Samples the processes of `cg`'s build cgroups every 10 ms until stopped.
struct MemberWatch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<Member>>,
}

impl MemberWatch {
    fn start(cg: &TestCgroup) -> MemberWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, dir) = (stop.clone(), cg.dir.clone());
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for build in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let procs = std::fs::read_to_string(build.path().join("cgroup.procs"));
                    for pid in procs.unwrap_or_default().lines() {
                        let (Ok(cmdline), Ok(limits)) = (
                            std::fs::read(format!("/proc/{pid}/cmdline")),
                            std::fs::read_to_string(format!("/proc/{pid}/limits")),
                        ) else {
                            continue;
                        };
                        seen.push(Member {
                            cgroup: build.file_name().to_string_lossy().into_owned(),
                            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
                            address_space: limits
                                .lines()
                                .find(|l| l.starts_with("Max address space"))
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        MemberWatch { stop, thread }
    }

    fn stop(self) -> Vec<Member> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_build_over_a_delegated_cgroups_memory_limit_is_oom_killed_there_and_the_cgroup_removed() {
    let Some(cg) = TestCgroup::for_test() else {
        return;
    };
    // 96 MiB of memory in the build's own cgroup (no RLIMIT_AS under a cgroup): plenty for a
    // small image, far too little for 1.5 million distinct entries (about 600 MB resident).
    let server = FarmServer::start(&format!(
        "workers = 1\nmax_attempts = 2\nretry_delay_secs = 0\nmax_memory_bytes = {}\ncgroup = \"{}\"",
        96u64 << 20,
        cg.dir.display()
    ));
    let small = hello_layer();
    push_layer_image(&server, "dev/small", "1", &small);
    wait_sif(&server, "dev/small:1", BUILD_DEADLINE);
    assert_eq!(cg.builds(), Vec::<String>::new(), "after a good build");

    let bomb = distinct_entries(1_500_000);
    let watch = MemberWatch::start(&cg);
    push_layer_image(&server, "dev/bomb", "memory", &bomb);
    // The cgroup's reason, and the kernel's OOM killer acted: only inside the cgroup can it
    // have, the build process having no other limit.
    assert_failed_transiently(&server, "dev/bomb:memory", &cg.oom_reason("96 MiB"), 2);
    let members = watch.stop();
    // The build process itself was in a build cgroup of the delegated directory, with its
    // address space unlimited.
    let build_child = members
        .iter()
        .find(|m| m.cmdline.contains(" build-child "))
        .unwrap_or_else(|| panic!("no build process seen in a build cgroup: {members:?}"));
    assert!(
        build_child
            .cgroup
            .starts_with(&format!("build-{}-", server.pid()))
            && build_child.address_space.contains("unlimited"),
        "{build_child:?}"
    );
    // Each attempt's cgroup went with it.
    assert_eq!(
        cg.builds(),
        Vec::<String>::new(),
        "after the bomb's attempts"
    );
    assert_serving(&server);

    // A normal image still builds under the same limit, in a cgroup of its own.
    push_layer_image(&server, "dev/small", "2", &small);
    wait_sif(&server, "dev/small:2", BUILD_DEADLINE);
    assert_eq!(cg.builds(), Vec::<String>::new(), "after the last build");
    drop(server);
    cg.remove();
}

#[test]
fn a_build_over_the_time_limit_is_killed_and_fails_with_that_reason() {
    let server = FarmServer::start("workers = 1\nmax_attempts = 1\nbuild_timeout_secs = 1");
    // Several seconds of work even on a fast machine.
    push_layer_image(&server, "dev/slow", "1", &distinct_entries(600_000));
    assert_failed_transiently(&server, "dev/slow:1", "exceeded the 1 s time limit", 1);
}

#[test]
fn a_building_job_reports_its_phase_layers_bytes_eta_and_builder() {
    let server = FarmServer::start("workers = 1");
    // Seconds of unpacking even on an idle machine (progress is reported every 2 s), so that
    // the status is seen mid-build.
    let layer = distinct_entries(1_000_000);
    push_layer_image(&server, "dev/progress", "1", &layer);
    let until = std::time::Instant::now() + BUILD_DEADLINE;
    let mut phases = std::collections::BTreeSet::new();
    let mut eta_seen = false;
    loop {
        let s = sif_status(&server, "dev/progress:1");
        match s["state"].as_str() {
            Some("ready") => break,
            Some("failed") => panic!("the build failed: {s}"),
            _ => {}
        }
        let p = &s["progress"];
        let measured = ["unpacking", "compressing", "writing"];
        if s["state"] == "building" && measured.iter().any(|m| p["phase"] == *m) {
            phases.insert(p["phase"].as_str().unwrap_or_default().to_owned());
            assert_eq!(p["layers_total"], 1, "{s}");
            assert_eq!(p["bytes_expected"], layer.len() as u64, "{s}");
            assert!(
                p["bytes_done"].as_u64().unwrap() <= layer.len() as u64,
                "{s}"
            );
            assert!(p["layers_done"].as_u64().unwrap() <= 1, "{s}");
            assert!(
                s["builder"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("local:")),
                "the builder holding the job is named: {s}"
            );
            if p["phase"] == "unpacking" && p["eta_secs"].is_u64() {
                eta_seen = true;
            }
        }
        assert!(std::time::Instant::now() < until, "no SIF in time: {s}");
        thread::sleep(Duration::from_millis(100));
    }
    // The later phases can pass between two reports (every 2 s); the meter's unit test
    // covers them.
    assert!(phases.contains("unpacking"), "phases seen: {phases:?}");
    assert!(eta_seen, "an ETA while unpacking; phases seen: {phases:?}");
}

// ---------------------------------------------------------------------------------------------
// The apptainer backend, contained like the native one
// ---------------------------------------------------------------------------------------------

/// A stand-in `apptainer` for the containment tests: the image's config label
/// `hpcreg-standin-mode=MODE` says how its build misbehaves (allocates 512 MiB, sleeps
/// `sleep_secs` in a child process, or writes 64 MiB to its temporary directory and waits);
/// any other image is built by `full` (the stand-in of `support::sif`).
struct MisbehavingApptainer {
    full: StandInApptainer,
    _dir: tempfile::TempDir,
    path: String,
}

const MISBEHAVING_APPTAINER: &str = r#"#!/bin/sh
set -u
if [ "$#" -eq 1 ] && [ "$1" = "--version" ]; then
    echo "apptainer version 1.3.4-hpcreg-misbehaving"
    exit 0
fi
for src; do :; done
layout=${src#oci:}
layout=${layout%:image}
mode=$(grep -rhoa 'hpcreg-standin-mode=[a-z]*' "$layout/blobs" | head -n 1 | cut -d= -f2)
case "$mode" in
    memory)
        exec perl -e '$n = shift; $x = "x" x $n; print "allocated $n bytes\n"' 536870912 ;;
    sleep)
        echo "stand-in apptainer: sleeping" >&2
        sleep @SLEEP@
        echo "stand-in apptainer: woke up" ;;
    scratch)
        head -c 67108864 /dev/zero >"$APPTAINER_TMPDIR/rootfs.img"
        echo "stand-in apptainer: wrote 64 MiB"
        sleep 60 ;;
    *)
        exec '@FULL@' "$@" ;;
esac
"#;

impl MisbehavingApptainer {
    fn new(sleep_secs: u64) -> MisbehavingApptainer {
        use std::os::unix::fs::PermissionsExt;
        let full = StandInApptainer::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apptainer");
        let script = MISBEHAVING_APPTAINER
            .replace("@SLEEP@", &sleep_secs.to_string())
            .replace("@FULL@", full.path_str());
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        MisbehavingApptainer {
            full,
            path: path.to_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    fn server(&self, keys: &str) -> FarmServer {
        let server = FarmServer::start(&format!(
            "workers = 1\nbackend = \"apptainer\"\napptainer = \"{}\"\nretry_delay_secs = 0\n{keys}",
            self.path
        ));
        wait_log(
            &server,
            &["apptainer version 1.3.4-hpcreg-misbehaving"],
            Duration::from_secs(60),
        );
        server
    }
}

/// Pushes a one-file image whose build misbehaves as `mode` says.
fn push_misbehaving(server: &Server, repo: &str, mode: &str) -> String {
    let layer = hello_layer();
    let label = format!("hpcreg-standin-mode={mode}");
    push_labelled_layer_image(server, repo, "1", &layer, &label)
}

/// The server still takes a push and serves it.
fn assert_serving(server: &Server) {
    let pushed = push_random_image(server, "dev/after", "1", &[64 << 10]);
    let r = Reply::from(
        http()
            .get(server.url(&format!("/v2/dev/after/manifests/{}", pushed.digest)))
            .header("Accept", OCI_MANIFEST)
            .send()
            .unwrap(),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.describe());
}

#[test]
fn an_apptainer_build_over_the_memory_limit_fails_with_that_reason_and_is_retried() {
    let apptainer = MisbehavingApptainer::new(1);
    // 96 MiB of address space (RLIMIT_AS: this test delegates no cgroup); the stand-in
    // asks for 512 MiB, which it gets when the limit is not applied, and then writes no SIF.
    let server = apptainer.server(&format!(
        "max_attempts = 2\nmax_memory_bytes = {}",
        96u64 << 20
    ));
    let baseline = server.rss_kib();
    let watch = RssWatch::start(server.pid());
    let digest = push_misbehaving(&server, "dev/bomb", "memory");
    assert_failed_transiently(
        &server,
        "dev/bomb:1",
        "exceeded the 96 MiB memory limit (farm.max_memory_bytes, RLIMIT_AS)",
        2,
    );
    watch.assert_flat(baseline, "the bomb build");
    let log = sif_get(&server, &format!("{digest}/log")).text();
    assert!(log.contains("Out of memory"), "job log:\n{log}");
    assert_serving(&server);
}

#[test]
fn an_apptainer_build_over_a_delegated_cgroups_memory_limit_is_oom_killed_there() {
    let Some(cg) = TestCgroup::for_test() else {
        return;
    };
    let apptainer = MisbehavingApptainer::new(1);
    // The stand-in's 512 MiB, in a cgroup of 96 MiB (and no RLIMIT_AS, which would make perl
    // report "Out of memory" itself): only the kernel can end it.
    let server = apptainer.server(&format!(
        "max_attempts = 1\nmax_memory_bytes = {}\ncgroup = \"{}\"",
        96u64 << 20,
        cg.dir.display()
    ));
    let digest = push_misbehaving(&server, "dev/bomb", "memory");
    assert_failed_transiently(&server, "dev/bomb:1", &cg.oom_reason("96 MiB"), 1);
    let log = sif_get(&server, &format!("{digest}/log")).text();
    assert!(!log.contains("allocated"), "job log:\n{log}");
    assert_eq!(cg.builds(), Vec::<String>::new());
    assert_serving(&server);
    drop(server);
    cg.remove();
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[test]
fn an_apptainer_build_over_the_time_limit_is_killed_with_everything_it_started() {
    // A duration no other process sleeps, to find the stand-in's child by.
    let secs = 3_000 + u64::from(std::process::id() % 1000);
    let apptainer = MisbehavingApptainer::new(secs);
    let server = apptainer.server("max_attempts = 2\nbuild_timeout_secs = 1");
    let digest = push_misbehaving(&server, "dev/slow", "sleep");
    assert_failed_transiently(&server, "dev/slow:1", "exceeded the 1 s time limit", 2);
    // `sleep` was the stand-in's child, in its process group: it went with it, rather than
    // keep the build's output pipes (and the job) open for an hour.
    let secs = secs.to_string();
    let left = processes_running(&["sleep", &secs]);
    assert!(
        left.is_empty(),
        "the build's `sleep {secs}` outlived it: pids {left:?}"
    );
    let log = sif_get(&server, &format!("{digest}/log")).text();
    let command = format!("$ {} build --force", apptainer.path);
    assert!(
        log.contains(&command) && log.contains("stand-in apptainer: sleeping"),
        "the log has the command and what it said before it was killed:\n{log}"
    );
    assert_serving(&server);
}

#[test]
fn an_apptainer_build_over_the_scratch_bound_fails_for_good_and_the_next_build_succeeds() {
    let apptainer = MisbehavingApptainer::new(1);
    // 32 MiB: plenty for busybox's root filesystem, squashfs and SIF, not for 64 MiB more.
    let server = apptainer.server(&format!(
        "max_attempts = 2\nthreads = 1\nnice = 7\nmax_scratch_bytes = {}",
        32u64 << 20
    ));
    push_misbehaving(&server, "dev/big", "scratch");
    assert_failed_for_limit(
        &server,
        "dev/big:1",
        "writes more than 33554432 bytes to its scratch space (limit set by farm.max_scratch_bytes",
    );

    // The next image builds under the same bounds, and ran under them.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "a", &["/bin/sh", "-c", "echo hello-app"]);
    skopeo_push(&server, &layout, "a", "dev/good", "1");
    let sif = wait_sif(&server, "dev/good:1", BUILD_DEADLINE).reply.body;
    check_runnable_sif(
        "contained",
        &sif,
        tmp.path(),
        &["/bin/busybox", "/.standin-apptainer"],
        "built-by-standin-apptainer\n",
    );
    let checks = apptainer.full.checks();
    assert!(
        checks.contains("ENV GOMAXPROCS=1 ")
            && checks.contains(" NICE=7 MKSQUASHFS_ARGS=-processors 1"),
        "the build ran with `threads = 1` and `nice = 7`:\n{checks}"
    );
    assert_serving(&server);
}
