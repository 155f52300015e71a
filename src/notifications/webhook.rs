//! The webhook channel: one CloudEvents 1.0 event in structured mode (a JSON object with the
//! context attributes and `data`), POSTed to the site's receiver and signed with HMAC-SHA256.
//!
//! Signature: `X-Hpc-Registry-Timestamp: <unix seconds of this attempt>` and
//! `X-Hpc-Registry-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<exact body bytes>")>`.
//! A receiver recomputes it over the bytes it got, compares in constant time, and refuses a
//! timestamp far from its clock (a replayed request). The event `id` is the outbox row's: a
//! retry, or a re-send after a crash, carries the same id, so a receiver drops duplicates by it.
//! Any 2xx answer is a delivery; anything else (or no answer) is retried.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::message::Notice;
use super::Secret;
use crate::config::WebhookConfig;
use crate::meta::OutboxRow;

pub const SIGNATURE_HEADER: &str = "x-hpc-registry-signature";
pub const TIMESTAMP_HEADER: &str = "x-hpc-registry-timestamp";
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The CloudEvents `type` of a ready SIF; a failure is [`TYPE_FAILED`].
pub const TYPE_READY: &str = "org.hpc-registry.sif.ready";
pub const TYPE_FAILED: &str = "org.hpc-registry.sif.failed";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("[notifications.webhook] url {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("[notifications.webhook]: {0}")]
    Client(String),
}

/// The site's receiver, ready to POST to.
pub struct Webhook {
    url: reqwest::Url,
    key: Secret,
    http: reqwest::Client,
    /// A whole exchange is bounded, not only each read: a receiver that trickles bytes must not
    /// hold the outbox.
    timeout: Duration,
}

impl Webhook {
    pub fn new(config: &WebhookConfig, key: Secret) -> Result<Webhook, WebhookError> {
        let url = reqwest::Url::parse(&config.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| WebhookError::Url(config.url.clone()))?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = crate::client::async_http_client(
            url.scheme() == "https",
            config.ca_file.as_deref(),
            crate::client::Timeouts {
                connect: timeout,
                read: timeout,
            },
        )
        .map_err(|e| WebhookError::Client(format!("{e:#}")))?;
        Ok(Webhook {
            url,
            key,
            http,
            timeout,
        })
    }

    /// POSTs the event of `row`; `Err` says why it was not delivered (no secret in it).
    pub async fn deliver(
        &self,
        row: &OutboxRow,
        notice: &Notice,
        source: &str,
    ) -> Result<(), String> {
        let body = event_body(row, notice, source);
        let timestamp = crate::meta::now();
        let signature = sign(self.key.expose(), timestamp, &body);
        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// The innermost cause of a failed exchange, in one line.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "the receiver did not answer in time".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if e.is_connect() {
        format!("cannot connect to the receiver: {cause}")
    } else {
        format!("the POST failed: {cause}")
    }
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The CloudEvents structured-mode JSON of `row`.
pub fn event_body(row: &OutboxRow, notice: &Notice, source: &str) -> Vec<u8> {
    let kind = if notice.ready {
        TYPE_READY
    } else {
        TYPE_FAILED
    };
    let event = serde_json::json!({
        "specversion": "1.0",
        "id": row.event_id,
        "source": source,
        "type": kind,
        "subject": notice.reference,
        "time": crate::timefmt::rfc3339(row.created_at),
        "datacontenttype": "application/json",
        "data": {
            "repository": notice.facts.repository,
            "tag": notice.facts.tag,
            "reference": notice.reference,
            "platform": notice.facts.platform,
            "manifest_digest": notice.facts.manifest_digest,
            "sif_digest": notice.facts.sif_digest,
            "sif_size": notice.facts.sif_size,
            "reason": notice.facts.reason,
            "user": row.user,
            "run": notice.run_line,
            "pull": notice.pull_line,
        },
    });
    // A `Value` always serialises.
    serde_json::to_vec(&event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as `timestamp.body`.
        let sig = sign(b"Jefe", 1_700_000_000, b"{}");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(
            sig,
            sign(b"Jefe", 1_700_000_001, b"{}"),
            "the timestamp is signed"
        );
        assert_ne!(sig, sign(b"other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn the_event_is_cloudevents_1_0_structured_with_a_stable_id() {
        let row = super::super::message::tests_support::row("ready");
        let notice = Notice::from_row(&row, "reg", Some("1.sif".into()));
        let v: serde_json::Value =
            serde_json::from_slice(&event_body(&row, &notice, "https://reg/")).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["type"], TYPE_READY);
        assert_eq!(v["source"], "https://reg/");
        assert_eq!(v["subject"], "alice/tool:1");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["sif_digest"], "sha256:s");
        assert_eq!(v["data"]["sif_size"], 4096);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
