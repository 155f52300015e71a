//! The administration commands of the `hpc-registry` binary, one module per concept:
//!
//! * [`identity`]: `user|group|token …` (flattened into the top level);
//! * [`node`]: the compute-node commands `fetch|run|cache|login` (also top level);
//! * [`script`], [`lint`]: `script` (the batch-script generator) and `lint` (sbatch lint);
//! * `admin …` ([`AdminCommand`]): [`lifecycle`] (prune, gc, repo delete), [`audit`], [`storage`]
//!   (usage, quota, scrub), `jobs` (the background jobs scrub, gc and prune run as);
//! * [`target`]: where a command acts (a running server's admin API, or the data directory
//!   offline), [`remote`]: the admin API over the shared [`crate::client`];
//! * [`output`]: tables and JSON; [`prompt`]: passwords.

mod audit;
mod backup;
pub mod builder;
mod builds;
pub mod identity;
mod jobs;
pub mod lifecycle;
pub mod lint;
pub mod node;
mod notifications;
mod output;
mod prompt;
mod reload;
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
    /// Run the retention policies, then garbage collection, now (online: no downtime).
    Prune(lifecycle::SweepArgs),
    /// Run garbage collection alone now: unanchored manifests, orphaned SIFs, unreferenced
    /// blobs and stale uploads (retention policies untouched).
    Gc(lifecycle::SweepArgs),
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
    /// The mail/webhook notification outbox (`--failed`: given up on, with the last error).
    Notifications(notifications::NotificationsArgs),
    /// Back the store up into DEST while the server serves (incremental: only new blobs copied).
    Backup(backup::BackupArgs),
    /// Restore a backup into a fresh data directory, then verify it.
    Restore(backup::RestoreArgs),
    /// Make a running server re-read its configuration (as SIGHUP does) and report the outcome.
    Reload(reload::ReloadArgs),
    /// Background admin jobs (scrub, gc, prune): list, `ID` for one, `cancel ID`.
    Jobs(jobs::JobsArgs),
}

/// Runs one `admin …` command.
pub fn run_admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Prune(args) => lifecycle::sweep(true, args),
        AdminCommand::Gc(args) => lifecycle::sweep(false, args),
        AdminCommand::Repo { command, target } => lifecycle::repo(command, &target),
        AdminCommand::Audit(args) => audit::run(*args),
        AdminCommand::Storage(command) => storage::run(command),
        AdminCommand::Builds(args) => builds::run(args),
        AdminCommand::Notifications(args) => notifications::run(args),
        AdminCommand::Backup(args) => backup::backup(args),
        AdminCommand::Restore(args) => backup::restore(args),
        AdminCommand::Reload(args) => reload::run(args),
        AdminCommand::Jobs(args) => jobs::run(args),
    }
}
