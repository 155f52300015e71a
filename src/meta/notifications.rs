//! SQL of notifications (`src/notifications`): who pushed each manifest, each user's e-mail
//! address and channels, and the durable outbox of "your SIF is ready/failed" messages.
//!
//! [`enqueue_build_outcome`] runs inside the transaction that marks a build job ready or failed
//! for good (`jobs::complete_job`, `jobs::fail_job`), so an event is never lost between the
//! state change and its notification, whatever crashes. Delivery is at least once: a row is
//! marked delivered after the relay or receiver accepted it, so a crash in between sends it
//! again, under the same `event_id`.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{now, Result};

/// Longest build-log tail copied into a failure notification.
const LOG_TAIL_BYTES: usize = 4096;

/// What a user asked to be told by, stored as `users.notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyChannels {
    /// Nothing (the default: notifications are opt-in).
    #[default]
    None,
    Mail,
    Webhook,
    Both,
}

impl NotifyChannels {
    pub const NAMES: &'static str = "mail, webhook, both, none";

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannels::None => "none",
            NotifyChannels::Mail => "mail",
            NotifyChannels::Webhook => "webhook",
            NotifyChannels::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyChannels> {
        [
            NotifyChannels::None,
            NotifyChannels::Mail,
            NotifyChannels::Webhook,
            NotifyChannels::Both,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    pub fn mail(self) -> bool {
        matches!(self, NotifyChannels::Mail | NotifyChannels::Both)
    }

    pub fn webhook(self) -> bool {
        matches!(self, NotifyChannels::Webhook | NotifyChannels::Both)
    }
}

/// A user's notification settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserContact {
    pub email: Option<String>,
    pub notify: NotifyChannels,
}

/// `users.email` and `users.notify` of `name`; `None` if there is no such user.
pub fn user_contact(conn: &Connection, name: &str) -> Result<Option<UserContact>> {
    Ok(conn
        .prepare_cached("SELECT email, notify FROM users WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(UserContact {
                email: r.get(0)?,
                notify: NotifyChannels::parse(&r.get::<_, String>(1)?).unwrap_or_default(),
            })
        })
        .optional()?)
}

/// Sets a user's e-mail address (`None` removes it); false if there is no such user.
pub fn set_user_email(tx: &Transaction, name: &str, email: Option<&str>) -> Result<bool> {
    Ok(tx
        .prepare_cached("UPDATE users SET email = ?2 WHERE name = ?1")?
        .execute(params![name, email])?
        == 1)
}

/// Sets the channels a user is told by; false if there is no such user.
pub fn set_user_notify(tx: &Transaction, name: &str, notify: NotifyChannels) -> Result<bool> {
    Ok(tx
        .prepare_cached("UPDATE users SET notify = ?2 WHERE name = ?1")?
        .execute(params![name, notify.as_str()])?
        == 1)
}

/// Records `user` as the one who pushed manifest `digest` into `repository` (the latest push
/// wins). Called in the push's own transaction, after the manifest row exists.
pub fn record_pusher(tx: &Transaction, repository: &str, digest: &str, user: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO manifest_pushers (repository_id, digest, user_name, pushed_at)
         SELECT m.repository_id, m.digest, ?3, ?4 FROM manifests m
         JOIN repositories r ON r.id = m.repository_id WHERE r.name = ?1 AND m.digest = ?2
         ON CONFLICT (repository_id, digest) DO UPDATE SET user_name = excluded.user_name,
             pushed_at = excluded.pushed_at",
    )?
    .execute(params![repository, digest, user, now()])?;
    Ok(())
}

/// Who pushed image `digest` of `repository`: its own pusher, else the pusher of the newest
/// index listing it (a platform image of a multi-arch push).
pub fn pusher_of(conn: &Connection, repository: &str, digest: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT p.user_name FROM manifest_pushers p JOIN repositories r ON r.id = p.repository_id
             WHERE r.name = ?1 AND (p.digest = ?2 OR p.digest IN (
                 SELECT mr.manifest_digest FROM manifest_references mr
                 WHERE mr.repository_id = r.id AND mr.target_digest = ?2))
             ORDER BY CASE WHEN p.digest = ?2 THEN 0 ELSE 1 END, p.pushed_at DESC LIMIT 1",
        )?
        .query_row([repository, digest], |r| r.get(0))
        .optional()?)
}

/// How a build ended, as a notification tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOutcome {
    Ready,
    Failed,
}

impl BuildOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildOutcome::Ready => "ready",
            BuildOutcome::Failed => "failed",
        }
    }
}

