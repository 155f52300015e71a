//! Adds to an image's tree what `apptainer build x.sif docker://…` adds (the `/.singularity.d`
//! directory, its scripts, labels and deffile, a few mount points and symlinks), and produces the
//! bytes of the two JSON objects Apptainer stores next to the squashfs in the SIF.
//!
//! Everything here follows `docs/sif-build-spec.md` sections 2.4–2.6. Script texts are copied
//! byte for byte from Apptainer's sources, cited where each constant is defined; the unit tests
//! pin their lengths to the upstream files' lengths.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sif;
use crate::tree::{is_plain_name, Content, InodeId, Kind, Meta, Spool, Tree, ROOT};

/// Stored as `org.label-schema.usage.apptainer.version`; Apptainer puts its own version there.
pub const BUILDER_VERSION_LABEL: &str = concat!("oci2sif-", env!("CARGO_PKG_VERSION"));

/// Image-provided files read back for `inspect-metadata.json` (test script, help, extra env
/// scripts) are skipped beyond this size, so a hostile image cannot make the build load a
/// multi-gigabyte "script" into memory.
const MAX_INSPECTED_FILE: u64 = 1 << 20;

/// Linux's limit on symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: u32 = 40;

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

// ---------------------------------------------------------------------------------------------
// Image config
// ---------------------------------------------------------------------------------------------

/// The parts of an OCI/Docker image config file the builder reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    /// RFC 3339 creation time, the reproducible-build clock.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
}

/// The image config's `config` object, as go-containerregistry's `v1.Config`: Apptainer 1.3+
/// decodes it into that struct and re-encodes it as `oci-config.json`
/// (`internal/pkg/build/sources/conveyorPacker_oci.go` insertOCIConfig), so the field order and
/// the `omitempty` rules below are that struct's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub attach_stderr: bool,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub attach_stdin: bool,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub attach_stdout: bool,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub domainname: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub image: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub stdin_once: bool,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_false")]
    pub network_disabled: bool,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

/// go-containerregistry's `v1.HealthConfig` (durations are integer nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(deserialize_with = "null_as_default", skip_serializing_if = "is_zero")]
    pub retries: i64,
}

/// Go's `struct{}` map value (`ExposedPorts`, `Volumes`): any JSON value in, `{}` out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(EmptyObject)
    }
}

/// Go's decoder leaves a field at its zero value on JSON `null`; Docker writes `"Cmd": null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

// ---------------------------------------------------------------------------------------------
// Fixed file contents
// ---------------------------------------------------------------------------------------------

/// License header of the action scripts and startscript.
macro_rules! header_license_local {
    () => {
        concat!(
            "# Copyright (c) Contributors to the Apptainer project, established as\n",
            "#   Apptainer a Series of LF Projects LLC.\n",
            "#   For website terms of use, trademark policy, privacy policy and other\n",
            "#   project policies see https://lfprojects.org/policies\n",
            "# Copyright (c) 2018-2021, Sylabs Inc. All rights reserved.\n",
            "# This software is licensed under a 3-clause BSD license. Please consult the\n",
            "# LICENSE.md file distributed with the sources of this project regarding your\n",
            "# rights to use or distribute this software.\n",
        )
    };
}

/// License header of the env scripts.
macro_rules! header_license_url {
    () => {
        concat!(
            "# Copyright (c) Contributors to the Apptainer project, established as\n",
            "#   Apptainer a Series of LF Projects LLC.\n",
            "#   For website terms of use, trademark policy, privacy policy and other\n",
            "#   project policies see https://lfprojects.org/policies\n",
            "# Copyright (c) 2018-2021, Sylabs Inc. All rights reserved.\n",
            "# This software is licensed under a 3-clause BSD license. Please consult\n",
            "# https://github.com/apptainer/apptainer/blob/main/LICENSE.md regarding your\n",
            "# rights to use or distribute this software.\n",
        )
    };
}

/// The SingularityWare/LBNL notice shared by 01-base.sh and 99-base.sh.
macro_rules! header_lbnl {
    () => {
        concat!(
            "#\n",
            "# Copyright (c) 2017, SingularityWare, LLC. All rights reserved.\n",
            "# Copyright (c) 2015-2017, Gregory M. Kurtzer. All rights reserved.\n",
            "#\n",
            "# Copyright (c) 2016-2017, The Regents of the University of California,\n",
            "# through Lawrence Berkeley National Laboratory (subject to receipt of any\n",
            "# required approvals from the U.S. Dept. of Energy).  All rights reserved.\n",
            "#\n",
            "# NOTICE.  This Software was developed under funding from the U.S. Department of\n",
            "# Energy and the U.S. Government consequently retains certain rights. As such,\n",
            "# the U.S. Government has been granted for itself and others acting on its\n",
            "# behalf a paid-up, nonexclusive, irrevocable, worldwide license in the Software\n",
            "# to reproduce, distribute copies to the public, prepare derivative works, and\n",
            "# perform publicly and display publicly, and to permit other to do so.\n",
            "#\n",
        )
    };
}

/// The env-sourcing loop every action script starts with.
macro_rules! source_env_loop {
    () => {
        concat!(
            "for script in /.singularity.d/env/*.sh; do\n",
            "    if [ -f \"$script\" ]; then\n",
            "        . \"$script\"\n",
            "    fi\n",
            "done\n",
        )
    };
}

/// apptainer `internal/pkg/build/sources/exec.sh`.
const ACTION_EXEC: &str = concat!(
    "#!/bin/sh\n",
    header_license_local!(),
    "\n",
    source_env_loop!(),
    "\n",
    "exec \"$@\"\n",
);

/// apptainer `internal/pkg/build/sources/run.sh`.
const ACTION_RUN: &str = concat!(
    "#!/bin/sh\n",
    header_license_local!(),
    "\n",
    source_env_loop!(),
    "\n",
    "if test -n \"${SINGULARITY_APPNAME:-}\"; then\n",
    "\n",
    "    if test -x \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/runscript\"; then\n",
    "        exec \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/runscript\" \"$@\"\n",
    "    elif test -x \"/scif/apps/singularity/scif/runscript\"; then\n",
    "        exec \"/scif/apps/singularity/scif/runscript\" \"$@\"\n",
    "    else\n",
    "        echo \"No Apptainer runscript for contained app: ${SINGULARITY_APPNAME:-}\"\n",
    "        exit 1\n",
    "    fi\n",
    "\n",
    "elif test -x \"/.singularity.d/runscript\"; then\n",
    "    exec \"/.singularity.d/runscript\" \"$@\"\n",
    "else\n",
    "    echo \"No Apptainer runscript found, executing /bin/sh\"\n",
    "    exec /bin/sh \"$@\"\n",
    "fi\n",
);

