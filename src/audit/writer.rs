//! [`Auditor`]: the server's handle on the audit log. Requests hand records to a bounded channel;
//! one thread owns the [`AuditLog`] and appends them in batches.
//!
//! Durability vs. cost: every batch is fsynced, then indexed in one metadata transaction (group
//! commit). The writer lingers [`LINGER`] after the first record of a batch to gather the records
//! that follow: without it a single client fetching SIFs back to back paid an fsync and a
//! metadata commit (~1 ms of CPU) per record, which halved small-SIF throughput. So at most about
//! 40 batches a second reach the disk, whatever the request rate, and a crash loses at most the
//! records of the last [`LINGER`] plus what is still in the channel. Requests never wait for it.
//!
//! Never silent loss: when the channel is full, the request waits (up to [`FULL_WAIT`]) and
//! `hpc_registry_audit_backpressure_total` counts it; a record that still cannot be queued, or a
//! batch that cannot be written, is counted in `hpc_registry_audit_lost_total` and logged as an
//! error.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::forward::{Forwarder, Target};
use super::rotation::{self, Policy};
use super::throttle::{self, Throttle};
use super::{AuditLog, Record};

/// Records queued before requests start to wait.
const CHANNEL: usize = 8192;
/// Largest batch per write + fsync.
const MAX_BATCH: usize = 1024;
/// How long a request waits for room in a full channel before the record is counted as lost.
const FULL_WAIT: Duration = Duration::from_secs(5);
/// How long the writer gathers records after the first one of a batch.
const LINGER: Duration = Duration::from_millis(25);

enum Msg {
    /// A record and when it was queued (the writer's lag is measured from there).
    Record(Box<Record>, std::time::Instant),
    /// Answered once everything queued before it is on disk and indexed.
    Flush(oneshot::Sender<()>),
    /// A minute passed: rotate by age even when no record comes.
    Tick,
}

/// How often an idle writer checks whether the active file is due by age.
const TICK: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    /// The file the writer appends to (queries and `verify` read it).
    path: std::sync::Arc<std::path::PathBuf>,
    /// Per-address limit on failure records (see [`super::throttle`]).
    throttle: std::sync::Arc<Throttle>,
    /// When the active file is rotated; a reload may change it.
    rotation: std::sync::Arc<std::sync::RwLock<Policy>>,
    /// Where written records are also sent (syslog); a reload may change it.
    forward: std::sync::Arc<std::sync::Mutex<Option<Forwarder>>>,
}

impl Auditor {
    /// Starts the writer thread, never rotating; it ends when the last handle is dropped.
    pub fn start(log: AuditLog) -> Auditor {
        Self::start_with(log, Policy::default(), None)
    }

