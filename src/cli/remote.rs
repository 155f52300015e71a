//! The admin API of a running server (`--server URL`), over the shared [`crate::client::Client`],
//! with the admin's credentials from the environment.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

use crate::auth::manage::Op;
use crate::client::{self, Auth, Timeouts};
use crate::http::admin_ops::OpRoute;

/// The running server to talk to.
#[derive(Args, Debug, Clone)]
pub struct ServerTarget {
    /// A running server's URL (e.g. http://127.0.0.1:5000), managed through its admin API;
    /// credentials from HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD, or HPC_REGISTRY_TOKEN.
    #[arg(long, env = "HPC_REGISTRY_SERVER", global = true)]
    pub server: Option<String>,
    /// CA certificate (PEM) to trust for an https --server [default: the system's CA bundle].
    #[arg(long, env = "HPC_REGISTRY_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
}

impl ServerTarget {
    /// The admin API of `--server`, for commands that only work online.
    pub fn require(&self) -> anyhow::Result<AdminApi> {
        let server = self.server.as_deref().ok_or_else(|| {
            anyhow!(
                "this command talks to a running server: pass --server URL (or set HPC_REGISTRY_SERVER), \
                 with HPC_REGISTRY_TOKEN or HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD of an admin"
            )
        })?;
        AdminApi::new(server, self.cacert.as_deref())
    }

    /// The admin API of `--server`, or None for the offline mode.
    pub fn online(&self) -> anyhow::Result<Option<AdminApi>> {
        self.server
            .as_deref()
            .map(|s| AdminApi::new(s, self.cacert.as_deref()))
            .transpose()
    }
}

pub struct AdminApi {
    client: client::Client,
}

impl AdminApi {
    pub fn new(server: &str, cacert: Option<&Path>) -> anyhow::Result<AdminApi> {
        let client = client::Client::new(
            server,
            "--server",
            cacert,
            credentials()?,
            // Prune and scrub answer when they are done: give them time.
            Timeouts {
                read: std::time::Duration::from_secs(3600),
                ..Timeouts::default()
            },
        )?;
        Ok(AdminApi { client })
    }

    /// `GET path`, as JSON (errors carry the server's message).
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None)
    }

    /// Any call named after its method in errors ("GET /admin/usage: 403 ...").
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let what = method.to_string();
        self.client.json(method, path, body, &what)
    }

    /// One identity operation through its admin API route.
    pub fn run(&self, op: &Op) -> anyhow::Result<Value> {
        let (method, path, body) = op.to_http();
        self.client.json(method, &path, body, op.name())
    }
}

/// Any admin API call with a JSON answer: [`client::Client::json`].
impl std::ops::Deref for AdminApi {
    type Target = client::Client;
    fn deref(&self) -> &client::Client {
        &self.client
    }
}

/// The admin API credentials from the environment (never from the command line, where `ps`
/// would show them).
fn credentials() -> anyhow::Result<Auth> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("HPC_REGISTRY_TOKEN") {
        return Ok(Auth::bearer(&token));
    }
    let Some(user) = var("HPC_REGISTRY_USER") else {
        bail!("set HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD (or HPC_REGISTRY_TOKEN) to use --server");
    };
    let password = match var("HPC_REGISTRY_PASSWORD") {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => {
            super::prompt::prompt_hidden(&format!("password of {user}: "))?
        }
        None => bail!("set HPC_REGISTRY_PASSWORD (standard input is not a terminal)"),
    };
    Ok(Auth::basic(&user, &password))
}
