//! The compute-node commands: `fetch`, `run`, `cache ls|rm|prune` and `login`. They read the
//! site's client config ([`crate::client::config`]) and act on the calling user's node cache.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::output::{print_json, table};
use crate::client::config::ClientConfig;
use crate::fetch::{self, FetchError, FetchOptions, Fetched, ImageRef, Progress};
use crate::node_cache::{keep_across_exec, NodeCache};
use crate::quota::format_size;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Fetch an image's SIF into the node cache (waiting for its build) and print its path.
    Fetch {
        #[command(flatten)]
        fetch: FetchArgs,
        /// Print the path of the SIF's bare squashfs root filesystem instead.
        #[arg(long, conflicts_with = "enroot")]
        squashfs: bool,
        /// Fetch the enroot image built with the SIF instead (for pyxis: the root filesystem
        /// plus /etc/rc, /etc/environment and /etc/fstab) and print its path.
        #[arg(long, conflicts_with = "all_nodes")]
        enroot: bool,
        /// Inside an allocation: download once, then put a verified copy into the cache of
        /// every node of the job (sbcast; without it every node fetches).
        #[arg(long)]
        all_nodes: bool,
        /// The image: alice/tool:1, alice/tool@sha256:…, or a manifest digest sha256:….
        reference: String,
    },
    /// Fetch an image's SIF, then `apptainer exec` CMD in it (`apptainer run` without CMD):
    /// run [OPTIONS] REF [APPTAINER OPTIONS…] [-- CMD…].
    Run {
        #[command(flatten)]
        fetch: FetchArgs,
        /// The image, as for fetch.
        reference: String,
        /// Passed to apptainer before the SIF (e.g. --nv, --bind /scratch).
        #[arg(
            allow_hyphen_values = true,
            trailing_var_arg = true,
            value_name = "APPTAINER ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Manage this node's SIF cache (yours: every user has a private one).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Save an access token for nodes without MUNGE (0600, ~/.config/hpc-registry).
    Login {
        /// The registry [default: the client config's url, or HPC_REGISTRY_URL].
        #[arg(long)]
        url: Option<String>,
        /// Read the access token (from `token create --scope read`) from standard input.
        #[arg(long)]
        token_stdin: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct FetchArgs {
    /// os/arch[/variant] of an image index to fetch [default: the registry's].
    #[arg(long)]
    pub platform: Option<String>,
    /// How long to wait for the SIF's build, e.g. 30m [default: without limit inside a Slurm
    /// job, not at all outside one].
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<Duration>,
    /// Hash a cached SIF again even if it looks unchanged.
    #[arg(long)]
    pub verify: bool,
    /// No progress on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    /// Pause a random moment first (when all nodes of a job fetch at once).
    #[arg(long, hide = true)]
    pub jitter: bool,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List the cached SIFs, least recently used first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove the SIFs whose digest starts with PREFIX (never one a running job holds).
    Rm { prefix: String },
    /// Evict least recently used SIFs down to SIZE [default: the configured max_size], and
    /// abandoned partial downloads.
    Prune {
        #[arg(long)]
        max_size: Option<String>,
        /// Every user's cache on this node, each to SIZE (the node's cache cleaner; needs root
        /// or CAP_DAC_OVERRIDE, see hpc-registry-cache-clean.service).
        #[arg(long)]
        all_users: bool,
    },
    /// Create this user's cache directory (what `fetch --all-nodes` runs on every node first).
    #[command(hide = true)]
    Init,
    /// Take the copy `fetch --all-nodes` broadcast as DIGEST's SIF, once its sha256 matches;
    /// fetch REF instead if it does not.
    #[command(hide = true)]
    Adopt {
        digest: String,
        #[arg(long, value_name = "REF")]
        or_fetch: String,
    },
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    // The one duration grammar of the binary (`timefmt`), as in `[gc]` and `admin audit --since`.
    let secs = crate::timefmt::parse_duration_secs(s).map_err(|e| e.to_string())?;
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is negative: give a duration such as 30s, 10m or 2h"))
}

/// Runs one node command; exits with 75 (try again later) when a build outlasted `--wait`.
pub fn run(command: NodeCommand) -> anyhow::Result<()> {
    let result = match command {
        NodeCommand::Fetch {
            fetch,
            squashfs,
            enroot,
            all_nodes,
            reference,
        } => fetch_command(&fetch, &reference, squashfs, enroot).and_then(|f| {
            let nodes = fetch::fan_out::allocation_nodes();
            if all_nodes && nodes > 1 {
                let config = ClientConfig::load()?;
                let mut progress = Progress::new(fetch.quiet);
                fetch::fan_out::spread(
                    &f,
                    &open_cache(&config)?,
                    &reference,
                    nodes,
                    &mut progress,
                )?;
            }
            let path = if squashfs {
                f.squashfs.unwrap_or(f.sif)
            } else {
                f.sif
            };
            println!("{}", path.display());
            Ok(())
        }),
        NodeCommand::Run {
            fetch,
            reference,
            args,
        } => run_command(&fetch, &reference, args),
        NodeCommand::Cache { command } => cache_command(command),
        NodeCommand::Login { url, token_stdin } => login(url, token_stdin),
    };
    // One line (causes joined), no "Caused by" stack: these run in batch logs.
    if let Err(e) = &result {
        let code = e
            .downcast_ref::<FetchError>()
            .map_or(1, FetchError::exit_code);
        eprintln!("hpc-registry: {e:#}");
        std::process::exit(code);
    }
    result
}

fn inside_a_job() -> bool {
    std::env::var_os("SLURM_JOB_ID").is_some_and(|v| !v.is_empty())
}

fn open_cache(config: &ClientConfig) -> anyhow::Result<NodeCache> {
    let dir = config.cache_dir();
    NodeCache::open(&dir, config.cache_limit()?)
        .with_context(|| format!("cannot use the SIF cache in {}", dir.display()))
}

fn fetch_command(
    args: &FetchArgs,
    reference: &str,
    squashfs: bool,
    enroot: bool,
) -> anyhow::Result<Fetched> {
    let image = ImageRef::parse(reference)?;
    let config = ClientConfig::load()?;
    let client = fetch::node_client(&config)?;
    let cache = open_cache(&config)?;
    let options = FetchOptions {
        platform: args.platform.clone(),
        wait: match args.wait {
            Some(w) => Some(w),
            None if inside_a_job() => None,
            None => Some(Duration::ZERO),
        },
        squashfs,
        enroot,
        verify: args.verify,
    };
    let mut progress = Progress::new(args.quiet);
    if args.jitter {
        let nodes = fetch::fan_out::allocation_nodes().max(1) as u64;
        let ms = getrandom::u64().unwrap_or(0) % (nodes * 500);
        std::thread::sleep(Duration::from_millis(ms));
    }
    let fetched = fetch::fetch(&client, &cache, &image, &options, &mut progress)?;
    if !fetched.downloaded {
        progress.note(&format!("{}: {} (cached)", image.text, fetched.digest));
    } else {
        progress.note(&format!("{}: {} (downloaded)", image.text, fetched.digest));
    }
    Ok(fetched)
}

/// Fetches, holds the cache entry (a shared lock that survives `exec`), then becomes apptainer.
fn run_command(args: &FetchArgs, reference: &str, rest: Vec<OsString>) -> anyhow::Result<()> {
    let (apptainer_args, command) = split_command(rest);
    let config = ClientConfig::load()?;
    let cache = open_cache(&config)?;
    // An eviction between the fetch and the hold is rare; then fetch again.
    for _ in 0..3 {
        let fetched = fetch_command(args, reference, false, false)?;
        let Some(held) = cache.hold(&fetched.sif)? else {
            continue;
        };
        keep_across_exec(&held).context("cannot keep the SIF held across exec")?;
        let program = apptainer_program()?;
        let mut cmd = std::process::Command::new(&program);
        cmd.arg(if command.is_empty() { "run" } else { "exec" })
            .args(&apptainer_args)
            .arg(&fetched.sif)
            .args(&command);
        let e = cmd.exec();
        bail!("cannot run {}: {e}", program.display());
    }
    bail!("the cached SIF of {reference} keeps being evicted: is the cache too small?")
}

/// `[APPTAINER ARGS…] [-- CMD…]`: everything before the first `--` goes to apptainer.
fn split_command(rest: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    match rest.iter().position(|a| a == "--") {
        Some(i) => {
            let mut apptainer = rest;
            let command = apptainer.split_off(i + 1);
            apptainer.pop();
            (apptainer, command)
        }
        None => (rest, Vec::new()),
    }
}

/// `$HPC_REGISTRY_APPTAINER`, else `apptainer` (or `singularity`) on PATH.
fn apptainer_program() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HPC_REGISTRY_APPTAINER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    ["apptainer", "singularity"]
        .into_iter()
        .find_map(crate::client::auth::find_program)
        .context("apptainer is not installed on this node (nor singularity); set HPC_REGISTRY_APPTAINER to its path")
}

fn cache_command(command: CacheCommand) -> anyhow::Result<()> {
    let config = ClientConfig::load()?;
    if let CacheCommand::Prune {
        max_size,
        all_users: true,
    } = &command
    {
        return prune_all_users(&config, max_size.as_deref());
    }
    let cache = open_cache(&config)?;
    match command {
        CacheCommand::Ls { json } => {
            let entries = cache.list()?;
            if json {
                return print_json(&serde_json::to_value(&entries)?);
            }
            table(
                &["DIGEST", "SIZE", "LAST USED", "HELD", "PATH"],
                entries.iter().map(|e| {
                    vec![
                        e.digest.chars().take(19).collect(),
                        format_size(e.bytes),
                        crate::auth::rfc3339(e.last_used),
                        super::output::yes(e.held),
                        e.path.display().to_string(),
                    ]
                }),
            );
        }
        CacheCommand::Rm { prefix } => {
            for e in cache.remove(&prefix)? {
                eprintln!("removed {} ({})", e.digest, format_size(e.bytes));
            }
        }
        CacheCommand::Init => {}
        CacheCommand::Adopt { digest, or_fetch } => {
            let incoming = cache.incoming_path(&digest)?;
            let host = std::env::var("SLURMD_NODENAME").unwrap_or_default();
            if cache.adopt(&digest, &incoming)? {
                eprintln!("{host}: {digest} verified in the cache");
            } else {
                eprintln!("{host}: the broadcast copy of {digest} is missing or damaged; fetching");
                let args = FetchArgs {
                    platform: None,
                    wait: None,
                    verify: false,
                    quiet: true,
                    jitter: true,
                };
                let fetched = fetch_command(&args, &or_fetch, false, false)?;
                if fetched.digest != digest {
                    bail!("{or_fetch} is now {}, not {digest}", fetched.digest);
                }
            }
        }
        CacheCommand::Prune { max_size, .. } => {
            let target = prune_target(&config, max_size.as_deref())?;
            let removed = cache.evict_to(target)?;
            let freed: u64 = removed.iter().map(|e| e.bytes).sum();
            for e in &removed {
                eprintln!("evicted {} ({})", e.digest, format_size(e.bytes));
            }
            eprintln!(
                "{} SIFs evicted, {} freed",
                removed.len(),
                format_size(freed)
            );
        }
    }
    Ok(())
}

fn prune_target(config: &ClientConfig, max_size: Option<&str>) -> anyhow::Result<u64> {
    Ok(match max_size {
        Some(s) => crate::quota::parse_size(s)?,
        None => config.cache_limit()?.unwrap_or(u64::MAX),
    })
}

/// `cache prune --all-users`: what the node's cache cleaner runs.
fn prune_all_users(config: &ClientConfig, max_size: Option<&str>) -> anyhow::Result<()> {
    let root = config.cache_dir();
    let target = prune_target(config, max_size)?;
    let swept = crate::node_cache::prune_all_users(&root, target)
        .with_context(|| format!("cannot prune the SIF caches in {}", root.display()))?;
    let (mut count, mut freed) = (0, 0);
    for user in &swept {
        for e in &user.removed {
            eprintln!(
                "uid {}: evicted {} ({})",
                user.uid,
                e.digest,
                format_size(e.bytes)
            );
            count += 1;
            freed += e.bytes;
        }
    }
    eprintln!(
        "{} caches, {count} SIFs evicted, {} freed",
        swept.len(),
        format_size(freed)
    );
    Ok(())
}

fn login(url: Option<String>, token_stdin: bool) -> anyhow::Result<()> {
    let config = ClientConfig::load()?;
    let url = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => config.url()?.to_owned(),
    };
    let token = if token_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        super::prompt::prompt_hidden(&format!("access token for {url}: "))?
    };
    if token.is_empty() {
        bail!("no token given: create one with `hpc-registry token create --scope read`");
    }
    // Check it before saving: a typo is better found now than in tomorrow's batch job.
    let client = crate::client::Client::new(
        &url,
        "--url",
        config.cacert.as_deref(),
        crate::client::Auth::bearer(&token),
        crate::client::Timeouts::default(),
    )?;
    client
        .json(
            reqwest::Method::GET,
            "/v2/",
            None,
            "checking the token with GET",
        )
        .context("the registry refused the token")?;
    let path = crate::client::credentials::save(&crate::client::credentials::Saved { url, token })?;
    eprintln!("token saved in {}", path.display());
    Ok(())
}
