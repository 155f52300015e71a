//! sbatch lint: line-numbered findings about a batch script, pure (the caller resolves the
//! script's images first, with the caller's own permissions, and passes the answers in).
//!
//! Codes: `E-option` (an option sbatch does not know), `E-value`, `E-time`, `E-mem`, `E-gres`,
//! `E-array`, `E-mail-type` (malformed values), `E-image-ref`, `E-image-unknown`,
//! `E-image-failed`, `E-image-not-runnable`, `I-image-queued`, `I-image-building` (the images),
//! `W-late-sbatch` (a `#SBATCH` after the first command, which Slurm ignores), `W-directive`
//! (a line meant as a directive that Slurm reads as a comment), `W-nv-without-gpu`,
//! `W-gpu-without-nv`, `W-sif-copy` (scp/rsync of a `.sif`), `W-bind-moved` (a site file system
//! mounted at another path in the container), `W-container-path` (a container-side path used
//! on the host), `W-host-path` (a host path used inside the container where it is mounted
//! elsewhere).

use std::collections::HashMap;

use serde::Serialize;

use super::options::{self, Directive};
use super::references::{check_reference, image_references, prefetch_list};
use super::script::{self, Kind, Line};
use super::template::gpu_count;
use super::values;

/// What the registry says of an image, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// Missing OR not readable by the caller: one answer, never told apart.
    Unknown,
    Ready {
        digest: String,
    },
    Queued,
    Building,
    Failed {
        reason: String,
    },
    /// An artifact or an image without layers: there is no SIF for it.
    NotRunnable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// 1-based.
    pub line: usize,
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}

/// Roots of the shared file systems sites mount into containers at the same path.
const SHARED_ROOTS: &[&str] = &[
    "/scratch",
    "/home",
    "/work",
    "/project",
    "/projects",
    "/gpfs",
    "/lustre",
    "/shared",
    "/nfs",
];

/// Options of `apptainer exec|run` that take a value (so the image is found after them).
const APPTAINER_VALUE_OPTIONS: &[&str] = &[
    "-B",
    "--bind",
    "--pwd",
    "--env",
    "--env-file",
    "-H",
    "--home",
    "--overlay",
    "-W",
    "--workdir",
    "--mount",
    "--security",
    "--network",
    "--hostname",
];

/// Findings for `script`, ordered by line. `images` holds the caller's answer for each
/// reference of [`image_references`]; a reference not in it is not checked.
pub fn lint(script: &str, images: &HashMap<String, ImageState>) -> Vec<Finding> {
    let lines = script::lines(script);
    let mut l = Linter::default();
    for line in &lines {
        match line.kind {
            Kind::Directive { late: true, .. } => l.push(
                line.number,
                Severity::Warning,
                "W-late-sbatch",
                format!(
                    "Slurm ignores #SBATCH lines after the first command (line {}): move it up",
                    l.first_command.unwrap_or(0)
                ),
            ),
            Kind::Directive { rest, late: false } => l.directives(line.number, rest),
            Kind::NearDirective => l.push(
                line.number,
                Severity::Warning,
                "W-directive",
                "Slurm reads only lines that start with exactly \"#SBATCH \"; this one is a comment".to_owned(),
            ),
            Kind::Command => {
                l.first_command.get_or_insert(line.number);
                l.commands(line);
            }
            Kind::Blank | Kind::Comment => {}
        }
    }
    l.gpus_and_nv();
    l.paths();
    for (line, reference) in image_references(script) {
        l.image(line, &reference, images.get(&reference));
    }
    let mut findings = l.findings;
    findings.sort_by(|a, b| (a.line, a.severity, a.code).cmp(&(b.line, b.severity, b.code)));
    findings.dedup();
    findings
}

/// A container started by a command line: its Apptainer options and its command.
struct ContainerRun {
    line: usize,
    apptainer_args: Vec<String>,
    command: Vec<String>,
}

