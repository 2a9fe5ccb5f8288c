//! One command-line convention for every capring binary (`capring`, `ref-tracer`,
//! `ref-rules`, `ref-workload`, `cargo xtask`).
//!
//! Why a crate of its own: clap's errors span several lines (usage, a tip, a blank line),
//! which CI logs and users' scripts read badly, and four binaries had each grown their own
//! copy of the fix-up. The rule, once: `--help` and `--version` print and exit 0; a command
//! given without its required arguments prints its help and exits 2; any other bad input is
//! ONE line on stderr, `PROGRAM: WHAT (see --help)`, and exit 2. Never a panic.

use clap::error::ErrorKind;
use clap::Parser;

/// The usage exit status.
pub const EXIT_USAGE: i32 = 2;

/// What to do with a clap error: the text to print, where, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What to print: the whole help or version text, or the one-line error.
    pub text: String,
    /// Errors go to stderr; `--help` and `--version` to stdout.
    pub to_stderr: bool,
    /// The exit code: 0 for help and version, [`EXIT_USAGE`] for bad input.
    pub code: i32,
}

/// One line naming the problem: clap's first line, without `error: `, with what follows a
/// trailing colon (clap puts the missing arguments on the next line).
pub fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    if first.ends_with(':') {
        if let Some(what) = lines.next() {
            first = format!("{first} {what}");
        }
    }
    first
}

/// How `program` answers a clap error.
pub fn outcome(program: &str, e: &clap::Error) -> Outcome {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Outcome {
            text: e.render().to_string(),
            to_stderr: false,
            code: 0,
        },
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Outcome {
            text: e.render().to_string(),
            to_stderr: true,
            code: EXIT_USAGE,
        },
        _ => Outcome {
            text: format!(
                "{program}: {} (see --help)\n",
                one_line(&e.render().to_string())
            ),
            to_stderr: true,
            code: EXIT_USAGE,
        },
    }
}

/// Parses the command line, or answers the error and exits (see the module docs).
pub fn parse_or_exit<T: Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(v) => v,
        Err(e) => {
            let o = outcome(program, &e);
            if o.to_stderr {
                eprint!("{}", o.text);
            } else {
                print!("{}", o.text);
            }
            std::process::exit(o.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "t")]
    struct Cli {
        #[arg(long)]
        count: u32,
        #[arg(long)]
        name: Option<String>,
    }

    fn err(args: &[&str]) -> Outcome {
        outcome("t", &Cli::try_parse_from(args).unwrap_err())
    }

    #[test]
    fn bad_input_is_one_line_and_exit_2() {
        for args in [
            &["t", "--count", "x"][..],
            &["t", "--nope", "--count", "1"][..],
            &["t"][..],
        ] {
            let o = err(args);
            assert_eq!(o.code, 2, "{args:?}");
            assert!(o.to_stderr);
            assert_eq!(o.text.trim_end().lines().count(), 1, "{args:?}: {}", o.text);
            assert!(
                o.text.starts_with("t: ") && o.text.ends_with("(see --help)\n"),
                "{}",
                o.text
            );
        }
        // What was missing is named on the same line.
        assert!(err(&["t"]).text.contains("--count"), "{}", err(&["t"]).text);
    }

    #[test]
    fn help_is_not_an_error() {
        let o = err(&["t", "--help"]);
        assert_eq!((o.code, o.to_stderr), (0, false));
        assert!(o.text.contains("--count"));
    }
}
