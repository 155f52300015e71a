//! Assembles the registry from a [`Config`] and serves it until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::{manage, Access};
use crate::config::Config;
use crate::farm::Farm;
use crate::http::{self, App};
use crate::lock::DataLock;
use crate::meta::Db;
use crate::quota::{LiveDefaults, QuotaDefaults, Quotas};
use crate::registry::{Limits, Registry};
use crate::reload::{ConfigSource, Live, Reloader};
use crate::storage::BlobStore;

/// How often batched last-pull times are written out.
const PULL_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `config` until a shutdown signal; a reload (SIGHUP, `admin reload`) has nothing to
/// re-read.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_with(config, None).await
}

/// Serves `config` until a shutdown signal; a reload calls `source` for the configuration anew.
pub async fn serve_with(config: Config, source: Option<ConfigSource>) -> anyhow::Result<()> {
    if let Some(level) = config.log.level.as_deref() {
        let filter = crate::logging::parse_level(Some(level)).map_err(anyhow::Error::msg)?;
        if let Err(e) = crate::logging::set_level(filter) {
            tracing::warn!("[log] level not applied: {e}");
        }
    }
    let templates = crate::jobscript::LiveTemplates::new(
        crate::jobscript::templates_from_config(&config.ui)
            .context("[ui] in the configuration is invalid")?,
    );
    crate::storage::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize().with_context(|| {
        format!(
            "cannot resolve data directory {}",
            config.data_dir.display()
        )
    })?;
    // Held until the server exits: offline `user`/`group`/`token` commands and a second server
    // refuse to touch this data directory meanwhile.
    let mut lock = DataLock::acquire(&data_dir)?;
    let store = BlobStore::open(&data_dir)
        .with_context(|| format!("cannot open blob store in {}", data_dir.display()))?;
    match store.remove_scratch_dirs() {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} build scratch directories left by an interrupted run"),
        Err(e) => tracing::warn!("cannot clean build scratch directories: {e}"),
    }
    let db = Db::open(&data_dir.join("meta.db")).context("cannot open the metadata database")?;
    let first_admin = {
        let db = Arc::clone(&db);
        tokio::task::spawn_blocking(move || manage::ensure_first_admin(&db)).await??
    };
    if let Some(password) = first_admin {
        let path = data_dir.join(INITIAL_ADMIN_PASSWORD);
        write_private(&path, &password).with_context(|| {
            format!(
                "the first administrator `admin` was created, but its password cannot be written \
                 to {}: set one with `hpc-registry user passwd admin --data-dir {}`",
                path.display(),
                data_dir.display()
            )
        })?;
        announce_first_admin(&path);
    }
    let (tls, cert_reloader) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let (acceptor, reloader) = crate::tls::reloadable_acceptor(cert, key)?;
            (Some(acceptor), Some(reloader))
        }
        (None, None) => (None, None),
        _ => anyhow::bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
    };
    let access = Access::new(&config.auth, Arc::clone(&db), &data_dir, tls.is_some())
        .context("cannot set up authentication")?;
    let limits = Limits {
        max_manifest_bytes: config.registry.max_manifest_bytes,
        quota: LiveDefaults::new(
            QuotaDefaults::from_config(&config.quota)
                .context("[quota] in the configuration is invalid")?,
        ),
        max_upload_sessions_per_user: config.registry.max_upload_sessions_per_user,
        ..Limits::default()
    };
    let audit = {
        let (dir, db) = (data_dir.clone(), Arc::clone(&db));
        tokio::task::spawn_blocking(move || crate::audit::AuditLog::open(&dir, db))
            .await?
            .context("cannot open the audit log")?
    };
    let rotation =
        crate::audit::rotation::Policy::from_config(&config.audit).map_err(anyhow::Error::msg)?;
    let forward = crate::audit::forward::Target::from_config(
        config.audit.syslog.as_deref(),
        config.audit.syslog_facility.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let audit = crate::audit::Auditor::start_with(audit, rotation, forward);
    let registry = Arc::new(Registry::new(Arc::clone(&db), store.clone(), limits));
    let gc_settings = crate::lifecycle::Settings::from_config(&config.gc, &config.retention)?;
    let pruner = Arc::new(crate::lifecycle::Pruner::new(gc_settings));
    let quota_defaults = registry.limits.quota.clone();
    let farm = Farm::new(
        Arc::clone(&db),
        store,
        config.farm.clone(),
        Arc::clone(&registry.events),
    );
    let health = crate::health::Health::new(
        Arc::clone(&db),
        Arc::clone(&farm),
        &data_dir,
        &config.health,
    )?;
    let _ = farm.audit.set(audit.clone());
    let jobs = {
        use crate::admin_jobs::{GcJob, Jobs, Kind, ScrubJob};
        let scrub = ScrubJob::new(Arc::clone(&db), registry.store.clone(), Arc::clone(&farm));
        let gc = GcJob::new(Arc::clone(&pruner), Arc::clone(&registry), false);
        let prune = GcJob::new(Arc::clone(&pruner), Arc::clone(&registry), true);
        let kinds: Vec<Arc<dyn Kind>> = vec![scrub, gc, prune];
        Jobs::new(Arc::clone(&db), kinds)
    };
    let app = Arc::new(App {
        registry,
        access: Arc::new(access),
        farm: Arc::clone(&farm),
        audit: audit.clone(),
        pruner: Arc::clone(&pruner),
        health: Arc::new(health),
        quotas: Quotas::new(Arc::clone(&db), quota_defaults.clone()),
        reloader: Arc::new(Reloader::new(
            source,
            config.clone(),
            Live {
                pruner: Arc::clone(&pruner),
                quotas: quota_defaults,
                audit: audit.clone(),
                tls: cert_reloader,
                templates: templates.clone(),
            },
        )),
        scrub_rate: crate::lifecycle::scrub::rate_from_config(&config.scrub)
            .context("[scrub] rate in the configuration is invalid")?,
        templates,
        jobs,
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "listening on {scheme}://{addr} with data in {} (anonymous access: {:?})",
        data_dir.display(),
        config.auth.anonymous
    );
    lock.record(Some(&format!("{scheme}://{addr}")))
        .context("cannot write the data-directory lock file")?;

    let notifier = crate::notifications::Notifier::new(
        Arc::clone(&farm),
        &config.notifications,
        &format!("{scheme}://{addr}"),
    )
    .context("[notifications] in the configuration is unusable")?;
    tracing::info!(channels = ?notifier.channels(), "build notifications");

    crate::telemetry::install();
    // The Slurm executor's build jobs reach the server at this URL unless [farm.slurm] says.
    farm.start(&format!("{scheme}://{addr}"), &data_dir).await?;
    let notifications = tokio::spawn(notifier.run());
    match app.jobs.resume().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("resumed {n} admin jobs from their checkpoints"),
        Err(e) => tracing::warn!("cannot resume admin jobs: {e}"),
    }
    crate::notify::ready_and_watch(&format!("listening on {scheme}://{addr}"));
    let flusher = tokio::spawn(flush_pulls_periodically(Arc::clone(&app)));
    let releaser = tokio::spawn(crate::memory::release_periodically());
    let expirer = tokio::spawn(expire_uploads_periodically(
        Arc::clone(&app),
        config.registry.upload_expiry_secs,
    ));
    // Each scheduled prune is a job: shown by `admin jobs`, one at a time with the admin's.
    let pruner = tokio::spawn(crate::lifecycle::schedule::run(Arc::clone(&app.pruner), {
        let jobs = Arc::clone(&app.jobs);
        move || {
            let jobs = Arc::clone(&jobs);
            async move { jobs.scheduled_prune().await }
        }
    }));
    let reloads = tokio::spawn(reload_on_sighup(Arc::clone(&app.reloader)));
    let ui = Arc::new(crate::ui::Ui::new(
        crate::ui::session::Lifetimes {
            idle: Duration::from_secs(config.ui.session_idle_secs),
            max: Duration::from_secs(config.ui.session_max_secs),
        },
        tls.is_some(),
    ));
    let router = http::router_with(Arc::clone(&app), crate::ui::router(ui));
    let bounds = crate::listener::Bounds::from_config(&config.server);
    crate::listener::serve(listener, tls, router, bounds, shutdown_signal())
        .await
        .context("server failed")?;
    crate::notify::stopping();
    flusher.abort();
    releaser.abort();
    expirer.abort();
    pruner.abort();
    // Before the data-directory lock goes: no job of this process may touch the store after.
    app.jobs.pause().await;
    notifications.abort();
    reloads.abort();
    app.registry.flush_pulls().await?;
    app.audit.flush().await;
    tracing::info!("stopped");
    drop(lock);
    Ok(())
}