/// apptainer `internal/pkg/build/sources/shell.sh`.
const ACTION_SHELL: &str = concat!(
    "#!/bin/sh\n",
    header_license_local!(),
    "\n",
    source_env_loop!(),
    "\n",
    "if test -n \"$SINGULARITY_SHELL\" -a -x \"$SINGULARITY_SHELL\"; then\n",
    "    exec $SINGULARITY_SHELL \"$@\"\n",
    "\n",
    "    echo \"ERROR: Failed running shell as defined by '\\$SINGULARITY_SHELL'\" 1>&2\n",
    "    exit 1\n",
    "\n",
    "elif test -x /bin/bash; then\n",
    "    SHELL=/bin/bash\n",
    "    PS1=\"Apptainer $APPTAINER_NAME:\\\\w> \"\n",
    "    export SHELL PS1\n",
    "    exec /bin/bash --norc \"$@\"\n",
    "elif test -x /bin/sh; then\n",
    "    SHELL=/bin/sh\n",
    "    export SHELL\n",
    "    exec /bin/sh \"$@\"\n",
    "else\n",
    "    echo \"ERROR: /bin/sh does not exist in container\" 1>&2\n",
    "fi\n",
    "exit 1\n",
);

/// apptainer `internal/pkg/build/sources/start.sh`.
const ACTION_START: &str = concat!(
    "#!/bin/sh\n",
    header_license_local!(),
    "\n",
    "# if we are here start notify PID 1 to continue\n",
    "# DON'T REMOVE\n",
    "kill -CONT 1\n",
    "\n",
    source_env_loop!(),
    "\n",
    "if test -x \"/.singularity.d/startscript\"; then\n",
    "    exec \"/.singularity.d/startscript\"\n",
    "fi\n",
);

/// apptainer `internal/pkg/build/sources/test.sh`.
const ACTION_TEST: &str = concat!(
    "#!/bin/sh\n",
    header_license_local!(),
    "\n",
    source_env_loop!(),
    "\n",
    "\n",
    "if test -n \"${SINGULARITY_APPNAME:-}\"; then\n",
    "\n",
    "    if test -x \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/test\"; then\n",
    "        exec \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/test\" \"$@\"\n",
    "    elif test -x \"/scif/apps/singularity/scif/test\"; then\n",
    "        exec \"/scif/apps/singularity/scif/test\" \"$@\"\n",
    "    else\n",
    "        echo \"No tests for contained app: ${SINGULARITY_APPNAME:-}\"\n",
    "        exit 1\n",
    "    fi\n",
    "elif test -x \"/.singularity.d/test\"; then\n",
    "    exec \"/.singularity.d/test\" \"$@\"\n",
    "else\n",
    "    echo \"No test found in container, executing /bin/sh -c true\"\n",
    "    exec /bin/sh -c true\n",
    "fi\n",
);

/// apptainer `internal/pkg/build/sources/01-base.sh`.
const ENV_01_BASE: &str = concat!("#!/bin/sh\n", header_license_url!(), header_lbnl!());

/// apptainer `internal/pkg/build/sources/90-environment.sh`.
const ENV_90_ENVIRONMENT: &str = concat!(
    "#!/bin/sh\n",
    header_license_url!(),
    "\n",
    "# Custom environment shell code should follow\n",
);

/// apptainer `internal/pkg/build/sources/95-apps.sh` (the two `\t\telif` lines are upstream's).
const ENV_95_APPS: &str = concat!(
    "#!/bin/sh\n",
    header_license_url!(),
    "#\n",
    "# Copyright (c) 2017, SingularityWare, LLC. All rights reserved.\n",
    "#\n",
    "# See the COPYRIGHT.md file at the top-level directory of this distribution and at\n",
    "# https://github.com/apptainer/apptainer/blob/main/COPYRIGHT.md.\n",
    "#\n",
    "# This file is part of the Apptainer Linux container project. It is subject to the license\n",
    "# terms in the LICENSE.md file found in the top-level directory of this distribution and\n",
    "# at https://github.com/apptainer/apptainer/blob/main/LICENSE.md. No part\n",
    "# of Apptainer, including this file, may be copied, modified, propagated, or distributed\n",
    "# except according to the terms contained in the LICENSE.md file.\n",
    "\n",
    "if test -n \"${SINGULARITY_APPNAME:-}\"; then\n",
    "\n",
    "    # The active app should be exported\n",
    "    export SINGULARITY_APPNAME\n",
    "\n",
    "    if test -d \"/scif/apps/${SINGULARITY_APPNAME:-}/\"; then\n",
    "        SCIF_APPS=\"/scif/apps\"\n",
    "        SCIF_APPROOT=\"/scif/apps/${SINGULARITY_APPNAME:-}\"\n",
    "        export SCIF_APPROOT SCIF_APPS\n",
    "        PATH=\"/scif/apps/${SINGULARITY_APPNAME:-}:/scif/apps/singularity:$PATH\"\n",
    "\n",
    "        # Automatically add application bin to path\n",
    "        if test -d \"/scif/apps/${SINGULARITY_APPNAME:-}/bin\"; then\n",
    "            PATH=\"/scif/apps/${SINGULARITY_APPNAME:-}/bin:$PATH\"\n",
    "        elif test -d \"/scif/apps/singularity/bin\"; then\n",
    "            PATH=\"/scif/apps/singularity/bin:$PATH\"\n",
    "        fi\n",
    "\n",
    "        # Automatically add application lib to LD_LIBRARY_PATH\n",
    "        if test -d \"/scif/apps/${SINGULARITY_APPNAME:-}/lib\"; then\n",
    "            LD_LIBRARY_PATH=\"/scif/apps/${SINGULARITY_APPNAME:-}/lib:$LD_LIBRARY_PATH\"\n",
    "            export LD_LIBRARY_PATH\n",
    "        elif test -d \"/scif/apps/singularity/lib\"; then\n",
    "            LD_LIBRARY_PATH=\"/scif/apps/singularity/lib:$LD_LIBRARY_PATH\"\n",
    "            export LD_LIBRARY_PATH\n",
    "        fi\n",
    "\n",
    "        # Automatically source environment\n",
    "        if [ -f \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/01-base.sh\" ]; then\n",
    "            . \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/01-base.sh\"\n",
    "\t\telif [ -f \"/scif/apps/singularity/scif/env/01-base.sh\" ]; then\n",
    "            . \"/scif/apps/singularity/scif/env/01-base.sh\" \"$@\"\n",
    "        fi\n",
    "        if [ -f \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/90-environment.sh\" ]; then\n",
    "            . \"/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/90-environment.sh\"\n",
    "\t\telif [ -f \"/scif/apps/singularity/scif/env/90-environment.sh\" ]; then\n",
    "            . \"/scif/apps/singularity/scif/env/90-environment.sh\" \"$@\"\n",
    "        fi\n",
    "\n",
    "        export PATH\n",
    "    else\n",
    "        echo \"Could not locate the container application: ${SINGULARITY_APPNAME}\"\n",
    "        exit 1\n",
    "    fi\n",
    "fi\n",
);

/// apptainer `internal/pkg/build/sources/99-base.sh`.
const ENV_99_BASE: &str = concat!(
    "#!/bin/sh\n",
    header_license_url!(),
    header_lbnl!(),
    "\n",
    "if [ -z \"${LD_LIBRARY_PATH:-}\" ]; then\n",
    "    LD_LIBRARY_PATH=\"/.singularity.d/libs\"\n",
    "else\n",
    "    LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"\n",
    "fi\n",
    "\n",
    "if [ -z \"${PS1:-}\" ]; then\n",
    "    PS1=\"Apptainer> \"\n",
    "fi\n",
    "export LD_LIBRARY_PATH PS1\n",
);

