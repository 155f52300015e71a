//! Differential test against umoci: the same multi-layer OCI image is unpacked by
//! `umoci raw unpack --rootless` and by `layers::apply_layer`, and the two trees must agree on
//! paths, types, permission bits (setuid/setgid/sticky included), symlink targets, file contents,
//! regular-file mtimes and hardlink groups.
//!
//! Differences that are umoci's rootless mode, not semantics, are mapped before comparing:
//! owners are not compared (rootless umoci owns everything), and character/block devices are
//! compared as the empty regular files rootless umoci writes in their place.

mod layers_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use layers_support::{sha256_hex, LayerTar, Node};
use oci2sif::layers::{apply_layer, decompress, Limits};
use oci2sif::tree::{Kind, Spool, Tree};

const L1: u64 = 1_600_000_000;
const L2: u64 = 1_650_000_000;
const L3: u64 = 1_700_000_000;

fn base_layer() -> Vec<u8> {
    let mut l = LayerTar::new();
    l.mtime(L1)
        .dir("./", 0o751)
        .dir("bin", 0o755)
        .file("bin/tool", 0o755, b"tool v1")
        .hardlink("bin/tool-hard", "bin/tool")
        .hardlink("bin/tool-hard2", "/bin/tool")
        .file("bin/su", 0o4755, b"su")
        .file("bin/sg", 0o2755, b"sg")
        .dir("tmp", 0o1777)
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .owner(0, 42)
        .file("etc/shadow", 0o640, b"root:*::::::\n")
        .owner(0, 0)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libx.so.1", 0o644, b"ELF libx")
        .symlink("usr/lib/libx.so", "libx.so.1")
        .symlink("lib", "usr/lib")
        .symlink("abs", "/etc")
        .symlink("sym-to-file", "etc/passwd")
        .dir("d2f", 0o755)
        .file("d2f/child", 0o644, b"child")
        .file("d2f/sub/deep", 0o644, b"deep")
        .file("f2d", 0o644, b"file")
        .dir("opq", 0o755)
        .file("opq/a", 0o644, b"a")
        .file("opq/sub/b", 0o644, b"b")
        .dir("wh", 0o755)
        .file("wh/x", 0o644, b"x")
        .file("wh/y", 0o644, b"y")
        .file("wh/z", 0o644, b"z")
        .file("gone", 0o644, b"gone")
        .file("opq2/old", 0o644, b"old")
        .file("d2/old", 0o644, b"old")
        .symlink("chain", "lib/../share")
        .file("opq2/sub/older", 0o644, b"older")
        .dir("ro", 0o555)
        .file("ro/f", 0o444, b"ro")
        .file("implicit/deep/file", 0o600, b"implicit")
        .dir("dev", 0o755)
        .char_device("dev/null", 0o666, 1, 3)
        .block_device("dev/loop0", 0o660, 7, 0)
        .dir("run", 0o755)
        .fifo("run/fifo", 0o600)
        .file("opt/app/data", 0o644, b"data")
        .file("opt/app/bin", 0o755, b"bin");
    l.bytes()
}

fn middle_layer() -> Vec<u8> {
    let mut l = LayerTar::new();
    l.mtime(L2)
        .file("d2f", 0o600, b"now a file")
        .dir("f2d", 0o700)
        .file("f2d/inner", 0o644, b"inner")
        .file("opq/new", 0o644, b"new")
        .whiteout("opq/.wh..wh..opq")
        .whiteout("wh/.wh.x")
        .file("wh/y", 0o644, b"y2")
        .whiteout("wh/.wh.y")
        .whiteout(".wh.gone")
        .file("bin/tool", 0o755, b"tool v2")
        .file("abs/added", 0o644, b"through abs")
        .file("lib/libz.so", 0o644, b"ELF libz")
        .hardlink("etc/passwd-hard", "etc/passwd")
        .hardlink("shadow-hard", "abs/shadow")
        .dir("usr", 0o750)
        .file("ro/g", 0o444, b"g")
        .file("newdir/file", 0o644, b"kept")
        .file("chain/doc", 0o644, b"through lib/..")
        .hardlink("sym-hard", "usr/lib/libx.so")
        .whiteout(".wh.newdir");
    l.bytes()
}