/// Where the first-start admin password is written, in the data directory.
pub const INITIAL_ADMIN_PASSWORD: &str = "initial-admin-password";

/// Writes `secret` to a new file only its owner can read (an older one is replaced: it held the
/// password of an admin that no longer exists, since only a database without users gets here).
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}

/// Says where the first-start admin password is, never the password itself: stderr ends up in
/// journald and log collectors, which keep it for anyone who may read the logs.
fn announce_first_admin(path: &std::path::Path) {
    if crate::logging::is_json() {
        // Log shippers want every line as JSON: the same notice, as one record.
        tracing::warn!(
            password_file = %path.display(),
            "first start: no users existed, so the administrator `admin` was created; its one-time password is in the file named here (mode 0600): change it with `hpc-registry user passwd admin --server URL`, then delete that file"
        );
        return;
    }
    eprintln!(
        "\n\
         ==================== hpc-registry: first start ====================\n\
         No users existed, so the administrator `admin` was created.\n\
         Its one-time password is in {} (mode 0600).\n\
         Change it, then delete that file:\n\
         \x20   hpc-registry user passwd admin --server URL\n\
         ===================================================================\n",
        path.display()
    );
}

async fn flush_pulls_periodically(app: Arc<App>) {
    let mut tick = tokio::time::interval(PULL_FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = app.registry.flush_pulls().await {
            tracing::warn!("could not record pull times: {e}");
        }
    }
}

/// Abandoned uploads (and build scratch a dead build left) are swept hourly, or four times per
/// lifetime when that is shorter (and once at start-up, for sessions a crash left behind).
async fn expire_uploads_periodically(app: Arc<App>, max_age_secs: u64) {
    let every = (max_age_secs / 4).clamp(1, 3600);
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    loop {
        tick.tick().await;
        match app.registry.expire_uploads(max_age_secs, false).await {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => tracing::info!("removed {} abandoned upload sessions", gone.len()),
            Err(e) => tracing::warn!("cannot expire upload sessions: {e}"),
        }
        match app.registry.remove_stale_scratch(max_age_secs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} build scratch directories left by a dead build"),
            Err(e) => tracing::warn!("cannot remove stale build scratch directories: {e}"),
        }
    }
}

/// SIGHUP re-reads the configuration (`systemctl reload`); the outcome goes to the log.
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: reload with `hpc-registry admin reload` instead");
        return;
    };
    while hup.recv().await.is_some() {
        let r = Arc::clone(&reloader);
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(outcome)) => outcome.log(),
            Ok(Err(refused)) => tracing::error!("SIGHUP: {refused}"),
            Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
    tracing::info!("shutting down");
}
