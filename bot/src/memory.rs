//! The allocator Vouch runs on, handing what it freed back to the system, and its own account
//! of what it holds.

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

/// What the allocator holds, in bytes: `allocated` by live allocations, `resident` in pages it
/// keeps mapped for them (jemalloc's upper bound of the heap's share of RSS: pages it handed out
/// but nothing has written yet are counted, though the kernel does not count them).
#[derive(Debug, Clone, Copy)]
pub struct AllocatorStatistics {
    pub allocated: usize,
    pub resident: usize,
}

/// The allocator's own account of its memory, refreshed now; `None` when it cannot say.
pub fn allocator_statistics() -> Option<AllocatorStatistics> {
    // jemalloc's statistics are a snapshot taken when "epoch" is written.
    let mut epoch: u64 = 1;
    let read = |name: &std::ffi::CStr| -> Option<usize> {
        let mut value: usize = 0;
        let mut length = std::mem::size_of::<usize>();
        // SAFETY: the statistics read here are size_t values, written into `value` whose size
        // `length` gives; no new value is passed.
        let failed = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut usize).cast(),
                &mut length,
                std::ptr::null_mut(),
                0,
            )
        };
        (failed == 0).then_some(value)
    };
    // SAFETY: "epoch" takes a u64, passed by pointer with its size; nothing is read back.
    let refreshed = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"epoch".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&mut epoch as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if refreshed != 0 {
        return None;
    }
    Some(AllocatorStatistics { allocated: read(c"stats.allocated")?, resident: read(c"stats.resident")? })
}
