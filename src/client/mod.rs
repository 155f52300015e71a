//! The one HTTP client of hpc-registry's own commands: the admin CLI (`--server`) and the
//! compute-node commands (`fetch`, `run`, `cache`, the prolog and the pyxis importer).
//!
//! It is `reqwest` on rustls (the `ring` provider, CA from `--cacert` or the system bundle), with a
//! connect timeout and an idle-read timeout (a multi-gigabyte download has no total timeout, but a
//! stalled one ends), and the proxies of the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `NO_PROXY`). Requests are async inside; callers are plain blocking code, so the client owns a
//! small current-thread runtime and offers blocking methods.

pub mod auth;
pub mod config;
pub mod credentials;
mod tls;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

pub use auth::Auth;

/// Timeouts of one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// Longest pause between two reads of a response (not the whole response).
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

pub struct Client {
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    headers: HeaderMap,
    runtime: tokio::runtime::Runtime,
    /// Names the URL's source in messages (`--server`, `the registry URL`).
    what: &'static str,
}

impl Client {
    /// A client of the server at `base` (`http://…` or `https://…`); `what` names where the URL
    /// came from in errors.
    pub fn new(
        base: &str,
        what: &'static str,
        cacert: Option<&Path>,
        auth: Auth,
        timeouts: Timeouts,
    ) -> anyhow::Result<Client> {
        let base = Url::parse(base).with_context(|| format!("{what} {base:?} is not a URL"))?;
        let https = match base.scheme() {
            "https" => true,
            "http" => false,
            _ => bail!("{what} must start with http:// or https://"),
        };
        if base.host_str().is_none_or(str::is_empty) {
            bail!("{what} {:?} has no host", base.as_str());
        }
        let http = async_http_client(https, cacert, timeouts)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Client {
            base,
            http,
            auth,
            headers: HeaderMap::new(),
            runtime,
            what,
        })
    }

    /// Sends `name: value` with every request (e.g. `X-Slurm-Job-Id`).
    pub fn with_header(mut self, name: &'static str, value: &str) -> anyhow::Result<Client> {
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("{value:?} cannot be sent as {name}"))?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Runs `future` on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The URL of `path_and_query` (starting with `/`) on the server.
    pub fn url(&self, path_and_query: &str) -> anyhow::Result<Url> {
        self.base
            .join(path_and_query)
            .with_context(|| format!("{path_and_query:?} is not a valid request path"))
    }

    /// A request with the client's headers and a fresh `Authorization`.
    pub fn request(&self, method: Method, path_and_query: &str) -> anyhow::Result<RequestBuilder> {
        let mut builder = self
            .http
            .request(method, self.url(path_and_query)?)
            .headers(self.headers.clone());
        if let Some(value) = self.auth.header()? {
            let mut value = HeaderValue::from_str(&value).context("credentials are not ASCII")?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        Ok(builder)
    }

    /// Sends `request`, turning transport failures into one clear line.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(&e))
    }

    /// `METHOD path` with an optional JSON body, answered with JSON; an error status becomes an
    /// error `"{what} {path}: {status}: {the server's message}"`.
    pub fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .request(method, path)?
            .header(CONTENT_TYPE, "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let (status, bytes) = self.block_on(async {
            let response = self.send(request).await?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?;
            anyhow::Ok((status, bytes))
        })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        bail!("{what} {path}: {status}: {}", error_message(&value, &bytes))
    }

    /// One line for a failed exchange: the URL and the innermost cause, without reqwest's wrapping.
    pub fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let hint = if self.base.scheme() == "https"
            && (e.is_connect() || cause.to_string().contains("certificate"))
        {
            " (a TLS problem? pass --cacert)"
        } else {
            ""
        };
        if e.is_timeout() {
            return anyhow!("{} ({}) did not answer in time{hint}", self.base, self.what);
        }
        if e.is_connect() {
            return anyhow!("cannot connect to {}: {cause}{hint}", self.base);
        }
        anyhow!("talking to {} failed: {cause}{hint}", self.base)
    }
}

/// The async `reqwest` client under [`Client`], for callers already on a runtime (the server's
/// webhook notifications): rustls with `cacert` or the system bundle for `https`, the timeouts,
/// the user agent and the environment's proxies.
pub fn async_http_client(
    https: bool,
    cacert: Option<&Path>,
    timeouts: Timeouts,
) -> anyhow::Result<reqwest::Client> {
    // Plain HTTP needs no trust anchors (and the system bundle may be absent on a node).
    let tls = if https {
        tls::client_config(cacert)?
    } else {
        tls::client_config_without_roots()
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .user_agent(user_agent())
        .build()
        .context("cannot set up the HTTP client")
}

/// `hpc-registry/VERSION`, with `(NOTE)` from `HPC_REGISTRY_USER_AGENT_NOTE` (the prolog and the
/// pyxis importer name themselves so, for the registry's audit trail).
fn user_agent() -> String {
    let version = concat!("hpc-registry/", env!("CARGO_PKG_VERSION"));
    match std::env::var("HPC_REGISTRY_USER_AGENT_NOTE") {
        Ok(note) if !note.is_empty() && note.chars().all(|c| c.is_ascii_graphic()) => {
            format!("{version} ({note})")
        }
        _ => version.to_owned(),
    }
}

/// The message of an OCI-style error body (`{"errors":[{"message":…}]}`), else the body as text.
pub fn error_message(value: &Value, bytes: &[u8]) -> String {
    value["errors"][0]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned())
}

/// Whether a status is worth retrying: the server or something in between is having trouble.
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}