    /// Starts the writer thread, rotating by `policy` and forwarding every written record to
    /// `forward`; it ends when the last handle is dropped.
    pub fn start_with(mut log: AuditLog, policy: Policy, forward: Option<Target>) -> Auditor {
        let path = std::sync::Arc::new(log.path().to_path_buf());
        let rotation = std::sync::Arc::new(std::sync::RwLock::new(policy));
        let forward = std::sync::Arc::new(std::sync::Mutex::new(forward.map(Forwarder::new)));
        let writer_forward = std::sync::Arc::clone(&forward);
        let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL);
        let dir = log
            .path()
            .parent()
            .map(|d| d.to_path_buf())
            .unwrap_or_default();
        let compressor = rotation::start_compressor(dir, policy.compression);
        let writer_rotation = std::sync::Arc::clone(&rotation);
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    if matches!(first, Msg::Tick) {
                        rotate_if_due(&mut log, &writer_rotation, &compressor);
                        continue;
                    }
                    if !matches!(first, Msg::Flush(_)) {
                        std::thread::sleep(LINGER);
                    }
                    let mut batch = Vec::new();
                    let mut waiting = Vec::new();
                    let mut oldest: Option<std::time::Instant> = None;
                    let mut next = Some(first);
                    while let Some(m) = next.take() {
                        match m {
                            Msg::Record(r, queued_at) => {
                                oldest.get_or_insert(queued_at);
                                batch.push(*r)
                            }
                            Msg::Flush(done) => waiting.push(done),
                            Msg::Tick => {}
                        }
                        if batch.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    let n = batch.len();
                    match log.append(batch) {
                        Err(e) => {
                            metrics::counter!("hpc_registry_audit_lost_total").increment(n as u64);
                            tracing::error!("audit: {n} records could not be written: {e}");
                        }
                        Ok(written) if !written.is_empty() => {
                            metrics::counter!("hpc_registry_audit_records_total")
                                .increment(n as u64);
                            // Only what is on disk: syslog never shows a record the chain lacks.
                            if let Some(f) = writer_forward
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .as_mut()
                            {
                                f.forward(&written);
                            }
                        }
                        Ok(_) => {}
                    }
                    if let Some(t) = oldest {
                        crate::telemetry::audit_written(t.elapsed());
                    }
                    // Between batches, so every record of a rotated file is indexed.
                    rotate_if_due(&mut log, &writer_rotation, &compressor);
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every record is lost: say so loudly (the channel reports closed).
            tracing::error!("audit: cannot start the writer thread: {e}");
        }
        let throttle = std::sync::Arc::new(Throttle::default());
        // Summaries of ended windows are written even when the storm (and so `admit`) stops.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (weak, t) = (tx.downgrade(), std::sync::Arc::downgrade(&throttle));
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(throttle::WINDOW).await;
                    let (Some(tx), Some(t)) = (weak.upgrade(), t.upgrade()) else {
                        return;
                    };
                    for r in t.take_summaries(false) {
                        let _ = tx
                            .send(Msg::Record(Box::new(r), std::time::Instant::now()))
                            .await;
                    }
                }
            });
            let weak = tx.downgrade();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    let Some(tx) = weak.upgrade() else {
                        return;
                    };
                    let _ = tx.send(Msg::Tick).await;
                }
            });
        }
        Auditor {
            tx,
            path,
            throttle,
            rotation,
            forward,
        }
    }

    /// Applies a new rotation policy (a reload); compression changes apply from the next start.
    pub fn set_rotation(&self, policy: Policy) {
        *self.rotation.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Forwards the records written from now on to `target` (a reload); `None` stops it.
    pub fn set_forward(&self, target: Option<Target>) {
        let mut forward = self.forward.lock().unwrap_or_else(|p| p.into_inner());
        if forward.as_ref().map(|f| f.target()) != target.as_ref() {
            *forward = target.map(Forwarder::new);
        }
    }

    /// Messages waiting for the writer (the audit queue gauge).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Queues a failure `record` of a request from `client`, unless that address has written
    /// too many lately (then it is counted, and summarised later).
    pub async fn record_failure(&self, record: Record, client: Option<std::net::IpAddr>) {
        let (admitted, summary) = self.throttle.admit(client, &record.time);
        if let Some(s) = summary {
            self.record(s).await;
        }
        if admitted {
            self.record(record).await;
        } else {
            metrics::counter!("hpc_registry_audit_suppressed_total").increment(1);
        }
    }

    /// Queues `record` (its fields capped, see [`super::bound`]); waits while the queue is full
    /// (see the module docs).
    pub async fn record(&self, mut record: Record) {
        super::bound::bound(&mut record);
        let msg = Msg::Record(Box::new(record), std::time::Instant::now());
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(m)) => m,
            Err(mpsc::error::TrySendError::Closed(_)) => return lost("the writer has stopped"),
        };
        metrics::counter!("hpc_registry_audit_backpressure_total").increment(1);
        match tokio::time::timeout(FULL_WAIT, self.tx.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => lost("the writer has stopped"),
            Err(_) => lost("the queue stayed full"),
        }
    }

    /// Returns once every record queued before the call is written and indexed.
    /// Counts of suppressed failure records are written first, so what is read afterwards says
    /// everything it leaves out.
    pub async fn flush(&self) {
        for s in self.throttle.take_summaries(true) {
            self.record(s).await;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Rotates the active file if the policy says so, and hands it to the compressor.
fn rotate_if_due(
    log: &mut AuditLog,
    policy: &std::sync::RwLock<Policy>,
    compressor: &std::sync::mpsc::Sender<std::path::PathBuf>,
) {
    let policy = *policy.read().unwrap_or_else(|p| p.into_inner());
    if !policy.due(log.len(), log.first_time_ms(), super::time::now_ms()) {
        return;
    }
    match log.rotate() {
        Ok(Some(rotated)) => {
            tracing::info!("audit: rotated to {}", rotated.display());
            if policy.compression != super::segments::Compression::None {
                let _ = compressor.send(rotated);
            }
        }
        Ok(None) => {}
        // The active file goes on; the next batch tries again.
        Err(e) => tracing::error!("audit: cannot rotate the log: {e}"),
    }
}

fn lost(why: &str) {
    metrics::counter!("hpc_registry_audit_lost_total").increment(1);
    tracing::error!("audit: a record was lost: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{self, Db};
    use std::sync::Arc;

    #[tokio::test]
    async fn records_from_many_tasks_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let auditor = Auditor::start(AuditLog::open(dir.path(), Arc::clone(&db)).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8 {
            let a = auditor.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let mut r = Record::new("manifest.pull", "ok");
                    r.user = Some(format!("u{t}"));
                    r.bytes = Some(i);
                    a.record(r).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        auditor.flush().await;
        let path = dir.path().join(crate::audit::FILE);
        let report = super::super::log::verify_file(&path, Some(&db)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.last_seq, 400);
        let filter = meta::AuditFilter {
            user: Some("u3".into()),
            limit: 1000,
            ..Default::default()
        };
        let rows = db
            .read_blocking(|c| meta::find_audit_events(c, &filter))
            .unwrap();
        assert_eq!(rows.len(), 50);
    }
}