/// A delivery channel of one outbox row.
pub const CHANNEL_MAIL: &str = "mail";
pub const CHANNEL_WEBHOOK: &str = "webhook";

/// Queues one notification per channel the pusher of job `job_id`'s image opted into (mail only
/// with an address). Runs in the transaction that records the outcome. Returns how many rows.
pub fn enqueue_build_outcome(
    tx: &Transaction,
    job_id: i64,
    outcome: BuildOutcome,
) -> Result<usize> {
    struct Facts {
        repository: String,
        manifest_digest: String,
        platform: String,
        sif_digest: Option<String>,
        failure: Option<String>,
        log: Option<String>,
    }
    let facts = tx
        .prepare_cached(
            "SELECT repository, manifest_digest, platform, sif_digest, failure, log
             FROM build_jobs WHERE id = ?1",
        )?
        .query_row([job_id], |r| {
            Ok(Facts {
                repository: r.get(0)?,
                manifest_digest: r.get(1)?,
                platform: r.get(2)?,
                sif_digest: r.get(3)?,
                failure: r.get(4)?,
                log: r.get(5)?,
            })
        })
        .optional()?;
    let Some(facts) = facts else {
        return Ok(0);
    };
    let Some(user) = pusher_of(tx, &facts.repository, &facts.manifest_digest)? else {
        return Ok(0);
    };
    let Some(contact) = user_contact(tx, &user)? else {
        return Ok(0);
    };
    let mut channels: Vec<(&str, Option<&str>)> = Vec::new();
    if contact.notify.mail() {
        if let Some(address) = contact.email.as_deref() {
            channels.push((CHANNEL_MAIL, Some(address)));
        }
    }
    if contact.notify.webhook() {
        channels.push((CHANNEL_WEBHOOK, None));
    }
    if channels.is_empty() {
        return Ok(0);
    }
    let tag = newest_tag(tx, &facts.repository, &facts.manifest_digest)?;
    let sif_size: Option<i64> = match &facts.sif_digest {
        Some(d) => tx
            .prepare_cached("SELECT size FROM sifs WHERE digest = ?1")?
            .query_row([d], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let (reason, log_tail) = match outcome {
        BuildOutcome::Ready => (None, None),
        BuildOutcome::Failed => (facts.failure, facts.log.as_deref().map(log_tail)),
    };
    let sif_digest = match outcome {
        BuildOutcome::Ready => facts.sif_digest,
        BuildOutcome::Failed => None,
    };
    // One event, one id, whatever the number of channels: the webhook's CloudEvents `id` and the
    // mail's Message-ID, stable over retries.
    let event_id = uuid::Uuid::new_v4().to_string();
    let t = now();
    for (channel, address) in &channels {
        tx.prepare_cached(
            "INSERT INTO notification_outbox (event_id, channel, event, user_name, address, job_id,
                 repository, tag, manifest_digest, platform, sif_digest, sif_size, reason, log_tail,
                 state, attempts, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'pending', 0, ?15, ?15)",
        )?
        .execute(params![
            event_id,
            channel,
            outcome.as_str(),
            user,
            address,
            job_id,
            facts.repository,
            tag,
            facts.manifest_digest,
            facts.platform,
            sif_digest,
            sif_size,
            reason,
            log_tail,
            t
        ])?;
    }
    Ok(channels.len())
}

/// The newest client tag of `repository` naming `digest` or an index that lists it.
fn newest_tag(conn: &Connection, repository: &str, digest: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ?1 AND t.origin = 'client' AND (t.digest = ?2 OR t.digest IN (
                 SELECT mr.manifest_digest FROM manifest_references mr
                 WHERE mr.repository_id = r.id AND mr.target_digest = ?2))
             ORDER BY t.pushed_at DESC, t.name LIMIT 1",
        )?
        .query_row([repository, digest], |r| r.get(0))
        .optional()?)
}

/// The last [`LOG_TAIL_BYTES`] of a build log, cut at a line start where one is near.
fn log_tail(log: &str) -> String {
    if log.len() <= LOG_TAIL_BYTES {
        return log.to_owned();
    }
    let mut start = log.len() - LOG_TAIL_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let tail = &log[start..];
    match tail.find('\n') {
        Some(i) if i + 1 < tail.len() => tail[i + 1..].to_owned(),
        _ => tail.to_owned(),
    }
}

