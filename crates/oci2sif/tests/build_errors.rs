//! `build_sif` refuses unusable input with errors a researcher can act on, before writing
//! anything to the output.

use std::io::{Cursor, Read};

use oci2sif::{build_sif, build_sif_into, BuildError, BuildInput, BuildOptions, LayerInput};

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]}}"#;

fn layer(media_type: &str, bytes: &'static [u8]) -> LayerInput<'static> {
    LayerInput {
        media_type: media_type.to_string(),
        reader: Box::new(bytes) as Box<dyn Read + Send>,
    }
}

fn try_build(
    config: &[u8],
    layers: Vec<LayerInput<'_>>,
    opts: &BuildOptions,
) -> (Result<(), BuildError>, Vec<u8>) {
    let input = BuildInput {
        config_json: config.to_vec(),
        layers,
        source_ref: "127.0.0.1:5000/alice/tool:1".to_string(),
    };
    let mut out = Cursor::new(Vec::new());
    let result = build_sif(input, opts, &mut out).map(|_| ());
    (result, out.into_inner())
}

/// [`try_build`] into a file, where the packed blocks are copied in the kernel.
fn try_build_to_file(
    layers: Vec<LayerInput<'_>>,
    opts: &BuildOptions,
) -> (Result<(), BuildError>, u64) {
    let input = BuildInput {
        config_json: CONFIG.to_vec(),
        layers,
        source_ref: "127.0.0.1:5000/alice/tool:1".to_string(),
    };
    let mut out = tempfile::tempfile_in(&opts.work_dir).unwrap();
    let result = build_sif_into(input, opts, &mut out).map(|_| ());
    (result, out.metadata().unwrap().len())
}

fn opts(work_dir: &std::path::Path) -> BuildOptions {
    BuildOptions {
        work_dir: work_dir.to_path_buf(),
        ..BuildOptions::default()
    }
}

#[test]
fn image_without_layers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (result, out) = try_build(CONFIG, vec![], &opts(dir.path()));
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::NoLayers { count: 0 }), "{err:?}");
    assert!(err.to_string().contains("nothing to convert"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn non_layer_blobs_do_not_count_as_layers() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = vec![layer("application/vnd.oci.image.config.v1+json", b"{}")];
    let (result, _) = try_build(CONFIG, blobs, &opts(dir.path()));
    assert!(
        matches!(result, Err(BuildError::NoLayers { count: 1 })),
        "{result:?}"
    );
}

#[test]
fn bad_config_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = vec![layer("application/vnd.oci.image.layer.v1.tar", b"")];
    let (result, _) = try_build(
        br#"{"config":{"Env":"not a list"}}"#,
        blobs,
        &opts(dir.path()),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::BadConfig(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the image config is not valid JSON"),
        "{err}"
    );
}

#[test]
fn corrupt_layer_names_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = vec![layer(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        b"this is not gzip at all",
    )];
    let (result, out) = try_build(CONFIG, blobs, &opts(dir.path()));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, BuildError::Layer { index: 1, media_type, .. } if media_type.ends_with("+gzip")),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("layer 1 of the image (application/vnd.oci.image.layer.v1.tar+gzip): "));
    assert!(out.is_empty());
}

#[test]
fn missing_work_dir_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let blobs = vec![layer("application/vnd.oci.image.layer.v1.tar", b"")];
    let (result, _) = try_build(CONFIG, blobs, &opts(&missing));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, BuildError::WorkDir { path, .. } if *path == missing),
        "{err:?}"
    );
}

/// A one-file layer tar holding `size` bytes that do not compress.
fn incompressible_layer(size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "blob", &data[..]).unwrap();
    builder.into_inner().unwrap()
}

fn scratch_opts(work_dir: &std::path::Path, max_scratch_bytes: u64) -> BuildOptions {
    let mut o = opts(work_dir);
    o.limits.max_scratch_bytes = max_scratch_bytes;
    o
}

#[test]
fn unpacking_past_the_scratch_limit_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tar: &'static [u8] = Box::leak(incompressible_layer(512 << 10).into_boxed_slice());
    let (result, _) = try_build(
        CONFIG,
        vec![layer("application/vnd.oci.image.layer.v1.tar", tar)],
        &scratch_opts(dir.path(), 256 << 10),
    );
    let err = result.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(
        err.to_string().contains("farm.max_scratch_bytes"),
        "the error should name the scratch limit: {err}"
    );
}

#[test]
fn squashfs_and_sif_count_against_the_scratch_limit() {
    // The files fit (300 KiB spool of a 500 KiB budget), the SIF (its squashfs written in
    // place) next to them does not.
    let dir = tempfile::tempdir().unwrap();
    let tar: &'static [u8] = Box::leak(incompressible_layer(300 << 10).into_boxed_slice());
    let (result, _) = try_build(
        CONFIG,
        vec![layer("application/vnd.oci.image.layer.v1.tar", tar)],
        &scratch_opts(dir.path(), 500 << 10),
    );
    let err = result.unwrap_err();
    assert!(
        matches!(err, BuildError::ScratchFull { limit } if limit == 500 << 10),
        "{err}"
    );
    // With room for the spool and the SIF it builds.
    let (result, out) = try_build(
        CONFIG,
        vec![layer("application/vnd.oci.image.layer.v1.tar", tar)],
        &scratch_opts(dir.path(), 2 << 20),
    );
    result.unwrap();
    assert!(out.len() > 300 << 10);
}

#[test]
fn blocks_copied_in_the_kernel_count_against_the_scratch_limit_too() {
    // As above, into a file: the 300 KiB of packed blocks go in as one file range, which the
    // limit must stop before it is copied.
    let dir = tempfile::tempdir().unwrap();
    let tar: &'static [u8] = Box::leak(incompressible_layer(300 << 10).into_boxed_slice());
    let blobs = || vec![layer("application/vnd.oci.image.layer.v1.tar", tar)];
    let (result, len) = try_build_to_file(blobs(), &scratch_opts(dir.path(), 500 << 10));
    let err = result.unwrap_err();
    assert!(
        matches!(err, BuildError::ScratchFull { limit } if limit == 500 << 10),
        "{err}"
    );
    assert!(
        len < 300 << 10,
        "{len} bytes: the packed blocks went in past the limit"
    );
    let (result, len) = try_build_to_file(blobs(), &scratch_opts(dir.path(), 2 << 20));
    result.unwrap();
    assert!(len > 300 << 10);
}
