//! The real `vouch` entry point, built inside this package so the end-to-end suite can start it
//! (and kill it) as a child process. See `tests/Cargo.toml`.

fn main() -> std::process::ExitCode {
    vouch::cli::main()
}
