//! Adds to an image's tree what `apptainer build x.sif docker://…` adds (the `/.singularity.d`
//! directory, its scripts, labels and deffile, a few mount points and symlinks), and produces the
//! bytes of the two JSON objects Apptainer stores next to the squashfs in the SIF.
//!
//! Everything here follows `docs/sif-build-spec.md` sections 2.4–2.6, one concept per module:
//! * [`config`]: the image config model, re-encoded as Go encodes it;
//! * [`scripts`]: the fixed scripts (files copied byte for byte from Apptainer's sources, cited
//!   where each is included; unit tests pin their lengths to the upstream files') and the
//!   generated runscript, env script and definition file;
//! * [`shell`]: Apptainer's shell quoting; [`dates`]: RFC 3339 and the build-date label;
//!   [`go_json`]: Go's JSON escapes; [`labels`]: `labels.json`;
//! * `editor`: the tree edits, resolving paths as the kernel would inside a chroot;
//!   `inspect`: `inspect-metadata.json`;
//! * [`arch`]: the image's CPU architecture from its ELF headers.

use std::io;

pub mod arch;
pub mod config;
pub mod dates;
mod editor;
pub mod go_json;
mod inspect;
pub mod labels;
pub mod scripts;
pub mod shell;

pub use arch::detect_arch;
pub use config::{ContainerConfig, EmptyObject, HealthConfig, ImageConfigFile};
pub use dates::{build_date_label, parse_rfc3339};
pub use labels::{labels, labels_json, BUILDER_VERSION_LABEL};
pub use scripts::{deffile, docker_env_script, runscript};
pub use shell::{args_quoted, escape_single_quotes, shell_escape};

use crate::tree::{Spool, Tree, ROOT};
use editor::Editor;
use scripts::{
    APPSBASE_PATH, BASE_DIRS, BASE_FILES, BASE_SYMLINKS, DEFFILE_PATH, DOCKER_ENV_PATH,
    LABELS_PATH, RUNSCRIPT_PATH,
};

#[derive(Debug, thiserror::Error)]
pub enum SingularityError {
    #[error("I/O error on the build's scratch spool: {0}")]
    Io(#[from] io::Error),
    #[error("the image has {found} at /{path}, where Apptainer needs {needed}")]
    Conflict {
        path: String,
        found: &'static str,
        needed: &'static str,
    },
    #[error("too many levels of symbolic links while resolving /{0} in the image")]
    SymlinkLoop(String),
    #[error("the image's root is not a directory")]
    RootNotADirectory,
    #[error("the source reference {0:?} contains control characters")]
    BadSourceRef(String),
    #[error(
        "cannot tell the image's CPU architecture: it has no executable of a known architecture \
         and its config says {0:?}"
    )]
    UnknownArchitecture(Option<String>),
    #[error("encoding {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// What [`add`] needs besides the tree.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub config: &'a ImageConfigFile,
    /// The image reference written after `from:` in the deffile, e.g. `host:5000/alice/tool:1`.
    pub source_ref: &'a str,
    /// Go `GOARCH` name of the image (see [`detect_arch`]).
    pub arch: &'a str,
    /// Unix seconds: mtime of the added files and the build-date label.
    pub build_time: i64,
}

/// The SIF metadata objects that go next to the squashfs partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifMetadata {
    /// Descriptor 1 (Def.FILE).
    pub deffile: Vec<u8>,
    /// Descriptor 2 (JSON.Generic `inspect-metadata.json`).
    pub inspect_metadata_json: Vec<u8>,
    /// Descriptor 3 (JSON.Generic `oci-config.json`).
    pub oci_config_json: Vec<u8>,
}

/// Adds Apptainer's directories, symlinks and files to `tree` (contents into `spool`) and
/// returns the SIF metadata objects, in the order `apptainer build` produces them.
pub fn add(
    tree: &mut Tree,
    spool: &mut Spool,
    input: &Input<'_>,
) -> Result<SifMetadata, SingularityError> {
    if input.source_ref.chars().any(char::is_control) {
        return Err(SingularityError::BadSourceRef(input.source_ref.to_string()));
    }
    if tree.children(ROOT).is_none() {
        return Err(SingularityError::RootNotADirectory);
    }
    let config = &input.config.config;
    let mut ed = Editor {
        tree,
        spool,
        mtime: input.build_time,
    };
    make_base_environment(&mut ed)?;
    ed.put_file(
        RUNSCRIPT_PATH,
        0o755,
        runscript(&config.entrypoint, &config.cmd).as_bytes(),
    )?;
    ed.put_file(
        DOCKER_ENV_PATH,
        0o755,
        docker_env_script(&config.env).as_bytes(),
    )?;
    ed.put_file(APPSBASE_PATH, 0o755, b"")?;
    let labels = labels(
        &config.labels,
        input.source_ref,
        input.arch,
        input.build_time,
    );
    ed.put_file(LABELS_PATH, 0o644, &labels_json(&labels)?)?;
    let deffile = deffile(input.source_ref);
    ed.keep_previous_deffile()?;
    ed.put_file(DEFFILE_PATH, 0o644, deffile.as_bytes())?;

    let inspect = inspect::inspect_metadata(ed.tree, ed.spool, labels)?;
    let oci_config_json = go_json::go_json(config).map_err(|source| SingularityError::Json {
        what: "oci-config.json",
        source,
    })?;
    Ok(SifMetadata {
        deffile: deffile.into_bytes(),
        inspect_metadata_json: inspect,
        oci_config_json,
    })
}

/// Writes `files` (path, mode, contents) into `tree` as [`add`] writes its own: resolved as the
/// kernel would inside a chroot, through the image's symlinks, overwriting. For the enroot image.
pub(crate) fn put_files(
    tree: &mut Tree,
    spool: &mut Spool,
    mtime: i64,
    files: &[(&str, u32, &[u8])],
) -> Result<(), SingularityError> {
    let mut ed = Editor { tree, spool, mtime };
    for (path, mode, bytes) in files {
        ed.put_file(path, *mode, bytes)?;
    }
    Ok(())
}

/// `makeBaseEnv`: owner-writable root, then the directories, symlinks and fixed files.
fn make_base_environment(ed: &mut Editor<'_>) -> Result<(), SingularityError> {
    ed.tree.inode_mut(ROOT).meta.mode |= 0o200;
    for dir in BASE_DIRS {
        ed.make_dir_unless_present(dir)?;
    }
    for (name, target) in BASE_SYMLINKS {
        ed.ensure_root_symlink(name, target);
    }
    for (path, mode, contents) in BASE_FILES {
        ed.put_file(path, mode, contents.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
