//! The real `vouch` entry point, built inside this package so the end-to-end suite can start it
//! (and kill it) as a child process. See `tests/Cargo.toml`.

/// The same allocator as the shipped `vouch` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vouch::cli::main()
}
