//! Telling the user who pushed an image that its SIF is ready, or why its build failed: by mail
//! through the site's SMTP relay ([`mail`]) and/or by a signed CloudEvents webhook ([`webhook`]).
//!
//! Both are opt-in twice: the site enables a channel with its `[notifications.mail]` /
//! `[notifications.webhook]` table, and each user chooses theirs (`user mod NAME --notify
//! mail|webhook|both|none`, mail also needing `--email`). The farm writes one row per chosen
//! channel into the durable outbox (`meta::enqueue_build_outcome`) in the very transaction that
//! marks the build ready or failed for good; [`Notifier::run`] delivers due rows, retrying
//! failures with exponential back-off and jitter ([`backoff`]) until `max_attempts`, after which
//! the row stays `failed` with its last error (`hpc-registry admin notifications --failed`)
//! until an admin sends it again ([`retry`], `admin notifications retry ID`).
//! A row for a channel the site does not enable is marked `skipped`, never sent. Rows survive
//! restarts: delivery is at least once, each event keeping its id.
//!
//! Secrets (the SMTP password, the webhook key) are read once from their files into [`Secret`],
//! whose `Debug` shows nothing; errors, logs and the outbox's `last_error` never carry them.

pub mod backoff;
pub mod mail;
pub mod message;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use self::backoff::RetryPolicy;
use self::mail::Mailer;
use self::message::Notice;
use self::webhook::Webhook;
use crate::config::NotificationsConfig;
use crate::farm::Farm;
use crate::meta::{self, OutboxRow, OutboxState, CHANNEL_MAIL, CHANNEL_WEBHOOK};

/// How often the outbox is looked at for due rows.
const POLL: Duration = Duration::from_secs(1);
/// Rows handled per look.
const BATCH: i64 = 32;

/// A secret read from a file: its first line. `Debug` never shows it.
pub struct Secret(String);

impl Secret {
    /// The first line of `path` (`what` names the setting in errors); empty is an error.
    pub fn from_file(path: &Path, what: &str) -> anyhow::Result<Secret> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{what}: cannot read {}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            anyhow::bail!("{what}: {} is empty", path.display());
        }
        Ok(Secret(line.to_owned()))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn expose_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The site's channels and retry policy, and the farm whose outbox they drain.
pub struct Notifier {
    farm: Arc<Farm>,
    mailer: Option<Mailer>,
    webhook: Option<Webhook>,
    policy: RetryPolicy,
    /// `registry.example.org[:port]`, for `oras://` lines.
    host: String,
    /// The CloudEvents `source`: the registry's public URL.
    source: String,
}