fn top_layer() -> Vec<u8> {
    let mut l = LayerTar::new();
    l.mtime(L3)
        .whiteout(".wh.opt")
        .dir("abs", 0o700)
        .file("sym-to-file", 0o644, b"was a symlink")
        .file("etc/passwd", 0o600, b"new passwd\n")
        .whiteout("opq2/.wh..wh..opq")
        .file("opq2/fresh", 0o644, b"fresh")
        .whiteout("tmp/.wh.nothing")
        .whiteout("implicit/.wh.deep")
        .file("d2/new", 0o644, b"new")
        .whiteout(".wh.d2")
        .symlink("bin/tool", "tool-hard");
    l.bytes()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?} (is umoci installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds an OCI layout at `dir/image` holding tag `t` with the given uncompressed layers
/// (umoci stores them gzip-compressed).
fn build_image(dir: &Path, layers: &[Vec<u8>]) -> String {
    let layout = dir.join("image");
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    for (i, layer) in layers.iter().enumerate() {
        let path = dir.join(format!("layer{i}.tar"));
        fs::write(&path, layer).unwrap();
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &image])
            .arg(&path));
    }
    image
}

fn umoci_unpack_command(image: &str, rootfs: &Path) -> Command {
    // Parents umoci creates implicitly get 0777 & umask; pin the umask to the 022 our
    // builder's 0755 corresponds to.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"umask 022 && exec umoci raw unpack --rootless --image "$0" "$1""#,
        image,
        rootfs.to_str().unwrap(),
    ]);
    cmd
}

fn umoci_unpack(image: &str, rootfs: &Path) {
    run(&mut umoci_unpack_command(image, rootfs));
}

/// Applies the image's layers, read back from the OCI layout with their real media types.
fn our_unpack(layout: &Path, work: &Path) -> (Tree, Spool) {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut tree = Tree::new();
    let mut spool = Spool::new_in(work).unwrap();
    let mut limits = Limits::new(1 << 30);
    for layer in manifest["layers"].as_array().unwrap() {
        let media_type = layer["mediaType"].as_str().unwrap();
        let file = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
        let reader = decompress(media_type, Box::new(file)).unwrap();
        apply_layer(&mut tree, &mut spool, reader, &mut limits).unwrap();
    }
    (tree, spool)
}

/// The comparable view of a tree: nodes by path, regular-file mtimes, and hardlink groups.
#[derive(Debug, PartialEq, Eq)]
struct View {
    nodes: BTreeMap<String, Node>,
    file_mtimes: BTreeMap<String, i64>,
    hardlinks: BTreeSet<Vec<String>>,
}

fn view_of_tree(tree: &Tree, spool: &Spool) -> View {
    let mut nodes = layers_support::snapshot(tree, spool);
    for node in nodes.values_mut() {
        if let Node::CharDevice { mode, .. } | Node::BlockDevice { mode, .. } = *node {
            *node = Node::File {
                mode,
                sha256: sha256_hex(b""),
            };
        }
    }
    let mut file_mtimes = BTreeMap::new();
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    tree.walk(|path, id| {
        let path = String::from_utf8_lossy(path).into_owned();
        let inode = tree.inode(id);
        // Devices are files on umoci's side (see the module docs).
        if let Kind::File(_) | Kind::CharDevice { .. } | Kind::BlockDevice { .. } = inode.kind {
            file_mtimes.insert(path.clone(), inode.meta.mtime);
        }
        if !matches!(inode.kind, Kind::Dir(_)) {
            groups.entry(id).or_default().push(path);
        }
    });
    View {
        nodes,
        file_mtimes,
        hardlinks: groups.into_values().filter(|g| g.len() > 1).collect(),
    }
}

fn view_of_dir(root: &Path) -> View {
    let mut view = View {
        nodes: BTreeMap::new(),
        file_mtimes: BTreeMap::new(),
        hardlinks: BTreeSet::new(),
    };
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        let file_type = meta.file_type();
        let node = if file_type.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            Node::Dir { mode }
        } else if file_type.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap().to_string_lossy().into_owned(),
            }
        } else if file_type.is_fifo() {
            Node::Fifo { mode }
        } else if file_type.is_file() {
            view.file_mtimes.insert(rel.clone(), meta.mtime());
            Node::File {
                mode,
                sha256: sha256_hex(&fs::read(&path).unwrap()),
            }
        } else {
            panic!("unexpected file type at {path:?}: {file_type:?}");
        };
        if !file_type.is_dir() {
            groups.entry(meta.ino()).or_default().push(rel.clone());
        }
        view.nodes.insert(rel, node);
    }
    view.hardlinks = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    view
}