/// One bind mount: host `src` at container `dst`.
struct Bind {
    line: usize,
    src: String,
    dst: String,
}

#[derive(Default)]
struct Linter {
    findings: Vec<Finding>,
    first_command: Option<usize>,
    /// Lines asking for GPUs (`--gres=gpu…`, `--gpus…`).
    gpu_lines: Vec<usize>,
    runs: Vec<ContainerRun>,
    binds: Vec<Bind>,
    /// Host command lines (outside any container) with their words.
    host_words: Vec<(usize, Vec<String>)>,
}

impl Linter {
    fn push(&mut self, line: usize, severity: Severity, code: &'static str, message: String) {
        self.findings.push(Finding {
            line,
            severity,
            code,
            message,
        });
    }

    fn directives(&mut self, line: usize, rest: &str) {
        for d in options::parse_line(rest) {
            match d {
                Err(e) if e.unknown_option => {
                    self.push(line, Severity::Error, "E-option", e.message)
                }
                Err(e) => self.push(line, Severity::Error, "E-value", e.message),
                Ok(d) => self.value(line, &d),
            }
        }
    }

    fn value(&mut self, line: usize, d: &Directive) {
        let value = d.value.as_deref().unwrap_or_default();
        let named = |e: String| format!("{} {e}", d.written);
        let (code, result): (&'static str, Result<(), String>) = match d.name {
            "time" | "time-min" => ("E-time", values::parse_time(value).map(|_| ())),
            "mem" | "mem-per-cpu" | "mem-per-gpu" | "tmp" => {
                ("E-mem", values::parse_memory(value).map(|_| ()))
            }
            "gres" => match values::parse_gres(value) {
                Ok(list) => {
                    if gpu_count(&list) > 0 {
                        self.gpu_lines.push(line);
                    }
                    ("E-gres", Ok(()))
                }
                Err(e) => ("E-gres", Err(e)),
            },
            "gpus" | "gpus-per-node" | "gpus-per-task" | "gpus-per-socket" => {
                match values::parse_gpus(value) {
                    Ok(n) => {
                        if n > 0 {
                            self.gpu_lines.push(line);
                        }
                        ("E-gres", Ok(()))
                    }
                    Err(e) => ("E-gres", Err(e)),
                }
            }
            "cpus-per-task" | "ntasks" | "ntasks-per-node" | "cpus-per-gpu" | "ntasks-per-core"
            | "ntasks-per-socket" | "ntasks-per-gpu" | "tasks-per-node" | "mincpus" => {
                ("E-value", positive(value))
            }
            "nodes" => (
                "E-value",
                match value.split_once('-') {
                    Some((a, b)) => positive(a).and(positive(b)),
                    None => positive(value),
                },
            ),
            "array" => ("E-array", values::check_array(value)),
            "mail-type" => ("E-mail-type", values::check_mail_type(value)),
            "comment" => {
                for r in prefetch_list(value) {
                    if let Err(e) = check_reference(&r) {
                        self.push(line, Severity::Error, "E-image-ref", e);
                    }
                }
                ("E-value", Ok(()))
            }
            _ => ("E-value", Ok(())),
        };
        if let Err(e) = result {
            self.push(line, Severity::Error, code, named(e));
        }
    }

    fn commands(&mut self, line: &Line<'_>) {
        for command in script::simple_commands(line.text) {
            self.binds_in_assignments(line.number, &command);
            if let Some(run) = container_run(line.number, &command) {
                self.binds_of(&run);
                self.runs.push(run);
                continue;
            }
            if let Some((i, program)) = script::program(&command) {
                if program == "scp" || program == "rsync" {
                    if let Some(sif) = command[i + 1..]
                        .iter()
                        .find(|w| w.trim_end_matches('/').ends_with(".sif"))
                    {
                        self.push(
                            line.number,
                            Severity::Warning,
                            "W-sif-copy",
                            format!("{program} copies the SIF {sif}: let the job fetch it instead (hpc-registry run/fetch keeps one verified copy per node)"),
                        );
                    }
                }
            }
            self.host_words.push((line.number, command));
        }
    }

