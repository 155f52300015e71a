//! The background prune: every `interval`, inside the optional UTC `window`. A run that the
//! window postpones starts as soon as the window opens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pruner;
use crate::registry::Registry;

/// How often the loop looks at the clock (the window's resolution).
const TICK: Duration = Duration::from_secs(30);

/// Runs until aborted. Takes the two things a prune needs, not the HTTP layer's state.
pub async fn run(pruner: Arc<Pruner>, registry: Arc<Registry>) {
    if pruner.settings().interval_secs <= 0 {
        tracing::info!("background prune disabled ([gc] interval = 0s)");
    }
    // The first run waits a full interval: a restart loop must not become a prune loop.
    let mut last = Instant::now();
    loop {
        // Read on every tick: a reload may change the interval, the window, or turn it on.
        let settings = pruner.settings();
        if settings.interval_secs <= 0 {
            tokio::time::sleep(TICK).await;
            last = Instant::now();
            continue;
        }
        let interval = Duration::from_secs(settings.interval_secs as u64);
        tokio::time::sleep(TICK.min(interval)).await;
        if last.elapsed() < interval {
            continue;
        }
        let minute = ((crate::meta::now().rem_euclid(86_400)) / 60) as u32;
        if !settings.in_window(minute) {
            continue;
        }
        last = Instant::now();
        if let Err(e) = pruner.run(&registry, false).await {
            tracing::warn!("background prune failed: {e}");
        }
    }
}
