//! `capring`: black-box conformance checker for tracers that drop capabilities through rings.
//!
//! This file is the dispatch only: each subcommand's options and its `execute` are in
//! `cmd/<subcommand>.rs`, and everything they compute in the crates below (observe, judge,
//! report).

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capring",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  capring check --tracer fixtures/tracers/ref-tracer.toml
  capring check --tracer my-tracer.toml --scenario 'bypass-*' --format junit --out results/
  capring check --tracer my-tracer.toml --out results/ --html report.html --perfetto traces/
  capring report results/ --quiet
  capring observe --html timeline.html -- capsh --drop=cap_net_raw -- -c true
  capring mutants
  capring minimize --tracer fixtures/tracers/ref-tracer.toml --out snapshots/minimal-sets
  capring clauses | less

Profiles: harness/PROFILE.md. Clauses: spec/SPEC.md. Most commands need root."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command and print its capability timeline: every thread, every credential change.
    Observe(cmd::observe::ObserveArgs),
    /// Run the scenario catalog against a tracer profile and judge every clause.
    ///
    /// Exit status: 0 when every MUST clause passed (or is an expected failure of the
    /// profile), 1 when one failed, 2 on bad input.
    Check(cmd::check::CheckArgs),
    /// Run the negative controls: each mutant must fail by its expected clause.
    ///
    /// Exit status: 0 when every mutant was caught, 1 otherwise, 2 on bad input.
    Mutants(cmd::mutants::MutantsArgs),
    /// Measure the minimal capability sets each event of a tracer needs on this kernel, and
    /// compare them with the Required ring the tracer uses and the oracle's prediction.
    ///
    /// Exit status: 0 when every event set was measured, 1 when one could not be, 2 on bad
    /// input.
    Minimize(cmd::minimize::MinimizeArgs),
    /// List the scenarios and the clauses each one checks.
    Scenarios(cmd::lists::ListArgs),
    /// List the clauses of spec/SPEC.md and the scenarios that cover them.
    Clauses(cmd::lists::ListArgs),
    /// Report on an earlier `check --out DIR` (or a directory of recorded runs): print the
    /// table again, write the HTML page or Perfetto traces. Needs no root.
    ///
    /// Exit status: as `check` (0, 1 when a MUST clause failed), 2 on bad input.
    Report(cmd::report::ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (capring.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = capring_cli::parse_or_exit("capring");
    let result = match cli.command {
        Command::Observe(a) => cmd::observe::execute(a),
        Command::Check(a) => cmd::check::execute(&a),
        Command::Mutants(a) => cmd::mutants::execute(a),
        Command::Minimize(a) => cmd::minimize::execute(&a),
        Command::Scenarios(a) => cmd::lists::scenarios(a),
        Command::Clauses(a) => cmd::lists::clauses(a),
        Command::Report(a) => cmd::report::execute(&a),
        Command::Completions { shell } => cmd::completions::completions(shell, Cli::command()),
        Command::Man { dir } => cmd::completions::man_pages(Cli::command(), &dir),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("capring: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
