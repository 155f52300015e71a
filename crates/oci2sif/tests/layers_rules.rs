//! One test per layer-application rule (umoci semantics), through the public API.

mod layers_support;

use std::io::{Read, Write};

use layers_support::{apply, apply_limited, assert_nlink_consistent, LayerTar, Node, MTIME};
use oci2sif::layers::{apply_layer, decompress, LayerError, Limits};
use oci2sif::tree::{Kind, Spool, Tree, ROOT};

fn base() -> LayerTar {
    let mut l = LayerTar::new();
    l.dir("d", 0o755)
        .file("d/a", 0o644, b"a")
        .dir("d/sub", 0o755)
        .file("d/sub/b", 0o644, b"b")
        .dir("other", 0o755)
        .file("other/c", 0o644, b"c");
    l
}

// ---- whiteouts ----------------------------------------------------------------------------

#[test]
fn whiteout_removes_lower_entry_recursively() {
    let mut upper = LayerTar::new();
    upper.whiteout(".wh.d");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert!(!t.exists("d"));
    assert!(t.exists("other/c"));
    assert_eq!(t.stats[1].whiteouts, 1);
    assert_eq!(t.stats[1].entries, 0);
    assert_nlink_consistent(&t.tree);
}

#[test]
fn whiteout_of_missing_path_is_a_no_op() {
    let mut upper = LayerTar::new();
    upper
        .whiteout(".wh.nothing")
        .whiteout("nowhere/.wh.x")
        .whiteout("d/a/.wh.x");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.snapshot(), apply(&[base().bytes()]).unwrap().snapshot());
}

#[test]
fn whiteout_entries_are_never_materialised() {
    let mut upper = LayerTar::new();
    upper
        .whiteout("d/.wh.a")
        .whiteout("d/.wh..wh.plnk")
        .whiteout(".wh..wh..opq")
        .file("keep", 0o644, b"k");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    for path in t.snapshot().keys() {
        assert!(!path.contains(".wh."), "{path}");
    }
    assert_eq!(t.ls(""), ["keep"]);
}

#[test]
fn whiteout_spares_entries_of_the_current_layer_in_any_order() {
    for whiteout_first in [true, false] {
        let mut lower = LayerTar::new();
        lower.file("f", 0o644, b"old");
        let mut upper = LayerTar::new();
        if whiteout_first {
            upper.whiteout(".wh.f").file("f", 0o644, b"new");
        } else {
            upper.file("f", 0o644, b"new").whiteout(".wh.f");
        }
        let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
        assert_eq!(t.content("f"), b"new", "whiteout_first={whiteout_first}");
    }
}

#[test]
fn whiteout_of_an_upper_directory_prunes_only_lower_children() {
    let mut upper = LayerTar::new();
    upper.file("d/new", 0o644, b"n").whiteout(".wh.d");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.ls("d"), ["new"]);
}

#[test]
fn opaque_whiteout_keeps_only_current_layer_children_in_any_order() {
    for opaque_first in [true, false] {
        let mut upper = LayerTar::new();
        if opaque_first {
            upper.whiteout("d/.wh..wh..opq").file("d/n", 0o600, b"n");
        } else {
            upper.file("d/n", 0o600, b"n").whiteout("d/.wh..wh..opq");
        }
        let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
        assert_eq!(t.ls("d"), ["n"], "opaque_first={opaque_first}");
        assert!(t.exists("other/c"));
        assert_eq!(t.stats[1].whiteouts, 1);
        assert_nlink_consistent(&t.tree);
    }
}

#[test]
fn opaque_whiteout_keeps_the_directory_and_its_metadata() {
    let mut upper = LayerTar::new();
    upper.whiteout("d/.wh..wh..opq");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert!(t.ls("d").is_empty());
    assert_eq!(t.tree.inode(t.inode("d")).meta.mode, 0o755);
}

