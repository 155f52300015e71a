//! Helpers of the SIF build farm tests (`farm.rs`):
//!
//! * [`FarmServer`]: the real server started with a `[farm]` TOML config file (`--config`), whose
//!   file can be rewritten before a restart.
//! * `/sif/...` requests and polling through the 202s ([`wait_sif`], [`wait_status`]).
//! * Checking a SIF with the real tools: `siftool list|dump|header`, `unsquashfs -l`, and a loop
//!   mount of the squashfs partition with a chroot into it ([`Mount`], [`check_runnable_sif`]).
//! * Images: `skopeo copy` of an umoci layout, reading a layout's blobs, a busybox image with one
//!   large incompressible layer.
//! * oras-py (installed with pip when missing) and a stand-in `apptainer` executable
//!   ([`StandInApptainer`]) that checks its arguments and the OCI layout it is given.

use std::fs;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use super::*;

pub const SIF_CONFIG_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
pub const SIF_LAYER_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";

/// Time a small image may take from push to a ready SIF on a loaded 2-core machine.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// Pause between two polls of `/sif/...`.
const POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// The server with a [farm] config
// ---------------------------------------------------------------------------------------------

/// The real server started with `--config FILE`, FILE holding `[farm]` plus the given keys.
pub struct FarmServer {
    pub server: Server,
    config: PathBuf,
    _dir: TempDir,
}

impl FarmServer {
    /// Starts the server on a fresh data directory; `farm_keys` are TOML lines of the `[farm]`
    /// table, e.g. `"workers = 2\nmax_attempts = 1"`.
    pub fn start(farm_keys: &str) -> FarmServer {
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-farm-config-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("config.toml");
        write_farm_config(&config, farm_keys);
        let server = Server::start_with(&["--config", config.to_str().expect("utf-8 temp path")]);
        FarmServer {
            server,
            config,
            _dir: dir,
        }
    }

