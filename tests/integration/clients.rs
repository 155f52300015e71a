//! Real clients against the server on a loopback port: the Docker engine, skopeo, podman, the Rust
//! `oci-client` crate, and a hand-built buildx-style index with an attestation manifest.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// Parses the JSON a tool printed, or fails with the text.
fn parse_json(what: &str, text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what} did not print JSON ({e}):\n{text}"))
}

/// Layer digests listed in a manifest body.
fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest without layers: {manifest}"))
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// GET the manifest `repo:reference`, assert 200 and that the body's own mediaType, the
/// Content-Type and the Docker-Content-Digest all agree; assert every blob it references is served.
/// Returns (digest, parsed manifest, raw bytes).
fn assert_image_served(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
) -> (String, Value, Vec<u8>) {
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
        Some(digest.as_str()),
        "Docker-Content-Digest of GET {repo}:{reference} must be the sha256 of the body"
    );
    let content_type = r.header("content-type").unwrap_or_default();
    assert_eq!(
        content_type, media_type,
        "Content-Type of GET {repo}:{reference}"
    );
    let m = r.json();
    // `mediaType` is optional in an OCI manifest (umoci and skopeo leave it out); if present it must agree.
    if let Some(mt) = m["mediaType"].as_str() {
        assert_eq!(
            mt, media_type,
            "mediaType in the body of {repo}:{reference}"
        );
    }
    let config = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    for d in std::iter::once(config).chain(layer_digests(&m)) {
        assert_eq!(
            head_blob(server, repo, &d),
            StatusCode::OK,
            "HEAD /v2/{repo}/blobs/{d}"
        );
        let blob = get_blob(server, repo, &d);
        assert_eq!(
            sha256_digest(&blob),
            d,
            "GET /v2/{repo}/blobs/{d} returned other bytes"
        );
    }
    (digest, m, r.body)
}

/// `digest: sha256:...` from `docker push` / `docker pull` output.
fn digest_in_output(out: &str) -> Option<String> {
    out.split_whitespace()
        .find(|w| w.starts_with("sha256:") && w.len() == 71)
        .map(str::to_owned)
}

#[test]
fn docker_push_pull_and_run_busybox() {
    let server = Server::start();
    let d = docker();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh", "-c", "echo hello-from-cmd"]);
    let local = format!("{}:1", unique("hpcreg-test/busybox"));
    let archive = tmp.path().join("busybox.tar");
    oci_layout_to_docker_archive(&layout, "1", &archive, &local);
    run(d.cmd().arg("load").arg("-i").arg(&archive));

    let remote = format!("{}/alice/busybox:1", server.host());
    run(d.cmd().args(["tag", &local, &remote]));
    let pushed = run(d.cmd().args(["push", &remote]));
    let pushed_digest = digest_in_output(&pushed)
        .unwrap_or_else(|| panic!("no digest in `docker push` output:\n{pushed}"));

    // What docker pushed is stored and served intact (Docker 20.10 pushes Docker v2 schema 2).
    let (digest, manifest, _) = assert_image_served(&server, "alice/busybox", "1", DOCKER_MANIFEST);
    assert_eq!(
        digest, pushed_digest,
        "digest docker push reported vs the registry's"
    );
    assert_eq!(layer_digests(&manifest).len(), 1);

    // Remove it locally, pull it back, run it.
    run(d.cmd().args(["rmi", &remote, &local]));
    let gone = run_output(d.cmd().args(["image", "inspect", &remote]));
    assert!(
        !gone.status.success(),
        "image still present after docker rmi"
    );
    let pulled = run(d.cmd().args(["pull", &remote]));
    assert_eq!(
        digest_in_output(&pulled).as_deref(),
        Some(pushed_digest.as_str()),
        "digest docker pull reported:\n{pulled}"
    );
    let repo_digests = run(d.cmd().args([
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &remote,
    ]));
    assert!(
        repo_digests.contains(&format!("{}/alice/busybox@{pushed_digest}", server.host())),
        "RepoDigests after pull: {repo_digests}"
    );

    // The image holds only bin/busybox and bin/sh, so `echo` is the shell's builtin.
    let hello = run(d.cmd().args([
        "run",
        "--rm",
        "--network",
        "none",
        &remote,
        "sh",
        "-c",
        "echo hello",
    ]));
    assert_eq!(hello.trim(), "hello");
    // The config survived the round trip: the image's own CMD runs.
    let cmd_out = run(d.cmd().args(["run", "--rm", "--network", "none", &remote]));
    assert_eq!(cmd_out.trim(), "hello-from-cmd");

    // A pull by digest works too.
    let by_digest = format!("{}/alice/busybox@{pushed_digest}", server.host());
    run(d.cmd().args(["rmi", &remote]));
    run(d.cmd().args(["pull", &by_digest]));
    run(d.cmd().args(["rmi", &by_digest]));
}

