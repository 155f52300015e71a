//! How a client proves who it is, one `Authorization` value per request.
//!
//! MUNGE credentials are made fresh for every request (`munge -n`), because munged refuses a
//! credential the second time it sees it. Secrets never reach `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Where munged listens unless the site says otherwise.
pub const DEFAULT_MUNGE_SOCKET: &str = "/run/munge/munge.socket.2";

#[derive(Clone)]
pub enum Auth {
    /// No `Authorization` header.
    Anonymous,
    /// `Basic …` or `Bearer …`, the same for every request.
    Fixed(String),
    /// `MUNGE <credential>`, a new credential per request.
    Munge(Munge),
}

impl Auth {
    /// `Basic base64(user:password)`.
    pub fn basic(user: &str, password: &str) -> Auth {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Auth::Fixed(format!("Basic {encoded}"))
    }

    /// `Bearer TOKEN` (an access token or a `/token` bearer token).
    pub fn bearer(token: &str) -> Auth {
        Auth::Fixed(format!("Bearer {}", token.trim()))
    }

    /// The header value for the next request, if any.
    pub fn header(&self) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Auth::Anonymous => None,
            Auth::Fixed(v) => Some(v.clone()),
            Auth::Munge(m) => Some(format!("MUNGE {}", m.credential()?)),
        })
    }

    /// What kind of credential this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Anonymous => "no credentials",
            Auth::Fixed(v) if v.starts_with("Basic ") => "a password",
            Auth::Fixed(_) => "an access token",
            Auth::Munge(_) => "a MUNGE credential",
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret itself.
        f.write_str(self.kind())
    }
}

/// Makes MUNGE credentials with the local `munge` program (shipped with munged itself).
#[derive(Debug, Clone)]
pub struct Munge {
    pub program: PathBuf,
    pub socket: PathBuf,
}

impl Munge {
    /// The local munged, when its socket and the `munge` program are both there.
    pub fn detect(socket: Option<PathBuf>) -> Option<Munge> {
        let socket = socket.unwrap_or_else(|| PathBuf::from(DEFAULT_MUNGE_SOCKET));
        if !socket.exists() {
            return None;
        }
        let program = find_program("munge")?;
        Some(Munge { program, socket })
    }

    /// A fresh credential (no payload) for the calling process's uid.
    pub fn credential(&self) -> anyhow::Result<String> {
        let out = Command::new(&self.program)
            .arg("--no-input")
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        if !out.status.success() {
            bail!(
                "{} could not make a MUNGE credential: {}",
                self.program.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let credential = String::from_utf8(out.stdout).context("munge printed no text")?;
        Ok(credential.trim().to_owned())
    }
}

/// `name` on PATH, or in the sbin/bin directories a Slurm prolog (which has no PATH) relies on.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
