//! The files that make a squashfs an enroot image, as `enroot import docker://…` writes them
//! from the image config (enroot's `docker::configure`, see its docs/image-format.md):
//!
//! * `/etc/rc`: the labels as `# KEY VALUE` comments, then a script that enters `WORKDIR` and
//!   execs the entrypoint with `enroot start`'s arguments, or with the image's CMD when there are
//!   none (`/bin/sh` for an image with neither); every word quoted as bash's `${…@Q}` does;
//! * `/etc/rc.local`: sourced by `/etc/rc`, two comment lines;
//! * `/etc/environment`: the image's ENV, one `NAME=value` a line, as given;
//! * `/etc/fstab`: a bind mount of the container's own directory for each VOLUME.
//!
//! pyxis reads the same files when it starts a container from the squashfs. The files go into
//! the image's tree the way Apptainer's files do (resolved as a chroot would, so a hostile image's
//! symlinked `/etc` cannot send them elsewhere), after the SIF's squashfs has been written: the
//! enroot image is the SIF's tree plus these files.

use crate::singularity::{ContainerConfig, SingularityError};
use crate::tree::{Spool, Tree};

/// `/etc/rc.local` as enroot writes it.
pub const RC_LOCAL: &str = "# This file is sourced by /etc/rc when the container starts.\n\
                            # It can be used to manipulate the entrypoint or the command of the container.\n";

/// Adds `/etc/rc`, `/etc/rc.local`, `/etc/environment` and `/etc/fstab` for `config` to `tree`,
/// with `mtime` on the new files.
pub fn add(
    tree: &mut Tree,
    spool: &mut Spool,
    config: &ContainerConfig,
    mtime: i64,
) -> Result<(), SingularityError> {
    crate::singularity::put_files(
        tree,
        spool,
        mtime,
        &[
            ("/etc/fstab", 0o644, fstab(config).as_bytes()),
            ("/etc/environment", 0o644, environment(config).as_bytes()),
            ("/etc/rc", 0o644, rc(config).as_bytes()),
            ("/etc/rc.local", 0o644, RC_LOCAL.as_bytes()),
        ],
    )
}

/// `/etc/environment`: the ENV entries, one a line.
pub fn environment(config: &ContainerConfig) -> String {
    config.env.iter().map(|e| format!("{e}\n")).collect()
}

/// `/etc/fstab`: `${ENROOT_ROOTFS}/VOL VOL none x-create=dir,bind,rw,nosuid,nodev` per volume
/// (enroot expands the variable when it reads the file).
pub fn fstab(config: &ContainerConfig) -> String {
    config
        .volumes
        .keys()
        .map(|v| format!("${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n"))
        .collect()
}

/// `/etc/rc`: labels as comments, then the working directory, `/etc/rc.local` and the exec.
pub fn rc(config: &ContainerConfig) -> String {
    let mut rc: String = config
        .labels
        .iter()
        .map(|(k, v)| format!("# {k} {v}\n"))
        .collect();
    if !rc.is_empty() {
        rc.push('\n');
    }
    let workdir = if config.working_dir.is_empty() {
        "/"
    } else {
        config.working_dir.as_str()
    };
    let mut cmd = config.cmd.clone();
    if config.entrypoint.is_empty() && cmd.is_empty() {
        cmd.push("/bin/sh".to_owned());
    }
    // Spaced as enroot's template leaves them, empty words included.
    let words = |ws: &[String]| {
        ws.iter()
            .map(|w| bash_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let entrypoint = words(&config.entrypoint);
    let with_args = format!("{entrypoint} \"$@\"");
    let without_args = format!("{entrypoint} {}", words(&cmd));
    rc.push_str(&format!(
        "mkdir -p \"{workdir}\" 2> /dev/null\n\
         cd \"{workdir}\" && unset OLDPWD || exit 1\n\
         \n\
         if [ -s /etc/rc.local ]; then\n    . /etc/rc.local\nfi\n\
         \n\
         if [ $# -gt 0 ]; then\n    exec {with_args}\nelse\n    exec {without_args}\nfi\n"
    ));
    rc
}

/// A word as bash's `${word@Q}` quotes it: in single quotes, each `'` as `'\''`.
pub fn bash_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entrypoint: &[&str], cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn rc_execs_the_entrypoint_with_the_arguments_or_the_cmd() {
        let mut c = config(&["/bin/tini", "--"], &["python", "-c", "print('hi')"]);
        c.working_dir = "/work".into();
        c.labels.insert("org.example".into(), "yes".into());
        assert_eq!(
            rc(&c),
            "# org.example yes\n\
             \n\
             mkdir -p \"/work\" 2> /dev/null\n\
             cd \"/work\" && unset OLDPWD || exit 1\n\
             \n\
             if [ -s /etc/rc.local ]; then\n    . /etc/rc.local\nfi\n\
             \n\
             if [ $# -gt 0 ]; then\n    exec '/bin/tini' '--' \"$@\"\n\
             else\n    exec '/bin/tini' '--' 'python' '-c' 'print('\\''hi'\\'')'\nfi\n"
        );
    }

    #[test]
    fn an_image_without_entrypoint_or_cmd_starts_a_shell_in_the_root() {
        let text = rc(&config(&[], &[]));
        assert!(text.starts_with("mkdir -p \"/\" 2> /dev/null\n"), "{text}");
        assert!(text.contains("    exec  \"$@\"\n"), "{text}");
        assert!(text.contains("    exec  '/bin/sh'\n"), "{text}");
    }

    #[test]
    fn environment_and_fstab_follow_env_and_volumes() {
        let mut c = config(&[], &[]);
        c.env = vec!["PATH=/usr/bin:/bin".into(), "GREETING=a b".into()];
        assert_eq!(environment(&c), "PATH=/usr/bin:/bin\nGREETING=a b\n");
        assert_eq!(fstab(&c), "");
        c.volumes.insert("/data".into(), Default::default());
        assert_eq!(
            fstab(&c),
            "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
        );
    }
}
