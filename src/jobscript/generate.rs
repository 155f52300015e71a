//! The submit-script generator: a [`ScriptRequest`] and a site [`Template`] become a complete
//! sbatch script built on `hpc-registry run`. The same code writes `deploy/slurm/templates/`
//! ([`site_templates`]), so a generated script and the site's templates never drift apart.
//!
//! Every user value is validated first, then written as one shell word: the command's own
//! words are its arguments, never shell code of the script, and nothing (no newline, no quote)
//! can start a `#SBATCH` line or a command of its own.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::references::check_reference;
use super::shell::{check_printable, quote, quote_command};
use super::template::{gpu_count, Template};
use super::values;

/// What a researcher asks the generator for (the web form, or `hpc-registry script`'s flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRequest {
    /// The image: `alice/tool:1`, `alice/tool@sha256:…`.
    pub image: String,
    /// A template's name.
    pub template: String,
    /// GPUs (`--gres=gpu:N` and `apptainer --nv`); 0: what the template says.
    pub gpus: u32,
    /// Stage inputs onto node-local storage and copy the results back.
    pub fast_storage: Option<FastStorage>,
    /// Bind mounts, `SRC[:DEST[:ro|rw]]`.
    pub binds: Vec<String>,
    pub mail: Option<MailOn>,
    /// `--array`, e.g. `0-15%4`.
    pub array: Option<String>,
    /// `--job-name`; none: the template's name.
    pub job_name: Option<String>,
    /// The command line inside the container (`python train.py --lr 0.1`); empty: the image's
    /// runscript.
    pub command: String,
}

/// Fast storage: `inputs` (files or directories, absolute or relative to the submit directory)
/// are copied onto the node's local disk before the command runs there; `results` (relative to
/// that working directory) are copied back to the submit directory afterwards, also when the
/// command fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastStorage {
    pub inputs: Vec<String>,
    pub results: Vec<String>,
}

/// Mail from Slurm when the job ends and/or fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailOn {
    pub address: String,
    pub on_end: bool,
    pub on_fail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("there is no template {name:?}; the site has {}", known.join(", "))]
    UnknownTemplate { name: String, known: Vec<String> },
    /// A value that cannot go into a script, with the field it came from.
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
}

fn invalid(field: &'static str) -> impl Fn(String) -> ScriptError {
    move |why| ScriptError::Invalid { field, why }
}

/// Most GPUs one request may name (beyond any node's).
const MAX_GPUS: u32 = 64;

/// A request with every value checked and quoted.
struct Plan<'a> {
    template: &'a Template,
    image: String,
    job_name: String,
    gres: Option<String>,
    nv: bool,
    mail: Option<(String, String)>,
    array: Option<String>,
    binds: Vec<String>,
    command: Vec<String>,
    fast: Option<(Vec<String>, Vec<String>)>,
}

/// Where a script's image and file lists come from: written in (a generated script), or from
/// the environment at submission with an example default (a site template in `deploy/`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Generated,
    SiteTemplate,
}

/// Generates the batch script for `req` with one of `templates`.
pub fn generate(req: &ScriptRequest, templates: &[Template]) -> Result<String, ScriptError> {
    let plan = plan(req, templates)?;
    Ok(render(&plan, Mode::Generated))
}

