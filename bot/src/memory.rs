//! The allocator Vouch runs on, and handing what it freed back to the system.

/// Every program built on this library (`vouch`, the e2e suite's copy of it, the benchmarks)
/// allocates with jemalloc, so what is measured is what ships. glibc's malloc keeps what each
/// thread frees in that thread's arena: a directory sync, which frees one directory of hundreds
/// of thousands of small entries while building the next on another thread, left about 100 MiB
/// of fragments resident above what was live (355 MiB resident for 233 MiB live at the peak of
/// a 150 000-entry resync); jemalloc held 321 MiB there, and the sync ran twice as fast.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hands freed memory back to the system at once. jemalloc returns freed pages by itself over
/// about ten seconds, but only while the process keeps allocating: a directory sync frees a whole
/// directory and snapshot at once, and opening a store frees what sled's recovery read (about
/// 17 MiB with a million alerts stored), which an idle Vouch would otherwise keep resident.
pub fn return_freed_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages go back now.
    const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a purge takes no argument and returns none (null pointers, zero lengths, as
    // jemalloc's manual gives for void controls); it only gives back pages no allocation uses.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::debug!(code = failed, "jemalloc could not purge its arenas");
    }
}
