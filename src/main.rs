//! The `berth` binary: everything but the process boundary is in the
//! library.

fn main() -> std::process::ExitCode {
    berth::cli::main(std::env::args_os())
}
