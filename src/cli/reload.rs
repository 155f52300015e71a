//! `hpc-registry admin reload --server URL`: the server re-reads its configuration (as on
//! SIGHUP) and answers what it applied, or why it refused the file (then it keeps running on the
//! configuration it had, and this command fails with that reason).

use clap::Args;
use reqwest::Method;

use super::output::print_json;
use super::remote::ServerTarget;

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: ServerTarget,
}

pub fn run(args: ReloadArgs) -> anyhow::Result<()> {
    let v = args
        .target
        .require()?
        .call(Method::POST, "/admin/reload", None)?;
    if args.json {
        return print_json(&v);
    }
    let list = |key: &str| -> String {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("reloaded: {}", list("applied"));
    let restart = list("restart_needed");
    if !restart.is_empty() {
        println!("changed, but only applied at the next restart: {restart}");
    }
    Ok(())
}
