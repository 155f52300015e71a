//! Property tests: random sequences of layer operations (hostile names, symlinks, hardlinks,
//! whiteouts, devices, odd typeflags) and randomly corrupted layer bytes never make
//! `apply_layer` panic or touch the host, and a successful result is always a well-formed tree.

mod layers_support;

use layers_support::{
    apply_limited, assert_nlink_consistent, assert_work_dir_empty, HostWatch, LayerTar,
};
use oci2sif::tree::is_plain_name;
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Cap used by the properties: small enough that some generated layers hit it.
const LIMIT: u64 = 32 * 1024;

#[derive(Debug, Clone)]
enum Op {
    File {
        name: String,
        mode: u32,
        len: usize,
    },
    Dir {
        name: String,
        mode: u32,
    },
    Symlink {
        name: String,
        target: String,
    },
    /// `earlier` picks the target among the names written before, when there are any.
    Hardlink {
        name: String,
        target: String,
        earlier: Option<prop::sample::Index>,
    },
    Device {
        name: String,
        typeflag: u8,
    },
    Raw {
        name: String,
        typeflag: u8,
        len: usize,
    },
}

impl Op {
    fn name(&self) -> &str {
        match self {
            Op::File { name, .. }
            | Op::Dir { name, .. }
            | Op::Symlink { name, .. }
            | Op::Hardlink { name, .. }
            | Op::Device { name, .. }
            | Op::Raw { name, .. } => name,
        }
    }
}

/// Path components chosen to collide often and to hit every special case.
fn component(sandbox: String) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        12 => prop::sample::select(vec!["a", "b", "c", "etc"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["..", ".", ""]).prop_map(str::to_owned),
        2 => prop::sample::select(vec![".wh.a", ".wh.b", ".wh..wh..opq", ".wh.", ".wh.."])
            .prop_map(str::to_owned),
        1 => Just(sandbox),
        1 => "[a-c./]{1,6}",
    ]
}

fn path(sandbox: String) -> impl Strategy<Value = String> + Clone {
    (
        any::<bool>(),
        prop::collection::vec(component(sandbox), 1..5),
    )
        .prop_map(|(absolute, parts)| {
            let joined = parts.join("/");
            if absolute {
                format!("/{joined}")
            } else {
                joined
            }
        })
}

fn op(sandbox: String) -> impl Strategy<Value = Op> {
    let name = path(sandbox.clone());
    let target = path(sandbox);
    prop_oneof![
        4 => (name.clone(), 0u32..0o10000, 0usize..1500)
            .prop_map(|(name, mode, len)| Op::File { name, mode, len }),
        3 => (name.clone(), 0u32..0o10000).prop_map(|(name, mode)| Op::Dir { name, mode }),
        3 => (name.clone(), target.clone()).prop_map(|(name, target)| Op::Symlink { name, target }),
        1 => (name.clone(), target, prop::option::weighted(0.8, any::<prop::sample::Index>()))
            .prop_map(|(name, target, earlier)| Op::Hardlink { name, target, earlier }),
        1 => (name.clone(), prop::sample::select(vec![b'3', b'4', b'6']))
            .prop_map(|(name, typeflag)| Op::Device { name, typeflag }),
        1 => (name, typeflag(), 0usize..600)
            .prop_map(|(name, typeflag, len)| Op::Raw { name, typeflag, len }),
    ]
}

/// Mostly typeflags with special handling, sometimes anything.
fn typeflag() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(vec![b'\0', b'0', b'7', b'5', b'g', b'x', b'S']),
        1 => any::<u8>(),
    ]
}

fn layers(sandbox: String) -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(sandbox), 0..12), 1..4)
}

/// Writes one layer; `written` collects entry names across layers for hardlink targets.
fn write_layer(ops: &[Op], written: &mut Vec<String>) -> Vec<u8> {
    let mut l = LayerTar::new();
    for op in ops {
        match op {
            Op::File { name, mode, len } => {
                l.file(name, *mode, &vec![b'f'; *len]);
            }
            Op::Dir { name, mode } => {
                l.dir(name, *mode);
            }
            Op::Symlink { name, target } => {
                l.symlink(name, target);
            }
            Op::Hardlink {
                name,
                target,
                earlier,
            } => {
                let target = match earlier {
                    Some(index) if !written.is_empty() => &written[index.index(written.len())],
                    _ => target,
                };
                l.hardlink(name, target);
            }
            Op::Device { name, typeflag } => {
                l.raw(name.as_bytes(), *typeflag, 0o666, b"", b"");
            }
            Op::Raw {
                name,
                typeflag,
                len,
            } => {
                l.raw(name.as_bytes(), *typeflag, 0o644, b"x", &vec![0; *len]);
            }
        }
        written.push(op.name().to_owned());
    }
    l.bytes()
}

/// Applies the layers and checks every property that must hold whatever they contain; counts
/// the layer sets that applied cleanly in `applied_ok`.
fn check(
    watch: &HostWatch,
    layers: &[Vec<u8>],
    applied_ok: &Cell<u32>,
) -> Result<(), TestCaseError> {
    if let Ok(applied) = apply_limited(layers, LIMIT) {
        applied_ok.set(applied_ok.get() + 1);
        assert_work_dir_empty(applied.work.path());
        assert_nlink_consistent(&applied.tree);
        prop_assert!(applied.limits.unpacked_bytes <= LIMIT);
        prop_assert!(applied.spool.len() <= LIMIT);
        let mut bad_names = Vec::new();
        applied.tree.walk(|path, _| {
            if !path.is_empty() && !path.split(|b| *b == b'/').all(is_plain_name) {
                bad_names.push(String::from_utf8_lossy(path).into_owned());
            }
        });
        prop_assert!(bad_names.is_empty(), "bad names {:?}", bad_names);
    }
    watch.assert_unchanged();
    Ok(())
}

#[test]
fn random_layer_operations_never_panic_or_touch_the_host() {
    let watch = HostWatch::new(&["/etc/passwd", "/etc/shadow", "/a", "/etc/a", "../a"]);
    let sandbox = watch.sandbox.path().to_str().unwrap().to_owned();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let applied_ok = Cell::new(0);
    runner
        .run(&layers(sandbox), |ops| {
            let mut written = Vec::new();
            let tars: Vec<Vec<u8>> = ops.iter().map(|l| write_layer(l, &mut written)).collect();
            check(&watch, &tars, &applied_ok)
        })
        .unwrap();
    // Most sets hit some refusal (loops, missing hardlink targets…); make sure enough of them
    // apply cleanly for the tree properties to be exercised (typically about a third do).
    assert!(
        applied_ok.get() >= 25,
        "only {} sets applied",
        applied_ok.get()
    );
}

#[test]
fn corrupted_layer_bytes_never_panic_or_touch_the_host() {
    let watch = HostWatch::new(&["/etc/passwd", "/a"]);
    let sandbox = watch.sandbox.path().to_str().unwrap().to_owned();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let corruption = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12);
    runner
        .run(&(layers(sandbox), corruption), |(ops, flips)| {
            let mut written = Vec::new();
            let mut tars: Vec<Vec<u8>> = ops.iter().map(|l| write_layer(l, &mut written)).collect();
            for (index, byte) in flips {
                let layer = index.index(tars.len());
                let len = tars[layer].len();
                tars[layer][index.index(len)] = byte;
            }
            check(&watch, &tars, &Cell::new(0))
        })
        .unwrap();
}