#[test]
fn opaque_whiteout_descends_into_upper_subdirectories() {
    let mut upper = LayerTar::new();
    upper
        .file("d/sub/fresh", 0o644, b"f")
        .whiteout("d/.wh..wh..opq");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.ls("d"), ["sub"]);
    assert_eq!(t.ls("d/sub"), ["fresh"]);
}

#[test]
fn whiteout_resolves_its_parent_through_symlinks() {
    let mut lower = base();
    lower.symlink("link", "d");
    let mut upper = LayerTar::new();
    upper.whiteout("link/.wh.a");
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert!(!t.exists("d/a"));
    assert!(matches!(t.kind("link"), Kind::Symlink(_)));
}

#[test]
fn whiteout_of_a_symlink_removes_the_link_not_its_target() {
    let mut lower = base();
    lower.symlink("link", "d");
    let mut upper = LayerTar::new();
    upper.whiteout(".wh.link");
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert!(!t.exists("link"));
    assert_eq!(t.ls("d"), ["a", "sub"]);
}

#[test]
fn whiteouts_naming_no_valid_entry_are_ignored() {
    let mut upper = LayerTar::new();
    upper
        .whiteout(".wh.")
        .whiteout("d/.wh.")
        .whiteout("d/.wh..")
        .whiteout("d/.wh...");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.snapshot(), apply(&[base().bytes()]).unwrap().snapshot());
    assert_eq!(t.stats[1].whiteouts, 4);
}

// ---- replacement --------------------------------------------------------------------------

#[test]
fn file_replaces_directory_with_its_subtree() {
    let mut upper = LayerTar::new();
    upper.file("d", 0o600, b"now a file");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.content("d"), b"now a file");
    assert!(!t.snapshot().keys().any(|p| p.starts_with("d/")));
    assert_nlink_consistent(&t.tree);
}

#[test]
fn directory_replaces_file() {
    let mut upper = LayerTar::new();
    upper
        .dir("other/c", 0o700)
        .file("other/c/inner", 0o644, b"i");
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(
        t.snapshot()["other/c"],
        Node::Dir { mode: 0o700 },
        "{:?}",
        t.snapshot()
    );
    assert_eq!(t.content("other/c/inner"), b"i");
}

#[test]
fn directory_replaces_symlink_instead_of_following_it() {
    let mut lower = base();
    lower.symlink("link", "d");
    let mut upper = LayerTar::new();
    upper.dir("link", 0o750);
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.snapshot()["link"], Node::Dir { mode: 0o750 });
    assert!(t.ls("link").is_empty());
    assert_eq!(t.ls("d"), ["a", "sub"]);
}

#[test]
fn directory_over_directory_keeps_children_and_replaces_metadata() {
    let mut lower = LayerTar::new();
    lower
        .pax(&[("SCHILY.xattr.user.old", b"1")])
        .dir("d", 0o755)
        .file("d/a", 0o644, b"a");
    let mut upper = LayerTar::new();
    upper
        .owner(1000, 100)
        .mtime(MTIME + 5)
        .pax(&[("SCHILY.xattr.user.new", b"2")])
        .dir("d", 0o1770);
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    let d = t.tree.inode(t.inode("d"));
    assert_eq!(
        (d.meta.mode, d.meta.uid, d.meta.gid, d.meta.mtime),
        (0o1770, 1000, 100, (MTIME + 5) as i64)
    );
    let xattrs: Vec<_> = d.meta.xattrs.keys().cloned().collect();
    assert_eq!(xattrs, [b"user.new".to_vec()]);
    assert_eq!(t.content("d/a"), b"a");
}

#[test]
fn replacing_a_file_creates_a_new_inode() {
    let mut lower = LayerTar::new();
    lower.file("f", 0o644, b"old");
    let mut upper = LayerTar::new();
    upper.file("f", 0o755, b"new");
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.content("f"), b"new");
    assert_eq!(t.tree.inode(t.inode("f")).meta.mode, 0o755);
}