    /// `APPTAINER_BIND=…` and `SINGULARITY_BIND=…`, exported or not.
    fn binds_in_assignments(&mut self, line: usize, command: &[String]) {
        for w in command {
            for var in [
                "APPTAINER_BIND=",
                "SINGULARITY_BIND=",
                "APPTAINER_BINDPATH=",
                "SINGULARITY_BINDPATH=",
            ] {
                if let Some(list) = w.strip_prefix(var) {
                    self.add_binds(line, list);
                }
            }
        }
    }

    fn binds_of(&mut self, run: &ContainerRun) {
        let mut it = run.apptainer_args.iter();
        while let Some(w) = it.next() {
            let list = if w == "--bind" || w == "-B" {
                it.next().cloned()
            } else {
                w.strip_prefix("--bind=").map(str::to_owned)
            };
            if let Some(list) = list {
                self.add_binds(run.line, &list);
            }
        }
    }

    fn add_binds(&mut self, line: usize, list: &str) {
        for spec in list.split(',').filter(|s| !s.is_empty()) {
            let mut parts = spec.split(':');
            let src = parts.next().unwrap_or_default().trim_end_matches('/');
            let dst = parts.next().map_or(src, |d| d.trim_end_matches('/'));
            if src.is_empty() || dst.is_empty() {
                continue;
            }
            self.binds.push(Bind {
                line,
                src: src.to_owned(),
                dst: dst.to_owned(),
            });
        }
    }

    fn gpus_and_nv(&mut self) {
        let nv_lines: Vec<usize> = self
            .runs
            .iter()
            .filter(|r| r.apptainer_args.iter().any(|a| a == "--nv"))
            .map(|r| r.line)
            .collect();
        if self.gpu_lines.is_empty() {
            for line in nv_lines {
                self.push(line, Severity::Warning, "W-nv-without-gpu", "--nv asks for the GPUs' drivers, but the job asks Slurm for no GPU (add --gres=gpu:N)".to_owned());
            }
        } else if nv_lines.is_empty() && !self.runs.is_empty() {
            for line in self.gpu_lines.clone() {
                self.push(line, Severity::Warning, "W-gpu-without-nv", "the job asks for GPUs, but its container does not see them: add --nv to hpc-registry run (or apptainer)".to_owned());
            }
        }
    }

    fn paths(&mut self) {
        let moved: Vec<&Bind> = self
            .binds
            .iter()
            .filter(|b| b.src != b.dst && !b.src.contains('$') && !b.dst.contains('$'))
            .collect();
        let mut found = Vec::new();
        for b in &moved {
            if SHARED_ROOTS.iter().any(|r| under(&b.src, r)) {
                found.push((b.line, "W-bind-moved", format!(
                    "{} is mounted at {} in the container, so the same file has two names (host and container): bind it at its own path ({})",
                    b.src, b.dst, b.src
                )));
            }
        }
        for (line, words) in &self.host_words {
            for path in words.iter().filter_map(|w| path_in(w)) {
                if let Some(b) = moved
                    .iter()
                    .find(|b| under(path, &b.dst) && !under(path, &b.src))
                {
                    found.push((*line, "W-container-path", format!(
                        "{path} is the container's view (line {} binds {} at {}); outside the container it is {}",
                        b.line, b.src, b.dst, rebase(path, &b.dst, &b.src)
                    )));
                }
            }
        }
        for run in &self.runs {
            for path in run.command.iter().filter_map(|w| path_in(w)) {
                if let Some(b) = moved
                    .iter()
                    .find(|b| under(path, &b.src) && !under(path, &b.dst))
                {
                    found.push((run.line, "W-host-path", format!(
                        "{path} is the host's path; inside the container (line {} binds {} at {}) it is {}",
                        b.line, b.src, b.dst, rebase(path, &b.src, &b.dst)
                    )));
                }
            }
        }
        for (line, code, message) in found {
            self.push(line, Severity::Warning, code, message);
        }
    }

