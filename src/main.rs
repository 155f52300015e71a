//! The `hpc-registry` command: parses the command line and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use hpc_registry::auth::Anonymous;
use hpc_registry::config::Config;

#[derive(Parser)]
#[command(
    name = "hpc-registry",
    version,
    about = "An OCI registry that turns every pushed image into an Apptainer SIF"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "HPC_REGISTRY_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: hpc_registry::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve(ServeArgs),
    #[command(flatten)]
    Identity(hpc_registry::cli::IdentityCommand),
    #[command(flatten)]
    Node(hpc_registry::cli::NodeCommand),
    /// Print a batch script on `hpc-registry run` for an image and a site template.
    Script(Box<hpc_registry::cli::script::ScriptArgs>),
    /// Check a batch script: #SBATCH options and values, its images, GPUs, paths; sbatch --test-only.
    Lint(hpc_registry::cli::lint::LintArgs),
    /// Administration: prune (GC and retention), repo delete, usage, quotas, scrub, audit.
    Admin {
        #[command(subcommand)]
        command: hpc_registry::cli::AdminCommand,
    },
    /// One SIF build in its own process, started by the server (`farm::sandbox`).
    #[command(name = "build-child", hide = true)]
    BuildChild { spec: PathBuf },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags and HPC_REGISTRY_* variables override it.
    #[arg(long, env = "HPC_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "HPC_REGISTRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./registry-data].
    #[arg(long, env = "HPC_REGISTRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Largest manifest accepted, in bytes [default: 4194304].
    #[arg(long, env = "HPC_REGISTRY_MAX_MANIFEST_BYTES")]
    max_manifest_bytes: Option<usize>,
    /// What unauthenticated callers may do: none, read or read-write [default: none].
    #[arg(long, env = "HPC_REGISTRY_ANONYMOUS", value_parser = parse_anonymous)]
    anonymous: Option<Anonymous>,
    /// Development mode: anonymous read-write access, allowed only on a loopback address.
    #[arg(long, env = "HPC_REGISTRY_DEV")]
    dev: bool,
    /// Accept MUNGE credentials on pulls (needs a local munged).
    #[arg(long, env = "HPC_REGISTRY_MUNGE")]
    munge: bool,
    /// Users are also members of their host account's POSIX groups ([auth] posix_groups).
    #[arg(long, env = "HPC_REGISTRY_POSIX_GROUPS")]
    posix_groups: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "HPC_REGISTRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "HPC_REGISTRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn parse_anonymous(s: &str) -> Result<Anonymous, String> {
    match s {
        "none" => Ok(Anonymous::None),
        "read" => Ok(Anonymous::Read),
        "read-write" => Ok(Anonymous::ReadWrite),
        other => Err(format!("{other:?} is not one of none, read, read-write")),
    }
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.max_manifest_bytes {
            config.registry.max_manifest_bytes = v;
        }
        if let Some(v) = self.anonymous {
            config.auth.anonymous = v;
        }
        if self.munge {
            config.auth.munge = true;
        }
        if self.posix_groups {
            config.auth.posix_groups = true;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls.cert = Some(cert);
            config.tls.key = Some(key);
        }
        if self.dev {
            config.enable_dev_mode()?;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    hpc_registry::logging::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            hpc_registry::memory::tune_allocator();
            let config = args.into_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(hpc_registry::server::serve(config))
        }
        Command::Identity(command) => hpc_registry::cli::identity::run(command),
        Command::Node(command) => hpc_registry::cli::node::run(command),
        Command::Script(args) => hpc_registry::cli::script::run(*args),
        Command::Lint(args) => hpc_registry::cli::lint::run(args),
        Command::Admin { command } => hpc_registry::cli::run_admin(command),
        Command::BuildChild { spec } => {
            std::process::exit(hpc_registry::farm::build_child::main(&spec))
        }
    }
}