/// The user tags (registry-owned `T.sif` left out) in `skopeo list-tags` output, in its order.
fn skopeo_tags(out: &str) -> Vec<String> {
    let list = parse_json("skopeo list-tags", out);
    let tags: Vec<String> = serde_json::from_value(list["Tags"].clone())
        .unwrap_or_else(|e| panic!("skopeo list-tags without a Tags array ({e}): {out}"));
    user_tags(&tags)
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

#[test]
fn skopeo_copy_oci_and_v2s2_inspect_list_tags_delete() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "latest", &["/bin/sh"]);
    let src = format!("oci:{}:latest", layout.display());
    let repo = "alice/img";
    let dest = |tag: &str| format!("docker://{}/{repo}:{tag}", server.host());

    run(skopeo().args(["copy", "--dest-tls-verify=false", &src, &dest("1")]));
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &src,
        &dest("v2s2"),
    ]));

    let (oci_digest, oci_manifest, oci_raw) = assert_image_served(&server, repo, "1", OCI_MANIFEST);
    let (v2_digest, v2_manifest, v2_raw) =
        assert_image_served(&server, repo, "v2s2", DOCKER_MANIFEST);
    assert_ne!(oci_digest, v2_digest);
    assert_eq!(v2_manifest["config"]["mediaType"], DOCKER_CONFIG);

    // skopeo inspect sees the same digest and layers the registry serves.
    for (tag, digest, manifest, raw) in [
        ("1", &oci_digest, &oci_manifest, &oci_raw),
        ("v2s2", &v2_digest, &v2_manifest, &v2_raw),
    ] {
        let out = run(skopeo().args(["inspect", "--tls-verify=false", &dest(tag)]));
        let info = parse_json("skopeo inspect", &out);
        assert_eq!(
            info["Digest"].as_str(),
            Some(digest.as_str()),
            "skopeo inspect {tag}: {out}"
        );
        let layers: Vec<String> = info["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no Layers: {out}"))
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            layers,
            layer_digests(manifest),
            "skopeo inspect {tag} layers"
        );
        assert_eq!(info["Architecture"], "amd64");
        assert_eq!(info["Os"], "linux");
        let tags: Vec<String> = info["RepoTags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(
            user_tags(&tags),
            ["1", "v2s2"],
            "RepoTags in skopeo inspect {tag} (lexical order)"
        );

        let raw_out =
            run_output(skopeo().args(["inspect", "--raw", "--tls-verify=false", &dest(tag)]));
        assert!(
            raw_out.status.success(),
            "skopeo inspect --raw {tag} failed"
        );
        let mut got = raw_out.stdout.clone();
        if got.last() == Some(&b'\n') && raw.last() != Some(&b'\n') {
            got.pop();
        }
        assert!(
            got == *raw,
            "skopeo inspect --raw {tag} is not the stored manifest"
        );
    }

    let out = run(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repo}", server.host()),
    ]));
    assert_eq!(
        skopeo_tags(&out),
        ["1", "v2s2"],
        "skopeo list-tags (lexical order): {out}"
    );

    // Copy back out of the registry (pull direction) into a fresh layout.
    let back = tmp.path().join("back");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        &dest("1"),
        &format!("oci:{}:copy", back.display()),
    ]));

    // skopeo delete resolves the tag and deletes the manifest by digest.
    run(skopeo().args(["delete", "--tls-verify=false", &dest("v2s2")]));
    for reference in ["v2s2", v2_digest.as_str()] {
        let r = get_manifest(&server, repo, reference);
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "GET {repo}:{reference} after skopeo delete: {}",
            r.describe()
        );
        assert!(
            r.error_codes().iter().any(|c| c == "MANIFEST_UNKNOWN"),
            "error code of GET {repo}:{reference} after delete: {}",
            r.describe()
        );
    }
    let r = get_manifest(&server, repo, "1");
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the other tag must survive: {}",
        r.describe()
    );
    let out = run(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repo}", server.host()),
    ]));
    assert_eq!(
        skopeo_tags(&out),
        ["1"],
        "skopeo list-tags after delete: {out}"
    );
    let failed = run_fail(skopeo().args(["inspect", "--tls-verify=false", &dest("v2s2")]));
    assert!(
        failed.contains("manifest unknown")
            || failed.contains("MANIFEST_UNKNOWN")
            || failed.contains("not found"),
        "skopeo inspect of the deleted tag: {failed}"
    );
}

