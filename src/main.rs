//! The `sightline` binary.

fn main() -> std::process::ExitCode {
    sightline::cli::main(sightline::daemon::run)
}