fn plan<'a>(req: &ScriptRequest, templates: &'a [Template]) -> Result<Plan<'a>, ScriptError> {
    let template = templates
        .iter()
        .find(|t| t.name == req.template)
        .ok_or_else(|| ScriptError::UnknownTemplate {
            name: req.template.clone(),
            known: templates.iter().map(|t| t.name.clone()).collect(),
        })?;
    template
        .validate()
        .map_err(|e| invalid("template")(e.why))?;
    let image = req.image.trim();
    check_printable("the image", image).map_err(invalid("image"))?;
    check_reference(image).map_err(invalid("image"))?;
    if req.gpus > MAX_GPUS {
        return Err(invalid("gpus")(format!(
            "{} GPUs: at most {MAX_GPUS}",
            req.gpus
        )));
    }
    let gres = gres_with_gpus(template, req.gpus).map_err(invalid("gpus"))?;
    let nv = gres
        .as_deref()
        .and_then(|g| values::parse_gres(g).ok())
        .is_some_and(|list| gpu_count(&list) > 0);
    let job_name = match req.job_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            values::check_word("job name", name, &[]).map_err(invalid("job name"))?;
            name.to_owned()
        }
        _ => template.name.clone(),
    };
    let mail = match &req.mail {
        None => None,
        Some(m) => {
            let types = match (m.on_end, m.on_fail) {
                (true, true) => "END,FAIL",
                (true, false) => "END",
                (false, true) => "FAIL",
                (false, false) => {
                    return Err(invalid("mail")(
                        "choose mail on END, on FAIL or both".to_owned(),
                    ))
                }
            };
            let address = m.address.trim();
            values::check_mail_user(address).map_err(invalid("mail"))?;
            Some((types.to_owned(), address.to_owned()))
        }
    };
    let array = match req.array.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => {
            values::check_array(a).map_err(invalid("array"))?;
            Some(a.to_owned())
        }
        _ => None,
    };
    let binds = req
        .binds
        .iter()
        .map(|b| bind(b.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid("bind"))?;
    let command = quote_command(&req.command).map_err(invalid("command"))?;
    let fast = match &req.fast_storage {
        None => None,
        Some(f) => Some((
            f.inputs
                .iter()
                .map(|p| input(p.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid("fast storage input"))?,
            f.results
                .iter()
                .map(|p| result(p.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid("fast storage result"))?,
        )),
    };
    Ok(Plan {
        template,
        image: image.to_owned(),
        job_name,
        gres,
        nv,
        mail,
        array,
        binds,
        command,
        fast,
    })
}

/// The template's GRES with its GPU count set to `gpus` (keeping a GPU type: `gpu:a100:1` →
/// `gpu:a100:N`); 0 leaves the template's as it is.
fn gres_with_gpus(template: &Template, gpus: u32) -> Result<Option<String>, String> {
    let list = match &template.gres {
        Some(g) => values::parse_gres(g)?,
        None => Vec::new(),
    };
    if gpus == 0 {
        return Ok(template.gres.clone());
    }
    let mut entries = Vec::new();
    let mut placed = false;
    for g in list {
        if g.name == "gpu" {
            if !placed {
                entries.push(match g.kind {
                    Some(kind) => format!("gpu:{kind}:{gpus}"),
                    None => format!("gpu:{gpus}"),
                });
                placed = true;
            }
        } else {
            entries.push(match g.kind {
                Some(kind) => format!("{}:{kind}:{}", g.name, g.count),
                None => format!("{}:{}", g.name, g.count),
            });
        }
    }
    if !placed {
        entries.insert(0, format!("gpu:{gpus}"));
    }
    Ok(Some(entries.join(",")))
}

/// `SRC[:DEST[:ro|rw]]`, both absolute; no commas (Apptainer separates bind lists with them).
fn bind(spec: &str) -> Result<String, String> {
    check_printable("the bind", spec)?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (paths, opts) = match parts.as_slice() {
        [src] => (vec![*src], None),
        [src, dst] => (vec![*src, *dst], None),
        [src, dst, opts] => (vec![*src, *dst], Some(*opts)),
        _ => return Err(format!("{spec:?}: write SRC[:DEST[:ro|rw]]")),
    };
    for p in &paths {
        if !p.starts_with('/') || p.contains(',') {
            return Err(format!(
                "{spec:?}: bind paths are absolute and have no commas"
            ));
        }
    }
    if opts.is_some_and(|o| o != "ro" && o != "rw") {
        return Err(format!("{spec:?}: the bind option is ro or rw"));
    }
    quote("the bind", spec)
}

fn input(path: &str) -> Result<String, String> {
    if path.is_empty() || path.starts_with('-') {
        return Err(format!("{path:?}: name a file or directory"));
    }
    quote("the input", path)
}

/// Relative to the working directory, inside it.
fn result(path: &str) -> Result<String, String> {
    let inside =
        !path.is_empty() && !path.starts_with(['/', '-']) && path.split('/').all(|c| c != "..");
    if !inside {
        return Err(format!(
            "{path:?}: results are paths relative to the job's working directory, inside it"
        ));
    }
    quote("the result", path)
}

/// One line a researcher reads first, per template shape.
fn blurb(template: &Template, fast: bool) -> String {
    if fast {
        return "stage the inputs onto node-local storage with rsync, run there, copy the\n# results back (the shared file system sees two bulk copies instead of the job's small I/O).".to_owned();
    }
    match template.name.as_str() {
        "small" => "one task, a couple of cores: tools, tests, short analyses.".to_owned(),
        "medium" => "one node's worth of work: multi-threaded runs.".to_owned(),
        "large" => "a big node's worth: many cores and much memory.".to_owned(),
        "gpu" => "one node with GPUs; the container sees them (apptainer --nv).".to_owned(),
        _ => format!(
            "the site's {} template ({} CPUs, {} memory, {}).",
            template.name, template.cpus, template.memory, template.time
        ),
    }
}

fn render(plan: &Plan<'_>, mode: Mode) -> String {
    let t = plan.template;
    let mut s = String::from("#!/bin/bash\n");
    let title = match (mode, plan.fast.is_some()) {
        (Mode::SiteTemplate, _) => plan.job_name.clone(),
        (Mode::Generated, true) => format!("{} with fast storage", t.name),
        (Mode::Generated, false) => t.name.clone(),
    };
    let _ = writeln!(s, "# {title}: {}", blurb(t, plan.fast.is_some()));
    match mode {
        Mode::Generated => {
            let _ = writeln!(
                s,
                "# Generated by hpc-registry for {}. Generate it again (hpc-registry script, or the\n# web UI) rather than editing: every value below was checked and quoted.",
                plan.image
            );
        }
        Mode::SiteTemplate => {
            let _ = writeln!(
                s,
                "# Site-tunable: change the #SBATCH numbers here, or override them at submission\n# (sbatch --cpus-per-task=4 --mem=8G {title}.sbatch). Made by the generator of\n# `hpc-registry script` from its built-in templates (src/jobscript)."
            );
            let env = if plan.fast.is_some() {
                "INPUTS='/shared/project/in' RESULTS=out "
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "# Usage: IMAGE={} {env}sbatch {title}.sbatch CMD [ARGS…]",
                plan.image
            );
        }
    }
    let _ = writeln!(s, "#SBATCH --job-name={}", plan.job_name);
    s.push_str("#SBATCH --nodes=1\n#SBATCH --ntasks=1\n");
    if let Some(p) = &t.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", t.cpus);
    let _ = writeln!(s, "#SBATCH --mem={}", t.memory);
    let _ = writeln!(s, "#SBATCH --time={}", t.time);
    if let Some(g) = &plan.gres {
        let _ = writeln!(s, "#SBATCH --gres={g}");
    }
    if let Some((types, address)) = &plan.mail {
        let _ = writeln!(
            s,
            "#SBATCH --mail-type={types}\n#SBATCH --mail-user={address}"
        );
    }
    if let Some(a) = &plan.array {
        let _ = writeln!(s, "#SBATCH --array={a}");
    }
    s.push_str(
        "# The prolog prefetches the images named here (deploy/slurm/prolog.d/hpc-registry-prefetch):\n",
    );
    let _ = writeln!(s, "#SBATCH --comment=\"hpc-registry: {}\"", plan.image);
    s.push_str("set -euo pipefail\n");
    match mode {
        Mode::Generated => {
            let _ = writeln!(
                s,
                "IMAGE={}",
                quote("the image", &plan.image).unwrap_or_default()
            );
        }
        Mode::SiteTemplate => {
            let _ = writeln!(s, "IMAGE=${{IMAGE:-{}}}", plan.image);
        }
    }
    let mut run = String::from("hpc-registry run \"$IMAGE\"");
    if plan.nv {
        run.push_str(" --nv");
    }
    if plan.fast.is_some() {
        run.push_str(" --bind \"$WORK\" --pwd \"$WORK\"");
    }
    for b in &plan.binds {
        let _ = write!(run, " --bind {b}");
    }
    run.push_str(" --");
    for w in &plan.command {
        let _ = write!(run, " {w}");
    }
    run.push_str(" \"$@\"");
    match &plan.fast {
        None => {
            let _ = writeln!(s, "exec {run}");
        }
        Some((inputs, results)) => {
            s.push_str(&fast_storage(inputs, results, mode));
            let _ = writeln!(s, "{run}");
        }
    }
    s
}

/// The staging part of a fast-storage script, up to the `cd` into the working directory.
fn fast_storage(inputs: &[String], results: &[String], mode: Mode) -> String {
    let mut s = String::from(
        "# Fast storage: the inputs are copied onto the node's local disk ($HPC_REGISTRY_LOCAL, the\n# site's node-local directory; else $TMPDIR, else /tmp), the command runs there, and the\n# results go back to the submit directory, also when the command fails (the EXIT trap).\n",
    );
    match mode {
        Mode::Generated => {
            let _ = writeln!(s, "INPUTS=({})", inputs.join(" "));
            let _ = writeln!(s, "RESULTS=({})", results.join(" "));
        }
        Mode::SiteTemplate => {
            s.push_str("read -ra INPUTS <<<\"${INPUTS:?set INPUTS to the files and directories to stage in}\"\n");
            s.push_str("read -ra RESULTS <<<\"${RESULTS:-out}\"\n");
        }
    }
    s.push_str(
        r#"WORK=${HPC_REGISTRY_LOCAL:-${TMPDIR:-/tmp}}/hpc-registry-job-${SLURM_JOB_ID:-$$}
DEST=${SLURM_SUBMIT_DIR:-$PWD}
mkdir -p "$WORK"
copy_back() {
    status=$?
    for result in "${RESULTS[@]}"; do
        if [ -e "$WORK/$result" ]; then
            mkdir -p "$DEST/$(dirname "$result")"
            rsync -a -- "$WORK/$result" "$DEST/$(dirname "$result")/" || status=1
        fi
    done
    rm -rf -- "$WORK"
    exit "$status"
}
trap copy_back EXIT
for input in "${INPUTS[@]}"; do
    rsync -a -- "$input" "$WORK/"
done
cd "$WORK"
"#,
    );
    s
}

/// The plan of a site template: an example image (the environment's `IMAGE` replaces it), no
/// command (the script's arguments are the command).
fn site_plan<'a>(t: &'a Template, name: &str, fast: bool) -> Plan<'a> {
    let image = if t.gpus() > 0 {
        "alice/pytorch:2.3"
    } else {
        "alice/tool:1"
    };
    Plan {
        template: t,
        image: image.to_owned(),
        job_name: name.to_owned(),
        gres: t.gres.clone(),
        nv: t.gpus() > 0,
        mail: None,
        array: None,
        binds: Vec::new(),
        command: Vec::new(),
        fast: fast.then(|| (Vec::new(), Vec::new())),
    }
}

