//! `[notifications]`: telling the pusher of an image when its SIF is ready or failed, by mail
//! through an SMTP relay and/or by a signed webhook. A channel is on for the site when its
//! table is present; each user opts in (`hpc-registry user mod NAME --notify …`). Secrets (the
//! SMTP password, the webhook's HMAC key) are read from files, never written here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The registry's URL as users reach it (`https://registry.example.org`): the host of the
    /// `apptainer pull oras://…` line and the webhook events' `source`. Unset: the listen address.
    pub public_url: Option<String>,
    /// Attempts per notification before it is kept as `failed` (`admin notifications --failed`).
    pub max_attempts: u32,
    /// Wait before the first retry; each further retry waits twice as long (with jitter).
    pub retry_base_secs: u64,
    /// Longest wait between two attempts.
    pub retry_max_secs: u64,
    /// `[notifications.mail]`: absent, no mail is sent.
    pub mail: Option<MailConfig>,
    /// `[notifications.webhook]`: absent, no webhook is called.
    pub webhook: Option<WebhookConfig>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            public_url: None,
            max_attempts: 8,
            retry_base_secs: 30,
            retry_max_secs: 3600,
            mail: None,
            webhook: None,
        }
    }
}

/// The SMTP relay mail goes through (never a local sendmail).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// The relay's host name (also the name its TLS certificate must carry).
    pub relay: String,
    /// Default: 25 without TLS, 587 with STARTTLS, 465 with TLS.
    pub port: Option<u16>,
    /// `none`, `starttls` (required, not opportunistic) or `tls` (TLS from the first byte).
    pub tls: SmtpTls,
    /// PEM CA certificates the relay's certificate must chain to; default: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user name; with `password_file`.
    pub username: Option<String>,
    /// A file whose first line is the SMTP AUTH password.
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `HPC registry <registry@example.org>`.
    pub from: String,
    /// One SMTP exchange (connect to QUIT) may take this long.
    pub timeout_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            relay: String::new(),
            port: None,
            tls: SmtpTls::Starttls,
            ca_file: None,
            username: None,
            password_file: None,
            from: String::new(),
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

/// The site's webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (or `http://…`) URL the events are POSTed to.
    pub url: String,
    /// A file whose first line is the HMAC-SHA256 key the events are signed with.
    pub secret_file: PathBuf,
    /// PEM CA certificates the receiver's certificate must chain to; default: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// One POST (connect to response) may take this long.
    pub timeout_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret_file: PathBuf::new(),
            ca_file: None,
            timeout_secs: 10,
        }
    }
}
