//! `hpc-registry builder …` (a build host's loop, [`crate::builder`]) and
//! `hpc-registry builder-token create|list|revoke` (builder credentials: admin-only, audited;
//! through `--server`'s admin API, or offline on the data directory).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::target::{Offline, Target};
use crate::auth::builder::{self, NewBuilder};

/// `hpc-registry builder --server URL --token-file F [--platform P …] [--once] [--work-dir D]`.
#[derive(Args, Debug)]
pub struct BuilderArgs {
    /// The registry's URL (http:// or https://).
    #[arg(long, env = "HPC_REGISTRY_SERVER")]
    pub server: String,
    /// File holding this host's builder credential (`hpcb_…`, from `builder-token create`).
    #[arg(long, env = "HPC_REGISTRY_BUILDER_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// CA certificate (PEM) to trust for an https --server [default: the system's CA bundle].
    #[arg(long, env = "HPC_REGISTRY_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Build only these platforms (os/arch[/variant]; repeatable) [default: the credential's].
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Exit after one job (a Slurm build job); the exit status says whether its SIF was accepted.
    #[arg(long)]
    pub once: bool,
    /// Scratch space for the layers and the SIF of the job being built.
    #[arg(long, default_value = "/var/tmp/hpc-registry-builder")]
    pub work_dir: PathBuf,
    /// Compression threads per build [default: the server's [farm] threads].
    #[arg(long)]
    pub threads: Option<usize>,
    /// A delegated cgroup directory (cgroup v2, or v1's memory hierarchy): each build gets its
    /// memory limit in a child cgroup there (else RLIMIT_AS).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

pub fn run_builder(args: BuilderArgs) -> anyhow::Result<()> {
    crate::builder::run(crate::builder::Options {
        server: args.server,
        token_file: args.token_file,
        cacert: args.cacert,
        platforms: args.platforms,
        once: args.once,
        work_dir: args.work_dir,
        threads: args.threads,
        cgroup: args.cgroup,
    })
}

/// `hpc-registry builder-token …`.
#[derive(Subcommand, Debug)]
pub enum BuilderTokenCommand {
    /// Create a builder credential (printed once): it can claim and build jobs of its
    /// platforms, and nothing else.
    Create {
        name: String,
        /// A platform it builds (os/arch[/variant]; repeatable) [default: linux/amd64].
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Expires after this long (90d, 12h); default: never.
        #[arg(long)]
        expires: Option<String>,
        /// Write the credential to this file (0600) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List builder credentials.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a builder credential at once.
    Revoke {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run_token(command: BuilderTokenCommand) -> anyhow::Result<()> {
    match command {
        BuilderTokenCommand::Create {
            name,
            platforms,
            expires,
            output,
            target,
        } => {
            let platforms = if platforms.is_empty() {
                vec!["linux/amd64".to_owned()]
            } else {
                platforms
            };
            let token = match target.remote.online()? {
                Some(api) => {
                    let body = json!({"name": name, "platforms": platforms, "expires_in": expires});
                    let v = api.json(Method::POST, "/admin/builders", Some(body), "create")?;
                    v["token"]
                        .as_str()
                        .context("the server's answer holds no credential")?
                        .to_owned()
                }
                None => create_offline(&target, name.clone(), platforms, expires.as_deref())?,
            };
            match output {
                Some(path) => {
                    write_private(&path, &token)?;
                    eprintln!("builder {name}: credential written to {}", path.display());
                }
                None => println!("{token}"),
            }
            Ok(())
        }
        BuilderTokenCommand::List { json, target } => {
            let list: Value = match target.remote.online()? {
                Some(api) => {
                    api.json(Method::GET, "/admin/builders", None, "list")?["builders"].clone()
                }
                None => {
                    let offline = Offline::open(&target)?;
                    serde_json::to_value(builder::list(&offline.db)?)?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let empty = Vec::new();
            let rows = list.as_array().unwrap_or(&empty);
            let date = |v: &Value| v.as_i64().map_or("-".to_owned(), crate::timefmt::rfc3339);
            super::output::table(
                &[
                    "NAME",
                    "PLATFORMS",
                    "JOB",
                    "CREATED BY",
                    "EXPIRES",
                    "LAST USED",
                ],
                rows.iter().map(|b| {
                    let platforms: Vec<&str> = b["platforms"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    vec![
                        b["name"].as_str().unwrap_or("-").to_owned(),
                        platforms.join(","),
                        b["job_id"].as_i64().map_or("-".into(), |j| j.to_string()),
                        b["created_by"].as_str().unwrap_or("-").to_owned(),
                        date(&b["expires_at"]),
                        date(&b["last_used_at"]),
                    ]
                }),
            );
            Ok(())
        }
        BuilderTokenCommand::Revoke { name, target } => {
            match target.remote.online()? {
                Some(api) => {
                    let path = format!("/admin/builders/{}", crate::urlcode::encode(&name));
                    api.json(Method::DELETE, &path, None, "revoke")?;
                }
                None => {
                    let offline = Offline::open(&target)?;
                    let result = builder::revoke(&offline.db, &name);
                    record(&offline, "builder.revoke", &name, &result)?;
                    result?;
                }
            }
            eprintln!("builder {name} revoked");
            Ok(())
        }
    }
}

fn create_offline(
    target: &Target,
    name: String,
    platforms: Vec<String>,
    expires: Option<&str>,
) -> anyhow::Result<String> {
    let expires_at = expires
        .map(crate::timefmt::parse_duration_secs)
        .transpose()?
        .map(|secs| crate::meta::now() + secs);
    let offline = Offline::open(target)?;
    let new = NewBuilder {
        name: name.clone(),
        platforms,
        job_id: None,
        expires_at,
        created_by: crate::audit::ops::local_action("", None, "", None)
            .user
            .unwrap_or_default(),
    };
    let result = builder::create(&offline.db, &new);
    record(&offline, "builder.create", &name, &result)?;
    Ok(result?.0)
}

/// The audit record of an offline credential change, as the OS user who made it.
fn record<T>(
    offline: &Offline,
    action: &str,
    name: &str,
    result: &Result<T, builder::BuilderAdminError>,
) -> anyhow::Result<()> {
    let (outcome, detail) = match result {
        Ok(_) => ("ok", None),
        Err(e) => ("error", Some(e.to_string())),
    };
    let r = crate::audit::ops::local_action(action, Some(name.to_owned()), outcome, detail);
    offline.record(r, action)
}

fn write_private(path: &std::path::Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
