//! Process-wide memory settings, applied once at start before any thread exists.
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
