//! `hpc-registry user|group|token ...`: identity management from the command line.
//!
//! Two modes, the same operations ([`crate::auth::manage::Op`]):
//! * **online** (`--server URL` or `HPC_REGISTRY_SERVER`): through the running server's admin API,
//!   authenticated with `HPC_REGISTRY_USER` + `HPC_REGISTRY_PASSWORD`, or `HPC_REGISTRY_TOKEN`
//!   (an access token). Users can change their own password and tokens this way.
//! * **offline** (default): directly on the data directory while no server runs. It takes the
//!   data-directory lock, so it refuses (naming the server's URL) while a server holds it. Whoever
//!   can write the data directory is trusted like an admin.

mod audit;
mod builds;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::auth::manage::{
    self, Caller, CreatedToken, GroupInfo, ImportReport, MemberInfo, Op, TokenInfo, UserInfo,
};
use crate::auth::pat::TokenScope;
use crate::auth::rfc3339;
use crate::config::Config;
use crate::http::admin_ops::OpRoute;
use crate::lock::{DataLock, LockError};
use crate::meta::Db;

pub mod storage;

/// Where the commands act.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Manage a running server through its admin API (e.g. http://127.0.0.1:5000); credentials
    /// from HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD, or HPC_REGISTRY_TOKEN.
    #[arg(long, env = "HPC_REGISTRY_SERVER", global = true)]
    pub server: Option<String>,
    /// CA certificate (PEM) to trust for an https --server [default: the system's CA bundle].
    #[arg(long, env = "HPC_REGISTRY_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Without --server: the data directory to change (the server must be stopped)
    /// [default: data_dir of --config, else ./registry-data].
    #[arg(long, env = "HPC_REGISTRY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (for its data_dir).
    #[arg(long, env = "HPC_REGISTRY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// The identity-management commands (flattened into the binary's subcommands).
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage users: add, del, passwd, list, import-htpasswd.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Manage groups and their members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Manage personal access tokens (for CI and batch jobs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (password prompted for, or read from stdin).
    Add {
        name: String,
        /// POSIX uid, for MUNGE credentials from cluster nodes.
        #[arg(long)]
        uid: Option<i64>,
        /// Administrator: may do everything.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// No password: the user authenticates with MUNGE or access tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// Delete a user (with their tokens and memberships; their repositories stay).
    Del { name: String },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add the bcrypt entries of an Apache htpasswd file as users (`htpasswd -B`).
    ImportHtpasswd { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group; its members share the namespace `<group>/…`.
    Add { name: String },
    /// Delete a group (its repositories stay).
    Del { name: String },
    /// List groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a group's members, after adding or removing some.
    Members {
        group: String,
        /// Add (or make read-write) these users.
        #[arg(long, value_name = "USER")]
        add: Vec<String>,
        /// Add (or make read-only) these users: they pull but never push.
        #[arg(long, value_name = "USER")]
        add_read_only: Vec<String>,
        #[arg(long, value_name = "USER")]
        remove: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once, on standard output.
    Create {
        /// Whose token [default: the logged-in user; required offline].
        #[arg(long)]
        user: Option<String>,
        /// read or read-write.
        #[arg(long, default_value = "read-write", value_parser = parse_scope)]
        scope: TokenScope,
        /// Days until it expires; 0: never [default: 90].
        #[arg(long)]
        expires_days: Option<u32>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Whose tokens [default: the logged-in user's; offline: everybody's].
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

fn parse_scope(s: &str) -> Result<TokenScope, String> {
    TokenScope::parse(s).ok_or_else(|| format!("{s:?} is not one of read, read-write"))
}

/// Runs one command.
pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    let (target, command) = match command {
        AdminCommand::User { command, target } => (target, Identity::User(command)),
        AdminCommand::Group { command, target } => (target, Identity::Group(command)),
        AdminCommand::Token { command, target } => (target, Identity::Token(command)),
    };
    let backend = Backend::open(&target)?;
    match command {
        Identity::User(command) => user(&backend, command),
        Identity::Group(command) => group(&backend, command),
        Identity::Token(command) => token(&backend, command),
    }
}

/// The commands that run [`Op`]s.
enum Identity {
    User(UserCommand),
    Group(GroupCommand),
    Token(TokenCommand),
}

fn user(backend: &Backend, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            uid,
            admin,
            password_stdin,
            no_password,
        } => {
            let password = if no_password {
                None
            } else {
                Some(read_password(
                    password_stdin,
                    &format!("password for {name}"),
                )?)
            };
            backend.run(Op::AddUser {
                name: name.clone(),
                uid,
                admin,
                password,
            })?;
            eprintln!("added user {name}{}", if admin { " (admin)" } else { "" });
        }
        UserCommand::Del { name } => {
            backend.run(Op::DeleteUser { name: name.clone() })?;
            eprintln!("deleted user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &format!("new password for {name}"))?;
            backend.run(Op::SetPassword {
                name: name.clone(),
                password,
            })?;
            eprintln!("password of {name} changed");
        }
        UserCommand::List { json } => {
            let v = backend.run(Op::ListUsers)?;
            if json {
                println!("{v:#}");
            } else {
                let users: Vec<UserInfo> = serde_json::from_value(v)?;
                let rows = users.into_iter().map(|u| {
                    vec![
                        u.name,
                        u.uid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                        yes(u.admin),
                        yes(u.password),
                        if u.groups.is_empty() {
                            "-".into()
                        } else {
                            u.groups.join(",")
                        },
                        rfc3339(u.created_at),
                    ]
                });
                table(
                    &["NAME", "UID", "ADMIN", "PASSWORD", "GROUPS", "CREATED"],
                    rows,
                );
            }
        }
        UserCommand::ImportHtpasswd { file } => {
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let report: ImportReport =
                serde_json::from_value(backend.run(Op::ImportHtpasswd { content })?)?;
            for name in &report.added {
                println!("added {name}");
            }
            for (what, why) in &report.skipped {
                eprintln!("skipped {what}: {why}");
            }
            eprintln!(
                "{} users added, {} entries skipped",
                report.added.len(),
                report.skipped.len()
            );
        }
    }
    Ok(())
}

fn group(backend: &Backend, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Add { name } => {
            backend.run(Op::AddGroup { name: name.clone() })?;
            eprintln!("added group {name}");
        }
        GroupCommand::Del { name } => {
            backend.run(Op::DeleteGroup { name: name.clone() })?;
            eprintln!("deleted group {name}");
        }
        GroupCommand::List { json } => {
            let v = backend.run(Op::ListGroups)?;
            if json {
                println!("{v:#}");
            } else {
                let groups: Vec<GroupInfo> = serde_json::from_value(v)?;
                let rows = groups
                    .into_iter()
                    .map(|g| vec![g.name, g.members.to_string(), rfc3339(g.created_at)]);
                table(&["NAME", "MEMBERS", "CREATED"], rows);
            }
        }
        GroupCommand::Members {
            group,
            add,
            add_read_only,
            remove,
            json,
        } => {
            for (users, read_only) in [(add, false), (add_read_only, true)] {
                for user in users {
                    backend.run(Op::SetMember {
                        group: group.clone(),
                        user,
                        read_only,
                    })?;
                }
            }
            for user in remove {
                backend.run(Op::RemoveMember {
                    group: group.clone(),
                    user,
                })?;
            }
            let v = backend.run(Op::GroupMembers { group })?;
            if json {
                println!("{v:#}");
            } else {
                let members: Vec<MemberInfo> = serde_json::from_value(v)?;
                let rows = members.into_iter().map(|m| {
                    vec![
                        m.user,
                        if m.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        }
                        .to_owned(),
                        rfc3339(m.added_at),
                    ]
                });
                table(&["USER", "ROLE", "ADDED"], rows);
            }
        }
    }
    Ok(())
}

fn token(backend: &Backend, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            user,
            scope,
            expires_days,
            description,
        } => {
            let created: CreatedToken = serde_json::from_value(backend.run(Op::CreateToken {
                user,
                scope,
                expires_days,
                description,
            })?)?;
            println!("{}", created.token);
            eprintln!(
                "token {} for {} ({}), {}: store it now, it is never shown again",
                created.info.id,
                created.info.user,
                created.info.scope,
                created
                    .info
                    .expires_at
                    .map(|e| format!("expires {}", rfc3339(e)))
                    .unwrap_or_else(|| "never expires".into())
            );
        }
        TokenCommand::List { user, json } => {
            let v = backend.run(Op::ListTokens { user })?;
            if json {
                println!("{v:#}");
            } else {
                let tokens: Vec<TokenInfo> = serde_json::from_value(v)?;
                let date =
                    |d: Option<i64>, none: &str| d.map(rfc3339).unwrap_or_else(|| none.into());
                let rows = tokens.into_iter().map(|t| {
                    vec![
                        t.id,
                        t.user,
                        t.scope,
                        rfc3339(t.created_at),
                        date(t.expires_at, "never"),
                        date(t.last_used_at, "-"),
                        t.description,
                    ]
                });
                table(
                    &[
                        "ID",
                        "USER",
                        "SCOPE",
                        "CREATED",
                        "EXPIRES",
                        "LAST USED",
                        "DESCRIPTION",
                    ],
                    rows,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            backend.run(Op::RevokeToken { id: id.clone() })?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A password from stdin (`--password-stdin`) or typed twice at the terminal without echo.
fn read_password(from_stdin: bool, what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if from_stdin {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\n', '\r']).to_owned();
        if p.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(p);
    }
    if !stdin.is_terminal() {
        bail!("standard input is not a terminal: pass --password-stdin and pipe the password");
    }
    let first = prompt_hidden(&format!("{what}: "))?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off (restored even on error).
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr/tcsetattr on our own stdin.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            bail!("cannot read terminal settings");
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restoring the settings read above.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Where operations run.
enum Backend {
    /// Directly on the database; the lock keeps a server from starting meanwhile.
    Offline {
        db: Arc<Db>,
        /// Every operation is recorded here, as the OS user who ran it.
        audit: std::sync::Mutex<crate::audit::AuditLog>,
        _lock: DataLock,
    },
    Remote(remote::Client),
}

impl Backend {
    fn open(target: &Target) -> anyhow::Result<Backend> {
        if let Some(server) = &target.server {
            return Ok(Backend::Remote(remote::Client::new(
                server,
                target.cacert.as_deref(),
            )?));
        }
        let data_dir = data_dir_of(target)?;
        crate::storage::create_private_dir(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let lock = DataLock::acquire(&data_dir).map_err(|e| match e {
            LockError::Held { .. } => {
                let url = crate::lock::read_holder(&data_dir.join("lock"))
                    .url
                    .unwrap_or_else(|| "URL".into());
                anyhow!(
                    "{e}: a server runs on this data directory, so manage it through its admin API: \
                     --server {url}, with HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD (or HPC_REGISTRY_TOKEN) set"
                )
            }
            other => other.into(),
        })?;
        let db =
            Db::open(&data_dir.join("meta.db")).context("cannot open the metadata database")?;
        // Opened before any change, so a damaged audit log stops the command, not its record.
        let audit = crate::audit::AuditLog::open(&data_dir, Arc::clone(&db))?;
        Ok(Backend::Offline {
            db,
            audit: std::sync::Mutex::new(audit),
            _lock: lock,
        })
    }

    fn run(&self, op: Op) -> anyhow::Result<Value> {
        match self {
            Backend::Offline { db, audit, .. } => {
                let result = manage::execute(db, &Caller::Local, op.clone());
                let record = match &result {
                    Ok(_) => crate::audit::ops::local_record(&op, "ok", None),
                    Err(e) => {
                        crate::audit::ops::local_record(&op, outcome_of(e), Some(e.to_string()))
                    }
                };
                audit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(vec![record])
                    .with_context(|| {
                        format!("{} ran, but its audit record was not written", op.name())
                    })?;
                Ok(result?)
            }
            Backend::Remote(client) => client.run(&op),
        }
    }
}

fn outcome_of(e: &manage::ManageError) -> &'static str {
    use manage::ManageError::*;
    match e {
        NotFound(_) => "not-found",
        Conflict(_) => "conflict",
        Invalid(_) => "invalid",
        Forbidden(_) => "denied",
        Meta(_) | Auth(_) => "error",
    }
}

/// The data directory offline commands work on: --data-dir, else the config's, else the default.
fn data_dir_of(target: &Target) -> anyhow::Result<PathBuf> {
    Ok(match (&target.data_dir, &target.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => Config::from_file(c)?.data_dir,
        (None, None) => Config::default().data_dir,
    })
}

/// Just enough HTTP client for the admin API: one request per connection, HTTP/1.1, optional TLS.
pub(crate) mod remote {
    use super::*;
    use axum::http::{header, Method, Request, Uri};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncRead, AsyncWrite};

    /// Where Debian (and most distributions) keep the system CA bundle.
    const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

    pub struct Client {
        uri: Uri,
        host: String,
        port: u16,
        tls: Option<tokio_rustls::TlsConnector>,
        authorization: String,
        runtime: tokio::runtime::Runtime,
    }

    impl Client {
        pub fn new(server: &str, cacert: Option<&Path>) -> anyhow::Result<Client> {
            let uri: Uri = server
                .parse()
                .with_context(|| format!("--server {server:?} is not a URL"))?;
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => bail!("--server must start with http:// or https://"),
            };
            let host = uri
                .host()
                .ok_or_else(|| anyhow!("--server {server:?} has no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = if https {
                Some(connector(cacert)?)
            } else {
                None
            };
            Ok(Client {
                uri,
                host,
                port,
                tls,
                authorization: authorization()?,
                runtime: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            })
        }

        /// `GET path` of the admin API, as JSON (errors carry the server's message).
        pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
            let (status, bytes) =
                self.runtime
                    .block_on(self.send(Method::GET, path, String::new()))?;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(value);
            }
            let message = value["errors"][0]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("GET {path}: {status}: {message}")
        }

        pub fn run(&self, op: &Op) -> anyhow::Result<Value> {
            let (method, path, body) = op.to_http();
            self.request(method, &path, body, op.name())
        }

        /// Any admin API call with a JSON answer; `what` names it in errors.
        pub fn request(
            &self,
            method: Method,
            path: &str,
            body: Option<Value>,
            what: &str,
        ) -> anyhow::Result<Value> {
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let (status, bytes) = self.runtime.block_on(self.send(method, path, body))?;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(value);
            }
            let message = value["errors"][0]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{what} {path}: {status}: {message}")
        }

        async fn send(
            &self,
            method: Method,
            path: &str,
            body: String,
        ) -> anyhow::Result<(axum::http::StatusCode, Bytes)> {
            let authority = self
                .uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| self.host.clone());
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, authority)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, &self.authorization)
                .body(Full::new(Bytes::from(body)))?;
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("cannot connect to {}", self.uri))?;
            match &self.tls {
                Some(connector) => {
                    let name = ServerName::try_from(self.host.clone())
                        .with_context(|| format!("{} is not a valid TLS server name", self.host))?;
                    let stream = connector.connect(name, tcp).await.with_context(|| {
                        format!("TLS handshake with {} failed (pass --cacert?)", self.uri)
                    })?;
                    exchange(stream, request).await
                }
                None => exchange(tcp, request).await,
            }
        }
    }

    async fn exchange<IO>(
        io: IO,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<(axum::http::StatusCode, Bytes)>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    fn connector(cacert: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
        crate::tls::install_provider();
        let path = cacert.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read CA certificates from {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("invalid PEM in {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The admin API credentials from the environment (never from the command line, where `ps`
    /// would show them).
    fn authorization() -> anyhow::Result<String> {
        use base64::Engine;
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("HPC_REGISTRY_TOKEN") {
            return Ok(format!("Bearer {token}"));
        }
        let Some(user) = var("HPC_REGISTRY_USER") else {
            bail!("set HPC_REGISTRY_USER and HPC_REGISTRY_PASSWORD (or HPC_REGISTRY_TOKEN) to use --server");
        };
        let password = match var("HPC_REGISTRY_PASSWORD") {
            Some(p) => p,
            None if std::io::stdin().is_terminal() => {
                super::prompt_hidden(&format!("password of {user}: "))?
            }
            None => bail!("set HPC_REGISTRY_PASSWORD (standard input is not a terminal)"),
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(format!("Basic {encoded}"))
    }
}

// ---------------------------------------------------------------------------------------------
// `hpc-registry admin prune|repo`: garbage collection, retention and deletes (src/lifecycle)
// ---------------------------------------------------------------------------------------------

/// `hpc-registry admin ...`: store maintenance.
#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
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
        command: RepoCommand,
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

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Delete a repository: tags, manifests (and their SIF artifacts), blob links. The bytes go
    /// at the first prune after the grace period.
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `admin prune|repo` command: through `--server`'s admin API, or offline on the data
/// directory (refused, naming the server, while a server holds it).
pub fn run_lifecycle(command: LifecycleCommand) -> anyhow::Result<()> {
    match command {
        LifecycleCommand::Audit(args) => audit::run(*args),
        LifecycleCommand::Storage(command) => storage::run(command),
        LifecycleCommand::Builds(args) => builds::run(args),
        LifecycleCommand::Prune {
            dry_run,
            json,
            target,
        } => {
            let report = match &target.server {
                Some(server) => remote::Client::new(server, target.cacert.as_deref())?.request(
                    axum::http::Method::POST,
                    &format!("/admin/prune?dry_run={dry_run}"),
                    None,
                    "prune",
                )?,
                None => offline_lifecycle(
                    &target,
                    ("admin.prune", Some(format!("dry_run={dry_run}"))),
                    move |pruner, registry| async move {
                        Ok(serde_json::to_value(pruner.run(&registry, dry_run).await?)?)
                    },
                )?,
            };
            print_prune_report(&report, json)
        }
        LifecycleCommand::Repo {
            command: RepoCommand::Delete { name, json },
            target,
        } => {
            crate::registry::names::RepositoryName::parse(&name)?;
            let deleted = match &target.server {
                Some(server) => remote::Client::new(server, target.cacert.as_deref())?.request(
                    axum::http::Method::DELETE,
                    &format!("/admin/repositories/{name}"),
                    None,
                    "repo delete",
                )?,
                None => offline_lifecycle(
                    &target,
                    ("repository.delete", Some(name.clone())),
                    move |pruner, registry| async move {
                        Ok(serde_json::to_value(
                            pruner.delete_repository(&registry, &name).await?,
                        )?)
                    },
                )?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&deleted)?);
            } else {
                eprintln!(
                    "deleted repository {} ({} manifests); its bytes go at the first prune after the grace period",
                    deleted["repository"].as_str().unwrap_or_default(),
                    deleted["manifests"]
                );
            }
            Ok(())
        }
    }
}

/// Runs `f` on the data directory under its lock (no server may run meanwhile), and records
/// `(action, reference)` in the audit trail as the OS user, like every offline change.
fn offline_lifecycle<F, Fut>(
    target: &Target,
    (action, reference): (&str, Option<String>),
    f: F,
) -> anyhow::Result<Value>
where
    F: FnOnce(Arc<crate::lifecycle::Pruner>, Arc<crate::registry::Registry>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let config = match &target.config {
        Some(c) => Config::from_file(c)?,
        None => Config::default(),
    };
    let Backend::Offline {
        db, _lock, audit, ..
    } = Backend::open(target)?
    else {
        bail!("internal: an offline backend was expected");
    };
    let data_dir = target.data_dir.clone().unwrap_or(config.data_dir.clone());
    let store = crate::storage::BlobStore::open(&data_dir)
        .with_context(|| format!("cannot open blob store in {}", data_dir.display()))?;
    let settings = crate::lifecycle::Settings::from_config(&config.gc, &config.retention)?;
    let pruner = Arc::new(crate::lifecycle::Pruner::new(settings, &data_dir));
    let registry = Arc::new(crate::registry::Registry::new(
        db,
        store,
        crate::registry::Limits::default(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(f(pruner, registry));
    let record = match &result {
        Ok(_) => crate::audit::ops::local_action(action, reference, "ok", None),
        Err(e) => crate::audit::ops::local_action(action, reference, "error", Some(e.to_string())),
    };
    audit
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .append(vec![record])
        .with_context(|| format!("{action} ran, but its audit record was not written"))?;
    result
}

fn print_prune_report(report: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let empty = Vec::new();
    let actions = report["actions"].as_array().unwrap_or(&empty);
    table(
        &["KIND", "REPOSITORY", "REFERENCE", "BYTES", "REASON"],
        actions.iter().map(|a| {
            vec![
                a["kind"].as_str().unwrap_or_default().to_owned(),
                a["repository"].as_str().unwrap_or("-").to_owned(),
                a["reference"].as_str().unwrap_or_default().to_owned(),
                a["bytes"].to_string(),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        }),
    );
    let verb = if report["dry_run"].as_bool() == Some(true) {
        "would free"
    } else {
        "freed"
    };
    eprintln!(
        "{} tags, {} manifests, {} SIFs, {} blobs, {} uploads; {verb} {} bytes ({} on disk) in {} ms",
        report["tags"],
        report["manifests"],
        report["sifs"],
        report["blobs"],
        report["uploads"],
        report["bytes_freed"],
        report["disk_bytes_freed"],
        report["duration_ms"]
    );
    Ok(())
}
