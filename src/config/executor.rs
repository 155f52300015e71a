//! `[farm] executor` and `[farm.slurm]`: where builds run (plain data).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the farm's builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// In-process workers (`[farm] workers`), each build in a contained child process.
    #[default]
    Local,
    /// Remote builder hosts only (`hpc-registry builder`); no in-process workers.
    Remote,
    /// One `sbatch` job per build, running `hpc-registry builder --once` with a one-job
    /// credential (`[farm.slurm]`).
    Slurm,
}

/// `[farm.slurm]`: how builds become Slurm jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `--cpus-per-task` of a build job (also its build's thread count).
    pub cpus: u32,
    /// `--mem` of a build job, in Slurm's syntax (`8G`).
    pub memory: String,
    /// `--time` of a build job, in Slurm's syntax (`2:00:00`).
    pub time_limit: String,
    /// The job script template; unset: the built-in copy of `builders/slurm-build.sbatch`.
    pub template: Option<PathBuf>,
    /// The URL the build job reaches this server at (unset: `http://` + `listen`).
    pub server_url: Option<String>,
    /// `hpc-registry` as the compute nodes run it (unset: this server's own executable).
    pub binary: Option<PathBuf>,
    /// Where the one-job credentials (0600) and job scripts go; the build job must read it.
    /// Unset: `DATA/slurm`.
    pub work_dir: Option<PathBuf>,
    /// Directory of `sbatch`, `squeue`, `scontrol`, `scancel` (unset: `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// `SLURM_CONF` for those commands (unset: Slurm's default).
    pub slurm_conf: Option<PathBuf>,
    /// Build jobs submitted at once (the rest wait in the farm's queue).
    pub max_jobs: usize,
    /// How often Slurm is asked about the submitted jobs.
    pub reconcile_secs: u64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            cpus: 2,
            memory: "8G".into(),
            time_limit: "2:00:00".into(),
            template: None,
            server_url: None,
            binary: None,
            work_dir: None,
            bin_dir: None,
            slurm_conf: None,
            max_jobs: 16,
            reconcile_secs: 10,
        }
    }
}
