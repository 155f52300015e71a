//! Replays the fuzz corpora and every crash input kept from fuzzing (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the same entry points the libFuzzer targets call, on
//! stable Rust without libFuzzer. A panic on any file fails the test and names the file.
//! The registry's own targets are replayed by the main crate's tests/fuzz_replay.rs.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("listing the fuzz corpus").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `entry` on every input of `target`, collecting the files it panics on.
fn replay(target: &str, entry: fn(&[u8])) {
    let files = inputs(target);
    // An empty corpus would make this test pass without checking anything.
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ has no inputs");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("reading a fuzz input");
            std::panic::catch_unwind(|| entry(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} panicked on: {failed:#?}");
}

#[test]
fn layer_corpus() {
    replay("layer", oci2sif::fuzzing::layer);
}

#[test]
fn sif_corpus() {
    replay("sif", oci2sif::fuzzing::sif);
}