/// The state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting for its (next) attempt.
    Pending,
    Delivered,
    /// Gave up after the last attempt (`last_error` says why).
    Failed,
    /// The site does not enable the channel: never attempted.
    Skipped,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
            OutboxState::Skipped => "skipped",
        }
    }

    pub fn from_name(s: &str) -> Option<OutboxState> {
        [
            OutboxState::Pending,
            OutboxState::Delivered,
            OutboxState::Failed,
            OutboxState::Skipped,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// One notification of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub channel: String,
    /// `ready` or `failed`.
    pub event: String,
    pub user: String,
    pub address: Option<String>,
    pub job_id: i64,
    pub repository: String,
    pub tag: Option<String>,
    pub manifest_digest: String,
    pub platform: String,
    pub sif_digest: Option<String>,
    pub sif_size: Option<i64>,
    pub reason: Option<String>,
    #[serde(skip)]
    pub log_tail: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const OUTBOX_COLUMNS: &str = "id, event_id, channel, event, user_name, address, job_id, repository,
     tag, manifest_digest, platform, sif_digest, sif_size, reason, log_tail, state, attempts,
     next_attempt_at, last_error, created_at, finished_at";

fn outbox_row(r: &Row) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        event_id: r.get(1)?,
        channel: r.get(2)?,
        event: r.get(3)?,
        user: r.get(4)?,
        address: r.get(5)?,
        job_id: r.get(6)?,
        repository: r.get(7)?,
        tag: r.get(8)?,
        manifest_digest: r.get(9)?,
        platform: r.get(10)?,
        sif_digest: r.get(11)?,
        sif_size: r.get(12)?,
        reason: r.get(13)?,
        log_tail: r.get(14)?,
        state: r.get(15)?,
        attempts: r.get(16)?,
        next_attempt_at: r.get(17)?,
        last_error: r.get(18)?,
        created_at: r.get(19)?,
        finished_at: r.get(20)?,
    })
}

/// Pending rows due by `at`, oldest first.
pub fn due_notifications(conn: &Connection, at: i64, limit: i64) -> Result<Vec<OutboxRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notification_outbox
             WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
        ))?
        .query_map(params![at, limit], outbox_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Rows, newest first, optionally only those in `state`.
pub fn list_notifications(
    conn: &Connection,
    state: Option<OutboxState>,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notification_outbox WHERE (?1 IS NULL OR state = ?1)
             ORDER BY id DESC LIMIT ?2"
        ))?
        .query_map(params![state.map(OutboxState::as_str), limit], outbox_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Records one attempt of pending row `id`: `error` `None` is a delivery; otherwise the row
/// waits until `retry_at`, or, with `retry_at` `None`, has failed for good. `Skipped` rows are
/// [`skip_notification`]'s.
pub fn record_attempt(
    tx: &Transaction,
    id: i64,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> Result<bool> {
    let t = now();
    let (state, next, finished) = match (error, retry_at) {
        (None, _) => (OutboxState::Delivered, t, Some(t)),
        (Some(_), Some(at)) => (OutboxState::Pending, at, None),
        (Some(_), None) => (OutboxState::Failed, t, Some(t)),
    };
    Ok(tx
        .prepare_cached(
            "UPDATE notification_outbox SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                 last_error = COALESCE(?4, last_error), finished_at = ?5
             WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, state.as_str(), next, error, finished])?
        == 1)
}

/// Marks pending row `id` skipped with `reason` (its channel is off on this site).
pub fn skip_notification(tx: &Transaction, id: i64, reason: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "UPDATE notification_outbox SET state = 'skipped', last_error = ?2, finished_at = ?3
             WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, reason, now()])?
        == 1)
}

/// What [`retry_notification`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Pending again, due now, with a fresh count of attempts.
    Requeued(Box<OutboxRow>),
    NoSuchRow,
    /// Only failed and skipped rows are sent again: a pending one is on its way, a delivered
    /// one arrived (sending it again would deliver it twice).
    NotRetryable(String),
}