    fn image(&mut self, line: usize, reference: &str, state: Option<&ImageState>) {
        if let Err(e) = check_reference(reference) {
            // A comment's bad references were reported with its other values.
            if !self
                .findings
                .iter()
                .any(|f| f.line == line && f.code == "E-image-ref")
            {
                self.push(line, Severity::Error, "E-image-ref", e);
            }
            return;
        }
        let (severity, code, message) = match state {
            None | Some(ImageState::Ready { .. }) => return,
            Some(ImageState::Unknown) => (
                Severity::Error,
                "E-image-unknown",
                format!("{reference} does not exist, or you may not read it"),
            ),
            Some(ImageState::Failed { reason }) => (
                Severity::Error,
                "E-image-failed",
                format!(
                    "the SIF of {reference} failed to build: {}",
                    one_line(reason)
                ),
            ),
            Some(ImageState::NotRunnable) => (
                Severity::Error,
                "E-image-not-runnable",
                format!("{reference} is not a runnable image (an artifact, or no layers): there is no SIF for it"),
            ),
            Some(ImageState::Queued) => (
                Severity::Info,
                "I-image-queued",
                format!("the SIF of {reference} is queued for building; the job waits for it"),
            ),
            Some(ImageState::Building) => (
                Severity::Info,
                "I-image-building",
                format!("the SIF of {reference} is being built; the job waits for it"),
            ),
        };
        self.push(line, severity, code, message);
    }
}

fn positive(v: &str) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("{v:?} is not a whole number of at least 1")),
    }
}

/// `hpc-registry run REF [APPTAINER ARGS] [-- CMD]` or `apptainer|singularity exec|run|shell
/// [OPTIONS] IMAGE [CMD]`.
fn container_run(line: usize, command: &[String]) -> Option<ContainerRun> {
    let (i, program) = script::program(command)?;
    let sub = command.get(i + 1)?.as_str();
    let rest = &command[(i + 2).min(command.len())..];
    match (program, sub) {
        ("hpc-registry", "run") => {
            let mut j = 0;
            // Its own options, then the reference.
            while let Some(w) = rest.get(j) {
                j += if w == "--platform" || w == "--wait" {
                    2
                } else {
                    1
                };
                if !w.starts_with('-') {
                    break;
                }
            }
            let after = &rest[j.min(rest.len())..];
            let (apptainer_args, command) = match after.iter().position(|w| w == "--") {
                Some(k) => (after[..k].to_vec(), after[k + 1..].to_vec()),
                None => (after.to_vec(), Vec::new()),
            };
            Some(ContainerRun {
                line,
                apptainer_args,
                command,
            })
        }
        ("apptainer" | "singularity", "exec" | "run" | "shell" | "test") => {
            let mut j = 0;
            while let Some(w) = rest.get(j) {
                if !w.starts_with('-') {
                    break;
                }
                j += if APPTAINER_VALUE_OPTIONS.contains(&w.as_str()) {
                    2
                } else {
                    1
                };
            }
            let j = j.min(rest.len());
            Some(ContainerRun {
                line,
                apptainer_args: rest[..j].to_vec(),
                command: rest[(j + 1).min(rest.len())..].to_vec(),
            })
        }
        _ => None,
    }
}

/// The absolute path a word names: the word, or what follows `=` (`--out=/data/x`).
fn path_in(word: &str) -> Option<&str> {
    let p = if word.starts_with('/') {
        word
    } else {
        word.split_once('=').map(|(_, v)| v)?
    };
    (p.starts_with('/') && !p.contains('$')).then(|| p.trim_end_matches('/'))
}

fn under(path: &str, root: &str) -> bool {
    path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

fn rebase(path: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &path[from.len()..])
}

