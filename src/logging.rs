//! Process-wide logging: human-readable text (the default) or one JSON object per line for log
//! shippers (`--log-format json`). Either way logs go to stderr, so journald, a container
//! runtime or a shipper's file tail collect them, and the level comes from `HPC_REGISTRY_LOG`
//! (an `EnvFilter` directive such as `info` or `info,hpc_registry::farm=debug`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

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

/// Swaps the filter of the installed subscriber (`[log] level` on a reload).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let (filter, handle) = reload::Layer::new(filter());
    let _ = LEVEL.set(handle);
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let layer = match format {
        LogFormat::Text => text(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .boxed()
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
}

/// Parses a level directive (`info`, `info,hpc_registry::farm=debug`) without applying it;
/// `None` means the `HPC_REGISTRY_LOG` variable, else `info`.
pub fn parse_level(directive: Option<&str>) -> Result<EnvFilter, String> {
    match directive {
        Some(d) => EnvFilter::try_new(d).map_err(|e| format!("[log] level {d:?}: {e}")),
        None => Ok(filter()),
    }
}

/// Makes `filter` the level of every later log line.
pub fn set_level(filter: EnvFilter) -> Result<(), String> {
    match LEVEL.get() {
        Some(h) => h.reload(filter).map_err(|e| e.to_string()),
        None => Err("no log subscriber is installed".into()),
    }
}
