//! The background prune: every `interval`, inside the optional UTC `window`. A run that the
//! window postpones starts as soon as the window opens.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pruner;

/// How often the loop looks at the clock (the window's resolution).
const TICK: Duration = Duration::from_secs(30);

/// Runs until aborted. Reads the schedule from `pruner`'s settings and calls `prune` for each
/// run, which returns when the run has ended: the server starts a background job there
/// (`admin_jobs`), so that a scheduled run shows in `admin jobs`, can be cancelled, resumes
/// after a restart, and is refused (skipped until the next interval) while an admin's runs.
pub async fn run<F, Fut>(pruner: Arc<Pruner>, mut prune: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
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
        prune().await;
    }
}