// ---- hardlinks ----------------------------------------------------------------------------

#[test]
fn hardlink_shares_the_target_inode_and_ignores_its_own_header() {
    let mut l = LayerTar::new();
    l.file("bin/tool", 0o4755, b"tool")
        .raw(b"bin/alias", b'1', 0o600, b"bin/tool", b"");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.inode("bin/alias"), t.inode("bin/tool"));
    let inode = t.tree.inode(t.inode("bin/tool"));
    assert_eq!((inode.nlink, inode.meta.mode), (2, 0o4755));
    assert_nlink_consistent(&t.tree);
}

#[test]
fn replacing_a_hardlink_target_leaves_the_link_on_the_old_inode() {
    let mut lower = LayerTar::new();
    lower.file("a", 0o644, b"old").hardlink("b", "a");
    let mut upper = LayerTar::new();
    upper.file("a", 0o644, b"new");
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.content("a"), b"new");
    assert_eq!(t.content("b"), b"old");
    assert_ne!(t.inode("a"), t.inode("b"));
    assert_nlink_consistent(&t.tree);
}

#[test]
fn removing_a_directory_releases_hardlinks_inside_it() {
    let mut lower = LayerTar::new();
    lower
        .file("keep", 0o644, b"x")
        .hardlink("d/partner", "keep");
    let mut upper = LayerTar::new();
    upper.whiteout(".wh.d");
    let t = apply(&[lower.bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.tree.inode(t.inode("keep")).nlink, 1);
    assert_nlink_consistent(&t.tree);
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let mut l = base();
    l.symlink("s", "d").hardlink("s2", "s");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.inode("s2"), t.inode("s"));
    assert!(matches!(t.kind("s2"), Kind::Symlink(target) if target == b"d"));
}

#[test]
fn hardlink_target_parent_is_resolved_through_symlinks() {
    let mut l = base();
    l.symlink("s", "d").hardlink("h", "/s/a");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.inode("h"), t.inode("d/a"));
}

#[test]
fn hardlink_to_a_missing_target_fails_the_layer() {
    let mut l = LayerTar::new();
    l.hardlink("h", "nope");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HardlinkTargetMissing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[test]
fn hardlink_to_a_directory_fails_the_layer() {
    for target in ["d", "/", "."] {
        let mut l = base();
        l.hardlink("h", target);
        let err = apply(&[l.bytes()]).err().unwrap();
        assert!(
            matches!(err, LayerError::HardlinkToDirectory { .. }),
            "{target}: {err}"
        );
    }
}

#[test]
fn hardlink_to_itself_fails_like_link_after_clobber() {
    let mut l = LayerTar::new();
    l.file("f", 0o644, b"x").hardlink("f", "f");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HardlinkTargetMissing { .. }),
        "{err}"
    );
}

// ---- symlinks and parent resolution -------------------------------------------------------

#[test]
fn symlinks_are_stored_verbatim() {
    let mut l = LayerTar::new();
    l.symlink("abs", "/etc/../../x")
        .symlink("rel", "../up/./y")
        .symlink("dangling", "nowhere");
    let t = apply(&[l.bytes()]).unwrap();
    let snap = t.snapshot();
    assert_eq!(
        snap["abs"],
        Node::Symlink {
            target: "/etc/../../x".into()
        }
    );
    assert_eq!(
        snap["rel"],
        Node::Symlink {
            target: "../up/./y".into()
        }
    );
    assert_eq!(t.tree.inode(t.inode("rel")).meta.mode, 0o777);
}