#[test]
fn matches_umoci_on_a_multi_layer_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[base_layer(), middle_layer(), top_layer()]);
    let rootfs = dir.path().join("rootfs");
    umoci_unpack(&image, &rootfs);
    let work = tempfile::tempdir().unwrap();
    let (tree, spool) = our_unpack(&dir.path().join("image"), work.path());

    let ours = view_of_tree(&tree, &spool);
    let theirs = view_of_dir(&rootfs);
    let only_ours: Vec<_> = ours
        .nodes
        .iter()
        .filter(|(p, n)| theirs.nodes.get(*p) != Some(*n))
        .collect();
    let only_theirs: Vec<_> = theirs
        .nodes
        .iter()
        .filter(|(p, n)| ours.nodes.get(*p) != Some(*n))
        .collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "trees differ\n ours only: {only_ours:#?}\n umoci only: {only_theirs:#?}"
    );
    assert_eq!(ours.file_mtimes, theirs.file_mtimes);
    assert_eq!(ours.hardlinks, theirs.hardlinks);

    // Spot checks that the image really exercises the rules being compared.
    let n = &ours.nodes;
    assert!(matches!(n["bin/su"], Node::File { mode: 0o4755, .. }));
    assert!(matches!(n["d2f"], Node::File { .. }));
    assert!(matches!(n["f2d"], Node::Dir { mode: 0o700 }));
    assert!(n.contains_key("etc/added") && n.contains_key("usr/lib/libz.so"));
    assert!(
        n.contains_key("usr/share/doc") && n.contains_key("d2/new") && !n.contains_key("d2/old")
    );
    assert!(n.contains_key("newdir/file") && n.contains_key("wh/y") && n.contains_key("opq/new"));
    assert!(!n.contains_key("opq/a") && !n.contains_key("gone") && !n.contains_key("opt"));
    assert!(!n.contains_key("wh/x") && n.contains_key("wh/z"));
    assert!(
        n.contains_key("opq2/fresh") && !n.contains_key("opq2/old") && !n.contains_key("opq2/sub")
    );
    let group = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ours.hardlinks,
        BTreeSet::from([
            group(&["bin/tool-hard", "bin/tool-hard2"]),
            group(&["etc/shadow", "shadow-hard"]),
            group(&["sym-hard", "usr/lib/libx.so"]),
        ])
    );
}

/// Writes the entries of one test layer.
type LayerWriter = Box<dyn Fn(&mut LayerTar)>;

/// Whether umoci manages to unpack the image.
fn umoci_accepts(image: &str, rootfs: &Path) -> bool {
    umoci_unpack_command(image, rootfs)
        .output()
        .expect("running umoci")
        .status
        .success()
}

#[test]
fn refuses_the_layers_umoci_refuses() {
    let cases: Vec<(&str, LayerWriter)> = vec![
        (
            "hardlink to a missing target",
            Box::new(|l| {
                l.hardlink("h", "missing");
            }),
        ),
        (
            "hardlink to a directory",
            Box::new(|l| {
                l.dir("d", 0o755).hardlink("h", "d");
            }),
        ),
        (
            "parent is a regular file",
            Box::new(|l| {
                l.file("f", 0o644, b"x").file("f/child", 0o644, b"y");
            }),
        ),
        (
            "root turned into a symlink",
            Box::new(|l| {
                l.symlink("./", "/tmp");
            }),
        ),
        (
            "symlink loop in a parent",
            Box::new(|l| {
                l.symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", 0o644, b"x");
            }),
        ),
    ];
    for (what, write) in cases {
        let mut layer = LayerTar::new();
        write(&mut layer);
        let layer = layer.bytes();
        let dir = tempfile::tempdir().unwrap();
        let image = build_image(dir.path(), std::slice::from_ref(&layer));
        assert!(
            !umoci_accepts(&image, &dir.path().join("rootfs")),
            "umoci accepted: {what}"
        );
        let work = tempfile::tempdir().unwrap();
        let mut tree = Tree::new();
        let mut spool = Spool::new_in(work.path()).unwrap();
        let result = apply_layer(&mut tree, &mut spool, &layer[..], &mut Limits::new(1 << 20));
        assert!(result.is_err(), "we accepted: {what}");
    }
}