    /// Replaces the `[farm]` keys; they take effect at the next [`Server::restart`].
    pub fn rewrite_config(&self, farm_keys: &str) {
        write_farm_config(&self.config, farm_keys);
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

fn write_farm_config(path: &Path, farm_keys: &str) {
    fs::write(path, format!("[farm]\n{farm_keys}\n")).expect("write farm config");
}

impl Deref for FarmServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for FarmServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

// ---------------------------------------------------------------------------------------------
// /sif/... requests
// ---------------------------------------------------------------------------------------------

/// `METHOD /sif/<rest>` with extra headers; the reply whatever its status.
pub fn sif_request(server: &Server, method: &str, rest: &str, headers: &[(&str, &str)]) -> Reply {
    let url = server.url(&format!("/sif/{rest}"));
    let client = http();
    let mut req = match method {
        "GET" => client.get(&url),
        "HEAD" => client.head(&url),
        "PUT" => client.put(&url),
        "DELETE" => client.delete(&url),
        "POST" => client.post(&url),
        other => panic!("sif_request: unsupported method {other}"),
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}")))
}

/// `GET /sif/<rest>`.
pub fn sif_get(server: &Server, rest: &str) -> Reply {
    sif_request(server, "GET", rest, &[])
}

/// `GET /sif/<reference>/status`, asserting 200 and JSON; returns the JSON.
pub fn sif_status(server: &Server, reference: &str) -> Value {
    let r = sif_get(server, &format!("{reference}/status"));
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /sif/{reference}/status: {}",
        r.describe()
    );
    r.json()
}

/// Checks a 202 from `GET /sif/...`: a `Retry-After` of whole seconds, and a JSON status with the
/// state (queued or building), the position (a number while queued) and the progress. Returns it.
pub fn check_accepted(what: &str, r: &Reply) -> Value {
    assert_eq!(r.status, StatusCode::ACCEPTED, "{what}: {}", r.describe());
    let retry_after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 202 without Retry-After: {}", r.describe()));
    let secs: u64 = retry_after.trim().parse().unwrap_or_else(|_| {
        panic!("{what}: Retry-After {retry_after:?} is not a number of seconds")
    });
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{what}: 202 must carry a JSON status: {}",
        r.describe()
    );
    let body = r.json();
    let state = body["state"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: 202 status without state: {body}"));
    assert!(
        state == "queued" || state == "building",
        "{what}: state {state:?} in a 202: {body}"
    );
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: status is not an object: {body}"));
    assert!(
        obj.contains_key("position"),
        "{what}: 202 status without position: {body}"
    );
    assert!(
        obj.contains_key("progress"),
        "{what}: 202 status without progress: {body}"
    );
    if state == "queued" {
        assert!(
            body["position"].is_u64(),
            "{what}: a queued job's position must be a number: {body}"
        );
    }
    body
}

/// What [`wait_sif`] saw on the way to the SIF.
pub struct Waited {
    /// The final 200 with the SIF.
    pub reply: Reply,
    /// The `state` of every 202 seen, in order.
    pub states: Vec<String>,
}

/// Polls `GET /sif/<reference>` through its 202s (each checked with [`check_accepted`]) until it
/// answers 200; fails on any other status or after `deadline`.
pub fn wait_sif(server: &Server, reference: &str, deadline: Duration) -> Waited {
    let until = Instant::now() + deadline;
    let mut states = Vec::new();
    loop {
        let r = sif_get(server, reference);
        match r.status {
            StatusCode::OK => return Waited { reply: r, states },
            StatusCode::ACCEPTED => {
                let body = check_accepted(&format!("GET /sif/{reference}"), &r);
                states.push(body["state"].as_str().unwrap_or_default().to_owned());
            }
            _ => panic!(
                "GET /sif/{reference} while waiting for the SIF: {}",
                r.describe()
            ),
        }
        if Instant::now() > until {
            panic!(
                "GET /sif/{reference} still 202 after {deadline:?} (states seen: {states:?}); last: {}",
                r.describe()
            );
        }
        thread::sleep(POLL);
    }
}

/// Polls `GET /sif/<reference>/status` until `done(status)`; fails after `deadline` with the
/// last status. Returns the status that satisfied `done`.
pub fn wait_status(
    server: &Server,
    reference: &str,
    what: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + deadline;
    loop {
        let s = sif_status(server, reference);
        if done(&s) {
            return s;
        }
        if Instant::now() > until {
            panic!("/sif/{reference}/status: not {what} after {deadline:?}; last status: {s}");
        }
        thread::sleep(POLL);
    }
}

/// Polls `GET /sif/<reference>` until it stops answering 202; returns that reply.
pub fn wait_settled(server: &Server, reference: &str, deadline: Duration) -> Reply {
    let until = Instant::now() + deadline;
    loop {
        let r = sif_get(server, reference);
        if r.status != StatusCode::ACCEPTED {
            return r;
        }
        check_accepted(&format!("GET /sif/{reference}"), &r);
        if Instant::now() > until {
            panic!(
                "GET /sif/{reference} still 202 after {deadline:?}: {}",
                r.describe()
            );
        }
        thread::sleep(POLL);
    }
}

/// The `Docker-Content-Digest` of `GET /v2/<repo>/manifests/<reference>` (asserts 200).
pub fn manifest_digest(server: &Server, repo: &str, reference: &str) -> String {
    let r = get_manifest(server, repo, reference);
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET /v2/{repo}/manifests/{reference}: {}",
        r.describe()
    );
    let digest = sha256_digest(&r.body);
    assert_eq!(
        r.header("docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    digest
}

// ---------------------------------------------------------------------------------------------
// The server log
// ---------------------------------------------------------------------------------------------

/// Log lines containing every one of `needles`.
pub fn log_lines(server: &Server, needles: &[&str]) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Polls the log until some line contains every one of `needles`; returns those lines.
pub fn wait_log(server: &Server, needles: &[&str], deadline: Duration) -> Vec<String> {
    let until = Instant::now() + deadline;
    loop {
        let lines = log_lines(server, needles);
        if !lines.is_empty() {
            return lines;
        }
        if Instant::now() > until {
            panic!(
                "no line with {needles:?} in the server log after {deadline:?}:\n{}",
                server.log()
            );
        }
        thread::sleep(POLL);
    }
}

/// The value of `key=value` in a tracing log line (`job=3` → `"3"`).
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(needle.as_str()))
        .map(|v| v.trim_matches('"').to_owned())
}

