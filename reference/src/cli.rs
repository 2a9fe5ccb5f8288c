//! Command-line plumbing shared by the reference binaries: one-line usage errors (exit 2)
//! instead of clap's multi-line ones, and the exit codes of the capability contract.

use clap::Parser;

pub use capring_spec::oracle::{EXIT_CAPABILITY, EXIT_USAGE};

/// A runtime failure that is neither a usage nor a capability problem.
pub const EXIT_RUNTIME: i32 = 1;

/// Parses the command line; a usage error prints one line and exits 2, `--help` exits 0
/// (the convention of every capring binary, `capring_cli`).
pub fn parse<T: Parser>(program: &str) -> T {
    capring_cli::parse_or_exit(program)
}

/// Prints one usage line and exits 2.
pub fn usage_exit(program: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{program}: {message}");
    std::process::exit(EXIT_USAGE)
}
