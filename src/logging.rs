//! Process-wide logging: human-readable text (the default) or one JSON object per line for log
//! shippers (`--log-format json`). Either way logs go to stderr, so journald, a container
//! runtime or a shipper's file tail collect them, and the level comes from `HPC_REGISTRY_LOG`
//! (an `EnvFilter` directive such as `info` or `info,hpc_registry::farm=debug`).

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether lines are JSON: code that prints to stderr itself (banners) logs a record instead.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO target: message key=value`
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","target":"…","fields":{"message":"…",…}}`, one per line,
    /// with the span context a request or build was logged in.
    Json,
}

/// The filter of `HPC_REGISTRY_LOG`, `info` when unset or unparsable.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("HPC_REGISTRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .init()
        }
    }
}
