//! What a request did, as the code that did it names it: an action and its subjects.
//!
//! Handlers (and authentication, for logins and their failures) emit an [`Event`] while they
//! work; the HTTP edge adds only what every request has — who, from where, with which client,
//! and the status it answered ([`RequestContext`]) — and writes the pair down as one
//! [`Record`] with [`Event::record`]. No HTTP types here: the edge hands plain values over.

use super::{outcome_of_status, Record};
use crate::auth::Principal;
use crate::names::Digest;

/// A manifest, tag or blob action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryAction {
    /// A manifest read (`GET`).
    ManifestPull,
    /// A manifest looked at (`HEAD`: containerd resolves a tag so, then pulls by digest).
    ManifestHead,
    /// A manifest pushed by digest.
    ManifestPush,
    /// A manifest pushed under a tag.
    TagPush,
    /// A manifest deleted by digest.
    ManifestDelete,
    /// A tag deleted.
    TagDelete,
    /// A blob deleted.
    BlobDelete,
}

impl RepositoryAction {
    /// The record's `action`.
    pub fn name(self) -> &'static str {
        match self {
            RepositoryAction::ManifestPull => "manifest.pull",
            RepositoryAction::ManifestHead => "manifest.head",
            RepositoryAction::ManifestPush => "manifest.push",
            RepositoryAction::TagPush => "tag.push",
            RepositoryAction::ManifestDelete => "manifest.delete",
            RepositoryAction::TagDelete => "tag.delete",
            RepositoryAction::BlobDelete => "blob.delete",
        }
    }
}

/// One audited thing a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A handler panicked (whatever the route: it is a bug, and the trail must show it).
    Panic { message: String },
    /// Authentication failed: the user name tried (if any), why, and the kind of credential
    /// tried (`password`, `token`, `bearer`, `munge`, `other`; `None` without one).
    AuthFailure {
        user: Option<String>,
        why: String,
        scheme: Option<&'static str>,
    },
    /// `/token`: a login, which issued a token or not (`scheme` as for a failure).
    TokenLogin {
        issued: bool,
        scheme: Option<&'static str>,
    },
    /// An authenticated admin API call's login, recorded beside what it did (never for a 401).
    AdminLogin,
    /// An admin API call: its action and object (`reference` `None`: the request line).
    Admin {
        action: String,
        repository: Option<String>,
        reference: Option<String>,
    },
    /// A manifest, tag or blob action: the repository and reference as the request named them
    /// (validated or not), the digest acted on when known, and the manifest's bytes.
    Repository {
        action: RepositoryAction,
        repository: String,
        reference: String,
        digest: Option<String>,
        bytes: Option<u64>,
    },
    /// A SIF (or its squashfs partition) served or refused; `digest` and `bytes` are those of
    /// what was served (the SIF's own digest, not the image's).
    SifFetch {
        repository: Option<String>,
        reference: String,
        digest: Option<String>,
        bytes: Option<u64>,
        squashfs: bool,
        /// The enroot image rather than the SIF.
        enroot: bool,
    },
}

/// What the HTTP edge knows of every request: who, from where, with which client, and what it
/// answered. Borrowed for the moment a record is made.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub principal: Option<&'a Principal>,
    pub client: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a str>,
    pub slurm_job_id: Option<&'a str>,
}

impl Event {
    /// A [`Event::Repository`] for `reference` as the request named it; its digest is the
    /// reference's own when that is one (a handler that learns the digest sets it later).
    pub fn repository(
        action: RepositoryAction,
        repository: &str,
        reference: &str,
        bytes: Option<u64>,
    ) -> Event {
        Event::Repository {
            action,
            repository: repository.to_owned(),
            reference: reference.to_owned(),
            digest: Digest::parse(reference).ok().map(|d| d.as_str().to_owned()),
            bytes,
        }
    }

    /// Completes a repository or SIF event with what was served: its digest, and its size when
    /// given.
    pub fn served(&mut self, served: &str, size: Option<u64>) {
        if let Event::Repository { digest, bytes, .. } | Event::SifFetch { digest, bytes, .. } =
            self
        {
            *digest = Some(served.to_owned());
            if size.is_some() {
                *bytes = size;
            }
        }
    }

    /// Whether this event makes a record for a request answered with `status`.
    pub fn is_recorded(&self, status: u16) -> bool {
        !matches!(self, Event::AdminLogin) || status != 401
    }

    /// The record of this event, with what every record carries (status, client, agent, job,
    /// who).
    pub fn record(&self, ctx: &RequestContext) -> Record {
        let outcome = match self {
            Event::AdminLogin => "ok",
            _ => outcome_of_status(ctx.status),
        };
        let mut r = Record::new(self.action(), outcome);
        r.status = Some(ctx.status);
        r.client = ctx.client.map(|c| c.to_string());
        r.user_agent = ctx.user_agent.map(str::to_owned);
        r.slurm_job_id = ctx.slurm_job_id.map(str::to_owned);
        if let Some(p) = ctx.principal {
            r.user = p.user.clone();
            r.uid = p.uid;
            r.auth = Some(p.method.as_str().to_owned());
        }
        match self {
            Event::Panic { message } => {
                r.reference = Some(format!("{} {}", ctx.method, ctx.path));
                r.detail = Some(message.clone());
            }
            Event::AuthFailure { user, why, scheme } => {
                r.user = user.clone();
                r.auth = scheme.map(str::to_owned);
                r.detail = Some(why.clone());
                r.reference = Some(ctx.path.chars().take(256).collect());
            }
            Event::TokenLogin { issued, scheme } => {
                if !issued {
                    r.auth = scheme.map(str::to_owned);
                }
            }
            Event::AdminLogin => r.reference = Some(ctx.path.to_owned()),
            Event::Admin {
                repository,
                reference,
                ..
            } => {
                r.repository = repository.clone();
                r.reference = repository.is_none().then(|| {
                    reference
                        .clone()
                        .unwrap_or_else(|| format!("{} {}", ctx.method, ctx.path))
                });
            }
            Event::Repository {
                repository,
                reference,
                digest,
                bytes,
                ..
            } => {
                r.repository = Some(repository.clone());
                r.reference = Some(reference.clone());
                r.digest = digest.clone();
                r.bytes = *bytes;
            }
            Event::SifFetch {
                repository,
                reference,
                digest,
                bytes,
                squashfs,
                enroot,
            } => {
                r.repository = repository.clone();
                r.reference = Some(reference.chars().take(256).collect());
                r.digest = digest.clone();
                r.bytes = *bytes;
                if *squashfs {
                    r.detail = Some("squashfs partition".into());
                }
                if *enroot {
                    r.detail = Some("enroot image".into());
                }
            }
        }
        r
    }

    fn action(&self) -> &str {
        match self {
            Event::Panic { .. } => "request.panic",
            Event::AuthFailure { .. } | Event::TokenLogin { issued: false, .. } => "auth.failure",
            Event::TokenLogin { issued: true, .. } | Event::AdminLogin => "auth.success",
            Event::Admin { action, .. } => action,
            Event::Repository { action, .. } => action.name(),
            Event::SifFetch { .. } => "sif.fetch",
        }
    }
}