impl Notifier {
    /// Builds the channels `config` enables; `listen_url` stands in for an unset `public_url`.
    /// A secret file that cannot be read, or a malformed setting, is an error: the server does
    /// not start with notifications half set up.
    pub fn new(
        farm: Arc<Farm>,
        config: &NotificationsConfig,
        listen_url: &str,
    ) -> anyhow::Result<Notifier> {
        let source = config
            .public_url
            .clone()
            .unwrap_or_else(|| listen_url.to_owned());
        let parsed = reqwest::Url::parse(&source)
            .ok()
            .filter(|u| u.host_str().is_some())
            .with_context(|| {
                format!("[notifications] public_url {source:?} is not a URL with a host")
            })?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => unreachable!("filtered above"),
        };
        let mailer = match &config.mail {
            Some(m) => {
                let password = m
                    .password_file
                    .as_deref()
                    .map(|p| Secret::from_file(p, "[notifications.mail] password_file"))
                    .transpose()?;
                Some(Mailer::new(m, password)?)
            }
            None => None,
        };
        let webhook = match &config.webhook {
            Some(w) => {
                let key = Secret::from_file(&w.secret_file, "[notifications.webhook] secret_file")?;
                Some(Webhook::new(w, key)?)
            }
            None => None,
        };
        Ok(Notifier {
            farm,
            mailer,
            webhook,
            policy: RetryPolicy::from_config(config),
            host,
            source,
        })
    }

    /// Which channels the site enables, for the start-up log line.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.mailer.is_some() {
            c.push(CHANNEL_MAIL);
        }
        if self.webhook.is_some() {
            c.push(CHANNEL_WEBHOOK);
        }
        c
    }

    /// Delivers due outbox rows until the task is dropped.
    pub async fn run(self) {
        describe_metrics();
        loop {
            match self.drain_once().await {
                Ok(0) => tokio::time::sleep(POLL).await,
                // More may be due right away.
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("notification outbox: {e}");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Handles one batch of due rows; returns how many.
    async fn drain_once(&self) -> Result<usize, meta::MetaError> {
        let due = self
            .farm
            .db
            .read(|c| meta::due_notifications(c, meta::now(), BATCH))
            .await?;
        for row in &due {
            self.handle(row).await?;
        }
        Ok(due.len())
    }

    async fn handle(&self, row: &OutboxRow) -> Result<(), meta::MetaError> {
        let id = row.id;
        let enabled = match row.channel.as_str() {
            CHANNEL_MAIL => self.mailer.is_some(),
            CHANNEL_WEBHOOK => self.webhook.is_some(),
            _ => false,
        };
        if !enabled {
            let reason = format!("the site does not enable {} notifications", row.channel);
            metrics::counter!("hpc_registry_notifications_total", "channel" => channel_label(&row.channel), "outcome" => "skipped").increment(1);
            self.farm
                .db
                .write(move |tx| meta::skip_notification(tx, id, &reason))
                .await?;
            return Ok(());
        }
        let notice = Notice::from_row(row, &self.host, self.oras_tag(row));
        let result = match (row.channel.as_str(), &self.mailer, &self.webhook) {
            (CHANNEL_MAIL, Some(m), _) => m.deliver(row, &notice).await,
            (CHANNEL_WEBHOOK, _, Some(w)) => w.deliver(row, &notice, &self.source).await,
            _ => Err("no such channel".into()),
        };
        let attempt = row.attempts as u32 + 1;
        let channel = channel_label(&row.channel);
        let (error, retry_at) = match result {
            Ok(()) => {
                tracing::info!(id, event = %row.event_id, channel, user = %row.user, image = %notice.reference, attempt, "notification delivered");
                metrics::counter!("hpc_registry_notifications_total", "channel" => channel, "outcome" => "delivered").increment(1);
                (None, None)
            }
            Err(e) => {
                let retry_at = self
                    .policy
                    .delay_after(attempt, backoff::jitter())
                    .map(|secs| meta::now() + secs as i64);
                let outcome = if retry_at.is_some() {
                    "retry"
                } else {
                    "failed"
                };
                metrics::counter!("hpc_registry_notifications_total", "channel" => channel, "outcome" => outcome).increment(1);
                match retry_at {
                    Some(at) => {
                        tracing::warn!(id, event = %row.event_id, channel, user = %row.user, attempt, retry_in_secs = at - meta::now(), "notification not delivered: {e}")
                    }
                    None => {
                        tracing::error!(id, event = %row.event_id, channel, user = %row.user, attempt, "notification failed for good: {e}")
                    }
                }
                (Some(e), retry_at)
            }
        };
        self.farm
            .db
            .write(move |tx| meta::record_attempt(tx, id, error.as_deref(), retry_at))
            .await?;
        Ok(())
    }

    /// The ORAS tag the farm publishes a ready SIF of a tagged image under.
    fn oras_tag(&self, row: &OutboxRow) -> Option<String> {
        row.tag
            .as_deref()
            .map(|t| crate::farm::oras::derived_tag(&self.farm, t, &row.platform))
    }
}

/// Only the two known channel names become metric labels.
fn channel_label(channel: &str) -> &'static str {
    match channel {
        CHANNEL_MAIL => CHANNEL_MAIL,
        CHANNEL_WEBHOOK => CHANNEL_WEBHOOK,
        _ => "other",
    }
}

fn describe_metrics() {
    metrics::describe_counter!(
        "hpc_registry_notifications_total",
        "Notification delivery attempts, by channel (mail, webhook) and outcome (delivered, retry, failed, skipped)."
    );
}

/// The outbox for `admin notifications`: newest first, optionally only rows in `state`.
pub async fn list(
    farm: &Farm,
    state: Option<OutboxState>,
    limit: i64,
) -> Result<Vec<OutboxRow>, meta::MetaError> {
    farm.db
        .read(move |c| meta::list_notifications(c, state, limit))
        .await
}

/// Queues failed or skipped notification `id` again (`admin notifications retry ID`).
pub async fn retry(farm: &Farm, id: i64) -> Result<meta::Retried, meta::MetaError> {
    let retried = farm
        .db
        .write(move |tx| meta::retry_notification(tx, id))
        .await?;
    if let meta::Retried::Requeued(row) = &retried {
        tracing::info!(
            id,
            channel = %row.channel,
            user = %row.user,
            "notification queued again by an administrator"
        );
    }
    Ok(retried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_first_line_of_its_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "hunter2\nignored\n").unwrap();
        let s = Secret::from_file(&p, "x").unwrap();
        assert_eq!(s.expose_str(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p, "x").is_err());
    }
}
