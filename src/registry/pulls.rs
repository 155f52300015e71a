//! Last-pull times for retention, batched in memory so that a pull never waits on a database
//! write; `Registry::flush_pulls` writes them out every few seconds.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct PullLog(Mutex<HashMap<(String, String), i64>>);

impl PullLog {
    pub fn record(&self, repository: &str, reference: &str) {
        let now = crate::meta::now();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((repository.to_owned(), reference.to_owned()), now);
    }

    pub fn take(&self) -> Vec<(String, String, i64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|((r, reference), t)| (r, reference, t))
            .collect()
    }
}
