//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps freed blocks in its per-thread arenas and returns
//! pages only from the top of a heap, so the megabyte of answers a slow
//! reader had queued stays resident after its socket closed, and a burst of
//! slow readers would leave the server's RSS high for good. When such a
//! socket is gone, [`release_freed`] asks the allocator to return every free
//! page. It walks all arenas, so it is for rare events, not every request.

/// Returns the allocator's free pages to the operating system (glibc; a
/// no-op elsewhere).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only touches the allocator's own free lists and
    // takes the arena locks itself; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
