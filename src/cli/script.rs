//! `hpc-registry script`: the submit-script generator on the command line (the web UI's
//! generator, same code: [`crate::jobscript::generate`]). Templates come from the registry
//! (`GET /api/jobscript/templates`, with the node commands' credentials), or, when no registry
//! is configured or it cannot be reached, the built-in defaults with a note on stderr.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use reqwest::Method;

use crate::client::config::ClientConfig;
use crate::jobscript::{self, FastStorage, MailOn, ScriptRequest, Template};

#[derive(Args, Debug)]
pub struct ScriptArgs {
    /// The image: alice/tool:1, alice/tool@sha256:…
    #[arg(long)]
    pub image: String,
    /// The site template (the registry's [[ui.templates]]; built in: small, medium, large, gpu).
    #[arg(long, default_value = "small")]
    pub template: String,
    /// GPUs (--gres=gpu:N and apptainer --nv) [default: the template's].
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Stage --input files onto node-local storage with rsync, run there, copy --result back.
    #[arg(long)]
    pub fast_storage: bool,
    /// A file or directory to stage in (fast storage; repeat for more).
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<String>,
    /// A path, relative to the job's working directory, to copy back (fast storage; repeat).
    #[arg(long = "result", value_name = "PATH")]
    pub results: Vec<String>,
    /// A bind mount SRC[:DEST[:ro|rw]] (repeat for more).
    #[arg(long = "bind", value_name = "SPEC")]
    pub binds: Vec<String>,
    /// Mail from Slurm to this address.
    #[arg(long)]
    pub mail_user: Option<String>,
    /// When to mail: END, FAIL or END,FAIL.
    #[arg(long, default_value = "END,FAIL", requires = "mail_user")]
    pub mail_type: String,
    /// A job array, e.g. 0-15%4.
    #[arg(long)]
    pub array: Option<String>,
    /// The job name [default: the template's name].
    #[arg(long)]
    pub job_name: Option<String>,
    /// Write the script to FILE, read-only (0444), instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Use the built-in templates without asking the registry.
    #[arg(long)]
    pub offline: bool,
    /// The command inside the container (after --) [default: the image's runscript].
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: ScriptArgs) -> anyhow::Result<()> {
    let templates = if args.offline {
        jobscript::default_templates()
    } else {
        site_templates()?
    };
    let request = request(&args)?;
    let script = jobscript::generate(&request, &templates)?;
    match &args.output {
        None => std::io::stdout().write_all(script.as_bytes())?,
        Some(path) => {
            write_read_only(path, &script)?;
            eprintln!("wrote {} (read-only)", path.display());
        }
    }
    Ok(())
}

fn request(args: &ScriptArgs) -> anyhow::Result<ScriptRequest> {
    let fast = args.fast_storage || !args.inputs.is_empty() || !args.results.is_empty();
    let mail = match &args.mail_user {
        None => None,
        Some(address) => {
            let types: Vec<String> = args
                .mail_type
                .split(',')
                .map(|t| t.trim().to_ascii_uppercase())
                .collect();
            if let Some(other) = types.iter().find(|t| *t != "END" && *t != "FAIL") {
                bail!("--mail-type {other}: the generator mails on END, FAIL or END,FAIL");
            }
            Some(MailOn {
                address: address.clone(),
                on_end: types.iter().any(|t| t == "END"),
                on_fail: types.iter().any(|t| t == "FAIL"),
            })
        }
    };
    let command = shlex::try_join(args.command.iter().map(String::as_str))
        .context("the command cannot be written as a shell line")?;
    Ok(ScriptRequest {
        image: args.image.clone(),
        template: args.template.clone(),
        gpus: args.gpus,
        fast_storage: fast.then(|| FastStorage {
            inputs: args.inputs.clone(),
            results: args.results.clone(),
        }),
        binds: args.binds.clone(),
        mail,
        array: args.array.clone(),
        job_name: args.job_name.clone(),
        command,
    })
}

/// The registry's templates; the built-in ones when there is no registry to ask.
fn site_templates() -> anyhow::Result<Vec<Template>> {
    let fallback = |why: String| {
        eprintln!("note: {why}; using the built-in templates (small, medium, large, gpu)");
        Ok(jobscript::default_templates())
    };
    let config = ClientConfig::load()?;
    let client = match crate::fetch::node_client(&config) {
        Ok(c) => c,
        Err(e) => {
            return fallback(format!(
                "no registry to ask for the site's templates ({e:#})"
            ))
        }
    };
    let path = "/api/jobscript/templates";
    let request = client.request(Method::GET, path)?;
    let response = match client.block_on(client.send(request)) {
        Ok(r) => r,
        Err(e) => return fallback(format!("{e:#}")),
    };
    let status = response.status();
    let body = client
        .block_on(response.bytes())
        .map_err(|e| client.transport_error(&e))?;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        bail!(
            "GET {path}: {status}: {}",
            crate::client::error_message(&value, &body)
        );
    }
    serde_json::from_value(value["templates"].clone())
        .with_context(|| format!("GET {path}: the registry's answer is not a template list"))
}

/// Writes `text` to `path` with mode 0444 (replacing a file there: a new script, not an edit).
fn write_read_only(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o444))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