/// apptainer `internal/pkg/build/sources/99-runtimevars.sh` (tab-indented upstream).
const ENV_99_RUNTIMEVARS: &str = concat!(
    "#!/bin/sh\n",
    header_license_url!(),
    "#\n",
    "\n",
    "if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then\n",
    "\tPATH=\"${SING_USER_DEFINED_PREPEND_PATH}:${PATH}\"\n",
    "fi\n",
    "\n",
    "if [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then\n",
    "\tPATH=\"${PATH}:${SING_USER_DEFINED_APPEND_PATH}\"\n",
    "fi\n",
    "\n",
    "if [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then\n",
    "\tPATH=\"${SING_USER_DEFINED_PATH}\"\n",
    "fi\n",
    "\n",
    "unset SING_USER_DEFINED_PREPEND_PATH \\\n",
    "\t  SING_USER_DEFINED_APPEND_PATH \\\n",
    "\t  SING_USER_DEFINED_PATH\n",
    "\n",
    "export PATH\n",
);

/// apptainer `internal/pkg/build/sources/startscript.sh`.
const STARTSCRIPT: &str = concat!("#!/bin/sh\n", header_license_local!());

/// Directories `makeDirs` creates (apptainer `internal/pkg/build/sources/base_environment.go`).
const BASE_DIRS: [&str; 11] = [
    ".singularity.d/libs",
    ".singularity.d/actions",
    ".singularity.d/env",
    "dev",
    "proc",
    "root",
    "var/tmp",
    "tmp",
    "etc",
    "sys",
    "home",
];

/// Symlinks `makeSymlinks` creates at the root, with the relative targets of releases 1.1–1.5.
const BASE_SYMLINKS: [(&str, &str); 6] = [
    ("singularity", ".singularity.d/runscript"),
    (".run", ".singularity.d/actions/run"),
    (".exec", ".singularity.d/actions/exec"),
    (".test", ".singularity.d/actions/test"),
    (".shell", ".singularity.d/actions/shell"),
    ("environment", ".singularity.d/env/90-environment.sh"),
];

/// Fixed files `makeFiles` writes (path, mode, contents); `/etc/hosts` and `/etc/resolv.conf`
/// are empty bind-mount targets. The placeholder runscript is left out: the OCI runscript
/// replaces it in the same build anyway.
const BASE_FILES: [(&str, u32, &str); 13] = [
    ("etc/hosts", 0o644, ""),
    ("etc/resolv.conf", 0o644, ""),
    (".singularity.d/actions/exec", 0o755, ACTION_EXEC),
    (".singularity.d/actions/run", 0o755, ACTION_RUN),
    (".singularity.d/actions/shell", 0o755, ACTION_SHELL),
    (".singularity.d/actions/start", 0o755, ACTION_START),
    (".singularity.d/actions/test", 0o755, ACTION_TEST),
    (".singularity.d/env/01-base.sh", 0o755, ENV_01_BASE),
    (
        ".singularity.d/env/90-environment.sh",
        0o755,
        ENV_90_ENVIRONMENT,
    ),
    (".singularity.d/env/95-apps.sh", 0o755, ENV_95_APPS),
    (".singularity.d/env/99-base.sh", 0o755, ENV_99_BASE),
    (
        ".singularity.d/env/99-runtimevars.sh",
        0o755,
        ENV_99_RUNTIMEVARS,
    ),
    (".singularity.d/startscript", 0o755, STARTSCRIPT),
];

const RUNSCRIPT_PATH: &str = ".singularity.d/runscript";
const DOCKER_ENV_PATH: &str = ".singularity.d/env/10-docker2singularity.sh";
const APPSBASE_PATH: &str = ".singularity.d/env/94-appsbase.sh";
const LABELS_PATH: &str = ".singularity.d/labels.json";
const DEFFILE_PATH: &str = ".singularity.d/Singularity";
const BOOTSTRAP_HISTORY_PATH: &str = ".singularity.d/bootstrap_history";
const ENV_DIR: &str = ".singularity.d/env";

// ---------------------------------------------------------------------------------------------
// Generated texts
// ---------------------------------------------------------------------------------------------

/// The definition file Apptainer synthesizes for `docker://<source_ref>`
/// (`pkg/build/types/definition.go` NewDefinitionFromURI).
pub fn deffile(source_ref: &str) -> String {
    format!("bootstrap: docker\nfrom: {source_ref}\n\n")
}

/// Apptainer's `shell.Escape` (`internal/pkg/util/shell/escape.go`): makes a value safe inside
/// double quotes.
pub fn shell_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('`', "\\`")
        .replace('$', "\\$")
}

/// Apptainer's `shell.EscapeSingleQuotes`: makes a value safe inside single quotes.
pub fn escape_single_quotes(s: &str) -> String {
    s.replace('\'', "'\"'\"'")
}

