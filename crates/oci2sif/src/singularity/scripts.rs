//! The files Apptainer writes into every image: fixed scripts copied byte for byte from
//! Apptainer's sources (kept as files under `scripts/`, with the upstream name of each given
//! where it is included), and the scripts generated from the image config (runscript, env
//! script, definition file).

use super::shell::{args_quoted, escape_single_quotes, is_shell_variable_name, shell_escape};

/// apptainer `internal/pkg/build/sources/exec.sh`.
pub const ACTION_EXEC: &str = include_str!("scripts/actions/exec.sh");
/// apptainer `internal/pkg/build/sources/run.sh`.
pub const ACTION_RUN: &str = include_str!("scripts/actions/run.sh");
/// apptainer `internal/pkg/build/sources/shell.sh`.
pub const ACTION_SHELL: &str = include_str!("scripts/actions/shell.sh");
/// apptainer `internal/pkg/build/sources/start.sh`.
pub const ACTION_START: &str = include_str!("scripts/actions/start.sh");
/// apptainer `internal/pkg/build/sources/test.sh`.
pub const ACTION_TEST: &str = include_str!("scripts/actions/test.sh");
/// apptainer `internal/pkg/build/sources/01-base.sh`.
pub const ENV_01_BASE: &str = include_str!("scripts/env/01-base.sh");
/// apptainer `internal/pkg/build/sources/90-environment.sh`.
pub const ENV_90_ENVIRONMENT: &str = include_str!("scripts/env/90-environment.sh");
/// apptainer `internal/pkg/build/sources/95-apps.sh` (the two `\t\telif` lines are upstream's).
pub const ENV_95_APPS: &str = include_str!("scripts/env/95-apps.sh");
/// apptainer `internal/pkg/build/sources/99-base.sh`.
pub const ENV_99_BASE: &str = include_str!("scripts/env/99-base.sh");
/// apptainer `internal/pkg/build/sources/99-runtimevars.sh` (tab-indented upstream).
pub const ENV_99_RUNTIMEVARS: &str = include_str!("scripts/env/99-runtimevars.sh");
/// apptainer `internal/pkg/build/sources/startscript.sh`.
pub const STARTSCRIPT: &str = include_str!("scripts/startscript.sh");

/// Directories `makeDirs` creates (apptainer `internal/pkg/build/sources/base_environment.go`).
pub const BASE_DIRS: [&str; 11] = [
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
pub const BASE_SYMLINKS: [(&str, &str); 6] = [
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
pub const BASE_FILES: [(&str, u32, &str); 13] = [
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

pub const RUNSCRIPT_PATH: &str = ".singularity.d/runscript";
pub const DOCKER_ENV_PATH: &str = ".singularity.d/env/10-docker2singularity.sh";
pub const APPSBASE_PATH: &str = ".singularity.d/env/94-appsbase.sh";
pub const LABELS_PATH: &str = ".singularity.d/labels.json";
pub const DEFFILE_PATH: &str = ".singularity.d/Singularity";
pub const BOOTSTRAP_HISTORY_PATH: &str = ".singularity.d/bootstrap_history";
pub const ENV_DIR: &str = ".singularity.d/env";

/// The definition file Apptainer synthesizes for `docker://<source_ref>`
/// (`pkg/build/types/definition.go` NewDefinitionFromURI).
pub fn deffile(source_ref: &str) -> String {
    format!("bootstrap: docker\nfrom: {source_ref}\n\n")
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

/// The `ociRunscript` Go template's text between its actions, with the whitespace its `{{- …}}`
/// markers trim already trimmed.
const RUNSCRIPT_NO_EVAL_ENTRYPOINT_ONLY: &str =
    include_str!("scripts/oci-runscript/1-no-eval-entrypoint-only.tmpl");
const RUNSCRIPT_NO_EVAL_CMD_ONLY: &str =
    include_str!("scripts/oci-runscript/2-no-eval-cmd-only.tmpl");
const RUNSCRIPT_NO_EVAL_BOTH: &str = include_str!("scripts/oci-runscript/3-no-eval-both.tmpl");
/// Ends with the `eval` line Apptainer's runtime looks for to run the script in its own shell
/// interpreter, so it must stay verbatim.
const RUNSCRIPT_EVAL: &str = include_str!("scripts/oci-runscript/4-eval.tmpl");

/// The runscript Apptainer writes for an OCI image: `insertRunScript` in
/// `internal/pkg/build/sources/conveyorPacker_oci.go`, i.e. three variable lines and the
/// `ociRunscript` Go template rendered with the `set --` prepend lines.
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
}
