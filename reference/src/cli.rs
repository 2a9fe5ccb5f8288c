//! Command-line plumbing shared by the reference binaries: one-line usage errors (exit 2)
//! instead of clap's multi-line ones, and the exit codes of the capability contract.

use clap::Parser;

pub use capring_spec::oracle::{EXIT_CAPABILITY, EXIT_USAGE};

/// A runtime failure that is neither a usage nor a capability problem.
pub const EXIT_RUNTIME: i32 = 1;

/// Parses the command line; a usage error prints one line and exits 2, `--help` exits 0.
pub fn parse<T: Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(v) => v,
        Err(e) if e.use_stderr() => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("{program}: {first} (see --help)");
            std::process::exit(EXIT_USAGE);
        }
        Err(e) => e.exit(),
    }
}

/// Prints one usage line and exits 2.
pub fn usage_exit(program: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{program}: {message}");
    std::process::exit(EXIT_USAGE)
}
