//! How the process allocates (glibc malloc), set once at start and once a
//! run turns out to be long.
//!
//! At start: two arenas. glibc gives each new thread its own; DuckDB, the
//! staging threads and the HTTP client together made resident memory grow
//! with the length of a backfill (190 MB for a month, 290 MB for three).
//!
//! For a long run (more hours than one batch of an hourly run): blocks of
//! 256 KiB and more (staged columns, DuckDB's buffers) are mapped and
//! unmapped on their own. Otherwise glibc raises that threshold after the
//! first free and serves them from the heap, where a batch's columns, kept
//! until it is transformed, leave holes (peak RSS for a month 126-130 MB
//! instead of 75-76). A short run is not held to that: mapping each block
//! anew costs it its page faults, 12-19 ms of an hourly run's 87-95
//! (medians of 15 runs, six jobs at 20 stations), and it holds one batch at
//! most. A month's backfill peaks the same either way (79-81 MB in
//! alternating runs). Measured with scripts/bench and repeated runs.

/// Two malloc arenas; call before any thread starts.
pub fn at_start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Large blocks mapped on their own from now on (see the module's doc).
/// Called once a run's plans are known, before its first download.
pub fn long_run() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
