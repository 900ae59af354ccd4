//! The `vouch` command. All of it lives in the library so tests can run the same entry point.

fn main() -> std::process::ExitCode {
    vouch::cli::main()
}
