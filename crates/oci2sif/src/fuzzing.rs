//! Entry points for the fuzz targets in the repository's `fuzz/` crate and for the corpus replay
//! test (`tests/fuzz_replay.rs`), not an API.
//!
//! Each function takes the bytes an image pusher (layers) or a build backend (SIF files)
//! controls, runs them through the same code a build does, and checks the properties every
//! accepted result must have. Errors are expected and ignored; a panic, a hang or an allocation
//! blow-up is a bug.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use crate::layers::{apply_layer, decompress, LimitSettings, Limits};
use crate::sif::read_descriptors;
use crate::tree::{is_plain_name, Content, InodeId, Kind, Spool, Tree};

/// Unpacked-bytes cap for the layer target: small, so that a decompression bomb hits it at once.
pub const LAYER_FUZZ_MAX_UNPACKED: u64 = 4 << 20;

/// The layer target's limits: every bound of [`LimitSettings`] scaled down, so that the fuzzer
/// reaches each limit's refusal path with small inputs.
pub const LAYER_FUZZ_LIMITS: LimitSettings = LimitSettings {
    max_unpacked_bytes: LAYER_FUZZ_MAX_UNPACKED,
    max_entries: 20_000,
    max_extension_bytes: 64 << 10,
    max_xattr_bytes_per_entry: 16 << 10,
    max_xattr_bytes: 256 << 10,
    max_name_bytes: 1 << 20,
    max_path_depth: 64,
    max_scratch_bytes: 16 << 20,
};

/// Media types the first input byte chooses from (`& 3`); the last is no layer type at all,
/// which makes [`decompress`] rely on sniffing alone.
const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/octet-stream",
];

/// One or two layers applied in order, the way a build applies an image's layers.
///
/// The first byte is a mode: bits 0-1 pick the declared media type, bit 2 splits the rest into
/// two layers at `(mode >> 3) * 512` bytes (so that whiteouts and replacements across layers are
/// reached). The rest is the layer blob exactly as pushed: plain tar, gzip or zstd.
pub fn layer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(mode & 3)];
    let layers: Vec<&[u8]> = if mode & 4 != 0 {
        let at = (usize::from(mode >> 3) * 512).min(rest.len());
        vec![&rest[..at], &rest[at..]]
    } else {
        vec![rest]
    };
    let mut tree = Tree::new();
    let mut spool = match Spool::new_in(&std::env::temp_dir()) {
        Ok(s) => s,
        Err(e) => panic!("cannot create the spool (environment, not input): {e}"),
    };
    let mut limits = Limits::with(LAYER_FUZZ_LIMITS);
    for blob in layers {
        let reader: Box<dyn Read + Send> = Box::new(Cursor::new(blob));
        let applied = decompress(media_type, reader)
            .and_then(|tar| apply_layer(&mut tree, &mut spool, tar, &mut limits));
        // A failed layer fails the build: the tree is not used any further.
        if applied.is_err() {
            return;
        }
    }
    assert!(limits.unpacked_bytes <= limits.settings.max_unpacked_bytes);
    assert!(spool.len() <= limits.unpacked_bytes);
    check_tree(&tree, &spool);
}

/// What the squashfs writer relies on: names are single components, file bytes lie inside the
/// spool, symlink targets are storable, and every reachable inode's link count is its number of
/// reachable names (the walk itself terminating shows there is no directory cycle).
fn check_tree(tree: &Tree, spool: &Spool) {
    let mut names: BTreeMap<InodeId, u32> = BTreeMap::new();
    tree.walk(|path, id| {
        if !path.is_empty() {
            *names.entry(id).or_default() += 1;
        }
        match &tree.inode(id).kind {
            Kind::Dir(children) => {
                for name in children.keys() {
                    assert!(is_plain_name(name), "entry name {name:?} under {path:?}");
                }
            }
            Kind::File(Content::Raw { offset, len }) => {
                assert!(offset
                    .checked_add(*len)
                    .is_some_and(|end| end <= spool.len()));
            }
            Kind::File(Content::Packed { .. }) => {
                // The fuzz targets apply layers into a raw spool.
                unreachable!("a raw spool packed {path:?}");
            }
            Kind::Symlink(target) => {
                assert!(
                    !target.is_empty() && target.len() < 4096,
                    "symlink {path:?}"
                );
            }
            _ => {}
        }
    });
    for (id, count) in names {
        assert_eq!(tree.inode(id).nlink, count, "nlink of inode {id}");
    }
}

/// A SIF file's header and descriptor table, as the server reads a SIF a build backend produced.
pub fn sif(data: &[u8]) {
    let Ok(info) = read_descriptors(&mut Cursor::new(data)) else {
        return;
    };
    assert!(info.objects.len() as u64 <= info.descriptors_total);
    // What the server later serves by offset must be inside the file.
    for o in &info.objects {
        assert!(o
            .offset
            .checked_add(o.size)
            .is_some_and(|end| end <= data.len() as u64));
    }
    let _ = info.primary_partition();
}
