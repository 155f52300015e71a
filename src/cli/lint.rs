//! `hpc-registry lint job.sbatch` (or `-` for standard input): line-numbered findings
//! (`job.sbatch:12: error[E-time]: …`), exit status 1 when any is an error. The script's images
//! are looked up as the caller (`GET /sif/<ref>/status` with the node commands' credentials:
//! what the caller may not read is reported exactly like what does not exist); where `sbatch`
//! is on PATH, Slurm's own `sbatch --test-only` verdict follows.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::config::ClientConfig;
use crate::client::Client;
use crate::fetch::ImageRef;
use crate::jobscript::{self, Finding, ImageState, Severity};

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The batch script; `-` reads standard input.
    pub script: PathBuf,
    /// Do not ask the registry about the script's images.
    #[arg(long)]
    pub offline: bool,
    /// Do not run `sbatch --test-only` even where sbatch is installed.
    #[arg(long)]
    pub no_test_only: bool,
    /// Print the findings as JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LintArgs) -> anyhow::Result<()> {
    let (name, text) = read(&args)?;
    let images = if args.offline {
        HashMap::new()
    } else {
        resolve_images(&text)?
    };
    let findings = jobscript::lint(&text, &images);
    let mut errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    for f in &findings {
        print(&name, f, args.json)?;
    }
    if !args.no_test_only {
        match jobscript::sbatch_test_only(&text, &[]).context("cannot run sbatch --test-only")? {
            None => eprintln!("note: sbatch is not installed here: no sbatch --test-only"),
            Some(verdict) => {
                let f = Finding {
                    line: 0,
                    severity: if verdict.accepted {
                        Severity::Info
                    } else {
                        Severity::Error
                    },
                    code: "sbatch-test-only",
                    message: format!(
                        "sbatch --test-only {}: {}",
                        if verdict.accepted {
                            "accepts it"
                        } else {
                            "refuses it"
                        },
                        verdict.message
                    ),
                };
                errors += usize::from(!verdict.accepted);
                print(&name, &f, args.json)?;
            }
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn read(args: &LintArgs) -> anyhow::Result<(String, String)> {
    if args.script.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the script from standard input")?;
        return Ok(("stdin".to_owned(), text));
    }
    let text = std::fs::read_to_string(&args.script)
        .with_context(|| format!("cannot read {}", args.script.display()))?;
    Ok((args.script.display().to_string(), text))
}

fn print(name: &str, f: &Finding, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(f)?;
        v["file"] = Value::from(name);
        println!("{v}");
    } else if f.line == 0 {
        println!("{name}: {}[{}]: {}", f.severity.as_str(), f.code, f.message);
    } else {
        println!(
            "{name}:{}: {}[{}]: {}",
            f.line,
            f.severity.as_str(),
            f.code,
            f.message
        );
    }
    Ok(())
}

/// Each distinct (valid) reference of the script, as the caller sees it.
fn resolve_images(text: &str) -> anyhow::Result<HashMap<String, ImageState>> {
    let mut refs: Vec<String> = jobscript::image_references(text)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| jobscript::check_reference(r).is_ok())
        .collect();
    refs.sort();
    refs.dedup();
    let mut out = HashMap::new();
    if refs.is_empty() {
        return Ok(out);
    }
    let config = ClientConfig::load()?;
    let client = crate::fetch::node_client(&config)
        .context("cannot check the script's images (--offline skips them)")?;
    for r in refs {
        let state = image_state(&client, &r)?;
        out.insert(r, state);
    }
    Ok(out)
}

fn image_state(client: &Client, reference: &str) -> anyhow::Result<ImageState> {
    let sif_path = ImageRef::parse(reference)?.sif_path;
    let path = format!("/sif/{sif_path}/status");
    let request = client.request(Method::GET, &path)?;
    let (status, body) = client.block_on(async {
        let response = client.send(request).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| client.transport_error(&e))?;
        anyhow::Ok((status, body))
    })?;
    let value: Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(match status {
        StatusCode::OK => match value["state"].as_str().unwrap_or_default() {
            "ready" => ImageState::Ready {
                digest: value["sif"].as_str().unwrap_or_default().to_owned(),
            },
            "queued" => ImageState::Queued,
            "building" => ImageState::Building,
            "failed" => ImageState::Failed {
                reason: value["failure"]
                    .as_str()
                    .unwrap_or("unknown reason")
                    .to_owned(),
            },
            other => bail!("GET {path}: a state this client does not know: {other:?}"),
        },
        StatusCode::UNAUTHORIZED => bail!(
            "GET {path}: the registry wants credentials (hpc-registry login, or HPC_REGISTRY_TOKEN); --offline skips the image checks"
        ),
        StatusCode::BAD_REQUEST if value["errors"][0]["code"] == "MANIFEST_INVALID" => {
            ImageState::NotRunnable
        }
        // Not there, not readable, or not servable from that repository: one answer.
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
            ImageState::Unknown
        }
        other => bail!(
            "GET {path}: {other}: {}",
            crate::client::error_message(&value, &body)
        ),
    })
}
