//! Giving freed memory back to the system after queries.
//!
//! In: nothing. Out: glibc's free heap pages returned to the kernel. Must not: run on
//! the hot path of every request (only when the last read in flight ends).
//!
//! A fleet query builds a merge map of every distinct (stack, state) and a tree, tens of
//! MiB, on a blocking thread; glibc keeps what such a thread frees in that thread's
//! arena, so after a few concurrent queries the server's RSS stayed tens of MiB higher
//! for good (`cargo bench --bench fleet`, "MiB kept"). `malloc_trim(0)` returns the free
//! pages of every arena.

/// Returns the allocator's free pages to the kernel (glibc only; a no-op elsewhere).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists
    // under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
