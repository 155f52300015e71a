//! The `/.singularity.d` additions on small trees built by hand: layout, rewrites through the
//! image's own symlinks, conflicts, and the architecture probe.

use std::collections::BTreeMap;

use super::scripts::{runscript, ACTION_EXEC, BASE_DIRS, BASE_SYMLINKS, STARTSCRIPT};
use super::*;
use crate::tree::{InodeId, Kind, Meta};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

struct Fixture {
    tree: Tree,
    spool: Spool,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new_in(dir.path()).unwrap();
        Fixture {
            tree: Tree::new(),
            spool,
            _dir: dir,
        }
    }

    fn dir(&mut self, path: &str) -> InodeId {
        let mut at = ROOT;
        for part in path.split('/') {
            at = match self.tree.lookup(at, part.as_bytes()) {
                Some(id) => id,
                None => {
                    let id = self
                        .tree
                        .add_inode(Kind::Dir(BTreeMap::new()), Meta::new(0o700, 7, 7, 1));
                    self.tree.link(at, part.as_bytes().to_vec(), id);
                    id
                }
            };
        }
        at
    }

    fn add(&mut self, parent: &str, name: &str, kind: Kind, mode: u32) -> InodeId {
        let dir = if parent.is_empty() {
            ROOT
        } else {
            self.dir(parent)
        };
        let id = self.tree.add_inode(kind, Meta::new(mode, 1000, 1000, 1));
        self.tree.link(dir, name.as_bytes().to_vec(), id);
        id
    }

    fn file(&mut self, parent: &str, name: &str, bytes: &[u8], mode: u32) -> InodeId {
        let content = self.spool.append_bytes(bytes).unwrap();
        self.add(parent, name, Kind::File(content), mode)
    }

    fn symlink(&mut self, parent: &str, name: &str, target: &str) -> InodeId {
        self.add(
            parent,
            name,
            Kind::Symlink(target.as_bytes().to_vec()),
            0o777,
        )
    }

    fn run(&mut self, config_json: &str) -> Result<SifMetadata, SingularityError> {
        let config: ImageConfigFile = serde_json::from_str(config_json).unwrap();
        let input = Input {
            config: &config,
            source_ref: "127.0.0.1:5000/alice/tool:1",
            arch: "amd64",
            build_time: 1_700_000_000,
        };
        add(&mut self.tree, &mut self.spool, &input)
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let id = self.tree.resolve(path.as_bytes())?;
        match self.tree.inode(id).kind {
            Kind::File(content) => {
                let mut buf = Vec::new();
                self.spool.read_into(content, &mut buf).unwrap();
                Some(buf)
            }
            _ => None,
        }
    }

    fn meta(&self, path: &str) -> Meta {
        self.tree
            .inode(self.tree.resolve(path.as_bytes()).unwrap())
            .meta
            .clone()
    }
}

