//! One module per subcommand of `capring`, each owning its clap options and its `execute`,
//! which returns the exit code. They parse, call the crates below (`capring-observe`,
//! `capring-judge`, `capring-report`) and print; what they compute lives in those crates.
//! [`output`] holds the report options `check` and `report` share.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod lists;
pub(crate) mod minimize;
pub(crate) mod mutants;
pub(crate) mod observe;
pub(crate) mod output;
pub(crate) mod report;

/// Bad input: one line on stderr, exit 2.
fn input_error(message: impl std::fmt::Display) -> anyhow::Result<i32> {
    eprintln!("capring: {message}");
    Ok(2)
}