/// Apptainer's `shell.ArgsQuoted`: each argument escaped and double-quoted, space-separated.
pub fn args_quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("\"{}\"", shell_escape(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `10-docker2singularity.sh` from the image's `Env`, with Apptainer 1.5's quoting (1.1–1.4
/// double-escaped specials through Go's `%q`): invalid names are skipped, `PATH` is set
/// unconditionally, everything else only as a default the user's environment can override.
pub fn docker_env_script(env: &[String]) -> String {
    let mut script = String::from("#!/bin/sh\n");
    for entry in env {
        let (name, value) = match entry.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (entry.as_str(), None),
        };
        if !is_shell_variable_name(name) {
            continue;
        }
        let line = match value {
            None => format!("export {name}=\"${{{name}:-}}\"\n"),
            Some(value) if name == "PATH" => format!("export PATH=\"{}\"\n", shell_escape(value)),
            Some(value) => format!(
                "export {name}=\"${{{name}:-\"{}\"}}\"\n",
                shell_escape(value)
            ),
        };
        script.push_str(&line);
    }
    script
}

/// Apptainer's `^[a-zA-Z_]+[a-zA-Z0-9_]*$` check on env names.
fn is_shell_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The runscript Apptainer writes for an OCI image: `insertRunScript` in
/// `internal/pkg/build/sources/conveyorPacker_oci.go`, i.e. three variable lines and the
/// `ociRunscript` Go template rendered with the `set --` prepend lines. The template's
/// `{{- …}}` markers trim the whitespace before them; the string pieces below are the template
/// text between actions with that trimming already applied.
pub fn runscript(entrypoint: &[String], cmd: &[String]) -> String {
    let prepend_cmd = prepend_lines(cmd);
    let prepend_ep = prepend_lines(entrypoint);
    let mut s = String::from("#!/bin/sh\n");
    s += &format!(
        "OCI_ENTRYPOINT='{}'\n",
        escape_single_quotes(&args_quoted(entrypoint))
    );
    s += &format!("OCI_CMD='{}'\n", escape_single_quotes(&args_quoted(cmd)));
    s += RUNSCRIPT_NO_EVAL_ENTRYPOINT_ONLY;
    s += &prepend_ep;
    s += RUNSCRIPT_NO_EVAL_CMD_ONLY;
    if !prepend_cmd.is_empty() {
        s += "\n        if [ $# -eq 0 ]; then\n            ";
        s += &prepend_cmd;
        s += "\n        fi";
    }
    s += RUNSCRIPT_NO_EVAL_BOTH;
    if !prepend_ep.is_empty() {
        s += "\n    if [ $# -gt 0 ]; then\n        ";
        s += &prepend_ep;
        s += "\n\telse\n        ";
        s += &prepend_cmd;
        s += "\n        ";
        s += &prepend_ep;
        s += "\n    fi";
    } else if !prepend_cmd.is_empty() {
        s += "\n    if [ $# -eq 0 ]; then\n        ";
        s += &prepend_cmd;
        s += "\n    fi";
    }
    s += RUNSCRIPT_EVAL;
    s
}

/// One `set -- 'arg' "$@"` line per argument, last argument first, so that running them in
/// order leaves the arguments in their original order in front of `$@`.
fn prepend_lines(args: &[String]) -> String {
    args.iter()
        .rev()
        .map(|a| format!("set -- '{}' \"$@\"\n", escape_single_quotes(a)))
        .collect()
}

const RUNSCRIPT_NO_EVAL_ENTRYPOINT_ONLY: &str = r#"
# When SINGULARITY_NO_EVAL set, use OCI compatible behavior that does
# not evaluate resolved CMD / ENTRYPOINT / ARGS through the shell, and
# does not modify expected quoting behavior of args.
if [ -n "$SINGULARITY_NO_EVAL" ]; then
    # ENTRYPOINT only - run entrypoint plus args
    if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
        "#;

const RUNSCRIPT_NO_EVAL_CMD_ONLY: &str = r#"
        exec "$@"
    fi

    # CMD only - run CMD or override with args
    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then"#;

const RUNSCRIPT_NO_EVAL_BOTH: &str = r#"
        exec "$@"
    fi

    # ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args
    # override with user provided args"#;

/// Ends with the `eval` line Apptainer's runtime looks for to run the script in its own shell
/// interpreter, so it must stay verbatim.
const RUNSCRIPT_EVAL: &str = r#"
    exec "$@"
fi

# Standard Apptainer behavior evaluates CMD / ENTRYPOINT / ARGS
# combination through shell before exec, and requires special quoting
# due to concatenation of CMDLINE_ARGS.
CMDLINE_ARGS=""
# prepare command line arguments for evaluation
for arg in "$@"; do
        CMDLINE_ARGS="${CMDLINE_ARGS} \"$arg\""
done

# ENTRYPOINT only - run entrypoint plus args
if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
    else
        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT}"
    fi
fi

# CMD only - run CMD or override with args
if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${CMDLINE_ARGS}"
    else
        SINGULARITY_OCI_RUN="${OCI_CMD}"
    fi
fi

# ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args
# override with user provided args
if [ $# -gt 0 ]; then
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
else
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"
fi

# Evaluate shell expressions first and set arguments accordingly,
# then execute final command as first container process
eval "set ${SINGULARITY_OCI_RUN}"
exec "$@"
"#;

/// The labels Apptainer stores: the image's own labels overlaid with its build labels
/// (`addBuildLabels` in `internal/pkg/build/metadata.go`). `build-arch` is the image's
/// architecture rather than the build host's, which is what a build on a matching host gives.
pub fn labels(
    config_labels: &BTreeMap<String, String>,
    source_ref: &str,
    arch: &str,
    build_time: i64,
) -> BTreeMap<String, String> {
    let mut labels = config_labels.clone();
    let build_labels = [
        ("org.label-schema.schema-version", "1.0".to_string()),
        ("org.label-schema.build-date", build_date_label(build_time)),
        (
            "org.label-schema.usage.apptainer.version",
            BUILDER_VERSION_LABEL.to_string(),
        ),
        (
            "org.label-schema.usage.singularity.deffile.bootstrap",
            "docker".to_string(),
        ),
        (
            "org.label-schema.usage.singularity.deffile.from",
            source_ref.to_string(),
        ),
        ("org.label-schema.build-arch", arch.to_string()),
    ];
    for (key, value) in build_labels {
        labels.insert(key.to_string(), value);
    }
    labels
}

/// `labels.json` as Go's `json.MarshalIndent(labels, "", "\t")`: sorted keys, tab indent,
/// `<>&` escaped, no trailing newline.
pub fn labels_json(labels: &BTreeMap<String, String>) -> Result<Vec<u8>, SingularityError> {
    go_json_indented(labels).map_err(|source| SingularityError::Json {
        what: "labels.json",
        source,
    })
}

/// Go's build-date label: `<Weekday>_<D>_<Month>_<YYYY>_<H>:<M>:<S>_<TZ>`, nothing padded.
/// Always in UTC here: the builder runs on servers whose local zone says nothing about the image.
pub fn build_date_label(unix: i64) -> String {
    const WEEKDAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    format!(
        "{weekday}_{day}_{}_{year}_{}:{}:{}_UTC",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parses an RFC 3339 timestamp (the image config's `created`) into Unix seconds, dropping
/// fractions. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        rest = &rest[1 + frac..];
    }
    let offset = parse_utc_offset(rest)?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn parse_utc_offset(b: &[u8]) -> Option<i64> {
    match b {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            Some(if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            })
        }
        _ => None,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; serde_json
/// does not. None of them can appear outside a string in JSON, so a plain pass is exact.
fn escape_like_go(json: String) -> Vec<u8> {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// Go's `json.Marshal`.
fn go_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(escape_like_go(serde_json::to_string(value)?))
}

/// Go's `json.MarshalIndent(value, "", "\t")`.
fn go_json_indented<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf, formatter,
    ))?;
    // serde_json writes valid UTF-8; the lossy conversion never replaces anything.
    Ok(escape_like_go(String::from_utf8_lossy(&buf).into_owned()))
}

/// `inspect-metadata.json`: `apptainer inspect --all` output re-marshalled (`pkg/inspect`).
/// Field order is the Go struct's; empty fields are omitted.
#[derive(Serialize)]
struct InspectMetadata {
    data: InspectData,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct InspectData {
    attributes: InspectAttributes,
}

#[derive(Serialize, Default)]
struct InspectAttributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    runscript: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    test: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    helpfile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deffile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    startscript: String,
}

// ---------------------------------------------------------------------------------------------
// Tree edits
// ---------------------------------------------------------------------------------------------

/// Where a path ends up in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    /// The last component exists: `id` is named `name` in directory `parent`.
    Entry {
        parent: InodeId,
        name: Vec<u8>,
        id: InodeId,
    },
    /// Every directory exists but the last component does not.
    Missing { parent: InodeId, name: Vec<u8> },
    /// The path ends at a directory without naming it (`/`, or a trailing `..`).
    Dir(InodeId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathError {
    /// A directory on the way is missing.
    MissingDir {
        parent: InodeId,
        name: Vec<u8>,
    },
    /// Something on the way is not a directory, or a symlink target has an unusable name.
    NotADirectory,
    Loop,
}

/// Resolves `path` from the root the way the kernel would inside a chroot: every symlink on the
/// way is followed (absolute targets restart at the root, `..` never climbs above it), the last
/// component only if `follow_last`.
fn resolve(tree: &Tree, path: &[u8], follow_last: bool) -> Result<Resolved, PathError> {
    let mut stack = vec![ROOT];
    let mut pending = reversed_components(path);
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        if !is_plain_name(&name) {
            return Err(PathError::NotADirectory);
        }
        let parent = *stack.last().unwrap_or(&ROOT);
        let is_last = pending.is_empty();
        let Some(id) = tree.lookup(parent, &name) else {
            return if is_last {
                Ok(Resolved::Missing { parent, name })
            } else {
                Err(PathError::MissingDir { parent, name })
            };
        };
        match &tree.inode(id).kind {
            Kind::Symlink(target) if !is_last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(PathError::Loop);
                }
                if target.is_empty() {
                    return Err(PathError::NotADirectory);
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                pending.extend(reversed_components(target));
            }
            _ if is_last => return Ok(Resolved::Entry { parent, name, id }),
            Kind::Dir(_) => stack.push(id),
            _ => return Err(PathError::NotADirectory),
        }
    }
    Ok(Resolved::Dir(*stack.last().unwrap_or(&ROOT)))
}

