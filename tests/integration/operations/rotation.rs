//! Audit rotation: the chain continues across rotated (gzip-compressed) files, queries and
//! `admin audit verify` read them all, a restart resumes after a rotation, and an edit in an old
//! compressed file is caught with its file and line named.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::start_with_config;
use crate::support::users::{cli, cli_output};
use crate::support::*;

/// The rotated, compressed files in the audit directory, sorted.
fn rotated(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-") && n.ends_with(".jsonl.gz"))
        .collect();
    names.sort();
    names
}

fn pulls(server: &Server, n: usize) {
    for _ in 0..n {
        let r = http()
            .get(server.url("/v2/rot/app/manifests/1"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[test]
fn the_chain_verifies_across_rotated_files_and_an_edit_in_an_old_compressed_one_is_caught() {
    let (mut server, _dir, _) =
        start_with_config("[audit]\nrotate_bytes = \"4KiB\"\ncompress = \"gzip\"\n");
    push_random_image(&server, "rot/app", "1", &[100]);
    pulls(&server, 40);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rotated(server.data_dir()).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no rotation: {:?}",
            rotated(server.data_dir())
        );
        pulls(&server, 5);
        std::thread::sleep(Duration::from_millis(100));
    }
    // A restart resumes the chain after a rotation.
    server.restart();
    pulls(&server, 20);
    let dd = server.data_dir().display().to_string();
    let out = cli(
        &["admin", "audit", "verify", "--data-dir", &dd, "--json"],
        &[],
        "",
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["files"].as_array().unwrap().len() >= 4, "{report:#}");
    // Queries find records in every file: the first record is in the oldest one.
    let all = cli(
        &[
            "admin",
            "audit",
            "--data-dir",
            &dd,
            "--json",
            "--limit",
            "100000",
        ],
        &[],
        "",
    );
    let seqs: Vec<u64> = all
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Every record, in order (the server may have written more since the verify: builds).
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{all}");
    assert!(
        seqs.len() as u64 >= report["last_seq"].as_u64().unwrap(),
        "{all}"
    );
    server.terminate();

    // An edit in the oldest, compressed file: found there, at its line.
    let files = rotated(server.data_dir());
    let old = server.data_dir().join("audit").join(&files[0]);
    let text = run(Command::new("gzip").arg("-dc").arg(&old));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Every record has an outcome; which one line 3 holds depends on when the build started.
    lines[2] = lines[2].replacen("\"outcome\":\"", "\"outcome\":\"edited-", 1);
    assert_ne!(lines[2], text.lines().nth(2).unwrap());
    let plain = old.with_extension("");
    std::fs::write(
        &plain,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    std::fs::remove_file(&old).unwrap();
    run(Command::new("gzip").arg(&plain));
    let out = cli_output(&["admin", "audit", "verify", "--data-dir", &dd], &[], "");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("{} line 3", files[0])), "{said}");
    assert!(said.contains("edited"), "{said}");
}