fn podman(root: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .env("TMPDIR", root.join("tmp"));
    c
}

#[test]
fn podman_push_and_pull() {
    let server = Server::start();
    // podman names an image pulled from `oci:DIR` after DIR, and names must be lower case.
    let tmp = tempfile::Builder::new()
        .prefix(&unique("hpcreg-podman"))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(tmp.path().join("p/tmp")).unwrap();
    let p = tmp.path().join("p");
    let layout = tmp.path().join("oci");
    busybox_oci_layout(&layout, "1", &["/bin/sh"]);

    let out = run(podman(&p).args(["pull", &format!("oci:{}:1", layout.display())]));
    let image_id = out
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("podman pull printed no image id:\n{out}"))
        .to_owned();
    let remote = format!("{}/alice/podman:1", server.host());
    let digest_file = tmp.path().join("digest");
    run(podman(&p)
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg(&image_id)
        .arg(format!("docker://{remote}")));
    let pushed_digest = std::fs::read_to_string(&digest_file)
        .unwrap()
        .trim()
        .to_owned();

    let r = get_manifest(&server, "alice/podman", "1");
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET manifest pushed by podman: {}",
        r.describe()
    );
    let media_type = r.header("content-type").unwrap_or_default();
    assert!(
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST,
        "Content-Type of the manifest podman pushed: {}",
        r.describe()
    );
    let (digest, _, _) = assert_image_served(&server, "alice/podman", "1", &media_type);
    assert_eq!(
        digest, pushed_digest,
        "podman --digestfile vs the registry's digest"
    );

    // Pull it back into an empty store.
    let p2 = tmp.path().join("p2");
    std::fs::create_dir_all(p2.join("tmp")).unwrap();
    run(podman(&p2).args(["pull", "--tls-verify=false", &format!("docker://{remote}")]));
    let digest_seen =
        run(podman(&p2).args(["image", "inspect", "--format", "{{.Digest}}", &remote]));
    assert_eq!(
        digest_seen.trim(),
        pushed_digest,
        "digest of the image podman pulled back"
    );
}

#[test]
fn oci_client_push_and_pull() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE;
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let server = Server::start();
    let host = server.host();
    let big = random_bytes(3 * 1024 * 1024 + 17);
    let small = random_bytes(10 * 1024);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&big), sha256_digest(&small)]},
    }))
    .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (tag, monolithic) in [("chunked", false), ("monolithic", true)] {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            use_monolithic_push: monolithic,
            ..Default::default()
        });
        let reference: Reference = format!("{host}/alice/ociclient:{tag}").parse().unwrap();
        let layers = vec![
            ImageLayer::oci_v1(big.clone(), None),
            ImageLayer::oci_v1(small.clone(), None),
        ];
        let (pulled, pushed_manifest_digest) = rt.block_on(async {
            client
                .push(
                    &reference,
                    &layers,
                    Config::oci_v1(config.clone(), None),
                    &RegistryAuth::Anonymous,
                    None,
                )
                .await
                .unwrap_or_else(|e| panic!("oci-client push ({tag}): {e:?}"));
            let (_, digest) = client
                .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
                .await
                .unwrap_or_else(|e| panic!("oci-client pull_image_manifest ({tag}): {e:?}"));
            let pulled = client
                .pull(
                    &reference,
                    &RegistryAuth::Anonymous,
                    vec![IMAGE_LAYER_MEDIA_TYPE],
                )
                .await
                .unwrap_or_else(|e| panic!("oci-client pull ({tag}): {e:?}"));
            (pulled, digest)
        });
        // oci-client collects layers in completion order: match them by digest.
        let mut got: Vec<String> = pulled
            .layers
            .iter()
            .map(|l| sha256_digest(&l.data))
            .collect();
        got.sort();
        let mut want = vec![sha256_digest(&big), sha256_digest(&small)];
        want.sort();
        assert_eq!(got, want, "layers pulled back by oci-client ({tag})");
        let manifest = pulled.manifest.as_ref().expect("pulled manifest");
        let order: Vec<&str> = manifest.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(
            order,
            [sha256_digest(&big), sha256_digest(&small)],
            "layer order in the manifest ({tag})"
        );
        assert!(
            pulled.config.data.as_ref() == config.as_slice(),
            "config bytes differ ({tag})"
        );
        assert_eq!(
            pulled.digest.as_deref(),
            Some(pushed_manifest_digest.as_str())
        );

        let (digest, _, _) = assert_image_served(&server, "alice/ociclient", tag, OCI_MANIFEST);
        assert_eq!(
            digest, pushed_manifest_digest,
            "oci-client's manifest digest vs the registry's"
        );
    }
}

