//! `/metrics` on the real server: valid for `promtool check metrics`, moved by a real build and
//! a real SIF download, and free of repository names; the shipped alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::get_text;
use crate::support::sif::{wait_sif, BUILD_DEADLINE};
use crate::support::*;

/// The exposition text parsed into `series -> value` (`name{labels}` exactly as rendered).
fn scrape(server: &Server) -> (String, BTreeMap<String, f64>) {
    let (status, text) = get_text(server, "/metrics");
    assert_eq!(status, 200, "/metrics: {text}");
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse::<f64>().ok()?))
        })
        .collect();
    (text, series)
}

fn value(series: &BTreeMap<String, f64>, name: &str) -> f64 {
    series.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text` (stdin): its lint output, empty when clean.
fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// A one-file tar layer (made by `tar`, as a client's build would).
fn tar_layer(work: &Path) -> Vec<u8> {
    let root = work.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), unique("metrics test image")).unwrap();
    let out = run_output(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg("-")
            .arg("."),
    );
    assert!(out.status.success(), "tar failed");
    out.stdout
}

#[test]
fn a_build_and_a_fetch_move_the_counters_and_histograms_and_promtool_accepts_the_output() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let repo = format!("metrics/{}", unique("secretproject"));
    let (_, before) = scrape(&server);

    let layer = tar_layer(work.path());
    push_single_layer_image(&server, &repo, "v1", OCI_LAYER_TAR, &layer);
    let waited = wait_sif(&server, &format!("{repo}:v1"), BUILD_DEADLINE);
    let sif_len = waited.reply.body.len() as f64;
    assert!(sif_len > 0.0);
    // A second download, of a range: both count, with the bytes actually sent.
    let ranged = http()
        .get(server.url(&format!("/sif/{repo}:v1")))
        .header("Range", "bytes=0-99")
        .send()
        .unwrap();
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(ranged.bytes().unwrap().len(), 100);

    let (text, after) = scrape(&server);
    let moved = |name: &str| value(&after, name) - value(&before, name);

    assert_eq!(
        moved(r#"hpc_registry_sif_builds_total{outcome="ready"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"hpc_registry_sif_build_seconds_count{outcome="ready"}"#),
        1.0,
        "{text}"
    );
    assert!(
        value(
            &after,
            r#"hpc_registry_sif_build_seconds_sum{outcome="ready"}"#
        ) > 0.0,
        "{text}"
    );
    for phase in ["convert", "import"] {
        let count = format!(r#"hpc_registry_build_phase_seconds_count{{phase="{phase}"}}"#);
        assert_eq!(moved(&count), 1.0, "{count}:\n{text}");
    }
    // The histogram has buckets (not a summary), ending in +Inf with the count.
    assert_eq!(
        value(
            &after,
            r#"hpc_registry_sif_build_seconds_bucket{outcome="ready",le="+Inf"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, r#"hpc_registry_build_jobs{state="ready"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, r#"hpc_registry_build_jobs{state="queued"}"#),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "hpc_registry_build_oldest_queued_seconds"),
        0.0,
        "{text}"
    );

    // `--dev` serves anonymous callers: both downloads are anonymous fetches.
    assert_eq!(
        moved(r#"hpc_registry_sif_fetches_total{auth="anonymous"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        moved("hpc_registry_sif_bytes_served_total"),
        sif_len + 100.0,
        "{text}"
    );
    let sif_latency = r#"hpc_registry_http_request_duration_seconds_count{route="/sif/{reference}",method="GET"}"#;
    assert!(moved(sif_latency) >= 2.0, "{sif_latency}:\n{text}");
    let put_latency = r#"hpc_registry_http_request_duration_seconds_count{route="/v2/{name}/manifests/{reference}",method="PUT"}"#;
    assert_eq!(moved(put_latency), 1.0, "{put_latency}:\n{text}");

    assert!(
        moved("hpc_registry_blob_bytes_committed_total") >= layer.len() as f64,
        "{text}"
    );
    assert!(
        value(&after, "hpc_registry_storage_used_bytes") >= (layer.len() as f64 + sif_len),
        "{text}"
    );
    assert!(
        value(&after, "hpc_registry_storage_filesystem_free_bytes") > 0.0,
        "{text}"
    );
    assert!(
        value(&after, "hpc_registry_storage_filesystem_size_bytes")
            >= value(&after, "hpc_registry_storage_filesystem_free_bytes"),
        "{text}"
    );
    assert!(
        value(&after, "hpc_registry_build_workers_alive") >= 1.0,
        "{text}"
    );
    assert!(
        after.contains_key("hpc_registry_audit_queue_records"),
        "{text}"
    );
    // SQLite's heap: at least the schema and the page cache of the connections just used.
    assert!(
        value(&after, "hpc_registry_sqlite_memory_bytes") > 64.0 * 1024.0,
        "{text}"
    );
    assert!(moved("hpc_registry_audit_records_total") > 0.0, "{text}");
    assert!(
        after.contains_key("hpc_registry_audit_writer_lag_seconds"),
        "{text}"
    );

    // Bounded cardinality: no repository name, tag or digest is a label value.
    assert!(
        !text.contains("secretproject") && !text.contains("sha256:"),
        "{text}"
    );

    let (ok, report) = promtool_check_metrics(&text);
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n--- metrics ---\n{text}"
    );
}

/// A push over a namespace's quota is refused (403) and counted.
#[test]
fn quota_rejections_are_counted() {
    use crate::support::users::{send, Auth, Creds, Setup};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[quota]\ndefault_user = \"16KiB\"\n").unwrap();
    let setup = Setup::new().user("bob", &[]);
    let server = Server::start_secure(&setup, &["--config", config.to_str().unwrap()]);
    let (_, before) = scrape(&server);
    let data = random_bytes(20 * 1024);
    let bob = Creds::of("bob");
    let r = send(
        "POST",
        &server.url(&format!(
            "/v2/bob/x/blobs/uploads/?digest={}",
            sha256_digest(&data)
        )),
        &Auth::Basic(&bob),
        Some(("application/octet-stream", data)),
    );
    assert_eq!(r.status.as_u16(), 403, "{}", r.describe());
    let (text, after) = scrape(&server);
    let name = "hpc_registry_quota_rejections_total";
    assert_eq!(value(&after, name) - value(&before, name), 1.0, "{text}");
    assert!(!text.contains("bob"), "{text}");
}

/// The shipped alert rules load, and their unit tests (deploy/prometheus/alerts_test.yml) pass:
/// each alert fires on the series that should raise it and stays quiet otherwise.
#[test]
fn alert_rules_pass_promtool_check_rules_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let promtool = require_tool("promtool");
    let out = run_output(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(dir.join("alerts.yml")),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
    let out = run_output(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "alerts_test.yml",
    ]));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Grafana dashboard is valid JSON whose every query names a metric the server exports.
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/hpc-registry.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("dashboard JSON parses");
    let exported =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/telemetry.rs"))
            .unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            queries += 1;
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("hpc_registry_"))
            {
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    exported.contains(&format!("\"{base}\""))
                        || exported.contains(&format!("\"{base}\";")),
                    "panel {:?} queries {name}, which src/telemetry.rs does not export",
                    panel["title"]
                );
            }
        }
    }
    assert!(queries >= 8);
}
