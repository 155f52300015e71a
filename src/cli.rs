//! The administration commands of the `hpc-registry` binary, one module per concept:
//!
//! * [`identity`]: `user|group|token …` (flattened into the top level);
//! * [`node`]: the compute-node commands `fetch|run|cache|login` (also top level);
//! * [`script`], [`lint`]: `script` (the batch-script generator) and `lint` (sbatch lint);
//! * `admin …` ([`AdminCommand`]): [`lifecycle`] (prune, repo delete), [`audit`], [`storage`]
//!   (usage, quota, scrub);
//! * [`target`]: where a command acts (a running server's admin API, or the data directory
//!   offline), [`remote`]: the admin API over the shared [`crate::client`];
//! * [`output`]: tables and JSON; [`prompt`]: passwords.

mod audit;
mod builds;
pub mod identity;
pub mod lifecycle;
pub mod lint;
pub mod node;
mod output;
mod prompt;
pub mod remote;
pub mod script;
pub mod storage;
pub mod target;

use clap::Subcommand;

pub use identity::IdentityCommand;
pub use node::NodeCommand;
pub use target::Target;

/// `hpc-registry admin ...`: store maintenance.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Run garbage collection and the retention policies now (online: no downtime).
    Prune {
        /// List exactly what would go, and why, without deleting anything.
        #[arg(long)]
        dry_run: bool,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Manage repositories.
    Repo {
        #[command(subcommand)]
        command: lifecycle::RepoCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Query the audit trail (filters below), or check its hash chain: `admin audit verify`.
    Audit(Box<audit::AuditArgs>),
    #[command(flatten)]
    Storage(storage::StorageCommand),
    /// The SIF build queue: list jobs, `retry ID|--failed`, `cancel ID`.
    Builds(builds::BuildsArgs),
}

/// Runs one `admin …` command.
pub fn run_admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Prune {
            dry_run,
            json,
            target,
        } => lifecycle::prune(dry_run, json, &target),
        AdminCommand::Repo { command, target } => lifecycle::repo(command, &target),
        AdminCommand::Audit(args) => audit::run(*args),
        AdminCommand::Storage(command) => storage::run(command),
        AdminCommand::Builds(args) => builds::run(args),
    }
}
