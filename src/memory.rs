//! Process-wide memory settings, applied once at start before any thread exists, and the
//! release of free heap pages (periodically, and before a password hash maps its 19 MiB).
//!
//! glibc's malloc gives each thread that contends for the heap its own arena (up to 8 per core),
//! and memory freed in an arena stays resident there for that arena's next user. A server whose
//! blocking pool grows to dozens of threads under load (uploads, metadata reads, builds) so keeps
//! several copies of its working set. Two arenas suffice for two async workers plus a blocking
//! pool whose allocations are short-lived (issue 15, point 4: measured in BENCHMARKS.md).

/// Arenas glibc may create; `MALLOC_ARENA_MAX` in the environment still wins.
const ARENAS: i32 = 2;

/// Applies the settings above (a no-op where malloc is not glibc's).
pub fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tunables; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// How often [`release_periodically`] hands free heap pages back.
const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives the kernel back the pages malloc holds free in every arena. glibc returns memory only
/// from the top of each heap, so after a burst of concurrent requests the freed middle of the
/// heap stays resident; `malloc_trim` releases it (a walk of the free lists, well under a
/// millisecond at this server's heap sizes).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it takes malloc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Releases free heap pages every few seconds, so the resident set falls back to the live
/// working set after a burst instead of staying at the burst's high-water mark.
pub async fn release_periodically() {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    loop {
        tick.tick().await;
        release_free_heap();
    }
}