#[test]
fn parent_symlinks_are_followed_inside_the_tree() {
    let mut l = LayerTar::new();
    l.dir("usr/lib", 0o755)
        .symlink("lib", "usr/lib")
        .file("lib/libz.so", 0o644, b"z")
        .symlink("etc-link", "/etc")
        .file("etc-link/added", 0o644, b"e")
        .symlink("chain", "lib/../share")
        .file("chain/doc", 0o644, b"d")
        .symlink("usr/lib/up", "../../../../..")
        .file("usr/lib/up/top", 0o644, b"t");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.content("usr/lib/libz.so"), b"z");
    assert_eq!(t.content("etc/added"), b"e");
    // `lib/..` is applied after `lib` was resolved to `usr/lib`, as securejoin does.
    assert_eq!(t.content("usr/share/doc"), b"d");
    assert_eq!(t.content("top"), b"t");
    assert!(matches!(t.kind("lib"), Kind::Symlink(_)));
    assert_eq!(t.stats[0].entries, 9);
}

#[test]
fn entry_names_are_cleaned_before_symlinks_are_followed() {
    let mut l = LayerTar::new();
    l.symlink("a", "/deep/down")
        .file("a/../b", 0o644, b"b")
        .file("/./x/../../../c", 0o644, b"c");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.content("b"), b"b");
    assert_eq!(t.content("c"), b"c");
    assert!(!t.exists("deep"));
}

#[test]
fn symlink_loops_fail_the_layer() {
    let mut l = LayerTar::new();
    l.symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", 0o644, b"x");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::SymlinkLoop { .. }), "{err}");
}

#[test]
fn empty_symlink_target_fails_the_layer() {
    let mut l = LayerTar::new();
    l.symlink("s", "");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::InvalidSymlink { .. }), "{err}");
}

#[test]
fn missing_parents_are_created_0755_root_owned() {
    let mut l = LayerTar::new();
    l.owner(1000, 1000).file("a/b/c/f", 0o600, b"f");
    let t = apply(&[l.bytes()]).unwrap();
    for dir in ["a", "a/b", "a/b/c"] {
        let meta = &t.tree.inode(t.inode(dir)).meta;
        assert_eq!((meta.mode, meta.uid, meta.gid), (0o755, 0, 0), "{dir}");
        assert_eq!(meta.mtime, MTIME as i64);
    }
}

#[test]
fn parent_that_is_a_file_fails_the_layer() {
    let mut l = LayerTar::new();
    l.file("f", 0o644, b"x").file("f/x", 0o644, b"y");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::NotADirectory { .. }), "{err}");
}

#[test]
fn root_entry_updates_root_metadata() {
    let mut l = LayerTar::new();
    l.owner(0, 0).dir("./", 0o700).file("f", 0o644, b"x");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.tree.inode(ROOT).meta.mode, 0o700);
    assert_eq!(t.stats[0].entries, 2);
}

