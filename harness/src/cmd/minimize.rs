//! `capring minimize`: its options, and the table printed and written. The measuring itself
//! (trials, search, the table) is `capring_judge::minimize`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use capring_judge::catalog::check_programs;
use capring_judge::minimize;
use capring_judge::profile::Profile;
use capring_observe::interrupt;

use super::input_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Universe {
    /// The eBPF candidates and the catalog's declared needs.
    Candidates,
    /// Every usable capability.
    All,
}

/// `capring minimize`'s options (the subcommand's help text is in the binary).
#[derive(Debug, clap::Args)]
pub(crate) struct MinimizeArgs {
    /// The tracer profile (TOML; see harness/PROFILE.md).
    #[arg(long, value_name = "PROFILE")]
    pub(crate) tracer: PathBuf,
    /// Event sets to measure, comma separated; `a+b` is one set of two events. Default:
    /// each event of the catalog alone, and the profile's default set when it has several.
    #[arg(long, value_name = "LIST")]
    pub(crate) events: Option<String>,
    /// Write `<tracer>@<feature key>.json` (the table, as committed under
    /// snapshots/minimal-sets/) and `.txt` (the human table) here.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Search runs allowed per event set (the baseline, observed and Requested runs come on
    /// top: at most 2 + 2 per Requested need).
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_runs: u32,
    /// Event lines a run must deliver to count as working.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) lines: u32,
    /// perf_event_paranoid during the runs (restored after each); default: as it is.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) paranoid: Option<i32>,
    /// Which capabilities the search chooses from.
    #[arg(long, value_enum, default_value = "candidates")]
    pub(crate) universe: Universe,
    /// Seconds after which a run is a failure (default: 4 × the baseline run, at least 10).
    #[arg(long, value_name = "SECS")]
    pub(crate) run_timeout: Option<u64>,
}

impl MinimizeArgs {
    fn options(&self) -> minimize::Options {
        minimize::Options {
            max_runs: self.max_runs,
            lines: self.lines,
            paranoid: self.paranoid,
            universe: match self.universe {
                Universe::Candidates => minimize::Universe::Candidates,
                Universe::All => minimize::Universe::All,
            },
            run_timeout: self.run_timeout,
        }
    }
}

/// `capring minimize`: measures each event set and prints the table. Returns the exit code:
/// 0 when every event set was measured, 1 when one could not be, 2 on bad input (after one
/// line on stderr), 128 + the signal when capring was interrupted (the partial table is
/// printed, nothing is written).
pub(crate) fn execute(args: &MinimizeArgs) -> Result<i32> {
    let profile = match Profile::load(&args.tracer) {
        Ok(p) => p,
        Err(e) => return input_error(e),
    };
    if let Err(e) = check_programs(&profile) {
        return input_error(e);
    }
    let sets = match minimize::event_sets(&profile, args.events.as_deref()) {
        Ok(s) => s,
        Err(e) => return input_error(e),
    };
    interrupt::install().context("installing the SIGINT/SIGTERM handlers")?;
    let report = minimize::measure_all(&profile, &sets, &args.options())?;
    output(args, report)
}

/// Prints the report, writes the table (not when interrupted), and says how it ended.
fn output(args: &MinimizeArgs, report: minimize::Report) -> Result<i32> {
    match args.format {
        Format::Human => print!("{}", report.table.human()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let table = report.table;
    if let (Some(dir), false) = (&args.out, report.interrupted) {
        let path = minimize::write_table(dir, &table)?;
        eprintln!("capring: wrote {}", path.display());
    }
    if let Some(sig) = interrupt::requested() {
        eprintln!("capring: interrupted: the table above is partial (nothing written)");
        return Ok(interrupt::exit_code(sig));
    }
    Ok(if table.entries.iter().any(|e| e.failed.is_some()) {
        1
    } else {
        0
    })
}
