//! The `vouch` command. All of it lives in the library so tests can run the same entry point.

/// mimalloc instead of the system allocator: parsing, judging and storing an alert allocates a
/// great many small values, and glibc's malloc took about a tenth of the ingest path's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vouch::cli::main()
}
