//! `fetch --all-nodes`: one download for a whole allocation. The SIF is fetched on the batch
//! host, spread with `sbcast` (Slurm's own tree broadcast) to the same path in every node's
//! cache, and adopted there by `hpc-registry cache adopt`, which checks its sha256 before it
//! becomes visible. Without sbcast (not installed, `HPC_REGISTRY_SBCAST=none`, or failing),
//! every node fetches for itself after a random pause, so that N nodes do not hit the registry
//! in the same instant.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::{Fetched, Progress};
use crate::client::auth::find_program;
use crate::node_cache::NodeCache;

/// How many nodes the current allocation has (1 outside one).
pub fn allocation_nodes() -> u32 {
    std::env::var("SLURM_JOB_NUM_NODES")
        .or_else(|_| std::env::var("SLURM_NNODES"))
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}

/// Puts the fetched SIF on every node of the allocation; `reference` is what each node fetches
/// when broadcasting is impossible.
pub fn spread(
    fetched: &Fetched,
    cache: &NodeCache,
    reference: &str,
    nodes: u32,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let incoming = cache.incoming_path(&fetched.digest)?;
    let srun = |args: &[&str]| -> anyhow::Result<()> {
        let srun = find_program("srun").context("srun is not installed: not inside Slurm?")?;
        let status = Command::new(srun)
            .args([
                "--overlap",
                "--nodes",
                &nodes.to_string(),
                "--ntasks-per-node=1",
            ])
            .arg(&me)
            .args(args)
            .status()
            .context("cannot run srun")?;
        if !status.success() {
            bail!("srun {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    // Every node's cache directory must exist before sbcast writes into it.
    srun(&["cache", "init"])?;
    match broadcast(&fetched.sif, &incoming) {
        Ok(()) => {
            progress.note(&format!(
                "spread {} to {nodes} nodes with sbcast",
                fetched.digest
            ));
            srun(&["cache", "adopt", &fetched.digest, "--or-fetch", reference])
        }
        Err(e) => {
            progress.note(&format!("{e:#}; every node fetches for itself"));
            srun(&["fetch", "--quiet", "--jitter", reference])
        }
    }
}

/// `HPC_REGISTRY_SBCAST`: the sbcast to use, or `none` where a site cannot use it (sbcast
/// disabled, or a cache path its daemons cannot write); else `sbcast` from PATH.
fn sbcast_program() -> anyhow::Result<PathBuf> {
    match std::env::var_os("HPC_REGISTRY_SBCAST") {
        Some(v) if v == "none" => bail!("sbcast is turned off (HPC_REGISTRY_SBCAST=none)"),
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => find_program("sbcast").context("sbcast is not installed"),
    }
}

fn broadcast(sif: &Path, incoming: &Path) -> anyhow::Result<()> {
    let sbcast = sbcast_program()?;
    let status = Command::new(sbcast)
        .arg("--force")
        .arg(sif)
        .arg(incoming)
        .status()
        .context("cannot run sbcast")?;
    if !status.success() {
        bail!("sbcast failed ({status})");
    }
    Ok(())
}