/// The site templates of `deploy/slurm/templates/` for `templates`: one file per template
/// (the image and the command come from the environment and the arguments at submission),
/// and `fast-storage` (the first template's numbers with fast storage). Returns (file name,
/// text).
pub fn site_templates(templates: &[Template]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in templates {
        out.push((
            format!("{}.sbatch", t.name),
            render(&site_plan(t, &t.name, false), Mode::SiteTemplate),
        ));
    }
    if let Some(t) = templates
        .iter()
        .find(|t| t.name == "medium")
        .or(templates.first())
    {
        out.push((
            "fast-storage.sbatch".to_owned(),
            render(&site_plan(t, "fast-storage", true), Mode::SiteTemplate),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::super::lint::{lint, ImageState};
    use super::super::template::default_templates;
    use super::*;

    fn request(template: &str) -> ScriptRequest {
        ScriptRequest {
            image: "alice/tool:1".into(),
            template: template.into(),
            command: "python train.py --epochs 3".into(),
            ..ScriptRequest::default()
        }
    }

    fn ready() -> HashMap<String, ImageState> {
        HashMap::from([(
            "alice/tool:1".to_owned(),
            ImageState::Ready {
                digest: "sha256:00".into(),
            },
        )])
    }

    fn directives(script: &str) -> Vec<&str> {
        script
            .lines()
            .filter(|l| l.starts_with("#SBATCH"))
            .collect()
    }

    #[test]
    fn every_template_and_option_makes_a_lint_clean_script() {
        let templates = default_templates();
        let mut requests: Vec<ScriptRequest> = templates.iter().map(|t| request(&t.name)).collect();
        requests.push(ScriptRequest {
            gpus: 2,
            fast_storage: Some(FastStorage {
                inputs: vec!["/shared/project/in".into(), "ref.fa".into()],
                results: vec!["out".into(), "logs/run.txt".into()],
            }),
            binds: vec!["/scratch/alice".into(), "/opt/data:/opt/data:ro".into()],
            mail: Some(MailOn {
                address: "alice@example.org".into(),
                on_end: true,
                on_fail: true,
            }),
            array: Some("0-9%2".into()),
            job_name: Some("train".into()),
            ..request("gpu")
        });
        for req in &requests {
            let script = generate(req, &templates).unwrap();
            let findings = lint(&script, &ready());
            assert!(findings.is_empty(), "{findings:#?}\n{script}");
            assert!(script.contains("hpc-registry run \"$IMAGE\""), "{script}");
            assert!(!script.contains("scp"), "{script}");
        }
        let gpu = generate(&requests[4], &templates).unwrap();
        for line in [
            "#SBATCH --gres=gpu:2",
            "#SBATCH --mail-type=END,FAIL",
            "#SBATCH --mail-user=alice@example.org",
            "#SBATCH --array=0-9%2",
            "#SBATCH --job-name=train",
            "#SBATCH --comment=\"hpc-registry: alice/tool:1\"",
            "trap copy_back EXIT",
            "INPUTS=(/shared/project/in ref.fa)",
            "RESULTS=(out logs/run.txt)",
        ] {
            assert!(gpu.lines().any(|l| l == line), "no {line:?} in\n{gpu}");
        }
        assert!(gpu.contains(
            "hpc-registry run \"$IMAGE\" --nv --bind \"$WORK\" --pwd \"$WORK\" --bind /scratch/alice --bind /opt/data:/opt/data:ro -- python train.py --epochs 3 \"$@\""
        ), "{gpu}");
        let small = generate(&requests[0], &templates).unwrap();
        assert!(
            !small.contains("--nv") && !small.contains("--gres"),
            "{small}"
        );
        assert!(small.contains("exec hpc-registry run"), "{small}");
    }

    #[test]
    fn gpus_keep_the_templates_gpu_type() {
        let mut t = default_templates();
        t[3].gres = Some("gpu:a100:1,nvme:1".into());
        let s = generate(
            &ScriptRequest {
                gpus: 4,
                ..request("gpu")
            },
            &t,
        )
        .unwrap();
        assert!(s.contains("#SBATCH --gres=gpu:a100:4,nvme:1\n"), "{s}");
        let s = generate(
            &ScriptRequest {
                gpus: 1,
                ..request("small")
            },
            &t,
        )
        .unwrap();
        assert!(
            s.contains("#SBATCH --gres=gpu:1\n") && s.contains(" --nv "),
            "{s}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let t = default_templates();
        let cases: Vec<(&str, ScriptRequest)> = vec![
            ("template", request("huge")),
            (
                "image",
                ScriptRequest {
                    image: "Alice/x".into(),
                    ..request("small")
                },
            ),
            (
                "image",
                ScriptRequest {
                    image: "alice/x:1\n#SBATCH --uid=0".into(),
                    ..request("small")
                },
            ),
            (
                "command",
                ScriptRequest {
                    command: "echo hi\n#SBATCH --uid=0".into(),
                    ..request("small")
                },
            ),
            (
                "command",
                ScriptRequest {
                    command: "echo 'open".into(),
                    ..request("small")
                },
            ),
            (
                "bind",
                ScriptRequest {
                    binds: vec!["relative:/x".into()],
                    ..request("small")
                },
            ),
            (
                "bind",
                ScriptRequest {
                    binds: vec!["/a,/b".into()],
                    ..request("small")
                },
            ),
            (
                "bind",
                ScriptRequest {
                    binds: vec!["/a:/b:exec".into()],
                    ..request("small")
                },
            ),
            (
                "bind",
                ScriptRequest {
                    binds: vec!["/a\n#SBATCH -p x".into()],
                    ..request("small")
                },
            ),
            (
                "job name",
                ScriptRequest {
                    job_name: Some("a b".into()),
                    ..request("small")
                },
            ),
            (
                "job name",
                ScriptRequest {
                    job_name: Some("x\n#SBATCH --uid=0".into()),
                    ..request("small")
                },
            ),
            (
                "array",
                ScriptRequest {
                    array: Some("1-5\n#SBATCH".into()),
                    ..request("small")
                },
            ),
            (
                "mail",
                ScriptRequest {
                    mail: Some(MailOn {
                        address: "a@b\n#SBATCH".into(),
                        on_end: true,
                        on_fail: false,
                    }),
                    ..request("small")
                },
            ),
            (
                "mail",
                ScriptRequest {
                    mail: Some(MailOn {
                        address: "a@b".into(),
                        on_end: false,
                        on_fail: false,
                    }),
                    ..request("small")
                },
            ),
            (
                "gpus",
                ScriptRequest {
                    gpus: 1000,
                    ..request("gpu")
                },
            ),
            (
                "fast storage result",
                ScriptRequest {
                    fast_storage: Some(FastStorage {
                        inputs: vec![],
                        results: vec!["../../etc".into()],
                    }),
                    ..request("small")
                },
            ),
            (
                "fast storage result",
                ScriptRequest {
                    fast_storage: Some(FastStorage {
                        inputs: vec![],
                        results: vec!["/abs".into()],
                    }),
                    ..request("small")
                },
            ),
            (
                "fast storage input",
                ScriptRequest {
                    fast_storage: Some(FastStorage {
                        inputs: vec!["--delete".into()],
                        results: vec![],
                    }),
                    ..request("small")
                },
            ),
        ];
        for (field, req) in cases {
            let e = generate(&req, &t).unwrap_err();
            let text = e.to_string();
            match e {
                ScriptError::UnknownTemplate { .. } => {
                    assert_eq!(field, "template");
                    assert!(text.contains("small, medium, large, gpu"), "{text}");
                }
                ScriptError::Invalid { field: f, .. } => assert_eq!(f, field, "{text}"),
            }
        }
    }

    /// Runs `script` with bash, a stand-in `hpc-registry` on PATH that prints its arguments
    /// one per line, in `dir`; returns what it printed.
    fn run_with_stub(script: &str, dir: &Path, args: &[&str]) -> String {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = bin.join("hpc-registry");
        std::fs::write(&stub, "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n[ -z \"$FAIL\" ] || { echo out > result.txt; exit 3; }\n").unwrap();
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("job")
            .args(args)
            .current_dir(dir)
            .env("PATH", path)
            .env("SLURM_ARRAY_TASK_ID", "5")
            .env("SLURM_JOB_ID", "77")
            .env("TMPDIR", dir.join("local"))
            .env("SLURM_SUBMIT_DIR", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn shell_code_in_user_values_stays_data() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let nasty = format!(
            "python -c 'print(1)' \"$(touch {p})\" `touch {p}` ; touch {p} && x --task=$SLURM_ARRAY_TASK_ID \"#SBATCH --uid=0\"",
            p = pwned.display()
        );
        let req = ScriptRequest {
            command: nasty,
            binds: vec!["/tmp/it's $(x):/mnt".into()],
            job_name: Some("n".into()),
            ..request("small")
        };
        let script = generate(&req, &default_templates()).unwrap();
        assert_eq!(
            directives(&script),
            [
                "#SBATCH --job-name=n",
                "#SBATCH --nodes=1",
                "#SBATCH --ntasks=1",
                "#SBATCH --cpus-per-task=2",
                "#SBATCH --mem=4G",
                "#SBATCH --time=01:00:00",
                "#SBATCH --comment=\"hpc-registry: alice/tool:1\"",
            ]
        );
        let printed = run_with_stub(&script, dir.path(), &["extra arg"]);
        assert!(!pwned.exists(), "the command's shell code ran:\n{script}");
        let p = pwned.display();
        let expected = format!(
            "[run]\n[alice/tool:1]\n[--bind]\n[/tmp/it's $(x):/mnt]\n[--]\n[python]\n[-c]\n[print(1)]\n[$(touch {p})]\n[`touch]\n[{p}`]\n[;]\n[touch]\n[{p}]\n[&&]\n[x]\n[--task=5]\n[#SBATCH --uid=0]\n[extra arg]\n"
        );
        assert_eq!(printed, expected, "{script}");
    }

    #[test]
    fn fast_storage_stages_in_and_copies_back_even_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join("in");
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::write(inputs.join("a.txt"), "A").unwrap();
        std::fs::create_dir_all(dir.path().join("local")).unwrap();
        let req = ScriptRequest {
            fast_storage: Some(FastStorage {
                inputs: vec![inputs.display().to_string()],
                results: vec!["result.txt".into(), "missing".into()],
            }),
            command: "ls".into(),
            ..request("small")
        };
        let script = generate(&req, &default_templates()).unwrap();
        // The stand-in writes result.txt in its working directory and fails when FAIL is set.
        let failing = script.replacen(
            "set -euo pipefail\n",
            "set -euo pipefail\nexport FAIL=1\n",
            1,
        );
        let bin = dir.path().join("bin");
        let _ = run_with_stub(&script, dir.path(), &[]);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&failing)
            .current_dir(dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("SLURM_JOB_ID", "78")
            .env("TMPDIR", dir.path().join("local"))
            .env("SLURM_SUBMIT_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let work = dir.path().join("local/hpc-registry-job-78");
        assert!(
            printed.contains(&format!("[--bind]\n[{}]\n[--pwd]", work.display())),
            "{printed}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("result.txt")).unwrap(),
            "out\n"
        );
        assert!(!work.exists(), "the working directory stays behind");
        assert!(!dir.path().join("local/hpc-registry-job-77").exists());
    }

    /// `deploy/slurm/templates/` is this generator's output; with
    /// `HPC_REGISTRY_WRITE_TEMPLATES=1` the test writes it.
    #[test]
    fn deploy_templates_are_the_generators_output() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm/templates");
        let write = std::env::var_os("HPC_REGISTRY_WRITE_TEMPLATES").is_some();
        let files = site_templates(&default_templates());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "small.sbatch",
                "medium.sbatch",
                "large.sbatch",
                "gpu.sbatch",
                "fast-storage.sbatch"
            ]
        );
        for (name, text) in &files {
            let path = dir.join(name);
            if write {
                std::fs::write(&path, text).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                &on_disk, text,
                "{} differs from the generator: HPC_REGISTRY_WRITE_TEMPLATES=1 cargo test --lib deploy_templates",
                path.display()
            );
            let image = if name == "gpu.sbatch" {
                "alice/pytorch:2.3"
            } else {
                "alice/tool:1"
            };
            let images = HashMap::from([(
                image.to_owned(),
                ImageState::Ready {
                    digest: "sha256:1".into(),
                },
            )]);
            assert_eq!(lint(text, &images), [], "{name}");
        }
    }
}