// ---------------------------------------------------------------------------------------------
// SIF inspection with the real tools
// ---------------------------------------------------------------------------------------------

/// One row of `siftool list`.
#[derive(Debug, Clone)]
pub struct SifObject {
    pub id: u32,
    pub group: String,
    pub link: String,
    pub start: u64,
    pub end: u64,
    pub kind: String,
}

/// `siftool list FILE`, parsed.
pub fn siftool_list(sif: &Path) -> Vec<SifObject> {
    require_tool("siftool");
    let out = run(Command::new("siftool").arg("list").arg(sif));
    out.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(
                cols.len(),
                5,
                "unexpected `siftool list` row {l:?} in:\n{out}"
            );
            let (start, end) = cols[3]
                .split_once('-')
                .unwrap_or_else(|| panic!("no start-end in `siftool list` row {l:?}"));
            SifObject {
                id: cols[0].parse().unwrap(),
                group: cols[1].to_owned(),
                link: cols[2].to_owned(),
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
                kind: cols[4].to_owned(),
            }
        })
        .collect()
}

/// `siftool dump ID FILE` into `out`; returns the bytes.
pub fn siftool_dump(sif: &Path, id: u32, out: &Path) -> Vec<u8> {
    let o = run_output(
        Command::new("siftool")
            .arg("dump")
            .arg(id.to_string())
            .arg(sif),
    );
    assert!(
        o.status.success(),
        "siftool dump {id} {}: {}",
        sif.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    fs::write(out, &o.stdout).unwrap();
    o.stdout
}

/// `siftool header FILE` as `(key, value)` pairs.
pub fn siftool_header(sif: &Path) -> Vec<(String, String)> {
    let out = run(Command::new("siftool").arg("header").arg(sif));
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `unsquashfs -l` of a squashfs file: absolute paths of every entry (the root is `/`).
pub fn unsquashfs_list(squashfs: &Path) -> Vec<String> {
    require_tool("unsquashfs");
    let out = run(Command::new("unsquashfs").arg("-l").arg(squashfs));
    out.lines()
        .filter_map(|l| l.strip_prefix("squashfs-root"))
        .map(|p| {
            if p.is_empty() {
                "/".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect()
}

/// Asserts the four objects `apptainer build` writes, in group 1: Def.FILE, two JSON.Generic
/// (inspect-metadata.json, oci-config.json) and the amd64 primary-system squashfs partition, at a
/// 4096-aligned offset. Returns the partition's row.
pub fn assert_apptainer_objects(what: &str, objects: &[SifObject]) -> SifObject {
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Def.FILE",
            "JSON.Generic",
            "JSON.Generic",
            "FS (Squashfs/*System/amd64)"
        ],
        "{what}: `siftool list` objects: {objects:?}"
    );
    for o in objects {
        assert_eq!(
            o.group, "1",
            "{what}: object {} is not in group 1: {objects:?}",
            o.id
        );
        assert!(
            o.end > o.start || o.kind != "FS (Squashfs/*System/amd64)",
            "{what}: empty partition"
        );
    }
    let part = objects[3].clone();
    assert_eq!(
        part.start % 4096,
        0,
        "{what}: partition offset {} is not 4096-aligned",
        part.start
    );
    part
}

/// A squashfs loop-mounted read-only at an offset of a file; unmounted on drop, so a failing
/// assertion never leaves a mount behind.
pub struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// `mount -t squashfs -o loop,ro,offset=OFFSET IMAGE DIR`
    pub fn squashfs_at(image: &Path, offset: u64, dir: &Path) -> Mount {
        require_tool("mount");
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "squashfs", "-o"])
            .arg(format!("loop,ro,offset={offset}"))
            .arg(image)
            .arg(dir));
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Runs `args` chrooted into the mount with only `PATH=/bin` in the environment.
    pub fn chroot(&self, args: &[&str]) -> Output {
        // Absolute: with PATH=/bin in its environment, Command would look for chroot there.
        let chroot = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("chroot (coreutils) is not installed");
        run_output(
            Command::new(chroot)
                .arg(&self.dir)
                .args(args)
                .env_clear()
                .env("PATH", "/bin"),
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// What [`check_runnable_sif`] found in a SIF.
pub struct SifCheck {
    pub path: PathBuf,
    pub objects: Vec<SifObject>,
    pub partition: SifObject,
    /// The partition as `siftool dump` wrote it.
    pub squashfs: Vec<u8>,
    /// `unsquashfs -l` of the partition.
    pub files: Vec<String>,
}

/// Writes `sif` to `work/NAME.sif` and checks it with the real tools: `siftool list` shows the
/// Apptainer objects; `siftool dump` of the partition then `unsquashfs -l` shows `expect_files`
/// and the `/.singularity.d` tree; the partition loop-mounted at its offset runs
/// `/.singularity.d/runscript` in a chroot, which prints `expected_stdout`.
pub fn check_runnable_sif(
    name: &str,
    sif: &[u8],
    work: &Path,
    expect_files: &[&str],
    expected_stdout: &str,
) -> SifCheck {
    let path = work.join(format!("{name}.sif"));
    fs::write(&path, sif).unwrap();
    let objects = siftool_list(&path);
    let partition = assert_apptainer_objects(name, &objects);
    let dumped = work.join(format!("{name}.sqfs"));
    let squashfs = siftool_dump(&path, partition.id, &dumped);
    assert_eq!(
        squashfs.len() as u64,
        partition.end - partition.start,
        "{name}: siftool dump size vs the partition's extent"
    );
    assert_eq!(
        &sif[partition.start as usize..partition.end as usize],
        &squashfs[..],
        "{name}: the dumped partition is not the SIF's bytes at the listed offset"
    );
    let files = unsquashfs_list(&dumped);
    for f in expect_files
        .iter()
        .copied()
        .chain(["/.singularity.d", "/.singularity.d/runscript"])
    {
        assert!(
            files.iter().any(|x| x == f),
            "{name}: `unsquashfs -l` does not show {f}: {files:?}"
        );
    }
    let mount = Mount::squashfs_at(&path, partition.start, &work.join(format!("{name}-mnt")));
    let out = mount.chroot(&["/.singularity.d/runscript"]);
    assert!(
        out.status.success(),
        "{name}: chroot MNT /.singularity.d/runscript failed ({}): stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected_stdout,
        "{name}: output of the runscript in the mounted SIF (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(mount);
    SifCheck {
        path,
        objects,
        partition,
        squashfs,
        files,
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

pub fn skopeo() -> Command {
    require_tool("skopeo");
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// `skopeo copy --format oci oci:LAYOUT:TAG docker://HOST/REPO_TAG`; returns the manifest digest
/// the registry serves for it.
pub fn skopeo_push(
    server: &Server,
    layout: &Path,
    tag: &str,
    repo: &str,
    dest_tag: &str,
) -> String {
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{}/{repo}:{dest_tag}", server.host()),
    ]));
    manifest_digest(server, repo, dest_tag)
}

/// A busybox image running `echo MESSAGE`, with a `size`-byte random layer (from `seed`) on top
/// when `size > 0`, pushed by skopeo as `user` to `REPO:1` with its password; its manifest digest.
pub fn push_busybox_echo(
    server: &Server,
    work: &Path,
    user: &str,
    repo: &str,
    message: &str,
    (seed, size): (u64, u64),
) -> String {
    let layout = work.join(super::unique("layout"));
    super::image::busybox_oci_layout(&layout, "1", &["/bin/sh", "-c", &format!("echo {message}")]);
    if size > 0 {
        add_big_random_layer(&layout, "1", seed, size);
    }
    let creds = super::users::Creds::of(user);
    let out = super::users::skopeo_copy_as(server, &creds, &layout, &format!("{repo}:1"));
    assert!(
        out.status.success(),
        "skopeo push to {repo}:1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = super::users::send(
        "HEAD",
        &server.url(&format!("/v2/{repo}/manifests/1")),
        &super::users::Auth::Basic(&creds),
        None,
    );
    r.header("docker-content-digest").expect("manifest digest")
}

/// An image read back from an OCI layout.
pub struct LayoutImage {
    pub manifest: Value,
    pub manifest_bytes: Vec<u8>,
    pub config: Vec<u8>,
    /// (media type, bytes) of each layer.
    pub layers: Vec<(String, Vec<u8>)>,
}

fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("bad digest {digest}"));
    let data = fs::read(dir.join("blobs").join(alg).join(hex))
        .unwrap_or_else(|e| panic!("read blob {digest}: {e}"));
    assert_eq!(sha256_digest(&data), digest);
    data
}

/// The image tagged `tag` in the OCI layout `dir` (small images only: blobs are read whole).
pub fn read_layout_image(dir: &Path, tag: &str) -> LayoutImage {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json: {index}", dir.display()));
    let manifest_bytes = layout_blob(dir, desc["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let config = layout_blob(dir, manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_owned(),
                layout_blob(dir, l["digest"].as_str().unwrap()),
            )
        })
        .collect();
    LayoutImage {
        manifest,
        manifest_bytes,
        config,
        layers,
    }
}

/// Adds to the busybox image `tag` of `layout` (see [`busybox_oci_layout`]) one more layer holding
/// `/data/random.bin`: `size` bytes of the incompressible pattern `seed`. Built with umoci.
pub fn add_big_random_layer(layout: &Path, tag: &str, seed: u64, size: u64) {
    let image = format!("{}:{tag}", layout.display());
    let work = tempfile::Builder::new()
        .prefix("hpcreg-bigbundle-")
        .tempdir()
        .unwrap();
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let data = bundle.join("rootfs/data");
    fs::create_dir_all(&data).unwrap();
    let mut file = fs::File::create(data.join("random.bin")).unwrap();
    std::io::copy(&mut PatternReader::new(seed, 0, size), &mut file).unwrap();
    file.flush().unwrap();
    drop(file);
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
}

// ---------------------------------------------------------------------------------------------
// oras-py
// ---------------------------------------------------------------------------------------------

/// Makes sure oras-py is importable by `python3`, installing it with pip when it is missing; fails
/// with a clear message when that is impossible.
pub fn ensure_oras_py() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if find_tool("python3").is_none() {
            return Err("python3 is not installed; oras-py needs it (apt-get install -y python3 python3-pip)".into());
        }
        let importable = || {
            Command::new("python3")
                .args(["-c", "import oras.client"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if importable() {
            return Ok(());
        }
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "oras"])
                .args(extra)
                .output()
                .map_err(|e| format!("cannot run `python3 -m pip install --quiet oras`: {e}"))
        };
        let mut out = pip(&[])?;
        // Debian's own python3 refuses pip installs outside a venv (PEP 668); on a test machine
        // installing next to the system packages is what we want.
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("externally-managed-environment")
        {
            out = pip(&["--break-system-packages"])?;
        }
        if !out.status.success() || !importable() {
            return Err(format!(
                "oras-py is not installed and `python3 -m pip install --quiet oras` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

const ORAS_PULL_PY: &str = r#"
import json, sys
import oras.client
target, outdir = sys.argv[1], sys.argv[2]
registry = target.split("/", 1)[0]
client = oras.client.OrasClient(hostname=registry, insecure=True)
files = client.pull(target=target, outdir=outdir)
print(json.dumps(files))
"#;

/// `oras-py` pull of `target` (`HOST/REPO:TAG`, plain http) into `outdir`; returns the files.
pub fn oras_pull(target: &str, outdir: &Path) -> Vec<PathBuf> {
    ensure_oras_py();
    fs::create_dir_all(outdir).unwrap();
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(ORAS_PULL_PY)
        .arg(target)
        .arg(outdir));
    let last = out.lines().last().unwrap_or_default();
    let files: Vec<String> = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("oras-py pull printed no file list ({e}):\n{out}"));
    files.into_iter().map(PathBuf::from).collect()
}

// ---------------------------------------------------------------------------------------------
// A stand-in for `apptainer`
// ---------------------------------------------------------------------------------------------

/// The stand-in's script. `@STATE@` is replaced by the directory it records into.
///
/// It accepts exactly `--version` and `build --force OUT.sif oci:LAYOUT:image`, where OUT.sif is
/// an absolute path in an existing directory and LAYOUT an OCI image layout whose `oci-layout`
/// file names version 1.0.0 and whose `index.json` has exactly one manifest, annotated
/// `org.opencontainers.image.ref.name: image`. `umoci stat` and `umoci raw unpack` then prove that
/// the manifest, the config and every layer blob are present and match their digests (umoci
/// verifies each blob it reads). The SIF is made the way Apptainer lays it out: the unpacked
/// rootfs plus a marker file and a runscript, squashed with mksquashfs, wrapped with `siftool new`
/// and `siftool add` into group 1 (Def.FILE, two JSON.Generic, the amd64 primary partition).
///
/// Every call appends its argv (`CALL`, one argument per line, `END`) to `STATE/calls`, and the
/// outcome of the checks (`OK ...` or `FAIL ...`) to `STATE/checks`. Anything unexpected fails
/// with exit status 64 and a message on stderr.
const STAND_IN_APPTAINER: &str = r#"#!/bin/sh
# Stand-in for `apptainer` in hpc-registry's integration tests (see tests/integration/support/sif.rs).
set -u
STATE='@STATE@'
{
    echo CALL
    for a in "$@"; do printf '%s\n' "$a"; done
    echo END
} >>"$STATE/calls"

fail() {
    echo "stand-in apptainer: FATAL: $*" >&2
    echo "FAIL $*" >>"$STATE/checks"
    exit 64
}

if [ "$#" -eq 1 ] && [ "$1" = "--version" ]; then
    echo "apptainer version 1.3.4-hpcreg-standin"
    exit 0
fi
[ "$#" -ge 1 ] && [ "$1" = "build" ] || fail "expected \`--version\` or \`build\`, got: $*"
shift
[ "$#" -ge 1 ] && [ "$1" = "--force" ] || fail "expected \`build --force\`, got: build $*"
shift
squashfs_args=
if [ "$#" -ge 1 ] && [ "$1" = "--mksquashfs-args" ]; then
    [ "$#" -ge 2 ] || fail "--mksquashfs-args without its value"
    squashfs_args=$2
    shift 2
fi
[ "$#" -eq 2 ] || fail "expected \`build --force [--mksquashfs-args ARGS] OUT.sif oci:LAYOUT:image\`, got $# more arguments: $*"
# What the build ran under, for the tests of its containment.
echo "ENV GOMAXPROCS=${GOMAXPROCS:-} APPTAINER_TMPDIR=${APPTAINER_TMPDIR:-} APPTAINER_CACHEDIR=${APPTAINER_CACHEDIR:-} NICE=$(nice) MKSQUASHFS_ARGS=$squashfs_args" >>"$STATE/checks"
out=$1
src=$2
case "$out" in
    /*.sif) ;;
    *) fail "output $out is not an absolute path ending in .sif" ;;
esac
[ -d "$(dirname "$out")" ] || fail "the directory of $out does not exist"
case "$src" in
    oci:/*:image) ;;
    *) fail "source $src is not oci:/ABSOLUTE/LAYOUT:image" ;;
esac
layout=${src#oci:}
layout=${layout%:image}
[ -d "$layout" ] || fail "layout $layout is not a directory"
[ -f "$layout/oci-layout" ] || fail "$layout has no oci-layout file"
grep -Eq '"imageLayoutVersion"[[:space:]]*:[[:space:]]*"1\.0\.0"' "$layout/oci-layout" || fail "$layout/oci-layout does not name version 1.0.0"
[ -f "$layout/index.json" ] || fail "$layout has no index.json"
[ -d "$layout/blobs/sha256" ] || fail "$layout has no blobs/sha256"
refs=$(grep -o '"org.opencontainers.image.ref.name"[[:space:]]*:[[:space:]]*"[^"]*"' "$layout/index.json" | sed 's/.*"\([^"]*\)"$/\1/')
[ "$refs" = "image" ] || fail "index.json must name exactly one image, 'image'; it names: $refs"

work=$(mktemp -d "${TMPDIR:-/tmp}/standin-apptainer.XXXXXX") || fail "mktemp"
trap 'rm -rf "$work"' EXIT
umoci stat --image "$layout:image" --json >"$work/stat.json" 2>"$work/stat.err" ||
    fail "umoci stat $layout:image failed: $(cat "$work/stat.err")"
umoci raw unpack --rootless --image "$layout:image" "$work/rootfs" >"$work/unpack.log" 2>&1 ||
    fail "umoci raw unpack $layout:image failed (a missing or corrupt blob?): $(cat "$work/unpack.log")"
echo "OK layout $layout: index.json names 'image', manifest, config and layers present and verified" >>"$STATE/checks"
echo "stand-in apptainer: layout ok: $layout"

mkdir -p "$work/rootfs/.singularity.d" || fail "mkdir"
printf '#!/bin/sh\necho built-by-standin-apptainer\n' >"$work/rootfs/.singularity.d/runscript"
chmod 755 "$work/rootfs/.singularity.d/runscript"
echo "built by the stand-in apptainer from $src" >"$work/rootfs/.standin-apptainer"
# shellcheck disable=SC2086 # a list of options, split as apptainer splits it
mksquashfs "$work/rootfs" "$work/part.sqfs" -noappend -comp gzip -all-root -quiet $squashfs_args >"$work/mksquashfs.log" 2>&1 ||
    fail "mksquashfs failed: $(cat "$work/mksquashfs.log")"
printf 'bootstrap: oci\nfrom: %s\n' "$src" >"$work/deffile"
echo '{"data":{"attributes":{}},"type":"container"}' >"$work/inspect-metadata.json"
cp "$work/stat.json" "$work/oci-config.json"
rm -f "$out"
siftool new "$out" >/dev/null &&
    siftool add --datatype 1 --groupid 1 "$out" "$work/deffile" >/dev/null &&
    siftool add --datatype 6 --groupid 1 --filename inspect-metadata.json "$out" "$work/inspect-metadata.json" >/dev/null &&
    siftool add --datatype 6 --groupid 1 --filename oci-config.json "$out" "$work/oci-config.json" >/dev/null &&
    siftool add --datatype 4 --partfs 1 --parttype 2 --partarch 2 --groupid 1 "$out" "$work/part.sqfs" >/dev/null ||
    fail "siftool could not write $out"
echo "OK wrote $out" >>"$STATE/checks"
echo "INFO:    Build complete: $out"
"#;

/// A stand-in `apptainer` executable in a temporary directory (see [`STAND_IN_APPTAINER`]).
pub struct StandInApptainer {
    dir: TempDir,
    pub path: PathBuf,
}

impl StandInApptainer {
    pub fn new() -> StandInApptainer {
        for tool in ["umoci", "mksquashfs", "siftool"] {
            require_tool(tool);
        }
        let dir = tempfile::Builder::new()
            .prefix("hpcreg-apptainer-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("apptainer");
        let state = dir.path().to_str().expect("utf-8 temp path");
        assert!(!state.contains('\''), "temp path with a quote: {state}");
        fs::write(&path, STAND_IN_APPTAINER.replace("@STATE@", state)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("calls"), "").unwrap();
        fs::write(dir.path().join("checks"), "").unwrap();
        StandInApptainer { dir, path }
    }

    /// The argv of every call so far.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let text = fs::read_to_string(self.dir.path().join("calls")).unwrap();
        let mut calls = Vec::new();
        let mut current: Option<Vec<String>> = None;
        for line in text.lines() {
            match (line, current.as_mut()) {
                ("CALL", None) => current = Some(Vec::new()),
                ("END", Some(_)) => calls.push(current.take().unwrap()),
                (arg, Some(args)) => args.push(arg.to_owned()),
                (other, None) => panic!("stand-in calls file: unexpected line {other:?}:\n{text}"),
            }
        }
        calls
    }

    /// What the stand-in's checks recorded (`OK ...` / `FAIL ...` lines).
    pub fn checks(&self) -> String {
        fs::read_to_string(self.dir.path().join("checks")).unwrap()
    }

    /// Forgets the calls and checks recorded so far.
    pub fn reset(&self) {
        fs::write(self.dir.path().join("calls"), "").unwrap();
        fs::write(self.dir.path().join("checks"), "").unwrap();
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}
