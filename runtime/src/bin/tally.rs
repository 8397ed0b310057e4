//! The `tally` binary: see [`tally::cli`].

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