#[test]
fn root_entry_of_another_type_fails_the_layer() {
    for name in ["./", "/", ".."] {
        let mut l = LayerTar::new();
        l.symlink(name, "/tmp");
        let err = apply(&[l.bytes()]).err().unwrap();
        assert!(
            matches!(err, LayerError::RootNotDirectory { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn empty_names_are_skipped() {
    let mut l = LayerTar::new();
    l.file("", 0o644, b"").file("f", 0o644, b"x");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.ls(""), ["f"]);
    assert_eq!(t.stats[0].entries, 1);
}

#[test]
fn overlong_names_fail_the_layer() {
    let long = "n".repeat(256);
    let mut l = LayerTar::new();
    l.file(&long, 0o644, b"x");
    assert!(matches!(
        apply(&[l.bytes()]).err().unwrap(),
        LayerError::NameTooLong { .. }
    ));
    let deep = vec!["d"; 2100].join("/");
    let mut l = LayerTar::new();
    l.file(&deep, 0o644, b"x");
    assert!(matches!(
        apply(&[l.bytes()]).err().unwrap(),
        LayerError::NameTooLong { .. }
    ));
}

#[test]
fn huge_names_are_reported_as_too_long() {
    let mut l = LayerTar::new();
    l.pax(&[("path", "a/".repeat(300_000).as_bytes())])
        .file("x", 0o644, b"");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::NameTooLong { .. }), "{err}");
}

// ---- entry types and metadata -------------------------------------------------------------

#[test]
fn devices_and_fifos_are_kept_as_nodes() {
    let mut l = LayerTar::new();
    l.char_device("dev/null", 0o666, 1, 3)
        .block_device("dev/sda", 0o660, 8, 0)
        .fifo("run/pipe", 0o620);
    let t = apply(&[l.bytes()]).unwrap();
    let snap = t.snapshot();
    assert_eq!(
        snap["dev/null"],
        Node::CharDevice {
            mode: 0o666,
            major: 1,
            minor: 3
        }
    );
    assert_eq!(
        snap["dev/sda"],
        Node::BlockDevice {
            mode: 0o660,
            major: 8,
            minor: 0
        }
    );
    assert_eq!(snap["run/pipe"], Node::Fifo { mode: 0o620 });
}

#[test]
fn mode_owner_and_mtime_are_kept() {
    let mut l = LayerTar::new();
    l.owner(4242, 77)
        .mtime(1234)
        .file("suid", 0o4755, b"s")
        .file("sgid", 0o2711, b"g")
        .dir("sticky", 0o1777);
    let t = apply(&[l.bytes()]).unwrap();
    let meta = |p: &str| t.tree.inode(t.inode(p)).meta.clone();
    assert_eq!(meta("suid").mode, 0o4755);
    assert_eq!(meta("sgid").mode, 0o2711);
    assert_eq!(meta("sticky").mode, 0o1777);
    assert_eq!((meta("suid").uid, meta("suid").gid), (4242, 77));
    assert_eq!(meta("suid").mtime, 1234);
}

#[test]
fn pax_records_override_owner_mtime_and_path() {
    let mut l = LayerTar::new();
    l.pax(&[
        ("uid", b"3000000000"),
        ("gid", b"5"),
        ("mtime", b"1700000000.5"),
        ("path", b"from/pax"),
    ])
    .file("ignored-name", 0o644, b"p");
    let t = apply(&[l.bytes()]).unwrap();
    let meta = &t.tree.inode(t.inode("from/pax")).meta;
    assert_eq!(
        (meta.uid, meta.gid, meta.mtime),
        (3_000_000_000, 5, 1_700_000_000)
    );
    assert!(!t.exists("ignored-name"));
}

#[test]
fn xattrs_are_kept_except_host_specific_ones() {
    let mut l = LayerTar::new();
    l.pax(&[
        ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
        ("SCHILY.xattr.user.note", b"hi"),
        ("SCHILY.xattr.security.selinux", b"system_u:object_r:bin_t"),
        ("SCHILY.xattr.user.rootlesscontainers", b"\x08\x01"),
    ])
    .file("ping", 0o755, b"p");
    let t = apply(&[l.bytes()]).unwrap();
    let xattrs = &t.tree.inode(t.inode("ping")).meta.xattrs;
    let names: Vec<_> = xattrs
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, ["security.capability", "user.note"]);
    assert_eq!(xattrs[&b"user.note"[..]], b"hi");
}

#[test]
fn gnu_long_names_and_long_link_names_are_used() {
    let dir = "x".repeat(120);
    let name = format!("{dir}/file");
    let link = format!("{dir}/link");
    let mut l = LayerTar::new();
    l.file(&name, 0o644, b"long").hardlink(&link, &name);
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.content(&name), b"long");
    assert_eq!(t.inode(&link), t.inode(&name));
}

#[test]
fn old_style_directory_entries_are_directories() {
    let mut l = LayerTar::new();
    l.raw(b"olddir/", 0, 0o700, b"", b"")
        .raw(b"oldfile", 0, 0o644, b"", b"f");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.snapshot()["olddir"], Node::Dir { mode: 0o700 });
    assert_eq!(t.content("oldfile"), b"f");
}