/// Path components, last first (so `pop` yields them in order), without empty ones and `.`.
fn reversed_components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Applies the `/.singularity.d` additions to one tree.
struct Editor<'a> {
    tree: &'a mut Tree,
    spool: &'a mut Spool,
    /// Modification time of everything created or rewritten.
    mtime: i64,
}

impl Editor<'_> {
    fn new_dir(&mut self, parent: InodeId, name: Vec<u8>) -> InodeId {
        let meta = Meta::new(0o755, 0, 0, self.mtime);
        let id = self.tree.add_inode(Kind::Dir(BTreeMap::new()), meta);
        self.tree.link(parent, name, id);
        id
    }

    /// [`resolve`], creating missing directories on the way (as `MkdirAll` does).
    fn resolve_creating_dirs(
        &mut self,
        path: &str,
        follow_last: bool,
    ) -> Result<Resolved, SingularityError> {
        // Each round creates one directory; the bound only guards against a logic error.
        for _ in 0..1024 {
            match resolve(self.tree, path.as_bytes(), follow_last) {
                Err(PathError::MissingDir { parent, name }) => {
                    self.new_dir(parent, name);
                }
                other => return other.map_err(|e| path_error(path, e, "a directory")),
            }
        }
        Err(SingularityError::SymlinkLoop(path.to_string()))
    }

    /// `mkdirAllInRootfs`: creates `path` (0755, root) unless something, even a symlink, is
    /// already there.
    fn make_dir_unless_present(&mut self, path: &str) -> Result<(), SingularityError> {
        if let Resolved::Missing { parent, name } = self.resolve_creating_dirs(path, false)? {
            self.new_dir(parent, name);
        }
        Ok(())
    }

    /// A directory that must exist, following symlinks (created if absent); an error if the
    /// image has something else there.
    fn existing_dir(&mut self, path: &str) -> Result<InodeId, SingularityError> {
        self.make_dir_unless_present(path)?;
        match self.resolve_creating_dirs(path, true)? {
            Resolved::Entry { id, .. } | Resolved::Dir(id) if self.tree.children(id).is_some() => {
                Ok(id)
            }
            _ => Err(conflict(
                path,
                "something other than a directory",
                "a directory",
            )),
        }
    }

    /// Root-level symlink: created if absent, retargeted if it points elsewhere, and left alone
    /// if the image has something else there.
    fn ensure_root_symlink(&mut self, name: &str, target: &str) {
        let wanted = Kind::Symlink(target.as_bytes().to_vec());
        match self.tree.lookup(ROOT, name.as_bytes()) {
            Some(id) if self.tree.inode(id).kind == wanted => {}
            Some(id) if !matches!(self.tree.inode(id).kind, Kind::Symlink(_)) => {}
            _ => {
                let id = self
                    .tree
                    .add_inode(wanted, Meta::new(0o777, 0, 0, self.mtime));
                self.tree.link(ROOT, name.as_bytes().to_vec(), id);
            }
        }
    }

    /// Writes a file the way `makeFile` does with overwrite on: an existing regular file (also
    /// through a symlink) gets the new mode and contents but keeps its owner, anything missing
    /// is created root-owned. A symlink that leads nowhere usable is replaced by the file, so
    /// that bind-mount targets like `/etc/resolv.conf` always exist.
    fn put_file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<(), SingularityError> {
        let content = self.spool.append_bytes(bytes)?;
        match self.resolve_creating_dirs(path, false)? {
            Resolved::Missing { parent, name } => self.create_file(parent, name, mode, content),
            Resolved::Entry { parent, name, id } => match self.tree.inode(id).kind {
                Kind::File(_) => self.rewrite_file(id, mode, content),
                Kind::Symlink(_) => self.put_through_symlink(path, parent, name, mode, content)?,
                _ => {
                    return Err(conflict(
                        path,
                        kind_name(&self.tree.inode(id).kind),
                        "a file",
                    ))
                }
            },
            Resolved::Dir(_) => return Err(conflict(path, "a directory", "a file")),
        }
        Ok(())
    }

    fn put_through_symlink(
        &mut self,
        path: &str,
        link_parent: InodeId,
        link_name: Vec<u8>,
        mode: u32,
        content: Content,
    ) -> Result<(), SingularityError> {
        match resolve(self.tree, path.as_bytes(), true) {
            Ok(Resolved::Entry { id, .. }) if matches!(self.tree.inode(id).kind, Kind::File(_)) => {
                self.rewrite_file(id, mode, content);
            }
            Ok(Resolved::Missing { parent, name }) => self.create_file(parent, name, mode, content),
            Ok(Resolved::Entry { id, .. }) => {
                return Err(conflict(
                    path,
                    kind_name(&self.tree.inode(id).kind),
                    "a file",
                ));
            }
            Ok(Resolved::Dir(_)) => return Err(conflict(path, "a directory", "a file")),
            Err(_) => self.create_file(link_parent, link_name, mode, content),
        }
        Ok(())
    }

    fn create_file(&mut self, parent: InodeId, name: Vec<u8>, mode: u32, content: Content) {
        let id = self
            .tree
            .add_inode(Kind::File(content), Meta::new(mode, 0, 0, self.mtime));
        self.tree.link(parent, name, id);
    }

    fn rewrite_file(&mut self, id: InodeId, mode: u32, content: Content) {
        let inode = self.tree.inode_mut(id);
        inode.kind = Kind::File(content);
        inode.meta.mode = mode;
        inode.meta.mtime = self.mtime;
    }

    /// `insertDefinition`: an image that already carries a definition file (one built by
    /// Apptainer) keeps it as `bootstrap_history/Apptainer<N>`.
    fn keep_previous_deffile(&mut self) -> Result<(), SingularityError> {
        let Ok(Resolved::Entry { parent, name, id }) =
            resolve(self.tree, DEFFILE_PATH.as_bytes(), false)
        else {
            return Ok(());
        };
        let history = self.existing_dir(BOOTSTRAP_HISTORY_PATH)?;
        let index = self.tree.children(history).map_or(0, |c| c.len());
        self.tree.unlink(parent, &name);
        self.tree
            .link(history, format!("Apptainer{index}").into_bytes(), id);
        Ok(())
    }

    /// Contents of a regular file (following symlinks), if it exists and is small enough.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, SingularityError> {
        let Ok(Resolved::Entry { id, .. }) = resolve(self.tree, path.as_bytes(), true) else {
            return Ok(None);
        };
        match self.tree.inode(id).kind {
            Kind::File(content) if content.len <= MAX_INSPECTED_FILE => {
                let mut buf = Vec::new();
                self.spool.read_into(content, &mut buf)?;
                Ok(Some(buf))
            }
            _ => Ok(None),
        }
    }

    /// A file as `apptainer inspect` reports it: text with trailing newlines trimmed.
    fn inspected_text(&self, path: &str) -> Result<String, SingularityError> {
        Ok(self
            .read_file(path)?
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .unwrap_or_default())
    }

    /// The env scripts `inspect` reports: `10-docker*.sh` and `9*-environment.sh`.
    fn inspected_environment(&self) -> Result<BTreeMap<String, String>, SingularityError> {
        let Ok(Resolved::Entry { id: dir, .. }) = resolve(self.tree, ENV_DIR.as_bytes(), true)
        else {
            return Ok(BTreeMap::new());
        };
        let names: Vec<String> = self
            .tree
            .children(dir)
            .into_iter()
            .flat_map(|children| children.keys())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .filter(|name| is_inspected_env_script(name))
            .collect();
        let mut environment = BTreeMap::new();
        for name in names {
            let path = format!("{ENV_DIR}/{name}");
            if let Some(bytes) = self.read_file(&path)? {
                let text = String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\n')
                    .to_string();
                environment.insert(format!("/{path}"), text);
            }
        }
        Ok(environment)
    }
}

