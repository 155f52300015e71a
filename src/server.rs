//! Assembles the registry from a [`Config`] and serves it until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::Access;
use crate::config::Config;
use crate::http::{self, App};
use crate::farm::Farm;
use crate::meta::Db;
use crate::registry::{Limits, Registry};
use crate::storage::BlobStore;

/// How often batched last-pull times are written out.
const PULL_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize().with_context(|| {
        format!(
            "cannot resolve data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = BlobStore::open(&data_dir)
        .with_context(|| format!("cannot open blob store in {}", data_dir.display()))?;
    let db = Db::open(&data_dir.join("meta.db")).context("cannot open the metadata database")?;
    let limits = Limits {
        max_manifest_bytes: config.registry.max_manifest_bytes,
        ..Limits::default()
    };
    let registry = Registry::new(Arc::clone(&db), store.clone(), limits);
    let farm = Farm::new(db, store, config.farm.clone(), Arc::clone(&registry.events));
    let app = Arc::new(App {
        registry,
        access: Arc::new(Access::new(config.auth.anonymous)),
        farm: Arc::clone(&farm),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "listening on http://{addr} with data in {} (anonymous access: {:?})",
        data_dir.display(),
        config.auth.anonymous
    );

    farm.start().await?;
    let flusher = tokio::spawn(flush_pulls_periodically(Arc::clone(&app)));
    axum::serve(listener, http::router(Arc::clone(&app)))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    flusher.abort();
    app.registry.flush_pulls().await?;
    tracing::info!("stopped");
    Ok(())
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