#[test]
fn buildx_style_index_with_attestation_manifest() {
    let server = Server::start();
    let repo = "alice/multiarch";

    // Two platform images.
    let mut children: Vec<(Vec<u8>, Value)> = Vec::new(); // (manifest bytes, index entry)
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let layer = random_bytes(4096);
        let mut cfg = json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        });
        if let Some(v) = variant {
            cfg["variant"] = json!(v);
        }
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &cfg),
            "layers": [descriptor(OCI_LAYER_GZIP, &layer)],
        }))
        .unwrap();
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        let mut entry = descriptor(OCI_MANIFEST, &manifest);
        entry["platform"] = platform;
        children.push((manifest, entry));
        blobs.push(cfg);
        blobs.push(layer);
    }

    // The attestation manifest buildx adds for the amd64 image.
    let amd64_digest = sha256_digest(&children[0].0);
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "pkg:docker/alice/multiarch@latest?platform=linux%2Famd64",
                     "digest": {"sha256": amd64_digest.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1"},
    }))
    .unwrap();
    let att_cfg = serde_json::to_vec(&json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&statement)]},
    }))
    .unwrap();
    let mut att_layer = descriptor("application/vnd.in-toto+json", &statement);
    att_layer["annotations"] =
        json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"});
    let att_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &att_cfg),
        "layers": [att_layer],
    }))
    .unwrap();
    let mut att_entry = descriptor(OCI_MANIFEST, &att_manifest);
    att_entry["annotations"] = json!({
        "vnd.docker.reference.digest": amd64_digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    att_entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    children.push((att_manifest, att_entry));
    blobs.push(att_cfg);
    blobs.push(statement);

    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
    }))
    .unwrap();

    // Push like buildx: blobs, then children by digest, then the index by tag.
    for b in &blobs {
        push_blob(&server, repo, b);
    }
    for (m, _) in &children {
        put_manifest_ok(&server, repo, &sha256_digest(m), OCI_MANIFEST, m);
    }
    let index_digest = put_manifest_ok(&server, repo, "latest", OCI_INDEX, &index);

    // The index comes back byte-identical, by tag and by digest, with its media type.
    for reference in ["latest", index_digest.as_str()] {
        let r = get_manifest(&server, repo, reference);
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET index {reference}: {}",
            r.describe()
        );
        assert!(r.body == index, "index {reference} is not byte-identical");
        assert_eq!(r.header("content-type").as_deref(), Some(OCI_INDEX));
        assert_eq!(
            r.header("docker-content-digest").as_deref(),
            Some(index_digest.as_str())
        );
        let h = http()
            .head(server.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", ACCEPT_ALL_MANIFESTS)
            .send()
            .unwrap();
        assert_eq!(h.status(), StatusCode::OK, "HEAD index {reference}");
        assert_eq!(
            h.headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok()),
            Some(index_digest.as_str())
        );
        assert_eq!(
            h.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(index.len().to_string().as_str()),
            "Content-Length of HEAD index"
        );
    }
    // Every child, the attestation included, by digest.
    for (m, entry) in &children {
        let d = sha256_digest(m);
        let r = get_manifest(&server, repo, &d);
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET child {d} ({}): {}",
            entry["platform"],
            r.describe()
        );
        assert!(r.body == *m, "child {d} is not byte-identical");
        assert_eq!(
            r.header("docker-content-digest").as_deref(),
            Some(d.as_str())
        );
        assert_eq!(r.header("content-type").as_deref(), Some(OCI_MANIFEST));
    }
    for b in &blobs {
        let d = sha256_digest(b);
        assert!(get_blob(&server, repo, &d) == *b, "blob {d} differs");
    }
    // Children pushed by digest carry no tag.
    let r = Reply::from(
        http()
            .get(server.url(&format!("/v2/{repo}/tags/list")))
            .send()
            .unwrap(),
    );
    assert_eq!(r.status, StatusCode::OK, "tags/list: {}", r.describe());
    let tags: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).expect("tags array");
    assert_eq!(user_tags(&tags), ["latest"], "tags/list: {}", r.describe());
}