fn is_inspected_env_script(name: &str) -> bool {
    let docker = name.starts_with("10-docker") && name.ends_with(".sh") && name.len() >= 12;
    let environment =
        name.starts_with('9') && name.ends_with("-environment.sh") && name.len() >= 16;
    docker || environment
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir(_) => "a directory",
        Kind::File(_) => "a file",
        Kind::Symlink(_) => "a symlink",
        Kind::CharDevice { .. } => "a character device",
        Kind::BlockDevice { .. } => "a block device",
        Kind::Fifo => "a FIFO",
        Kind::Socket => "a socket",
    }
}

fn conflict(path: &str, found: &'static str, needed: &'static str) -> SingularityError {
    SingularityError::Conflict {
        path: path.to_string(),
        found,
        needed,
    }
}

fn path_error(path: &str, error: PathError, needed: &'static str) -> SingularityError {
    match error {
        PathError::Loop => SingularityError::SymlinkLoop(path.to_string()),
        PathError::NotADirectory | PathError::MissingDir { .. } => {
            conflict(path, "a non-directory on the way", needed)
        }
    }
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

    let inspect = inspect_metadata(&ed, labels)?;
    let oci_config_json = go_json(config).map_err(|source| SingularityError::Json {
        what: "oci-config.json",
        source,
    })?;
    Ok(SifMetadata {
        deffile: deffile.into_bytes(),
        inspect_metadata_json: inspect,
        oci_config_json,
    })
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

fn inspect_metadata(
    ed: &Editor<'_>,
    labels: BTreeMap<String, String>,
) -> Result<Vec<u8>, SingularityError> {
    let attributes = InspectAttributes {
        environment: ed.inspected_environment()?,
        labels,
        runscript: ed.inspected_text(RUNSCRIPT_PATH)?,
        test: ed.inspected_text(".singularity.d/test")?,
        helpfile: ed.inspected_text(".singularity.d/runscript.help")?,
        deffile: ed.inspected_text(DEFFILE_PATH)?,
        startscript: ed.inspected_text(".singularity.d/startscript")?,
    };
    let metadata = InspectMetadata {
        data: InspectData { attributes },
        kind: "container",
    };
    go_json(&metadata).map_err(|source| SingularityError::Json {
        what: "inspect-metadata.json",
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// Architecture
// ---------------------------------------------------------------------------------------------

/// What an ELF header says about the CPU a binary is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElfArch {
    NotElf,
    /// An ELF binary for a CPU SIF has no code for (e.g. big-endian arm64).
    Unknown,
    Known(&'static str),
}

/// (e_machine, 64-bit, little-endian) → GOARCH, after `formats` in apptainer
/// `internal/pkg/util/machine/machine.go` (with ppc64 as the 64-bit class it really is), plus
/// loong64, which SIF gained later.
const ELF_MACHINES: [(u16, bool, bool, &str); 14] = [
    (3, false, true, "386"),
    (6, false, true, "386"),
    (62, true, true, "amd64"),
    (40, false, true, "arm"),
    (183, true, true, "arm64"),
    (22, true, false, "s390x"),
    (21, true, false, "ppc64"),
    (21, true, true, "ppc64le"),
    (8, false, false, "mips"),
    (8, false, true, "mipsle"),
    (8, true, false, "mips64"),
    (8, true, true, "mips64le"),
    (243, true, true, "riscv64"),
    (258, true, true, "loong64"),
];

fn elf_arch(header: &[u8]) -> ElfArch {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return ElfArch::NotElf;
    }
    let is_64 = match header[4] {
        1 => false,
        2 => true,
        _ => return ElfArch::NotElf,
    };
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return ElfArch::NotElf,
    };
    let little = header[5] == 1;
    ELF_MACHINES
        .iter()
        .find(|(m, wide, le, _)| *m == machine && *wide == is_64 && *le == little)
        .map_or(ElfArch::Unknown, |(_, _, _, arch)| ElfArch::Known(arch))
}

fn file_elf_arch(tree: &Tree, spool: &Spool, id: InodeId) -> io::Result<ElfArch> {
    let Kind::File(content) = tree.inode(id).kind else {
        return Ok(ElfArch::NotElf);
    };
    let head = Content {
        offset: content.offset,
        len: content.len.min(20),
    };
    let mut header = Vec::with_capacity(20);
    spool.reader(head).read_to_end(&mut header)?;
    Ok(elf_arch(&header))
}

/// The image's architecture as Apptainer determines it (`machine.ArchFromContainer`): the ELF
/// machine of `/bin/sh` (symlinks followed inside the image), else of the first executable ELF
/// file in path order (stopping at one of an unknown CPU); Apptainer then falls back to the
/// build host, this builder to the config's `architecture`, which says more about the image.
pub fn detect_arch(
    tree: &Tree,
    spool: &Spool,
    config_arch: &str,
) -> Result<String, SingularityError> {
    if let Ok(Resolved::Entry { id, .. }) = resolve(tree, b"bin/sh", true) {
        if let ElfArch::Known(arch) = file_elf_arch(tree, spool, id)? {
            return Ok(arch.to_string());
        }
    }
    if let ElfArch::Known(arch) = first_executable_elf_arch(tree, spool)? {
        return Ok(arch.to_string());
    }
    if sif::arch_code(config_arch).is_some() {
        return Ok(config_arch.to_string());
    }
    Err(SingularityError::UnknownArchitecture(
        (!config_arch.is_empty()).then(|| config_arch.to_string()),
    ))
}

fn first_executable_elf_arch(tree: &Tree, spool: &Spool) -> io::Result<ElfArch> {
    let mut found = ElfArch::NotElf;
    let mut error = None;
    tree.walk(|_, id| {
        if found != ElfArch::NotElf || error.is_some() {
            return;
        }
        let inode = tree.inode(id);
        if !matches!(inode.kind, Kind::File(_)) || inode.meta.mode & 0o111 == 0 {
            return;
        }
        match file_elf_arch(tree, spool, id) {
            Ok(arch) => found = arch,
            Err(e) => error = Some(e),
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fixed_scripts_have_upstream_lengths() {
        // Sizes of the upstream files at the commits read (see each constant's doc comment).
        assert_eq!(ACTION_EXEC.len(), 630);
        assert_eq!(ACTION_RUN.len(), 1223);
        assert_eq!(ACTION_SHELL.len(), 1112);
        assert_eq!(ACTION_START.len(), 786);
        assert_eq!(ACTION_TEST.len(), 1188);
        assert_eq!(ENV_01_BASE.len(), 1337);
        assert_eq!(ENV_90_ENVIRONMENT.len(), 555);
        assert_eq!(ENV_95_APPS.len(), 3052);
        assert_eq!(ENV_99_BASE.len(), 1568);
        assert_eq!(ENV_99_RUNTIMEVARS.len(), 922);
        assert_eq!(STARTSCRIPT.len(), 513);
        assert_eq!(ENV_95_APPS.matches("\n\t\telif").count(), 2);
        assert_eq!(ENV_99_RUNTIMEVARS.matches('\t').count(), 5);
    }

    #[test]
    fn deffile_format() {
        assert_eq!(
            deffile("alpine:3.19"),
            "bootstrap: docker\nfrom: alpine:3.19\n\n"
        );
    }

    #[test]
    fn env_script_escaping() {
        let env = strings(&[
            "PATH=/usr/local/bin:/usr/bin:$HOME/bin",
            "PLAIN=hello world",
            "SPECIAL=a\"b`c$d\\e'f",
            "EMPTY=",
            "NOVALUE",
            "EQUALS=a=b",
            "1BAD=x",
            "BAD-NAME=x",
            "_ok9=y",
        ]);
        assert_eq!(
            docker_env_script(&env),
            concat!(
                "#!/bin/sh\n",
                "export PATH=\"/usr/local/bin:/usr/bin:\\$HOME/bin\"\n",
                "export PLAIN=\"${PLAIN:-\"hello world\"}\"\n",
                "export SPECIAL=\"${SPECIAL:-\"a\\\"b\\`c\\$d\\\\e'f\"}\"\n",
                "export EMPTY=\"${EMPTY:-\"\"}\"\n",
                "export NOVALUE=\"${NOVALUE:-}\"\n",
                "export EQUALS=\"${EQUALS:-\"a=b\"}\"\n",
                "export _ok9=\"${_ok9:-\"y\"}\"\n",
            )
        );
        assert_eq!(docker_env_script(&[]), "#!/bin/sh\n");
    }

    /// Sources the generated script in a real shell and prints the variables back.
    #[test]
    fn env_script_round_trips_through_sh() {
        let env = strings(&["SPECIAL=a\"b`c$d\\e'f $(id)", "KEEP=image", "PATH=/x:/y"]);
        let script = docker_env_script(&env);
        let out = Command::new("/bin/sh")
            .args([
                "-c",
                &format!("{script}\nprintf '%s|%s|%s' \"$SPECIAL\" \"$KEEP\" \"$PATH\""),
            ])
            .env("KEEP", "user")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a\"b`c$d\\e'f $(id)|user|/x:/y"
        );
    }

    #[test]
    fn runscript_without_entrypoint_or_cmd() {
        let expected = String::from("#!/bin/sh\nOCI_ENTRYPOINT=''\nOCI_CMD=''\n")
            + RUNSCRIPT_NO_EVAL_ENTRYPOINT_ONLY
            + RUNSCRIPT_NO_EVAL_CMD_ONLY
            + RUNSCRIPT_NO_EVAL_BOTH
            + RUNSCRIPT_EVAL;
        assert_eq!(runscript(&[], &[]), expected);
        assert!(expected.contains("\n        \n        exec \"$@\"\n"));
        assert!(expected.contains("\neval \"set ${SINGULARITY_OCI_RUN}\"\nexec \"$@\"\n"));
    }

    #[test]
    fn runscript_with_entrypoint_and_cmd_matches_the_go_template() {
        let got = runscript(&strings(&["/bin/echo"]), &strings(&["hello", "world's"]));
        let expected = concat!(
            "#!/bin/sh\n",
            "OCI_ENTRYPOINT='\"/bin/echo\"'\n",
            "OCI_CMD='\"hello\" \"world'\"'\"'s\"'\n",
            "\n",
            "# When SINGULARITY_NO_EVAL set, use OCI compatible behavior that does\n",
            "# not evaluate resolved CMD / ENTRYPOINT / ARGS through the shell, and\n",
            "# does not modify expected quoting behavior of args.\n",
            "if [ -n \"$SINGULARITY_NO_EVAL\" ]; then\n",
            "    # ENTRYPOINT only - run entrypoint plus args\n",
            "    if [ -z \"$OCI_CMD\" ] && [ -n \"$OCI_ENTRYPOINT\" ]; then\n",
            "        set -- '/bin/echo' \"$@\"\n",
            "\n",
            "        exec \"$@\"\n",
            "    fi\n",
            "\n",
            "    # CMD only - run CMD or override with args\n",
            "    if [ -n \"$OCI_CMD\" ] && [ -z \"$OCI_ENTRYPOINT\" ]; then\n",
            "        if [ $# -eq 0 ]; then\n",
            "            set -- 'world'\"'\"'s' \"$@\"\n",
            "set -- 'hello' \"$@\"\n",
            "\n",
            "        fi\n",
            "        exec \"$@\"\n",
            "    fi\n",
            "\n",
            "    # ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args\n",
            "    # override with user provided args\n",
            "    if [ $# -gt 0 ]; then\n",
            "        set -- '/bin/echo' \"$@\"\n",
            "\n",
            "\telse\n",
            "        set -- 'world'\"'\"'s' \"$@\"\n",
            "set -- 'hello' \"$@\"\n",
            "\n",
            "        set -- '/bin/echo' \"$@\"\n",
            "\n",
            "    fi\n",
            "    exec \"$@\"\n",
            "fi\n",
            "\n",
            "# Standard Apptainer behavior evaluates CMD / ENTRYPOINT / ARGS\n",
        );
        assert!(got.starts_with(expected), "got:\n{got}");
        assert!(got.ends_with(RUNSCRIPT_EVAL.trim_start_matches("\n    exec \"$@\"\nfi\n")));
    }

    #[test]
    fn runscript_cmd_only_has_no_entrypoint_block() {
        let got = runscript(&[], &strings(&["echo", "hi"]));
        assert!(got.contains("OCI_ENTRYPOINT=''\nOCI_CMD='\"echo\" \"hi\"'\n"));
        assert!(got.contains(
            "    # override with user provided args\n    if [ $# -eq 0 ]; then\n        set -- 'hi' \"$@\"\nset -- 'echo' \"$@\"\n\n    fi\n    exec \"$@\"\nfi\n"
        ));
        assert!(!got.contains("if [ $# -gt 0 ]; then\n        set --"));
    }

    #[test]
    fn runscript_entrypoint_only_skips_the_cmd_blocks() {
        let got = runscript(&strings(&["/app", "--flag"]), &[]);
        assert!(got.contains("OCI_ENTRYPOINT='\"/app\" \"--flag\"'\nOCI_CMD=''\n"));
        assert!(got.contains("then\n        exec \"$@\"\n    fi\n\n    # ENTRYPOINT and CMD",));
        assert!(got.contains(
            "\n\telse\n        \n        set -- '--flag' \"$@\"\nset -- '/app' \"$@\"\n\n    fi\n"
        ));
    }

    /// Runs the generated runscript in a real shell for each ENTRYPOINT/CMD combination, with
    /// and without arguments, in both of Apptainer's modes.
    #[test]
    fn runscript_runs_what_docker_would() {
        /// (entrypoint, cmd, run arguments, output by default, output with --no-eval)
        type Case<'a> = (Vec<String>, Vec<String>, &'a [&'a str], &'a str, &'a str);
        let echo = "/bin/echo".to_string();
        let cases: [Case; 9] = [
            (vec![], strings(&[&echo, "cmd"]), &[], "cmd", "cmd"),
            (
                vec![],
                strings(&[&echo, "cmd"]),
                &[&echo, "args"],
                "args",
                "args",
            ),
            (strings(&[&echo, "ep"]), vec![], &[], "ep", "ep"),
            (
                strings(&[&echo, "ep"]),
                vec![],
                &["x y"],
                "ep x y",
                "ep x y",
            ),
            (
                strings(&[&echo, "ep"]),
                strings(&["c m d"]),
                &[],
                "ep c m d",
                "ep c m d",
            ),
            (
                strings(&[&echo, "ep"]),
                strings(&["cmd"]),
                &["arg"],
                "ep arg",
                "ep arg",
            ),
            (strings(&[&echo, "it's"]), vec![], &[], "it's", "it's"),
            // CMD is escaped, so it is never expanded; run arguments are, unless --no-eval.
            (
                strings(&[&echo]),
                strings(&["$HOME"]),
                &[],
                "$HOME",
                "$HOME",
            ),
            (strings(&[&echo]), vec![], &["$HOME"], "/nowhere", "$HOME"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (entrypoint, cmd, args, by_default, no_eval_output) in cases {
            let path = dir.path().join("runscript");
            std::fs::write(&path, runscript(&entrypoint, &cmd)).unwrap();
            for (no_eval, expected) in [("", by_default), ("1", no_eval_output)] {
                let out = Command::new("/bin/sh")
                    .arg(&path)
                    .args(args)
                    .env("SINGULARITY_NO_EVAL", no_eval)
                    .env("HOME", "/nowhere")
                    .output()
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim_end(),
                    expected,
                    "entrypoint {entrypoint:?} cmd {cmd:?} args {args:?} no_eval {no_eval:?}"
                );
            }
        }
    }

    #[test]
    fn labels_json_is_go_marshal_indent() {
        let mut config_labels = BTreeMap::new();
        config_labels.insert("maintainer".to_string(), "A <a@b.c> & co".to_string());
        config_labels.insert(
            "org.label-schema.schema-version".to_string(),
            "0.9".to_string(),
        );
        let labels = labels(
            &config_labels,
            "127.0.0.1:5000/alice/tool:1",
            "amd64",
            1_700_000_000,
        );
        let json = String::from_utf8(labels_json(&labels).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                "{\n",
                "\t\"maintainer\": \"A \\u003ca@b.c\\u003e \\u0026 co\",\n",
                "\t\"org.label-schema.build-arch\": \"amd64\",\n",
                "\t\"org.label-schema.build-date\": \"Tuesday_14_November_2023_22:13:20_UTC\",\n",
                "\t\"org.label-schema.schema-version\": \"1.0\",\n",
                "\t\"org.label-schema.usage.apptainer.version\": \"oci2sif-0.1.0\",\n",
                "\t\"org.label-schema.usage.singularity.deffile.bootstrap\": \"docker\",\n",
                "\t\"org.label-schema.usage.singularity.deffile.from\": \"127.0.0.1:5000/alice/tool:1\"\n",
                "}"
            )
        );
        assert_eq!(labels_json(&BTreeMap::new()).unwrap(), b"{}");
    }

    #[test]
    fn build_date_label_is_unpadded() {
        assert_eq!(build_date_label(0), "Thursday_1_January_1970_0:0:0_UTC");
        assert_eq!(
            build_date_label(951_782_400 + 3_723),
            "Tuesday_29_February_2000_1:2:3_UTC"
        );
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(sif::GO_ZERO_TIME)
        );
        assert_eq!(parse_rfc3339("2023-11-14"), None);
        assert_eq!(parse_rfc3339("2023-13-14T22:13:20Z"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20"), None);
    }

    #[test]
    fn go_json_escaping() {
        let value = serde_json::json!({"b": "<&>\u{2028}\u{7f}\u{1}\n", "a": 1});
        assert_eq!(
            go_json(&value).unwrap(),
            b"{\"a\":1,\"b\":\"\\u003c\\u0026\\u003e\\u2028\x7f\\u0001\\n\"}"
        );
    }

    #[test]
    fn oci_config_is_reencoded_in_go_field_order() {
        let config: ImageConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["A=1"],"Cmd":null,"Entrypoint":["/x"],
                "Labels":{"b":"2","a":"1"},"ExposedPorts":{"80/tcp":{}},"User":"",
                "Unknown":5,"Healthcheck":{"Test":["CMD","true"],"Interval":1000}}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(go_json(&config.config).unwrap()).unwrap(),
            r#"{"Healthcheck":{"Test":["CMD","true"],"Interval":1000},"Entrypoint":["/x"],"Env":["A=1"],"Labels":{"a":"1","b":"2"},"ExposedPorts":{"80/tcp":{}}}"#
        );
        let empty: ImageConfigFile = serde_json::from_str(r#"{"config":null}"#).unwrap();
        assert_eq!(go_json(&empty.config).unwrap(), b"{}");
    }

    #[test]
    fn elf_machine_mapping() {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        assert_eq!(elf_arch(&header), ElfArch::Known("amd64"));
        header[18] = 183;
        assert_eq!(elf_arch(&header), ElfArch::Known("arm64"));
        header[5] = 2;
        header[18] = 0;
        header[19] = 22;
        assert_eq!(elf_arch(&header), ElfArch::Known("s390x"));
        header[19] = 183;
        assert_eq!(
            elf_arch(&header),
            ElfArch::Unknown,
            "big-endian arm64 has no SIF code"
        );
        assert_eq!(elf_arch(b"#!/bin/sh\n"), ElfArch::NotElf);
    }

    mod tree_edits {
        use super::*;

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
            let json: serde_json::Value =
                serde_json::from_slice(&meta.inspect_metadata_json).unwrap();
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
    }
}