/// Queues failed or skipped row `id` again (an admin fixed the relay, the receiver or the
/// address). A mail row takes the user's address as it is now: the usual fix for a refused
/// address is `user mod NAME --email`. The event keeps its id, so a receiver that did get an
/// earlier attempt can tell it is the same event.
pub fn retry_notification(tx: &Transaction, id: i64) -> Result<Retried> {
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM notification_outbox WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match state.as_deref() {
        None => return Ok(Retried::NoSuchRow),
        Some("failed" | "skipped") => {}
        Some(other) => return Ok(Retried::NotRetryable(other.to_owned())),
    }
    tx.prepare_cached(
        "UPDATE notification_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2,
             finished_at = NULL,
             address = CASE WHEN channel = 'mail'
                 THEN COALESCE((SELECT email FROM users WHERE name = user_name), address)
                 ELSE address END
         WHERE id = ?1",
    )?
    .execute(params![id, now()])?;
    let row = tx
        .prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notification_outbox WHERE id = ?1"
        ))?
        .query_row([id], outbox_row)?;
    Ok(Retried::Requeued(Box::new(row)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{link_blob, put_manifest, Db, Sif, UserRow};

    fn db() -> (tempfile::TempDir, std::sync::Arc<Db>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        (dir, db)
    }

    fn user(tx: &Transaction, name: &str) {
        crate::meta::insert_user(
            tx,
            &UserRow {
                name: name.into(),
                uid: None,
                password_hash: None,
                admin: false,
                created_at: 0,
            },
        )
        .unwrap();
    }

    /// alice pushes `alice/tool:1` (one blob), a job for it is claimed by worker `w`.
    fn pushed_and_claimed(tx: &Transaction) -> i64 {
        link_blob(tx, "alice/tool", "alice", "sha256:l", 3).unwrap();
        let references = vec![crate::meta::Reference {
            digest: "sha256:l".into(),
            size: 3,
            kind: crate::meta::ReferenceKind::Blob,
        }];
        put_manifest(
            tx,
            &crate::meta::testing::image_manifest("alice/tool", "sha256:m", references, Some("1")),
        )
        .unwrap()
        .unwrap();
        record_pusher(tx, "alice/tool", "sha256:m", "alice").unwrap();
        crate::meta::enqueue_build(tx, "sha256:m", "linux/amd64", "alice/tool").unwrap();
        crate::meta::claim_job(tx, "w", "native", 60)
            .unwrap()
            .unwrap()
            .id
    }

    fn sif() -> Sif {
        Sif {
            digest: "sha256:s".into(),
            manifest_digest: "sha256:m".into(),
            platform: "linux/amd64".into(),
            size: 4096,
            squashfs_offset: 0,
            squashfs_size: 1,
            backend: "native".into(),
            builder: "w".into(),
            compression: "gzip".into(),
            duration_ms: 1,
            created_at: 0,
            enroot: None,
        }
    }

    #[test]
    fn a_ready_build_queues_one_row_per_channel_the_pusher_chose_in_its_own_transaction() {
        let (_dir, db) = db();
        let rows = db
            .write_blocking(|tx| {
                user(tx, "alice");
                set_user_email(tx, "alice", Some("alice@example.org"))?;
                set_user_notify(tx, "alice", NotifyChannels::Both)?;
                let id = pushed_and_claimed(tx);
                link_blob(tx, "alice/tool", "alice", "sha256:s", 4096)?;
                assert!(crate::meta::complete_job(tx, id, "w", &sif(), "log")?);
                list_notifications(tx, None, 10)
            })
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].event_id, rows[1].event_id, "one event, one id");
        let mail = rows.iter().find(|r| r.channel == CHANNEL_MAIL).unwrap();
        assert_eq!(mail.address.as_deref(), Some("alice@example.org"));
        assert_eq!(mail.event, "ready");
        assert_eq!(mail.tag.as_deref(), Some("1"));
        assert_eq!(mail.sif_digest.as_deref(), Some("sha256:s"));
        assert_eq!(mail.sif_size, Some(4096));
        assert_eq!(mail.state, "pending");
    }

    #[test]
    fn nobody_who_did_not_opt_in_and_no_mail_without_an_address() {
        let (_dir, db) = db();
        let rows = db
            .write_blocking(|tx| {
                user(tx, "alice");
                // Mail chosen, but no address: nothing to send.
                set_user_notify(tx, "alice", NotifyChannels::Mail)?;
                let id = pushed_and_claimed(tx);
                let state = crate::meta::fail_job(tx, id, "w", "broken layer", "the log", 1, 0)?;
                assert_eq!(state, Some(crate::meta::JobState::Failed));
                list_notifications(tx, None, 10)
            })
            .unwrap();
        assert!(rows.is_empty(), "{rows:?}");
    }

    #[test]
    fn a_failure_for_good_queues_the_reason_and_a_retry_does_not() {
        let (_dir, db) = db();
        let rows = db
            .write_blocking(|tx| {
                user(tx, "alice");
                set_user_notify(tx, "alice", NotifyChannels::Webhook)?;
                let id = pushed_and_claimed(tx);
                // Attempts remain: re-queued, nobody is told yet.
                crate::meta::fail_job(tx, id, "w", "first", "log 1", 2, 0)?;
                assert!(list_notifications(tx, None, 10)?.is_empty());
                crate::meta::claim_job(tx, "w", "native", 60)?.unwrap();
                crate::meta::fail_job(tx, id, "w", "broken layer", "log 2", 2, 0)?;
                list_notifications(tx, None, 10)
            })
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event, "failed");
        assert_eq!(rows[0].reason.as_deref(), Some("broken layer"));
        assert_eq!(rows[0].log_tail.as_deref(), Some("log 2"));
    }

    #[test]
    fn attempts_retry_then_fail_for_good_and_delivered_rows_are_not_due() {
        let (_dir, db) = db();
        db.write_blocking(|tx| {
            user(tx, "alice");
            set_user_notify(tx, "alice", NotifyChannels::Webhook)?;
            let id = pushed_and_claimed(tx);
            crate::meta::fail_job(tx, id, "w", "broken", "log", 1, 0)?;
            Ok(())
        })
        .unwrap();
        let due = db
            .read_blocking(|c| due_notifications(c, now(), 10))
            .unwrap();
        assert_eq!(due.len(), 1);
        let id = due[0].id;
        let later = now() + 100;
        db.write_blocking(|tx| record_attempt(tx, id, Some("refused"), Some(later)))
            .unwrap();
        assert!(db
            .read_blocking(|c| due_notifications(c, now(), 10))
            .unwrap()
            .is_empty());
        let due = db
            .read_blocking(|c| due_notifications(c, later, 10))
            .unwrap();
        assert_eq!(due[0].attempts, 1);
        db.write_blocking(|tx| record_attempt(tx, id, Some("refused again"), None))
            .unwrap();
        let failed = db
            .read_blocking(|c| list_notifications(c, Some(OutboxState::Failed), 10))
            .unwrap();
        assert_eq!(failed[0].attempts, 2);
        assert_eq!(failed[0].last_error.as_deref(), Some("refused again"));
        // A finished row takes no further attempt.
        assert!(!db
            .write_blocking(|tx| record_attempt(tx, id, None, None))
            .unwrap());
    }

    #[test]
    fn the_log_tail_keeps_the_end_from_a_line_start() {
        let log = format!("{}\nlast line\n", "x".repeat(LOG_TAIL_BYTES * 2));
        assert_eq!(log_tail(&log), "last line\n");
        assert_eq!(log_tail("short"), "short");
    }

    #[test]
    fn only_failed_or_skipped_rows_are_queued_again_with_the_address_as_it_is_now() {
        let (_dir, db) = db();
        let id = db
            .write_blocking(|tx| {
                user(tx, "alice");
                set_user_email(tx, "alice", Some("alice@refused.example"))?;
                set_user_notify(tx, "alice", NotifyChannels::Mail)?;
                let job = pushed_and_claimed(tx);
                crate::meta::fail_job(tx, job, "w", "broken", "log", 1, 0)?;
                let id = list_notifications(tx, None, 10)?[0].id;
                // Pending: on its way already.
                assert_eq!(
                    retry_notification(tx, id)?,
                    Retried::NotRetryable("pending".into())
                );
                record_attempt(tx, id, Some("550 refused"), None)?;
                Ok(id)
            })
            .unwrap();
        let (row, missing) = db
            .write_blocking(|tx| {
                set_user_email(tx, "alice", Some("alice@example.org"))?;
                Ok((
                    retry_notification(tx, id)?,
                    retry_notification(tx, id + 99)?,
                ))
            })
            .unwrap();
        let Retried::Requeued(row) = row else {
            panic!("not requeued: {row:?}")
        };
        assert_eq!(row.state, "pending");
        assert_eq!(row.attempts, 0);
        assert_eq!(row.finished_at, None);
        assert_eq!(row.address.as_deref(), Some("alice@example.org"));
        assert_eq!(
            row.last_error.as_deref(),
            Some("550 refused"),
            "kept, for the record"
        );
        assert_eq!(missing, Retried::NoSuchRow);
        let due = db
            .read_blocking(|c| due_notifications(c, now(), 10))
            .unwrap();
        assert_eq!(due.len(), 1, "due at once");
        db.write_blocking(|tx| record_attempt(tx, id, None, None))
            .unwrap();
        let again = db.write_blocking(|tx| retry_notification(tx, id)).unwrap();
        assert_eq!(again, Retried::NotRetryable("delivered".into()));
    }
}