/// A build's failure reason on one line: it may quote bytes of an untrusted layer, and a newline
/// or a control character in it must not break the one-finding-per-line output.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::*;

    /// The registry's answers the corpus is written against.
    fn corpus_images() -> HashMap<String, ImageState> {
        let ready = |d: &str| ImageState::Ready {
            digest: d.to_owned(),
        };
        HashMap::from([
            ("alice/tool:1".to_owned(), ready("sha256:01")),
            ("alice/pytorch:2.3".to_owned(), ready("sha256:02")),
            (
                "alice/failed:1".to_owned(),
                ImageState::Failed {
                    reason: "layer 2 is not a tar".to_owned(),
                },
            ),
            ("alice/queued:1".to_owned(), ImageState::Queued),
            ("alice/building:1".to_owned(), ImageState::Building),
            ("alice/artifact:1".to_owned(), ImageState::NotRunnable),
            ("alice/missing:1".to_owned(), ImageState::Unknown),
            // Another user's private image: the caller is told exactly what a missing one says.
            ("bob/private:1".to_owned(), ImageState::Unknown),
        ])
    }

    /// `# expect: CODE[, CODE…]` at the end of a line.
    fn expectations(text: &str) -> BTreeMap<usize, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if let Some((_, codes)) = line.rsplit_once("# expect:") {
                let set: BTreeSet<String> = codes.split(',').map(|c| c.trim().to_owned()).collect();
                out.insert(i + 1, set);
            }
        }
        out
    }

    fn corpus(kind: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lint")
            .join(kind);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sbatch"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }

    #[test]
    fn the_corpus_gets_exactly_its_annotated_findings() {
        let images = corpus_images();
        let bad = corpus("bad");
        assert!(bad.len() >= 8, "the bad corpus is too small");
        let mut codes_seen = BTreeSet::new();
        for (name, text) in &bad {
            let expected = expectations(text);
            assert!(!expected.is_empty(), "{name} has no `# expect:` lines");
            let mut found: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
            for f in lint(text, &images) {
                codes_seen.insert(f.code);
                found.entry(f.line).or_default().insert(f.code.to_owned());
            }
            assert_eq!(
                found,
                expected,
                "{name}: findings by line (left: found)\n{:#?}",
                lint(text, &images)
            );
        }
        for (name, text) in corpus("good") {
            let findings = lint(&text, &images);
            assert!(findings.is_empty(), "{name}: {findings:#?}");
        }
        // Every check is exercised by some bad script.
        for code in [
            "E-option",
            "E-value",
            "E-time",
            "E-mem",
            "E-gres",
            "E-array",
            "E-mail-type",
            "E-image-ref",
            "E-image-unknown",
            "E-image-failed",
            "E-image-not-runnable",
            "I-image-queued",
            "I-image-building",
            "W-late-sbatch",
            "W-directive",
            "W-nv-without-gpu",
            "W-gpu-without-nv",
            "W-sif-copy",
            "W-bind-moved",
            "W-container-path",
            "W-host-path",
        ] {
            assert!(codes_seen.contains(code), "no bad script shows {code}");
        }
    }

    #[test]
    fn unresolved_images_are_not_judged_and_findings_say_what_to_do() {
        let script = "#!/bin/bash\n#SBATCH --time=1h\nhpc-registry run alice/missing:1 --nv\n";
        let f = lint(script, &HashMap::new());
        assert_eq!(
            f.iter().map(|f| (f.line, f.code)).collect::<Vec<_>>(),
            [(2, "E-time"), (3, "W-nv-without-gpu")]
        );
        assert!(
            f[0].message.contains("--time") && f[0].message.contains("HH:MM:SS"),
            "{}",
            f[0].message
        );
        assert_eq!(f[0].severity, Severity::Error);
        let missing = lint(
            script,
            &HashMap::from([("alice/missing:1".to_owned(), ImageState::Unknown)]),
        );
        let m = missing
            .iter()
            .find(|f| f.code == "E-image-unknown")
            .unwrap();
        assert_eq!(
            m.message,
            "alice/missing:1 does not exist, or you may not read it"
        );
    }
}
