//! Per-digest locks between GC removing a blob's file and a commit of the same bytes.
//!
//! A commit (upload, SIF import, small ORAS config) checks whether the file exists and then
//! links the blob, which resurrects a 'deleting' row. Without a lock, GC could unlink the file
//! between those two steps and leave a live row without bytes. GC re-reads the state and
//! unlinks under the digest's lock; commits hold it from the existence check to the link. One
//! process writes a store (the data-directory lock), so an in-process lock is enough.

use std::sync::LazyLock;

use tokio::sync::{Mutex, MutexGuard};

/// Stripes: enough that unrelated digests rarely wait on each other, few enough to be free.
const STRIPES: usize = 256;

static GUARDS: LazyLock<Vec<Mutex<()>>> =
    LazyLock::new(|| (0..STRIPES).map(|_| Mutex::new(())).collect());

fn stripe_index(digest: &str) -> usize {
    // Digests are uniformly random hex: a few of their characters spread them well.
    let h = digest
        .bytes()
        .rev()
        .take(8)
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    h % STRIPES
}

fn stripe(digest: &str) -> &'static Mutex<()> {
    &GUARDS[stripe_index(digest)]
}

/// Locks several digests at once, in stripe order and each stripe once, so two callers can
/// never deadlock and a shared stripe is not locked twice.
pub async fn lock_all(digests: &[&str]) -> Vec<MutexGuard<'static, ()>> {
    let mut stripes: Vec<usize> = digests.iter().map(|d| stripe_index(d)).collect();
    stripes.sort_unstable();
    stripes.dedup();
    let mut guards = Vec::with_capacity(stripes.len());
    for i in stripes {
        guards.push(GUARDS[i].lock().await);
    }
    guards
}

/// Held by async code (commits).
pub async fn lock(digest: &str) -> MutexGuard<'static, ()> {
    stripe(digest).lock().await
}

/// Held by blocking code (GC's unlink), never from an async task.
pub fn lock_blocking(digest: &str) -> MutexGuard<'static, ()> {
    stripe(digest).blocking_lock()
}