#[test]
fn pax_global_headers_are_skipped() {
    let mut l = LayerTar::new();
    l.raw(
        b"pax_global_header",
        b'g',
        0o644,
        b"",
        b"52 comment=0123456789012345678901234567890123456789\n",
    )
    .file("f", 0o644, b"x");
    let t = apply(&[l.bytes()]).unwrap();
    assert_eq!(t.ls(""), ["f"]);
}

#[test]
fn unsupported_entry_types_fail_the_layer() {
    let mut l = LayerTar::new();
    l.raw(b"volume", b'V', 0o644, b"", b"");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::UnsupportedEntryType { typeflag: 'V', .. }),
        "{err}"
    );
}

#[test]
fn pax_sparse_files_fail_the_layer() {
    let mut l = LayerTar::new();
    l.pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")])
        .file("GNUSparseFile.0/f", 0o644, b"x");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::SparseUnsupported { .. }), "{err}");
}

#[test]
fn header_only_entries_with_data_fail_the_layer() {
    let mut l = LayerTar::new();
    l.raw(b"d", b'5', 0o755, b"", b"hidden");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(
        matches!(err, LayerError::HeaderOnlyWithData { size: 6, .. }),
        "{err}"
    );
}

#[test]
fn truncated_file_data_fails_the_layer() {
    let mut l = LayerTar::new();
    l.raw_sized(b"f", b'0', 0o644, b"", 4096, b"only this");
    let mut bytes = l.bytes();
    bytes.truncate(512 + 9);
    let err = apply(&[bytes]).err().unwrap();
    assert!(
        matches!(
            err,
            LayerError::Truncated {
                expected: 4096,
                got: 9,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn stats_count_entries_bytes_and_whiteouts() {
    let mut upper = LayerTar::new();
    upper
        .file("x", 0o644, b"12345")
        .whiteout(".wh.other")
        .dir("d", 0o700);
    let t = apply(&[base().bytes(), upper.bytes()]).unwrap();
    assert_eq!(t.stats[0].entries, 6);
    assert_eq!(t.stats[0].bytes, 3);
    assert_eq!(
        (t.stats[1].entries, t.stats[1].bytes, t.stats[1].whiteouts),
        (2, 5, 1)
    );
    assert_eq!(t.limits.unpacked_bytes, 8);
}

// ---- limits -------------------------------------------------------------------------------

#[test]
fn limit_allows_exactly_the_cap_across_layers() {
    let mut a = LayerTar::new();
    a.file("a", 0o644, &[1; 600]);
    let mut b = LayerTar::new();
    b.file("b", 0o644, &[2; 424]);
    let t = apply_limited(&[a.bytes(), b.bytes()], 1024).unwrap();
    assert_eq!(t.limits.unpacked_bytes, 1024);
}

#[test]
fn limit_exceeded_across_layers_fails_with_a_clear_message() {
    let mut a = LayerTar::new();
    a.file("a", 0o644, &[1; 600]);
    let mut b = LayerTar::new();
    b.file("b", 0o644, &[2; 425]);
    let err = apply_limited(&[a.bytes(), b.bytes()], 1024).err().unwrap();
    assert!(matches!(err, LayerError::TooLarge { limit: 1024 }), "{err}");
    assert_eq!(
        err.to_string(),
        "layer unpacks to more than 1.0 KiB (limit set by farm.max_unpacked_bytes)"
    );
    let big = LayerError::TooLarge { limit: 4 << 30 };
    assert_eq!(
        big.to_string(),
        "layer unpacks to more than 4.0 GiB (limit set by farm.max_unpacked_bytes)"
    );
}

#[test]
fn declared_size_over_the_limit_fails_before_reading_data() {
    // The stream holds no data at all: if the size check did not come first, this would be
    // reported as truncated.
    let mut l = LayerTar::new();
    l.raw_sized(b"bomb", b'0', 0o644, b"", 1 << 40, b"");
    let mut bytes = l.bytes();
    bytes.truncate(512);
    let err = apply_limited(&[bytes], 1 << 20).err().unwrap();
    assert!(matches!(err, LayerError::TooLarge { .. }), "{err}");
}

#[test]
fn data_carried_by_whiteouts_is_charged_to_the_limit() {
    let mut l = LayerTar::new();
    l.raw(b".wh.x", b'0', 0o644, b"", &[0; 4096]);
    let err = apply_limited(&[l.bytes()], 1000).err().unwrap();
    assert!(matches!(err, LayerError::TooLarge { .. }), "{err}");
}

#[test]
fn oversized_extension_headers_fail_without_buffering_them() {
    let name = vec![b'n'; 5 << 20];
    let mut l = LayerTar::new();
    l.raw(&name, b'0', 0o644, b"", b"");
    let err = apply(&[l.bytes()]).err().unwrap();
    assert!(matches!(err, LayerError::ExtensionTooLarge { .. }), "{err}");
}

// ---- decompression ------------------------------------------------------------------------

fn sample_layer() -> Vec<u8> {
    let mut l = LayerTar::new();
    l.file("hello", 0o644, b"hello world");
    l.bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn unpack_with(media_type: &str, blob: Vec<u8>) -> Result<Vec<u8>, LayerError> {
    let work = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    let mut spool = Spool::new_in(work.path()).unwrap();
    let reader = decompress(media_type, Box::new(std::io::Cursor::new(blob)))?;
    apply_layer(&mut tree, &mut spool, reader, &mut Limits::new(1 << 20))?;
    let Kind::File(content) = tree.inode(tree.resolve(b"hello").unwrap()).kind else {
        panic!("not a file");
    };
    let mut buf = Vec::new();
    spool.read_into(content, &mut buf).unwrap();
    Ok(buf)
}

#[test]
fn decompresses_by_media_type_and_magic() {
    let tar = sample_layer();
    let zstd = zstd::encode_all(&tar[..], 3).unwrap();
    let cases = [
        ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&tar)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd.clone()),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            gzip(&tar),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&tar),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            gzip(&tar),
        ),
        // Mislabelled blobs are recognised by their magic bytes.
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            tar.clone(),
        ),
        ("application/vnd.oci.image.layer.v1.tar", zstd),
        ("application/octet-stream", gzip(&tar)),
    ];
    for (media_type, blob) in cases {
        assert_eq!(
            unpack_with(media_type, blob).unwrap(),
            b"hello world",
            "{media_type}"
        );
    }
}