#[test]
fn adds_the_whole_layout_to_an_empty_tree() {
    let mut fx = Fixture::new();
    let meta = fx
        .run(r#"{"config":{"Cmd":["echo","hi"],"Env":["A=1"]}}"#)
        .unwrap();
    for dir in BASE_DIRS {
        let id = fx.tree.resolve(dir.as_bytes()).unwrap();
        assert!(fx.tree.children(id).is_some(), "{dir}");
        assert_eq!(
            fx.tree.inode(id).meta,
            Meta::new(0o755, 0, 0, 1_700_000_000),
            "{dir}"
        );
    }
    for (name, target) in BASE_SYMLINKS {
        let id = fx.tree.resolve(name.as_bytes()).unwrap();
        assert_eq!(
            fx.tree.inode(id).kind,
            Kind::Symlink(target.as_bytes().to_vec())
        );
    }
    assert_eq!(fx.read("etc/hosts").unwrap(), b"");
    assert_eq!(fx.meta("etc/resolv.conf").mode, 0o644);
    assert_eq!(fx.read(".singularity.d/env/94-appsbase.sh").unwrap(), b"");
    assert_eq!(fx.meta(".singularity.d/env/94-appsbase.sh").mode, 0o755);
    assert_eq!(
        fx.read(".singularity.d/actions/exec").unwrap(),
        ACTION_EXEC.as_bytes()
    );
    assert_eq!(
        fx.meta(".singularity.d/runscript"),
        Meta::new(0o755, 0, 0, 1_700_000_000)
    );
    assert_eq!(
        fx.read(".singularity.d/env/10-docker2singularity.sh")
            .unwrap(),
        b"#!/bin/sh\nexport A=\"${A:-\"1\"}\"\n"
    );
    let deffile = b"bootstrap: docker\nfrom: 127.0.0.1:5000/alice/tool:1\n\n";
    assert_eq!(fx.read(".singularity.d/Singularity").unwrap(), deffile);
    assert_eq!(meta.deffile, deffile);
    assert_eq!(fx.meta(".singularity.d/labels.json").mode, 0o644);
    assert!(fx
        .read(".singularity.d/labels.json")
        .unwrap()
        .starts_with(b"{\n\t\"org.label-schema.build-arch\": \"amd64\""));
    assert_eq!(
        meta.oci_config_json,
        br#"{"Cmd":["echo","hi"],"Env":["A=1"]}"#
    );
}

#[test]
fn inspect_metadata_has_apptainers_shape() {
    let mut fx = Fixture::new();
    fx.file(".singularity.d", "test", b"#!/bin/sh\ntrue\n\n", 0o755);
    let meta = fx.run(r#"{"config":{"Cmd":["echo"]}}"#).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&meta.inspect_metadata_json).unwrap();
    assert_eq!(json["type"], "container");
    let attributes = &json["data"]["attributes"];
    let mut keys: Vec<_> = attributes.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "deffile",
            "environment",
            "labels",
            "runscript",
            "startscript",
            "test"
        ]
    );
    assert_eq!(
        attributes["deffile"],
        "bootstrap: docker\nfrom: 127.0.0.1:5000/alice/tool:1"
    );
    assert_eq!(attributes["test"], "#!/bin/sh\ntrue");
    assert_eq!(
        attributes["startscript"],
        STARTSCRIPT.trim_end_matches('\n')
    );
    assert_eq!(
        attributes["runscript"],
        runscript(&[], &strings(&["echo"])).trim_end_matches('\n')
    );
    let mut env: Vec<_> = attributes["environment"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    env.sort();
    assert_eq!(
        env,
        [
            "/.singularity.d/env/10-docker2singularity.sh",
            "/.singularity.d/env/90-environment.sh"
        ]
    );
    assert_eq!(attributes["labels"]["org.label-schema.build-arch"], "amd64");
    let text = String::from_utf8(meta.inspect_metadata_json).unwrap();
    assert!(text.starts_with("{\"data\":{\"attributes\":{\"environment\":{"));
    assert!(text.ends_with("},\"type\":\"container\"}"));
    assert!(
        text.contains("\\u0026\\u0026"),
        "Go escapes & in the runscript"
    );
}

#[test]
fn existing_files_are_rewritten_keeping_their_owner() {
    let mut fx = Fixture::new();
    fx.file("etc", "hosts", b"127.0.0.1 localhost\n", 0o400);
    fx.run("{}").unwrap();
    assert_eq!(fx.read("etc/hosts").unwrap(), b"");
    let meta = fx.meta("etc/hosts");
    assert_eq!((meta.mode, meta.uid, meta.gid), (0o644, 1000, 1000));
}

#[test]
fn symlinked_files_are_written_through_or_replaced() {
    let mut fx = Fixture::new();
    fx.dir("run/systemd/resolve");
    fx.symlink(
        "etc",
        "resolv.conf",
        "../run/systemd/resolve/stub-resolv.conf",
    );
    fx.symlink("etc", "hosts", "/nonexistent/dir/hosts");
    fx.run("{}").unwrap();
    assert_eq!(
        fx.read("run/systemd/resolve/stub-resolv.conf").unwrap(),
        b""
    );
    let etc = fx.tree.resolve(b"etc").unwrap();
    let resolv = fx.tree.lookup(etc, b"resolv.conf").unwrap();
    assert!(matches!(fx.tree.inode(resolv).kind, Kind::Symlink(_)));
    let hosts = fx.tree.lookup(etc, b"hosts").unwrap();
    assert!(
        matches!(fx.tree.inode(hosts).kind, Kind::File(_)),
        "dangling link replaced"
    );
}

#[test]
fn existing_dirs_and_symlinked_dirs_are_left_alone() {
    let mut fx = Fixture::new();
    fx.dir("realtmp");
    fx.dir("var");
    let tmp_link = fx.symlink("var", "tmp", "../realtmp");
    let home = fx.dir("home");
    fx.run("{}").unwrap();
    let var = fx.tree.resolve(b"var").unwrap();
    assert_eq!(fx.tree.lookup(var, b"tmp"), Some(tmp_link));
    assert_eq!(fx.tree.inode(home).meta.mode, 0o700);
}

#[test]
fn symlinked_singularity_dir_is_followed() {
    let mut fx = Fixture::new();
    fx.dir("opt/sd");
    fx.symlink("", ".singularity.d", "/opt/sd");
    fx.run("{}").unwrap();
    assert!(fx.read("opt/sd/runscript").is_some());
    assert!(fx.read("opt/sd/env/99-base.sh").is_some());
}

#[test]
fn root_symlinks_are_retargeted_but_files_kept() {
    let mut fx = Fixture::new();
    fx.symlink("", "singularity", "elsewhere");
    let environment = fx.file("", "environment", b"mine", 0o644);
    fx.run("{}").unwrap();
    let link = fx.tree.lookup(ROOT, b"singularity").unwrap();
    assert_eq!(
        fx.tree.inode(link).kind,
        Kind::Symlink(b".singularity.d/runscript".to_vec())
    );
    assert_eq!(fx.tree.lookup(ROOT, b"environment"), Some(environment));
}

#[test]
fn previous_deffile_moves_to_bootstrap_history() {
    let mut fx = Fixture::new();
    fx.file(
        ".singularity.d",
        "Singularity",
        b"bootstrap: library\n",
        0o644,
    );
    fx.run("{}").unwrap();
    assert_eq!(
        fx.read(".singularity.d/bootstrap_history/Apptainer0")
            .unwrap(),
        b"bootstrap: library\n"
    );
    assert!(fx
        .read(".singularity.d/Singularity")
        .unwrap()
        .starts_with(b"bootstrap: docker\n"));
}

#[test]
fn conflicts_and_loops_fail_clearly() {
    let mut fx = Fixture::new();
    fx.dir("etc/hosts");
    let err = fx.run("{}").unwrap_err().to_string();
    assert_eq!(
        err,
        "the image has a directory at /etc/hosts, where Apptainer needs a file"
    );

    let mut fx = Fixture::new();
    fx.symlink("", ".singularity.d", "loop");
    fx.symlink("", "loop", ".singularity.d");
    assert!(matches!(
        fx.run("{}"),
        Err(SingularityError::SymlinkLoop(_))
    ));

    let mut fx = Fixture::new();
    fx.file("", "var", b"", 0o644);
    assert!(matches!(
        fx.run("{}"),
        Err(SingularityError::Conflict { .. })
    ));
}

#[test]
fn source_ref_with_newline_is_refused() {
    let mut fx = Fixture::new();
    let config = ImageConfigFile::default();
    let input = Input {
        config: &config,
        source_ref: "x\nfrom: y",
        arch: "amd64",
        build_time: 0,
    };
    assert!(matches!(
        add(&mut fx.tree, &mut fx.spool, &input),
        Err(SingularityError::BadSourceRef(_))
    ));
}

#[test]
fn arch_comes_from_bin_sh_then_any_executable_then_config() {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };

    let mut fx = Fixture::new();
    fx.file("bin", "busybox", &busybox, 0o755);
    fx.symlink("bin", "sh", "busybox");
    assert_eq!(detect_arch(&fx.tree, &fx.spool, "s390x").unwrap(), host);

    let mut fx = Fixture::new();
    fx.file("usr/bin", "not-executable", &busybox, 0o644);
    fx.file("usr/bin", "tool", &busybox, 0o755);
    assert_eq!(detect_arch(&fx.tree, &fx.spool, "s390x").unwrap(), host);

    let mut fx = Fixture::new();
    fx.file("data", "x", b"just data", 0o755);
    assert_eq!(detect_arch(&fx.tree, &fx.spool, "arm64").unwrap(), "arm64");
    assert!(matches!(
        detect_arch(&fx.tree, &fx.spool, "sparc"),
        Err(SingularityError::UnknownArchitecture(Some(_)))
    ));
}