#[test]
fn corrupt_compressed_stream_is_a_read_error() {
    let mut blob = gzip(&sample_layer());
    let len = blob.len();
    blob[10..len - 8].iter_mut().for_each(|b| *b = 0xff);
    let err = unpack_with("application/vnd.oci.image.layer.v1.tar+gzip", blob)
        .err()
        .unwrap();
    assert!(matches!(err, LayerError::Read(_)), "{err}");
}

#[test]
fn decompress_only_peeks_at_the_stream() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    struct Counting(std::io::Cursor<Vec<u8>>, Arc<AtomicUsize>);
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }
    let mut big = LayerTar::new();
    big.file("big", 0o644, &vec![7; 1 << 20]);
    let read = Arc::new(AtomicUsize::new(0));
    let source = Counting(std::io::Cursor::new(big.bytes()), read.clone());
    let _reader = decompress("application/vnd.oci.image.layer.v1.tar", Box::new(source)).unwrap();
    assert!(read.load(Ordering::SeqCst) <= 512);
}

#[test]
fn blank_numeric_fields_read_as_zero_like_go() {
    let mut header = tar::Header::new_gnu();
    header.set_path("blank").unwrap();
    header.set_size(1);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[b'x'; 512]);
    bytes.extend_from_slice(&[0; 1024]);
    let t = apply(&[bytes]).unwrap();
    let meta = &t.tree.inode(t.inode("blank")).meta;
    assert_eq!((meta.mode, meta.uid, meta.gid, meta.mtime), (0, 0, 0, 0));
    assert_eq!(t.content("blank"), b"x");
}
